"""The library's vectorised exp, tanh and sigmoid (csrc/kernels/vector_math.hpp, the ones
the dense epilogue and the recurrent cells use), reached through the testing hook
gradcore._core._vector_math(x, name), on every ISA target, against NumPy in
np.longdouble.

Accuracy contract tested here: at most 4 ulp for normal results over the whole range
(dense grids over -800..800, geometric grids down to the smallest subnormal on both
sides, sweeps across every overflow/underflow/saturation threshold and branch point,
random bit patterns); results in the subnormal range within a few smallest subnormals;
special values exact (NaN -> NaN, exp(-inf) = 0, exp(inf) = inf, tanh(+-inf) = +-1,
sigmoid(-inf) = 0, sigmoid(inf) = 1, the sign of tanh(-0)).
"""

import numpy as np
import pytest

import gradcore

LD = np.longdouble
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64]
DTYPE_IDS = ["float32", "float64"]
FUNCS = ["exp", "tanh", "sigmoid"]

#: ulps allowed for normal results
MAX_ULP = 4.0
#: smallest subnormals allowed for results below the smallest normal
MAX_SUBNORMAL_ERR = 2.0


LONGDOUBLE_OK = np.finfo(LD).nmant >= 63  # x87 80-bit or binary128: 10+ extra bits over float64


def vector_math(x, name):
    return gradcore._core._vector_math(x, name)


def precision(dtype):
    return np.finfo(dtype).nmant + 1  # 24 / 53


def reference(name, x):
    """f(x) in long double (x converted exactly)."""
    x = np.asarray(x).astype(LD)
    with np.errstate(over="ignore", under="ignore"):
        if name == "exp":
            return np.exp(x)
        if name == "tanh":
            return np.tanh(x)
        if name == "sigmoid":
            e = np.exp(-np.abs(x))
            return np.where(x >= 0, LD(1) / (LD(1) + e), e / (LD(1) + e))
    raise AssertionError(name)


def ulp(ref, dtype):
    """The spacing of `dtype` numbers at |ref| (ref in long double), never below the
    smallest subnormal."""
    _, e = np.frexp(np.abs(ref))
    u = np.ldexp(np.ones_like(ref), e - precision(dtype))
    return np.maximum(u, LD(np.finfo(dtype).smallest_subnormal))


def check_against_reference(name, x, dtype, *, what=""):
    """Every element of vector_math(x) against the long-double reference: overflowing
    results inf, normal results within MAX_ULP, subnormal results within
    MAX_SUBNORMAL_ERR smallest subnormals. x must hold no NaN."""
    x = np.ascontiguousarray(x, dtype=dtype)
    assert not np.isnan(x).any()
    got = vector_math(x, name)
    assert got.dtype == dtype and got.shape == x.shape
    ref = reference(name, x)
    fi = np.finfo(dtype)
    big, tiny, sub = LD(fi.max), LD(fi.tiny), LD(fi.smallest_subnormal)
    half_ulp_max = LD(2.0) ** (fi.maxexp - precision(dtype) - 1)
    g = got.astype(LD)
    problems = []

    # beyond max + half an ulp the correctly rounded result is inf; in between either
    overflow = np.abs(ref) >= big + half_ulp_max
    wrong = overflow & ~(np.isinf(g) & (np.sign(g) == np.sign(ref)))
    if wrong.any():
        problems.append(("overflow not inf", wrong))
    edge = (np.abs(ref) > big) & ~overflow
    finite_ref = ~overflow & ~edge
    wrong = finite_ref & ~np.isfinite(g)
    if wrong.any():
        problems.append(("non-finite result for a finite value", wrong))

    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(g - np.where(edge, np.sign(ref) * big, ref))
        err = np.where(edge & np.isinf(g) & (np.sign(g) == np.sign(ref)), LD(0), err)
    err = np.where(np.isnan(err), LD(np.inf), err)
    normal = (finite_ref | edge) & (np.abs(ref) >= tiny)
    ulps = err / ulp(ref, dtype)
    wrong = normal & (ulps > MAX_ULP)
    if wrong.any():
        problems.append((f"more than {MAX_ULP} ulp", wrong))
    subnormal = finite_ref & (np.abs(ref) < tiny)
    wrong = subnormal & (err > MAX_SUBNORMAL_ERR * sub)
    if wrong.any():
        problems.append((f"subnormal result off by more than {MAX_SUBNORMAL_ERR} smallest subnormals", wrong))

    if problems:
        lines = []
        for label, mask in problems:
            idx = np.flatnonzero(mask)
            worst = idx[np.argmax(np.where(np.isfinite(ulps[idx]), ulps[idx], LD(1e30)))]
            lines.append(f"{label}: {idx.size} of {x.size}; worst x={x.flat[worst]!r} "
                         f"got={got.flat[worst]!r} ref={float(ref.flat[worst])!r} "
                         f"({float(ulps.flat[worst]):.3g} ulp)")
        raise AssertionError(f"{name} {dtype.name} {what}: " + "; ".join(lines))
    return float(np.max(np.where(normal, ulps, 0), initial=0))


# --------------------------------------------------------------------------- grids


def sweep(t, dtype, n=48):
    """The n representable numbers on each side of t (t itself rounded to dtype)."""
    t = dtype.type(t)
    up, down = [t], [t]
    for _ in range(n):
        up.append(np.nextafter(up[-1], dtype.type(np.inf)))
        down.append(np.nextafter(down[-1], dtype.type(-np.inf)))
    return np.array(down[::-1] + up[1:], dtype=dtype)


def thresholds(dtype):
    """Where results overflow, turn subnormal, flush to zero, saturate, or where the
    implementation switches branch or clamps its argument."""
    fi = np.finfo(dtype)
    ln = lambda v: float(np.log(LD(v)))  # noqa: E731
    eps_half = float(fi.eps) / 2
    t = [
        ln(fi.max),                          # exp overflows
        ln(fi.tiny),                         # exp/sigmoid results turn subnormal
        ln(fi.smallest_subnormal),           # smallest subnormal result
        ln(fi.smallest_subnormal) - 0.3466,  # ~ log(smallest_subnormal / 2): rounds to 0
        float(np.arctanh(LD(1) - LD(eps_half))),  # tanh rounds to 1
        -ln(eps_half),                       # sigmoid rounds to 1
        0.25, 0.5, 1.0, 2.0,                 # tanh's branch point, nearby binades
        float(np.log(LD(2)) / 2),            # exp's reduced argument boundary
        710.0, 709.0, -746.0, 89.0, -104.0, 88.0, -87.0,  # the clamp bounds and around
        1.0 / 1024, 2.0 ** -12, 2.0 ** -30,
    ]
    return [s * v for v in t for s in (1.0, -1.0)]


def accuracy_grid(dtype, name):
    rng = np.random.default_rng(2024)
    fi = np.finfo(dtype)
    parts = [
        np.linspace(-800, 800, 160_001),                       # step 0.01 over the whole range
        np.linspace(-30, 30, 60_001),                          # finer where results vary
        rng.uniform(-800, 800, 20_000),
        rng.uniform(-2, 2, 20_000),
    ]
    geo = np.geomspace(float(fi.smallest_subnormal), 1.0, 6_000)  # near 0, subnormal inputs included
    geo2 = np.geomspace(1.0, float(fi.max) / 2, 2_000)            # up to the largest binade
    parts += [geo, -geo, geo2, -geo2]
    parts += [sweep(t, dtype) for t in thresholds(dtype)]
    parts.append(np.array([0.0, -0.0, fi.tiny, -fi.tiny, fi.smallest_subnormal, -fi.smallest_subnormal,
                           fi.max, -fi.max, fi.eps, -fi.eps]))
    # random bit patterns: every binade and sign
    uint = np.uint32 if dtype == F32 else np.uint64
    bits = rng.integers(0, np.iinfo(uint).max, size=50_000, dtype=uint, endpoint=True).view(dtype)
    parts.append(bits[np.isfinite(bits)])
    x = np.concatenate([np.asarray(p, dtype=dtype) for p in parts])
    with np.errstate(invalid="ignore"):
        x = x[~np.isnan(x)]
    return x


# --------------------------------------------------------------------------- tests


needs_longdouble = pytest.mark.skipif(not LONGDOUBLE_OK, reason="np.longdouble is no wider than float64 here")


@needs_longdouble
@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_accuracy_whole_range(isa, dtype, name):
    check_against_reference(name, accuracy_grid(dtype, name), dtype, what=f"on {isa}")


@needs_longdouble
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_around_branch_switch(isa, dtype):
    """VectorMath::tanh switches from its odd series to 1 - 2 / (exp(2|x|) + 1) at
    |x| = 0.55; a dense grid on both sides of the switch (and of 0.25, where an earlier
    switch lost up to 5.6 ulp to cancellation) stays within the ulp bound."""
    x = np.concatenate([np.linspace(0.24, 0.26, 10_001), np.linspace(0.5, 0.6, 20_001)])
    check_against_reference("tanh", np.concatenate([x, -x]), dtype, what=f"on {isa}")


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_special_values_exact(isa, dtype, name):
    """Special inputs give exactly the limit values, wherever they sit in the vector
    (every SIMD lane, the tail), without disturbing their neighbours."""
    fi = np.finfo(dtype)
    inf, nan = np.inf, np.nan
    specials = {
        "exp": [(nan, nan), (-nan, nan), (inf, inf), (-inf, 0.0), (0.0, 1.0), (-0.0, 1.0),
                (fi.max, inf), (-fi.max, 0.0)],
        "tanh": [(nan, nan), (-nan, nan), (inf, 1.0), (-inf, -1.0), (0.0, 0.0), (-0.0, -0.0),
                 (fi.max, 1.0), (-fi.max, -1.0), (fi.smallest_subnormal, fi.smallest_subnormal),
                 (-fi.smallest_subnormal, -fi.smallest_subnormal)],
        "sigmoid": [(nan, nan), (-nan, nan), (inf, 1.0), (-inf, 0.0), (0.0, 0.5), (-0.0, 0.5),
                    (fi.max, 1.0), (-fi.max, 0.0)],
    }[name]
    # a NaN with a payload, and one built from bits with the sign set
    payload_nan = np.array([0x7FC12345 if dtype == F32 else 0x7FF8000000012345],
                           dtype=np.uint32 if dtype == F32 else np.uint64).view(dtype)[0]
    specials += [(payload_nan, nan), (-payload_nan, nan)]
    n = 37  # more than two vectors of the widest target, plus a tail
    base = np.linspace(-3, 3, n).astype(dtype)
    base_result = vector_math(base, name)
    for value, expected in specials:
        for pos in range(n):
            x = base.copy()
            x[pos] = value
            got = vector_math(x, name)
            g = got[pos]
            if np.isnan(expected):
                assert np.isnan(g), (name, value, pos, g)
            else:
                assert g == expected, (name, value, pos, g, expected)
                assert np.signbit(g) == np.signbit(dtype.type(expected)), (name, value, pos, g)
            others = np.arange(n) != pos
            np.testing.assert_array_equal(got[others], base_result[others],
                                          err_msg=f"{name}({value!r}) at {pos} changed its neighbours")


@needs_longdouble
@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_length(isa, dtype, name):
    """Lengths 0..70: full vectors and every tail length of every target."""
    rng = np.random.default_rng(5)
    for n in range(71):
        x = rng.uniform(-12, 12, n).astype(dtype)
        check_against_reference(name, x, dtype, what=f"length {n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_shapes_layouts_and_input_untouched(isa, dtype):
    """Any shape and layout: the result has x's shape, equals the result on a
    contiguous copy bit for bit, and x itself is not modified."""
    rng = np.random.default_rng(8)
    big = rng.uniform(-5, 5, (9, 14)).astype(dtype)
    for name in FUNCS:
        for x in [big, big[::2, ::3], big.T, np.asfortranarray(big), big[::-1], big[3], big[:0],
                  np.array(1.5, dtype=dtype), big.reshape(3, 3, 14)]:
            before = x.copy()
            got = vector_math(x, name)
            assert got.shape == x.shape and got.dtype == dtype
            np.testing.assert_array_equal(x, before)
            flat = vector_math(np.ascontiguousarray(x).ravel(), name)
            np.testing.assert_array_equal(got.ravel(), flat)


def test_errors():
    with pytest.raises(TypeError):
        vector_math(np.ones(4, np.int64), "exp")
    with pytest.raises(TypeError):
        vector_math(np.ones(4, np.float16), "exp")
    with pytest.raises(ValueError, match="log"):
        vector_math(np.ones(4), "log")


@needs_longdouble
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_forward_epilogue_uses_the_same_math(isa, threads, dtype, activation):
    """The dense forward's tanh/sigmoid epilogue: y = f(z) with z the identity layer's
    output (same GEMM), within the same ulps of np.tanh / the long-double sigmoid, and
    bit-identical to the vector kernels applied to z."""
    rng = np.random.default_rng(12)
    x = rng.uniform(-2, 2, (7, 11)).astype(dtype)
    w = rng.uniform(-1, 1, (19, 11)).astype(dtype)
    b = rng.uniform(-1, 1, 19).astype(dtype)
    z = gradcore.dense_forward(x, w, b, "identity")
    y = gradcore.dense_forward(x, w, b, activation)
    np.testing.assert_array_equal(y, vector_math(z, activation))
    check_against_reference(activation, z, dtype)  # the vector kernels themselves
    if activation == "tanh":
        ref = np.tanh(z.astype(LD))
    else:
        ref = reference("sigmoid", z)
    assert np.max(np.abs(y.astype(LD) - ref) / ulp(ref, dtype)) <= MAX_ULP
    # and against plain NumPy in the working dtype, as a user would check it
    plain = np.tanh(z) if activation == "tanh" else 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(y, plain, rtol=8 * np.finfo(dtype).eps, atol=0)
