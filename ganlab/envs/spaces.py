"""Gymnasium's Discrete and Box spaces when Gymnasium is installed, tiny stand-ins otherwise
(ganlab does not need Gymnasium for its own game)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Discrete:
    """Stand-in for gymnasium.spaces.Discrete: actions 0 .. n-1."""

    n: int

    def sample(self, rng: np.random.Generator | None = None) -> int:
        return int((rng or np.random.default_rng()).integers(self.n))

    def contains(self, x) -> bool:
        return isinstance(x, (int, np.integer)) and 0 <= int(x) < self.n


@dataclass
class Box:
    """Stand-in for gymnasium.spaces.Box."""

    low: np.ndarray
    high: np.ndarray
    shape: tuple[int, ...]
    dtype: type

    def sample(self, rng: np.random.Generator | None = None) -> np.ndarray:
        u = (rng or np.random.default_rng()).random(self.shape)
        return (self.low + u * (self.high - self.low)).astype(self.dtype)

    def contains(self, x) -> bool:
        x = np.asarray(x)
        return x.shape == self.shape and bool(((x >= self.low) & (x <= self.high)).all())


def discrete_space(n: int):
    try:
        from gymnasium.spaces import Discrete as GymDiscrete
    except ImportError:
        return Discrete(n)
    return GymDiscrete(n)


def box_space(low, high, shape: tuple[int, ...], dtype):
    try:
        from gymnasium.spaces import Box as GymBox
    except ImportError:
        return Box(np.full(shape, low, dtype), np.full(shape, high, dtype), tuple(shape), dtype)
    return GymBox(low, high, shape, dtype)


def is_discrete(space) -> bool:
    """Discrete (ours or Gymnasium's): it has `n` and no shape worth a vector."""
    return hasattr(space, "n") and not hasattr(space, "low")


def action_dim(space) -> int:
    """The width of an action as the world model sees it: one-hot for discrete actions."""
    return int(space.n) if is_discrete(space) else int(np.prod(space.shape))
