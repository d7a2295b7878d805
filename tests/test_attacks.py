"""White-box attacks: FGSM / PGD / I-FGSM against textbook formulas, and the attack contracts
(eval mode, no parameter gradients, untouched inputs, batch independence, the L-inf ball)."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import batch as image_batch
from omegaconf import OmegaConf
from torch import nn

from ganlab.attacks.gradient import (
    eval_mode,
    fgsm,
    ifgsm,
    input_gradient,
    kurakin_steps,
    pgd,
    pick_targets,
)
from ganlab.data.base import DataSpec
from ganlab.families.classifier import LenetConfig, MlpClassifierConfig, SoftmaxConfig
from ganlab.models.classifiers import build_lenet, build_mlp, build_softmax

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = DataSpec("t", "image", (1, 8, 8), 10)
N_CLASSES = SPEC.num_classes
# batch(n=8): n [0, 1] images of SPEC's shape and their labels, seed 1 by default
batch = functools.partial(image_batch, seed=1, shape=SPEC.shape, classes=N_CLASSES, floats=True)




def softmax_model(**overrides) -> nn.Module:
    return build_softmax(OmegaConf.structured(SoftmaxConfig(**overrides)), SPEC)


def mlp_model(dropout: float = 0.0) -> nn.Module:
    return build_mlp(OmegaConf.structured(MlpClassifierConfig(hidden=[32], dropout=dropout)), SPEC)


def lenet_model(dropout: float = 0.0) -> nn.Module:
    cfg = LenetConfig(channels=[4], hidden=[16], dropout=dropout)
    return build_lenet(OmegaConf.structured(cfg), SPEC)


BUILDERS = {"softmax": softmax_model, "mlp": mlp_model, "lenet": lenet_model}


def make_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[name]()




def ref_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The textbook input gradient of the summed cross-entropy, model in eval mode."""
    was_training = model.training
    model.eval()
    xr = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xr), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xr)
    model.train(was_training)
    return g


def ref_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
            steps: int, targeted: bool = False) -> torch.Tensor:
    """x_{t+1} = clip_[0,1](min(max(x_t +- alpha sign(g_t), x - eps), x + eps)) from x_0 = x."""
    adv = x.clone()
    for _ in range(steps):
        step = alpha * ref_grad(model, adv, y).sign()
        adv = adv - step if targeted else adv + step
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


class Recorder(nn.Module):
    """Identity that remembers the mode of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return x


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


ATTACKS = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, 0.1),
    "fgsm_targeted": lambda m, x, y: fgsm(m, x, y, 0.1, targeted=True),
    "pgd": lambda m, x, y: pgd(m, x, y, 0.1, 0.03, 4, generator=torch.Generator().manual_seed(0)),
    "bim": lambda m, x, y: pgd(m, x, y, 0.1, 0.03, 4, random_start=False),
    "pgd_targeted": lambda m, x, y: pgd(m, x, y, 0.1, 0.03, 4, targeted=True),
    "ifgsm": lambda m, x, y: ifgsm(m, x, y, 0.03, steps=3),
    "ifgsm_default_steps": lambda m, x, y: ifgsm(m, x, y, 4 / 255),
}


# --- 1. FGSM is the textbook formula -------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("eps", [0.03, 0.3])
def test_fgsm_equals_textbook_formula(name: str, eps: float) -> None:
    model = make_model(name)
    x, y = batch()
    g = ref_grad(model, x, y)
    expected = (x + eps * g.sign()).clamp(0, 1)
    assert torch.equal(fgsm(model, x, y, eps), expected)
    assert torch.equal(input_gradient(model, x, y), g)


def test_fgsm_uses_eval_mode_model_even_when_left_in_train_mode() -> None:
    # dropout active in train mode would change the gradient; the attack must use eval mode
    torch.manual_seed(0)
    model = mlp_model(dropout=0.5)
    model.train()
    x, y = batch()
    expected = (x + 0.1 * ref_grad(model, x, y).sign()).clamp(0, 1)
    for _ in range(3):
        assert torch.equal(fgsm(model, x, y, 0.1), expected)
    assert model.training


def test_fgsm_works_under_no_grad() -> None:
    model = make_model("mlp")
    x, y = batch()
    expected = fgsm(model, x, y, 0.1)
    expected_pgd = ref_pgd(model, x, y, 0.1, 0.03, 3)
    with torch.no_grad():
        assert torch.equal(fgsm(model, x, y, 0.1), expected)
        assert torch.equal(pgd(model, x, y, 0.1, 0.03, 3, random_start=False), expected_pgd)


@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (0.1307, 0.3081)])
def test_fgsm_sign_matches_analytic_softmax_gradient(mean: float, std: float) -> None:
    torch.manual_seed(0)
    model = softmax_model(input_mean=mean, input_std=std)
    x = 0.2 + 0.6 * torch.rand(16, *SPEC.shape)
    y = torch.randint(0, N_CLASSES, (16,))
    linear = model[-1]
    w, b = linear.weight.detach(), linear.bias.detach()
    flat = (x.flatten(1) - mean) / std
    p = torch.softmax(flat @ w.T + b, dim=1)
    analytic = ((p - F.one_hot(y, N_CLASSES).float()) @ w / std).view_as(x)

    assert torch.allclose(input_gradient(model, x, y), analytic, rtol=1e-4, atol=1e-6)
    eps = 0.05
    adv = fgsm(model, x, y, eps)
    sure = analytic.abs() > 1e-5
    assert sure.float().mean() > 0.99
    assert torch.equal((adv - x).sign()[sure], analytic.sign()[sure])
    # x is strictly inside (0, 1), so nothing is clipped: every pixel moves by eps exactly
    assert torch.allclose((adv - x).abs()[sure], torch.full_like(x[sure], eps), atol=1e-6)


def test_untargeted_fgsm_raises_every_loss_of_a_linear_model() -> None:
    # cross-entropy is convex in x for softmax regression: an unclipped signed step up the
    # gradient raises each example's loss by at least eps * |g|_1
    torch.manual_seed(0)
    model = softmax_model()
    x = 0.2 + 0.6 * torch.rand(32, *SPEC.shape)
    y = torch.randint(0, N_CLASSES, (32,))
    adv = fgsm(model, x, y, 0.05)
    with torch.no_grad():
        before = F.cross_entropy(model(x), y, reduction="none")
        after = F.cross_entropy(model(adv), y, reduction="none")
    assert (after > before).all()


# --- 2. PGD is the textbook loop -----------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_without_random_start_equals_textbook_loop(name: str, targeted: bool) -> None:
    model = make_model(name)
    x, y = batch()
    for eps, alpha, steps in [(0.1, 0.03, 5), (0.05, 0.1, 3), (0.3, 0.01, 1)]:
        expected = ref_pgd(model, x, y, eps, alpha, steps, targeted=targeted)
        got = pgd(model, x, y, eps, alpha, steps, random_start=False, targeted=targeted)
        assert torch.equal(got, expected), (eps, alpha, steps)


def test_pgd_one_step_from_x_is_fgsm() -> None:
    model = make_model("mlp")
    x, y = batch()
    for targeted in (False, True):
        assert torch.equal(pgd(model, x, y, 0.1, 0.1, 1, random_start=False, targeted=targeted),
                           fgsm(model, x, y, 0.1, targeted=targeted))


def test_ifgsm_is_pgd_from_x_with_grey_level_steps() -> None:
    model = make_model("softmax")
    x, y = batch()
    eps = 4 / 255
    steps = kurakin_steps(eps)
    assert steps == 5
    expected = ref_pgd(model, x, y, eps, 1 / 255, steps)
    assert torch.equal(ifgsm(model, x, y, eps), expected)
    assert torch.equal(ifgsm(model, x, y, 0.1, alpha=0.02, steps=3),
                       ref_pgd(model, x, y, 0.1, 0.02, 3))
    assert torch.equal(ifgsm(model, x, y, 0.1, alpha=0.02, steps=3, targeted=True),
                       ref_pgd(model, x, y, 0.1, 0.02, 3, targeted=True))


def test_pgd_steps_zero_without_random_start_returns_x() -> None:
    model = make_model("mlp")
    x, y = batch()
    assert torch.equal(pgd(model, x, y, 0.1, 0.03, 0, random_start=False), x)


# --- 3. targeted attacks -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_targeted_fgsm_descends_the_target_loss(name: str) -> None:
    model = make_model(name)
    x, _ = batch()
    target = torch.randint(0, N_CLASSES, (x.shape[0],), generator=torch.Generator().manual_seed(3))
    g = ref_grad(model, x, target)
    expected = (x - 0.1 * g.sign()).clamp(0, 1)
    assert torch.equal(fgsm(model, x, target, 0.1, targeted=True), expected)


def _trained_softmax() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Softmax regression fitted to separable data: one noisy prototype image per class (the
    prototypes close together, so the model is accurate but not saturated)."""
    torch.manual_seed(0)
    protos = 0.4 + 0.2 * torch.rand(N_CLASSES, *SPEC.shape)
    y = torch.arange(N_CLASSES).repeat(40)
    x = (protos[y] + 0.1 * torch.randn(y.shape[0], *SPEC.shape)).clamp(0, 1)
    model = softmax_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    yt = torch.arange(N_CLASSES).repeat(10)
    xt = (protos[yt] + 0.1 * torch.randn(yt.shape[0], *SPEC.shape)).clamp(0, 1)
    return model, xt, yt


def test_attacks_move_probabilities_the_right_way_on_a_trained_model() -> None:
    model, x, y = _trained_softmax()

    def probs(inp: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model(inp), dim=1).gather(1, cls[:, None]).squeeze(1)

    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95

    target = pick_targets(model, x, y, "random", N_CLASSES, torch.Generator().manual_seed(0))
    for eps in (0.02, 0.1):
        p_true, p_target = probs(x, y), probs(x, target)
        assert probs(fgsm(model, x, y, eps), y).mean() < p_true.mean() - 0.01
        assert probs(fgsm(model, x, target, eps, targeted=True), target).mean() \
            > p_target.mean() + 0.01
        adv = pgd(model, x, y, eps, eps / 4, 8, random_start=False)
        assert probs(adv, y).mean() < p_true.mean() - 0.01
        adv = pgd(model, x, target, eps, eps / 4, 8, targeted=True)
        assert probs(adv, target).mean() > p_target.mean() + 0.01

    # a big untargeted step breaks the model; a big targeted step hits the target often
    with torch.no_grad():
        assert (model(fgsm(model, x, y, 0.3)).argmax(1) == y).float().mean() < 0.5
        hit = model(pgd(model, x, target, 0.3, 0.05, 10, targeted=True)).argmax(1) == target
    assert hit.float().mean() > 0.5


# --- 4. eps = 0 ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "lenet"])
def test_eps_zero_returns_x_exactly(name: str) -> None:
    model = make_model(name)
    x, y = batch()
    x[0] = 0.0
    x[1] = 1.0
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    assert torch.equal(fgsm(model, x, y, 0.0, targeted=True), x)
    assert torch.equal(pgd(model, x, y, 0.0, 0.1, 5, random_start=False), x)
    assert torch.equal(pgd(model, x, y, 0.0, 0.1, 5, random_start=True), x)
    assert torch.equal(pgd(model, x, y, 0.0, 0.1, 5, targeted=True,
                           generator=torch.Generator().manual_seed(0)), x)
    assert kurakin_steps(0.0) == 0
    assert torch.equal(ifgsm(model, x, y, 0.0), x)
    assert torch.equal(ifgsm(model, x, y, 0.0, steps=5), x)


# --- 5. the L-inf ball and [0, 1] ----------------------------------------------------------


def _boundary_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch(12)
    x[0] = 0.0
    x[1] = 1.0
    x[2] = (torch.rand_like(x[2]) > 0.5).float()
    x[3, :, :4] = 0.0
    x[3, :, 4:] = 1.0
    x[4] = 0.01  # within eps of 0
    x[5] = 0.99
    return x, y


@pytest.mark.parametrize("name", ["softmax", "mlp", "lenet"])
def test_pgd_stays_in_ball_and_in_unit_box(name: str) -> None:
    model = make_model(name)
    x, y = _boundary_batch()
    for eps in (0.005, 0.03, 0.3, 1.0):
        for alpha, steps, random_start, targeted in ((eps / 4, 6, True, False),
                                                     (2 * eps, 2, True, True),
                                                     (0.5, 2, False, False),
                                                     (eps / 2, 3, False, True)):
            adv = pgd(model, x, y, eps, alpha, steps, random_start=random_start,
                      targeted=targeted)
            assert (adv - x).abs().max() <= eps + 1e-6
            assert adv.min() >= 0 and adv.max() <= 1
            assert adv.dtype == x.dtype and adv.shape == x.shape
        adv = fgsm(model, x, y, eps)
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        adv = ifgsm(model, x, y, eps, steps=3)
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_random_start_fills_the_ball() -> None:
    model = make_model("softmax")
    torch.manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(64, *SPEC.shape)
    y = torch.randint(0, N_CLASSES, (64,))
    eps = 0.1
    delta = pgd(model, x, y, eps, 0.01, 0, random_start=True) - x
    assert delta.abs().max() <= eps + 1e-6
    assert delta.abs().max() > 0.95 * eps
    assert delta.abs().min() < 0.05 * eps
    assert abs(delta.mean().item()) < 0.1 * eps
    assert (delta > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    # at the boundaries the start is clipped back into [0, 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    start = pgd(model, zeros, y, eps, 0.01, 0)
    assert start.min() >= 0 and start.max() <= eps + 1e-6 and start.max() > 0
    start = pgd(model, ones, y, eps, 0.01, 0)
    assert start.max() <= 1 and start.min() >= 1 - eps - 1e-6 and start.min() < 1


# --- 6. eval mode, and modes restored ------------------------------------------------------


def _recorded_model() -> tuple[nn.Module, Recorder]:
    torch.manual_seed(0)
    rec = Recorder()
    inner = nn.Sequential(rec, nn.Dropout(0.5))
    model = nn.Sequential(nn.Sequential(inner), mlp_model(dropout=0.3))
    return model, rec


def _mixed(model: nn.Module, case: str) -> None:
    if case == "train":
        model.train()
    elif case == "eval":
        model.eval()
    elif case == "train_with_eval_sub":
        model.train()
        model[0].eval()
        model[1][3].eval()
    elif case == "eval_with_train_sub":
        model.eval()
        model[0][0].train()
    else:  # pragma: no cover
        raise AssertionError(case)


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("case", ["train", "eval", "train_with_eval_sub", "eval_with_train_sub"])
def test_attack_runs_in_eval_mode_and_restores_modes(attack: str, case: str) -> None:
    model, rec = _recorded_model()
    _mixed(model, case)
    before = modes(model)
    if case.startswith("train"):
        assert any(before)
    if case != "train":
        assert not all(before)
    x, y = batch()
    ATTACKS[attack](model, x, y)
    assert rec.seen, "the attack never ran the model"
    assert not any(rec.seen), "the model was in train mode during the attack"
    assert modes(model) == before


@pytest.mark.parametrize("case", ["train", "train_with_eval_sub", "eval_with_train_sub"])
def test_pick_targets_least_likely_runs_in_eval_mode_and_restores(case: str) -> None:
    model, rec = _recorded_model()
    _mixed(model, case)
    before = modes(model)
    x, y = batch()
    pick_targets(model, x, y, "least_likely", N_CLASSES)
    assert rec.seen and not any(rec.seen)
    assert modes(model) == before


def test_eval_mode_restores_modes_after_an_exception() -> None:
    model, _ = _recorded_model()
    _mixed(model, "train_with_eval_sub")
    before = modes(model)
    with pytest.raises(RuntimeError, match="inside"), eval_mode(model):
        assert not any(modes(model))
        raise RuntimeError("inside")
    assert modes(model) == before

    boom = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), Boom())
    boom.train()
    boom[1].eval()
    before = modes(boom)
    x, y = batch()
    for call in (lambda: fgsm(boom, x, y, 0.1), lambda: pgd(boom, x, y, 0.1, 0.01, 2),
                 lambda: pick_targets(boom, x, y, "least_likely", N_CLASSES)):
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert modes(boom) == before


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_batchnorm_running_stats_untouched(attack: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Linear(16, N_CLASSES))
    model.train()
    # give the running stats something other than their initial values
    with torch.no_grad():
        model(torch.rand(32, *SPEC.shape))
    state = copy.deepcopy(model.state_dict())
    x, y = batch()
    ATTACKS[attack](model, x, y)
    after = model.state_dict()
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(value, after[key]), key
    assert model.training


# --- 7. no parameter gradients -------------------------------------------------------------


def _all_calls(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    for attack in ATTACKS.values():
        attack(model, x, y)
    input_gradient(model, x, y)
    pick_targets(model, x, y, "least_likely", N_CLASSES)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_no_parameter_gradient_is_accumulated(name: str) -> None:
    model = make_model(name)
    x, y = batch()
    _all_calls(model, x, y)
    for pname, p in model.named_parameters():
        assert p.grad is None, pname
        assert p.requires_grad, pname


@pytest.mark.parametrize("name", list(BUILDERS))
def test_preexisting_gradients_and_frozen_params_are_kept(name: str) -> None:
    model = make_model(name)
    params = list(model.parameters())
    params[0].requires_grad_(False)
    grads = {}
    for i, p in enumerate(params[1:], start=1):
        p.grad = torch.randn_like(p)
        grads[i] = p.grad.clone()
    flags = [p.requires_grad for p in params]
    x, y = batch()
    _all_calls(model, x, y)
    assert [p.requires_grad for p in params] == flags
    assert params[0].grad is None
    for i, g in grads.items():
        assert torch.equal(params[i].grad, g), i


# --- 8. the input is never modified --------------------------------------------------------


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_input_is_not_modified(attack: str, x_requires_grad: bool) -> None:
    model = make_model("lenet")
    x, y = _boundary_batch()
    x.requires_grad_(x_requires_grad)
    x_before, y_before = x.detach().clone(), y.clone()
    adv = ATTACKS[attack](model, x, y)
    assert torch.equal(x.detach(), x_before)
    assert torch.equal(y, y_before)
    assert x.requires_grad == x_requires_grad
    assert x.grad is None
    assert not adv.requires_grad and adv.grad_fn is None
    # the result is a tensor of its own: writing to it leaves x alone
    adv.zero_()
    assert torch.equal(x.detach(), x_before)


def test_result_never_aliases_the_input() -> None:
    # even when nothing moves (no steps, eps 0) the result is a new tensor, not x itself
    model = make_model("softmax")
    x, y = batch()
    x_before = x.clone()
    for adv in (pgd(model, x, y, 0.1, 0.03, 0, random_start=False),
                pgd(model, x, y, 0.0, 0.03, 2),
                fgsm(model, x, y, 0.0),
                ifgsm(model, x, y, 0.0)):
        assert torch.equal(adv, x_before)
        adv.add_(0.5)
        assert torch.equal(x, x_before)


def test_input_view_of_a_larger_tensor_is_not_modified() -> None:
    model = make_model("mlp")
    base, y = batch(16)
    base_before = base.clone()
    x = base[4:12]
    for attack in ATTACKS.values():
        attack(model, x, y[4:12])
    assert torch.equal(base, base_before)


# --- 9. batch independence -----------------------------------------------------------------


BATCH_ATTACKS = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, 0.1),
    "fgsm_targeted": lambda m, x, y: fgsm(m, x, y, 0.1, targeted=True),
    "bim": lambda m, x, y: pgd(m, x, y, 0.1, 0.03, 4, random_start=False),
    "bim_targeted": lambda m, x, y: pgd(m, x, y, 0.1, 0.03, 4, random_start=False,
                                        targeted=True),
}


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("attack", list(BATCH_ATTACKS))
def test_batch_equals_per_example(name: str, attack: str) -> None:
    model = make_model(name)
    x, y = batch(8)
    run = BATCH_ATTACKS[attack]
    whole = run(model, x, y)
    alone = torch.cat([run(model, x[i:i + 1], y[i:i + 1]) for i in range(x.shape[0])])
    assert torch.equal(whole, alone)


# --- 10. pick_targets ----------------------------------------------------------------------


def test_pick_targets_least_likely_is_argmin_of_eval_logits() -> None:
    torch.manual_seed(0)
    model = mlp_model(dropout=0.5)
    x, y = batch(32)
    model.eval()
    with torch.no_grad():
        expected = model(x).argmin(dim=1)
    model.train()
    for _ in range(3):
        got = pick_targets(model, x, y, "least_likely", N_CLASSES)
        assert torch.equal(got, expected)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_pick_targets_random_avoids_y_and_covers_the_rest() -> None:
    model = make_model("softmax")
    y = torch.arange(N_CLASSES).repeat(200)
    x = torch.rand(y.shape[0], *SPEC.shape)
    t = pick_targets(model, x, y, "random", N_CLASSES, torch.Generator().manual_seed(0))
    assert t.shape == y.shape and t.dtype == y.dtype
    assert (t != y).all()
    assert t.min() >= 0 and t.max() < N_CLASSES
    for c in range(N_CLASSES):
        seen = set(t[y == c].tolist())
        assert seen == set(range(N_CLASSES)) - {c}, c
    # roughly uniform over the other classes
    counts = torch.bincount(t[y == 0], minlength=N_CLASSES)[1:]
    assert counts.min() > 5 and counts.max() < 45


def test_pick_targets_random_is_seeded() -> None:
    model = make_model("softmax")
    x, y = batch(64)

    def draw(seed: int) -> torch.Tensor:
        return pick_targets(model, x, y, "random", N_CLASSES, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
    torch.manual_seed(3)
    a = pick_targets(model, x, y, "random", N_CLASSES)
    torch.manual_seed(3)
    b = pick_targets(model, x, y, "random", N_CLASSES)
    assert torch.equal(a, b)
    assert (a != y).all()
    # two classes: the only other class
    y2 = torch.randint(0, 2, (50,))
    t2 = pick_targets(model, x[:1].expand(50, -1, -1, -1), y2, "random", 2)
    assert torch.equal(t2, 1 - y2)


@pytest.mark.parametrize("target", [0, 3, 9, "4"])
def test_pick_targets_number_gives_that_class(target: int | str) -> None:
    model = make_model("softmax")
    x, y = batch(16)
    t = pick_targets(model, x, y, target, N_CLASSES)
    assert t.shape == y.shape and t.dtype == y.dtype
    assert (t == int(target)).all()


@pytest.mark.parametrize("target", [10, -1, 100, "10", "-1", "foo", "", "leastlikely", "Random"])
def test_pick_targets_rejects_bad_targets(target: int | str) -> None:
    model = make_model("softmax")
    x, y = batch(4)
    with pytest.raises(ValueError):
        pick_targets(model, x, y, target, N_CLASSES)


# --- 11. bad arguments ---------------------------------------------------------------------


def test_negative_eps_raises_value_error() -> None:
    model = make_model("softmax")
    x, y = batch(4)
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, y, -0.1, 0.01, 3)
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, y, -1e-9, 0.01, 3, random_start=False)
    with pytest.raises(ValueError, match="eps"):
        ifgsm(model, x, y, -0.1)
    with pytest.raises(ValueError):
        pgd(model, x, y, 0.1, -0.01, 3)
    with pytest.raises(ValueError):
        pgd(model, x, y, 0.1, 0.01, -1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_input_raises_type_error(dtype: torch.dtype) -> None:
    model = make_model("softmax")
    x, y = batch(4)
    xi = (x * 255).to(dtype)
    with pytest.raises(TypeError):
        fgsm(model, xi, y, 0.1)
    with pytest.raises(TypeError):
        pgd(model, xi, y, 0.1, 0.01, 3)
    with pytest.raises(TypeError):
        ifgsm(model, xi, y, 0.1)


# --- 12. kurakin_steps ---------------------------------------------------------------------


@pytest.mark.parametrize(("eps", "steps"), [
    (0.3, 81),  # min(80.5, 95.625)
    (0.1, 30),  # min(29.5, 31.875)
    (0.01, 4),  # min(6.55, 3.1875)
    (1 / 255, 2),  # min(5, 1.25)
    (4 / 255, 5),  # min(8, 5)
    (8 / 255, 10),  # min(12, 10): exact, no float round-up
    (16 / 255, 20),  # min(20, 20)
    (0.0, 0),
])
def test_kurakin_steps(eps: float, steps: int) -> None:
    assert kurakin_steps(eps) == steps


def test_kurakin_steps_on_every_grey_level() -> None:
    for k in range(256):
        # 255 * (k / 255) in pixel units; the paper's min(eps + 4, 1.25 eps), rounded up
        exact = min(4 * k + 16, 5 * k)  # 4x the paper's formula, in integers
        assert kurakin_steps(k / 255) == math.ceil(exact / 4), k


# --- 13. reproducibility -------------------------------------------------------------------


def test_pgd_seeded_generator_is_reproducible() -> None:
    model = make_model("mlp")
    x, y = batch()

    def run(seed: int, steps: int = 3) -> torch.Tensor:
        return pgd(model, x, y, 0.1, 0.02, steps, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert not torch.equal(run(0, steps=0), run(1, steps=0))
    # the generator, not the global RNG, draws the start
    torch.manual_seed(100)
    a = run(5)
    torch.manual_seed(200)
    assert torch.equal(run(5), a)
    # without a generator, the global RNG does
    torch.manual_seed(9)
    b = pgd(model, x, y, 0.1, 0.02, 3)
    torch.manual_seed(9)
    assert torch.equal(pgd(model, x, y, 0.1, 0.02, 3), b)
    # random start differs from the basic iterative method
    assert not torch.equal(b, pgd(model, x, y, 0.1, 0.02, 3, random_start=False))
