"""Plain NumPy float64 references for gradcore's matmul and dense layer 
(docs/api.md, "Dense layer").

Written from the contract alone; nothing here imports or calls gradcore. Every function
converts its inputs to float64 (exact for float32 data) and returns new float64 arrays,
so a test can hand the very same input arrays to gradcore and to the reference.

Layout as ``torch.nn.Linear``: x (batch, in), weight (out, in), bias (out,),
y = act(x @ weight.T + bias) of shape (batch, out). The backward takes the activation's
derivative from y (the forward output), as the contract says:

    grad_z = grad_y * act'(y)
    grad_x = grad_z @ weight,  grad_weight = grad_z.T @ x,  grad_bias = grad_z.sum(0)

Besides the references, the module holds the error scales the tests compare against:
``matmul_scale`` is |alpha| |op(a)| |op(b)| + |beta| |c| element by element, the natural
bound on the rounding error of any summation order, and ``gemm_tol`` the relative
tolerance per dtype and depth K.
"""

from __future__ import annotations

import math

import numpy as np

ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid")


def _f64(a):
    return np.array(a, dtype=np.float64, copy=True)


def mm(a, b):
    """a @ b in float64 by NumPy's own einsum loops, not BLAS: the result does not depend
    on the BLAS build, and a multi-threaded BLAS waking its threads between gradcore's
    kernel calls on a small machine costs more than these products."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[1]))
    return np.einsum("ik,kj->ij", a, b)


def _op(a, trans):
    a = _f64(a)
    return a.T if trans else a


# --------------------------------------------------------------------------- matmul


def ref_matmul(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    """alpha * op(a) @ op(b) + beta * out, op = transpose when trans_*. With beta == 0
    `out` is not read at all (BLAS convention: NaN/inf in it do not propagate)."""
    a, b = _op(a, trans_a), _op(b, trans_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not agree")
    result = float(alpha) * mm(a, b)
    if beta != 0:
        if out is None:
            raise ValueError("beta != 0 needs out")
        result = result + float(beta) * _f64(out)
    return result


def matmul_scale(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    """|alpha| |op(a)| @ |op(b)| + |beta| |out|: what the rounding error is relative to."""
    a, b = np.abs(_op(a, trans_a)), np.abs(_op(b, trans_b))
    scale = abs(float(alpha)) * mm(a, b)
    if beta != 0 and out is not None:
        scale = scale + abs(float(beta)) * np.abs(_f64(out))
    return scale


def gemm_tol(dtype, k):
    """Relative tolerance (to matmul_scale) of a length-k dot product in `dtype`: float32
    1e-5 * sqrt(k), float64 1e-12 * sqrt(k) (both far above the sqrt(k) * eps that a
    correct blocked summation shows, far below what a wrong element or a lost term gives)."""
    base = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    return base * math.sqrt(max(int(k), 1))


def assert_gemm_close(actual, expected, scale, dtype, k, *, extra=0.0, what=""):
    """|actual - expected| <= gemm_tol(dtype, k) * (scale + tiny) element by element,
    plus a few ulps of |expected| (the result's own rounding to dtype), plus `extra` (an
    absolute slack the caller derives, e.g. from an element-wise step before the GEMM);
    NaN/inf must match exactly."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a = actual.astype(np.float64)
    finite = np.isfinite(expected)
    bad_special = ~finite & ~((a == expected) | (np.isnan(a) & np.isnan(expected)))
    assert not bad_special.any(), (
        f"{what}: non-finite mismatch at {np.argwhere(bad_special)[:5].tolist()}: "
        f"got {a[bad_special][:5]}, expected {expected[bad_special][:5]}")
    eps = float(np.finfo(dtype).eps)
    tiny = float(np.finfo(dtype).tiny)
    tol = (gemm_tol(dtype, k) * (np.asarray(scale, dtype=np.float64) + tiny)
           + 4 * eps * np.abs(expected) + extra)
    err = np.where(finite, np.abs(a - expected), 0.0)
    err = np.where(np.isnan(err), np.inf, err)
    bad = err > tol
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements off (dtype {np.dtype(dtype).name}, "
            f"K={k}); first at {i}: got {a[i]!r}, expected {expected[i]!r}, "
            f"error {err[i]:.3g} > tol {tol[i]:.3g} (worst ratio {float(np.max(err / tol)):.3g})")


# --------------------------------------------------------------------------- activations


def ref_activation(z, activation, negative_slope=0.01):
    """act(z) in float64; NaN in -> NaN out for every activation."""
    z = _f64(z)
    if activation == "identity":
        return z
    if activation == "relu":
        return np.maximum(z, 0.0)  # np.maximum propagates NaN
    if activation == "leaky_relu":
        return np.where(z > 0, z, z * float(negative_slope))  # NaN * slope = NaN
    if activation == "tanh":
        return np.tanh(z)
    if activation == "sigmoid":
        with np.errstate(over="ignore"):
            return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                            np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
    raise ValueError(f"unknown activation {activation!r}")


def ref_activation_grad(y, activation, negative_slope=0.01):
    """act'(z) expressed through y = act(z) (what the backward is given)."""
    y = _f64(y)
    if activation == "identity":
        return np.ones_like(y)
    if activation == "relu":
        return (y > 0).astype(np.float64)
    if activation == "leaky_relu":
        return np.where(y > 0, 1.0, float(negative_slope))
    if activation == "tanh":
        return 1.0 - y * y
    if activation == "sigmoid":
        return y * (1.0 - y)
    raise ValueError(f"unknown activation {activation!r}")


# --------------------------------------------------------------------------- dense layer


def ref_dense_pre(x, weight, bias=None):
    """z = x @ weight.T + bias (float64)."""
    x, w = _f64(x), _f64(weight)
    z = mm(x, w.T)
    if bias is not None:
        z = z + _f64(bias)[None, :]
    return z


def ref_dense_forward(x, weight, bias=None, activation="identity", negative_slope=0.01):
    """y = act(x @ weight.T + bias) (float64)."""
    return ref_activation(ref_dense_pre(x, weight, bias), activation, negative_slope)


def ref_dense_forward_scale(x, weight, bias=None):
    """|x| @ |weight|.T + |bias|: the scale of the rounding error of z (and of y, every
    activation having |act'| <= 1)."""
    x, w = np.abs(_f64(x)), np.abs(_f64(weight))
    s = mm(x, w.T)
    if bias is not None:
        s = s + np.abs(_f64(bias))[None, :]
    return s


def ref_grad_z(grad_y, y, activation, negative_slope=0.01):
    """grad_y * act'(y) (float64)."""
    return _f64(grad_y) * ref_activation_grad(y, activation, negative_slope)


def ref_dense_backward(grad_y, x, weight, y, activation="identity", negative_slope=0.01, *,
                       has_bias=True, need_grad_x=True):
    """(grad_x, grad_weight, grad_bias) in float64; grad_x None when need_grad_x is
    False, grad_bias None when has_bias is False."""
    gz = ref_grad_z(grad_y, y, activation, negative_slope)
    x, w = _f64(x), _f64(weight)
    grad_x = mm(gz, w) if need_grad_x else None
    grad_w = mm(gz.T, x)
    grad_b = gz.sum(axis=0) if has_bias else None
    return grad_x, grad_w, grad_b


def ref_dense_backward_scales(grad_y, x, weight, y, activation="identity", negative_slope=0.01):
    """Error scales of (grad_x, grad_weight, grad_bias): the same products on absolute
    values."""
    gz = np.abs(ref_grad_z(grad_y, y, activation, negative_slope))
    x, w = np.abs(_f64(x)), np.abs(_f64(weight))
    sx = mm(gz, w)
    sw = mm(gz.T, x)
    return sx, sw, gz.sum(axis=0)


def ref_dense_backward_slack(grad_y, x, weight, dtype):
    """Absolute slack of (grad_x, grad_weight, grad_bias) for the rounding of
    grad_z = grad_y * act'(y) in `dtype`: act'(y) = 1 - y*y (tanh) loses its relative
    accuracy where y is near +-1, but its absolute error stays within ~2 eps, so grad_z
    is within 4 eps |grad_y| of the exact product; this carries through the GEMMs."""
    eps = float(np.finfo(dtype).eps)
    g = 4 * eps * np.abs(_f64(grad_y))
    x, w = np.abs(_f64(x)), np.abs(_f64(weight))
    sx = mm(g, w)
    sw = mm(g.T, x)
    return sx, sw, g.sum(axis=0)
