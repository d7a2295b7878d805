"""Datasets larger than the device: streamed batches from host memory or a memory-mapped cache
are the batches the on-device path draws, in the same order, and resume exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_states_equal, train_in_process
from omegaconf import OmegaConf
from PIL import Image

from ganlab.data import build_dataset
from ganlab.data.base import DataSpec, InMemoryDataset, split_off_heldout
from ganlab.data.folder import FolderConfig
from ganlab.data.stream import StreamedDataset, place
from ganlab.distributed import ShardedBatches

CPU = torch.device("cpu")


def dataset(n: int = 50, mapped: bool = False) -> InMemoryDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    return InMemoryDataset(DataSpec("t", "image", (1, 4, 4), num_classes=10), x,
                           torch.arange(n) % 10, mapped=mapped)


def drain(batches, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(batches) for _ in range(k)]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb)
        assert (ya is None and yb is None) or torch.equal(ya, yb)


@pytest.mark.parametrize("prefetch", [True, False])
def test_streamed_batches_are_the_on_device_ones(prefetch: bool) -> None:
    data = dataset()
    on_device = data.batches(8, seed=3)
    streamed = StreamedDataset(data, CPU).batches(8, seed=3)
    streamed.prefetch = prefetch
    # 15 batches of 8 from 50 examples: three epochs (6 per epoch), across reshuffles
    assert_same(drain(on_device, 15), drain(streamed, 15))


def test_a_mapped_subset_streams_its_own_rows() -> None:
    """split_off_heldout keeps row numbers for mapped data; streaming reads those rows, and
    the in-memory copy (materialized) holds the same examples."""
    train = split_off_heldout(dataset(mapped=True))
    assert train.rows is not None and train.x.shape[0] == 50 and len(train) == 45
    in_memory = train.materialized()
    assert in_memory.rows is None and torch.equal(in_memory.x, train.x[train.rows])
    assert_same(drain(in_memory.batches(8, seed=1), 12),
                drain(StreamedDataset(train, CPU).batches(8, seed=1), 12))


def test_resume_continues_the_stream_exactly() -> None:
    data = StreamedDataset(dataset(), CPU)
    whole = drain(data.batches(8, seed=5), 14)
    first = data.batches(8, seed=5)
    drain(first, 9)  # a batch is being gathered ahead now: not yet trained on
    state = first.state_dict()
    resumed = data.batches(8, seed=99)
    resumed.load_state_dict(state)
    assert_same(whole[9:], drain(resumed, 5))
    # and a state saved by the on-device path resumes a streamed run the same way
    on_device = dataset().batches(8, seed=5)
    drain(on_device, 9)
    crossed = data.batches(8, seed=0)
    crossed.load_state_dict(on_device.state_dict())
    assert_same(whole[9:], drain(crossed, 5))


class TwoReplicas:
    def __init__(self, rank: int) -> None:
        self.rank, self.world = rank, 2


def test_sharded_streams_skip_the_other_replicas_batches() -> None:
    data = dataset()
    for rank in (0, 1):
        expected = drain(ShardedBatches(data.batches(4, seed=2), TwoReplicas(rank)), 7)
        streamed = StreamedDataset(data, CPU).batches(4, seed=2)
        sharded = ShardedBatches(streamed, TwoReplicas(rank))
        assert streamed.prefetch is False  # the next batch would be the other replica's
        assert_same(expected, drain(sharded, 7))


def test_place_follows_the_budget(caplog) -> None:
    caplog.set_level("INFO", logger="ganlab")
    data = dataset()
    assert isinstance(place(data, CPU, max_device_bytes=data.nbytes), InMemoryDataset)
    streamed = place(data, CPU, max_device_bytes=data.nbytes - 1)
    assert isinstance(streamed, StreamedDataset) and len(streamed) == 50
    assert "streamed from host memory" in caplog.text
    assert isinstance(place(data, CPU, max_device_bytes=None), InMemoryDataset)  # 800 bytes


def write_folder(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i:03d}.png")


def test_a_cached_folder_is_memory_mapped_and_streamed_alike(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs", 40)
    cfg = OmegaConf.structured(FolderConfig(path=str(tmp_path / "imgs"), image_size=8))
    data = build_dataset(cfg, tmp_path / "data", seed=0, heldout=True, mapped=True)
    assert data.mapped and data.rows is not None and len(data) == 36  # 4 held out, lazily
    assert not data.heldout.mapped and len(data.heldout) == 4  # the held-out copy is in memory
    in_memory = build_dataset(cfg, tmp_path / "data", seed=0, heldout=True)
    assert not in_memory.mapped and torch.equal(in_memory.x, data.x[data.rows])
    assert_same(drain(in_memory.batches(8, seed=0), 9),
                drain(StreamedDataset(data, CPU).batches(8, seed=0), 9))


RUN = [*TINY, "model=dcgan", "model.g_features=8", "model.d_features=8", "eval.every=0",
       "trainer.max_steps=6", "trainer.ckpt_every=3", "trainer.keep_last=2"]


def test_a_streamed_run_trains_and_resumes_as_the_on_device_run(tmp_path: Path) -> None:
    train_in_process([*RUN, "hydra.run.dir=device"], tmp_path)
    train_in_process([*RUN, "data.max_device_bytes=0", "hydra.run.dir=streamed"], tmp_path)
    last = {run: torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=False)
            for run in ("device", "streamed")}
    assert_states_equal(last["device"]["family"], last["streamed"]["family"])
    assert "streamed from host memory" in (tmp_path / "streamed" / "train.log").read_text()
    # stopped at step 3 and resumed, streaming: the same end as the uninterrupted runs
    train_in_process([*RUN, "data.max_device_bytes=0", "trainer.max_steps=3",
                      "hydra.run.dir=halves"], tmp_path)
    train_in_process([*RUN, "data.max_device_bytes=0", "resume=auto", "hydra.run.dir=halves"],
                     tmp_path)
    resumed = torch.load(tmp_path / "halves" / "checkpoints" / "last.pt", weights_only=False)
    assert resumed["step"] == 6
    assert_states_equal(last["streamed"]["family"], resumed["family"])
