"""Schedules over a run's steps (learning-rate factors), as plain functions of the step."""

from __future__ import annotations


def linear_decay(step: int, total: int, start: float) -> float:
    """The lr factor for update number `step` (0-based) of `total`: 1 before `start` (a
    fraction of the run), then linearly down to 0 at `total` (the reference CycleGAN's
    "linear" policy, per step instead of per epoch)."""
    begin = start * total
    if step < begin:
        return 1.0
    return max(0.0, (total - step) / (total - begin))
