"""ImageNet networks from torchvision whose weights are already on disk (nothing is downloaded):
DeepDream's networks, SRGAN's VGG19 content loss and SPADE's VGG19 perceptual loss."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ganlab.errors import UserError


def hub_weights_file(name: str) -> Path:
    """Where torchvision keeps the default weights of model `name` (torch's hub cache): the
    file its weights=DEFAULT would download."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


class Normalised(nn.Module):
    """[0, 1] images -> the network's expected input (ImageNet's mean and std)."""

    def __init__(self, network: nn.Module, mean, std) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)


def torchvision_network(name: str, weights_file: str | None, who: str
                        ) -> tuple[Normalised, int, int]:
    """(a [0, 1]-image network, channels, input side) from torchvision's weights on disk
    (`weights_file`, else the hub cache); errors are one line starting with `who`."""
    import torchvision

    try:
        builder_weights = torchvision.models.get_model_weights(name)
    except ValueError as e:
        raise UserError(f"{who}: torchvision has no model {name!r}; e.g. googlenet, vgg16, "
                        "resnet50, inception_v3") from e
    weights = builder_weights.DEFAULT
    path = Path(weights_file).expanduser() if weights_file else hub_weights_file(name)
    if not path.is_file():
        raise UserError(f"{who}: the weights of torchvision's {name} are not on disk: place "
                        f"{Path(weights.url).name} (from {weights.url}) at {path}, or give "
                        "weights=FILE")
    network = torchvision.models.get_model(name, weights=None, **_no_aux(name))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        # strict=False for the auxiliary heads the file has and this network leaves out;
        # every weight the network does have must be there
        missing = network.load_state_dict(state, strict=False).missing_keys
    except Exception as e:  # a corrupt or foreign file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{who}: {path} does not hold {name}'s weights ({first})") from e
    if missing:
        raise UserError(f"{who}: {path} does not hold {name}'s weights (missing "
                        f"{len(missing)}, e.g. {missing[0]})")
    transform = weights.transforms()
    side = int(transform.crop_size[0]) if hasattr(transform, "crop_size") else 224
    return Normalised(network, transform.mean, transform.std), 3, side


def _no_aux(name: str) -> dict:
    """googlenet and inception_v3 build auxiliary heads by default; the weights need not."""
    return {"aux_logits": False, "init_weights": False} if name in ("googlenet",
                                                                   "inception_v3") else {}
