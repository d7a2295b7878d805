"""`python -m ganlab attack ckpt=RUN attack=NAME [attack.*=...]`

NAME: fgsm, ifgsm, pgd, apgd, autoattack (budgeted: one result per `attack.eps`), cw, deepfool,
jsma, lbfgs (minimal: one result, the perturbation's size is the measure), transfer, substitute,
and the physical-world attacks eot and patch (ganlab.attack_physical: their own report).

`ckpt=FILE.pt2 dataset=NAME`: any classifier, exported with torch.export.save (it takes [0, 1]
images and returns logits), attacked on the held-out split of `dataset=`.

Attacks a trained classifier on its held-out data and writes, into <run dir>/attack_<name> (or
`out=`): robustness.json (clean accuracy, then per eps the robust accuracy, success rate and the
perturbations' sizes: mean L-inf, mean and median L2 and L0 over all images and over the
successful ones), robust_accuracy.png (accuracy against eps; for a minimal attack, against the
L2 or L0 size allowed) and examples.png (original, amplified perturbation, adversarial, with
predicted class and confidence). The plot and the accuracies also go to the run's TensorBoard.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ganlab import attack_physical, checkpoint
from ganlab.attacks import (
    apgd,
    attack_by_name,
    autoattack_components,
    cw_l2,
    deepfool,
    fgsm,
    jsma,
    lbfgs,
    pick_targets,
    worst_case,
)
from ganlab.attacks.exported import SUFFIX as EXPORTED_SUFFIX
from ganlab.attacks.exported import ExportedTarget, is_exported, load_exported
from ganlab.attacks.gradient import TARGET_CHOICES, eval_mode
from ganlab.attacks.library import AUTOATTACK_COMPONENTS
from ganlab.attacks.substitute import label_oracle, train_substitute
from ganlab.config import DEFAULT_EPS_BY_NORM, check_ranges
from ganlab.data import build_dataset
from ganlab.errors import UserError
from ganlab.families.capabilities import Classifier
from ganlab.images import UNIT, save_png, to_float
from ganlab.metrics.robustness import evaluate_attack, examples_figure, robustness_plot
from ganlab.runtime import flush_denormals

log = logging.getLogger("ganlab")

GRADIENT_ATTACKS = ("fgsm", "ifgsm", "pgd")
# no eps: each finds its own (small) perturbation; measured by its size
MINIMAL_ATTACKS = ("cw", "deepfool", "jsma", "lbfgs")
TARGETED_ONLY = ("jsma", "lbfgs")
LIBRARY_ATTACKS = ("apgd", "autoattack")  # wrapped from torchattacks
# the attacks whose eps is an L-inf size unless attack.norm=2
NORM_ATTACKS = ("pgd", "apgd", "autoattack")


def parse(args: list[str]):
    from ganlab.preflight import compose_all

    bad = [a for a in args if "=" not in a]
    if bad:
        raise UserError(f"attack takes key=value arguments, got {bad[0]!r}")
    composed = compose_all(args, config_name="attack_command",
                           groups=("attack", "dataset"))
    if len(composed) != 1:
        raise UserError("attack takes one value per key; list several eps as attack.eps=[a,b]")
    cfg = composed[0]
    try:
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except Exception as e:
        raise UserError(f"attack: {str(e).splitlines()[0]}") from e
    _check(cfg)
    return cfg


def _check(cfg) -> None:
    a = cfg.attack
    check_ranges(a, "attack.")
    if "eps" in a:
        _check_eps(a)
    for key, low in (("n_examples", 0), ("batch_size", 1), ("show", 0)):
        if cfg[key] < low:
            raise UserError(f"{key} must be at least {low}, got {cfg[key]}")
    for key in ("steps", "seed_size", "rounds", "epochs", "tau", "batch_size"):
        value = a.get(key)
        if value is not None and value < 1:
            raise UserError(f"attack.{key} must be at least 1, got {value}")
    for key in ("step_size", "lr", "lmbda"):
        value = a.get(key)
        if value is not None and not value > 0:
            raise UserError(f"attack.{key} must be positive, got {value}")
    if a.name in attack_physical.PHYSICAL_ATTACKS:
        attack_physical.check(a)
    if a.name == "jsma" and a.theta == 0:
        raise UserError("attack.theta=0 moves no pixel; JSMA needs theta in [-1, 1], not 0")
    if "targeted" in a:
        if a.target is not None and not a.targeted:
            raise UserError(f"attack.target={a.target} needs attack.targeted=true")
    if "target" in a and a.target is not None and a.target not in ("random", "least_likely") \
            and not str(a.target).isdigit():
        raise UserError(f"unknown attack.target {a.target!r}; choose {TARGET_CHOICES}")
    for key in ("channels", "hidden"):
        if any(size < 1 for size in a.get(key) or []):
            raise UserError(f"attack.{key} sizes must be at least 1, got {list(a[key])}")


def _check_eps(a) -> None:
    """eps in [0, 1] for an L-inf attack (images are in [0, 1]); any size >= 0 in the L2 ball.
    An attack left without eps gets its norm's default list."""
    norm = str(a.get("norm", "inf"))
    if a.eps is None:
        a.eps = [0.3] if a.name == "autoattack" and norm == "inf" else \
            [2.0] if a.name == "autoattack" else list(DEFAULT_EPS_BY_NORM[norm])
    if not a.eps:
        raise UserError("attack.eps needs at least one value")
    for eps in a.eps:
        if norm == "2":
            if not eps >= 0:
                raise UserError(f"attack.eps values must be at least 0; got {eps}")
        elif not 0 <= eps <= 1:
            hint = (" (an L2 size? use attack.norm=2)" if a.name in NORM_ATTACKS else
                    f" ({a.name} is an L-inf attack; for an L2 budget use attack=pgd "
                    "attack.norm=2)") if eps > 1 else ""
            raise UserError(f"attack.eps values must be in [0, 1] (images are in [0, 1]); "
                            f"got {eps}{hint}")


def load_classifier(path: str, device: torch.device, role: str = "ckpt"):
    family = checkpoint.load_checkpoint(path, device)
    model_cfg = family.config.model
    if not isinstance(family, Classifier):
        raise UserError(f"{role}={path} holds a {model_cfg.family} model ({model_cfg.name}), "
                        "not a classifier; attack needs a model trained with model=softmax, "
                        "mlp or lenet")
    return family


def heldout_images(family, data_dir: str | None, device: torch.device):
    """The held-out split the classifier was evaluated on during training, as [0, 1] floats."""
    cfg = family.config
    data = build_dataset(cfg.dataset, Path(data_dir or cfg.data_dir), cfg.trainer.seed,
                         heldout=True)
    held = data.heldout
    return to_float(held.x.to(device), UNIT), held.y.to(device), held.source


def load_target(cfg, device: torch.device):
    """The attacked classifier and its held-out images, labels and their description: a
    ganlab checkpoint with the held-out split it was trained beside, or an exported program
    (.pt2) with the held-out split of `dataset=`."""
    if not is_exported(cfg.ckpt):
        if cfg.dataset is not None:
            raise UserError("dataset= names the data of an exported classifier "
                            f"(ckpt=<file>{EXPORTED_SUFFIX}); {cfg.ckpt} is attacked on the "
                            "held-out data of its own run")
        target = load_classifier(cfg.ckpt, device)
        return (target, *heldout_images(target, cfg.data_dir, device))
    if cfg.dataset is None:
        raise UserError(f"ckpt={cfg.ckpt} is a torch.export program: name the data it "
                        "classifies with dataset=<name> (e.g. dataset=mnist), whose held-out "
                        "split is attacked")
    data_dir = Path(cfg.data_dir or os.environ.get("GANLAB_DATA", "data"))
    held = build_dataset(cfg.dataset, data_dir, 0, heldout=True).heldout
    x = to_float(held.x.to(device), UNIT)
    target = load_exported(cfg.ckpt, held.spec, x[:2], device)
    return target, x, held.y.to(device), held.source


def describe(target) -> tuple[str, str | None]:
    """The model's name and defence for the report (an exported program: its file name and
    no known defence)."""
    if isinstance(target, ExportedTarget):
        return f"exported program {target.name}", None
    return target.config.model.name, target.config.defense.name


def _out_dir(cfg, name: str) -> Path:
    if cfg.out:
        return Path(cfg.out)
    ckpt = checkpoint.resolve_path(cfg.ckpt)
    run_dir = checkpoint.run_dir_of(ckpt)
    return (run_dir if run_dir is not None else ckpt.parent) / f"attack_{name}"


def run(cfg) -> dict[str, Any]:
    from ganlab.train import resolve_device

    device = resolve_device(cfg.device)
    a = cfg.attack
    target, x_all, y_all, source_text = load_target(cfg, device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    model_name, defense = describe(target)
    report: dict[str, Any] = {"attack": OmegaConf.to_container(a, enum_to_str=True),
                              "checkpoint": str(checkpoint.resolve_path(cfg.ckpt)),
                              "step": target.step, "model": model_name,
                              "defense": defense, "heldout_data": source_text}

    first = 0
    if a.name == "substitute":  # the attacker's seed images are not attacked afterwards
        if a.seed_size >= len(x_all):
            raise UserError(f"attack.seed_size={a.seed_size} leaves no held-out image to attack "
                            f"({len(x_all)} held out)")
        first = a.seed_size
    n = len(x_all) - first if cfg.n_examples == 0 else min(cfg.n_examples, len(x_all) - first)
    x, y = x_all[first : first + n], y_all[first : first + n]
    report["n_examples"] = n

    _check_target_class(a, target.spec.num_classes)
    if a.name in attack_physical.PHYSICAL_ATTACKS:
        return attack_physical.run(cfg, target, x, y, generator, report)
    components: dict[str, float] = {}
    if a.name in GRADIENT_ATTACKS:
        source = target.model

        def craft(eps):
            return attack_by_name(a.name, eps, a.get("step_size"), a.get("steps"),
                                  a.get("random_start", True), generator, a.get("norm", "inf"))
    elif a.name in MINIMAL_ATTACKS or a.name in LIBRARY_ATTACKS:
        source = target.model
        _check_library(a.name)

        def craft(eps):
            return _library_or_minimal(a, eps, cfg.seed, components)
    elif a.name == "transfer":
        source_family = load_classifier(a.source_ckpt, device, role="attack.source_ckpt")
        if tuple(source_family.spec.shape) != tuple(target.spec.shape) or \
                source_family.spec.num_classes != target.spec.num_classes:
            raise UserError(f"attack.source_ckpt classifies {source_family.spec.shape} images "
                            f"into {source_family.spec.num_classes} classes; the target "
                            f"{target.spec.shape} into {target.spec.num_classes}")
        source = source_family.model
        report["source_checkpoint"] = str(checkpoint.resolve_path(a.source_ckpt))

        def craft(eps):
            return attack_by_name(a.method.value, eps, a.step_size, a.steps, a.random_start,
                                  generator)
    else:  # substitute: only the target's labels on seed images and their augmentations
        substitute = train_substitute(label_oracle(target.model), x_all[: a.seed_size],
                                      target.spec, a, torch.Generator().manual_seed(cfg.seed))
        source = substitute.model
        report.update(oracle_queries=substitute.queries,
                      substitute_training_set=substitute.training_set_size)

        def craft(eps):
            return lambda model, xb, yb, targeted=False: fgsm(model, xb, yb, eps, targeted)


    targets = None
    if a.get("targeted") or a.name in TARGETED_ONLY:  # chosen on the crafting model
        targets = pick_targets(source, x, y, a.target or "random", target.spec.num_classes,
                               generator)
    rows, sizes = [], None
    for eps in a.get("eps") or [None]:
        recorded = Recorded(craft(eps))
        components.clear()
        row = evaluate_attack(target.model, x, y, recorded, eps or 0.0, targets, source,
                              cfg.batch_size)
        if eps is None:
            row["eps"] = None
        sizes = perturbation_sizes(target.model, x, y, recorded.adversarial(), targets,
                                   cfg.batch_size)
        row.update(sizes.summary())
        if components:  # autoattack: each component's own accuracy on the same images
            row["components"] = {k: v / len(x) for k, v in components.items()}
        if source is not target.model:  # the crafting model's own (white-box) accuracy
            own = evaluate_attack(source, x, y, craft(eps), eps, targets, source, cfg.batch_size)
            row["source_accuracy"], row["source_clean_accuracy"] = (own["accuracy"],
                                                                    own["clean_accuracy"])
        log.info("%s%s: accuracy %.4f (clean %.4f), success rate %.4f", a.name,
                 "" if eps is None else f" eps={eps:g}", row["accuracy"],
                 row["clean_accuracy"], row["success_rate"])
        rows.append(row)
    report["clean_accuracy"] = rows[0]["clean_accuracy"]
    report["results"] = rows

    out = _out_dir(cfg, a.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    title = (f"{a.name} on {report['model']} (defense={report['defense']}), step {target.step}"
             if defense is not None else f"{a.name} on the {report['model']}")
    if a.name in MINIMAL_ATTACKS:
        plot = sizes.plot(title, "L0 (share of pixels changed)" if a.name == "jsma" else "L2")
    else:
        plot = robustness_plot(rows, title)
    save_png(plot, out / "robust_accuracy.png")
    shown = {}
    if cfg.show:
        eps = max(a.eps) if a.get("eps") else None
        xs, ys = x[: cfg.show], y[: cfg.show]
        ts = targets[: cfg.show] if targets is not None else None
        adv = craft(eps)(source, xs, ys if ts is None else ts, ts is not None)
        # a minimal attack's perturbation is shown scaled to its largest pixel change
        scale = eps if eps is not None and str(a.get("norm", "inf")) == "inf" else \
            max(float((adv - xs).abs().max()), 1e-6)
        shown["examples"] = examples_figure(target.model, xs, adv, scale)
        save_png(shown["examples"], out / "examples.png")
    accuracies = {"accuracy" if row["eps"] is None else f"accuracy_eps_{row['eps']:g}":
                  row["accuracy"] for row in rows}
    _to_tensorboard(cfg, a.name, target.step, accuracies, {"robust_accuracy": plot, **shown})
    report["out"] = str(out)
    return report


def _check_target_class(a, num_classes: int) -> None:
    target = a.get("target")
    if target is not None and str(target).isdigit() and int(target) >= num_classes:
        raise UserError(f"attack.target={target} is not a class of this model: it has "
                        f"{num_classes} classes (0..{num_classes - 1})")


def _check_library(name: str) -> None:
    if name not in LIBRARY_ATTACKS:
        return
    from ganlab.attacks.library import torchattacks

    try:
        torchattacks()
    except ImportError as e:
        raise UserError(f"attack={name}: {e}") from e


def _library_or_minimal(a, eps: float | None, seed: int, components: dict[str, float]):
    """The craft callable (model, x, y or targets, targeted) -> x_adv of an attack that is
    neither a gradient attack nor a transfer; autoattack adds each component's correct count
    to `components`."""
    if a.name == "cw":
        return lambda model, x, y, targeted=False: cw_l2(
            model, x, y, targeted, a.kappa, a.c, a.search_steps, a.steps, a.lr, a.abort_early)
    if a.name == "jsma":
        return lambda model, x, t, targeted=True: jsma(model, x, t, a.theta, a.gamma)
    if a.name == "deepfool":
        return lambda model, x, y, targeted=False: deepfool(model, x, y, a.steps, a.overshoot)
    if a.name == "lbfgs":
        return lambda model, x, t, targeted=True: lbfgs(model, x, t, a.c, a.search_steps,
                                                        a.steps)
    if a.name == "apgd":
        return lambda model, x, y, targeted=False: apgd(model, x, y, eps, a.norm, a.loss,
                                                        a.steps, a.restarts, seed)

    def ensemble(model, x, y, targeted=False):
        parts = autoattack_components(model, x, y, eps, a.norm, a.steps, a.n_queries,
                                      a.n_target_classes, seed)
        with torch.no_grad(), eval_mode(model):
            for name, adv in parts.items():
                correct = (model(adv).argmax(dim=1) == y).sum().item()
                components[name] = components.get(name, 0) + correct
        return worst_case(model, x, y, [parts[name] for name in AUTOATTACK_COMPONENTS])

    return ensemble


class Recorded:
    """A craft callable that keeps every adversarial batch it makes, in order."""

    def __init__(self, craft) -> None:
        self.craft, self.batches = craft, []

    def __call__(self, *args) -> torch.Tensor:
        adv = self.craft(*args)
        self.batches.append(adv.detach())
        return adv

    def adversarial(self) -> torch.Tensor:
        return torch.cat(self.batches)


class PerturbationSizes:
    """Each image's L2 and L0 (share of pixels changed) perturbation, and whether the attack
    succeeded on it (as evaluate_attack counts success)."""

    def __init__(self, l2: torch.Tensor, l0: torch.Tensor, success: torch.Tensor,
                 eligible: torch.Tensor) -> None:
        self.l2, self.l0, self.success, self.eligible = l2, l0, success, eligible

    def summary(self) -> dict[str, float | int]:
        def stat(values: torch.Tensor, how: str) -> float | None:  # None: no such image
            if len(values) == 0:
                return None
            return float(getattr(values, how)())

        hit = self.success
        return {"median_l2": stat(self.l2, "median"), "mean_l0": stat(self.l0, "mean"),
                "max_l0": stat(self.l0, "max"), "n_success": int(hit.sum()),
                "mean_l2_success": stat(self.l2[hit], "mean"),
                "median_l2_success": stat(self.l2[hit], "median"),
                "mean_l0_success": stat(self.l0[hit], "mean")}

    def plot(self, title: str, size_name: str) -> torch.Tensor:
        """For a minimal attack: the share of images the attack fails on within each size
        (robust accuracy at that budget) against the size, as a uint8 (3, H, W) image."""
        from matplotlib.figure import Figure

        from ganlab.images import figure_to_uint8

        sizes = self.l0 if size_name.startswith("L0") else self.l2
        fooled = sizes[self.success].sort().values.cpu()
        n = len(self.success)
        robust = self.eligible.sum().item()
        fig = Figure(figsize=(5, 3.6), dpi=100)
        ax = fig.add_subplot()
        steps = torch.arange(1, len(fooled) + 1)
        ax.step([0.0, *fooled.tolist()], [robust / n, *((robust - steps) / n).tolist()],
                where="post", label="accuracy if only perturbations this small count")
        ax.set_xlabel(f"perturbation size ({size_name})")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        return figure_to_uint8(fig)


def perturbation_sizes(model, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor,
                       targets: torch.Tensor | None, batch_size: int) -> PerturbationSizes:
    delta = (adv - x).flatten(1)
    preds, clean = [], []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, len(x), batch_size):
            part = slice(start, start + batch_size)
            preds.append(model(adv[part]).argmax(dim=1))
            clean.append(model(x[part]).argmax(dim=1))
    pred, clean_pred = torch.cat(preds), torch.cat(clean)
    if targets is None:  # untargeted: correct images turned wrong
        eligible = clean_pred == y
        success = eligible & (pred != y)
    else:
        eligible = y != targets
        success = eligible & (pred == targets)
    return PerturbationSizes(delta.norm(dim=1), (delta != 0).float().mean(dim=1), success,
                             eligible)


def _to_tensorboard(cfg, name: str, step: int, scalars: dict[str, float], images) -> None:
    run_dir = checkpoint.run_dir_of(checkpoint.resolve_path(cfg.ckpt))
    if run_dir is None or not (run_dir / "tb").is_dir():
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tb")) as writer:
        for image_name, image in images.items():
            writer.add_image(f"attack/{name}/{image_name}", image, step, dataformats="CHW")
        for tag, value in scalars.items():
            writer.add_scalar(f"attack/{name}/{tag}", value, step)


def main(args: list[str]) -> None:
    cfg = parse(args)
    flush_denormals()  # as in training: denormals slow CPU inference up to 100x
    report = run(cfg)
    if report["attack"]["name"] in attack_physical.PHYSICAL_ATTACKS:
        attack_physical.print_report(report)
        return
    rows = report["results"]
    print(f"{report['attack']['name']} on {report['model']} ({report['n_examples']} held-out "
          f"images): clean accuracy {report['clean_accuracy']:.4f}")
    for row in rows:
        extra = (f", source {row['source_accuracy']:.4f}" if "source_accuracy" in row else "")
        budget = "minimal" if row["eps"] is None else f"eps {row['eps']:<6g}"
        print(f"  {budget} accuracy {row['accuracy']:.4f}  success rate "
              f"{row['success_rate']:.4f}  mean Linf {row['mean_linf']:.4f}  mean L2 "
              f"{row['mean_l2']:.3f}{extra}")
        if row["n_success"]:
            print(f"    successful ({row['n_success']}): mean L2 {row['mean_l2_success']:.3f}"
                  f"  median L2 {row['median_l2_success']:.3f}  mean L0 "
                  f"{row['mean_l0_success']:.4f} of the pixels")
        for component, accuracy in row.get("components", {}).items():
            print(f"    {component}: accuracy {accuracy:.4f}")
    print(f"wrote {report['out']}/robustness.json, robust_accuracy.png, examples.png")
