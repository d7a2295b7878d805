"""Attacks wrapped from torchattacks (MIT; Harry24k/adversarial-attacks-pytorch): APGD with the
CE and DLR losses, and AutoAttack's standard ensemble built from its APGD, APGD-T, FAB-T and
Square. Their code is a port of Croce & Hein's reference implementation, and they are the
attacks where a rewrite would gain nothing.

torchattacks breaks rules ganlab's attacks keep, so every call goes through `library_rules`:
its attacks call loss.backward() (parameter gradients accumulate), reseed the global RNG with
their seed, and set model.train() / eval() on the whole model rather than restoring each
submodule's mode. The input is cloned before it reaches them.

torchattacks is an optional dependency (the `attacks` extra): its metadata pins requests to
2.25, which conflicts with mlflow's client, so it is installed without its declared
dependencies (`pip install --no-deps torchattacks==3.5.1`; it never imports requests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch
from torch import nn

from ganlab.attacks.gradient import eval_mode

INSTALL_HINT = 'pip install --no-deps "torchattacks==3.5.1" (the [attacks] extra)'
LOSSES = ("ce", "dlr")
NORMS = {"inf": "Linf", "2": "L2"}
# AutoAttack's standard version, in its order (Croce & Hein 2020)
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")


def torchattacks() -> ModuleType:
    """The torchattacks module, or an ImportError that says how to install it."""
    try:
        import torchattacks as module
    except ImportError as e:
        raise ImportError(f"this attack needs torchattacks: {INSTALL_HINT}") from e
    return module


@contextmanager
def library_rules(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """ganlab's attack rules around a torchattacks call: the model in eval mode and every
    submodule's mode restored; parameter gradients set aside before and put back after (those
    the library accumulates are dropped); the global RNG (CPU, and x's GPU) as it was."""
    params = list(model.parameters())
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with eval_mode(model), torch.random.fork_rng(devices=devices):
            yield
    finally:
        for p, grad in zip(params, saved, strict=True):
            p.grad = grad


def _norm_name(norm: str) -> str:
    norm = str(norm)
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return NORMS[norm]


def _check(x: torch.Tensor, eps: float) -> None:
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got {x.dtype}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def _run(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One torchattacks attack on a copy of x, under ganlab's rules, clipped to [0, 1]."""
    with library_rules(model, x):
        adv = attack(x.detach().clone(), y.detach().clone())
    return adv.detach().clamp(0, 1)


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "inf",
         loss: str = "ce", steps: int = 100, restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """Croce & Hein's Auto-PGD (untargeted): PGD with momentum and a step size that halves
    when progress stalls, on the cross-entropy (loss="ce") or the difference of logits ratio
    (loss="dlr", invariant to the logits' scale), in the L-inf or L2 eps-ball. Examples the
    model already misclassifies, and those it never fools, come back unchanged."""
    _check(x, eps)
    if loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    if loss == "dlr":
        _need_classes(model, x, 3, "the DLR loss")
    attack = torchattacks().APGD(model, norm=_norm_name(norm), eps=eps, steps=steps,
                                 n_restarts=restarts, seed=seed, loss=loss)
    return _run(attack, model, x, y)


def _need_classes(model: nn.Module, x: torch.Tensor, k: int, what: str) -> int:
    with torch.no_grad(), eval_mode(model):
        classes = model(x[:1]).shape[1]
    if classes < k:
        raise ValueError(f"{what} needs at least {k} classes; the model has {classes}")
    return classes


def autoattack_components(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                          norm: str = "inf", steps: int = 100, n_queries: int = 5000,
                          n_target_classes: int | None = None,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    """The four attacks of AutoAttack's standard version, each run on the whole batch with the
    reference settings: APGD-CE (`steps` iterations), APGD-T and FAB-T (targeted at each of the
    `n_target_classes` most likely other classes in turn, default all of them: 9 for 10 classes,
    `steps` iterations each) and Square (`n_queries` queries); name -> adversarial batch."""
    _check(x, eps)
    classes = _need_classes(model, x, 3, "AutoAttack's targeted DLR loss")
    targets = classes - 1 if n_target_classes is None else n_target_classes
    if not 1 <= targets <= classes - 1:
        raise ValueError(f"n_target_classes must be in 1..{classes - 1}, got {targets}")
    library, name = torchattacks(), _norm_name(norm)
    common = {"norm": name, "eps": eps, "seed": seed}
    attacks = {
        "apgd-ce": library.APGD(model, steps=steps, loss="ce", **common),
        "apgd-t": library.APGDT(model, steps=steps, n_classes=classes, **common),
        "fab-t": library.FAB(model, steps=steps, multi_targeted=True, n_classes=classes,
                             **common),
        "square": library.Square(model, n_queries=n_queries, **common),
    }
    for targeted in ("apgd-t", "fab-t"):
        attacks[targeted].n_target_classes = targets
    return {key: _run(attack, model, x, y) for key, attack in attacks.items()}


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               candidates: list[torch.Tensor]) -> torch.Tensor:
    """Per example, the first candidate the model misclassifies (x itself when none is)."""
    adv = x.detach().clone()
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    with torch.no_grad(), eval_mode(model):
        for candidate in candidates:
            fooled = robust & (model(candidate).argmax(dim=1) != y)
            adv[fooled] = candidate[fooled]
            robust &= ~fooled
    return adv


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
               norm: str = "inf", steps: int = 100, n_queries: int = 5000,
               n_target_classes: int | None = None, seed: int = 0) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020), standard version: the per-example worst case over
    APGD-CE, APGD-T, FAB-T and Square in the L-inf or L2 eps-ball.

    The reference code runs each attack only on the points the previous ones left robust; here
    each runs on the whole batch, which costs more on weak models but makes the ensemble's
    accuracy at most each component's, whatever their random starts."""
    parts = autoattack_components(model, x, y, eps, norm, steps, n_queries, n_target_classes,
                                  seed)
    return worst_case(model, x, y, [parts[name] for name in AUTOATTACK_COMPONENTS])
