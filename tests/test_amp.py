"""gradcore.amp.GradScaler with gradcore.optim: the scaler's rules against a float64
reference written here (skips, scale trajectory), weights against the same loop run on
the unscaled gradients directly, the optimisers' grad_scale, overflow, errors."""

import math

import numpy as np
import pytest

import gradcore
from gradcore import optim
from gradcore.amp import GradScaler

SHAPES = [(7,), (20, 6), (3, 4, 2)]
STEPS = 50
INJECT = {5: math.inf, 6: math.nan, 17: -math.inf, 30: math.nan}
MAX_NORM = 2.0


def unscaled_grads(steps=STEPS, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for step in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        if step in INJECT:
            grads[1][2, 3] = INJECT[step]
        out.append(grads)
    return out


def initial_params(dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def make_optimizer(kind, params):
    if kind == "sgd":
        return optim.SGD(params, lr=0.05, momentum=0.9)
    return optim.Adam(params, lr=1e-2)


def reference_schedule(found_infs, init_scale=2.0 ** 16, growth=2.0, backoff=0.5, interval=3):
    """torch.amp.GradScaler's rule, in float64 (the scales here are powers of two)."""
    scale, tracker, scales = init_scale, 0, []
    for found in found_infs:
        if found:
            scale, tracker = scale * backoff, 0
        else:
            tracker += 1
            if tracker == interval:
                scale, tracker = scale * growth, 0
        scales.append(scale)
    return scales, tracker


def clip_factor(grads, max_norm):
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    return min(1.0, max_norm / (total + 1e-6))


def scaled(grads, scale):
    """What backprop from a seed of `scale` gives: grads * scale, exact for powers of two."""
    return [np.array(g.astype(np.float64) * scale, dtype=g.dtype) for g in grads]


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("mode", ["step", "unscale_then_step"])
@pytest.mark.parametrize("max_norm", [None, MAX_NORM])
def test_training_loop_against_the_reference(opt_kind, mode, max_norm):
    steps = unscaled_grads()
    scaler = GradScaler(growth_interval=3)
    params = initial_params()
    opt = make_optimizer(opt_kind, params)
    direct_params = initial_params()
    direct = make_optimizer(opt_kind, direct_params)
    applied, scales = [], []
    for grads in steps:
        seen = scaled(grads, scaler.get_scale())
        if mode == "unscale_then_step":
            total = scaler.unscale_(seen)
            want = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
            if math.isfinite(want):
                assert total == pytest.approx(want, rel=1e-12)
                for s, g in zip(seen, grads):
                    np.testing.assert_array_equal(s, g)  # power-of-two scale: exact
            else:
                assert not math.isfinite(total)
        applied.append(scaler.step(opt, seen, max_norm=max_norm))
        scaler.update()
        scales.append(scaler.get_scale())
        if all(np.isfinite(g).all() for g in grads):
            factor = 1.0 if max_norm is None else clip_factor(grads, max_norm)
            direct.step([np.array(g * np.float32(factor), dtype=g.dtype) for g in grads]
                        if factor != 1.0 else grads)
    found_infs = [step in INJECT for step in range(STEPS)]
    want_scales, want_tracker = reference_schedule(found_infs)
    assert applied == [not f for f in found_infs]
    assert scales == want_scales
    assert scaler.state_dict() == {"scale": want_scales[-1], "growth_factor": 2.0,
                                   "backoff_factor": 0.5, "growth_interval": 3,
                                   "_growth_tracker": want_tracker}
    assert opt.step_count == direct.step_count == STEPS - len(INJECT)
    for p, q in zip(params, direct_params):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_writes_no_gradient(dtype):
    """Without unscale_, the 1/scale and the clip go into the optimiser's pass."""
    grads = scaled(unscaled_grads(1, dtype)[0], 2.0 ** 16)
    for g in grads:
        g.flags.writeable = False  # a write would raise
    before = [g.copy() for g in grads]
    scaler = GradScaler()
    assert scaler.step(optim.SGD(initial_params(dtype), lr=0.1), grads, max_norm=1.0)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)


def test_overflowing_float32_squares_give_a_finite_exact_total():
    grads = [np.full(10, 1e20 * 4, np.float32)]
    scaler = GradScaler(init_scale=4.0)
    total = scaler.unscale_(grads)
    assert total == pytest.approx(math.sqrt(10) * 1e20, rel=1e-7)
    params = [np.zeros(10, np.float32)]
    assert scaler.step(optim.SGD(params, lr=1.0), grads, max_norm=1.0)
    np.testing.assert_allclose(params[0], -1 / math.sqrt(10), rtol=1e-6)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("unscale_first", [False, True])
def test_any_nonfinite_element_skips(bad, unscale_first):
    grads = scaled(unscaled_grads(1)[0], 2.0 ** 16)
    grads[0][3] = bad
    params = initial_params()
    before = [p.copy() for p in params]
    opt = optim.Adam(params)
    scaler = GradScaler()
    if unscale_first:
        assert not math.isfinite(scaler.unscale_(grads))
    assert scaler.step(opt, grads) is False
    assert opt.step_count == 0
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 15


def test_scale_multiplies_a_loss_or_a_seed():
    scaler = GradScaler(init_scale=8.0)
    assert scaler.scale(1.5) == 12.0
    seed = np.ones(3, np.float32)
    out = scaler.scale(seed)
    assert out.dtype == np.float32 and (out == 8.0).all() and (seed == 1.0).all()


def test_disabled_passes_through():
    scaler = GradScaler(enabled=False)
    grads = unscaled_grads(1)[0]
    before = [g.copy() for g in grads]
    assert scaler.scale(2.0) == 2.0
    params = initial_params()
    want = initial_params()
    optim.SGD(want, lr=0.1).step([g * np.float32(clip_factor(grads, 1.0)) for g in grads])
    total = scaler.unscale_(grads)
    assert total == pytest.approx(math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2))
                                                for g in grads)))
    assert scaler.step(optim.SGD(params, lr=0.1), grads, max_norm=1.0)
    assert scaler.step(optim.SGD(initial_params(), lr=0.1), grads)  # no order enforced
    scaler.update()
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)
    for p, q in zip(params, want):
        np.testing.assert_allclose(p, q, rtol=1e-6)
    assert (scaler.get_scale(), scaler.state_dict(), scaler.is_enabled()) == (1.0, {}, False)


def test_state_dict_round_trip():
    a = GradScaler(growth_interval=3)
    for step in range(7):
        a.step(optim.SGD(initial_params(), lr=0.1), scaled(unscaled_grads(8)[step], a.get_scale()))
        a.update()
    state = a.state_dict()
    assert all(type(v) in (float, int) for v in state.values())
    b = GradScaler()
    b.load_state_dict(state)
    assert b.state_dict() == state


# ---------------------------------------------------------------- the optimisers' grad_scale

@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_scale_is_the_same_as_scaled_gradients(kind, dtype):
    grads = unscaled_grads(3, dtype)
    a, b = initial_params(dtype), initial_params(dtype)
    opt_a, opt_b = make_optimizer(kind, a), make_optimizer(kind, b)
    for g in grads[:2]:  # finite ones
        opt_a.step(scaled(g, 2.0 ** 10), grad_scale=2.0 ** -10)
        opt_b.step(g)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)  # powers of two: exact


def test_grad_scale_with_the_optimisers_own_clips():
    """clip_norm and clip_value act on grads * grad_scale."""
    g = unscaled_grads(1)[0]
    for clip in (dict(clip_norm=0.5), dict(clip_value=0.1)):
        a, b = initial_params(), initial_params()
        optim.SGD(a, lr=0.1, **clip).step(scaled(g, 2.0 ** 8), grad_scale=2.0 ** -8)
        optim.SGD(b, lr=0.1, **clip).step([x.copy() for x in g])
        for p, q in zip(a, b):
            np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value, exc", [(0.0, ValueError), (-1.0, ValueError),
                                        (math.inf, ValueError), (math.nan, ValueError),
                                        ("1", TypeError)])
def test_bad_grad_scale_changes_nothing(value, exc):
    params = initial_params()
    before = [p.copy() for p in params]
    opt = optim.SGD(params, lr=0.1, clip_value=0.1)
    grads = unscaled_grads(1)[0]
    grads_before = [g.copy() for g in grads]
    with pytest.raises(exc, match="grad_scale"):
        opt.step(grads, grad_scale=value)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    for g, b in zip(grads, grads_before):
        np.testing.assert_array_equal(g, b)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(init_scale=0.0), ValueError, "init_scale"),
    (dict(init_scale=-2.0), ValueError, "init_scale"),
    (dict(init_scale=None), TypeError, "init_scale"),
    (dict(growth_factor=0.0), ValueError, "growth_factor"),
    (dict(growth_factor=1.0), ValueError, "growth_factor"),
    (dict(backoff_factor=1.5), ValueError, "backoff_factor"),
    (dict(backoff_factor=-0.5), ValueError, "backoff_factor"),
    (dict(growth_interval=0), ValueError, "growth_interval"),
    (dict(growth_interval=1.0), TypeError, "growth_interval"),
])
def test_bad_constructor_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        GradScaler(**kwargs)


def test_unscale_twice_and_step_twice():
    grads = scaled(unscaled_grads(1)[0], 2.0 ** 16)
    scaler = GradScaler()
    scaler.unscale_(grads)
    after = [g.copy() for g in grads]
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(grads)
    opt = optim.SGD(initial_params(), lr=0.1)
    scaler.step(opt, grads)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt, grads)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(grads)
    assert opt.step_count == 1
    for g, a in zip(grads, after):
        np.testing.assert_array_equal(g, a)
    scaler.update()
    with pytest.raises(RuntimeError, match="No inf checks"):
        scaler.update()


@pytest.mark.parametrize("value, exc", [(-1.0, ValueError), (0.0, ValueError),
                                        (math.nan, ValueError), ("2", TypeError)])
def test_bad_max_norm_changes_nothing(value, exc):
    grads = scaled(unscaled_grads(1)[0], 2.0 ** 16)
    before = [g.copy() for g in grads]
    params = initial_params()
    opt = optim.SGD(params, lr=0.1)
    scaler = GradScaler()
    with pytest.raises(exc, match="max_norm"):
        scaler.step(opt, grads, max_norm=value)
    assert opt.step_count == 0
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)
    assert scaler.step(opt, grads)  # the iteration did not move on


def test_read_only_gradient_in_unscale_changes_nothing():
    grads = scaled(unscaled_grads(1)[0], 2.0 ** 16)
    grads[2].flags.writeable = False
    before = [g.copy() for g in grads]
    scaler = GradScaler()
    with pytest.raises(ValueError, match="read-only"):
        scaler.unscale_(grads)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)
    grads[2].flags.writeable = True
    scaler.unscale_(grads)  # the iteration did not move on


# ---------------------------------------------------------------- low-precision gradients

class TestLowPrecisionGradients:
    """float16 gradients (e.g. from a float16 model) unscaled in place by gradcore's
    16-bit kernels."""

    @pytest.mark.parametrize("init_scale", [2.0 ** 8, 1000.0])
    def test_unscale_against_float64_reference(self, init_scale):
        rng = np.random.default_rng(3)
        grads = [(rng.standard_normal(s) * init_scale).astype(np.float16) for s in SHAPES]
        reference = [g.astype(np.float64) for g in grads]
        scaler = GradScaler(init_scale=init_scale)
        inv_scale = float(np.float32(1.0 / init_scale))
        total = scaler.unscale_(grads)
        want_total = math.sqrt(sum(float(np.sum(r ** 2)) for r in reference)) * inv_scale
        assert total == pytest.approx(want_total, rel=1e-12)
        for g, r in zip(grads, reference):
            want = (r * inv_scale).astype(np.float16)
            np.testing.assert_allclose(g, want, rtol=float(np.finfo(np.float16).eps), atol=0)

    def test_skip_on_nonfinite(self):
        grads = [np.ones(4, np.float16), np.array([1.0, np.inf], np.float16)]
        scaler = GradScaler()
        assert not math.isfinite(scaler.unscale_(grads))
        assert scaler.step(optim.SGD([np.zeros(4), np.zeros(2)], lr=0.1), grads) is False
