"""`python -m ganlab latent ckpt=RUN map=true [method=auto|pca|tsne] [n=2000] out=map.png`

The lectures' picture of a latent space as a map: the held-out images' codes (the posterior
means of a VAE, an autoencoder's codes) in 2-D, one colour per class, so similar inputs can be
seen sitting together. A 2-D latent is drawn as it is; a larger one is projected, by t-SNE
(scikit-learn, perplexity 30, PCA initialisation, seeded) or by PCA (the two directions of most
variance). For a VAE with a 2-D latent, `<out>_manifold.png` is the classic figure of
Kingma & Welling: the decoder's images over a grid of the latent plane, taken at the normal
quantiles of the prior (so each cell covers the same prior mass).

For a GAN (any family that draws samples) on digits, the map is of the reference classifier's
feature space instead: real held-out digits coloured by class and the model's samples in black,
embedded together, so missing modes show as clusters without black points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganlab.errors import UserError
from ganlab.images import UNIT, figure_to_uint8, make_grid, save_png, to_float, to_uint8

METHODS = ("auto", "pca", "tsne")
MANIFOLD_STEPS = 20  # cells per side of the 2-D manifold grid
SIZE_PX = 640


def pca_2d(codes: torch.Tensor) -> torch.Tensor:
    """The codes on their two principal directions (centred; the first has most variance)."""
    centred = codes - codes.mean(dim=0)
    _u, _s, v = torch.linalg.svd(centred.double(), full_matrices=False)
    return (centred.double() @ v[:2].T).to(codes.dtype)


def tsne_2d(codes: torch.Tensor, seed: int) -> torch.Tensor:
    from sklearn.manifold import TSNE

    n = codes.shape[0]
    if n < 5:
        raise UserError(f"latent map: t-SNE needs at least 5 points, got {n}; use method=pca")
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                random_state=seed)
    return torch.from_numpy(tsne.fit_transform(codes.double().numpy())).to(codes.dtype)


def embed_2d(codes: torch.Tensor, method: str, seed: int = 0) -> tuple[torch.Tensor, str]:
    """(n, 2) coordinates for (n, d) codes, and how they were made."""
    if method not in METHODS:
        raise UserError(f"latent map: method must be one of {', '.join(METHODS)}, got "
                        f"{method!r}")
    d = codes.shape[1]
    if d == 2 and method == "auto":
        return codes, "the 2-D latent itself"
    if d < 2:
        raise UserError(f"latent map: a {d}-D latent has no 2-D map")
    if method == "pca" or (method == "auto" and d == 2):
        return pca_2d(codes), "PCA (the two directions of most variance)"
    return tsne_2d(codes, seed), "t-SNE (perplexity 30, PCA init)"


def scatter_by_class(points: torch.Tensor, labels: torch.Tensor | None,
                     class_names: tuple[str, ...] | None, title: str,
                     extra: torch.Tensor | None = None, extra_label: str = "") -> torch.Tensor:
    """A scatter plot, one colour per class with a legend: uint8 (3, H, W)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(SIZE_PX / 100, SIZE_PX / 100), dpi=100)
    ax = fig.add_axes((0.06, 0.06, 0.9, 0.86))
    p = points.detach().cpu().numpy()
    if labels is None:
        ax.scatter(p[:, 0], p[:, 1], s=4, c="tab:blue", linewidths=0)
    else:
        import matplotlib

        y = labels.cpu().numpy()
        classes = np.unique(y)
        cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "turbo"]
        for i, k in enumerate(classes):
            name = class_names[k] if class_names is not None else str(k)
            colour = cmap(i if len(classes) <= 10 else i / max(1, len(classes) - 1))
            ax.scatter(p[y == k, 0], p[y == k, 1], s=4, color=colour, linewidths=0, label=name)
    if extra is not None:  # drawn over the classes: the model's samples
        e = extra.detach().cpu().numpy()
        # crosses: tab10 has a grey of its own (class 7), so colour alone would not tell
        ax.scatter(e[:, 0], e[:, 1], s=9, c="black", marker="x", linewidths=0.6,
                   label=extra_label)
    if labels is not None or extra is not None:
        ax.legend(markerscale=4, fontsize=7, loc="best", framealpha=0.8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return figure_to_uint8(fig)


@torch.no_grad()
def manifold_grid(family, steps: int = MANIFOLD_STEPS) -> torch.Tensor:
    """The decoder over the latent plane at the prior's quantiles 0.05 .. 0.95: uint8 grid,
    z1 growing to the right, z2 growing upwards."""
    quantiles = torch.linspace(0.05, 0.95, steps, dtype=torch.float64)
    values = torch.distributions.Normal(0.0, 1.0).icdf(quantiles).to(torch.float32)
    z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1).to(family.device)
    images = family.decode(z)
    return make_grid(to_uint8(images, UNIT).cpu(), nrow=steps, padding=0)


@torch.no_grad()
def encode_all(family, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([family.encode(to_float(images[i : i + batch].to(family.device), UNIT))
                      for i in range(0, len(images), batch)]).cpu()


def draw(family, heldout, n: int, method: str, seed: int, out: str) -> list[Path]:
    """The map (and for a 2-D VAE the manifold) of the first n held-out images."""
    images = heldout.x[:n]
    codes = encode_all(family, images)
    points, how = embed_2d(codes, method, seed)
    labels = heldout.y[:n] if heldout.y is not None and heldout.y.ndim == 1 else None
    title = (f"{len(codes):,} held-out {heldout.spec.name} codes ({codes.shape[1]}-D): {how}")
    written = [Path(out)]
    save_png(scatter_by_class(points, labels, heldout.spec.class_names, title), out)
    if codes.shape[1] == 2 and getattr(family, "variational", False):
        manifold = Path(out).with_name(f"{Path(out).stem}_manifold.png")
        save_png(manifold_grid(family), manifold)
        written.append(manifold)
    return written


def draw_samples(family, train_cfg, heldout, data_dir: Path, n: int, method: str, seed: int,
                 out: str) -> list[Path]:
    """A sampling family's map: n samples and n real held-out images in the feature space of
    the run's reference classifier (or eval.classifier), embedded together."""
    from ganlab.metrics.reference import load_reference, native_heldout
    from ganlab.metrics.samples import draw_images, uses_classifier

    if not uses_classifier(train_cfg.eval, train_cfg.dataset):
        raise UserError(f"latent map of a {train_cfg.model.name} run: the map is drawn in a "
                        f"reference classifier's feature space, which ganlab has for mnist and "
                        f"fashion_mnist, not {train_cfg.dataset.name}")
    reference = load_reference(train_cfg.eval, train_cfg.dataset, data_dir, family.device,
                               heldout)
    real = native_heldout(train_cfg.dataset, data_dir, heldout)
    real_x, real_y = real.x[:n], real.y[:n]
    fakes = draw_images(family, len(real_x), seed)
    _, real_features = reference.probs_and_features(real_x)
    _, fake_features = reference.probs_and_features(fakes)
    points, how = embed_2d(torch.cat([real_features, fake_features]).float(), method, seed)
    title = (f"{len(real_x):,} real {train_cfg.dataset.name} digits (by class) and "
             f"{len(fakes):,} samples (black crosses)\nin the reference classifier's features: "
             f"{how}")
    picture = scatter_by_class(points[: len(real_x)], real_y, real.spec.class_names, title,
                               extra=points[len(real_x):], extra_label="samples")
    save_png(picture, out)
    return [Path(out)]
