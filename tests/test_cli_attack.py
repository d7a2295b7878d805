"""End to end: classifiers trained with each defence, and the `attack` command on a trained
model, through the real CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_bad_input, job_dirs, read_events, run_cli, run_in_process

# a tiny LeNet on synthetic images: every defence, a few steps
TINY_LENET = [*TINY, "model=lenet", "model.channels=[4]", "model.hidden=[16]",
              "model.eval_steps=2"]
# real digits (the bundled 5,000; 500 of them held out), enough steps for a softmax to learn
DIGITS = ["dataset=mnist", "dataset.source=bundled", "trainer.batch_size=64", "log.every=50",
          "log.sample_every=0", "eval.every=0", "log.progress=false", "device=cpu",
          "model=softmax", "trainer.max_steps=150"]


DEFENCES = ["none", "fgsm", "pgd", "mixup", "gradreg"]


@pytest.fixture(scope="module")
def defence_sweep(tmp_path_factory) -> dict[str, Path]:
    """Every defence on the same tiny LeNet, data and seed, in one sweep (job i: DEFENCES[i]):
    defence -> run dir."""
    root = tmp_path_factory.mktemp("defences")
    result = run_cli(["train", "-m", *TINY_LENET, f"defense={','.join(DEFENCES)}",
                      f"hydra.sweep.dir={root / 'sweep'}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(zip(DEFENCES, job_dirs(root / "sweep"), strict=True))


@pytest.mark.parametrize("defense", DEFENCES)
def test_every_defence_trains_and_logs_heldout_accuracy(defence_sweep, defense):
    run = defence_sweep[defense]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["accuracy_fgsm_0.3"] <= 1 and 0 <= metrics["accuracy"] <= 1
    assert "kept out of training" in metrics["heldout_data"]
    events = read_events(run / "tb")
    scalars = set(events.Tags()["scalars"])
    assert {"loss/train", "eval/accuracy", "eval/accuracy_fgsm_0.3"} <= scalars, scalars
    assert ("accuracy/train_adversarial" in scalars) == (defense in ("fgsm", "pgd"))
    assert ("loss/grad_penalty" in scalars) == (defense == "gradreg")
    # mixup's inputs are blends, Madry's PGD trains on adversarial examples only: no clean
    # accuracy to report
    assert ("accuracy/train" in scalars) == (defense not in ("mixup", "pgd"))
    assert [e.step for e in events.Images("adversarial_examples")] == [0, 2, 4]
    assert (run / "samples" / "step_4_adversarial_examples.png").is_file()


def test_every_defence_trains_on_its_own_objective(defence_sweep):
    """Step 1 sees the same LeNet and batch in every run, and logs the loss before the update:
    each defence's loss follows from the clean cross-entropy (defense=none's)."""
    first = {}
    for defense, run in defence_sweep.items():
        events = read_events(run / "tb")
        first[defense] = {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]}
    clean = first["none"]["loss/train"]
    assert first["fgsm"]["accuracy/train"] == first["none"]["accuracy/train"]  # same logits
    # Goodfellow's mix, half clean and half at the FGSM point, which costs more than the clean
    adversarial = 2 * first["fgsm"]["loss/train"] - clean
    assert adversarial > clean + 0.01, (adversarial, clean)
    assert first["pgd"]["loss/train"] > clean + 0.01  # Madry's: the PGD point's loss only
    # J + 10 * the mean squared input-gradient norm
    penalty = first["gradreg"]["loss/grad_penalty"]
    assert penalty > 0
    assert first["gradreg"]["loss/train"] == pytest.approx(clean + 10 * penalty, abs=1e-4)
    assert abs(first["mixup"]["loss/train"] - clean) > 1e-4  # blended inputs and targets


@pytest.mark.parametrize(("args", "fragment"), [
    (["model=lenet", "loss=wgan_gp"],
     "loss= applies to model=biggan,cgan,dcgan,gan3d,mlp_gan,progan, not to model=lenet"),
    (["model=dcgan", "defense=fgsm"], "defense= applies to model=lenet,mlp,softmax"),
    (["model=lenet", "dataset=ring"], "classifies images"),
    (["model=lenet", "defense=pgdd"], "unknown defense 'pgdd'"),
    (["model=lenet", "defense=fgsm", "defense.eps=-0.1"], "defense.eps=-0.1 is outside"),
    (["model=lenet", "defense=mixup", "defense.eps=0.1"], "defense.eps"),
])
def test_bad_classifier_configs(workdir, args, fragment, capsys):
    command = ["train", *TINY, *args, "hydra.run.dir=run"]
    # the preflight refuses most in-process; dataset=ring only when the run starts
    result = run_in_process(command, capsys, workdir) or run_cli(command, workdir)
    assert_bad_input(result, fragment)
    assert not (workdir / "run" / "checkpoints").exists()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A softmax classifier trained on real digits: accuracy well above chance."""
    root = tmp_path_factory.mktemp("digits")
    result = run_cli(["train", *DIGITS, "hydra.run.dir=run"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def _attack(run: Path, *args: str):
    return run_cli(["attack", f"ckpt={run}", "n_examples=300", "show=4", *args], run.parent)


def test_fgsm_robustness_falls_with_eps(digits_run):
    result = _attack(digits_run, "attack.eps=[0,0.05,0.1,0.2]")
    assert result.returncode == 0, result.stderr[-3000:]
    out = digits_run / "attack_fgsm"
    report = json.loads((out / "robustness.json").read_text())
    assert report["model"] == "softmax" and report["defense"] == "none"
    assert report["n_examples"] == 300 and "kept out of training" in report["heldout_data"]
    assert report["clean_accuracy"] > 0.7  # it learned the digits
    rows = report["results"]
    assert [r["eps"] for r in rows] == [0, 0.05, 0.1, 0.2]
    accuracy = [r["accuracy"] for r in rows]
    assert accuracy[0] == report["clean_accuracy"] and rows[0]["success_rate"] == 0
    assert all(a >= b for a, b in itertools.pairwise(accuracy)), accuracy
    assert accuracy[-1] < accuracy[0] - 0.3, accuracy
    for r in rows:
        assert r["mean_linf"] <= r["eps"] + 1e-6 and r["mean_l2"] >= r["mean_linf"]
    assert rows[-1]["success_rate"] > rows[1]["success_rate"]
    assert (out / "robust_accuracy.png").is_file() and (out / "examples.png").is_file()
    events = read_events(digits_run / "tb")
    assert "attack/fgsm/accuracy_eps_0.1" in events.Tags()["scalars"]
    assert {"attack/fgsm/robust_accuracy", "attack/fgsm/examples"} <= set(events.Tags()["images"])
    assert "accuracy 0." in result.stdout and "wrote" in result.stdout


def test_targeted_pgd_hits_least_likely_class(digits_run, tmp_path):
    result = _attack(digits_run, "attack=pgd", "attack.targeted=true",
                     "attack.target=least_likely", "attack.steps=10", "attack.eps=[0,0.3]",
                     f"out={tmp_path / 'pgd'}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "pgd" / "robustness.json").read_text())
    assert report["attack"]["targeted"] is True
    no_attack, strong = report["results"]
    assert no_attack["success_rate"] < 0.05 < 0.5 < strong["success_rate"]


def test_transfer_and_substitute(digits_run, tmp_path):
    source = tmp_path / "source"
    trained = run_cli(["train", *DIGITS, "model=mlp", "model.hidden=[64]",
                       f"hydra.run.dir={source}"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = _attack(digits_run, "attack=transfer", f"attack.source_ckpt={source}",
                     "attack.eps=[0,0.3]")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((digits_run / "attack_transfer" / "robustness.json").read_text())
    assert report["source_checkpoint"].startswith(str(source))
    clean, strong = report["results"]
    assert strong["accuracy"] < clean["accuracy"] and strong["source_accuracy"] < 0.2

    result = _attack(digits_run, "attack=substitute", "attack.seed_size=40", "attack.rounds=2",
                     "attack.epochs=3", "attack.architecture=mlp", "attack.hidden=[32]",
                     "attack.eps=[0.3]")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((digits_run / "attack_substitute" / "robustness.json").read_text())
    assert report["oracle_queries"] == 80 and report["substitute_training_set"] == 80
    assert report["n_examples"] == 300  # the 40 seed images are not among them
    (row,) = report["results"]
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["source_clean_accuracy"] <= 1


def test_attack_bad_input(digits_run, tmp_path, capsys):
    gan = tmp_path / "gan"
    assert run_cli(["train", *TINY, f"hydra.run.dir={gan}"], tmp_path).returncode == 0
    out = tmp_path / "out"
    cases = [
        (["attack=fgsmm"], "unknown attack 'fgsmm'"),
        (["attack.eps=[0.1,-0.1]"], "attack.eps values must be in [0, 1]"),
        (["attack.target=3"], "needs attack.targeted=true"),
        (["attack.targeted=true", "attack.target=most_likely"], "unknown attack.target"),
        (["attack.epz=0.1"], "epz"),
        (["attack=transfer"], "source_ckpt"),
        (["attack=substitute", "attack.seed_size=500"], "leaves no held-out image"),
    ]
    for args, fragment in cases:  # in-process: the same code and output as the CLI's
        result = run_in_process(["attack", f"ckpt={digits_run}", "n_examples=300", "show=4",
                                *args, f"out={out}"], capsys)
        assert_bad_input(result, fragment)
    assert_bad_input(run_in_process(["attack", f"ckpt={gan}", f"out={out}"], capsys),
                     "holds a gan model (dcgan), not a classifier")
    assert_bad_input(run_in_process(["attack", f"ckpt={tmp_path / 'nothing'}"], capsys),
                     "does not exist")
    assert not out.exists()  # nothing written by any of them


def test_python_api_and_sample_refusal(digits_run, capsys):
    import ganlab
    from ganlab.attacks import fgsm

    clf = ganlab.load_checkpoint(digits_run)
    assert not clf.model.training
    x = torch.rand(4, 1, 28, 28)
    adv = fgsm(clf.model, x, torch.zeros(4, dtype=torch.long), eps=0.1)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.1 + 1e-6
    result = run_in_process(["sample", f"ckpt={digits_run}", "out=x.png"], capsys,
                            digits_run.parent)
    assert_bad_input(result, "sample: this model does not draw samples", "holds a classifier model")
