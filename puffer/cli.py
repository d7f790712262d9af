"""The ``puffer`` console script: short commands mapped onto the Hydra apps.

puffer train cartpole --timesteps 100000 [key=value ...]   # python -m puffer.train env=cartpole ...
puffer eval cartpole --episodes 10 [key=value ...]         # the newest run of that env (by start)
puffer list                                                # built-in envs, their spaces
puffer runs [PATH] [--env E] [--status S] [--json]         # a table of runs (puffer.runs)
puffer report PATH [--out DIR]                             # IQM curves, CIs (puffer.report)
puffer export RUN --format onnx                            # a deployable policy (puffer.export)

Each command is one row of ``COMMANDS``: (name, help, add_arguments, run). ``run`` returns an exit
code or replaces this process with the app it maps onto (``os.execv``: same pid, signals, exit code).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["COMMANDS", "main"]


def _env_choice(env: str) -> tuple[str, str | None]:
    """``(env.name, env.id)`` for what the user typed: a built-in env, or a gymnasium id."""
    from puffer import envs

    if env not in envs.names() and ("-v" in env or "/" in env):
        return "gymnasium", env
    return env, None  # a built-in env (or a typo the config check lists the choices for)


def _env_overrides(env: str) -> list[str]:
    """``env=<name>`` for a built-in env, ``env=gymnasium env.id=<id>`` for a gymnasium id."""
    name, env_id = _env_choice(env)
    return [f"env={name}"] if env_id is None else [f"env={name}", f"env.id={env_id}"]


def _looks_like_path(arg: str) -> bool:
    """An argument meant as a directory, not an env: absolute, ``.``/``~``-relative, or under an
    existing directory (``ALE/Pong-v5`` is an env id unless ``ALE/`` exists here)."""
    from puffer import envs

    path = Path(arg)
    if arg in envs.names():
        return False
    if path.is_absolute() or arg.startswith((".", "~")) or path.exists():
        return True
    return len(path.parts) > 1 and Path(path.parts[0]).is_dir()


def _eval_target(arg: str, outputs: str) -> Path:
    """The run directory ``puffer eval ARG`` means; ``FileNotFoundError`` saying why there is none."""
    from puffer.envs.config import env_label
    from puffer.runs import find_run

    target = Path(arg).expanduser()
    if (target / ".hydra").is_dir():
        return target
    if _looks_like_path(arg):
        problem = "is not a run directory (no .hydra/)" if target.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"{arg} {problem}: give a run directory python -m puffer.train created (e.g. "
            "outputs/cartpole/<date>_<time>_<us>) or an env name (its newest run)"
        )
    return find_run(env_label(*_env_choice(arg)), outputs, asked=arg)


def _quote(value: str) -> str:
    """A Hydra override value that keeps ``value`` verbatim (spaces, commas, quotes, ``=``)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def _app(module: str, args: list[str]) -> int:
    os.execv(sys.executable, [sys.executable, "-m", module, *args])
    return 1  # not reached


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("env", help="a built-in env (puffer list) or a gymnasium id like Acrobot-v1")
    p.add_argument("--timesteps", type=int, help="training budget (ppo.total_timesteps)")
    p.add_argument("--policy", choices=["mlp", "lstm"], help="policy network")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("-m", "--multirun", action="store_true", help="sweep over key=a,b overrides")


def _train(args: argparse.Namespace) -> int:
    argv = _env_overrides(args.env)
    for key, value in (("ppo.total_timesteps", args.timesteps), ("seed", args.seed)):
        if value is not None:
            argv.append(f"{key}={value}")
    if args.policy is not None:
        argv.append(f"policy={args.policy}")
    return _app("puffer.train", [*(["-m"] if args.multirun else []), *argv, *args.overrides])


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="an env name (its newest run under --outputs) or a run directory")
    p.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    p.add_argument("--checkpoint", help="a checkpoint file or name (default: the latest)")
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: greedy)")
    p.add_argument("--render", action="store_true", help="draw the env in the terminal")
    p.add_argument("--outputs", default="outputs", help="where runs are (default outputs/)")


def _eval(args: argparse.Namespace) -> int:
    try:
        target = _eval_target(args.run, args.outputs)
    except FileNotFoundError as e:
        print(f"puffer eval: {e}", file=sys.stderr)
        return 2
    argv = [f"run={_quote(str(target))}", f"episodes={args.episodes}"]
    if args.checkpoint:
        argv.append(f"checkpoint={_quote(args.checkpoint)}")
    if args.stochastic:
        argv.append("deterministic=false")
    if args.render:
        argv.append("render=true")
    return _app("puffer.eval", [*argv, *args.overrides])


def _list_args(p: argparse.ArgumentParser) -> None:
    pass


def _list(args: argparse.Namespace) -> int:
    from puffer import envs

    for name in envs.names():
        print(envs.describe(name))
    print(
        "gymnasium: any Gymnasium env by id - puffer train Acrobot-v1, or env=gymnasium env.id=<id>"
    )
    print("custom: your own env - env=custom env.creator=<module:callable> (see docs/usage.md)")
    return 0


Command = tuple[
    str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]
COMMANDS: list[Command] = [
    ("train", "train an env (a run directory under outputs/<env>/)", _train_args, _train),
    ("eval", "evaluate the newest run of an env (or a run directory)", _eval_args, _eval),
    ("list", "built-in envs with their spaces", _list_args, _list),
]


def _inspect_commands() -> list[Command]:
    from puffer import export, report, runs

    return [
        ("runs", "a table of runs (outputs/, multirun_sweeps/ or PATH)", runs.runs_arguments,
         runs.runs_command),
        ("report", "multi-seed report: IQM curves with CIs, PNG + HTML", report.report_arguments,
         report.report_command),
        ("export", "write a run's policy as ONNX or TorchScript", export.export_arguments,
         export.export_command),
    ]  # fmt: skip


COMMANDS += _inspect_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the ``puffer`` command; returns the exit code. Extra ``key=value`` arguments are Hydra
    overrides; anything else is refused with the command's own usage."""
    p = argparse.ArgumentParser(
        prog="puffer",
        description="Fast, config-driven reinforcement learning. Extra KEY=VALUE arguments are "
        "Hydra overrides (e.g. ppo.learning_rate=1e-3 policy=lstm); see python -m puffer.train "
        "--help for every group and key.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    parsers = {}
    for name, help_, add_arguments, run in COMMANDS:
        parsers[name] = sub.add_parser(name, help=help_)
        add_arguments(parsers[name])
        parsers[name].set_defaults(func=run)
    args, extra = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad:
        parsers[args.command].error(
            f"unrecognized arguments: {' '.join(bad)} (overrides are key=value)"
        )
    args.overrides = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
