"""Reach: a multi-agent grid. ``num_agents`` agents per game each walk to their own target cell.

Rows are agents: row ``i`` is agent ``i % num_agents`` of game ``i // num_agents`` (``num_envs``
must be a multiple of ``num_agents``). All agents share one policy (parameter sharing). Each game
starts its agents on distinct random cells of a ``size`` x ``size`` grid, each with its own random
target cell. Action ``Discrete(5)``: 0 noop, 1 up, 2 down, 3 left, 4 right (moves off the grid are
ignored). An agent that steps onto its target gets +1 and its episode terminates; its row is then
masked out (``masks`` False, zero observation) until the game restarts, when every agent is done
(reached its target, or truncated after ``max_steps``, default ``2 * size``, with reward 0). So
agents finish at different times, as in most multi-agent envs.

Observation ``Box(-1, 1, (6,), float32)``: the offset to the agent's target ``(dx, dy)``, its
position scaled to [-1, 1], and the offset to the nearest other agent still playing (0 if none),
all divided by ``size - 1``. Per-episode infos (one value per agent that finished):
``episode_return``, ``episode_length``, ``success``, and ``agent_<k>/episode_return`` per agent.
"""

from __future__ import annotations

import numpy as np

from puffer.env import Buffers, Infos, check_int
from puffer.envs.base import NativeVecEnv
from puffer.spaces import Box, Discrete

MOVES = np.array([[0, 0, 0, -1, 1], [0, -1, 1, 0, 0]], np.int64)  # (dx, dy) per action


class ReachVec(NativeVecEnv):
    """``num_envs // num_agents`` games of ``num_agents`` agents; see the module docstring."""

    state_keys = ("pos", "target", "steps", "masks")

    def __init__(
        self,
        num_envs: int = 2,
        *,
        num_agents: int = 2,
        size: int = 5,
        max_steps: int | None = None,
        buffers: Buffers | None = None,
        seed: int | None = None,
    ):
        self.num_agents = check_int("ReachVec", "num_agents", num_agents)
        self.size = check_int("ReachVec", "size", size, minimum=2)
        if self.num_agents >= self.size * self.size:
            raise ValueError(f"ReachVec: num_agents={num_agents} must be below size**2")
        self.max_steps = check_int("ReachVec", "max_steps", max_steps or 2 * self.size)
        if check_int("ReachVec", "num_envs", num_envs) % self.num_agents:
            raise ValueError(
                f"ReachVec: num_envs={num_envs} rows must be a multiple of num_agents="
                f"{self.num_agents} (one row per agent)"
            )
        obs_space = Box(-1.0, 1.0, shape=(6,), dtype=np.float32)
        super().__init__(obs_space, Discrete(5), num_envs, buffers, seed)
        self.games = self.num_envs // self.num_agents
        self.pos = np.zeros((2, self.num_envs), np.int64)
        self.target = np.zeros((2, self.num_envs), np.int64)
        self.steps = np.zeros(self.num_envs, np.int64)

    @classmethod
    def rows_per_env(cls, num_agents: int = 2, **kw: object) -> int:
        """Rows one game takes: its agents (a vectorizer splits rows in whole games)."""
        return int(num_agents)

    def _observe(self) -> None:
        scale = 1.0 / (self.size - 1)
        obs, pos, a = self.observations, self.pos, self.num_agents
        obs[:, 0:2] = ((self.target - pos) * scale).T
        obs[:, 2:4] = (pos * (2 * scale) - 1.0).T
        # Offset to the nearest other live agent of the same game: (games, a, a) distances.
        p = pos.T.reshape(self.games, a, 1, 2)
        diff = p.transpose(0, 2, 1, 3) - p  # [g, i, j] = pos_j - pos_i
        dist = np.abs(diff).sum(-1).astype(np.float64)
        live = self.masks.reshape(self.games, 1, a)
        dist[~np.broadcast_to(live, dist.shape)] = np.inf
        dist[:, np.arange(a), np.arange(a)] = np.inf
        nearest = dist.argmin(-1)  # (games, a)
        off = np.take_along_axis(diff, nearest[..., None, None], axis=2)[:, :, 0]
        off[np.isinf(dist.min(-1))] = 0
        obs[:, 4:6] = off.reshape(-1, 2) * scale
        obs[~self.masks] = 0

    def _reset_rows(self, rows: np.ndarray) -> None:
        # Called with whole games only (rows of games where every agent is done).
        games = np.unique(rows // self.num_agents)
        n, a = self.size, self.num_agents
        # Distinct start cells per game: the first a of a random permutation of the cells.
        cells = self.rng.random((len(games), n * n)).argsort(axis=1)[:, :a].ravel()
        lo = (games[:, None] * a + np.arange(a)).ravel()
        self.pos[0, lo], self.pos[1, lo] = cells % n, cells // n
        goal = self.rng.integers(n * n - 1, size=len(games) * a)
        start = self.pos[1, lo] * n + self.pos[0, lo]
        goal += goal >= start  # any cell but the agent's own start
        self.target[0, lo], self.target[1, lo] = goal % n, goal // n
        self.steps[lo] = 0
        self.masks[lo] = True
        self._observe()

    def _reset(self, seed: int | None) -> Infos:
        self.masks[:] = True
        return super()._reset(seed)

    def _step(self) -> Infos:
        live = self.masks.copy()
        new = self.pos + MOVES[:, self.actions]
        inside = ((new >= 0) & (new < self.size)).all(0) & live
        np.copyto(self.pos, new, where=inside)
        self.steps += 1
        reached = live & (self.pos == self.target).all(0)
        self.terminals[:] = reached
        self.truncations[:] = live & ~reached & (self.steps >= self.max_steps)
        self.rewards[:] = reached
        self.episode_returns += self.rewards
        self.episode_lengths += live
        ended = np.flatnonzero(self.terminals | self.truncations)
        self.masks[ended] = False
        self._observe_final(ended)
        infos = self._agent_infos(ended) if len(ended) else {}
        over = ~self.masks.reshape(self.games, self.num_agents).any(1)
        if over.any():
            rows = np.flatnonzero(over)[:, None] * self.num_agents + np.arange(self.num_agents)
            self._reset_rows(rows.ravel())
        return infos

    def _observe_final(self, ended: np.ndarray) -> None:
        if len(ended):  # the last observation, as the agent saw it arrive
            self.masks[ended] = True
            self._observe()
            self.final_observations[ended] = self.observations[ended]
            self.masks[ended] = False
        self._observe()

    def _agent_infos(self, ended: np.ndarray) -> Infos:
        agent = ended % self.num_agents
        returns = self.episode_returns[ended].copy()
        infos: Infos = {
            "episode_return": returns,
            "episode_length": self.episode_lengths[ended].copy(),
            "success": self.terminals[ended].astype(np.float32),
        }
        for k in np.unique(agent):
            infos[f"agent_{k}/episode_return"] = returns[agent == k]
        self.episode_returns[ended] = 0
        self.episode_lengths[ended] = 0
        return infos

    def render(self, row: int = 0) -> str:
        g = row // self.num_agents
        rows = range(g * self.num_agents, (g + 1) * self.num_agents)
        grid = [["." for _ in range(self.size)] for _ in range(self.size)]
        for k, i in enumerate(rows):
            if self.masks[i]:
                grid[self.target[1, i]][self.target[0, i]] = chr(ord("a") + k)
                grid[self.pos[1, i]][self.pos[0, i]] = str(k)
        lines = [" ".join(r) for r in grid]
        lines.append(f"game {g}: digits = agents, letters = their targets")
        return "\n".join(lines)
