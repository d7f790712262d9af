"""What one PPO update reports: the flat metrics dict every sink logs (docs/architecture.md,
"Training metrics") and the phase timings it is made from."""

from __future__ import annotations

__all__ = ["PHASES", "update_metrics"]

# Seconds per phase of one update: ``env`` (send + recv), ``forward`` (the policy acting),
# ``rollout`` (the whole rollout, both of those included), ``learn`` (the PPO update).
PHASES = ("env", "forward", "rollout", "learn")


def update_metrics(
    *,
    global_step: int,
    update: int,
    steps: int,
    learning_rate: float,
    losses: dict[str, float],
    times: dict[str, float],
    episodes: dict[str, float],
) -> dict[str, float]:
    """One update's metrics, in the order the sinks write them.

    ``global_step`` and ``update`` are the counters after the update; ``sps`` is ``steps`` (this
    update's env steps, every rank's) over the rollout's and the update's seconds (NaN when no
    time was measured); ``losses`` become ``losses/<key>``; ``times`` (seconds, keys ``PHASES``)
    become ``time/env``, ``time/forward``, ``time/overhead`` (the rest of the rollout) and
    ``time/learn``; ``episodes`` (``{"env/<key>": mean}``) are passed through.
    """
    elapsed = times["rollout"] + times["learn"]
    overhead = max(times["rollout"] - times["env"] - times["forward"], 0.0)
    return {
        "global_step": float(global_step),
        "update": float(update),
        "sps": steps / elapsed if elapsed > 0 else float("nan"),
        "learning_rate": learning_rate,
        **{f"losses/{k}": v for k, v in losses.items()},
        "time/env": times["env"],
        "time/forward": times["forward"],
        "time/overhead": overhead,
        "time/learn": times["learn"],
        **episodes,
    }
