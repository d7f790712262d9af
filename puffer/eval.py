"""``python -m puffer.eval run=<run dir> [episodes=10] [deterministic=true] [render=false]``.

A Hydra app over ``conf/eval.yaml``. The run's own ``.hydra/config.yaml`` is reloaded with any other
key or group on this command line on top (``puffer.build.reload``); its latest checkpoint (or
``checkpoint=<file or name>``) plays ``episodes`` episodes and the mean and standard deviation of
the return are printed. Evaluating writes nothing, except with ``video=true``: the episodes are
then also played again on a rendering env and written as ``<run>/videos/*.mp4`` (``puffer.video``),
logged to the run's TensorBoard and W&B.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from puffer import build
from puffer import checkpoint as ckpt
from puffer.config import (
    CONF_DIR,
    EXIT_CONFIG,
    ConfigError,
    exit_code,
    explain,
    job_config,
    positive_int,
    validate,
)

__all__ = ["EvalResult", "evaluate", "load", "main"]

USAGE = """usage: python -m puffer.eval run=<run dir> [episodes=10] [deterministic=true]
                          [render=false] [video=false] [checkpoint=<file or name>] [key=value ...]
(--help lists every key; other keys override the run's own config, e.g. env.kwargs.max_steps=1000)"""

EVAL_KEYS = ("run", "episodes", "deterministic", "render", "video", "checkpoint")
MAX_ROWS = 64  # env rows stepped together; each row plays its share of the episodes
_FULL_ERROR = False


@dataclass
class EvalResult:
    """Returns and lengths of the evaluated episodes, and what was evaluated."""

    returns: list[float]
    lengths: list[int]
    checkpoint: Path
    global_step: int
    rows_per_env: int = 1  # agents per env: episodes are theirs, videos whole envs'

    @property
    def mean(self) -> float:
        return sum(self.returns) / len(self.returns)

    @property
    def std(self) -> float:
        m = self.mean
        return math.sqrt(sum((r - m) ** 2 for r in self.returns) / len(self.returns))


def _checkpoint_path(run_dir: Path, name: str | None) -> Path:
    directory = run_dir / "checkpoints"
    if name:
        for candidate in (Path(name), directory / name, directory / f"{name}.pt"):
            if candidate.is_file():
                return candidate
        found = ", ".join(p.name for p in ckpt.CheckpointDir(directory).all()) or "none"
        raise ckpt.CheckpointError(f"checkpoint={name}: no such file (in {directory}: {found})")
    latest = ckpt.CheckpointDir(directory).latest()
    if latest is None:
        raise ckpt.CheckpointError(f"no checkpoint in {directory}: train the run first")
    return latest


def load(cfg: DictConfig) -> DictConfig:
    """The run's config (``cfg.run``) with this command line's other keys on top, validated.

    The checkpoint's network is the one trained: the run's policy stays even when another env (with
    other tuned values) is chosen, unless this command line sets the policy itself.
    """
    if not cfg.run:
        raise ConfigError("run=<run dir> is required")
    run_dir = Path(cfg.run)
    if not run_dir.is_dir():
        raise ConfigError(f"run={run_dir}: no such directory.")
    positive_int("episodes", cfg.episodes)
    run = build.reload(run_dir, cfg, skip=EVAL_KEYS)
    validate(run)
    return run


def evaluate(
    cfg: Any,
    checkpoint: str | Path,
    episodes: int = 10,
    *,
    deterministic: bool = True,
    render: bool = False,
) -> EvalResult:
    """Play ``episodes`` episodes with the policy saved in ``checkpoint`` on ``cfg``'s env
    (``evaluation.play``; on a multi-agent env an episode is one agent's).

    Raises ``CheckpointError`` naming the file when it does not fit ``cfg``'s policy.
    """
    from puffer.device import resolve_device
    from puffer.evaluation import eval_rows, play

    path = Path(checkpoint)
    saved = ckpt.load(path)
    per_env = build.rows_per_env(cfg)
    rows = eval_rows(episodes, per_env, MAX_ROWS)
    vecenv = build.make_vecenv(cfg, num_envs=rows, backend="serial", training=False)
    try:
        policy = build.make_policy(cfg, vecenv)
        _load_policy(policy, saved, path)
        policy = policy.to(resolve_device(cfg.device)).eval()
        draw = (lambda: _render(vecenv)) if render else None
        returns, lengths = play(
            policy, vecenv, episodes, seed=cfg.seed, deterministic=deterministic, after_step=draw
        )
    finally:
        vecenv.close()
    step = int(saved["meta"].get("global_step", 0))
    return EvalResult(returns, lengths, path, step, per_env)


def _load_policy(policy: Any, saved: dict[str, Any], path: Path) -> None:
    saved_class = saved.get("trainer", {}).get("policy_class", type(policy).__name__)
    try:
        if saved_class != type(policy).__name__:
            raise RuntimeError(
                f"it holds a {saved_class} policy, the config a {type(policy).__name__}"
            )
        policy.load_state_dict(ckpt.policy_state(saved))
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = " ".join(lines[:2])[:300] if lines else type(e).__name__
        raise ckpt.CheckpointError(
            f"checkpoint {path} does not fit this run's policy (wrong architecture: {detail}); "
            "evaluate with the config it was trained with (policy, env spaces)"
        ) from None


def _render(vecenv: Any) -> None:
    frame = vecenv.render(0)
    if isinstance(frame, str):
        sys.stdout.write("\x1b[H\x1b[2J" + frame + "\n")
        sys.stdout.flush()
        time.sleep(1 / 50)


def _round(x: float) -> str:
    """A number for people: 4 significant digits, and 0 for float noise like 3.3e-16."""
    return "0" if abs(x) < 1e-9 else f"{x:.4g}"


def _fail(message: str, code: int) -> SystemExit:
    print(f"puffer.eval: {message}", file=sys.stderr)
    return SystemExit(code)


class Checks(Callback):
    """Validates the eval arguments and the run's config before anything is built (exit 2)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            load(job_config(config))
        except Exception as e:  # Hydra would only warn about it; SystemExit goes through
            if _FULL_ERROR:
                traceback.print_exc()
            raise _fail(f"config error: {explain(e)}\n\n{USAGE}", EXIT_CONFIG) from None


def _task(cfg: DictConfig) -> None:
    try:
        _evaluate_and_record(cfg)
    except ConfigError as e:  # the env rejects its settings (e.g. an env.kwargs override)
        raise _fail(f"config error: {e}", EXIT_CONFIG) from None
    except ckpt.CheckpointError as e:
        raise _fail(str(e), 1) from None
    except Exception as e:  # the env, the policy or the video writer failed: not a config error
        if _FULL_ERROR:
            traceback.print_exc()
        raise _fail(f"evaluation failed: {type(e).__name__}: {e}", 1) from None


def _evaluate_and_record(cfg: DictConfig) -> None:
    """Evaluate the run's checkpoint, print the result line and, with ``video``, write videos."""
    run_dir = Path(cfg.run)
    run = load(cfg)
    path = _checkpoint_path(run_dir, cfg.checkpoint)
    result = evaluate(run, path, cfg.episodes, deterministic=cfg.deterministic, render=cfg.render)
    mode = "deterministic" if cfg.deterministic else "sampled"
    print(
        f"{run_dir} @ {path.name} (step {result.global_step:,}): mean return "
        f"{_round(result.mean)} +/- {_round(result.std)} over {len(result.returns)} episodes "
        f"({mode} actions; mean length {sum(result.lengths) / len(result.lengths):.1f})"
    )
    if cfg.video:
        from puffer.video import videos_of_run

        games = -(-cfg.episodes // result.rows_per_env)  # whole envs, as many as evaluated
        paths = videos_of_run(run_dir, cfg.checkpoint, episodes=games, cfg=run)
        print(f"videos: {', '.join(str(p) for p in paths)} (also in TensorBoard/W&B as eval/video)")


_app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")(_task)


def main() -> int:
    """Entry point of ``python -m puffer.eval`` (argv is Hydra's); returns the exit code."""
    global _FULL_ERROR
    _FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises composition errors to us, not prints them
    try:
        _app()
    except SystemExit as e:
        return exit_code(e)
    except KeyboardInterrupt:
        print("puffer.eval: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if _FULL_ERROR:
            raise
        print(f"puffer.eval: config error: {explain(e)}\n\n{USAGE}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":  # run the imported module's main: the callbacks' globals are there
    from puffer.eval import main as module_main

    sys.exit(module_main())
