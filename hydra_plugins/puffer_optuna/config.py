"""The Optuna sweeper's settings, stored in Hydra's ConfigStore as ``hydra/sweeper=puffer_optuna``.

Every field can be set on the command line (``hydra.sweeper.n_trials=50``) or in a sweeper preset
that lists ``puffer_optuna`` in its defaults (``conf/hydra/sweeper/optuna.yaml``).
"""

# No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

DIRECTIONS = ("maximize", "minimize")
PRUNERS = ("none", "median", "hyperband")
SAMPLERS = ("tpe", "random")


@dataclass
class OptunaSweeperConf:
    """An Optuna study searched by ``n_trials`` Hydra jobs, ``n_jobs`` of them per launcher batch.

    ``storage``: an SQLAlchemy URL (``sqlite:///study.db``, ``postgresql://user@host/db``); sweep
    processes naming the same ``storage`` and ``study_name`` share one study (on other machines
    too), and a sweep started again continues it. ``None`` keeps the study in the sweep directory
    (``<sweep dir>/optuna.db``).
    ``pruner``: ``median`` or ``hyperband`` stop a job whose intermediate objective (reported at
    every update) is hopeless, recorded as pruned; ``pruner_args`` go to Optuna's
    ``MedianPruner``/``HyperbandPruner`` (steps are env steps).
    ``minimize_wall_time``: a second objective, each job's wall time in seconds (a
    multi-objective study whose best trials are its Pareto front; it cannot prune).
    ``seed``: the sampler's seed (None: a fresh one), offset by the study's trial count, so a
    continued study does not repeat its first trials; give concurrent sweep processes distinct
    seeds (or none).
    ``params``: the search space, ``key: <Hydra sweep>`` as on the command line (``choice(..)``,
    ``range(..)``, ``interval(..)``, ``tag(log, interval(..))``, ``int(interval(..))``, ``a,b,c``);
    command-line sweeps join it, a command-line value fixes the key.
    """

    _target_: str = "hydra_plugins.puffer_optuna.sweeper.OptunaSweeper"
    direction: str = "maximize"
    minimize_wall_time: bool = False
    study_name: str = "puffer"
    storage: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    pruner: str = "none"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    seed: int | None = None
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="puffer_optuna", node=OptunaSweeperConf, provider="puffer"
)
