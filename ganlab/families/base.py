"""The seam between the training loop and a model family.

A family owns the maths of one kind of model: it builds its networks and optimizers from the
config, and steps them. It knows nothing of TensorBoard, checkpoint files, progress bars or
signals; the loop knows nothing of generators or ELBOs.
"""

from __future__ import annotations

from typing import Any

import torch

from ganlab.registry import Registry

# name (cfg.model.family) -> class(cfg, spec: DataSpec, device: torch.device) -> Family
FAMILIES: Registry = Registry("family")


class Family:
    # how many data batches one train_step consumes (e.g. k discriminator steps)
    batches_per_step: int = 1

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step. `batch` is one (x, y) pair, or a list of `batches_per_step`
        pairs. Returns detached 0-dim tensors (the loop reads them only at logging cadence,
        so the step needs no host sync)."""
        raise NotImplementedError

    def visuals(self) -> dict[str, torch.Tensor]:
        """Images to log: name -> uint8 (C, H, W). Must not touch the global RNG."""
        return {}

    def evaluate(self) -> dict[str, float]:
        """The family's quality metrics. Must not touch the global RNG."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def train(self) -> None:
        """Networks to training mode."""

    def eval(self) -> None:
        """Networks to evaluation mode."""
