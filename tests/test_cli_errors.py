"""Bad input: one `error: ...` line, exit code 2, no traceback, and no run dir created."""

from __future__ import annotations

import pytest
from conftest import TINY, assert_bad_input, run_cli, run_in_process

from ganlab.errors import UserError
from ganlab.registry import Registry


def test_registry_lists_choices():
    reg: Registry = Registry("model")
    reg.register("dcgan")(object)
    reg.register("mlp_gan")(object)
    with pytest.raises(UserError, match=r"unknown model .dcgna.; choose one of: dcgan, mlp_gan"):
        reg.get("dcgna")
    with pytest.raises(ValueError):
        reg.register("dcgan")(object)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["model=dcgna"],
         ["unknown model 'dcgna'; choose one of: ae, ", " dcgan, ", " mlp_gan, ", " vae"]),
        (["dataset=mnits"], ["unknown dataset 'mnits'", "mnist"]),
        (["-m", "loss=lsgan,hinj"], ["unknown loss 'hinj'", "wgan_gp"]),
        (["trainer.max_stepz=3"], ["trainer.max_stepz", "not in 'TrainerConfig'"]),
        (["trainer.max_steps=abc"], ["trainer.max_steps", "could not be converted to Integer"]),
        (["model.upsample=bicubic"], ["expected one of [transposed, nearest, bilinear]"]),
        (["-m", "trainer.batch_size=8,x"], ["trainer.batch_size"]),
        (["resume=nowhere/last.pt"], ["checkpoint nowhere/last.pt does not exist"]),
        (["trainer.batch_size=0"], ["trainer.batch_size=0 is outside its range [1, inf)"]),
        (["-m", "model.lr_d=1e-3,0"], ["model.lr_d=0.0 is outside its range (0, inf)"]),
    ],
)
def test_config_errors_before_any_run_dir(workdir, args, fragments, capsys):
    # refused by the preflight (run_in_process: not None), before Hydra makes a run dir
    assert_bad_input(run_in_process(["train", *args], capsys, workdir), *fragments)
    assert not (workdir / "outputs").exists()


def test_a_preflight_error_through_the_cli(workdir):
    """One of them through `python -m ganlab` (tests/test_troubleshooting.py compares the two
    ways for more)."""
    result = run_cli(["train", "-m", "model.lr_d=1e-3,0"], workdir)
    assert_bad_input(result, "model.lr_d=0.0 is outside its range (0, inf)")
    assert not (workdir / "outputs").exists()


def test_runtime_bad_input(workdir):
    device = "device=mps" if _has_cuda() else "device=cuda:0"
    result = run_cli(["train", *TINY, device], workdir)
    assert_bad_input(result, "not available")
    result = run_cli(["train", *TINY, "loss=hinge", "model.label_smoothing=0.1"], workdir)
    assert_bad_input(result, "label-based losses", "loss=hinge")
    result = run_cli(["train", *TINY, "model=dcgan", "dataset.image_size=48"], workdir)
    assert_bad_input(result, "dcgan supports image sizes")
    result = run_cli(["train", *TINY, "trainer.batch_size=65"], workdir)  # 64 examples
    assert_bad_input(result, "trainer.batch_size=65 is larger than the dataset (64 examples)")


def test_unknown_command_and_sample_errors(workdir, capsys):
    assert_bad_input(run_in_process(["trian"], capsys, workdir), "unknown command 'trian'")
    assert_bad_input(run_in_process(["sample", "ckpt=x.pt", "nn=3"], capsys, workdir), "'nn'")
    assert_bad_input(run_in_process(["sample", "ckpt=missing.pt"], capsys, workdir),
                     "does not exist")
    corrupt = workdir / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not a real checkpoint")
    assert_bad_input(run_in_process(["sample", f"ckpt={corrupt}"], capsys, workdir),
                     "corrupt or incomplete")


def test_help_lists_commands(workdir):
    result = run_cli(["--help"], workdir)
    assert result.returncode == 0
    assert "train" in result.stdout and "sample" in result.stdout
    result = run_cli(["train", "--help"], workdir)
    assert result.returncode == 0
    for group in ("dataset:", "model:", "loss:", "dcgan", "mlp_gan", "wgan_gp", "ring"):
        assert group in result.stdout
    assert "schema_" not in result.stdout


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_fresh_run_never_overwrites_a_checkpoint(workdir, capsys):
    assert run_cli(["train", *TINY, "hydra.run.dir=run"], workdir).returncode == 0
    before = (workdir / "run/checkpoints/last.pt").read_bytes()
    result = run_in_process(["train", *TINY, "trainer.max_steps=2", "hydra.run.dir=run"], capsys,
                            workdir)
    assert_bad_input(result, "already holds a checkpoint", "resume=run")
    assert (workdir / "run/checkpoints/last.pt").read_bytes() == before


def test_diverging_run_stops_with_non_finite_error(workdir):
    # an absurd learning rate blows the generator up on the first step
    result = run_cli(["train", *TINY, "loss=lsgan", "model.lr_g=1e30", "model.lr_d=1e30"], workdir)
    assert_bad_input(result, "non-finite loss at step 1", "loss/G=nan")


def test_ranges_open_and_closed_ends():
    from conftest import make_config
    from omegaconf import OmegaConf

    from ganlab.config import SyntheticDatasetConfig, check_ranges
    from ganlab.families.gan import DcganConfig

    cfg = make_config(dataset=SyntheticDatasetConfig(), model=DcganConfig())
    check_ranges(cfg)  # the defaults are valid
    for key, bad, good in [("model.label_noise", 1.0, 0.0), ("model.d_dropout", 1.0, 0.5),
                           ("model.lr_g", 0.0, 1e-9), ("trainer.ckpt_every", -1, 0)]:
        OmegaConf.update(cfg, key, bad)
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            check_ranges(cfg)
        OmegaConf.update(cfg, key, good)
        check_ranges(cfg)
