"""Model families, one module each, registered by `model.family`."""

from ganlab.families import autoencoder, classifier, gan  # noqa: F401  (register them)
from ganlab.families.base import FAMILIES, Family, check_family_sections

__all__ = ["FAMILIES", "Family", "check_family_sections"]
