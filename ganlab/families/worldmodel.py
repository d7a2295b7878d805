"""World Models (Ha & Schmidhuber 2018), in three stages, each its own ganlab run:

- model.stage=vae: V, a convolutional VAE on the rollouts' frames (z of 32; the doomrnn
  reference's loss: squared error summed over pixels + the KL, the KL not pushed below
  kl_tolerance * latent_dim nats);
- model.stage=mdnrnn: M, an LSTM on (z_t, a_t) giving a mixture of 5 Gaussians per dimension
  of z_{t+1}, a done head and a reward head, trained with teacher forcing on z drawn from V's
  posterior of every recorded frame (model.vae_run names V's run);
- model.stage=controller: C, a linear map of [z, h] to actions, trained by CMA-ES (one
  generation per step) in the real environment or, with model.in_dream=true, inside M's
  simulation at temperature model.temperature (episodes end when M's done head says so);
  measured in the real game over model.eval_episodes episodes with fixed seeds
  (model.mdnrnn_run names M's run; V is the one M was trained on).

`python -m ganlab worldmodel env=dodge` runs the three stages one after the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ganlab.config import one_of, ranged
from ganlab.config import schema as config_schema
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.autoencoder import gaussian_kl
from ganlab.families.base import FAMILIES, Family
from ganlab.images import UNIT, make_grid, to_float, to_uint8
from ganlab.models import MODELS
from ganlab.models.worldmodel import (
    MdnRnn,
    controller_act,
    controller_size,
    gaussian_nll,
    mdn_log_prob,
    mdn_sample,
)
from ganlab.optim import adam

STAGES = ("vae", "mdnrnn", "controller")
EVAL_SEED = 1_000_000  # real-game evaluation episodes use seeds EVAL_SEED + i (never trained on)
TRAIN_SEED = 100_000  # CMA-ES generation g plays seeds TRAIN_SEED + g * rollouts + r
SHOWN_FRAMES = 48  # frames in the dream-vs-real videos
DREAM_EVAL = 16  # dreamed episodes of each evaluation (the controller's return inside M)


@config_schema("model", "worldmodel")
@dataclass
class WorldModelConfig:
    """`model.*` of World Models: which stage this run trains and each stage's settings."""

    name: str = "worldmodel"
    family: str = "worldmodel"
    stage: str = one_of("vae", *STAGES)
    # V (the paper: z of 32, stride-2 convs 32-64-128-256, Adam 1e-4, KL tolerance 0.5)
    latent_dim: int = ranged(32, "[1, inf)")
    features: int = ranged(32, "[1, inf)")  # width of V's first conv stage; doubles per stage
    kl_tolerance: float = ranged(0.5, "[0, inf)")  # nats per latent dimension
    vae_lr: float = ranged(1e-4, "(0, inf)")
    # M (the paper: 256 hidden units for CarRacing, 5 mixtures; Adam 1e-3, grad clip 1)
    vae_run: str | None = None  # stage=mdnrnn: V's run dir (or checkpoint)
    hidden: int = ranged(256, "[1, inf)")
    mixtures: int = ranged(5, "[1, inf)")
    seq_len: int = ranged(64, "[2, inf)")  # teacher-forced chunks of an episode
    rnn_lr: float = ranged(1e-3, "(0, inf)")
    grad_clip: float = ranged(1.0, "[0, inf)")  # 0: none
    temperature: float = ranged(1.0, "[0, inf)")  # tau when M samples (dreams, videos)
    # C (the paper: population 64, 16 rollouts per candidate)
    mdnrnn_run: str | None = None  # stage=controller: M's run dir (or checkpoint)
    in_dream: bool = False  # train C inside M's simulation instead of the real game
    population: int = ranged(16, "[2, inf)")
    rollouts: int = ranged(4, "[1, inf)")  # episodes per candidate per generation
    sigma0: float = ranged(0.1, "(0, inf)")  # CMA-ES initial step size
    eval_episodes: int = ranged(100, "[1, inf)")  # real-game episodes of each evaluation


# --- the inputs of a stage: earlier runs, the rollouts' environment -------------------------


def stage_checkpoint(path: str | None, stage: str, key: str, for_stage: str) -> Path:
    """The checkpoint of an earlier stage's run; a missing one or one of another stage is a
    UserError that says which run to give."""
    from ganlab.checkpoint import resolve_path

    wanted = f"model=worldmodel model.stage={stage}"
    if not path:
        raise UserError(f"model.stage={for_stage} needs a trained {stage_name(stage)}: give "
                        f"{key}=<the run dir of `train {wanted}`> (or run all stages with "
                        "`python -m ganlab worldmodel`)")
    try:
        file = resolve_path(path)
    except UserError as e:
        raise UserError(f"{key}={path}: {e}; give the run dir of `train {wanted}`") from e
    stored = stored_config(file)
    model = stored.get("model", {})
    if model.get("family") != "worldmodel" or model.get("stage") != stage:
        raise UserError(f"{key}={path} is a run of model={model.get('name')} "
                        f"(stage {model.get('stage')}); give the run dir of `train {wanted}`")
    return file


def stage_name(stage: str) -> str:
    return {"vae": "V (the VAE)", "mdnrnn": "M (the MDN-RNN)"}.get(stage, stage)


def stored_config(file: Path) -> dict:
    from ganlab.checkpoint import load

    return load(file)["config"]


def rollout_settings(cfg_dataset) -> dict[str, Any]:
    """env, size and max_steps of a run's rollouts (meta.json of a folder, else the config)."""
    if cfg_dataset.get("path"):
        meta = Path(cfg_dataset.path).expanduser() / "meta.json"
        if not meta.is_file():
            raise UserError(f"dataset.path={cfg_dataset.path} holds no rollouts (meta.json "
                            "missing): record them with python -m ganlab rollouts env=dodge "
                            f"episodes=200 out={cfg_dataset.path}")
        m = json.loads(meta.read_text())
        return {"env": m["env"], "size": int(m["size"]), "max_steps": int(m["max_steps"])}
    return {"env": cfg_dataset.env, "size": int(cfg_dataset.size),
            "max_steps": int(cfg_dataset.max_steps)}


def check_frame_size(cfg, vae_file: Path) -> None:
    """The rollouts' frames must be the size V was trained on."""
    spec = DataSpec.from_dict(__import__("ganlab.checkpoint", fromlist=["load"]).load(
        vae_file)["spec"])
    size = rollout_settings(cfg.dataset)["size"]
    if tuple(spec.shape[1:]) != (size, size):
        raise UserError(f"the rollouts have {size}x{size} frames but V ({vae_file}) was trained "
                        f"on {spec.shape[1]}x{spec.shape[2]}: record rollouts of that size "
                        f"(python -m ganlab rollouts size={spec.shape[1]} ...) or train V on "
                        "these")


@FAMILIES.register("worldmodel")
class WorldModelFamily(Family):
    """model.stage picks the family of this run (VaeStage, MdnRnnStage, ControllerStage)."""

    def __new__(cls, cfg, spec: DataSpec, device: torch.device):
        return STAGE_CLASSES[cfg.model.stage](cfg, spec, device)

    @classmethod
    def wants_heldout(cls, cfg) -> bool:
        return STAGE_CLASSES[cfg.model.stage].wants_heldout(cfg)

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.dataset.name != "rollouts":
            raise UserError(f"model=worldmodel learns from recorded episodes: use "
                            f"dataset=rollouts (got dataset={cfg.dataset.name})")
        STAGE_CLASSES[cfg.model.stage].check_config(cfg)


def frames_of(x: torch.Tensor) -> torch.Tensor:
    return to_float(x, UNIT)


def side_by_side(*videos: torch.Tensor) -> torch.Tensor:
    """uint8 (T_i, C, H, W) videos -> one (T, C, H, W + ...) video, panels apart by 2 white
    columns; a shorter one holds its last frame."""
    t = max(len(v) for v in videos)
    padded = [torch.cat([v, v[-1:].expand(t - len(v), *v.shape[1:])]) for v in videos]
    gap = torch.full((t, videos[0].shape[1], videos[0].shape[2], 2), 255, dtype=torch.uint8)
    parts = [p for v in padded for p in (v, gap)][:-1]
    return torch.cat(parts, dim=3)


def load_stage(file: Path, device: torch.device):
    from ganlab.checkpoint import load_checkpoint

    return load_checkpoint(file, device)


# --- V ------------------------------------------------------------------------------------


class VaeStage(Family):
    """V: frames -> z. encode/decode make it an Autoencoder (the `latent` command)."""

    needs_heldout = True
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"worldmodel V": {
        "loss: squared error summed over pixels, KL (nats) and their sum":
            [r"^loss/(recon|kl|total)$"],
        "held-out frames": [r"^eval/heldout_(recon|kl)$"]}}
    visual_notes: ClassVar[dict[str, str]] = {
        "reconstructions": "rows of held-out frames, each followed by V's reconstructions"}

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.device, self.spec = device, spec
        m = cfg.model
        nets = MODELS.get(m.name)(m, spec)
        self.encoder, self.decoder = nets.encoder.to(device), nets.decoder.to(device)
        self.latent_dim = int(m.latent_dim)
        self.kl_floor = float(m.kl_tolerance) * self.latent_dim
        self.opt = adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=m.vae_lr)
        self.eval_samples = int(cfg.eval.n_samples)
        self.eval_seed = int(cfg.trainer.seed) + 2
        self.heldout = None

    @classmethod
    def check_config(cls, cfg) -> None:
        size = rollout_settings(cfg.dataset)["size"]
        if size % 16 or size < 32:
            raise UserError(f"model.stage=vae: V's four stride-2 stages need frames of a "
                            f"multiple of 16 px, 32 or more; the rollouts have {size} px "
                            "(record them with size=64, the paper's)")

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def losses(self, x: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.posterior(x)
        recon = self.decode(mu + noise * torch.exp(0.5 * logvar))
        return {"recon": (recon - x).pow(2).flatten(1).sum(1), "kl": gaussian_kl(mu, logvar)}

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x = frames_of(batch[0])
        terms = self.losses(x, torch.randn(len(x), self.latent_dim, device=self.device))
        recon, kl = terms["recon"].mean(), terms["kl"].mean()
        loss = recon + torch.clamp(kl, min=self.kl_floor)  # doomrnn's kl_tolerance
        self.opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.amp.step(self.opt)
        return {"loss/recon": recon.detach(), "loss/kl": kl.detach(), "loss/total": loss.detach()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.heldout is None:
            return {}
        generator = torch.Generator(self.device).manual_seed(self.eval_seed)
        n = min(self.eval_samples, len(self.heldout))
        sums = {"recon": 0.0, "kl": 0.0}
        for start in range(0, n, 256):
            x = frames_of(self.heldout.x[start: min(start + 256, n)])
            noise = torch.randn(len(x), self.latent_dim, generator=generator, device=self.device)
            for k, v in self.losses(x, noise).items():
                sums[k] += float(v.sum())
        return {f"heldout_{k}": v / n for k, v in sums.items()}

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        if self.heldout is None:
            return {}
        step = max(1, len(self.heldout) // 16)  # frames from across the held-out episodes
        x = frames_of(self.heldout.x[::step][:16])
        recon = self.decode(self.encode(x))
        rows = [t for i in range(0, len(x), 8) for t in (x[i: i + 8], recon[i: i + 8])]
        return {"reconstructions": make_grid(to_uint8(torch.cat(rows), UNIT).cpu(), nrow=8)}


# --- M ------------------------------------------------------------------------------------


class MdnRnnStage(Family):
    """M on V's codes of every recorded frame (computed once, with V frozen)."""

    needs_heldout = True
    eval_only = frozenset({"encoder", "decoder"})
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"worldmodel M": {
        "loss: next-z NLL (nats per dimension), done and reward terms":
            [r"^loss/(nll_z|done|reward|total)$"],
        "held-out next-z NLL, nats per dimension: M vs z_{t+1} ~ N(z_t, s^2)":
            [r"^eval/(heldout_nll_z|copy_baseline_nll_z)$"]}}
    visual_notes: ClassVar[dict[str, str]] = {
        "dream": "a held-out episode: the real frames | V's reconstructions | M's dream from "
                 "the first frame under the same actions (decoded by V), at temperature tau"}

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        from ganlab.envs import make_env
        from ganlab.envs.spaces import action_dim

        self.device, self.spec, self.cfg = device, spec, cfg
        m = cfg.model
        vae = load_stage(stage_checkpoint(m.vae_run, "vae", "model.vae_run", "mdnrnn"), device)
        self.encoder, self.decoder, self.latent_dim = vae.encoder, vae.decoder, vae.latent_dim
        settings = rollout_settings(cfg.dataset)
        space = make_env(settings["env"], settings["size"], settings["max_steps"]).action_space
        self.action_dim = action_dim(space)
        self.rnn = MdnRnn(self.latent_dim, self.action_dim, m.hidden, m.mixtures).to(device)
        self.opt = adam(self.rnn.parameters(), lr=m.rnn_lr)
        self.seq_len, self.grad_clip = int(m.seq_len), float(m.grad_clip)
        self.temperature = float(m.temperature)
        self.eval_seed = int(cfg.trainer.seed) + 2
        self._data: SimpleNamespace | None = None
        self.heldout = None
        self.split_episode = 0  # the first held-out episode, set by use_heldout
        self.copy_var = 1.0

    @property
    def data(self) -> SimpleNamespace:
        """The rollouts with V's posterior of every frame, read and encoded when first needed
        (a controller that loads this run needs neither)."""
        if self._data is None:
            from ganlab.data.rollouts import load_episodes

            episodes = load_episodes(self.cfg.dataset, int(self.cfg.trainer.seed))
            mu, logvar = self.encode_all(episodes.frames)
            self._data = SimpleNamespace(
                episodes=episodes, mu=mu, logvar=logvar, starts=episodes.starts.to(self.device),
                actions=episodes.actions.to(self.device),
                rewards=episodes.rewards.to(self.device), dones=episodes.dones.to(self.device))
        return self._data

    @classmethod
    def check_config(cls, cfg) -> None:
        check_frame_size(cfg, stage_checkpoint(cfg.model.vae_run, "vae", "model.vae_run",
                                               "mdnrnn"))

    @torch.no_grad()
    def encode_all(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V's posterior (mean, log-variance) of every recorded frame."""
        self.encoder.eval()
        mus, logvars = [], []
        for start in range(0, len(frames), 512):
            x = frames_of(frames[start: start + 512].to(self.device))
            mu, logvar = self.encoder(x).chunk(2, dim=1)
            mus.append(mu)
            logvars.append(logvar)
        return torch.cat(mus), torch.cat(logvars)

    def use_heldout(self, data) -> None:
        """The held-out frames are whole episodes at the end; M is measured on them, and the
        copy baseline's variance is fitted on the training episodes' transitions."""
        self.heldout = data
        first = int(data.y.min())
        self.split_episode = int(torch.searchsorted(self.data.starts, torch.tensor(
            first, device=self.device), right=True)) - 1
        z = self.draw(torch.arange(int(self.data.starts[self.split_episode]), device=self.device),
                      torch.Generator(self.device).manual_seed(self.eval_seed + 1))
        rows = self.transition_rows(0, self.split_episode)
        self.copy_var = float((z[rows + 1] - z[rows]).pow(2).mean())

    def transition_rows(self, first: int, last: int) -> torch.Tensor:
        """The frame rows of episodes first..last-1 that have a next frame."""
        return torch.cat([torch.arange(int(self.data.starts[e]), int(self.data.starts[e + 1]) - 1,
                                       device=self.device) for e in range(first, last)])

    def draw(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ V's posterior of the frames at `rows` (any shape)."""
        mu, logvar = self.data.mu[rows], self.data.logvar[rows]
        noise = torch.randn(mu.shape, generator=generator, device=self.device)
        return mu + noise * torch.exp(0.5 * logvar)

    def windows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For frame rows: the frame rows of the seq_len-step chunk of its episode that holds
        it (chunks start at multiples of seq_len, where M's state starts from zero), seq_len + 1
        of them (inputs, then targets one on) clamped to the episode's last frame, and the
        mask of the seq_len steps that are real."""
        episode = torch.searchsorted(self.data.starts, rows, right=True) - 1
        starts = self.data.starts
        start, length = starts[episode], starts[episode + 1] - starts[episode] - 1
        t = torch.minimum(rows - start, length - 1)
        first = t - t % self.seq_len
        steps = first[:, None] + torch.arange(self.seq_len + 1, device=self.device)
        mask = steps[:, :-1] < length[:, None]
        return start[:, None] + torch.minimum(steps, length[:, None]), mask

    def sequence_terms(self, frames: torch.Tensor, mask: torch.Tensor,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced terms over windows (frame rows (B, L + 1), mask (B, L)): one z per
        frame from V's posterior, inputs z_t and a_t, targets z_{t+1}, done_t, reward_t."""
        z = self.draw(frames, generator)
        z_in, z_next, rows = z[:, :-1], z[:, 1:], frames[:, :-1]
        out, _ = self.rnn(z_in, self.data.actions[rows])
        nll = -mdn_log_prob(out, z_next).mean(-1)  # nats per dimension
        done = F.binary_cross_entropy_with_logits(out.done, self.data.dones[rows],
                                                  reduction="none")
        reward = (out.reward - self.data.rewards[rows]).pow(2)
        copy = gaussian_nll(z_next, z_in, self.copy_var).mean(-1)
        w = mask.float()
        return {k: (v * w).sum() / w.sum() for k, v in
                {"nll_z": nll, "done": done, "reward": reward, "copy_nll_z": copy}.items()}

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        rows, mask = self.windows(batch[1])
        terms = self.sequence_terms(rows, mask)
        loss = terms["nll_z"] + terms["done"] + terms["reward"]
        self.opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.rnn.parameters(), self.grad_clip)
        self.amp.step(self.opt)
        return {"loss/nll_z": terms["nll_z"].detach(), "loss/done": terms["done"].detach(),
                "loss/reward": terms["reward"].detach(), "loss/total": loss.detach()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out next-z NLL against the copy baseline z_{t+1} ~ N(z_t, s^2 I), s^2 the
        mean squared change of z over the training transitions (its best single variance),
        both on the same z drawn from V's posterior with a fixed seed."""
        if self.heldout is None:
            return {}
        generator = torch.Generator(self.device).manual_seed(self.eval_seed)
        rows = self.transition_rows(self.split_episode, self.data.episodes.n_episodes)
        windows, mask = self.windows(rows)
        # one window per chunk: those that start at their chunk's first row
        keep = torch.unique(windows[:, 0])
        firsts = {int(r): i for i, r in enumerate(windows[:, 0].tolist())}
        index = torch.tensor([firsts[int(r)] for r in keep], device=self.device)
        windows, mask = windows[index], mask[index]
        terms = self.sequence_terms(windows, mask, generator)
        return {"heldout_nll_z": float(terms["nll_z"]),
                "copy_baseline_nll_z": float(terms["copy_nll_z"]),
                "heldout_done_bce": float(terms["done"]),
                "heldout_reward_mse": float(terms["reward"]),
                "copy_baseline_var": self.copy_var}

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        if self.heldout is None:
            return {}
        e = self.split_episode
        first, last = int(self.data.starts[e]), int(self.data.starts[e + 1])
        n = min(last - first, SHOWN_FRAMES)
        real = self.data.episodes.frames[first: first + n]
        generator = torch.Generator(self.device).manual_seed(self.eval_seed)
        z, state, dream = self.data.mu[first: first + 1], None, [self.data.mu[first]]
        for t in range(n - 1):
            out, state = self.rnn(z[:, None], self.data.actions[first + t][None, None], state)
            z = mdn_sample(out, self.temperature, generator)[:, 0]
            dream.append(z[0])
        decoded = self.decode_uint8(torch.stack(dream))
        recon = self.decode_uint8(self.data.mu[first: first + n])
        return {"dream": side_by_side(real.cpu(), recon, decoded)}

    def decode_uint8(self, z: torch.Tensor) -> torch.Tensor:
        return to_uint8(torch.sigmoid(self.decoder(z)), UNIT).cpu()

    def extra_state(self) -> dict[str, Any]:
        return {"copy_var": torch.tensor(self.copy_var, dtype=torch.float64)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "copy_var" in state:
            self.copy_var = float(state["copy_var"])


# --- C ------------------------------------------------------------------------------------


class ControllerStage(Family):
    """C by CMA-ES: each train_step asks the strategy for a population, plays every candidate
    model.rollouts episodes (real or dreamed) and tells it their negated mean returns. The
    strategy's state is not pickled into the checkpoint: the returns of every generation are
    (plain tensors), and a resumed run replays them through a fresh strategy whose sampling
    uses a generator of its own, which gives the same state."""

    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"worldmodel C": {
        "population's mean return per generation (training episodes, real or dreamed)":
            [r"^fitness/(best|mean|worst)$"],
        "real game, fixed evaluation episodes: controller vs random policy":
            [r"^eval/(real_return|random_return)$"]}}
    visual_notes: ClassVar[dict[str, str]] = {
        "episode": "the controller in the real game (left) and in M's dream from the same "
                   "first frame (right, decoded by V)"}

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        import cma

        from ganlab.envs import make_env
        from ganlab.envs.spaces import is_discrete

        self.device = device
        m = cfg.model
        mdn_file = stage_checkpoint(m.mdnrnn_run, "mdnrnn", "model.mdnrnn_run", "controller")
        world = load_stage(mdn_file, device)
        self.rnn, self.encoder, self.decoder = world.rnn, world.encoder, world.decoder
        self.latent_dim, self.hidden = world.latent_dim, int(world.rnn.hidden)
        self.action_dim = world.action_dim
        settings = rollout_settings(cfg.dataset)
        self.env_name, self.size, self.max_steps = (settings["env"], settings["size"],
                                                    settings["max_steps"])
        space = make_env(self.env_name, self.size, self.max_steps).action_space
        self.discrete = is_discrete(space)
        self.low = None if self.discrete else torch.as_tensor(space.low, device=device)
        self.high = None if self.discrete else torch.as_tensor(space.high, device=device)
        self.in_dream, self.temperature = bool(m.in_dream), float(m.temperature)
        self.population, self.rollouts = int(m.population), int(m.rollouts)
        self.eval_episodes, self.seed = int(m.eval_episodes), int(cfg.trainer.seed)
        inputs = self.latent_dim + self.hidden
        self.n_params = controller_size(inputs, self.action_dim)
        self.controller = torch.nn.Linear(inputs, self.action_dim).to(device)
        torch.nn.init.zeros_(self.controller.weight)
        torch.nn.init.zeros_(self.controller.bias)
        self._cma, self._sigma0 = cma, float(m.sigma0)
        self.fitness = torch.zeros(0, self.population, dtype=torch.float64)
        self.es = self.new_strategy()
        self._envs: list = []
        self._random_return: float | None = None

    @classmethod
    def check_config(cls, cfg) -> None:
        mdn_file = stage_checkpoint(cfg.model.mdnrnn_run, "mdnrnn", "model.mdnrnn_run",
                                    "controller")
        vae_run = stored_config(mdn_file)["model"].get("vae_run")
        check_frame_size(cfg, stage_checkpoint(vae_run, "vae", "model.vae_run (of M's run)",
                                               "controller"))

    def new_strategy(self):
        """CMA-ES from zero weights; its normal draws come from a generator of its own."""
        rng = np.random.default_rng([self.seed, 7])
        self._rng = rng
        return self._cma.CMAEvolutionStrategy(
            np.zeros(self.n_params), self._sigma0,
            {"popsize": self.population, "seed": np.nan, "verbose": -9,
             "randn": lambda n, d: rng.standard_normal((n, d))})

    # --- playing ------------------------------------------------------------------------

    def params_of(self, solutions) -> torch.Tensor:
        return torch.as_tensor(np.asarray(solutions), dtype=torch.float32, device=self.device)

    def encode(self, frames: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2)
        return self.encoder(frames_of(x)).chunk(2, dim=1)[0]

    def one_hot(self, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return F.one_hot(actions, self.action_dim).float()
        return actions.float()

    def env_actions(self, actions: torch.Tensor) -> list:
        a = actions.cpu().numpy()
        return [int(x) for x in a] if self.discrete else list(a)

    @torch.no_grad()
    def play_real(self, params: torch.Tensor, seeds: list[int], record: bool = False):
        """Every controller of params (P, D) plays the episodes `seeds` in the real game, all
        in lockstep: returns (P, len(seeds)) and, with record, the first episode's frames."""
        from ganlab.envs import make_env

        p, r = len(params), len(seeds)
        n = p * r
        while len(self._envs) < n:
            self._envs.append(make_env(self.env_name, self.size, self.max_steps))
        envs = self._envs[:n]
        frames = [envs[i].reset(seed=seeds[i % r])[0] for i in range(n)]
        recorded = [frames[0]]
        z = self.encode(frames)
        state = (torch.zeros(1, n, self.hidden, device=self.device),
                 torch.zeros(1, n, self.hidden, device=self.device))
        alive = np.ones(n, bool)
        returns = np.zeros(n)
        for _ in range(self.max_steps):
            features = torch.cat([z, state[0][0]], 1).reshape(p, r, -1)
            actions = controller_act(params, features, self.discrete, self.low, self.high)
            actions = actions.reshape(n, *actions.shape[2:])
            chosen = self.env_actions(actions)
            first_alive = bool(alive[0])
            for i in np.flatnonzero(alive):
                obs, reward, term, trunc, _ = envs[i].step(chosen[i])
                frames[i], returns[i] = obs, returns[i] + reward
                alive[i] = not (term or trunc)
            if record and first_alive and len(recorded) < SHOWN_FRAMES:
                recorded.append(frames[0])
            if not alive.any():
                break
            _, state = self.rnn.lstm(torch.cat([z, self.one_hot(actions)], 1)[:, None], state)
            playing = np.flatnonzero(alive)  # the ended episodes' z no longer matter
            z = z.clone()
            z[torch.from_numpy(playing).to(self.device)] = self.encode([frames[i]
                                                                        for i in playing])
        out = torch.as_tensor(returns.reshape(p, r))
        return (out, np.stack(recorded)) if record else out

    @torch.no_grad()
    def play_dream(self, params: torch.Tensor, seeds: list[int], generator: torch.Generator,
                   record: bool = False):
        """Every controller plays inside M: z_0 from the real first frame of each seed, then
        z ~ M at the temperature, rewards from M's reward head, the end drawn from its done
        head (or max_steps)."""
        from ganlab.envs import make_env

        p, r = len(params), len(seeds)
        env = make_env(self.env_name, self.size, self.max_steps)
        z = self.encode([env.reset(seed=s)[0] for s in seeds]).repeat(p, 1)
        n = p * r
        state = None
        h = torch.zeros(n, self.hidden, device=self.device)
        alive = torch.ones(n, dtype=torch.bool, device=self.device)
        returns = torch.zeros(n, dtype=torch.float64, device=self.device)
        recorded = [z[0]]
        for _ in range(self.max_steps):
            actions = controller_act(params, torch.cat([z, h], 1).reshape(p, r, -1),
                                     self.discrete, self.low, self.high)
            actions = actions.reshape(n, *actions.shape[2:])
            out, state = self.rnn(z[:, None], self.one_hot(actions)[:, None], state)
            h = state[0][0]
            returns += torch.where(alive, out.reward[:, 0], torch.zeros_like(out.reward[:, 0]))
            done = torch.rand(n, generator=generator, device=self.device) < torch.sigmoid(
                out.done[:, 0])
            z = mdn_sample(out, self.temperature, generator)[:, 0]
            if record and bool(alive[0]) and len(recorded) < SHOWN_FRAMES:
                recorded.append(z[0])
            alive &= ~done
            if not alive.any():
                break
        out = returns.reshape(p, r).cpu()
        return (out, torch.stack(recorded)) if record else out

    # --- CMA-ES -------------------------------------------------------------------------

    def generation_seeds(self, generation: int) -> list[int]:
        return [TRAIN_SEED + generation * self.rollouts + i for i in range(self.rollouts)]

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        g = len(self.fitness)
        solutions = self.es.ask()
        params = self.params_of(solutions)
        seeds = self.generation_seeds(g)
        if self.in_dream:
            generator = torch.Generator(self.device).manual_seed(self.seed * 100_003 + g)
            returns = self.play_dream(params, seeds, generator)
        else:
            returns = self.play_real(params, seeds)
        fitness = returns.mean(1).double()
        self.es.tell(solutions, (-fitness).tolist())  # cma minimises
        self.fitness = torch.cat([self.fitness, fitness[None]])
        self.set_controller(self.es.mean)
        return {"loss/neg_fitness": -fitness.mean().float(),
                "fitness/best": fitness.max().float(), "fitness/mean": fitness.mean().float(),
                "fitness/worst": fitness.min().float(),
                "cma/sigma": torch.tensor(float(self.es.sigma))}

    def set_controller(self, flat) -> None:
        w = torch.as_tensor(np.asarray(flat), dtype=torch.float32).reshape(
            self.action_dim, -1)
        with torch.no_grad():
            self.controller.weight.copy_(w[:, :-1])
            self.controller.bias.copy_(w[:, -1])

    def current_params(self) -> torch.Tensor:
        return torch.cat([self.controller.weight, self.controller.bias[:, None]], 1
                         ).reshape(1, -1).detach()

    def extra_state(self) -> dict[str, Any]:
        return {"cma_fitness": self.fitness.clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Replay every generation's returns through a fresh strategy."""
        self.fitness = state["cma_fitness"].clone()
        self.es = self.new_strategy()
        for row in self.fitness:
            self.es.tell(self.es.ask(), (-row).tolist())

    # --- measuring ----------------------------------------------------------------------

    def eval_seeds(self) -> list[int]:
        return [EVAL_SEED + i for i in range(self.eval_episodes)]

    def random_return(self) -> float:
        """The random policy (the rollouts' own) on the evaluation episodes."""
        if self._random_return is None:
            from ganlab.envs import make_env
            from ganlab.envs.rollouts import RandomPolicy, play_episode

            env = make_env(self.env_name, self.size, self.max_steps)
            totals = [play_episode(env, s, RandomPolicy(env.action_space, np.random.default_rng(
                [s, 1])))["rewards"].sum() for s in self.eval_seeds()]
            self._random_return = float(np.mean(totals))
        return self._random_return

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        returns = self.play_real(self.current_params(), self.eval_seeds())[0]
        generator = torch.Generator(self.device).manual_seed(self.seed + 5)
        dream = self.play_dream(self.current_params(), self.eval_seeds()[:DREAM_EVAL], generator)
        return {"real_return": float(returns.mean()), "real_return_std": float(returns.std()),
                "random_return": self.random_return(), "dream_return": float(dream.mean()),
                "eval_episodes": self.eval_episodes}

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        params = self.current_params()
        seed = self.eval_seeds()[:1]
        _, real = self.play_real(params, seed, record=True)
        generator = torch.Generator(self.device).manual_seed(self.seed + 5)
        _, z = self.play_dream(params, seed, generator, record=True)
        dream = to_uint8(torch.sigmoid(self.decoder(z)), UNIT).cpu()
        real = torch.from_numpy(real).permute(0, 3, 1, 2).contiguous()
        return {"episode": side_by_side(real, dream)}

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"controller": self.controller}


STAGE_CLASSES: dict[str, type[Family]] = {"vae": VaeStage, "mdnrnn": MdnRnnStage,
                                         "controller": ControllerStage}
