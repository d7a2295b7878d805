"""Every model resumes bit-exactly; resume=auto (preempted cluster jobs) and the stored config
compared on resume."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
from conftest import (
    TINY,
    assert_bad_input,
    assert_states_equal,
    log_shows,
    run_cli,
    signal_training,
    train_in_process,
)

from ganlab.config import CONF_DIR
from ganlab.loop import config_changes

# --- every model, straight through or stopped halfway and resumed ----------------------------

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))  # ganlab's own, no plugins

STEPS = 6  # saved, sampled and evaluated halfway: where a stopped run resumes from
RUN = ["log.every=1", "log.n_samples=4", f"log.sample_every={STEPS // 2}", "log.progress=false",
       f"trainer.max_steps={STEPS}", f"trainer.ckpt_every={STEPS // 2}",
       f"eval.every={STEPS // 2}", "eval.n_samples=16", "device=cpu"]
# 40 random 28-px images in batches of 8: reshuffled after the halfway point (step 5)
SYNTHETIC = ["dataset=synthetic", "dataset.n_samples=40", "trainer.batch_size=8"]

# what makes each model of conf/model/ tiny (and gives it data it takes); every model needs a
# row: a new model fails test_every_model_resumes_bit_exactly until it has one
TINY_MODELS = {
    "ae": [*SYNTHETIC, "model.hidden=[16]", "model.latent_dim=4"],
    "vae": [*SYNTHETIC, "model.hidden=[16]", "model.latent_dim=4"],
    "conv_vae": [*SYNTHETIC, "dataset.image_size=32", "dataset.channels=3", "model.features=4",
                 "model.latent_dim=8"],
    "dcgan": [*SYNTHETIC, "model.g_features=4", "model.d_features=4", "model.latent_dim=8"],
    "cgan": [*SYNTHETIC, "model.g_features=4", "model.d_features=4", "model.latent_dim=8",
             "model.embed_dim=4"],
    "mlp_gan": [*SYNTHETIC, "model.g_hidden=[16]", "model.d_hidden=[16]", "model.latent_dim=8"],
    "progan": [*SYNTHETIC, "dataset.image_size=8", "model.max_features=8", "model.min_features=4",
               "model.latent_dim=8"],
    "softmax": SYNTHETIC,
    "mlp": [*SYNTHETIC, "model.hidden=[16]"],
    "lenet": [*SYNTHETIC, "model.channels=[2,4]", "model.hidden=[8]", "model.eval_steps=2"],
    # the halfway checkpoint is the switch from the VQ-VAE to the prior (model.prior_start)
    "vqvae": [*SYNTHETIC, "model.hidden=8", "model.residual_hidden=4", "model.residual_layers=1",
              "model.codebook_size=16", "model.embedding_dim=4", "model.prior_channels=8",
              "model.prior_layers=2"],
    "pix2pix": [*SYNTHETIC, "model.task=colorize", "dataset.channels=3", "dataset.image_size=16",
                "model.g_features=2", "model.d_features=2", "model.d_layers=2"],
    "cyclegan": ["dataset=red2blue", "dataset.n_samples=8", "dataset.n_test=4",
                 "dataset.image_size=16", "trainer.batch_size=2", "model.g_features=2",
                 "model.d_features=4", "model.d_layers=2"],
    "srgan": [*SYNTHETIC, "dataset.image_size=16", "model.blocks=1", "model.g_features=4",
              "model.d_features=4", "model.content_weight=0", "model.mse_weight=1"],
    "srresnet": [*SYNTHETIC, "dataset.image_size=16", "model.blocks=1", "model.g_features=4",
                 "model.scale=2"],
    "spade": ["dataset=masks", "dataset.n_samples=16", "dataset.n_test=4",
              "dataset.image_size=32", "trainer.batch_size=4", "model.g_features=2",
              "model.d_features=4", "model.spade_hidden=4"],
    "gan3d": ["dataset=voxels", "dataset.size=8", "dataset.n_samples=40", "dataset.n_test=8",
              "trainer.batch_size=8", "model.g_features=4", "model.d_features=4",
              "model.latent_dim=8"],
    "biggan": [*SYNTHETIC, "dataset.image_size=16", "model.g_ch=2", "model.d_ch=2",
               "model.latent_dim=6", "model.shared_dim=4", "model.attention=8", "model.ema=0.9",
               "model.ema_start=5"],
    # the halfway checkpoint is not on an R1 step: the lazy phase is state
    "stylegan": [*SYNTHETIC, "dataset.image_size=16", "model.latent_dim=8", "model.w_dim=8",
                 "model.mapping_layers=2", "model.channel_base=32", "model.channel_max=8",
                 "model.r1_interval=4", "model.pl_weight=2", "model.pl_interval=2"],
    # R1 on every other step: the halfway checkpoint (step 3) falls between two
    "gamegan": ["dataset.episodes=6", "dataset.size=16", "dataset.max_steps=40",
                "trainer.batch_size=2", "model.hidden=16", "model.z_dim=4", "model.g_features=2",
                "model.d_features=2", "model.temporal_features=2", "model.transition_dim=8",
                "model.seq_len=6", "model.warm_up=2", "model.r1_every=2"],
    # stage V (M and C need earlier runs: resumed in tests/test_worldmodel.py)
    "worldmodel": ["dataset.episodes=4", "dataset.size=32", "dataset.max_steps=30",
                   "trainer.batch_size=8", "model.features=4", "model.latent_dim=4"],
}
# beside every model with its defaults: the options that keep state or draw random numbers
VARIANTS = {
    "dcgan+tools": ("dcgan", ["model.history=4", "model.instance_noise=0.1", "model.ema=0.9",
                              "model.label_noise=0.1", "model.d_dropout=0.2"]),
    "dcgan+fp16": ("dcgan", ["trainer.precision=16"]),  # the loss scale: state["amp"]
    # the halfway checkpoint falls inside D's pretraining (its counter is extra state)
    "dcgan+lab4": ("dcgan", ["model.d_pretrain_steps=4", "model.g_steps=2",
                             "model.latent_dist=uniform", "model.g_label_noise=0.1",
                             "model.batch_variance=true", "model.upsample=bilinear"]),
    # resumed inside the VQ-VAE stage: the codebook's moving averages, counts and restarts
    "vqvae+late_prior": ("vqvae", ["model.prior_start=0.9"]),
    "lenet+fgsm": ("lenet", ["defense=fgsm"]),
    # mixup draws from the global RNG, PGD's evaluation from a generator of its own
    "lenet+mixup+pgd": ("lenet", ["defense=mixup", "model.eval_attack=pgd"]),
    # fast: the lr cycle's position, the health check's batch, best and weights (checked every
    # 2 batches); free: the perturbation carried over between batches
    "lenet+fast": ("lenet", ["defense=fast", "defense.check_every=2", "defense.check_steps=2"]),
    "lenet+free": ("lenet", ["defense=free", "defense.replays=2"]),
}
CASES = {**{name: (name, []) for name in MODELS}, **VARIANTS}


def _metrics(run) -> dict:
    """metrics.json without the speeds (they differ from run to run)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if "per_second" not in k}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_model_resumes_bit_exactly(case, tmp_path):
    """A run straight through, and the same run stopped at its halfway checkpoint (what a
    preempted job leaves) then resumed, end in the same state: networks, optimizers, the
    family's extra state (EMA, image pools, fixed noise, schedules), the loss scale, the data
    order and every RNG. Stopping with trainer.max_steps=STEPS/2 instead would be another run
    where a schedule follows the run's length (CycleGAN's lr decay, ProGAN's growth, instance
    noise)."""
    model, extra = CASES[case]
    assert model in TINY_MODELS, f"model={model} has no row in TINY_MODELS (tests/test_resume.py)"
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_in_process([f"model={model}", *TINY_MODELS[model], *extra, *RUN,
                      f"hydra.run.dir={straight}"], tmp_path)
    # the run dir as it was when stopped halfway: its halfway checkpoint is last.pt
    shutil.copytree(straight, split)
    saves = split / "checkpoints"
    (saves / f"step_{STEPS}.pt").unlink()
    (saves / f"step_{STEPS // 2}.pt").replace(saves / "last.pt")
    train_in_process([f"resume={split}"], tmp_path)  # the run's own settings, from its checkpoint

    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            for run in (straight, split))
    assert b["step"] == STEPS
    assert a.pop("config") == {**b.pop("config"), "resume": None}  # same settings, same budget
    assert_states_equal(a, b)
    assert _metrics(straight) == _metrics(split)  # the last logged numbers and evaluation


def test_every_model_has_tiny_settings_and_no_stale_ones():
    assert set(TINY_MODELS) == set(MODELS) and len(MODELS) >= 11


def weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return state["step"], state["family"]["G"]


def test_resume_auto_starts_fresh_then_continues_its_own_run_dir(workdir):
    common = [*TINY, "trainer.ckpt_every=100", "hydra.run.dir=job", "resume=auto"]
    first = run_cli(["train", *common, "trainer.max_steps=3"], workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "no checkpoint in" in (workdir / "job" / "train.log").read_text()
    second = run_cli(["train", *common, "trainer.max_steps=6"], workdir)  # requeued, longer
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resume=auto: continuing" in (workdir / "job" / "train.log").read_text()
    straight = run_cli(["train", *TINY, "trainer.ckpt_every=100", "trainer.max_steps=6",
                        "hydra.run.dir=straight"], workdir)
    assert straight.returncode == 0
    resumed, whole = (torch.load(workdir / run / "checkpoints" / "last.pt", weights_only=True)
                      for run in ("job", "straight"))
    assert resumed["step"] == whole["step"] == 6
    for state in (resumed, whole):
        del state["config"], state["overrides"]  # one of them says resume=auto
    assert_states_equal(resumed, whole)  # a new process continued it: every state restored


def test_resume_auto_after_a_preemption_signal(workdir):
    """SIGTERM (what Slurm sends before preempting): the run saves and exits 130; the same
    command line, run again, finishes the job from there."""
    args = [*TINY, "trainer.max_steps=400", "trainer.ckpt_every=1000", "log.every=1",
            "hydra.run.dir=job", "resume=auto"]
    ready = log_shows(workdir / "job" / "train.log", "step 5/")
    code, err = signal_training(args, workdir, ready, signal.SIGTERM)
    assert code == 130, err[-2000:]
    stopped, _ = weights(workdir / "job")
    assert 5 <= stopped < 400
    again = run_cli(["train", *args], workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert weights(workdir / "job")[0] == 400


def test_resume_refuses_a_shape_change_naming_the_keys_and_logs_harmless_ones(workdir):
    base = [*TINY, "model=dcgan", "model.g_features=8", "model.d_features=8",
            "hydra.run.dir=run"]
    assert run_cli(["train", *base], workdir).returncode == 0
    result = run_cli(["train", "resume=run", "model.g_features=16", "trainer.max_steps=6"],
                     workdir)
    assert_bad_input(result, "cannot resume", "model.g_features: 8 -> 16")
    ok = run_cli(["train", "resume=run", "trainer.max_steps=6", "log.every=2",
                  "model.lr_g=1e-4"], workdir)
    assert ok.returncode == 0, ok.stderr[-2000:]
    text = (workdir / "run" / "train.log").read_text()
    assert "WARNING" in text and "resuming with model.lr_g changed: 0.0002 -> 0.0001" in text
    assert "resuming with log.every changed: 1 -> 2" in text


def test_config_changes_lists_every_differing_key():
    stored = {"model": {"g": 8, "h": [1, 2]}, "log": {"every": 1}}
    current = {"model": {"g": 16, "h": [1, 2]}, "log": {"every": 1}, "extra": 3}
    assert config_changes(stored, current) == [("extra", "<absent>", 3), ("model.g", 8, 16)]


def test_a_run_dir_that_cannot_be_created_is_one_error_line(workdir, monkeypatch):
    from ganlab import preflight
    from ganlab.errors import UserError

    locked = workdir / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(preflight.os, "access",  # root ignores chmod: say no for this folder
                        lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    try:
        preflight._check_writable([f"hydra.run.dir={locked / 'a' / 'b'}"])
    except UserError as e:
        assert f"cannot create the run dir {locked / 'a' / 'b'}: {locked} is not writable" in str(e)
    else:
        raise AssertionError("no error")
    preflight._check_writable([f"hydra.run.dir={workdir / 'fine'}"])  # writable: no error


def test_a_checkpoint_from_before_newer_config_keys_still_loads(tmp_path):
    """Runs trained before model.ema, model.history, trainer.precision ... existed."""
    from conftest import make_config
    from omegaconf import OmegaConf

    from ganlab import checkpoint
    from ganlab.config import SyntheticDatasetConfig
    from ganlab.data.base import DataSpec
    from ganlab.families.gan import GanFamily, MlpGanConfig

    cfg = make_config(dataset=SyntheticDatasetConfig(), model=MlpGanConfig())
    spec = DataSpec("synthetic", "image", (1, 28, 28), num_classes=10)
    family = GanFamily(cfg, spec, torch.device("cpu"))
    old = OmegaConf.to_container(cfg, enum_to_str=True)
    for key in ("ema", "history", "minibatch_std", "instance_noise", "spectral_norm"):
        del old["model"][key]
    del old["trainer"]["precision"]
    del old["loss"]["clip_value"]
    path = tmp_path / "old.pt"
    checkpoint.save({"step": 3, "config": old, "spec": spec.to_dict(),
                     "family": family.state_dict()}, path)
    loaded = checkpoint.load_checkpoint(path)
    assert loaded.step == 3 and loaded.G_ema is None and loaded.config.model.ema == 0.0
    assert torch.equal(loaded.generate(torch.zeros(1, 100)), family.generate(torch.zeros(1, 100)))
