"""A PettingZoo env as a ``VecEnv``: one row per agent, masks for agents that are not playing.

``PettingZooEnv(env)`` takes a Parallel env (an AEC env is converted with pettingzoo's
``aec_to_parallel``). Row ``i`` belongs to ``env.possible_agents[i]``; all agents share one policy
(parameter sharing), so they must share their observation and action spaces. Each step:

- ``masks[i]`` is True while agent ``i`` is in ``env.agents`` (it acts on ``observations[i]``); an
  agent that is done, or has not appeared yet, has ``masks[i] = False``, zero observations and
  reward, and its actions are not sent.
- the step an agent's episode ends gives its reward, ``terminals``/``truncations`` and its last
  observation in ``final_observations[i]``; ``infos`` gets ``episode_return``/``episode_length``
  for every agent that ended, and ``<agent>/episode_return``/``<agent>/episode_length`` per agent.
- when no agent is left the env is reset in the same step (auto-reset, as every ``VecEnv``).

``make_pettingzoo("module:function", **kwargs)`` builds it from a creator (``env=pettingzoo``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.emulation.gymnasium import import_module, locate
from puffer.env import Buffers, Infos, VecEnv
from puffer.spaces import Box, Space, flatten, flatten_space, from_gymnasium

__all__ = ["PettingZooEnv", "make_pettingzoo"]


def _spaces(env: Any) -> tuple[Space, Space, Space]:
    """``(original observation space, flat observation space, action space)`` shared by all."""

    agents = list(env.possible_agents)
    first = agents[0]
    for a in agents[1:]:
        for kind in ("observation_space", "action_space"):
            if getattr(env, kind)(a) != getattr(env, kind)(first):
                raise ValueError(
                    f"PettingZooEnv: agent {a!r} has {kind} {getattr(env, kind)(a)}, agent "
                    f"{first!r} has {getattr(env, kind)(first)}; the agents share one policy, so "
                    "they need the same spaces (pad them with a wrapper such as supersuit's)"
                )
    original = from_gymnasium(env.observation_space(first))
    obs_space = original if isinstance(original, Box) else flatten_space(original)
    return original, obs_space, from_gymnasium(env.action_space(first))


def _to_parallel(env: Any) -> Any:
    """A Parallel env of the AEC ``env``; ``ValueError`` for a turn-based one (pettingzoo's
    ``aec_to_parallel`` takes only envs whose metadata says ``is_parallelizable``)."""
    from pettingzoo.utils.conversions import aec_to_parallel

    if not env.metadata.get("is_parallelizable", False):
        name = env.metadata.get("name", type(env.unwrapped).__name__)
        env.close()
        raise ValueError(
            f"PettingZooEnv: {name} is a turn-based AEC env, which cannot be converted to a "
            "Parallel env (where all agents act at once): puffer trains Parallel envs; use the "
            "game's parallel_env if it has one, or, if every agent may safely act each step, "
            "set metadata['is_parallelizable'] = True in the AEC env"
        )
    return aec_to_parallel(env)


class PettingZooEnv(VecEnv):
    """A PettingZoo Parallel (or AEC) env as a ``VecEnv`` of ``len(possible_agents)`` rows."""

    def __init__(self, env: Any, buffers: Buffers | None = None):
        from pettingzoo.utils.env import AECEnv

        if isinstance(env, AECEnv):
            env = _to_parallel(env)
        self.env = env
        self.agents = list(env.possible_agents)
        self.rows = {a: i for i, a in enumerate(self.agents)}
        original, obs_space, act_space = _spaces(env)
        super().__init__(obs_space, act_space, len(self.agents), buffers)
        self.original_observation_space = original
        self._flatten = obs_space is not original
        self._act = env.action_space(self.agents[0])
        self.episode_returns = np.zeros(self.num_envs, np.float64)
        self.episode_lengths = np.zeros(self.num_envs, np.int64)

    def _observe(self, obs: dict[Any, Any], target: np.ndarray) -> None:
        for agent, o in obs.items():
            i = self.rows[agent]
            target[i] = flatten(self.original_observation_space, o) if self._flatten else o

    def _start(self, seed: int | None) -> None:
        obs, _ = self.env.reset(seed=seed)
        self.observations[:] = 0
        self._observe(obs, self.observations)
        self.masks[:] = False
        for agent in self.env.agents:
            self.masks[self.rows[agent]] = True
        self.episode_returns[:] = 0
        self.episode_lengths[:] = 0

    def _reset(self, seed: int | None) -> Infos:
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self._start(seed)
        return {}

    def _action(self, i: int) -> Any:
        a = self.actions[i]
        if a.ndim == 0:
            return int(a)
        return a.reshape(self._act.shape).astype(self._act.dtype, copy=False)

    def _step(self) -> Infos:
        live = np.flatnonzero(self.masks)
        obs, rewards, terms, truncs, _ = self.env.step(
            {self.agents[i]: self._action(i) for i in live}
        )
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        for agent, r in rewards.items():
            self.rewards[self.rows[agent]] = r
        for agent, t in terms.items():
            self.terminals[self.rows[agent]] = bool(t)
        for agent, t in truncs.items():
            self.truncations[self.rows[agent]] = bool(t)
        self.episode_returns[live] += self.rewards[live]
        self.episode_lengths[live] += 1
        self.observations[:] = 0
        self._observe(obs, self.observations)
        ended = live[self.terminals[live] | self.truncations[live]]
        self.final_observations[ended] = self.observations[ended]
        self.observations[ended] = 0
        infos = self._episode_infos(ended)
        self.masks[:] = False
        for agent in self.env.agents:
            self.masks[self.rows[agent]] = True
        self.masks[ended] = False
        if not self.masks.any():  # everyone is done: a new episode starts in this step
            self._start(None)
        return infos

    def _episode_infos(self, ended: np.ndarray) -> Infos:
        if not len(ended):
            return {}
        infos = {
            "episode_return": self.episode_returns[ended].astype(np.float32),
            "episode_length": self.episode_lengths[ended].copy(),
        }
        for i in ended:
            infos[f"{self.agents[i]}/episode_return"] = np.float32([self.episode_returns[i]])
            infos[f"{self.agents[i]}/episode_length"] = self.episode_lengths[i : i + 1].copy()
        self.episode_returns[ended] = 0
        self.episode_lengths[ended] = 0
        return infos

    def render(self, row: int = 0) -> Any:
        return self.env.render()

    def _close(self) -> None:
        self.env.close()


def make_pettingzoo(creator: str, **kwargs: Any) -> PettingZooEnv:
    """``PettingZooEnv(fn(**kwargs))`` for the ``"module:function"`` (or dotted) ``creator``."""
    import_module("pettingzoo", "env=pettingzoo")
    return PettingZooEnv(locate(creator, "env.creator")(**kwargs))
