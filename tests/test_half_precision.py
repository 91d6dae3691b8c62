"""float16 and bfloat16 (docs/api.md, "Dtypes"): the norms accumulate them in float64, the
in-place functions compute in float64 from the exact values and round once to
nearest-even. Checked bit for bit against NumPy's float64 computation cast back with
NumPy (float16) and ml_dtypes (bfloat16), whose casts from float64 are correctly rounded,
on every ISA target and thread count; torch tensors through DLPack, with and without
ml_dtypes installed."""

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradcore

ml_dtypes = pytest.importorskip("ml_dtypes")

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
HALVES = [F16, BF16]
# Largest finite magnitudes: float16 65504, bfloat16 about 3.39e38.
MAX = {F16: 65504.0, BF16: float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)}


def f64(a):
    return np.asarray(a).astype(np.float64)


def rounded(x64, dtype):
    """The float64 values rounded once to dtype (NumPy's and ml_dtypes' casts)."""
    with np.errstate(over="ignore"):
        return np.asarray(x64, np.float64).astype(dtype)


def bits(a):
    return np.asarray(a).view(np.uint16)


def assert_same_bits(actual, expected, what=""):
    """Equal bits, except that any NaN matches any NaN (payloads are not specified)."""
    a, e = bits(actual), bits(expected)
    nan_a, nan_e = np.isnan(f64(actual)), np.isnan(f64(expected))
    assert np.array_equal(nan_a, nan_e), what
    bad = np.flatnonzero((a != e) & ~nan_a)
    assert bad.size == 0, (f"{what}: {bad.size} elements differ, first at {bad[0]}: "
                           f"{a[bad[0]]:#06x} != {e[bad[0]]:#06x} (expected)")


def random_half(rng, n, dtype, scale=1.0, specials=0):
    """Normal values times scale, with subnormals, zeros, and up to `specials` NaN/inf."""
    x = rng.standard_normal(n) * scale
    if n > 8:
        x[rng.integers(0, n, n // 8)] *= 2.0 ** -20  # float16 subnormals, bfloat16 tiny
        x[rng.integers(0, n, n // 16)] = 0.0
    if specials and n:
        x[rng.integers(0, n, specials)] = rng.choice([np.nan, np.inf, -np.inf], specials)
    return rounded(x, dtype)


sizes = st.sampled_from([0, 1, 7, 15, 16, 17, 31, 33, 100, 1000, 4099, 70001])


# ------------------------------------------------------------------------ the norms

@given(seed=st.integers(0, 2**32 - 1), n=sizes, ord=st.sampled_from([1, 2, math.inf, 3]))
def test_norms_of_bfloat16_and_float16(isa, threads, seed, n, ord):
    rng = np.random.default_rng(seed)
    arrays = [random_half(rng, n, BF16), random_half(rng, n // 3 + 1, F16),
              rng.standard_normal(5).astype(np.float32)]
    x = np.concatenate([f64(a) for a in arrays])
    expected = np.linalg.norm(x, ord)
    assert gradcore.global_norm(arrays, ord) == pytest.approx(expected, rel=1e-12, abs=0)
    per = gradcore.norms(arrays, ord)
    for a, got in zip(arrays, per):
        assert got == pytest.approx(np.linalg.norm(f64(a), ord), rel=1e-12, abs=0)


def test_norms_do_not_overflow_where_torch_and_numpy_do(isa):
    """float16 values of 60000 (norm beyond float16's range) and bfloat16 values of 1e30
    (squares beyond float32's): finite, exact totals."""
    h = np.full(1000, 60000.0, F16)
    b = np.full(1000, 1e30, BF16)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.linalg.norm(h))                   # NumPy's float16 norm
        assert not np.isfinite(np.sqrt(np.sum(f64(b).astype(np.float32) ** 2)))
    assert gradcore.global_norm([h]) == pytest.approx(math.sqrt(1000) * 60000.0, rel=1e-15)
    assert gradcore.global_norm([b]) == pytest.approx(math.sqrt(1000) * float(b[0]), rel=1e-15)
    stats = gradcore.grad_stats([b])
    assert stats.l2_norm[0] == pytest.approx(math.sqrt(1000) * float(b[0]), rel=1e-15)
    assert stats.max_abs[0] == float(b[0]) and stats.nonfinite[0] == 0


def test_nonfinite_bfloat16_in_norms_and_stats(isa, threads):
    b = random_half(np.random.default_rng(3), 500, BF16)
    b[[17, 400]] = [np.inf, np.nan]
    assert math.isnan(gradcore.global_norm([b]))
    assert gradcore.grad_stats([b]).nonfinite[0] == 2


def test_non_contiguous_bfloat16_is_read_through_a_copy_of_its_bits():
    b = random_half(np.random.default_rng(4), 301, BF16)
    assert gradcore.global_norm([b[::3]]) == pytest.approx(np.linalg.norm(f64(b[::3])), rel=1e-14)


# ------------------------------------------------------------------------ in place

@given(seed=st.integers(0, 2**32 - 1), n=sizes, dtype=st.sampled_from(HALVES),
       max_norm=st.sampled_from([1e-30, 1e-7, 0.3, 1.0, 17.0]), specials=st.integers(0, 2))
def test_clip_by_global_norm_rounds_once(isa, threads, seed, n, dtype, max_norm, specials):
    rng = np.random.default_rng(seed)
    a, b = random_half(rng, n, dtype, 10.0, specials), random_half(rng, 33, dtype)
    expected = [f64(a), f64(b)]
    total = gradcore.clip_by_global_norm_([a, b], max_norm)
    reference_total = np.linalg.norm(np.concatenate(expected))
    assert total == pytest.approx(reference_total, rel=1e-12, nan_ok=True)
    if total == 0.0:
        return  # nothing to scale, whatever eps is
    factor = min(1.0, max_norm / (total + 1e-6)) if not math.isnan(total) else math.nan
    for got, x in zip([a, b], expected):
        with np.errstate(invalid="ignore"):  # an infinite norm scales inf by 0 into NaN
            want = x if factor == 1.0 else rounded(x * factor, dtype)
        assert_same_bits(got, rounded(want, dtype), "clip_by_global_norm_")


@given(seed=st.integers(0, 2**32 - 1), n=sizes, dtype=st.sampled_from(HALVES),
       bounds=st.sampled_from([(-0.1, 0.1), (-1e-6, 3e-3), (-70000.0, 70000.0), (0.3333, 0.3333)]))
def test_clip_by_value_rounds_once(isa, threads, seed, n, dtype, bounds):
    rng = np.random.default_rng(seed)
    a = random_half(rng, n, dtype, specials=1 if n else 0)
    expected = rounded(np.clip(f64(a), *bounds), dtype)
    gradcore.clip_by_value_([a], min=bounds[0], max=bounds[1])
    assert_same_bits(a, expected, "clip_by_value_")


@given(seed=st.integers(0, 2**32 - 1), n=sizes, dtype=st.sampled_from(HALVES))
def test_clip_by_norm_and_zeroing(isa, threads, seed, n, dtype):
    rng = np.random.default_rng(seed)
    a = random_half(rng, n, dtype, 100.0, specials=3 if n else 0)
    x = f64(a)
    gradcore.clip_by_global_norm_([a], 1.0, nonfinite="zero")
    finite = np.where(np.isfinite(x), x, 0.0)
    total = np.linalg.norm(finite)
    factor = min(1.0, 1.0 / (total + 1e-6)) if total else 1.0
    # The norm of what remains is computed by gradcore: allow its last bit.
    want = rounded(finite * factor, dtype)
    assert np.array_equal(np.isnan(f64(a)), np.zeros(n, bool))
    assert np.max(np.abs(f64(a) - f64(want)), initial=0.0) <= np.max(np.abs(f64(want)), initial=0) * 2**-7


def test_half_way_cases_round_once(every_config):
    """x * f where the exact product lies just below a half-way point of the 16-bit
    format and float32 rounds it onto that point: a cast through float32 then rounds to
    even, up; the correct result is down."""
    cases = [(F16, 1.0, 1.0 - 2.0**-12 - 2.0**-40, 0x3BFF), (F16, -1.0, 1.0 - 2.0**-12 - 2.0**-40, 0xBBFF),
             (BF16, 1.0, 1.0 - 2.0**-9 - 2.0**-30, 0x3F7F), (BF16, -1.0, 1.0 - 2.0**-9 - 2.0**-30, 0xBF7F)]
    for dtype, x, factor, want in cases:
        assert bits(rounded(np.float32(factor) * x, dtype))[()] != want  # the double rounding
        assert bits(rounded(factor * x, dtype))[()] == want

        def scaled():
            a = np.full(37, x, dtype)  # 37: whole vectors and a tail on every target
            gradcore.clip_by_global_norm_([a], max_norm=2.0 * factor, total_norm=2.0, eps=0.0)
            c = np.full(37, x, dtype)
            gradcore.clip_by_value_([c], min=-factor, max=factor)
            return bits(a).tolist(), bits(c).tolist()

        for config, (a, c) in every_config(scaled):
            assert a == [want] * 37, (config, dtype, hex(a[0]))
            assert c == [want] * 37, (config, dtype, hex(c[0]))


def test_overflow_and_subnormal_results(isa):
    h = np.array([65504, 1e-7, 6e-8, -3e-8, 2.0**-24], F16)
    gradcore.clip_by_value_([h], min=-1e9, max=1e9)  # unchanged
    for dtype, big in ((F16, 65504.0), (BF16, MAX[BF16])):
        a = np.array([big, -big, 1.0, 2.0**-14], dtype)
        x = f64(a)
        gradcore.clip_by_global_norm_([a], max_norm=1e-9, total_norm=1.0, eps=0.0)
        assert_same_bits(a, rounded(x * 1e-9, dtype), "down to subnormals")


# ------------------------------------------------------------------------ torch tensors

def test_torch_bfloat16_and_float16_tensors_in_place():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(1000, generator=g).to(torch.bfloat16),
               torch.randn(33, generator=g).to(torch.float16) * 100]
    x = [t.double().numpy().copy() for t in tensors]
    ptrs = [t.data_ptr() for t in tensors]
    total = gradcore.clip_by_global_norm_(tensors, 1.0)
    assert total == pytest.approx(np.linalg.norm(np.concatenate(x)), rel=1e-12)
    factor = 1.0 / (total + 1e-6)
    for t, xi, dtype, ptr in zip(tensors, x, [BF16, F16], ptrs):
        assert t.data_ptr() == ptr
        assert_same_bits(t.view(torch.int16).numpy(), rounded(xi * factor, dtype))


def test_torch_bfloat16_without_ml_dtypes(tmp_path):
    """Host bfloat16 memory from DLPack needs no ml_dtypes: a subprocess where it cannot
    be imported clips a torch bfloat16 tensor in place."""
    pytest.importorskip("torch")
    code = """
import sys
sys.modules["ml_dtypes"] = None  # import ml_dtypes now raises ImportError
import torch, gradcore
t = torch.tensor([3.0, 4.0, 1e-3], dtype=torch.bfloat16)
total = gradcore.clip_by_global_norm_([t], 1.0)
s = t[:2].double()
assert abs(total - 5.0) < 1e-3 and abs(float(s.norm()) - 1.0) < 1e-2, (total, t)
assert gradcore.global_norm([t[::2]]) > 0
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------------ what is still refused

def test_refusals_name_the_argument_and_write_nothing():
    a = np.ones(4, np.float32)
    keep = a.copy()
    with pytest.raises(TypeError, match=r"arrays\[1\]: dtype int16"):
        gradcore.clip_by_global_norm_([a, np.ones(3, np.int16)], 0.1)
    assert np.array_equal(a, keep)
    ro = np.ones(5, BF16)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match=r"arrays\[1\] is read-only"):
        gradcore.clip_by_value_([a, ro], 0.5)
    assert np.array_equal(a, keep)
