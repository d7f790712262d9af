"""``OptunaSweeper``: asks an Optuna study for trials, runs them as Hydra jobs, tells the results.

Each batch of ``n_jobs`` trials goes to the configured launcher (in this process, joblib,
submitit local or SLURM). Every job gets its trial's number as an override of the puffer-owned
``sweep`` config (``sweep.trial``) and, with a pruner, the study's address (``sweep.storage``,
``sweep.study``), so that the job itself reports its objective to the trial as it trains and
stops when the pruner says so (``puffer.pruning``). The job's result comes back from its return value (the objective) and its
``summary.json`` (status, wall time): a job that raised, or has no finite objective, is a FAIL; a
job whose summary says ``pruned`` is PRUNED; the rest are COMPLETE.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.puffer_optuna import space as search_space
from hydra_plugins.puffer_optuna.config import DIRECTIONS, PRUNERS, SAMPLERS
from puffer.pruning import PRUNER_ATTR

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Hydra ``Sweeper`` over an Optuna study (see ``config.OptunaSweeperConf`` for the settings)."""

    def __init__(
        self,
        direction: str,
        minimize_wall_time: bool,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        pruner: str,
        pruner_args: DictConfig | dict[str, Any],
        sampler: str,
        seed: int | None,
        params: DictConfig | dict[str, str] | None,
    ) -> None:
        _check(direction, minimize_wall_time, n_trials, n_jobs, pruner, sampler)
        if storage is not None:
            _parse_url(storage)
        self.direction, self.minimize_wall_time = direction, minimize_wall_time
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.pruner = {"name": pruner, "args": _plain(pruner_args)}
        self.sampler, self.seed = sampler, seed
        self.params = {str(k): str(v) for k, v in _plain(params).items()}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        """Run ``n_trials`` trials of the study; returns every job's ``JobReturn``."""
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        space = search_space.parse(self.params, arguments, self.hydra_context.config_loader)
        study, url = self._study(sweep_dir)
        log.info(
            "Optuna study %r in %s: %d trial(s) before this sweep; running %d, %d at a time",
            study.study_name, url, len(study.trials), self.n_trials, self.n_jobs,
        )  # fmt: skip
        returns: list[JobReturn] = []
        while len(returns) < self.n_trials:
            size = min(self.n_jobs, self.n_trials - len(returns))
            returns += self._batch(study, url, space, size, len(returns))
        self._write_results(study, sweep_dir)
        return returns

    def _batch(
        self, study: Any, url: str, space: search_space.SearchSpace, size: int, first_job: int
    ) -> list[JobReturn]:
        """Ask ``size`` trials, launch them as jobs ``first_job``, ... and tell their results."""
        trials = [study.ask(space.distributions) for _ in range(size)]
        try:
            overrides = []
            for trial in trials:
                identity = [f"sweep.trial={trial.number}"]
                if self.pruner["name"] != "none":  # the job reports to its trial
                    trial.set_user_attr(PRUNER_ATTR, self.pruner)
                    identity += [
                        f"sweep.storage={_quote(url)}",
                        f"sweep.study={_quote(study.study_name)}",
                    ]
                overrides.append([*space.overrides(trial.params), *identity])
            self.validate_batch_is_legal(overrides)
            returns = list(self.launcher.launch(overrides, initial_job_idx=first_job))
        except BaseException:
            # Interrupted or unlaunchable: the trials fail, and their parameters wait in the
            # study for the next sweep process to run them first.
            for trial in trials:
                _fail_and_requeue(study, trial)
            raise
        for trial, ret in zip(trials, returns):
            self._tell(study, trial, ret)
        return returns

    def _tell(self, study: Any, trial: Any, ret: JobReturn) -> None:
        from optuna.trial import TrialState

        summary = _summary(ret)
        value = ret.return_value if ret.status == JobStatus.COMPLETED else None
        if not isinstance(value, int | float) or not math.isfinite(value):
            study.tell(trial, state=TrialState.FAIL)
            log.info("trial %d failed: %s", trial.number, summary.get("error", value))
        elif summary.get("status") == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned at step %s", trial.number, summary.get("global_step"))
        elif self.minimize_wall_time:
            wall = float(summary.get("wall_time", math.nan))
            study.tell(trial, [float(value), wall])
            log.info("trial %d: objective %.4g in %.1fs", trial.number, value, wall)
        else:
            study.tell(trial, float(value))
            log.info("trial %d: objective %.4g", trial.number, value)

    def _study(self, sweep_dir: Path) -> tuple[Any, str]:
        """The study (created, or loaded if it exists) and its storage URL as jobs reach it."""

        url = storage_url(self.storage, sweep_dir)
        directions = [self.direction] + (["minimize"] if self.minimize_wall_time else [])
        study = _create_study(url, self.study_name, directions)
        if [d.name.lower() for d in study.directions] != directions:
            raise ValueError(
                f"study {self.study_name!r} in {url} has directions "
                f"{[d.name.lower() for d in study.directions]}, not {directions}: choose another "
                "hydra.sweeper.study_name (or the study's own direction/minimize_wall_time)"
            )
        study.sampler = _sampler(self.sampler, self.seed, len(study.trials))
        return study, url

    def _write_results(self, study: Any, sweep_dir: Path) -> None:
        """``optimization_results.yaml``: the best trial (or, multi-objective, the Pareto front)."""
        try:
            best = study.best_trials
        except ValueError:  # no trial completed
            best = []
        trials = [{"number": t.number, "values": t.values, "params": t.params} for t in best]
        results: dict[str, Any] = {"name": study.study_name, "best_trials": trials}
        if not self.minimize_wall_time and best:
            results.update(best_params=best[0].params, best_value=best[0].value)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        log.info("best: %s", results.get("best_value", trials))


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """``storage`` with a relative sqlite path made absolute (jobs may start elsewhere); ``None``
    is ``<sweep_dir>/optuna.db``."""
    if storage is None:
        return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    url = _parse_url(storage)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return str(url.set(database=str(Path(url.database).resolve())))
    return storage


def _create_study(url: str, name: str, directions: list[str], attempts: int = 5) -> Any:
    """``optuna.create_study(..., load_if_exists=True)``, retried when sweep processes starting
    at once race to create the database's tables (SQLAlchemy raises for the loser)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper logs what it does itself
    for attempt in range(attempts):
        try:
            return optuna.create_study(
                storage=url,
                study_name=name,
                directions=directions,
                pruner=optuna.pruners.NopPruner(),  # the jobs prune themselves
                load_if_exists=True,
            )
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())


def _parse_url(storage: str) -> Any:
    """``storage`` as an SQLAlchemy URL; ``ValueError`` naming it if it is not one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage)
    except ArgumentError as e:
        raise ValueError(
            f"hydra.sweeper.storage={storage!r} is not an SQLAlchemy URL; write e.g. "
            "sqlite:///study.db or postgresql://user:password@host/db"
        ) from e


def _sampler(name: str, seed: int | None, n_existing: int) -> Any:
    import optuna

    seed = None if seed is None else seed + n_existing
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _fail_and_requeue(study: Any, trial: Any) -> None:
    from optuna.trial import TrialState

    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})


def _summary(ret: JobReturn) -> dict[str, Any]:
    """The job's ``summary.json`` (``{}`` when it has none)."""
    try:
        path = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "summary.json"
        return json.loads(path.read_text())
    except (AttributeError, OSError, ValueError):
        return {}


def _quote(value: str) -> str:
    """A Hydra override value that keeps ``value`` verbatim."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    return OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)


def _check(
    direction: str, minimize_wall_time: bool, n_trials: int, n_jobs: int, pruner: str, sampler: str
) -> None:
    """Raises ``ValueError`` naming a bad setting and its fix."""
    for name, value, allowed in [
        ("direction", direction, DIRECTIONS),
        ("pruner", pruner, PRUNERS),
        ("sampler", sampler, SAMPLERS),
    ]:
        if value not in allowed:
            raise ValueError(f"hydra.sweeper.{name}={value!r}: choose one of {', '.join(allowed)}")
    for name, number in [("n_trials", n_trials), ("n_jobs", n_jobs)]:
        if number < 1:
            raise ValueError(f"hydra.sweeper.{name}={number}: must be at least 1")
    if minimize_wall_time and pruner != "none":
        raise ValueError(
            f"hydra.sweeper.pruner={pruner} with minimize_wall_time=true: Optuna cannot prune "
            "multi-objective trials; set hydra.sweeper.pruner=none or minimize_wall_time=false"
        )
