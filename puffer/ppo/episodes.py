"""``EpisodeStats``: what the env reported about the episodes that ended (``VecEnv`` infos)."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable

import numpy as np

__all__ = ["EpisodeStats"]


class EpisodeStats:
    """Per key (``episode_return``, ``episode_length``, ...): the values of this rollout's ended
    episodes, and the last ``window`` values over the whole run (saved in checkpoints)."""

    def __init__(self, window: int = 100):
        self.window = window
        self.recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self.rollout: dict[str, list[np.ndarray]] = defaultdict(list)

    def record(self, infos: dict[str, np.ndarray]) -> None:
        """Add the values of one step's ``infos`` (one value per ended episode and key)."""
        for key, values in infos.items():
            self.rollout[key].append(np.array(values, np.float64))

    def end_rollout(self, gather: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
        """Close the rollout: ``gather`` (``puffer.dist.gather_episodes``: every rank's values
        under torch.distributed, else these) gives its values, which join ``recent``."""
        values = gather({k: np.concatenate(parts) for k, parts in self.rollout.items()})
        self.rollout = defaultdict(list, {k: [v] for k, v in values.items()})
        for key, v in values.items():
            self.recent[key].extend(v.tolist())

    def means(self) -> dict[str, float]:
        """``{"env/<key>": mean}`` over the episodes that ended since ``new_rollout``."""
        return {
            f"env/{key}": float(np.concatenate(parts).mean())
            for key, parts in self.rollout.items()
            if sum(len(p) for p in parts)
        }

    def new_rollout(self) -> None:
        self.rollout.clear()

    def state_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.recent.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.recent.clear()
        for key, values in state.items():
            self.recent[key].extend(values)
