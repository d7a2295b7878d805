"""Networks, one module per architecture family, registered by config name."""

from ganlab.models import classifiers, dcgan, mlp  # noqa: F401  (register the architectures)
from ganlab.models.base import MODELS, GanNetworks

__all__ = ["MODELS", "GanNetworks"]
