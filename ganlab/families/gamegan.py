"""GameGAN (Kim et al. 2020): a game engine learned from recorded play. Given the frames and
the actions of random-policy episodes (dataset=rollouts), an action-conditioned generator
learns to render the next frame from the previous one, the action and a noise z (for what the
action does not decide: dodge's new fireballs), against three discriminators.

One step, as the reference trainer (nv-tlabs/GameGAN_code, the VizDoom setting without the
memory module):
- the generator unrolls a window of model.seq_len frames: the first warm_up inputs are the
  real frames (warm_up decays linearly from model.warm_up to model.min_warm_up over the run),
  then its own (detached) outputs; it is trained with the hinge losses of the single-image,
  action-conditioned and temporal discriminators, the info loss (the action-conditioned
  discriminator's head recovers z, weight info_weight, and the action), feature matching on
  the discriminator's trunk (L1, feature_weight) and the frame reconstruction loss (squared
  error summed over a frame's pixels, counted as for the paper's 64x64 frames: the same
  weight per pixel at any size, recon_weight);
- the discriminators, on the same windows: real transitions are real for the action they
  were taken with and fake for another action; predicted frames are fake; the info head learns
  the action from real transitions and z from predicted ones; an R1 penalty on the real frames
  (r1_weight for the single-image, action and info heads, r1_temporal_weight for the temporal
  one).

Measured on the held-out episodes: from each window's first real frame and the true actions,
10 predicted frames against the real ones (L1 and squared error of [0, 1] pixels), beside the
baseline that copies the first frame; `python -m ganlab play` renders the learned game for an
action sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ganlab.config import ranged
from ganlab.config import schema as config_schema
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.families.worldmodel import rollout_settings, side_by_side
from ganlab.images import SYMMETRIC, UNIT, make_grid, to_float, to_uint8
from ganlab.models import MODELS
from ganlab.models.gamegan import check_side
from ganlab.optim import adam

HORIZON = 10  # predicted frames of the measured windows (frame_l1_10)
SHOWN_WINDOWS = 4  # rows of real / predicted frames in the "predictions" strip
SHOWN_FRAMES = 48  # frames of the "play" video
PAPER_SIDE = 64  # the reference's frames (VizDoom, Pac-Man): 64x64


@config_schema("model", "gamegan")
@dataclass
class GameGanConfig:
    """`model.*` of GameGAN: the reference's VizDoom settings where they fit a CPU (noted)."""

    name: str = "gamegan"
    family: str = "gamegan"
    hidden: int = ranged(128, "[8, inf)")  # the dynamics engine's LSTM (reference: 512)
    z_dim: int = ranged(32, "[1, inf)")  # per-step noise (reference: 32)
    g_features: int = ranged(8, "[1, inf)")  # renderer width at full size (x2 per halving)
    d_features: int = ranged(8, "[1, inf)")  # discriminator trunk's first width (x2 per halving)
    temporal_features: int = ranged(32, "[1, inf)")  # 3-D convs (reference: 64)
    transition_dim: int = ranged(256, "[1, inf)")  # action discriminator (reference: 256)
    seq_len: int = ranged(12, "[6, inf)")  # frames per training window (reference: 32)
    warm_up: int = ranged(6, "[1, inf)")  # real input frames at the start (reference: 16)
    min_warm_up: int = ranged(1, "[1, inf)")  # ... decayed linearly to this over the run
    lr_g: float = ranged(1e-4, "(0, inf)")  # reference: Adam 1e-4, betas (0, 0.9)
    lr_d: float = ranged(1e-4, "(0, inf)")
    beta1: float = ranged(0.0, "[0, 1)")
    beta2: float = ranged(0.9, "[0, 1)")
    # squared error summed over a frame's pixels (counted as if 64x64, the paper's frames)
    recon_weight: float = ranged(0.05, "[0, inf)")
    feature_weight: float = ranged(10.0, "[0, inf)")  # L1 feature matching on D's trunk
    info_weight: float = ranged(30.0, "[0, inf)")  # G's z reconstruction (reference: 30)
    r1_weight: float = ranged(1.0, "[0, inf)")  # R1 on real frames (reference: 1)
    r1_temporal_weight: float = ranged(10.0, "[0, inf)")  # ... of the temporal head (10)
    # R1 every N steps, weighted by N (lazy regularisation, Karras et al. 2020; the reference
    # applies it every step: 1): five double backward passes are most of a CPU step
    r1_every: int = ranged(4, "[1, inf)")


def action_space_of(settings: dict[str, Any]):
    from ganlab.envs import make_env

    return make_env(settings["env"], settings["size"], settings["max_steps"]).action_space


@FAMILIES.register("gamegan")
class GameGanFamily(Family):
    """A learned game: `play(first_frame, actions, generator)` (capabilities.Player)."""

    needs_heldout = True
    double_backward = frozenset({"D"})
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"gamegan": {
        "generator: adversarial terms (single image, action, temporal), info, feature "
        "matching, reconstruction, total": [r"^loss/g_"],
        "discriminators: real and fake terms of each head, wrong actions, info, R1":
            [r"^loss/d_"],
        "held-out: L1 of [0, 1] pixels over 10 predicted frames, GameGAN vs copying the "
        "first frame": [r"^eval/(frame|copy)_l1_"],
        "held-out: squared error over 10 predicted frames, GameGAN vs copy":
            [r"^eval/(frame|copy)_mse_"]}}
    visual_notes: ClassVar[dict[str, str]] = {
        "predictions": "held-out windows: a row of real frames x_0 .. x_10, then a row of "
                       "GameGAN's frames from x_0 and the true actions (its first cell is "
                       "the given x_0)",
        "play": "a held-out episode: the real game | GameGAN from its first frame under the "
                "same actions"}

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        from ganlab.envs.spaces import action_dim, is_discrete

        self.device, self.spec, self.cfg = device, spec, cfg
        m = cfg.model
        settings = rollout_settings(cfg.dataset)
        space = action_space_of(settings)
        self.env, self.frame_size = settings["env"], int(spec.shape[-1])
        self.max_steps = settings["max_steps"]
        self.discrete, self.action_dim = is_discrete(space), action_dim(space)
        self.num_actions = int(space.n) if self.discrete else 0
        nets = SimpleNamespace(**OmegaConf.to_container(m), action_dim=self.action_dim)
        g, d = MODELS.get(m.name)(nets, spec)
        self.G, self.D = g.to(device), d.to(device)
        self.opt_g = adam(self.G.parameters(), lr=m.lr_g, betas=(m.beta1, m.beta2))
        self.opt_d = adam(self.D.parameters(), lr=m.lr_d, betas=(m.beta1, m.beta2))
        self.seq_len, self.z_dim = int(m.seq_len), int(m.z_dim)
        self.warm_up, self.min_warm_up = int(m.warm_up), int(m.min_warm_up)
        self.w = SimpleNamespace(recon=m.recon_weight, feature=m.feature_weight,
                                 info=m.info_weight, r1=m.r1_weight,
                                 r1_temporal=m.r1_temporal_weight)
        self.r1_every = int(m.r1_every)
        # the reference sums the squared error over a 64x64 frame's pixels: the same weight
        # per pixel at any frame size
        self.recon_scale = (PAPER_SIDE / self.frame_size) ** 2
        self.steps = 0  # this run's steps so far: the warm-up schedule
        self.eval_windows = int(cfg.eval.n_samples)
        self.eval_seed = int(cfg.trainer.seed) + 2
        self._data: SimpleNamespace | None = None
        self.heldout = None
        self.split_episode = 0

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.dataset.name != "rollouts":
            raise UserError(f"model=gamegan learns a game from recorded episodes: use "
                            f"dataset=rollouts (got dataset={cfg.dataset.name})")
        settings = rollout_settings(cfg.dataset)
        why = check_side(int(settings["size"]))
        if why:
            raise UserError(f"model=gamegan: the rollouts have {settings['size']}x"
                            f"{settings['size']} frames; its networks take {why}: record "
                            "them with size=32 (or 64)")
        action_space_of(settings)  # an unknown environment is said here
        m = cfg.model
        if not m.min_warm_up <= m.warm_up < m.seq_len:
            raise UserError(f"model.warm_up={m.warm_up} must be at least model.min_warm_up="
                            f"{m.min_warm_up} and below model.seq_len={m.seq_len}")

    # --- the rollouts -----------------------------------------------------------------------

    @property
    def data(self) -> SimpleNamespace:
        """The rollouts' episodes on the device, read when first needed (play needs none)."""
        if self._data is None:
            from ganlab.data.rollouts import load_episodes

            episodes = load_episodes(self.cfg.dataset, int(self.cfg.trainer.seed))
            if episodes.size != self.frame_size:
                raise UserError(f"{episodes.source}: {episodes.size} px frames, but the model "
                                f"takes {self.frame_size} px")
            self._data = SimpleNamespace(
                frames=episodes.frames.to(self.device),
                actions=episodes.actions.to(self.device),
                starts=episodes.starts.to(self.device), n_episodes=episodes.n_episodes)
        return self._data

    def use_heldout(self, data) -> None:
        """The held-out frames are the last whole episodes: the windows measured and shown."""
        self.heldout = data
        first = int(data.y.min())
        self.split_episode = int(torch.searchsorted(self.data.starts.cpu(), torch.tensor(
            first), right=True)) - 1

    def windows(self, rows: torch.Tensor, length: int) -> torch.Tensor:
        """Per frame row: the frame rows of a window of `length` frames of its episode that
        holds it (shifted back to fit; an episode shorter than that repeats its last frame,
        as the reference's loader)."""
        starts = self.data.starts
        episode = torch.searchsorted(starts, rows, right=True) - 1
        first, last = starts[episode], starts[episode + 1] - 1
        begin = torch.clamp(torch.minimum(rows, last - length + 1), min=first)
        steps = begin[:, None] + torch.arange(length, device=self.device)
        return torch.minimum(steps, last[:, None])

    def window_tensors(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame rows (B, T) -> frames in [-1, 1] (B, T, C, H, W), actions (B, T-1, A) (the
        action at a repeated last frame is all zeros)."""
        frames = to_float(self.data.frames[rows], SYMMETRIC)
        actions = self.data.actions[rows[:, :-1]]
        return frames, actions

    # --- training ---------------------------------------------------------------------------

    def current_warm_up(self) -> int:
        if not self.run_length:
            return self.warm_up
        left = max(0.0, 1.0 - self.steps / self.run_length)
        return max(self.min_warm_up, math.ceil(self.warm_up * left))

    def wrong_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Another action for each step: a different one for discrete actions, the batch's
        actions shifted by one example for continuous ones."""
        if not self.discrete:
            return actions.roll(1, 0)
        taken = actions.argmax(-1)
        other = (taken + torch.randint(1, self.num_actions, taken.shape, device=self.device)
                 ) % self.num_actions
        return F.one_hot(other, self.num_actions).to(actions.dtype)

    def action_recon_loss(self, predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return F.cross_entropy(predicted.flatten(0, 1), actions.argmax(-1).flatten())
        return F.mse_loss(predicted, actions)

    @staticmethod
    def hinge_real(logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - logits).mean()

    @staticmethod
    def hinge_fake(logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 + logits).mean()

    def r1(self, output: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The reference's penalty: per example, the squared gradient of the summed output
        with respect to the window's frames, summed, times seq_len / 6; averaged."""
        (grad,) = torch.autograd.grad(output.sum(), frames, create_graph=True)
        return grad.pow(2).flatten(1).sum(1).mean() * (self.seq_len / 6)

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        rows = self.windows(batch[1].to(self.device), self.seq_len)
        frames, actions = self.window_tensors(rows)
        b, t = actions.shape[:2]
        warm = self.current_warm_up()
        z = torch.randn(b, t, self.z_dim, device=self.device)
        wrong = self.wrong_actions(actions)

        # the generator
        self.D.requires_grad_(False)
        fake = self.G.unroll(frames, actions, z, warm)
        d_fake = self.D(frames[:, :warm], fake, actions)
        with torch.no_grad():
            real_features = self.D.features(frames[:, 1:])
        adv_single = -d_fake["single"].mean()
        adv_action = -d_fake["action"].mean()
        adv_temporal = torch.stack([-x.mean() for x in d_fake["temporal"]]).mean()
        info_z = F.mse_loss(d_fake["z_recon"], z)
        info_action = self.action_recon_loss(d_fake["action_recon"], actions)
        feature = F.l1_loss(d_fake["features"], real_features)
        recon = (fake - frames[:, 1:]).pow(2).flatten(2).sum(2).mean() * self.recon_scale
        g_loss = (adv_single + adv_action + adv_temporal + self.w.info * info_z + info_action
                  + self.w.feature * feature + self.w.recon * recon)
        self.opt_g.zero_grad(set_to_none=True)
        self.amp.backward(g_loss)
        self.amp.step(self.opt_g)
        self.D.requires_grad_(True)

        # the discriminators
        lazy = (self.steps + 1) % self.r1_every == 0  # this step pays the R1 penalty
        w_r1, w_r1_temporal = (self.r1_every * self.w.r1 * lazy,
                               self.r1_every * self.w.r1_temporal * lazy)
        real = frames.detach().requires_grad_(w_r1 > 0 or w_r1_temporal > 0)
        d_real = self.D(real[:, :warm], real[:, 1:], actions, wrong)
        real_single = self.hinge_real(d_real["single"])
        real_action = self.hinge_real(d_real["action"])
        wrong_action = self.hinge_fake(d_real["wrong_action"])
        real_temporal = torch.stack([self.hinge_real(x) for x in d_real["temporal"]]).mean()
        d_info_action = self.action_recon_loss(d_real["action_recon"], actions)
        d_loss = real_single + real_action + wrong_action + real_temporal + d_info_action
        r1 = r1_temporal = torch.zeros((), device=self.device)
        if w_r1 > 0:
            r1 = (self.r1(d_real["single"], real) + self.r1(d_real["action"], real)
                  + self.r1(d_real["action_recon"], real)) * 0.33
            d_loss = d_loss + w_r1 * r1
        if w_r1_temporal > 0:
            r1_temporal = torch.stack([self.r1(x, real) for x in d_real["temporal"]]).mean()
            d_loss = d_loss + w_r1_temporal * r1_temporal
        d_fake = self.D(frames[:, :warm], fake.detach(), actions)
        fake_single = self.hinge_fake(d_fake["single"])
        fake_action = self.hinge_fake(d_fake["action"])
        fake_temporal = torch.stack([self.hinge_fake(x) for x in d_fake["temporal"]]).mean()
        d_info_z = F.mse_loss(d_fake["z_recon"], z)
        d_loss = d_loss + fake_single + fake_action + fake_temporal + d_info_z
        self.opt_d.zero_grad(set_to_none=True)
        self.amp.backward(d_loss)
        self.amp.step(self.opt_d)
        self.steps += 1

        terms = {"g_single": adv_single, "g_action": adv_action, "g_temporal": adv_temporal,
                 "g_info_z": info_z, "g_info_action": info_action, "g_feature": feature,
                 "g_recon": recon, "g_total": g_loss,
                 "d_real_single": real_single, "d_fake_single": fake_single,
                 "d_real_action": real_action, "d_wrong_action": wrong_action,
                 "d_fake_action": fake_action, "d_real_temporal": real_temporal,
                 "d_fake_temporal": fake_temporal, "d_info_action": d_info_action,
                 "d_info_z": d_info_z, "d_r1": r1, "d_r1_temporal": r1_temporal,
                 "d_total": d_loss}
        out = {f"loss/{k}": v.detach() for k, v in terms.items()}
        out["warm_up"] = torch.tensor(float(warm))
        return out

    # --- playing and measuring --------------------------------------------------------------

    @torch.no_grad()
    def predict(self, first: torch.Tensor, actions: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """first: uint8 (B, C, H, W); actions (B, T, A) -> float [0, 1] frames (B, T + 1, C,
        H, W): the given frame, then T predicted from it (z drawn from `generator`)."""
        b, t = actions.shape[:2]
        z = torch.randn(b, t, self.z_dim, generator=generator, device=self.device)
        x0 = to_float(first.to(self.device), SYMMETRIC)
        out = self.G.unroll(x0[:, None], actions.to(self.device).float(), z, warm_up=1)
        frames = torch.cat([x0[:, None], out], 1)
        return (frames + 1) / 2

    def play(self, first: torch.Tensor, actions: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """capabilities.Player: first uint8 (C, H, W), actions (T, A) -> uint8 (T + 1, C, H,
        W)."""
        return to_uint8(self.predict(first[None], actions[None], generator)[0], UNIT).cpu()

    def heldout_windows(self, limit: int) -> torch.Tensor:
        """Frame rows (N, HORIZON + 1) of the held-out episodes: consecutive windows of every
        episode (at most `limit`)."""
        starts = self.data.starts.tolist()
        rows = [list(range(s, s + HORIZON + 1))
                for e in range(self.split_episode, self.data.n_episodes)
                for s in range(starts[e], starts[e + 1] - HORIZON, HORIZON + 1)]
        if not rows:
            raise UserError(f"the held-out episodes are all shorter than {HORIZON + 1} "
                            "frames: record longer episodes (max_steps) or hold out more "
                            "(dataset.heldout_fraction)")
        return torch.tensor(rows[:limit], device=self.device)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """GameGAN from each held-out window's first frame under its actions, against the
        real frames and against copying the first frame, over HORIZON steps."""
        if self.heldout is None:
            return {}
        windows = self.heldout_windows(self.eval_windows)
        generator = torch.Generator(self.device).manual_seed(self.eval_seed)
        sums = {k: torch.zeros(HORIZON, device=self.device, dtype=torch.float64)
                for k in ("frame_l1", "frame_mse", "copy_l1", "copy_mse")}
        for chunk in windows.split(64):
            real = to_float(self.data.frames[chunk], UNIT)
            predicted = self.predict(self.data.frames[chunk[:, 0]],
                                     self.data.actions[chunk[:, :-1]], generator)
            for name, guess in (("frame", predicted[:, 1:]), ("copy", real[:, :1])):
                error = guess - real[:, 1:]
                sums[f"{name}_l1"] += error.abs().mean((2, 3, 4)).sum(0).double()
                sums[f"{name}_mse"] += error.pow(2).mean((2, 3, 4)).sum(0).double()
        n = len(windows)
        out: dict[str, Any] = {}
        for key, total in sums.items():
            per_step = total / n
            out[f"{key}_{HORIZON}"] = float(per_step.mean())
            out[f"{key}_step{HORIZON}"] = float(per_step[-1])
        out["heldout_windows"] = n
        return out

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        if self.heldout is None:
            return {}
        generator = torch.Generator(self.device).manual_seed(self.eval_seed + 1)
        windows = self.heldout_windows(10_000)
        pick = windows[torch.linspace(0, len(windows) - 1, min(SHOWN_WINDOWS, len(windows)),
                                      device=self.device).round().long()]
        real = to_float(self.data.frames[pick], UNIT)
        predicted = self.predict(self.data.frames[pick[:, 0]], self.data.actions[pick[:, :-1]],
                                 generator)
        rows = torch.stack([real, predicted], 1).flatten(0, 2)  # real row, predicted row, ...
        strip = make_grid(to_uint8(rows, UNIT).cpu(), nrow=HORIZON + 1)
        e = self.split_episode
        first, last = int(self.data.starts[e]), int(self.data.starts[e + 1])
        n = min(last - first, SHOWN_FRAMES)
        episode = self.data.frames[first: first + n]
        dream = self.play(episode[0], self.data.actions[first: first + n - 1], generator)
        return {"predictions": strip, "play": side_by_side(episode.cpu(), dream)}

    def extra_state(self) -> dict[str, Any]:
        return {"gamegan_steps": torch.tensor(self.steps)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["gamegan_steps"])
