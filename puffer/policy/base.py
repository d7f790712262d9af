"""``Policy``: an actor-critic composed of an encoder, an optional recurrent core and action heads.

    obs (B, *obs_shape), space dtype -> [obs_norm] -> encoder -> [core] -> head  -> params (B, P)
                                                                        \\-> critic -> value (B,)

Two calls: ``forward(obs, state, starts)`` for one step of ``B`` rows (rollouts, evaluation) and
``forward_sequence(obs, state, starts)`` for ``S`` segments of ``T`` steps (training). ``starts``
marks rows whose observation begins a new episode: a recurrent state is zeroed there, in both
calls. ``act`` is the rollout's hot path: forward, sample and log-probability in one call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from puffer.policy.cores import LSTMCore
from puffer.policy.encoders import MLPEncoder
from puffer.policy.heads import make_head
from puffer.policy.layers import layer_init
from puffer.policy.norm import RunningNorm
from puffer.spaces import Space

__all__ = ["LSTM", "MLP", "ActOutput", "Policy", "State"]

State = tuple[torch.Tensor, ...] | None
"""A recurrent state: a tuple of ``(B, ...)`` tensors (``(h, c)`` for the LSTM), or None."""

NO_NORM = (
    "ppo.normalize_observations=true: this policy's encoder scales its (image) input itself; "
    "running observation normalization applies to vector observations only: set it to false"
)


class ActOutput(NamedTuple):
    """What ``Policy.act`` returns: ``action`` in the head's format (``head.action_shape`` per
    row, ``head.action_dtype``), its ``log_prob`` ``(B,)``, the ``value`` ``(B,)`` and the next
    ``state``."""

    action: torch.Tensor
    log_prob: torch.Tensor
    value: torch.Tensor
    state: State


class Policy(nn.Module):
    """An actor-critic: ``encoder`` (a module with ``output_size``, mapping ``(N, *obs_shape)`` to
    ``(N, output_size)``), an optional ``core`` (``LSTMCore``), a policy ``head`` (orthogonal
    init, std 0.01) and a value head ``critic`` (std 1). Subclasses may override ``encode``."""

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        encoder: nn.Module,
        core: LSTMCore | None = None,
        *,
        init_log_std: float = 0.0,
    ):
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        self.obs_shape = tuple(observation_space.shape)
        self.obs_dim = math.prod(self.obs_shape)
        self._flat_input = getattr(encoder, "normalizable", True)
        self.obs_norm = RunningNorm(self.obs_dim, refuse=None if self._flat_input else NO_NORM)
        self.is_recurrent = core is not None
        self.hidden_size = core.hidden_size if core is not None else int(encoder.output_size)
        self.head = make_head(action_space, self.hidden_size, init_log_std)
        self.critic = layer_init(nn.Linear(self.hidden_size, 1), std=1.0)
        self.encoder, self.core = encoder, core  # registered last: parameters() order as before

    @property
    def device(self) -> torch.device:
        return self.critic.weight.device

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Features ``(N, F)`` of observations: for a ``normalizable`` encoder (the MLP, or any
        module without that attribute) flat float32 ``(N, obs_dim)``, normalized when
        ``obs_norm`` is enabled; else ``(N, *obs_shape)`` in the space's dtype (uint8 images)."""
        return self.encoder.forward(obs)

    def _features(self, obs: torch.Tensor, lead: int) -> torch.Tensor:
        n = math.prod(obs.shape[:lead])
        if not self._flat_input:
            return self.encode(obs.reshape(n, *self.obs_shape))
        x = obs.reshape(n, self.obs_dim)
        x = x if x.dtype == torch.float32 else x.float()
        return self.encode(self.obs_norm.forward(x) if self.obs_norm.enabled else x)

    def initial_state(self, batch_size: int, device: Any = None) -> State:
        """The state before the first step of ``batch_size`` rows (None for feed-forward)."""
        if self.core is None:
            return None
        return self.core.initial_state(batch_size, self.device if device is None else device)

    def forward(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step: ``obs`` ``(B, *obs_shape)`` -> ``(params (B, P), value (B,), next state)``."""
        hidden = self._features(obs, 1)
        if self.core is not None:
            if state is None:
                state = self.core.initial_state(hidden.shape[0], hidden.device)
            hidden, state = self.core.step(hidden, state, starts)
        # .forward, not __call__: the module-call overhead is a third of a small policy's step.
        return self.head.forward(hidden), self.critic.forward(hidden).squeeze(-1), state

    def forward_sequence(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``S`` segments of ``T`` steps from ``state``: ``obs`` ``(S, T, *obs_shape)``, ``starts``
        ``(S, T)`` bool -> ``(params (S, T, P), value (S, T))``."""
        segments, horizon = obs.shape[:2]
        hidden = self._features(obs, 2).view(segments, horizon, -1)
        if self.core is not None:
            if state is None:
                state = self.core.initial_state(segments, hidden.device)
            hidden = self.core.sequence(hidden, state, starts)
        return self.head.forward(hidden), self.critic.forward(hidden).squeeze(-1)

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
        (the Gaussian's mean for Box actions), with their log-probabilities and the values.
        Builds no autograd graph (works inside ``torch.inference_mode`` too)."""
        grad = torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext()
        with grad:
            params, value, state = self.forward(obs, state, starts)
            if deterministic:
                action = self.head.mode(params)
                log_prob, _ = self.head.log_prob_entropy(params, action)
            else:
                action, log_prob = self.head.sample(params, generator)
        return ActOutput(action, log_prob, value, state)

    def predict(
        self, obs: np.ndarray, state: State = None, *, deterministic: bool = True
    ) -> tuple[np.ndarray, State]:
        """Env-ready numpy actions ``(B, *action_shape)`` for numpy observations ``(B, *obs_shape)``.

        Pass the returned state back on the next call; for a recurrent policy start with
        ``initial_state(B)`` and zero rows whose episode ended (``reset_state``).
        """
        out = self.act(torch.as_tensor(obs, device=self.device), state, deterministic=deterministic)
        return self.head.to_env(out.action), out.state

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The env's form of head actions: Discrete offsets added, Box actions clipped."""
        return self.head.to_env(action)

    @staticmethod
    def reset_state(state: State, done: torch.Tensor | np.ndarray) -> State:
        """``state`` with the rows where ``done`` ``(B,)`` (bool tensor or array) is true zeroed."""
        if state is None:
            return None
        done = torch.as_tensor(done, device=state[0].device).unsqueeze(-1)
        return tuple(s.masked_fill(done, 0.0) for s in state)


class MLP(Policy):
    """Feed-forward actor-critic on an MLP trunk of ``hidden_sizes`` (or the given ``encoder``)."""

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
        *,
        encoder: MLPEncoder | None = None,
    ):
        if encoder is None:
            encoder = MLPEncoder(math.prod(observation_space.shape), hidden_sizes, activation)
        super().__init__(observation_space, action_space, encoder, init_log_std=init_log_std)


class LSTM(Policy):
    """Recurrent actor-critic: an encoder (an MLP trunk of ``hidden_sizes``, or any module given
    as ``encoder`` with its output size ``encoder_size`` or ``encoder.output_size``; its
    initialization is kept), an ``LSTMCore`` of ``lstm_hidden_size`` units, and the heads."""

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        hidden_sizes: Sequence[int] = (64,),
        activation: str = "tanh",
        lstm_hidden_size: int = 64,
        init_log_std: float = 0.0,
        *,
        encoder: nn.Module | None = None,
        encoder_size: int | None = None,
    ):
        if encoder is None:
            encoder = MLPEncoder(math.prod(observation_space.shape), hidden_sizes, activation)
        size = encoder_size if encoder_size is not None else getattr(encoder, "output_size", None)
        if size is None:
            raise ValueError("LSTM: pass encoder_size, the output size of the given encoder")
        core = LSTMCore(int(size), int(lstm_hidden_size))
        super().__init__(observation_space, action_space, encoder, core, init_log_std=init_log_std)
