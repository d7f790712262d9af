"""``puffer report PATH [--out DIR]``: compare settings across seeds, with honest uncertainty.

    python -m puffer.train -m seed=0,1,2,3,4 ppo.learning_rate=1e-3,3e-3 env=cartpole
    puffer report multirun_sweeps/<date>_<time>

Only finished runs (``completed``, ``solved``) count unless ``--include-unfinished``; the report
lists the others with their status and steps (a group whose every run failed is never reported).
Runs whose composed configs differ only by ``seed`` (and by settings that do not change what is
learned: logging, dashboard, checkpoints, device) form one group. Per group:

- learning curves: each run's ``metrics.jsonl`` metric (default ``env/episode_return``) linearly
  interpolated onto a shared grid of env steps, aggregated by the interquartile mean (IQM) across
  runs, with 95% percentile stratified-bootstrap confidence bands;
- final scores: each run's ``objective`` from ``summary.json`` (what a sweep optimizes; the last
  curve value when a run has none), IQM and mean with 95% CIs;
- probability of improvement P(X > Y) between every two groups, with CIs.

The method is rliable's (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice"): its ``get_interval_estimates`` draws the stratified bootstrap and the percentile CIs;
the statistics it resamples (IQM, mean, probability of improvement) are computed here in numpy
with exactly rliable's definitions (``tests/test_report.py`` checks them against ``rliable.metrics``),
because rliable's scipy calls cost ~1 ms each and a report resamples thousands of times. Output: ``report.png``
(matplotlib), ``report.html`` (one self-contained page, plotly.js inlined: it opens offline), and
``report.json`` (every number shown). A sweep directory holding an Optuna study (an sqlite storage
file, or an Optuna sweeper's jobs) adds Optuna's own plots: optimization history, parameter
importances and slices.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from puffer.runs import METRICS, SUMMARY, find_run_dirs, read_summary, run_status

__all__ = [
    "Group",
    "RunData",
    "add_report_parser",
    "group_runs",
    "load_runs",
    "report",
    "report_arguments",
    "report_command",
]

# Config keys that do not change what a run learns: runs differing only in these share a group.
IGNORED = ("seed", "resume", "dashboard", "device", "torch_threads", "checkpoint.", "logger.")
DEFAULT_METRIC = "env/episode_return"
FINISHED = ("completed", "solved")  # statuses whose runs enter the statistics by default
UNFINISHED = " (not finished)"  # ends the note on a run left out for its status


@dataclass
class RunData:
    """One run's curve (``steps``, ``values``: float64 arrays of equal length) and final score."""

    run_dir: Path
    config: dict[str, Any]
    steps: np.ndarray
    values: np.ndarray
    final: float
    status: str = "completed"

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


@dataclass
class Group:
    """Runs that differ only by seed, named by the settings that set them apart."""

    label: str
    settings: dict[str, Any]
    runs: list[RunData] = field(default_factory=list)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config (``.hydra/config.yaml``), flattened to dotted keys."""
    import yaml

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    return _flatten({k: v for k, v in cfg.items() if k != "hydra"})


def _curve(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of ``metric`` in the run's metrics.jsonl (rows without it skipped)."""
    from puffer.loggers import read_jsonl

    path = run_dir / METRICS
    rows = read_jsonl(path) if path.is_file() else []
    pairs = [
        (float(r["global_step"]), float(r[metric]))
        for r in rows
        if isinstance(r.get(metric), int | float) and math.isfinite(r[metric])
    ]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = np.array(pairs, dtype=np.float64).T
    return steps, values


def load_runs(
    paths: list[str | os.PathLike[str]],
    metric: str = DEFAULT_METRIC,
    include_unfinished: bool = False,
) -> tuple[list[RunData], list[str]]:
    """The runs under ``paths`` that logged ``metric`` and finished (``FINISHED``; any status with
    ``include_unfinished``); and a note per run left out (and why: its status and steps)."""
    import time

    runs, skipped = [], []
    now = time.time()
    for run_dir in find_run_dirs(paths):
        summary = read_summary(run_dir) or {}
        status, _ = run_status(run_dir, summary, now)
        steps, values = _curve(run_dir, metric)
        if len(steps) == 0:
            skipped.append(f"{run_dir}: no {metric} in {METRICS}")
            continue
        config = _run_config(run_dir)
        if status not in FINISHED and not include_unfinished:
            done = summary.get("global_step", int(steps[-1]))
            budget = summary.get("total_timesteps", config.get("ppo.total_timesteps"))
            of = f" of {budget:,}" if isinstance(budget, int) else ""
            skipped.append(f"{run_dir}: {status} at {done:,}{of} steps{UNFINISHED}")
            continue
        objective = summary.get("objective")
        final = float(objective) if isinstance(objective, int | float) else float(values[-1])
        if not math.isfinite(final):
            final = float(values[-1])
        runs.append(RunData(run_dir, config, steps, values, final, status))
    return runs, skipped


def _drop_failed(runs: list[RunData], notes: list[str]) -> list[Group]:
    """``runs``' groups (``group_runs``) without those whose every run failed (no result: a note
    says so), labelled among the groups kept."""
    failed = [g for g in group_runs(runs) if all(r.status == "failed" for r in g.runs)]
    for g in failed:
        notes.append(f"group {g.label}: every run failed ({len(g.runs)} runs); not reported")
    gone = {id(r) for g in failed for r in g.runs}
    return group_runs([r for r in runs if id(r) not in gone])


def group_runs(runs: list[RunData]) -> list[Group]:
    """Runs grouped by their config without seed (and ``IGNORED`` keys), in first-seen order.

    A group's label lists the keys whose values differ between groups (``"all runs"`` if one).
    """
    keyed: dict[str, list[RunData]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for r in runs:
        s = {k: v for k, v in r.config.items() if not k.startswith(IGNORED)}
        key = json.dumps(s, sort_keys=True, default=str)
        keyed.setdefault(key, []).append(r)
        settings[key] = s
    all_keys = sorted({k for s in settings.values() for k in s})
    varying = [
        k
        for k in all_keys
        if len({json.dumps(s.get(k), default=str) for s in settings.values()}) > 1
    ]
    groups = []
    for key, members in keyed.items():
        s = settings[key]
        label = " ".join(f"{k}={s.get(k)}" for k in varying) or "all runs"
        groups.append(Group(label, {k: s.get(k) for k in varying}, members))
    return groups


# -- statistics (rliable) ---------------------------------------------------------------------------


def _iqm_per_column(scores: np.ndarray) -> np.ndarray:
    """IQM over runs (and tasks) for each trailing column: scores (runs, tasks, points) -> (points,).

    The same statistic as ``rliable.metrics.aggregate_iqm`` (scipy's ``trim_mean`` cutting
    ``int(0.25 * n)`` values at each end) applied column by column in one numpy call, so that
    thousands of bootstrap resamples of a whole curve stay fast.
    """
    x = np.sort(scores.reshape(-1, scores.shape[-1]), axis=0)
    cut = int(0.25 * x.shape[0])
    return x[cut : x.shape[0] - cut].mean(axis=0)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all values in ``scores`` (runs x tasks): ``rliable.metrics.aggregate_iqm``."""
    return float(_iqm_per_column(np.asarray(scores, dtype=np.float64).reshape(-1, 1))[0])


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) of scores ``x`` (runs_x, tasks) over ``y`` (runs_y, tasks), averaged over tasks:
    the Mann-Whitney U statistic over ``runs_x * runs_y`` (ties count one half), as
    ``rliable.metrics.probability_of_improvement`` computes it with scipy, in one numpy step."""
    greater = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    ties = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    return float(np.mean(greater + 0.5 * ties))


def _estimates(score_dict: dict[str, Any], func: Any, reps: int, seed: int) -> tuple[dict, dict]:
    """``rliable.library.get_interval_estimates`` (95% percentile stratified bootstrap), seeded."""
    import warnings

    from rliable import library as rly

    with warnings.catch_warnings():  # arch's notice that rliable still passes a RandomState
        warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
        return rly.get_interval_estimates(
            score_dict, func, reps=reps, random_state=np.random.RandomState(seed)
        )


def curve_grid(group_runs_: list[list[RunData]], points: int) -> np.ndarray:
    """``points`` env steps from the latest first point to the shortest run's last step."""
    lo = max(r.steps[0] for g in group_runs_ for r in g)
    hi = min(r.steps[-1] for g in group_runs_ for r in g)
    return np.linspace(lo, max(hi, lo), points)


def learning_curves(
    groups: list[Group], points: int, reps: int, seed: int
) -> tuple[np.ndarray, dict[str, dict[str, list[float]]]]:
    """The step grid and, per group, the IQM curve with its 95% CI band (``iqm``, ``low``, ``high``)."""

    grid = curve_grid([g.runs for g in groups], points)
    scores = {
        g.label: np.stack([np.interp(grid, r.steps, r.values) for r in g.runs])[:, None, :]
        for g in groups
    }
    point, interval = _estimates(scores, _iqm_per_column, reps, seed)
    return grid, {
        k: {
            "iqm": point[k].tolist(),
            "low": interval[k][0].tolist(),
            "high": interval[k][1].tolist(),
        }
        for k in scores
    }


def final_scores(groups: list[Group], reps: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per group: the runs' final scores and their IQM and mean with 95% CIs."""

    def aggregate(s: np.ndarray) -> np.ndarray:
        return np.array([iqm(s), float(np.mean(s))])

    scores = {g.label: np.array([[r.final] for r in g.runs]) for g in groups}
    point, interval = _estimates(scores, aggregate, reps, seed)
    return {
        g.label: {
            "runs": [str(r.run_dir) for r in g.runs],
            "seeds": [r.seed for r in g.runs],
            "scores": scores[g.label][:, 0].tolist(),
            "iqm": float(point[g.label][0]),
            "iqm_ci": [float(interval[g.label][0, 0]), float(interval[g.label][1, 0])],
            "mean": float(point[g.label][1]),
            "mean_ci": [float(interval[g.label][0, 1]), float(interval[g.label][1, 1])],
        }
        for g in groups
    }


def improvement(groups: list[Group], reps: int, seed: int) -> list[dict[str, Any]]:
    """P(X > Y) for every pair of groups, X listed first (rliable's probability of improvement;
    P(Y > X) = 1 - P(X > Y))."""

    pairs = {
        (x.label, y.label): (
            np.array([[r.final] for r in x.runs]),
            np.array([[r.final] for r in y.runs]),
        )
        for i, x in enumerate(groups)
        for y in groups[i + 1 :]
    }
    if not pairs:
        return []
    point, interval = _estimates(
        {f"{a} > {b}": v for (a, b), v in pairs.items()},
        probability_of_improvement,
        reps,
        seed,
    )
    return [
        {
            "x": a,
            "y": b,
            "probability": float(point[f"{a} > {b}"]),
            "ci": [float(v) for v in np.ravel(interval[f"{a} > {b}"])],
        }
        for a, b in pairs
    ]


# -- Optuna studies ---------------------------------------------------------------------------------


def optuna_storages(sweep_dir: Path) -> list[str]:
    """Storage URLs of the Optuna studies a sweep directory holds: sqlite files in it
    (``optuna.db``, the sweeper's default) and the sweeper's ``storage`` in ``multirun.yaml``."""
    urls = [f"sqlite:///{p.resolve()}" for p in sorted(sweep_dir.glob("*.db"))]
    multirun = sweep_dir / "multirun.yaml"
    if multirun.is_file():
        import yaml

        with open(multirun, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
        storage = ((cfg.get("hydra") or {}).get("sweeper") or {}).get("storage")
        if isinstance(storage, str) and storage not in urls:
            urls.append(storage)
    return urls


def optuna_figures(sweep_dir: Path) -> tuple[list[tuple[str, Any]], list[str]]:
    """``[(title, plotly figure)]`` of every study found (Optuna's own plots), and notes on
    what could not be drawn (e.g. importances of a study with one parameter or trial)."""
    if not any(True for _ in optuna_storages(sweep_dir)):
        return [], []
    import optuna
    from optuna import visualization as vis

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    figures, notes = [], []
    for url in optuna_storages(sweep_dir):
        try:
            summaries = optuna.study.get_all_study_summaries(storage=url)
        except Exception as e:  # an unreachable or foreign storage: report it, draw the rest
            notes.append(f"optuna storage {url}: {type(e).__name__}: {e}")
            continue
        for s in summaries:
            study = optuna.load_study(study_name=s.study_name, storage=url)
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if not done:
                notes.append(f"study {s.study_name}: no completed trial")
                continue
            plots = {
                "optimization history": vis.plot_optimization_history,
                "parameter importances": functools.partial(_importances, notes=notes),
                "slices": vis.plot_slice,
            }
            for name, plot in plots.items():
                try:
                    kw = {"target_name": "objective"} if name != "slices" else {}
                    figures.append(
                        (f"study {s.study_name}: {name}", _one_objective(plot, study, kw))
                    )
                except Exception as e:  # a plot Optuna cannot draw for this study: say why
                    notes.append(f"study {s.study_name}: no {name} ({e})")
    return figures, notes


def _importances(study: Any, notes: list[str], **kw: Any) -> Any:
    """Optuna's parameter-importance plot: fANOVA (its default), or mean decrease in impurity
    when fANOVA fails (optuna 2.x's fANOVA breaks on current scikit-learn/numpy)."""
    import optuna
    from optuna import visualization as vis

    try:
        return vis.plot_param_importances(study, **kw)
    except Exception as e:
        notes.append(
            f"study {study.study_name}: fANOVA failed ({e}); importances by mean decrease in impurity"
        )
        evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator()
        return vis.plot_param_importances(study, evaluator=evaluator, **kw)


def _one_objective(plot: Any, study: Any, kw: dict[str, Any]) -> Any:
    """Optuna's plot of ``study``; a multi-objective study's first objective (the return)."""
    if len(study.directions) > 1:
        return plot(study, target=lambda t: t.values[0], **kw)
    return plot(study, **kw)


# -- figures ----------------------------------------------------------------------------------------

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def write_png(stats: dict[str, Any], path: Path, metric: str) -> Path:
    """Learning curves (IQM, 95% CI bands) and final scores (IQM with CIs) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, finals = stats["curves"], stats["final"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    grid = np.array(stats["steps"])
    for i, (label, c) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        ax.plot(grid, c["iqm"], color=color, label=f"{label} (n={len(finals[label]['scores'])})")
        ax.fill_between(grid, c["low"], c["high"], color=color, alpha=0.2, linewidth=0)
    ax.set(xlabel="env steps", ylabel=f"{metric} (IQM)", title="learning curves, 95% CI")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    labels = list(finals)
    for i, label in enumerate(labels):
        f = finals[label]
        color = _COLORS[i % len(_COLORS)]
        bx.plot(f["iqm_ci"], [i, i], color=color, linewidth=6, alpha=0.4, solid_capstyle="butt")
        bx.plot([f["iqm"]], [i], "|", color="black", markersize=14)
        bx.scatter(f["scores"], [i] * len(f["scores"]), color=color, s=12, zorder=3)
    bx.set_yticks(range(len(labels)), [_short(lb) for lb in labels], fontsize=8)
    bx.set_ylim(-0.6, len(labels) - 0.4)
    bx.set(xlabel="final score (objective)", title="final score: IQM, 95% CI, runs")
    bx.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _curve_figure(stats: dict[str, Any], metric: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    grid = stats["steps"]
    for i, (label, c) in enumerate(stats["curves"].items()):
        color = _COLORS[i % len(_COLORS)]
        fig.add_trace(
            go.Scatter(
                x=grid + grid[::-1],
                y=c["high"] + c["low"][::-1],
                fill="toself",
                fillcolor=color,
                opacity=0.2,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=label,
            )
        )
        fig.add_trace(
            go.Scatter(x=grid, y=c["iqm"], name=label, line={"color": color}, legendgroup=label)
        )
    fig.update_layout(
        title="Learning curves: IQM across seeds, 95% stratified-bootstrap CI",
        xaxis_title="env steps",
        yaxis_title=metric,
        height=480,
    )
    return fig


def _final_figure(stats: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (label, f) in enumerate(stats["final"].items()):
        color = _COLORS[i % len(_COLORS)]
        fig.add_trace(
            go.Scatter(
                x=[f["iqm"]],
                y=[label],
                mode="markers",
                marker={"color": color, "size": 12},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [f["iqm_ci"][1] - f["iqm"]],
                    "arrayminus": [f["iqm"] - f["iqm_ci"][0]],
                },
                name=f"{label} IQM",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=f["scores"],
                y=[label] * len(f["scores"]),
                mode="markers",
                marker={"color": color, "size": 6, "opacity": 0.5},
                name=f"{label} runs",
                text=[f"seed {s}" for s in f["seeds"]],
            )
        )
    fig.update_layout(
        title="Final score (objective): IQM with 95% CI, and each run",
        xaxis_title="final score",
        height=200 + 60 * len(stats["final"]),
    )
    return fig


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def write_html(stats: dict[str, Any], path: Path, metric: str, optuna_figs: list) -> Path:
    """One page: curves, final scores, tables, Optuna plots; plotly.js inlined once (offline)."""
    from plotly.offline import get_plotlyjs

    finals = stats["final"]
    final_rows = [
        [
            k,
            str(len(f["scores"])),
            f"{_fmt(f['iqm'])} [{_fmt(f['iqm_ci'][0])}, {_fmt(f['iqm_ci'][1])}]",
            f"{_fmt(f['mean'])} [{_fmt(f['mean_ci'][0])}, {_fmt(f['mean_ci'][1])}]",
            ", ".join(str(s) for s in f["seeds"]),
        ]
        for k, f in finals.items()
    ]
    poi_rows = [
        [p["x"], p["y"], f"{p['probability']:.3f} [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]"]
        for p in stats["improvement"]
    ]
    figures = [("curves", _curve_figure(stats, metric)), ("final", _final_figure(stats))]
    figures += optuna_figs
    divs = "\n".join(
        f'<section class="plot"><h3>{html.escape(t)}</h3>'
        f"{fig.to_html(full_html=False, include_plotlyjs=False, div_id=f'plot-{i}')}</section>"
        for i, (t, fig) in enumerate(figures)
    )
    notes = "".join(
        f"<li>{html.escape(n)}</li>"
        for n in [*(f"left out: {r}" for r in stats["left_out"]), *stats["notes"]]
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>puffer report: {html.escape(stats["source"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#f3f3f3}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>puffer report</h1><p>{html.escape(stats["source"])}: {stats["num_runs"]} runs in {len(finals)} groups
(runs differing only by seed). Metric: <code>{html.escape(metric)}</code>; IQM = interquartile mean;
CIs: 95% percentile stratified bootstrap, {stats["reps"]} resamples (rliable).</p>
<h2>Final scores</h2>{_table(["group", "runs", "IQM [95% CI]", "mean [95% CI]", "seeds"], final_rows)}
<h2>Probability of improvement P(X &gt; Y)</h2>{_table(["X", "Y", "P [95% CI]"], poi_rows) if poi_rows else "<p>one group: nothing to compare</p>"}
<h2>Plots</h2>{divs}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


# -- the command ------------------------------------------------------------------------------------


def report(
    paths: list[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    metric: str = DEFAULT_METRIC,
    points: int = 50,
    reps: int = 2000,
    seed: int = 0,
    include_unfinished: bool = False,
) -> dict[str, Any]:
    """Write ``report.png``, ``report.html`` and ``report.json`` for the runs under ``paths`` into
    ``out`` (default ``<first path>/report``); returns the statistics (``report.json``'s content).
    Only finished runs (``FINISHED``) count unless ``include_unfinished``; ``notes`` says which
    were left out and why.

    Raises ``ValueError`` naming the paths when no run there is left to report.
    """
    runs, left_out = load_runs(paths, metric, include_unfinished)
    notes: list[str] = []
    groups = _drop_failed(runs, notes)
    if not groups:
        unfinished = any(n.endswith(UNFINISHED) for n in left_out)
        hint = "; --include-unfinished also counts them" if unfinished else ""
        raise ValueError(
            f"no {'finished ' if unfinished else ''}run under {', '.join(map(str, paths))} "
            f"logged {metric} (a run directory holds {METRICS} and {SUMMARY}; point at a sweep "
            f"dir or outputs/<env>{hint})" + "".join(f"\n  left out: {n}" for n in left_out + notes)
        )
    runs = [r for g in groups for r in g.runs]
    steps, curves = learning_curves(groups, points, reps, seed)
    stats: dict[str, Any] = {
        "source": " ".join(map(str, paths)),
        "metric": metric,
        "num_runs": len(runs),
        "reps": reps,
        "groups": {g.label: g.settings for g in groups},
        "steps": steps.tolist(),
        "curves": curves,
        "final": final_scores(groups, reps, seed),
        "improvement": improvement(groups, reps, seed),
        "left_out": left_out,
        "notes": notes,
    }
    out_dir = Path(out) if out is not None else Path(paths[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, Any]] = []
    for p in paths:
        found, more = optuna_figures(Path(p))
        figs += found
        stats["notes"] += more
    stats["optuna_plots"] = [t for t, _ in figs]
    write_png(stats, out_dir / "report.png", metric)
    write_html(stats, out_dir / "report.html", metric, figs)
    (out_dir / "report.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")
    return stats


def report_arguments(p: Any) -> None:
    """The ``puffer report`` arguments, on the argparse parser ``p``."""
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="a sweep directory or directories of runs"
    )
    p.add_argument("--out", help="output directory (default PATH/report)")
    p.add_argument(
        "--metric", default=DEFAULT_METRIC, help=f"curve metric (default {DEFAULT_METRIC})"
    )
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--points", type=int, default=50, help="points per curve (default 50)")
    p.add_argument(
        "--include-unfinished",
        action="store_true",
        help="also count runs that did not finish (interrupted, failed, pruned, running)",
    )


def add_report_parser(sub: Any) -> None:
    """``puffer report``: register the subcommand on the CLI's subparsers."""
    p = sub.add_parser("report", help="multi-seed report of runs: IQM curves with CIs, PNG + HTML")
    report_arguments(p)
    p.set_defaults(func=report_command)


def report_command(args: Any, extra: list[str] | None = None) -> int:
    """Run ``puffer report`` with parsed ``args``; returns the exit code."""
    extra = getattr(args, "overrides", None) or extra
    if extra:
        print(f"puffer report: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not Path(p).is_dir()]
    if missing or args.reps < 1 or args.points < 2:
        problem = (
            f"no such directory: {', '.join(missing)}" if missing else "--reps >= 1, --points >= 2"
        )
        print(f"puffer report: {problem}", file=sys.stderr)
        return 2
    try:
        stats = report(
            args.paths,
            args.out,
            metric=args.metric,
            points=args.points,
            reps=args.reps,
            include_unfinished=args.include_unfinished,
        )
    except ValueError as e:
        print(f"puffer report: {e}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(args.paths[0]) / "report"
    for note in stats["left_out"]:
        print(f"left out: {note}")
    if any(n.endswith(UNFINISHED) for n in stats["left_out"]):
        print("(--include-unfinished counts the unfinished runs too)")
    for note in stats["notes"]:
        print(note)
    for label, f in stats["final"].items():
        lo, hi = f["iqm_ci"]
        print(f"{label}: IQM {f['iqm']:.4g} [{lo:.4g}, {hi:.4g}] over {len(f['scores'])} runs")
    print(f"wrote {out / 'report.png'}, {out / 'report.html'}, {out / 'report.json'}")
    return 0
