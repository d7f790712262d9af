"""CartPole: balance a pole on a cart; gymnasium CartPole-v1's dynamics, reward and limits exactly.

Observation ``Box((4,), float32)``: cart position, cart velocity, pole angle, pole angular velocity.
Action ``Discrete(2)`` (push left/right), or with ``continuous=True`` ``Box(-1, 1, (1,))`` scaling
the force. Reward 1 every step; terminated when ``|x| > 2.4`` or ``|theta| > 12 deg``; truncated
after ``max_steps`` (500) steps. ``CartPoleVec`` steps all rows in float32 numpy; ``CartPole`` is the
one-agent form running the same ``dynamics`` on Python floats (float64, as gymnasium does).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from puffer.env import Buffers, PufferEnv, StepResult
from puffer.envs.base import NativeVecEnv
from puffer.spaces import Box, Discrete, Space

GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSCART + MASSPOLE
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds between state updates
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
MAX_STEPS = 500

_OBS_HIGH = np.array(
    [X_THRESHOLD * 2, np.finfo(np.float32).max, THETA_THRESHOLD * 2, np.finfo(np.float32).max],
    dtype=np.float32,
)


def dynamics(x: Any, x_dot: Any, theta: Any, theta_dot: Any, force: Any, cos: Any, sin: Any) -> Any:
    """One explicit-Euler step of the cart-pole ODE (Florian 2005), for floats or arrays alike."""
    costheta = cos(theta)
    sintheta = sin(theta)
    temp = (force + POLEMASS_LENGTH * theta_dot * theta_dot * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASSPOLE * costheta * costheta / TOTAL_MASS)
    )
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    return x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc


def spaces(continuous: bool) -> tuple[Space, Space]:
    obs = Box(-_OBS_HIGH, _OBS_HIGH, dtype=np.float32)
    act: Space = Box(-1.0, 1.0, shape=(1,), dtype=np.float32) if continuous else Discrete(2)
    return obs, act


def render_text(x: float, theta: float, width: int = 61, height: int = 9) -> str:
    """A terminal drawing: the track, the cart at ``x`` and the pole leaning by ``theta``."""
    grid = [[" "] * width for _ in range(height)]
    scale = (width - 1) / (2 * X_THRESHOLD)
    cx = round((min(max(x, -X_THRESHOLD), X_THRESHOLD) + X_THRESHOLD) * scale)
    track = height - 1
    grid[track] = ["="] * width
    for dx in range(-2, 3):
        if 0 <= cx + dx < width:
            grid[track - 1][cx + dx] = "#"
    for i in range(1, height - 1):  # the pole, from the cart upward; columns are ~half a row wide
        px = cx + round(2 * i * math.sin(theta))
        py = track - 1 - round(i * math.cos(theta))
        if 0 <= px < width and 0 <= py < track - 1:
            grid[py][px] = "o" if i == height - 2 else "|/\\"[int(np.sign(round(theta, 2)))]
    status = f"x={x:+.2f}  theta={math.degrees(theta):+.1f} deg"
    return "\n".join("".join(row) for row in grid) + "\n" + status


class CartPoleVec(NativeVecEnv):
    """``num_envs`` cart-poles stepped together in float32 numpy; see the module docstring."""

    state_keys = ("state", "steps")

    def __init__(
        self,
        num_envs: int = 1,
        *,
        continuous: bool = False,
        max_steps: int = MAX_STEPS,
        buffers: Buffers | None = None,
        seed: int | None = None,
    ):
        obs_space, act_space = spaces(continuous)
        super().__init__(obs_space, act_space, num_envs, buffers, seed)
        self.continuous = continuous
        self.max_steps = int(max_steps)
        self.state = np.zeros((4, self.num_envs), np.float32)  # rows: x, x_dot, theta, theta_dot
        self.steps = np.zeros(self.num_envs, np.int32)
        self._force = np.array([-FORCE_MAG, FORCE_MAG], np.float32)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.state[:, rows] = self.rng.uniform(-0.05, 0.05, size=(4, len(rows)))
        self.steps[rows] = 0
        self.observations[rows] = self.state[:, rows].T

    def _simulate(self) -> None:
        if self.continuous:
            force = FORCE_MAG * np.clip(self.actions[:, 0], -1.0, 1.0)
        else:
            force = self._force[self.actions]
        x, x_dot, theta, theta_dot = dynamics(*self.state, force, np.cos, np.sin)
        self.state[0], self.state[1], self.state[2], self.state[3] = x, x_dot, theta, theta_dot
        self.observations[:] = self.state.T
        np.greater(np.abs(x), X_THRESHOLD, out=self.terminals)
        self.terminals |= np.abs(theta) > THETA_THRESHOLD
        self.steps += 1
        np.greater_equal(self.steps, self.max_steps, out=self.truncations)
        self.rewards[:] = 1.0

    def render(self, row: int = 0) -> str:
        return render_text(float(self.state[0, row]), float(self.state[2, row]))


class CartPole(PufferEnv):
    """One-agent CartPole on Python floats: gymnasium CartPole-v1 step for step."""

    def __init__(
        self, *, continuous: bool = False, max_steps: int = MAX_STEPS, seed: int | None = None
    ):
        self.observation_space, self.action_space = spaces(continuous)
        self.continuous = continuous
        self.max_steps = int(max_steps)
        self.rng = np.random.default_rng(seed)
        self.state = (0.0, 0.0, 0.0, 0.0)
        self.steps = 0

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.state = tuple(self.rng.uniform(-0.05, 0.05, size=4).tolist())
        self.steps = 0
        return np.array(self.state, dtype=np.float32), {}

    def step(self, action: Any) -> StepResult:
        if self.continuous:
            force = FORCE_MAG * min(max(float(action[0]), -1.0), 1.0)
        else:
            force = FORCE_MAG if action == 1 else -FORCE_MAG
        self.state = x, _, theta, _ = dynamics(*self.state, force, math.cos, math.sin)
        self.steps += 1
        terminated = x < -X_THRESHOLD or x > X_THRESHOLD or abs(theta) > THETA_THRESHOLD
        truncated = self.steps >= self.max_steps
        return StepResult(np.array(self.state, dtype=np.float32), 1.0, terminated, truncated, {})

    def render(self) -> str:
        return render_text(self.state[0], self.state[2])
