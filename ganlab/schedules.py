"""Schedules over a run's steps (learning-rate factors), as plain functions of the step."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def linear_decay(step: int, total: int, start: float) -> float:
    """The lr factor for update number `step` (0-based) of `total`: 1 before `start` (a
    fraction of the run), then linearly down to 0 at `total` (the reference CycleGAN's
    "linear" policy, per step instead of per epoch)."""
    begin = start * total
    if step < begin:
        return 1.0
    return max(0.0, (total - step) / (total - begin))


def decay_lr(optimizers: Iterable[torch.optim.Optimizer], base_lr: float, step: int, total: int,
             start: float) -> float:
    """Set every param group of `optimizers` to base_lr x linear_decay(step, total, start), the
    schedule of CycleGAN and pix2pix; returns that lr."""
    lr = base_lr * linear_decay(step, total, start)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr
    return lr


def linear_warmup(step: int, total: int, share: float) -> float:
    """The factor for update number `step` (0-based) of `total`: linearly from 0 at the first
    update to 1 once `share` (a fraction) of the run is done, then 1; share 0: always 1 (an
    adversarial eps that grows so a model can learn the task before it must resist)."""
    ramp = share * total
    if ramp <= 0:
        return 1.0
    return min(1.0, step / ramp)


def triangle(step: int, total: int, peak: float) -> float:
    """The lr factor for update number `step` (0-based) of `total`: a one-cycle triangle, up
    linearly from 0 to 1 at `peak` (a fraction of the run), then down to 0 at the end (Wong et
    al.'s cyclic rate; measured at the end of the update, so the first one is above 0)."""
    at = min(1.0, (step + 1) / total)
    if at <= peak:
        return at / peak if peak > 0 else 1.0
    return (1.0 - at) / (1.0 - peak)
