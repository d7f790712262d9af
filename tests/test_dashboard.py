"""The terminal dashboard: live rich panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import re

from rich.console import Console

from puffer.dashboard import PlainDashboard, RichDashboard, RunInfo, format_duration, make_dashboard

INFO = RunInfo(
    env="cartpole",
    total_timesteps=10_000,
    params=4_610,
    policy="mlp",
    device="cpu",
    backend="serial",
    num_envs=8,
    run_dir="outputs/cartpole/x",
)
METRICS = {
    "global_step": 2048,
    "update": 8,
    "sps": 25_000.0,
    "learning_rate": 3e-4,
    "time/env": 0.01,
    "time/forward": 0.03,
    "time/learn": 0.06,
    "losses/policy_loss": -0.0123,
    "losses/value_loss": 2.5,
    "losses/entropy": 0.69,
    "env/episode_return": 42.5,
    "env/episode_length": 42.5,
}


def _text(buf: io.StringIO) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())


def test_terminal_gets_the_live_panel():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    dash = make_dashboard("auto", INFO, console)
    assert isinstance(dash, RichDashboard)
    dash.log(METRICS, 2048)
    dash.log({**METRICS, "global_step": 4096, "update": 16}, 4096)  # no episode this update
    dash.close()
    out = _text(buf)
    for text in ("cartpole", "4,610", "SPS", "25.0k", "update", "uptime", "remaining", "serial x8"):
        assert text in out, text
    for text in ("env", "forward", "learn", "10%", "30%", "60%"):
        assert text in out, text
    assert "policy_loss" in out and "-0.0123" in out and "value_loss" in out
    assert "episode_return" in out and "42.5" in out
    assert "4,096 / 10,000" in out  # the final frame is drawn on close


def test_pipe_gets_plain_lines():
    buf = io.StringIO()
    console = Console(file=buf, width=80)
    assert not console.is_terminal
    dash = make_dashboard("auto", INFO, console)
    assert isinstance(dash, PlainDashboard)
    dash.log(METRICS, 2048)
    dash.log({**METRICS, "update": 9}, 2304)  # within the interval: printed on close
    dash.close()
    out = buf.getvalue()
    assert "\x1b[" not in out  # no escape codes in logs
    lines = out.strip().splitlines()
    assert lines[0].startswith("puffer: cartpole") and "4,610 params" in lines[0]
    assert len(lines) == 3  # header, first update, last update: one line each, never wrapped
    assert "step 2,048/10,000 (20%)" in lines[1] and "return 42.5" in lines[1]
    assert "SPS 25.0k" in lines[1] and "value 2.5" in lines[1]
    assert "update 9" in lines[2]


def test_modes():
    console = Console(file=io.StringIO(), force_terminal=True)
    assert make_dashboard("off", INFO, console) is None
    assert isinstance(make_dashboard("plain", INFO, console), PlainDashboard)


def test_format_duration():
    assert format_duration(5.2) == "5s"
    assert format_duration(75) == "1m15s"
    assert format_duration(4000) == "1h06m"
    assert format_duration(float("nan")) == "-"


def _on_a_terminal(args: list[str], cwd, env) -> str:
    """Run ``args`` with a pseudo-terminal as stdin/stdout/stderr; returns what it drew."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**env, "COLUMNS": "120"},
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_real_terminal_gets_the_live_panel_and_a_pipe_plain_lines(helpers, tmp_path):
    import sys

    args = [sys.executable, "-m", "puffer.train", *helpers.TINY[:-1], "logger=none"]
    screen = _on_a_terminal(args, tmp_path, helpers.clean_env())
    assert "╭" in screen and "time per update" in screen and "episodes" in screen

    piped = helpers.run_module("puffer.train", *helpers.TINY[:-1], "logger=none", cwd=tmp_path)
    assert piped.returncode == 0
    assert "╭" not in piped.stdout and "step 2,048/2,048" in piped.stdout


def test_sweep_jobs_print_plain_lines_even_on_a_terminal(helpers, tmp_path):
    import sys

    tiny = [a for a in helpers.TINY[:-1] if not a.startswith("ppo.total_timesteps")]
    args = [sys.executable, "-m", "puffer.train", "-m", "env=bandit,squared", "logger=none"]
    screen = _on_a_terminal(
        [*args, *tiny, "ppo.total_timesteps=512"], tmp_path, helpers.clean_env()
    )
    assert "time per update" not in screen  # no live panel per job
    assert screen.count("step 512/512") == 2, screen


def test_plain_prints_the_last_update_when_it_happens_not_at_close():
    """The final progress line comes before the run's ``done:`` line, however recent the last."""
    buf = io.StringIO()
    dash = PlainDashboard(INFO, Console(file=buf, width=200), interval=3600.0)
    dash.log({**METRICS, "global_step": 2048}, 2048)  # the first update: printed
    dash.log({**METRICS, "global_step": 4096}, 4096)  # within the interval: held back
    assert "step 4,096/" not in buf.getvalue()
    dash.log({**METRICS, "global_step": 10_000}, 10_000)  # the budget is spent: printed now
    printed = buf.getvalue()
    assert "step 10,000/" in printed
    dash.close()
    assert buf.getvalue() == printed  # nothing left for close to add
