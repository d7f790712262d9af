"""How ``old_cartpole_{mlp,lstm}.pt`` and ``old_checkpoints.json`` were made: with puffer at commit
89741cc (before the policy package and checkpoint format version 1), from a checkout of it::

    cd <checkout of 89741cc> && PYTHONPATH=. python <this file> <puffer>/tests/data

It trains a tiny cartpole MLP and LSTM for one update, saves each with that code's
``Trainer.save``, and records the policies' outputs on fixed observations.
"""

import json
import sys
from pathlib import Path

import torch

import puffer.envs as envs
import puffer.policy as P
from puffer.ppo.config import PPOConfig
from puffer.ppo.trainer import Trainer

out = Path(sys.argv[1])
obs = torch.tensor([[0.01, -0.02, 0.03, 0.04], [0.1, 0.2, -0.1, -0.3], [-0.05, 0.0, 0.02, 0.5]])
expected: dict = {"observations": obs.tolist()}
for name in ("mlp", "lstm"):
    vecenv = envs.make("cartpole", 2)
    policy = P.make(P.PolicyConfig(name=name, hidden_sizes=[8], lstm_hidden_size=8), vecenv, seed=0)
    config = PPOConfig(total_timesteps=64, horizon=8, num_minibatches=1, update_epochs=1)
    trainer = Trainer(config, vecenv, policy, device="cpu", seed=0)
    trainer.evaluate()  # the old name of rollout()
    trainer.train()  # the old name of update()
    trainer.save(out / f"old_cartpole_{name}.pt")
    with torch.no_grad():
        params, value, _ = trainer.policy(obs, trainer.policy.initial_state(len(obs)), None)
    expected[name] = {
        "params": params.tolist(),
        "value": value.tolist(),
        "global_step": trainer.global_step,
    }
    trainer.close()
(out / "old_checkpoints.json").write_text(json.dumps(expected, indent=1) + "\n")
