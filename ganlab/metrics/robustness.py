"""Robustness of a classifier to one attack at one eps: accuracy, success rate, perturbation
size. Shared by the classifier family's periodic evaluation and the `attack` command."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.attacks.gradient import eval_mode

# (crafting model, x, y or targets, targeted) -> adversarial x
Craft = Callable[..., torch.Tensor]


def evaluate_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, craft: Craft,
                    eps: float, targets: torch.Tensor | None = None,
                    source: nn.Module | None = None, batch_size: int = 500) -> dict[str, float]:
    """Attack `model` on the [0, 1] images x (labels y), crafting on `source` (default: the
    model itself, white-box; another model: transfer).

    accuracy: adversarial examples still classified as y (robust accuracy).
    success_rate: untargeted, the share of clean-correct examples the attack turns wrong;
    targeted, the share of examples not already of the target class that land on it.
    mean_linf / mean_l2: the size of the perturbation per example, averaged.
    """
    source = model if source is None else source
    sums = dict.fromkeys(("clean_correct", "clean_loss", "correct", "hits", "eligible",
                          "linf", "l2"), 0.0)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        tb = targets[start : start + batch_size] if targets is not None else None
        with torch.no_grad(), eval_mode(model):
            clean_logits = model(xb)
        adv = craft(source, xb, yb if tb is None else tb, tb is not None)
        with torch.no_grad(), eval_mode(model):
            adv_pred = model(adv).argmax(dim=1)
        clean_ok = clean_logits.argmax(dim=1) == yb
        sums["clean_correct"] += clean_ok.sum().item()
        sums["clean_loss"] += F.cross_entropy(clean_logits, yb, reduction="sum").item()
        sums["correct"] += (adv_pred == yb).sum().item()
        if tb is None:
            sums["hits"] += (clean_ok & (adv_pred != yb)).sum().item()
            sums["eligible"] += clean_ok.sum().item()
        else:
            sums["hits"] += ((adv_pred == tb) & (yb != tb)).sum().item()
            sums["eligible"] += (yb != tb).sum().item()
        delta = (adv - xb).flatten(1)
        sums["linf"] += delta.abs().amax(dim=1).sum().item()
        sums["l2"] += delta.norm(dim=1).sum().item()
    n = len(x)
    return {
        "eps": float(eps),
        "clean_accuracy": sums["clean_correct"] / n,
        "clean_loss": sums["clean_loss"] / n,
        "accuracy": sums["correct"] / n,
        "success_rate": sums["hits"] / sums["eligible"] if sums["eligible"] else 0.0,
        "mean_linf": sums["linf"] / n,
        "mean_l2": sums["l2"] / n,
        "n": n,
    }
