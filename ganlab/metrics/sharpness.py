"""How sharp images are: the variance of their Laplacian (Pech-Pacheco et al. 2000; the usual
blur measure), relative to real images', so 1 means as sharp as the data and a blurry
autoencoder's reconstructions score well below 1 (the lectures' "MSE predicts the average
pixel")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganlab.images import UNIT, to_float

# the 4-neighbour discrete Laplacian
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_variance(images: torch.Tensor, batch: int = 500) -> float:
    """Mean over images of the variance of the Laplacian of their luminance, on [0, 1]
    (uint8 images are converted; colour is averaged over channels)."""
    kernel = LAPLACIAN.to(images.device).view(1, 1, 3, 3)
    total = 0.0
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        x = to_float(x, UNIT) if x.dtype == torch.uint8 else x.float()
        response = F.conv2d(x.mean(dim=1, keepdim=True), kernel)  # valid: no border effects
        total += float(response.flatten(1).var(dim=1).sum())
    return total / len(images)


def sharpness_ratio(images: torch.Tensor, real: torch.Tensor) -> float:
    """Laplacian variance of `images` over that of `real` images (1: as sharp as the data)."""
    return laplacian_variance(images) / max(laplacian_variance(real), 1e-12)
