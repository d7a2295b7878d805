"""`dataset=rollouts`: the frames of random-policy episodes (ganlab/envs/rollouts.py), the data
of model=worldmodel. Read from a folder `python -m ganlab rollouts` wrote (dataset.path), or
played in memory from dataset.env and the seed when no path is given (small runs, tests).

Examples are frames, uint8 (3, H, W); y is each frame's row in the concatenated episodes, so a
family that needs sequences (the MDN-RNN) finds a frame's episode from it. The last
dataset.heldout_fraction of the episodes (whole episodes) are held out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ganlab.config import one_of, ranged
from ganlab.data.base import DATASETS, DataSpec, InMemoryDataset
from ganlab.envs.rollouts import Episodes, read, record
from ganlab.envs.spaces import action_dim, is_discrete


@dataclass
class RolloutsDatasetConfig:
    name: str = "rollouts"
    path: str | None = None  # a folder of recorded rollouts; null: play them in memory
    env: str = "dodge"  # in memory: the environment (dodge, or a Gymnasium id)
    episodes: int = ranged(100, "[2, inf)")  # in memory: how many
    size: int = ranged(64, "[8, inf)")  # in memory: the frame side
    max_steps: int = ranged(300, "[1, inf)")  # in memory: episodes are truncated there
    policy: str = one_of("hold", "hold", "brownian")  # in memory: the random policy
    hold: int = ranged(8, "[1, inf)")  # in memory, policy=hold: an action lasts 1..hold steps
    heldout_fraction: float = ranged(0.1, "(0, 1)")  # the last episodes, kept out of training


def load_episodes(cfg, seed: int) -> Episodes:
    """The episodes a rollouts config names (read, or played with `seed`)."""
    if cfg.path:
        return read(cfg.path)
    from ganlab.envs import make_env

    arrays = record(cfg.env, int(cfg.episodes), seed, int(cfg.size), int(cfg.max_steps),
                    cfg.policy, int(cfg.hold), progress=False)
    space = make_env(cfg.env, size=int(cfg.size), max_steps=int(cfg.max_steps)).action_space
    return concatenate_played(arrays, cfg, space, seed)


def concatenate_played(arrays, cfg, space, seed: int) -> Episodes:
    from ganlab.envs.rollouts import concatenate

    return concatenate(arrays, cfg.env, is_discrete(space), action_dim(space),
                       int(cfg.max_steps),
                       f"{cfg.episodes} random-policy episodes of {cfg.env} played in memory "
                       f"(seed {seed})")


def heldout_episodes(episodes: Episodes, fraction: float) -> int:
    """How many of the last episodes are held out (at least one, and one is kept)."""
    n = episodes.n_episodes
    return min(n - 1, max(1, math.ceil(n * fraction)))


@DATASETS.register("rollouts", RolloutsDatasetConfig)
def build_rollouts(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    episodes = load_episodes(cfg, seed)
    if episodes.n_episodes < 2:
        from ganlab.errors import UserError

        raise UserError(f"{episodes.source}: {episodes.n_episodes} episode; at least 2 are "
                        "needed (one is held out)")
    split = int(episodes.starts[episodes.n_episodes - heldout_episodes(
        episodes, cfg.heldout_fraction)])
    spec = DataSpec("rollouts", "image", tuple(episodes.frames.shape[1:]))
    rows = torch.arange(len(episodes.frames))
    heldout = InMemoryDataset(spec, episodes.frames[split:], rows[split:],
                              f"{episodes.source}: the last episodes (frames {split:,} on), "
                              "kept out of training")
    return InMemoryDataset(spec, episodes.frames[:split], rows[:split], episodes.source,
                           heldout=heldout)
