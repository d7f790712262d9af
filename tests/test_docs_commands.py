"""Every shell command of README.md and docs/*.md runs as the page says, in reading order.

Each page's commands run one after another, as a reader who follows the page would, in a fresh
copy of the repository's tracked files (``outputs/`` and ``multirun_sweeps/`` start empty;
``.venv`` links to this checkout's), with this interpreter's ``bin`` first on PATH. Each must exit
as its page says. Pages run side by side, each in its own copy, except that a page which uses the
runs another page made says so (``after``) and runs after that page in its copy. What is run and
how, all of it visible in the pages:

- Every line of a ```bash block is a command (``\\`` continues a line; a trailing `` # comment``
  is dropped). Other fences (```text, ```python) are not run.
- An HTML comment right before a block (only other such comments or blank lines between) adjusts
  it; ``PREFIX`` limits it to the block's lines that start with it, else it covers the block:

      <!-- docs-test: skip `PREFIX`: REASON -->    not run here (a server, the network, CUDA, ...)
      <!-- docs-test: exit N `PREFIX` -->          the page says it fails: expect exit code N
      <!-- docs-test: file NAME -->                the next ```python block is saved as NAME
      <!-- docs-test: after PAGE -->               (anywhere) this page runs after PAGE, in its copy

- Budgets shrink without touching what the reader sees (``shrink``): each ``python -m
  puffer.train``, ``puffer train`` and ``make train`` command gets ``ppo.total_timesteps=4096``
  appended (also ``-m puffer.train`` under another launcher, e.g. torchrun), or has the budget it
  sets divided by 100 (between 2048 and 8192); ``hydra.sweeper.n_trials`` is capped at 2 (set to 2 for
  a ``hydra/sweeper=`` command that leaves it at its default).
- Placeholders are filled in (``resolve``): ``outputs/<env>/<date>_<time>`` (with or without
  ``_<us>``) becomes the run of ``<env>`` that started last, ``<run dir>`` the run of any env that
  started last, ``multirun_sweeps/<date>_<time>`` the newest sweep, and ``model_<step>.pt`` the
  oldest checkpoint kept in the run the same command names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKER = re.compile(
    r"^<!--\s*docs-test:\s*"
    r"(?P<action>skip|exit\s+(?P<code>\d+)|file\s+(?P<file>\S+)|after\s+(?P<after>\S+))"
    r"\s*(?:`(?P<prefix>[^`]+)`)?\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$"
)
FENCE = re.compile(r"^```(\w*)\s*$")
TRAIN = re.compile(r"(-m puffer\.train\b|^puffer train\b|^make train\b)")
BUDGET = re.compile(r"(ppo\.total_timesteps=|--timesteps[ =])(\d+)")
TRIALS = re.compile(r"(hydra\.sweeper\.n_trials=)(\d+)")
RUN_PLACEHOLDER = re.compile(r"outputs/([^/\s'\"]+)/<date>_<time>(?:_<us>)?")
SWEEP_PLACEHOLDER = re.compile(r"multirun_sweeps/<date>_<time>(?:_<us>)?")
ANY_RUN_PLACEHOLDER = "<run dir>"
STEP_PLACEHOLDER = "model_<step>.pt"
TEST_BUDGET, BUDGET_DIVISOR, MIN_BUDGET, MAX_BUDGET, MAX_TRIALS = 4096, 100, 2048, 8192, 2


@dataclass(frozen=True)
class Command:
    """One shell command of a page: where it is, what the page says it does."""

    page: str  # path relative to the repo root
    line: int  # 1-based line of the command in the page
    text: str
    exit_code: int = 0
    skip: str | None = None  # the reason it is not run here


@dataclass(frozen=True)
class File:
    """A ```python block the page tells the reader to save (``<!-- docs-test: file NAME -->``)."""

    page: str
    line: int
    name: str
    text: str


@dataclass
class _Marker:
    action: str
    prefix: str | None
    code: int
    file: str | None
    reason: str


def _marker(line: str, where: str) -> _Marker | None:
    m = MARKER.match(line.strip())
    if m is None:
        if line.strip().startswith("<!--") and "docs-test" in line:
            raise ValueError(f"{where}: malformed docs-test marker {line.strip()!r}")
        return None
    action = m["action"].split()[0]
    reason = (m["reason"] or "").strip()
    if action == "skip" and not reason:
        raise ValueError(f"{where}: a skip marker must say why: {line.strip()!r}")
    return _Marker(action, m["prefix"], int(m["code"] or 0), m["file"], reason)


def _commands(block: list[tuple[int, str]], markers: list[_Marker], page: str) -> list[Command]:
    """The commands of one ```bash block (``\\``-continued lines joined), markers applied."""
    out: list[Command] = []
    pending: tuple[int, str] | None = None
    for number, raw in block:
        text = raw.rstrip()
        if pending is not None:
            text = pending[1] + " " + text.lstrip()
            number = pending[0]
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        pending = None
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        command = Command(page, number, text.strip())
        for m in markers:
            if m.prefix is not None and not command.text.startswith(m.prefix):
                continue
            if m.action == "skip":
                command = Command(page, number, command.text, command.exit_code, m.reason)
            elif m.action == "exit":
                command = Command(page, number, command.text, m.code, command.skip)
        out.append(command)
    return out


def page_name(path: Path) -> str:
    """How commands and ``after`` markers name a page: its path from the repo root (or its name)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def parse(path: Path) -> list[Command | File]:
    """The commands and files of one page, in order. Raises ValueError for a marker that does
    not parse, a skip without a reason, or a prefix that matches no line of its block."""
    page = page_name(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    items: list[Command | File] = []
    markers: list[_Marker] = []
    i = 0
    while i < len(lines):
        where = f"{page}:{i + 1}"
        marker = _marker(lines[i], where)
        fence = FENCE.match(lines[i])
        if marker is not None and marker.action == "after":
            pass  # page-level: see chains()
        elif marker is not None:
            markers.append(marker)
        elif fence is not None:
            lang, start = fence.group(1), i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            block = [(n + 1, lines[n]) for n in range(start, i)]
            items.extend(_block(lang, block, markers, page, where))
            markers = []
        elif lines[i].strip() and markers:
            raise ValueError(f"{where}: a docs-test marker must come right before a block")
        i += 1
    return items


def _block(
    lang: str, block: list[tuple[int, str]], markers: list[_Marker], page: str, where: str
) -> list[Command | File]:
    files = [m for m in markers if m.action == "file"]
    if files:
        text = "".join(line + "\n" for _, line in block)
        return [File(page, block[0][0] if block else 0, files[0].file or "", text)]
    if lang not in ("bash", "sh"):
        if markers:
            raise ValueError(f"{where}: docs-test markers apply to ```bash blocks only")
        return []
    commands = _commands(block, markers, page)
    for m in markers:
        if m.prefix is not None and not any(c.text.startswith(m.prefix) for c in commands):
            raise ValueError(f"{where}: marker prefix {m.prefix!r} matches no command here")
    return list(commands)


def all_items(docs: list[Path] = DOCS) -> list[Command | File]:
    """Every page's commands and files, README.md first, then docs/*.md by name."""
    return [item for path in docs if path.is_file() for item in parse(path)]


def after(path: Path) -> str | None:
    """The page ``path`` runs after (its ``<!-- docs-test: after PAGE -->``), or None."""
    lines = path.read_text(encoding="utf-8").splitlines()
    named = [m["after"] for m in map(MARKER.match, lines) if m and m["after"]]
    if len(named) > 1:
        raise ValueError(f"{path.name}: more than one docs-test `after` marker: {named}")
    return named[0] if named else None


def chains(docs: list[Path] = DOCS) -> list[list[Path]]:
    """The pages grouped into chains that share one workspace, each page after the page it names.

    Raises ValueError for an ``after`` that names no page before it in ``docs``."""
    chain_of: dict[str, list[Path]] = {}
    out: list[list[Path]] = []
    for path in docs:
        name = page_name(path)
        first = after(path)
        if first is None:
            out.append([path])
        elif first in chain_of:
            chain_of[first].append(path)
        else:
            raise ValueError(f"{name}: `after {first}` names no page before it")
        chain_of[name] = out[-1] if first is None else chain_of[first]
    return out


def shrink(command: str) -> str:
    """``command`` with a test-sized budget (see the module docstring); others unchanged."""
    if not TRAIN.search(command):
        return command
    command = TRIALS.sub(lambda m: f"{m[1]}{min(int(m[2]), MAX_TRIALS)}", command)
    if "hydra/sweeper=" in command and not TRIALS.search(command):
        command += f" hydra.sweeper.n_trials={MAX_TRIALS}"
    if BUDGET.search(command):
        return BUDGET.sub(
            lambda m: f"{m[1]}{min(max(int(m[2]) // BUDGET_DIVISOR, MIN_BUDGET), MAX_BUDGET)}",
            command,
        )
    extra = f"ppo.total_timesteps={TEST_BUDGET}"
    if command.startswith("make train"):
        return f"{command} ARGS='{extra}'"
    return f"{command} {extra}"


def code(command: str) -> str:
    """``command`` without its trailing ``# comment`` (the first `` #``)."""
    return command.partition(" #")[0].rstrip()


def newest_run(outputs: Path, env: str) -> Path:
    """The run of ``env`` under ``outputs`` that started last (``started`` in summary.json)."""
    runs = [d for d in (outputs / env).glob("*") if (d / ".hydra").is_dir()]
    if not runs:
        raise FileNotFoundError(f"no run of {env!r} under {outputs}/ for the placeholder")
    return max(runs, key=_started)


def _started(run_dir: Path) -> tuple[str, str]:
    try:
        started = json.loads((run_dir / "summary.json").read_text()).get("started") or ""
    except (OSError, json.JSONDecodeError):
        started = ""
    return str(started), run_dir.name


def resolve(command: str, workdir: Path) -> str:
    """``command`` with its run and checkpoint placeholders filled in from ``workdir/outputs``."""
    runs: list[Path] = []

    def run(m: re.Match[str]) -> str:
        runs.append(newest_run(workdir / "outputs", m[1]))
        return str(runs[-1].relative_to(workdir))

    command = RUN_PLACEHOLDER.sub(run, command)
    if SWEEP_PLACEHOLDER.search(command):
        sweeps = sorted(d for d in (workdir / "multirun_sweeps").glob("*") if d.is_dir())
        if not sweeps:
            raise FileNotFoundError(f"no sweep under {workdir}/multirun_sweeps for the placeholder")
        command = SWEEP_PLACEHOLDER.sub(str(sweeps[-1].relative_to(workdir)), command)
    if ANY_RUN_PLACEHOLDER in command:
        envs = [d.name for d in (workdir / "outputs").glob("*") if d.is_dir()]
        newest = max((newest_run(workdir / "outputs", e) for e in envs), key=_started, default=None)
        if newest is None:
            raise FileNotFoundError(f"no run under {workdir}/outputs for {ANY_RUN_PLACEHOLDER}")
        runs.append(newest)
        command = command.replace(ANY_RUN_PLACEHOLDER, str(newest.relative_to(workdir)))
    if STEP_PLACEHOLDER in command:
        if not runs:
            raise ValueError(f"{STEP_PLACEHOLDER} needs a run directory in the same command")
        kept = sorted((runs[0] / "checkpoints").glob("model_*.pt"))
        if not kept:
            raise FileNotFoundError(f"no checkpoint in {runs[0]}/checkpoints")
        command = command.replace(STEP_PLACEHOLDER, kept[0].name)
    return command


# -- the workspace and the run -------------------------------------------------------------------

TIMEOUT = 300  # seconds per command: a hung command fails the test instead of the suite


def workspace(dest: Path) -> Path:
    """A fresh clone-like copy of the repository's tracked files in ``dest`` with ``.venv`` linked
    to this checkout's (pyproject.toml no newer than its install stamp: make never reinstalls)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    venv = Path(sys.prefix)
    if venv != Path(sys.base_prefix):
        (dest / ".venv").symlink_to(venv, target_is_directory=True)
        stamp = venv / ".installed"  # the Makefile's: never reinstall this venv from the copy
        if stamp.is_file():
            age = min(stamp.stat().st_mtime, (dest / "pyproject.toml").stat().st_mtime)
            os.utime(dest / "pyproject.toml", (age, age))
    return dest


def shell_env() -> dict[str, str]:
    """The environment a reader's shell has: this interpreter first, W&B offline and quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_", "PYTEST"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", TERM="dumb")
    return env


def run(item: Command | File, workdir: Path) -> str | None:
    """Run one command (or save one file) in ``workdir``; None, or what went wrong."""
    if isinstance(item, File):
        (workdir / item.name).write_text(item.text, encoding="utf-8")
        return None
    try:
        command = shrink(resolve(code(item.text), workdir))
    except (OSError, ValueError) as e:  # a placeholder nothing earlier on the pages made
        return f"{item.page}:{item.line}: `{item.text}`: {e}"
    try:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=workdir,
            env=shell_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"{item.page}:{item.line}: `{command}` did not finish in {TIMEOUT} s"
    if done.returncode == item.exit_code:
        return None
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    return (
        f"{item.page}:{item.line}: `{command}` exited {done.returncode}, the page says "
        f"{item.exit_code}:\n{tail}"
    )


def _runnable(chain: list[Path]) -> list[Command | File]:
    items = all_items(chain)
    return [i for i in items if not (isinstance(i, Command) and i.skip)]


CHAINS = [c for c in chains() if any(isinstance(i, Command) for i in _runnable(c))]


def test_enough_documented_commands_run():
    runnable = [i for c in CHAINS for i in _runnable(c) if isinstance(i, Command)]
    assert len(runnable) >= 30 and len(CHAINS) >= 3


@pytest.mark.slow
@pytest.mark.timeout(1800)  # up to ~40 commands of seconds each; each also has its own TIMEOUT
@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "+".join(p.name for p in c))
def test_every_documented_command_runs_as_the_page_says(chain, tmp_path):
    workdir = workspace(tmp_path / "repo")
    failures = [f for item in _runnable(chain) for f in [run(item, workdir)] if f]
    assert not failures, "\n\n".join(failures)


def test_a_page_runs_after_the_page_it_names(tmp_path):
    pages = [tmp_path / n for n in ("a.md", "b.md", "c.md")]
    pages[0].write_text("```bash\nls\n```\n")
    pages[1].write_text("<!-- docs-test: after c.md -->\n```bash\nls\n```\n")
    pages[2].write_text("<!-- docs-test: after a.md -->\n")
    with pytest.raises(ValueError, match=r"b\.md: `after c\.md` names no page before it"):
        chains(pages)
    assert chains([pages[0], pages[2]]) == [[pages[0], pages[2]]]
    pages[1].write_text("<!-- docs-test: after a.md -->\n```bash\nls\n```\n")
    assert chains(pages) == [[pages[0], pages[1], pages[2]]]
    assert [i.text for i in parse(pages[1])] == ["ls"]  # the marker is not a block's


# -- the parser, shrinking and placeholders (fast) ----------------------------------------------


def test_markers_apply_to_the_next_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "<!-- docs-test: skip `tensorboard`: a server -->\n"
        "<!-- docs-test: exit 2 `python -m puffer.train bad` -->\n"
        "```bash\n"
        "tensorboard --logdir outputs   # curves\n"
        "python -m puffer.train bad=1\n"
        "python -m puffer.train \\\n"
        "    env=bandit\n"
        "# a comment line\n"
        "```\n"
        "<!-- docs-test: file corridor.py -->\n"
        "```python\nx = 1\n```\n"
        "```bash\ntensorboard --logdir x\n```\n"
    )
    items = parse(page)
    assert items == [
        Command("page.md", 5, "tensorboard --logdir outputs   # curves", 0, "a server"),
        Command("page.md", 6, "python -m puffer.train bad=1", 2),
        Command("page.md", 7, "python -m puffer.train env=bandit"),
        File("page.md", 13, "corridor.py", "x = 1\n"),
        Command("page.md", 16, "tensorboard --logdir x"),  # markers cover one block only
    ]


@pytest.mark.parametrize(
    "text",
    [
        "<!-- docs-test: skip -->\n```bash\nls\n```\n",  # no reason
        "<!-- docs-test: skip `cat`: why -->\n```bash\nls\n```\n",  # prefix matches nothing
        "<!-- docs-test: skp: why -->\n```bash\nls\n```\n",  # unknown action
        "<!-- docs-test: exit 2 -->\n\nsome prose\n```bash\nls\n```\n",  # not before a block
    ],
)
def test_bad_markers_are_refused(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ValueError, match=r"page\.md"):
        parse(page)


def test_every_page_parses_and_every_skip_says_why():
    items = all_items()
    skipped = [i for i in items if isinstance(i, Command) and i.skip]
    assert all(i.skip and len(i.skip) > 5 for i in skipped)
    assert len(skipped) <= len(items) // 4, [f"{i.page}:{i.line}" for i in skipped]


@pytest.mark.parametrize(
    ("command", "shrunk"),
    [
        (
            "python -m puffer.train env=cartpole",
            "python -m puffer.train env=cartpole ppo.total_timesteps=4096",
        ),
        ("puffer train cartpole --timesteps 100000", "puffer train cartpole --timesteps 2048"),
        (
            "python -m puffer.train ppo.total_timesteps=800000",
            "python -m puffer.train ppo.total_timesteps=8000",
        ),
        (
            "python -m puffer.train env=atari ppo.total_timesteps=2000000",
            "python -m puffer.train env=atari ppo.total_timesteps=8192",
        ),
        ("make train", "make train ARGS='ppo.total_timesteps=4096'"),
        (
            "python -m puffer.train -m hydra.sweeper.n_trials=30",
            "python -m puffer.train -m hydra.sweeper.n_trials=2 ppo.total_timesteps=4096",
        ),
        ("python -m puffer.eval run=x episodes=10", "python -m puffer.eval run=x episodes=10"),
        ("make test", "make test"),
        (
            "python -m puffer.train -m hydra/sweeper=optuna env=cartpole",
            "python -m puffer.train -m hydra/sweeper=optuna env=cartpole hydra.sweeper.n_trials=2 ppo.total_timesteps=4096",
        ),
        (
            "torchrun --standalone -m puffer.train env=x",
            "torchrun --standalone -m puffer.train env=x ppo.total_timesteps=4096",
        ),
    ],
)
def test_shrink(command, shrunk):
    assert shrink(command) == shrunk


def test_placeholders_name_the_newest_run_and_a_kept_checkpoint(tmp_path):
    for name, started in (("b", "2026-01-02"), ("a", "2026-01-03"), ("c", "2026-01-01")):
        run_dir = tmp_path / "outputs" / "cartpole" / name
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / "checkpoints").mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"started": started}))
        for step in (2048, 1024):
            (run_dir / "checkpoints" / f"model_{step:012d}.pt").write_bytes(b"")
    command = (
        "python -m puffer.eval run=outputs/cartpole/<date>_<time>_<us> checkpoint=model_<step>.pt"
    )
    assert resolve(command, tmp_path) == (
        "python -m puffer.eval run=outputs/cartpole/a checkpoint=model_000000001024.pt"
    )
    assert resolve("puffer eval <run dir>", tmp_path) == "puffer eval outputs/cartpole/a"
    with pytest.raises(FileNotFoundError, match="bandit"):
        resolve("ls outputs/bandit/<date>_<time>", tmp_path)
    (tmp_path / "multirun_sweeps" / "2026-01-01_00-00-00_000001").mkdir(parents=True)
    (tmp_path / "multirun_sweeps" / "2026-01-02_00-00-00_000001").mkdir()
    assert resolve("puffer report multirun_sweeps/<date>_<time>", tmp_path) == (
        "puffer report multirun_sweeps/2026-01-02_00-00-00_000001"
    )


# -- generated sample outputs (docs/generate.py) ------------------------------------------------


def _generate():  # docs/ is not a package: load the script by path
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_generate", module)
    spec.loader.exec_module(module)
    return module


def _committed(generate, name: str) -> str:
    page = ROOT / generate.SAMPLES[name].page
    found = generate.regions(page.read_text(encoding="utf-8"))
    assert name in found, f"{page.name} has no <!-- generated: {name} --> region"
    return found[name]


def test_every_region_has_a_sample_and_every_sample_a_region():
    generate = _generate()
    in_pages = {n for path in DOCS for n in generate.regions(path.read_text(encoding="utf-8"))}
    assert in_pages == set(generate.SAMPLES)
    for name, sample in generate.SAMPLES.items():
        assert _committed(generate, name).startswith("```text\n") == sample.fenced


def test_cheap_generated_samples_are_current():
    generate = _generate()
    names = [n for n, s in generate.SAMPLES.items() if s.cheap and s.deterministic]
    assert names, "no cheap sample: the fast check checks nothing"
    for name, body in generate.render(names).items():
        assert body == _committed(generate, name), f"{name}: run python docs/generate.py {name}"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # full budgets: a sweep and every timed command
def test_expensive_generated_samples_are_current():
    generate = _generate()
    names = [n for n, s in generate.SAMPLES.items() if not (s.cheap and s.deterministic)]
    for name, body in generate.render(names).items():
        committed = _committed(generate, name)
        if not generate.SAMPLES[name].deterministic:
            body, committed = generate.shape(body), generate.shape(committed)
        assert body == committed, f"{name}: run python docs/generate.py {name}"


def test_shape_masks_timings_and_collapses_progress_lines():
    generate = _generate()
    a = "step 2,048/400 (1%) | SPS 38.3k | up 0s | left 1m15s\nstep 4,096/400 (2%) | SPS 9k | up 1s | left 3s\ndone -1.2e-05"
    b = "step 2,048/400 (1%) | SPS 51.0k | up 0s | left 4s\ndone 3.3e-16"
    assert generate.shape(a) == generate.shape(b) == "step #/# (#) | SPS # | up # | left #\ndone #"
    assert generate.shape("return 500") != generate.shape("length 500")


def test_regions_are_rewritten_in_place():
    generate = _generate()
    page = "a\n<!-- generated: x -->\nold\n<!-- /generated -->\nb\n<!-- generated: y -->\nkeep\n<!-- /generated -->\n"
    assert generate.regions(page) == {"x": "old\n", "y": "keep\n"}
    assert generate.rewrite(page, {"x": "new\n"}) == page.replace("old", "new")


# -- what --help and metrics.jsonl show is documented -------------------------------------------


@pytest.mark.parametrize("app", ["puffer.train", "puffer.eval"])
def test_help_lists_only_groups_the_usage_guide_documents(app):
    shown = subprocess.run(
        [sys.executable, "-m", app, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=shell_env(),
    ).stdout
    listing = shown.split("Config groups", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    groups = {line.split(":", 1)[0].strip() for line in listing if ":" in line}
    assert {"env", "ppo", "policy"} <= groups, shown[:500]
    usage = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `([\w/]+)` \|", usage, re.MULTILINE))
    assert groups <= table, (
        f"--help lists groups docs/usage.md's group table lacks: {groups - table}"
    )


def test_every_metrics_jsonl_key_is_in_the_metrics_table(tmp_path):
    from puffer import config
    from puffer.run import run

    tiny = [
        "ppo.total_timesteps=512",
        "vector.num_envs=8",
        "ppo.horizon=32",
        "ppo.num_minibatches=2",
    ]
    cfg = config.compose(["env=bandit", *tiny, "logger=none", "dashboard=off"])
    run(cfg, tmp_path / "run")
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    keys = {k for row in rows for k in row}
    assert {"global_step", "time", "env/episode_return"} <= keys
    section = (ROOT / "docs" / "training.md").read_text(encoding="utf-8").split("## Metrics", 1)[1]
    documented = set(re.findall(r"`([\w/<>]+)`", section.split("\n## ", 1)[0]))
    missing = {k for k in keys if k not in documented and not k.startswith("env/")}
    assert not missing, (
        f"metrics.jsonl keys missing from docs/training.md's Metrics table: {missing}"
    )


def test_the_workspace_is_a_fresh_copy_that_never_reinstalls(tmp_path):
    work = workspace(tmp_path / "repo")
    assert (work / "README.md").read_text() == (ROOT / "README.md").read_text()
    assert (work / "docs" / "generate.py").is_file() and (work / "Makefile").is_file()
    for empty in ("outputs", "multirun_sweeps"):  # as in a fresh clone: only .gitkeep
        assert [p.name for p in (work / empty).iterdir()] == [".gitkeep"]
    stamp = work / ".venv" / ".installed"
    if stamp.is_file():  # make's rule: reinstall when pyproject.toml is newer than the stamp
        assert (work / "pyproject.toml").stat().st_mtime <= stamp.stat().st_mtime
