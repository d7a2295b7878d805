"""The physical-world attacks of the `attack` command: `attack=eot` and `attack=patch`.

eot: per eps, EOT adversarial images of the held-out images, and plain PGD ones with the same
eps, steps and step size; then each image under `eval_samples` FRESH random transformations
(drawn from another seed than the crafting ones, the same draws for the clean, EOT and PGD
images): the accuracy of each under transformation, beside the untransformed accuracies.

patch: a universal patch trained on images of the dataset's training split (the classifier's
own training data, never its held-out split), then pasted at `eval_samples` random placements
on every held-out image: the share classified as the target (success rate, over the images
not of the target class) against a patch of uniform noise of the same size at the same
placements, and against no patch at all.

Both write robustness.json and their figures into the attack's folder, and the figures and
rates into the run's TensorBoard (through ganlab.attack's writer).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ganlab.attacks import pgd, pick_targets
from ganlab.attacks.gradient import eval_mode
from ganlab.attacks.physical import (
    Transforms,
    apply_transforms,
    eot,
    patch_side,
    place_patch,
    random_placements,
    sample_transforms,
    train_patch,
)
from ganlab.errors import UserError

log = logging.getLogger("ganlab")

PHYSICAL_ATTACKS = ("eot", "patch")
# the fresh transformations / placements of the evaluation come from seed + this offset, never
# from the crafting seed
EVAL_SEED_OFFSET = 1_000_003


def check(a) -> None:
    """Ranges check_ranges cannot express: a (min, max) scale pair."""
    scale = list(a.scale)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise UserError(f"attack.scale is a range [min, max] with 0 < min <= max; got {scale}")


def transforms_of(a) -> Transforms:
    return Transforms(a.rotation, tuple(a.scale), a.translate, a.brightness, a.noise)


# --- eot -------------------------------------------------------------------------------------


def run_eot(cfg, target, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
            report: dict[str, Any]) -> tuple[list[dict], dict[str, torch.Tensor]]:
    a, model = cfg.attack, target.model
    t = transforms_of(a)
    targets = None
    if a.targeted:
        targets = pick_targets(model, x, y, a.target or "random", target.spec.num_classes,
                               generator)
    labels = y if targets is None else targets
    rows, shown = [], {}
    for eps in a.eps:
        alpha = 2.5 * eps / a.steps if a.step_size is None else a.step_size
        adv_eot, adv_pgd = [], []
        pgd_generator = torch.Generator(x.device).manual_seed(cfg.seed)
        for start in range(0, len(x), cfg.batch_size):
            part = slice(start, start + cfg.batch_size)
            adv_eot.append(eot(model, x[part], labels[part], eps, alpha, a.steps, t, a.samples,
                               a.random_start, a.targeted, cfg.seed))
            adv_pgd.append(pgd(model, x[part], labels[part], eps, alpha, a.steps,
                               a.random_start, a.targeted, pgd_generator))
        images = {"clean": x, "eot": torch.cat(adv_eot), "pgd": torch.cat(adv_pgd)}
        row = {"eps": float(eps), "step_size": alpha,
               **_accuracies(model, images, y, targets, t, a.eval_samples, cfg, plain=True)}
        log.info("eot eps=%g: accuracy under fresh transformations: clean %.4f, eot %.4f, "
                 "pgd %.4f (untransformed: eot %.4f, pgd %.4f)", eps,
                 row["transformed"]["clean"]["accuracy"], row["transformed"]["eot"]["accuracy"],
                 row["transformed"]["pgd"]["accuracy"], row["untransformed"]["eot"]["accuracy"],
                 row["untransformed"]["pgd"]["accuracy"])
        rows.append(row)
        if cfg.show and eps == max(a.eps):
            shown["examples"] = eot_figure(model, {k: v[: cfg.show] for k, v in images.items()},
                                           t, cfg.seed + EVAL_SEED_OFFSET, eps)
    report["clean_accuracy"] = rows[0]["untransformed"]["clean"]["accuracy"]
    return rows, shown


@torch.no_grad()
def _accuracies(model, images: dict[str, torch.Tensor], y: torch.Tensor,
                targets: torch.Tensor | None, t: Transforms, draws: int, cfg,
                plain: bool) -> dict[str, Any]:
    """Per set of images (the same images, attacked or not): the accuracy, the mean
    cross-entropy towards the attack's labels (y, or the targets: the quantity EOT optimises)
    and for a targeted attack the share classified as the target, untransformed and under
    `draws` fresh random transformations of each image; the same draws for every set."""
    generator = torch.Generator(y.device).manual_seed(cfg.seed + EVAL_SEED_OFFSET)
    sums = {k: {"correct": 0.0, "hits": 0.0, "loss": 0.0} for k in images}
    plain_sums = {k: {"correct": 0.0, "hits": 0.0, "loss": 0.0} for k in images}
    n = len(y)
    with eval_mode(model):
        for start in range(0, n, cfg.batch_size):
            part = slice(start, start + cfg.batch_size)
            yb = y[part]
            tb = targets[part] if targets is not None else None
            for name, xs in images.items():
                _count(model(xs[part]), yb, tb, plain_sums[name])
            for _ in range(draws):
                params = sample_transforms(len(yb), t, generator, y.device)
                noise = torch.randn(images["clean"][part].shape, generator=generator,
                                    device=y.device)
                for name, xs in images.items():
                    _count(model(apply_transforms(xs[part], params, noise)), yb, tb, sums[name])

    def rates(s: dict[str, float], total: int) -> dict[str, float]:
        out = {"accuracy": s["correct"] / total, "loss": s["loss"] / total}
        if targets is not None:
            out["target_rate"] = s["hits"] / total
        return out

    result = {"transformed": {k: rates(v, n * draws) for k, v in sums.items()}}
    if plain:
        result["untransformed"] = {k: rates(v, n) for k, v in plain_sums.items()}
    return result


def _count(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
           sums: dict[str, float]) -> None:
    pred = logits.argmax(dim=1)
    sums["correct"] += (pred == y).sum().item()
    labels = y if targets is None else targets
    sums["loss"] += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
    if targets is not None:
        sums["hits"] += (pred == targets).sum().item()


@torch.no_grad()
def eot_figure(model, images: dict[str, torch.Tensor], t: Transforms, seed: int,
               eps: float, columns: int = 4) -> torch.Tensor:
    """Per example two rows, PGD's and EOT's adversarial image: untransformed, then under the
    same `columns` fresh random transformations; each titled with class and confidence."""
    from matplotlib.figure import Figure

    from ganlab.images import figure_to_uint8

    generator = torch.Generator(images["clean"].device).manual_seed(seed)
    n = len(images["clean"])
    params = sample_transforms(columns, t, generator, images["clean"].device)
    noise = torch.randn((columns, *images["clean"].shape[1:]), generator=generator,
                        device=images["clean"].device)
    fig = Figure(figsize=(1.2 * (columns + 1) + 0.6, 1.3 * 2 * n + 0.5), dpi=100)
    axes = fig.subplots(2 * n, columns + 1, squeeze=False)
    with eval_mode(model):
        for i in range(n):
            for r, name in enumerate(("pgd", "eot")):
                xi = images[name][i : i + 1].expand(columns, *images[name].shape[1:])
                panels = torch.cat([images[name][i : i + 1],
                                    apply_transforms(xi, params, noise)])
                probs = model(panels).softmax(dim=1)
                for j in range(columns + 1):
                    ax = axes[2 * i + r][j]
                    conf, pred = probs[j].max(dim=0)
                    _show(ax, panels[j])
                    label = f"{int(pred)} ({float(conf):.2f})"
                    ax.set_title((f"{name.upper()}: " if j == 0 else "") + label, fontsize=7)
    fig.suptitle(f"eps {eps:g}: untransformed | {columns} fresh random transformations "
                 "(class, confidence)", fontsize=7)
    fig.tight_layout()
    return figure_to_uint8(fig)


def _show(ax, image: torch.Tensor) -> None:
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()


# --- patch -----------------------------------------------------------------------------------


def training_images(cfg, target, device: torch.device, n: int) -> tuple[torch.Tensor, str]:
    """The first n images of the dataset's training split (the classifier's own training data
    for a ganlab run; `dataset=`'s for an exported program), as [0, 1] floats."""
    import os
    from pathlib import Path

    from ganlab.attacks.exported import is_exported
    from ganlab.data import build_dataset
    from ganlab.images import UNIT, to_float

    if is_exported(cfg.ckpt):
        dataset_cfg, seed = cfg.dataset, 0
        data_dir = cfg.data_dir or os.environ.get("GANLAB_DATA", "data")
    else:
        dataset_cfg, seed = target.config.dataset, target.config.trainer.seed
        data_dir = cfg.data_dir or target.config.data_dir
    data = build_dataset(dataset_cfg, Path(data_dir), seed, heldout=True)
    return to_float(data.x[:n].to(device), UNIT), data.source


def run_patch(cfg, target, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
              report: dict[str, Any]) -> tuple[list[dict], dict[str, torch.Tensor]]:
    a, model = cfg.attack, target.model
    try:
        side = patch_side(x.shape, a.size)
        random_placements(1, x.shape[-2:], side, a.rotation, tuple(a.scale))
    except ValueError as e:
        raise UserError(f"attack.size={a.size}, attack.scale={list(a.scale)}: {e}") from e
    x_train, source = training_images(cfg, target, x.device, a.train_images)
    log.info("patch: %dx%d pixels (%.1f%% of the image), target class %d, trained on %d "
             "training images", side, side, 100 * side * side / (x.shape[-1] * x.shape[-2]),
             a.target, len(x_train))
    patch = train_patch(model, x_train, a.target, a.size, a.rotation, tuple(a.scale), a.steps,
                        a.batch_size, a.lr, cfg.seed)
    noise_patch = torch.rand(patch.shape, generator=torch.Generator(x.device).manual_seed(
        cfg.seed + 1), device=x.device)
    rates = patch_rates(model, x, y, {"adversarial": patch, "noise": noise_patch}, a.target,
                        a.rotation, a.eval_samples, cfg.seed + EVAL_SEED_OFFSET,
                        cfg.batch_size)
    row = {"eps": None, "size": float(a.size), "side": side,
           "area": side * side / (x.shape[-1] * x.shape[-2]), **rates,
           "success_rate": rates["adversarial"]["success_rate"],
           "accuracy": rates["adversarial"]["accuracy"]}
    report.update(training_images=len(x_train), training_data=source,
                  clean_accuracy=rates["none"]["accuracy"])
    log.info("patch: success rate %.4f (noise patch %.4f, no patch %.4f)",
             rates["adversarial"]["success_rate"], rates["noise"]["success_rate"],
             rates["none"]["success_rate"])
    shown = {}
    if cfg.show:
        where = random_placements(cfg.show, x.shape[-2:], side, a.rotation, (1.0, 1.0),
                                  torch.Generator(x.device).manual_seed(
                                      cfg.seed + EVAL_SEED_OFFSET), x.device)
        shown["patch"] = patch_figure(model, patch, x[: cfg.show], where, a.target)
    shown["patch_image"] = enlarged(patch)
    report["patch"] = patch
    return [row], shown


def enlarged(patch: torch.Tensor, pixels: int = 224) -> torch.Tensor:
    """The patch as a uint8 (C, H, W) image about `pixels` wide, each pixel a square block."""
    from ganlab.images import UNIT, to_uint8

    factor = max(1, pixels // patch.shape[-1])
    big = patch.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    return to_uint8(big, UNIT)


def run(cfg, target, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
        report: dict[str, Any]) -> dict[str, Any]:
    """attack=eot or attack=patch on the held-out images x, y: the report, with its files
    written (robustness.json, the figures; the patch itself as patch.pt) and the figures and
    rates sent to the run's TensorBoard."""
    import json

    from ganlab.attack import _out_dir, _to_tensorboard
    from ganlab.images import save_png

    name = cfg.attack.name
    rows, shown = (run_eot if name == "eot" else run_patch)(cfg, target, x, y, generator, report)
    report["results"] = rows
    out = _out_dir(cfg, name)
    out.mkdir(parents=True, exist_ok=True)
    patch = report.pop("patch", None)
    if patch is not None:
        torch.save(patch.cpu(), out / "patch.pt")
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    for figure, image in shown.items():
        save_png(image, out / f"{figure}.png")
    _to_tensorboard(cfg, name, target.step, _scalars(name, rows), shown)
    report["out"] = str(out)
    return report


def _scalars(name: str, rows: list[dict]) -> dict[str, float]:
    """The rates for TensorBoard: eot, per eps the accuracy of each set of images under fresh
    transformations; patch, the success rate of the patch and of the noise patch."""
    if name == "patch":
        (row,) = rows
        size = f"size_{row['size']:g}"
        return {f"{size}/success_rate": row["adversarial"]["success_rate"],
                f"{size}/noise_success_rate": row["noise"]["success_rate"]}
    return {f"eps_{row['eps']:g}/transformed_accuracy_{images}": rates["accuracy"]
            for row in rows for images, rates in row["transformed"].items()}


@torch.no_grad()
def patch_rates(model, x: torch.Tensor, y: torch.Tensor, patches: dict[str, torch.Tensor],
                target: int, rotation: float, draws: int, seed: int,
                batch_size: int) -> dict[str, dict[str, float]]:
    """Each patch (and none) on every image at `draws` random placements at its own size
    (scale 1; the same placements for every patch): success_rate, the share of the images not
    of the target class classified as the target; target_rate, over all images; accuracy."""
    generator = torch.Generator(x.device).manual_seed(seed)
    names = ["none", *patches]
    sums = {k: {"hits": 0.0, "all_hits": 0.0, "correct": 0.0} for k in names}
    other = (y != target)
    side = next(iter(patches.values())).shape[-1]
    with eval_mode(model):
        for _ in range(draws):
            for start in range(0, len(x), batch_size):
                part = slice(start, start + batch_size)
                xb, yb, ob = x[part], y[part], other[part]
                where = random_placements(len(xb), x.shape[-2:], side, rotation, (1.0, 1.0),
                                          generator, x.device)
                for name in names:
                    xs = xb if name == "none" else place_patch(xb, patches[name], where)
                    pred = model(xs).argmax(dim=1)
                    sums[name]["hits"] += ((pred == target) & ob).sum().item()
                    sums[name]["all_hits"] += (pred == target).sum().item()
                    sums[name]["correct"] += (pred == yb).sum().item()
    eligible, total = max(int(other.sum()) * draws, 1), len(x) * draws
    return {k: {"success_rate": s["hits"] / eligible, "target_rate": s["all_hits"] / total,
                "accuracy": s["correct"] / total} for k, s in sums.items()}


@torch.no_grad()
def patch_figure(model, patch: torch.Tensor, x: torch.Tensor,
                 where: dict[str, torch.Tensor], target: int) -> torch.Tensor:
    """The patch enlarged, beside held-out images with the patch at random placements, each
    titled with the class the model gives it and its confidence."""
    from matplotlib.figure import Figure

    from ganlab.images import figure_to_uint8

    patched = place_patch(x, patch, where)
    with eval_mode(model):
        probs = model(patched).softmax(dim=1)
    n = len(x)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(2.6 + 1.3 * cols, max(2.6, 1.35 * rows) + 0.3), dpi=100)
    grid = fig.add_gridspec(rows, cols + 2)
    ax = fig.add_subplot(grid[:, :2])
    _show(ax, patch)
    ax.set_title(f"patch ({patch.shape[-1]}x{patch.shape[-1]} px), target {target}", fontsize=8)
    for i in range(n):
        ax = fig.add_subplot(grid[i // cols, 2 + i % cols])
        conf, pred = probs[i].max(dim=0)
        _show(ax, patched[i])
        ax.set_title(f"{int(pred)} ({float(conf):.2f})", fontsize=7,
                     color="red" if int(pred) == target else "black")
    fig.suptitle("held-out images, patch at random placements (class, confidence; red: the "
                 "target)", fontsize=7)
    fig.tight_layout()
    return figure_to_uint8(fig)


# --- printing ----------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    name = report["attack"]["name"]
    print(f"{name} on {report['model']} ({report['n_examples']} held-out images): clean "
          f"accuracy {report['clean_accuracy']:.4f}")
    for row in report["results"]:
        if name == "eot":
            tr, un = row["transformed"], row["untransformed"]
            print(f"  eps {row['eps']:<6g} accuracy under fresh transformations: clean "
                  f"{tr['clean']['accuracy']:.4f}  EOT {tr['eot']['accuracy']:.4f}  PGD "
                  f"{tr['pgd']['accuracy']:.4f}   untransformed: EOT "
                  f"{un['eot']['accuracy']:.4f}  PGD {un['pgd']['accuracy']:.4f}")
            if "target_rate" in tr["eot"]:
                print(f"    target rate under transformations: EOT "
                      f"{tr['eot']['target_rate']:.4f}  PGD {tr['pgd']['target_rate']:.4f}")
        else:
            print(f"  patch {row['side']}x{row['side']} px ({row['area']:.1%} of the image), "
                  f"target {report['attack']['target']}: success rate "
                  f"{row['adversarial']['success_rate']:.4f}  noise patch "
                  f"{row['noise']['success_rate']:.4f}  no patch "
                  f"{row['none']['success_rate']:.4f}  (accuracy with the patch "
                  f"{row['adversarial']['accuracy']:.4f})")
    files = "examples.png" if name == "eot" else "patch.png, patch_image.png"
    print(f"wrote {report['out']}/robustness.json, {files}")
