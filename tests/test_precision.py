"""trainer.precision: bf16/fp16 autocast for every family's step, loss scaling, fp32 penalty."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, assert_bad_input, batch, build_family, run_cli, run_in_process

from ganlab.amp import Amp
from ganlab.config import Red2BlueDatasetConfig
from ganlab.data.base import DataSpec
from ganlab.families.autoencoder import VaeConfig
from ganlab.families.classifier import LenetConfig
from ganlab.families.cyclegan import CycleganConfig
from ganlab.families.gan import DcganConfig
from ganlab.losses import gradient_penalty


def build(model, spec=None, dataset=None, **settings):
    """build_family under bf16, over 10 steps."""
    fam = build_family(model, spec, dataset, **settings)
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
        fam = build(DcganConfig(g_features=8, d_features=8))
    elif case == "gan_gp":
        fam = build(DcganConfig(g_features=8, d_features=8),
                    **{"loss.name": "wgan_gp", "loss.gp_weight": 10.0})
    elif case == "classifier":
        fam = build(LenetConfig(name="lenet", channels=[4, 8], hidden=[16]))
    elif case == "vae":
        fam = build(VaeConfig())
    else:
        spec = DataSpec("red2blue", "unpaired", (3, 32, 32))
        fam = build(CycleganConfig(), spec, Red2BlueDatasetConfig(),
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


def test_an_unknown_precision_is_refused(workdir, capsys):
    assert_bad_input(run_in_process(["train", *TINY, "trainer.precision=8"], capsys, workdir),
                     "trainer.precision=8 is not one of: 32, bf16, 16")


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
