"""torchrun: two CPU processes with gloo train one run; sharding and gradient averaging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import assert_bad_input, run_cli, run_in_process
from torch import nn

from ganlab.amp import Amp
from ganlab.data.base import Batches, DataSpec, InMemoryDataset
from ganlab.distributed import Replicas, ShardedBatches

pytestmark = pytest.mark.usefixtures("one_thread")

# a DCGAN (BatchNorm in G) under WGAN-GP: the gradient penalty's double backward, a generator
# used for 5 critic steps, BatchNorm buffers: everything a replica could drift on
DDP_RUN = ["dataset=synthetic", "dataset.n_samples=128", "trainer.batch_size=8",
           "model=dcgan", "model.g_features=8", "model.d_features=8", "model.latent_dim=16",
           "loss=wgan_gp", "model.d_steps=2", "trainer.max_steps=6", "trainer.ckpt_every=3",
           "log.every=2", "log.sample_every=0", "eval.every=0", "log.progress=false",
           "eval.classifier_metrics=false", "device=cpu"]

# runs the real CLI in each process; afterwards every process writes its networks' state, so
# the test can compare the replicas (only rank 0 writes anything in ganlab itself)
HARNESS = """
import sys
import torch
import torch.distributed as dist
from ganlab import loop

run, out = loop.Loop.run, sys.argv[1]  # ganlab's train command replaces sys.argv

def run_and_dump(self, resume=None):
    result = run(self, resume)
    nets = {name: {k: v.clone() for k, v in net.state_dict().items()}
            for name, net in self.family.networks().items()}
    torch.save(nets, f"{out}/rank{dist.get_rank()}.pt")
    return result

loop.Loop.run = run_and_dump
from ganlab.__main__ import main
main(["train", *sys.argv[2:]])
"""


def torchrun(script: Path, args: list[str], cwd: Path, nproc: int = 2):
    env = {**os.environ, "GANLAB_DATA": str(cwd / "data"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(script), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process gloo run of DDP_RUN: (working dir, dump dir, completed process)."""
    cwd = tmp_path_factory.mktemp("ddp")
    script = cwd / "harness.py"
    script.write_text(HARNESS)
    dumps = cwd / "dumps"
    dumps.mkdir()
    result = torchrun(script, [str(dumps), *DDP_RUN], cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd, dumps, result


def test_two_processes_hold_identical_networks(ddp_run):
    _, dumps, _ = ddp_run
    ranks = [torch.load(dumps / f"rank{r}.pt") for r in (0, 1)]
    for name in ("G", "D"):
        for key, value in ranks[0][name].items():
            if "running_" in key or "num_batches" in key:
                continue  # BatchNorm statistics: each replica's last forward, rank 0's saved
            assert torch.equal(value, ranks[1][name][key]), (name, key)


def test_two_processes_write_one_run_dir(ddp_run):
    cwd, dumps, _ = ddp_run
    run_dirs = [p for p in (cwd / "outputs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    log = (run_dir / "train.log").read_text()
    assert "torchrun: 2 processes, batch 8 each (16 in all)" in log
    assert log.count("done: 6 steps") == 1  # rank 1 wrote nothing into it
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 6 and saved["world_size"] == 2
    rank0 = torch.load(dumps / "rank0.pt")
    for key, value in saved["family"]["G"].items():
        assert torch.equal(value, rank0["G"][key]), key
    written = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert {"last.pt", "step_3.pt", "step_6.pt"} <= written


def test_a_two_process_run_resumes_in_one(ddp_run):
    cwd, _, _ = ddp_run
    (run_dir,) = [p for p in (cwd / "outputs").glob("*/*") if p.is_dir()]
    result = run_cli(["train", f"resume={run_dir}", "trainer.max_steps=8"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "at step 6 (trained by 2 processes, continued by 1)" in log
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 8 and saved["world_size"] == 1


def test_a_sweep_under_torchrun_is_refused(tmp_path, monkeypatch, capsys):
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)  # as torchrun starts it: refused before joining a group
    result = run_in_process(["train", "-m", "dataset=ring", "model=mlp_gan",
                             "loss=nonsaturating,lsgan"], capsys, tmp_path)
    assert_bad_input(result, "a sweep (-m) cannot run under torchrun")


# --- the pieces, in one process ---------------------------------------------------------


def fake_replicas(rank: int, world: int) -> Replicas:
    replicas = Replicas()
    replicas.rank, replicas.world = rank, world
    return replicas


def batches(n: int = 40, batch_size: int = 4) -> Batches:
    data = InMemoryDataset(DataSpec("t", "image", (1, 1, 1)),
                           torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1))
    return Batches(data, batch_size, seed=3)


def seen(source, steps: int) -> list[list[int]]:
    return [next(source)[0].flatten().tolist() for _ in range(steps)]


def test_each_rank_takes_its_own_shard_of_the_single_process_sequence():
    single = seen(batches(), 10)  # one epoch: 10 batches of 4
    rank0 = seen(ShardedBatches(batches(), fake_replicas(0, 2)), 5)
    rank1 = seen(ShardedBatches(batches(), fake_replicas(1, 2)), 5)
    assert rank0 == single[0::2] and rank1 == single[1::2]
    flat0, flat1 = [i for b in rank0 for i in b], [i for b in rank1 for i in b]
    assert not set(flat0) & set(flat1)
    assert sorted(flat0 + flat1) == list(range(40))  # the epoch, split in two
    assert ShardedBatches(batches(), fake_replicas(0, 2)).batches_per_epoch == 5


def test_the_data_position_is_global_so_another_world_size_continues_it():
    two = ShardedBatches(batches(), fake_replicas(0, 2))
    seen(two, 3)  # 3 steps of 2 processes: 6 batches of the sequence
    one = batches()
    one.load_state_dict(two.state_dict())
    assert seen(one, 4) == seen(batches(), 10)[6:10]


def test_gradients_are_averaged_once_per_step_even_when_read_first(monkeypatch):
    """Replica 0 of two, the other's gradient played by a stand-in all_reduce: the step applies
    the mean of the two gradients (a sum would apply twice that), and reduces them once per
    step although the grad norm reads them before the step."""
    from ganlab import distributed

    net = nn.Linear(2, 1)
    # the other replica's gradients, flattened as ganlab coalesces them (weight, then bias)
    other = {"weight": torch.tensor([[1.0, -3.0]]), "bias": torch.tensor([5.0])}
    reduced = []

    def all_reduce(flat, op=dist.ReduceOp.SUM, **kwargs):  # what gloo does, for two replicas
        reduced.append(op)
        flat.add_(torch.cat([other["weight"].flatten(), other["bias"]]))
        if op == dist.ReduceOp.AVG:
            flat.div_(2)
        else:
            assert op == dist.ReduceOp.SUM, op

    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    amp = Amp("32", "cpu", replicas=fake_replicas(0, 2))
    for step in range(2):
        before = {k: p.detach().clone() for k, p in net.named_parameters()}
        opt.zero_grad()
        amp.backward(net(torch.full((1, 2), 2.0)).sum())  # own: weight [2, 2], bias 1
        mean = {k: (p.grad + other[k]) / 2 for k, p in net.named_parameters()}
        amp.unscale(opt)  # a grad norm reads the averaged gradient
        for k, p in net.named_parameters():
            assert torch.equal(p.grad, mean[k]), (step, k, p.grad, mean[k])
        amp.step(opt)
        for k, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), before[k] - 0.1 * mean[k])
        assert len(reduced) == step + 1  # once per step


def test_a_single_process_averages_nothing_and_broadcasts_nothing():
    replicas = Replicas()
    assert (replicas.world, replicas.rank, replicas.active) == (1, 0, False)
    net = nn.Linear(2, 1)
    before = net.weight.detach().clone()
    replicas.broadcast([net])
    assert torch.equal(net.weight, before)
    assert replicas.any(True) and not replicas.any(False)
    losses = {"loss/G": torch.tensor(1.5)}
    assert replicas.mean(losses) is losses


@pytest.mark.parametrize("rank, expected", [(0, ["block", "barrier"]), (1, ["barrier", "block"])])
def test_rank_0_prepares_the_data_before_the_others(rank, expected, monkeypatch):
    """The others wait at a barrier until rank 0 has downloaded and cached; rank 0 meets
    them there after its block, so each collective is matched."""
    events = []
    replicas = fake_replicas(rank, 2)
    monkeypatch.setattr(replicas, "any", lambda flag: events.append("barrier"))
    with replicas.main_first():
        events.append("block")
    assert events == expected
