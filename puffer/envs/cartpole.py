"""CartPole: balance a pole on a cart; gymnasium CartPole-v1's dynamics, reward and limits exactly.

Observation ``Box((4,), float32)``: cart position, cart velocity, pole angle, pole angular velocity
(bounds as gymnasium's). Action ``Discrete(2)`` (0 pushes left, 1 right), or with
``continuous=True`` ``Box(-1, 1, (1,), float32)``: the force is ``10 * action`` newtons (an
action outside [-1, 1] is refused; ``puffer.wrappers.ClipAction`` clips instead).
Reward 1 every step; terminated when ``|x| > 2.4`` or ``|theta| > 12 deg``; truncated after
``max_steps`` (500) steps. Per-episode info: ``episode_return``, ``episode_length``.

Both forms compute in float64 with gymnasium's operations in gymnasium's order, so from the same
state and actions they reproduce CartPole-v1 step for step: ``CartPoleVec`` in place over all rows,
``CartPole`` (the one-agent form) on Python floats. ``reset(seed)`` draws the same start state as
gymnasium's ``reset(seed=seed)`` (for the first row).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from puffer.env import Buffers, PufferEnv, StepResult, check_int
from puffer.envs.base import NativeVecEnv
from puffer.spaces import Box, Discrete, Space

GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds between state updates
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
MAX_STEPS = 500

_OBS_HIGH = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)


def dynamics(
    x: float, x_dot: float, theta: float, theta_dot: float, force: float
) -> tuple[float, float, float, float]:
    """One explicit-Euler step of the cart-pole ODE (Florian 2005) on Python floats."""
    costheta = math.cos(theta)
    sintheta = math.sin(theta)
    temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS)
    )
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    return x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc


def spaces(continuous: bool) -> tuple[Space, Space]:
    """``(observation_space, action_space)``."""
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


def render_rgb(x: float, theta: float, width: int = 600, height: int = 400) -> np.ndarray:
    """An image ``(height, width, 3)`` uint8 as gymnasium's CartPole draws it: track, cart, pole."""
    img = np.full((height, width, 3), 255, np.uint8)
    scale = width / (2 * X_THRESHOLD)
    track = int(height * 0.75)
    img[track, :] = 0
    cx = int(x * scale + width / 2)
    cart_w, cart_h = 50, 30
    img[
        track - cart_h // 2 : track + cart_h // 2,
        max(cx - cart_w // 2, 0) : max(cx + cart_w // 2, 0),
    ] = 0
    pole = np.linspace(0.0, 2 * LENGTH * scale, 200)  # 200 points along the pole, 10 px wide
    px = (cx + pole * math.sin(theta)).astype(int)
    py = (track - cart_h // 4 - pole * math.cos(theta)).astype(int)
    for d in range(-5, 5):
        ok = (px + d >= 0) & (px + d < width) & (py >= 0) & (py < height)
        img[py[ok], px[ok] + d] = (202, 152, 101)
    return img


class CartPoleVec(NativeVecEnv):
    """``num_envs`` cart-poles stepped together in place (float64 state); see the module docstring."""

    state_keys = ("physics", "steps")

    def __init__(
        self,
        num_envs: int = 1,
        *,
        continuous: bool = False,
        max_steps: int = MAX_STEPS,
        buffers: Buffers | None = None,
        seed: int | None = None,
        render_mode: str = "ansi",
    ):
        obs_space, act_space = spaces(continuous)
        super().__init__(obs_space, act_space, num_envs, buffers, seed)
        self.render_mode = render_mode  # "ansi" (text) or "rgb_array" (images, for videos)
        self.continuous = continuous
        self.max_steps = check_int("CartPoleVec", "max_steps", max_steps)
        n = self.num_envs
        self.physics = np.zeros((4, n))  # rows: x, x_dot, theta, theta_dot (float64, as gymnasium)
        self.steps = np.zeros(n, np.int64)
        self._tmp = np.empty((5, n))  # scratch rows, so a step allocates nothing
        self._flag = np.empty(n, np.bool_)

    def _reset_rows(self, rows: np.ndarray) -> None:
        start = self.rng.uniform(-0.05, 0.05, size=(4, len(rows)))
        self.physics[:, rows] = start
        self.steps[rows] = 0
        self.observations[rows] = start.T

    def _simulate(self) -> None:
        # dynamics() with every operation in place, in the same order (so the same rounding).
        x, x_dot, theta, theta_dot = self.physics
        force, cos, sin, temp, acc = self._tmp
        if self.continuous:  # in [-1, 1]: VecEnv.send refuses other values (ClipAction clips)
            np.multiply(self.actions[:, 0], FORCE_MAG, out=force)
        else:
            np.multiply(self.actions, 2 * FORCE_MAG, out=force)  # 0 -> -10, 1 -> +10, exactly
            force -= FORCE_MAG
        np.cos(theta, out=cos)
        np.sin(theta, out=sin)
        np.square(theta_dot, out=temp)  # temp = (force + pml * theta_dot**2 * sin) / total_mass
        temp *= POLEMASS_LENGTH
        temp *= sin
        temp += force
        temp /= TOTAL_MASS
        den = force  # force is no longer needed: reuse its row
        np.square(cos, out=den)  # den = length * (4/3 - masspole * cos**2 / total_mass)
        den *= MASSPOLE
        den /= TOTAL_MASS
        np.subtract(4.0 / 3.0, den, out=den)
        den *= LENGTH
        np.multiply(sin, GRAVITY, out=acc)  # thetaacc = (gravity * sin - cos * temp) / den
        np.multiply(cos, temp, out=sin)
        acc -= sin
        acc /= den
        xacc = sin
        np.multiply(acc, POLEMASS_LENGTH, out=xacc)  # xacc = temp - pml * thetaacc * cos / mass
        xacc *= cos
        xacc /= TOTAL_MASS
        np.subtract(temp, xacc, out=xacc)
        step = cos
        np.multiply(x_dot, TAU, out=step)
        x += step
        xacc *= TAU
        x_dot += xacc
        np.multiply(theta_dot, TAU, out=step)
        theta += step
        acc *= TAU
        theta_dot += acc

        obs = self.observations
        obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3] = x, x_dot, theta, theta_dot
        np.abs(x, out=step)
        np.greater(step, X_THRESHOLD, out=self.terminals)
        np.abs(theta, out=step)
        np.greater(step, THETA_THRESHOLD, out=self._flag)
        self.terminals |= self._flag
        self.steps += 1
        np.greater_equal(self.steps, self.max_steps, out=self.truncations)
        self.rewards.fill(1.0)

    def render(self, row: int = 0) -> str | np.ndarray:
        draw = render_rgb if self.render_mode == "rgb_array" else render_text
        return draw(float(self.physics[0, row]), float(self.physics[2, row]))


class CartPole(PufferEnv):
    """One-agent CartPole on Python floats: gymnasium CartPole-v1 step for step."""

    def __init__(
        self,
        *,
        continuous: bool = False,
        max_steps: int = MAX_STEPS,
        seed: int | None = None,
        render_mode: str = "ansi",
    ):
        self.render_mode = render_mode  # "ansi" (text) or "rgb_array" (images, for videos)
        self.max_steps = check_int("CartPole", "max_steps", max_steps)
        self.observation_space, self.action_space = spaces(continuous)
        self.continuous = continuous
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
            force = FORCE_MAG * float(action[0])  # in [-1, 1]: step() refuses other values
        else:
            force = FORCE_MAG if action == 1 else -FORCE_MAG
        self.state = x, _, theta, _ = dynamics(*self.state, force)
        self.steps += 1
        terminated = x < -X_THRESHOLD or x > X_THRESHOLD or abs(theta) > THETA_THRESHOLD
        truncated = self.steps >= self.max_steps
        info = {}
        if terminated or truncated:
            info = {"episode_return": float(self.steps), "episode_length": self.steps}
        return StepResult(np.array(self.state, dtype=np.float32), 1.0, terminated, truncated, info)

    def render(self) -> str | np.ndarray:
        draw = render_rgb if self.render_mode == "rgb_array" else render_text
        return draw(self.state[0], self.state[2])
