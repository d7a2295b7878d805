"""`python -m ganlab play ckpt=RUN actions=2*8,1*4,0*8 out=play.gif`: the learned game.

A GameGAN run (capabilities.Player) renders the frames that follow a first frame under a
scripted action sequence: the first frame is the real game's (its environment reset with
`seed`), then every frame is the model's own. With compare=true (the default) the real game
plays the same actions beside it (dodge's fireballs depend on the seed only, so the real
frames are what those actions do) until it ends. out=FILE.gif gets the animation; out=FILE.png
a strip of the frames (rows of `nrow`: the real game's row, then the model's).

actions: comma-separated action numbers, `A*N` repeating A N times (dodge: 0 left, 1 stay,
2 right), or a list ([0,0,2]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, OmegaConf

from ganlab.commandline import parse_options
from ganlab.errors import UserError

MAX_ACTIONS = 10_000
EXAMPLE = "actions=2*8,1*4,0*8"


@dataclass
class PlayConfig:
    ckpt: str = MISSING  # a gamegan run dir or checkpoint
    actions: Any = MISSING  # e.g. 2*8,1*4,0*8 (dodge: 0 left, 1 stay, 2 right)
    out: str = "play.gif"  # .gif animation or .png strip
    seed: int = 0  # the first frame (the game reset with this seed) and the model's noise
    compare: bool = True  # the real game beside the model, under the same actions
    fps: int = 10  # .gif: frames per second
    nrow: int = 16  # .png: frames per row
    device: str = "cpu"


def parse(args: list[str]) -> PlayConfig:
    cfg = OmegaConf.to_object(parse_options(PlayConfig, args, "play"))
    if Path(cfg.out).suffix.lower() not in (".gif", ".png"):
        raise UserError(f"play: out must end in .gif or .png, got {cfg.out!r}")
    if cfg.fps < 1 or cfg.nrow < 1:
        raise UserError("play: fps and nrow must be at least 1")
    return cfg  # type: ignore[return-value]


def parse_actions(value: Any) -> list[int]:
    """`2*8,1*4,0`, [2, 2, 0] or 2 -> action numbers; anything else is a UserError."""
    items = value if isinstance(value, list) else str(value).split(",")
    actions: list[int] = []
    for item in items:
        text = str(item).strip()
        action, star, times = text.partition("*")
        try:
            a, n = int(action), int(times) if star else 1
        except ValueError as e:
            raise UserError(f"play: cannot read action {text!r}; give action numbers, A*N for "
                            f"A repeated N times, e.g. {EXAMPLE}") from e
        if n < 1:
            raise UserError(f"play: {text!r} repeats an action {n} times; at least 1")
        actions += [a] * n
        if len(actions) > MAX_ACTIONS:
            raise UserError(f"play: more than {MAX_ACTIONS} actions")
    if not actions:
        raise UserError(f"play: no actions given, e.g. {EXAMPLE}")
    return actions


def one_hot(actions: list[int], family) -> torch.Tensor:
    if not family.discrete:
        raise UserError(f"play: scripted actions are action numbers; {family.env}'s actions "
                        "are continuous vectors, which play does not take yet")
    bad = [a for a in actions if not 0 <= a < family.action_dim]
    if bad:
        raise UserError(f"play: action {bad[0]} is not one of {family.env}'s actions 0.."
                        f"{family.action_dim - 1}")
    return torch.nn.functional.one_hot(torch.tensor(actions), family.action_dim).float()


def real_game(env, actions: list[int], seed: int) -> tuple[torch.Tensor, int | None]:
    """The real game's frames under the actions, uint8 (T' + 1, C, H, W), and the step at
    which it ended (None: it lasted)."""
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for t, a in enumerate(actions):
        obs, _, terminated, truncated, _ = env.step(a)
        frames.append(obs)
        if terminated or truncated:
            return _to_tensor(frames), t + 1
    return _to_tensor(frames), None


def _to_tensor(frames) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def strip(rows: list[torch.Tensor], nrow: int) -> torch.Tensor:
    """Videos (T, C, H, W) of one length -> one uint8 image: per chunk of nrow frames, a row
    of each video."""
    from ganlab.images import make_grid

    t = len(rows[0])
    cells = []
    for start in range(0, t, nrow):
        for video in rows:
            chunk = video[start: start + nrow]
            pad = torch.full((nrow - len(chunk), *chunk.shape[1:]), 255, dtype=torch.uint8)
            cells.append(torch.cat([chunk, pad]))
    return make_grid(torch.cat(cells), nrow=nrow)


def main(args: list[str]) -> None:
    from ganlab.checkpoint import load_checkpoint
    from ganlab.envs import make_env
    from ganlab.families.capabilities import Player, require
    from ganlab.families.worldmodel import side_by_side
    from ganlab.images import save_png
    from ganlab.logging import save_video_gif
    from ganlab.train import resolve_device

    cfg = parse(args)
    actions = parse_actions(cfg.actions)
    device = resolve_device(cfg.device)
    family = load_checkpoint(cfg.ckpt, device)
    require(family, Player, "play renders a learned game (a model=gamegan run)", cfg.ckpt)
    vectors = one_hot(actions, family)
    env = make_env(family.env, family.frame_size, max_steps=len(actions) + 1)
    real, ended = real_game(env, actions, cfg.seed)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    model = family.play(real[0], vectors, generator)
    shown = real[: len(model)]
    l1 = float((model[: len(shown)].float() - shown.float()).abs().mean() / 255)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        video = side_by_side(real, model) if cfg.compare else model
        save_video_gif(video, out, fps=cfg.fps)
    else:
        padded = torch.cat([real, real[-1:].expand(len(model) - len(real), *real.shape[1:])])
        save_png(strip([padded, model] if cfg.compare else [model], cfg.nrow), out)
    beside = ""
    if cfg.compare:
        beside = ("; the real game beside it" + (f" (a hit ended it at step {ended})"
                                                 if ended else ""))
    print(f"wrote {out}: {len(model)} frames of the learned {family.env} for {len(actions)} "
          f"actions{beside}; mean L1 to the real frames {l1:.4f} ([0, 1] pixels, over "
          f"{len(shown)} frames)")
