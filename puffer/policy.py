"""Policies: ``MLP`` and ``LSTM`` actor-critics with Discrete, MultiDiscrete and Box action heads.

A policy maps a batch of observations to action-distribution parameters and a value. Two calls:
``forward(obs, state, starts)`` for one step of ``B`` rows (rollouts, evaluation) and
``forward_sequence(obs, state, starts)`` for ``S`` segments of ``T`` steps (training). ``starts``
marks rows whose observation begins a new episode: a recurrent state is zeroed there, in both calls.

``act(obs, state, deterministic=...)`` samples (or, with ``deterministic=True``, takes the most
likely) actions; ``predict(obs, state)`` does the same from numpy to the env's action format.

Observations reach the network flattened to ``(B, obs_dim)`` float32; Dict/Tuple observation spaces
arrive flat from ``puffer.vector`` (``puffer.spaces.unflatten`` recovers the parts in a custom
``encode``). Every policy carries a ``RunningNorm`` as ``obs_norm`` (off unless a trainer enables
it) whose statistics are saved in its ``state_dict``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from puffer.spaces import Box, Discrete, MultiDiscrete, Space

__all__ = [
    "LSTM",
    "MLP",
    "ActOutput",
    "CategoricalHead",
    "GaussianHead",
    "MultiCategoricalHead",
    "Policy",
    "PolicyConfig",
    "RunningNorm",
    "State",
    "make",
    "make_head",
]

State = tuple[torch.Tensor, ...] | None
"""A recurrent state: a tuple of ``(B, ...)`` tensors (``(h, c)`` for the LSTM), or None (MLP)."""

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


@dataclass
class PolicyConfig:
    """Network shape; the ``policy`` Hydra schema."""

    name: str = "mlp"  # "mlp" | "lstm"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"  # "tanh" | "relu" | "gelu"
    lstm_hidden_size: int = 64  # LSTM only: the recurrent state's size
    init_log_std: float = 0.0  # Box actions only: the Gaussian's initial log standard deviation

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the fix for an inconsistent value."""
        if self.name not in POLICIES:
            raise ValueError(f"policy.name={self.name!r} is unknown: use one of {sorted(POLICIES)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"policy.activation={self.activation!r} is unknown: use one of {sorted(ACTIVATIONS)}"
            )
        sizes = list(self.hidden_sizes)
        if not sizes or any(int(h) != h or h < 1 for h in sizes):
            raise ValueError(
                f"policy.hidden_sizes={sizes!r}: give one or more positive ints, e.g. [64, 64]"
            )
        if int(self.lstm_hidden_size) != self.lstm_hidden_size or self.lstm_hidden_size < 1:
            raise ValueError(
                f"policy.lstm_hidden_size={self.lstm_hidden_size!r} must be a positive int"
            )


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain ``std`` and constant bias (the PPO implementation detail)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


# --- action heads --------------------------------------------------------------------------------


def _sample_index(logp: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of log-probabilities ``(B, n)``, as ``(B, 1)`` int64 (inverse CDF: fewer
    ops than ``torch.multinomial`` for small ``n``)."""
    u = torch.rand(*logp.shape[:-1], 1, generator=generator, device=logp.device)
    index = (logp.exp().cumsum(-1) < u).sum(-1, keepdim=True)
    return index.clamp_(max=logp.shape[-1] - 1)  # cumsum may fall short of 1 by rounding


def _categorical_sample(
    logits: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampled index per row of ``logits`` ``(B, n)`` and its log-probability, each ``(B, 1)``."""
    logp = torch.log_softmax(logits, -1)
    index = _sample_index(logp, generator)
    return index, logp.gather(-1, index)


def _categorical_log_prob_entropy(
    logits: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of ``index`` ``(..., 1)`` and the entropy, each of the batch shape."""
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, index).squeeze(-1), -(logp.exp() * logp).sum(-1)


def _normal_log_prob(z: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of a diagonal Gaussian at standardized ``z`` ``(..., d)``, summed over ``d``."""
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class CategoricalHead(nn.Module):
    """``Discrete(n, start)``: logits ``(B, n)``; actions are int64 indices ``0..n-1`` (the env gets
    ``start + index``)."""

    def __init__(self, hidden_size: int, space: Discrete):
        super().__init__()
        self.n, self.start = space.n, space.start
        self.linear = layer_init(nn.Linear(hidden_size, self.n), std=0.01)
        self.action_shape: tuple[int, ...] = ()
        self.action_dtype = torch.int64

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(action (B,) int64, log_prob (B,))``."""
        action, logp = _categorical_sample(logits, generator)
        return action.squeeze(-1), logp.squeeze(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def log_prob_entropy(
        self, logits: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``action`` and the entropy, each of the batch shape."""
        return _categorical_log_prob_entropy(logits, action.unsqueeze(-1))

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        out = action.cpu().numpy()
        return out + self.start if self.start else out


class MultiCategoricalHead(nn.Module):
    """``MultiDiscrete(nvec)``: independent categoricals; logits ``(B, sum(nvec))``, actions
    ``(B, k)`` int64, log-probs and entropies summed over the ``k`` components."""

    def __init__(self, hidden_size: int, space: MultiDiscrete):
        super().__init__()
        self.nvec = [int(n) for n in space.nvec]
        self.linear = layer_init(nn.Linear(hidden_size, sum(self.nvec)), std=0.01)
        self.action_shape = (len(self.nvec),)
        self.action_dtype = torch.int64

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_categorical_sample(part, generator) for part in logits.split(self.nvec, -1)]
        return torch.cat([p[0] for p in parts], -1), torch.cat([p[1] for p in parts], -1).sum(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.stack([p.argmax(-1) for p in logits.split(self.nvec, -1)], -1)

    def log_prob_entropy(
        self, logits: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [
            _categorical_log_prob_entropy(part, action[..., i : i + 1])
            for i, part in enumerate(logits.split(self.nvec, -1))
        ]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)  # type: ignore[return-value]

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return action.cpu().numpy()


class GaussianHead(nn.Module):
    """``Box``: a diagonal Gaussian with a learned, state-independent log-std. Parameters are the
    means ``(B, d)`` (``d = prod(shape)``); actions are unclipped float32 ``(B, d)``; the env gets
    them clipped to the Box's bounds and reshaped to ``(B, *shape)``."""

    def __init__(self, hidden_size: int, space: Box, init_log_std: float = 0.0):
        super().__init__()
        if space.dtype.kind != "f":
            raise ValueError(
                f"GaussianHead: action space {space!r} has dtype {space.dtype}; a Gaussian policy "
                "needs a float Box (use Discrete/MultiDiscrete for integer actions)"
            )
        self.shape = space.shape
        dim = int(np.prod(space.shape, dtype=np.int64))
        self.linear = layer_init(nn.Linear(hidden_size, dim), std=0.01)
        self.log_std = nn.Parameter(torch.full((dim,), float(init_log_std)))
        self.low = np.broadcast_to(space.low, space.shape).astype(space.dtype)
        self.high = np.broadcast_to(space.high, space.shape).astype(space.dtype)
        self.dtype = space.dtype
        self.action_shape = (dim,)
        self.action_dtype = torch.float32

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)

    def sample(
        self, mean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.log_std.exp() * noise, _normal_log_prob(noise, self.log_std)

    def mode(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def log_prob_entropy(
        self, mean: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logp = _normal_log_prob((action - mean) * torch.exp(-self.log_std), self.log_std)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(mean.shape[:-1])
        return logp, entropy

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        out = action.detach().cpu().numpy().reshape(-1, *self.shape)
        return np.clip(out, self.low, self.high).astype(self.dtype, copy=False)


def make_head(
    space: Space, hidden_size: int, init_log_std: float = 0.0
) -> CategoricalHead | MultiCategoricalHead | GaussianHead:
    """The action head for ``space``; unsupported spaces raise ``TypeError`` naming it."""
    if isinstance(space, Discrete):
        return CategoricalHead(hidden_size, space)
    if isinstance(space, MultiDiscrete):
        return MultiCategoricalHead(hidden_size, space)
    if isinstance(space, Box):
        return GaussianHead(hidden_size, space, init_log_std)
    raise TypeError(
        f"no action head for {space!r}: policies support Discrete, MultiDiscrete and float Box "
        "action spaces"
    )


# --- observation normalization -------------------------------------------------------------------


class RunningNorm(nn.Module):
    """Running mean/variance of ``(N, dim)`` batches; ``forward`` standardizes and clips to ``+-clip``.

    A policy's ``obs_norm`` is the identity until ``enabled`` (a trainer turns it on and calls
    ``update``). The statistics and the flag live in the ``state_dict``, so a loaded policy
    normalizes observations as it did in training.
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.enabled = False
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("_shift", torch.zeros(dim))
        self.register_buffer("_scale", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return ((x - self._shift) * self._scale).clamp_(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``(N, dim)`` into the statistics (Chan et al.'s parallel update)."""
        from puffer import dist

        # Under torch.distributed: the moments of every rank's batch, so the ranks stay identical.
        n, mean, var = dist.all_moments(x.reshape(-1, self.mean.shape[0]))
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta.square() * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)
        self._shift.copy_(self.mean)
        self._scale.copy_((self.var + self.eps).rsqrt())

    def get_extra_state(self) -> dict[str, Any]:
        return {"enabled": self.enabled}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.enabled = bool(state["enabled"])


# --- policies ------------------------------------------------------------------------------------


class ActOutput(NamedTuple):
    """What ``Policy.act`` returns: ``action`` in the head's format (``(B,)``/``(B, k)`` int64 or
    ``(B, d)`` float32), its ``log_prob`` ``(B,)``, the ``value`` ``(B,)`` and the next ``state``."""

    action: torch.Tensor
    log_prob: torch.Tensor
    value: torch.Tensor
    state: State


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """``Linear -> activation`` layers through ``sizes`` (orthogonal init, gain sqrt 2)."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [layer_init(nn.Linear(fan_in, fan_out)), act()]
    return nn.Sequential(*layers)


class Policy(nn.Module):
    """Base actor-critic: subclasses set ``encoder`` and ``hidden_size``, and may override
    ``encode`` (observations ``(B, obs_dim)`` float32 to features) or the recurrent methods."""

    is_recurrent = False

    def __init__(
        self, observation_space: Space, action_space: Space, hidden_size: int, init_log_std: float
    ):
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.obs_dim = int(np.prod(observation_space.shape, dtype=np.int64))
        self.obs_norm = RunningNorm(self.obs_dim)
        self.hidden_size = hidden_size
        self.head = make_head(action_space, hidden_size, init_log_std)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Features ``(B, hidden)`` of normalized flat observations ``(B, obs_dim)``."""
        return self.encoder(obs)

    def _features(self, obs: torch.Tensor, lead: int) -> torch.Tensor:
        x = obs.reshape(*obs.shape[:lead], self.obs_dim)
        if x.dtype != torch.float32:
            x = x.float()
        return self.encode(self.obs_norm(x))

    def initial_state(self, batch_size: int, device: Any = None) -> State:
        """The state before the first step of ``batch_size`` rows (None for feed-forward)."""
        return None

    def forward(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step: ``obs`` ``(B, *obs_shape)`` -> ``(params (B, P), value (B,), next state)``."""
        hidden = self._features(obs, 1)
        return self.head(hidden), self.critic(hidden).squeeze(-1), state

    def forward_sequence(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``S`` segments of ``T`` steps from ``state``: ``obs`` ``(S, T, *obs_shape)``, ``starts``
        ``(S, T)`` bool -> ``(params (S, T, P), value (S, T))``."""
        hidden = self._features(obs, 2)
        return self.head(hidden), self.critic(hidden).squeeze(-1)

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        state: State = None,
        starts: torch.Tensor | None = None,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ActOutput:
        """Actions for one step of ``B`` rows: sampled, or the most likely with ``deterministic``
        (the Gaussian's mean for Box actions)."""
        params, value, state = self(obs, state, starts)
        if deterministic:
            action = self.head.mode(params)
            logp, _ = self.head.log_prob_entropy(params, action)
        else:
            action, logp = self.head.sample(params, generator)
        return ActOutput(action, logp, value, state)

    def predict(
        self, obs: np.ndarray, state: State = None, *, deterministic: bool = True
    ) -> tuple[np.ndarray, State]:
        """Env-ready numpy actions ``(B, *action_shape)`` for numpy observations ``(B, *obs_shape)``.

        Pass the returned state back on the next call; for a recurrent policy start with
        ``initial_state(B)`` and zero rows whose episode ended (``reset_state``).
        """
        device = self.critic.weight.device
        out = self.act(torch.as_tensor(obs, device=device), state, deterministic=deterministic)
        return self.head.to_env(out.action), out.state

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The env's form of head actions: Discrete offsets added, Box actions clipped."""
        return self.head.to_env(action)

    @staticmethod
    def reset_state(state: State, done: torch.Tensor | np.ndarray) -> State:
        """``state`` with the rows where ``done`` ``(B,)`` (bool tensor or array) is true zeroed."""
        if state is None:
            return None
        done = torch.as_tensor(done, device=state[0].device)
        keep = (~done).unsqueeze(-1).to(state[0].dtype)
        return tuple(s * keep for s in state)


class MLP(Policy):
    """Feed-forward actor-critic: a shared MLP trunk, a policy head (init std 0.01) and a value head
    (init std 1)."""

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        hidden_sizes: list[int] | tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
    ):
        sizes = [int(h) for h in hidden_sizes]
        super().__init__(observation_space, action_space, sizes[-1], init_log_std)
        self.encoder = mlp([self.obs_dim, *sizes], activation)


class LSTM(Policy):
    """Recurrent actor-critic: an encoder (an MLP trunk, or any module given as ``encoder`` with its
    output size ``encoder_size``; its initialization is kept), an ``nn.LSTMCell`` of
    ``lstm_hidden_size`` units, and policy/value heads on the LSTM's output.

    The state is ``(h, c)``, each ``(B, lstm_hidden_size)``. Rows where ``starts`` is true begin a new
    episode: their state is zeroed before the step, in rollouts and in training alike.
    """

    is_recurrent = True

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        hidden_sizes: list[int] | tuple[int, ...] = (64,),
        activation: str = "tanh",
        lstm_hidden_size: int = 64,
        init_log_std: float = 0.0,
        *,
        encoder: nn.Module | None = None,
        encoder_size: int | None = None,
    ):
        super().__init__(observation_space, action_space, int(lstm_hidden_size), init_log_std)
        if encoder is None:
            sizes = [int(h) for h in hidden_sizes]
            encoder, encoder_size = mlp([self.obs_dim, *sizes], activation), sizes[-1]
        elif encoder_size is None:
            raise ValueError("LSTM: pass encoder_size, the output size of the given encoder")
        self.encoder = encoder
        self.cell = nn.LSTMCell(int(encoder_size), self.hidden_size)
        for name, param in self.cell.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.zeros_(param)

    def initial_state(self, batch_size: int, device: Any = None) -> State:
        device = device if device is not None else self.critic.weight.device
        zeros = torch.zeros(batch_size, self.hidden_size, device=device)
        return (zeros, zeros.clone())

    def forward(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        x = self._features(obs, 1)
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        if starts is not None:
            state = self.reset_state(state, starts)
        h, c = self.cell(x, state)
        return self.head(h), self.critic(h).squeeze(-1), (h, c)

    def forward_sequence(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(obs, 2)
        segments, horizon = x.shape[:2]
        h, c = state if state is not None else self.initial_state(segments, x.device)
        keep = None if starts is None else (~starts).unsqueeze(-1).to(x.dtype)
        outputs = []
        for t in range(horizon):
            if keep is not None:
                h, c = h * keep[:, t], c * keep[:, t]
            h, c = self.cell(x[:, t], (h, c))
            outputs.append(h)
        hidden = torch.stack(outputs, 1)
        return self.head(hidden), self.critic(hidden).squeeze(-1)


POLICIES: dict[str, type[Policy]] = {"mlp": MLP, "lstm": LSTM}


def make(config: PolicyConfig, vecenv: Any, *, seed: int | None = None) -> Policy:
    """The policy ``config`` names for ``vecenv``'s single observation and action spaces.

    ``seed`` makes the initial weights reproducible without touching the global torch RNG.
    """
    config.validate()
    obs_space, act_space = vecenv.single_observation_space, vecenv.single_action_space
    kwargs: dict[str, Any] = dict(
        hidden_sizes=list(config.hidden_sizes),
        activation=config.activation,
        init_log_std=config.init_log_std,
    )
    if config.name == "lstm":
        kwargs["lstm_hidden_size"] = config.lstm_hidden_size
    if seed is None:
        return POLICIES[config.name](obs_space, act_space, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return POLICIES[config.name](obs_space, act_space, **kwargs)
