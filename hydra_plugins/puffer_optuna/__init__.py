"""puffer's Hydra sweeper on current Optuna: ``python -m puffer.train -m hydra/sweeper=optuna``.

``config`` holds the sweeper's settings (registered as ``hydra/sweeper=puffer_optuna``; the
project's ``conf/hydra/sweeper/optuna.yaml`` adds the PPO search space), ``space`` turns Hydra
sweep overrides into Optuna distributions and ``sweeper`` runs the ask-launch-tell loop.
``hydra_plugins`` itself is a namespace package, shared with the other Hydra plugins installed.
"""
