"""GAN losses against values worked out by hand, their stability, and the gradient penalty."""

from __future__ import annotations

import math

import pytest
import torch

from ganlab.losses import LOSSES, GanLoss, Targets, gradient_penalty

REAL = [2.0, -1.0]
FAKE = [0.5, -3.0]

STANDARD = Targets(real=1.0, fake=0.0)
FLIPPED = Targets(real=0.0, fake=1.0)  # the lecture's labels: D calls reals class 0
SMOOTHED = Targets(real=0.9, fake=0.0)  # one-sided label smoothing


# --- plain-math references ---------------------------------------------------------------


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def bce(x: float, t: float) -> float:
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], written out."""
    s = sigmoid(x)
    return -(t * math.log(s) + (1.0 - t) * math.log(1.0 - s))


def relu(x: float) -> float:
    return max(x, 0.0)


def as_list(t: float | list[float], n: int) -> list[float]:
    return list(t) if isinstance(t, list) else [t] * n


def tensor(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def make(name: str) -> GanLoss:
    return LOSSES.get(name)()


def losses(name: str, t: Targets, real=REAL, fake=FAKE) -> tuple[float, float]:
    loss = make(name)
    return (loss.d_loss(tensor(real), tensor(fake), t).item(), loss.g_loss(tensor(fake), t).item())


# --- the registry --------------------------------------------------------------------------


def test_registered_losses_are_exactly_the_six() -> None:
    assert set(LOSSES.names()) == {"minimax", "nonsaturating", "lsgan", "hinge", "wgan", "wgan_gp"}
    assert len(LOSSES.names()) == 6
    for name in LOSSES.names():
        assert issubclass(LOSSES.get(name), GanLoss)


def test_label_flags() -> None:
    uses = {name: make(name).uses_labels for name in LOSSES.names()}
    assert uses == {"minimax": True, "nonsaturating": True, "lsgan": True,
                    "hinge": False, "wgan": False, "wgan_gp": False}
    logits = {name for name in LOSSES.names() if make(name).outputs_logits}
    assert logits == {"minimax", "nonsaturating"}


# --- values on hand-picked logits ------------------------------------------------------------


def test_nonsaturating_values() -> None:
    d, g = losses("nonsaturating", STANDARD)
    # mean(-log sigmoid(r)) + mean(-log(1 - sigmoid(f))); G: mean(-log sigmoid(f))
    want_d = (mean([-math.log(1 / (1 + math.exp(-r))) for r in REAL])
              + mean([-math.log(1 - 1 / (1 + math.exp(-f))) for f in FAKE]))
    want_g = mean([-math.log(1 / (1 + math.exp(-f))) for f in FAKE])
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(want_g, rel=1e-12)
    # the numbers themselves (softplus form: -log sigmoid(x) = log(1 + e^-x)), so a wrong
    # reference cannot hide a wrong loss
    def sp(x: float) -> float:
        return math.log(1 + math.exp(x))

    assert d == pytest.approx((sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(-3)) / 2, rel=1e-12)
    assert d == pytest.approx(1.2314270, abs=1e-6)
    assert g == pytest.approx(1.7613322, abs=1e-6)


def test_minimax_values() -> None:
    d, g = losses("minimax", STANDARD)
    want_d = mean([bce(r, 1.0) for r in REAL]) + mean([bce(f, 0.0) for f in FAKE])
    want_g = mean([math.log(1 - sigmoid(f)) for f in FAKE])  # G minimises log(1 - D(G(z)))
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(want_g, rel=1e-12)
    assert g < 0
    # D's objective is the same as nonsaturating's; only G differs
    assert d == pytest.approx(losses("nonsaturating", STANDARD)[0], rel=1e-12)


def test_lsgan_values() -> None:
    d, g = losses("lsgan", STANDARD)
    want_d = 0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([f**2 for f in FAKE])
    want_g = 0.5 * mean([(f - 1) ** 2 for f in FAKE])
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(want_g, rel=1e-12)
    assert d == pytest.approx(0.25 * (1 + 4) + 0.25 * (0.25 + 9), rel=1e-12)  # 3.5625
    assert g == pytest.approx(0.25 * (0.25 + 16), rel=1e-12)  # 4.0625


def test_hinge_values() -> None:
    d, g = losses("hinge", STANDARD)
    want_d = mean([relu(1 - r) for r in REAL]) + mean([relu(1 + f) for f in FAKE])
    assert d == pytest.approx(want_d, rel=1e-12)
    assert d == pytest.approx(mean([0.0, 2.0]) + mean([1.5, 0.0]), rel=1e-12)  # 1.75
    assert g == pytest.approx(-mean(FAKE), rel=1e-12)  # 1.25


@pytest.mark.parametrize("name", ["wgan", "wgan_gp"])
def test_wasserstein_values(name: str) -> None:
    d, g = losses(name, STANDARD)
    assert d == pytest.approx(mean(FAKE) - mean(REAL), rel=1e-12)  # -1.25 - 0.5
    assert d == pytest.approx(-1.75, rel=1e-12)
    assert g == pytest.approx(-mean(FAKE), rel=1e-12)


@pytest.mark.parametrize("name", ["hinge", "wgan", "wgan_gp"])
@pytest.mark.parametrize("t", [FLIPPED, SMOOTHED, Targets(real=tensor([1.0, 0.0]), fake=0.3)])
def test_label_free_losses_ignore_targets(name: str, t: Targets) -> None:
    assert losses(name, t) == pytest.approx(losses(name, STANDARD), rel=1e-12)


# --- the lecture's flipped labels, smoothing, per-example targets ----------------------------


def test_flipped_labels_nonsaturating() -> None:
    d, g = losses("nonsaturating", FLIPPED)
    # D(x) = sigmoid(out) is now the probability of *fake*: reals are class 0
    want_d = (mean([-math.log(1 - sigmoid(r)) for r in REAL])
              + mean([-math.log(sigmoid(f)) for f in FAKE]))
    # G wants its fakes called real, i.e. class 0
    want_g = mean([-math.log(1 - sigmoid(f)) for f in FAKE])
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(want_g, rel=1e-12)
    # flipping the labels is the same as negating the logits under the standard labels
    neg = [-x for x in REAL], [-x for x in FAKE]
    assert (d, g) == pytest.approx(losses("nonsaturating", STANDARD, *neg), rel=1e-12)


def test_flipped_labels_minimax() -> None:
    d, g = losses("minimax", FLIPPED)
    want_d = mean([-math.log(1 - sigmoid(r)) for r in REAL]) + mean(
        [-math.log(sigmoid(f)) for f in FAKE])
    # log(1 - D(G(z))) with D(.) = P(fake) = sigmoid(out): log(1 - P(real)) = log sigmoid(f)
    want_g = mean([math.log(sigmoid(f)) for f in FAKE])
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(want_g, rel=1e-12)


def test_flipped_labels_lsgan() -> None:
    d, g = losses("lsgan", FLIPPED)
    want_d = 0.5 * mean([r**2 for r in REAL]) + 0.5 * mean([(f - 1) ** 2 for f in FAKE])
    want_g = 0.5 * mean([f**2 for f in FAKE])
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(want_g, rel=1e-12)


def test_smoothed_real_target() -> None:
    d, g = losses("nonsaturating", SMOOTHED)
    want_d = mean([-(0.9 * math.log(sigmoid(r)) + 0.1 * math.log(1 - sigmoid(r))) for r in REAL])
    want_d += mean([-math.log(1 - sigmoid(f)) for f in FAKE])
    want_g = mean([bce(f, 0.9) for f in FAKE])
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(want_g, rel=1e-12)
    # smoothing changes the real term only
    assert d != pytest.approx(losses("nonsaturating", STANDARD)[0], rel=1e-6)

    d, g = losses("minimax", SMOOTHED)
    assert d == pytest.approx(want_d, rel=1e-12)
    assert g == pytest.approx(mean([math.log(1 - sigmoid(f)) for f in FAKE]), rel=1e-12)

    d, g = losses("lsgan", SMOOTHED)
    assert d == pytest.approx(0.5 * mean([(r - 0.9) ** 2 for r in REAL])
                              + 0.5 * mean([f**2 for f in FAKE]), rel=1e-12)
    assert g == pytest.approx(0.5 * mean([(f - 0.9) ** 2 for f in FAKE]), rel=1e-12)


def test_per_example_tensor_targets() -> None:
    # label noise: the second real is flipped to fake, the first fake to real
    t_real, t_fake = [1.0, 0.0], [1.0, 0.0]
    t = Targets(real=tensor(t_real), fake=tensor(t_fake))

    d = make("nonsaturating").d_loss(tensor(REAL), tensor(FAKE), t).item()
    want = mean([bce(r, y) for r, y in zip(REAL, t_real, strict=False)]) + mean(
        [bce(f, y) for f, y in zip(FAKE, t_fake, strict=False)])
    assert d == pytest.approx(want, rel=1e-12)
    assert make("minimax").d_loss(tensor(REAL), tensor(FAKE), t).item() == pytest.approx(
        want, rel=1e-12)

    d = make("lsgan").d_loss(tensor(REAL), tensor(FAKE), t).item()
    want = 0.5 * mean([(r - y) ** 2 for r, y in zip(REAL, t_real, strict=False)]) + 0.5 * mean(
        [(f - y) ** 2 for f, y in zip(FAKE, t_fake, strict=False)])
    assert d == pytest.approx(want, rel=1e-12)


def test_per_example_targets_in_float32() -> None:
    # what the training loop passes: float32 logits with float32 per-example targets
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    t = Targets(real=torch.tensor([0.9, 0.0]), fake=torch.tensor([0.0, 1.0]))
    d = make("nonsaturating").d_loss(real, fake, t)
    want = mean([bce(2.0, 0.9), bce(-1.0, 0.0)]) + mean([bce(0.5, 0.0), bce(-3.0, 1.0)])
    assert d.dtype == torch.float32
    assert d.item() == pytest.approx(want, rel=1e-5)


# --- numerical stability -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES.names()))
@pytest.mark.parametrize("t", [STANDARD, FLIPPED, SMOOTHED])
def test_extreme_logits_give_finite_losses_and_gradients(name: str, t: Targets) -> None:
    loss = make(name)
    real = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    fake = torch.tensor([-100.0, 100.0, 100.0, -100.0], requires_grad=True)
    d = loss.d_loss(real, fake, t)
    g = loss.g_loss(fake, t)
    assert torch.isfinite(d) and torch.isfinite(g)
    d_real, d_fake = torch.autograd.grad(d, (real, fake))
    (g_fake,) = torch.autograd.grad(g, fake)
    for grad in (d_real, d_fake, g_fake):
        assert torch.isfinite(grad).all()


def test_extreme_logits_give_the_right_bce_values() -> None:
    # a confident, wrong D pays ~|logit| (not inf); a confident, right one pays ~0
    loss = make("nonsaturating")
    wrong = loss.d_loss(torch.tensor([-100.0]), torch.tensor([100.0]), STANDARD).item()
    right = loss.d_loss(torch.tensor([100.0]), torch.tensor([-100.0]), STANDARD).item()
    assert wrong == pytest.approx(200.0, rel=1e-6)
    assert right == pytest.approx(0.0, abs=1e-6)
    assert loss.g_loss(torch.tensor([-100.0]), STANDARD).item() == pytest.approx(100.0, rel=1e-6)
    assert make("minimax").g_loss(torch.tensor([100.0]), STANDARD).item() == pytest.approx(
        -100.0, rel=1e-6)
    # beyond 100: F.binary_cross_entropy on probabilities clamps log at -100, logits do not
    assert loss.g_loss(torch.tensor([-150.0]), STANDARD).item() == pytest.approx(150.0, rel=1e-6)
    assert loss.g_loss(torch.tensor([-150.0]), FLIPPED).item() == pytest.approx(0.0, abs=1e-6)


def test_extreme_logits_keep_their_gradient() -> None:
    # -log sigmoid(f) has slope -1 far left: a sigmoid-then-log loss would give 0 or nan there
    fake = torch.tensor([-150.0, -50.0], requires_grad=True)
    make("nonsaturating").g_loss(fake, STANDARD).backward()
    torch.testing.assert_close(fake.grad, torch.tensor([-0.5, -0.5]))
    real = torch.tensor([-150.0, 150.0], requires_grad=True)
    fake = torch.tensor([150.0, -150.0], requires_grad=True)
    make("nonsaturating").d_loss(real, fake, STANDARD).backward()
    torch.testing.assert_close(real.grad, torch.tensor([-0.5, 0.0]))
    torch.testing.assert_close(fake.grad, torch.tensor([0.5, 0.0]))


# --- saturation (Goodfellow et al. 2014, section 3) ------------------------------------------


def test_minimax_generator_saturates_where_nonsaturating_does_not() -> None:
    # D confidently rejects the fake: logit -10, D(G(z)) = sigmoid(-10) ~ 4.5e-5
    grads = {}
    for name in ("minimax", "nonsaturating"):
        fake = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
        make(name).g_loss(fake, STANDARD).backward()
        grads[name] = fake.grad.item()
    # d/df log(1 - sigmoid(f)) = -sigmoid(f); d/df -log sigmoid(f) = -(1 - sigmoid(f))
    assert abs(grads["minimax"]) < 1e-3
    assert grads["minimax"] == pytest.approx(-sigmoid(-10.0), rel=1e-9)
    assert grads["nonsaturating"] == pytest.approx(-(1 - sigmoid(-10.0)), rel=1e-9)
    assert abs(grads["nonsaturating"]) == pytest.approx(1.0, abs=1e-4)
    # both push the fake logit up (descent direction is +f)
    assert grads["minimax"] < 0 and grads["nonsaturating"] < 0


# --- gradient penalty ----------------------------------------------------------------------


def linear_critic(norm: float, dim: int = 12, seed: int = 0) -> tuple[torch.Tensor, object]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w = (w * (norm / w.norm())).requires_grad_(True)
    return w, lambda x: x.flatten(1) @ w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_penalty_of_a_linear_critic(seed: int) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    real = torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    fake = 10 * torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    # grad_x (x . w) = w everywhere, so the penalty is (||w|| - 1)^2 whatever the interpolates
    _, critic = linear_critic(3.0, seed=seed)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(4.0, rel=1e-12)
    _, critic = linear_critic(1.0, seed=seed)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-12)
    _, critic = linear_critic(0.5, seed=seed)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.25, rel=1e-12)


def test_gradient_penalty_is_differentiable_in_the_critic() -> None:
    real = torch.randn(4, 12, dtype=torch.float64)
    fake = torch.randn(4, 12, dtype=torch.float64)
    w, critic = linear_critic(3.0)
    gp = gradient_penalty(critic, real, fake)
    assert gp.requires_grad  # needs create_graph=True inside
    gp.backward()
    norm = w.detach().norm()
    want = 2 * (norm - 1) * w.detach() / norm  # d/dw (||w|| - 1)^2
    torch.testing.assert_close(w.grad, want, rtol=1e-10, atol=1e-12)
    assert w.grad.norm().item() == pytest.approx(4.0, rel=1e-10)  # 2 (3 - 1)


def test_gradient_penalty_of_a_quadratic_critic() -> None:
    # D(x) = sum x^2: grad = 2 x_hat. With real == fake every interpolate is that point.
    real = torch.tensor([[0.1, 0.2], [1.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    gp = gradient_penalty(lambda x: (x**2).sum(1), real, real.clone())
    norms = [2 * math.hypot(*row) for row in real.tolist()]  # 2 ||x||
    assert gp.item() == pytest.approx(mean([(n - 1) ** 2 for n in norms]), rel=1e-12)


def test_gradient_penalty_interpolates_per_example_between_real_and_fake() -> None:
    seen: list[torch.Tensor] = []

    def critic(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return x.flatten(1).sum(1)

    torch.manual_seed(0)
    real = torch.randn(64, 2, 3, 3, dtype=torch.float64)
    fake = torch.randn(64, 2, 3, 3, dtype=torch.float64)
    gradient_penalty(critic, real, fake)
    (x_hat,) = seen
    assert x_hat.shape == real.shape
    # x_hat = eps real + (1 - eps) fake with one eps in [0, 1] per example
    eps = ((x_hat - fake).flatten(1) / (real - fake).flatten(1))
    torch.testing.assert_close(eps, eps[:, :1].expand_as(eps), rtol=1e-8, atol=1e-8)
    eps = eps[:, 0]
    assert ((eps >= 0) & (eps <= 1)).all()
    assert eps.std() > 0.1  # a fresh draw per example, not one shared mix
