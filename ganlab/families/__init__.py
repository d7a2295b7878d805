"""Model families, one module each, registered by `model.family` when imported
(ganlab.plugins imports every module of this package)."""

from ganlab.families.base import FAMILIES, Family, check_family_data

__all__ = ["FAMILIES", "Family", "check_family_data"]
