"""How fast does a generator learn to use its latent? (a diagnostic, not a test)

    python scripts/probe_latent_fit.py [--models dcgan,stylegan] [--steps 150] [--n 64]

Fits each model's generator (its training-mode G, its own optimizer and learning rate) to n
fixed (z, digit) pairs from the bundled MNIST digits by mean squared error, with no
discriminator. A generator whose output depends little on z first falls to the mean image
(whose squared error is printed first: 0.24 at 28 px, 0.19 padded to StyleGAN's 32) and
has to learn the z-dependence from there; one that starts using z at once goes well below
it. Prints the error and the spread of the outputs over the n latents (the targets' spread
is printed too) every 50 steps.

Why it exists: StyleGAN2 collapses to one shape on the digits within a few hundred steps
(README, "StyleGAN2 at CPU scale"). This probe shows the generator on its own, away from the
GAN game: ganlab's StyleGAN generator stays near the mean image for 150 steps, as the
NVlabs reference generator does with the same widths, while DCGAN's fits the digits.
Unconditional families whose G takes z alone (dcgan, mlp_gan, stylegan).
"""

from __future__ import annotations

import argparse
import sys

import torch

QUIET = ["dataset=mnist", "dataset.source=bundled", "device=cpu", "log.n_samples=4"]


def probe(model: str, steps: int, n: int) -> None:
    from ganlab.config import compose
    from ganlab.data import build_dataset
    from ganlab.families import FAMILIES

    cfg = compose([f"model={model}", *QUIET])
    data = build_dataset(cfg.dataset, cfg.data_dir, seed=0)
    torch.manual_seed(0)
    family = FAMILIES.get(cfg.model.family)(cfg, data.spec, torch.device("cpu"))
    G, optimizer = family.G.train(), family.opt_g
    z = torch.randn(n, family.latent_dim, generator=torch.Generator().manual_seed(1))
    target = family._real(data.x[:n])  # the family's own value range and padding
    print(f"{model}: targets' spread over the {n} digits {float(target.std(0).mean()):.3f}, "
          f"squared error of the mean image {float((target - target.mean(0)).square().mean()):.3f}")
    for step in range(steps + 1):
        out = G(z)
        if out.shape != target.shape:
            sys.exit(f"model={model}: G(z) gives {tuple(out.shape)}, the targets are "
                     f"{tuple(target.shape)}; this probe takes unconditional image generators")
        loss = (out - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"{model} step {step}: squared error {loss.item():.4f}, "
                  f"spread over z {out.detach().std(0).mean().item():.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="dcgan,stylegan")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    for model in args.models.split(","):
        probe(model, args.steps, args.n)


if __name__ == "__main__":
    main()
