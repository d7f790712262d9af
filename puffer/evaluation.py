"""Evaluation during training (the train config's ``eval`` group).

    python -m puffer.train env=cartpole eval.every=10 eval.episodes=20
    python -m puffer.train env=cartpole eval.stop_at=475          # stop once solved
    python -m puffer.train -m ... objective=eval                   # sweeps optimize eval return

Every ``eval.every`` updates (and after the last one) the current policy plays ``eval.episodes``
episodes with deterministic actions on its OWN env rows (a separate serial VecEnv, never the
training rows, so training episodes are not cut), starting each evaluation from the same seeded
states so successive evaluations compare. The result joins that update's metrics dict as
``eval/episode_return``, ``eval/episode_length`` (means) and ``eval/best_return``, so every sink
(dashboard, TensorBoard, W&B, metrics.jsonl) gets it. With ``keep_best`` the best evaluation's
policy is saved as ``checkpoints/best.pt`` (``puffer.eval checkpoint=best``); with ``stop_at``
the ``StopAt`` sink ends the run (status ``solved``) once the eval return reaches it; with
``video`` each evaluation also records an episode (``puffer.video``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Evaluator", "PeriodicEvalConfig", "StopAt", "eval_rows", "make_evaluator", "play"]

MAX_ROWS = 16  # eval env rows stepped together; each plays its share of the episodes
SEED_OFFSET = 1_000_003  # eval episodes start from other states than the training rows


@dataclass
class PeriodicEvalConfig:
    """``eval.*`` of the train config. ``every``: updates between evaluations (0: off, unless
    ``stop_at`` is set, which then evaluates every 10 updates)."""

    every: int = 0
    episodes: int = 10
    deterministic: bool = True
    keep_best: bool = True
    stop_at: float | None = None  # end the run (status "solved") once the eval return >= this
    video: bool = False  # also record video_episodes episodes at each evaluation
    video_episodes: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad ``eval.*`` value and the fix."""
        if self.every < 0:
            raise ValueError(f"eval.every={self.every}: use 0 (off) or a number of updates >= 1")
        if self.episodes < 1:
            raise ValueError(f"eval.episodes={self.episodes}: evaluate at least 1 episode")
        if self.video_episodes < 1:
            raise ValueError(f"eval.video_episodes={self.video_episodes}: record at least 1")
        if self.stop_at is not None and not math.isfinite(self.stop_at):
            raise ValueError(f"eval.stop_at={self.stop_at}: give a finite return (or null)")

    @property
    def interval(self) -> int:
        """Updates between evaluations; 0 when evaluation is off."""
        return self.every or (10 if self.stop_at is not None else 0)


def eval_rows(episodes: int, rows_per_env: int, max_rows: int) -> int:
    """Env rows to play ``episodes`` episodes on: whole envs of ``rows_per_env`` rows (one per
    agent), enough for every episode to start at the reset (``ceil(episodes / rows_per_env)``
    envs) but at most ``max_rows`` rows, and at least one env."""
    envs = min(-(-episodes // rows_per_env), max(1, max_rows // rows_per_env))
    return envs * rows_per_env


def play(
    policy: Any,
    vecenv: Any,
    episodes: int,
    *,
    seed: int,
    deterministic: bool = True,
    after_step: Callable[[], Any] | None = None,
) -> tuple[list[float], list[int]]:
    """Returns and lengths of ``episodes`` episodes of ``policy`` on ``vecenv`` (each row plays
    its share), from ``vecenv.reset(seed)``. Uses ``policy.predict``; no gradients.
    ``after_step()`` runs after every step (e.g. to render).

    A row is an agent: on a multi-agent env an episode is one agent's, and with more rows than
    ``episodes`` the first ``episodes`` rows count their first episode while the others play
    along uncounted (their envs' agents must all play)."""
    import torch

    rows = vecenv.num_envs
    quota = np.full(rows, episodes // rows) + (np.arange(rows) < episodes % rows)
    returns: list[list[float]] = [[] for _ in range(rows)]
    lengths: list[list[int]] = [[] for _ in range(rows)]
    device = next(policy.parameters()).device
    obs, _ = vecenv.reset(seed)
    state = policy.initial_state(rows, device) if policy.is_recurrent else None
    with torch.no_grad():
        while any(len(r) < q for r, q in zip(returns, quota)):
            actions, state = policy.predict(obs, state, deterministic=deterministic)
            obs, _, terminals, truncations, infos = vecenv.step(actions)
            if after_step is not None:
                after_step()
            done = terminals | truncations
            if done.any():
                ended = np.flatnonzero(done)
                nothing = np.zeros(len(ended))  # an env without episode stats
                ep_return = infos.get("episode_return", nothing)
                for row, r, n in zip(ended, ep_return, infos.get("episode_length", nothing)):
                    if len(returns[row]) < quota[row]:
                        returns[row].append(float(r))
                        lengths[row].append(int(n))
                state = policy.reset_state(state, torch.as_tensor(done, device=device))
    return [r for rs in returns for r in rs], [n for ns in lengths for n in ns]


class StopAt:
    """A sink that ends the run (``StopRun("solved")``) once ``eval/episode_return`` >= ``threshold``."""

    def __init__(self, threshold: float):
        self.threshold = float(threshold)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from puffer.loggers import StopRun

        value = metrics.get("eval/episode_return")
        if value is not None and value >= self.threshold:
            raise StopRun(
                "solved",
                f"eval return {value:.4g} >= eval.stop_at={self.threshold:g} at step {step:,}",
            )

    def close(self) -> None:
        pass


class Evaluator:
    """Runs the periodic evaluation of one training run; see the module docstring.

    ``make_vecenv(num_envs)`` builds the eval rows (a serial VecEnv of the run's env), whole envs
    of ``rows_per_env`` rows (its agents) each.
    ``config`` is the run's composed config as a plain dict (saved with the best checkpoint).
    """

    def __init__(
        self,
        settings: PeriodicEvalConfig,
        make_vecenv: Callable[[int], Any],
        run_dir: str | Path,
        *,
        seed: int,
        config: Mapping[str, Any] | None = None,
        video_cfg: Any = None,
        is_objective: bool = False,
        rows_per_env: int = 1,
    ):
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.seed = int(seed) + SEED_OFFSET
        self.config = dict(config or {})
        self.video_cfg = video_cfg  # the run's DictConfig, to build a rendering env for videos
        self.is_objective = is_objective  # objective=eval: the run's objective is self.last
        self.best = _saved_best(self.run_dir / "checkpoints" / "best.pt")  # a resumed run's
        self.vecenv = make_vecenv(eval_rows(settings.episodes, rows_per_env, MAX_ROWS))
        self.last: float | None = None
        self.sinks: list[Any] = []  # the run's sinks, for videos (set by the run loop)

    def due(self, update_count: int, done: bool) -> bool:
        """Whether to evaluate after update ``update_count`` (always after the last one)."""
        every = self.settings.interval
        return every > 0 and (update_count % every == 0 or done)

    def stop_sinks(self) -> list[StopAt]:
        """The sinks to add to the run's loggers: ``StopAt`` when ``stop_at`` is set."""
        stop_at = self.settings.stop_at
        return [StopAt(stop_at)] if stop_at is not None else []

    def __call__(self, trainer: Any) -> dict[str, float]:
        """Evaluate ``trainer.policy`` now; returns the ``eval/*`` metrics (and keeps the best)."""
        policy = trainer.policy
        training = policy.training
        policy.eval()
        try:
            returns, lengths = play(
                policy,
                self.vecenv,
                self.settings.episodes,
                seed=self.seed,
                deterministic=self.settings.deterministic,
            )
            mean = float(np.mean(returns))
            if self.settings.video and self.video_cfg is not None:
                from puffer.video import save_videos

                save_videos(policy, self.video_cfg, self.run_dir, int(trainer.global_step),
                            episodes=self.settings.video_episodes, seed=self.seed,
                            sinks=self.sinks)  # fmt: skip
        finally:
            policy.train(training)
        self.last = mean
        if mean > self.best:
            self.best = mean
            if self.settings.keep_best:
                self.save_best(trainer, mean)
        return {
            "eval/episode_return": mean,
            "eval/episode_length": float(np.mean(lengths)),
            "eval/best_return": self.best,
        }

    def save_best(self, trainer: Any, value: float) -> Path:
        """``checkpoints/best.pt`` (atomic, the one checkpoint format) for the policy just evaluated."""
        meta = {"config": self.config, "eval_return": value}
        return trainer.save(self.run_dir / "checkpoints" / "best.pt", meta=meta)

    def close(self) -> None:
        self.vecenv.close()


def _saved_best(path: Path) -> float:
    """The eval return a run's ``best.pt`` was saved with (-inf if there is none)."""
    if not path.is_file():
        return -math.inf
    from puffer import checkpoint as ckpt

    try:
        return float(ckpt.load(path).get("meta", {}).get("eval_return", -math.inf))
    except ckpt.CheckpointError:
        return -math.inf


def make_evaluator(cfg: Any, run_dir: str | Path) -> Evaluator | None:
    """The ``Evaluator`` a training run's ``cfg.eval`` asks for (None when evaluation is off); its
    env rows are a serial VecEnv of the run's env, built like the training one (``puffer.build``)."""
    from omegaconf import OmegaConf

    from puffer import build

    settings = OmegaConf.to_object(cfg.eval)
    if settings.interval == 0:
        return None
    return Evaluator(
        settings,
        lambda n: build.make_vecenv(cfg, num_envs=n, backend="serial"),
        run_dir,
        seed=cfg.seed,
        config=OmegaConf.to_container(cfg, resolve=False),
        video_cfg=cfg,
        is_objective=cfg.objective == "eval",
        rows_per_env=build.rows_per_env(cfg),
    )
