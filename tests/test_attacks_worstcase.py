"""Evaluation as papers report it: the per-image worst case over several attacks
(`attack=[pgd,deepfool]`), AutoAttack's headline in robustness.json, and the test-time "failed
defences" (Gaussian input noise with the logits averaged over draws, an ensemble of
checkpoints) the attack command evaluates."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_bad_input, in_dir, read_events, run_in_process, train_in_process
from torch import nn

from ganlab.attacks import Ensemble, NoisyInput, deepfool, pgd
from ganlab.metrics.robustness import PerImage

pytestmark = pytest.mark.usefixtures("one_thread")

needs_torchattacks = pytest.mark.skipif(importlib.util.find_spec("torchattacks") is None,
                                        reason="needs torchattacks (the [attacks] extra)")

# a tiny LeNet on synthetic images; checkpoints at steps 2, 4 and 6 for the ensemble
TINY_LENET = [*TINY, "model=lenet", "model.channels=[4]", "model.hidden=[16]",
              "model.eval_steps=2", "trainer.max_steps=6", "dataset.n_samples=128",
              "log.sample_every=0", "eval.every=0"]
N = 16  # held-out images attacked


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("worstcase")
    train_in_process([*TINY_LENET, "hydra.run.dir=run"], root)
    return root / "run"


def _attack(run: Path, *args: str) -> dict:
    from ganlab import attack

    with in_dir(run.parent):
        attack.main([f"ckpt={run}", f"n_examples={N}", "show=2", *args])
    out = next(a.split("=", 1)[1] for a in args if a.startswith("out="))
    return json.loads((Path(out) / "robustness.json").read_text())


def _heldout(run: Path):
    import ganlab
    from ganlab.attack import heldout_images

    family = ganlab.load_checkpoint(run)
    with in_dir(run.parent):
        x, y, _ = heldout_images(family, None, torch.device("cpu"))
    return family.model, x[:N], y[:N]


# --- the worst case, by hand ------------------------------------------------------------------


def _per_image(correct: list[bool], l2: list[float]) -> PerImage:
    """Four images, all classified correctly when clean; `correct` after the attack."""
    y = torch.zeros(4, dtype=torch.long)
    adv_pred = torch.tensor([0 if c else 1 for c in correct])
    sizes = torch.tensor(l2, dtype=torch.float32)
    return PerImage(y, None, clean_pred=y.clone(), clean_loss=torch.zeros(4),
                    adv=torch.zeros(4, 1, 2, 2), adv_pred=adv_pred, linf=sizes / 2, l2=sizes,
                    l0=torch.ones(4))


def test_combine_is_the_per_image_or() -> None:
    from ganlab.attack import Result, combine

    budgeted = [Result(0.0, _per_image([True] * 4, [0, 0, 0, 0]), {}),
                Result(1.0, _per_image([False, True, True, False], [1, 0.2, 0, 0.9]), {})]
    # a minimal attack: found perturbations of L2 0.5 (image 1) and 2.0 (image 2)
    minimal = [Result(None, _per_image([True, False, False, True], [0, 0.5, 2.0, 0]), {})]
    rows = combine({"pgd": budgeted, "cw": minimal}, [0.0, 1.0], "2")
    zero, one = rows
    assert zero["accuracy"] == 1.0 and zero["components"] == {"pgd": 1.0, "cw": 1.0}
    # at 1.0: pgd breaks images 0 and 3, cw image 1 (0.5 <= 1; 2.0 is too large)
    assert one["components"] == {"pgd": 0.5, "cw": 0.75}
    assert one["accuracy"] == 0.25 and one["n_success"] == 3 and one["success_rate"] == 0.75
    # the smallest breaking perturbation per image: 1, 0.5, 0.9
    assert one["mean_l2_success"] == pytest.approx((1 + 0.5 + 0.9) / 3)
    assert one["median_l2_success"] == pytest.approx(0.9)
    assert one["by_attack"]["cw"]["only"] == 1 and one["by_attack"]["pgd"]["only"] == 2
    assert one["by_attack"]["cw"]["mean_l2_success"] == pytest.approx(0.5)


def test_worst_case_through_the_command(tiny_run, tmp_path, capsys) -> None:
    """Deterministic attacks (PGD L2 without a random start, DeepFool): the command's worst
    case equals the per-image OR of the two attacks run here by hand, and is at most each."""
    out = tmp_path / "wc"
    grid = [0.0, 0.5, 1.0, 2.0]
    report = _attack(tiny_run, "attack=[pgd,deepfool]", "attack.norm=2",
                     f"attack.eps=[{','.join(map(str, grid))}]", "attack.steps=5",
                     "attack.pgd.random_start=false", "attack.deepfool.steps=10", f"out={out}")
    assert report["attack"]["name"] == "pgd+deepfool" and report["attack"]["norm"] == "2"
    assert report["attack"]["attacks"]["pgd"]["steps"] == 5  # shared key
    assert report["attack"]["attacks"]["deepfool"]["steps"] == 10  # attack.deepfool.steps
    rows = report["results"]
    assert [r["eps"] for r in rows] == grid
    model, x, y = _heldout(tiny_run)
    fooled_df = deepfool(model, x, y, steps=10)
    with torch.no_grad():
        df_wrong = model(fooled_df).argmax(dim=1) != y
    df_size = (fooled_df - x).flatten(1).norm(dim=1)
    for row, eps in zip(rows, grid, strict=True):
        adv = pgd(model, x, y, eps, 2.5 * eps / 5, 5, random_start=False, norm="2")
        with torch.no_grad():
            pgd_wrong = model(adv).argmax(dim=1) != y
        either = pgd_wrong | (df_wrong & (df_size <= eps + 1e-6))
        assert row["accuracy"] == pytest.approx(1 - either.float().mean().item())
        assert row["components"]["pgd"] == pytest.approx(1 - pgd_wrong.float().mean().item())
        assert row["accuracy"] <= min(row["components"].values())
    assert rows[-1]["accuracy"] < rows[0]["accuracy"]  # the attacks do break images
    # each attack's own rows, as a single attack reports them
    assert len(report["attack_results"]["pgd"]) == len(grid)
    (df_row,) = report["attack_results"]["deepfool"]
    assert df_row["eps"] is None and "median_l2_success" in df_row
    assert (out / "robust_accuracy.png").is_file() and (out / "examples.png").is_file()
    printed = capsys.readouterr().out
    assert "worst case of pgd, deepfool (L2)" in printed and "worst case" in printed
    scalars = set(read_events(tiny_run / "tb").Tags()["scalars"])
    assert {"attack/pgd+deepfool/accuracy_eps_1", "attack/pgd+deepfool/pgd/accuracy_eps_1",
            "attack/pgd+deepfool/deepfool/accuracy_eps_1"} <= scalars


def test_worst_case_l_inf_is_at_most_each(tiny_run, tmp_path) -> None:
    report = _attack(tiny_run, "attack=[fgsm,pgd]", "attack.eps=[0.1,0.3]",
                     "attack.pgd.steps=3", f"out={tmp_path / 'linf'}")
    for row in report["results"]:
        assert row["accuracy"] <= min(row["components"].values())
        if row["n_success"]:
            assert row["mean_linf_success"] <= row["eps"] + 1e-6


@pytest.mark.parametrize(("args", "fragment"), [
    (["attack=[fgsm,cw]"], "mixes norms (fgsm is L-inf, cw is L2)"),
    (["attack=[pgd,deepfool]"], "mixes norms (pgd is L-inf, deepfool is L2)"),
    (["attack=[pgd,jsma]"], "jsma cannot be one of them"),
    (["attack=[pgd,pgd]"], "names an attack twice"),
    (["attack=[pgd,cw]", "attack.norm=2", "attack.gamma=0.1"], "none of the attacks pgd, cw"),
    (["attack=[pgd,fgsm]", "attack.pgd.eps=[0.1]"], "the attacks' eps lists differ"),
    (["attack=[pgd,fgsm]", "attack.targeted=true"], "pgd has attack.targeted=true"),
    (["attack=[pgd,fgsmm]"], "unknown attack 'fgsmm'"),
    (["test_time.noise=2"], "test_time.noise=2"),
    (["test_time.samples=0"], "test_time.samples=0"),
])
def test_bad_combinations_are_refused(tiny_run, tmp_path, args, fragment, capsys) -> None:
    out = tmp_path / "out"
    result = run_in_process(["attack", f"ckpt={tiny_run}", *args, f"out={out}"], capsys)
    assert_bad_input(result, fragment)
    assert not out.exists()


# --- the headline -----------------------------------------------------------------------------


@needs_torchattacks
def test_autoattack_is_the_headline(tiny_run, tmp_path) -> None:
    quick = ["attack.autoattack.steps=2", "attack.autoattack.n_queries=10",
             "attack.autoattack.n_target_classes=1"]
    report = _attack(tiny_run, "attack=[autoattack,pgd]", "attack.eps=[0.1,0.3]",
                     "attack.pgd.steps=3", *quick, f"out={tmp_path / 'aa'}")
    headline, last = report["headline"], report["results"][-1]
    assert headline["attack"] == "autoattack" and headline["eps"] == 0.3
    assert headline["accuracy"] == last["components"]["autoattack"]
    assert headline["worst_case_accuracy"] == last["accuracy"] <= headline["accuracy"]
    assert headline["worst_case_of"] == ["autoattack", "pgd"]
    assert set(last["by_attack"]["autoattack"]["components"]) == {"apgd-ce", "apgd-t", "fab-t",
                                                                  "square"}
    single = _attack(tiny_run, "attack=autoattack", *(q.replace(".autoattack", "") for q in quick),
                     f"out={tmp_path / 'aa1'}")
    assert single["headline"]["accuracy"] == single["results"][0]["accuracy"]
    plain = _attack(tiny_run, "attack=fgsm", "attack.eps=[0.3]", f"out={tmp_path / 'f'}")
    assert "headline" not in plain


# --- test-time defences -------------------------------------------------------------------------


def test_ensemble_logits_are_the_members_mean() -> None:
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for _ in range(3)]
    x = torch.rand(5, 1, 2, 2)
    expected = sum(m(x) for m in members) / 3
    assert torch.allclose(Ensemble(members)(x), expected, atol=1e-6)


def test_noisy_input_averages_draws_and_passes_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)

    def noisy(seed: int) -> NoisyInput:
        return NoisyInput(model, 0.3, 4, torch.Generator().manual_seed(seed))

    assert torch.equal(noisy(1)(x), noisy(1)(x)) and not torch.equal(noisy(1)(x), noisy(2)(x))
    # by hand: the same draws, model applied to each noisy copy, logits averaged
    noise = torch.randn((4, 5, 1, 2, 2), generator=torch.Generator().manual_seed(1))
    by_hand = torch.stack([model((x + 0.3 * n).clamp(0, 1)) for n in noise]).mean(dim=0)
    assert torch.allclose(noisy(1)(x), by_hand, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    noisy(1)(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0  # EOT: attacks see through it
    assert torch.allclose(NoisyInput(model, 0.0, 3)(x), model(x), atol=1e-6)


def test_test_time_noise_is_reproducible(tiny_run, tmp_path) -> None:
    args = ["attack=pgd", "attack.eps=[0,0.3]", "attack.steps=3", "test_time.noise=0.3",
            "test_time.samples=2"]
    first = _attack(tiny_run, *args, f"out={tmp_path / 'a'}")
    again = _attack(tiny_run, *args, f"out={tmp_path / 'b'}")
    assert first["test_time"] == {"noise": 0.3, "samples": 2}
    assert first["results"] == again["results"]
    events = read_events(tiny_run / "tb")  # its own tags, beside plain pgd's
    assert "attack/pgd_noise0.3x2/accuracy_eps_0.3" in events.Tags()["scalars"]


def test_ensemble_through_the_command(tiny_run, tmp_path) -> None:
    members = [tiny_run / "checkpoints" / "step_2.pt", tiny_run / "checkpoints" / "step_4.pt"]
    report = _attack(tiny_run, "attack=fgsm", "attack.eps=[0,0.2]",
                     f"test_time.ensemble=[{members[0]},{members[1]}]", f"out={tmp_path / 'e'}")
    assert report["test_time"]["ensemble_steps"] == [6, 2, 4]
    import ganlab

    models = [ganlab.load_checkpoint(p).model for p in (tiny_run, *members)]
    _, x, y = _heldout(tiny_run)
    with torch.no_grad():
        mean = torch.stack([m(x) for m in models]).mean(dim=0)
    assert report["clean_accuracy"] == pytest.approx((mean.argmax(dim=1) == y).float().mean())


def test_bad_ensemble_member(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    result = run_in_process(["attack", f"ckpt={tiny_run}", "attack=fgsm",
                             f"test_time.ensemble=[{tmp_path / 'nothing.pt'}]", f"out={out}"],
                            capsys)
    assert_bad_input(result, "does not exist")
    assert not out.exists()
