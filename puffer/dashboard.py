"""The terminal view of a training run: a live rich dashboard on a terminal, plain lines otherwise.

Both are metric sinks (``log(metrics, step)``, ``close()``) fed the same dict as every other sink.
``make_dashboard("auto", ...)`` picks the live one only when the console is a real terminal (not
CI, a pipe or a sweep job's log).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = [
    "PlainDashboard",
    "RichDashboard",
    "RunInfo",
    "format_duration",
    "make_dashboard",
    "sparkline",
]

_BARS = "▁▂▃▄▅▆▇█"
CURVE_POINTS = 60  # episode-return means kept for the return curve


@dataclass
class RunInfo:
    """What the dashboard shows besides the metrics."""

    env: str
    total_timesteps: int
    params: int = 0
    policy: str = ""
    device: str = ""
    backend: str = ""
    num_envs: int = 0
    run_dir: str = ""
    start_step: int = 0  # > 0 when resumed: rates and time remaining count from here


def format_duration(seconds: float) -> str:
    """``75.2 -> '1m15s'``, ``4000 -> '1h06m'``; ``'-'`` for unknown or infinite."""
    if seconds != seconds or seconds == float("inf") or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def _num(x: Any) -> str:
    if x is None:
        return "-"
    x = float(x)
    if x != x:
        return "nan"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.3e}"


def sparkline(values: list[float], width: int = CURVE_POINTS) -> str:
    """``values`` as a one-line bar chart (the last ``width``, scaled from their min to max)."""
    vals = [v for v in values[-width:] if v == v]  # NaN dropped
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(_BARS[min(int((v - lo) / span * len(_BARS)), len(_BARS) - 1)] for v in vals)


class _Progress:
    """Rate, elapsed and remaining time derived from the steps done since this process started."""

    def __init__(self, info: RunInfo):
        self.info = info
        self.start = time.perf_counter()
        self.metrics: dict[str, Any] = {}
        self.step = info.start_step
        self.returns: deque[float] = deque(maxlen=CURVE_POINTS)

    def update(self, metrics: Mapping[str, Any], step: int) -> None:
        # Episode and eval stats are absent from updates in which no episode ended or no eval ran:
        # keep the last ones.
        kept = {k: v for k, v in self.metrics.items() if k.startswith(("env/", "eval/"))}
        self.metrics = {**kept, **metrics}
        self.step = int(step)
        if metrics.get("env/episode_return") is not None:
            self.returns.append(float(metrics["env/episode_return"]))

    @property
    def uptime(self) -> float:
        return time.perf_counter() - self.start

    @property
    def remaining(self) -> float:
        done = self.step - self.info.start_step
        if done <= 0:
            return float("nan")
        left = max(self.info.total_timesteps - self.step, 0)
        return left * self.uptime / done

    @property
    def sps(self) -> float:
        return float(self.metrics.get("sps", 0.0) or 0.0)


class PlainDashboard:
    """One line per ``interval`` seconds (and the first and last update), for logs and CI; an
    update left unprinted when the run stops early is printed by ``close``."""

    def __init__(self, info: RunInfo, console: Console | None = None, interval: float = 5.0):
        self.console = console or Console(highlight=False)
        self.progress = _Progress(info)
        self.interval = interval
        self._last_print = -float("inf")
        self._pending = False
        self.console.print(_header_line(info), markup=False, highlight=False, soft_wrap=True)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.progress.update(metrics, step)
        now = time.perf_counter()
        last = step >= self.progress.info.total_timesteps  # printed before the run's "done:" line
        if last or now - self._last_print >= self.interval:
            self._print()
        else:
            self._pending = True

    def _print(self) -> None:
        self._last_print = time.perf_counter()
        self._pending = False
        self.console.print(
            _plain_line(self.progress), markup=False, highlight=False, soft_wrap=True
        )

    def close(self) -> None:
        if self._pending:
            self._print()


def _header_line(info: RunInfo) -> str:
    parts = [f"puffer: {info.env}", f"{info.policy} {info.params:,} params" if info.params else ""]
    if info.backend:
        parts.append(f"{info.backend} x{info.num_envs}")
    if info.device:
        parts.append(info.device)
    if info.run_dir:
        parts.append(f"run dir {info.run_dir}")
    return " | ".join(p for p in parts if p)


def _plain_line(p: _Progress) -> str:
    m = p.metrics
    total = p.info.total_timesteps
    parts = [
        f"step {p.step:,}/{total:,} ({min(100 * p.step / max(total, 1), 100):.0f}%)",
        f"SPS {_si(p.sps)}",
        f"update {int(m.get('update', 0))}",
    ]
    if "env/episode_return" in m:
        parts.append(f"return {_num(m['env/episode_return'])}")
    if "env/episode_length" in m:
        parts.append(f"length {_num(m['env/episode_length'])}")
    if "eval/episode_return" in m:
        parts.append(f"eval return {_num(m['eval/episode_return'])}")
    losses = [
        f"{k.split('/', 1)[1].removesuffix('_loss')} {_num(m[k])}"
        for k in ("losses/policy_loss", "losses/value_loss", "losses/entropy")
        if k in m
    ]
    if losses:
        parts.append(" ".join(losses))
    parts.append(f"up {format_duration(p.uptime)}")
    parts.append(f"left {format_duration(p.remaining)}")
    return " | ".join(parts)


class RichDashboard:
    """A live panel: run info, progress, SPS, time split, losses and episode stats."""

    def __init__(self, info: RunInfo, console: Console | None = None, refresh_hz: float = 4.0):
        self.console = console or Console()
        self.progress = _Progress(info)
        self.min_interval = 1.0 / refresh_hz
        self._last_draw = -float("inf")
        self.live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.progress.update(metrics, step)
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self.live.update(self._render(), refresh=True)

    def close(self) -> None:
        self.live.update(self._render(), refresh=True)
        self.live.stop()

    def _render(self) -> Panel:
        p = self.progress
        m = p.metrics
        info = p.info
        total = max(info.total_timesteps, 1)

        summary = Table.grid(padding=(0, 2))
        summary.add_column(style="bold cyan")
        summary.add_column()
        summary.add_column(style="bold cyan")
        summary.add_column()
        summary.add_row("env", info.env, "params", f"{info.params:,} ({info.policy})")
        summary.add_row("steps", f"{p.step:,} / {info.total_timesteps:,}", "SPS", _si(p.sps))
        summary.add_row("update", str(int(m.get("update", 0))), "uptime", format_duration(p.uptime))
        summary.add_row(
            "vector", f"{info.backend} x{info.num_envs}", "remaining", format_duration(p.remaining)
        )
        summary.add_row("device", info.device, "run dir", info.run_dir)

        split = Table(title="time per update", title_justify="left", box=None, expand=False)
        split.add_column("part")
        split.add_column("seconds", justify="right")
        split.add_column("share", justify="right")
        parts = {
            k: float(m.get(f"time/{k}", 0.0) or 0.0)
            for k in ("env", "forward", "overhead", "learn")
        }
        whole = sum(parts.values()) or 1.0
        for k, v in parts.items():
            split.add_row(k, f"{v:.3f}", f"{100 * v / whole:.0f}%")

        losses = Table(title="losses", title_justify="left", box=None)
        losses.add_column("name")
        losses.add_column("value", justify="right")
        for k in sorted(k for k in m if k.startswith("losses/")):
            losses.add_row(k.split("/", 1)[1], _num(m[k]))
        if "learning_rate" in m:
            losses.add_row("learning_rate", _num(m["learning_rate"]))

        episodes = Table(title="episodes", title_justify="left", box=None)
        episodes.add_column("stat")
        episodes.add_column("mean", justify="right")
        for k in sorted(k for k in m if k.startswith("env/")):
            episodes.add_row(k.split("/", 1)[1], _num(m[k]))

        body = Table.grid(padding=(0, 4))
        body.add_row(split, losses, episodes)
        bar = ProgressBar(total=total, completed=min(p.step, total), width=60)
        curve = Text("return ", style="bold cyan")
        curve.append(sparkline(list(p.returns)) or "-", style="green")
        if p.returns:
            curve.append(f"  {_num(min(p.returns))} .. {_num(max(p.returns))}", style="dim")
        if "eval/episode_return" in m:
            curve.append(f"   eval {_num(m['eval/episode_return'])}", style="bold magenta")
        return Panel(
            Group(summary, Text(""), bar, Text(""), curve, Text(""), body),
            title="[bold]puffer[/bold]",
            subtitle=f"{min(100 * p.step / total, 100):.0f}%",
            border_style="cyan",
        )


def make_dashboard(
    mode: str, info: RunInfo, console: Console | None = None
) -> RichDashboard | PlainDashboard | None:
    """``auto``: live on a terminal, plain lines otherwise; ``rich``, ``plain`` or ``off``."""
    console = console or Console()
    if mode == "off":
        return None
    if mode == "rich" or (mode == "auto" and console.is_terminal):
        return RichDashboard(info, console)
    if mode in ("auto", "plain"):
        return PlainDashboard(info, console)
    raise ValueError(f"dashboard={mode!r}: use auto, rich, plain or off")
