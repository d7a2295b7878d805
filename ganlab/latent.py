"""`python -m ganlab latent ckpt=RUN attribute=Smiling alpha=1.5 out=smile.png`
(and `latent ckpt=RUN map=true out=map.png`: the map of held-out codes, ganlab/latent_map.py)

Latent-space arithmetic with a trained VAE (or autoencoder): the attribute vector is the mean
code of training images with the attribute minus the mean code of those without; each row of
the grid is one held-out image, first as it is, then decoded from z + alpha * vector for alpha
from -alpha to +alpha. Attributes are CelebA's 40 by name, or the classes of a labelled dataset
("1": the digit 1 against the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import MISSING

from ganlab.checkpoint import load_checkpoint
from ganlab.commandline import parse_options
from ganlab.data import build_dataset
from ganlab.errors import UserError
from ganlab.families.capabilities import Autoencoder, Sampler, require
from ganlab.images import UNIT, make_grid, save_png, to_float, to_uint8
from ganlab.runtime import flush_denormals


@dataclass
class LatentConfig:
    ckpt: str = MISSING  # checkpoint file or run dir of a VAE or autoencoder
    # a CelebA attribute name, or a class of a labelled dataset (latent arithmetic)
    attribute: str | None = None
    # true: the map of held-out codes instead (ganlab/latent_map.py), of the first n_map images
    map: bool = False
    method: str = "auto"  # the map of a latent larger than 2-D: auto (t-SNE), tsne, pca
    n_map: int = 2000
    seed: int = 0  # t-SNE's
    alpha: float = 1.5  # columns go from -alpha to +alpha
    steps: int = 7  # columns of alphas (odd: the middle one is the plain reconstruction)
    n: int = 8  # rows: the first n held-out images
    n_reference: int = 2000  # training images per side for the mean codes
    out: str = "latent.png"
    data_dir: str | None = None  # default: the data_dir the model was trained with
    device: str = "cpu"


def parse(args: list[str]) -> LatentConfig:
    cfg = parse_options(LatentConfig, args, "latent")
    if cfg.n < 1 or cfg.steps < 2 or cfg.n_reference < 1 or cfg.n_map < 2:
        raise UserError("latent: n and n_reference must be at least 1, n_map at least 2, "
                        "steps at least 2")
    if not cfg.map and cfg.attribute is None:
        raise UserError("latent: give attribute=NAME (latent arithmetic) or map=true (the map "
                        "of held-out codes)")
    if Path(cfg.out).suffix != ".png":
        raise UserError(f"latent: out must end in .png, got {cfg.out!r}")
    return cfg  # type: ignore[return-value]


def attribute_mask(data, name: str) -> torch.Tensor:
    """Which examples have the attribute: a CelebA column, or a class of the labels."""
    spec = data.spec
    if spec.attributes is not None:
        if name not in spec.attributes:
            raise UserError(f"unknown attribute {name!r}; choose one of: "
                            f"{', '.join(spec.attributes)}")
        return data.y[:, spec.attributes.index(name)] == 1
    if spec.num_classes and data.y is not None:
        names = [str(c) for c in range(spec.num_classes)]
        if name not in names:
            raise UserError(f"unknown attribute {name!r} for {spec.name}: its attributes are "
                            f"its classes, {', '.join(names)}")
        return data.y == int(name)
    raise UserError(f"dataset {spec.name} has neither attributes nor labels: no attribute "
                    "vectors to compute")


@torch.no_grad()
def mean_code(family, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    codes = [family.encode(to_float(images[i : i + batch].to(family.device), UNIT))
             for i in range(0, len(images), batch)]
    return torch.cat(codes).mean(dim=0)


def main(args: list[str]) -> None:
    cfg = parse(args)
    flush_denormals()  # as in training: denormals slow CPU inference up to 100x
    family = load_checkpoint(cfg.ckpt, cfg.device)
    if cfg.map:
        require(family, (Autoencoder, Sampler), "latent map=true needs an autoencoder, a VAE "
                "or a model that draws samples", cfg.ckpt)
    else:
        require(family, Autoencoder, "latent needs an autoencoder or VAE", cfg.ckpt)
    train_cfg = family.config
    data_dir = Path(cfg.data_dir or train_cfg.data_dir)
    data = build_dataset(train_cfg.dataset, data_dir, train_cfg.trainer.seed, heldout=True)
    if cfg.map:
        from ganlab import latent_map

        if isinstance(family, Autoencoder):
            written = latent_map.draw(family, data.heldout, cfg.n_map, cfg.method, cfg.seed,
                                      cfg.out)
        else:
            written = latent_map.draw_samples(family, train_cfg, data.heldout, data_dir,
                                              cfg.n_map, cfg.method, cfg.seed, cfg.out)
        for path in written:
            print(f"wrote {path}")
        return
    has = attribute_mask(data, cfg.attribute)
    if not has.any() or has.all():
        raise UserError(f"attribute {cfg.attribute!r}: the training data has "
                        f"{'no' if not has.any() else 'only'} images with it")
    vector = (mean_code(family, data.x[has][: cfg.n_reference]) -
              mean_code(family, data.x[~has][: cfg.n_reference]))
    with torch.no_grad():
        x = to_float(data.heldout.x[: cfg.n].to(family.device), UNIT)
        z = family.encode(x)
        alphas = torch.linspace(-cfg.alpha, cfg.alpha, cfg.steps, device=family.device)
        shifted = z[:, None, :] + alphas[None, :, None] * vector  # (n, steps, latent)
        decoded = family.decode(shifted.reshape(-1, z.shape[1])).reshape(len(x), cfg.steps,
                                                                        *x.shape[1:])
    rows = torch.cat([x[:, None], decoded], dim=1).reshape(-1, *x.shape[1:])
    save_png(make_grid(to_uint8(rows, UNIT).cpu(), nrow=cfg.steps + 1), cfg.out)
    print(f"wrote {cfg.out}: {len(x)} held-out images (first column) with {cfg.attribute!r} "
          f"added at alpha {', '.join(f'{a:g}' for a in alphas.tolist())}; |vector| = "
          f"{float(vector.norm()):.3f}")
