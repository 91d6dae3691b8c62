"""gradcore.torch, the drop-in for torch.nn.utils.{clip_grad_norm_, get_total_norm,
clip_grad_value_}: parity with torch itself (same totals up to float32 rounding, same
clipped gradients, same return dtype/shape/device, same errors), in-place work on the
very .grad memory, exact torch behaviour for everything handed back to torch, and the one
intended difference (float32 norms that overflow in torch)."""

import math
import os
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gradcore  # noqa: E402
import gradcore.torch as gct  # noqa: E402

NORM_TYPES = [1.0, 2.0, 3.0, math.inf, "inf"]
DTYPES = [torch.float32, torch.float64]
SHAPES = [(7,), (3, 4), (2, 3, 5), (1,), (), (65,), (4, 17)]


def rtol(dtype):
    """torch accumulates float32 norms in float32, gradcore in float64."""
    return 1e-5 if dtype == torch.float32 else 1e-12


def make_params(dtype=torch.float64, seed=0, scale=1.0, none_at=(2,)):
    """Parameters with random .grad (the ones at `none_at` have grad None)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for i, shape in enumerate(SHAPES):
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        if i not in none_at:
            p.grad = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
        params.append(p)
    return params


def clone_params(params):
    out = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        if p.grad is not None:
            q.grad = p.grad.clone()
        out.append(q)
    return out


def grads_of(params):
    return [p.grad for p in params if p.grad is not None]


def exact_norm(params, p):
    """float64 reference norm of all grads together."""
    flat = torch.cat([g.detach().double().reshape(-1) for g in grads_of(params)]).numpy()
    if p == math.inf:
        return float(np.max(np.abs(flat)))
    return float(np.sum(np.abs(flat) ** p) ** (1.0 / p))


def container(kind, params):
    if kind == "tensor":
        return params[0]
    if kind == "list":
        return list(params)
    if kind == "tuple":
        return tuple(params)
    return (p for p in params)  # generator


def assert_same_result_tensor(ours, theirs, dtype=None):
    assert isinstance(ours, torch.Tensor)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == torch.Size([])
    assert ours.device == theirs.device
    assert not ours.requires_grad
    if dtype is not None:
        assert ours.dtype == dtype


def assert_grads_close(ours, theirs, tol):
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=tol, atol=0, equal_nan=True)


def assert_grads_equal(ours, theirs):
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert a.grad.dtype == b.grad.dtype and a.grad.shape == b.grad.shape
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)


def outcome(fn):
    """fn()'s result, or the exception it raised (to compare ours and torch's)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return exc


def assert_same_outcome(ours, theirs):
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs), (ours, theirs)
        assert str(ours) == str(theirs)
    elif theirs is None:
        assert ours is None
    else:
        assert_same_result_tensor(ours, theirs)
        if theirs.device.type != "meta":  # meta tensors have no values
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


@pytest.fixture
def gradcore_forbidden(monkeypatch):
    """Makes any call into gradcore's kernels fail: the code under test must go to torch."""
    def forbidden(*args, **kwargs):
        raise AssertionError("gradcore was called; torch's implementation was expected")
    for name in ("global_norm", "clip_by_global_norm_", "clip_by_value_"):
        monkeypatch.setattr(gradcore, name, forbidden)


@pytest.fixture
def torch_forbidden(monkeypatch):
    """Makes the torch fallbacks fail: the code under test must use gradcore."""
    def forbidden(*args, **kwargs):
        raise AssertionError("torch's implementation was called; gradcore was expected")
    for name in ("_torch_clip_grad_norm_", "_torch_get_total_norm", "_torch_clip_grad_value_"):
        monkeypatch.setattr(gct, name, forbidden)


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("kind", ["tensor", "list", "tuple", "generator"])
@pytest.mark.parametrize("frac", [0.5, 2.0], ids=["clips", "no-clip"])
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_clip_grad_norm_matches_torch(dtype, norm_type, frac, kind, torch_forbidden):
    ours = make_params(dtype, seed=zlib.crc32(repr((dtype, norm_type, frac, kind)).encode()))
    theirs = clone_params(ours)
    snapshot = clone_params(ours)
    p = float(norm_type)
    used = ours[:1] if kind == "tensor" else ours
    exact = exact_norm(used, p)
    max_norm = frac * exact
    before = [(id(g), g.data_ptr()) for g in grads_of(ours)]

    total = gct.clip_grad_norm_(container(kind, ours), max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(container(kind, theirs), max_norm, norm_type)

    assert_same_result_tensor(total, expected, dtype)
    torch.testing.assert_close(total, expected, rtol=rtol(dtype), atol=0)
    # ours is the correctly rounded total (torch's float32 one may be off in the last bits)
    assert total.item() == pytest.approx(exact, rel=1e-7 if dtype == torch.float32
                                         else 1e-14)
    assert_grads_close(ours, theirs, rtol(dtype))
    # in place: same tensor objects, same memory
    assert [(id(g), g.data_ptr()) for g in grads_of(ours)] == before
    if frac == 2.0:  # not clipped: untouched, bit for bit
        assert_grads_equal(ours, snapshot)
    else:
        assert exact_norm(used, p) == pytest.approx(max_norm, rel=1e-5)


@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_get_total_norm_matches_torch(dtype, norm_type, torch_forbidden):
    params = make_params(dtype, seed=7, scale=3.0)
    tensors = grads_of(params)
    snapshot = [t.clone() for t in tensors]
    for arg in (tensors, tuple(tensors), iter(tensors), tensors[1]):
        args2 = tensors[1] if isinstance(arg, torch.Tensor) else list(tensors)
        total = gct.get_total_norm(arg, norm_type)
        expected = torch.nn.utils.get_total_norm(args2, norm_type)
        assert_same_result_tensor(total, expected, dtype)
        torch.testing.assert_close(total, expected, rtol=rtol(dtype), atol=0)
    assert all(torch.equal(a, b) for a, b in zip(tensors, snapshot))  # read only


def test_get_total_norm_of_tensors_requiring_grad(torch_forbidden):
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.nn.Parameter(torch.randn(7, dtype=torch.float64))
    total = gct.get_total_norm([w, w * 2, b], 2.0)
    expected = torch.nn.utils.get_total_norm([w, w * 2, b], 2.0)
    assert_same_result_tensor(total, expected)
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)


def test_mixed_float32_float64_returns_float64(torch_forbidden):
    ours = make_params(torch.float32, seed=3)
    grad = ours[0].grad.double()
    ours[0].grad = None
    ours[0].data = ours[0].data.double()
    ours[0].grad = grad
    theirs = clone_params(ours)
    total = gct.clip_grad_norm_(ours, 0.5)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    assert_same_result_tensor(total, expected, torch.float64)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)
    assert_grads_close(ours, theirs, 1e-5)


@pytest.mark.parametrize("clip_value", [0.0, 0.3, 1.0, math.inf])
@pytest.mark.parametrize("kind", ["tensor", "list", "generator"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_clip_grad_value_matches_torch_exactly(dtype, kind, clip_value, torch_forbidden):
    ours = make_params(dtype, seed=11)
    ours[1].grad[0, 0] = math.nan
    ours[0].grad[0] = -math.inf
    theirs = clone_params(ours)
    before = [(id(g), g.data_ptr()) for g in grads_of(ours)]
    assert gct.clip_grad_value_(container(kind, ours), clip_value) is None
    assert torch.nn.utils.clip_grad_value_(container(kind, theirs), clip_value) is None
    assert_grads_equal(ours, theirs)  # bit for bit, NaN stays NaN
    assert [(id(g), g.data_ptr()) for g in grads_of(ours)] == before


def test_version_counters_are_bumped(torch_forbidden):
    params = make_params(torch.float32, seed=1)
    for fn in (lambda: gct.clip_grad_norm_(params, 0.1), lambda: gct.clip_grad_value_(params, 0.01)):
        versions = [g._version for g in grads_of(params)]
        fn()
        assert all(g._version > v for g, v in zip(grads_of(params), versions))


def test_parameters_without_grad_only():
    ours = make_params(torch.float32, none_at=range(len(SHAPES)))
    total = gct.clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(clone_params(ours), 1.0)
    assert_same_outcome(total, expected)
    assert all(p.grad is None for p in ours)
    # torch 2.13's clip_grad_value_ raises on a list without grads; so does the drop-in
    assert_same_outcome(outcome(lambda: gct.clip_grad_value_(ours, 1.0)),
                        outcome(lambda: torch.nn.utils.clip_grad_value_(clone_params(ours), 1.0)))
    assert_same_outcome(gct.get_total_norm([]), torch.nn.utils.get_total_norm([]))


def test_empty_generator_warns_like_torch():
    with pytest.warns(UserWarning, match="empty generator"):
        total = gct.clip_grad_norm_((p for p in []), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.nn.utils.clip_grad_norm_((p for p in []), 1.0)
    assert_same_outcome(total, expected)


def test_zero_size_gradients(torch_forbidden):
    ours = [torch.nn.Parameter(torch.zeros(0)), torch.nn.Parameter(torch.zeros(3))]
    ours[0].grad = torch.zeros(0)
    ours[1].grad = torch.tensor([3.0, -4.0, 0.0])
    theirs = clone_params(ours)
    for norm_type in (1.0, 2.0):
        assert_same_outcome(gct.get_total_norm(grads_of(ours), norm_type),
                            torch.nn.utils.get_total_norm(grads_of(theirs), norm_type))
    torch.testing.assert_close(gct.clip_grad_norm_(ours, 1.0),
                               torch.nn.utils.clip_grad_norm_(theirs, 1.0), rtol=1e-6, atol=0)
    assert_grads_close(ours, theirs, 1e-6)


# ------------------------------------------------------------------- non-finite gradients

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_error_if_nonfinite_raises_like_torch_and_leaves_grads(dtype, norm_type, bad):
    ours = make_params(dtype, seed=5)
    ours[3].grad[0] = bad
    theirs = clone_params(ours)
    snapshot = clone_params(ours)
    versions = [g._version for g in grads_of(ours)]

    with pytest.raises(RuntimeError) as exc_info:
        gct.clip_grad_norm_(ours, 1.0, norm_type, error_if_nonfinite=True)
    expected = outcome(lambda: torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type,
                                                              error_if_nonfinite=True))
    assert isinstance(expected, RuntimeError)
    assert str(exc_info.value) == str(expected)
    assert_grads_equal(ours, snapshot)  # untouched
    assert [g._version for g in grads_of(ours)] == versions

    assert_same_outcome(outcome(lambda: gct.get_total_norm(grads_of(ours), norm_type, True)),
                        outcome(lambda: torch.nn.utils.get_total_norm(grads_of(theirs),
                                                                      norm_type, True)))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nonfinite_without_error_scales_like_torch(dtype, norm_type, bad):
    ours = make_params(dtype, seed=6)
    ours[5].grad[0] = bad
    theirs = clone_params(ours)
    total = gct.clip_grad_norm_(ours, 1.0, norm_type, error_if_nonfinite=False)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type, error_if_nonfinite=False)
    assert_same_outcome(total, expected)  # NaN / inf, same dtype
    assert_grads_equal(ours, theirs)  # inf total: zeros and NaN; NaN total: all NaN


def test_error_if_nonfinite_false_for_finite_grads_both_ways(torch_forbidden):
    for flag in (False, True):
        ours = make_params(torch.float32, seed=9)
        theirs = clone_params(ours)
        total = gct.clip_grad_norm_(ours, 0.2, 2.0, error_if_nonfinite=flag)
        expected = torch.nn.utils.clip_grad_norm_(theirs, 0.2, 2.0, error_if_nonfinite=flag)
        torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)
        assert_grads_close(ours, theirs, 1e-5)


# --------------------------------------------- the intended difference: float32 overflow

def test_float32_1e20_torch_overflows_ours_is_exact(torch_forbidden):
    """Squares of 1e20 overflow float32: torch's total is inf and it zeroes every gradient;
    gradcore's total is the correct 3.16e20 and the gradients are clipped to max_norm."""
    p = torch.nn.Parameter(torch.zeros(10))
    p.grad = torch.full((10,), 1e20)
    q = clone_params([p])[0]
    ptr = p.grad.data_ptr()

    expected = torch.nn.utils.clip_grad_norm_(q, 1.0)
    assert math.isinf(expected.item()) and torch.all(q.grad == 0)  # torch's behaviour

    total = gct.clip_grad_norm_(p, 1.0)
    assert_same_result_tensor(total, expected, torch.float32)
    assert total.item() == pytest.approx(math.sqrt(10) * 1e20, rel=1e-7)
    assert p.grad.data_ptr() == ptr
    assert torch.linalg.vector_norm(p.grad.double()).item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(p.grad, torch.full((10,), 1 / math.sqrt(10)), rtol=1e-6, atol=0)

    # get_total_norm and error_if_nonfinite: torch raises, we do not
    g = torch.full((10,), 1e20)
    assert math.isinf(torch.nn.utils.get_total_norm([g]).item())
    assert gct.get_total_norm([g]).item() == pytest.approx(math.sqrt(10) * 1e20, rel=1e-7)
    with pytest.raises(RuntimeError):
        torch.nn.utils.get_total_norm([g], error_if_nonfinite=True)
    assert math.isfinite(gct.get_total_norm([g], error_if_nonfinite=True).item())
    p.grad = g
    assert math.isfinite(gct.clip_grad_norm_(p, 1.0, error_if_nonfinite=True).item())


def test_float32_total_beyond_float32_range():
    """An exact total above 3.4e38 is inf in float32: error_if_nonfinite raises (grads
    untouched); otherwise the grads are still clipped by the exact total."""
    p = torch.nn.Parameter(torch.zeros(100))
    p.grad = torch.full((100,), 1e38)
    snapshot = p.grad.clone()
    with pytest.raises(RuntimeError, match="non-finite"):
        gct.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    assert torch.equal(p.grad, snapshot)
    total = gct.clip_grad_norm_(p, 1.0)
    assert total.dtype == torch.float32 and math.isinf(total.item())
    torch.testing.assert_close(p.grad, torch.full((100,), 0.1), rtol=1e-6, atol=0)


# ------------------------------------------------------------------ float16, bfloat16

HALVES = [torch.float16, torch.bfloat16]


def converted_params(dtype, seed, scale=1.0):
    """make_params in float32, then parameters and gradients converted to dtype."""
    ps = make_params(torch.float32, seed=seed, scale=scale)
    for p in ps:
        p.data = p.data.to(dtype)
        if p.grad is not None:
            p.grad = p.grad.to(dtype)
    return ps


def rounded_once(x64, dtype):
    """float64 values rounded once to nearest-even in dtype by NumPy / ml_dtypes (torch's
    own cast from float64 to bfloat16 goes through float32: two roundings)."""
    target = np.float16 if dtype == torch.float16 else pytest.importorskip("ml_dtypes").bfloat16
    with np.errstate(over="ignore"):
        bits = np.ascontiguousarray(np.asarray(x64, np.float64).astype(target)).view(np.int16)
    return torch.from_numpy(bits).view(dtype)


def assert_same_bits(got, want):
    assert got.dtype == want.dtype
    assert torch.equal(got.reshape(-1).view(torch.int16), want.reshape(-1).view(torch.int16))


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf])
def test_half_clip_grad_norm_rounds_the_float64_product_once(dtype, norm_type, torch_forbidden):
    ours = converted_params(dtype, seed=21, scale=3.0)
    theirs = clone_params(ours)
    before = [g.double().numpy() for g in grads_of(ours)]
    exact = exact_norm(ours, norm_type)
    total = gct.clip_grad_norm_(ours, 0.5, norm_type)
    assert total.dtype == torch.float32 and total.shape == torch.Size([])
    assert total.item() == pytest.approx(exact, rel=1e-7)
    factor = min(1.0, 0.5 / (exact + 1e-6))
    for g, x in zip(grads_of(ours), before):
        assert_same_bits(g, rounded_once(x * factor, dtype).reshape(g.shape))
    # torch's 16-bit arithmetic agrees up to its own rounding of the total and the factor
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
    assert expected.dtype == dtype
    tol = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -9
    assert total.item() == pytest.approx(expected.item(), rel=tol)
    assert_grads_close(ours, theirs, 2 * tol)


@pytest.mark.parametrize("dtype", HALVES)
def test_half_norms_exact_where_torch_overflows(dtype, torch_forbidden):
    """float16: 100 gradients of 1e4 have the norm 1e5, beyond float16's 65504; bfloat16:
    100 of 1e20 square beyond float32's range. torch's total is inf and it zeroes the
    gradients; gradcore's is exact and the gradients are clipped to max_norm."""
    value = 1e4 if dtype == torch.float16 else 1e20
    p = torch.nn.Parameter(torch.zeros(100, dtype=dtype))
    p.grad = torch.full((100,), value, dtype=dtype)
    q = clone_params([p])[0]
    exact = 10.0 * float(p.grad[0])
    assert math.isinf(torch.nn.utils.get_total_norm([q.grad]).item())
    assert math.isinf(torch.nn.utils.clip_grad_norm_(q, 1.0).item()) and torch.all(q.grad == 0)

    assert gct.get_total_norm([p.grad], error_if_nonfinite=True).item() == pytest.approx(exact, rel=1e-7)
    total = gct.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    assert total.item() == pytest.approx(exact, rel=1e-7)
    x = np.full(100, float(torch.full((1,), value, dtype=dtype)[0]))
    assert_same_bits(p.grad, rounded_once(x * (1.0 / (exact + 1e-6)), dtype))
    assert torch.linalg.vector_norm(p.grad.double()).item() == pytest.approx(1.0, rel=1e-2)


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("clip_value", [0.1, 1.0, 1e-3])
def test_half_clip_grad_value_is_torchs_bit_for_bit(dtype, clip_value, torch_forbidden):
    ours = converted_params(dtype, seed=22, scale=3.0)
    ours[0].grad[0] = math.nan
    theirs = clone_params(ours)
    ptrs = [g.data_ptr() for g in grads_of(ours)]
    assert gct.clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    assert_grads_equal(ours, theirs)
    assert [g.data_ptr() for g in grads_of(ours)] == ptrs


def test_mixed_16_and_32_bit_gradients_in_one_list(torch_forbidden):
    ps = (converted_params(torch.float16, seed=23, scale=3.0)[:3] + converted_params(torch.bfloat16, seed=24, scale=3.0)[3:5]
          + make_params(torch.float32, seed=25)[5:])
    exact = exact_norm(ps, 2.0)
    total = gct.clip_grad_norm_(ps, 1.0)
    assert total.dtype == torch.float32 and total.item() == pytest.approx(exact, rel=1e-7)
    assert gct.get_total_norm(grads_of(ps)).item() == pytest.approx(1.0, rel=1e-2)


# ------------------------------------------------------------------ handed to torch

def _fallback_cases():
    def dtype_case(dtype):
        def make():
            return converted_params(dtype, seed=2), {}
        return make

    def noncontiguous():
        ps = make_params(torch.float32, seed=4)
        ps[5] = torch.nn.Parameter(torch.zeros(5, 4))
        ps[5].grad = torch.randn(4, 5).t()
        assert not ps[5].grad.is_contiguous()
        return ps, {}

    def norm(norm_type, **extra):
        def make():
            return make_params(torch.float64, seed=8), dict(norm_type=norm_type, **extra)
        return make

    def meta():
        ps = make_params(torch.float32, seed=12, none_at=())
        p = torch.nn.Parameter(torch.zeros(3, device="meta"))
        p.grad = torch.ones(3, device="meta")
        return [p] + ps, {}

    def duplicate():
        ps = make_params(torch.float64, seed=13)
        return ps + [ps[0]], {}

    def sparse():
        p = torch.nn.Parameter(torch.zeros(6, 3))
        p.grad = torch.randn(6, 3).to_sparse()
        return [p], {}

    def empty_inf():
        ps = make_params(torch.float32, seed=14)
        ps[2] = torch.nn.Parameter(torch.zeros(0))
        ps[2].grad = torch.zeros(0)
        return ps, dict(norm_type=math.inf)

    return {
        "complex64": dtype_case(torch.complex64),  # for clip_grad_value_ (clamping)
        "non-contiguous": noncontiguous,
        "norm_type=0": norm(0),
        "norm_type=0.0-error": norm(0.0, error_if_nonfinite=True),
        "norm_type=-1": norm(-1.0),
        "norm_type=-inf": norm(-math.inf),
        "norm_type=nan": norm(math.nan),
        "norm_type=bad-string": norm("fro"),
        "max_norm<0": norm(2.0, max_norm=-0.5),
        "max_norm=nan": norm(2.0, max_norm=math.nan),
        "meta-and-cpu": meta,
        "duplicate-grad": duplicate,
        "sparse": sparse,
        "inf-norm-of-empty": empty_inf,
    }


FALLBACKS = _fallback_cases()


# Complex gradients are gradcore's in the norms (tests/test_complex.py), not in clamping.
@pytest.mark.parametrize("case", [c for c in FALLBACKS if c != "complex64"])
def test_fallback_clip_grad_norm_is_exactly_torch(case, gradcore_forbidden):
    ours, kwargs = FALLBACKS[case]()
    theirs = clone_params(ours) if case != "duplicate-grad" else None
    if theirs is None:  # keep the aliasing: the same parameter twice
        theirs = clone_params(ours[:-1])
        theirs.append(theirs[0])
    bad_max_norm = "max_norm" in kwargs
    max_norm = kwargs.pop("max_norm", 0.3)
    got = outcome(lambda: gct.clip_grad_norm_(ours, max_norm, **kwargs))
    expected = outcome(lambda: torch.nn.utils.clip_grad_norm_(theirs, max_norm, **kwargs))
    assert_same_outcome(got, expected)
    if case not in ("meta-and-cpu",):
        for a, b in zip(ours, theirs):
            if a.grad is not None and a.grad.layout is torch.strided:
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)
    if "norm_type" in kwargs and not bad_max_norm:
        tensors = grads_of(ours)
        assert_same_outcome(outcome(lambda: gct.get_total_norm(tensors, **kwargs)),
                            outcome(lambda: torch.nn.utils.get_total_norm(tensors, **kwargs)))


@pytest.mark.parametrize("case", ["complex64", "non-contiguous", "meta-and-cpu", "duplicate-grad"])
def test_fallback_clip_grad_value_is_exactly_torch(case, gradcore_forbidden):
    ours, _ = FALLBACKS[case]()
    theirs = clone_params(ours)
    assert_same_outcome(outcome(lambda: gct.clip_grad_value_(ours, 0.1)),
                        outcome(lambda: torch.nn.utils.clip_grad_value_(theirs, 0.1)))
    if case != "meta-and-cpu":
        assert_grads_equal(ours, theirs)


@pytest.mark.parametrize("clip_value", [-0.5, math.nan, "x"])
def test_fallback_bad_clip_value_is_exactly_torch(clip_value, gradcore_forbidden):
    ours = make_params(torch.float32, seed=15)
    theirs = clone_params(ours)
    assert_same_outcome(outcome(lambda: gct.clip_grad_value_(ours, clip_value)),
                        outcome(lambda: torch.nn.utils.clip_grad_value_(theirs, clip_value)))
    assert_grads_equal(ours, theirs)


def test_fallback_survives_patching_torch(monkeypatch):
    """The usual drop-in trick, torch.nn.utils.clip_grad_norm_ = gradcore's, must not make
    the fallbacks call themselves."""
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", gct.clip_grad_norm_)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_", gct.clip_grad_value_)
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", gct.get_total_norm)
    ps, _ = FALLBACKS["non-contiguous"]()
    assert torch.nn.utils.clip_grad_norm_(ps, 0.1).dtype == torch.float32
    assert torch.nn.utils.clip_grad_value_(ps, 0.01) is None
    assert torch.nn.utils.get_total_norm(grads_of(ps), 0).dtype == torch.float32


# ------------------------------------------------------------------- packaging, use

def test_import_gradcore_does_not_import_torch(tmp_path):
    code = ("import sys, gradcore\n"
            "assert 'torch' not in sys.modules, 'import gradcore imported torch'\n"
            "assert not hasattr(gradcore, 'torch')\n"
            "import gradcore.torch\n"
            "assert 'torch' in sys.modules and callable(gradcore.torch.clip_grad_norm_)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env, timeout=120)


def test_signatures_match_torch():
    import inspect
    for name in ("clip_grad_norm_", "clip_grad_value_", "get_total_norm"):
        ours = inspect.signature(getattr(gct, name))
        theirs = inspect.signature(getattr(torch.nn.utils, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        assert [p.default for p in ours.parameters.values()] == \
               [p.default for p in theirs.parameters.values()], name
        assert getattr(gct, name).__doc__


def test_training_loop_same_weights_as_torch_float64():
    """nn.Linear trained a few SGD steps with gradient clipping (which triggers): the same
    weights with gradcore's clip_grad_norm_ as with torch's."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(64, 3, generator=gen, dtype=torch.float64)

    def train(clip):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                    torch.nn.Linear(16, 3)).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        totals = []
        for _ in range(8):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            totals.append(clip(model.parameters(), 0.05).item())
            opt.step()
        return [p.detach().clone() for p in model.parameters()], totals

    ours, ours_totals = train(gct.clip_grad_norm_)
    theirs, their_totals = train(torch.nn.utils.clip_grad_norm_)
    assert min(their_totals) > 0.05  # clipping happened at every step
    np.testing.assert_allclose(ours_totals, their_totals, rtol=1e-12)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
