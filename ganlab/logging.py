"""Where a run's numbers and pictures go: TensorBoard under <run>/tb, PNGs under
<run>/samples, step lines in <run>/train.log, the final metrics in <run>/metrics.json."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ganlab.images import save_png

log = logging.getLogger("ganlab")


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b": value} with TensorBoard-friendly values (lists as text)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif value is None or isinstance(value, (list, tuple)):
            out[name] = str(value)
        else:
            out[name] = value
    return out


# keys that say how a run was watched or where it ran, not what it trained: no HParams column
NOT_HPARAMS = ("log.", "logger.", "eval.", "data.", "data_dir", "device", "resume",
               "trainer.ckpt_every",
               "trainer.keep_last", "trainer.compile", "trainer.channels_last",
               "trainer.cudnn_benchmark", "trainer.sync_batchnorm")
# what names the run, in this order after the overrides
NAMING_HPARAMS = ("model.name", "dataset.name", "loss.name", "defense.name")
# headline numbers in HParams beside the primary metric (when the run reports them)
HEADLINE_METRICS = ("heldout_nll_iwae", "kid", "precision", "recall", "modes_covered",
                    "heldout_recon", "label_agreement")


class RunLogger:
    def __init__(self, run_dir: Path, cfg: DictConfig, purge_step: int | None = None,
                 overrides: list[str] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.samples_dir = run_dir / "samples"
        self.cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        self.overrides = overrides or []  # the command line's, which lead the HParams table
        self.visual_notes: dict[str, str] = {}
        self._described: set[str] = set()
        from ganlab.trackers import TRACKERS, tracker_name

        # logger=mlflow|wandb: the same params, numbers and pictures go there too
        tracker = TRACKERS.get(tracker_name(cfg))
        self.tracker = (tracker(cfg.logger, run_dir, run_dir.name, self.hparam_values())
                        if tracker is not None else None)
        # purge_step drops events a killed run wrote after its last checkpoint
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)
        # step lines go to train.log only: on the console the progress bar shows them
        self.steps_log = logging.getLogger("ganlab.steps")
        self.steps_log.propagate = False
        self._file = logging.FileHandler(run_dir / "train.log")
        self._file.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        self.steps_log.addHandler(self._file)
        self.steps_log.setLevel(logging.INFO)

    def config_text(self, command: str = "") -> None:
        """The Text tab: the command that reproduces the run and what ganlab ran it, then the
        whole config."""
        from ganlab.provenance import source_version

        if command:
            self.writer.add_text("command", f"    {command}\n\n{source_version()}")
            if self.tracker is not None:
                self.tracker.text("command", f"{command}\n{source_version()}\n")
        text = OmegaConf.to_yaml(self.cfg)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))

    def dashboard(self, layout: Mapping[str, Mapping[str, list[str]]],
                  visual_notes: Mapping[str, str]) -> None:
        """A family's charts (TensorBoard's Custom Scalars: each a set of regular expressions
        over scalar names drawn on one chart) and the sentences that describe its images."""
        if layout:
            self.writer.add_custom_scalars(
                {section: {title: ["Multiline", list(patterns)]
                           for title, patterns in charts.items()}
                 for section, charts in layout.items()})
        self.visual_notes = dict(visual_notes)

    def scalars(self, values: Mapping[str, float], step: int, total: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        if self.tracker is not None:
            self.tracker.scalars(values, step)
        line = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        self.steps_log.info("step %d/%d %s", step, total, line)

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        for name, image in images.items():
            if image.dim() == 4:  # a video, uint8 (T, C, H, W)
                self.video(name, image, step)
                continue
            note = self.visual_notes.get(name)
            if note and name not in self._described:  # TensorBoard reads the first one's
                self._add_described_image(name, image, step, note)
                self._described.add(name)
            else:
                self.writer.add_image(name, image, step, dataformats="CHW")
            if self.tracker is not None:
                self.tracker.image(name, image, step)
            suffix = "" if name == "samples" else f"_{name.replace('/', '_')}"
            save_png(image, self.samples_dir / f"step_{step}{suffix}.png")

    def video(self, name: str, frames: torch.Tensor, step: int) -> None:
        """A uint8 (T, C, H, W) clip: TensorBoard's video when moviepy is installed (its
        add_video needs it), else the frames as one image strip (8 per row); and always
        samples/step_<N>_<name>.gif."""
        import importlib.util

        from ganlab.images import make_grid

        if importlib.util.find_spec("moviepy") is not None:
            self.writer.add_video(name, frames[None], step, fps=10)
        else:
            self.writer.add_image(f"{name}_frames", make_grid(frames, nrow=8), step,
                                  dataformats="CHW")
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        save_video_gif(frames, self.samples_dir / f"step_{step}_{name.replace('/', '_')}.gif")

    def _add_described_image(self, name: str, image: torch.Tensor, step: int,
                             note: str) -> None:
        from tensorboard.plugins.image import metadata as image_metadata
        from torch.utils.tensorboard.summary import image as image_summary

        summary = image_summary(name, image, dataformats="CHW")
        summary.value[0].metadata.CopyFrom(
            image_metadata.create_summary_metadata(display_name=name, description=note))
        self.writer._get_file_writer().add_summary(summary, step)

    def final(self, metrics: Mapping[str, float]) -> None:
        """metrics.json, the run's hparams with its final metrics for TensorBoard's table, and
        samples/progress.gif: every sample grid of the run in step order (two or more)."""
        self._animate_samples()
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # tb/hparams: the session (the run's hparams) and its final headline metrics, under
        # the eval/ names the run's own charts use. No experiment summary: with one per run
        # TensorBoard shows an arbitrary run's columns; without, it takes every run's keys
        # and puts first the ones whose values differ between runs. A sub-run of its own, so
        # the table's metric columns are these few, not every scalar of the run
        shown = {f"eval/{name}": float(metrics[name]) for name in hparam_metrics(metrics)}
        _experiment, session_start, session_end = hparams(self.hparam_values(), shown)
        step = int(metrics.get("step", 0))
        with SummaryWriter(str(self.run_dir / "tb" / "hparams")) as table:
            for summary in (session_start, session_end):
                table._get_file_writer().add_summary(summary)
            for tag, value in shown.items():
                table.add_scalar(tag, value, step)
        if self.tracker is not None:
            numbers = {k: float(v) for k, v in metrics.items()
                       if isinstance(v, (int, float)) and math.isfinite(v)}
            self.tracker.finish(numbers, int(metrics.get("step", 0)))
            self.tracker = None

    def hparam_values(self) -> dict[str, Any]:
        """What the run trained, for TensorBoard's HParams table: the keys given on the command
        line first, then model, dataset and loss or defence, then the rest of what the
        chosen model reads (how the run was logged, evaluated or where it ran left out; of the
        dataset, its name and what the command line changed)."""
        given = [o.split("=", 1)[0].lstrip("+~") for o in self.overrides if "=" in o]
        values = {k: v for k, v in flatten(self.cfg).items()
                  if isinstance(v, (int, float, str, bool)) and not k.startswith(NOT_HPARAMS)
                  # the dataset by its name, and what the command line changed of it
                  and (not k.startswith("dataset.") or k == "dataset.name" or k in given)}
        # a group choice (model=dcgan) shows as its name (model.name)
        given = [k if k in values else f"{k}.name" for k in given]
        first = [k for k in (*given, *NAMING_HPARAMS) if k in values]
        ordered = dict.fromkeys([*first, *values])
        return {k: values[k] for k in ordered}

    def _animate_samples(self) -> None:
        from ganlab.images import save_gif

        steps = {}
        for png in self.samples_dir.glob("step_*.png"):
            number = png.stem.removeprefix("step_")
            if number.isdigit():  # the main grid; named extras (step_<N>_<name>.png) aside
                steps[int(number)] = png
        if len(steps) >= 2:
            save_gif([steps[s] for s in sorted(steps)], self.samples_dir / "progress.gif")

    def close(self) -> None:
        if self.tracker is not None:  # the run ended before final(): interrupted or failed
            self.tracker.abort()
        self.writer.close()
        self.steps_log.removeHandler(self._file)
        self._file.close()


def save_video_gif(frames: torch.Tensor, path: Path, fps: int = 10) -> None:
    """uint8 (T, C, H, W) frames as a looping GIF."""
    from PIL import Image

    pictures = [Image.fromarray(f.permute(1, 2, 0).cpu().numpy()) for f in frames]
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=int(1000 / fps), loop=0)


def hparam_metrics(metrics: Mapping[str, Any]) -> list[str]:
    """The final metrics HParams compares runs by: the primary metric first, then the other
    headline numbers the run reports (finite ones; bookkeeping such as steps or image counts
    left out)."""
    from ganlab.metrics import PRIMARY_METRICS

    names = [name for name, _ in PRIMARY_METRICS] + list(HEADLINE_METRICS)
    return [n for n in names if isinstance(metrics.get(n), (int, float))
            and not isinstance(metrics.get(n), bool) and math.isfinite(metrics[n])]


class NullLogger:
    """What the processes other than rank 0 log under torchrun: nothing."""

    def dashboard(self, layout, visual_notes) -> None:
        pass

    def config_text(self, command: str = "") -> None:
        pass

    def scalars(self, values: Mapping[str, float], step: int, total: int) -> None:
        pass

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        pass

    def final(self, metrics: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
