"""Adversarial attacks and defences, as plain functions on [0, 1] image batches.

    from ganlab.attacks import fgsm, pgd
    x_adv = fgsm(model, x, y, eps=0.3)
    x_adv = pgd(model, x, y, eps=0.3, alpha=0.01, steps=40)
"""

from ganlab.attacks.gradient import (
    attack_by_name,
    eval_mode,
    fgsm,
    ifgsm,
    input_gradient,
    pgd,
    pick_targets,
)

__all__ = ["attack_by_name", "eval_mode", "fgsm", "ifgsm", "input_gradient", "pgd",
           "pick_targets"]
