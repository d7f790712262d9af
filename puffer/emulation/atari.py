"""Atari 2600 games (ale-py) with the standard DQN/PPO preprocessing: ``env=atari env.id=Breakout``.

The chain, from Mnih et al. 2015 (Nature DQN) and Machado et al. 2018, as CleanRL's ppo_atari and
SB3's AtariWrapper apply it:

1. ``gymnasium.make("ale_py:ALE/<Game>-v5", frameskip=1, ...)``: the raw emulator (v5 keeps sticky
   actions, ``repeat_action_probability=0.25``; pass ``0.0`` in ``env.kwargs`` for v4-style).
2. gymnasium's ``AtariPreprocessing``: up to 30 no-op actions at reset, frame skip 4 with a
   max-pool of the last two frames, 84x84 grayscale, uint8.
3. gymnasium's ``FrameStackObservation``: the last 4 frames, an observation of uint8 (4, 84, 84).
4. the ``env.wrappers`` of the config, if any.
5. ``AtariEpisodes`` (a puffer wrapper): while training, a lost life ends the episode for the
   learner (the game goes on) and rewards are clipped to their sign; ``episode_return`` and
   ``episode_length`` report whole games with raw rewards (the score papers report).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from puffer.emulation.gymnasium import GymnasiumEnv, apply_wrappers, import_module
from puffer.env import PufferEnv, StepResult
from puffer.wrappers import EpisodeStats

__all__ = ["AtariEpisodes", "ale_id", "make_atari"]

NOOP_MAX = 30
FRAME_SKIP = 4
SCREEN_SIZE = 84
FRAME_STACK = 4


def ale_id(game: str) -> str:
    """The gymnasium id of ``game``: ``"Breakout"`` -> ``"ale_py:ALE/Breakout-v5"``; a full id
    (``"ALE/Pong-v5"``, ``"ale_py:ALE/Pong-v5"``) is kept, with the module prefix added."""
    if ":" in game:
        return game
    if "/" in game:
        return f"ale_py:{game}"
    return f"ale_py:ALE/{game}-v5"


def make_gym_atari(
    game: str, kwargs: dict[str, Any] | None = None, wrappers: Iterable[Any] = ()
) -> Any:
    """The preprocessed gymnasium env (steps 1-4 of the module docstring)."""
    import gymnasium
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    import_module("ale_py", "env=atari")  # a clear message with the pip command if missing
    env = gymnasium.make(ale_id(game), **{"frameskip": 1, **(kwargs or {})})
    env = AtariPreprocessing(
        env,
        noop_max=NOOP_MAX,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False,  # AtariEpisodes does it, keeping whole-game statistics
        grayscale_obs=True,
        scale_obs=False,  # uint8 end to end: the policy's encoder scales
    )
    env = FrameStackObservation(env, FRAME_STACK)
    return apply_wrappers(env, wrappers)


def make_atari(
    game: str,
    kwargs: dict[str, Any] | None = None,
    wrappers: Iterable[Any] = (),
    training: bool = True,
) -> PufferEnv:
    """The full chain as a ``PufferEnv`` (a picklable creator for ``puffer.vector.make`` with
    ``functools.partial``). ``training=False`` (evaluation) keeps lives and raw rewards."""
    return AtariEpisodes(GymnasiumEnv(make_gym_atari(game, kwargs, wrappers)), training)


class AtariEpisodes(EpisodeStats):
    """Episodic life and reward clipping for training, whole-game statistics always.

    With ``training`` a step that loses a life returns ``terminated=True`` (no bootstrapping past a
    lost life, as in Mnih et al. 2015); the ``reset()`` that follows continues the same game from
    the current frame. Only a real game over resets the emulator. Rewards are clipped to
    {-1, 0, 1} while training. ``info`` gets ``episode_return`` (raw score) and
    ``episode_length`` (agent steps) when a game ends.
    """

    def __init__(self, env: PufferEnv, training: bool = True):
        super().__init__(env)
        self.training = bool(training)
        self.episode_return, self.episode_length = 0.0, 0
        self._lives = 0
        self._game_over = True
        self._obs: Any = None

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        if not self._game_over and seed is None:
            return self._obs, {}  # a life was lost: the game goes on
        obs, info = self.env.reset(seed)
        self.episode_return, self.episode_length = 0.0, 0
        self._lives = int(info.get("lives", 0))
        self._game_over = False
        self._obs = obs
        return obs, info

    def step(self, action: Any) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._obs = obs
        self.episode_return += reward
        self.episode_length += 1
        self._game_over = terminated or truncated
        if self._game_over:
            info = {
                **info,
                "episode_return": self.episode_return,
                "episode_length": self.episode_length,
            }
        lives = int(info.get("lives", self._lives))
        life_lost = lives < self._lives
        self._lives = lives
        if self.training:
            reward = float(np.sign(reward))
            terminated = terminated or life_lost
        return StepResult(obs, reward, terminated, truncated, info)
