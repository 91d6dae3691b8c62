"""Parity with PyTorch's gradient utilities (torch.nn.utils): same totals and the same
clipped gradients up to float32/float64 rounding, gradcore working in place on NumPy
views of the very tensors torch would clip; and where gradcore goes beyond torch
(float32 gradients whose squares overflow float32)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcore
from reference import assert_close, make_array, random_shape, ref_norm, same_bits

torch = pytest.importorskip("torch")

NORM_TYPES = [1.0, 2.0, math.inf, 3.0]
DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}


def total_rtol(np_dtype):
    """torch accumulates float32 norms in float32 (gradcore in float64)."""
    return 2e-5 if np_dtype == np.float32 else 1e-12


def value_rtol(np_dtype):
    """Clipped values: the factors differ by what the totals differ."""
    return 4e-5 if np_dtype == np.float32 else 1e-11


def make_grads(seed, n, np_dtype, scale_exp=0):
    rng = np.random.default_rng(seed)
    return [make_array(rng, random_shape(rng, 4, 6, p_zero=0.0), np_dtype, scale_exp)
            for _ in range(n)]


def as_params(grads, torch_dtype):
    """Parameters whose .grad tensors hold copies of `grads`."""
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch_dtype))
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    return params


def grad_views(params):
    """NumPy arrays sharing memory with each parameter's .grad (what gradcore clips)."""
    return [p.grad.numpy() for p in params]


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20),
       dtype=st.sampled_from(list(DTYPES)), norm_type=st.sampled_from(NORM_TYPES),
       frac=st.sampled_from([0.1, 0.5, 0.9, 2.0]))
def test_clip_by_global_norm_matches_clip_grad_norm(seed, n, dtype, norm_type, frac):
    """clip_by_global_norm_ on NumPy views of the grads returns torch's total and leaves
    the grads as clip_grad_norm_ does (both use min(1, max_norm / (total + 1e-6)))."""
    np_dtype, torch_dtype = DTYPES[dtype]
    grads = make_grads(seed, n, np_dtype)
    max_norm = frac * ref_norm(grads, norm_type)
    torch_params = as_params(grads, torch_dtype)
    ours = as_params(grads, torch_dtype)
    torch_total = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type=norm_type)
    views = grad_views(ours)
    total = gradcore.clip_by_global_norm_(views, max_norm, norm_type)
    assert_close(total, float(torch_total), total_rtol(np_dtype))
    for p_torch, p_ours, view in zip(torch_params, ours, views):
        assert np.shares_memory(view, p_ours.grad.numpy())
        assert_close(p_ours.grad.numpy(), p_torch.grad.numpy(), value_rtol(np_dtype))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_clip_directly_on_torch_tensors(dtype, norm_type):
    """torch CPU tensors (p.grad) are clipped in place when passed directly."""
    np_dtype, torch_dtype = DTYPES[dtype]
    grads = make_grads(7, 5, np_dtype)
    torch_params = as_params(grads, torch_dtype)
    ours = as_params(grads, torch_dtype)
    max_norm = 0.5 * ref_norm(grads, norm_type)
    torch_total = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type=norm_type)
    total = gradcore.clip_by_global_norm_([p.grad for p in ours], max_norm, norm_type)
    assert_close(total, float(torch_total), total_rtol(np_dtype))
    for a, b in zip(ours, torch_params):
        assert_close(a.grad.numpy(), b.grad.numpy(), value_rtol(np_dtype))


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 20),
       dtype=st.sampled_from(list(DTYPES)), norm_type=st.sampled_from(NORM_TYPES))
def test_global_norm_matches_get_total_norm(seed, n, dtype, norm_type):
    """global_norm equals torch.nn.utils.get_total_norm (0.0 for an empty list)."""
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is None:
        pytest.skip("torch.nn.utils.get_total_norm needs torch >= 2.6")
    np_dtype, torch_dtype = DTYPES[dtype]
    grads = make_grads(seed, n, np_dtype)
    expected = float(get_total_norm([torch.from_numpy(g) for g in grads], norm_type))
    assert_close(gradcore.global_norm(grads, norm_type), expected, total_rtol(np_dtype))


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20),
       dtype=st.sampled_from(list(DTYPES)),
       clip_value=st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5]))
def test_clip_by_value_matches_clip_grad_value(seed, n, dtype, clip_value):
    """clip_by_value_ leaves exactly the values clip_grad_value_ leaves."""
    np_dtype, torch_dtype = DTYPES[dtype]
    grads = make_grads(seed, n, np_dtype)
    torch_params = as_params(grads, torch_dtype)
    ours = as_params(grads, torch_dtype)
    torch.nn.utils.clip_grad_value_(torch_params, clip_value)
    gradcore.clip_by_value_(grad_views(ours), clip_value)
    for a, b in zip(ours, torch_params):
        assert np.array_equal(a.grad.numpy(), b.grad.numpy())


def test_float32_1e20_beyond_torch():
    """float32 gradients of 1e20: torch's float32 total overflows to inf (and
    clip_grad_norm_ then zeroes every gradient); gradcore's total is finite and correct,
    and its clipping keeps the direction and brings the norm to max_norm."""
    rng = np.random.default_rng(0)
    g = (rng.standard_normal(1000) * 1e20).astype(np.float32)
    exact = float(np.linalg.norm(g.astype(np.float64)))

    # what torch does (documented here; not a requirement on gradcore)
    p = torch.nn.Parameter(torch.zeros(1000))
    p.grad = torch.from_numpy(g.copy())
    assert math.isinf(float(torch.nn.utils.clip_grad_norm_([p], 1.0)))
    assert not p.grad.any()

    total = gradcore.global_norm([g])
    assert math.isfinite(total) and total == pytest.approx(exact, rel=1e-12)

    ours = torch.nn.Parameter(torch.zeros(1000))
    ours.grad = torch.from_numpy(g.copy())
    assert gradcore.clip_by_global_norm_([ours.grad.numpy()], 1.0) == pytest.approx(exact,
                                                                                  rel=1e-12)
    clipped = ours.grad.numpy().astype(np.float64)
    assert np.isfinite(clipped).all()
    assert np.linalg.norm(clipped) == pytest.approx(1.0, rel=1e-6)
    direction = g.astype(np.float64) / exact
    assert np.allclose(clipped, direction, rtol=1e-6, atol=0)
    assert same_bits(np.sign(clipped), np.sign(g.astype(np.float64)))


def test_adaptive_clip_reads_parameters_that_require_grad():
    """adaptive_clip_(grads, params) accepts nn.Parameters (requires_grad=True) as the
    read-only params, AGC's everyday use; global_norm reads them too."""
    p = torch.nn.Parameter(torch.ones(3, 4))
    grad = torch.full((3, 4), 5.0)
    gradcore.adaptive_clip_([grad], [p], 0.01)
    limit = 0.01 * 2.0  # ||param row|| = 2
    assert torch.linalg.vector_norm(grad, dim=1).tolist() == pytest.approx([limit] * 3)
    assert gradcore.global_norm([p]) == pytest.approx(math.sqrt(12))


def test_adaptive_clip_on_torch_tensors_detached():
    """adaptive_clip_ clips torch grads in place against detached parameters, per output
    row (unit_axis=0, as in NFNets for Linear weights)."""
    w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [100.0, 0.0]]))
    grad = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    gradcore.adaptive_clip_([grad], [w.detach()], 0.1, unit_axis=0)
    assert torch.linalg.vector_norm(grad, dim=1).tolist() == pytest.approx([0.1, 5.0])
