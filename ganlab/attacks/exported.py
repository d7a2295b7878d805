"""Classifiers from outside ganlab: a `torch.export` program (`.pt2`, written by
`torch.export.save`) that maps [0, 1] images to logits, attacked like ganlab's own.

    attack ckpt=model.pt2 dataset=mnist attack=pgd

The program's train/eval behaviour was fixed when it was exported (export it in eval mode),
so `ExportedClassifier` keeps the module's mode flag for the attacks' rules but cannot switch
what the graph computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganlab.data.base import DataSpec
from ganlab.errors import UserError

SUFFIX = ".pt2"


def is_exported(path: str) -> bool:
    return Path(path).suffix == SUFFIX


class ExportedClassifier(nn.Module):
    """An exported program as an nn.Module whose parameters the attacks can see (they clear
    their gradients) and whose train()/eval() only set the flag: an exported graph cannot
    switch modes, and torch refuses to try."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> ExportedClassifier:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


@dataclass
class ExportedTarget:
    """What the attack command needs of a classifier, for an exported one: the network, the
    data it classifies, and a name for the report (no training step or defence is known)."""

    model: ExportedClassifier
    spec: DataSpec
    path: Path
    step: int | None = None

    @property
    def name(self) -> str:
        return self.path.name


def load_exported(path: str, spec: DataSpec, probe: torch.Tensor,
                  device: torch.device) -> ExportedTarget:
    """The program at `path`, checked on `probe` (a few held-out [0, 1] images): it must take
    the dataset's images and return (N, classes) logits."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"ckpt={path}: no such file")
    try:
        program = torch.export.load(str(file)).module()
    except Exception as e:  # a damaged or foreign file: torch raises many kinds
        raise UserError(f"ckpt={path} is not a torch.export program ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); write one "
                        "with torch.export.save(torch.export.export(model, (images,)), path)"
                        ) from e
    model = ExportedClassifier(program).to(device)
    try:
        with torch.no_grad():
            logits = model(probe)
    except Exception as e:
        raise UserError(f"ckpt={path} does not take {tuple(probe.shape[1:])} images of "
                        f"dataset={spec.name} in [0, 1] ({type(e).__name__}: "
                        f"{str(e).splitlines()[0]})") from e
    expected = (len(probe), spec.num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(f"ckpt={path} returns {got} for {len(probe)} images; the attack needs "
                        f"(N, {spec.num_classes}) logits over dataset={spec.name}'s classes")
    return ExportedTarget(model, spec, file)
