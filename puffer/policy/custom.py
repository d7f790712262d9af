"""Custom networks: any ``nn.Module`` that follows the network contract becomes a ``Policy``.

The contract (docs/custom_policy.md shows it in full):

- ``__init__(observation_space, action_space, **kwargs)`` (puffer spaces; ``kwargs`` from
  ``policy.kwargs``). ``observation_space`` describes the tensors ``forward`` receives; when the
  env flattened a Dict/Tuple space, a constructor that has an ``original_observation_space``
  parameter also gets the structured space (take the parts apart with ``puffer.spaces.unflatten``).
- ``output_size: int``: the size of the features the action head reads.
- Feed-forward: ``forward(obs) -> (features (B, output_size), value (B,))`` for observations
  ``(B, *obs_shape)`` in the space's dtype (uint8 images arrive unscaled).
- Recurrent (optional): ``initial_state(batch_size, device) -> tuple of (B, ...) tensors`` and
  ``forward(obs, state, starts) -> (features, value, next_state)``, where ``starts`` ``(B,)`` bool
  marks rows that begin an episode (reset their state first). ``forward_sequence(obs (S, T, ...),
  state, starts (S, T)) -> (features (S, T, F), value (S, T))`` is optional: without it training
  calls ``forward`` once per step.

puffer adds the action head (``puffer.policy.heads``) for the env's action space. A class that
already subclasses ``puffer.policy.Policy`` is used as it is.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Any

import torch
from torch import nn

from puffer.policy.base import Policy, State
from puffer.policy.heads import make_head
from puffer.policy.norm import RunningNorm
from puffer.spaces import Space

__all__ = ["CustomPolicy", "build_custom", "import_target"]

NO_NORM = (
    "ppo.normalize_observations=true cannot apply to a custom policy: normalize inside the "
    "network, or set it to false"
)


def import_target(target: str) -> Any:
    """The object named ``"package.module.Name"`` (or ``"package.module:Name"``). Raises
    ``ValueError`` naming ``policy._target_`` and what could not be imported."""
    module_name, sep, attr = target.rpartition(":") if ":" in target else target.rpartition(".")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"policy._target_={target!r}: give a dotted path to a class, e.g. my_pkg.nets.MyPolicy"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"policy._target_={target!r}: cannot import {module_name!r} ({e})") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"policy._target_={target!r}: {module_name} has no {attr!r}") from None


class CustomPolicy(Policy):
    """A user ``network`` (see the module docstring) with puffer's action head on its features."""

    def __init__(
        self,
        network: nn.Module,
        observation_space: Space,
        action_space: Space,
        init_log_std: float = 0.0,
    ):
        nn.Module.__init__(self)
        self.observation_space, self.action_space = observation_space, action_space
        self.obs_shape = tuple(observation_space.shape)
        self.obs_dim = math.prod(self.obs_shape)
        self.obs_norm = RunningNorm(self.obs_dim, refuse=NO_NORM)
        self.network, self.core = network, None
        self.is_recurrent = callable(getattr(network, "initial_state", None))
        self.hidden_size = int(network.output_size)
        self.head = make_head(action_space, self.hidden_size, init_log_std)
        self.critic = nn.Identity()  # the network computes the value; no parameters here

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def initial_state(self, batch_size: int, device: Any = None) -> State:
        if not self.is_recurrent:
            return None
        return tuple(self.network.initial_state(batch_size, device or self.device))

    def forward(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        if not self.is_recurrent:
            features, value = self.network(obs)
            return self.head(features), value, None
        if state is None:
            state = self.initial_state(obs.shape[0], obs.device)
        if starts is None:
            starts = torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
        features, value, state = self.network(obs, state, starts)
        return self.head(features), value, state

    def forward_sequence(
        self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        segments, horizon = obs.shape[:2]
        if not self.is_recurrent:
            features, value = self.network(obs.reshape(segments * horizon, *obs.shape[2:]))
            return self.head(features).view(segments, horizon, -1), value.view(segments, horizon)
        if state is None:
            state = self.initial_state(segments, obs.device)
        if starts is None:
            starts = torch.zeros(segments, horizon, dtype=torch.bool, device=obs.device)
        if hasattr(self.network, "forward_sequence"):
            features, value = self.network.forward_sequence(obs, state, starts)
            return self.head(features), value
        steps = []
        for t in range(horizon):
            features, value, state = self.network(obs[:, t], state, starts[:, t])
            steps.append((features, value))
        features = torch.stack([f for f, _ in steps], 1)
        return self.head(features), torch.stack([v for _, v in steps], 1)


def build_custom(
    target: str,
    kwargs: dict[str, Any],
    observation_space: Space,
    action_space: Space,
    original_observation_space: Space | None = None,
    init_log_std: float = 0.0,
) -> Policy:
    """Import ``target``, call it with the spaces and ``kwargs``, and wrap the network. Raises
    ``ValueError`` naming the target when it does not follow the contract."""
    factory = import_target(target)
    kwargs = dict(kwargs)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "original_observation_space" in params:
        kwargs["original_observation_space"] = original_observation_space or observation_space
    network = factory(observation_space=observation_space, action_space=action_space, **kwargs)
    if isinstance(network, Policy):
        return network
    if not isinstance(network, nn.Module):
        raise ValueError(f"policy._target_={target!r} built {network!r}, not a torch nn.Module")
    size = getattr(network, "output_size", None)
    if not isinstance(size, int) or size < 1:
        raise ValueError(
            f"policy._target_={target!r}: the network needs an int attribute output_size (the "
            f"size of the features its forward returns for the action head), got {size!r}"
        )
    return CustomPolicy(network, observation_space, action_space, init_log_std)
