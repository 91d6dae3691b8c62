"""matmul, dense_forward and dense_backward (docs/api.md, "Dense layer",
and its common rules)
against the float64 NumPy reference in reference_dense.py, on every ISA target and
with 1 and 2 threads.

The GEMM is BLIS-like: micro-tiles MR x NR (4 x 4 scalar, 6 x 16 float32 / 6 x 8 float64
on AVX2, 8 x 32 / 8 x 16 on AVX-512) and cache blocks KC = 256, MC = 144 (float32) / 72
(float64), NC = 3072. Sizes are drawn around all of these: partial tiles, one more or one
less than a block, several blocks. Inputs come in every memory layout the bindings
claim to take (C, Fortran, transposed views, steps, negative steps, unaligned, strides
that are not a whole number of elements).

Tolerances are relative to the elementwise error scale |alpha| |op(a)| |op(b)| + |beta|
|c| (see reference_dense.gemm_tol): float32 1e-5 sqrt(K), float64 1e-12 sqrt(K).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcore
from reference_dense import (
    ACTIVATIONS,
    assert_gemm_close,
    matmul_scale,
    ref_dense_backward,
    ref_dense_backward_scales,
    ref_dense_backward_slack,
    ref_dense_forward,
    ref_dense_forward_scale,
    ref_matmul,
)

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64]
DTYPE_IDS = ["float32", "float64"]

#: row counts around the micro-tile heights (4, 6, 8) and the row blocks (MC = 144 / 72)
M_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 17, 23, 71, 72, 73, 143, 144, 145, 300]
#: depths around the KC = 256 block
K_SIZES = [1, 2, 3, 5, 7, 8, 13, 31, 64, 97, 255, 256, 257, 513]
#: column counts around the micro-tile widths (4, 8, 16, 32)
N_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65]
SMALL = [1, 2, 3, 5, 6, 7, 8, 13, 16, 17, 33]

LAYOUTS = ["C", "F", "T", "Tslice", "step", "neg", "unaligned", "odd_stride"]

#: a quarter of the profile's examples, for the tests with many flags
FEW = max(10, settings.default.max_examples // 4)
HALF = max(10, settings.default.max_examples // 2)


# --------------------------------------------------------------------------- helpers


def with_layout(values, kind):
    """The same values as a 2-D array laid out in memory as `kind` says."""
    values = np.asarray(values)
    dt, shape = values.dtype, values.shape
    r, c = shape
    if kind == "C" or values.size == 0:
        out = np.ascontiguousarray(values)
    elif kind == "F":
        out = np.asfortranarray(values)
    elif kind == "T":  # a transposed view of a C array
        out = np.ascontiguousarray(values.T).T
    elif kind == "step":  # every 2nd row, every 3rd column of a bigger array
        big = np.full((2 * r, 3 * c), np.nan, dtype=dt)
        big[::2, ::3] = values
        out = big[::2, ::3]
    elif kind == "Tslice":  # a block of a transposed bigger array (n x 1: flagged contiguous)
        big = np.full((c + 2, r + 1), np.nan, dtype=dt)
        big[1:c + 1, :r] = values.T
        out = big.T[:r, 1:c + 1]
    elif kind == "neg":  # negative strides
        out = np.ascontiguousarray(values[::-1, ::-1])[::-1, ::-1]
    elif kind == "unaligned":  # data pointer not a multiple of the item size
        buf = np.zeros(values.nbytes + dt.itemsize, dtype=np.uint8)
        out = buf[1:1 + values.nbytes].view(dt).reshape(shape)
        out[...] = values
    elif kind == "odd_stride":  # row stride not a whole number of elements
        row = c * dt.itemsize + 3
        buf = np.zeros(r * row + dt.itemsize, dtype=np.uint8)
        out = np.ndarray(shape, dtype=dt, buffer=buf, strides=(row, dt.itemsize))
        out[...] = values
    else:
        raise AssertionError(kind)
    assert np.array_equal(out, values, equal_nan=True)
    return out


def random_matrix(rng, shape, dtype, kind="normal"):
    if kind == "normal":
        a = rng.standard_normal(shape)
    elif kind == "ints":  # small integers: every product and sum exact
        a = rng.integers(-3, 4, size=shape).astype(np.float64)
    elif kind == "spread":  # magnitudes over many decades, signs mixed
        a = rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 7, size=shape)
    else:
        raise AssertionError(kind)
    return a.astype(dtype)


def stored(shape, trans):
    """The stored shape of an operand whose op() has `shape`."""
    return shape[::-1] if trans else shape


# --------------------------------------------------------------------------- matmul


@st.composite
def matmul_cases(draw, m_sizes=M_SIZES, k_sizes=K_SIZES, n_sizes=N_SIZES):
    return dict(
        m=draw(st.sampled_from(m_sizes)),
        k=draw(st.sampled_from(k_sizes)),
        n=draw(st.sampled_from(n_sizes)),
        dtype=draw(st.sampled_from(DTYPES)),
        trans_a=draw(st.booleans()),
        trans_b=draw(st.booleans()),
        layout_a=draw(st.sampled_from(LAYOUTS)),
        layout_b=draw(st.sampled_from(LAYOUTS)),
        alpha=draw(st.sampled_from([1.0, 1.0, -1.0, 0.5, 2.5, 0.1])),
        beta=draw(st.sampled_from([0.0, 0.0, 1.0, -0.5, 3.0])),
        use_out=draw(st.booleans()),
        data=draw(st.sampled_from(["normal", "normal", "ints", "spread"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def run_matmul_case(case):
    rng = np.random.default_rng(case["seed"])
    m, k, n, dt = case["m"], case["k"], case["n"], case["dtype"]
    a = with_layout(random_matrix(rng, stored((m, k), case["trans_a"]), dt, case["data"]), case["layout_a"])
    b = with_layout(random_matrix(rng, stored((k, n), case["trans_b"]), dt, case["data"]), case["layout_b"])
    alpha, beta = case["alpha"], case["beta"]
    use_out = case["use_out"] or beta != 0
    c0 = random_matrix(rng, (m, n), dt) if beta != 0 else np.full((m, n), np.nan, dtype=dt)
    out = c0.copy() if use_out else None
    a_before, b_before = a.copy(), b.copy()
    kw = dict(trans_a=case["trans_a"], trans_b=case["trans_b"], alpha=alpha, beta=beta)
    got = gradcore.matmul(a, b, out=out, **kw)
    assert isinstance(got, np.ndarray) and got.dtype == dt and got.shape == (m, n)
    if use_out:
        assert got is out
    np.testing.assert_array_equal(a, a_before)  # inputs are never written
    np.testing.assert_array_equal(b, b_before)
    expected = ref_matmul(a, b, out=c0, **kw)
    scale = matmul_scale(a, b, out=c0, **kw)
    assert_gemm_close(got, expected, scale, dt, k, what=f"matmul {case}")


@settings(max_examples=HALF)
@given(case=matmul_cases())
def test_matmul_random(isa, threads, case):
    """Random sizes around tiles and blocks, transposes, layouts, alpha/beta, out=."""
    run_matmul_case(case)


@settings(max_examples=FEW)
@given(case=matmul_cases(m_sizes=SMALL, k_sizes=SMALL, n_sizes=SMALL))
def test_matmul_random_small(isa, threads, case):
    """The same on small shapes only (every partial-tile path, cheaply)."""
    run_matmul_case(case)


BLOCK_SHAPES = [
    (143, 255, 15), (144, 256, 16), (145, 257, 17), (71, 255, 7), (72, 256, 8), (73, 257, 9),
    (300, 513, 33), (6, 256, 16), (7, 257, 17), (1, 513, 1), (300, 1, 65), (5, 1000, 3),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("m,k,n", BLOCK_SHAPES)
def test_matmul_block_boundaries(isa, threads, dtype, m, k, n):
    """Every cache-block boundary the blocking has, all four transpose combinations."""
    for trans_a in (False, True):
        for trans_b in (False, True):
            run_matmul_case(dict(m=m, k=k, n=n, dtype=dtype, trans_a=trans_a, trans_b=trans_b,
                                 layout_a="C", layout_b="C", alpha=1.0, beta=0.0, use_out=False,
                                 data="normal", seed=m * 1000003 + k * 1009 + n))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("m,k,n", [(3, 5, 3073), (13, 257, 3100), (1, 2, 6200)])
def test_matmul_wider_than_nc(isa, threads, dtype, m, k, n):
    """N beyond the NC = 3072 column block (several jc blocks), with beta and out=."""
    run_matmul_case(dict(m=m, k=k, n=n, dtype=dtype, trans_a=False, trans_b=True, layout_a="C",
                         layout_b="F", alpha=-0.5, beta=2.0, use_out=True, data="normal", seed=n))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matmul_exact_small_integers(isa, threads, dtype):
    """Small-integer data: every product and partial sum is exact in both dtypes, so the
    result must equal NumPy's bit for bit, whatever the summation order."""
    rng = np.random.default_rng(7)
    for m, k, n in [(1, 1, 1), (7, 13, 17), (145, 257, 33), (6, 256, 16)]:
        a = rng.integers(-8, 9, size=(m, k)).astype(dtype)
        b = rng.integers(-8, 9, size=(k, n)).astype(dtype)
        np.testing.assert_array_equal(gradcore.matmul(a, b), a @ b)
        np.testing.assert_array_equal(gradcore.matmul(b, a, trans_a=True, trans_b=True), (a @ b).T)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matmul_same_on_every_config(every_config, dtype):
    """Every ISA and thread count gives the reference result; each configuration is
    deterministic (two runs, identical bits)."""
    rng = np.random.default_rng(11)
    a = random_matrix(rng, (301, 259), dtype)
    b = random_matrix(rng, (259, 70), dtype)
    expected, scale = ref_matmul(a, b), matmul_scale(a, b)

    def run():
        first, second = gradcore.matmul(a, b), gradcore.matmul(a, b)
        np.testing.assert_array_equal(first, second)
        return first

    for config, got in every_config(run):
        assert_gemm_close(got, expected, scale, dtype, 259, what=f"config {config}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matmul_broadcast_and_scalar_like_inputs(isa, dtype):
    """Zero strides (np.broadcast_to) and 1 x 1 / 1 x n / n x 1 operands."""
    rng = np.random.default_rng(3)
    row = random_matrix(rng, (1, 37), dtype)
    a = np.broadcast_to(row, (19, 37))  # every row the same, row stride 0
    b = np.broadcast_to(random_matrix(rng, (37, 1), dtype), (37, 21))  # column stride 0
    assert a.strides[0] == 0 and b.strides[1] == 0
    assert_gemm_close(gradcore.matmul(a, b), ref_matmul(a, b), matmul_scale(a, b), dtype, 37)
    for m, k, n in [(1, 1, 1), (1, 9, 1), (9, 1, 9), (1, 1, 40), (40, 1, 1)]:
        x, y = random_matrix(rng, (m, k), dtype), random_matrix(rng, (k, n), dtype)
        assert_gemm_close(gradcore.matmul(x, y), ref_matmul(x, y), matmul_scale(x, y), dtype, k)


def test_matmul_accepts_array_likes(isa):
    """Nested lists (float64) and a torch-free __array__ object are array-likes."""

    class Wrapped:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    a = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    b = [[1.0, 0.5, -1.0], [2.0, 0.0, 1.0]]
    got = gradcore.matmul(a, b)
    assert isinstance(got, np.ndarray) and got.dtype == F64
    np.testing.assert_array_equal(got, np.array(a) @ np.array(b))
    got = gradcore.matmul(Wrapped(np.array(a, np.float32)), Wrapped(np.array(b, np.float32)))
    assert got.dtype == F32
    np.testing.assert_array_equal(got, (np.array(a) @ np.array(b)).astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("m,k,n", [(0, 5, 3), (4, 5, 0), (4, 0, 3), (0, 0, 0), (0, 7, 0), (300, 0, 40)])
def test_matmul_zero_size(isa, threads, dtype, m, k, n):
    """0-size dimensions: K = 0 gives zeros (or beta * out), M = 0 / N = 0 empty results."""
    for trans_a in (False, True):
        for trans_b in (False, True):
            a = np.ones(stored((m, k), trans_a), dtype)
            b = np.ones(stored((k, n), trans_b), dtype)
            kw = dict(trans_a=trans_a, trans_b=trans_b)
            got = gradcore.matmul(a, b, **kw)
            assert got.shape == (m, n) and got.dtype == dtype
            np.testing.assert_array_equal(got, np.zeros((m, n)))
            # beta = 0 never reads out: NaN in it does not survive
            out = np.full((m, n), np.nan, dtype)
            assert gradcore.matmul(a, b, out=out, **kw) is out
            np.testing.assert_array_equal(out, np.zeros((m, n)))
            # K = 0: alpha * 0 + beta * out
            c0 = np.arange(m * n, dtype=dtype).reshape(m, n) - 3
            out = c0.copy()
            assert gradcore.matmul(a, b, alpha=2.0, beta=-1.5, out=out, **kw) is out
            np.testing.assert_array_equal(out, -1.5 * c0 if k == 0 else 2.0 * (a.T if trans_a else a)
                                          @ (b.T if trans_b else b) - 1.5 * c0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matmul_beta_zero_ignores_nan_in_out(isa, threads, dtype):
    """beta == 0 means out's old contents are not read: NaN/inf there are overwritten
    (BLAS convention), on full tiles and on the edges."""
    rng = np.random.default_rng(5)
    for m, k, n in [(12, 9, 32), (7, 9, 17), (145, 3, 5)]:
        a, b = random_matrix(rng, (m, k), dtype), random_matrix(rng, (k, n), dtype)
        out = np.full((m, n), np.nan, dtype)
        out[::2] = np.inf
        assert gradcore.matmul(a, b, out=out, beta=0.0) is out
        assert_gemm_close(out, ref_matmul(a, b), matmul_scale(a, b), dtype, k)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matmul_nan_inf_propagate(isa, dtype):
    """A NaN or inf in an input reaches exactly the outputs NumPy's product reaches."""
    rng = np.random.default_rng(9)
    a, b = random_matrix(rng, (20, 30), dtype), random_matrix(rng, (30, 19), dtype)
    a[3, 7] = np.nan
    a[5, 2] = np.inf
    b[4, 11] = -np.inf
    got = gradcore.matmul(a, b)
    with np.errstate(invalid="ignore"):
        expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))


# ---- out= in place, overlapping an input


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("beta", [0.0, 1.0, -2.0])
def test_matmul_out_in_place(isa, threads, dtype, beta):
    rng = np.random.default_rng(13)
    a, b = random_matrix(rng, (37, 29), dtype), random_matrix(rng, (29, 23), dtype)
    c0 = random_matrix(rng, (37, 23), dtype)
    out = c0.copy()
    pointer = out.ctypes.data
    got = gradcore.matmul(a, b, alpha=0.75, beta=beta, out=out)
    assert got is out and out.ctypes.data == pointer
    assert_gemm_close(out, ref_matmul(a, b, alpha=0.75, beta=beta, out=c0),
                      matmul_scale(a, b, alpha=0.75, beta=beta, out=c0), dtype, 29)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("which", ["a", "b", "both", "a_view_T", "partial"])
def test_matmul_out_overlapping_input(isa, threads, dtype, beta, which):
    """out sharing memory with a or b still gives op(a) @ op(b) of the inputs as they
    were before the call (plus beta times out's old contents)."""
    rng = np.random.default_rng(17)
    n = 70  # more than one micro-tile each way, several K steps of the packed panels
    if which == "partial":
        buf = random_matrix(rng, (2 * n, n), dtype)
        a = buf[:n]  # rows 0..n-1
        out = buf[n // 2:n // 2 + n]  # rows n/2..3n/2-1: half of it is a
        b = random_matrix(rng, (n, n), dtype)
        kw = {}
    elif which == "a_view_T":
        a = np.asfortranarray(random_matrix(rng, (n, n), dtype))
        out = a.T  # C-contiguous view of a's memory
        b = random_matrix(rng, (n, n), dtype)
        kw = dict(trans_a=True)
    else:
        a = random_matrix(rng, (n, n), dtype)
        b = a if which == "both" else random_matrix(rng, (n, n), dtype)
        out = b if which == "b" else a
        kw = dict(trans_b=True)
    a0, b0, c0 = a.copy(), b.copy(), out.copy()
    got = gradcore.matmul(a, b, beta=beta, out=out, **kw)
    assert got is out
    assert_gemm_close(out, ref_matmul(a0, b0, beta=beta, out=c0, **kw),
                      matmul_scale(a0, b0, beta=beta, out=c0, **kw), dtype, n, what=which)


# ---- argument errors


def test_matmul_beta_without_out_is_value_error():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match="out"):
        gradcore.matmul(a, a.T, beta=1.0)
    with pytest.raises(ValueError, match="out"):
        gradcore.matmul(a, a.T, beta=-0.5)


def test_matmul_mixed_dtypes_type_error():
    a32, a64 = np.ones((2, 3), np.float32), np.ones((3, 2), np.float64)
    for a, b in [(a32, a64), (a64.T, a32.T)]:
        with pytest.raises(TypeError) as info:
            gradcore.matmul(a, b)
        assert "float32" in str(info.value) and "float64" in str(info.value)


@pytest.mark.parametrize("bad", [np.int64, np.int32, np.float16, np.complex128, np.bool_])
def test_matmul_unsupported_dtype_type_error(bad):
    good = np.ones((3, 3))
    wrong = np.ones((3, 3), dtype=bad)
    for a, b in [(wrong, wrong), (wrong, good), (good, wrong)]:
        with pytest.raises(TypeError) as info:
            gradcore.matmul(a, b)
        assert np.dtype(bad).name in str(info.value)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_shape_mismatch_names_both_shapes(trans_a, trans_b):
    a, b = np.ones((3, 4)), np.ones((5, 6))
    with pytest.raises(ValueError) as info:
        gradcore.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    assert "(3, 4)" in str(info.value) and "(5, 6)" in str(info.value)


@pytest.mark.parametrize("shape_a,shape_b", [((3,), (3, 2)), ((2, 3), (3,)), ((1, 2, 3), (3, 2)), ((), (1, 1))])
def test_matmul_not_2d_is_value_error(shape_a, shape_b):
    with pytest.raises(ValueError):
        gradcore.matmul(np.ones(shape_a), np.ones(shape_b))


def test_matmul_non_real_alpha_beta_type_error():
    a = np.ones((2, 2))
    for kw in [dict(alpha="2"), dict(alpha=None), dict(alpha=True), dict(beta=[1.0], out=a.copy())]:
        with pytest.raises(TypeError):
            gradcore.matmul(a, a, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matmul_bad_out_rejected(dtype):
    """out must be the result's shape and dtype, writeable and C-contiguous; a wrong one
    is rejected naming out (and for the shape, both shapes), and nothing is written."""
    a, b = np.ones((4, 3), dtype), np.ones((3, 5), dtype)

    def rejected(out, exc, *needles):
        before = out.copy() if isinstance(out, np.ndarray) else None
        with pytest.raises(exc) as info:
            gradcore.matmul(a, b, out=out, beta=0.0)
        msg = str(info.value)
        assert "out" in msg, msg
        for needle in needles:
            assert needle in msg, msg
        if before is not None:
            np.testing.assert_array_equal(out, before)

    rejected(np.zeros((5, 4), dtype), ValueError, "(5, 4)", "(4, 5)")
    rejected(np.zeros((4, 6), dtype), ValueError, "(4, 6)", "(4, 5)")
    rejected(np.zeros((20,), dtype), ValueError, "(20,)", "(4, 5)")
    rejected(np.zeros((4, 10), dtype)[:, ::2], ValueError)  # non-contiguous
    rejected(np.zeros((4, 5), dtype, order="F"), ValueError)  # Fortran order
    misaligned = np.zeros(20 * np.dtype(dtype).itemsize + 1, np.uint8)[1:].view(dtype).reshape(4, 5)
    rejected(misaligned, ValueError, "aligned")
    read_only = np.zeros((4, 5), dtype)
    read_only.flags.writeable = False
    rejected(read_only, ValueError)
    other = F64 if dtype == F32 else F32
    rejected(np.zeros((4, 5), other), TypeError)
    rejected(np.zeros((4, 5), np.int64), TypeError)
    with pytest.raises(TypeError, match="out"):
        gradcore.matmul(a, b, out=[[0.0] * 5] * 4)


def test_matmul_and_dense_concurrent_python_threads(isa, threads):
    """The GIL is released around the kernels and they are re-entrant: several Python
    threads calling at once (sharing the kernel thread pool and its packing buffers)
    each get their own right answer."""
    import threading

    rng = np.random.default_rng(53)
    cases = []
    for m, k, n, dt in [(300, 257, 70, F64), (145, 513, 33, F32), (7, 5, 3100, F64), (64, 64, 64, F32),
                        (200, 300, 17, F64), (33, 700, 90, F32)]:
        a, b = random_matrix(rng, (m, k), dt), random_matrix(rng, (k, n), dt)
        bias = random_matrix(rng, (1, n), dt)[0]
        cases.append((a, b, bias, ref_matmul(a, b), matmul_scale(a, b),
                      ref_dense_forward(a, b.T, bias, "tanh"), ref_dense_forward_scale(a, b.T, bias)))
    failures = []

    def worker(case):
        a, b, bias, expected, scale, y_expected, y_scale = case
        try:
            for _ in range(5):
                assert_gemm_close(gradcore.matmul(a, b), expected, scale, a.dtype, a.shape[1])
                bt = np.ascontiguousarray(b.T)
                assert_gemm_close(gradcore.dense_forward(a, bt, bias, "tanh"), y_expected, y_scale,
                                  a.dtype, a.shape[1])
        except BaseException as exc:  # reported from the main thread below
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(c,)) for c in cases]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not failures, failures[0]


# --------------------------------------------------------------------------- dense forward


def _layer(rng, batch, n_in, n_out, dtype, scale=1.0):
    x = random_matrix(rng, (batch, n_in), dtype)
    w = (rng.standard_normal((n_out, n_in)) * (scale / math.sqrt(max(n_in, 1)))).astype(dtype)
    b = (rng.standard_normal(n_out) * scale).astype(dtype)
    return x, w, b


@st.composite
def dense_cases(draw):
    return dict(
        batch=draw(st.sampled_from([1, 2, 3, 5, 6, 7, 8, 13, 17, 73, 145])),
        n_in=draw(st.sampled_from([1, 2, 3, 7, 8, 16, 31, 255, 257])),
        n_out=draw(st.sampled_from([1, 2, 3, 4, 5, 8, 9, 15, 16, 17, 33, 65])),
        dtype=draw(st.sampled_from(DTYPES)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        has_bias=draw(st.booleans()),
        slope=draw(st.sampled_from([0.01, 0.2, 0.5, 0.0])),
        scale=draw(st.sampled_from([1.0, 1.0, 8.0, 0.01])),
        layout_x=draw(st.sampled_from(LAYOUTS)),
        layout_w=draw(st.sampled_from(LAYOUTS)),
        bias_strided=draw(st.booleans()),
        use_out=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=HALF)
@given(case=dense_cases())
def test_dense_forward_random(isa, threads, case):
    rng = np.random.default_rng(case["seed"])
    dt, act, slope = case["dtype"], case["activation"], case["slope"]
    x, w, b = _layer(rng, case["batch"], case["n_in"], case["n_out"], dt, case["scale"])
    x, w = with_layout(x, case["layout_x"]), with_layout(w, case["layout_w"])
    if not case["has_bias"]:
        b = None
    elif case["bias_strided"]:
        big = np.full(2 * b.size, np.nan, dt)
        big[::2] = b
        b = big[::2]
    out = np.full((case["batch"], case["n_out"]), np.nan, dt) if case["use_out"] else None
    got = gradcore.dense_forward(x, w, b, act, negative_slope=slope, out=out)
    assert isinstance(got, np.ndarray) and got.dtype == dt
    assert got.shape == (case["batch"], case["n_out"])
    if out is not None:
        assert got is out
    assert_gemm_close(got, ref_dense_forward(x, w, b, act, slope), ref_dense_forward_scale(x, w, b),
                      dt, case["n_in"], what=f"dense_forward {case}")


def _check_forward_with_and_without_bias(x, w, b, dtype, activation):
    for bias in (b, None):
        got = gradcore.dense_forward(x, w, bias, activation, negative_slope=0.2)
        assert_gemm_close(got, ref_dense_forward(x, w, bias, activation, 0.2),
                          ref_dense_forward_scale(x, w, bias), dtype, x.shape[1],
                          what=f"{activation} {(x.shape[0], x.shape[1], w.shape[0])} bias={bias is not None}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_forward_few_rows_transposed_tiles(isa, threads, dtype, activation):
    """Few rows (batch <= 64) are computed as W x^T with transposed tile stores: full and
    partial tiles in both directions (out around the 8-row panels, batch around the
    16/32-lane panels), depths on both sides of the unblocked-depth limit (1024)."""
    rng = np.random.default_rng(23)
    for batch, n_in, n_out in [(32, 256, 256), (64, 1024, 24), (33, 1025, 17), (1, 7, 9),
                               (15, 300, 7), (17, 64, 65), (48, 1, 8), (64, 513, 31)]:
        x, w, b = _layer(rng, batch, n_in, n_out, dtype, scale=2.0)
        _check_forward_with_and_without_bias(x, w, b, dtype, activation)
        got = gradcore.matmul(x, w, trans_b=True, alpha=-0.5)
        ref = -0.5 * (x.astype(np.float64) @ w.astype(np.float64).T)
        assert_gemm_close(got, ref, np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T * 0.5,
                          dtype, n_in, what=f"matmul trans_b {(batch, n_in, n_out)}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_forward_every_activation_blocks(isa, threads, dtype, activation):
    """Each activation and the bias on shapes crossing MC, KC and NC (the bias offset of
    every column block, the partial tiles' bias copy)."""
    rng = np.random.default_rng(19)
    for batch, n_in, n_out in [(145, 257, 33), (7, 5, 3100), (73, 3, 17)]:
        x, w, b = _layer(rng, batch, n_in, n_out, dtype, scale=2.0)
        _check_forward_with_and_without_bias(x, w, b, dtype, activation)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_forward_nan_propagates(isa, dtype, activation):
    """A NaN in x makes its row NaN after every activation (relu/leaky_relu included:
    max(NaN, 0) must not turn it into 0)."""
    rng = np.random.default_rng(23)
    x, w, b = _layer(rng, 9, 11, 19, dtype)
    x[4, 3] = np.nan
    got = gradcore.dense_forward(x, w, b, activation)
    assert np.isnan(got[4]).all()
    assert not np.isnan(np.delete(got, 4, axis=0)).any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_forward_zero_size(isa, threads, dtype, activation):
    b3 = np.array([0.5, -1.0, 2.0], dtype)
    y = gradcore.dense_forward(np.ones((0, 4), dtype), np.ones((3, 4), dtype), b3, activation)
    assert y.shape == (0, 3) and y.dtype == dtype
    y = gradcore.dense_forward(np.ones((5, 4), dtype), np.ones((0, 4), dtype), None, activation)
    assert y.shape == (5, 0)
    # in_features = 0: y = act(bias) on every row
    y = gradcore.dense_forward(np.ones((5, 0), dtype), np.ones((3, 0), dtype), b3, activation,
                               negative_slope=0.2)
    assert_gemm_close(y, np.tile(ref_dense_forward(np.zeros((1, 0)), np.zeros((3, 0)), b3, activation, 0.2),
                                 (5, 1)), np.zeros((5, 3)), dtype, 1)
    y = gradcore.dense_forward(np.ones((5, 0), dtype), np.ones((3, 0), dtype), None, activation)
    assert_gemm_close(y, ref_dense_forward(np.zeros((5, 0)), np.zeros((3, 0)), None, activation),
                      np.zeros((5, 3)), dtype, 1)


def test_dense_forward_errors():
    x, w, b = np.ones((4, 3)), np.ones((5, 3)), np.ones(5)

    def value_error(*needles, **kw):
        args = dict(x=x, weight=w, bias=b)
        args.update(kw)
        with pytest.raises(ValueError) as info:
            gradcore.dense_forward(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)
        for needle in needles:
            assert needle in str(info.value), str(info.value)

    value_error("x", "weight", "(4, 3)", "(5, 6)", weight=np.ones((5, 6)))
    value_error("x", "weight", "(4, 7)", "(5, 3)", x=np.ones((4, 7)))
    value_error("bias", "(4,)", "(5,)", bias=np.ones(4))
    value_error("bias", "(1, 5)", bias=np.ones((1, 5)))
    value_error("out", "(5, 4)", "(4, 5)", out=np.zeros((5, 4)))
    value_error("out", out=np.zeros((4, 10))[:, ::2])
    read_only = np.zeros((4, 5))
    read_only.flags.writeable = False
    value_error("out", out=read_only)
    value_error("activation", "swish", activation="swish")
    value_error("x", x=np.ones(3))
    value_error("weight", weight=np.ones((1, 5, 3)))
    for kw, names in [(dict(weight=w.astype(np.float32)), ("weight", "float32", "float64")),
                      (dict(bias=b.astype(np.float32)), ("bias", "float32", "float64")),
                      (dict(out=np.zeros((4, 5), np.float32)), ("out", "float32", "float64")),
                      (dict(x=x.astype(np.int64), weight=w.astype(np.int64), bias=None), ("int64",))]:
        args = dict(x=x, weight=w, bias=b)
        args.update(kw)
        with pytest.raises(TypeError) as info:
            gradcore.dense_forward(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)
        for name in names:
            assert name in str(info.value), str(info.value)
    with pytest.raises(TypeError, match="negative_slope"):
        gradcore.dense_forward(x, w, b, "leaky_relu", negative_slope="0.1")


def test_dense_forward_out_overlapping_input():
    """out sharing memory with an input: either the right answer or a ValueError naming
    out, with the inputs untouched; never a silently wrong result."""
    rng = np.random.default_rng(29)
    x = random_matrix(rng, (16, 16), F64)
    w = random_matrix(rng, (16, 16), F64)
    for out_is in ("x", "weight"):
        xx, ww = x.copy(), w.copy()
        out = xx if out_is == "x" else ww
        expected = ref_dense_forward(x, w, None, "tanh")
        try:
            got = gradcore.dense_forward(xx, ww, None, "tanh", out=out)
        except ValueError as exc:
            assert "out" in str(exc)
            np.testing.assert_array_equal(xx, x)
            np.testing.assert_array_equal(ww, w)
        else:
            assert got is out
            assert_gemm_close(got, expected, ref_dense_forward_scale(x, w), F64, 16)


# --------------------------------------------------------------------------- dense backward


@st.composite
def backward_cases(draw):
    case = draw(dense_cases())
    case.update(
        need_grad_x=draw(st.booleans()),
        accumulate=draw(st.booleans()),
        give_buffers=draw(st.booleans()),
        layout_gy=draw(st.sampled_from(["C", "F", "step", "Tslice"])),
        layout_y=draw(st.sampled_from(["C", "T", "neg", "Tslice"])),
    )
    return case


def run_backward_case(case):
    rng = np.random.default_rng(case["seed"])
    dt, act, slope = case["dtype"], case["activation"], case["slope"]
    batch, n_in, n_out = case["batch"], case["n_in"], case["n_out"]
    has_bias, need_gx, acc = case["has_bias"], case["need_grad_x"], case["accumulate"]
    x, w, b = _layer(rng, batch, n_in, n_out, dt, case["scale"])
    y = ref_dense_forward(x, w, b if has_bias else None, act, slope).astype(dt)
    grad_y = random_matrix(rng, (batch, n_out), dt)
    x, w = with_layout(x, case["layout_x"]), with_layout(w, case["layout_w"])
    grad_y, y = with_layout(grad_y, case["layout_gy"]), with_layout(y, case["layout_y"])
    inputs_before = [a.copy() for a in (grad_y, x, w, y)]

    shapes = dict(grad_x=(batch, n_in), grad_weight=(n_out, n_in), grad_bias=(n_out,))
    wanted = dict(grad_x=need_gx, grad_weight=True, grad_bias=has_bias)
    buffers, initial = {}, {}
    if acc or case["give_buffers"]:
        for name, shape in shapes.items():
            if wanted[name]:
                initial[name] = random_matrix(rng, (1, math.prod(shape)), dt).reshape(shape)
                # accumulate=False: the old contents must not matter, NaN included
                buffers[name] = initial[name].copy() if acc else np.full(shape, np.nan, dt)
    got = gradcore.dense_backward(grad_y, x, w, y, act, negative_slope=slope, has_bias=has_bias,
                                  need_grad_x=need_gx, accumulate=acc, **buffers)
    assert isinstance(got, tuple) and len(got) == 3
    for a, before in zip((grad_y, x, w, y), inputs_before):
        np.testing.assert_array_equal(a, before)

    expected = ref_dense_backward(grad_y, x, w, y, act, slope, has_bias=has_bias, need_grad_x=need_gx)
    scales = ref_dense_backward_scales(grad_y, x, w, y, act, slope)
    slack = ref_dense_backward_slack(grad_y, x, w, dt)
    depth = dict(grad_x=n_out, grad_weight=batch, grad_bias=batch)
    for i, name in enumerate(("grad_x", "grad_weight", "grad_bias")):
        if not wanted[name]:
            assert got[i] is None, name
            continue
        assert isinstance(got[i], np.ndarray) and got[i].dtype == dt and got[i].shape == shapes[name], name
        if name in buffers:
            assert got[i] is buffers[name], name
        exp, scale = expected[i], scales[i]
        if acc:
            exp = exp + initial[name].astype(np.float64)
            scale = scale + np.abs(initial[name].astype(np.float64))
        assert_gemm_close(got[i], exp, scale, dt, depth[name], extra=slack[i], what=f"{name} {case}")


@settings(max_examples=HALF)
@given(case=backward_cases())
def test_dense_backward_random(isa, threads, case):
    run_backward_case(case)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("has_bias,need_grad_x,accumulate", [
    (True, True, False), (False, True, False), (True, False, True), (False, False, False),
    (True, True, True)])
def test_dense_backward_flags(isa, threads, dtype, activation, has_bias, need_grad_x, accumulate):
    """Every activation with every flag combination, on a shape that crosses the
    backward's 256-column strips and the GEMM blocks."""
    run_backward_case(dict(batch=145, n_in=33, n_out=300, dtype=dtype, activation=activation,
                           has_bias=has_bias, slope=0.2, scale=2.0, layout_x="C", layout_w="C",
                           need_grad_x=need_grad_x, accumulate=accumulate, give_buffers=False,
                           layout_gy="C", layout_y="C", seed=31, bias_strided=False, use_out=False))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch,n_in,n_out", [(0, 4, 3), (5, 0, 3), (5, 4, 0), (0, 0, 0)])
def test_dense_backward_zero_size(isa, dtype, activation, batch, n_in, n_out):
    """batch = 0: zero weight and bias gradients; in/out features = 0: empty or zero."""
    gy, y = np.ones((batch, n_out), dtype) * 0.5, np.full((batch, n_out), 0.25, dtype)
    x, w = np.ones((batch, n_in), dtype), np.ones((n_out, n_in), dtype)
    gx, gw, gb = gradcore.dense_backward(gy, x, w, y, activation)
    ex, ew, eb = ref_dense_backward(gy, x, w, y, activation)
    for got, exp in [(gx, ex), (gw, ew), (gb, eb)]:
        assert got.dtype == dtype and got.shape == exp.shape
        np.testing.assert_allclose(got, exp, rtol=1e-6)
    # accumulate into buffers: adding nothing leaves them as they were
    bufs = dict(grad_x=np.full(ex.shape, 2.0, dtype), grad_weight=np.full(ew.shape, 3.0, dtype),
                grad_bias=np.full(eb.shape, 4.0, dtype))
    got = gradcore.dense_backward(gy, x, w, y, activation, accumulate=True, **bufs)
    for g, name, exp in zip(got, ("grad_x", "grad_weight", "grad_bias"), (ex, ew, eb)):
        assert g is bufs[name]
        np.testing.assert_allclose(g, exp + {"grad_x": 2.0, "grad_weight": 3.0, "grad_bias": 4.0}[name],
                                   rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_backward_single_output_column_views(isa, dtype):
    """out_features = 1 (a regression head): grad_y and y as (batch, 1) columns of
    transposed arrays, or a (1, 1) slice with steps, are valid inputs like any other
    strided array."""
    rng = np.random.default_rng(43)
    x, w, b = _layer(rng, 5, 3, 1, dtype)
    y = ref_dense_forward(x, w, b, "tanh").astype(dtype)
    gy = random_matrix(rng, (5, 1), dtype)
    expected = ref_dense_backward(gy, x, w, y, "tanh")
    def column_of_transposed(v):  # (batch, 1) view with strides (itemsize, 2 * batch * itemsize)
        big = np.zeros((2, v.shape[0]), dtype)
        big[1] = v[:, 0]
        return big.T[:, 1:]

    for g_view, y_view in [(column_of_transposed(gy), y), (gy, column_of_transposed(y))]:
        assert g_view.flags.c_contiguous and y_view.flags.c_contiguous
        got = gradcore.dense_backward(g_view, x, w, y_view, "tanh")
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5)
    one = np.full((3, 3), 0.5, dtype)[::2, ::2][:1, :1]  # strides (6, 2) items, flagged contiguous
    got = gradcore.dense_backward(one, x[:1], w, one, "identity")
    for g, e in zip(got, ref_dense_backward(one, x[:1], w, one, "identity")):
        np.testing.assert_allclose(g, e, rtol=1e-6)


def test_dense_backward_accumulate_needs_buffers():
    gy, x, w, y = np.ones((4, 5)), np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))
    full = dict(grad_x=np.zeros((4, 3)), grad_weight=np.zeros((5, 3)), grad_bias=np.zeros(5))
    for missing in full:
        given_ = {k: v.copy() for k, v in full.items() if k != missing}
        snapshot = {k: v.copy() for k, v in given_.items()}
        with pytest.raises(ValueError, match=missing):
            gradcore.dense_backward(gy, x, w, y, accumulate=True, **given_)
        for k, v in given_.items():  # nothing was added before the error
            np.testing.assert_array_equal(v, snapshot[k], err_msg=k)
    # buffers that are not computed are not needed
    gx, gw, gb = gradcore.dense_backward(gy, x, w, y, accumulate=True, need_grad_x=False, has_bias=False,
                                         grad_weight=np.ones((5, 3)))
    assert gx is None and gb is None
    np.testing.assert_array_equal(gw, np.full((5, 3), 5.0))


def test_dense_backward_errors():
    gy, x, w, y = np.ones((4, 5)), np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))

    def call(**kw):
        args = dict(grad_y=gy, x=x, weight=w, y=y)
        args.update(kw)
        return gradcore.dense_backward(args.pop("grad_y"), args.pop("x"), args.pop("weight"), args.pop("y"),
                                       **args)

    def value_error(*needles, **kw):
        with pytest.raises(ValueError) as info:
            call(**kw)
        for needle in needles:
            assert needle in str(info.value), str(info.value)

    value_error("grad_y", "(4, 6)", "(4, 5)", grad_y=np.ones((4, 6)))
    value_error("grad_y", "(3, 5)", "(4, 5)", grad_y=np.ones((3, 5)))
    value_error("y", "(5, 4)", "(4, 5)", y=np.ones((5, 4)))
    value_error("x", "weight", "(4, 3)", "(5, 2)", weight=np.ones((5, 2)))
    value_error("grad_x", "(3, 4)", "(4, 3)", grad_x=np.zeros((3, 4)))
    value_error("grad_weight", "(3, 5)", "(5, 3)", grad_weight=np.zeros((3, 5)))
    value_error("grad_bias", "(4,)", "(5,)", grad_bias=np.zeros(4))
    value_error("grad_weight", grad_weight=np.zeros((5, 6))[:, ::2])
    read_only = np.zeros((5, 3))
    read_only.flags.writeable = False
    value_error("grad_weight", grad_weight=read_only)
    value_error("activation", "swish", activation="swish")
    value_error("x", x=np.ones(3))
    for kw, names in [(dict(grad_y=gy.astype(np.float32)), ("grad_y", "float32", "float64")),
                      (dict(y=y.astype(np.float32)), ("y", "float32", "float64")),
                      (dict(weight=w.astype(np.float32)), ("weight", "float32", "float64")),
                      (dict(grad_weight=np.zeros((5, 3), np.float32)), ("grad_weight", "float32"))]:
        with pytest.raises(TypeError) as info:
            call(**kw)
        for name in names:
            assert name in str(info.value), str(info.value)


def test_dense_backward_output_overlapping_input():
    """A gradient buffer sharing memory with an input: a ValueError naming both, or the
    right answer; inputs untouched on error."""
    rng = np.random.default_rng(37)
    x, w = random_matrix(rng, (6, 6), F64), random_matrix(rng, (6, 6), F64)
    gy, y = random_matrix(rng, (6, 6), F64), np.tanh(random_matrix(rng, (6, 6), F64))
    expected = ref_dense_backward(gy, x, w, y, "tanh")
    for buf_name, inp in [("grad_weight", "weight"), ("grad_x", "x"), ("grad_x", "grad_y")]:
        args = dict(grad_y=gy.copy(), x=x.copy(), weight=w.copy(), y=y.copy())
        kw = {buf_name: args[inp]}
        try:
            got = gradcore.dense_backward(args["grad_y"], args["x"], args["weight"], args["y"], "tanh", **kw)
        except ValueError as exc:
            assert buf_name in str(exc) and inp in str(exc)
            for k, v in dict(grad_y=gy, x=x, weight=w, y=y).items():
                np.testing.assert_array_equal(args[k], v)
        else:
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- vs torch


def test_dense_accepts_torch_cpu_tensors(isa):
    """torch CPU tensors are array-likes: matmul, dense_forward and dense_backward take
    them and return NumPy arrays."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(47)
    x, w, b = _layer(rng, 6, 5, 4, F32)
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    got = gradcore.matmul(tx, tw, trans_b=True)
    assert isinstance(got, np.ndarray)
    assert_gemm_close(got, ref_matmul(x, w, trans_b=True), matmul_scale(x, w, trans_b=True), F32, 5)
    y = gradcore.dense_forward(tx, tw, tb, "sigmoid")
    assert isinstance(y, np.ndarray)
    assert_gemm_close(y, ref_dense_forward(x, w, b, "sigmoid"), ref_dense_forward_scale(x, w, b), F32, 5)
    gy = random_matrix(rng, (6, 4), F32)
    got = gradcore.dense_backward(torch.from_numpy(gy), tx, tw, torch.from_numpy(y), "sigmoid")
    for g, e in zip(got, ref_dense_backward(gy, x, w, y, "sigmoid")):
        assert isinstance(g, np.ndarray)
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_dense_accepts_torch_parameters(isa):
    """A torch.nn.Linear's own weight and bias (Parameters, requires_grad=True) are the
    natural inputs of dense_forward and dense_backward (read through their memory,
    without autograd)."""
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(4, 3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = gradcore.dense_forward(x, lin.weight, lin.bias, "tanh")
    np.testing.assert_allclose(y, torch.tanh(lin(x)).detach().numpy(), rtol=1e-12, atol=1e-14)
    gy = np.ones((5, 3))
    gx, gw, gb = gradcore.dense_backward(gy, x, lin.weight, y, "tanh")
    assert gx.shape == (5, 4) and gw.shape == (3, 4) and gb.shape == (3,)
    assert gradcore.matmul(lin.weight, lin.weight, trans_b=True).shape == (3, 3)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("has_bias", [True, False])
def test_dense_against_torch(isa, threads, activation, has_bias):
    """y and the three gradients equal torch.nn.functional.linear + activation under
    autograd (float64, leaky_relu slope 0.2)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    acts = dict(identity=lambda z: z, relu=F.relu, leaky_relu=lambda z: F.leaky_relu(z, 0.2),
                tanh=torch.tanh, sigmoid=torch.sigmoid)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # its pool waking next to gradcore's costs more than it saves here
    try:
        _compare_with_torch(torch, acts[activation], activation, has_bias)
    finally:
        torch.set_num_threads(previous)


def _compare_with_torch(torch, act_fn, activation, has_bias):
    F = torch.nn.functional
    rng = np.random.default_rng(41)
    for batch, n_in, n_out in [(7, 13, 5), (65, 257, 19)]:
        x, w, b = _layer(rng, batch, n_in, n_out, F64, scale=2.0)
        gy = random_matrix(rng, (batch, n_out), F64)
        tx = torch.tensor(x, requires_grad=True)
        tw = torch.tensor(w, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True) if has_bias else None
        ty = act_fn(F.linear(tx, tw, tb))
        ty.backward(torch.tensor(gy))

        y = gradcore.dense_forward(x, w, b if has_bias else None, activation, negative_slope=0.2)
        gx, gw, gb = gradcore.dense_backward(gy, x, w, y, activation, negative_slope=0.2, has_bias=has_bias)
        ty_np = ty.detach().numpy()
        np.testing.assert_allclose(y, ty_np, rtol=1e-12, atol=1e-12 * np.abs(ty_np).max())
        for got, tgrad, name in [(gx, tx.grad, "grad_x"), (gw, tw.grad, "grad_weight"),
                                 (gb, tb.grad if has_bias else None, "grad_bias")]:
            if tgrad is None:
                assert got is None, name
                continue
            t = tgrad.numpy()
            np.testing.assert_allclose(got, t, rtol=1e-10, atol=1e-11 * max(np.abs(t).max(), 1.0),
                                       err_msg=name)
