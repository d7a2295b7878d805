"""The classifier family: an image classifier trained clean or under a defence, measured on
held-out data clean and under attack."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch

from ganlab.attacks import apgd, attack_by_name, autoattack
from ganlab.attacks.defenses import DEFENSES
from ganlab.config import one_of, ranged, schema, sizes
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.images import UNIT, make_grid, to_float, to_uint8
from ganlab.metrics.robustness import evaluate_attack
from ganlab.models import MODELS
from ganlab.optim import adam

SHOWN_EXAMPLES = 16  # held-out images in the clean-vs-adversarial grid

log = logging.getLogger("ganlab")


class EvalAttack(str, Enum):
    """The attack of the held-out robust accuracy measured during training."""

    fgsm = "fgsm"
    ifgsm = "ifgsm"
    pgd = "pgd"
    apgd = "apgd"  # Croce & Hein's Auto-PGD, CE loss (torchattacks)
    autoattack = "autoattack"  # the standard ensemble, per-example worst case (torchattacks)


LIBRARY_EVAL_ATTACKS = (EvalAttack.apgd, EvalAttack.autoattack)


@dataclass
class ClassifierConfig:
    """What the classifier family reads, whatever its network: `model.*` of every classifier."""

    name: str = "lenet"  # the network (MODELS)
    family: str = "classifier"
    # inputs are [0, 1] images; the model standardises them itself, (x - mean) / std, so
    # attacks always work in [0, 1] (MNIST's own statistics: 0.1307 / 0.3081)
    input_mean: float = 0.0
    input_std: float = ranged(1.0, "(0, inf)")
    lr: float = ranged(1e-3, "(0, inf)")  # Adam
    weight_decay: float = ranged(0.0, "[0, inf)")
    # held-out accuracy is measured clean and under this attack at every evaluation
    eval_attack: EvalAttack = EvalAttack.fgsm
    eval_eps: float = ranged(0.3, "[0, inf)")  # in [0, 1] for L-inf
    eval_norm: str = one_of("inf", "inf", "2")  # pgd, apgd, autoattack: the L-inf or the L2 ball
    # ifgsm/pgd (step 2.5 * eps / steps), apgd, autoattack's APGD-CE/APGD-T/FAB-T
    eval_steps: int = ranged(20, "[1, inf)")
    eval_queries: int = ranged(1000, "[1, inf)")  # autoattack's Square (the standard: 5000)


@schema("model", "softmax")
@dataclass
class SoftmaxConfig(ClassifierConfig):
    name: str = "softmax"


@schema("model", "mlp")
@dataclass
class MlpClassifierConfig(ClassifierConfig):
    name: str = "mlp"
    hidden: list[int] = sizes([256, 256])
    dropout: float = ranged(0.0, "[0, 1)")


@schema("model", "lenet")
@dataclass
class LenetConfig(ClassifierConfig):
    name: str = "lenet"
    # 5x5 convs, each followed by ReLU and 2x2 max pooling, then the hidden layers: the MNIST
    # net of Madry et al.; LeNet-5's widths are channels=[6,16] hidden=[120,84]
    channels: list[int] = sizes([32, 64])
    hidden: list[int] = sizes([1024])
    dropout: float = ranged(0.0, "[0, 1)")


@FAMILIES.register("classifier")
class ClassifierFamily(Family):
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"classifier": {
        "held-out accuracy, clean and under attack": [r"^eval/accuracy"],
        "training accuracy": [r"^accuracy/train"],
        "loss": [r"^loss/", r"^eval/loss$"],
        "defence: learning rate, health check, stopped": [r"^defense/"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "adversarial_examples": "the same held-out images, clean and attacked, at every step"}

    needs_heldout = True

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        c = cfg.model
        method, norm = EvalAttack(c.eval_attack), str(c.eval_norm)
        if norm == "2" and method in (EvalAttack.fgsm, EvalAttack.ifgsm):
            raise UserError(f"model.eval_attack={method.value} is an L-inf attack; with "
                            "model.eval_norm=2 use pgd, apgd or autoattack")
        if norm == "inf" and c.eval_eps > 1:
            raise UserError(f"model.eval_eps={c.eval_eps} is larger than the [0, 1] pixel "
                            "range: an L2 size? set model.eval_norm=2")
        if method in LIBRARY_EVAL_ATTACKS:
            from ganlab.attacks.library import torchattacks

            try:
                torchattacks()
            except ImportError as e:
                raise UserError(f"model.eval_attack={method.value}: {e}") from e

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.model = MODELS.get(cfg.model.name)(cfg.model, spec).to(device)
        c = cfg.model
        self.lr = float(c.lr)
        self.opt = adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.defense = DEFENSES.get(cfg.defense.name)(cfg.defense)
        self.max_steps = int(cfg.trainer.max_steps)  # the run's length outside the loop
        self.updates = 0  # batches trained on: the defence's schedules' position
        # a defence with a health check (fast): the batch it checks on, the latest result,
        # the weights at the latest healthy check, and whether a failed one stopped training
        self.check_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.check_value = torch.full((), float("nan"), device=device)
        self.good_weights: dict[str, torch.Tensor] | None = None
        self.stopped = False
        self.last_metrics: dict[str, torch.Tensor] = {}
        self.double_backward = frozenset({"model"} if self.defense.double_backward else ())
        # EvalAttack(...): a config read back from a checkpoint holds plain strings
        self.eval_method, self.eval_eps = EvalAttack(c.eval_attack), float(c.eval_eps)
        self.eval_norm = str(c.eval_norm)
        self.eval_steps, self.eval_queries = int(c.eval_steps), int(c.eval_queries)
        self.eval_seed = cfg.trainer.seed + 2
        self.eval_samples = int(cfg.eval.n_samples)
        self.heldout = None

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        if self.stopped:  # a failed health check restored the last healthy weights: keep them
            return self.last_metrics
        x, y = batch
        x = to_float(x, UNIT)
        defense = self.defense
        defense.position(self.updates, self.run_length or self.max_steps)
        lr = self.lr * defense.lr_factor()
        for group in self.opt.param_groups:
            group["lr"] = lr
        # free adversarial training replays the batch: one optimizer step per replay
        replays = [self._update(x, y) for _ in range(defense.replays)]
        metrics = replays[0] if len(replays) == 1 else {  # over the replays: the mean
            k: torch.stack([r[k] for r in replays]).mean() for k in replays[0]}
        self.updates += 1
        if defense.scheduled:
            metrics["defense/lr"] = torch.tensor(lr, device=self.device)
        if defense.check_every:
            metrics.update(self._health_check(x, y))
        self.last_metrics = {k: v.detach() for k, v in metrics.items()}
        return self.last_metrics

    def _update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on the defence's loss; the numbers it saw, before the step."""
        out = self.defense.step(self.model, x, y)
        self.opt.zero_grad(set_to_none=True)
        self.amp.backward(out.loss)
        self.defense.after_backward()
        self.amp.step(self.opt)
        metrics = {"loss/train": out.loss, **out.scalars}
        for kind, logits in out.logits.items():
            name = "accuracy/train" if kind == "clean" else f"accuracy/train_{kind}"
            metrics[name] = (logits.argmax(dim=1) == y).float().mean()
        return {k: v.detach() for k, v in metrics.items()}

    def _health_check(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every check_every batches, the defence's check on the first training batch: a
        healthy result keeps a copy of the weights; a failed one puts the last healthy copy back
        and stops training (the loop has no way for a family to end a run early, so the
        remaining steps change nothing)."""
        if self.check_batch is None:
            self.check_batch = (x.detach().clone(), y.detach().clone())
        if self.updates % self.defense.check_every == 0:
            healthy, self.check_value = self.defense.check(self.model, *self.check_batch)
            if healthy:
                self.good_weights = {k: v.detach().clone()
                                     for k, v in self.model.state_dict().items()}
            else:
                self._stop()
        return {"defense/check_accuracy": self.check_value,
                "defense/stopped": torch.tensor(float(self.stopped), device=self.device)}

    def _stop(self) -> None:
        at = f"the check at batch {self.updates}"
        if self.good_weights is None:  # no healthy check yet: nothing better to go back to
            log.warning("defense=%s: %s failed (robust accuracy %.3f on a training batch) "
                        "before any passed; training stops with the current weights",
                        self.defense.cfg.name, at, float(self.check_value))
        else:
            self.model.load_state_dict(self.good_weights)
            log.warning("defense=%s: catastrophic overfitting at %s (robust accuracy %.3f on a "
                        "training batch): the weights of the last healthy check are restored "
                        "and training stops", self.defense.cfg.name, at,
                        float(self.check_value))
        self.stopped = True

    def extra_state(self) -> dict[str, Any]:
        """The schedules' position, the defence's carried state and the health check's; only
        for defences that have them (older checkpoints have none)."""
        d = self.defense
        if not (d.scheduled or d.check_every or d.state_dict()):
            return {}
        return {"updates": self.updates, "defense": d.state_dict(),
                "health": {"batch": self.check_batch, "value": self.check_value,
                           "good_weights": self.good_weights, "stopped": self.stopped,
                           "last_metrics": self.last_metrics}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not self.extra_state():
            return  # a defence without schedules or carried state: nothing was saved
        if "updates" not in state:
            raise KeyError(f"updates (the checkpoint has no state of defense="
                           f"{self.defense.cfg.name}: trained with another defence)")
        self.updates = int(state["updates"])
        self.defense.load_state_dict(state["defense"])
        health = state["health"]
        self.check_batch, self.check_value = health["batch"], health["value"]
        self.good_weights, self.stopped = health["good_weights"], bool(health["stopped"])
        self.last_metrics = health["last_metrics"]

    # --- evaluation ----------------------------------------------------------------------

    def _adversary(self):
        # its own generator: PGD's random starts leave the global RNG (and training) untouched
        generator = torch.Generator(self.device).manual_seed(self.eval_seed)
        # iterative attacks step 2.5 * eps / steps (Madry et al.), so they can reach the whole
        # eps-ball whatever eval_steps is (I-FGSM's own 1/255 step would not, at 20 steps)
        eps, norm, steps, seed = self.eval_eps, self.eval_norm, self.eval_steps, self.eval_seed
        if self.eval_method == EvalAttack.apgd:
            def craft(model, x, y, targeted=False):
                return apgd(model, x, y, eps, norm, steps=steps, seed=seed)
            return craft
        if self.eval_method == EvalAttack.autoattack:
            queries = self.eval_queries

            def craft(model, x, y, targeted=False):
                return autoattack(model, x, y, eps, norm, steps=steps, n_queries=queries,
                                  seed=seed)
            return craft
        return attack_by_name(self.eval_method.value, eps, step_size=2.5 * eps / steps,
                              steps=steps, generator=generator, norm=norm)

    def evaluate(self) -> dict[str, float]:
        if self.heldout is None:
            return {}
        n = min(self.eval_samples, len(self.heldout))
        x, y = to_float(self.heldout.x[:n], UNIT), self.heldout.y[:n]
        row = evaluate_attack(self.model, x, y, self._adversary(), self.eval_eps)
        return {"accuracy": row["clean_accuracy"], "loss": row["clean_loss"],
                self.robust_accuracy_key: row["accuracy"]}

    @property
    def robust_accuracy_key(self) -> str:
        """accuracy_<attack>_<eps>, with _l2 after the attack in the L2 ball."""
        l2 = "_l2" if self.eval_norm == "2" else ""
        return f"accuracy_{self.eval_method.value}{l2}_{self.eval_eps:g}"

    def visuals(self) -> dict[str, torch.Tensor]:
        if self.heldout is None:
            return {}
        x = to_float(self.heldout.x[:SHOWN_EXAMPLES], UNIT)
        adv = self._adversary()(self.model, x, self.heldout.y[:SHOWN_EXAMPLES])
        # rows of 8: the clean images, then their adversarial versions under the eval attack
        images = torch.cat([x, adv]).cpu()
        return {"adversarial_examples": make_grid(to_uint8(images, UNIT), nrow=8)}
