"""Networks, one module per architecture family, registered by config name when imported
(ganlab.plugins imports every module of this package)."""

from ganlab.models.base import MODELS, GanNetworks

__all__ = ["MODELS", "GanNetworks"]
