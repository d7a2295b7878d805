"""The classifier family: models, defences, training and evaluation, the family-section check,
and the held-out data the metrics are measured on.

No network: torchvision's download is patched to fail in every test.
"""

from __future__ import annotations

import copy
import gzip
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import batch, compose_cfg, idx_bytes, write_idx
from torch import nn

from ganlab.attacks import fgsm, pgd
from ganlab.attacks.defenses import DEFENSES
from ganlab.data import build_dataset
from ganlab.data.base import HELDOUT_FRACTION, DataSpec, InMemoryDataset, split_off_heldout
from ganlab.data.mnist import read_idx
from ganlab.errors import UserError
from ganlab.families.classifier import ClassifierFamily
from ganlab.images import UNIT, resize_uint8, to_float
from ganlab.models import MODELS
from ganlab.preflight import compose_all

pytestmark = pytest.mark.usefixtures("one_thread", "no_download")

SPEC = DataSpec("synthetic", "image", (1, 28, 28), 10)
SMALL = DataSpec("t", "image", (1, 8, 8), 10)  # for the defences: fast, exact comparisons
CPU = torch.device("cpu")






def classifier_cfg(*overrides: str):
    return compose_cfg("model=softmax", "dataset=synthetic", "device=cpu", *overrides)


def build_model(*overrides: str, spec: DataSpec = SPEC) -> nn.Module:
    cfg = compose_cfg(*overrides)
    return MODELS.get(cfg.model.name)(cfg.model, spec)


def images01(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def small_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("model=mlp", "model.hidden=[32]", spec=SMALL)


def block_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable task: class k lights the k-th 7x7 block of a 4x4 grid over uint8 noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    for i, k in enumerate(y.tolist()):
        r, c = divmod(k, 4)
        x[i, 0, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = 255
    return x, y


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "mlp", "lenet"])
def test_models_map_images_to_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(f"model={name}")
    x = images01(3).requires_grad_(True)
    logits = model(x)
    assert logits.shape == (3, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])  # depends on the input
    (grad,) = torch.autograd.grad(logits.sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


def test_lenet_default_is_madrys_net() -> None:
    model = build_model("model=lenet")
    conv1 = 32 * 1 * 5 * 5 + 32
    conv2 = 64 * 32 * 5 * 5 + 64
    fc1 = (64 * 7 * 7) * 1024 + 1024
    fc2 = 1024 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == conv1 + conv2 + fc1 + fc2 == 3_274_634
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (5, 5)), (32, 64, (5, 5))]


def test_lenet5_widths() -> None:
    model = build_model("model=lenet", "model.channels=[6,16]", "model.hidden=[120,84]")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [6, 16]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (16 * 7 * 7, 120), (120, 84), (84, 10)]
    assert model(images01(2)).shape == (2, 10)


def test_mlp_layers_and_dropout() -> None:
    model = build_model("model=mlp", "model.dropout=0.5")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 256),
                                                                   (256, 10)]
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    assert isinstance(list(model.children())[-1], nn.Linear)  # logits: no ReLU at the end


def test_standardize_inside_the_model() -> None:
    m, s = 0.1307, 0.3081
    torch.manual_seed(0)
    model = build_model("model=softmax", f"model.input_mean={m}", f"model.input_std={s}")
    plain = build_model("model=softmax")  # mean 0, std 1: no standardisation
    linear = next(mod for mod in model.modules() if isinstance(mod, nn.Linear))
    plain_linear = next(mod for mod in plain.modules() if isinstance(mod, nn.Linear))
    plain_linear.load_state_dict(linear.state_dict())
    x = images01(4)
    expected = F.linear(((x - m) / s).flatten(1), linear.weight, linear.bias)
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model(x), plain((x - m) / s))
    assert not torch.allclose(model(x), plain(x), atol=1e-3)

    state = model.state_dict()
    buffers = {k: v for k, v in state.items() if k.endswith((".mean", ".std"))}
    assert sorted(float(v) for v in buffers.values()) == pytest.approx(sorted([m, s]))
    assert all(not v.requires_grad for v in buffers.values())
    assert sum(p.numel() for p in model.parameters()) == 784 * 10 + 10  # buffers not trained
    plain.load_state_dict(state)  # the statistics travel with the checkpoint
    torch.testing.assert_close(plain(x), model(x))


@pytest.mark.parametrize("name", ["softmax", "mlp", "lenet"])
@pytest.mark.parametrize(
    "spec",
    [DataSpec("ring", "points", (2,), 0), DataSpec("mnist", "image", (1, 28, 28), 0),
     DataSpec("mnist", "image", (1, 28, 28), 1)],
)
def test_models_reject_unsuitable_data(name: str, spec: DataSpec) -> None:
    with pytest.raises(UserError, match=f"model={name}"):
        build_model(f"model={name}", spec=spec)


def test_lenet_too_many_stages_for_small_images() -> None:
    small = DataSpec("t", "image", (1, 4, 4), 10)
    model = build_model("model=lenet", "model.channels=[4,4]", "model.hidden=[8]", spec=small)
    assert model(images01(2, shape=(1, 4, 4))).shape == (2, 10)  # 4 -> 2 -> 1 px: fine
    with pytest.raises(UserError, match=r"model\.channels"):
        build_model("model=lenet", "model.channels=[4,4,4]", spec=small)
    with pytest.raises(UserError, match="fewer conv stages"):
        build_model("model=lenet", "model.channels=[2,2,2,2,2]")  # 28 -> 14 -> 7 -> 3 -> 1


# --- defences ------------------------------------------------------------------------------


def defense(*overrides: str):
    cfg = compose_cfg("model=softmax", *overrides)
    return DEFENSES.get(cfg.defense.name)(cfg.defense)


def test_registry_names() -> None:
    assert {"none", "fgsm", "pgd", "mixup", "gradreg"} <= set(DEFENSES.names())


def test_none_is_cross_entropy() -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    out = defense("defense=none").step(model, x, y)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y))
    assert set(out.logits) == {"clean"} and out.scalars == {}
    torch.testing.assert_close(out.logits["clean"], model(x))


@pytest.mark.parametrize("w", [0.0, 0.3, 0.5])
def test_fgsm_mixed_objective(w: float) -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    out = defense("defense=fgsm", "defense.eps=0.1", f"defense.clean_weight={w}").step(model, x, y)
    x_adv = fgsm(model, x, y, 0.1)
    expected = w * F.cross_entropy(model(x), y) + (1 - w) * F.cross_entropy(model(x_adv), y)
    torch.testing.assert_close(out.loss, expected)
    assert out.loss > F.cross_entropy(model(x), y)  # the adversarial term is the larger
    assert set(out.logits) == ({"adversarial", "clean"} if w else {"adversarial"})


def test_fgsm_clean_weight_one_is_plain_cross_entropy() -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    out = defense("defense=fgsm", "defense.clean_weight=1").step(model, x, y)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y))


def test_fgsm_random_start_is_one_projected_step() -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    d = defense("defense=fgsm", "defense.eps=0.1", "defense.random_start=true",
                "defense.clean_weight=0")
    torch.manual_seed(5)
    out = d.step(model, x, y)
    torch.manual_seed(5)
    x_adv = pgd(model, x, y, 0.1, alpha=0.1, steps=1, random_start=True)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x_adv), y))
    assert not torch.allclose(out.loss, F.cross_entropy(model(fgsm(model, x, y, 0.1)), y))


def test_pgd_without_random_start_is_the_iterative_attack() -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    d = defense("defense=pgd", "defense.eps=0.2", "defense.step_size=0.05", "defense.steps=5",
                "defense.random_start=false")
    out = d.step(model, x, y)
    x_adv = pgd(model, x, y, 0.2, alpha=0.05, steps=5, random_start=False)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x_adv), y))
    assert set(out.logits) == {"adversarial"}
    torch.testing.assert_close(out.logits["adversarial"], model(x_adv))
    assert out.loss > F.cross_entropy(model(x), y)


def test_pgd_examples_stay_in_the_ball(monkeypatch: pytest.MonkeyPatch) -> None:
    import ganlab.attacks.defenses as defenses_module

    seen: list[torch.Tensor] = []

    def recording_pgd(*args, **kwargs):
        seen.append(pgd(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(defenses_module, "pgd", recording_pgd)
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    x_before = x.clone()
    out = defense("defense=pgd", "defense.eps=0.1", "defense.step_size=0.04",
                  "defense.steps=4").step(model, x, y)
    assert len(seen) == 1
    x_adv = seen[0]
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert (x_adv - x).abs().max() > 0.05  # it did move
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x, x_before)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x_adv), y))


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_mixup_loss_formula(alpha: float) -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    torch.manual_seed(11)
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0])
    torch.manual_seed(11)
    out = defense("defense=mixup", f"defense.alpha={alpha}").step(model, x, y)
    logits = model(lam * x + (1 - lam) * x[perm])
    a, b = F.cross_entropy(logits, y), F.cross_entropy(logits, y[perm])
    torch.testing.assert_close(out.loss, lam * a + (1 - lam) * b)
    assert 0 < lam < 1
    assert min(a, b) - 1e-6 <= out.loss <= max(a, b) + 1e-6  # a convex combination
    assert out.logits == {}


def per_example_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    norms = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i : i + 1]), xi)
        norms.append(g.pow(2).sum())
    return torch.stack(norms).mean()


def test_gradreg_weight_zero_is_cross_entropy() -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    out = defense("defense=gradreg", "defense.weight=0").step(model, x, y)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y))
    torch.testing.assert_close(out.scalars["loss/grad_penalty"], per_example_penalty(model, x, y))


def test_gradreg_penalty_and_double_backprop() -> None:
    model, (x, y) = small_mlp(), batch(16, shape=SMALL.shape, floats=True)
    penalty = per_example_penalty(model, x, y)
    assert penalty > 0
    out = defense("defense=gradreg", "defense.weight=3").step(model, x, y)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y) + 3 * penalty)
    torch.testing.assert_close(out.scalars["loss/grad_penalty"], penalty)
    assert set(out.logits) == {"clean"}

    def param_grads(weight: float) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        defense("defense=gradreg", f"defense.weight={weight}").step(model, x, y).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain, regularised = param_grads(0.0), param_grads(3.0)
    # the penalty's own gradient, by autograd on the independent per-example formula
    model.zero_grad(set_to_none=True)
    norms = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i : i + 1]), xi,
                                   create_graph=True)
        norms.append(g.pow(2).sum())
    torch.stack(norms).mean().backward()
    penalty_grads = [p.grad.clone() for p in model.parameters()]
    assert any(g.abs().max() > 1e-4 for g in penalty_grads)
    for a, b, p in zip(plain, regularised, penalty_grads, strict=True):
        torch.testing.assert_close(b - a, 3 * p, atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(a, b) for a, b in zip(plain, regularised, strict=True))
    assert not x.requires_grad  # the caller's batch is untouched


# --- the classifier family -----------------------------------------------------------------


def family(*overrides: str, seed: int = 0) -> ClassifierFamily:
    torch.manual_seed(seed)
    return ClassifierFamily(classifier_cfg(*overrides), SPEC, CPU)


@pytest.mark.parametrize(
    "overrides, keys",
    [
        ((), {"loss/train", "accuracy/train"}),
        (("defense=fgsm",), {"loss/train", "accuracy/train", "accuracy/train_adversarial"}),
        (("defense=pgd", "defense.steps=2", "defense.step_size=0.1"),
         {"loss/train", "accuracy/train_adversarial"}),  # clean_weight 0: no clean logits
        (("defense=pgd", "defense.steps=2", "defense.step_size=0.1", "defense.clean_weight=0.5"),
         {"loss/train", "accuracy/train", "accuracy/train_adversarial"}),
        (("defense=mixup",), {"loss/train"}),
        (("defense=gradreg",), {"loss/train", "accuracy/train", "loss/grad_penalty"}),
    ],
)
def test_train_step_metrics(overrides: tuple[str, ...], keys: set[str]) -> None:
    fam = family(*overrides)
    x, y = block_images(32, seed=1)
    before = params_of(fam.model)
    reference = copy.deepcopy(fam.model)
    metrics = fam.train_step((x, y))
    assert set(metrics) == keys
    for value in metrics.values():
        assert isinstance(value, torch.Tensor) and value.dim() == 0
        assert not value.requires_grad and value.grad_fn is None
        assert torch.isfinite(value)
    for name, value in metrics.items():
        if name.startswith("accuracy"):
            assert 0 <= value <= 1
    after = params_of(fam.model)
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # the loss each defence minimises, against the clean cross-entropy of the same weights
    logits = reference(x.float() / 255)
    clean, loss = F.cross_entropy(logits, y).item(), metrics["loss/train"].item()
    if "accuracy/train" in metrics:  # the clean logits' accuracy
        assert metrics["accuracy/train"].item() == pytest.approx(
            (logits.argmax(1) == y).float().mean().item())
    defense = dict(o.split("=", 1) for o in overrides).get("defense", "none")
    if defense == "none":
        assert loss == pytest.approx(clean, rel=1e-5)
    elif defense in ("fgsm", "pgd"):  # (partly) at adversarial points, which cost more
        assert loss > clean + 0.01, (loss, clean)
    elif defense == "gradreg":  # J + 10 * the mean squared input-gradient norm
        penalty = metrics["loss/grad_penalty"].item()
        assert penalty > 0 and loss == pytest.approx(clean + 10 * penalty, rel=1e-5)
    else:  # mixup: blended inputs and targets
        assert abs(loss - clean) > 1e-3, (loss, clean)


def test_train_step_numbers_match_the_model_before_the_step() -> None:
    fam = family()
    x, y = block_images(64, seed=2)
    reference = copy.deepcopy(fam.model)
    metrics = fam.train_step((x, y))
    logits = reference(x.float() / 255)
    torch.testing.assert_close(metrics["loss/train"], F.cross_entropy(logits, y))
    assert metrics["accuracy/train"].item() == pytest.approx(
        (logits.argmax(1) == y).float().mean().item())


def train_on_blocks(*overrides: str) -> ClassifierFamily:
    """softmax after 300 steps on the block task (lr 0.01), with 200 held-out examples
    attached; train_accuracy: the mean of the last 20 steps' (clean) training accuracy."""
    fam = family("model.lr=0.01", "eval.n_samples=150", *overrides)
    x, y = block_images(2048, seed=3)
    g = torch.Generator().manual_seed(0)
    accuracies = []
    for _ in range(300):
        index = torch.randint(0, len(x), (64,), generator=g)
        metrics = fam.train_step((x[index], y[index]))
        accuracies.append(metrics.get("accuracy/train", torch.tensor(float("nan"))).item())
    fam.train_accuracy = sum(accuracies[-20:]) / 20
    hx, hy = block_images(200, seed=4)
    fam.use_heldout(InMemoryDataset(SPEC, hx, hy, source="blocks"))
    return fam


@pytest.fixture(scope="module")
def trained() -> ClassifierFamily:
    """softmax after 300 clean steps on the block task, with 200 held-out examples attached."""
    return train_on_blocks()


def test_training_learns_the_task(trained: ClassifierFamily) -> None:
    assert trained.train_accuracy >= 0.95


def test_evaluate_metrics(trained: ClassifierFamily) -> None:
    before = torch.get_rng_state()
    result = trained.evaluate()
    assert torch.equal(torch.get_rng_state(), before)
    assert set(result) == {"accuracy", "loss", "accuracy_fgsm_0.3"}
    assert trained.model.training  # evaluation leaves the mode alone

    x, y = trained.heldout.x[:150].float() / 255, trained.heldout.y[:150]  # eval.n_samples
    with torch.no_grad():
        logits = trained.model(x)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    adv = fgsm(trained.model, x, y, 0.3)
    with torch.no_grad():
        robust = (trained.model(adv).argmax(1) == y).float().mean().item()
    assert result["accuracy_fgsm_0.3"] == pytest.approx(robust)
    assert result["accuracy"] >= 0.95
    assert result["accuracy_fgsm_0.3"] <= result["accuracy"]
    assert result["accuracy_fgsm_0.3"] < 0.5  # eps 0.3 breaks a softmax model


@pytest.mark.parametrize("defense", [("defense=fgsm",),
                                     ("defense=pgd", "defense.steps=3", "defense.step_size=0.1")])
def test_adversarial_training_makes_the_model_robust(trained: ClassifierFamily,
                                                     defense: tuple[str, ...]) -> None:
    """The same model, data, seed and steps: FGSM at eps 0.3 breaks the softmax trained on clean
    images (test_evaluate_metrics), not one trained against such attacks."""
    robust = train_on_blocks(*defense).evaluate()
    plain = trained.evaluate()
    assert plain["accuracy_fgsm_0.3"] < 0.5
    assert robust["accuracy"] >= 0.95 and robust["accuracy_fgsm_0.3"] >= 0.9, robust


def test_evaluate_with_pgd_names_and_rng(trained: ClassifierFamily) -> None:
    fam = family("model.eval_attack=pgd", "model.eval_eps=0.1",
                 "model.eval_steps=5", "eval.n_samples=100")
    fam.load_state_dict(trained.state_dict())
    fam.use_heldout(trained.heldout)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = fam.evaluate()
    visuals = fam.visuals()
    assert torch.equal(torch.get_rng_state(), before)
    assert set(first) == {"accuracy", "loss", "accuracy_pgd_0.1"}
    assert first["accuracy_pgd_0.1"] <= first["accuracy"]
    assert fam.evaluate() == first  # its own generator, reseeded: the same random starts
    assert set(visuals) == {"adversarial_examples"}


def test_evaluate_in_the_l2_ball(trained: ClassifierFamily) -> None:
    fam = family("model.eval_attack=pgd", "model.eval_norm=2", "model.eval_eps=6",
                 "model.eval_steps=5", "eval.n_samples=100")
    fam.load_state_dict(trained.state_dict())
    fam.use_heldout(trained.heldout)
    metrics = fam.evaluate()
    assert set(metrics) == {"accuracy", "loss", "accuracy_pgd_l2_6"}
    assert metrics["accuracy_pgd_l2_6"] < metrics["accuracy"]
    x = to_float(trained.heldout.x[:16], UNIT)
    adv = fam._adversary()(fam.model, x, trained.heldout.y[:16])
    assert (adv - x).flatten(1).norm(dim=1).max() <= 6 + 1e-4  # in the L2 ball
    assert (adv - x).flatten(1).norm(dim=1).max() > 0.9 * 6  # it uses the ball


@pytest.mark.skipif(importlib.util.find_spec("torchattacks") is None,
                    reason="needs torchattacks (the [attacks] extra)")
def test_evaluate_under_apgd_is_at_most_pgd(trained: ClassifierFamily) -> None:
    results = {}
    for method in ("pgd", "apgd"):
        fam = family(f"model.eval_attack={method}", "model.eval_eps=0.1", "model.eval_steps=10",
                     "eval.n_samples=100")
        fam.load_state_dict(trained.state_dict())
        fam.use_heldout(trained.heldout)
        results[method] = fam.evaluate()[f"accuracy_{method}_0.1"]
    assert results["apgd"] <= results["pgd"] + 0.02, results


def test_visuals(trained: ClassifierFamily) -> None:
    before = torch.get_rng_state()
    visuals = trained.visuals()
    assert torch.equal(torch.get_rng_state(), before)
    assert set(visuals) == {"adversarial_examples"}
    grid = visuals["adversarial_examples"]
    assert grid.dtype == torch.uint8 and grid.dim() == 3 and grid.shape[0] == 3
    # 16 clean + 16 adversarial images, 8 a row, 2 px padding
    assert tuple(grid.shape[1:]) == (4 * 30 + 2, 8 * 30 + 2)
    assert torch.equal(grid[0, 2:30, 2:30], trained.heldout.x[0, 0])  # first clean image
    adv = grid[0, 62:90, 2:30].int()  # first adversarial image, third row
    diff = (adv - trained.heldout.x[0, 0].int()).abs()
    assert 0 < diff.max() <= round(0.3 * 255) + 1


def test_state_dict_round_trip(trained: ClassifierFamily) -> None:
    other = family("model.lr=0.01", seed=99)
    x = trained.heldout.x[:20].float() / 255
    assert not torch.allclose(other.model(x), trained.model(x))
    other.load_state_dict(trained.state_dict())
    torch.testing.assert_close(other.model(x), trained.model(x), rtol=0, atol=0)
    assert other.opt.state_dict()["state"].keys() == trained.opt.state_dict()["state"].keys()


def test_no_heldout_means_no_metrics() -> None:
    fam = family()
    assert fam.heldout is None
    assert fam.evaluate() == {} and fam.visuals() == {}


# --- settings of another family -------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=lenet", "loss=wgan_gp"],
     "loss= applies to model=biggan,cgan,dcgan,gan3d,mlp_gan,progan, not to model=lenet"),
    (["model=softmax", "loss.gp_weight=5"], "loss.gp_weight applies to model=biggan,cgan,dcgan"),
    (["model=mlp", "model.d_steps=2"], "model.d_steps is not a setting of model=mlp"),
    (["model=dcgan", "defense=fgsm"], "defense= applies to model=lenet,mlp,softmax, not to "
                                      "model=dcgan"),
    (["model=dcgan", "model.eval_eps=0.1"], "model.eval_eps is not a setting of model=dcgan"),
    (["model=lenet", "model.eval_norm=2", "model.eval_attack=fgsm"],
     "model.eval_attack=fgsm is an L-inf attack"),
    (["model=lenet", "model.eval_eps=2.0"], "an L2 size? set model.eval_norm=2"),
    (["model=lenet", "defense.eps=0.1"], "defense.eps is not a setting of model=lenet's default"),
    (["model=lenet", "defense=mixup", "defense.eps=0.1"],
     "defense.eps is not a setting of defense=mixup"),
    (["model=lenet", "classifier.lr=0.1"], "classifier.lr is now model.lr"),
])
def test_a_setting_the_model_does_not_read_is_refused(overrides, message) -> None:
    from ganlab.preflight import check_overrides

    with pytest.raises(UserError) as err:
        check_overrides(overrides)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [("model=lenet", "model.lr=0.01"), ("model=lenet", "defense=pgd", "defense.eps=0.1"),
     ("model=dcgan", "model.lr_g=0.001"), ("model=dcgan", "loss=wgan_gp"), ("model=softmax",)],
)
def test_own_settings_pass(overrides: tuple[str, ...]) -> None:
    from ganlab.preflight import check_overrides

    check_overrides(list(overrides))


@pytest.mark.parametrize("model", ["softmax", "mlp", "lenet", "vae", "ae", "cyclegan"])
def test_a_run_config_holds_only_what_its_family_reads(model) -> None:
    (cfg,) = compose_all([f"model={model}"] + (["dataset=red2blue"] if model == "cyclegan"
                                                 else []))
    assert ("loss" in cfg) is False
    assert ("defense" in cfg) is (model in ("softmax", "mlp", "lenet"))
    assert not {"gan", "vae", "classifier", "cyclegan"} & set(cfg)


# --- held-out data -------------------------------------------------------------------------


def numbered(n: int) -> InMemoryDataset:
    """n examples whose single pixel is their index, labels index % 10."""
    spec = DataSpec("numbered", "image", (1, 1, 1), 10)
    x = torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1)
    return InMemoryDataset(spec, x, torch.arange(n) % 10, source="numbers", notes=["a note"])


def test_split_off_heldout() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    train = split_off_heldout(numbered(100))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1)
    again = split_off_heldout(numbered(100))
    held = train.heldout
    assert HELDOUT_FRACTION == 0.1
    assert len(train) == 90 and len(held) == 10
    train_ids, held_ids = set(train.x.flatten().tolist()), set(held.x.flatten().tolist())
    assert len(train_ids) == 90 and len(held_ids) == 10
    assert not train_ids & held_ids
    assert train_ids | held_ids == set(range(100))
    assert torch.equal(train.y, train.x.flatten().long() % 10)  # labels follow their images
    assert torch.equal(held.y, held.x.flatten().long() % 10)
    assert torch.equal(again.x, train.x) and torch.equal(again.heldout.x, held.x)
    assert held_ids != set(range(90, 100))  # random, not the tail
    assert train.notes == ["a note"] and held.heldout is None
    assert "10" in held.source and "numbers" in train.source


def test_split_off_heldout_too_small() -> None:
    assert len(split_off_heldout(numbered(2))) == 1
    with pytest.raises(UserError, match="too few"):
        split_off_heldout(numbered(1))


def t10k_images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (6, 28, 28), generator=g, dtype=torch.uint8)
    images[0] = 200  # constant: stays constant when resized
    return images, torch.tensor([1, 0, 1, 2, 9, 1])


def mnist_cfg(*overrides: str):
    return compose_cfg("model=lenet", "dataset=mnist", "dataset.source=bundled", *overrides).dataset


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    images, labels_ = t10k_images()
    for name, tensor in (("images", images), ("labels", labels_.to(torch.uint8))):
        path = tmp_path / f"{name}{suffix}"
        data = idx_bytes(tensor)
        path.write_bytes(gzip.compress(data) if suffix else data)
        back = read_idx(path)
        assert back.dtype == torch.uint8 and torch.equal(back, tensor)


def test_no_heldout_unless_asked(tmp_path: Path) -> None:
    images, labels_ = t10k_images()
    write_idx(tmp_path / "MNIST" / "raw", "t10k", images, labels_)
    data = build_dataset(mnist_cfg(), tmp_path, 0, heldout=False)
    assert data.heldout is None and len(data) == 5000
    synthetic = build_dataset(compose_cfg("dataset=synthetic").dataset, tmp_path, 0)
    assert synthetic.heldout is None and len(synthetic) == 512


@pytest.mark.parametrize("gz", [True, False])
def test_official_test_split_is_the_heldout(tmp_path: Path, gz: bool,
                                            no_download: list[str]) -> None:
    images, labels_ = t10k_images()
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "t10k", images, labels_, gz=gz)
    data = build_dataset(mnist_cfg(), tmp_path, 0, heldout=True)
    held = data.heldout
    assert len(data) == 5000  # the training digits are not split
    assert held.x.shape == (6, 1, 28, 28) and held.x.dtype == torch.uint8
    assert torch.equal(held.x[:, 0], images)
    assert held.y.dtype == torch.int64 and held.y.tolist() == labels_.tolist()
    assert "official test split" in held.source and str(raw) in held.source
    assert held.spec == data.spec
    assert no_download == []


def test_official_test_split_is_resized(tmp_path: Path) -> None:
    images, labels_ = t10k_images()
    write_idx(tmp_path / "MNIST" / "raw", "t10k", images, labels_)
    data = build_dataset(mnist_cfg("dataset.image_size=32"), tmp_path, 0, heldout=True)
    held = data.heldout
    assert held.x.shape == (6, 1, 32, 32) and data.x.shape[1:] == (1, 32, 32)
    assert torch.equal(held.x, resize_uint8(images.unsqueeze(1), 32))
    assert (held.x[0] == 200).all()


def test_official_test_split_keeps_classes(tmp_path: Path) -> None:
    images, labels_ = t10k_images()
    write_idx(tmp_path / "MNIST" / "raw", "t10k", images, labels_)
    data = build_dataset(mnist_cfg("dataset.classes=[1]"), tmp_path, 0, heldout=True)
    assert data.heldout.y.tolist() == [1, 1, 1]
    assert torch.equal(data.heldout.x[:, 0], images[[0, 2, 5]])
    assert len(data) == 500 and set(data.y.tolist()) == {1}


def test_without_test_files_a_slice_is_held_out(tmp_path: Path) -> None:
    data = build_dataset(mnist_cfg(), tmp_path, 0, heldout=True)
    assert len(data) == 4500 and len(data.heldout) == 500
    train_rows = {bytes(row) for row in data.x.flatten(1).numpy()}
    held_rows = {bytes(row) for row in data.heldout.x.flatten(1).numpy()}
    assert not train_rows & held_rows
    assert "official test split" not in data.heldout.source
    again = build_dataset(mnist_cfg(), tmp_path, 5, heldout=True)  # another trainer.seed
    assert torch.equal(again.heldout.x, data.heldout.x)


@pytest.mark.parametrize("which", ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
@pytest.mark.parametrize("gz", [True, False])
def test_corrupt_test_file_is_a_user_error(tmp_path: Path, which: str, gz: bool) -> None:
    images, labels_ = t10k_images()
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "t10k", images, labels_, gz=gz)
    g = torch.Generator().manual_seed(3)
    junk = torch.randint(1, 256, (300,), generator=g, dtype=torch.uint8).numpy().tobytes()
    (raw / f"{which}{'.gz' if gz else ''}").write_bytes(junk)
    with pytest.raises(UserError, match="not a readable IDX file"):
        build_dataset(mnist_cfg(), tmp_path, 0, heldout=True)


def test_truncated_test_file_is_a_user_error(tmp_path: Path) -> None:
    images, labels_ = t10k_images()
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "t10k", images, labels_, gz=False)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="IDX"):
        build_dataset(mnist_cfg(), tmp_path, 0, heldout=True)


def test_mismatched_test_files_are_a_user_error(tmp_path: Path) -> None:
    images, labels_ = t10k_images()
    write_idx(tmp_path / "MNIST" / "raw", "t10k", images, labels_[:4])
    with pytest.raises(UserError, match="do not match"):
        build_dataset(mnist_cfg(), tmp_path, 0, heldout=True)


def test_read_idx_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(UserError) as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("method", ["ifgsm", "pgd"])
def test_iterative_eval_attack_reaches_the_whole_eps_ball(method):
    """model.eval_attack=ifgsm|pgd at eval_eps must be an eps-sized attack: with 20
    steps of I-FGSM's own 1/255 it could move at most 0.078 and report a weak attack as 0.3."""
    cfg = compose_cfg("model=softmax", "dataset=synthetic", f"model.eval_attack={method}",
                      "model.eval_eps=0.3", "model.eval_steps=20")
    family = ClassifierFamily(cfg, SPEC, CPU)
    torch.manual_seed(0)
    x = 0.35 + 0.3 * torch.rand(16, 1, 28, 28)  # inside [0.3, 0.7]: clipping never binds
    adv = family._adversary()(family.model, x, torch.randint(0, 10, (16,)))
    assert (adv - x).abs().amax() >= 0.3 - 1e-6
