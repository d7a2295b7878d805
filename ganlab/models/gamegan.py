"""GameGAN's networks (Kim, Zhou, Philion, Torralba & Fidler 2020, "Learning to Simulate Dynamic
Environments with GameGAN"), sized for small frames; the memory module is left out (the
paper's VizDoom setting without it, one rendering component).

- GameGenerator: the image encoder (the previous frame -> a state vector s_t), the dynamics
  engine (an action-conditioned LSTM: its gates are computed from h_{t-1} * W [a_t, z_t],
  plus a bias from s_t) and the rendering engine (a conv decoder from h_t to the next frame,
  tanh). After the warm-up frames it feeds on its own (detached) output.
- GameDiscriminator: one conv trunk of spectrally normalised convs gives every frame a
  feature map; on it sit the single-image head (is this frame real), the action-conditioned
  head (is (x_t, x_{t+1}) what action a_t does; with an info head that recovers a_t and z_t
  from the transition) and the temporal head (3-D convs over the whole sequence's feature
  maps, at two time scales for sequences of 12 frames or more).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganlab.models.base import MODELS

LEAK = 0.2
MIN_SIDE, MAX_SIDE = 16, 128  # frame sides the trunks take (powers of two)
TEMPORAL_LEVEL2 = 12  # sequences this long get the second (slower) temporal level


def check_side(size: int) -> str | None:
    """Why a frame side does not suit the networks (None: it does)."""
    if size < MIN_SIDE or size > MAX_SIDE or size & (size - 1):
        return (f"a power of two from {MIN_SIDE} to {MAX_SIDE} px (the trunks halve it down "
                "to 4x4)")
    return None


def halvings(size: int) -> int:
    return int(math.log2(size // 4))


class ActionLSTM(nn.Module):
    """An LSTM cell whose four gates come from (W_h h_{t-1}) * (W_x x_t), passed through a
    small MLP, plus a bias from the current frame's state vector (the reference's ActionLSTM:
    the action and noise input multiplies the memory instead of being added to it)."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.project_x = nn.Linear(input_dim, input_dim)
        self.project_h = nn.Linear(hidden, input_dim)
        self.gates = nn.Sequential(nn.Linear(input_dim, input_dim), nn.LeakyReLU(LEAK),
                                   nn.Linear(input_dim, 4 * hidden))
        bound = 1.0 / math.sqrt(hidden)  # the reference's uniform init
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
                bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = (self.gates(self.project_h(h) * self.project_x(x)) + bias).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class DynamicsEngine(nn.Module):
    """(s_t, a_t, z_t, (h, c)) -> (h_t, c_t)."""

    def __init__(self, hidden: int, action_dim: int, z_dim: int) -> None:
        super().__init__()
        self.embed_action = nn.Sequential(nn.Linear(action_dim, hidden), nn.LeakyReLU(LEAK))
        self.embed_z = nn.Sequential(nn.Linear(z_dim, hidden), nn.LeakyReLU(LEAK))
        self.mix = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.LeakyReLU(LEAK))
        self.cell = ActionLSTM(2 * hidden, hidden)
        self.state_bias = nn.Linear(hidden, 4 * hidden)

    def forward(self, s, a, z, state):
        x = self.mix(torch.cat([self.embed_action(a), self.embed_z(z)], 1))
        return self.cell(x, state, self.state_bias(s))


def encoder(channels: int, size: int, hidden: int) -> nn.Sequential:
    """A frame -> its state vector s_t: stride-2 4x4 convs of hidden // 8 channels down to
    4x4 (the reference: a stride-1 conv first, then stride-2 ones; all stride 2 here, for
    CPU time), a linear map."""
    width = max(8, hidden // 8)
    layers: list[nn.Module] = []
    for i in range(halvings(size)):
        layers += [nn.Conv2d(channels if i == 0 else width, width, 4, 2, 1), nn.LeakyReLU(LEAK)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * 16, hidden),
                         nn.LeakyReLU(LEAK))


def widths(features: int, size: int) -> list[int]:
    """Channels at 4x4, 8x8, ... size: features * side-halvings-left, at most 8 * features."""
    n = halvings(size)
    return [min(8 * features, features * 2 ** (n - i)) for i in range(n + 1)]


def renderer(hidden: int, channels: int, size: int, features: int) -> nn.Sequential:
    """h_t -> the frame: a linear map to 4x4, then (4x4 stride-2 transposed conv, batch norm,
    ReLU) per doubling (the reference's BigGAN blocks upsample and convolve: on a CPU the
    transposed conv costs a third), and a 3x3 conv to the image, tanh."""
    w = widths(features, size)
    layers: list[nn.Module] = [nn.Linear(hidden, w[0] * 16), nn.Unflatten(1, (w[0], 4, 4)),
                               nn.BatchNorm2d(w[0]), nn.ReLU()]
    for a, b in itertools.pairwise(w):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(w[-1], channels, 3, 1, 1), nn.Tanh())


class GameGenerator(nn.Module):
    """The simulator: encoder, dynamics engine and rendering engine."""

    def __init__(self, channels: int, size: int, action_dim: int, hidden: int, z_dim: int,
                 features: int) -> None:
        super().__init__()
        self.hidden, self.z_dim, self.action_dim = hidden, z_dim, action_dim
        self.encoder = encoder(channels, size, hidden)
        self.engine = DynamicsEngine(hidden, action_dim, z_dim)
        self.renderer = renderer(hidden, channels, size, features)

    def initial_state(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.hidden, device=device)
        return zeros, zeros

    def step(self, frame, action, z, state):
        """One step: frame x_t ([-1, 1]), a_t, z_t -> (x_{t+1}, (h_t, c_t))."""
        state = self.engine(self.encoder(frame), action, z, state)
        return self.renderer(state[0]), state

    def unroll(self, frames: torch.Tensor, actions: torch.Tensor, z: torch.Tensor,
               warm_up: int) -> torch.Tensor:
        """frames (B, T', C, H, W) of which the first warm_up are given (T' >= warm_up),
        actions (B, T-1, A), z (B, T-1, Z) -> the T-1 predicted frames x_1 .. x_{T-1}: the
        input of step t is the real x_t while t < warm_up, else the model's own x_t,
        detached (as the reference)."""
        state = self.initial_state(len(actions), actions.device)
        outputs: list[torch.Tensor] = []
        for t in range(actions.shape[1]):
            frame = frames[:, t] if t < warm_up else outputs[-1].detach()
            out, state = self.step(frame, actions[:, t], z[:, t], state)
            outputs.append(out)
        return torch.stack(outputs, 1)


def sn_conv(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Conv2d(*args, **kwargs))


def sn_conv3d(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Conv3d(*args, **kwargs))


def sn_linear(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Linear(*args, **kwargs))


class GameDiscriminator(nn.Module):
    """The three discriminators on one shared conv trunk (as the reference)."""

    def __init__(self, channels: int, size: int, action_dim: int, z_dim: int, features: int,
                 temporal_features: int, transition_dim: int, seq_len: int) -> None:
        super().__init__()
        self.action_dim, self.z_dim = action_dim, z_dim
        layers: list[nn.Module] = []
        width = channels
        for i in range(halvings(size)):
            out = features * 2 ** i
            layers += [sn_conv(width, out, 4, 2, 1), nn.LeakyReLU(LEAK)]
            width = out
        self.trunk = nn.Sequential(*layers)  # (N, width, 4, 4)
        self.width = width
        # single image: global sum pooling, a linear map (BigGAN's D, the reference's trunk)
        self.single_head = sn_linear(width, 1)
        # action-conditioned: (trunk(x_t), trunk(x_{t+1})) -> a transition feature, which with
        # an embedding of a_t gives a logit; the info head recovers a_t and z_t from it
        self.transition = nn.Sequential(sn_conv(2 * width, transition_dim, 4),
                                        nn.LeakyReLU(LEAK), nn.Flatten())
        self.embed_action = nn.Linear(action_dim, transition_dim)
        self.action_head = nn.Sequential(sn_linear(2 * transition_dim, 2 * transition_dim),
                                         nn.LeakyReLU(LEAK), sn_linear(2 * transition_dim, 1))
        self.info_head = nn.Linear(transition_dim, action_dim + z_dim)
        # temporal: 3-D convs over (N, width, T, 4, 4); a logit per window at each level
        c = temporal_features
        self.temporal1 = nn.Sequential(sn_conv3d(width, c, (2, 2, 2)), nn.LeakyReLU(LEAK),
                                       sn_conv3d(c, 2 * c, (3, 3, 3), (2, 1, 1)),
                                       nn.LeakyReLU(LEAK))
        self.temporal1_head = sn_conv3d(2 * c, 1, (2, 1, 1))
        self.levels = 2 if seq_len >= TEMPORAL_LEVEL2 else 1
        if self.levels == 2:
            self.temporal2 = nn.Sequential(sn_conv3d(2 * c, 4 * c, (3, 1, 1)),
                                           nn.LeakyReLU(LEAK))
            self.temporal2_head = sn_conv3d(4 * c, 1, (3, 1, 1))

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, width, 4, 4)."""
        b, t = frames.shape[:2]
        return self.trunk(frames.flatten(0, 1)).unflatten(0, (b, t))

    def single(self, f: torch.Tensor) -> torch.Tensor:
        """Feature maps (..., width, 4, 4) -> a logit per frame (...)."""
        return self.single_head(torch.relu(f).sum((-2, -1)))[..., 0]

    def transitions(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """Feature maps of x_t and x_{t+1} (B, L, width, 4, 4) -> (B, L, transition_dim)."""
        b, n = prev.shape[:2]
        pair = torch.cat([prev, nxt], 2).flatten(0, 1)
        return self.transition(pair).unflatten(0, (b, n))

    def action_logit(self, transition: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.action_head(torch.cat([self.embed_action(actions), transition], -1))[..., 0]

    def temporal(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of a whole sequence (B, T, width, 4, 4) -> per level (B, windows)."""
        x = self.temporal1(f.transpose(1, 2))
        logits = [self.temporal1_head(x).flatten(1)]
        if self.levels == 2:
            x = self.temporal2(x)
            logits.append(self.temporal2_head(x).flatten(1))
        return logits

    def forward(self, context: torch.Tensor, nexts: torch.Tensor, actions: torch.Tensor,
                wrong_actions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """context: the given frames x_0 .. x_{w-1} (B, w, C, H, W); nexts: x_1 .. x_{T-1}
        (real, or the generator's predictions) (B, T-1, C, H, W); actions a_0 .. a_{T-2}.
        The transitions are (x_t, x_{t+1}) with x_t from the context while t < w, else from
        nexts; the temporal sequence is the context then nexts from x_w on (what the
        generator saw, then what it made). Returns the logits of every head, the info head's
        action and z reconstructions and the frames' feature maps (for feature matching)."""
        w = context.shape[1]
        fc, fn = self.features(context), self.features(nexts)
        prev = torch.cat([fc, fn[:, w - 1: -1]], 1)
        trans = self.transitions(prev, fn)
        info = self.info_head(trans)
        out = {"single": self.single(fn), "action": self.action_logit(trans, actions),
               "action_recon": info[..., : self.action_dim],
               "z_recon": info[..., self.action_dim:], "features": fn,
               "temporal": self.temporal(torch.cat([fc, fn[:, w - 1:]], 1))}
        if wrong_actions is not None:
            out["wrong_action"] = self.action_logit(trans, wrong_actions)
        return out


@MODELS.register("gamegan")
def build_gamegan(cfg, spec) -> tuple[GameGenerator, GameDiscriminator]:
    """model.* of gamegan plus `action_dim` (the game's, one-hot for discrete actions)."""
    channels, size, action_dim = spec.shape[0], spec.shape[-1], int(cfg.action_dim)
    g = GameGenerator(channels, size, action_dim, cfg.hidden, cfg.z_dim, cfg.g_features)
    d = GameDiscriminator(channels, size, action_dim, cfg.z_dim, cfg.d_features,
                          cfg.temporal_features, cfg.transition_dim, cfg.seq_len)
    return g, d
