"""Model families, one module each, registered by `model.family`."""

from ganlab.families import (  # noqa: F401  (register them)
    autoencoder,
    classifier,
    cyclegan,
    gan,
    progan,
)
from ganlab.families.base import FAMILIES, Family, check_family_data, check_family_sections

__all__ = ["FAMILIES", "Family", "check_family_data", "check_family_sections"]
