"""Physical-world attacks: Expectation over Transformation (Athalye et al. 2018) and the
adversarial patch (Brown et al. 2017), as plain functions on [0, 1] image batches.

EOT is PGD on the loss averaged over random transformations (rotation, scale, translation,
brightness, Gaussian noise), so the perturbation survives them. The patch is one universal
image, pasted at random places, angles and sizes onto training images while gradient descent
pushes every patched image towards one target class.

Both keep the rules of ganlab's other attacks: the model runs in eval mode and gets its modes
back, no parameter gradient is accumulated (torch.autograd.grad asks for the input's or the
patch's gradient only), the input is never modified and results are clipped to [0, 1]. EOT is
batch-independent: each step's transformations are drawn from `seed` and shared by the whole
batch (as is the random start), so an image's result is the same in any batch.

Why EOT is written here rather than wrapped from torchattacks' EOTPGD: EOTPGD only averages
gradients over repeated calls of a stochastic model. The transformations, which are the
substance of EOT, would still have to be written here (as a random model wrapper drawing from
the global RNG, per image, so that an image's result would depend on its batch); what is left
is PGD, which ganlab has. With all ranges 0 (no transformation) `eot` equals ganlab's `pgd`
and torchattacks' EOTPGD (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.attacks.gradient import _check, _project, eval_mode


@dataclass(frozen=True)
class Transforms:
    """EOT's distribution of transformations, each parameter uniform in its range (Athalye et
    al. 2018, Table 4, the 2-D case). The image is its own canvas (zeros outside it), so the
    paper's "any in-bounds" translation becomes a shift of up to `translate` of the image's
    width and height."""

    rotation: float = 22.5  # degrees, in [-rotation, rotation]
    scale: tuple[float, float] = (0.9, 1.4)  # zoom (> 1 enlarges the content)
    translate: float = 0.1  # shift, a fraction of the image size, in [-translate, translate]
    brightness: float = 0.05  # added to every pixel (lighten / darken), in [-b, b]
    noise: float = 0.1  # Gaussian noise with a standard deviation drawn from [0, noise]

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"scale must be a range 0 < min <= max, got {self.scale}")
        for name in ("rotation", "translate", "brightness", "noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


NO_TRANSFORMS = Transforms(0.0, (1.0, 1.0), 0.0, 0.0, 0.0)


def clip_straight_through(x: torch.Tensor) -> torch.Tensor:
    """x clipped to [0, 1], with the gradient of the identity. torch's clamp passes no
    gradient at 0 and 1 themselves, so a pixel an attack has pushed to black or white would
    never move again (MNIST's background is exactly 0); as in Athalye et al.'s BPDA, the
    clip is treated as the identity on the way back."""
    return x + (x.clamp(0, 1) - x).detach()


def sample_transforms(n: int, t: Transforms, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """n draws of the transformation parameters, each a tensor of shape (n,)."""
    def uniform(low: float, high: float) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=_device(generator, device))
        return (low + (high - low) * u).to(device)

    return {"angle": uniform(-t.rotation, t.rotation), "scale": uniform(*t.scale),
            "tx": uniform(-t.translate, t.translate), "ty": uniform(-t.translate, t.translate),
            "brightness": uniform(-t.brightness, t.brightness), "noise": uniform(0, t.noise)}


def _device(generator: torch.Generator | None, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def _rotation(angle_deg: torch.Tensor) -> torch.Tensor:
    """(n, 2, 2) rotation matrices."""
    a = angle_deg * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def apply_transforms(x: torch.Tensor, params: dict[str, torch.Tensor],
                     noise: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, C, H, W) rotated, zoomed and shifted (bilinear, zeros outside the image),
    brightened and noised, clipped to [0, 1] (clip_straight_through); differentiable in x.
    params: sample_transforms' tensors of shape (N,) or (1,); noise: standard normal noise
    broadcastable to x (scaled by each draw's standard deviation), or None for none. Without
    rotation, zoom or shift the image is not resampled (no interpolation rounding)."""
    n = x.shape[0]
    dtype = x.dtype

    def column(name: str) -> torch.Tensor:
        return params[name].to(x.device, dtype).expand(n)

    out = x
    if (params["angle"] != 0).any() or (params["scale"] != 1).any() or \
            (params["tx"] != 0).any() or (params["ty"] != 0).any():
        out = _warp(x, column("angle"), column("scale"), column("tx"), column("ty"))
    out = out + column("brightness").view(n, 1, 1, 1)
    if noise is not None:
        out = out + column("noise").view(n, 1, 1, 1) * noise
    return clip_straight_through(out)


def _warp(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor,
          ty: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    dtype = x.dtype
    # output pixel p -> input pixel R^-1 (p - shift) / scale, in normalised coordinates with
    # the aspect ratio taken out (so a rotation of a non-square image stays a rotation)
    aspect = torch.tensor([w / 2, h / 2], device=x.device, dtype=dtype)
    inverse = _rotation(-angle) / scale.view(n, 1, 1)
    linear = inverse * aspect.view(1, 1, 2) / aspect.view(1, 2, 1)
    shift = torch.stack([2 * tx, 2 * ty], dim=1)
    theta = torch.cat([linear, -(linear @ shift.unsqueeze(2))], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def eot(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
        steps: int, transforms: Transforms = Transforms(), samples: int = 10,
        random_start: bool = True, targeted: bool = False, seed: int = 0) -> torch.Tensor:
    """Athalye et al.'s Expectation over Transformation with an L-inf budget: PGD steps of
    alpha along sign(sum over `samples` random transformations t of grad_x J(t(x'), y)),
    projected onto the eps-ball around x and onto [0, 1] after every step.

    Each step draws `samples` transformations (and noise images) from `seed`, each applied to
    the whole batch; random_start: a uniform start in the ball, one pattern for every image.
    targeted=True: y holds the targets and the steps descend their loss."""
    _check(x, eps)
    if steps < 0 or alpha < 0 or samples < 1:
        raise ValueError(f"steps and alpha must be >= 0 and samples >= 1, got {steps}, "
                         f"{alpha} and {samples}")
    generator = torch.Generator(x.device).manual_seed(seed)
    x0 = x.detach()
    adv = x0.clone()
    if random_start:
        start = torch.empty_like(x0[:1]).uniform_(-eps, eps, generator=generator)
        adv = (adv + start).clamp(0, 1)
    with eval_mode(model):
        for _ in range(steps):
            grad = expected_gradient(model, adv, y, transforms, samples, generator)
            adv = adv - alpha * grad.sign() if targeted else adv + alpha * grad.sign()
            adv = _project(adv, x0, eps, "inf").clamp(0, 1)
    return adv


def expected_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: Transforms,
                      samples: int, generator: torch.Generator) -> torch.Tensor:
    """The sum over `samples` random transformations (shared by the batch) of the gradient of
    the summed cross-entropy at the transformed x; each row is its own example's."""
    total = torch.zeros_like(x)
    for params in _shared_draws(samples, t, generator, x):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            noise = torch.randn(x[:1].shape, generator=generator, device=x.device,
                                dtype=x.dtype) if t.noise > 0 else None
            loss = F.cross_entropy(model(apply_transforms(xr, params, noise)), y,
                                   reduction="sum")
            (grad,) = torch.autograd.grad(loss, xr)
        total += grad
    return total


def _shared_draws(samples: int, t: Transforms, generator: torch.Generator, x: torch.Tensor):
    params = sample_transforms(samples, t, generator, x.device)
    for i in range(samples):
        yield {k: v[i : i + 1] for k, v in params.items()}


# --- the adversarial patch -------------------------------------------------------------------


def patch_side(shape: tuple[int, ...], size: float) -> int:
    """The side in pixels of a square patch covering `size` of the image's area."""
    if not 0 < size <= 1:
        raise ValueError(f"the patch size is a share of the image's area in (0, 1], got {size}")
    h, w = shape[-2:]
    side = max(1, round(math.sqrt(size * h * w)))
    if side > min(h, w):
        raise ValueError(f"a patch of {size:g} of the area ({side}x{side} pixels) is larger "
                         f"than the {h}x{w} image")
    return side


def random_placements(n: int, image_hw: tuple[int, int], side: int, rotation: float,
                      scale: tuple[float, float], generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """n random placements of a side x side patch: a size factor from `scale`, an angle in
    [-rotation, rotation] degrees, and a centre (in pixels) where the scaled patch, unrotated,
    lies inside the image."""
    h, w = image_hw
    dev = _device(generator, device)

    def uniform(low: float | torch.Tensor, high: float | torch.Tensor) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=dev)

    if side * max(scale) > min(h, w) + 1e-6:
        raise ValueError(f"the patch at scale {max(scale):g} ({side * max(scale):.1f} pixels) "
                         f"is larger than the {h}x{w} image")
    factor = uniform(*scale)
    half = side * factor / 2
    placements = {"scale": factor, "angle": uniform(-rotation, rotation),
                  "cx": uniform(half, w - half), "cy": uniform(half, h - half)}
    return {k: v.to(device) for k, v in placements.items()}


def place_patch(x: torch.Tensor, patch: torch.Tensor,
                placements: dict[str, torch.Tensor]) -> torch.Tensor:
    """x (N, C, H, W) with the patch (C, s, s) pasted on each image at its placement (bilinear;
    edge pixels blend), differentiable in the patch. Pixels the placed patch does not cover are
    x's own."""
    n, c, h, w = x.shape
    if patch.dim() != 3 or patch.shape[0] != c or patch.shape[1] != patch.shape[2]:
        raise ValueError(f"the patch must be a square ({c}, s, s) image, got "
                         f"{tuple(patch.shape)}")
    dtype = x.dtype

    def column(name: str) -> torch.Tensor:
        return placements[name].to(x.device, dtype).expand(n)

    # output pixel p (image coordinates, pixels) -> patch coordinates R^-1 (p - centre) / half
    half = (patch.shape[-1] * column("scale") / 2).view(n, 1, 1)
    inverse = _rotation(-column("angle")) / half
    to_pixels = torch.tensor([w / 2, h / 2], device=x.device, dtype=dtype)
    linear = inverse * to_pixels.view(1, 1, 2)  # normalised output coords -> patch coords
    offset = torch.stack([w / 2 - column("cx"), h / 2 - column("cy")], dim=1).unsqueeze(2)
    theta = torch.cat([linear, inverse @ offset], dim=2)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    content = torch.cat([patch.to(dtype).expand(n, c, *patch.shape[1:]),
                         torch.ones(n, 1, *patch.shape[1:], device=x.device, dtype=dtype)], 1)
    warped = F.grid_sample(content, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    mask = warped[:, c:]
    # where the mask is 0 this is x exactly (the pixels the patch does not touch)
    return torch.where(mask > 0, clip_straight_through(x * (1 - mask) + warped[:, :c]), x)


def train_patch(model: nn.Module, x: torch.Tensor, target: int, size: float = 0.1,
                rotation: float = 22.5, scale: tuple[float, float] = (0.8, 1.2),
                steps: int = 1000, batch_size: int = 16, lr: float = 1.25,
                seed: int = 0) -> torch.Tensor:
    """Brown et al.'s universal targeted patch (C, s, s) in [0, 1], s x s covering `size` of the
    image area: gradient descent on the mean cross-entropy towards `target` of random batches
    of x (the training images), each image patched at a random placement (random_placements:
    size factor `scale`, angle within `rotation`), clipped to [0, 1] after every step. It starts
    grey, as the reference code's (zeros in [-1, 1]); lr 1.25 is its 5.0 in [-1, 1] units."""
    if steps < 0 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps must be >= 0, batch_size >= 1 and lr > 0, got {steps}, "
                         f"{batch_size} and {lr}")
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got {x.dtype}")
    side = patch_side(x.shape, size)
    classes = _num_classes(model, x)
    if not 0 <= target < classes:
        raise ValueError(f"target class {target} is not one of 0..{classes - 1}")
    generator = torch.Generator(x.device).manual_seed(seed)
    patch = torch.full((x.shape[1], side, side), 0.5, device=x.device, dtype=x.dtype)
    data = x.detach()
    with eval_mode(model):
        for _ in range(steps):
            idx = torch.randint(0, len(data), (batch_size,), generator=generator,
                                device=x.device)
            where = random_placements(batch_size, x.shape[-2:], side, rotation, scale,
                                      generator, x.device)
            labels = torch.full((batch_size,), target, device=x.device, dtype=torch.long)
            with torch.enable_grad():
                p = patch.detach().requires_grad_(True)
                loss = F.cross_entropy(model(place_patch(data[idx], p, where)), labels)
                (grad,) = torch.autograd.grad(loss, p)
            patch = (patch - lr * grad).clamp(0, 1)
    return patch.detach()


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), eval_mode(model):
        return model(x[:1]).shape[1]
