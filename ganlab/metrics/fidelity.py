"""How close outputs are to their targets, image by image: the paired-translation metrics
(pix2pix, SPADE, super-resolution). Mean per-image L1 (in [-1, 1] units, as the generators'
training losses), PSNR (dB) and SSIM (Gaussian window 11, sigma 1.5), from torchmetrics."""

from __future__ import annotations

import torch

from ganlab.images import UNIT, to_float


def fidelity(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """{"l1", "psnr", "ssim"} of uint8 outputs against uint8 targets of the same shape."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    x, y = to_float(outputs, UNIT).float(), to_float(targets, UNIT).float()
    l1 = 2 * (x - y).abs().mean(dim=(1, 2, 3))
    psnr = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    return {"l1": float(l1.mean()), "psnr": float(psnr.mean()), "ssim": float(ssim.mean())}
