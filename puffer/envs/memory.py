"""Memory: remember a cue through ``length`` blank steps, then recall it.

Observation ``Box(-1, 1, (2,), float32)``: ``[cue, recall]``. The first observation of an episode
shows the cue, -1 or +1 with equal probability, as ``[cue, 0]``; the next ``length`` are blank,
``[0, 0]``; then ``[0, 1]`` asks for the answer. Action ``Discrete(2)``: 0 answers -1, 1 answers +1.
Actions before the recall step do nothing and earn 0; the answer earns +1 if it matches the cue
and -1 if not, and terminates the episode, which so lasts ``length + 2`` steps. Per-episode info:
``success`` (1.0 if the answer was right, else 0.0), ``episode_return``, ``episode_length``.

The recall observation is the same whatever the cue and no action changes what is observed, so a
memoryless policy succeeds half the time at best; a recurrent policy can always succeed.
"""

from __future__ import annotations

import numpy as np

from puffer.env import Buffers, Infos, check_int
from puffer.envs.base import NativeVecEnv, OneAgent
from puffer.spaces import Box, Discrete


class MemoryVec(NativeVecEnv):
    """``num_envs`` memory episodes stepped together; see the module docstring."""

    state_keys = ("cue", "t")

    def __init__(
        self,
        num_envs: int = 1,
        *,
        length: int = 8,
        buffers: Buffers | None = None,
        seed: int | None = None,
    ):
        self.length = check_int("MemoryVec", "length", length, minimum=0)
        obs_space = Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        super().__init__(obs_space, Discrete(2), num_envs, buffers, seed)
        self.cue = np.ones(self.num_envs, np.int64)  # -1 or +1
        self.t = np.zeros(self.num_envs, np.int64)  # steps taken in the episode
        self._success = np.zeros(self.num_envs, np.float32)

    def _reset_rows(self, rows: np.ndarray) -> None:
        cue = 2 * self.rng.integers(2, size=len(rows)) - 1
        self.cue[rows] = cue
        self.t[rows] = 0
        self.observations[rows, 0] = cue
        self.observations[rows, 1] = 0.0

    def _simulate(self) -> None:
        recall = np.equal(self.t, self.length + 1, out=self.terminals)
        right = (2 * self.actions - 1) == self.cue
        self._success[:] = right
        # +1 right, -1 wrong on the recall step; 0 before it.
        np.multiply(recall, 2 * right - 1, out=self.rewards, casting="unsafe")
        self.t += 1
        self.observations[:, 0] = 0.0
        np.equal(self.t, self.length + 1, out=self.observations[:, 1], casting="unsafe")

    def _episode_infos(self, rows: np.ndarray) -> Infos:
        return {"success": self._success[rows]}

    def render(self, row: int = 0) -> str:
        t, cue = int(self.t[row]), int(self.cue[row])
        if t == 0:
            now = f"cue {cue:+d}: remember it"
        elif t <= self.length:
            now = "blank"
        else:
            now = "recall: answer the cue (0 for -1, 1 for +1)"
        cells = "".join(
            "C" if i == 0 else "R" if i == self.length + 1 else "." for i in range(self.length + 2)
        )
        marker = " " * min(t, self.length + 1) + "^"
        return f"memory {cells}  step {t}: {now}\n       {marker}"


class Memory(OneAgent):
    """The one-agent form: ``MemoryVec`` with one row."""

    def __init__(self, *, length: int = 8, seed: int | None = None):
        super().__init__(MemoryVec(1, length=length, seed=seed))
