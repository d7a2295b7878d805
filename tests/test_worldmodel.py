"""World Models (model=worldmodel): the MDN's density, M against the copy baseline, CMA-ES on a
controller, the dream, bad input, and resume of each stage."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import (
    assert_bad_input,
    assert_states_equal,
    train_in_process,
    train_refused_in_process,
)

from ganlab.models.worldmodel import (
    MdnOutput,
    MdnRnn,
    controller_act,
    gaussian_nll,
    mdn_log_prob,
    mdn_sample,
)

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 6
RUN = ["log.every=1", f"log.sample_every={STEPS // 2}", "log.progress=false",
       f"trainer.max_steps={STEPS}", f"trainer.ckpt_every={STEPS // 2}",
       f"eval.every={STEPS // 2}", "eval.n_samples=16", "device=cpu"]
# four short episodes of 32-px frames, played in memory
DATA = ["model=worldmodel", "dataset.episodes=4", "dataset.size=32", "dataset.max_steps=30",
        "trainer.batch_size=8"]
STAGE = {"vae": ["model.features=4", "model.latent_dim=4"],
         "mdnrnn": ["model.stage=mdnrnn", "model.hidden=8", "model.mixtures=2",
                    "model.seq_len=8"],
         "controller": ["model.stage=controller", "model.population=4", "model.rollouts=1",
                        "model.eval_episodes=2"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny V, an M on it and a controller on M (three runs, in this process)."""
    root = tmp_path_factory.mktemp("worldmodel")
    out = {name: root / name for name in STAGE}
    train_in_process([*DATA, *STAGE["vae"], *RUN, f"hydra.run.dir={out['vae']}"], root)
    train_in_process([*DATA, *STAGE["mdnrnn"], f"model.vae_run={out['vae']}", *RUN,
                      f"hydra.run.dir={out['mdnrnn']}"], root)
    train_in_process([*DATA, *STAGE["controller"], f"model.mdnrnn_run={out['mdnrnn']}",
                      "trainer.max_steps=2", "log.sample_every=2", "log.progress=false",
                      "eval.every=0", "device=cpu", f"hydra.run.dir={out['controller']}"], root)
    return root, out


# --- M's maths ---------------------------------------------------------------------------------


def test_mdn_log_likelihood_is_the_mixture_density_by_hand():
    pi = [0.3, 0.7]
    mu = [[-1.0, 2.0], [0.5, 0.0]]  # two dimensions, two components each
    sigma = [[0.5, 2.0], [1.0, 0.25]]
    x = [0.2, 0.1]
    out = MdnOutput(torch.log(torch.tensor([pi, pi]))[None, None],
                    torch.tensor(mu)[None, None], torch.log(torch.tensor(sigma))[None, None],
                    torch.zeros(1, 1), torch.zeros(1, 1))
    got = mdn_log_prob(out, torch.tensor(x)[None, None])[0, 0]
    for d in range(2):
        density = sum(p * math.exp(-0.5 * ((x[d] - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
                      for p, m, s in zip(pi, mu[d], sigma[d], strict=True))
        assert got[d].item() == pytest.approx(math.log(density), rel=1e-5)
    # temperature 0: the likeliest component's mean
    assert torch.equal(mdn_sample(out, 0.0)[0, 0], torch.tensor([2.0, 0.0]))
    # at tau = 1 the draws follow the mixture: their mean is sum pi_k mu_k
    many = MdnOutput(*(t.expand(1, 20000, 2, 2) for t in (out.logpi, out.mu, out.logsigma)),
                     torch.zeros(1, 20000), torch.zeros(1, 20000))
    z = mdn_sample(many, 1.0, torch.Generator().manual_seed(0))[0]
    assert z[:, 0].mean().item() == pytest.approx(0.3 * -1 + 0.7 * 2, abs=0.05)
    assert gaussian_nll(torch.tensor(1.0), torch.tensor(0.0), 4.0).item() == pytest.approx(
        0.125 + 0.5 * math.log(2 * math.pi * 4.0))


def test_an_mdn_rnn_fit_on_a_tiny_sequence_beats_the_copy_baseline():
    """z turns by a fixed angle each step and the action pushes it: M learns the motion; the
    copy baseline N(z_t, s^2) with its best s^2 cannot."""
    g = torch.Generator().manual_seed(0)

    def sequences(n):
        angle = torch.rand(n, 1, generator=g) * 2 * math.pi
        actions = torch.randint(0, 2, (n, 12), generator=g).float()
        zs = []
        for t in range(13):
            a = actions[:, min(t, 11)] if t else torch.zeros(n)
            angle = angle + 0.6 + 0.0 * a[:, None]
            zs.append(torch.cat([torch.cos(angle), torch.sin(angle)], 1)
                      + 0.02 * torch.randn(n, 2, generator=g))
        return torch.stack(zs, 1), actions[..., None]

    torch.manual_seed(0)
    rnn = MdnRnn(2, 1, hidden=16, mixtures=2)
    opt = torch.optim.Adam(rnn.parameters(), lr=2e-2)
    z, a = sequences(64)
    copy_var = float((z[:, 1:] - z[:, :-1]).pow(2).mean())
    for _ in range(60):
        out, _ = rnn(z[:, :-1], a)
        loss = -mdn_log_prob(out, z[:, 1:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, a = sequences(32)
    with torch.no_grad():
        nll = -mdn_log_prob(rnn(z[:, :-1], a)[0], z[:, 1:]).mean().item()
    copy = gaussian_nll(z[:, 1:], z[:, :-1], copy_var).mean().item()
    assert nll < copy - 1.0, (nll, copy)


def test_cma_es_improves_a_linear_controller_on_a_tiny_task():
    """The task: pick the action a hidden linear rule picks from the features; the fitness is
    the share picked right. CMA-ES from zero weights (chance: 1/3) gets well above chance."""
    import cma

    g = torch.Generator().manual_seed(1)
    features = torch.randn(1, 200, 4, generator=g)
    rule = torch.randn(1, 3 * 5, generator=g)
    target = controller_act(rule, features, discrete=True)

    def fitness(params):
        chosen = controller_act(params, features.expand(len(params), -1, -1), discrete=True)
        return (chosen == target).float().mean(1)

    rng = np.random.default_rng(0)
    es = cma.CMAEvolutionStrategy(np.zeros(15), 0.5, {"popsize": 12, "seed": np.nan,
                                                      "verbose": -9,
                                                      "randn": lambda n, d: rng.standard_normal(
                                                          (n, d))})
    start = fitness(torch.zeros(1, 15)).item()
    for _ in range(15):
        solutions = es.ask()
        es.tell(solutions, (-fitness(torch.tensor(np.asarray(solutions)).float())).tolist())
    final = fitness(torch.tensor(np.asarray(es.mean)).float()[None]).item()
    assert start < 0.5 and final > 0.8, (start, final)


# --- the stages ----------------------------------------------------------------------------------


def test_the_stages_train_and_log_their_numbers_pictures_and_videos(runs):
    _, out = runs
    vae = json.loads((out["vae"] / "metrics.json").read_text())
    assert vae["heldout_recon"] > 0 and vae["heldout_kl"] >= 0
    assert (out["vae"] / "samples" / "step_6_reconstructions.png").is_file()
    mdn = json.loads((out["mdnrnn"] / "metrics.json").read_text())
    assert math.isfinite(mdn["heldout_nll_z"]) and math.isfinite(mdn["copy_baseline_nll_z"])
    assert mdn["copy_baseline_var"] > 0
    assert (out["mdnrnn"] / "samples" / "step_6_dream.gif").is_file()
    ctrl = json.loads((out["controller"] / "metrics.json").read_text())
    assert ctrl["real_return"] >= 1 and ctrl["random_return"] >= 1 and ctrl["eval_episodes"] == 2
    assert (out["controller"] / "samples" / "step_2_episode.gif").is_file()
    # each stage keeps a best.pt by its own number: V's reconstruction, M's next-z NLL, C's
    # real return
    for stage, metric, mode in (("vae", "heldout_recon", "min"),
                                ("mdnrnn", "heldout_nll_z", "min"),
                                ("controller", "real_return", "max")):
        best = torch.load(out[stage] / "checkpoints" / "best.pt", weights_only=True)["best"]
        assert (best["metric"], best["mode"]) == (metric, mode), stage
    from PIL import Image

    gif = Image.open(out["mdnrnn"] / "samples" / "step_6_dream.gif")
    assert gif.n_frames > 1 and gif.size == (3 * 32 + 4, 32)  # real | V | dream


def test_the_dream_steps_with_m_and_decodes_with_v(runs):
    from ganlab.checkpoint import load_checkpoint

    _, out = runs
    c = load_checkpoint(out["controller"])
    params = c.current_params().repeat(2, 1)
    returns, z = c.play_dream(params, [0, 1], torch.Generator().manual_seed(0), record=True)
    assert returns.shape == (2, 2) and z.shape[1] == 4 and len(z) >= 2
    frames = torch.sigmoid(c.decoder(z))
    assert frames.shape == (len(z), 3, 32, 32)
    again = c.play_dream(params, [0, 1], torch.Generator().manual_seed(0))
    assert torch.equal(returns, again)  # the dream is seeded
    real = c.play_real(params[:1], [0, 1])
    assert real.shape == (1, 2) and (real >= 1).all()


def test_a_stage_without_its_inputs_is_refused_naming_the_run_to_give(runs, capsys):
    root, out = runs
    result = train_refused_in_process([*DATA, "model.stage=controller", *RUN], root, capsys)
    assert_bad_input(result, "model.mdnrnn_run=", "model.stage=mdnrnn")
    result = train_refused_in_process([*DATA, "model.stage=mdnrnn", *RUN], root, capsys)
    assert_bad_input(result, "model.vae_run=", "model.stage=vae")
    result = train_refused_in_process([*DATA, "model.stage=controller",
                                       f"model.mdnrnn_run={out['vae']}", *RUN], root, capsys)
    assert_bad_input(result, "stage vae", "model.stage=mdnrnn")
    # rollouts of another frame size than V was trained on
    result = train_refused_in_process([*DATA, *STAGE["mdnrnn"], "dataset.size=64",
                                       f"model.vae_run={out['vae']}", *RUN], root, capsys)
    assert_bad_input(result, "64x64 frames", "32x32")
    result = train_refused_in_process(["model=worldmodel", "dataset=synthetic", *RUN], root,
                                      capsys)
    assert_bad_input(result, "dataset=rollouts")


@pytest.mark.parametrize("stage", sorted(STAGE))
def test_every_stage_resumes_bit_exactly(runs, stage, tmp_path):
    root, out = runs
    inputs = {"vae": [], "mdnrnn": [f"model.vae_run={out['vae']}"],
              "controller": [f"model.mdnrnn_run={out['mdnrnn']}"]}[stage]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_in_process([*DATA, *STAGE[stage], *inputs, *RUN, f"hydra.run.dir={straight}"], root)
    shutil.copytree(straight, split)
    saves = split / "checkpoints"
    (saves / f"step_{STEPS}.pt").unlink()
    (saves / f"step_{STEPS // 2}.pt").replace(saves / "last.pt")
    train_in_process([f"resume={split}"], root)
    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            for run in (straight, split))
    assert a.pop("config") == {**b.pop("config"), "resume": None}
    assert_states_equal(a, b)
    metrics = [{k: v for k, v in json.loads((r / "metrics.json").read_text()).items()
                if "per_second" not in k} for r in (straight, split)]
    assert metrics[0] == metrics[1]
