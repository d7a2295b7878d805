"""Random-policy rollouts, the data World Models learns its world from (and a GameGAN-style
model could learn its game engine from: every frame, the action taken there, the next frame).

On disk, a folder: meta.json (env, frame size, max_steps, seed, policy, action space) and one
episode_<i>.npz per episode with
    frames      uint8 (T+1, H, W, 3)  the observation before each step, and the last one
    actions     int64 (T,) for a discrete action space, float32 (T, A) otherwise
    rewards     float32 (T,)
    terminated  bool (T,)   the step ended the episode (a hit)
    truncated   bool (T,)   the step reached max_steps
Episode i resets the environment with seed `seed + i` and draws its actions from a generator
seeded (seed, i): the same command writes the same files.

Policies (Ha & Schmidhuber's random data): `hold` draws a random action and keeps it for 1 to
`hold` steps (VizDoom take-cover: random actions); `brownian` (continuous actions only,
CarRacing) lets the action wander, each step adding N(0, 0.25^2) noise within the bounds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING
from tqdm import tqdm

from ganlab.envs import make_env
from ganlab.envs.spaces import action_dim, is_discrete
from ganlab.errors import UserError

POLICIES = ("hold", "brownian")
META = "meta.json"


class RandomPolicy:
    def __init__(self, space, rng: np.random.Generator, policy: str = "hold", hold: int = 8):
        if policy not in POLICIES:
            raise UserError(f"unknown policy={policy!r}; choose one of: {', '.join(POLICIES)}")
        if policy == "brownian" and is_discrete(space):
            raise UserError("policy=brownian needs continuous actions; this environment's are "
                            "discrete: use policy=hold")
        self.space, self.rng, self.policy, self.hold = space, rng, policy, max(1, int(hold))
        self.action, self.left = None, 0
        if policy == "brownian":
            self.action = self.space.low + (self.space.high - self.space.low) / 2

    def __call__(self):
        if self.policy == "brownian":
            step = self.rng.normal(0.0, 0.25, self.space.shape)
            self.action = np.clip(self.action + step, self.space.low, self.space.high)
            return self.action.astype(np.float32)
        if self.left == 0:
            if is_discrete(self.space):
                self.action = int(self.rng.integers(self.space.n))
            else:
                u = self.rng.random(self.space.shape)
                self.action = (self.space.low + u * (self.space.high - self.space.low)
                               ).astype(np.float32)
            self.left = int(self.rng.integers(1, self.hold + 1))
        self.left -= 1
        return self.action


def play_episode(env, seed: int, policy) -> dict[str, np.ndarray]:
    """One episode under `policy` (a callable with no arguments), as the .npz arrays."""
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, terminated, truncated = [obs], [], [], [], []
    while True:
        action = policy()
        obs, reward, term, trunc, _ = env.step(action)
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        if term or trunc:
            break
    discrete = is_discrete(env.action_space)
    return {"frames": np.stack(frames).astype(np.uint8),
            "actions": np.asarray(actions, np.int64 if discrete else np.float32),
            "rewards": np.asarray(rewards, np.float32),
            "terminated": np.asarray(terminated, bool),
            "truncated": np.asarray(truncated, bool)}


def record(env_name: str, episodes: int, seed: int = 0, size: int = 64, max_steps: int = 300,
           policy: str = "hold", hold: int = 8, out: str | Path | None = None,
           progress: bool = True) -> list[dict[str, np.ndarray]]:
    """Play `episodes` random-policy episodes; with `out`, write them there (and return
    nothing kept in memory but the last)."""
    env = make_env(env_name, size=size, max_steps=max_steps)
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / META).write_text(json.dumps(
            {"env": env_name, "size": size, "max_steps": max_steps, "seed": seed,
             "policy": policy, "hold": hold, "episodes": episodes,
             "discrete_actions": is_discrete(env.action_space),
             "action_dim": action_dim(env.action_space)}, indent=2))
    kept = []
    for i in tqdm(range(episodes), desc=f"rollouts ({env_name})", unit="episode",
                  disable=not progress):
        rng = np.random.default_rng([seed, i])
        arrays = play_episode(env, seed + i, RandomPolicy(env.action_space, rng, policy, hold))
        if folder is None:
            kept.append(arrays)
        else:
            np.savez_compressed(folder / f"episode_{i:05d}.npz", **arrays)
    env.close()
    return kept


@dataclass
class Episodes:
    """Episodes concatenated: episode e owns frames[starts[e]:starts[e+1]], its T_e steps
    and one last frame. Per frame row: the action taken there (one-hot for discrete
    actions), its reward and whether that step ended the episode; the last frame's are 0."""

    frames: torch.Tensor  # uint8 (F, 3, H, W)
    actions: torch.Tensor  # float32 (F, A)
    rewards: torch.Tensor  # float32 (F,)
    dones: torch.Tensor  # float32 (F,): 1 where the step was terminal (a hit)
    starts: torch.Tensor  # int64 (E + 1,)
    env: str
    size: int
    max_steps: int
    discrete: bool
    source: str

    @property
    def n_episodes(self) -> int:
        return len(self.starts) - 1

    def lengths(self) -> torch.Tensor:
        return self.starts[1:] - self.starts[:-1] - 1


def concatenate(arrays: list[dict[str, np.ndarray]], env: str, discrete: bool, dim: int,
                max_steps: int, source: str) -> Episodes:
    if not arrays:
        raise UserError(f"{source}: no episodes")
    frames, actions, rewards, dones, starts = [], [], [], [], [0]
    for a in arrays:
        t = len(a["actions"])
        frames.append(torch.from_numpy(a["frames"]).permute(0, 3, 1, 2))
        act = torch.zeros(t + 1, dim)
        if discrete:
            act[torch.arange(t), torch.from_numpy(a["actions"]).long()] = 1.0
        else:
            act[:t] = torch.from_numpy(a["actions"]).float().reshape(t, dim)
        actions.append(act)
        rewards.append(torch.cat([torch.from_numpy(a["rewards"]).float(), torch.zeros(1)]))
        dones.append(torch.cat([torch.from_numpy(a["terminated"]).float(), torch.zeros(1)]))
        starts.append(starts[-1] + t + 1)
    x = torch.cat(frames).contiguous()
    if x.shape[2] != x.shape[3]:
        raise UserError(f"{source}: frames of {x.shape[2]}x{x.shape[3]} px; square frames only")
    return Episodes(x, torch.cat(actions), torch.cat(rewards), torch.cat(dones),
                    torch.tensor(starts), env, int(x.shape[2]), max_steps, discrete, source)


def read(folder: str | Path) -> Episodes:
    """A folder `record` wrote; a missing or empty one is a UserError."""
    folder = Path(folder).expanduser()
    meta_file = folder / META
    if not meta_file.is_file():
        raise UserError(f"{folder} holds no rollouts ({META} missing): record them with "
                        f"python -m ganlab rollouts env=dodge episodes=200 out={folder}")
    meta = json.loads(meta_file.read_text())
    files = sorted(folder.glob("episode_*.npz"))
    arrays = []
    for f in files:
        with np.load(f) as z:
            arrays.append({k: z[k] for k in z.files})
    sizes = {a["frames"].shape[1:3] for a in arrays}
    if len(sizes) > 1:
        raise UserError(f"{folder}: episodes of different frame sizes {sorted(sizes)}")
    return concatenate(arrays, meta["env"], bool(meta["discrete_actions"]),
                       int(meta["action_dim"]), int(meta["max_steps"]),
                       f"{len(files)} rollouts of {meta['env']} in {folder}")


@dataclass
class RolloutsCommand:
    """`python -m ganlab rollouts ...`."""

    out: str = MISSING  # the folder to write
    env: str = "dodge"  # dodge, or a Gymnasium id (CarRacing-v3)
    episodes: int = 200
    seed: int = 0
    size: int = 64  # frame side (Gymnasium frames are resized)
    max_steps: int = 300  # an episode is truncated there
    policy: str = "hold"  # hold | brownian
    hold: int = 8  # hold: an action lasts 1 to `hold` steps


def main(args: list[str]) -> None:
    """`python -m ganlab rollouts env=dodge episodes=N out=DIR [seed=0] [size=64]
    [max_steps=300] [policy=hold|brownian] [hold=8]`."""
    from ganlab.commandline import parse_options

    o = parse_options(RolloutsCommand, args, "rollouts")
    for key in ("episodes", "size", "max_steps", "hold"):
        if o[key] < 1:
            raise UserError(f"rollouts: {key}={o[key]} must be at least 1")
    record(o.env, o.episodes, o.seed, o.size, o.max_steps, o.policy, o.hold, o.out)
    print(f"{o.episodes} episodes of {o.env} written to {o.out}")
