"""`model=cgan`: a class-conditional DCGAN.

G(z, y) is the DCGAN generator fed with z joined to a learnt embedding of the label y (Mirza &
Osindero). D(x, y) is the DCGAN discriminator with the label brought in one of two ways
(`model.conditioning`):

- projection (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), pooled phi(x)>,
  phi being D's feature extractor and psi its scoring conv; the default. Features are
  mean-pooled (Miyato et al. sum them): the term's scale does not grow with the map size
  (a 7x7 map summed let D overpower a small G in our tests);
- concat: the label's one-hot planes stacked onto the image channels at D's input.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.errors import UserError
from ganlab.images import SYMMETRIC
from ganlab.models.base import MODELS, GanNetworks
from ganlab.models.dcgan import (
    DcganDiscriminator,
    DcganGenerator,
    check_image_spec,
    dcgan_init,
    discriminator_norm,
)


class Conditioning(str, Enum):
    projection = "projection"  # D(x, y) = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama)
    concat = "concat"  # the label's one-hot planes concatenated to D's input (Mirza & Osindero)


class ConditionalGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, embed_dim: int, channels: int,
                 size: int, features: int, upsample) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = DcganGenerator(latent_dim + embed_dim, channels, size, features, upsample)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(labels)], dim=1))


class ProjectionDiscriminator(nn.Module):
    def __init__(self, base: DcganDiscriminator, num_classes: int) -> None:
        super().__init__()
        self.base = base
        self.embed = nn.Embedding(num_classes, base.net[-1].in_channels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = self.base.net[:-1](x)  # phi(x): (N, W, k, k)
        score = self.base.net[-1](features).flatten()  # psi(phi(x))
        return score + (self.embed(labels) * features.mean(dim=(2, 3))).sum(dim=1)


class ConcatDiscriminator(nn.Module):
    def __init__(self, base: DcganDiscriminator, num_classes: int) -> None:
        super().__init__()
        self.base = base
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        planes = F.one_hot(labels, self.num_classes).to(x.dtype)
        planes = planes[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.base(torch.cat([x, planes], dim=1))


@MODELS.register("cgan")
def build_cgan(cfg, spec) -> GanNetworks:
    channels, size = check_image_spec(spec, "cgan")
    k = spec.num_classes
    if k < 2:
        raise UserError(f"model=cgan needs a labelled dataset (class labels to condition on); "
                        f"{spec.name!r} has none (use mnist, fashion_mnist or synthetic)")
    G = ConditionalGenerator(cfg.latent_dim, k, cfg.embed_dim, channels, size, cfg.g_features,
                             cfg.upsample)
    extra = k if cfg.conditioning == Conditioning.concat else 0
    base = DcganDiscriminator(channels + extra, size, cfg.d_features, discriminator_norm(cfg),
                              cfg.d_dropout, cfg.minibatch_std)
    D = (ConcatDiscriminator(base, k) if extra else ProjectionDiscriminator(base, k))
    G.apply(dcgan_init)  # G's label embedding keeps N(0, 1): the scale of z beside it
    D.apply(dcgan_init)
    if isinstance(D, ProjectionDiscriminator):
        # unit-scale projections from the start (Xavier-like); 0.02 left a tiny DCGAN's
        # projection term too weak to steer G in our two-class test
        nn.init.normal_(D.embed.weight, 0.0, D.embed.weight.shape[1] ** -0.5)
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=SYMMETRIC, num_classes=k)
