"""Autoencoders and VAEs: the loss maths, the networks, the family, and the CLI end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, assert_bad_input, compose_cfg, read_events, run_cli, run_in_process
from test_reference import cheap_reference

from ganlab.data import build_dataset
from ganlab.families.autoencoder import (
    VaeFamily,
    bernoulli_nll,
    gaussian_kl,
    gaussian_nll,
)


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.3, -0.7, 0.0]])
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(400_000, 3)
    q = torch.distributions.Normal(mu, std).log_prob(z).sum(1)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    assert float(gaussian_kl(mu, logvar)) == pytest.approx(float((q - p).mean()), abs=0.01)
    assert float(gaussian_kl(torch.zeros(1, 5), torch.zeros(1, 5))) == 0.0


def test_likelihoods_on_hand_made_cases():
    x = torch.rand(2, 1, 4, 4)
    # logits 0 are p = 0.5 for every pixel: log 2 nats each, whatever x is
    assert torch.allclose(bernoulli_nll(torch.zeros_like(x), x), torch.full((2,), 16 * math.log(2)))
    binary = (x > 0.5).float()
    confident = (binary * 2 - 1) * 30.0  # logits of +-30 on the right side: almost no loss
    assert bernoulli_nll(confident, binary).max() < 1e-6
    exact = 16 * (math.log(0.1) + 0.5 * math.log(2 * math.pi))
    assert torch.allclose(gaussian_nll(x, x, 0.1), torch.full((2,), exact))
    shifted = gaussian_nll(x + 0.1, x, 0.1) - gaussian_nll(x, x, 0.1)
    assert torch.allclose(shifted, torch.full((2,), 16 * 0.5))  # (0.1 / 0.1)^2 / 2 per pixel


def test_vae_has_the_pytorch_examples_shape():
    cfg = compose_cfg("model=vae", "dataset=synthetic")
    from ganlab.data.base import DataSpec

    family = VaeFamily(cfg, DataSpec("mnist", "image", (1, 28, 28), 10), torch.device("cpu"))
    enc = [m for m in family.encoder if isinstance(m, torch.nn.Linear)]
    dec = [m for m in family.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in enc] == [(784, 400), (400, 40)]
    assert [(m.in_features, m.out_features) for m in dec] == [(20, 400), (400, 784)]
    x = torch.rand(3, 1, 28, 28)
    assert family.decode(family.encode(x)).shape == x.shape


@pytest.mark.parametrize(("size", "channels"), [(64, 3), (32, 3), (28, 1)])
def test_conv_vae_shapes(size, channels):
    from ganlab.data.base import DataSpec

    cfg = compose_cfg("model=conv_vae", "dataset=synthetic")
    spec = DataSpec("s", "image", (channels, size, size), 0)
    family = VaeFamily(cfg, spec, torch.device("cpu"))
    x = torch.rand(2, channels, size, size)
    assert family.encoder(x).shape == (2, 256)  # mu and logvar of a 128-d latent
    assert family.decode(family.encode(x)).shape == x.shape
    terms = family.losses(x)
    assert terms["recon"].shape == terms["kl"].shape == (2,)


def test_vae_training_lowers_the_heldout_elbo():
    """A real drop on real digits: from about 784 log 2 = 543 nats towards 200."""
    torch.manual_seed(0)
    cfg = compose_cfg("model=vae", "dataset.source=bundled", "eval.n_samples=500")
    data = build_dataset(cfg.dataset, "unused", 0, heldout=True)
    family = VaeFamily(cfg, data.spec, torch.device("cpu"))
    family.use_heldout(data.heldout)
    before = family.evaluate()
    assert before["heldout_neg_elbo"] == pytest.approx(
        before["heldout_recon"] + before["heldout_kl"])
    rng = torch.get_rng_state()
    assert family.evaluate() == before  # its own noise: repeatable, global RNG untouched
    assert torch.equal(rng, torch.get_rng_state())
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        index = torch.randint(len(data), (128,), generator=generator)
        out = family.train_step((data.x[index], data.y[index]))
    assert set(out) == {"loss/recon", "loss/kl", "loss/total"}
    after = family.evaluate()
    assert before["heldout_neg_elbo"] > 500
    assert after["heldout_neg_elbo"] < before["heldout_neg_elbo"] - 250, (before, after)
    assert after["heldout_kl"] > 1  # the code is used, not collapsed to the prior


@pytest.mark.parametrize("model", ["ae", "vae", "conv_vae"])
def test_train_end_to_end_logs_pictures_and_elbo(workdir, model):
    extra = ["dataset.image_size=32", "dataset.channels=3", "model.features=4",
             "model.latent_dim=8"] if model == "conv_vae" else []
    result = run_cli(["train", *TINY, f"model={model}", *extra, "hydra.run.dir=run"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    run = workdir / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    events = read_events(run / "tb")
    images = set(events.Tags()["images"])
    assert {"reconstructions", "interpolation"} <= images, images
    assert [e.step for e in events.Images("reconstructions")] == [0, 2, 4]
    scalars = set(events.Tags()["scalars"])
    assert {"loss/recon", "loss/total", "eval/heldout_recon"} <= scalars
    if model == "ae":
        assert "samples" not in images and "heldout_neg_elbo" not in metrics
    else:
        assert "samples" in images and {"loss/kl", "eval/heldout_neg_elbo"} <= scalars
        assert np.isfinite(metrics["heldout_neg_elbo"])
        sample = run_cli(["sample", f"ckpt={run}", "n=5", "out=s.npz"], workdir)
        assert sample.returncode == 0, sample.stderr
        shape = (5, 3, 32, 32) if model == "conv_vae" else (5, 1, 28, 28)
        assert np.load(workdir / "s.npz")["images"].shape == shape


@pytest.fixture(scope="module")
def digits_vae(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae")
    args = ["train", "model=vae", "dataset.source=bundled", "trainer.max_steps=60",
            "trainer.batch_size=64", "log.progress=false", "eval.every=0", "log.sample_every=0",
            "eval.n_samples=300", "eval.reference_min_accuracy=0", "device=cpu",
            "hydra.run.dir=run"]
    cheap_reference(root / "data")  # quick and poor: the reference's own tests are elsewhere
    result = run_cli(args, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_a_vae_reports_the_sample_metrics_beside_its_elbo(digits_vae):
    """Sample-quality metrics come from metrics/, for any family that samples: the VAE gets
    the digits' classifier-space metrics of its samples without a line of metric code."""
    metrics = json.loads((digits_vae / "metrics.json").read_text())
    assert metrics["classifier_fake_images"] == 300
    assert metrics["classifier_fid"] > 0 and 0 <= metrics["class_coverage"] <= 1
    assert metrics["heldout_neg_elbo"] > 0
    assert "best_heldout_neg_elbo" in metrics  # the ELBO ranks a VAE, not its FID


def test_latent_grid_has_rows_of_alphas(digits_vae):
    out = digits_vae.parent / "one.png"
    result = run_cli(["latent", f"ckpt={digits_vae}", "attribute=1", "n=3", "steps=5",
                      f"out={out}"], digits_vae.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    image = Image.open(out)
    # 3 rows of (input + 5 alphas) 28-px tiles with make_grid's 2-px padding
    assert image.size == (6 * 30 + 2, 3 * 30 + 2)
    assert "alpha -1.5, -0.75, 0, 0.75, 1.5" in result.stdout


def test_latent_and_vae_bad_input(digits_vae, workdir, capsys):
    unknown = run_in_process(["latent", f"ckpt={digits_vae}", "attribute=Smiling", "out=x.png"],
                             capsys, workdir)
    assert_bad_input(unknown, "unknown attribute 'Smiling'", "0, 1, 2")
    gan = workdir / "gan"
    assert run_cli(["train", *TINY, f"hydra.run.dir={gan}"], workdir).returncode == 0
    assert_bad_input(run_in_process(["latent", f"ckpt={gan}", "attribute=1"], capsys, workdir),
                     "needs an autoencoder or VAE")
    for args, fragment in [
        (["model=ae", "model.beta=4"], "model.beta is not a setting of model=ae"),
        (["model=vae", "loss=wgan"],
         "loss= applies to model=biggan,cgan,dcgan,gan3d,mlp_gan,progan, not to model=vae"),
        (["model=vae", "model.beta=-1"], "model.beta=-1"),
        (["model=vae", "model.likelihood=poisson"], "likelihood"),
        (["model=dcgan", "model.beta=2"], "model.beta is not a setting of model=dcgan"),
        (["model=dcgan", "vae.beta=2"], "vae.beta is now model.beta"),
    ]:  # in-process when the preflight refuses it, else through the CLI (refused at start)
        command = ["train", *TINY, *args, f"hydra.run.dir={workdir / 'bad'}"]
        result = run_in_process(command, capsys) or run_cli(command, workdir)
        assert_bad_input(result, fragment)
    assert not (workdir / "bad" / "checkpoints").exists()


def test_conv_vae_on_a_fake_celeba_and_attribute_arithmetic(workdir, capsys):
    from test_celeba import fake_celeba

    fake_celeba(workdir / "data")  # 12 faces in torchvision's layout, 40 attributes
    args = ["train", "model=conv_vae", "dataset=celeba", "dataset.image_size=32",
            "model.features=4", "model.latent_dim=8", "trainer.batch_size=4",
            "trainer.max_steps=4", "log.every=1", "log.sample_every=2", "log.n_samples=4",
            "log.progress=false", "device=cpu", "hydra.run.dir=run"]
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert "split test" in metrics["heldout_data"]  # the official test partition
    out = workdir / "smile.png"
    latent = run_cli(["latent", "ckpt=run", "attribute=Smiling", "n=2", "steps=3",
                      f"out={out}"], workdir)
    assert latent.returncode == 0, latent.stderr[-3000:]
    from PIL import Image

    assert Image.open(out).size == (4 * 34 + 2, 2 * 34 + 2)  # 32-px tiles, 2-px padding
    unknown = run_in_process(["latent", "ckpt=run", "attribute=Smilling", "out=x.png"], capsys,
                             workdir)
    assert_bad_input(unknown, "unknown attribute 'Smilling'", "Smiling", "Young")
