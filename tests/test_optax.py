"""gradcore.optax against optax's own transforms (the independent reference): optax's test
inputs, random nested trees (hypothesis), inside and outside jax.jit, under vmap, chained
with an optimiser; None entries, tuples, namedtuples and dicts kept; dtypes kept; the one
intended difference (float32 norms that overflow in optax); errors naming the argument."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trees import Pair, arrays, trees

jax = jnp = optax = gco = None
PARAMS = UPDATES = None

F32_RTOL = 1e-5  # optax sums float32 in float32; gradcore's norms are exactly rounded


@pytest.fixture(autouse=True, scope="module")
def _jax_and_optax():
    """JAX is imported when this module's first test runs, not when pytest collects it:
    JAX starts threads, and tests/test_concurrency.py forks."""
    global jax, jnp, optax, gco, PARAMS, UPDATES
    jax = pytest.importorskip("jax", reason="jax is not installed: no optax tests")
    optax = pytest.importorskip("optax", reason="optax is not installed: no optax tests")
    import jax.numpy
    import gradcore.optax

    jnp, gco = jax.numpy, gradcore.optax
    # optax's _clipping_test.py inputs
    PARAMS = (jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))
    UPDATES = (jnp.array([500.0, 5.0]), jnp.array([300.0, 3.0]))


def pairs(max_norm=1.0, max_delta=0.5, clipping=0.05):
    return [(gco.clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)),
            (gco.clip(max_delta), optax.clip(max_delta)),
            (gco.adaptive_grad_clip(clipping), optax.adaptive_grad_clip(clipping))]


def assert_trees_close(got, expected, rtol=F32_RTOL):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
    for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        assert isinstance(g, jax.Array) and g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=rtol, atol=0)


def to_jax(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)


def test_optax_test_inputs_clip_by_global_norm():
    for i in range(1, 51):
        ours, _ = gco.clip_by_global_norm(1.0 / i).update(UPDATES, None)
        theirs, _ = optax.clip_by_global_norm(1.0 / i).update(UPDATES, None)
        assert_trees_close(ours, theirs)
        assert math.isclose(float(optax.tree.norm(ours)), 1.0 / i, rel_tol=1e-6)
    unchanged, _ = gco.clip_by_global_norm(1e6).update(UPDATES, None)
    assert all(np.array_equal(a, b) for a, b in zip(unchanged, UPDATES))


def test_optax_test_inputs_clip_is_bit_for_bit():
    special = (jnp.array([500.0, -5.0, jnp.nan, -jnp.inf]), jnp.array([0.25, -0.0, jnp.inf, 1.0]))
    for delta in (1e6, 1.0, 0.3, 0.0):
        for tree in (UPDATES, special):
            ours, _ = gco.clip(delta).update(tree, None)
            theirs, _ = optax.clip(delta).update(tree, None)
            for a, b in zip(ours, theirs):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_optax_test_inputs_adaptive_grad_clip():
    for i in range(1, 51):
        ours, _ = gco.adaptive_grad_clip(1.0 / i).update(UPDATES, None, PARAMS)
        theirs, _ = optax.adaptive_grad_clip(1.0 / i).update(UPDATES, None, PARAMS)
        assert_trees_close(ours, theirs)
    conv3d = (jnp.ones((2, 2, 2, 3, 4)) * 2.0, jnp.ones((2, 2, 2, 3, 4)))
    linear = (jnp.ones((5, 6)) * 3.0, jnp.ones((5, 6)))
    for axis, clipping in [((0, 1, 2), 0.5), (None, 0.5), ((0, 1, 2), 2.0), (-1, 0.3), (3, 0.1)]:
        for g, p in (conv3d, linear) if axis is None else (conv3d,):
            ours, _ = gco.adaptive_grad_clip(clipping, axis=axis).update([g], None, [p])
            theirs, _ = optax.adaptive_grad_clip(clipping, axis=axis).update([g], None, [p])
            assert_trees_close(ours, theirs)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), ndim=st.integers(0, 5), eps=st.sampled_from([1e-3, 0.5]),
       clipping=st.sampled_from([0.01, 0.1, 1.0]))
def test_adaptive_grad_clip_default_units_every_rank(seed, ndim, eps, clipping):
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 4, ndim))
    g = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    p = jnp.asarray(0.3 * rng.standard_normal(shape), jnp.float32)
    ours, _ = gco.adaptive_grad_clip(clipping, eps).update({"x": g}, None, {"x": p})
    theirs, _ = optax.adaptive_grad_clip(clipping, eps).update({"x": g}, None, {"x": p})
    assert_trees_close(ours, theirs)


float32_trees = trees(leaves=arrays(dtypes=(np.float32,)))


@settings(max_examples=30)  # optax's eager ops compile for every new shape
@given(tree=float32_trees, max_norm=st.sampled_from([0.01, 1.0, 1e4]), seed=st.integers(0, 2**32 - 1))
def test_random_trees_match_optax_outside_jit(tree, max_norm, seed):
    updates = to_jax([tree])  # (a whole tree of None is a params=None call: refused by both)
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype),
                                    updates)
    for ours_tx, theirs_tx in pairs(max_norm, max_delta=max_norm / 10, clipping=max_norm / 10):
        ours, state = ours_tx.update(updates, ours_tx.init(params), params)
        theirs, _ = theirs_tx.update(updates, theirs_tx.init(params), params)
        assert state == theirs_tx.init(params)
        assert_trees_close(ours, theirs)


@settings(max_examples=12)  # every new structure is a new compilation
@given(tree=float32_trees)
def test_random_trees_match_optax_inside_jit(tree):
    updates = to_jax([tree])
    params = jax.tree_util.tree_map(lambda x: 0.5 * x + 0.1, updates)
    for ours_tx, theirs_tx in pairs():
        ours, _ = jax.jit(ours_tx.update)(updates, ours_tx.init(params), params)
        theirs, _ = theirs_tx.update(updates, theirs_tx.init(params), params)
        assert_trees_close(ours, theirs)


def test_none_entries_tuples_namedtuples_and_dicts_are_kept():
    tree = {"dense": Pair(jnp.array([3.0, 4.0]), None), "out": (jnp.ones((2, 3)), [None]),
            "frozen": None}
    params = jax.tree_util.tree_map(jnp.ones_like, tree)
    for ours_tx, theirs_tx in pairs():
        for update in (ours_tx.update, jax.jit(ours_tx.update)):
            ours, _ = update(tree, None, params)
            theirs, _ = theirs_tx.update(tree, None, params)
            assert type(ours["dense"]) is Pair and ours["dense"].right is None
            assert isinstance(ours["out"], tuple) and ours["out"][1] == [None]
            assert ours["frozen"] is None and list(ours) == list(theirs)
            assert_trees_close(ours, theirs)


def test_float64_stays_float64():
    with jax.enable_x64(True):
        tree = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))}
        assert tree["w"].dtype == jnp.float64
        for ours_tx, theirs_tx in pairs(0.5):
            ours, _ = jax.jit(ours_tx.update)(tree, None, tree)
            theirs, _ = theirs_tx.update(tree, None, tree)
            assert_trees_close(ours, theirs, rtol=1e-13)


def test_chained_with_an_optimiser_inside_jit():
    def loss(params, x):
        return jnp.sum((x @ params["w"] + params["b"]) ** 2)

    rng = np.random.default_rng(3)
    x = jnp.asarray(100.0 * rng.standard_normal((16, 4)), jnp.float32)  # large gradients
    start = {"w": jnp.asarray(rng.standard_normal((4, 2)), jnp.float32), "b": jnp.zeros(2)}

    def train(clipper):
        tx = optax.chain(clipper, optax.sgd(0.05, momentum=0.9))

        @jax.jit
        def step(params, opt_state):
            grads = jax.grad(loss)(params, x)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        params, opt_state = start, tx.init(start)
        for _ in range(10):
            params, opt_state = step(params, opt_state)
        return params

    ours, theirs = train(gco.clip_by_global_norm(1.0)), train(optax.clip_by_global_norm(1.0))
    assert_trees_close(ours, theirs, rtol=1e-4)  # ten steps compound float32 rounding
    assert float(loss(ours, x)) < float(loss(start, x))


def test_under_vmap_each_example_is_clipped_on_its_own():
    batch = {"w": jnp.asarray(np.random.default_rng(5).standard_normal((6, 3, 2)), jnp.float32)}

    def per_example(tx):
        return jax.vmap(lambda g: tx.update(g, None)[0])(batch)

    assert_trees_close(per_example(gco.clip_by_global_norm(1.0)),
                       per_example(optax.clip_by_global_norm(1.0)))


def test_float32_norms_that_overflow_in_optax_are_exact():
    updates = {"a": jnp.full((10,), 1e20, jnp.float32), "b": jnp.full((3,), -3e19, jnp.float32)}
    theirs, _ = optax.clip_by_global_norm(1.0).update(updates, None)
    assert not np.isfinite(float(optax.tree.norm(updates)))  # optax's norm overflows ...
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(theirs))  # ... and zeroes
    ours, _ = jax.jit(gco.clip_by_global_norm(1.0).update)(updates, None)
    exact = math.sqrt(10 * 1e40 + 3 * 9e38)
    np.testing.assert_allclose(np.asarray(ours["a"]), 1e20 / exact, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ours["b"]), -3e19 / exact, rtol=1e-6)


def test_nonfinite_norms_propagate_as_in_optax():
    for values in ([1.0, np.nan, -2.0], [1.0, np.inf, -2.0], [-np.inf, np.inf, 0.0]):
        updates = {"g": jnp.asarray(values, jnp.float32)}
        ours, _ = jax.jit(gco.clip_by_global_norm(1.0).update)(updates, None)
        theirs, _ = optax.clip_by_global_norm(1.0).update(updates, None)
        np.testing.assert_array_equal(np.asarray(ours["g"]), np.asarray(theirs["g"]))


def test_zero_updates_with_max_norm_zero_stay_zero():
    ours, _ = gco.clip_by_global_norm(0.0).update({"g": jnp.zeros(3)}, None)
    theirs, _ = optax.clip_by_global_norm(0.0).update({"g": jnp.zeros(3)}, None)
    assert np.asarray(ours["g"]).tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(np.asarray(theirs["g"])).all()  # optax: 0 / 0


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="max_norm"):
        gco.clip_by_global_norm(-1.0)
    with pytest.raises(TypeError, match="max_delta"):
        gco.clip("big")
    with pytest.raises(ValueError, match="clipping"):
        gco.adaptive_grad_clip(float("nan"))
    with pytest.raises(ValueError, match="params"):
        gco.adaptive_grad_clip(0.1).update(UPDATES, None)
    with pytest.raises(ValueError, match="params"):
        gco.adaptive_grad_clip(0.1).update(UPDATES, None, (PARAMS[0],))
    with pytest.raises(ValueError, match=r"params\['w'\] has shape \(3,\), updates\['w'\] \(2,\)"):
        gco.adaptive_grad_clip(0.1).update({"w": jnp.ones(2)}, None, {"w": jnp.ones(3)})
    with pytest.raises(TypeError, match=r"params\['w'\]: dtype int32"):
        gco.adaptive_grad_clip(0.1).update({"w": jnp.ones(2)}, None, {"w": jnp.arange(2)})
    with pytest.raises(ValueError, match="axis="):
        gco.adaptive_grad_clip(0.1).update([jnp.ones((2,) * 6)], None, [jnp.ones((2,) * 6)])
    with pytest.raises(ValueError, match=r"axis 3 is out of range for updates\[0\] of shape"):
        gco.adaptive_grad_clip(0.1, axis=3).update([jnp.ones((2, 2))], None, [jnp.ones((2, 2))])
    with pytest.raises(TypeError, match=r"updates\['n'\]: dtype int32"):
        gco.clip(1.0).update({"n": jnp.arange(3)}, None)
    with pytest.raises(TypeError, match=r"updates\['n'\]: dtype int32"):
        jax.jit(gco.clip_by_global_norm(1.0).update)({"n": jnp.arange(3)}, None)
    with pytest.raises(TypeError, match=r"updates\[1\]: a float is not supported"):
        gco.clip(1.0).update([jnp.ones(2), 2.5], None)
