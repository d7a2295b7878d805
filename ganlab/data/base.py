"""What every dataset module returns, and the device-resident batcher the loop draws from."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ganlab.errors import UserError
from ganlab.registry import Registry


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data, stored in checkpoints to rebuild the model."""

    name: str
    # "image" (uint8 N,C,H,W in 0..255), "points" (float32 N,D) or "voxels" (uint8 N,1,X,Y,Z
    # of 0/1 occupancy, y up); "unpaired" and "paired" for two-domain data
    kind: str
    shape: tuple[int, ...]  # per-example shape: (C, H, W), (D,) or (1, X, Y, Z)
    num_classes: int = 0  # 0 when unlabelled
    modes: tuple[tuple[float, ...], ...] | None = None  # toys: the mode centres
    mode_std: float = 0.0  # toys: the std of each mode
    # attribute names when y holds a 0/1 matrix (N, len(attributes)) instead of class labels
    attributes: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None  # label k's name, when the data has names

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "modes": [list(m) for m in self.modes] if self.modes is not None else None,
            "mode_std": self.mode_std,
            "attributes": list(self.attributes) if self.attributes is not None else None,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        modes = tuple(tuple(m) for m in d["modes"]) if d.get("modes") is not None else None
        return cls(
            name=d["name"],
            kind=d["kind"],
            shape=tuple(d["shape"]),
            num_classes=d.get("num_classes", 0),
            modes=modes,
            mode_std=d.get("mode_std", 0.0),
            attributes=tuple(d["attributes"]) if d.get("attributes") is not None else None,
            class_names=(tuple(d["class_names"]) if d.get("class_names") is not None
                         else None),
        )


@dataclass
class InMemoryDataset:
    """A dataset as tensors: images as uint8, points as float32, labels as int64.

    Images read from a cache file may be a memory map of it (`mapped`): rows are read from
    disk when indexed, so a dataset larger than memory costs nothing until used. A subset of
    mapped images keeps the map and the row numbers (`rows`) instead of copying them;
    `materialized()` copies them into memory, which the training device's copy and every
    consumer of `.x` other than the streamed batches need (build_dataset does it unless the
    caller streams)."""

    spec: DataSpec
    x: torch.Tensor  # with `rows`: the backing images, of which this dataset is x[rows]
    y: torch.Tensor | None = None
    source: str = ""  # one line saying where the data came from (recorded in the run log)
    notes: list[str] = field(default_factory=list)
    # real examples kept out of training, for the families that measure on unseen data
    heldout: InMemoryDataset | None = None
    rows: torch.Tensor | None = None  # this dataset's rows of x (None: all, in order)
    mapped: bool = False  # x is a memory map of a cache file

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else self.x.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of this dataset's examples (labels are small and left out)."""
        return len(self) * self.x[0].nelement() * self.x.element_size() if len(self) else 0

    def materialized(self) -> InMemoryDataset:
        """The same examples as ordinary in-memory tensors (the held-out split too)."""
        heldout = self.heldout.materialized() if self.heldout is not None else None
        if self.rows is None and not self.mapped:
            if heldout is self.heldout:
                return self
            x = self.x
        else:
            x = self.x[self.rows] if self.rows is not None else self.x.clone()
        return InMemoryDataset(self.spec, x, self.y, self.source, self.notes, heldout)

    def to(self, device: torch.device) -> InMemoryDataset:
        data = self.materialized()
        y = data.y.to(device) if data.y is not None else None
        heldout = data.heldout.to(device) if data.heldout is not None else None
        return InMemoryDataset(data.spec, data.x.to(device), y, data.source, data.notes, heldout)

    def batches(self, batch_size: int, seed: int) -> Batches:
        """The loop's stream of training batches over this dataset."""
        return Batches(self.materialized(), batch_size, seed)

    def subset(self, index: torch.Tensor, source: str) -> InMemoryDataset:
        y = self.y[index] if self.y is not None else None
        if self.mapped:  # keep the map: copying could need more memory than there is
            index = index.cpu()
            rows = self.rows[index] if self.rows is not None else index
            return InMemoryDataset(self.spec, self.x, y, source, rows=rows, mapped=True)
        return InMemoryDataset(self.spec, self.x[index], y, source)


# share of a dataset held out when it has no test split of its own
HELDOUT_FRACTION = 0.1
HELDOUT_SEED = 1234  # fixed: the held-out slice is the same whatever trainer.seed is


def split_off_heldout(data: InMemoryDataset) -> InMemoryDataset:
    """The training data without a fixed random 10% slice, which becomes `heldout`."""
    n_heldout = max(1, round(len(data) * HELDOUT_FRACTION))
    if n_heldout >= len(data):
        raise UserError(f"{data.spec.name} has {len(data)} example(s): too few to hold "
                        "any out for evaluation")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(HELDOUT_SEED))
    order = order.to(data.x.device)
    # the held-out part stays in random order: datasets sorted by class (the bundled digits)
    # must not give a first-n slice of one class
    keep, held = order[n_heldout:].sort().values, order[:n_heldout]
    heldout = data.subset(held, f"{data.spec.name}: a fixed random {HELDOUT_FRACTION:.0%} of the "
                                f"training source ({n_heldout:,} examples), kept out of training")
    train = data.subset(keep, f"{data.source}; {n_heldout:,} of them held out")
    train.notes, train.heldout = data.notes, heldout
    return train


# name -> builder(cfg.dataset, data_dir: pathlib.Path, seed: int) -> InMemoryDataset
DATASETS: Registry = Registry("dataset", group="dataset")
# name -> loader(cfg.dataset, data_dir) -> the dataset's own test split, or None when its
# files are not there; read only for the families that measure on held-out data
TEST_SPLITS: Registry = Registry("test split")


class Batches:
    """Shuffled mini-batches of a device-resident dataset, drawn by indexing.

    Each epoch is a fresh permutation from a generator of its own, so the order depends only
    on the seed; state_dict() captures the position, and a resumed run sees the same batches.
    Incomplete last batches are dropped so every step sees `batch_size` examples.
    """

    def __init__(self, data: InMemoryDataset, batch_size: int, seed: int) -> None:
        if batch_size > len(data):
            raise UserError(f"trainer.batch_size={batch_size} is larger than the dataset "
                            f"({len(data):,} examples)")
        self.data = data
        self.batch_size = batch_size
        self.batches_per_epoch = len(data) // batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self.order = self._permutation()

    @property
    def index_device(self) -> torch.device:
        return self.data.x.device

    def _permutation(self) -> torch.Tensor:
        return torch.randperm(len(self.data), generator=self.generator).to(self.index_device)

    def next_index(self) -> torch.Tensor:
        """The rows of the next batch (advances the position)."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self.order = self._permutation()
        index = self.order[self.position * self.batch_size : (self.position + 1) * self.batch_size]
        self.position += 1
        return index

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = self.data.y[index] if self.data.y is not None else None
        return self.data.x[index], y

    def skip(self) -> None:
        """Move past one batch without reading it (another replica's, under torchrun)."""
        self.next_index()

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.take(self.next_index())

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            "order": self.order.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"]
        self.position = state["position"]
        self.order = state["order"].to(self.index_device)
