"""Squared: walk from the centre of a ``size`` x ``size`` grid to a target cell.

The agent starts in the centre cell; the target is a uniformly random other cell. Action
``Discrete(5)``: 0 noop, 1 up, 2 down, 3 left, 4 right. Reward +1 and terminated on reaching the
target; -1 and terminated on stepping off the grid (the agent stays on its last cell); -1 and
truncated when ``max_steps`` (default ``2 * size``) pass without either. Per-episode info:
``success`` (1.0 if the target was reached, else 0.0), ``episode_return``, ``episode_length``.

Observation ``Box(-1, 1, (4,), float32)``: the target's offset from the agent ``(dx, dy)`` and the
agent's position ``(x, y)``, each divided by ``size - 1``, positions scaled to [-1, 1] (``y`` grows
downward). The offset makes the task learnable by an MLP in seconds; the position shows the walls.
"""

from __future__ import annotations

import numpy as np

from puffer.env import Buffers, Infos, check_int
from puffer.envs.base import NativeVecEnv, OneAgent
from puffer.spaces import Box, Discrete

# (dx, dy) of each action: noop, up, down, left, right.
MOVES = np.array([[0, 0, 0, -1, 1], [0, -1, 1, 0, 0]], np.int64)
ACTION_NAMES = ("noop", "up", "down", "left", "right")


class SquaredVec(NativeVecEnv):
    """``num_envs`` grids stepped together; see the module docstring."""

    state_keys = ("pos", "target", "steps")

    def __init__(
        self,
        num_envs: int = 1,
        *,
        size: int = 7,
        max_steps: int | None = None,
        buffers: Buffers | None = None,
        seed: int | None = None,
    ):
        self.size = check_int("SquaredVec", "size", size, minimum=2)
        self.max_steps = check_int(
            "SquaredVec", "max_steps", 2 * self.size if max_steps is None else max_steps
        )
        obs_space = Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        super().__init__(obs_space, Discrete(5), num_envs, buffers, seed)
        self.pos = np.zeros((2, self.num_envs), np.int64)  # rows: x, y
        self.target = np.zeros((2, self.num_envs), np.int64)
        self.steps = np.zeros(self.num_envs, np.int64)
        self._new = np.zeros((2, self.num_envs), np.int64)
        self._off = np.zeros(self.num_envs, np.bool_)
        self._success = np.zeros(self.num_envs, np.float32)

    def _observe(self, rows: slice | np.ndarray = slice(None)) -> None:
        scale = 1.0 / (self.size - 1)
        pos, target, obs = self.pos[:, rows], self.target[:, rows], self.observations
        obs[rows, 0] = (target[0] - pos[0]) * scale
        obs[rows, 1] = (target[1] - pos[1]) * scale
        obs[rows, 2] = pos[0] * (2 * scale) - 1.0
        obs[rows, 3] = pos[1] * (2 * scale) - 1.0

    def _reset_rows(self, rows: np.ndarray) -> None:
        n, centre = self.size, self.size // 2
        cell = self.rng.integers(n * n - 1, size=len(rows))  # any cell but the centre
        cell += cell >= centre * n + centre
        self.target[0, rows], self.target[1, rows] = cell % n, cell // n
        self.pos[:, rows] = centre
        self.steps[rows] = 0
        self._observe(rows)

    def _simulate(self) -> None:
        new, off = self._new, self._off
        np.add(self.pos, MOVES[:, self.actions], out=new)
        np.logical_or((new < 0).any(0), (new >= self.size).any(0), out=off)
        np.copyto(self.pos, new, where=~off)
        reached = (self.pos == self.target).all(0)
        self.steps += 1
        np.logical_or(reached, off, out=self.terminals)
        np.greater_equal(self.steps, self.max_steps, out=self.truncations)
        self.truncations &= ~self.terminals
        self._success[:] = reached
        # +1 on the target, -1 off the grid or out of time, 0 otherwise.
        self.rewards[:] = reached
        self.rewards -= off
        self.rewards -= self.truncations
        self._observe()

    def _episode_infos(self, rows: np.ndarray) -> Infos:
        return {"success": self._success[rows]}

    def render(self, row: int = 0) -> str:
        x, y = self.pos[:, row]
        tx, ty = self.target[:, row]
        lines = []
        for j in range(self.size):
            cells = [
                "A" if (i, j) == (x, y) else "T" if (i, j) == (tx, ty) else "."
                for i in range(self.size)
            ]
            lines.append(" ".join(cells))
        lines.append(f"step {self.steps[row]}/{self.max_steps}  A=agent T=target")
        return "\n".join(lines)


class Squared(OneAgent):
    """The one-agent form: ``SquaredVec`` with one row."""

    def __init__(self, *, size: int = 7, max_steps: int | None = None, seed: int | None = None):
        super().__init__(SquaredVec(1, size=size, max_steps=max_steps, seed=seed))
