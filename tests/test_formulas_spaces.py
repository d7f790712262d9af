"""Spaces: the exact error messages, seeding rules and equality that callers rely on, each
compared with a value written out in the test."""

from __future__ import annotations

import numpy as np
import pytest

from puffer.spaces import Box, Dict, Discrete, MultiDiscrete, Tuple


def message(fn, *args) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args)
    return str(info.value)


def test_discrete_and_multidiscrete_messages_name_where_and_what():
    assert message(Discrete(3).check, np.int64(5)) == (
        "action: value 5 out of range; expected a value of Discrete(3), got np.int64(5) (int64)"
    )
    md = MultiDiscrete([2, 3])
    assert message(md.check, np.array([1, 3])) == (
        "action: value 3 out of range at index (1,); expected a value of MultiDiscrete([2, 3]), "
        "got ndarray(shape=(2,), dtype=int64) [1 3]"
    )
    assert message(md.check_batch, np.array([[0, 0], [2, 0]]), 2).startswith(
        "actions: value 2 out of range in row 1 at index (0,); expected a value of "
        "MultiDiscrete([2, 3]), got ndarray(shape=(2, 2)"
    )


def test_box_out_of_range_suggests_clip_action_and_others_do_not():
    box = Box(-1.0, 1.0, shape=(2,))
    assert message(box.check, np.array([0.0, 2.0], np.float32)) == (
        "action: value 2.0 out of range at index (1,) (wrap the env in puffer.wrappers.ClipAction "
        "to clip actions instead); expected a value of Box(-1, 1, (2,), float32), got "
        "ndarray(shape=(2,), dtype=float32) [0. 2.]"
    )
    assert "ClipAction" not in message(Discrete(2).check, np.int64(2))
    assert "(0,); expected" in message(MultiDiscrete([2]).check, np.array([2]))


def test_dict_and_tuple_messages_name_the_path():
    d = Dict(a=Discrete(2), b=Box(0.0, 1.0, shape=(1,)))
    bad = {"a": np.int64(0), "b": np.array([3.0], np.float32)}
    assert message(d.check, bad).startswith("action['b']: value 3.0 out of range")
    assert message(d.check, {"a": 0}) == (
        "action: expected a dict with keys ['a', 'b']; expected a value of "
        "Dict(a: Discrete(2), b: Box(0, 1, (1,), float32)), got {'a': 0} (dict)"
    )
    batch = {"a": np.array([0, 2]), "b": np.zeros((2, 1), np.float32)}
    assert message(d.check_batch, batch, 2).startswith(
        "actions['a']: value 2 out of range in row 1;"
    )
    assert message(d.check_batch, [1, 2], 2).startswith(
        "actions: expected a dict with keys ['a', 'b']; expected a value of Dict("
    )
    assert message(d.check_batch, [1, 2], 2).endswith("got [1, 2] (list)")
    t = Tuple([Discrete(2), Discrete(3)])
    assert message(t.check, (0, 3)).startswith("action[1]: value 3 out of range")
    assert message(t.check, (0,)) == (
        "action: expected a tuple of 2 values; expected a value of Tuple(Discrete(2), "
        "Discrete(3)), got (0,) (tuple)"
    )
    assert message(t.check_batch, (np.array([0, 1]), np.array([0, 3])), 2).startswith(
        "actions[1]: value 3 out of range in row 1;"
    )
    assert message(t.check_batch, (np.array([0, 1]),), 2) == (
        "actions: expected a tuple of 2 batches; expected a value of Tuple(Discrete(2), "
        "Discrete(3)), got (array([0, 1]),) (tuple)"
    )
    with pytest.raises(ValueError, match=r"^Dict: needs at least one subspace$"):
        Dict({})


def test_multidiscrete_equality_compares_nvec():
    assert MultiDiscrete([2, 3]) == MultiDiscrete([2, 3])
    assert MultiDiscrete([2, 3]) != MultiDiscrete([2, 4])
    assert MultiDiscrete([2]) != Discrete(2)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_composite_seed_gives_subspace_i_seed_plus_i(kind):
    subs = [Discrete(1000), Discrete(1000), Discrete(1000)]
    space = Dict(a=subs[0], b=subs[1], c=subs[2]) if kind == "dict" else Tuple(subs)
    space.seed(7)
    draws = list(space.sample().values()) if kind == "dict" else list(space.sample())
    expected = [Discrete(1000, seed=7 + i).sample() for i in range(3)]
    assert draws == expected
    space.seed(None)  # unseeded: fresh entropy, and no error
    space.seed()


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_composite_sample_batch_uses_the_given_generator(kind):
    subs = [Discrete(1000), Box(0.0, 1.0, shape=(2,))]
    space = Dict(a=subs[0], b=subs[1]) if kind == "dict" else Tuple(subs)
    one = space.sample_batch(4, np.random.default_rng(3))
    two = space.sample_batch(4, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    expected = [subs[0].sample_batch(4, rng), subs[1].sample_batch(4, rng)]
    for got in (one, two):
        parts = list(got.values()) if kind == "dict" else list(got)
        for p, e in zip(parts, expected):
            np.testing.assert_array_equal(p, e)


def test_tuple_repr():
    assert (
        repr(Tuple([Discrete(2), MultiDiscrete([3])])) == "Tuple(Discrete(2), MultiDiscrete([3]))"
    )
