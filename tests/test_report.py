"""``puffer report`` on a real 5-seed x 2-setting sweep: group statistics checked against a direct
numpy computation, the PNG, and the HTML page loaded in real headless Chromium (no script errors,
plotly's plots drawn, a screenshot with the curves' colours)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from puffer.loggers import read_jsonl

SEEDS = [0, 1, 2, 3, 4]
INSTALL = "make browser (or: apt-get update && apt-get install -y chromium)"
_SWEEP: dict[str, Path] = {}


@pytest.fixture
def sweep(tmp_path_factory, helpers) -> Path:
    """A real sweep (made once per module): bandit, 5 seeds x 2 learning rates, tiny budgets."""
    if not _SWEEP:
        base = tmp_path_factory.mktemp("report")
        args = [
            "-m",
            "env=bandit",
            "seed=0,1,2,3,4",
            "ppo.learning_rate=1e-3,3e-2",
            *helpers.TINY,
            "dashboard=off",
            "logger=none",
            "hydra.sweep.dir=multirun_sweeps/lr",
        ]
        done = helpers.run_module("puffer.train", *args, cwd=base, timeout=300)
        assert done.returncode == 0, done.stderr
        _SWEEP["dir"] = base / "multirun_sweeps" / "lr"
    return _SWEEP["dir"]


@pytest.fixture
def made(sweep, helpers, tmp_path) -> tuple[Path, dict]:
    out = tmp_path / "rep"
    proc = helpers.run_module(
        "puffer", "report", str(sweep), "--out", str(out), cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "IQM" in proc.stdout and "report.html" in proc.stdout
    return out, json.loads((out / "report.json").read_text())


def _runs_by_lr(sweep: Path) -> dict[float, list[Path]]:
    by_lr: dict[float, list[Path]] = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        lr = next(
            o
            for o in (job / ".hydra" / "overrides.yaml").read_text().split()
            if "learning_rate" in o
        )
        by_lr.setdefault(float(lr.split("=")[1]), []).append(job)
    return by_lr


def _iqm(x: np.ndarray) -> float:
    """Interquartile mean of 5 values, directly: drop the lowest and the highest, average the rest."""
    assert len(x) == 5
    return float(np.sort(x)[1:-1].mean())


def test_groups_final_scores_and_improvement_match_numpy(sweep, made):
    _, stats = made
    by_lr = _runs_by_lr(sweep)
    assert sorted(by_lr) == [1e-3, 3e-2] and all(len(v) == 5 for v in by_lr.values())
    assert len(stats["final"]) == 2 and stats["num_runs"] == 10
    finals = {}
    for lr, jobs in by_lr.items():
        label = f"ppo.learning_rate={lr}"
        group = stats["final"][label]  # named by the one setting that differs
        assert sorted(group["seeds"]) == SEEDS
        objectives = np.array(
            [json.loads((j / "summary.json").read_text())["objective"] for j in jobs]
        )
        assert sorted(group["scores"]) == pytest.approx(sorted(objectives))
        assert group["iqm"] == pytest.approx(_iqm(objectives))
        assert group["mean"] == pytest.approx(objectives.mean())
        lo, hi = group["iqm_ci"]
        eps = 1e-9  # the bootstrap's IQM of equal values can land an ulp outside them
        assert objectives.min() - eps <= lo <= group["iqm"] + eps
        assert group["iqm"] - eps <= hi <= objectives.max() + eps
        finals[lr] = objectives
    # P(X > Y) directly: the share of (x, y) pairs with x > y, ties counting one half.
    x, y = finals[1e-3], finals[3e-2]
    direct = np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y])
    (poi,) = stats["improvement"]
    assert (poi["x"], poi["y"]) == ("ppo.learning_rate=0.001", "ppo.learning_rate=0.03")
    assert poi["probability"] == pytest.approx(direct)
    assert poi["ci"][0] <= poi["probability"] <= poi["ci"][1]


def test_learning_curves_match_numpy(sweep, made):
    _, stats = made
    grid = np.array(stats["steps"])
    assert len(grid) == 50 and np.all(np.diff(grid) > 0)
    for lr, jobs in _runs_by_lr(sweep).items():
        curve = stats["curves"][f"ppo.learning_rate={lr}"]
        per_run = []
        for job in jobs:
            rows = [
                r
                for r in read_jsonl(job / "metrics.jsonl")
                if r.get("env/episode_return") is not None
            ]
            steps = np.array([r["global_step"] for r in rows], dtype=float)
            values = np.array([r["env/episode_return"] for r in rows], dtype=float)
            per_run.append(np.interp(grid, steps, values))
        per_run = np.array(per_run)
        for i in (0, 17, 49):
            assert curve["iqm"][i] == pytest.approx(_iqm(per_run[:, i]))
            assert curve["low"][i] <= curve["iqm"][i] + 1e-12 <= curve["high"][i] + 2e-12
    # The bandit is learned at the higher rate: its curve ends above the other's band.
    fast, slow = (
        stats["curves"]["ppo.learning_rate=0.03"],
        stats["curves"]["ppo.learning_rate=0.001"],
    )
    assert fast["low"][-1] > slow["high"][-1]


def test_png_is_written(made):
    import matplotlib.image

    out, _ = made
    image = matplotlib.image.imread(out / "report.png")
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not a blank canvas


# -- the HTML page in a real browser ----------------------------------------------------------------


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Headless Debian chromium with no network, sync or first-run work; fails if it is missing."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail(f"chromium is not installed: {INSTALL}")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


def console_messages(stderr: str) -> list[str]:
    """The page's console output (script errors included) from chromium's log."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_a_script_error_is_seen_by_the_browser_check(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>notAFunction();</script></body></html>")
    proc = chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert any("notAFunction" in m for m in console_messages(proc.stderr)), proc.stderr


def test_html_is_self_contained_and_renders_in_chromium(made, tmp_path):
    from plotly.offline import get_plotlyjs

    out, _ = made
    page = out / "report.html"
    text = page.read_text()
    library = get_plotlyjs()
    assert text.count(library) == 1  # plotly.js inlined once; nothing else is fetched:
    rest = text.replace(library, "")
    assert "<script src" not in rest and "<link" not in rest and "http" not in rest
    proc = chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert console_messages(proc.stderr) == []
    dom = proc.stdout
    assert dom.count('class="main-svg"') >= 4  # plotly drew both figures (2 svg layers each)
    assert "ppo.learning_rate=0.03" in dom and "Probability of improvement" in dom

    shot = tmp_path / "report.png"
    proc = chromium(
        f"--screenshot={shot}", "--window-size=1200,1800", page.as_uri(), tmp_path=tmp_path
    )
    assert shot.is_file(), proc.stderr
    import matplotlib.image

    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).astype(int)
    for hex_color in ("#1f77b4", "#d62728"):  # both groups' curves are drawn
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=-1) < 30).sum() > 200, hex_color


# -- Optuna studies and errors ----------------------------------------------------------------------


def test_optuna_study_in_the_sweep_dir_is_plotted(sweep, tmp_path, helpers):
    import optuna

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    study = optuna.create_study(
        study_name="lr", storage=f"sqlite:///{copy / 'optuna.db'}", direction="maximize"
    )
    study.optimize(
        lambda t: (
            -abs(np.log10(t.suggest_float("lr", 1e-4, 1e-1, log=True)) + 2)
            + 0.01 * t.suggest_int("layers", 1, 4)
        ),
        n_trials=12,
    )
    proc = helpers.run_module("puffer", "report", str(copy), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((copy / "report" / "report.json").read_text())
    assert stats["optuna_plots"] == [
        "study lr: optimization history",
        "study lr: parameter importances",
        "study lr: slices",
    ], stats["notes"]
    text = (copy / "report" / "report.html").read_text()
    assert text.count('class="plot"') == 5 and "study lr: slices" in text


def test_bad_paths_are_named(tmp_path, helpers):
    proc = helpers.run_module("puffer", "report", "no/such/dir", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "no/such/dir" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = helpers.run_module("puffer", "report", "empty", cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "no run under empty" in proc.stderr


def test_statistics_are_rliables():
    """The numpy IQM and probability of improvement the bootstrap resamples equal rliable's."""
    from rliable import metrics

    from puffer import report

    rng = np.random.default_rng(0)
    for runs_x, runs_y in ((3, 3), (5, 7), (8, 4), (13, 10)):
        x = rng.normal(size=(runs_x, 2)).round(1)  # rounded: ties happen
        y = rng.normal(size=(runs_y, 2)).round(1)
        assert report.iqm(x) == pytest.approx(metrics.aggregate_iqm(x))
        assert report.probability_of_improvement(x, y) == pytest.approx(
            metrics.probability_of_improvement(x, y)
        )
