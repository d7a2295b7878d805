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


def robustness_plot(rows: list[dict[str, float]], title: str) -> torch.Tensor:
    """Robust accuracy (and success rate) against eps, as a uint8 (3, H, W) image."""
    from matplotlib.figure import Figure

    from ganlab.images import figure_to_uint8

    fig = Figure(figsize=(5, 3.6), dpi=100)
    ax = fig.add_subplot()
    eps = [r["eps"] for r in rows]
    ax.plot(eps, [r["accuracy"] for r in rows], "o-", label="accuracy (attacked model)")
    if "source_accuracy" in rows[0]:
        ax.plot(eps, [r["source_accuracy"] for r in rows], "s--",
                label="accuracy (crafting model)")
    ax.plot(eps, [r["success_rate"] for r in rows], "x:", label="attack success rate")
    ax.set_xlabel("eps (L-inf, images in [0, 1])")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_to_uint8(fig)


@torch.no_grad()
def examples_figure(model: nn.Module, x: torch.Tensor, adv: torch.Tensor,
                    eps: float) -> torch.Tensor:
    """One row per example: original, perturbation (scaled so +-eps spans black to white),
    adversarial; each image titled with the model's class and confidence."""
    from matplotlib.figure import Figure

    from ganlab.images import figure_to_uint8

    with eval_mode(model):
        p_clean, p_adv = model(x).softmax(dim=1), model(adv).softmax(dim=1)
    delta = (adv - x) / (2 * eps) + 0.5 if eps > 0 else torch.full_like(x, 0.5)
    n = len(x)
    fig = Figure(figsize=(4.2, 1.45 * n + 0.3), dpi=100)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        conf_c, pred_c = p_clean[i].max(dim=0)
        conf_a, pred_a = p_adv[i].max(dim=0)
        panels = ((x[i], f"{int(pred_c)} ({float(conf_c):.2f})"),
                  (delta[i], f"perturbation, eps {eps:g}"),
                  (adv[i], f"{int(pred_a)} ({float(conf_a):.2f})"))
        for ax, (panel, label) in zip(axes[i], panels, strict=True):
            image = panel.detach().float().cpu().clamp(0, 1)
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_title(label, fontsize=7)
            ax.set_axis_off()
    fig.suptitle("original | perturbation | adversarial (class, confidence)", fontsize=7)
    fig.tight_layout()
    return figure_to_uint8(fig)
