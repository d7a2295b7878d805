"""Environments by name: ganlab's own games (ENVS) and, for any other name, Gymnasium's
registry (`CarRacing-v3` with `pip install "gymnasium[box2d]"`). Every environment has
Gymnasium's API and gives size x size RGB uint8 frames (Gymnasium's are resized)."""

from __future__ import annotations

from ganlab.envs.dodge import DodgeEnv
from ganlab.errors import UserError
from ganlab.registry import Registry


class _Games(Registry):
    """Filled by this package alone: no need to import every ganlab module first."""

    @staticmethod
    def _fill() -> None:
        pass


# name -> class(size=, max_steps=) with Gymnasium's API
ENVS: Registry = _Games("environment")
ENVS.register("dodge")(DodgeEnv)


def make_env(name: str, size: int = 64, max_steps: int = 300):
    """The environment called `name`; an unknown name or a missing extra is a UserError."""
    if name in ENVS:
        return ENVS.get(name)(size=size, max_steps=max_steps)
    if "-v" not in name:  # not a Gymnasium id (those end in -v<N>)
        raise UserError(f"unknown environment env={name!r}; choose one of: "
                        f"{', '.join(ENVS)}, or a Gymnasium id such as CarRacing-v3")
    from ganlab.envs.gym import make_gym

    return make_gym(name, size, max_steps)


__all__ = ["ENVS", "DodgeEnv", "make_env"]
