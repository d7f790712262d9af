"""Write the sample outputs of README.md and docs/*.md from real runs, so they cannot drift.

A page marks a sample as a region::

    <!-- generated: NAME -->
    ```text
    ...what SAMPLES[NAME] printed...
    ```
    <!-- /generated -->

``python docs/generate.py`` reruns every sample's commands in a fresh temporary directory and
rewrites the regions; ``python docs/generate.py NAME ...`` only those; ``--check`` rewrites
nothing and exits 1 if a region differs. Paths under the temporary directory are shown relative
to it and run directory timestamps as ``<date>_<time>_<us>``, as a reader's own run prints them.

Each sample says whether it is cheap (seconds) and deterministic (same text on every run on the
same machine). tests/test_docs_commands.py checks the cheap deterministic ones in ``make test``
and the others in ``make test-slow``; samples with timings (steps per second, seconds) are
compared by ``shape``: every number masked, repeated lines collapsed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGION = re.compile(
    r"(?P<open><!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /generated -->)",
    re.DOTALL,
)
RUN_STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}")
TIMEOUT = 900  # seconds per command


def shell(command: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with bash in ``workdir`` as a reader's shell would (this interpreter's
    ``bin`` first on PATH, W&B offline, no terminal); stdout and stderr captured apart."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", TERM="dumb", COLUMNS="100")
    return subprocess.run(
        ["bash", "-c", command],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def normalize(text: str, workdir: Path) -> str:
    """Paths relative to ``workdir``, run timestamps as placeholders, no trailing blanks."""
    text = text.replace(f"{workdir.resolve()}/", "").replace(f"{workdir}/", "")
    text = RUN_STAMP.sub("<date>_<time>_<us>", text)
    return "".join(line.rstrip() + "\n" for line in text.strip("\n").splitlines())


def shape(text: str) -> str:
    """``text`` with every number (and the unit letters glued to it) masked and repeated lines
    collapsed: what stays the same between two runs of a sample that prints timings."""
    masked = [re.sub(r"-?\d[\w,.%+-]*", "#", line) for line in text.splitlines()]
    return "\n".join(line for i, line in enumerate(masked) if i == 0 or line != masked[i - 1])


# -- the samples -----------------------------------------------------------------------------------

CONFIG_ERRORS = [
    "python -m puffer.train ppo.learning_rat=1e-3",
    "python -m puffer.train env=cartpol",
    "python -m puffer.train ppo.horizon=long",
    "python -m puffer.train vector.num_envs=6 ppo.num_minibatches=4",
]


def _expect(done: subprocess.CompletedProcess[str], code: int, command: str) -> None:
    if done.returncode != code:
        raise RuntimeError(
            f"`{command}` exited {done.returncode}, not {code}:\n{done.stdout}{done.stderr}"
        )


def config_errors(workdir: Path) -> str:
    """Each mistyped command line and the one paragraph it prints (exit code 2)."""
    out = []
    for command in CONFIG_ERRORS:
        done = shell(command, workdir)
        _expect(done, 2, command)
        out.append(f"$ {command}\n{done.stderr.strip()}\n")
    return "".join(out)


def _command_output(command: str, code: int = 0) -> Callable[[Path], str]:
    def make(workdir: Path) -> str:
        done = shell(command, workdir)
        _expect(done, code, command)
        return done.stdout + done.stderr

    return make


def _newest_run(workdir: Path, env: str) -> Path:
    runs = sorted((workdir / "outputs" / env).glob("*/checkpoints/latest"))
    if not runs:
        _expect(shell(f"python -m puffer.train env={env} dashboard=off", workdir), 0, env)
        runs = sorted((workdir / "outputs" / env).glob("*/checkpoints/latest"))
    return runs[-1].parent.parent


def eval_output(workdir: Path) -> str:
    """What ``python -m puffer.eval run=<a cartpole run> episodes=10`` prints."""
    run = _newest_run(workdir, "cartpole").relative_to(workdir)
    command = f"python -m puffer.eval run={run} episodes=10"
    done = shell(command, workdir)
    _expect(done, 0, command)
    return done.stdout + done.stderr


SWEEP = "python -m puffer.train -m ppo.learning_rate=1e-3,3e-3 env=cartpole,bandit"


def sweep_table(workdir: Path) -> str:
    """The table the documented sweep prints at its end (its last lines, from the title on)."""
    done = shell(SWEEP, workdir)
    _expect(done, 0, SWEEP)
    lines = done.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if "sweep multirun_sweeps/" in line)
    end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    return "\n".join(lines[start : end + 1])


# The documented training commands whose time README.md's "How fast" states (full budgets).
TIMED = [
    "python -m puffer.train env=cartpole",
    "python -m puffer.train env=bandit",
    "python -m puffer.train env=squared",
    "python -m puffer.train env=memory",
    "python -m puffer.train env=gymnasium env.id=Acrobot-v1",
    "python -m puffer.train env=custom env.creator=corridor:Corridor +env.kwargs.length=6",
    "python -m puffer.train env=cartpole policy=lstm ppo.learning_rate=2e-2 vector=multiprocessing",
]
CORRIDOR = re.compile(r"<!-- docs-test: file corridor.py -->\n```python\n(.*?)^```", re.S | re.M)


def _machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo") if "model name" in line),
        platform.processor() or platform.machine(),
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )


def _read(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_times(workdir: Path) -> str:
    """A markdown table: each TIMED command run once with its full budget. From its summary.json:
    steps, seconds from the start of the run to its end, steps/s, mean return; and the CPU seconds
    of the whole command (imports included), which other jobs on the machine hardly change."""
    corridor = CORRIDOR.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert corridor is not None, "README.md lost its corridor.py block"
    (workdir / "corridor.py").write_text(corridor.group(1), encoding="utf-8")
    rows = [f"Measured by `python docs/generate.py command-times` on {_machine()}:", ""]
    rows += [
        "| command | steps | run seconds | CPU seconds | steps/s | mean return |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for command in TIMED:
        cpu = _cpu_seconds_of_children()
        done = shell(f"{command} logger=none dashboard=off", workdir)
        cpu = _cpu_seconds_of_children() - cpu
        _expect(done, 0, command)
        run = max((workdir / "outputs").glob("*/*/summary.json"), key=lambda p: p.stat().st_mtime)
        s = json.loads(run.read_text())
        rows.append(
            f"| `{command}` | {s['global_step']:,} | {s['wall_time']:.1f} | {cpu:.1f} | "
            f"{s['sps'] or 0:,.0f} | {s['objective']:.4g} |"
        )
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Sample:
    page: str
    make: Callable[[Path], str]
    cheap: bool
    deterministic: bool
    fenced: bool = True  # a ```text block; else markdown as it is


SAMPLES: dict[str, Sample] = {
    "train-output": Sample("docs/usage.md", _command_output("python -m puffer.train env=cartpole"), False, False),
    "config-errors": Sample("docs/usage.md", config_errors, True, True),
    "eval-output": Sample("docs/usage.md", eval_output, False, True),
    "sweep-table": Sample("docs/usage.md", sweep_table, False, True),
    "puffer-list": Sample("docs/usage.md", _command_output("puffer list"), True, True),
    "command-times": Sample("README.md", command_times, False, False, fenced=False),
}  # fmt: skip


def render(names: list[str], workdir: Path | None = None) -> dict[str, str]:
    """Run the samples ``names`` (in SAMPLES' order, sharing one fresh directory) and return each
    one's region body: a fenced ```text block."""
    with tempfile.TemporaryDirectory(prefix="puffer-docs-") as tmp:
        work = Path(workdir or tmp)
        bodies = {
            name: normalize(s.make(work), work) for name, s in SAMPLES.items() if name in names
        }
        return {n: "```text\n" + b + "```\n" if SAMPLES[n].fenced else b for n, b in bodies.items()}


def regions(text: str) -> dict[str, str]:
    """The body of each generated region of a page, by name."""
    return {m["name"]: m["body"] for m in REGION.finditer(text)}


def rewrite(text: str, bodies: dict[str, str]) -> str:
    """``text`` with the regions named in ``bodies`` replaced."""
    return REGION.sub(lambda m: m["open"] + bodies.get(m["name"], m["body"]) + m["close"], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "names", nargs="*", help=f"samples to regenerate (default all: {', '.join(SAMPLES)})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a region is not current")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SAMPLES))
    if unknown:
        parser.error(f"unknown sample(s) {unknown}: choose from {', '.join(SAMPLES)}")
    bodies = render(args.names or list(SAMPLES))
    stale = []
    for page in sorted({SAMPLES[name].page for name in bodies}):
        path = ROOT / page
        text = path.read_text(encoding="utf-8")
        mine = {n: b for n, b in bodies.items() if SAMPLES[n].page == page}
        missing = sorted(set(mine) - set(regions(text)))
        if missing:
            raise SystemExit(f"{page} has no region for {missing}: add <!-- generated: NAME -->")
        new = rewrite(text, mine)
        if new != text:
            stale.append(page)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "differs" if args.check else "rewritten"
    for page in stale:
        print(f"{page}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
