"""The dashboard's return curve (a sparkline of episode-return means) and the eval return."""

from __future__ import annotations

import io
import re

from rich.console import Console

from puffer.dashboard import PlainDashboard, RichDashboard, RunInfo, sparkline

INFO = RunInfo(env="cartpole", total_timesteps=10_000, policy="mlp", num_envs=8)


def _text(buf: io.StringIO) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())


def test_sparkline_scales_from_min_to_max():
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 5.0]) == "▁▁"
    assert sparkline([]) == ""
    assert sparkline([float("nan"), 1.0, 2.0]) == "▁█"
    assert len(sparkline([float(i) for i in range(500)], width=60)) == 60


def test_live_panel_shows_the_return_curve_and_the_eval_return():
    buf = io.StringIO()
    dash = RichDashboard(INFO, Console(file=buf, force_terminal=True, width=120))
    for i, ret in enumerate([10.0, 20.0, 40.0, 80.0, 160.0]):
        dash.log({"global_step": 256 * (i + 1), "env/episode_return": ret}, 256 * (i + 1))
    dash.log({"global_step": 2048, "eval/episode_return": 321.5}, 2048)
    dash.log({"global_step": 2304}, 2304)  # no episode, no eval: the last ones stay shown
    dash.close()
    last_frame = _text(buf).split("puffer")[-1]
    assert "▁▁▂▄█" in last_frame and "10 .. 160" in last_frame
    assert "eval 321.5" in last_frame


def test_plain_lines_show_the_eval_return():
    buf = io.StringIO()
    dash = PlainDashboard(INFO, Console(file=buf, width=200), interval=0.0)
    dash.log({"global_step": 256, "env/episode_return": 9.0, "eval/episode_return": 55.0}, 256)
    dash.close()
    assert "eval return 55" in buf.getvalue()
