"""Model families, one module each, registered by `model.family`."""

from ganlab.families import gan  # noqa: F401  (registers the family)
from ganlab.families.base import FAMILIES, Family

__all__ = ["FAMILIES", "Family"]
