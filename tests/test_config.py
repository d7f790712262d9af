"""Config composition: every group combination, tuned values, and each error's message."""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from puffer import config
from puffer.config import ConfigError, compose, validate
from puffer.policy import PolicyConfig
from puffer.ppo.config import PPOConfig

ENVS = ["bandit", "cartpole", "squared", "memory", "reach", "gymnasium", "custom"]
ENVS += ["atari", "mujoco", "pettingzoo"]  # env families (puffer.emulation)
MP_8 = ["vector=multiprocessing", "vector.num_envs=8"]


def test_groups_have_the_documented_options():
    assert config.group_options("env") == sorted(ENVS)
    assert config.group_options("vector") == ["multiprocessing", "serial"]
    assert config.group_options("policy") == ["cnn", "cnn_lstm", "custom", "lstm", "mlp"]
    assert config.group_options("logger") == ["none", "tensorboard", "wandb"]
    assert "default" in config.group_options("ppo")


def test_defaults_are_cartpole_serial_mlp_tensorboard():
    cfg = compose([], return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    assert (choices.env, choices.logger) == ("cartpole", "tensorboard")
    assert choices.policy is None and cfg.policy.name == "mlp"  # the env's tuned policy
    assert choices.vector is None and cfg.vector.backend == "serial"  # the env's tuned backend
    assert cfg.logger.tensorboard and not cfg.logger.wandb.enabled
    assert cfg.seed == 0 and cfg.device == "auto" and cfg.resume is None
    assert cfg.hydra.job.chdir is False
    assert cfg.hydra.run.dir.startswith("outputs/cartpole/")
    assert compose(["resume='/r/it\\'s a,b'"], return_hydra_config=True).hydra.run.dir.startswith(
        "/r/it's a,b/resumes/"
    )  # a resume's own Hydra record goes inside the run, not over its .hydra/
    assert cfg.hydra.sweep.dir.startswith("multirun_sweeps/")


@pytest.mark.parametrize(
    ("env", "policy", "vector"),
    list(itertools.product(ENVS, ["mlp", "lstm"], ["serial", "multiprocessing"])),
)
def test_every_combination_composes_and_validates(env, policy, vector):
    overrides = [f"env={env}", f"policy={policy}", f"vector={vector}"]
    if env == "gymnasium":
        overrides.append("env.id=CartPole-v1")
    if env == "custom":
        overrides.append("env.creator=puffer.envs.cartpole:CartPole")
    if env == "pettingzoo":
        overrides.append("env.creator=pettingzoo.classic.rps_v2:parallel_env")
    cfg = compose(overrides)
    validate(cfg)
    assert cfg.env.name == env
    assert cfg.policy.name == policy
    assert cfg.vector.backend == vector
    # The groups are the Trainer's own dataclasses, not copies.
    assert isinstance(OmegaConf.to_object(cfg.ppo), PPOConfig)
    assert isinstance(OmegaConf.to_object(cfg.policy), PolicyConfig)


def test_memory_defaults_to_lstm_but_the_command_line_wins():
    assert compose(["env=memory"]).policy.name == "lstm"
    assert compose(["env=memory", "policy=mlp"]).policy.name == "mlp"
    assert compose(["env=memory", "policy.name=mlp"]).policy.name == "mlp"


@pytest.mark.parametrize("env", ["bandit", "cartpole", "squared"])
def test_a_policy_choice_wins_over_the_tuned_policy(env):
    tuned = compose([f"env={env}"]).policy
    chosen = compose([f"env={env}", "policy=lstm"]).policy
    assert chosen.name == "lstm"
    assert chosen.hidden_sizes == tuned.hidden_sizes  # the rest of the tuned policy stays


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize("env", ENVS[:4])
def test_tuned_values_apply_and_command_line_overrides_win(env):
    tuned = config.CONF_DIR / "tuned" / f"{env}.yaml"
    values = OmegaConf.to_container(OmegaConf.load(tuned))
    values.pop("defaults", None)
    leaves = [
        (k, v) for k, v in _leaves(values) if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    assert leaves, f"{tuned} sets no numeric values"
    cfg = compose([f"env={env}"])
    for key, value in leaves:
        assert OmegaConf.select(cfg, key) == value, key
    key, value = leaves[0]
    changed = value + 1 if isinstance(value, int) else value * 0.5
    assert OmegaConf.select(compose([f"env={env}", f"{key}={changed}"]), key) == changed


def test_several_loggers_at_once():
    cfg = compose(["logger=[tensorboard,wandb]"])
    assert cfg.logger.tensorboard and cfg.logger.wandb.enabled
    assert cfg.logger.wandb.mode == "offline"
    cfg = compose(["logger=none"])
    assert not cfg.logger.tensorboard and not cfg.logger.wandb.enabled


def test_gymnasium_run_dir_is_named_after_the_id():
    cfg = compose(["env=gymnasium", "env.id=Acrobot-v1"], return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("outputs/Acrobot-v1/")


# -- errors -----------------------------------------------------------------------------------------


def _error(overrides, validate_too=False):
    with pytest.raises(ConfigError) as info:
        cfg = compose(overrides)
        if validate_too:
            validate(cfg)
    return str(info.value)


def test_mistyped_key_suggests_the_right_one():
    msg = _error(["ppo.learning_rat=1e-3"])
    assert "ppo.learning_rat" in msg and "Did you mean 'learning_rate'" in msg
    assert "Did you mean 'seed'" in _error(["sed=1"])


def test_unknown_key_without_close_match_lists_the_keys():
    msg = _error(["ppo.zzzz=1"])
    assert "'ppo.zzzz'" in msg and "total_timesteps" in msg and "learning_rate" in msg


def test_unknown_group_option_lists_the_choices():
    msg = _error(["env=cartpol"])
    assert "unknown env 'cartpol'" in msg and "Did you mean 'cartpole'" in msg
    assert all(e in msg for e in ENVS)
    msg = _error(["policy=transformer"])
    assert "lstm" in msg and "mlp" in msg
    # One bad option in a list of several (Hydra words this one differently).
    msg = _error(["logger=[tensorboard,foo]"])
    assert "unknown logger 'foo'" in msg and "none, tensorboard, wandb" in msg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("ppo.learning_rate=fast", "expected a number"),
        ("ppo.horizon=1.5", "expected an integer"),
        ("ppo.norm_adv=maybe", "true or false"),
        ("policy.hidden_sizes=[64,big]", "expected an integer"),
    ],
)
def test_wrong_type_names_key_and_value(override, expected):
    msg = _error([override])
    key = override.split("=")[0]
    assert key.split("[")[0] in msg and expected in msg


def test_bad_syntax_is_explained():
    assert "key=value" in _error(["ppo.learning_rate=[1"])


def test_env_kwargs_typo_suggests_plus_for_new_keys():
    msg = _error(["env.kwargs.max_step=100"])
    assert "max_steps" in msg and "+env.kwargs.max_step=" in msg


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["vector.num_envs=6", "ppo.num_minibatches=4"], "num_minibatches"),
        (["ppo.learning_rate=-1"], "ppo.learning_rate=-1"),
        (["ppo.gamma=1.5"], "ppo.gamma"),
        (["vector.num_envs=0"], "vector.num_envs=0"),
        (["vector=multiprocessing", "vector.num_envs=6", "vector.num_workers=4"], "divisible"),
        (["device=tpu"], "device='tpu'"),
        (["dashboard=fancy"], "dashboard='fancy'"),
        (["logger=wandb", "logger.wandb.mode=sometimes"], "logger.wandb.mode"),
        (["env=gymnasium"], "env.id="),
        (["env=gymnasium", "env.id=Acrobot-v9"], "Did you mean 'Acrobot-v1'"),
        (["env=custom"], "env.creator="),
        (["env=custom", "env.creator=nosuchmodule:Env"], "cannot import 'nosuchmodule'"),
        (["env=custom", "env.creator=puffer.envs.cartpole:CartPol"], "Did you mean 'CartPole'"),
        (["checkpoint.keep=0"], "checkpoint.keep=0"),
        (["seed=-1"], "seed=-1: use an int from 0 to 2**63 - 1"),
        (
            ["env=reach", "dist.nproc=2", "vector.num_envs=6"],
            "num_envs=3 is not a multiple of the 2 rows each env_creator() call returns (one row "
            "per agent): use num_envs=2 or 4 (each of 2 ranks steps 3 of the 6 rows).",
        ),
        (
            [*MP_8, "vector.num_workers=8", "vector.oversubscribe=true", "dist.nproc=2"],
            "(each of 2 ranks steps 4 of the 8 rows).",
        ),
        (["seed=9223372036854775808"], "seed=9223372036854775808: use an int from 0"),
        (["resume=/nonexistent/run"], "resume=/nonexistent/run"),
        (["policy.activation=swish"], "policy.activation"),
        (["vector=multiprocessing", "vector.start_method=bogus"], "vector.start_method='bogus'"),
        (["vector=multiprocessing", "vector.timeout=0"], "vector.timeout=0"),
        # '+' adds keys past the schema's struct check: validate still refuses them.
        (["+ppo.learning_rat=1e-3"], "Did you mean 'learning_rate'"),
        (["++logger.wandb.projekt=x"], "Did you mean 'project'"),
        (["+foo=1"], "unknown config key 'foo'"),
    ],
)
def test_inconsistent_values_fail_validation_with_the_fix(overrides, expected):
    msg = _error(overrides, validate_too=True)
    assert expected in msg, msg


def test_an_env_s_tuned_vector_backend_applies_until_one_is_chosen():
    assert compose(["env=atari"]).vector.backend == "multiprocessing"  # conf/tuned/atari.yaml
    assert compose(["env=atari", "vector=serial"]).vector.backend == "serial"
    assert compose(["env=atari", "vector=serial"]).vector.num_envs == 8  # the rest still applies
    assert compose(["vector=multiprocessing"]).vector.backend == "multiprocessing"


def test_plus_adds_env_kwargs():
    cfg = compose(["env=gymnasium", "env.id=CartPole-v1", "+env.kwargs.render_mode=rgb_array"])
    validate(cfg)
    assert cfg.env.kwargs.render_mode == "rgb_array"


def test_cuda_request_without_cuda_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert "CUDA is not available" in _error(["device=cuda"], validate_too=True)


@pytest.mark.parametrize(
    "missing, provider",
    [
        ("hydra/sweeper/puffer_optuna", "hydra_plugins/puffer_optuna"),
        ("hydra/launcher/joblib", "hydra-joblib-launcher"),
    ],
)
def test_missing_sweep_plugin_points_at_the_extra(missing, provider):
    from hydra.errors import MissingConfigException

    message = config.explain(MissingConfigException("", missing_cfg_file=missing, options=None))
    assert provider in message and "pip install -e '.[sweep]'" in message
    assert "hydra-optuna-sweeper" not in message  # puffer's own plugin replaced it


def test_the_sweep_extra_options_are_the_ones_conf_asks_for():
    """Every option FROM_SWEEP_EXTRA names is a default of a puffer sweeper/launcher preset."""
    wanted = set()
    for preset in (config.CONF_DIR / "hydra").glob("*/*.yaml"):
        for entry in OmegaConf.load(preset).get("defaults", []):
            wanted.add(f"hydra/{preset.parent.name}/{entry}")
    assert set(config.FROM_SWEEP_EXTRA) <= wanted


def test_compose_inside_a_running_app_keeps_its_state():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        assert compose(["env=bandit"]).env.name == "bandit"
        assert GlobalHydra.instance().is_initialized()  # the outer context is untouched


def test_torch_threads_has_one_default():
    assert "torch_threads" not in OmegaConf.load(config.CONF_DIR / "config.yaml")
    assert compose([]).torch_threads == config.TrainConfig.torch_threads == 1


def test_each_group_checks_its_own_settings_once():
    """The vector and env groups validate in their owners, which the front end calls."""
    from puffer.envs.config import EnvConfig
    from puffer.vector import VectorConfig, make

    with pytest.raises(ValueError) as owner:
        VectorConfig(backend="multiprocessing", start_method="bogus").validate()
    with pytest.raises(ValueError) as maker:
        make("bandit", 2, backend="multiprocessing", start_method="bogus")
    assert str(owner.value) == f"vector.{maker.value}."  # one check, two callers
    with pytest.raises(ValueError, match="Did you mean 'cartpole'"):
        EnvConfig(name="cartpol").validate()
    VectorConfig(num_envs=4, num_workers=2).validate()  # a valid layout passes


def test_one_integer_check_for_every_owner():
    import puffer.envs
    import puffer.policy
    from puffer import checks, dist, vector
    from puffer.ppo import PPOConfig, Trainer

    vecenv = puffer.envs.make("bandit", 8)
    policy = puffer.policy.make(puffer.policy.PolicyConfig(), vecenv)

    assert checks.positive_int("n", 1e6) == 1_000_000  # whole floats (YAML's 1e6) pass
    for bad in (0, -1, True, "3", 2.5, float("nan"), None):
        with pytest.raises(ValueError, match=r"n=.*: must be a positive integer$"):
            checks.positive_int("n", bad)
    failures = {
        "ppo.horizon=0": lambda: PPOConfig(horizon=0).validate(8),
        "dist.nproc=0": lambda: dist.DistConfig(nproc=0).validate(8),
        "num_envs=0": lambda: vector.layout(0, parallel=False),
        "torch_threads=0": lambda: Trainer(PPOConfig(), vecenv, policy, torch_threads=0),
    }
    for prefix, fail in failures.items():
        with pytest.raises(ValueError, match=rf"^{prefix}: must be a positive integer"):
            fail()


def test_each_rank_s_share_of_rows_is_checked_whole():
    validate(compose(["env=reach", "dist.nproc=2", "vector.num_envs=8"]))
    validate(
        compose(
            ["vector=multiprocessing", "vector.num_envs=8", "vector.num_workers=2", "dist.nproc=2"]
        )
    )


def test_the_largest_seed_validates_and_seeds_a_trainer():
    import puffer.envs
    import puffer.policy as P
    from puffer.ppo import Trainer

    largest = 2**63 - 1
    validate(compose([f"seed={largest}"]))
    vecenv = puffer.envs.make("cartpole", num_envs=4, seed=largest)
    policy = P.make(P.PolicyConfig(hidden_sizes=[8]), vecenv, seed=largest)
    trainer = Trainer(PPOConfig(horizon=4, num_minibatches=1), vecenv, policy, seed=largest)
    trainer.rollout()
    trainer.update()
    trainer.close()
