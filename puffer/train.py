"""``python -m puffer.train [overrides]``: train PPO on an env, one run directory per run.

    python -m puffer.train env=cartpole policy=lstm
    python -m puffer.train -m ppo.learning_rate=1e-3,3e-3 env=cartpole,bandit
    python -m puffer.train resume=outputs/cartpole/2026-01-01_12-00-00_000000

A Hydra app over ``conf/config.yaml``: Hydra parses the command line, expands sweeps and makes the
run and sweep directories. The ``Checks`` callback validates every job's config before any env,
worker or directory exists (exit 2, one paragraph). The task hands the config to
``puffer.launch.run_job``, which runs the run lifecycle (``puffer.run.run``) here or in the ranks
of a distributed run, and returns the objective (the final mean episode return) for sweepers.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from puffer import build, dist, launch
from puffer.config import (
    CONF_DIR,
    EXIT_CONFIG,
    ConfigError,
    compose,
    exit_code,
    explain,
    job_config,
    validate,
)
from puffer.run import TrainingInterrupted
from puffer.runs import SweepSummary, write_sweep_summary

log = logging.getLogger("puffer")

EXIT_FAILED = 1
USAGE = "usage: python -m puffer.train [-m] [key=value ...] (--help lists every group and key)"
_FULL_ERROR = False  # the user asked for tracebacks (HYDRA_FULL_ERROR=1)


def effective_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` itself for a new run; for ``resume=<run>`` the run's own config with what this
    command line changed on top (``build.reload``)."""
    if cfg.resume is None:
        return cfg
    merged = build.reload(cfg.resume, cfg, skip=("resume",))
    merged.resume = cfg.resume
    return merged


# -- the Hydra app ---------------------------------------------------------------------------------


def _task(cfg: DictConfig) -> float:
    """The Hydra task: one run; returns the objective (NaN before any episode ended)."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(cfg.resume) if cfg.resume is not None else Path(hc.runtime.output_dir)
    console = None
    if multirun and cfg.dashboard == "auto":
        from rich.console import Console

        console = Console(force_terminal=False)  # sweep jobs print plain lines, even on a terminal
    try:
        summary = launch.run_job(effective_config(cfg), run_dir, console)
    except TrainingInterrupted as e:  # run() logged it
        raise SystemExit(e.code) from None
    except KeyboardInterrupt:
        log.error("puffer: aborted; logs in %s", run_dir)
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as e:  # run() logged it
        if _FULL_ERROR or multirun:
            raise  # a sweeper records the job as failed; the summary table shows it
        raise SystemExit(EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_FAILED) from None
    score = summary.get("objective")
    return float("nan") if score is None else float(score)


def _config_error(message: str) -> SystemExit:
    print(f"puffer: config error: {message}", file=sys.stderr)
    return SystemExit(EXIT_CONFIG)


def _check_dir(out: str) -> None:
    """Create the run/sweep directory now, so that a bad one fails as a config error."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        problem = e.strerror or type(e).__name__
        raise ConfigError(
            f"cannot create the run directory {out}: {problem}. Run from a writable directory or "
            "choose another with hydra.run.dir=<dir> (hydra.sweep.dir=<dir> with -m)."
        ) from None


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Override lists covering every value of every sweep: each value once, the others at their
    first (Hydra's parser expands them; interval sweeps for Optuna have no list and are skipped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    options: list[list[str]] = []
    for o in OverridesParser.create().parse_overrides(overrides):
        values = [o.input_line]
        if o.is_sweep_override():
            try:
                values = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            except Exception:
                continue
        options.append(values)
    base = [v[0] for v in options]
    return [base] + [[*base[:i], v, *base[i + 1 :]] for i, vs in enumerate(options) for v in vs[1:]]


class Checks(Callback):
    """Validates before Hydra makes any directory: the run (``on_run_start``) or every value of
    every sweep (``on_multirun_start``). A mistake exits 2 with one paragraph on stderr."""

    sweep_dir: str | None = None  # set when a sweep starts (main() tabulates a failed one)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _exit_on_error():
            validate(effective_config(job_config(config)))
            if config.resume is None:
                _check_dir(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _exit_on_error():
            if config.resume is not None:
                raise ConfigError("resume= continues one run: drop -m (or resume each job's dir)")
            for job in _sweep_jobs(list(config.hydra.overrides.task)):
                validate(compose(job))
            _check_dir(config.hydra.sweep.dir)
        Checks.sweep_dir = str(config.hydra.sweep.dir)


@contextmanager
def _exit_on_error() -> Iterator[None]:
    """Turn an error into exit 2 with one paragraph: Hydra would only warn about a callback's
    exception, but lets ``SystemExit`` through."""
    try:
        yield
    except Exception as e:
        if _FULL_ERROR:
            traceback.print_exc()
        raise _config_error(explain(e)) from None


_app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(_task)


def main() -> int:
    """Entry point of ``python -m puffer.train`` (argv is Hydra's); returns the exit code."""
    global _FULL_ERROR
    _FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises composition errors to us, not prints them
    SweepSummary.failed_jobs = 0
    here = dist.torchrun_world()
    if here is not None and not here.is_rank0:
        return launch.follow_rank0()
    try:
        _app()
    except SystemExit as e:
        return exit_code(e, EXIT_FAILED)
    except KeyboardInterrupt:  # before a run's own handler is installed (training handles it)
        print("puffer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if _FULL_ERROR:
            raise
        if Checks.sweep_dir is None:  # Hydra could not compose the config
            message = explain(e)
            usage = f"\n{USAGE}" if message.startswith("cannot parse") else ""
            print(f"puffer: config error: {message}{usage}", file=sys.stderr)
            return EXIT_CONFIG
        # The basic sweeper raises a failed job's error after its batch, another sweeper its own
        # (e.g. a study's storage out of reach): tabulate the sweep, say why it stopped.
        rows = write_sweep_summary(Checks.sweep_dir)
        done = sum(r["status"] in ("completed", "pruned") for r in rows)
        SweepSummary.failed_jobs = max(1, len(rows) - done)
        print(f"puffer: the sweep ended on an error: {type(e).__name__}: {e}", file=sys.stderr)
    if SweepSummary.failed_jobs:
        where = (
            f"; every job's status is in {Checks.sweep_dir}/summary.csv" if Checks.sweep_dir else ""
        )
        print(
            f"puffer: {SweepSummary.failed_jobs} sweep job(s) did not complete{where}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


if __name__ == "__main__":  # run the imported module's main: the callbacks' globals are there
    from puffer.train import main as module_main

    sys.exit(module_main())
