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


class RunLogger:
    def __init__(self, run_dir: Path, cfg: DictConfig, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.samples_dir = run_dir / "samples"
        self.cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
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
        text = OmegaConf.to_yaml(self.cfg)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))

    def scalars(self, values: Mapping[str, float], step: int, total: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        line = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        self.steps_log.info("step %d/%d %s", step, total, line)

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        for name, image in images.items():
            self.writer.add_image(name, image, step, dataformats="CHW")
            suffix = "" if name == "samples" else f"_{name.replace('/', '_')}"
            save_png(image, self.samples_dir / f"step_{step}{suffix}.png")

    def final(self, metrics: Mapping[str, float]) -> None:
        """metrics.json, the run's hparams with its final metrics for TensorBoard's table, and
        samples/progress.gif: every sample grid of the run in step order (two or more)."""
        self._animate_samples()
        finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        from torch.utils.tensorboard.summary import hparams

        hparam_values = {k: v for k, v in flatten(self.cfg).items()
                         if isinstance(v, (int, float, str, bool))}
        shown = {f"hparam/{k}": v for k, v in finite.items() if not math.isnan(v)}
        exp, ssi, sei = hparams(hparam_values, shown)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        step = int(metrics.get("step", 0))
        for k, v in shown.items():
            self.writer.add_scalar(k, v, step)

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
        self.writer.close()
        self.steps_log.removeHandler(self._file)
        self._file.close()


class NullLogger:
    """What the processes other than rank 0 log under torchrun: nothing."""

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
