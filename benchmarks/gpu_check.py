"""A five-minute check of a CUDA machine: training on CUDA, 1 and N GPUs with NCCL, resume on CPU.

    python benchmarks/gpu_check.py            # every check this machine can run (< 5 minutes)
    python benchmarks/gpu_check.py --quick    # smaller budgets (~1-2 minutes)

Each check is a real ``python -m puffer.train`` run in a temporary directory:

1. ``cpu``: one process on the CPU (the reference row of the table);
2. ``cpu, 2 ranks (gloo)``: ``dist.nproc=2`` on the CPU;
3. ``cuda, 1 GPU``: ``device=cuda``;
4. ``cuda, N GPUs (NCCL)``: ``device=cuda dist.nproc=N dist.backend=nccl`` (N = every GPU);
5. ``resume cuda -> cpu``: check 4's run (else 3's) continued with ``device=cpu dist.nproc=1``: it
   must finish, warn once that the continuation is not bit-exact, and end with more steps than it
   started. Without CUDA the same code resumes check 2's run (2 ranks -> 1 process, on the CPU),
   so the check itself stays tested.

Then a table: check, status (ok / FAILED / skipped and why), env steps per second (from the
run's ``metrics.jsonl``, start-up excluded), wall seconds. On a machine without CUDA the CUDA
checks are listed as skipped, so the script stays runnable (and correct) everywhere. Exit code
1 if a check that ran failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _runs import steady_sps, train

BASE = [
    "env=cartpole",
    "policy.hidden_sizes=[256,256]",
    "vector.num_envs=4096",
    "ppo.horizon=16",
    "ppo.num_minibatches=4",
    "ppo.update_epochs=2",
    "logger=none",
    "dashboard=off",
]


@dataclass
class Check:
    name: str
    overrides: list[str]
    skip: str | None = None  # why it cannot run here
    status: str = "skipped"
    sps: float | None = None
    wall: float | None = None
    notes: list[str] = field(default_factory=list)


def run_check(check: Check, steps: int, run_dir: Path) -> None:
    overrides = [*BASE, *check.overrides, f"ppo.total_timesteps={steps}"]
    proc, check.wall = train([*overrides, f"hydra.run.dir={run_dir}"], timeout=600)
    if proc.returncode != 0:
        check.status = "FAILED"
        check.notes.append(f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return
    check.status, check.sps = "ok", steady_sps(run_dir)


def resume_on_cpu(check: Check, source: Path, steps: int) -> None:
    """Continue ``source`` (trained on CUDA) on the CPU for ``steps`` more steps."""
    before = json.loads((source / "summary.json").read_text())["global_step"]
    overrides = [f"resume={source}", "device=cpu", "dist.nproc=1"]
    proc, check.wall = train([*overrides, f"ppo.total_timesteps={before + steps}"], timeout=600)
    if proc.returncode != 0:
        check.status = "FAILED"
        check.notes.append(f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return
    after = json.loads((source / "summary.json").read_text())["global_step"]
    warned = "not bit-exact" in proc.stdout + proc.stderr
    check.status = "ok" if after > before and warned else "FAILED"
    check.notes.append(f"global_step {before:,} -> {after:,}; warning shown: {warned}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller step budgets")
    args = parser.parse_args()
    steps = 4096 * 16 * (4 if args.quick else 16)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    no_cuda = "no CUDA device" if gpus == 0 else None
    multi = no_cuda or ("one GPU only (needs 2+)" if gpus < 2 else None)
    checks = [
        Check("cpu", ["device=cpu"]),
        Check("cpu, 2 ranks (gloo)", ["device=cpu", "dist.nproc=2", "torch_threads=1"]),
        Check("cuda, 1 GPU", ["device=cuda"], skip=no_cuda),
        Check(
            f"cuda, {max(gpus, 2)} GPUs (NCCL)",
            ["device=cuda", f"dist.nproc={max(gpus, 2)}", "dist.backend=nccl"],
            skip=multi,
        ),
        Check("resume cuda -> cpu" if gpus else "resume 2 ranks -> 1 (cpu, for cuda -> cpu)", []),
    ]
    print(f"torch {torch.__version__}, CUDA devices: {gpus}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {c.name: Path(tmp, str(i)) for i, c in enumerate(checks)}
        for check in checks[:4]:
            if check.skip is None:
                print(f"  running: {check.name}", flush=True)
                run_check(check, steps, runs[check.name])
        resume = checks[4]
        sources = [c for c in (checks[2:4] if gpus else checks[1:2]) if c.status == "ok"]
        if sources:
            print(f"  running: {resume.name}", flush=True)
            resume_on_cpu(resume, runs[sources[-1].name], steps // 4)
        else:
            resume.skip = "no run to resume finished"
    cpu_sps = checks[0].sps
    print("\n| check | status | SPS | vs cpu | wall s | notes |")
    print("|---|---|---:|---:|---:|---|")
    for c in checks:
        status = f"skipped ({c.skip})" if c.skip else c.status
        sps = f"{c.sps:,.0f}" if c.sps else "-"
        ratio = f"{c.sps / cpu_sps:.2f}x" if c.sps and cpu_sps else "-"
        wall = f"{c.wall:.1f}" if c.wall else "-"
        print(f"| {c.name} | {status} | {sps} | {ratio} | {wall} | {'; '.join(c.notes)} |")
    skipped = [c.name for c in checks if c.skip]
    if skipped:
        print(f"\nskipped on this machine: {', '.join(skipped)}")
    return 1 if any(c.status == "FAILED" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
