"""In-place clipping (docs/api.md, "Norms and clipping"): clip_by_value_, clip_by_norm_, clip_by_global_norm_
(with its non-finite policies and a given total) and adaptive_clip_, against the float64
NumPy reference on every ISA target and thread count, plus the all-or-nothing rule: an
invalid argument anywhere in a list raises before any array is modified."""

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import gradcore
from reference import (
    POLICIES,
    SCALE_MODES,
    RefNonFiniteError,
    _clip_factor,
    assert_close,
    build_array_list,
    make_array,
    random_shape,
    ref_adaptive_clip,
    ref_clip_by_global_norm,
    ref_clip_by_norm,
    ref_clip_by_value,
    ref_norm,
    ref_norms,
    same_bits,
    same_float,
)

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
ALL_ORDS = [1, 2, math.inf, 0.5, 1.5, 3, 7.3]
INF = math.inf
NAN = math.nan


def norm_rtol(ord):
    if ord == INF:
        return 0.0
    return 1e-12 if ord in (1, 2) else 1e-10


def value_rtol(dtype, ord=2):
    """Clipped values vs the reference (x * factor rounded once): float32 arrays are
    scaled by the factor rounded to float32 (<= 2 ulp apart); float64 ones differ by
    what the norm (hence the factor) may differ."""
    if np.dtype(dtype) == F32:
        return 3e-7
    return 4 * norm_rtol(ord) + 4e-16


def assert_arrays_close(actual, expected, ord=2, what=""):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert_close(a, e, value_rtol(a.dtype, ord), err_msg=f"{what} array {i}")


def assert_all_same_bits(actual, expected):
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert same_bits(a, e), f"array {i} was modified"


def copies(arrays):
    return [a.copy() for a in arrays]


def snan(dtype):
    """A signalling NaN: any arithmetic on it (even * 1.0) quiets it and changes its bits,
    so finding it intact proves the element was never written."""
    if np.dtype(dtype) == F32:
        return np.array([0x7FA00001], np.uint32).view(F32)[0]
    return np.array([0x7FF4000000000001], np.uint64).view(F64)[0]


@st.composite
def inplace_lists(draw, max_n=40, specials=True, modes=SCALE_MODES):
    """A random list of 0..max_n float32/float64 arrays (0-D to 4-D, some empty), mixed in
    one list, at unit/mixed/huge/tiny magnitudes, with now and then +-0.0 and NaN/+-inf."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, max_n))
    dtypes = draw(st.sampled_from([(F32,), (F64,), (F32, F64)]))
    mode = draw(st.sampled_from(modes))
    zeros = draw(st.sampled_from([0.0, 0.0, 0.25, 1.0]))
    n_special = draw(st.sampled_from([0, 0, 0, 1, 3])) if specials else 0
    return build_array_list(seed, n, dtypes, mode, zeros=zeros, n_special=n_special)


#: max_norm as a fraction of the data's own norm, so clipping happens about half the time
fractions = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e6]),
                      st.floats(1e-3, 4.0, allow_nan=False))
eps_values = st.sampled_from([1e-6, 1e-6, 0.0, 1e-3])




def _scale(x):
    return x if math.isfinite(x) and x > 0 else 1.0


# =========================================================================== clip_by_value_


@given(arrays=inplace_lists(), clip_value=st.one_of(
    st.sampled_from([0.0, 1.0, INF]), st.floats(0, 1e3, allow_nan=False)))
def test_clip_by_value_symmetric(isa, threads, arrays, clip_value):
    """clip_by_value_(arrays, c) clamps every element to [-c, c] in place (NaN stays NaN)
    and returns the list it clipped."""
    expected = ref_clip_by_value(arrays, clip_value)
    work = copies(arrays)
    out = gradcore.clip_by_value_(work, clip_value)
    assert out is work
    for a, e in zip(work, expected):
        assert_close(a, e, 0.0, atol=0.0)


bounds = st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False),
                   st.sampled_from([0.0, -0.0, INF, -INF]))


@given(arrays=inplace_lists(), lo=bounds, hi=bounds)
def test_clip_by_value_min_max(isa, threads, arrays, lo, hi):
    """clip_by_value_(arrays, min=lo, max=hi) clamps to [lo, hi]; a missing bound is
    unbounded; the bounds are rounded to each array's dtype."""
    assume(lo is not None or hi is not None)
    assume(lo is None or hi is None or lo <= hi)
    expected = ref_clip_by_value(arrays, min=lo, max=hi)
    work = copies(arrays)
    gradcore.clip_by_value_(work, min=lo, max=hi)
    for a, e in zip(work, expected):
        assert_close(a, e, 0.0, atol=0.0)


def test_clip_by_value_nan_stays_nan_and_inf_is_clamped(isa):
    """NaN is not clamped; +-inf are clamped to the bounds."""
    for dt in (F32, F64):
        a = np.array([np.nan, np.inf, -np.inf, 5.0, -0.25, 0.0] * 7, dt)
        gradcore.clip_by_value_([a], 0.5)
        assert np.isnan(a[::6]).all()
        assert (a[1::6] == 0.5).all() and (a[2::6] == -0.5).all()
        assert (a[3::6] == 0.5).all() and (a[4::6] == -0.25).all() and (a[5::6] == 0).all()


def test_clip_by_value_rounds_bounds_per_dtype():
    """Bounds that are not representable clamp to the bound rounded to the array's dtype."""
    a = np.array([1.0, -1.0], F32)
    b = np.array([1.0, -1.0], F64)
    gradcore.clip_by_value_([a, b], 0.1)
    assert a.tolist() == [np.float32(0.1), -np.float32(0.1)]
    assert b.tolist() == [0.1, -0.1]


@pytest.mark.parametrize("call, exc", [
    (lambda x: gradcore.clip_by_value_(x, 1.0, min=0.0), TypeError),
    (lambda x: gradcore.clip_by_value_(x, 1.0, max=2.0), TypeError),
    (lambda x: gradcore.clip_by_value_(x), TypeError),
    (lambda x: gradcore.clip_by_value_(x, min=2.0, max=1.0), ValueError),
    (lambda x: gradcore.clip_by_value_(x, -1.0), ValueError),
    (lambda x: gradcore.clip_by_value_(x, NAN), ValueError),
    (lambda x: gradcore.clip_by_value_(x, min=NAN), ValueError),
    (lambda x: gradcore.clip_by_value_(x, "1"), TypeError),
])
def test_clip_by_value_argument_errors(call, exc):
    """Both forms at once or neither: TypeError; min > max, a negative or NaN bound:
    ValueError; nothing is modified."""
    x = [np.array([5.0, -5.0], F32)]
    with pytest.raises(exc):
        call(x)
    assert x[0].tolist() == [5.0, -5.0]


# =========================================================================== clip_by_norm_


@given(arrays=inplace_lists(), ord=st.sampled_from(ALL_ORDS), frac=fractions, eps=eps_values)
def test_clip_by_norm_matches_reference(isa, threads, arrays, ord, frac, eps):
    """Each array is scaled on its own by min(1, max_norm / (norm + eps)); the call
    returns the float64 norms before clipping."""
    finite = [n for n in ref_norms(arrays, ord) if math.isfinite(n) and n > 0]
    max_norm = frac * (float(np.median(finite)) if finite else 1.0)
    expected, expected_norms = ref_clip_by_norm(arrays, max_norm, ord, eps=eps)
    work = copies(arrays)
    got = gradcore.clip_by_norm_(work, max_norm, ord, eps=eps)
    assert isinstance(got, np.ndarray) and got.dtype == F64 and got.shape == (len(arrays),)
    assert_close(got, expected_norms, norm_rtol(ord), atol=0.0)
    assert_arrays_close(work, expected, ord, "clip_by_norm_")


def test_clip_by_norm_each_array_on_its_own(isa, threads):
    """Arrays over the bound are scaled to it; those under it are left bit-identical."""
    big = np.array([3.0, -4.0], F32)
    small = np.array([0.3, -0.0, 0.4], F64)
    big2 = np.full((2, 2), 10.0, F64)
    norms = gradcore.clip_by_norm_([big, small, big2], 1.0, eps=0.0)
    assert norms.tolist() == pytest.approx([5.0, 0.5, 20.0], rel=1e-15)
    assert big.tolist() == pytest.approx([0.6, -0.8], rel=1e-7)
    assert same_bits(small, np.array([0.3, -0.0, 0.4], F64))
    assert np.allclose(big2, 0.5, rtol=1e-15, atol=0)


def test_clip_by_norm_factor_formula(isa):
    """The factor is exactly min(1, max_norm / (norm + eps)) (PyTorch's), eps included."""
    for ord, norm in [(2, 5.0), (1, 7.0), (INF, 4.0)]:
        x = np.array([3.0, -4.0])
        got = gradcore.clip_by_norm_([x], 2.0, ord, eps=0.5)
        assert got[0] == norm
        factor = 2.0 / (norm + 0.5)
        assert same_bits(x, np.array([3.0, -4.0]) * factor)


@pytest.mark.parametrize("max_norm, eps", [(0.0, 0.0), (0.0, 1e-6), (1.0, 0.0)])
def test_clip_by_norm_zero_arrays_untouched(isa, max_norm, eps):
    """All-zero arrays (+0.0/-0.0) stay bit-identical whatever max_norm and eps (no 0/0)."""
    z = np.array([0.0, -0.0, -0.0, 0.0] * 5, F32)
    x = z.copy()
    assert gradcore.clip_by_norm_([x], max_norm, eps=eps).tolist() == [0.0]
    assert same_bits(x, z)


def test_clip_by_norm_nonfinite(isa):
    """A NaN norm turns its array NaN; an inf norm zeroes the finite elements (inf * 0 is
    NaN), as PyTorch's formula does; other arrays are unaffected."""
    a = np.array([1.0, np.nan], F32)
    b = np.array([1.0, -2.0, np.inf], F64)
    c = np.array([0.1], F32)
    norms = gradcore.clip_by_norm_([a, b, c], 1.0)
    assert math.isnan(norms[0]) and norms[1] == INF
    assert np.isnan(a).all()
    assert same_bits(b[:2], np.array([0.0, -0.0])) and np.isnan(b[2])
    assert same_bits(c, np.array([0.1], F32))


@pytest.mark.parametrize("bad", [-1.0, NAN])
def test_clip_by_norm_bad_max_norm(bad):
    """Negative or NaN max_norm raises ValueError; nothing is modified."""
    x = [np.array([3.0, 4.0])]
    with pytest.raises(ValueError):
        gradcore.clip_by_norm_(x, bad)
    assert x[0].tolist() == [3.0, 4.0]


# =========================================================================== global norm


@given(arrays=inplace_lists(), ord=st.sampled_from(ALL_ORDS), frac=fractions, eps=eps_values,
       policy=st.sampled_from(POLICIES))
def test_clip_by_global_norm_matches_reference(isa, threads, arrays, ord, frac, eps, policy):
    """All arrays are scaled by min(1, max_norm / (total + eps)), total being the norm of
    them all; the total before clipping is returned; non-finite totals follow the policy
    (error raises with the arrays bit-identical)."""
    zeroed = copies(arrays)
    for z in zeroed:
        z[~np.isfinite(z)] = 0
    max_norm = frac * _scale(ref_norm(zeroed, ord))
    total = ref_norm(arrays, ord)
    factor = _clip_factor(max_norm, ref_norm(zeroed, ord) if policy == "zero" else total, eps)
    work = copies(arrays)
    try:
        expected, expected_total = ref_clip_by_global_norm(arrays, max_norm, ord, eps=eps,
                                                           nonfinite=policy)
    except RefNonFiniteError:
        with pytest.raises(gradcore.NonFiniteGradientError) as info:
            gradcore.clip_by_global_norm_(work, max_norm, ord, eps=eps, nonfinite=policy)
        assert not math.isfinite(info.value.total_norm)
        assert_close(info.value.total_norm, ref_norm(arrays, ord), 0.0)
        assert_all_same_bits(work, arrays)
        return
    total = gradcore.clip_by_global_norm_(work, max_norm, ord, eps=eps, nonfinite=policy)
    assert type(total) is float
    assert_close(total, expected_total, norm_rtol(ord), atol=0.0)
    assert_arrays_close(work, expected, ord, f"policy={policy}")
    if policy == "skip" and not math.isfinite(expected_total):
        assert_all_same_bits(work, arrays)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_clip_by_global_norm_writes_nothing_when_factor_is_one(isa, threads, dtype):
    """With factor == 1 no element is written: a signalling NaN (quieted by any
    arithmetic, even * 1.0) and -0.0 keep their exact bits, in small and big arrays."""
    arrays = [np.array([snan(dtype), -0.0, 0.5], dtype), np.full(200_000, -0.0, dtype),
              np.array([0.25, snan(dtype)], dtype)]
    arrays[1][::1000] = snan(dtype)
    before = copies(arrays)
    total = gradcore.clip_by_global_norm_(arrays, 1.0, total_norm=0.5)
    assert total == 0.5
    assert_all_same_bits(arrays, before)
    # and when the total is computed: data with norm below max_norm stays bit-identical
    data = [np.array([-0.0, 0.1, -0.2], dtype), np.full(100_000, -0.0, dtype)]
    before = copies(data)
    assert gradcore.clip_by_global_norm_(data, 1.0) == pytest.approx(math.sqrt(0.05), rel=1e-7)
    assert_all_same_bits(data, before)


def test_clip_by_global_norm_given_total(isa, threads):
    """total_norm= is used as the total: the arrays are scaled by max_norm / (total_norm
    + eps) whatever their own norm, and total_norm is returned as given."""
    x = np.array([3.0, 4.0])
    y = np.array([1.0, -1.0], F32)
    assert gradcore.clip_by_global_norm_([x, y], 1.0, total_norm=10.0, eps=0.0) == 10.0
    assert same_bits(x, np.array([3.0, 4.0]) * (1.0 / 10.0))
    assert same_bits(y, np.array([1.0, -1.0], F32) * np.float32(1.0 / 10.0))
    # a NaN element does not matter when the total is given (no norm pass)
    z = np.array([2.0, np.nan])
    assert gradcore.clip_by_global_norm_([z], 1.0, total_norm=4.0, eps=0.0,
                                         nonfinite="error") == 4.0
    assert z[0] == 0.5 and np.isnan(z[1])


@pytest.mark.parametrize("given", [INF, NAN])
def test_clip_by_global_norm_given_nonfinite_total(given):
    """A given non-finite total goes through the policy like a computed one."""
    x = np.array([3.0, 4.0])
    with pytest.raises(gradcore.NonFiniteGradientError):
        gradcore.clip_by_global_norm_([x], 1.0, total_norm=given, nonfinite="error")
    assert same_float(gradcore.clip_by_global_norm_([x], 1.0, total_norm=given,
                                                    nonfinite="skip"), given)
    assert x.tolist() == [3.0, 4.0]


def test_clip_by_global_norm_negative_given_total():
    """A negative total_norm raises ValueError."""
    x = [np.array([3.0, 4.0])]
    with pytest.raises(ValueError):
        gradcore.clip_by_global_norm_(x, 1.0, total_norm=-1.0)
    assert x[0].tolist() == [3.0, 4.0]


def _nonfinite_data():
    a = np.array([3.0, np.inf, -4.0, 0.0], F32)
    b = np.array([[np.nan, 12.0], [-0.0, 0.0]], F64)
    c = np.array([-0.0], F64)
    return [a, b, c]


def _inf_data():
    return [np.array([3.0, -np.inf, -4.0, -0.0], F32), np.array([12.0, 0.0]), np.ones(2)]


def test_policy_propagate(isa, threads):
    """"propagate" scales like PyTorch: a NaN total makes everything NaN; an inf total
    (factor 0) zeroes finite elements and turns infinities into NaN."""
    arrays = _nonfinite_data()
    assert math.isnan(gradcore.clip_by_global_norm_(arrays, 1.0))
    assert all(np.isnan(a).all() for a in arrays)
    arrays = _inf_data()
    assert gradcore.clip_by_global_norm_(arrays, 1.0, nonfinite="propagate") == INF
    a, b, c = arrays
    assert same_bits(a[[0, 2, 3]], np.array([0.0, -0.0, -0.0], F32)) and np.isnan(a[1])
    assert same_bits(b, np.zeros(2)) and same_bits(c, np.zeros(2))


@pytest.mark.parametrize("data", [_nonfinite_data, _inf_data])
def test_policy_error(isa, threads, data):
    """"error" raises NonFiniteGradientError (a FloatingPointError) carrying the total,
    and leaves every array bit-identical."""
    arrays = data()
    before = copies(arrays)
    with pytest.raises(gradcore.NonFiniteGradientError) as info:
        gradcore.clip_by_global_norm_(arrays, 1.0, nonfinite="error")
    assert isinstance(info.value, FloatingPointError)
    assert same_float(info.value.total_norm, ref_norm(before))
    assert_all_same_bits(arrays, before)


@pytest.mark.parametrize("data", [_nonfinite_data, _inf_data])
def test_policy_skip(isa, threads, data):
    """"skip" returns the non-finite total and leaves every array bit-identical."""
    arrays = data()
    before = copies(arrays)
    total = gradcore.clip_by_global_norm_(arrays, 1.0, nonfinite="skip")
    assert same_float(total, ref_norm(before))
    assert_all_same_bits(arrays, before)


def test_policy_zero(isa, threads):
    """"zero" sets NaN/inf to 0, then clips by the norm of the rest (here 13: factor
    1/13), returning the non-finite total before zeroing."""
    arrays = _nonfinite_data()
    assert math.isnan(gradcore.clip_by_global_norm_(arrays, 1.0, eps=0.0, nonfinite="zero"))
    a, b, c = arrays
    assert np.allclose(a, np.array([3.0, 0.0, -4.0, 0.0]) / 13, rtol=3e-7, atol=0)
    assert np.allclose(b, np.array([[0.0, 12.0], [0.0, 0.0]]) / 13, rtol=1e-15, atol=0)
    assert same_bits(c, np.array([-0.0]))
    # remaining norm below max_norm: only the non-finite elements change
    arrays = _inf_data()
    assert gradcore.clip_by_global_norm_(arrays, 100.0, nonfinite="zero") == INF
    assert same_bits(arrays[0], np.array([3.0, 0.0, -4.0, -0.0], F32))
    assert same_bits(arrays[1], np.array([12.0, 0.0]))


@pytest.mark.parametrize("kwargs, exc", [
    (dict(max_norm=-1.0), ValueError),
    (dict(max_norm=NAN), ValueError),
    (dict(max_norm=1.0, nonfinite="ignore"), ValueError),
    (dict(max_norm=1.0, nonfinite=None), ValueError),
    (dict(max_norm=1.0, eps=-1.0), ValueError),
    (dict(max_norm="1"), TypeError),
])
def test_clip_by_global_norm_argument_errors(kwargs, exc):
    """Negative/NaN max_norm, an unknown policy, negative eps: ValueError; a non-number
    max_norm: TypeError; nothing is modified."""
    arrays = [np.array([30.0, np.nan], F32), np.array([40.0])]
    before = copies(arrays)
    with pytest.raises(exc):
        gradcore.clip_by_global_norm_(arrays, **kwargs)
    assert_all_same_bits(arrays, before)


# =========================================================================== adaptive_clip_


@st.composite
def agc_cases(draw, max_n=25):
    """(grads, params, clipping, eps, unit_axis): float32/float64 grads (NaN/inf now and
    then) and finite params of any float dtype, of the same random shapes (0-D to 4-D);
    unit_axis in [-2, 1], valid for every array with ndim >= 2."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, max_n))
    grad_dtypes = draw(st.sampled_from([(F32,), (F64,), (F32, F64)]))
    param_scale = draw(st.sampled_from([-3, 0, 1, 2]))
    specials = draw(st.booleans())
    rng = np.random.default_rng(seed)
    grads, params = [], []
    for _ in range(n):
        shape = random_shape(rng, 4, 5)
        grads.append(make_array(rng, shape, grad_dtypes[rng.integers(len(grad_dtypes))], 0,
                                zeros=0.1, specials=int(specials and rng.random() < 0.2)))
        pdt = [F16, F32, F64][rng.integers(3)]
        params.append(make_array(rng, shape, pdt, param_scale if pdt != F16 else 0,
                                 zeros=0.1 * rng.integers(0, 2)))
    clipping = draw(st.one_of(st.sampled_from([0.0, 0.01, 0.1, 1.0, 10.0]),
                              st.floats(1e-3, 100.0)))
    eps = draw(st.sampled_from([1e-3, 0.0, 1.0]))
    unit_axis = draw(st.integers(-2, 1))
    return grads, params, clipping, eps, unit_axis


@given(case=agc_cases())
def test_adaptive_clip_matches_reference(isa, threads, case):
    """Every unit (slice along unit_axis for ndim >= 2, the whole array otherwise) of a
    grad is scaled to clipping * max(||param unit||, eps) when its norm exceeds that; the
    params are not modified; the grads list is returned."""
    grads, params, clipping, eps, unit_axis = case
    expected = ref_adaptive_clip(grads, params, clipping, eps=eps, unit_axis=unit_axis)
    work = copies(grads)
    params_before = copies(params)
    out = gradcore.adaptive_clip_(work, params, clipping, eps=eps, unit_axis=unit_axis)
    assert out is work
    assert_arrays_close(work, expected, 2, "adaptive_clip_")
    assert_all_same_bits(params, params_before)


def test_adaptive_clip_units(isa, threads):
    """Hand-checked units: 0-D and 1-D arrays are one unit; 2-D rows (axis 0), columns
    (axis 1 or -1); a 3-D array along axis -2."""
    g0 = np.array(10.0)
    g1 = np.array([3.0, 4.0])
    g2 = np.array([[3.0, 4.0], [0.03, 0.04]])
    g2c = g2.copy()
    g3 = np.ones((2, 3, 4), F32)
    p0, p1 = np.array(100.0), np.array([0.0, 100.0])
    p2 = np.full((2, 2), 10.0)
    p3 = np.ones((2, 3, 4), F32) * 10
    gradcore.adaptive_clip_([g0, g1, g2], [p0, p1, p2], 0.01, eps=0.0, unit_axis=0)
    assert g0 == 1.0
    assert g1.tolist() == pytest.approx([0.6, 0.8], rel=1e-15)
    # rows: limit 0.01 * sqrt(200) ~ 0.1414; row 0 (norm 5) clipped, row 1 (0.05) not
    assert np.linalg.norm(g2[0]) == pytest.approx(0.01 * math.sqrt(200), rel=1e-15)
    assert g2[1].tolist() == [0.03, 0.04]
    # columns: norms 3.00015 and 4.0002 > 0.1414: both scaled to 0.1414
    gradcore.adaptive_clip_([g2c], [p2], 0.01, eps=0.0, unit_axis=-1)
    assert np.linalg.norm(g2c, axis=0) == pytest.approx([0.01 * math.sqrt(200)] * 2, rel=1e-15)
    # 3-D along axis -2 (= 1): units of 8 elements, param unit norm 10*sqrt(8)
    gradcore.adaptive_clip_([g3], [p3], 0.1, unit_axis=-2)
    unit_norms = np.sqrt((g3.astype(F64) ** 2).sum(axis=(0, 2)))
    assert unit_norms == pytest.approx([math.sqrt(8)] * 3, rel=1e-6)


def test_adaptive_clip_eps_floor(isa):
    """A zero param unit uses eps: the grad unit is clipped to clipping * eps."""
    g = np.array([[3.0, 4.0], [0.0, 1e-6]])
    gradcore.adaptive_clip_([g], [np.zeros((2, 2))], 0.5, eps=1e-3)
    assert np.linalg.norm(g[0]) == pytest.approx(5e-4, rel=1e-15)
    assert g[1].tolist() == [0.0, 1e-6]


def test_adaptive_clip_shape_mismatch_names_both_shapes():
    """grads[i] and params[i] of different shapes: ValueError naming both shapes; nothing
    modified (the mismatch is last, after a grad that would be clipped)."""
    good = np.full((2, 3), 100.0)
    grads = [good, np.ones((2, 3))]
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        gradcore.adaptive_clip_(grads, [np.ones((2, 3)), np.ones((3, 2))])
    assert (good == 100.0).all()
    with pytest.raises(ValueError, match=r"\(6,\).*\(2, 3\)|\(2, 3\).*\(6,\)"):
        gradcore.adaptive_clip_([good, np.ones(6)], [np.ones((2, 3)), np.ones((2, 3))])
    assert (good == 100.0).all()


@pytest.mark.parametrize("axis", [2, -3, 5])
def test_adaptive_clip_unit_axis_out_of_range(axis):
    """unit_axis outside [-ndim, ndim) of a >= 2-D grad: ValueError, nothing modified."""
    good = np.full(4, 100.0)
    grads = [good, np.ones((2, 3))]
    with pytest.raises(ValueError, match="unit_axis"):
        gradcore.adaptive_clip_(grads, [np.ones(4), np.ones((2, 3))], unit_axis=axis)
    assert (good == 100.0).all()


def test_adaptive_clip_other_argument_errors():
    """Different list lengths or negative clipping: ValueError; a non-int unit_axis:
    TypeError; nothing modified."""
    good = np.full(4, 100.0)
    with pytest.raises(ValueError):
        gradcore.adaptive_clip_([good], [np.ones(4), np.ones(4)])
    with pytest.raises(ValueError):
        gradcore.adaptive_clip_([good], [np.ones(4)], -0.1)
    with pytest.raises(TypeError):
        gradcore.adaptive_clip_([good], [np.ones(4)], unit_axis=0.0)
    assert (good == 100.0).all()


# =========================================================================== all-or-nothing


def _good_arrays():
    """Arrays that every in-place call below would change (large values, NaN for zero)."""
    rng = np.random.default_rng(11)
    arrays = [make_array(rng, (7, 5), F32, 2), make_array(rng, (300,), F64, 2),
              make_array(rng, (70_000,), F32, 2), make_array(rng, (), F64, 2)]
    arrays[1][3] = np.nan
    return arrays


def _bad_items():
    ro = np.full(6, 100.0, F32)
    ro.flags.writeable = False
    return {
        "read-only": ro,
        "non-contiguous": np.full(12, 100.0, F64)[::2],
        "fortran-2d": np.asfortranarray(np.full((3, 4), 100.0, F32)),
        "int16": np.full(6, 100, np.int16),
        "int32": np.full(6, 100, np.int32),
        "complex": np.full(6, 100.0, np.complex64),
        "python-list": [100.0, 200.0],
    }


CALLS = {
    "clip_by_value_": lambda arrays: gradcore.clip_by_value_(arrays, 0.1),
    "clip_by_value_min_max": lambda arrays: gradcore.clip_by_value_(arrays, min=-1.0, max=0.5),
    "clip_by_norm_": lambda arrays: gradcore.clip_by_norm_(arrays, 0.1),
    "clip_by_global_norm_": lambda arrays: gradcore.clip_by_global_norm_(arrays, 0.1),
    "clip_by_global_norm_zero": lambda arrays: gradcore.clip_by_global_norm_(
        arrays, 0.1, nonfinite="zero"),
    "clip_by_global_norm_total": lambda arrays: gradcore.clip_by_global_norm_(
        arrays, 0.1, total_norm=1e6),
    "adaptive_clip_": lambda arrays: gradcore.adaptive_clip_(
        arrays, [np.ones(np.shape(a)) for a in arrays], 0.01),
}


# Complex arrays are valid for clipping by a norm (tests/test_complex.py).
INVALID_LAST = [(call, bad) for call in CALLS for bad in _bad_items()
                if not (bad == "complex" and "norm" in call)]


@pytest.mark.parametrize("call,bad", INVALID_LAST)
def test_invalid_array_last_modifies_nothing(isa, threads, call, bad):
    """A read-only, non-contiguous, non-float or non-array item at the END of
    the list raises TypeError/ValueError, and the valid arrays before it (which the call
    would have changed) are left bit-identical."""
    good = _good_arrays()
    before = copies(good)
    item = _bad_items()[bad]
    with pytest.raises((TypeError, ValueError)):
        CALLS[call](good + [item])
    assert_all_same_bits(good, before)
    # sanity: without the bad item the call does change the arrays
    CALLS[call](good)
    assert not all(same_bits(a, b) for a, b in zip(good, before))


@pytest.mark.parametrize("bad", ["read-only", "int32", "float16-ok-for-params"])
def test_adaptive_clip_bad_param_modifies_nothing(bad):
    """adaptive_clip_: params are only read (float16 and read-only params are fine); an
    unsupported param dtype last raises TypeError with no grad modified."""
    good = _good_arrays()
    params = [np.ones(np.shape(a)) for a in good]
    if bad == "read-only":
        for p in params:
            p.flags.writeable = False
        gradcore.adaptive_clip_(good, params, 0.01)
        return
    if bad == "float16-ok-for-params":
        gradcore.adaptive_clip_(good, [p.astype(F16) for p in params], 0.01)
        return
    before = copies(good)
    with pytest.raises(TypeError, match=r"params\[4\]"):
        gradcore.adaptive_clip_(good + [np.ones(3)], params + [np.ones(3, np.int32)], 0.01)
    assert_all_same_bits(good, before)


def test_integer_in_place_names_position():
    """An integer array in an in-place list: TypeError naming arrays[i] and its dtype."""
    with pytest.raises(TypeError, match=r"arrays\[1\].*int16"):
        gradcore.clip_by_global_norm_([np.ones(3, F32), np.ones(3, np.int16)], 1.0)


def test_read_only_error_names_position():
    """A read-only array: the error names arrays[i] and says read-only."""
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises((TypeError, ValueError), match=r"arrays\[1\].*read-only"):
        gradcore.clip_by_norm_([np.ones(3), ro], 1.0)


def test_non_contiguous_error_names_position():
    """A non-contiguous array in an in-place call: ValueError naming arrays[i] and
    C-contiguity."""
    with pytest.raises(ValueError, match=r"arrays\[1\].*contiguous"):
        gradcore.clip_by_value_([np.ones(3), np.ones(6)[::2]], 1.0)


# =========================================================================== big cases

MANY = build_array_list(99, 2000, (F32, F64), "mixed", max_ndim=3, max_dim=5, n_special=0)
BIG = build_array_list(7, 3, (F32, F64), "unit", big_size=1_000_000)
_CACHE = {}


def _cached(key, fn):
    if key not in _CACHE:
        _CACHE[key] = fn()
    return _CACHE[key]


@pytest.mark.parametrize("which", ["many", "big"])
def test_big_clip_by_global_norm(isa, threads, which):
    """2000 arrays / a ~1e6-element array: clip_by_global_norm_ matches the reference."""
    arrays = MANY if which == "many" else BIG
    max_norm = 0.3 * ref_norm(arrays)
    expected, total = _cached(("global", which),
                              lambda: ref_clip_by_global_norm(arrays, max_norm))
    work = copies(arrays)
    assert_close(gradcore.clip_by_global_norm_(work, max_norm), total, 1e-12, atol=0.0)
    assert_arrays_close(work, expected)


@pytest.mark.parametrize("which", ["many", "big"])
def test_big_clip_by_norm(isa, threads, which):
    """2000 arrays / a ~1e6-element array: clip_by_norm_ matches the reference."""
    arrays = MANY if which == "many" else BIG
    max_norm = float(np.median(ref_norms(arrays)))
    expected, norms = _cached(("norm", which), lambda: ref_clip_by_norm(arrays, max_norm))
    work = copies(arrays)
    assert_close(gradcore.clip_by_norm_(work, max_norm), norms, 1e-12, atol=0.0)
    assert_arrays_close(work, expected)


@pytest.mark.parametrize("which", ["many", "big"])
def test_big_clip_by_value(isa, threads, which):
    """2000 arrays / a ~1e6-element array: clip_by_value_ matches the reference."""
    arrays = MANY if which == "many" else BIG
    expected = _cached(("value", which), lambda: ref_clip_by_value(arrays, min=-0.5, max=1.0))
    work = copies(arrays)
    gradcore.clip_by_value_(work, min=-0.5, max=1.0)
    assert_all_same_bits(work, expected)


@pytest.mark.parametrize("which", ["many", "big"])
def test_big_adaptive_clip(isa, threads, which):
    """2000 arrays / a ~1e6-element array (units of ~1e6/7 elements): adaptive_clip_
    matches the reference."""
    arrays = MANY if which == "many" else BIG
    params = _cached(("params", which), lambda: [
        make_array(np.random.default_rng(i), a.shape, F32, 0) for i, a in enumerate(arrays)])
    expected = _cached(("agc", which), lambda: ref_adaptive_clip(arrays, params, 0.05,
                                                                  unit_axis=-1))
    work = copies(arrays)
    gradcore.adaptive_clip_(work, params, 0.05, unit_axis=-1)
    assert_arrays_close(work, expected)


def test_big_results_agree_across_configs(every_config):
    """The clipped arrays of the big cases agree across every (ISA, threads) pair."""
    arrays = BIG + MANY[:50]
    max_norm = 0.3 * ref_norm(arrays)

    def run():
        work = copies(arrays)
        total = gradcore.clip_by_global_norm_(work, max_norm)
        return total, work

    (_, (total0, work0)), *rest = every_config(run)
    for config, (total, work) in rest:
        assert_close(total, total0, 1e-13, atol=0.0, err_msg=str(config))
        for a, b in zip(work, work0):
            assert_close(a, b, value_rtol(a.dtype), err_msg=str(config))


# =========================================================================== float32 factor


@pytest.mark.parametrize("values, max_norm", [([1e38, -1e38], 1e-8), ([3e38] * 100, 1.0),
                                              ([1e38, -1e38], 1e-7)])
def test_float32_clip_with_tiny_factor_is_accurate(values, max_norm):
    """float32 grads whose clip factor lies below float32's normal range still come out
    as x * factor correctly rounded: finite norms of huge float32 data are the library's
    promise, and clipping them must keep both the direction and the target norm."""
    x = np.array(values, F32)
    expected, total = ref_clip_by_global_norm([x], max_norm)
    gradcore.clip_by_global_norm_([x], max_norm)
    assert_close(x, expected[0], 3e-7)
    assert ref_norm([x]) == pytest.approx(max_norm, rel=1e-6)


def unaligned(values):
    """A C-contiguous, writeable array whose data pointer is not a multiple of its item size."""
    values = np.asarray(values)
    buf = np.zeros(values.nbytes + 1, dtype=np.uint8)
    out = buf[1:].view(values.dtype)
    out[...] = values.reshape(-1)
    assert not out.flags.aligned and out.flags.c_contiguous and out.flags.writeable
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_arrays_are_read_but_never_modified_in_place(dtype):
    values = np.arange(1.0, 40.0, dtype=dtype)
    odd = unaligned(values)
    assert same_float(gradcore.global_norm([odd]), gradcore.global_norm([values]))
    good = np.full(5, 9.0)
    before = odd.tobytes()
    with pytest.raises(ValueError, match=r"arrays\[1\] is not aligned"):
        gradcore.clip_by_global_norm_([good, odd], 1.0)
    with pytest.raises(ValueError, match=r"arrays\[1\] is not aligned"):
        gradcore.clip_by_value_([good, odd], 1.0)
    assert odd.tobytes() == before and (good == 9.0).all()
