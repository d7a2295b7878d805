"""`attack ckpt=<file>.pt2 dataset=NAME`: a classifier from outside ganlab, as a torch.export
program, gets the same attack and the same numbers as the ganlab run it was exported from;
bad combinations are refused in one line with nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_bad_input, in_dir, train_in_process
from torch import nn

from ganlab import __main__
from ganlab.attacks.exported import ExportedClassifier

DATA = ["dataset=synthetic", "dataset.n_samples=80"]
TINY_LENET = [*DATA, "model=lenet", "model.channels=[2,4]", "model.hidden=[8]",
              "model.eval_steps=2", "trainer.batch_size=16", "trainer.max_steps=6",
              "log.progress=false", "device=cpu", "eval.every=0"]
ATTACK = ["attack=pgd", "attack.eps=[0.1]", "attack.steps=5", "n_examples=8", "show=2"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny LeNet run and its network exported as a .pt2 file."""
    root = tmp_path_factory.mktemp("exported")
    train_in_process([*TINY_LENET, f"hydra.run.dir={root / 'run'}"], root)
    with in_dir(root):
        __main__.main(["export", f"ckpt={root / 'run'}", f"out={root / 'lenet.pt2'}"])
    return root


def _attack(root, *args: str) -> dict:
    with in_dir(root):
        __main__.main(["attack", *ATTACK, *args])
    out = next(a.split("=", 1)[1] for a in args if a.startswith("out="))
    return json.loads((root / out / "robustness.json").read_text())


def _refused(root, capsys, *args: str):
    import subprocess

    capsys.readouterr()
    with in_dir(root), pytest.raises(SystemExit) as exit_info:
        __main__.main(["attack", *ATTACK, *args])
    _, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_info.value.code, "", err)


def test_an_exported_classifier_is_attacked_like_its_run(exported):
    native = _attack(exported, f"ckpt={exported / 'run'}", "out=native")
    program = _attack(exported, f"ckpt={exported / 'lenet.pt2'}", *DATA, "out=program")
    assert program["model"] == "exported program lenet.pt2" and program["defense"] is None
    assert program["heldout_data"] == native["heldout_data"]
    for key in ("clean_accuracy", "accuracy", "success_rate", "mean_l2"):
        assert program["results"][0][key] == pytest.approx(native["results"][0][key], abs=1e-5)
    assert (exported / "program" / "examples.png").is_file()


def test_the_wrapper_keeps_the_attack_rules_possible():
    """torch refuses eval() on an exported graph; the wrapper takes the flag and exposes the
    parameters (the attacks clear their gradients)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    program = torch.export.export(net, (torch.rand(2, 1, 2, 2),)).module()
    wrapped = ExportedClassifier(program)
    wrapped.eval()
    assert not wrapped.training
    assert len(list(wrapped.parameters())) == 2


@pytest.mark.parametrize(("args", "fragment"), [
    (["ckpt=lenet.pt2"], "name the data it classifies with dataset=<name>"),
    (["ckpt=run", *DATA], "dataset= names the data of an exported classifier"),
    (["ckpt=missing.pt2", *DATA], "ckpt=missing.pt2: no such file"),
    (["ckpt=three.pt2", *DATA], "returns (2, 3) for 2 images"),
    (["ckpt=lenet.pt2", "dataset=synthetic", "dataset.image_size=32"], "does not take"),
])
def test_bad_combinations_are_refused(exported, capsys, args, fragment):
    if "ckpt=three.pt2" in args and not (exported / "three.pt2").exists():
        three = nn.Sequential(nn.Flatten(), nn.Linear(784, 3)).eval()
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(three, (torch.rand(2, 1, 28, 28),),
                                      dynamic_shapes=({0: batch},))
        torch.export.save(program, exported / "three.pt2")
    result = _refused(exported, capsys, *args, "out=refused")
    assert_bad_input(result, fragment)
    assert not (exported / "refused").exists()
