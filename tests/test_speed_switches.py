"""The speed switches that act on every network of a family: trainer.compile,
trainer.channels_last, trainer.sync_batchnorm. None of them may change what a checkpoint holds."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli
from torch import nn

from ganlab.distributed import sync_batchnorm
from ganlab.errors import UserError
from ganlab.runtime import speed_switches

pytestmark = pytest.mark.usefixtures("one_thread")


def switches(**kwargs):
    from omegaconf import OmegaConf

    from ganlab.config import TrainerConfig

    cfg = OmegaConf.structured(TrainerConfig())
    cfg.update(kwargs)
    return cfg


def conv_and_mlp():
    return {"D": nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 1)),
            "G": nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))}


def test_compile_leaves_a_network_with_a_double_backward_alone(caplog):
    nets = conv_and_mlp()
    keys = {name: list(net.state_dict()) for name, net in nets.items()}
    with caplog.at_level("INFO", logger="ganlab"):
        speed_switches(nets, switches(compile=True), torch.device("cpu"), {"D"})
    assert nets["G"]._compiled_call_impl is not None
    assert nets["D"]._compiled_call_impl is None
    assert {name: list(net.state_dict()) for name, net in nets.items()} == keys
    assert "D left uncompiled" in caplog.text and "G compiled" in caplog.text


def test_channels_last_converts_convolutional_networks_only():
    nets = conv_and_mlp()
    speed_switches(nets, switches(channels_last=True), torch.device("cpu"), set())
    assert nets["D"][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nets["D"][0].weight.is_contiguous()
    assert nets["G"][0].weight.is_contiguous()


def test_sync_batchnorm_swaps_the_layers_and_keeps_the_parameters():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    weight = net[1].weight
    keys = list(net.state_dict())
    sync_batchnorm({"G": net}, torch.device("cuda"))  # only checks the kind: nothing moves
    assert isinstance(net[1], nn.SyncBatchNorm)
    assert net[1].weight is weight  # the optimizer built before still steps it
    assert list(net.state_dict()) == keys


def test_sync_batchnorm_on_the_cpu_is_refused():
    with pytest.raises(UserError, match="needs CUDA devices"):
        sync_batchnorm({"G": nn.BatchNorm2d(2)}, torch.device("cpu"))


def test_a_compiled_run_trains_and_its_checkpoint_loads_without_compile(tmp_path):
    run = ["train", "dataset=ring", "model=mlp_gan", "trainer.max_steps=6", "log.every=3",
           "log.progress=false", "eval.every=0", "hydra.run.dir=run", "device=cpu"]
    result = run_cli([*run, "trainer.compile=true"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trainer.compile: G, D compiled" in (tmp_path / "run" / "train.log").read_text()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert not [k for k in state["family"]["G"] if "_orig_mod" in k]
    result = run_cli(["train", "resume=run", "trainer.max_steps=8", "trainer.compile=false"],
                     tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt",
                      weights_only=True)["step"] == 8
