"""A Gymnasium environment by id, its frames resized to size x size RGB (World Models resizes
CarRacing's 96x96 to 64x64). Gymnasium is optional: without it, or without the extra an
environment needs (box2d for CarRacing), one UserError says what to install."""

from __future__ import annotations

import numpy as np

from ganlab.errors import UserError


def make_gym(name: str, size: int, max_steps: int):
    try:
        import gymnasium
    except ImportError as e:
        raise UserError(f"env={name} is a Gymnasium environment and Gymnasium is not installed: "
                        f"pip install \"gymnasium[box2d]\" (or env=dodge, which needs "
                        "nothing)") from e
    try:
        env = gymnasium.make(name, render_mode="rgb_array", max_episode_steps=max_steps)
    except gymnasium.error.DependencyNotInstalled as e:
        raise UserError(f"env={name} needs a Gymnasium extra that is not installed "
                        f"({str(e).strip().splitlines()[0]}); e.g. pip install "
                        "\"gymnasium[box2d]\" for CarRacing") from e
    except gymnasium.error.Error as e:
        raise UserError(f"unknown environment env={name!r} ({str(e).strip().splitlines()[0]})"
                        ) from e
    return ResizedFrames(env, size)


class ResizedFrames:
    """Gymnasium's API, observations as size x size x 3 uint8 frames."""

    def __init__(self, env, size: int) -> None:
        from gymnasium.spaces import Box

        self.env, self.size = env, int(size)
        self.action_space = env.action_space
        self.observation_space = Box(0, 255, (self.size, self.size, 3), np.uint8)

    def _frame(self, obs) -> np.ndarray:
        from PIL import Image

        obs = np.asarray(obs)
        if obs.ndim != 3 or obs.shape[-1] != 3:  # not pixels: use what the env renders
            obs = np.asarray(self.env.render())
        if obs.shape[:2] != (self.size, self.size):
            obs = np.asarray(Image.fromarray(obs.astype(np.uint8)).resize(
                (self.size, self.size), Image.BILINEAR))
        return obs.astype(np.uint8)

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._frame(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._frame(obs), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()
