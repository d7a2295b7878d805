"""Defences that work on a CPU budget: fast (Wong et al.), free (Shafahi et al.), TRADES,
Gaussian noise and the eps warm-up; the classifier family's replays, schedules and health
check.

Everything runs in-process on 8x8 images (a few seconds in all): the family is built from
schema instances, except for the bad-input checks, which go through the CLI's own code.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import assert_bad_input, make_config, run_in_process

import ganlab.attacks.defenses as defenses_module
from ganlab.attacks import pgd
from ganlab.attacks.defenses import (
    DEFENSES,
    FastDefenseConfig,
    FreeDefenseConfig,
    NoDefenseConfig,
    NoiseDefenseConfig,
    PgdDefenseConfig,
    TradesDefenseConfig,
)
from ganlab.data.base import DataSpec
from ganlab.families.classifier import ClassifierFamily, MlpClassifierConfig, SoftmaxConfig
from ganlab.schedules import linear_warmup, triangle

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = DataSpec("t", "image", (1, 8, 8), 4)
CPU = torch.device("cpu")


def quadrants(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A separable task: class k lights the k-th 4x4 quadrant of an 8x8 image (uint8 255)
    over noise below 60; a robust rule (the brightest quadrant) survives eps 0.3."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    for i, k in enumerate(y.tolist()):
        r, c = divmod(k, 2)
        x[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 255
    return x, y


def robust_and_weak(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes (Tsipras et al.'s construction, in pixels): a 2x2 corner block that is
    white for class 1 and black for class 0 on 90% of the images (a robust feature: eps 0.3
    cannot move it across 0.5), and 60 pixels at 0.5 -/+ 0.1 with noise (weak features that
    together separate the classes perfectly, and that eps 0.3 flips all at once)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * y - 1).float().view(n, 1, 1, 1)
    x = 0.5 + 0.1 * sign + torch.empty(n, 1, 8, 8).uniform_(-0.15, 0.15, generator=g)
    agrees = torch.rand(n, generator=g) < 0.9
    x[:, 0, :2, :2] = torch.where(agrees, y, 1 - y).float().view(n, 1, 1)
    return (x * 255).round().to(torch.uint8), y


def classifier(defense, model=None, run_length: int = 100, seed: int = 0,
               spec: DataSpec = SMALL) -> ClassifierFamily:
    """A classifier family on the CPU (softmax, lr 0.01 unless `model` says otherwise) under
    `defense` (a schema instance), for a run of `run_length` batches."""
    cfg = make_config(model or SoftmaxConfig(lr=0.01), defense=defense)
    torch.manual_seed(seed)
    family = ClassifierFamily(cfg, spec, CPU)
    family.run_length = run_length
    return family


def train(family: ClassifierFamily, steps: int, seed: int = 1, batch_size: int = 32,
          task=quadrants) -> list[dict[str, torch.Tensor]]:
    """`steps` batches of a task (the quadrants by default); each step's metrics."""
    x, y = task(1024, seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        index = torch.randint(0, len(x), (batch_size,), generator=g)
        out.append(family.train_step((x[index], y[index])))
    return out


def robust_accuracy(family: ClassifierFamily, eps: float = 0.3, task=quadrants) -> float:
    """Accuracy on 256 unseen images of a task under PGD (10 steps of 2.5 eps / 10)."""
    x, y = task(256, seed=99)
    x = x.float() / 255
    g = torch.Generator().manual_seed(0)
    adv = pgd(family.model, x, y, eps, alpha=2.5 * eps / 10, steps=10, generator=g)
    with torch.no_grad():
        return (family.model(adv).argmax(1) == y).float().mean().item()


def weights(family: ClassifierFamily) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in family.model.state_dict().items()}


# --- schedules -----------------------------------------------------------------------------


@pytest.mark.parametrize(("step", "factor"), [(0, 0.0), (15, 0.5), (30, 1.0), (99, 1.0)])
def test_eps_warmup_values(step: int, factor: float) -> None:
    assert linear_warmup(step, 100, 0.3) == pytest.approx(factor)
    assert linear_warmup(step, 100, 0.0) == 1.0  # no warm-up: the full eps from the start
    d = DEFENSES.get("pgd")(PgdDefenseConfig(eps=0.3, eps_warmup=0.3))
    d.position(step, 100)
    assert d.eps() == pytest.approx(0.3 * factor)


def test_warmed_eps_reaches_the_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    """pgd, trades and fast attack at the warmed eps, with a step that shrinks with it; fast's
    check attacks at the full eps; free's carried perturbation stays inside the warmed ball."""
    seen = []

    def recording_pgd(model, x, y, eps, alpha, steps, **kwargs):
        seen.append((eps, alpha, steps))
        return x.clone()

    monkeypatch.setattr(defenses_module, "pgd", recording_pgd)
    model, x, y = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)), *quadrants(4, 0)
    x = x.float() / 255
    for cfg in (PgdDefenseConfig(eps=0.3, step_size=0.01, steps=5, eps_warmup=0.5),
                FastDefenseConfig(eps=0.3, eps_warmup=0.5)):
        d = DEFENSES.get(cfg.name)(cfg)
        d.position(25, 100)  # half-way through the warm-up
        d.step(model, x, y)
    assert seen[0] == pytest.approx((0.15, 0.005, 5))
    assert seen[1] == pytest.approx((0.15, 1.25 * 0.15, 1))
    d.check(model, x, y)  # fast's health check: at the full eps, or the warm-up looks like a fall
    assert seen[2] == pytest.approx((0.3, 2.5 * 0.3 / 10, 10))
    trades = DEFENSES.get("trades")(TradesDefenseConfig(eps=0.3, steps=3, eps_warmup=0.5))
    trades.position(25, 100)
    adv = trades._adversarial(model, x)
    assert (adv - x).abs().max() <= 0.15 + 1e-6
    free = DEFENSES.get("free")(FreeDefenseConfig(eps=0.3, eps_warmup=0.5))
    for _ in range(3):  # three signed steps: without the warm-up they would reach 0.3
        free.position(25, 100)
        model.zero_grad()
        free.step(model, x, y).loss.backward()
        free.after_backward()
    assert free.delta.abs().max() == pytest.approx(0.15)


def test_cyclic_learning_rate() -> None:
    """Up to the top at lr_peak, down to 0 at the end; the family sets its optimizer's lr."""
    assert triangle(39, 100, 0.4) == pytest.approx(1.0)
    assert triangle(19, 100, 0.4) == pytest.approx(0.5)
    assert triangle(69, 100, 0.4) == pytest.approx(0.5)
    assert triangle(99, 100, 0.4) == 0.0
    assert 0 < triangle(0, 100, 0.4) < 0.1
    fam = classifier(FastDefenseConfig(eps=0.1, check_every=0), run_length=10)
    lrs = []
    for step in range(10):
        train(fam, 1, seed=step)
        lrs.append(fam.opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01 * triangle(s, 10, 0.4) for s in range(10)])


# --- each defence learns ---------------------------------------------------------------------


@pytest.mark.parametrize("defense", [
    FastDefenseConfig(eps=0.1, check_every=10),
    FreeDefenseConfig(eps=0.1, replays=2),
    TradesDefenseConfig(eps=0.1, step_size=0.05, steps=3, beta=1.0),
    NoiseDefenseConfig(std=0.3),
    PgdDefenseConfig(eps=0.1, step_size=0.05, steps=3, eps_warmup=0.3),
], ids=lambda d: d.name)
def test_each_defence_learns(defense) -> None:
    fam = classifier(defense, MlpClassifierConfig(hidden=[32], lr=0.01), run_length=60)
    metrics = train(fam, 60)
    losses = torch.stack([m["loss/train"] for m in metrics])
    assert torch.isfinite(losses).all()
    assert losses[-10:].mean() < 0.5 * losses[:10].mean(), losses
    for m in metrics:
        assert all(v.dim() == 0 and not v.requires_grad for v in m.values())


def test_fast_ends_more_robust_than_no_defence() -> None:
    """Same model, data, seed and steps: fast (with an eps warm-up, as the README advises for
    short runs) against plain training, under the same PGD attack at eps 0.3."""
    spec = DataSpec("t", "image", (1, 8, 8), 2)
    plain = classifier(NoDefenseConfig(), run_length=150, spec=spec)
    train(plain, 150, task=robust_and_weak)
    fast = classifier(FastDefenseConfig(eps=0.3, eps_warmup=0.2, check_every=25), run_length=150,
                      spec=spec)
    train(fast, 150, task=robust_and_weak)
    assert not fast.stopped
    plain_robust = robust_accuracy(plain, task=robust_and_weak)
    fast_robust = robust_accuracy(fast, task=robust_and_weak)
    assert plain_robust < 0.3 and fast_robust > 0.7, (plain_robust, fast_robust)


# --- fast: the catastrophic-overfitting check ---------------------------------------------------


def test_fast_restores_the_last_healthy_weights_and_stops(caplog) -> None:
    """A rigged check: after two healthy checks, the checked batch gets wrong labels, so PGD
    accuracy on it collapses; the weights of the last healthy check come back and training
    stops (later batches change nothing), which the log and the metrics say."""
    fam = classifier(FastDefenseConfig(eps=0.3, eps_warmup=0.2, check_every=10), run_length=60)
    metrics = train(fam, 40)
    assert not fam.stopped and fam.defense.best > 0.5
    good = copy.deepcopy(fam.good_weights)
    assert metrics[-1]["defense/stopped"] == 0
    x, y = fam.check_batch
    fam.check_batch = (x, (y + 1) % 4)  # every prediction now counts as wrong
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        metrics = train(fam, 10, seed=2)  # the check at batch 50 fails
    assert fam.stopped
    assert "catastrophic overfitting at the check at batch 50" in caplog.text
    for key, value in fam.model.state_dict().items():
        assert torch.equal(value, good[key]), key
    assert metrics[-1]["defense/stopped"] == 1
    assert metrics[-1]["defense/check_accuracy"] < fam.defense.best - 0.2
    before = weights(fam)
    train(fam, 3, seed=3)
    assert all(torch.equal(v, before[k]) for k, v in weights(fam).items())

    # a checkpoint of the stopped run resumes stopped, with the same check state
    other = classifier(FastDefenseConfig(eps=0.3, eps_warmup=0.2, check_every=10), seed=5)
    other.load_state_dict(fam.state_dict())
    assert other.stopped and other.updates == fam.updates and other.defense.best == fam.defense.best
    after = weights(other)
    train(other, 2)
    assert all(torch.equal(v, after[k]) for k, v in weights(other).items())


def test_fast_check_leaves_training_alone() -> None:
    """The check's PGD draws from its own generator: a run with checks trains the same
    weights as one without."""
    a = classifier(FastDefenseConfig(eps=0.1, check_every=3), run_length=12)
    train(a, 12)  # the random starts draw from the global RNG, seeded as each family is built
    b = classifier(FastDefenseConfig(eps=0.1, check_every=0), run_length=12)
    train(b, 12)
    assert all(torch.equal(v, weights(b)[k]) for k, v in weights(a).items())


# --- free: m optimizer steps per batch, the perturbation carried over ------------------------


def test_free_replays_each_batch_with_a_carried_perturbation(monkeypatch) -> None:
    fam = classifier(FreeDefenseConfig(eps=0.1, replays=3))
    steps, inputs = [], []
    step = fam.opt.step
    monkeypatch.setattr(fam.opt, "step", lambda *a, **k: (steps.append(1), step(*a, **k))[1])
    fam.model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    x, y = quadrants(8, seed=0)
    fam.train_step((x, y))
    assert len(steps) == 3 and len(inputs) == 3
    x = x.float() / 255
    torch.testing.assert_close(inputs[0], x)  # the perturbation starts at zero
    delta = fam.defense.delta
    assert delta.abs().max() <= 0.1 + 1e-7 and delta.abs().max() > 0
    x2, y2 = quadrants(8, seed=1)
    fam.train_step((x2, y2))
    assert len(steps) == 6
    # the next batch starts from the perturbation the last replay left
    torch.testing.assert_close(inputs[3], (x2.float() / 255 + delta).clamp(0, 1))
    # each replay moves the perturbation by at most one signed step of eps (then projected)
    moved = (inputs[4] - inputs[3]).abs()
    assert moved.max() == pytest.approx(0.1, abs=1e-6)


def test_free_perturbation_is_in_the_checkpoint() -> None:
    fam = classifier(FreeDefenseConfig(eps=0.1, replays=2))
    train(fam, 2)
    other = classifier(FreeDefenseConfig(eps=0.1, replays=2), seed=3)
    other.load_state_dict(fam.state_dict())
    assert torch.equal(other.defense.delta, fam.defense.delta)


# --- TRADES and noise ---------------------------------------------------------------------


def test_trades_loss_is_natural_plus_beta_kl() -> None:
    fam = classifier(TradesDefenseConfig(eps=0.1, step_size=0.05, steps=2, beta=6.0))
    (m,) = train(fam, 1)
    assert m["loss/kl"] >= 0
    torch.testing.assert_close(m["loss/train"], m["loss/natural"] + 6.0 * m["loss/kl"])
    assert {"accuracy/train", "accuracy/train_adversarial"} <= set(m)


def test_trades_kl_is_kl_of_clean_to_adversarial() -> None:
    """KL(p || q) = sum p (log p - log q), with the gradient through both distributions (the
    clean one too, as in the TRADES loss)."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 4, generator=g).requires_grad_(True)
    adversarial = torch.randn(3, 4, generator=g)
    p, log_q = clean.softmax(1), adversarial.log_softmax(1)
    expected = (p * (clean.log_softmax(1) - log_q)).sum()
    got = defenses_module._kl_from(clean.log_softmax(1), adversarial)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got, clean)[0],
                               torch.autograd.grad(expected, clean)[0])


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["defense=fast", "defense.replays=2"], "defense.replays"),
    (["defense=pgd", "defense.eps_warmup=1.5"], "defense.eps_warmup"),
    (["defense=free", "defense.replays=0"], "defense.replays"),
    (["defense=noise", "defense.std=-1"], "defense.std"),
    (["defense=trades", "defense.check_every=5"], "defense.check_every"),
])
def test_bad_defence_settings(overrides: list[str], fragment: str, capsys, tmp_path) -> None:
    result = run_in_process(["train", "model=lenet", "dataset=synthetic", "device=cpu",
                             "trainer.max_steps=1", *overrides], capsys, cwd=tmp_path)
    assert_bad_input(result, fragment)
    assert not (tmp_path / "outputs").exists()
