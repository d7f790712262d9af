"""Reward normalization: rewards divided by the running standard deviation of discounted returns.

(Observation normalization lives in the policy, ``puffer.policy.RunningNorm``, so that it is saved
and applied with the model.)
"""

from __future__ import annotations

from typing import Any

import torch

from puffer.policy import RunningNorm

__all__ = ["RewardNorm"]


class RewardNorm:
    """Scales rewards by ``1 / std(G)``, where ``G`` is each env row's running discounted return
    (as Gymnasium's ``NormalizeReward``), updated once per rollout over all its steps."""

    def __init__(self, num_rows: int, gamma: float, device: Any = "cpu"):
        self.gamma = gamma
        self.returns = torch.zeros(num_rows, dtype=torch.float64, device=device)
        self.stats = RunningNorm(1).to(device)

    def __call__(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """Normalized copy of ``rewards`` ``(S, T)``; ``dones`` ``(S, T)`` bool ends returns."""
        returns = torch.empty(rewards.shape, dtype=torch.float64, device=rewards.device)
        for t in range(rewards.shape[1]):
            self.returns.mul_(self.gamma).add_(rewards[:, t])
            returns[:, t] = self.returns
            self.returns.masked_fill_(dones[:, t], 0.0)
        self.stats.update(returns.reshape(-1, 1))
        return rewards * self.stats._scale

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"returns": self.returns.clone(), **self.stats.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns.copy_(state["returns"])
        self.stats.load_state_dict({k: v for k, v in state.items() if k != "returns"})
