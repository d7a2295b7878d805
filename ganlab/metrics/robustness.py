"""Robustness of a classifier to one attack at one eps: accuracy, success rate, perturbation
size. Shared by the classifier family's periodic evaluation and the `attack` command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.attacks.gradient import eval_mode

# (crafting model, x, y or targets, targeted) -> adversarial x
Craft = Callable[..., torch.Tensor]


@dataclass
class PerImage:
    """One attack at one budget, image by image (all tensors of length n, on x's device):
    the clean and adversarial predictions, the adversarial images and the perturbations'
    sizes. `row` sums it up as evaluate_attack reports it; `sizes` adds the sizes papers give;
    the `attack` command combines several attacks' PerImage into a per-image worst case."""

    y: torch.Tensor
    targets: torch.Tensor | None  # targeted: the class each image should become
    clean_pred: torch.Tensor
    clean_loss: torch.Tensor  # cross-entropy of the clean image
    adv: torch.Tensor  # the adversarial images ([0, 1])
    adv_pred: torch.Tensor
    linf: torch.Tensor  # the perturbation's L-inf, L2 and L0 (share of pixels changed)
    l2: torch.Tensor
    l0: torch.Tensor

    @property
    def correct(self) -> torch.Tensor:
        """The adversarial image is still classified as its label (robust)."""
        return self.adv_pred == self.y

    @property
    def eligible(self) -> torch.Tensor:
        """Untargeted: clean-correct images; targeted: images not already of the target."""
        if self.targets is None:
            return self.clean_pred == self.y
        return self.y != self.targets

    @property
    def success(self) -> torch.Tensor:
        if self.targets is None:
            return self.eligible & ~self.correct
        return self.eligible & (self.adv_pred == self.targets)

    def size(self, norm: str) -> torch.Tensor:
        """The perturbation's size in norm "inf", "2" or "0"."""
        return {"inf": self.linf, "2": self.l2, "0": self.l0}[str(norm)]

    def row(self, eps: float) -> dict[str, float]:
        n, eligible = len(self.y), int(self.eligible.sum())
        return {
            "eps": float(eps),
            "clean_accuracy": int((self.clean_pred == self.y).sum()) / n,
            "clean_loss": float(self.clean_loss.sum()) / n,
            "accuracy": int(self.correct.sum()) / n,
            "success_rate": int(self.success.sum()) / eligible if eligible else 0.0,
            "mean_linf": float(self.linf.sum()) / n,
            "mean_l2": float(self.l2.sum()) / n,
            "n": n,
        }

    def sizes(self) -> dict[str, float | int | None]:
        """Median L2, mean and largest L0 over all images; over the successful ones (None
        when there is none) the mean and median L2 and L-inf and the mean L0."""
        hit = self.success
        return {"median_l2": summary_stat(self.l2, "median"),
                "mean_l0": summary_stat(self.l0, "mean"),
                "max_l0": summary_stat(self.l0, "max"), "n_success": int(hit.sum()),
                "mean_l2_success": summary_stat(self.l2[hit], "mean"),
                "median_l2_success": summary_stat(self.l2[hit], "median"),
                "mean_linf_success": summary_stat(self.linf[hit], "mean"),
                "median_linf_success": summary_stat(self.linf[hit], "median"),
                "mean_l0_success": summary_stat(self.l0[hit], "mean")}


def summary_stat(values: torch.Tensor, how: str) -> float | None:
    """values.mean(), .median() or .max() as a float; None for no values."""
    return float(getattr(values, how)()) if len(values) else None


def attack_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor, craft: Craft,
                     targets: torch.Tensor | None = None, source: nn.Module | None = None,
                     batch_size: int = 500) -> PerImage:
    """Attack `model` on the [0, 1] images x (labels y) in batches, crafting on `source`
    (default: the model itself, white-box; another model: transfer), and keep each image's
    result. Targeted: `targets` are passed to craft in place of the labels."""
    source = model if source is None else source
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("clean_pred", "clean_loss", "adv",
                                                            "adv_pred")}
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        tb = targets[start : start + batch_size] if targets is not None else None
        with torch.no_grad(), eval_mode(model):
            clean_logits = model(xb)
        adv = craft(source, xb, yb if tb is None else tb, tb is not None).detach()
        with torch.no_grad(), eval_mode(model):
            parts["adv_pred"].append(model(adv).argmax(dim=1))
        parts["clean_pred"].append(clean_logits.argmax(dim=1))
        parts["clean_loss"].append(F.cross_entropy(clean_logits, yb, reduction="none"))
        parts["adv"].append(adv)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    delta = (cat["adv"] - x).flatten(1)
    return PerImage(y, targets, linf=delta.abs().amax(dim=1), l2=delta.norm(dim=1),
                    l0=(delta != 0).float().mean(dim=1), **cat)


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
    return attack_per_image(model, x, y, craft, targets, source, batch_size).row(eps)


def robustness_plot(rows: list[dict[str, float]], title: str) -> torch.Tensor:
    """Robust accuracy (and success rate) against eps, as a uint8 (3, H, W) image."""
    from matplotlib.figure import Figure


    fig = Figure(figsize=(5, 3.6), dpi=100)
    ax = fig.add_subplot()
    eps = [r["eps"] for r in rows]
    ax.plot(eps, [r["accuracy"] for r in rows], "o-", label="accuracy (attacked model)")
    if "source_accuracy" in rows[0]:
        ax.plot(eps, [r["source_accuracy"] for r in rows], "s--",
                label="accuracy (crafting model)")
    ax.plot(eps, [r["success_rate"] for r in rows], "x:", label="attack success rate")
    return finish_accuracy_plot(fig, ax, "eps (L-inf, images in [0, 1])", title)


def finish_accuracy_plot(fig, ax, xlabel: str, title: str) -> torch.Tensor:
    """The robustness plots' common frame (a [0, 1] y axis, grid, legend, title), drawn to a
    uint8 (3, H, W) image."""
    from ganlab.images import figure_to_uint8

    ax.set_xlabel(xlabel)
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
