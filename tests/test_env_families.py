"""Real envs of other libraries through the bridge: Atari (ale-py), MuJoCo, MiniGrid, PettingZoo.

Fast: each steps through ``puffer.vector`` with the right shapes and dtypes; ids written as
gymnasium accepts them (``module:Id``); wrappers from the config; clear errors, before any run
directory, for unsupported spaces and missing packages.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces as gs

import puffer.vector as V
from puffer import emulation
from puffer.emulation import EnvSettingError, GymnasiumEnv, PettingZooEnv, make_gymnasium
from puffer.emulation.atari import AtariEpisodes, make_atari
from puffer.emulation.gymnasium import check_id, check_wrappers, pip_command
from puffer.spaces import Box, Discrete

IMG_ONLY = [{"_target_": "minigrid.wrappers.ImgObsWrapper"}]


def steps(vec, n=20, seed=0):
    """Reset, then ``n`` random steps; the last step's outputs."""
    rng = np.random.default_rng(seed)
    out = vec.reset()
    for _ in range(n):
        out = vec.step(vec.single_action_space.sample_batch(vec.num_envs, rng))
    return out


# --- ids as gymnasium accepts them, and their errors -----------------------------------------------


@pytest.mark.parametrize(
    "env_id", ["ale_py:ALE/Pong-v5", "minigrid:MiniGrid-Empty-5x5-v0", "HalfCheetah-v5"]
)
def test_ids_gymnasium_accepts_are_accepted(env_id):
    check_id(env_id)
    wrappers = IMG_ONLY if env_id.startswith("minigrid") else []
    emulation.check({"name": "gymnasium", "id": env_id, "wrappers": wrappers})


def test_a_missing_package_is_named_with_the_pip_command():
    with pytest.raises(EnvSettingError, match=r"'no_such_pkg' is not installed.*pip install"):
        check_id("no_such_pkg:Thing-v0")
    gymnasium.register("PufferTestMissing-v0", entry_point="absent_sim_pkg.envs:Env")
    try:
        with pytest.raises(
            EnvSettingError, match=r"env.id=PufferTestMissing-v0: the package 'absent_sim_pkg'"
        ):
            check_id("PufferTestMissing-v0")
    finally:
        del gymnasium.registry["PufferTestMissing-v0"]
    assert pip_command("ale_py.env") == "pip install 'puffer[atari]'"
    assert pip_command("imageio") == "pip install 'puffer[mujoco]'"


def test_unknown_ids_get_a_hint():
    with pytest.raises(EnvSettingError, match="ale_py:ALE/NoSuchGame-v5"):
        check_id("ALE/NoSuchGame-v5")
    with pytest.raises(EnvSettingError, match="CartPole-v1"):
        check_id("CartPol-v1")


def test_wrappers_are_checked_and_applied_in_order():
    check_wrappers(IMG_ONLY)
    with pytest.raises(EnvSettingError, match=r"env.wrappers\[0\]._target_.*no_such_module"):
        check_wrappers([{"_target_": "no_such_module.Wrapper"}])
    with pytest.raises(EnvSettingError, match=r"env.wrappers\[0\] \(.*TimeLimit\).*bogus"):
        check_wrappers(
            [{"_target_": "gymnasium.wrappers.TimeLimit", "max_episode_steps": 5, "bogus": 1}]
        )
    with pytest.raises(EnvSettingError, match="each wrapper is a mapping with _target_"):
        check_wrappers(["gymnasium.wrappers.TimeLimit"])
    env = make_gymnasium(
        "CartPole-v1",
        [
            {"_target_": "gymnasium.wrappers.TimeLimit", "max_episode_steps": 3},
            {"_target_": "gymnasium.wrappers.TransformReward", "func": abs},
        ],
    )
    env.reset(seed=0)
    results = [env.step(0) for _ in range(3)]
    assert [r.truncated for r in results] == [False, False, True]  # the inner TimeLimit(3)


# --- MiniGrid: text spaces -------------------------------------------------------------------------


def test_minigrid_text_mission_is_refused_naming_the_key_and_the_wrapper():
    import minigrid  # noqa: F401  (registers the ids)

    with pytest.raises(EnvSettingError) as info:
        GymnasiumEnv(gymnasium.make("MiniGrid-Empty-5x5-v0"))
    text = str(info.value)
    assert "'mission'" in text and "minigrid.wrappers.ImgObsWrapper" in text
    assert "FilterObservation, filter_keys: [direction, image]" in text


def test_minigrid_trains_through_wrappers_from_the_command_line(run, helpers, tmp_path):
    proc = run(
        "puffer.train",
        *helpers.TINY,
        "env=gymnasium",
        "env.id=minigrid:MiniGrid-Empty-5x5-v0",
        "env.wrappers=[{_target_:minigrid.wrappers.ImgObsWrapper}]",
        "logger=none",
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = helpers.only_run(tmp_path)
    assert run_dir.parent.name == "MiniGrid-Empty-5x5-v0"  # no module: prefix in the path
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("no_such_pkg:Thing-v0", "'no_such_pkg' is not installed"),
        ("minigrid:MiniGrid-Empty-5x5-v0", "key 'mission' (a MissionSpace) cannot be stored"),
    ],
)
def test_bad_envs_fail_before_any_run_dir(run, tmp_path, env_id, message):
    proc = run("puffer.train", "env=gymnasium", f"env.id={env_id}")
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback (most recent" not in proc.stderr
    assert not list(tmp_path.glob("outputs/*"))


def test_minigrid_image_observations_stay_uint8():
    creator = functools.partial(make_gymnasium, "minigrid:MiniGrid-Empty-5x5-v0", IMG_ONLY)
    with V.make(creator, 4, seed=0) as vec:
        obs = steps(vec)[0]
        assert obs.shape == (4, 7, 7, 3) and obs.dtype == np.uint8
        assert vec.single_action_space == Discrete(7)


# --- Atari ------------------------------------------------------------------------------------------


def test_atari_observations_are_uint8_4x84x84_through_worker_processes():
    creator = functools.partial(make_atari, "Breakout")
    with V.make(creator, 2, "multiprocessing", num_workers=2, seed=0) as vec:
        assert vec.single_observation_space == Box(0, 255, (4, 84, 84), np.uint8)
        assert vec.single_action_space == Discrete(4)
        obs, rewards, *_ = steps(vec, 30)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8 and obs.any()
        assert np.isin(rewards, (-1.0, 0.0, 1.0)).all()


def test_atari_lives_end_training_episodes_and_whole_games_are_reported():
    env = make_atari("Breakout", training=True)
    assert isinstance(env, AtariEpisodes)
    _obs, info = env.reset(seed=3)
    lives, rng = info["lives"], np.random.default_rng(0)
    life_ends, games = 0, []
    while not games:
        r = env.step(int(rng.integers(4)))
        if r.terminated or r.truncated:
            if "episode_return" in r.info:
                games.append((r.info["episode_return"], r.info["episode_length"]))
            else:
                life_ends += 1  # a lost life: the game goes on from the same frame
                np.testing.assert_array_equal(env.reset()[0], r.observation)
                continue
            env.reset()
    assert life_ends == lives - 1  # every life but the last ended an episode for the learner
    assert games[0][1] > life_ends


def test_atari_eval_keeps_lives_and_raw_rewards():
    env = make_atari("Breakout", training=False)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    while True:
        r = env.step(int(rng.integers(4)))
        if r.terminated or r.truncated:
            break
    assert "episode_return" in r.info  # one episode is the whole game


# --- MuJoCo -----------------------------------------------------------------------------------------


def test_mujoco_steps_with_continuous_actions():
    creator, kwargs = emulation.creator({"name": "mujoco", "id": "HalfCheetah-v5"})
    with V.make(creator, 2, seed=0, env_kwargs=kwargs) as vec:
        assert vec.single_observation_space.shape == (17,)
        assert vec.single_action_space == Box(-1.0, 1.0, (6,), np.float32)
        obs, rewards, *_ = steps(vec)
        assert obs.dtype == np.float32 and np.isfinite(obs).all() and rewards.any()


def test_mujoco_renders_frames_on_a_machine_without_a_display(helpers):
    """gymnasium's default GL backend (GLFW) cannot render without a display; puffer picks EGL
    there unless MUJOCO_GL is set (what `puffer.eval video=true` needs on a server)."""
    env = {k: v for k, v in helpers.clean_env().items() if k not in ("DISPLAY", "MUJOCO_GL")}
    script = (
        "from puffer.emulation import make_gymnasium\n"
        "env = make_gymnasium('InvertedPendulum-v5', [], render_mode='rgb_array')\n"
        "env.reset(seed=0)\n"
        "print(env.render().shape)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["(480,", "480,", "3)"]


# --- PettingZoo -------------------------------------------------------------------------------------


class Relay:
    """A Parallel env of 3 agents: ``late`` joins at step 2; ``quick`` finishes at step 2, the others
    at step 4 (``slow`` truncated). Observations are the step count; rewards 1 per step."""

    metadata = {"name": "relay"}  # noqa: RUF012

    def __init__(self):
        from pettingzoo.utils.env import ParallelEnv

        self.__class__ = type("Relay", (Relay, ParallelEnv), {})
        self.possible_agents = ["quick", "slow", "late"]

    def observation_space(self, agent):
        return gs.Box(0, 10, (1,), np.float32)

    def action_space(self, agent):
        return gs.MultiBinary(2)

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = ["quick", "slow"]
        return {a: np.float32([0]) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        assert all(a.shape == (2,) and a.dtype == np.int8 for a in actions.values())
        self.t += 1
        live = list(self.agents)
        obs = {a: np.float32([self.t]) for a in live}
        rew = {a: 1.0 for a in live}
        term = {a: (a == "quick" and self.t == 2) or (a == "late" and self.t == 4) for a in live}
        trunc = {a: a == "slow" and self.t == 4 for a in live}
        self.agents = [a for a in live if not (term[a] or trunc[a])]
        if self.t == 2:
            self.agents.append("late")
        return obs, rew, term, trunc, {a: {} for a in live}


def test_pettingzoo_rows_masks_and_per_agent_statistics():
    env = PettingZooEnv(Relay())
    assert env.num_envs == 3 and env.single_action_space.shape == (2,)  # MultiBinary(2)
    _obs, _ = env.reset(seed=0)
    assert env.masks.tolist() == [True, True, False]  # late is not there yet
    acts = np.ones((3, 2), np.int8)
    _, rew, term, trunc, infos = env.step(acts)
    assert rew.tolist() == [1, 1, 0] and infos == {}
    _, rew, term, trunc, infos = env.step(acts)  # quick ends; late joins
    assert term.tolist() == [True, False, False] and env.final_observations[0, 0] == 2
    assert env.masks.tolist() == [False, True, True] and env.observations[0, 0] == 0
    assert infos["quick/episode_return"].tolist() == [2.0]
    assert infos["episode_length"].tolist() == [2]
    env.step(acts)
    _, rew, term, trunc, infos = env.step(acts)  # slow truncated, late terminated: all done
    assert rew.tolist() == [0, 1, 1] and term.tolist() == [False, False, True]
    assert trunc.tolist() == [False, True, False]
    assert infos["slow/episode_return"].tolist() == [4.0]
    assert infos["late/episode_return"].tolist() == [2.0]
    assert env.masks.tolist() == [True, True, False]  # auto-reset: a new episode began
    assert env.observations[:2, 0].tolist() == [0, 0]


def test_pettingzoo_envs_vectorize_one_row_per_agent(tmp_path):
    creator, kwargs = emulation.creator(
        {"name": "pettingzoo", "creator": "pettingzoo.classic.rps_v2:parallel_env"}
    )
    with V.make(creator, 4, "multiprocessing", num_workers=2, seed=0, env_kwargs=kwargs) as vec:
        assert vec.single_observation_space == Box(0.0, 3.0, (1,), np.float32)  # Discrete(4)
        obs, *_ = steps(vec, 40)
        assert vec.masks.all() and obs.shape == (4, 1)
    with pytest.raises(EnvSettingError, match=r"env=pettingzoo needs env\.creator"):
        emulation.check({"name": "pettingzoo", "creator": None})


def test_pettingzoo_aec_envs_are_converted_to_parallel():
    from pettingzoo.classic import rps_v2

    env = PettingZooEnv(rps_v2.env())  # the AEC form
    assert env.agents == ["player_0", "player_1"]
    env.reset(seed=1)
    _, rewards, *_ = env.step(np.array([0, 1]))  # rock vs paper
    assert rewards.tolist() == [-1.0, 1.0]


def test_float64_observations_become_float32_and_envs_with_lambdas_still_checkpoint():
    env = make_gymnasium(
        "InvertedPendulum-v5", [{"_target_": "gymnasium.wrappers.TransformReward", "func": abs}]
    )
    assert env.env.observation_space.dtype == np.float64
    assert env.observation_space.dtype == np.float32 and env.reset(seed=0)[0].dtype == np.float32
    creator = functools.partial(
        make_gymnasium,
        "CartPole-v1",
        [{"_target_": "gymnasium.wrappers.TransformObservation", "func": lambda o: o,
          "observation_space": None}],
    )  # fmt: skip
    with V.make(creator, 2, seed=0) as vec:
        vec.reset()
        with pytest.raises(NotImplementedError, match="cannot pickle the one-agent env"):
            vec.state()  # the trainer then checkpoints without the env state
