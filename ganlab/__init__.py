"""ganlab: a config-driven lab for generative and adversarial deep learning in PyTorch."""

__version__ = "0.1.0"


def load_checkpoint(path, device="cpu"):
    """The trained family of a checkpoint file or run dir, networks in eval mode."""
    from ganlab.checkpoint import load_checkpoint as _load

    return _load(path, device)


__all__ = ["__version__", "load_checkpoint"]
