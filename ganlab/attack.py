"""`python -m ganlab attack ckpt=RUN attack=NAME [attack.*=...]`

NAME: fgsm, ifgsm, pgd, apgd, autoattack (budgeted: one result per `attack.eps`), cw, deepfool,
jsma, lbfgs (minimal: one result, the perturbation's size is the measure), transfer, substitute,
and the physical-world attacks eot and patch (ganlab.attack_physical: their own report).

`attack=[pgd,cw]`: the per-image worst case over several untargeted attacks of one norm, as
papers report robustness: an image counts as broken at eps when any of the attacks found an
adversarial example for it within the eps-ball (a minimal attack: its perturbation, in the
common norm, is at most eps). Keys: `attack.KEY=V` sets KEY for every listed attack that has
it (`attack.eps` sets the eps grid of all of them), `attack.NAME.KEY=V` for one.

`ckpt=FILE.pt2 dataset=NAME`: any classifier, exported with torch.export.save (it takes [0, 1]
images and returns logits), attacked on the held-out split of `dataset=`.

`test_time.noise=STD` (with `test_time.samples=K`) and `test_time.ensemble=[CKPT,...]`: the
model attacked and evaluated averages its logits over K Gaussian-noised copies of the input
(the attacks differentiate through the draws: EOT) and over the ensemble's checkpoints with
ckpt's (ganlab.attacks.test_time).

Attacks a trained classifier on its held-out data and writes, into <run dir>/attack_<name> (or
`out=`): robustness.json (clean accuracy, then per eps the robust accuracy, success rate and the
perturbations' sizes: mean L-inf, mean and median L2 and L0 over all images and over the
successful ones; a worst case also each attack's accuracy; a headline entry when AutoAttack is
among the attacks), robust_accuracy.png (accuracy against eps; for a minimal attack, against the
L2 or L0 size allowed) and examples.png (original, amplified perturbation, adversarial, with
predicted class and confidence). The plot and the accuracies also go to the run's TensorBoard.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
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
from ganlab.attacks.test_time import Ensemble, NoisyInput
from ganlab.config import DEFAULT_EPS_BY_NORM, SCHEMAS, check_ranges
from ganlab.data import build_dataset
from ganlab.errors import UserError
from ganlab.families.capabilities import Classifier
from ganlab.images import UNIT, save_png, to_float
from ganlab.metrics.robustness import (
    PerImage,
    attack_per_image,
    examples_figure,
    finish_accuracy_plot,
    robustness_plot,
    summary_stat,
)
from ganlab.runtime import flush_denormals

log = logging.getLogger("ganlab")

GRADIENT_ATTACKS = ("fgsm", "ifgsm", "pgd")
# no eps: each finds its own (small) perturbation; measured by its size
MINIMAL_ATTACKS = ("cw", "deepfool", "jsma", "lbfgs")
TARGETED_ONLY = ("jsma", "lbfgs")
LIBRARY_ATTACKS = ("apgd", "autoattack")  # wrapped from torchattacks
# the attacks whose eps is an L-inf size unless attack.norm=2
NORM_ATTACKS = ("pgd", "apgd", "autoattack")
# attacks a worst case cannot take: targeted ones, the substitute (its seed images are not
# attacked) and the physical-world attacks (their own report)
NOT_IN_WORST_CASE = (*TARGETED_ONLY, "substitute", *attack_physical.PHYSICAL_ATTACKS)
NORM_NAMES = {"inf": "L-inf", "2": "L2", "0": "L0"}
HEADLINE_ATTACK = "autoattack"  # the number to report (the README's advice)


def attack_norm(a) -> str:
    """The norm an attack's perturbation is measured in: "inf", "2" or "0"."""
    if a.name == "jsma":
        return "0"
    if a.name in MINIMAL_ATTACKS:
        return "2"
    return str(a.get("norm", "inf"))


# --- the command line ---------------------------------------------------------------------


def parse(args: list[str]):
    from ganlab.preflight import compose_all

    bad = [a for a in args if "=" not in a]
    if bad:
        raise UserError(f"attack takes key=value arguments, got {bad[0]!r}")
    names = _listed_attacks(args)
    if names is not None and len(names) > 1:
        return _parse_worst_case(args, names)
    if names is not None:  # attack=[pgd]: one attack
        args = [f"attack={names[0]}" if _key(a) == "attack" else a for a in args]
    composed = compose_all(args, config_name="attack_command",
                           groups=("attack", "dataset"))
    if len(composed) != 1:
        raise UserError("attack takes one value per key; list several eps as "
                        "attack.eps=[a,b], several attacks' worst case as attack=[pgd,cw]")
    cfg = composed[0]
    _complete(cfg)
    _check(cfg, cfg.attack)
    return cfg


def _key(arg: str) -> str:
    return arg.split("=", 1)[0]


def _listed_attacks(args: list[str]) -> list[str] | None:
    """The names in attack=[a,b,...] (None: no list)."""
    for arg in args:
        if _key(arg) == "attack":
            value = arg.split("=", 1)[1].strip()
            if value.startswith("[") and value.endswith("]"):
                names = [n.strip() for n in value[1:-1].split(",") if n.strip()]
                if not names:
                    raise UserError("attack=[] names no attack; e.g. attack=[pgd,cw]")
                return names
    return None


def _complete(cfg) -> None:
    try:
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except Exception as e:
        raise UserError(f"attack: {str(e).splitlines()[0]}") from e


def _parse_worst_case(args: list[str], names: list[str]):
    """attack=[a,b,...]: each attack composed with the keys meant for it; their one norm and
    eps grid checked. cfg.attack becomes {name: "a+b", norm, eps, attacks: {a: ..., b: ...}}."""
    from ganlab.preflight import choices, compose_all

    known = choices("attack")
    for name in names:
        if name not in known:
            raise UserError(f"unknown attack {name!r}; choose one of: {', '.join(known)}")
    if len(set(names)) < len(names):
        raise UserError(f"attack={_list(names)} names an attack twice")
    refused = [n for n in names if n in NOT_IN_WORST_CASE]
    if refused:
        raise UserError(f"attack={_list(names)}: a worst case combines untargeted attacks on "
                        f"the same images; {refused[0]} cannot be one of them (not: "
                        f"{', '.join(NOT_IN_WORST_CASE)})")
    common, own, grid = [], {name: [] for name in names}, None
    for arg in args:
        key, value = arg.split("=", 1)
        if key == "attack":
            continue
        if not key.startswith("attack."):
            common.append(arg)
            continue
        first, _, rest = key[len("attack."):].partition(".")
        if first in own and rest:  # attack.pgd.steps=10
            own[first].append(f"attack.{rest}={value}")
        elif first == "eps" and not rest:  # the grid of all of them
            grid = arg
        else:
            having = [n for n in names if first in _schema_keys(n)]
            if not having:
                raise UserError(f"{key}: none of the attacks {', '.join(names)} has the key "
                                f"{first!r}; set one attack's key with attack.<name>.<key>=")
            for name in having:
                own[name].append(arg)
    components = {}
    for name in names:
        eps = [grid] if grid is not None and "eps" in _schema_keys(name) else []
        composed = compose_all([*common, f"attack={name}", *own[name], *eps],
                               config_name="attack_command", groups=("attack", "dataset"))
        if len(composed) != 1:
            raise UserError("attack takes one value per key; list several eps as "
                            "attack.eps=[a,b]")
        cfg = composed[0]
        _complete(cfg)
        if cfg.attack.get("targeted"):
            raise UserError(f"attack={_list(names)}: a worst case combines untargeted "
                            f"attacks; {name} has attack.targeted=true")
        _check(cfg, cfg.attack)
        components[name] = cfg
    norms = {name: attack_norm(c.attack) for name, c in components.items()}
    if len(set(norms.values())) > 1:
        said = ", ".join(f"{n} is {NORM_NAMES[v]}" for n, v in norms.items())
        raise UserError(f"attack={_list(names)} mixes norms ({said}); a worst case combines "
                        "attacks of one norm (pgd, apgd and autoattack take attack.norm=2, "
                        "cw and deepfool are L2)")
    norm = norms[names[0]]
    lists = {n: list(c.attack.eps) for n, c in components.items() if c.attack.get("eps")}
    if len({tuple(v) for v in lists.values()}) > 1:
        said = "; ".join(f"{n} {v}" for n, v in lists.items())
        raise UserError(f"attack={_list(names)}: the attacks' eps lists differ ({said}); set "
                        "one grid for all with attack.eps=[...]")
    if lists:
        eps = next(iter(lists.values()))
    elif grid is not None:  # minimal attacks only: the sizes the grid counts up to
        eps = _list_value(grid)
    else:
        eps = list(DEFAULT_EPS_BY_NORM[norm])
    if not eps or any(not e >= 0 for e in eps):
        raise UserError(f"attack.eps needs values of at least 0; got {eps}")
    cfg = components[names[0]]
    cfg.attack = OmegaConf.create({"name": "+".join(names), "norm": norm, "eps": eps,
                                   "attacks": {n: c.attack for n, c in components.items()}})
    return cfg


def _list_value(arg: str) -> list[float]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_overrides([arg])[0].value()
        return [float(v) for v in (value if isinstance(value, list) else [value])]
    except Exception as e:
        raise UserError(f"{arg}: attack.eps takes a list of numbers, e.g. [0.5,1]") from e


def _list(names: list[str]) -> str:
    return f"[{','.join(names)}]"


def _schema_keys(name: str) -> set[str]:
    return {f.name for f in fields(SCHEMAS[("attack", name)])}


def is_worst_case(a) -> bool:
    return "attacks" in a


def _check(cfg, a) -> None:
    check_ranges(a, "attack.")
    check_ranges(cfg.test_time, "test_time.")
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
        if cfg.test_time.noise > 0 or cfg.test_time.ensemble:
            raise UserError(f"test_time= defends the model of the eps-ball attacks, not "
                            f"attack={a.name}")
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
    if cfg.test_time.ensemble and is_exported(cfg.ckpt):
        raise UserError("test_time.ensemble averages ganlab checkpoints; ckpt= is an exported "
                        "program")


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


# --- the attacked model ---------------------------------------------------------------------


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


def defended_model(cfg, target, device: torch.device) -> tuple[torch.nn.Module, dict | None]:
    """The model attacked: the target's, or with test-time defences around it (an ensemble
    with the test_time.ensemble checkpoints, Gaussian input noise); and their description for
    the report (None: no test-time defence)."""
    tt, model = cfg.test_time, target.model
    if not tt.ensemble and tt.noise == 0:
        return model, None
    described: dict[str, Any] = {}
    if tt.ensemble:
        members = [load_classifier(path, device, role="test_time.ensemble")
                   for path in tt.ensemble]
        for path, member in zip(tt.ensemble, members, strict=True):
            if tuple(member.spec.shape) != tuple(target.spec.shape) or \
                    member.spec.num_classes != target.spec.num_classes:
                raise UserError(f"test_time.ensemble: {path} classifies {member.spec.shape} "
                                f"images into {member.spec.num_classes} classes; ckpt "
                                f"{target.spec.shape} into {target.spec.num_classes}")
        model = Ensemble([model, *(member.model for member in members)])
        described["ensemble"] = [str(checkpoint.resolve_path(cfg.ckpt)),
                                 *(str(checkpoint.resolve_path(p)) for p in tt.ensemble)]
        described["ensemble_steps"] = [target.step, *(member.step for member in members)]
    if tt.noise > 0:
        generator = torch.Generator(device).manual_seed(cfg.seed + 1)
        model = NoisyInput(model, tt.noise, tt.samples, generator)
        described.update(noise=tt.noise, samples=tt.samples)
    return model, described


def describe(target) -> tuple[str, str | None]:
    """The model's name and defence for the report (an exported program: its file name and
    no known defence)."""
    if isinstance(target, ExportedTarget):
        return f"exported program {target.name}", None
    return target.config.model.name, target.config.defense.name


def _run_name(cfg) -> str:
    """attack_<this> names the output folder and the TensorBoard tags: the attack(s), and the
    test-time defences (pgd_noise0.3x8, pgd+cw_ensemble3)."""
    name, tt = cfg.attack.name, cfg.test_time
    if tt.ensemble:
        name += f"_ensemble{len(tt.ensemble) + 1}"
    if tt.noise > 0:
        name += f"_noise{tt.noise:g}x{tt.samples}"
    return name


def _out_dir(cfg, name: str) -> Path:
    if cfg.out:
        return Path(cfg.out)
    ckpt = checkpoint.resolve_path(cfg.ckpt)
    run_dir = checkpoint.run_dir_of(ckpt)
    return (run_dir if run_dir is not None else ckpt.parent) / f"attack_{name}"


# --- running the attacks ----------------------------------------------------------------------


@dataclass
class Target:
    """What every attack of one command shares: the checkpoint's family (spec, step, config),
    the model attacked (with any test-time defence), all held-out images and the attacked
    ones, the attacks' random generator and the report so far."""

    family: Any
    model: torch.nn.Module
    x_all: torch.Tensor
    y_all: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    report: dict[str, Any]


@dataclass
class Result:
    """One attack at one eps (None: a minimal attack): each image's result and the summary."""

    eps: float | None
    images: PerImage
    row: dict[str, Any]


def run(cfg) -> dict[str, Any]:
    from ganlab.train import resolve_device

    device = resolve_device(cfg.device)
    a = cfg.attack
    family, x_all, y_all, source_text = load_target(cfg, device)
    model, test_time = defended_model(cfg, family, device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    model_name, defense = describe(family)
    settings = OmegaConf.to_container(a, enum_to_str=True)
    report: dict[str, Any] = {"attack": settings,
                              "checkpoint": str(checkpoint.resolve_path(cfg.ckpt)),
                              "step": family.step, "model": model_name,
                              "defense": defense, "heldout_data": source_text}
    if test_time is not None:
        report["test_time"] = test_time

    first = 0
    if a.name == "substitute":  # the attacker's seed images are not attacked afterwards
        if a.seed_size >= len(x_all):
            raise UserError(f"attack.seed_size={a.seed_size} leaves no held-out image to attack "
                            f"({len(x_all)} held out)")
        first = a.seed_size
    n = len(x_all) - first if cfg.n_examples == 0 else min(cfg.n_examples, len(x_all) - first)
    report["n_examples"] = n
    target = Target(family, model, x_all, y_all, x_all[first : first + n],
                    y_all[first : first + n], generator, report)
    if is_worst_case(a):
        return _run_worst_case(cfg, target)
    _check_target_class(a, family.spec.num_classes)
    if a.name in attack_physical.PHYSICAL_ATTACKS:
        return attack_physical.run(cfg, family, target.x, target.y, generator, report)
    results, craft, source, targets = attack_results(cfg, a, target)
    rows = [r.row for r in results]
    report["clean_accuracy"] = rows[0]["clean_accuracy"]
    _add_headline(report, {a.name: results}, a)
    report["results"] = rows

    name = _run_name(cfg)
    out = _out_dir(cfg, name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    title = _title(a.name, report, family)
    if a.name in MINIMAL_ATTACKS:
        plot = minimal_plot(results[0].images, title,
                            "L0 (share of pixels changed)" if a.name == "jsma" else "L2")
    else:
        plot = robustness_plot(rows, title)
    save_png(plot, out / "robust_accuracy.png")
    shown = {}
    if cfg.show:
        eps = max(a.eps) if a.get("eps") else None
        xs, ys = target.x[: cfg.show], target.y[: cfg.show]
        ts = targets[: cfg.show] if targets is not None else None
        adv = craft(eps)(source, xs, ys if ts is None else ts, ts is not None)
        # a minimal attack's perturbation is shown scaled to its largest pixel change
        scale = eps if eps is not None and str(a.get("norm", "inf")) == "inf" else \
            max(float((adv - xs).abs().max()), 1e-6)
        shown["examples"] = examples_figure(model, xs, adv, scale)
        save_png(shown["examples"], out / "examples.png")
    accuracies = {"accuracy" if row["eps"] is None else f"accuracy_eps_{row['eps']:g}":
                  row["accuracy"] for row in rows}
    _to_tensorboard(cfg, name, family.step, accuracies, {"robust_accuracy": plot, **shown})
    report["out"] = str(out)
    return report


def _title(name: str, report: dict[str, Any], family) -> str:
    defended = " + test-time " + "/".join(report["test_time"]) if "test_time" in report else ""
    if report["defense"] is not None:
        return (f"{name} on {report['model']} (defense={report['defense']}{defended}), "
                f"step {family.step}")
    return f"{name} on the {report['model']}{defended}"


def attack_results(cfg, a, target: Target):
    """Run one attack on the target's images at each of its eps (a minimal attack: once):
    each image's result and the row robustness.json gives. Also returns craft (eps -> the
    crafting callable), the crafting model and the targets (None: untargeted), for the
    examples picture. The single-attack report and the worst case are both built from this."""
    model, x, y, generator, report = (target.model, target.x, target.y, target.generator,
                                      target.report)
    family = target.family
    components: dict[str, float] = {}
    if a.name in GRADIENT_ATTACKS:
        source = model

        def craft(eps):
            return attack_by_name(a.name, eps, a.get("step_size"), a.get("steps"),
                                  a.get("random_start", True), generator, a.get("norm", "inf"))
    elif a.name in MINIMAL_ATTACKS or a.name in LIBRARY_ATTACKS:
        source = model
        _check_library(a.name)

        def craft(eps):
            return _library_or_minimal(a, eps, cfg.seed, components)
    elif a.name == "transfer":
        device = x.device
        source_family = load_classifier(a.source_ckpt, device, role="attack.source_ckpt")
        if tuple(source_family.spec.shape) != tuple(family.spec.shape) or \
                source_family.spec.num_classes != family.spec.num_classes:
            raise UserError(f"attack.source_ckpt classifies {source_family.spec.shape} images "
                            f"into {source_family.spec.num_classes} classes; the target "
                            f"{family.spec.shape} into {family.spec.num_classes}")
        source = source_family.model
        report["source_checkpoint"] = str(checkpoint.resolve_path(a.source_ckpt))

        def craft(eps):
            return attack_by_name(a.method.value if hasattr(a.method, "value") else a.method,
                                  eps, a.step_size, a.steps, a.random_start, generator)
    else:  # substitute: only the target's labels on seed images and their augmentations
        substitute = train_substitute(label_oracle(model), target.x_all[: a.seed_size],
                                      family.spec, a, torch.Generator().manual_seed(cfg.seed))
        source = substitute.model
        report.update(oracle_queries=substitute.queries,
                      substitute_training_set=substitute.training_set_size)

        def craft(eps):
            return lambda model, xb, yb, targeted=False: fgsm(model, xb, yb, eps, targeted)

    targets = None
    if a.get("targeted") or a.name in TARGETED_ONLY:  # chosen on the crafting model
        targets = pick_targets(source, x, y, a.target or "random", family.spec.num_classes,
                               generator)
    results = []
    for eps in a.get("eps") or [None]:
        components.clear()
        images = attack_per_image(model, x, y, craft(eps), targets, source, cfg.batch_size)
        row = images.row(eps or 0.0)
        if eps is None:
            row["eps"] = None
        row.update(images.sizes())
        if components:  # autoattack: each component's own accuracy on the same images
            row["components"] = {k: v / len(x) for k, v in components.items()}
        if source is not model:  # the crafting model's own (white-box) accuracy
            own = attack_per_image(source, x, y, craft(eps), targets, source,
                                   cfg.batch_size).row(eps or 0.0)
            row["source_accuracy"], row["source_clean_accuracy"] = (own["accuracy"],
                                                                    own["clean_accuracy"])
        log.info("%s%s: accuracy %.4f (clean %.4f), success rate %.4f", a.name,
                 "" if eps is None else f" eps={eps:g}", row["accuracy"],
                 row["clean_accuracy"], row["success_rate"])
        results.append(Result(eps, images, row))
    return results, craft, source, targets


# --- the worst case over several attacks ----------------------------------------------------


def broken(result: Result, eps: float, norm: str) -> torch.Tensor:
    """The images an attack's result counts as broken at eps: misclassified after the attack,
    and for a minimal attack only where its perturbation (in `norm`) is at most eps."""
    wrong = ~result.images.correct
    if result.eps is None:
        wrong &= result.images.size(norm) <= eps + 1e-6
    return wrong


def result_at(results: list[Result], eps: float) -> Result:
    """A budgeted attack's result at eps, or a minimal attack's only result."""
    if results[0].eps is None:
        return results[0]
    return next(r for r in results if r.eps == eps)


def combine(per_attack: dict[str, list[Result]], eps_grid: list[float],
            norm: str) -> list[dict[str, Any]]:
    """Per eps, the per-image worst case over the attacks: an image is broken when any attack
    broke it (broken()); accuracy, success rate, and over the broken images that were
    classified correctly the smallest breaking perturbation's mean and median (in `norm`);
    each attack's own accuracy (`components`) and details (`by_attack`: its success rate,
    successes and their sizes, and `only`: the images no other attack broke)."""
    size_key = {"inf": "linf", "2": "l2"}[norm]
    rows = []
    for eps in eps_grid:
        at = {name: result_at(results, eps) for name, results in per_attack.items()}
        hits = {name: broken(r, eps, norm) for name, r in at.items()}
        any_hit = torch.stack(list(hits.values())).any(dim=0)
        first = next(iter(at.values())).images
        eligible = first.clean_pred == first.y
        n, n_eligible = len(first.y), int(eligible.sum())
        sizes = torch.stack([torch.where(hits[name], r.images.size(norm),
                                         torch.full_like(r.images.size(norm), float("inf")))
                             for name, r in at.items()])
        smallest = sizes.min(dim=0).values
        success = eligible & any_hit
        row: dict[str, Any] = {
            "eps": float(eps),
            "clean_accuracy": n_eligible / n,
            "accuracy": int((~any_hit).sum()) / n,
            "success_rate": int(success.sum()) / n_eligible if n_eligible else 0.0,
            "n_success": int(success.sum()),
            f"mean_{size_key}_success": summary_stat(smallest[success], "mean"),
            f"median_{size_key}_success": summary_stat(smallest[success], "median"),
            "components": {name: int((~hit).sum()) / n for name, hit in hits.items()},
        }
        by_attack = {}
        for name, hit in hits.items():
            own = eligible & hit
            others = torch.stack([h for k, h in hits.items() if k != name]).any(dim=0)
            size = at[name].images.size(norm)
            by_attack[name] = {"accuracy": row["components"][name],
                               "success_rate": int(own.sum()) / n_eligible if n_eligible
                               else 0.0,
                               "n_success": int(own.sum()),
                               f"mean_{size_key}_success": summary_stat(size[own], "mean"),
                               f"median_{size_key}_success": summary_stat(size[own], "median"),
                               "only": int((own & ~others).sum())}
            if "components" in at[name].row:  # autoattack's own components
                by_attack[name]["components"] = at[name].row["components"]
        row["by_attack"] = by_attack
        rows.append(row)
    return rows


def _run_worst_case(cfg, target: Target) -> dict[str, Any]:
    a, report, family = cfg.attack, target.report, target.family
    norm, grid = a.norm, list(a.eps)
    per_attack: dict[str, list[Result]] = {}
    for name, component in a.attacks.items():
        _check_target_class(component, family.spec.num_classes)
        results, *_ = attack_results(cfg, component, target)
        per_attack[name] = results
        report.setdefault("attack_results", {})[name] = [r.row for r in results]
    rows = combine(per_attack, grid, norm)
    report["clean_accuracy"] = rows[0]["clean_accuracy"]
    _add_headline(report, per_attack, a, rows)
    report["results"] = rows
    for row in rows:
        log.info("worst case of %s eps=%g: accuracy %.4f (%s)", a.name, row["eps"],
                 row["accuracy"], ", ".join(f"{k} {v:.4f}" for k, v in
                                            row["components"].items()))

    name = _run_name(cfg)
    out = _out_dir(cfg, name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    plot = worst_case_plot(rows, _title(f"worst case of {', '.join(a.attacks)}", report,
                                        family), norm)
    save_png(plot, out / "robust_accuracy.png")
    shown = {}
    if cfg.show:  # per image, the smallest breaking perturbation at the largest eps
        eps = max(grid)
        xs = target.x[: cfg.show]
        adv, best = xs.clone(), torch.full((len(xs),), float("inf"), device=xs.device)
        for results in per_attack.values():
            r = result_at(results, eps)
            size = torch.where(broken(r, eps, norm)[: cfg.show], r.images.size(norm)[: cfg.show],
                               torch.full_like(best, float("inf")))
            better = size < best
            adv[better], best[better] = r.images.adv[: cfg.show][better], size[better]
        scale = eps if norm == "inf" else max(float((adv - xs).abs().max()), 1e-6)
        shown["examples"] = examples_figure(target.model, xs, adv, scale)
        save_png(shown["examples"], out / "examples.png")
    scalars = {}
    for row in rows:
        scalars[f"accuracy_eps_{row['eps']:g}"] = row["accuracy"]
        for component, accuracy in row["components"].items():
            scalars[f"{component}/accuracy_eps_{row['eps']:g}"] = accuracy
    _to_tensorboard(cfg, name, family.step, scalars, {"robust_accuracy": plot, **shown})
    report["out"] = str(out)
    return report


def _add_headline(report: dict[str, Any], per_attack: dict[str, list[Result]], a,
                  worst_rows: list[dict[str, Any]] | None = None) -> None:
    """AutoAttack among the attacks: its accuracy at its largest eps is the number to report
    (with the worst case over all the attacks beside it, when there are several)."""
    if HEADLINE_ATTACK not in per_attack:
        return
    results = per_attack[HEADLINE_ATTACK]
    last = max(results, key=lambda r: r.eps)
    settings = a.attacks[HEADLINE_ATTACK] if worst_rows is not None else a
    headline = {"attack": HEADLINE_ATTACK, "norm": str(settings.norm), "eps": last.eps,
                "accuracy": last.row["accuracy"], "clean_accuracy": last.row["clean_accuracy"],
                "n_examples": report["n_examples"]}
    if worst_rows is not None:
        worst = next(row for row in worst_rows if row["eps"] == last.eps)
        headline.update(worst_case_accuracy=worst["accuracy"],
                        worst_case_of=list(per_attack))
    report["headline"] = headline


def worst_case_plot(rows: list[dict[str, Any]], title: str, norm: str) -> torch.Tensor:
    """Each attack's accuracy against eps (dashed) and the per-image worst case (solid), as a
    uint8 (3, H, W) image."""
    from matplotlib.figure import Figure


    fig = Figure(figsize=(5, 3.6), dpi=100)
    ax = fig.add_subplot()
    eps = [r["eps"] for r in rows]
    for name in rows[0]["components"]:
        ax.plot(eps, [r["components"][name] for r in rows], "x--", label=name, alpha=0.8)
    ax.plot(eps, [r["accuracy"] for r in rows], "o-", color="black", label="worst case")
    ax.set_ylabel("accuracy")
    return finish_accuracy_plot(fig, ax, f"eps ({NORM_NAMES[norm]}, images in [0, 1])", title)


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


def minimal_plot(images: PerImage, title: str, size_name: str) -> torch.Tensor:
    """For a minimal attack: the share of images the attack fails on within each size
    (robust accuracy at that budget) against the size, as a uint8 (3, H, W) image."""
    from matplotlib.figure import Figure


    sizes = images.l0 if size_name.startswith("L0") else images.l2
    fooled = sizes[images.success].sort().values.cpu()
    n = len(images.success)
    robust = images.eligible.sum().item()
    fig = Figure(figsize=(5, 3.6), dpi=100)
    ax = fig.add_subplot()
    steps = torch.arange(1, len(fooled) + 1)
    ax.step([0.0, *fooled.tolist()], [robust / n, *((robust - steps) / n).tolist()],
            where="post", label="accuracy if only perturbations this small count")
    return finish_accuracy_plot(fig, ax, f"perturbation size ({size_name})", title)


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


# --- the console ------------------------------------------------------------------------------


def main(args: list[str]) -> None:
    cfg = parse(args)
    flush_denormals()  # as in training: denormals slow CPU inference up to 100x
    report = run(cfg)
    if report["attack"]["name"] in attack_physical.PHYSICAL_ATTACKS:
        attack_physical.print_report(report)
        return
    defended = ""
    if "test_time" in report:
        tt = report["test_time"]
        defended = " with test-time " + " and ".join(
            ([f"ensemble of {len(tt['ensemble'])}"] if "ensemble" in tt else []) +
            ([f"noise {tt['noise']:g} (logits averaged over {tt['samples']} draws)"]
             if "noise" in tt else []))
    if "attacks" in report["attack"]:
        _print_worst_case(report, defended)
    else:
        _print_single(report, defended)
    if "headline" in report:
        h = report["headline"]
        worst = (f"; worst case of {', '.join(h['worst_case_of'])}: "
                 f"{h['worst_case_accuracy']:.4f}" if "worst_case_of" in h else "")
        print(f"headline: AutoAttack ({NORM_NAMES[h['norm']]}) eps {h['eps']:g}: accuracy "
              f"{h['accuracy']:.4f} on {h['n_examples']} images{worst}")
    print(f"wrote {report['out']}/robustness.json, robust_accuracy.png, examples.png")


def _print_single(report: dict[str, Any], defended: str) -> None:
    rows = report["results"]
    print(f"{report['attack']['name']} on {report['model']}{defended} ({report['n_examples']} "
          f"held-out images): clean accuracy {report['clean_accuracy']:.4f}")
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


def _print_worst_case(report: dict[str, Any], defended: str) -> None:
    a, rows = report["attack"], report["results"]
    norm = NORM_NAMES[a["norm"]]
    size_key = {"inf": "linf", "2": "l2"}[a["norm"]]
    names = list(a["attacks"])
    print(f"worst case of {', '.join(names)} ({norm}) on {report['model']}{defended} "
          f"({report['n_examples']} held-out images): clean accuracy "
          f"{report['clean_accuracy']:.4f}")
    width = max(10, *(len(n) + 2 for n in names))
    print(f"  {'eps':<8}{'worst case':>12}" + "".join(f"{n:>{width}}" for n in names) +
          f"   successful: mean / median {norm}")
    for row in rows:
        success = (f"{row['n_success']}: {row[f'mean_{size_key}_success']:.3f} / "
                   f"{row[f'median_{size_key}_success']:.3f}" if row["n_success"] else "0")
        print(f"  {row['eps']:<8g}{row['accuracy']:>12.4f}" +
              "".join(f"{row['components'][n]:>{width}.4f}" for n in names) + f"   {success}")

