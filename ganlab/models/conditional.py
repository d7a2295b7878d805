"""`model=cgan`: a class-conditional DCGAN.

G(z, y) is the DCGAN generator fed with z joined to a learnt embedding of the label y (Mirza &
Osindero join a one-hot y to z). The embedding starts at a one-hot's scale, N(0, 1/embed_dim):
|embed(y)| is about 1 beside |z|, about sqrt(latent_dim). Started at N(0, 1) (|embed(y)| about
7 at embed_dim=50), G drew one fixed image per label from the embedding and ignored z.

D(x, y) is the DCGAN discriminator with the label brought in one of two ways
(`model.conditioning`):

- concat (the default; Mirza & Osindero): the label's one-hot planes stacked onto the image
  channels at D's input;
- projection (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), sum of phi(x) over
  space>, phi being D's feature extractor and psi its scoring conv. Summed as in their code (and
  BigGAN's): a mean over the 7x7 map made the label's term 49 times weaker, too weak to teach
  G the labels. Checkpoints saved before (module version 1) keep the mean they trained with.

Either way the GAN family also shows D real images with a wrong label, as fakes
(`model.mismatch`, Reed et al. 2016), so D must check the label, not only the image.
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
    concat = "concat"  # the label's one-hot planes concatenated to D's input (Mirza & Osindero)
    projection = "projection"  # D(x, y) = psi(phi(x)) + <embed(y), sum phi(x)> (Miyato & Koyama)


class ConditionalGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, embed_dim: int, channels: int,
                 size: int, features: int, upsample) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = DcganGenerator(latent_dim + embed_dim, channels, size, features, upsample)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(labels)], dim=1))


class ProjectionDiscriminator(nn.Module):
    # version 2: phi(x) summed over space (Miyato & Koyama); version 1 averaged it
    _version = 2

    def __init__(self, base: DcganDiscriminator, num_classes: int) -> None:
        super().__init__()
        self.base = base
        self.embed = nn.Embedding(num_classes, base.net[-1].in_channels)
        self.pool_mean = False  # True only for a version-1 checkpoint's D

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = self.base.net[:-1](x)  # phi(x): (N, W, k, k)
        score = self.base.net[-1](features).flatten()  # psi(phi(x))
        pooled = features.mean(dim=(2, 3)) if self.pool_mean else features.sum(dim=(2, 3))
        return score + (self.embed(labels) * pooled).sum(dim=1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # a D saved before version 2 resumes (and scores) with the mean it was trained with,
        # and is saved again as version 1 (state_dict() writes self._version)
        self.pool_mean = local_metadata.get("version", 1) < 2
        self._version = 1 if self.pool_mean else type(self)._version
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


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
                        f"{spec.name!r} has none (use mnist, fashion_mnist, cifar10, cifar100, "
                        "synthetic, or dataset=folder with one sub-folder per class)")
    G = ConditionalGenerator(cfg.latent_dim, k, cfg.embed_dim, channels, size, cfg.g_features,
                             cfg.upsample)
    extra = k if cfg.conditioning == Conditioning.concat else 0
    base = DcganDiscriminator(channels + extra, size, cfg.d_features, discriminator_norm(cfg),
                              cfg.d_dropout, cfg.minibatch_std, cfg.batch_variance)
    D = (ConcatDiscriminator(base, k) if extra else ProjectionDiscriminator(base, k))
    G.apply(dcgan_init)
    # the label at a one-hot's scale beside z; N(0, 1) let the label alone choose G's image
    nn.init.normal_(G.embed.weight, 0.0, cfg.embed_dim ** -0.5)
    D.apply(dcgan_init)
    if isinstance(D, ProjectionDiscriminator):
        # N(0, 0.02) like D's other weights: unit-norm rows made the summed term overpower a
        # small G from the first steps (the two-class test's samples stayed flat)
        nn.init.normal_(D.embed.weight, 0.0, 0.02)
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=SYMMETRIC, num_classes=k)
