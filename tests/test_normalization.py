"""Layer and batch normalisation against the NumPy float64 references
(tests/reference_normalization.py, themselves checked by finite differences) on every
ISA target and thread count, against torch.nn.LayerNorm / BatchNorm1d when torch is
importable, and the argument checks (nothing written on error)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcore
import reference_normalization as ref

DTYPES = [np.float32, np.float64]
# Relative to the output's largest magnitude: float64 work rounded once to the dtype, plus
# the references' own float64 rounding.
TOL = {np.float32: 4e-7, np.float64: 1e-12}


def close(got, want, dtype, scale=None, loc=0.0):
    """``loc``: the data's offset against a unit spread. float64 data carry its rounding
    (|loc| ulp) into every deviation, so the float64 tolerance grows with it; float32 data
    are exact in the float64 arithmetic."""
    want = np.asarray(want, dtype=np.float64)
    assert got.dtype == dtype and got.shape == want.shape
    scale = scale if scale is not None else max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    if dtype == np.float64:
        scale *= 1.0 + abs(loc)
    err = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0))
    assert err <= TOL[dtype] * scale, f"max error {err:.3g} vs scale {scale:.3g}"


def grad_x_scale(want, gy, gamma, rstd):
    """The size of grad_x's terms (rstd * gamma * dy): its entries may cancel to 0."""
    g = float(np.max(np.abs(gy), initial=0.0)) * (1.0 if gamma is None else float(np.max(np.abs(gamma))))
    return max(float(np.max(np.abs(want), initial=0.0)), g * float(np.max(rstd, initial=0.0)), 1e-300)


def random(rng, shape, dtype, loc=0.0, spread=1.0):
    return (loc + spread * rng.standard_normal(shape)).astype(dtype)


# ------------------------------------------------------------ the references themselves

def numeric_grad(f, x, gy, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = np.sum((f(xp) - f(xm)) * gy) / (2 * h)
    return g


def test_layer_norm_reference_matches_finite_differences():
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((3, 2, 5)), rng.standard_normal((3, 2, 5))
    gamma, beta = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    gx, gg, gb = ref.layer_norm_backward(gy, x, (2, 5), gamma)
    np.testing.assert_allclose(gx, numeric_grad(lambda v: ref.layer_norm(v, (2, 5), gamma, beta)[0], x, gy),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gg, numeric_grad(lambda v: ref.layer_norm(x, (2, 5), v, beta)[0], gamma, gy),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, numeric_grad(lambda v: ref.layer_norm(x, (2, 5), gamma, v)[0], beta, gy),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_reference_matches_finite_differences(training):
    rng = np.random.default_rng(1)
    x, gy = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    _, mean, var, _, _ = ref.batch_norm(x, gamma, beta, rm, rv, training)
    gx, gg, gb = ref.batch_norm_backward(gy, x, gamma, mean, var, batch_stats=training)
    fwd = lambda v, g=gamma, b=beta: ref.batch_norm(v, g, b, rm, rv, training)[0]  # noqa: E731
    np.testing.assert_allclose(gx, numeric_grad(fwd, x, gy), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gg, numeric_grad(lambda v: fwd(x, g=v), gamma, gy), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, numeric_grad(lambda v: fwd(x, b=v), beta, gy), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------- layer norm

@st.composite
def layer_cases(draw):
    lead = tuple(draw(st.lists(st.integers(1, 5), min_size=0, max_size=2)))
    norm = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=2)))
    return {"lead": lead, "norm": norm, "dtype": draw(st.sampled_from(DTYPES)),
            "affine": draw(st.sampled_from(["both", "gamma", "none"])),
            "loc": draw(st.sampled_from([0.0, 3.0, 1e4])), "seed": draw(st.integers(0, 2 ** 31))}


@settings(max_examples=40, deadline=None)
@given(case=layer_cases())
def test_layer_norm_against_reference(isa, threads, case):
    rng = np.random.default_rng(case["seed"])
    dtype, norm = case["dtype"], case["norm"]
    x = random(rng, case["lead"] + norm, dtype, case["loc"])
    gamma = random(rng, norm, dtype) if case["affine"] != "none" else None
    beta = random(rng, norm, dtype) if case["affine"] == "both" else None
    gy = random(rng, x.shape, dtype)
    y, cache = gradcore.layer_norm_forward(x, norm, gamma, beta, eps=1e-5)
    want_y, want_mean, want_rstd = ref.layer_norm(x, norm, gamma, beta, 1e-5)
    loc = case["loc"]
    close(y, want_y, dtype, loc=loc)
    np.testing.assert_allclose(cache.mean, want_mean, rtol=1e-12, atol=1e-12 * abs(case["loc"]))
    np.testing.assert_allclose(cache.rstd, want_rstd, rtol=1e-9)
    gx, gg, gb = gradcore.layer_norm_backward(gy, cache)
    want_gx, want_gg, want_gb = ref.layer_norm_backward(gy, x, norm, gamma, 1e-5)
    close(gx, want_gx, dtype, scale=grad_x_scale(want_gx, gy, gamma, want_rstd), loc=loc)
    assert (gg is None) == (gamma is None) and (gb is None) == (beta is None)
    if gamma is not None:
        close(gg, want_gg, dtype, scale=float(np.sum(np.abs(gy))) + 1e-300, loc=loc)
    if beta is not None:
        close(gb, want_gb, dtype, scale=float(np.sum(np.abs(gy))) + 1e-300)


def test_layer_norm_int_normalized_shape_and_no_grad_x():
    rng = np.random.default_rng(2)
    x = random(rng, (6, 33), np.float64)
    y, cache = gradcore.layer_norm_forward(x, 33)
    assert cache.mean.shape == cache.rstd.shape == (6,) and cache.mean.dtype == np.float64
    gx, gg, gb = gradcore.layer_norm_backward(np.ones_like(x), cache, need_grad_x=False)
    assert gx is None and gg is None and gb is None
    gx, _, _ = gradcore.layer_norm_backward(np.ones_like(x), cache)
    np.testing.assert_allclose(gx, 0.0, atol=1e-13)  # a constant dL/dy has no effect on normalised rows


# ------------------------------------------------------------------------- batch norm

@st.composite
def batch_cases(draw):
    n = draw(st.integers(2, 9))
    c = draw(st.integers(1, 40))
    tail = tuple(draw(st.lists(st.integers(1, 7), min_size=0, max_size=2)))
    return {"shape": (n, c) + tail, "dtype": draw(st.sampled_from(DTYPES)),
            "training": draw(st.booleans()), "running": draw(st.booleans()),
            "affine": draw(st.booleans()), "loc": draw(st.sampled_from([0.0, 5.0, 1e4])),
            "momentum": draw(st.sampled_from([0.1, 0.5, 1.0])), "seed": draw(st.integers(0, 2 ** 31))}


@settings(max_examples=40, deadline=None)
@given(case=batch_cases())
def test_batch_norm_against_reference(isa, threads, case):
    rng = np.random.default_rng(case["seed"])
    dtype, shape = case["dtype"], case["shape"]
    c = shape[1]
    x = random(rng, shape, dtype, case["loc"])
    gamma = random(rng, c, dtype) if case["affine"] else None
    beta = random(rng, c, dtype) if case["affine"] else None
    rm = random(rng, c, dtype, case["loc"]) if case["running"] else None
    rv = (rng.random(c) + 0.5).astype(dtype) if case["running"] else None
    training = case["training"]
    want_y, mean, var, want_rm, want_rv = ref.batch_norm(x, gamma, beta, rm, rv, training, case["momentum"])
    y, cache = gradcore.batch_norm_forward(x, gamma, beta, rm, rv, training=training, momentum=case["momentum"])
    loc = case["loc"]
    close(y, want_y, dtype, loc=loc)
    if rm is not None:
        close(rm, want_rm, dtype)
        close(rv, want_rv, dtype)
    assert cache.batch_stats == (training or rm is None)
    gy = random(rng, shape, dtype)
    gx, gg, gb = gradcore.batch_norm_backward(gy, cache)
    want_gx, want_gg, want_gb = ref.batch_norm_backward(gy, x, gamma, mean, var, cache.batch_stats)
    close(gx, want_gx, dtype, scale=grad_x_scale(want_gx, gy, gamma, 1 / np.sqrt(var + 1e-5)), loc=loc)
    if gamma is not None:
        sums = float(np.sum(np.abs(gy))) * max(1.0, float(np.max(np.abs(want_y))))
        close(gg, want_gg, dtype, scale=sums, loc=loc)
        close(gb, want_gb, dtype, scale=float(np.sum(np.abs(gy))))
    else:
        assert gg is None and gb is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_mean_keeps_its_variance(dtype):
    """A float32 batch around 1e4 with spread 1e-2: the variance formed in float64 from
    the deviations equals the float64 reference of the same values; E[x^2] - E[x]^2 in
    float32 (and even in float64 for the backward's sums) would cancel it away."""
    rng = np.random.default_rng(3)
    x = random(rng, (512, 16), dtype, 1e4, 1e-2)
    y, cache = gradcore.batch_norm_forward(x, None, None, None, None, training=True)
    _, mean, var, _, _ = ref.batch_norm(x, None, None, None, None, True)
    np.testing.assert_allclose(cache.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(cache.rstd, 1 / np.sqrt(var + 1e-5), rtol=1e-9)
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(y64.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y64.var(0), var / (var + 1e-5), rtol=1e-5)


@pytest.mark.parametrize("shape", [(4096, 24), (64, 8, 300), (3, 70000)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_on_every_thread_count(every_config, shape, dtype):
    """Blocks depend on the shapes only: per ISA, 1 and 2 threads give the same bits
    (shapes large enough for several blocks)."""
    rng = np.random.default_rng(4)
    x, gy = random(rng, shape, dtype, 2.0), random(rng, shape, dtype)
    gamma, beta = random(rng, shape[1], dtype), random(rng, shape[1], dtype)

    def run():
        y, cache = gradcore.batch_norm_forward(x, gamma, beta, None, None, training=True)
        ly, lcache = gradcore.layer_norm_forward(x, shape[1:])
        return (y, *gradcore.batch_norm_backward(gy, cache), ly, gradcore.layer_norm_backward(gy, lcache).grad_x)

    results = every_config(run)
    by_isa = {}
    for (isa, _), arrays in results:
        by_isa.setdefault(isa, []).append(arrays)
    for isa, runs in by_isa.items():
        for a, b in zip(runs[0], runs[1]):
            assert np.array_equal(a, b), f"{isa}: 1 and 2 threads differ"


# ------------------------------------------------------------------------- vs torch

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_1d_module_matches_torch(torch, dtype):
    """Five training steps then eval, running statistics included, against
    torch.nn.BatchNorm1d on (N, C) and (N, C, L)."""
    rtol = {np.float32: 1e-5, np.float64: 1e-10}[dtype]
    tdt = getattr(torch, np.dtype(dtype).name)
    rng = np.random.default_rng(5)
    for shape in [(32, 6), (8, 6, 11)]:
        module = torch.nn.BatchNorm1d(6, momentum=0.2, dtype=tdt)
        with torch.no_grad():
            module.weight.copy_(torch.tensor(random(rng, 6, dtype)))
            module.bias.copy_(torch.tensor(random(rng, 6, dtype)))
        gamma, beta = module.weight.detach().numpy().copy(), module.bias.detach().numpy().copy()
        rm, rv = module.running_mean.numpy().copy(), module.running_var.numpy().copy()
        for step in range(6):
            training = step < 5
            module.train(training)
            x = random(rng, shape, dtype, 3.0, 2.0)
            gy = random(rng, shape, dtype)
            tx = torch.tensor(x, requires_grad=True)
            module.zero_grad()
            ty = module(tx)
            ty.backward(torch.tensor(gy))
            y, cache = gradcore.batch_norm_forward(x, gamma, beta, rm, rv, training=training, momentum=0.2)
            gx, gg, gb = gradcore.batch_norm_backward(gy, cache)
            np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=rtol)
            np.testing.assert_allclose(rm, module.running_mean.numpy(), rtol=rtol)
            np.testing.assert_allclose(rv, module.running_var.numpy(), rtol=rtol)
            np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=rtol, atol=rtol * np.abs(gx).max())
            np.testing.assert_allclose(gg, module.weight.grad.numpy(), rtol=rtol, atol=rtol * np.abs(gg).max())
            np.testing.assert_allclose(gb, module.bias.grad.numpy(), rtol=rtol, atol=rtol * np.abs(gb).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_forward_matches_torch_functional(torch, dtype):
    rtol = {np.float32: 1e-5, np.float64: 1e-10}[dtype]
    rng = np.random.default_rng(6)
    x = random(rng, (16, 5, 7), dtype, 1.0, 3.0)
    rm, rv = random(rng, 5, dtype), (rng.random(5) + 0.5).astype(dtype)
    for training in (True, False):
        trm, trv = torch.tensor(rm), torch.tensor(rv)
        want = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, training=training, momentum=0.3)
        y, _ = gradcore.batch_norm_forward(x, None, None, rm, rv, training=training, momentum=0.3)
        np.testing.assert_allclose(y, want.numpy(), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(rm, trm.numpy(), rtol=rtol)
        np.testing.assert_allclose(rv, trv.numpy(), rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_module_matches_torch(torch, dtype, affine):
    rtol = {np.float32: 1e-5, np.float64: 1e-10}[dtype]
    tdt = getattr(torch, np.dtype(dtype).name)
    rng = np.random.default_rng(7)
    module = torch.nn.LayerNorm((4, 9), elementwise_affine=affine, bias=affine, dtype=tdt)
    if affine:
        with torch.no_grad():
            module.weight.copy_(torch.tensor(random(rng, (4, 9), dtype)))
            module.bias.copy_(torch.tensor(random(rng, (4, 9), dtype)))
    x, gy = random(rng, (3, 5, 4, 9), dtype, 2.0), random(rng, (3, 5, 4, 9), dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    ty.backward(torch.tensor(gy))
    gamma = module.weight.detach().numpy() if affine else None
    beta = module.bias.detach().numpy() if affine else None
    y, cache = gradcore.layer_norm_forward(x, (4, 9), gamma, beta)
    gx, gg, gb = gradcore.layer_norm_backward(gy, cache)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=rtol, atol=rtol * np.abs(gx).max())
    if affine:
        np.testing.assert_allclose(gg, module.weight.grad.numpy(), rtol=rtol, atol=rtol * np.abs(gg).max())
        np.testing.assert_allclose(gb, module.bias.grad.numpy(), rtol=rtol, atol=rtol * np.abs(gb).max())


def test_torch_tensors_go_in_zero_copy(torch):
    x = torch.randn(8, 3)
    y, cache = gradcore.batch_norm_forward(x, None, None, None, None, training=True)
    want = torch.nn.functional.batch_norm(x, None, None, training=True)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- bad input

def batch_state(dtype=np.float64):
    rng = np.random.default_rng(8)
    return random(rng, (6, 3), dtype), random(rng, 3, dtype), (rng.random(3) + 1).astype(dtype)


def test_read_only_running_stats_refused_before_any_write():
    x, rm, rv = batch_state()
    before = rm.copy(), rv.copy()
    rv.flags.writeable = False
    with pytest.raises(ValueError, match="running_var"):
        gradcore.batch_norm_forward(x, None, None, rm, rv, training=True)
    assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(eps=-1.0), ValueError, "eps must be a finite number >= 0"),
    (dict(eps=math.inf), ValueError, "eps must be a finite number >= 0"),
    (dict(momentum=math.nan), ValueError, "momentum must be a finite number"),
    (dict(momentum="0.1"), TypeError, "momentum must be a real number"),
])
def test_bad_batch_norm_scalars_change_nothing(kwargs, exc, match):
    x, rm, rv = batch_state()
    before = rm.copy(), rv.copy()
    with pytest.raises(exc, match=match):
        gradcore.batch_norm_forward(x, None, None, rm, rv, training=True, **kwargs)
    assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])


def test_bad_batch_norm_arrays():
    x, rm, rv = batch_state()
    with pytest.raises(ValueError, match="running_mean and running_var must be given together"):
        gradcore.batch_norm_forward(x, None, None, rm, None, training=True)
    with pytest.raises(ValueError, match=r"gamma has shape \(4,\)"):
        gradcore.batch_norm_forward(x, np.ones(4), None, None, None, training=True)
    with pytest.raises(TypeError, match="x and gamma must have the same dtype"):
        gradcore.batch_norm_forward(x, np.ones(3, np.float32), None, None, None, training=True)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        gradcore.batch_norm_forward(np.ones(5), None, None, None, None, training=True)
    with pytest.raises(TypeError, match="x: dtype int64 is not supported"):
        gradcore.batch_norm_forward(np.ones((4, 2), np.int64), None, None, None, None, training=True)
    before = rm.copy()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        gradcore.batch_norm_forward(x[:1], None, None, rm, rv, training=True)
    assert np.array_equal(rm, before)
    y, cache = gradcore.batch_norm_forward(x, None, None, None, None, training=True)
    with pytest.raises(ValueError, match=r"grad_y has shape \(5, 3\)"):
        gradcore.batch_norm_backward(np.ones((5, 3)), cache)


def test_bad_layer_norm_arguments():
    x = np.ones((4, 6))
    with pytest.raises(ValueError, match="normalized_shape \\(5,\\) must be the trailing dimensions"):
        gradcore.layer_norm_forward(x, 5)
    with pytest.raises(ValueError, match="normalized_shape"):
        gradcore.layer_norm_forward(x, ())
    with pytest.raises(TypeError, match="normalized_shape must be an int or a sequence"):
        gradcore.layer_norm_forward(x, 6.0)
    with pytest.raises(ValueError, match=r"gamma has shape \(4,\)"):
        gradcore.layer_norm_forward(x, 6, np.ones(4))
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        gradcore.layer_norm_forward(x, 6, eps=-1e-5)
    with pytest.raises(TypeError, match="x and grad_y must have the same dtype"):
        gradcore.layer_norm_backward(np.ones((4, 6), np.float32), gradcore.layer_norm_forward(x, 6).cache)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batches(dtype):
    x = np.ones((0, 3, 4), dtype)
    y, cache = gradcore.batch_norm_forward(x, None, None, np.zeros(3, dtype), np.ones(3, dtype), training=False)
    assert y.shape == (0, 3, 4)
    y, cache = gradcore.layer_norm_forward(x, (3, 4))
    assert y.shape == (0, 3, 4) and cache.mean.shape == (0,)
    assert gradcore.layer_norm_backward(y, cache).grad_x.shape == (0, 3, 4)
