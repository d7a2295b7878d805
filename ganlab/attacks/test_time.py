"""Defences applied at test time, as models that wrap a classifier: Gaussian input noise with
the logits averaged over several draws, and an ensemble that averages its members' logits.
Both are among the lecture's "failed defences": measured honestly, by attacks that see the
whole defended model (for the noise, differentiating through the draws: the gradient of the
averaged logits is the Expectation-over-Transformation estimate, Athalye et al. 2018), they
leave little robustness.

    noisy = NoisyInput(model, std=0.3, samples=8, generator=torch.Generator().manual_seed(0))
    both = Ensemble([model_a, model_b])
    x_adv = pgd(noisy, x, y, eps=0.3, alpha=0.01, steps=40)      # EOT with 8 draws per step
"""

from __future__ import annotations

import torch
from torch import nn


class NoisyInput(nn.Module):
    """model(clip(x + std * N(0, 1), 0, 1)) averaged over `samples` independent draws, logits
    out; differentiable in x. The draws come from `generator` (on x's device), so a run with
    the same seed sees the same noise; each forward pass draws afresh."""

    def __init__(self, model: nn.Module, std: float, samples: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not std >= 0:
            raise ValueError(f"std must be >= 0, got {std}")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.model, self.std, self.samples, self.generator = model, std, samples, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn((self.samples, *x.shape), generator=self.generator,
                            device=x.device, dtype=x.dtype)
        noisy = (x.unsqueeze(0) + self.std * noise).clamp(0, 1)
        logits = self.model(noisy.flatten(0, 1))
        return logits.view(self.samples, len(x), -1).mean(dim=0)


class Ensemble(nn.Module):
    """The mean of the members' logits (members: classifiers of the same images and classes,
    e.g. checkpoints of one run at different steps)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
