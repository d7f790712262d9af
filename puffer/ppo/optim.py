"""``Adam``: the Adam update (Kingma & Ba 2015) on foreach ops, the same arithmetic as
``torch.optim.Adam(foreach=True)``.

Why not ``torch.optim.Adam``: constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo``
(~0.7 s on a small CPU), a large share of a run that solves CartPole in well under a second. The
interface is the subset the trainer uses: ``param_groups[0]["lr"]``, ``zero_grad``, ``step``,
``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["Adam"]


class Adam:
    """Adam without weight decay or amsgrad; ``lr`` may be changed through ``param_groups``."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = list(params)
        self.param_groups = [{"lr": float(lr), "betas": tuple(betas), "eps": float(eps)}]
        self.steps = 0
        self.exp_avgs = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [self.params[i].grad for i in live]
        exp_avgs = [self.exp_avgs[i] for i in live]
        exp_avg_sqs = [self.exp_avg_sqs[i] for i in live]
        self.steps += 1
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        step_size = lr / (1 - beta1**self.steps)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, (1 - beta2**self.steps) ** 0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, -step_size)

    def state_dict(self) -> dict[str, Any]:
        return {
            "param_groups": [dict(g, betas=list(g["betas"])) for g in self.param_groups],
            "steps": self.steps,
            "exp_avgs": [t.clone() for t in self.exp_avgs],
            "exp_avg_sqs": [t.clone() for t in self.exp_avg_sqs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shapes = [tuple(p.shape) for p in self.params]
        saved = [tuple(t.shape) for t in state["exp_avgs"]]
        if saved != shapes:
            raise ValueError(
                f"optimizer state for parameters of shapes {saved}, these are {shapes}"
            )
        self.param_groups = [dict(g, betas=tuple(g["betas"])) for g in state["param_groups"]]
        self.steps = int(state["steps"])
        for dst, src in zip(self.exp_avgs, state["exp_avgs"]):
            dst.copy_(src)
        for dst, src in zip(self.exp_avg_sqs, state["exp_avg_sqs"]):
            dst.copy_(src)
