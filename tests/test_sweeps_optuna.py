"""puffer's Optuna sweeper (hydra_plugins/puffer_optuna) with real sweep processes and studies:
a shared study, pruning, submitit jobs, a second objective, an interrupted study continued, and
Hydra finding the plugin in an editable install and in the wheel."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.puffer_optuna import space as search_space
from hydra_plugins.puffer_optuna.sweeper import OptunaSweeper
from puffer.loggers import StopRun
from puffer.pruning import OBJECTIVE, PRUNER_ATTR, REPORTS, TrialReporter, sinks

ROOT = Path(__file__).resolve().parents[1]
# Bandit runs of 2 updates: a trial takes about a second.
QUICK = [
    "env=bandit",
    "logger=none",
    "vector.num_envs=8",
    "ppo.horizon=32",
    "ppo.total_timesteps=512",
    "ppo.num_minibatches=2",
    "torch_threads=1",
    "dashboard=plain",
]


def _study(tmp_path: Path, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")


def _sweep_dirs(base: Path) -> list[Path]:
    return sorted((base / "multirun_sweeps").iterdir())


def _rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _trial_numbers(sweep: Path) -> set[int]:
    """The ``sweep.trial=N`` each job of ``sweep`` ran as."""
    numbers = set()
    for job in sweep.glob("[0-9]*"):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        (n,) = [line.split("=")[1] for line in overrides.split() if line.startswith("sweep.trial=")]
        numbers.add(int(n))
    return numbers


def _optuna(*args: str, storage: bool = True) -> list[str]:
    shared = ["hydra.sweeper.storage=sqlite:///study.db", "hydra.sweeper.study_name=s"]
    return ["-m", "hydra/sweeper=optuna", *(shared if storage else []), *args]


# -- the search space ---------------------------------------------------------------------------


def test_sweep_overrides_become_optuna_distributions_and_back():
    params = {
        "ppo.learning_rate": "tag(log, interval(1e-4, 3e-2))",
        "ppo.update_epochs": "range(1, 8)",
        "ppo.gamma": "choice(0.95, 0.99)",
        "ppo.num_minibatches": "int(interval(1, 4))",
    }
    space = search_space.parse(params, ["ppo.gamma=0.9", "env=bandit,'cart pole'", "+x=1"])
    d = space.distributions
    assert d["ppo.learning_rate"] == FloatDistribution(1e-4, 3e-2, log=True)
    assert d["ppo.update_epochs"] == IntDistribution(1, 7)
    assert d["ppo.num_minibatches"] == IntDistribution(1, 4)
    assert d["env"] == CategoricalDistribution(["bandit", "cart pole"])
    assert "ppo.gamma" not in d  # a command-line value fixes the key
    assert space.fixed == ["ppo.gamma=0.9", "+x=1"]
    lines = space.overrides(
        {"ppo.learning_rate": 0.001, "ppo.update_epochs": 3, "env": "cart pole"}
    )
    parsed = OverridesParser.create().parse_overrides(lines)
    assert [(o.key_or_group, o.value()) for o in parsed] == [
        ("ppo.gamma", 0.9),
        ("x", 1),
        ("ppo.learning_rate", 0.001),
        ("ppo.update_epochs", 3),
        ("env", "cart pole"),
    ]


def test_a_choice_of_lists_is_refused_with_the_override_named():
    with pytest.raises(ValueError, match=r"policy.hidden=choice\(\[1,2\],\[3\]\).*list"):
        search_space.parse({}, ["policy.hidden=choice([1,2],[3])"])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"pruner": "asha"}, "pruner='asha': choose one of none, median, hyperband"),
        ({"direction": "up"}, "direction='up'"),
        ({"n_jobs": 0}, "n_jobs=0: must be at least 1"),
        ({"storage": "study.db"}, "storage='study.db' is not an SQLAlchemy URL"),
        (
            {"pruner": "median", "minimize_wall_time": True},
            "cannot prune multi-objective trials",
        ),
    ],
)
def test_bad_sweeper_settings_are_named(setting, message):
    settings = dict(
        direction="maximize", minimize_wall_time=False, study_name="s", storage=None,
        n_trials=1, n_jobs=1, pruner="none", pruner_args={}, sampler="tpe", seed=None, params={},
    )  # fmt: skip
    with pytest.raises(ValueError, match=message):
        OptunaSweeper(**{**settings, **setting})


# -- the job's side: reports and pruning --------------------------------------------------------


def _trial_to_judge(tmp_path: Path, pruner: dict) -> tuple[str, int]:
    """A study with one completed trial (return 10, 20, ... 100 at steps 100, 200, ... 1000) and
    one running trial judged by ``pruner``; returns the storage URL and the running trial's number."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    done = study.ask()
    for step in range(100, 1100, 100):
        done.report(step / 10, step)
    study.tell(done, 100.0)
    running = study.ask()
    running.set_user_attr(PRUNER_ATTR, pruner)
    return url, running.number


def test_reporter_reports_means_at_fixed_steps_and_prunes(tmp_path):
    url, number = _trial_to_judge(tmp_path, {"name": "median", "args": {"n_startup_trials": 1}})
    reporter = TrialReporter(url, "s", number, interval=100)
    reporter.log({OBJECTIVE: 30.0}, 50)
    reporter.log({"losses/value_loss": 1.0}, 100)  # no episode ended: reports the earlier one
    assert _study(tmp_path).trials[number].intermediate_values == {100: 30.0}
    reporter.log({OBJECTIVE: 12.0}, 150)  # not yet at 200
    reporter.log({OBJECTIVE: 4.0}, 200)  # the mean, 8; the best so far (30) beats 20: go on
    # Optuna's median pruner judges a trial by its best report so far against the median.
    with pytest.raises(StopRun, match=f"trial {number} pruned at step 400"):
        reporter.log({OBJECTIVE: 1.0}, 400)  # 30 is below the completed trial's 40
    values = _study(tmp_path).trials[number].intermediate_values
    assert values == {100: 30.0, 200: 8.0, 400: 1.0}


def test_reporter_without_a_pruner_never_stops(tmp_path):
    url, number = _trial_to_judge(tmp_path, {"name": "none", "args": {}})
    reporter = TrialReporter(url, "s", number, interval=100)
    for step in range(100, 1100, 100):
        reporter.log({OBJECTIVE: 0.0}, step)
    assert len(_study(tmp_path).trials[number].intermediate_values) == 10


def test_sweep_keys_are_checked(tmp_path):
    from omegaconf import OmegaConf

    def cfg(**sweep):
        return OmegaConf.create({"sweep": {"trial": None, "storage": None, "study": None, **sweep},
                                 "ppo": {"total_timesteps": 1000}})  # fmt: skip

    assert sinks(cfg()) == () and sinks(cfg(trial=3)) == ()  # a trial number alone: a record
    with pytest.raises(ValueError, match="only with all three"):
        sinks(cfg(storage="sqlite:///x.db", trial=0))
    url, number = _trial_to_judge(tmp_path, {"name": "median", "args": {}})
    with pytest.raises(ValueError, match=f"has no trial {number + 5} in a study named 's'"):
        sinks(cfg(storage=url, study="s", trial=number + 5))
    (reporter,) = sinks(cfg(storage=url, study="s", trial=number))
    assert reporter.interval == 1000 // REPORTS


# -- sweeps -------------------------------------------------------------------------------------


def test_two_sweep_processes_work_one_study(helpers, tmp_path):
    args = [*_optuna("hydra.sweeper.n_trials=3"), *QUICK]
    procs = [helpers.start_module("puffer.train", *args, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    trials = _study(tmp_path).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no trial repeated
    first, second = (_trial_numbers(s) for s in _sweep_dirs(tmp_path))
    assert len(first) == len(second) == 3 and first | second == set(range(6))
    for sweep in _sweep_dirs(tmp_path):
        results = (sweep / "optimization_results.yaml").read_text()
        assert "best_value" in results and "ppo.learning_rate" in results


def test_median_pruner_stops_a_hopeless_trial(run, tmp_path):
    # One trial learns cartpole with full-length episodes; then a trial whose episodes are cut at
    # 10 steps reports a lower return at the first update and is pruned there.
    budget = ["env=cartpole", "ppo.total_timesteps=8192", "vector.num_envs=8", "ppo.horizon=64"]
    common = [
        *_optuna("hydra.sweeper.n_trials=1", "hydra.sweeper.pruner=median"),
        "+hydra.sweeper.pruner_args.n_startup_trials=1",
        *budget,
        "logger=none",
        "dashboard=plain",
    ]
    good = run("puffer.train", *common)
    assert good.returncode == 0, good.stderr
    hopeless = run("puffer.train", *common, "++env.kwargs.max_steps=10")
    assert hopeless.returncode == 0, hopeless.stderr  # a pruned trial is not a failure
    first, second = _study(tmp_path).trials
    assert first.state == TrialState.COMPLETE and second.state == TrialState.PRUNED
    assert len(first.intermediate_values) == 16  # one report per update: 8192 / 512
    assert list(second.intermediate_values) == [512]
    job = _sweep_dirs(tmp_path)[1] / "0"
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["global_step"] == 512
    assert list((job / "checkpoints").iterdir())  # the pruned run still checkpointed
    assert _rows(_sweep_dirs(tmp_path)[1])[0]["status"] == "pruned"


def test_submitit_local_runs_two_trials_with_worker_processes(run, tmp_path):
    proc = run(
        "puffer.train",
        *_optuna("hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"),
        "hydra/launcher=submitit_local",
        "vector=multiprocessing",
        "vector.num_workers=2",
        *QUICK,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    (sweep,) = _sweep_dirs(tmp_path)
    assert (sweep / ".submitit").is_dir()  # the jobs went through submitit
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 512
    assert [t.state for t in _study(tmp_path).trials] == [TrialState.COMPLETE] * 2
    config = (sweep / "0" / ".hydra" / "config.yaml").read_text()
    assert "backend: multiprocessing" in config


def test_slurm_preset_submits_one_job_array_per_batch(helpers, tmp_path):
    # No cluster here: a stand-in sbatch keeps the job script submitit wrote and refuses it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\ncp "$1" "$SBATCH_RECORD"\necho "sbatch: error: no cluster" >&2\nexit 1\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = helpers.clean_env()
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SBATCH_RECORD=str(tmp_path / "job.sh"))
    proc = subprocess.run(
        [sys.executable, "-m", "puffer.train",
         *_optuna("hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"),
         "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
         "hydra.launcher.gpus_per_node=2", "hydra.launcher.cpus_per_task=3",
         "hydra.launcher.timeout_min=7", *QUICK],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "no cluster" in proc.stderr
    script = (tmp_path / "job.sh").read_text()
    for line in ["--array=0-1%2", "--partition=debug", "--gpus-per-node=2", "--cpus-per-task=3",
                 "--time=7", "--mem=16GB", "--ntasks-per-node=1"]:  # fmt: skip
        assert f"#SBATCH {line}\n" in script
    # The trials that could not start fail, and wait in the study for the next sweep.
    states = [t.state for t in _study(tmp_path).trials]
    assert states == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2


def test_wall_time_as_a_second_objective(run, tmp_path):
    proc = run(
        "puffer.train",
        *_optuna("hydra.sweeper.n_trials=2", "hydra.sweeper.minimize_wall_time=true"),
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    study = _study(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    (sweep,) = _sweep_dirs(tmp_path)
    for trial in study.trials:
        job = sweep / str(trial.number)
        summary = json.loads((job / "summary.json").read_text())
        assert trial.values == [summary["objective"], summary["wall_time"]]
    assert "best_trials" in (sweep / "optimization_results.yaml").read_text()
    # The same study cannot be continued as a single-objective one.
    again = run("puffer.train", *_optuna("hydra.sweeper.n_trials=1"), *QUICK)
    assert again.returncode != 0 and "has directions ['maximize', 'minimize']" in again.stderr


def test_an_interrupted_sweep_continues_its_study(helpers, run, tmp_path):
    long = ["env=cartpole", "ppo.total_timesteps=10000000", "logger=none", "dashboard=plain"]
    proc = helpers.start_module(
        "puffer.train", *_optuna("hydra.sweeper.n_trials=3"), *long, cwd=tmp_path
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("multirun_sweeps/*/0/metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    interrupted, waiting = _study(tmp_path).trials
    assert interrupted.state == TrialState.FAIL and waiting.state == TrialState.WAITING

    # Started again, the sweep runs the interrupted trial's parameters first, then new ones.
    again = run("puffer.train", *_optuna("hydra.sweeper.n_trials=2"), *QUICK)
    assert again.returncode == 0, again.stderr
    first, rerun, new = _study(tmp_path).trials
    assert rerun.state == new.state == TrialState.COMPLETE
    assert rerun.params == first.params and new.params != first.params
    assert rerun.user_attrs["requeued_from"] == first.number


# -- packaging ----------------------------------------------------------------------------------

DISCOVER = """
import sys
{path}
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
found = [c for c in Plugins.instance().discover(Sweeper) if c.__name__ == "OptunaSweeper"]
print(sys.modules[found[0].__module__].__file__)
"""


def _discovered_from(tmp_path: Path, path_line: str = "") -> Path:
    code = DISCOVER.format(path=path_line)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def test_hydra_finds_the_plugin_in_the_editable_install(tmp_path):
    assert _discovered_from(tmp_path) == ROOT / "hydra_plugins" / "puffer_optuna" / "sweeper.py"


def test_hydra_finds_the_plugin_in_the_wheel(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("puffer-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with others
    assert "puffer/conf/hydra/sweeper/optuna.yaml" in names
    site = tmp_path / "site"
    # The wheel's files, not the editable install's (the project root on sys.path), are found.
    path_line = f"sys.path = [{str(site)!r}] + [p for p in sys.path if p != {str(ROOT)!r}]"
    found = _discovered_from(tmp_path, path_line)
    assert found == site / "hydra_plugins" / "puffer_optuna" / "sweeper.py"
