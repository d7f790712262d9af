"""``python -m puffer.eval run=<run dir> [episodes=10] [deterministic=true] [render=false]``.

Loads the run's own config (its ``.hydra/overrides.yaml`` composed again, with any other overrides
on this command line applied on top) and its latest checkpoint (or ``checkpoint=<file or name>``),
plays ``episodes`` episodes and prints the mean and standard deviation of the return.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from puffer import checkpoint as ckpt
from puffer.config import ConfigError, compose, override_key, validate
from puffer.runs import read_overrides

__all__ = ["EvalResult", "evaluate", "load_run", "main"]

USAGE = """usage: python -m puffer.eval run=<run dir> [episodes=10] [deterministic=true]
                          [render=false] [checkpoint=<file or name>] [config overrides ...]

Evaluates a trained run: its config, its latest checkpoint (or the one named), and any config
overrides given here on top (e.g. env.kwargs.max_steps=1000, seed=7).
"""

EVAL_KEYS = {"run", "episodes", "deterministic", "render", "checkpoint"}
MAX_ROWS = 64  # env rows stepped together; each row plays its share of the episodes


@dataclass
class EvalResult:
    """Returns and lengths of the evaluated episodes, and what was evaluated."""

    returns: list[float]
    lengths: list[int]
    checkpoint: Path
    global_step: int

    @property
    def mean(self) -> float:
        return sum(self.returns) / len(self.returns)

    @property
    def std(self) -> float:
        m = self.mean
        return math.sqrt(sum((r - m) ** 2 for r in self.returns) / len(self.returns))


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise ConfigError(f"{key}={value}: expected true or false.")


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


def load_run(run_dir: str | Path, overrides: list[str] = ()) -> Any:  # type: ignore[assignment]
    """The run's config composed again from its overrides, with ``overrides`` on top."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run={run_dir}: no such directory.")
    base = [
        o
        for o in read_overrides(run_dir)
        if override_key(o) != "resume" and not override_key(o).startswith("hydra.")
    ]
    cfg = compose([*base, *overrides])
    # The checkpoint's network is the one trained: keep the run's policy even when another env
    # (with other tuned values) is chosen here, unless this command line sets the policy itself.
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file() and not any(override_key(o).split(".")[0] == "policy" for o in overrides):
        cfg = OmegaConf.merge(cfg, {"policy": OmegaConf.load(saved).policy})
    validate(cfg)
    return cfg


def evaluate(
    cfg: Any,
    checkpoint: str | Path,
    episodes: int = 10,
    *,
    deterministic: bool = True,
    render: bool = False,
) -> EvalResult:
    """Play ``episodes`` episodes with the policy saved in ``checkpoint`` on ``cfg``'s env."""
    import numpy as np
    import torch

    from puffer import policy as policies
    from puffer.ppo.trainer import resolve_device
    from puffer.train import load_checkpoint, make_vecenv, policy_config

    path = Path(checkpoint)
    state = load_checkpoint(path)
    trainer_state = state["trainer"]
    rows = max(1, min(episodes, MAX_ROWS))
    vecenv = make_vecenv(cfg, num_envs=rows, backend="serial")
    try:
        policy = policies.make(policy_config(cfg), vecenv)
        saved_class = trainer_state.get("policy_class", type(policy).__name__)
        try:
            if saved_class != type(policy).__name__:
                raise RuntimeError(
                    f"it holds a {saved_class} policy, the config a {type(policy).__name__}"
                )
            policy.load_state_dict(trainer_state["policy"])
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = " ".join(lines[:2])[:300] if lines else type(e).__name__
            raise ckpt.CheckpointError(
                f"checkpoint {path} does not fit this run's policy (wrong architecture: {detail}); "
                "evaluate with the config it was trained with (policy, env spaces)"
            ) from None
        device = resolve_device(cfg.device)
        policy = policy.to(device).eval()

        quota = np.full(rows, episodes // rows) + (np.arange(rows) < episodes % rows)
        returns: list[list[float]] = [[] for _ in range(rows)]
        lengths: list[list[int]] = [[] for _ in range(rows)]
        obs, _ = vecenv.reset(cfg.seed)
        state_ = policy.initial_state(rows, device)
        with torch.no_grad():
            while any(len(r) < q for r, q in zip(returns, quota)):
                actions, state_ = policy.predict(obs, state_, deterministic=deterministic)
                obs, _, terminals, truncations, infos = vecenv.step(actions)
                if render:
                    _render(vecenv)
                done = terminals | truncations
                if done.any():
                    ended = np.flatnonzero(done)
                    ep_r = infos.get("episode_return", np.zeros(len(ended)))
                    ep_l = infos.get("episode_length", np.zeros(len(ended)))
                    for row, r, ln in zip(ended, ep_r, ep_l):
                        if len(returns[row]) < quota[row]:
                            returns[row].append(float(r))
                            lengths[row].append(int(ln))
                    state_ = policy.reset_state(state_, torch.as_tensor(done, device=device))
    finally:
        vecenv.close()
    return EvalResult(
        [r for rs in returns for r in rs],
        [n for ns in lengths for n in ns],
        path,
        int(state.get("global_step", trainer_state.get("global_step", 0))),
    )


def _render(vecenv: Any) -> None:
    frame = vecenv.render(0)
    if isinstance(frame, str):
        sys.stdout.write("\x1b[H\x1b[2J" + frame + "\n")
        sys.stdout.flush()
        time.sleep(1 / 50)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m puffer.eval`` and ``puffer eval``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    options: dict[str, str] = {}
    overrides: list[str] = []
    for a in argv:
        key = a.split("=", 1)[0]
        if "=" in a and key in EVAL_KEYS:
            options[key] = a.split("=", 1)[1]
        elif "=" in a:
            overrides.append(a)
        else:
            print(f"puffer.eval: error: {a!r} is not key=value\n\n{USAGE}", file=sys.stderr)
            return 2
    if "run" not in options:
        print(f"puffer.eval: error: run=<run dir> is required\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        episodes = int(options.get("episodes", "10"))
        if episodes < 1:
            raise ValueError
    except ValueError:
        print(
            f"puffer.eval: error: episodes={options['episodes']}: expected a positive integer",
            file=sys.stderr,
        )
        return 2
    run_dir = Path(options["run"])
    try:
        deterministic = _bool("deterministic", options.get("deterministic", "true"))
        render = _bool("render", options.get("render", "false"))
        cfg = load_run(run_dir, overrides)
        path = _checkpoint_path(run_dir, options.get("checkpoint"))
    except (ConfigError, FileNotFoundError) as e:
        print(f"puffer.eval: config error: {e}", file=sys.stderr)
        return 2
    except ckpt.CheckpointError as e:
        print(f"puffer.eval: {e}", file=sys.stderr)
        return 1
    try:
        result = evaluate(cfg, path, episodes, deterministic=deterministic, render=render)
    except ConfigError as e:  # the env rejects its settings (e.g. an env.kwargs override)
        print(f"puffer.eval: config error: {e}", file=sys.stderr)
        return 2
    except ckpt.CheckpointError as e:
        print(f"puffer.eval: {e}", file=sys.stderr)
        return 1
    mode = "deterministic" if deterministic else "sampled"
    print(
        f"{run_dir} @ {path.name} (step {result.global_step:,}): mean return "
        f"{result.mean:.4g} +/- {result.std:.4g} over {len(result.returns)} episodes "
        f"({mode} actions; mean length {sum(result.lengths) / len(result.lengths):.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
