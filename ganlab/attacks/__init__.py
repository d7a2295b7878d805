"""Adversarial attacks and defences, as plain functions on [0, 1] image batches.

    from ganlab.attacks import fgsm, pgd
    x_adv = fgsm(model, x, y, eps=0.3)
    x_adv = pgd(model, x, y, eps=0.3, alpha=0.01, steps=40)
    x_adv = pgd(model, x, y, eps=2.0, alpha=0.125, steps=40, norm="2")
    x_adv = cw_l2(model, x, y)                       # minimal L2 perturbation, no eps
    x_adv = autoattack(model, x, y, eps=0.3)         # needs torchattacks

apgd, autoattack and autoattack_components wrap torchattacks (an optional dependency, imported
only when they run); the others are written here. NoisyInput and Ensemble wrap a model in
the test-time defences (Gaussian input noise, an average of models).
"""

from ganlab.attacks.cw import cw_l2
from ganlab.attacks.deepfool import deepfool
from ganlab.attacks.gradient import (
    attack_by_name,
    eval_mode,
    fgsm,
    ifgsm,
    input_gradient,
    logits_jacobian,
    pgd,
    pick_targets,
)
from ganlab.attacks.jsma import jsma
from ganlab.attacks.lbfgs import lbfgs
from ganlab.attacks.library import (
    apgd,
    autoattack,
    autoattack_components,
    library_rules,
    worst_case,
)
from ganlab.attacks.physical import eot, place_patch, train_patch
from ganlab.attacks.test_time import Ensemble, NoisyInput

__all__ = ["Ensemble", "NoisyInput", "apgd", "attack_by_name", "autoattack",
           "autoattack_components", "cw_l2", "deepfool", "eot", "eval_mode", "fgsm", "ifgsm",
           "input_gradient", "jsma", "lbfgs", "library_rules", "logits_jacobian", "pgd",
           "pick_targets", "place_patch", "train_patch", "worst_case"]
