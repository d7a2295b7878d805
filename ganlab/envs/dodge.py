"""`env=dodge`: a small game in the spirit of VizDoom's take-cover (Ha & Schmidhuber's World
Models): the agent moves left or right along the floor while fireballs fall from the top;
reward 1 per step survived, the episode ends on a hit (terminated) or after max_steps
(truncated). Numpy only, seeded, rendered to size x size RGB uint8 frames (64 by default).

Gymnasium's API: reset(seed=) -> (obs, info), step(action) -> (obs, reward, terminated,
truncated, info), action_space Discrete(3) (0 left, 1 stay, 2 right) and observation_space
Box(0, 255, (size, size, 3), uint8); Gymnasium's own space classes when it is installed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ganlab.envs.spaces import box_space, discrete_space

# the world is the unit square (x right, y down); the agent stands on the floor
AGENT_HALF_WIDTH, AGENT_TOP, AGENT_BOTTOM = 0.08, 0.86, 0.96
AGENT_SPEED = 0.045  # per step: crossing the room takes about 20 steps
BALL_RADIUS = 0.055
BALL_SPEED = (0.02, 0.035)  # per step, drawn per ball: 25 to 45 steps from top to floor
SPAWN_PROBABILITY = 0.12  # per step
MAX_BALLS = 8

WALL, FLOOR = np.array([70, 60, 90], np.uint8), np.array([40, 35, 30], np.uint8)
AGENT, BALL, CORE = (np.array(c, np.uint8) for c in ([60, 200, 90], [240, 110, 30],
                                                      [255, 230, 120]))


class DodgeEnv:
    """Dodge the fireballs. All randomness comes from the generator reset(seed=) makes."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}
    render_mode = "rgb_array"

    def __init__(self, size: int = 64, max_steps: int = 300) -> None:
        self.size, self.max_steps = int(size), int(max_steps)
        self.action_space = discrete_space(3)
        self.observation_space = box_space(0, 255, (self.size, self.size, 3), np.uint8)
        centres = (np.arange(self.size) + 0.5) / self.size
        self._xx, self._yy = np.meshgrid(centres, centres)  # pixel centres in world units
        self._background = np.where((self._yy >= AGENT_BOTTOM)[..., None], FLOOR, WALL)
        self._rng = np.random.default_rng()
        self.agent_x = 0.5
        self.balls = np.zeros((0, 3))  # x, y, speed
        self.steps = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agent_x = 0.5
        self.balls = np.zeros((0, 3))
        self.steps = 0
        return self.render(), {}

    def step(self, action):
        a = int(action)
        if a not in (0, 1, 2):
            raise ValueError(f"dodge takes actions 0 (left), 1 (stay) or 2 (right), got {action!r}")
        self.agent_x = float(np.clip(self.agent_x + (a - 1) * AGENT_SPEED, AGENT_HALF_WIDTH,
                                     1 - AGENT_HALF_WIDTH))
        if len(self.balls):
            self.balls[:, 1] += self.balls[:, 2]
            self.balls = self.balls[self.balls[:, 1] - BALL_RADIUS < 1.0]
        # the draws are the same whatever the agent does: a seed fixes the fireballs
        spawn, x, speed = self._rng.random(), self._rng.random(), self._rng.uniform(*BALL_SPEED)
        if spawn < SPAWN_PROBABILITY and len(self.balls) < MAX_BALLS:
            x = BALL_RADIUS + x * (1 - 2 * BALL_RADIUS)
            self.balls = np.vstack([self.balls, [x, -BALL_RADIUS, speed]])
        self.steps += 1
        terminated = self.hit()
        truncated = not terminated and self.steps >= self.max_steps
        return self.render(), 1.0, terminated, truncated, {"steps": self.steps}

    def hit(self) -> bool:
        """A fireball overlaps the agent's box (circle against rectangle)."""
        if not len(self.balls):
            return False
        nearest_x = np.clip(self.balls[:, 0], self.agent_x - AGENT_HALF_WIDTH,
                            self.agent_x + AGENT_HALF_WIDTH)
        nearest_y = np.clip(self.balls[:, 1], AGENT_TOP, AGENT_BOTTOM)
        d2 = (self.balls[:, 0] - nearest_x) ** 2 + (self.balls[:, 1] - nearest_y) ** 2
        return bool((d2 < BALL_RADIUS**2).any())

    def render(self) -> np.ndarray:
        frame = self._background.copy()
        agent = ((np.abs(self._xx - self.agent_x) <= AGENT_HALF_WIDTH)
                 & (self._yy >= AGENT_TOP) & (self._yy <= AGENT_BOTTOM))
        frame[agent] = AGENT
        for x, y, _ in self.balls:
            d2 = (self._xx - x) ** 2 + (self._yy - y) ** 2
            frame[d2 < BALL_RADIUS**2] = BALL
            frame[d2 < (0.5 * BALL_RADIUS) ** 2] = CORE
        return frame

    def close(self) -> None:
        pass
