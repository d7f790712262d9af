"""Optuna pruning inside a sweep job: report the objective as training goes, stop when hopeless.

The ``puffer_optuna`` sweeper (``hydra_plugins/puffer_optuna``) starts each job with the number
of its trial, ``sweep.trial=<n>``, and, when it prunes, with the study's address too,
``sweep.storage=<SQLAlchemy URL> sweep.study=<name>``. The run loop then adds a
``TrialReporter`` to its loggers (``sinks(cfg)``). It reports the mean return of the episodes that
ended since its last report (``env/episode_return``, whose last-100-episode mean is the run's
objective) to the trial at step ``global_step``, at the first update past every
``REPORTS``-th of ``ppo.total_timesteps`` (each report is a database write and a pruner query,
~30-40 ms on SQLite here, too much for every update of a fast env), and asks the pruner the
sweeper chose (stored with the trial, ``PRUNER_ATTR``) whether to go on. When not, it raises
``puffer.loggers.StopRun("pruned", ...)``: the run checkpoints, records ``status: pruned`` in
summary.json and returns; the sweeper tells the study the trial was pruned.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "OBJECTIVE",
    "PRUNER_ATTR",
    "REPORTS",
    "SweepConfig",
    "TrialReporter",
    "make_pruner",
    "sinks",
]

# conf/hydra/launcher/submitit_{local,slurm}.yaml share their names with hydra-submitit-launcher's
# schemas on purpose: Hydra checks each preset key against the schema, but (1.3) warns of the
# deprecated matching on every sweep. Hidden here, the module puffer.config imports for ``sweep``.
warnings.filterwarnings(
    "ignore",
    message=r"\s*'hydra/launcher/submitit_(local|slurm)' is validated against ConfigStore schema",
    category=UserWarning,
)

OBJECTIVE = "env/episode_return"  # the metric reported to the trial
PRUNER_ATTR = "puffer_pruner"  # the trial's user attribute {"name": ..., "args": {...}}
REPORTS = 20  # reports per run at most: one per 5% of the budget


@dataclass
class SweepConfig:
    """The Optuna trial this run is (set by the ``puffer_optuna`` sweeper; null otherwise)."""

    trial: int | None = None  # the trial's number in the study
    # Set when the sweeper prunes: where the job reports to.
    storage: str | None = None  # the study's SQLAlchemy URL, e.g. sqlite:////abs/path/study.db
    study: str | None = None  # the study's name


def sinks(cfg: Any) -> tuple[TrialReporter, ...]:
    """The loggers' extra sinks: a ``TrialReporter`` when ``cfg.sweep`` names a trial to report to.

    Raises ``ValueError`` when ``sweep.storage``/``sweep.study`` are set without the other two,
    or name a study or trial the storage does not have.
    """
    sweep = cfg.get("sweep")
    if sweep is None or (sweep.storage is None and sweep.study is None):
        return ()  # not in a sweep, or in one that does not prune
    if sweep.storage is None or sweep.study is None or sweep.trial is None:
        raise ValueError(
            f"sweep.storage={sweep.storage} sweep.study={sweep.study} sweep.trial={sweep.trial}: "
            "a job reports to its trial only with all three (the Optuna sweeper sets them)"
        )
    interval = max(1, int(cfg.ppo.total_timesteps) // REPORTS)
    return (TrialReporter(sweep.storage, sweep.study, int(sweep.trial), interval),)


def make_pruner(spec: Mapping[str, Any] | None) -> Any:
    """Optuna's pruner for ``{"name": "median" | "hyperband" | "none", "args": {...}}``."""
    import optuna

    name = (spec or {}).get("name", "none")
    args = dict((spec or {}).get("args") or {})
    if name == "median":
        return optuna.pruners.MedianPruner(**args)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**args)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner {name!r}: choose median, hyperband or none")


class TrialReporter:
    """A metrics sink reporting ``OBJECTIVE`` to trial ``number`` of ``study`` in ``storage``,
    at the first update at or past each multiple of ``interval`` env steps (the mean over the
    updates since the last report). A trial that is already finished (e.g. a sweep job resumed later) or belongs to a
    multi-objective study (which Optuna cannot prune) is not reported to; a warning says so.
    """

    def __init__(self, storage: str, study: str, number: int, interval: int = 1):
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        rdb = optuna.storages.RDBStorage(storage)
        try:
            trial_id = rdb.get_trial_id_from_study_id_trial_number(
                rdb.get_study_id_from_name(study), number
            )
        except KeyError as e:
            raise ValueError(
                f"sweep.trial={number}: {storage} has no trial {number} in a study named "
                f"{study!r}; the Optuna sweeper sets sweep.* itself"
            ) from e
        frozen = rdb.get_trial(trial_id)
        loaded = optuna.load_study(
            study_name=study, storage=rdb, pruner=make_pruner(frozen.user_attrs.get(PRUNER_ATTR))
        )
        self.number, self.interval, self.trial = number, interval, None
        self._next, self._values = interval, []
        if frozen.state != TrialState.RUNNING:
            log.warning("Optuna trial %d is %s: not reporting to it", number, frozen.state.name)
        elif len(loaded.directions) > 1:
            log.info("Optuna trial %d is multi-objective: no pruning", number)
        else:
            self.trial = optuna.trial.Trial(loaded, trial_id)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Report when ``step`` reaches the next report; raises ``StopRun("pruned", ...)`` when
        the pruner says to stop."""
        value = metrics.get(OBJECTIVE)
        if self.trial is None:
            return
        if value is not None and math.isfinite(value):
            self._values.append(float(value))
        if step < self._next or not self._values:
            return
        self._next = (step // self.interval + 1) * self.interval
        mean = sum(self._values) / len(self._values)
        self._values.clear()
        self.trial.report(mean, int(step))
        if self.trial.should_prune():
            from puffer.loggers import StopRun

            raise StopRun(
                "pruned",
                f"Optuna trial {self.number} pruned at step {step:,} ({OBJECTIVE} {mean:.4g})",
            )

    def close(self) -> None:
        """Nothing to release (the storage's connections close with the process)."""
