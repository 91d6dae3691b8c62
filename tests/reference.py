"""Plain NumPy float64 reference implementations of gradcore's norm and clipping family.

Written from the contract (docs/api.md, "Norms and clipping") alone; nothing here imports or
calls gradcore. Every function works on float64 copies of its inputs and returns new
arrays (the in-place functions' references return the arrays the call should leave
behind), so a test can run gradcore on one copy and the reference on another.

Norms are computed overflow- and underflow-free for every finite float64 input: each
row is scaled by the power of two nearest its largest magnitude (an exact operation),
powered and summed there, and scaled back at the end. NaN anywhere gives NaN;
otherwise an infinity gives inf.

The module also holds a few NumPy-only helpers the tests share (building arrays from
a seed, comparing results with NaN/inf awareness, bitwise comparison).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

POLICIES = ("propagate", "error", "skip", "zero")


class RefNonFiniteError(FloatingPointError):
    """Raised by ref_clip_by_global_norm for nonfinite="error" and a non-finite total."""


# --------------------------------------------------------------------------- helpers


def _as_list(arrays):
    if isinstance(arrays, np.ndarray):
        return [arrays]
    return list(arrays)


def _f64(a):
    """A float64 copy (conversion from float16/float32 is exact)."""
    return np.array(a, dtype=np.float64, copy=True)


def check_ord(ord):
    """The contract's rule for `ord`: any real p > 0 or +inf; returns it as a float."""
    if isinstance(ord, (bool, np.bool_)) or not isinstance(ord, numbers.Real):
        raise ValueError(f"ord must be a real number > 0 or inf, got {ord!r}")
    p = float(ord)
    if not p > 0:  # also rejects NaN
        raise ValueError(f"ord must be a real number > 0 or inf, got {ord!r}")
    return p


def _row_norms(mat, p):
    """Norm of order p of every row of a 2-D float64 matrix, overflow/underflow-free."""
    rows = mat.shape[0]
    if rows == 0:
        return np.zeros(0, dtype=np.float64)
    if mat.shape[1] == 0:
        return np.zeros(rows, dtype=np.float64)
    a = np.abs(mat)
    has_nan = np.isnan(a).any(axis=1)
    with np.errstate(invalid="ignore"):
        m = np.max(np.where(np.isnan(a), 0.0, a), axis=1)
    out = np.empty(rows, dtype=np.float64)
    has_inf = np.isinf(m)
    if p == math.inf:
        out[:] = m
    else:
        ok = ~has_inf & (m > 0)
        out[:] = 0.0
        if ok.any():
            sub = a[ok]
            # m = f * 2**e with f in [0.5, 1); scaling by 2**-e is exact (tiny elements
            # may lose bits, far below anything the row norm can resolve).
            _, e = np.frexp(m[ok])
            with np.errstate(under="ignore"):
                y = np.ldexp(sub, -e[:, None])
            if p == 1.0:
                s = np.sum(y, axis=1)
            elif p == 2.0:
                s = np.sum(y * y, axis=1)
            else:
                with np.errstate(under="ignore"):
                    s = np.sum(np.power(y, p), axis=1)
            with np.errstate(over="ignore"):
                if p == 1.0:
                    r = s
                elif p == 2.0:
                    r = np.sqrt(s)
                else:
                    r = np.power(s, 1.0 / p)
                # The true norm can exceed DBL_MAX (e.g. L1 of two values of 1e308):
                # then inf is the only answer.
                out[ok] = np.ldexp(r, e)
        out[has_inf] = math.inf
    out[has_nan] = math.nan
    return out


def _vec_norm(x, p):
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    return float(_row_norms(x, p)[0])


# --------------------------------------------------------------------------- norms


def ref_norm(arrays, ord=2):
    """Norm of order `ord` of all arrays taken together, as if concatenated."""
    p = check_ord(ord)
    arrays = _as_list(arrays)
    if not arrays:
        return 0.0
    flat = np.concatenate([_f64(a).ravel() for a in arrays])
    return _vec_norm(flat, p)


def ref_norms(arrays, ord=2):
    """One norm per array (float64 array of len(arrays))."""
    p = check_ord(ord)
    return np.array([_vec_norm(_f64(a).ravel(), p) for a in _as_list(arrays)], dtype=np.float64)


def ref_grad_stats(arrays):
    """Per array: (l2_norm float64, max_abs float64 (NaN if any NaN), nonfinite int64)."""
    arrays = [_f64(a).ravel() for a in _as_list(arrays)]
    l2 = np.array([_vec_norm(a, 2.0) for a in arrays], dtype=np.float64)
    mx = np.array([_vec_norm(a, math.inf) for a in arrays], dtype=np.float64)
    nf = np.array([int(np.count_nonzero(~np.isfinite(a))) for a in arrays], dtype=np.int64)
    return l2, mx, nf


# --------------------------------------------------------------------------- clipping


def _scaled(a, factor):
    """a * factor computed in float64 and rounded once to a's dtype."""
    with np.errstate(invalid="ignore", under="ignore", over="ignore"):
        return (_f64(a) * factor).astype(a.dtype)


def _clip_factor(max_norm, norm, eps):
    """PyTorch's clamp(max_norm / (norm + eps), max=1): NaN stays NaN.

    A zero norm gives 1 whatever max_norm and eps are (all-zero arrays are left as they
    are; 0 / (0 + 0) would otherwise make them NaN)."""
    if norm == 0.0:
        return 1.0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return float(np.minimum(np.float64(max_norm) / (np.float64(norm) + eps), 1.0))


def ref_clip_by_value(arrays, clip_value=None, *, min=None, max=None):
    """Returns the clipped copies. Bounds from clip_value or (min, max); NaN stays NaN."""
    if clip_value is not None:
        if min is not None or max is not None:
            raise TypeError("give clip_value or min/max, not both")
        c = float(clip_value)
        if math.isnan(c) or c < 0:
            raise ValueError("clip_value must be >= 0")
        lo, hi = -c, c
    else:
        if min is None and max is None:
            raise TypeError("give clip_value or at least one of min/max")
        lo = -math.inf if min is None else float(min)
        hi = math.inf if max is None else float(max)
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError("need min <= max, neither NaN")
    out = []
    for a in _as_list(arrays):
        x = _f64(a)
        # np.maximum/np.minimum propagate NaN. Clamping in float64 and rounding once
        # equals clamping against the bounds rounded to a's dtype (rounding is monotone).
        out.append(np.minimum(np.maximum(x, lo), hi).astype(a.dtype))
    return out


def ref_clip_by_norm(arrays, max_norm, ord=2, *, eps=1e-6):
    """Each array on its own: factor = min(1, max_norm / (norm + eps)).

    Returns (clipped copies, norms before clipping). Arrays whose factor is 1 are returned
    bitwise unchanged; a NaN factor propagates (PyTorch's clamp semantics).
    """
    p = check_ord(ord)
    if math.isnan(max_norm) or max_norm < 0:
        raise ValueError("max_norm must be >= 0")
    arrays = _as_list(arrays)
    ns = ref_norms(arrays, p)
    out = []
    for a, n in zip(arrays, ns):
        f = _clip_factor(max_norm, n, eps)
        out.append(np.array(a, copy=True) if f == 1.0 else _scaled(a, f))
    return out, ns


def ref_clip_by_global_norm(arrays, max_norm, ord=2, *, eps=1e-6, nonfinite="propagate",
                            total_norm=None):
    """Returns (clipped copies, total returned by the call).

    total = norm of everything (or `total_norm` as given); factor = min(1, max_norm /
    (total + eps)) as PyTorch. When total is NaN/inf: "propagate" scales by PyTorch's factor
    (NaN for a NaN total, 0 for an infinite one), "error" raises RefNonFiniteError,
    "skip" leaves everything unchanged, "zero" sets non-finite elements to 0 and clips by
    the norm of what remains. The returned total is always the total before clipping.
    """
    p = check_ord(ord)
    if math.isnan(max_norm) or max_norm < 0:
        raise ValueError("max_norm must be >= 0")
    if nonfinite not in POLICIES:
        raise ValueError(f"unknown nonfinite policy {nonfinite!r}")
    arrays = _as_list(arrays)
    total = ref_norm(arrays, p) if total_norm is None else float(total_norm)
    unchanged = [np.array(a, copy=True) for a in arrays]
    if math.isfinite(total) or nonfinite == "propagate":
        f = _clip_factor(max_norm, total, eps)
        if f == 1.0:
            return unchanged, total
        return [_scaled(a, f) for a in arrays], total
    if nonfinite == "error":
        raise RefNonFiniteError(f"total norm is {total}")
    if nonfinite == "skip":
        return unchanged, total
    # "zero"
    zeroed = []
    for a in arrays:
        z = np.array(a, copy=True)
        z[~np.isfinite(z)] = 0
        zeroed.append(z)
    remaining = ref_norm(zeroed, p)
    f = _clip_factor(max_norm, remaining, eps)
    if f == 1.0:
        return zeroed, total
    return [_scaled(z, f) for z in zeroed], total


def _unit_rows(a64, unit_axis):
    """The units of an array as the rows of a matrix: slices along unit_axis for ndim >= 2,
    the whole array (one row) otherwise."""
    if a64.ndim < 2:
        return a64.reshape(1, -1)
    ax = unit_axis + a64.ndim if unit_axis < 0 else unit_axis
    if not 0 <= ax < a64.ndim:
        raise ValueError(f"unit_axis {unit_axis} out of range for ndim {a64.ndim}")
    m = np.moveaxis(a64, ax, 0)
    return m.reshape(m.shape[0], int(np.prod(m.shape[1:], dtype=np.int64)))


def ref_unit_norms(arrays, unit_axis=0):
    """The L2 norm of every unit of every array (the units of ref_adaptive_clip), one
    float64 array per input."""
    return [_row_norms(_unit_rows(_f64(np.asarray(a)), unit_axis), 2.0) for a in _as_list(arrays)]


def ref_adaptive_clip(grads, params, clipping=0.01, *, eps=1e-3, unit_axis=0):
    """Adaptive gradient clipping (Brock et al. 2021). Returns the clipped grads.

    Units: slices along `unit_axis` for arrays with ndim >= 2, the whole array otherwise.
    max_u = clipping * max(||param_u||_2, eps); a grad unit with ||grad_u||_2 > max_u is
    scaled by max_u / ||grad_u||_2.
    """
    grads = _as_list(grads)
    params = _as_list(params)
    if len(grads) != len(params):
        raise ValueError("grads and params differ in length")
    out = []
    for g, prm in zip(grads, params):
        g = np.asarray(g)
        prm = np.asarray(prm)
        if g.shape != prm.shape:
            raise ValueError(f"shape mismatch {g.shape} vs {prm.shape}")
        g64 = _f64(g)
        p64 = _f64(prm)
        gmat, pmat = _unit_rows(g64, unit_axis), _unit_rows(p64, unit_axis)
        if g.ndim >= 2:
            ax = unit_axis + g.ndim if unit_axis < 0 else unit_axis
        gn = _row_norms(gmat, 2.0)
        pn = _row_norms(pmat, 2.0)
        maxn = clipping * np.maximum(pn, eps)
        with np.errstate(invalid="ignore", divide="ignore"):
            trigger = gn > maxn
            factor = np.where(trigger, maxn / np.where(trigger, gn, 1.0), 1.0)
        if g.ndim >= 2:
            bshape = [1] * g.ndim
            bshape[ax] = -1
            factor = factor.reshape(bshape)
        else:
            factor = factor[0]
        # Units that are not clipped keep their exact bits.
        out.append(np.where(factor == 1.0, g, _scaled(g, factor)))
    return out


# --------------------------------------------------------------------------- test helpers

#: decimal exponents of magnitudes the tests draw from, per dtype. They cover normal
#: values, the float32 squares that overflow/underflow float32 (1e20, 1e30, 1e-30),
#: subnormals, and float64 values whose squares overflow/underflow float64.
SCALES = {
    np.dtype(np.float16): (-6, -3, 0, 2),
    np.dtype(np.float32): (-44, -40, -30, -10, 0, 10, 20, 30, 35),
    np.dtype(np.float64): (-320, -310, -300, -150, 0, 150, 300, 306),
}


def make_array(rng, shape, dtype, scale_exp=0, *, zeros=0.0, specials=0):
    """Random normal data times 10**scale_exp, cast to dtype.

    `zeros`: fraction of elements replaced by +0.0 / -0.0. `specials`: how many elements
    (at most) replaced by NaN, +inf or -inf.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    x = rng.standard_normal(n)
    with np.errstate(under="ignore", over="ignore"):
        x = (x * 10.0 ** scale_exp)
        x = x.astype(dtype)
    if n and zeros:
        k = int(rng.binomial(n, zeros))
        if k:
            idx = rng.choice(n, size=k, replace=False)
            x[idx] = np.where(rng.random(k) < 0.5, 0.0, -0.0).astype(dtype)
    if n and specials:
        k = int(rng.integers(1, specials + 1))
        idx = rng.integers(0, n, size=k)
        x[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf]), size=k).astype(dtype)
    return x.reshape(shape).copy(order="C")


def random_shape(rng, max_ndim=4, max_dim=6, p_zero=0.05):
    """0-D to max_ndim-D; small dims, now and then a 0."""
    ndim = int(rng.integers(0, max_ndim + 1))
    dims = rng.integers(1, max_dim + 1, size=ndim)
    dims[rng.random(ndim) < p_zero] = 0
    return tuple(int(d) for d in dims)


_SCALE_MODES = {
    # mode -> per dtype, the decimal exponents an array's scale is drawn from
    "unit": {np.dtype(np.float16): (0,), np.dtype(np.float32): (0,), np.dtype(np.float64): (0,)},
    "mixed": SCALES,
    "huge": {np.dtype(np.float16): (2,), np.dtype(np.float32): (20, 30, 35),
             np.dtype(np.float64): (300, 306)},
    "tiny": {np.dtype(np.float16): (-6,), np.dtype(np.float32): (-30, -40, -44),
             np.dtype(np.float64): (-300, -310, -320)},
}
SCALE_MODES = tuple(_SCALE_MODES)


def build_array_list(seed, n, dtypes=(np.float32, np.float64), scale_mode="unit", *,
                     big_size=0, zeros=0.0, n_special=0, max_ndim=4, max_dim=6):
    """A reproducible list of n small arrays (plus one 1-D/2-D array of big_size elements
    when big_size > 0) of dtypes drawn from `dtypes`, magnitudes per `scale_mode`
    ("unit", "mixed", "huge", "tiny"), a fraction `zeros` of +-0.0 and NaN/+-inf put into
    up to n_special of the arrays."""
    rng = np.random.default_rng(seed)
    dtypes = [np.dtype(d) for d in dtypes]
    shapes = [random_shape(rng, max_ndim, max_dim) for _ in range(n)]
    if big_size:
        rows = int(rng.choice([1, 2, 3, 7]))
        big = (big_size,) if rows == 1 else (rows, big_size // rows)
        shapes.insert(int(rng.integers(0, n + 1)), big)
    out = []
    for shape in shapes:
        dt = dtypes[int(rng.integers(0, len(dtypes)))]
        exp = int(rng.choice(_SCALE_MODES[scale_mode][dt]))
        out.append(make_array(rng, shape, dt, exp, zeros=zeros))
    candidates = [i for i, a in enumerate(out) if a.size]
    if n_special and candidates:
        for i in rng.choice(candidates, size=min(n_special, len(candidates)), replace=False):
            a = out[i]
            k = int(rng.integers(1, 4))
            flat = a.reshape(-1)
            flat[rng.integers(0, a.size, size=k)] = rng.choice(
                np.array([np.nan, np.inf, -np.inf]), size=k).astype(a.dtype)
    return out


def assert_close(actual, expected, rtol, *, atol=None, err_msg=""):
    """Scalar or array comparison: NaN where expected is NaN, equal infinities, and
    |actual - expected| <= rtol * |expected| + atol elsewhere.

    atol defaults to two of the smallest subnormals of the arrays' dtype (results that
    land among subnormals cannot be closer than that).
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape} {err_msg}"
    if atol is None:
        dt = e.dtype if e.dtype.kind == "f" else np.dtype(np.float64)
        atol = 2.0 * float(np.finfo(dt).smallest_subnormal)
    a64 = a.astype(np.float64)
    e64 = e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    assert np.array_equal(nan_a, nan_e), (
        f"NaN positions differ: actual {a64[nan_a != nan_e]} expected {e64[nan_a != nan_e]} "
        f"{err_msg}")
    inf_e = np.isinf(e64)
    assert np.array_equal(a64[inf_e], e64[inf_e]) and not np.isinf(a64[~inf_e]).any(), (
        f"infinities differ {err_msg}")
    fin = np.isfinite(e64)
    diff = np.abs(a64[fin] - e64[fin])
    tol = rtol * np.abs(e64[fin]) + atol
    bad = diff > tol
    if bad.any():
        i = int(np.argmax(bad))
        rel = diff[i] / abs(e64[fin][i]) if e64[fin][i] else math.inf
        raise AssertionError(
            f"{int(bad.sum())} of {fin.sum()} values differ beyond rtol={rtol}: "
            f"first actual={a64[fin][i]!r} expected={e64[fin][i]!r} (rel {rel:.3g}) {err_msg}")


def same_bits(a, b):
    """True when a and b have the same dtype, shape and bytes (NaN payloads, -0.0...)."""
    a = np.asarray(a)
    b = np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_float(a, b):
    """Bitwise equality of two Python/NumPy floats (NaN == NaN)."""
    return np.float64(a).tobytes() == np.float64(b).tobytes()
