"""Built-in env rules pinned by hand-computed values: cartpole's termination bounds row by row,
bandit, squared and memory rewards (see each env's module docstring for the rules)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from puffer.env import EnvClosedError
from puffer.envs.cartpole import (
    TAU,
    THETA_THRESHOLD,
    X_THRESHOLD,
    CartPole,
    CartPoleVec,
    render_rgb,
    render_text,
    spaces,
)
from puffer.spaces import Box, Discrete


def set_rows(env: CartPoleVec, states: list[tuple[float, float, float, float]]) -> None:
    """Put row ``i`` of ``env`` in physical state ``states[i]`` (x, x_dot, theta, theta_dot)."""
    env.physics[:] = np.array(states, dtype=np.float64).T
    env.observations[:] = np.array(states, dtype=np.float32)


def test_cartpole_only_the_row_that_left_the_track_terminates():
    env = CartPoleVec(5, seed=0)
    env.reset()
    set_rows(
        env,
        [
            (0.0, 0.0, 0.0, 0.0),  # stays
            (2.39, 2.0, 0.0, 0.0),  # leaves right: x = 2.39 + 0.02 * 2 = 2.43
            (-2.39, -2.0, 0.0, 0.0),  # leaves left
            (X_THRESHOLD, 0.0, 0.0, 0.0),  # exactly on the bound: still on the track
            (0.0, 0.0, THETA_THRESHOLD, 0.0),  # exactly at the angle bound: still up
        ],
    )
    # push so that rows 3 and 4 keep x and theta for one step (the force moves only velocities)
    obs, rew, term, trunc, infos = env.step(np.array([1, 1, 0, 1, 1]))
    assert term.tolist() == [False, True, True, False, False]
    assert not trunc.any()
    np.testing.assert_allclose(env.final_observations[1, 0], 2.39 + TAU * 2.0, rtol=1e-6)
    np.testing.assert_allclose(env.final_observations[2, 0], -2.39 - TAU * 2.0, rtol=1e-6)
    assert (np.abs(obs[1:3]) <= 0.05).all()  # the ended rows started new episodes
    assert obs[3, 0] == np.float32(X_THRESHOLD) and obs[4, 2] == np.float32(THETA_THRESHOLD)
    assert infos["episode_length"].tolist() == [1, 1]
    assert rew.tolist() == [1.0] * 5


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cartpole_pole_past_the_angle_bound_terminates_that_row_only(sign):
    env = CartPoleVec(3, seed=0)
    env.reset()
    theta = sign * (THETA_THRESHOLD - 0.001)
    set_rows(env, [(0.0, 0.0, 0.0, 0.0), (0.0, 0.0, theta, sign * 1.0), (0.0, 0.0, 0.0, 0.0)])
    env.step(np.array([0, 0, 0]))
    assert env.terminals.tolist() == [False, True, False]
    assert math.isclose(env.final_observations[1, 2], theta + TAU * sign, rel_tol=1e-6)


# -- the one-agent CartPole, continuous forces and the drawings --------------------------------


@pytest.mark.parametrize(
    ("state", "terminated"),
    [
        ((X_THRESHOLD, 0.0, 0.0, 0.0), False),  # exactly on a bound: still on the track (gymnasium)
        ((-X_THRESHOLD, 0.0, 0.0, 0.0), False),
        ((0.0, 0.0, THETA_THRESHOLD, 0.0), False),
        ((0.0, 0.0, -THETA_THRESHOLD, 0.0), False),
        ((X_THRESHOLD, 0.5, 0.0, 0.0), True),  # x = 2.4 + 0.02 * 0.5
        ((-X_THRESHOLD, -0.5, 0.0, 0.0), True),
        ((0.0, 0.0, -THETA_THRESHOLD, -0.5), True),
    ],
)
def test_one_agent_cartpole_terminates_strictly_past_the_bounds(state, terminated):
    env = CartPole(seed=0)
    env.reset()
    env.state = state  # the force changes only the velocities in this step (explicit Euler)
    result = env.step(1)
    assert result.terminated is terminated
    assert result.observation[0] == np.float32(state[0] + TAU * state[1])


@pytest.mark.parametrize("action", [-1.0, -0.25, 0.5, 1.0])
def test_continuous_cartpole_pushes_with_ten_newtons_per_unit_of_action(action):
    # From rest, theta = 0 (Florian 2005 with gymnasium's constants): temp = F / 1.1,
    # thetaacc = -temp / (0.5 * (4/3 - 0.1 / 1.1)), xacc = temp - 0.05 * thetaacc / 1.1.
    force = 10.0 * action
    temp = force / 1.1
    thetaacc = -temp / (0.5 * (4.0 / 3.0 - 0.1 / 1.1))
    xacc = temp - 0.05 * thetaacc / 1.1
    want = [0.0, TAU * xacc, 0.0, TAU * thetaacc]
    vec = CartPoleVec(2, continuous=True, seed=0)
    vec.reset()
    set_rows(vec, [(0.0, 0.0, 0.0, 0.0)] * 2)
    vec.step(np.array([[action], [0.0]], np.float32))
    np.testing.assert_allclose(vec.physics[:, 0], want, rtol=1e-12, atol=1e-15)
    assert vec.physics[:, 1].tolist() == [0.0, 0.0, 0.0, 0.0]  # no force, no motion
    one = CartPole(continuous=True, seed=0)
    one.reset()
    one.state = (0.0, 0.0, 0.0, 0.0)
    one.step(np.array([action], np.float32))
    np.testing.assert_allclose(one.state, want, rtol=1e-12, atol=1e-15)


def test_cartpole_spaces_are_float32_and_a_unit_box_when_continuous():
    obs, act = spaces(continuous=True)
    assert obs.dtype == np.float32 and act.dtype == np.float32 and act.shape == (1,)
    assert (act.low == -1.0).all() and (act.high == 1.0).all()
    high = np.array([2 * X_THRESHOLD, np.inf, 2 * THETA_THRESHOLD, np.inf], np.float32)
    np.testing.assert_array_equal(obs.high, high)
    np.testing.assert_array_equal(obs.low, -high)


def _text(rows: dict[int, str], width: int = 61) -> list[str]:
    """A 9-row text drawing: ``rows[i]`` (spaces elsewhere), row 8 the track."""
    return [rows.get(i, " " * width) for i in range(8)] + ["=" * width]


def test_text_drawing_of_an_upright_pole_in_the_middle():
    pole = " " * 30 + "|" + " " * 30
    want = _text({0: " " * 30 + "o" + " " * 30, **dict.fromkeys(range(1, 7), pole)})
    want[7] = " " * 28 + "#####" + " " * 28  # the cart: 5 columns around column 30 = 2.4 * 12.5
    assert render_text(0.0, 0.0) == "\n".join(want) + "\nx=+0.00  theta=+0.0 deg"


@pytest.mark.parametrize(
    ("theta", "lean", "first", "tip"), [(0.3, "/", 31, 34), (-0.3, "\\", 29, 26)]
)
def test_text_drawing_of_a_leaning_pole(theta, lean, first, tip):
    # segment i at column 30 + round(2 i sin theta), row 7 - round(i cos theta): i = 1 -> row 6,
    # i = 7 (the tip) -> 30 +- round(4.14) and row 7 - round(6.69) = 0
    rows = render_text(theta, theta).splitlines()
    cx = round((theta + 2.4) * 12.5)  # the cart moved with x = theta
    first, tip = first + cx - 30, tip + cx - 30
    assert rows[6][first] == lean and rows[0][tip] == "o"
    assert (
        rows[0].strip() == "o"
        and rows[-1] == f"x={theta:+.2f}  theta={math.degrees(theta):+.1f} deg"
    )


@pytest.mark.parametrize(("x", "cart"), [(10.0, " " * 58 + "###"), (-10.0, "###" + " " * 58)])
def test_text_drawing_clamps_the_cart_to_the_track(x, cart):
    rows = render_text(x, 0.0).splitlines()
    assert rows[7] == cart and rows[8] == "=" * 61 and rows[9].startswith(f"x={x:+.2f}")


POLE = [202, 152, 101]


def test_image_of_an_upright_pole_in_the_middle():
    # 600 x 400, 125 px per metre: track row 300, cart rows 285-314 and columns 275-324, pole 10 px
    # wide (columns 295-304) from row 293 up to row 293 - 125 = 168.
    img = render_rgb(0.0, 0.0)
    assert img.shape == (400, 600, 3) and img.dtype == np.uint8
    assert (img[300] == 0).all()
    assert (img[294:315, 275:325] == 0).all() and (img[285:294, 275:295] == 0).all()
    white = img[[284, 315, 290, 290], [275, 275, 274, 325]]
    assert (white == 255).all()
    assert (img[168:294, 295:305] == POLE).all()
    assert (img[168:285, [294, 305]] == 255).all() and (img[167, 295:305] == 255).all()


def test_image_of_a_leaning_pole_and_of_carts_at_the_edges():
    tip = render_rgb(0.0, 0.3)  # the tip at column 300 + 125 sin 0.3, row 293 - 125 cos 0.3
    assert tip[int(293 - 125 * math.cos(0.3)), int(300 + 125 * math.sin(0.3))].tolist() == POLE
    left = render_rgb(-X_THRESHOLD, 0.0)  # cart centre at column 0: only its right half shows
    assert (left[285:315, 5:25] == 0).all() and (left[301:315, 25:40] == 255).all()
    assert (left[168:294, 0:5] == POLE).all()
    gone = render_rgb(3.0, 0.0)  # off the image: nothing but the track
    rows = np.delete(gone, 300, axis=0)
    assert (rows == 255).all() and (gone[300] == 0).all()


@pytest.mark.parametrize("one_agent", [False, True])
def test_render_draws_x_and_theta_in_the_chosen_mode(one_agent):
    state = (1.2, -3.0, 0.1, 4.0)  # x, x_dot, theta, theta_dot: only x and theta are drawn
    for mode, draw in (("ansi", render_text), ("rgb_array", render_rgb)):
        if one_agent:
            env = CartPole(render_mode=mode, seed=0)
            env.reset()
            env.state = state
        else:
            env = CartPoleVec(2, render_mode=mode, seed=0)
            env.reset()
            set_rows(env, [(0.0, 0.0, 0.0, 0.0), state])
        drawn = env.render() if one_agent else env.render(1)
        np.testing.assert_array_equal(drawn, draw(1.2, 0.1))
        if not one_agent:  # row 0 by default
            np.testing.assert_array_equal(env.render(), draw(0.0, 0.0))
    assert CartPole().render_mode == CartPoleVec().render_mode == "ansi"
    assert CartPole().render() == render_text(0.0, 0.0)  # before reset(): at rest, upright


def test_constructor_defaults_and_the_seeded_stream():
    vec = CartPoleVec()
    assert vec.num_envs == 1 and vec.state()["steps"].dtype == np.int64
    # reset() without a seed draws from the stream the env was made with
    first = [CartPole(seed=3).reset()[0] for _ in range(2)]
    np.testing.assert_array_equal(*first)
    expected = np.random.default_rng(3).uniform(-0.05, 0.05, size=4).astype(np.float32)
    np.testing.assert_array_equal(first[0], expected)


def test_text_drawing_at_the_edges_and_of_a_fallen_pole():
    left = render_text(-X_THRESHOLD, 0.0).splitlines()  # the cart at column 0: the pole too
    assert all(left[r][0] == "|" for r in range(1, 7)) and left[0][0] == "o"
    assert render_text(-X_THRESHOLD, -1.0).splitlines()[0].rstrip() == ""  # off the left edge
    right = render_text(X_THRESHOLD, 0.3).splitlines()  # column 60 + 1 is off the right edge
    assert right[6][-1] != "/" and right[7][-3:] == "###"
    # theta = 1.5: cos = 0.07, so segment 1 sits on the cart's row (7): not drawn, the cart stays;
    # theta = 1.0: segment i at row 7 - round(0.54 i), column 30 + round(1.68 i)
    flat = render_text(0.0, 1.5).splitlines()
    assert flat[7] == " " * 28 + "#####" + " " * 28
    assert not "".join(flat[:7]).strip()  # all 7 segments round onto row 7; an 8th would not
    assert render_text(0.0, 1.0).splitlines()[3][42] == "o"  # i = 7: row 3, column 42
    assert render_text(0.0, 0.003).splitlines()[1][30] == "|"  # 0.003 rounds to upright


def test_image_edges():
    left = render_rgb(-X_THRESHOLD, 0.0)
    assert (left[294:315, 0] == 0).all()  # the cart's left half is cut at column 0
    gone = np.delete(render_rgb(-3.0, 0.0), 300, axis=0)  # entirely off the left edge
    assert (gone[:, 0] == 255).all()
    right = render_rgb(X_THRESHOLD, 0.0)  # centre on column 600: the left half and pole show
    assert (right[294:315, 575:600] == 0).all() and (right[168:294, 595:600] == POLE).all()
    lean = render_rgb(0.0, 0.3)  # the pole ends 125 px from its base: nothing above its tip
    assert not (lean[: int(293 - 125 * math.cos(0.3))] == POLE).all(-1).any()
    short = render_rgb(0.0, 0.0, width=600, height=160)  # track row 120: the pole leaves the top
    assert (short[0, 295:305] == POLE).all()
    down = render_rgb(0.0, math.pi)  # hanging down, past the bottom edge
    assert (down[399, 296:305] == POLE).all()


# -- squared ------------------------------------------------------------------------------------


def test_squared_targets_cover_every_cell_but_the_centre():
    from puffer.envs.squared import SquaredVec

    env = SquaredVec(2000, size=3, seed=0)
    env.reset()
    cells = set(zip(env.target[0].tolist(), env.target[1].tolist()))
    assert cells == {(x, y) for x in range(3) for y in range(3)} - {(1, 1)}


def test_squared_observation_and_walls_by_hand():
    from puffer.envs.squared import SquaredVec

    env = SquaredVec(2, size=5, seed=0)
    env.reset()
    env.pos[:] = [[0, 2], [4, 2]]  # row 0 at (0, 4): bottom-left corner; row 1 at (2, 2)
    env.target[:] = [[3, 2], [1, 0]]  # row 0's target (3, 1); row 1's (2, 0): straight up
    obs, rewards, terminals, _, _ = env.step(np.array([3, 1]))  # row 0 walks off the left edge
    assert terminals.tolist() == [True, False] and rewards.tolist() == [-1.0, 0.0]
    # row 1 after moving up to (2, 1): offset (0, -1) / 4, position (2, 1) * 2 / 4 - 1
    np.testing.assert_array_equal(obs[1], np.float32([0.0, -0.25, 0.0, -0.5]))
    np.testing.assert_array_equal(env.final_observations[0], np.float32([0.75, -0.75, -1.0, 1.0]))


# -- bandit ---------------------------------------------------------------------------------------


def test_bandit_render_shows_the_last_pull_and_its_reward():
    from puffer.envs.bandit import BanditVec

    env = BanditVec(2, num_arms=4, reward_scale=2.0, seed=0)
    env.reset()
    assert env.render() == "bandit [ ][ ][ ][ ]  last pull: none yet"
    other = (env.best_arm + 1) % 4
    env.step(np.array([env.best_arm, other]))
    marks = ["[ ]"] * 4
    marks[env.best_arm] = "[*]"
    assert env.render(0) == f"bandit {''.join(marks)}  last pull: arm {env.best_arm}, reward +2.00"
    assert env.render(1).endswith(f"last pull: arm {other}, reward +0.00")


def test_bandit_noise_is_standard_normal_times_reward_noise():
    from puffer.envs.bandit import BanditVec

    env = BanditVec(20_000, num_arms=2, reward_noise=0.5, seed=0)
    env.reset()
    _, rewards, terminals, _, infos = env.step(np.full(20_000, env.best_arm))
    assert terminals.all() and (infos["success"] == 1.0).all()
    assert abs(rewards.mean() - 1.0) < 0.02 and abs(rewards.std() - 0.5) < 0.01  # 4+ std errors


# -- memory and squared drawings ----------------------------------------------------------------


def test_memory_render_walks_cue_blanks_recall():
    from puffer.envs.memory import MemoryVec

    env = MemoryVec(1, length=2, seed=0)
    env.reset()
    cue = int(env.cue[0])
    assert env.render() == f"memory C..R  step 0: cue {cue:+d}: remember it\n       ^"
    env.step(np.array([0]))
    assert env.render() == "memory C..R  step 1: blank\n        ^"
    env.step(np.array([0]))
    env.step(np.array([0]))  # t = 3 = length + 1: the next step is the recall
    assert env.render(0) == (
        "memory C..R  step 3: recall: answer the cue (0 for -1, 1 for +1)\n          ^"
    )
    env.step(np.array([1]))  # the recall ends the episode: a new cue
    assert env.render().startswith("memory C..R  step 0: cue")


def test_squared_render_marks_agent_and_target():
    from puffer.envs.squared import SquaredVec

    env = SquaredVec(2, size=3, seed=0)
    env.reset()
    env.target[:, 1] = [2, 0]  # row 1's target: top right; its agent in the centre
    assert env.render(1) == ". . T\n. A .\n. . .\nstep 0/6  A=agent T=target"


# -- the constructors' contracts: spaces, defaults, dtypes, seeds, messages ----------------------

CONTRACTS = {  # env: (bad setting, its message, obs low/high/shape, actions, state dtypes)
    "bandit": (
        {"num_arms": 1},
        "BanditVec: num_arms=1 must be an int >= 2",
        (1.0, 1.0, (1,)),
        4,
        {"last_action": np.int64, "last_reward": np.float32},
    ),
    "squared": (
        {"size": 1},
        "SquaredVec: size=1 must be an int >= 2",
        (-1.0, 1.0, (4,)),
        5,
        {"pos": np.int64, "target": np.int64, "steps": np.int64},
    ),
    "memory": (
        {"length": -1},
        "MemoryVec: length=-1 must be an int >= 0",
        (-1.0, 1.0, (2,)),
        2,
        {"cue": np.int64, "t": np.int64},
    ),
}


def _classes(name: str):
    import importlib

    module = importlib.import_module(f"puffer.envs.{name}")
    title = name.capitalize()
    return getattr(module, f"{title}Vec"), getattr(module, title)


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_native_env_contract(name):
    vec_cls, _ = _classes(name)
    bad, message, (low, high, shape), actions, dtypes = CONTRACTS[name]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        vec_cls(**bad)
    env = vec_cls()
    assert env.num_envs == 1
    obs = env.single_observation_space
    assert obs.shape == shape and obs.dtype == np.float32
    assert (obs.low == low).all() and (obs.high == high).all()
    assert env.single_action_space.n == actions
    state = env.state()
    assert {k: state[k].dtype for k in dtypes} == {k: np.dtype(v) for k, v in dtypes.items()}
    assert state["episode_returns"].dtype == np.float32
    assert state["episode_lengths"].dtype == np.int64


NOISE = {"bandit": {"reward_noise": 1.0}}  # the bandit's only randomness


def _play(env, rows: int | None) -> list[np.ndarray]:
    """Observations and rewards of 60 random steps (reset without a seed: the env's stream)."""
    rng, seen = np.random.default_rng(0), []
    seen.append(np.asarray(env.reset()[0]).copy())
    for _ in range(60):
        space = env.single_action_space if rows else env.action_space
        action = space.sample_batch(rows, rng) if rows else space.sample(rng)
        result = env.step(action)
        seen += [np.asarray(result[0]).copy(), np.asarray(result[1], np.float64)]
        if not rows and (result[2] or result[3]):
            seen.append(np.asarray(env.reset()[0]).copy())
    return seen


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_native_env_seeds_reach_the_rows_and_the_one_agent_form(name):
    vec_cls, one_cls = _classes(name)
    kw = NOISE.get(name, {})
    for make, rows in (
        (lambda: one_cls(seed=3, **kw), None),
        (lambda: vec_cls(3, seed=3, **kw), 3),
    ):
        first, again = _play(make(), rows), _play(make(), rows)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    env = vec_cls(64, seed=3)
    env.reset()
    infos = {}
    while not infos:  # until episodes end (at most max_steps, length + 1 or 1 steps)
        infos = env.step(np.zeros(64, np.int64))[4]
    assert infos["success"].dtype == infos["episode_return"].dtype == np.float32


def test_native_env_details_the_contract_tests_leave_open():
    from puffer.envs.bandit import Bandit, BanditVec
    from puffer.envs.memory import MemoryVec
    from puffer.envs.squared import SquaredVec

    with pytest.raises(ValueError, match=r"^SquaredVec: max_steps=0 must be a positive int$"):
        SquaredVec(max_steps=0)
    one = Bandit(arm_seed=5, reward_scale=2.0)  # the one-agent form passes every setting on
    best = BanditVec(arm_seed=5).best_arm
    assert one.vec.best_arm == best
    one.reset()
    assert one.step(best).reward == 2.0
    squared = SquaredVec(2, size=3, seed=0)
    squared.reset()
    squared.target[:] = 0  # both targets top-left, out of reach this step
    squared.step(np.array([4, 2]))  # row 0 right to (2, 1), row 1 down to (1, 2): both stay on
    assert not squared.terminals.any()
    squared.step(np.array([4, 0]))  # row 0 walks off the right edge; row 1 waits
    assert squared.terminals.tolist() == [True, False]
    assert squared.render() == squared.render(0) != squared.render(1)
    memory = MemoryVec(1, length=2, seed=0)
    memory.reset()
    memory.step(np.array([0]))
    memory.step(np.array([0]))  # t = 2 = length: still a blank step
    assert memory.render() == "memory C..R  step 2: blank\n         ^"
    bandit = BanditVec(2, seed=0)
    bandit.reset()
    bandit.step(np.array([0, 1]))
    assert bandit.render() == bandit.render(0) != bandit.render(1)


def test_load_state_errors_name_the_env_and_the_call():
    env = CartPoleVec(2, seed=0)
    env.reset()
    state = env.state()
    with pytest.raises(ValueError, match=r"^CartPoleVec\.load_state: keys .* do not match"):
        env.load_state({**state, "extra": 0})
    with pytest.raises(ValueError, match=r"^CartPoleVec\.load_state: physics has shape"):
        env.load_state({**state, "physics": np.zeros((4, 3))})
    env.close()
    with pytest.raises(EnvClosedError, match=r"^CartPoleVec\.load_state\(\) called after close"):
        env.load_state(state)


# --- reach: the multi-agent grid (rules in puffer/envs/reach.py's docstring) ----------------------


def place(env, pos, target, masks=None):
    """Put agent row ``i`` at cell ``pos[i]`` = (x, y) with target ``target[i]``."""
    from puffer.envs.reach import ReachVec

    assert isinstance(env, ReachVec)
    env.pos[:] = np.array(pos).T
    env.target[:] = np.array(target).T
    env.masks[:] = True if masks is None else masks
    env.steps[:] = 0
    env._observe()


def test_reach_observation_is_target_offset_position_and_nearest_live_agent():
    from puffer.envs.reach import ReachVec

    env = ReachVec(4, num_agents=2, size=5, seed=0)
    env.reset()
    # Game 0: agents at (1, 1) and (4, 4). Game 1: agent 2 at (0, 0); agent 3 is done (masked).
    place(
        env,
        [(1, 1), (4, 4), (0, 0), (1, 0)],
        [(3, 0), (0, 4), (2, 2), (4, 4)],
        masks=[True, True, True, False],
    )
    q = 1 / 4  # 1 / (size - 1)
    expected = [
        [2 * q, -q, 1 * 2 * q - 1, 1 * 2 * q - 1, 3 * q, 3 * q],
        [-4 * q, 0, 1, 1, -3 * q, -3 * q],
        [2 * q, 2 * q, -1, -1, 0, 0],  # no other live agent in its game: offset 0
        [0, 0, 0, 0, 0, 0],  # masked rows see zeros
    ]
    np.testing.assert_allclose(env.observations, np.array(expected, np.float32))


def test_reach_nearest_agent_is_by_manhattan_distance_among_live_ones():
    from puffer.envs.reach import ReachVec

    env = ReachVec(3, num_agents=3, size=4, seed=0)
    env.reset()
    place(env, [(0, 0), (2, 0), (0, 3)], [(3, 3)] * 3)
    q = 1 / 3
    np.testing.assert_allclose(
        env.observations[:, 4:], [[2 * q, 0], [-2 * q, 0], [0, -3 * q]], rtol=1e-6
    )
    place(env, [(0, 0), (2, 0), (0, 3)], [(3, 3)] * 3, masks=[True, False, True])
    np.testing.assert_allclose(
        env.observations[:, 4:], [[0, 3 * q], [0, 0], [0, -3 * q]], rtol=1e-6
    )


def test_reach_moves_rewards_masks_truncation_and_the_game_restart():
    from puffer.envs.reach import ReachVec

    env = ReachVec(4, num_agents=2, size=4, max_steps=3, seed=0)
    env.reset()
    place(env, [(0, 0), (3, 3), (1, 1), (2, 2)], [(1, 0), (0, 0), (3, 3), (0, 3)])
    # right onto the target; down off the grid (ignored); game 1: noop and left
    obs, rew, term, trunc, infos = env.step(np.array([4, 2, 0, 3]))
    assert rew.tolist() == [1, 0, 0, 0] and term.tolist() == [True, False, False, False]
    assert not trunc.any() and env.masks.tolist() == [False, True, True, True]
    q = 1 / 3
    np.testing.assert_allclose(env.final_observations[0], [0, 0, -q, -1, 2 * q, 1], rtol=1e-6)
    assert (obs[0] == 0).all()  # masked until its game restarts
    np.testing.assert_allclose(obs[1], [-1, -1, 1, 1, 0, 0])  # its neighbour is gone
    assert {k: v.tolist() for k, v in infos.items()} == {
        "episode_return": [1.0],
        "episode_length": [1],
        "success": [1.0],
        "agent_0/episode_return": [1.0],
    }
    assert env.pos[:, 2:].T.tolist() == [[1, 1], [1, 2]]
    # the masked agent 0 does not move; agent 1 goes left, then up
    env.step(np.array([1, 3, 0, 0]))
    assert env.pos[:, :2].T.tolist() == [[1, 0], [2, 3]] and not env.rewards.any()
    _, rew, term, trunc, infos = env.step(np.array([0, 1, 0, 0]))
    # step 3 = max_steps: agents 1, 2 and 3 are truncated with reward 0
    assert rew.tolist() == [0, 0, 0, 0] and not term.any()
    assert trunc.tolist() == [False, True, True, True]
    assert {k: v.tolist() for k, v in infos.items()} == {
        "episode_return": [0.0, 0.0, 0.0],
        "episode_length": [3, 3, 3],
        "success": [0.0, 0.0, 0.0],
        "agent_1/episode_return": [0.0, 0.0],
        "agent_0/episode_return": [0.0],
    }
    np.testing.assert_allclose(env.final_observations[1], [-2 * q, -2 * q, q, q, 0, 0], rtol=1e-6)
    # every agent of both games is done: both games restarted on fresh cells
    assert env.masks.all() and (env.steps == 0).all()
    assert (env.episode_returns == 0).all() and (env.episode_lengths == 0).all()
    assert np.abs(env.observations).max() > 0


def test_reach_restarts_a_game_on_distinct_cells_with_targets_off_the_start():
    from puffer.envs.reach import ReachVec

    env = ReachVec(3 * 500, num_agents=3, size=2, seed=0)  # 3 agents on 4 cells
    env.reset()
    cells = (env.pos[1] * 2 + env.pos[0]).reshape(500, 3)
    goals = env.target[1] * 2 + env.target[0]
    assert all(len(set(game)) == 3 for game in cells.tolist())
    assert (goals != cells.ravel()).all()
    # every other cell is a target of some agent starting on each cell
    for start in range(4):
        assert set(goals[cells.ravel() == start].tolist()) == set(range(4)) - {start}
    assert env.masks.all() and (env.steps == 0).all()


def test_reach_only_restarts_games_whose_agents_are_all_done():
    from puffer.envs.reach import ReachVec

    env = ReachVec(4, num_agents=2, size=5, seed=0)
    env.reset()
    place(env, [(0, 0), (4, 4), (2, 2), (2, 3)], [(1, 0), (0, 4), (4, 0), (2, 4)])
    env.step(np.array([4, 0, 0, 2]))  # agent 0 and agent 3 reach their targets
    assert env.masks.tolist() == [False, True, True, False]
    assert env.pos.T.tolist() == [[1, 0], [4, 4], [2, 2], [2, 4]]  # nothing restarted


def test_reach_render_draws_the_game_of_a_row():
    from puffer.envs.reach import ReachVec

    env = ReachVec(4, num_agents=2, size=3, seed=0)
    env.reset()
    place(
        env,
        [(0, 0), (2, 1), (1, 1), (0, 2)],
        [(2, 2), (0, 1), (1, 0), (2, 0)],
        masks=[True, True, True, False],
    )
    assert env.render(1) == "0 . .\nb . 1\n. . a\ngame 0: digits = agents, letters = their targets"
    assert env.render(3) == ". a .\n. 0 .\n. . .\ngame 1: digits = agents, letters = their targets"
    assert env.render() == env.render(0)


def test_register_adds_an_env_spec(monkeypatch):
    from puffer import envs

    monkeypatch.setattr(envs, "_REGISTRY", dict(envs._REGISTRY))
    envs.register("corridor_q", CartPoleVec, CartPole, "a test env")
    spec = envs.spec("corridor_q")
    assert (spec.name, spec.vec, spec.one, spec.description) == (
        "corridor_q",
        CartPoleVec,
        CartPole,
        "a test env",
    )
    assert "corridor_q" in envs.names() and envs.names()["corridor_q"] == "a test env"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_agents": 0}, r"^ReachVec: num_agents=0 must be a positive int$"),
        ({"size": 1}, r"^ReachVec: size=1 must be an int >= 2$"),
        ({"num_agents": 4, "size": 2}, r"^ReachVec: num_agents=4 must be below size\*\*2$"),
        ({"max_steps": -1}, r"^ReachVec: max_steps=-1 must be a positive int$"),
        ({"num_envs": 0}, r"^ReachVec: num_envs=0 must be a positive int$"),
        (
            {"num_envs": 5, "num_agents": 2},
            r"^ReachVec: num_envs=5 rows must be a multiple of num_agents=2 \(one row per agent\)$",
        ),
    ],
)
def test_reach_settings_errors(kwargs, message):
    from puffer.envs.reach import ReachVec

    with pytest.raises(ValueError, match=message):
        ReachVec(**kwargs)


def test_reach_settings_and_spaces():
    from puffer.envs.reach import ReachVec

    env = ReachVec(6, num_agents=3, size=4)
    assert (env.num_agents, env.size, env.max_steps, env.games) == (3, 4, 8, 2)
    assert ReachVec(3, num_agents=3, size=2).num_agents == 3  # 3 agents on 4 cells is fine
    assert ReachVec(2, max_steps=5).max_steps == 5
    assert env.pos.shape == env.target.shape == (2, 6) and env.steps.shape == (6,)
    assert env.single_observation_space == Box(-1.0, 1.0, shape=(6,), dtype=np.float32)
    assert env.single_action_space == Discrete(5)
    assert ReachVec.rows_per_env(num_agents=4) == 4 and ReachVec.rows_per_env() == 2
    env.reset(seed=0)
    env.masks[:] = False
    env.reset()
    assert env.masks.all()  # a reset starts every agent again


def test_registry_messages_and_defaults():
    from puffer import envs

    built_in = "Built-in envs: bandit, cartpole, memory, reach, squared"
    with pytest.raises(
        KeyError, match=rf"^\"unknown env 'cartpol'. Did you mean 'cartpole'\? {built_in}\"$"
    ):
        envs.spec("cartpol")
    with pytest.raises(KeyError, match=rf"^\"unknown env 'zzz'. {built_in}\"$"):
        envs.spec("zzz")
    message = (
        "env 'reach' is multi-agent and has no one-agent form: use puffer.envs.make('reach', "
        "num_envs=...) (one row per agent)"
    )
    with pytest.raises(TypeError, match=rf"^{re.escape(message)}$"):
        envs.make_one("reach")
    assert envs.make("cartpole").num_envs == 1
    assert envs.spec("cartpole").rows_per_env() == 1  # a one-agent env has no rows_per_env
    assert envs.spec("reach").rows_per_env(num_agents=3) == 3


def test_reach_restarts_a_finished_game_while_the_other_plays_on():
    from puffer.envs.reach import ReachVec

    env = ReachVec(4, num_agents=2, size=5, seed=0)
    env.reset()
    place(env, [(0, 0), (4, 4), (2, 2), (0, 4)], [(1, 0), (4, 3), (4, 0), (4, 4)])
    _, _, term, _, infos = env.step(np.array([4, 1, 0, 0]))  # both agents of game 0 arrive
    assert term.tolist() == [True, True, False, False]
    assert infos["success"].dtype == np.float32 and infos["success"].tolist() == [1.0, 1.0]
    assert env.masks.all() and env.steps.tolist() == [0, 0, 1, 1]  # game 0 began again
    assert env.pos[:, 2:].T.tolist() == [[2, 2], [0, 4]]  # game 1 untouched
    assert env.steps.dtype == np.int64


def test_reach_defaults_and_its_seed():
    from puffer.envs.reach import ReachVec

    env = ReachVec()
    assert (env.num_envs, env.num_agents, env.size, env.max_steps) == (2, 2, 5, 10)
    first, again, other = ReachVec(4, seed=5), ReachVec(4, seed=5), ReachVec(4, seed=6)
    starts = [e.reset()[0].tolist() for e in (first, again, other)]
    assert starts[0] == starts[1] != starts[2]


def test_a_registered_vec_without_rows_per_env_takes_one_row(monkeypatch):
    from puffer import envs

    monkeypatch.setattr(envs, "_REGISTRY", dict(envs._REGISTRY))
    envs.register("plain_q", lambda num_envs=1, **kw: None, None, "a plain factory")
    assert envs.spec("plain_q").rows_per_env() == 1


def test_reach_renders_the_first_game_by_default():
    from puffer.envs.reach import ReachVec

    env = ReachVec(2, num_agents=1, size=4, seed=0)
    env.reset()
    place(env, [(0, 0), (3, 3)], [(1, 0), (0, 3)])
    assert env.render() == env.render(0) != env.render(1)


def test_reach_writes_into_the_buffers_it_is_given():
    from puffer.env import Buffers
    from puffer.envs.reach import ReachVec

    probe = ReachVec(4)
    buffers = Buffers.allocate(probe.single_observation_space, probe.single_action_space, 4)
    env = ReachVec(4, buffers=buffers, seed=0)
    obs, *_ = env.reset()
    assert env.observations is buffers.observations and np.shares_memory(obs, buffers.observations)
    assert buffers.observations.any() and env.masks is buffers.masks
