"""DeepDream: gradient ascent raises the chosen layer's activations and keeps the image in
[0, 1], on a ganlab classifier and on a torchvision network from a weights file; unknown
layers and missing weights are one error line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, in_dir, train_in_process
from PIL import Image

from ganlab import __main__
from ganlab.dream import DreamConfig, dream, find_layer, start_image
from ganlab.errors import UserError


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("dream")
    train_in_process([*TINY, "model=lenet", "model.channels=[4,8]", "model.hidden=[16]",
                      "eval.every=0", "hydra.run.dir=run"], home)
    return home


def objective_change(out: str) -> tuple[float, float]:
    before, after = re.search(r"activation (\S+) -> (\S+)$", out.strip()).groups()
    return float(before), float(after)


def test_dreaming_on_a_classifier_raises_its_layer(lenet_run: Path, capsys) -> None:
    with in_dir(lenet_run):
        __main__.main(["dream", "ckpt=run", "layer=3", "out=dream.png", "octaves=2",
                       "steps=5", "step_size=0.05"])
    before, after = objective_change(capsys.readouterr().out)
    assert after > 1.5 * before
    picture = np.asarray(Image.open(lenet_run / "dream.png"))
    assert picture.shape[:2] == (28, 28)


def test_the_image_stays_in_range_and_the_objective_rises_from_an_input(tmp_path) -> None:
    from torch import nn

    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()).requires_grad_(False)
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    cfg = DreamConfig(input=str(tmp_path / "grey.png"), octaves=3, steps=4, step_size=0.05)
    image = start_image(cfg, 3, 224)
    assert image.shape == (1, 3, 40, 30)
    dreamed, before, after = dream(network, find_layer(network, "2"), image, cfg,
                                   torch.device("cpu"))
    assert dreamed.shape == (1, 3, 40, 30) and after > before
    assert float(dreamed.min()) >= 0 and float(dreamed.max()) <= 1


def test_an_unknown_layer_lists_the_layers(lenet_run: Path, capsys) -> None:
    with in_dir(lenet_run), pytest.raises(SystemExit) as stop:
        __main__.main(["dream", "ckpt=run", "layer=conv9"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dream: no layer 'conv9'; the layers are: ")
    assert "1 (Conv2d)" in err and len(err.splitlines()) == 1


def test_torchvision_weights_must_be_on_disk(tmp_path: Path, monkeypatch) -> None:
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"place resnet18-f37072fd\.pth \(from https://"):
        from ganlab.pretrained import torchvision_network

        torchvision_network("resnet18", None, "dream")
    # a weights file given by hand is used (random weights: the test needs no download)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    network, channels, side = torchvision_network("resnet18", str(tmp_path / "r18.pth"), "dream")
    assert channels == 3 and side == 224
    cfg = DreamConfig(size=48, octaves=2, steps=2, step_size=0.05)
    _, before, after = dream(network.requires_grad_(False).eval(),
                             find_layer(network, "network.layer2"), start_image(cfg, 3, side),
                             cfg, torch.device("cpu"))
    assert after > before
