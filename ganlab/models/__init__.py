"""Networks, one module per architecture family, registered by config name."""

from ganlab.models import (  # noqa: F401  (register the architectures)
    autoencoders,
    classifiers,
    conditional,
    cyclegan,
    dcgan,
    mlp,
    progan,
)
from ganlab.models.base import MODELS, GanNetworks

__all__ = ["MODELS", "GanNetworks"]
