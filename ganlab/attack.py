"""`python -m ganlab attack ckpt=RUN attack=fgsm|ifgsm|pgd|transfer|substitute [attack.*=...]`

Attacks a trained classifier on its held-out data at every `attack.eps` and writes, into
<run dir>/attack_<name> (or `out=`): robustness.json (clean accuracy, then per eps the robust
accuracy, success rate and mean L-inf / L2 of the perturbations), robust_accuracy.png and
examples.png (original, amplified perturbation, adversarial, with predicted class and
confidence). The plot and the per-eps accuracies also go to the run's TensorBoard.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ganlab import checkpoint
from ganlab.attacks import attack_by_name, fgsm, pick_targets
from ganlab.attacks.gradient import TARGET_CHOICES
from ganlab.attacks.substitute import label_oracle, train_substitute
from ganlab.data import build_dataset
from ganlab.errors import UserError
from ganlab.families.capabilities import Classifier
from ganlab.images import UNIT, save_png, to_float
from ganlab.metrics.robustness import evaluate_attack, examples_figure, robustness_plot
from ganlab.runtime import flush_denormals

log = logging.getLogger("ganlab")

GRADIENT_ATTACKS = ("fgsm", "ifgsm", "pgd")


def parse(args: list[str]):
    from ganlab.preflight import compose_all

    bad = [a for a in args if "=" not in a]
    if bad:
        raise UserError(f"attack takes key=value arguments, got {bad[0]!r}")
    composed = compose_all(args, config_name="attack_command", groups=("attack",))
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
    if not a.eps:
        raise UserError("attack.eps needs at least one value")
    for eps in a.eps:
        if not 0 <= eps <= 1:
            raise UserError(f"attack.eps values must be in [0, 1] (images are in [0, 1]); "
                            f"got {eps}")
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
    if "targeted" in a:
        if a.target is not None and not a.targeted:
            raise UserError(f"attack.target={a.target} needs attack.targeted=true")
        if a.target is not None and a.target not in ("random", "least_likely") and \
                not str(a.target).isdigit():
            raise UserError(f"unknown attack.target {a.target!r}; choose {TARGET_CHOICES}")
    for key in ("channels", "hidden"):
        if any(size < 1 for size in a.get(key) or []):
            raise UserError(f"attack.{key} sizes must be at least 1, got {list(a[key])}")


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
    target = load_classifier(cfg.ckpt, device)
    x_all, y_all, source_text = heldout_images(target, cfg.data_dir, device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    report: dict[str, Any] = {"attack": OmegaConf.to_container(a, enum_to_str=True),
                              "checkpoint": str(checkpoint.resolve_path(cfg.ckpt)),
                              "step": target.step, "model": target.config.model.name,
                              "defense": target.config.defense.name, "heldout_data": source_text}

    first = 0
    if a.name == "substitute":  # the attacker's seed images are not attacked afterwards
        if a.seed_size >= len(x_all):
            raise UserError(f"attack.seed_size={a.seed_size} leaves no held-out image to attack "
                            f"({len(x_all)} held out)")
        first = a.seed_size
    n = len(x_all) - first if cfg.n_examples == 0 else min(cfg.n_examples, len(x_all) - first)
    x, y = x_all[first : first + n], y_all[first : first + n]
    report["n_examples"] = n

    if a.name in GRADIENT_ATTACKS:
        source = target.model

        def craft(eps):
            return attack_by_name(a.name, eps, a.get("step_size"), a.get("steps"),
                                  a.get("random_start", True), generator)
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
    if a.get("targeted"):  # chosen on the crafting model: the attacker's view
        targets = pick_targets(source, x, y, a.target or "random", target.spec.num_classes,
                               generator)
    rows = []
    for eps in a.eps:
        row = evaluate_attack(target.model, x, y, craft(eps), eps, targets, source,
                              cfg.batch_size)
        if source is not target.model:  # the crafting model's own (white-box) accuracy
            own = evaluate_attack(source, x, y, craft(eps), eps, targets, source, cfg.batch_size)
            row["source_accuracy"], row["source_clean_accuracy"] = (own["accuracy"],
                                                                    own["clean_accuracy"])
        log.info("%s eps=%g: accuracy %.4f (clean %.4f), success rate %.4f", a.name, eps,
                 row["accuracy"], row["clean_accuracy"], row["success_rate"])
        rows.append(row)
    report["clean_accuracy"] = rows[0]["clean_accuracy"]
    report["results"] = rows

    out = _out_dir(cfg, a.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    title = f"{a.name} on {report['model']} (defense={report['defense']}), step {target.step}"
    plot = robustness_plot(rows, title)
    save_png(plot, out / "robust_accuracy.png")
    shown = {}
    if cfg.show:
        eps = max(a.eps)
        xs, ys = x[: cfg.show], y[: cfg.show]
        ts = targets[: cfg.show] if targets is not None else None
        adv = craft(eps)(source, xs, ys if ts is None else ts, ts is not None)
        shown["examples"] = examples_figure(target.model, xs, adv, eps)
        save_png(shown["examples"], out / "examples.png")
    _to_tensorboard(cfg, a.name, target.step, rows, {"robust_accuracy": plot, **shown})
    report["out"] = str(out)
    return report


def _to_tensorboard(cfg, name: str, step: int, rows, images) -> None:
    run_dir = checkpoint.run_dir_of(checkpoint.resolve_path(cfg.ckpt))
    if run_dir is None or not (run_dir / "tb").is_dir():
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tb")) as writer:
        for image_name, image in images.items():
            writer.add_image(f"attack/{name}/{image_name}", image, step, dataformats="CHW")
        for row in rows:
            writer.add_scalar(f"attack/{name}/accuracy_eps_{row['eps']:g}", row["accuracy"], step)


def main(args: list[str]) -> None:
    cfg = parse(args)
    flush_denormals()  # as in training: denormals slow CPU inference up to 100x
    report = run(cfg)
    rows = report["results"]
    print(f"{report['attack']['name']} on {report['model']} ({report['n_examples']} held-out "
          f"images): clean accuracy {report['clean_accuracy']:.4f}")
    for row in rows:
        extra = (f", source {row['source_accuracy']:.4f}" if "source_accuracy" in row else "")
        print(f"  eps {row['eps']:<6g} accuracy {row['accuracy']:.4f}  success rate "
              f"{row['success_rate']:.4f}  mean Linf {row['mean_linf']:.4f}  mean L2 "
              f"{row['mean_l2']:.3f}{extra}")
    print(f"wrote {report['out']}/robustness.json, robust_accuracy.png, examples.png")
