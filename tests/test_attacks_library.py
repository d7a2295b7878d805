"""The attacks beyond FGSM/PGD L-inf: PGD L2, C&W L2, JSMA, DeepFool, L-BFGS (written here),
APGD and AutoAttack (torchattacks, wrapped): each succeeds on a small trained model, keeps the
attack rules (eval mode, no parameter gradients, untouched input, [0, 1], batch independence
where the attack is deterministic), and the `attack` command runs them and refuses bad input."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_bad_input, in_dir, run_in_process, train_in_process
from torch import nn

from ganlab.attacks import (
    apgd,
    autoattack,
    autoattack_components,
    cw_l2,
    deepfool,
    jsma,
    lbfgs,
    library_rules,
    pgd,
    worst_case,
)
from ganlab.attacks.library import AUTOATTACK_COMPONENTS

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE, CLASSES = (1, 10, 10), 10
HAS_TORCHATTACKS = importlib.util.find_spec("torchattacks") is not None  # the [attacks] extra
# APGD and AutoAttack wrap torchattacks; the attacks written here are tested without it
needs_torchattacks = pytest.mark.skipif(not HAS_TORCHATTACKS,
                                        reason="needs torchattacks (the [attacks] extra)")
LIBRARY = ("apgd_ce", "apgd_dlr_l2", "autoattack")


def test_ci_installs_torchattacks() -> None:
    if os.environ.get("CI") and not HAS_TORCHATTACKS:
        pytest.fail("CI installs the [attacks] extra (torchattacks); it is missing")


def _digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of one fixed random prototype image per class."""
    protos = torch.rand(CLASSES, *SHAPE, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return (protos[y] + 0.25 * torch.randn(n, *SHAPE, generator=g)).clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP fitted in 150 Adam steps (well under a second), and 24 held-out images it
    classifies correctly."""
    torch.manual_seed(0)
    x, y = _digits(2000, seed=1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        idx = torch.randint(0, len(x), (128,))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    xt, yt = _digits(64, seed=2)
    with torch.no_grad():
        right = model(xt).argmax(dim=1) == yt
    assert right.float().mean() > 0.95
    return model, xt[right][:24], yt[right][:24]


def _targets(y: torch.Tensor) -> torch.Tensor:
    return (y + 3) % CLASSES


# name -> (model, x, y) -> adversarial x; targeted ones aim at _targets(y). Settings kept small.
ATTACKS = {
    "pgd_l2": lambda m, x, y: pgd(m, x, y, 2.0, 0.25, 15, random_start=False, norm="2"),
    "pgd_l2_random": lambda m, x, y: pgd(m, x, y, 2.0, 0.25, 15, norm="2",
                                         generator=torch.Generator().manual_seed(0)),
    "cw": lambda m, x, y: cw_l2(m, x, y, c=1.0, search_steps=4, steps=50, lr=0.05),
    "cw_targeted": lambda m, x, y: cw_l2(m, x, _targets(y), targeted=True, c=1.0, lr=0.05,
                                         search_steps=4, steps=50),
    "jsma": lambda m, x, y: jsma(m, x, _targets(y), gamma=0.4),
    "deepfool": deepfool,
    "lbfgs": lambda m, x, y: lbfgs(m, x, _targets(y), c=1.0, search_steps=2, steps=20),
    "apgd_ce": lambda m, x, y: apgd(m, x, y, 0.3, steps=10),
    "apgd_dlr_l2": lambda m, x, y: apgd(m, x, y, 2.5, norm="2", loss="dlr", steps=10),
    "autoattack": lambda m, x, y: autoattack(m, x, y, 0.3, steps=5, n_queries=50,
                                             n_target_classes=2),
}
TARGETED = ("cw_targeted", "jsma", "lbfgs")
DETERMINISTIC = ("pgd_l2", "cw", "cw_targeted", "jsma", "deepfool", "lbfgs")


def each_attack() -> list:
    return [pytest.param(name, marks=needs_torchattacks) if name in LIBRARY else name
            for name in ATTACKS]


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


# --- success on a trained model -------------------------------------------------------------


@pytest.mark.parametrize("name", each_attack())
def test_attack_succeeds_and_stays_in_the_box(trained, name: str) -> None:
    model, x, y = trained
    adv = ATTACKS[name](model, x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    pred = _predict(model, adv)
    if name in TARGETED:  # targeted variants land on the target
        assert (pred == _targets(y)).float().mean() >= 0.9, name
    else:
        assert (pred != y).float().mean() >= 0.9, name


def test_pgd_l2_stays_in_the_l2_ball(trained) -> None:
    model, x, y = trained
    for eps in (0.5, 2.0):
        adv = pgd(model, x, y, eps, eps / 4, 8, norm="2",
                  generator=torch.Generator().manual_seed(1))
        assert (adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-4
    with pytest.raises(ValueError, match="norm"):
        pgd(model, x, y, 0.1, 0.01, 2, norm="1")


def test_jsma_changes_at_most_gamma_of_the_pixels(trained) -> None:
    model, x, y = trained
    for gamma in (0.1, 0.4):
        adv = jsma(model, x, _targets(y), gamma=gamma)
        changed = (adv != x).flatten(1).float().mean(dim=1)
        assert changed.max() <= gamma
        assert changed.min() > 0  # every image moved
        assert ((adv == x) | (adv == 1)).all()  # theta = +1: changed pixels go to white


def test_cw_l2_is_below_pgd_l2_at_equal_success(trained) -> None:
    model, x, y = trained
    adv = ATTACKS["cw"](model, x, y)
    cw_success = _predict(model, adv) != y
    cw_l2_mean = (adv - x)[cw_success].flatten(1).norm(dim=1).mean()
    # the smallest PGD-L2 budget (of a grid) that fools at least as many images as C&W
    for eps in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0):
        adv_pgd = pgd(model, x, y, eps, eps / 4, 15, random_start=False, norm="2")
        pgd_success = _predict(model, adv_pgd) != y
        if pgd_success.sum() >= cw_success.sum():
            break
    assert pgd_success.sum() >= cw_success.sum()
    pgd_l2_mean = (adv_pgd - x)[pgd_success].flatten(1).norm(dim=1).mean()
    assert cw_l2_mean < pgd_l2_mean, (float(cw_l2_mean), float(pgd_l2_mean), eps)


def test_cw_and_deepfool_leave_misclassified_images_alone(trained) -> None:
    model, x, y = trained
    wrong = (y + 1) % CLASSES  # labels the model does not predict
    assert torch.equal(deepfool(model, x, wrong), x)
    adv = cw_l2(model, x, wrong, c=0.1, search_steps=1, steps=5)
    assert (adv - x).abs().max() < 1e-5  # the tanh-space image of x itself


@needs_torchattacks
def test_autoattack_is_at_most_each_component(trained) -> None:
    model, x, y = trained
    settings = {"eps": 0.15, "steps": 5, "n_queries": 50, "n_target_classes": 2}
    parts = autoattack_components(model, x, y, **settings)
    assert list(parts) == list(AUTOATTACK_COMPONENTS)
    combined = autoattack(model, x, y, **settings)
    assert torch.equal(combined, worst_case(model, x, y, list(parts.values())))
    accuracy = (_predict(model, combined) == y).float().mean()
    for name, adv in parts.items():
        assert (adv - x).abs().max() <= 0.15 + 1e-5, name
        assert accuracy <= (_predict(model, adv) == y).float().mean(), name


def test_worst_case_takes_the_first_fooling_candidate(trained) -> None:
    model, x, y = trained
    fooled = ATTACKS["deepfool"](model, x, y)
    picked = worst_case(model, x, y, [x, fooled, torch.zeros_like(x)])
    assert torch.equal(picked, torch.where((_predict(model, fooled) != y).view(-1, 1, 1, 1),
                                           fooled, x))


# --- the rules ------------------------------------------------------------------------------


class Recorder(nn.Module):
    """Identity that remembers the mode of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return x


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("name", each_attack())
def test_attack_keeps_the_rules(trained, name: str) -> None:
    inner, x, y = trained
    x, y = x[:6], y[:6]
    recorder = Recorder()
    model = nn.Sequential(recorder, nn.Dropout(0.5), inner)  # dropout: train mode would show
    model.train()
    model[2].eval()  # a mixed mode, given back as it was
    before = _modes(model)
    params = list(model.parameters())
    params[0].grad = torch.ones_like(params[0])  # a gradient the caller had: kept as it was
    x = x.clone().requires_grad_(False)
    x_before = x.clone()
    rng = torch.get_rng_state()
    adv = ATTACKS[name](model, x, y)
    assert recorder.seen and not any(recorder.seen), "the model ran in train mode"
    assert _modes(model) == before
    assert torch.equal(params[0].grad, torch.ones_like(params[0]))
    assert all(p.grad is None for p in params[1:])
    assert torch.equal(x, x_before) and x.grad is None
    assert not adv.requires_grad and adv.grad_fn is None
    adv.add_(1)  # a tensor of its own
    assert torch.equal(x, x_before)
    assert torch.equal(torch.get_rng_state(), rng)  # torchattacks reseeds it: forked
    params[0].grad = None


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_equals_per_example(trained, name: str) -> None:
    model, x, y = trained
    x, y = x[:4], y[:4]
    whole = ATTACKS[name](model, x, y)
    alone = torch.cat([ATTACKS[name](model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    # a batched matrix product rounds differently from a single row's; sign steps hide it,
    # L2 steps carry it, so equal up to float rounding
    torch.testing.assert_close(whole, alone, rtol=0, atol=1e-4)


class Unruly:
    """A stand-in for a torchattacks attack that breaks every rule: parameter gradients by
    backward(), the global RNG reseeded, the whole model put in train mode, the input written."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(123)
        self.model.train()
        F.cross_entropy(self.model(x), y).backward()
        x.add_(0.5)
        return x


def test_library_rules_undo_what_the_library_does(trained) -> None:
    from ganlab.attacks.library import _run

    inner, x, y = trained
    model = nn.Sequential(nn.Dropout(0.1), inner)
    model.train()
    model[1].eval()
    before, x_before, rng = _modes(model), x.clone(), torch.get_rng_state()
    adv = _run(Unruly(model), model, x, y)
    assert _modes(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(x, x_before)
    assert adv.max() <= 1 and torch.equal(adv, (x_before + 0.5).clamp(0, 1))
    with pytest.raises(RuntimeError, match="inside"), library_rules(model, x):
        raise RuntimeError("inside")
    assert _modes(model) == before


def test_bad_arguments(trained) -> None:
    model, x, y = trained
    with pytest.raises(ValueError, match="theta"):
        jsma(model, x, y, theta=0)
    with pytest.raises(ValueError, match="gamma"):
        jsma(model, x, y, gamma=1.5)
    with pytest.raises(TypeError):
        cw_l2(model, (x * 255).to(torch.uint8), y)


@needs_torchattacks
def test_bad_library_arguments(trained) -> None:
    model, x, y = trained
    with pytest.raises(ValueError, match="loss"):
        apgd(model, x, y, 0.1, loss="hinge")
    with pytest.raises(ValueError, match="n_target_classes"):
        autoattack(model, x, y, 0.1, n_target_classes=10)


# --- the attack command -----------------------------------------------------------------------

TINY_LENET = [*TINY, "model=lenet", "model.channels=[4]", "model.hidden=[16]",
              "model.eval_steps=2", "trainer.max_steps=2", "dataset.n_samples=128"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("library_cli")
    train_in_process([*TINY_LENET, "hydra.run.dir=run"], root)
    return root / "run"


def _attack(run: Path, *args: str) -> dict:
    from ganlab import attack

    with in_dir(run.parent):
        attack.main([f"ckpt={run}", "n_examples=8", "show=2", *args])
    return json.loads((run / f"attack_{args[0].split('=')[1]}" / "robustness.json").read_text())


@pytest.mark.parametrize("args", [
    ["attack=cw", "attack.steps=20", "attack.search_steps=2"],
    ["attack=jsma", "attack.gamma=0.02"],
    ["attack=deepfool", "attack.steps=3"],
    ["attack=lbfgs", "attack.steps=5", "attack.search_steps=1"],
])
def test_minimal_attacks_through_the_command(tiny_run, args, capsys) -> None:
    report = _attack(tiny_run, *args)
    (row,) = report["results"]
    assert row["eps"] is None and 0 <= row["accuracy"] <= 1
    assert {"median_l2", "mean_l0", "mean_l2_success", "n_success"} <= row.keys()
    if args[0] == "attack=jsma":
        assert row["max_l0"] <= 0.02
    out = tiny_run / f"attack_{args[0].split('=')[1]}"
    assert (out / "robust_accuracy.png").is_file() and (out / "examples.png").is_file()
    assert "minimal accuracy" in capsys.readouterr().out


def test_budgeted_attacks_through_the_command(tiny_run, capsys) -> None:
    report = _attack(tiny_run, "attack=pgd", "attack.norm=2", "attack.steps=3")
    assert [r["eps"] for r in report["results"]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    for row in report["results"]:
        assert row["mean_l2"] <= row["eps"] + 1e-4


@needs_torchattacks
def test_library_attacks_through_the_command(tiny_run, capsys) -> None:
    report = _attack(tiny_run, "attack=apgd", "attack.loss=dlr", "attack.eps=[0.1]",
                     "attack.steps=3")
    assert report["attack"]["loss"] == "dlr"
    report = _attack(tiny_run, "attack=autoattack", "attack.steps=2", "attack.n_queries=10",
                     "attack.n_target_classes=1")
    (row,) = report["results"]
    assert row["eps"] == 0.3 and set(row["components"]) == set(AUTOATTACK_COMPONENTS)
    assert row["accuracy"] <= min(row["components"].values())
    assert "apgd-ce: accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "fragment"), [
    (["attack=jsma", "attack.eps=[0.1]"], "Key 'eps' not in 'JsmaAttackConfig'"),
    (["attack=cw", "attack.gamma=0.1"], "Key 'gamma' not in 'CwAttackConfig'"),
    (["attack=fgsm", "attack.eps=[2.0]"], "fgsm is an L-inf attack"),
    (["attack=pgd", "attack.eps=[2.0]"], "an L2 size? use attack.norm=2"),
    (["attack=pgd", "attack.norm=1"], "attack.norm=1 is not one of: inf, 2"),
    pytest.param(["attack=apgd", "attack.loss=hinge"], "attack.loss=hinge is not one of: ce, dlr",
                 marks=needs_torchattacks),
    (["attack=jsma", "attack.target=12"], "attack.target=12 is not a class of this model"),
    (["attack=pgd", "attack.targeted=true", "attack.target=10"], "it has 10 classes (0..9)"),
    (["attack=jsma", "attack.theta=0"], "attack.theta=0 moves no pixel"),
    (["attack=jsma", "attack.gamma=0"], "attack.gamma=0.0 is outside its range (0, 1]"),
    (["attack=cw", "attack.kappa=-1"], "attack.kappa=-1.0 is outside its range [0, inf)"),
    (["attack=deepfool", "attack.targeted=true"], "Key 'targeted' not in"),
])
def test_bad_input(tiny_run, tmp_path, args, fragment, capsys) -> None:
    out = tmp_path / "out"
    result = run_in_process(["attack", f"ckpt={tiny_run}", *args, f"out={out}"], capsys)
    assert_bad_input(result, fragment)
    assert not out.exists()
