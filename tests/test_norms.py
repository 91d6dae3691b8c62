"""global_norm, norms and grad_stats against the float64 NumPy reference
(docs/api.md, "Norms and clipping"),
on every ISA target and thread count: random lists of mixed float16/32/64 arrays, the
edge values the contract names, determinism, and argument checking."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcore
from reference import (
    SCALE_MODES,
    assert_close,
    build_array_list,
    ref_grad_stats,
    ref_norm,
    ref_norms,
    same_bits,
    same_float,
)

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FAST_ORDS = [1, 2, math.inf]
OTHER_ORDS = [0.5, 1.5, 3, 7.3]
ALL_ORDS = FAST_ORDS + OTHER_ORDS
INF = math.inf
NAN = math.nan


def rtol(ord):
    """Agreement with the reference: max |x| is exact, L1/L2 accumulate in float64 within
    1e-12, other p (a pow per element) within 1e-10."""
    if ord == INF:
        return 0.0
    return 1e-12 if ord in (1, 2) else 1e-10


def check(actual, expected, ord, what=""):
    assert_close(actual, expected, rtol(ord), atol=0.0 if ord == INF else None,
                 err_msg=f"{what} ord={ord}")


@st.composite
def array_lists(draw, max_n=50, dtypes=(F16, F32, F64), specials=True):
    """A random list of 0..max_n arrays (0-D to 4-D, some of size 0) of dtypes drawn from
    `dtypes` mixed in one list, at unit, mixed, huge or tiny magnitudes, with now and then
    +-0.0 and NaN/+-inf."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, max_n))
    chosen = draw(st.lists(st.sampled_from(dtypes), min_size=1, max_size=len(dtypes),
                           unique=True))
    mode = draw(st.sampled_from(SCALE_MODES))
    zeros = draw(st.sampled_from([0.0, 0.0, 0.25, 1.0]))
    n_special = draw(st.sampled_from([0, 0, 0, 1, 3])) if specials else 0
    return build_array_list(seed, n, chosen, mode, zeros=zeros, n_special=n_special)


# --------------------------------------------------------------------------- vs reference


@given(arrays=array_lists(), ord=st.sampled_from(ALL_ORDS))
def test_global_norm_matches_reference(isa, threads, arrays, ord):
    """global_norm(arrays, ord) equals the norm of the concatenation (float64 reference)
    and is a Python float."""
    got = gradcore.global_norm(arrays, ord)
    assert type(got) is float
    check(got, ref_norm(arrays, ord), ord, "global_norm")


@given(arrays=array_lists(), ord=st.sampled_from(ALL_ORDS))
def test_norms_matches_reference(isa, threads, arrays, ord):
    """norms(arrays, ord) is a float64 array holding each array's own norm."""
    got = gradcore.norms(arrays, ord)
    assert isinstance(got, np.ndarray) and got.dtype == F64 and got.shape == (len(arrays),)
    check(got, ref_norms(arrays, ord), ord, "norms")


@given(arrays=array_lists())
def test_grad_stats_matches_reference(isa, threads, arrays):
    """grad_stats: per-array L2 norm (1e-12), exact max |x| (NaN if NaN) and exact
    non-finite counts (int64)."""
    stats = gradcore.grad_stats(arrays)
    l2, mx, nf = ref_grad_stats(arrays)
    assert isinstance(stats, gradcore.GradStats)
    assert stats.l2_norm.dtype == F64 and stats.max_abs.dtype == F64
    assert stats.nonfinite.dtype == np.dtype(np.int64)
    check(stats.l2_norm, l2, 2, "grad_stats.l2_norm")
    check(stats.max_abs, mx, INF, "grad_stats.max_abs")
    assert np.array_equal(stats.nonfinite, nf)


@settings(max_examples=20)
@given(arrays=array_lists(max_n=8, specials=False), ord=st.sampled_from(ALL_ORDS))
def test_global_norm_is_norm_of_per_array_norms(arrays, ord):
    """For finite data, global_norm == the ord-norm of the vector of per-array norms."""
    norms = gradcore.norms(arrays, ord)
    if not np.isfinite(norms).all():
        return
    assert_close(gradcore.global_norm(arrays, ord), ref_norm([norms], ord), 1e-10)


# --------------------------------------------------------------------------- big lists

MANY = build_array_list(2024, 3000, (F16, F32, F64), "mixed", max_ndim=2, max_dim=5)
BIG = build_array_list(77, 6, (F16, F32, F64), "unit", big_size=1_000_000)
_REF_CACHE = {}


def _ref(name, arrays, ord):
    key = (name, ord)
    if key not in _REF_CACHE:
        _REF_CACHE[key] = (ref_norm(arrays, ord), ref_norms(arrays, ord))
    return _REF_CACHE[key]


@pytest.mark.parametrize("ord", ALL_ORDS)
def test_thousands_of_small_arrays(isa, threads, ord):
    """3000 small arrays of mixed dtypes and magnitudes (many chunks, one per array):
    total and per-array norms match the reference."""
    total, each = _ref("many", MANY, ord)
    check(gradcore.global_norm(MANY, ord), total, ord, "global_norm")
    check(gradcore.norms(MANY, ord), each, ord, "norms")


@pytest.mark.parametrize("ord", ALL_ORDS)
def test_million_element_array(isa, threads, ord):
    """A list holding a ~1e6-element array (chunks split across threads): total and
    per-array norms match the reference."""
    total, each = _ref("big", BIG, ord)
    check(gradcore.global_norm(BIG, ord), total, ord, "global_norm")
    check(gradcore.norms(BIG, ord), each, ord, "norms")


def test_million_element_grad_stats(isa, threads):
    """grad_stats on the ~1e6-element list matches the reference."""
    stats = gradcore.grad_stats(BIG)
    l2, mx, nf = ref_grad_stats(BIG)
    check(stats.l2_norm, l2, 2)
    check(stats.max_abs, mx, INF)
    assert np.array_equal(stats.nonfinite, nf)


# --------------------------------------------------------------------------- determinism


def _results(arrays, ord):
    return (gradcore.global_norm(arrays, ord), gradcore.norms(arrays, ord),
            gradcore.grad_stats(arrays))


def _assert_bit_identical(r1, r2):
    assert same_float(r1[0], r2[0])
    assert same_bits(r1[1], r2[1])
    for a, b in zip(r1[2], r2[2]):
        assert same_bits(a, b)


@pytest.mark.parametrize("ord", [2, 1, 3])
def test_repeated_calls_are_bit_identical(isa, threads, ord):
    """For a fixed ISA and thread count, repeated calls on the big lists give the same
    bits (norms are deterministic)."""
    for arrays in (BIG, MANY):
        first = _results(arrays, ord)
        for _ in range(3):
            _assert_bit_identical(_results(arrays, ord), first)


@settings(max_examples=30)
@given(arrays=array_lists(max_n=20), ord=st.sampled_from(ALL_ORDS))
def test_repeated_calls_are_bit_identical_random(threads, arrays, ord):
    """Determinism on random lists: a second call gives exactly the same bits."""
    _assert_bit_identical(_results(arrays, ord), _results(arrays, ord))


def _agree_across_configs(results, tol):
    (_, ref), *rest = results
    for config, r in rest:
        assert_close(r[0], ref[0], tol, atol=0.0, err_msg=f"global_norm {config}")
        assert_close(r[1], ref[1], tol, atol=0.0, err_msg=f"norms {config}")
        assert_close(r[2].l2_norm, ref[2].l2_norm, tol, atol=0.0, err_msg=f"l2 {config}")
        assert_close(r[2].max_abs, ref[2].max_abs, 0.0, atol=0.0, err_msg=f"max {config}")
        assert np.array_equal(r[2].nonfinite, ref[2].nonfinite)


@pytest.mark.parametrize("ord", ALL_ORDS)
def test_configs_agree_on_big_lists(every_config, ord):
    """Every (ISA, threads) pair gives the same norms within 1e-13 relative."""
    for arrays in (BIG, MANY):
        _agree_across_configs(every_config(lambda: _results(arrays, ord)), 1e-13)


@settings(max_examples=30)
@given(arrays=array_lists(max_n=30), ord=st.sampled_from(ALL_ORDS))
def test_configs_agree_random(every_config, arrays, ord):
    """Every (ISA, threads) pair gives the same norms within 1e-13 on random lists."""
    _agree_across_configs(every_config(lambda: _results(arrays, ord)), 1e-13)


# --------------------------------------------------------------------------- edge values


@pytest.mark.parametrize("ord", ALL_ORDS)
def test_zeros_and_negative_zero(isa, ord):
    """All-zero data (+0.0 and -0.0, every dtype) has norm exactly 0.0."""
    arrays = [np.array([0.0, -0.0, 0.0], dt) for dt in (F16, F32, F64)]
    assert same_float(gradcore.global_norm(arrays, ord), 0.0)
    assert np.array_equal(gradcore.norms(arrays, ord), np.zeros(3))
    stats = gradcore.grad_stats(arrays)
    assert np.array_equal(stats.l2_norm, np.zeros(3)) and np.array_equal(stats.max_abs, np.zeros(3))


def test_empty_list_and_zero_size_arrays(isa, threads):
    """An empty list, and arrays of size 0 in any shape, have norm 0.0 for every ord."""
    empties = [np.zeros(0, F32), np.zeros((3, 0), F64), np.zeros((0, 2, 2), F16)]
    for ord in ALL_ORDS:
        assert same_float(gradcore.global_norm([], ord), 0.0)
        assert gradcore.norms([], ord).shape == (0,)
        assert same_float(gradcore.global_norm(empties, ord), 0.0)
        assert np.array_equal(gradcore.norms(empties, ord), np.zeros(3))
    stats = gradcore.grad_stats([])
    assert all(s.shape == (0,) for s in stats)
    stats = gradcore.grad_stats(empties)
    assert stats.l2_norm.tolist() == [0.0] * 3 and stats.nonfinite.tolist() == [0] * 3


@pytest.mark.parametrize("ord", ALL_ORDS)
def test_subnormals(isa, threads, ord):
    """Subnormal float32 and float64 data have a finite, positive, correct norm (no
    flush to zero, no underflow of the squares)."""
    f32 = np.array([1e-45, -3e-44, 1e-40, 0.0, 2e-39], F32)
    f64 = np.array([5e-324, -1e-320, 3e-310, 2e-308], F64)
    for arrays in ([f32], [f64], [f32, f64]):
        got = gradcore.global_norm(arrays, ord)
        assert got > 0.0
        check(got, ref_norm(arrays, ord), ord, "subnormal")
        check(gradcore.norms(arrays, ord), ref_norms(arrays, ord), ord, "subnormal")


@pytest.mark.parametrize("ord", ALL_ORDS)
def test_float32_1e30_has_finite_norm(isa, threads, ord):
    """float32 values of 1e30 (squares overflow float32) have a finite, correct norm,
    where NumPy's float32 arithmetic overflows."""
    x = np.full(1000, 1e30, F32)
    x[::3] *= -1
    with np.errstate(over="ignore"):
        assert np.isinf(np.sqrt(np.sum(x * x)))  # what float32 arithmetic gives
    got = gradcore.global_norm([x], ord)
    assert math.isfinite(got)
    check(got, ref_norm([x], ord), ord, "1e30 float32")
    v = float(np.float32(1e30))
    expected = {1: 1000 * v, 2: v * math.sqrt(1000), INF: v}.get(ord)
    if expected is not None:
        assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("value", [1e300, -1e300, 1e-300, 1.7e308])
@pytest.mark.parametrize("ord", ALL_ORDS)
def test_float64_extremes_do_not_overflow_or_underflow(isa, threads, ord, value):
    """float64 data of 1e300, 1e-300 (and near DBL_MAX) give finite, nonzero, correct
    norms whenever the true norm is representable."""
    x = np.full(100, value, F64)
    x[1::2] *= 0.5
    expected = ref_norm([x], ord)
    got = gradcore.global_norm([x], ord)
    check(got, expected, ord, f"value={value}")
    if math.isfinite(expected):
        assert math.isfinite(got) and got > 0.0
    if abs(value) < 1e301:
        assert math.isfinite(expected)
    # the same with the extreme values split across many chunks and arrays
    many = [x.copy() for _ in range(5)] + [np.full(70_000, value, F64)]
    check(gradcore.global_norm(many, ord), ref_norm(many, ord), ord, "many")


@pytest.mark.parametrize("ord", ALL_ORDS)
def test_nan_gives_nan_even_with_inf(isa, threads, ord):
    """A NaN anywhere (here late in a big array, after an inf) makes the norm NaN."""
    big = np.ones(100_000, F32)
    big[10] = np.inf
    big[-1] = np.nan
    small = np.array([1.0, np.inf], F64)
    assert math.isnan(gradcore.global_norm([small, big], ord))
    got = gradcore.norms([small, big, np.ones(3, F16)], ord)
    assert got[0] == INF and math.isnan(got[1]) and math.isfinite(got[2])
    assert math.isnan(gradcore.global_norm([np.array([np.nan], F16)], ord))


@pytest.mark.parametrize("ord", ALL_ORDS)
@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_inf_without_nan_gives_inf(isa, threads, ord, dtype):
    """Infinities (of either sign) and no NaN give exactly inf, never NaN."""
    x = np.ones(50_000, dtype)
    x[7] = -np.inf
    x[-2] = np.inf
    assert gradcore.global_norm([np.ones(3, F64), x], ord) == INF
    assert gradcore.norms([x, np.ones(3, F32)], ord)[0] == INF
    stats = gradcore.grad_stats([x])
    assert stats.l2_norm[0] == INF and stats.max_abs[0] == INF and stats.nonfinite[0] == 2


def test_grad_stats_counts_nonfinite_and_max_nan():
    """grad_stats counts NaN and +-inf separately per array; max_abs is NaN when a NaN
    is present."""
    a = np.array([1.0, np.nan, -np.inf, np.inf, -5.0], F32)
    b = np.array([-7.0, 2.0], F64)
    stats = gradcore.grad_stats([a, b])
    assert stats.nonfinite.tolist() == [3, 0]
    assert math.isnan(stats.max_abs[0]) and stats.max_abs[1] == 7.0
    assert math.isnan(stats.l2_norm[0])
    assert stats.l2_norm[1] == pytest.approx(math.sqrt(53), rel=1e-15)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("bad", [0, 0.0, -1, -2.5, -INF, NAN, "two", None, True, False, [2]])
def test_invalid_ord_raises_value_error(bad):
    """ord must be a real p > 0 or inf: 0, negatives, -inf, NaN, non-numbers and bools
    raise ValueError from every function that takes it."""
    arrays = [np.ones(3, F32)]
    with pytest.raises(ValueError, match="ord"):
        gradcore.global_norm(arrays, bad)
    with pytest.raises(ValueError, match="ord"):
        gradcore.norms(arrays, bad)
    with pytest.raises(ValueError, match="ord"):
        gradcore.clip_by_norm_(arrays, 1.0, bad)
    with pytest.raises(ValueError, match="ord"):
        gradcore.clip_by_global_norm_(arrays, 1.0, bad)
    assert np.array_equal(arrays[0], np.ones(3, F32))


@pytest.mark.parametrize("ord", [np.float64(2.0), np.int64(1), np.float32(3.0), 2.0, INF])
def test_numpy_scalar_ords_are_accepted(ord):
    """NumPy scalars and floats are valid ords."""
    x = [np.array([3.0, -4.0])]
    assert gradcore.global_norm(x, ord) == pytest.approx(ref_norm(x, float(ord)), rel=1e-15)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64,
                                   np.complex128, object])
def test_non_float_dtypes_raise_type_error(dtype):
    """A non-float array anywhere in the list raises TypeError naming the dtype and its
    position arrays[i] (complex ones only where |z| has no use: tests/test_complex.py)."""
    bad = np.zeros(3, dtype)
    arrays = [np.ones(2, F32), np.ones(2, F64), bad]
    name = np.dtype(dtype).name
    norm_fns = () if np.dtype(dtype).kind == "c" else (gradcore.global_norm, gradcore.norms)
    for fn in norm_fns:
        with pytest.raises(TypeError, match=rf"arrays\[2\].*{name}|{name}.*arrays\[2\]"):
            fn(arrays)
    with pytest.raises(TypeError, match=rf"arrays\[2\].*{name}|{name}.*arrays\[2\]"):
        gradcore.grad_stats(arrays)


def test_single_ndarray_is_a_list_of_one(isa):
    """A bare ndarray (any ndim) is one array, not a list of rows."""
    x = np.arange(12, dtype=F32).reshape(3, 4)
    assert gradcore.global_norm(x) == gradcore.global_norm([x])
    assert gradcore.global_norm(x) == pytest.approx(ref_norm([x]), rel=1e-15)
    assert gradcore.norms(x).shape == (1,)
    assert gradcore.grad_stats(x).l2_norm.shape == (1,)


def test_generators_and_tuples_are_accepted():
    """Any iterable of arrays works: generators (e.g. over model parameters) and tuples."""
    arrays = build_array_list(5, 10, (F32, F64))
    expected = gradcore.norms(arrays, 2)
    assert same_float(gradcore.global_norm(a for a in arrays), gradcore.global_norm(arrays))
    assert same_bits(gradcore.norms((a for a in arrays), 2), expected)
    assert same_bits(gradcore.norms(tuple(arrays), 2), expected)
    assert same_bits(gradcore.grad_stats(iter(arrays)).l2_norm,
                     gradcore.grad_stats(arrays).l2_norm)


def test_array_likes_and_non_contiguous_views_are_read():
    """Read-only functions accept any array-like: non-contiguous views, Fortran order,
    read-only arrays and nested Python lists (as float64)."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 8)).astype(F32)
    ro = base.copy()
    ro.flags.writeable = False
    items = [base[::2, 1::3], base.T, np.asfortranarray(base), ro, [[3.0, 4.0], [0.0, 1.0]]]
    for ord in ALL_ORDS:
        check(gradcore.global_norm(items, ord), ref_norm([np.asarray(i) for i in items], ord),
              ord)
        check(gradcore.norms(items, ord), ref_norms([np.asarray(i) for i in items], ord), ord)


@pytest.mark.parametrize("bad", ["abc", b"abc", 3.0, None])
def test_non_sequences_raise_type_error(bad):
    """A string, bytes, a number or None is not a list of arrays: TypeError."""
    with pytest.raises(TypeError):
        gradcore.global_norm(bad)


def test_torch_cpu_tensors_are_accepted():
    """torch CPU tensors (float32/float64, also non-contiguous) are read like arrays."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, 7, generator=g), torch.randn(11, dtype=torch.float64, generator=g),
               torch.randn(4, 6, generator=g).t()]
    as_np = [t.numpy() for t in tensors]
    for ord in ALL_ORDS:
        check(gradcore.global_norm(tensors, ord), ref_norm(as_np, ord), ord)
        check(gradcore.norms(tensors, ord), ref_norms(as_np, ord), ord)
    check(gradcore.grad_stats(tensors).l2_norm, ref_grad_stats(as_np)[0], 2)


# =============================================================================== unit_norms

def _unit_shapes():
    return st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@given(shapes=st.lists(_unit_shapes(), min_size=0, max_size=5), seed=st.integers(0, 2**32 - 1),
       unit_axis=st.integers(-4, 3), scale=st.sampled_from([1e-200, 1e-3, 1.0, 1e30, 1e200]),
       dtype=st.sampled_from([F16, F32, F64]))
def test_unit_norms_match_reference(isa, threads, shapes, seed, unit_axis, scale, dtype):
    from reference import ref_unit_norms
    shapes = [s for s in shapes if len(s) < 2 or -len(s) <= unit_axis < len(s)]
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore", under="ignore"):
        arrays = [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]
    got, expected = gradcore.unit_norms(arrays, unit_axis), ref_unit_norms(arrays, unit_axis)
    assert len(got) == len(arrays)
    for g, e, a in zip(got, expected, arrays):
        assert g.dtype == np.float64 and g.shape == ((a.shape[unit_axis],) if a.ndim >= 2 else (1,))
        assert_close(g, e, 1e-12)


def test_unit_norms_are_what_adaptive_clip_bounds(isa, threads):
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal((6, 4, 3)), rng.standard_normal(7).astype(np.float32)]
    params = [0.05 * rng.standard_normal((6, 4, 3)), rng.standard_normal(7).astype(np.float32)]
    limits = [0.1 * np.maximum(p, 1e-3) for p in gradcore.unit_norms(params, unit_axis=1)]
    gradcore.adaptive_clip_(grads, params, 0.1, unit_axis=1)
    for n, limit in zip(gradcore.unit_norms(grads, unit_axis=1), limits):
        assert np.all(n <= limit * (1 + 1e-6))


def test_unit_norms_of_a_tree_follow_the_leaves():
    w, b = np.arange(6.0).reshape(2, 3), np.array([3.0, 4.0])
    got = gradcore.unit_norms({"w": w, "b": b, "frozen": None}, unit_axis=-1)
    np.testing.assert_array_equal(got[0], [5.0])            # "b" < "w": the whole bias
    np.testing.assert_allclose(got[1], np.linalg.norm(w, axis=0), rtol=1e-15)


def test_unit_norms_reject_bad_arguments():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"unit_axis 2 is out of range for grads\[0\] with 2 dimensions"):
        gradcore.unit_norms([a], unit_axis=2)
    with pytest.raises(TypeError, match="unit_axis must be an int"):
        gradcore.unit_norms([a], unit_axis=0.5)
    with pytest.raises(TypeError, match=r"grads\[1\]: dtype int32 is not supported"):
        gradcore.unit_norms([a, np.ones(3, np.int32)])
    assert gradcore.unit_norms([]) == []
