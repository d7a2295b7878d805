"""Where the training set lives during a run: on the training device, or streamed to it.

A dataset that fits `data.max_device_bytes` is copied to the device once and batches are drawn
by indexing there (the fast path for everything ganlab ships). A larger one stays on the host,
as a memory map of its cache file when it has one (CelebA, image folders), and each batch is
gathered there, pinned, and copied to the device without blocking, while a background thread
already gathers the next one. The batches are the same either way: the same permutation
generator, the same rows in the same order; a resumed run continues the stream exactly.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ganlab.data.base import Batches, DataSpec, InMemoryDataset

log = logging.getLogger("ganlab")

AUTO_SHARE = 0.5  # of the device's free memory a dataset may take when max_device_bytes=null


def available_bytes(device: torch.device) -> int:
    """Free memory of the training device: CUDA's free bytes, otherwise the host's available
    RAM (MemAvailable; total RAM where /proc is not there)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_budget(max_device_bytes: int | None, device: torch.device) -> int:
    if max_device_bytes is not None:
        return int(max_device_bytes)
    return int(AUTO_SHARE * available_bytes(device))


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def place(data, device: torch.device, max_device_bytes: int | None):
    """The training data on `device`, or a StreamedDataset when it does not fit the budget;
    the held-out split goes to the device either way (it is small and read whole)."""
    if not isinstance(data, InMemoryDataset):  # two-domain data: always on the device
        return data.to(device)
    budget = device_budget(max_device_bytes, device)
    setting = ("data.max_device_bytes=null: half the free memory" if max_device_bytes is None
               else f"data.max_device_bytes={max_device_bytes}")
    if data.nbytes <= budget:
        log.info("training set: %s on %s (%s fits %s, %s)", f"{len(data):,} examples", device,
                 _size(data.nbytes), _size(budget), setting)
        return data.to(device)
    where = "a memory map of its cache file" if data.mapped else "host memory"
    log.info("training set: %s streamed from %s to %s in prefetched batches (%s > %s, %s)",
             f"{len(data):,} examples", where, device, _size(data.nbytes), _size(budget), setting)
    heldout = data.heldout.to(device) if data.heldout is not None else None
    return StreamedDataset(data, device, heldout)


@dataclass
class StreamedDataset:
    """A training set kept on the host and streamed to `device` batch by batch."""

    host: InMemoryDataset
    device: torch.device
    heldout: InMemoryDataset | None = None

    @property
    def spec(self) -> DataSpec:
        return self.host.spec

    @property
    def source(self) -> str:
        return self.host.source

    @property
    def notes(self) -> list[str]:
        return self.host.notes

    def __len__(self) -> int:
        return len(self.host)

    def batches(self, batch_size: int, seed: int) -> StreamedBatches:
        return StreamedBatches(self, batch_size, seed)


class StreamedBatches(Batches):
    """Batches (the same permutations, positions and state) gathered on the host and sent to
    the device; with `prefetch`, the next batch is gathered in a background thread while the
    current step runs (off under torchrun, whose replicas skip each other's batches)."""

    def __init__(self, data: StreamedDataset, batch_size: int, seed: int) -> None:
        self.stream = data
        self.prefetch = True
        self._ahead: Future | None = None
        self._consumed: dict | None = None  # the state after the last batch handed out
        self._pool: ThreadPoolExecutor | None = None
        super().__init__(data.host, batch_size, seed)

    @property
    def index_device(self) -> torch.device:
        return torch.device("cpu")

    def _gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's rows from the host copy, read in ascending row order (sequential reads
        of a memory map) and put back in the batch's order; pinned for a CUDA device."""
        host = self.data
        rows = host.rows[index] if host.rows is not None else index
        ascending, where = rows.sort()
        x = torch.empty((len(rows), *host.x.shape[1:]), dtype=host.x.dtype)
        x[where] = host.x[ascending]
        y = host.y[index] if host.y is not None else None
        if self.stream.device.type == "cuda":
            x = x.pin_memory()
            y = y.pin_memory() if y is not None else None
        return x, y

    def _to_device(self, batch: tuple[torch.Tensor, torch.Tensor | None]):
        x, y = batch
        device = self.stream.device
        x = x.to(device, non_blocking=True)
        return x, (y.to(device, non_blocking=True) if y is not None else None)

    def take(self, index: torch.Tensor):
        return self._to_device(self._gather(index))

    def __next__(self):
        if self._ahead is not None:
            batch, self._ahead = self._ahead.result(), None
        else:
            batch = self._gather(self.next_index())
        if self.prefetch:
            self._consumed = super().state_dict()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="ganlab-prefetch")
            self._ahead = self._pool.submit(self._gather, self.next_index())
        return self._to_device(batch)

    def skip(self) -> None:
        self.prefetch = False  # another replica's batch: the look-ahead would be its too
        self._drop_ahead()
        super().skip()

    def _drop_ahead(self) -> None:
        """Forget the prefetched batch and rewind to the state it was drawn from."""
        if self._ahead is not None:
            self._ahead.result()
            self._ahead = None
            super().load_state_dict(self._consumed)

    def state_dict(self) -> dict:
        # the batch gathered ahead has not been trained on: a resumed run draws it again
        return self._consumed if self._ahead is not None else super().state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._drop_ahead()
        super().load_state_dict(state)
