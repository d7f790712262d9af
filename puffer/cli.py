"""The ``puffer`` console script: short commands over the Hydra apps.

puffer train cartpole --timesteps 100000 [hydra overrides ...]
puffer eval cartpole --episodes 10          # the newest run of that env under outputs/
puffer list                                 # built-in envs, their spaces and descriptions
puffer runs [PATH] [--env E] [--status S]   # a table of runs (puffer.runs)
puffer report PATH [--out DIR]              # seeds aggregated: IQM curves with CIs (puffer.report)
puffer export RUN --format onnx             # a deployable policy (puffer.export)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _env_overrides(env: str) -> list[str]:
    """``env=<name>`` for a built-in env, ``env=gymnasium env.id=<id>`` for a gymnasium id."""
    from puffer import envs

    if env in envs.names():
        return [f"env={env}"]
    if "-v" in env or "/" in env:
        return ["env=gymnasium", f"env.id={env}"]
    return [f"env={env}"]  # let the config check list the choices


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from puffer import train

    argv = _env_overrides(args.env)
    if args.timesteps is not None:
        argv.append(f"ppo.total_timesteps={args.timesteps}")
    if args.policy is not None:
        argv.append(f"policy={args.policy}")
    if args.seed is not None:
        argv.append(f"seed={args.seed}")
    if args.multirun:
        argv.insert(0, "--multirun")
    return train.main([*argv, *extra])


def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    from puffer import eval as evaluation
    from puffer.runs import find_run

    target = Path(args.run)
    if not (target / ".hydra").is_dir():
        try:
            target = find_run(args.run, args.outputs)
        except FileNotFoundError as e:
            print(f"puffer eval: {e}", file=sys.stderr)
            return 2
    argv = [f"run={target}", f"episodes={args.episodes}"]
    if args.checkpoint:
        argv.append(f"checkpoint={args.checkpoint}")
    if args.stochastic:
        argv.append("deterministic=false")
    if args.render:
        argv.append("render=true")
    return evaluation.main([*argv, *extra])


def _list(args: argparse.Namespace, extra: list[str]) -> int:
    from puffer import envs

    for name in envs.names():
        print(envs.describe(name))
    print(
        "gymnasium: any Gymnasium env by id - puffer train Acrobot-v1, or env=gymnasium env.id=<id>"
    )
    print("custom: your own env - env=custom env.creator=<module:callable> (see docs/usage.md)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="puffer",
        description="Fast, config-driven reinforcement learning. Extra KEY=VALUE arguments are "
        "Hydra overrides (e.g. ppo.learning_rate=1e-3 policy=lstm); see python -m puffer.train "
        "--help for every group and key.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an env (a run directory under outputs/<env>/)")
    t.add_argument("env", help="a built-in env (puffer list) or a gymnasium id like Acrobot-v1")
    t.add_argument("--timesteps", type=int, help="training budget (ppo.total_timesteps)")
    t.add_argument("--policy", choices=["mlp", "lstm"], help="policy network")
    t.add_argument("--seed", type=int, help="random seed")
    t.add_argument("-m", "--multirun", action="store_true", help="sweep over key=a,b overrides")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate the newest run of an env (or a run directory)")
    e.add_argument("run", help="an env name (its newest run under --outputs) or a run directory")
    e.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    e.add_argument("--checkpoint", help="a checkpoint file or name (default: the latest)")
    e.add_argument("--stochastic", action="store_true", help="sample actions (default: greedy)")
    e.add_argument("--render", action="store_true", help="draw the env in the terminal")
    e.add_argument("--outputs", default="outputs", help="where runs are (default outputs/)")
    e.set_defaults(func=_eval)

    ls = sub.add_parser("list", help="built-in envs with their spaces")
    ls.set_defaults(func=_list)

    from puffer.export import add_export_parser
    from puffer.report import add_report_parser
    from puffer.runs import add_runs_parser

    for add in (add_runs_parser, add_report_parser, add_export_parser):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``puffer`` command; returns the exit code."""
    args, extra = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in extra if a.startswith("-") and "=" not in a.split("-")[-1]]
    if unknown and args.command != "train":
        parser().error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.func(args, extra)


if __name__ == "__main__":
    sys.exit(main())
