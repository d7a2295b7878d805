"""The seam between the training loop and a model family.

A family owns the maths of one kind of model: it builds its networks and optimizers from the
config, and steps them. It knows nothing of TensorBoard, checkpoint files, progress bars or
signals; the loop knows nothing of generators or ELBOs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ganlab.amp import FP32, Amp
from ganlab.errors import UserError
from ganlab.registry import Registry

# name (cfg.model.family) -> class(cfg, spec: DataSpec, device: torch.device) -> Family
FAMILIES: Registry = Registry("family")


class Family:
    # how many data batches one train_step consumes (e.g. k discriminator steps)
    batches_per_step: int = 1
    # the loop hands the dataset's held-out split to families that measure on unseen data
    needs_heldout: ClassVar[bool] = False
    # whether the family trains on two unpaired image domains (CycleGAN) instead of one dataset
    unpaired: ClassVar[bool] = False
    # whether the family trains on (input, target) image pairs (pix2pix); its check_config
    # says which other datasets it can make pairs from
    paired: ClassVar[bool] = False
    # whether the family trains on 3-D voxel grids (gan3d) instead of images or points
    voxels: ClassVar[bool] = False
    # set by the loop before each train_step: whether it will read this step's numbers; a
    # family may skip diagnostics (grad norms, mean D outputs) when False, but never losses
    diagnostics: bool = True
    # set by the loop: the run's total number of steps, for families with schedules over it
    run_length: int | None = None
    # set by the loop: call amp.backward(loss) and amp.step(optimizer) (mixed precision)
    amp: Amp = FP32
    # networks (names in networks()) whose loss differentiates a gradient through them (a
    # gradient penalty): torch.compile cannot, so trainer.compile leaves them as they are
    double_backward: frozenset[str] = frozenset()
    # how many held-out examples evaluate() measures (eval.n_samples; the eval command sets it)
    eval_samples: int = 0
    # set by load_checkpoint: the step the state was saved at and the run's config (in
    # today's layout); None for a family the loop is training
    step: int | None = None
    config: Any = None
    # networks that are never trained directly (a moving average of another): always in
    # evaluation mode
    eval_only: frozenset[str] = frozenset()

    # curves that belong on one chart, for the run's dashboard: {section: {chart title:
    # [regular expressions over scalar names]}}. Plain data: the logger draws it
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {}
    # what each of visuals() shows, in a sentence (e.g. that the noise is the same each time)
    visual_notes: ClassVar[dict[str, str]] = {}

    @classmethod
    def wants_heldout(cls, cfg) -> bool:
        """Whether training under this config should keep real held-out data for the family."""
        return cls.needs_heldout

    @classmethod
    def check_config(cls, cfg) -> None:
        """Config errors that need no data (image sizes the networks cannot take): raised
        before any data is read or downloaded."""

    def use_heldout(self, data) -> None:
        """Real examples kept out of training (an InMemoryDataset on the family's device)."""
        self.heldout = data

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step. `batch` is one (x, y) pair, or a list of `batches_per_step`
        pairs. Returns detached 0-dim tensors (the loop reads them only at logging cadence,
        so the step needs no host sync)."""
        raise NotImplementedError

    def visuals(self) -> dict[str, torch.Tensor]:
        """Images to log: name -> uint8 (C, H, W). Must not touch the global RNG."""
        return {}

    def evaluate(self) -> dict[str, float]:
        """The family's quality metrics. Must not touch the global RNG."""
        return {}

    def networks(self) -> dict[str, torch.nn.Module]:
        """The family's networks by attribute name, for what the runtime does to all of them
        (torch.compile, channels_last, replicas under torchrun): every nn.Module attribute
        unless a family says otherwise."""
        return {name: value for name, value in vars(self).items()
                if isinstance(value, torch.nn.Module)}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The family's optimizers by attribute name: every Optimizer attribute unless a
        family says otherwise."""
        return {name: value for name, value in vars(self).items()
                if isinstance(value, torch.optim.Optimizer)}

    def extra_state(self) -> dict[str, Any]:
        """What a checkpoint keeps beside networks and optimizers (fixed noise, counters,
        image pools); keys must not clash with their names."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what extra_state() saved (`state` is the whole family state)."""

    # --- derived from networks() and optimizers(): families do not write these ---------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: net.state_dict() for name, net in self.networks().items()}
        state.update({name: opt.state_dict() for name, opt in self.optimizers().items()})
        state.update(self.extra_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A KeyError names what the checkpoint lacks (trained with other settings)."""
        for name, net in self.networks().items():
            if name not in state:
                raise KeyError(f"{name} (the checkpoint has no such network)")
            net.load_state_dict(state[name])
        for name, opt in self.optimizers().items():
            if name not in state:
                raise KeyError(f"{name} (the checkpoint has no such optimizer)")
            opt.load_state_dict(state[name])
        self.load_extra_state(state)

    def train(self) -> None:
        """Networks to training mode (those in eval_only stay in evaluation mode)."""
        for name, net in self.networks().items():
            net.train(name not in self.eval_only)

    def eval(self) -> None:
        """Networks to evaluation mode."""
        for net in self.networks().values():
            net.eval()


def check_family_data(cfg) -> None:
    """A two-domain dataset needs a two-domain family and the other way round, and a paired
    dataset a paired family; said before any data is read or downloaded."""
    from ganlab.data import is_paired, is_unpaired, is_voxels

    unpaired = is_unpaired(cfg.dataset)
    if is_paired(cfg.dataset) and not FAMILIES.get(cfg.model.family).paired:
        raise UserError(f"dataset={cfg.dataset.name} holds (input, target) image pairs, for "
                        f"model=pix2pix (label maps: model=spade); model={cfg.model.name} "
                        f"({cfg.model.family} family) does not train on pairs")
    if FAMILIES.get(cfg.model.family).unpaired and not unpaired:
        raise UserError(f"model={cfg.model.name} translates between two unpaired image domains; "
                        f"dataset={cfg.dataset.name} is a single dataset (use dataset=horse2zebra, "
                        "dataset=horse2zebra_mini, dataset=red2blue, or dataset=unpaired "
                        "dataset.name=<a folder with trainA/ and trainB/>)")
    if unpaired and not FAMILIES.get(cfg.model.family).unpaired:
        raise UserError(f"dataset={cfg.dataset.name} holds two unpaired image domains, for "
                        f"model=cyclegan; model={cfg.model.name} ({cfg.model.family} family) "
                        "trains on a single dataset")
    if is_voxels(cfg.dataset) != FAMILIES.get(cfg.model.family).voxels:
        raise UserError(f"dataset={cfg.dataset.name} holds 3-D voxel grids, for model=gan3d; "
                        f"model={cfg.model.name} trains on images or points"
                        if is_voxels(cfg.dataset) else
                        f"model={cfg.model.name} trains on 3-D voxel grids; dataset="
                        f"{cfg.dataset.name} holds images or points: use dataset=voxels "
                        "(procedural shapes, or dataset.path=<a folder of .npy / .binvox grids>)")
    FAMILIES.get(cfg.model.family).check_config(cfg)
