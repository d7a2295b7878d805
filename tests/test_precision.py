"""trainer.precision: bf16/fp16 autocast for every family's step, loss scaling, fp32 penalty."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, assert_bad_input, make_config, run_cli
from omegaconf import OmegaConf

from ganlab.amp import Amp
from ganlab.config import Red2BlueDatasetConfig, SyntheticDatasetConfig
from ganlab.data.base import DataSpec
from ganlab.families import FAMILIES
from ganlab.families.autoencoder import VaeConfig
from ganlab.families.classifier import LenetConfig
from ganlab.families.cyclegan import CycleganConfig
from ganlab.families.gan import DcganConfig
from ganlab.losses import LossConfig, gradient_penalty

IMAGES = DataSpec("synthetic", "image", (1, 28, 28), num_classes=10)


def batch(n=8):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def build(model, family: str, spec=IMAGES, dataset=None, **cfg_updates):
    cfg = make_config(dataset=dataset or SyntheticDatasetConfig(), model=model)
    for key, value in cfg_updates.items():
        OmegaConf.update(cfg, key, value)
    cfg.log.n_samples = 4
    torch.manual_seed(0)
    fam = FAMILIES.get(family)(cfg, spec, torch.device("cpu"))
    fam.run_length = 10
    fam.amp = Amp("bf16", "cpu")
    return fam


def step_under_bf16(fam, data) -> dict:
    with fam.amp.autocast():
        out = fam.train_step(data)
    fam.amp.update()
    return out


@pytest.mark.parametrize("case", ["gan", "gan_gp", "classifier", "vae", "cyclegan"])
def test_one_bf16_step_of_every_family_trains_fp32_weights(case, one_thread):
    if case == "gan":
        fam = build(DcganConfig(g_features=8, d_features=8), "gan")
    elif case == "gan_gp":
        fam = build(DcganConfig(g_features=8, d_features=8), "gan",
                    **{"loss": LossConfig(name="wgan_gp", gp_weight=10.0)})
    elif case == "classifier":
        fam = build(LenetConfig(name="lenet", channels=[4, 8], hidden=[16]), "classifier")
    elif case == "vae":
        fam = build(VaeConfig(), "vae")
    else:
        spec = DataSpec("red2blue", "unpaired", (3, 32, 32))
        fam = build(CycleganConfig(), "cyclegan", spec=spec,
                    dataset=Red2BlueDatasetConfig(),
                    **{"model.g_features": 8, "model.d_features": 8})
    nets = [m for m in vars(fam).values() if isinstance(m, torch.nn.Module)]
    before = [p.detach().clone() for m in nets for p in m.parameters()]
    if case == "cyclegan":
        g = torch.Generator().manual_seed(0)
        data = tuple(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=g)
                     for _ in range(2))
    else:
        data = batch()
    out = step_under_bf16(fam, data)
    assert all(torch.isfinite(v).all() for k, v in out.items() if k.startswith("loss/")), out
    after = [p for m in nets for p in m.parameters()]
    assert all(p.dtype == torch.float32 for p in after)  # the weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_gradient_penalty_is_computed_in_fp32_under_autocast():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 1))
    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    torch.manual_seed(1)
    plain = gradient_penalty(critic, real, fake)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = gradient_penalty(critic, real.bfloat16(), fake.bfloat16())
    assert mixed.dtype == torch.float32
    # the same up to the bf16 rounding of the inputs only (the network ran in fp32)
    assert mixed.item() == pytest.approx(plain.item(), rel=2e-2)


def test_fp16_scales_the_loss_and_skips_a_step_whose_gradients_overflow():
    amp = Amp("16", "cpu")
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = layer(torch.ones(1, 2)).sum()
    amp.backward(loss)
    scale = amp.scaler.get_scale()
    assert scale > 1 and layer.weight.grad.abs().sum() > 0
    # the gradient held is scaled; the step uses it unscaled
    expected = layer.weight.detach() - 0.1 * layer.weight.grad / scale
    amp.step(opt)
    amp.update()
    assert torch.allclose(layer.weight, expected)
    weight = layer.weight.detach().clone()
    layer.weight.grad = torch.full_like(layer.weight, float("inf"))
    amp.step(opt)
    amp.update()
    assert torch.equal(layer.weight, weight)  # skipped
    assert amp.scaler.get_scale() < scale  # and the scale backed off


def test_bf16_run_end_to_end_and_its_checkpoint_resumes_in_fp32(workdir):
    result = run_cli(["train", *TINY, "model=dcgan", "model.g_features=8", "model.d_features=8",
                      "trainer.precision=bf16", "hydra.run.dir=run"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(workdir / "run/checkpoints/last.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state["family"]["G"].values()
               if t.is_floating_point())
    again = run_cli(["train", "resume=run", "trainer.precision=32", "trainer.max_steps=6"],
                    workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_bad_input(run_cli(["train", *TINY, "trainer.precision=8"], workdir),
                     "trainer.precision")
