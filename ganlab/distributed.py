"""Data-parallel training under torchrun (`torchrun --nproc_per_node=N -m ganlab train ...`).

Every process holds a full replica of the family's networks and optimizers and trains on its
own shard of each batch sequence; after each backward pass the gradients of an optimizer's
parameters are averaged over the processes before it steps, so the replicas stay identical.
That is what DistributedDataParallel does, done at the optimizer step (`Amp.step`) instead of
through DDP's module wrapper, because DDP's reducer expects one forward and one parameter
backward per module per step, and the families break that on purpose: D scored in the G step
with its gradients off, PGD's input-gradient passes (`torch.autograd.grad`, which DDP does not
support), the gradient penalty's double backward, a generator used k times per D step, the
progressive GAN's unused layers. NVIDIA's StyleGAN3 averages gradients the same way for the
same reasons. A family stays unaware of all of it.

Only rank 0 writes: logs, sample grids, metrics and checkpoints; the others train and follow.
The process group is set up before Hydra starts, so that rank 0 can pin one run dir for all.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from ganlab.errors import UserError

# rank 0 may evaluate (FID, reference classifiers) while the others wait in the next step's
# collective: allow that much longer than the default 10 minutes of NCCL
TIMEOUT = datetime.timedelta(hours=1)


def launched() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init() -> None:
    """Join torchrun's process group: NCCL for CUDA tensors, gloo for CPU ones."""
    if not launched() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"  # CPU flags (stop requests) go through gloo
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    atexit.register(shutdown)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def from_rank0(value):
    """Rank 0's value of a picklable object, on every rank (the value itself when alone)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _coalesced(tensors: list[torch.Tensor], op) -> None:
    """Apply one collective to many tensors at once: one flat buffer per dtype and device."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        op(flat)
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


class Replicas:
    """This process's place among the replicas: world size 1 without torchrun, and then every
    method is a no-op."""

    def __init__(self) -> None:
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def broadcast(self, modules: Iterable[nn.Module], buffers_only: bool = False) -> None:
        """Rank 0's parameters and/or buffers (BatchNorm statistics, spectral norm's vectors)
        in every replica."""
        if not self.active:
            return
        tensors = []
        for module in modules:
            if not buffers_only:
                tensors += [p.data for p in module.parameters()]
            tensors += [b for b in module.buffers() if b.numel()]
        if tensors:
            with torch.no_grad():
                _coalesced(tensors, lambda flat: dist.broadcast(flat, src=0))

    def average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """The mean over replicas of the gradients an optimizer is about to apply. Every
        replica runs the same code, so the same parameters have gradients on each."""
        if not self.active:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        if not grads:
            return

        def mean(flat: torch.Tensor) -> None:
            dist.all_reduce(flat)
            flat.div_(self.world)

        _coalesced(grads, mean)

    def sum(self, tensors: list[torch.Tensor]) -> None:
        """Each tensor summed over replicas, in place (statistics of the global batch: a
        VQ-VAE's codebook counts)."""
        if self.active:
            _coalesced(tensors, dist.all_reduce)

    def any(self, flag: bool) -> bool:
        """Whether any replica says yes (a diverged loss): all must agree, or the others
        would wait for a collective that never comes."""
        return self.any_each(flag)[0]

    def any_each(self, *flags: bool) -> tuple[bool, ...]:
        """any() of several flags in one collective (a stop request, a save request). A CPU
        tensor: no device sync."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([int(f) for f in flags])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block (a download, a decoded-image cache) before the others do:
        they then find the files in place instead of writing the same ones at once."""
        if self.active and not self.is_main:
            self.any(False)  # a barrier through a CPU collective (gloo): rank 0 is done
        yield
        if self.active and self.is_main:
            self.any(False)

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses averaged over replicas (what gets logged: the global batch's numbers)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        device = values[keys[0]].device  # a family may log a CPU number beside GPU losses
        stacked = torch.stack([values[k].detach().float().reshape(()).to(device)
                               for k in keys])
        dist.all_reduce(stacked)
        stacked /= self.world
        return dict(zip(keys, stacked.unbind(), strict=True))

    def decorrelate_rng(self, seed: int, step: int) -> None:
        """Replicas start from the same seed (so the networks are initialised identically);
        from then on each draws its own noise, or every process would make the same fakes.
        Rank 0 keeps the single-process stream: one process trains exactly as without
        torchrun. Re-derived after a resume, whatever the world size was before."""
        if self.rank == 0:
            return
        torch.manual_seed(seed + 1_000_003 * self.rank + step)

    def device(self, device: torch.device) -> torch.device:
        """Each process takes the GPU of its local rank."""
        if not self.active or device.type != "cuda":
            return device
        if device.index is not None and device.index != local_rank():
            raise UserError(f"device=cuda:{device.index} under torchrun: every process takes "
                            "the GPU of its local rank; use device=cuda (or auto)")
        return torch.device("cuda", local_rank())


class ShardedBatches:
    """Rank r of W takes batches r, r + W, r + 2W, ... of the single-process sequence: each
    replica sees a distinct shard of every epoch, and the position saved by rank 0 is the
    global one, so a run resumes with any number of processes."""

    def __init__(self, batches, replicas: Replicas) -> None:
        self.inner = batches
        self.rank, self.world = replicas.rank, replicas.world
        self.batch_size = batches.batch_size
        self.batches_per_epoch = batches.batches_per_epoch // self.world
        if self.world > 1 and hasattr(batches, "prefetch"):
            batches.prefetch = False  # the batch after this replica's is another replica's

    def __iter__(self):
        return self

    def __next__(self):
        mine = None
        for i in range(self.world):  # the others' batches are drawn too: the RNG stays in step
            if i == self.rank:
                mine = next(self.inner)
            elif hasattr(self.inner, "skip"):  # drawn, not read
                self.inner.skip()
            else:  # two-domain batches draw their crops as they read
                next(self.inner)
        return mine

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


SYNC_BATCHNORM_NEEDS_CUDA = ("trainer.sync_batchnorm=true needs CUDA devices: torch's "
                             "SyncBatchNorm does not run on the CPU")


def check_sync_batchnorm(cfg) -> None:
    """Before the run starts: SyncBatchNorm with a device that is not (or cannot be) CUDA."""
    if cfg.trainer.sync_batchnorm and (not torch.cuda.is_available() or
                                       str(cfg.device).startswith(("cpu", "mps"))):
        raise UserError(SYNC_BATCHNORM_NEEDS_CUDA)


def sync_batchnorm(modules: dict[str, nn.Module], device: torch.device) -> None:
    """trainer.sync_batchnorm: BatchNorm statistics over the global batch (torch's
    SyncBatchNorm runs on GPUs only). State-dict keys stay the same."""
    if device.type != "cuda":
        raise UserError(SYNC_BATCHNORM_NEEDS_CUDA)
    for module in modules.values():
        # in place below the top level (a network is never a bare BatchNorm), and the new
        # layers take over the same Parameter objects: the optimizers need no rebuilding
        nn.SyncBatchNorm.convert_sync_batchnorm(module)
