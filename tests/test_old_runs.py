"""Run dirs written before model settings moved under model.* (tests/fixtures/old_runs) load,
sample, translate, evaluate and resume with today's code, with the settings they were
trained with."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from ganlab.checkpoint import load_checkpoint, migrate_config, migrate_overrides

OLD_RUNS = Path(__file__).parent / "fixtures" / "old_runs"
NAMES = sorted(p.name for p in OLD_RUNS.iterdir() if p.is_dir())

# settings each run was trained with, as today's keys read them back
TRAINED_WITH = {
    "dcgan_tools": {"model.ema": 0.999, "model.history": 4, "model.instance_noise": 0.1,
                    "model.lr_g": 1e-4, "model.lr_d": 2e-4, "loss.name": "nonsaturating"},
    "dcgan_wgan_gp": {"loss.name": "wgan_gp", "loss.gp_weight": 10.0, "model.d_steps": 5,
                      "model.lr_g": 1e-4, "model.betas": [0.0, 0.9]},
    # trained before D saw real images with wrong labels (model.mismatch, now on by default)
    "cgan": {"model.embed_dim": 4, "model.conditioning": "projection", "model.mismatch": False},
    "progan": {"loss.name": "wgan_gp", "model.lr_g": 1e-3, "model.betas": [0.0, 0.99]},
    "vae": {"model.beta": 2.0, "model.lr": 1e-3, "model.hidden": [16]},
    "lenet_fgsm": {"model.lr": 0.01, "defense.name": "fgsm", "defense.eps": 0.3},
    "cyclegan": {"model.lambda_a": 5.0, "model.g_features": 2, "model.d_layers": 2},
}


def copy_run(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(OLD_RUNS / name, tmp_path / name))


def test_every_family_has_an_old_run():
    from ganlab.families import FAMILIES

    families = {load_checkpoint(OLD_RUNS / n).config.model.family for n in NAMES}
    # ae is vae's code without the KL; families added after the settings moved under model.*
    # have no run in the old layout
    newer = {"vqvae", "pix2pix", "srgan", "spade", "gan3d", "biggan", "stylegan", "worldmodel",
             "gamegan"}
    assert families == set(FAMILIES.names()) - {"ae"} - newer
    assert set(NAMES) == set(TRAINED_WITH)


@pytest.mark.parametrize("name", NAMES)
def test_an_old_run_loads_with_its_settings_in_todays_layout(name):
    from omegaconf import OmegaConf

    family = load_checkpoint(OLD_RUNS / name)
    cfg = family.config
    assert family.step == 4
    assert not {"gan", "vae", "classifier", "cyclegan"} & set(cfg)
    assert ("loss" in cfg) == (cfg.model.family in ("gan", "progan"))
    assert ("defense" in cfg) == (cfg.model.family == "classifier")
    for key, value in TRAINED_WITH[name].items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value or str(getattr(got, "value", got)) == value, (key, got)


def test_old_overrides_and_configs_are_migrated():
    assert migrate_overrides(["gan.lr_g=1e-4", "+gan.ema=0.9", "loss=wgan_gp", "loss=hinge",
                              "vae.beta=2", "model=dcgan"], "gan") == [
        "model.lr_g=1e-4", "+model.ema=0.9", "experiment=wgan_gp", "loss=hinge",
        "model.beta=2", "model=dcgan"]
    # progan's old command lines carried Karras' settings explicitly: the loss stays a loss
    assert migrate_overrides(["loss=wgan_gp"], "progan") == ["loss=wgan_gp"]
    old = {"model": {"name": "ae", "family": "ae"}, "loss": {"name": "nonsaturating"},
           "gan": {"lr_g": 1}, "classifier": {"lr": 2}, "vae": {"lr": 3, "beta": 1.0},
           "cyclegan": {"lr": 4}, "defense": {"name": "none"}, "trainer": {"seed": 0}}
    assert migrate_config(old) == {"model": {"name": "ae", "family": "ae", "lr": 3},
                                   "trainer": {"seed": 0}}
    new = {"model": {"name": "dcgan"}, "loss": {"name": "hinge"}}
    assert migrate_config(new) is new


@pytest.mark.parametrize("name", ["dcgan_tools", "cgan", "progan", "vae"])
def test_an_old_run_samples(name, tmp_path, capsys):
    from ganlab import sample

    out = tmp_path / "s.npz"
    sample.main([f"ckpt={OLD_RUNS / name}", "n=10", f"out={out}"])
    import numpy as np

    images = np.load(out)["images"]
    assert images.shape[0] == 10 and images.dtype == np.uint8 and images.std() > 0


def test_an_old_cyclegan_translates(tmp_path, capsys):
    from PIL import Image

    from ganlab import translate

    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy()).save(
        source / "a.png")
    translate.main([f"ckpt={OLD_RUNS / 'cyclegan'}", f"input={source}",
                    f"out={tmp_path / 'out'}"])
    assert (tmp_path / "out" / "a.png").is_file()


def test_an_old_vae_evaluates(tmp_path, monkeypatch, capsys):
    from ganlab import evaluate

    monkeypatch.setenv("GANLAB_DATA", str(tmp_path / "data"))
    run = copy_run("vae", tmp_path)
    evaluate.main([f"run={run}", "n_samples=16"])
    assert "heldout_neg_elbo" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["dcgan_wgan_gp", "lenet_fgsm", "cyclegan"])
def test_an_old_run_resumes_with_the_settings_it_was_trained_with(name, tmp_path):
    run = copy_run(name, tmp_path)
    result = run_cli(["train", f"resume={run}", "trainer.max_steps=6"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 6
    log = (run / "train.log").read_text()
    assert "resumed from" in log, log[-2000:]
    changed = re.findall(r"resuming with ([\w.]+) changed: (.*) -> ", log)
    # keys added since (eval.reference_min_accuracy, the GAN family's later options) go from
    # <absent> to their defaults, which keep the old behaviour (logged as info)
    assert {key for key, old in changed if old != "<absent>"} <= {
        "data_dir", "resume", "trainer.max_steps"}, changed
    resumed = load_checkpoint(run)
    assert resumed.config.model == load_checkpoint(OLD_RUNS / name).config.model


def test_an_old_cgan_keeps_its_mean_pooled_projection_through_a_resave(tmp_path):
    """Its D averaged phi(x) over space before projecting (module version 1); today's sums
    it. Loaded, saved again and reloaded, it still scores as it was trained to."""
    import io

    from ganlab.models.conditional import ProjectionDiscriminator

    old = load_checkpoint(OLD_RUNS / "cgan").D
    assert isinstance(old, ProjectionDiscriminator) and old.pool_mean
    buffer = io.BytesIO()
    torch.save(old.state_dict(), buffer)
    buffer.seek(0)
    fresh = copy.deepcopy(old)
    fresh.pool_mean, fresh._version = False, ProjectionDiscriminator._version
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.rand(3, *load_checkpoint(OLD_RUNS / "cgan").spec.shape) * 2 - 1
    labels = torch.tensor([0, 1, 0])
    with torch.no_grad():
        features = old.base.net[:-1](x)
        expected = (old.base.net[-1](features).flatten()
                    + (old.embed(labels) * features.mean(dim=(2, 3))).sum(dim=1))
        assert fresh.pool_mean
        torch.testing.assert_close(fresh(x, labels), expected)


def test_loading_a_checkpoint_leaves_the_float_semantics_of_the_caller_alone():
    """A library call does not turn on flush-to-zero for the whole process (the commands do
    it for themselves)."""
    torch.set_flush_denormal(False)  # in-process commands of earlier tests turn it on
    tiny = torch.tensor([1e-40])
    load_checkpoint(OLD_RUNS / "vae")
    assert float(tiny * 1.0) != 0.0  # denormals still represented
