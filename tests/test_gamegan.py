"""GameGAN (model=gamegan): what each discriminator sees, the generator's warm-up, a short
training end to end on tiny rollouts, `play`, and bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import (
    TINY,
    assert_bad_input,
    read_events,
    run_in_process,
    train_in_process,
    train_refused_in_process,
)

from ganlab.data.base import DataSpec
from ganlab.models.gamegan import build_gamegan

pytestmark = pytest.mark.usefixtures("one_thread")

# six short episodes of 16-px frames played in memory, tiny networks, windows of 6 frames
TINY_GAMEGAN = ["model=gamegan", "dataset.episodes=6", "dataset.size=16",
                "dataset.max_steps=40", "trainer.batch_size=2", "model.hidden=16",
                "model.z_dim=4", "model.g_features=2", "model.d_features=2",
                "model.temporal_features=2", "model.transition_dim=8", "model.seq_len=6",
                "model.warm_up=2", "model.r1_every=2"]
STEPS = 4
RUN = ["log.every=1", f"log.sample_every={STEPS}", "log.progress=false",
       f"trainer.max_steps={STEPS}", f"trainer.ckpt_every={STEPS}", f"eval.every={STEPS // 2}",
       "eval.n_samples=8", "device=cpu"]


def networks(seq_len: int = 12, action_dim: int = 3, z_dim: int = 4, size: int = 16):
    torch.manual_seed(0)
    cfg = SimpleNamespace(hidden=16, z_dim=z_dim, g_features=2, d_features=4,
                          temporal_features=4, transition_dim=8, seq_len=seq_len,
                          action_dim=action_dim)
    g, d = build_gamegan(cfg, DataSpec("rollouts", "image", (3, size, size)))
    return g.eval(), d.eval()


def sequence(b: int = 2, t: int = 12, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, t, 3, size, size, generator=g) * 2 - 1
    actions = torch.eye(3)[torch.randint(0, 3, (b, t - 1), generator=g)]
    return frames, actions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gamegan")
    train_in_process([*TINY_GAMEGAN, *RUN, f"hydra.run.dir={root / 'run'}"], root)
    return root, root / "run"


# --- the networks ----------------------------------------------------------------------------


def test_the_three_discriminators_see_what_they_should():
    _, d = networks()
    frames, actions = sequence()
    w = 3
    with torch.no_grad():
        out = d(frames[:, :w], frames[:, 1:], actions, wrong_actions=actions.roll(1, -1))
    b, t = 2, 11
    assert out["single"].shape == (b, t) and out["action"].shape == (b, t)
    assert out["wrong_action"].shape == (b, t)
    assert out["action_recon"].shape == (b, t, 3) and out["z_recon"].shape == (b, t, 4)
    assert out["features"].shape == (b, t, 8, 4, 4)  # two halvings: 4 then 8 channels
    # temporal: 12 frames -> (12 - 4) // 2 = 4 windows at the first level, 1 at the second
    assert [x.shape for x in out["temporal"]] == [(b, 4), (b, 1)]

    def changed(frames_=frames, nexts=None, actions_=actions):
        with torch.no_grad():
            new = d(frames_[:, :w], frames_[:, 1:] if nexts is None else nexts, actions_)
        return {k: ~torch.isclose(new[k], out[k]).reshape(b, -1).all(1)
                for k in ("single", "action", "z_recon")} | {
            "temporal": ~torch.isclose(new["temporal"][0], out["temporal"][0]).all(1)}

    # the action reaches the action-conditioned head, and only it
    other = actions.clone()
    other[0, 5] = other[0, 5].roll(1)
    diff = changed(actions_=other)
    assert diff["action"].tolist() == [True, False]
    assert not diff["single"].any() and not diff["temporal"].any() and not diff["z_recon"].any()
    with torch.no_grad():
        moved = d.action_logit(d.transitions(out["features"][:, :1], out["features"][:, 1:2]),
                               other[:, 5:6])
    assert not torch.isclose(moved[0], d.action_logit(d.transitions(
        out["features"][:, :1], out["features"][:, 1:2]), actions[:, 5:6])[0]).all()
    # a predicted frame inside the warm-up (x_1, the context holds the real one) is judged as
    # a single frame and as the end of transition 0, but is not in the temporal sequence
    nexts = frames[:, 1:].clone()
    nexts[1, 0] = -nexts[1, 0]
    with torch.no_grad():
        new = d(frames[:, :w], nexts, actions)
    assert not torch.isclose(new["single"][1, 0], out["single"][1, 0])
    assert torch.equal(new["single"][1, 1:], out["single"][1, 1:])
    assert not torch.isclose(new["action"][1, 0], out["action"][1, 0])
    assert torch.equal(new["action"][1, 1:], out["action"][1, 1:])  # x_1 starts no transition
    assert all(torch.equal(a, c) for a, c in zip(new["temporal"], out["temporal"], strict=True))
    # after the warm-up the predicted frame is in the sequence, and starts the next transition
    nexts = frames[:, 1:].clone()
    nexts[0, w] = -nexts[0, w]  # x_{w+1}
    with torch.no_grad():
        new = d(frames[:, :w], nexts, actions)
    assert not torch.isclose(new["temporal"][0][0], out["temporal"][0][0]).all()
    assert torch.equal(new["temporal"][0][1], out["temporal"][0][1])
    assert not torch.isclose(new["action"][0, w + 1], out["action"][0, w + 1])


def test_the_generator_feeds_on_real_frames_for_the_warm_up_then_on_its_own():
    g, _ = networks()
    frames, actions = sequence()
    z = torch.randn(2, 11, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = g.unroll(frames, actions, z, warm_up=4)
        assert out.shape == (2, 11, 3, 16, 16) and out.abs().max() <= 1
        later = frames.clone()
        later[:, 4:] = 0  # real frames after the warm-up are never read
        assert torch.equal(g.unroll(later, actions, z, warm_up=4), out)
        earlier = frames.clone()
        earlier[:, 3] = 0
        again = g.unroll(earlier, actions, z, warm_up=4)
        assert torch.equal(again[:, :3], out[:, :3]) and not torch.equal(again[:, 3:], out[:, 3:])
        # the action and the noise both change what follows
        other = actions.clone()
        other[:, 6] = other[:, 6].roll(1, -1)
        moved = g.unroll(frames, other, z, warm_up=4)
        assert torch.equal(moved[:, :6], out[:, :6]) and not torch.equal(moved[:, 6:], out[:, 6:])
        assert not torch.equal(g.unroll(frames, actions, z + 1, warm_up=4), out)


# --- training, measuring, playing ------------------------------------------------------------


def test_a_short_training_logs_every_term_pictures_and_the_10_step_error(run):
    _, run_dir = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("frame_l1_10", "frame_mse_10", "copy_l1_10", "copy_mse_10",
                "frame_l1_step10", "copy_l1_step10"):
        assert 0 <= metrics[key] < 1, key
    assert metrics["heldout_windows"] >= 1
    assert (run_dir / "checkpoints" / "best.pt").is_file()  # ranked by frame_l1_10
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["best"]
    assert best["metric"] == "frame_l1_10" and best["mode"] == "min"
    scalars = set(read_events(run_dir / "tb").Tags()["scalars"])
    for name in ("g_single", "g_action", "g_temporal", "g_info_z", "g_info_action",
                 "g_feature", "g_recon", "d_real_single", "d_fake_single", "d_real_action",
                 "d_wrong_action", "d_fake_action", "d_real_temporal", "d_fake_temporal",
                 "d_info_action", "d_info_z", "d_r1", "d_r1_temporal"):
        assert f"loss/{name}" in scalars, name
    assert "eval/frame_l1_10" in scalars and "eval/copy_l1_10" in scalars
    from PIL import Image

    strip = Image.open(run_dir / "samples" / f"step_{STEPS}_predictions.png")
    shown = min(4, metrics["heldout_windows"])  # windows: a real row, a predicted row each
    assert strip.size == (11 * 18 + 2, 2 * shown * 18 + 2)
    gif = Image.open(run_dir / "samples" / f"step_{STEPS}_play.gif")
    assert gif.n_frames > 1 and gif.size == (2 * 16 + 2, 16)


def test_play_renders_frames_and_different_actions_give_different_frames(run, capsys):
    from PIL import Image

    from ganlab.checkpoint import load_checkpoint
    from ganlab.families.capabilities import Player

    root, run_dir = run
    family = load_checkpoint(run_dir)
    assert isinstance(family, Player) and family.env == "dodge" and family.frame_size == 16
    first = torch.zeros(3, 16, 16, dtype=torch.uint8)
    left, right = (torch.eye(3)[[a] * 6] for a in (0, 2))
    a = family.play(first, left, torch.Generator().manual_seed(0))
    b = family.play(first, right, torch.Generator().manual_seed(0))
    assert a.shape == (7, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a[0], first) and not torch.equal(a[1:], b[1:])
    assert torch.equal(a, family.play(first, left, torch.Generator().manual_seed(0)))

    gif = root / "play.gif"
    result = command(["play", f"ckpt={run_dir}", "actions=2*3,1,0*2", f"out={gif}"], capsys)
    assert result.returncode == 0, result.stderr
    assert "7 frames of the learned dodge for 6 actions" in result.stdout
    picture = Image.open(gif)
    assert picture.n_frames == 7 and picture.size == (2 * 16 + 2, 16)
    png = root / "play.png"
    result = command(["play", f"ckpt={run_dir}", "actions=[0,0,2]", f"out={png}", "nrow=4",
                      "compare=false"], capsys)
    assert result.returncode == 0, result.stderr
    assert Image.open(png).size == (4 * 18 + 2, 18 + 2)  # 4 frames, one row (the model's)


def command(args: list[str], capsys):
    """`python -m ganlab ARGS` in this process for a command that succeeds."""
    import subprocess

    from ganlab import __main__

    capsys.readouterr()
    code = 0
    try:
        __main__.main(args)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_training_input_is_refused_before_training(tmp_path, capsys):
    def refused(*extra):
        return train_refused_in_process([*TINY_GAMEGAN, *RUN, *extra], tmp_path, capsys)

    assert_bad_input(refused("dataset.size=24"), "24x24 frames", "power of two")
    assert_bad_input(refused("dataset.env=pong"), "unknown environment env='pong'")
    assert_bad_input(refused("model.warm_up=6"), "model.warm_up=6", "model.seq_len=6")
    assert_bad_input(train_refused_in_process(["model=gamegan", "dataset=synthetic", *RUN],
                                              tmp_path, capsys), "dataset=rollouts")
    # a folder of rollouts of another frame size than the networks take
    from ganlab.envs.rollouts import record

    record("dodge", 2, size=20, max_steps=12, out=tmp_path / "r20", progress=False)
    assert_bad_input(refused(f"dataset.path={tmp_path / 'r20'}"), "20x20 frames")
    assert not list(tmp_path.rglob("last.pt"))


def test_bad_play_input_is_refused(run, capsys, tmp_path):
    refused_run = run_in_process
    _, run_dir = run
    base = ["play", f"ckpt={run_dir}", f"out={tmp_path / 'p.gif'}"]
    assert_bad_input(refused_run([*base, "actions=5"], capsys), "action 5", "0..2")
    assert_bad_input(refused_run([*base, "actions=left"], capsys), "cannot read action 'left'")
    assert_bad_input(refused_run([*base, "actions=1*0"], capsys), "at least 1")
    assert_bad_input(refused_run(["play", f"ckpt={run_dir}", "actions=1", "out=p.jpg"], capsys),
                     ".gif or .png")
    assert_bad_input(refused_run(["play", f"ckpt={run_dir}"], capsys), "actions")
    # a checkpoint of another model
    other = tmp_path / "dcgan"
    train_in_process([*TINY, "model=dcgan", "model.g_features=4", "model.d_features=4",
                      "trainer.max_steps=1", "eval.every=0", "log.sample_every=0",
                      f"hydra.run.dir={other}"], tmp_path)
    assert_bad_input(refused_run([*base[:1], f"ckpt={other}", "actions=1", *base[2:]], capsys),
                     "play renders a learned game", "dcgan")
