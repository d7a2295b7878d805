"""Model families, one module each, registered by `model.family`."""

from ganlab.families.base import FAMILIES, Family
from ganlab.families import gan  # noqa: F401  (registers the family)

__all__ = ["FAMILIES", "Family"]
