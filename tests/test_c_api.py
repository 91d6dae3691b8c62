"""The C ABI (csrc/include/gradcore/c_api.h) through ctypes: the same results as the
Python API, status codes and messages instead of exceptions, nothing modified on error."""

import ctypes
import math
import os

import numpy as np
import pytest

import gradcore


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("numel", ctypes.c_int64), ("dtype", ctypes.c_int32)]


DTYPES = {np.dtype(np.float16): 0, np.dtype(np.float32): 1, np.dtype(np.float64): 2}
GC_OK, GC_INVALID_ARGUMENT, GC_NONFINITE = 0, 1, 2


@pytest.fixture(scope="module")
def lib():
    names = [f for f in os.listdir(gradcore.get_library_dir()) if f.startswith("libgradcore")]
    lib = ctypes.CDLL(os.path.join(gradcore.get_library_dir(), names[0]))
    lib.gc_last_error.restype = ctypes.c_char_p
    lib.gc_version.restype = ctypes.c_char_p
    lib.gc_isa.restype = ctypes.c_char_p
    lib.gc_global_norm.argtypes = [ctypes.POINTER(Tensor), ctypes.c_size_t, ctypes.c_double,
                                   ctypes.POINTER(ctypes.c_double)]
    lib.gc_norms.argtypes = [ctypes.POINTER(Tensor), ctypes.c_size_t, ctypes.c_double,
                             ctypes.POINTER(ctypes.c_double)]
    lib.gc_clip_by_value.argtypes = [ctypes.POINTER(Tensor), ctypes.c_size_t, ctypes.c_double,
                                     ctypes.c_double]
    lib.gc_clip_by_global_norm.argtypes = [
        ctypes.POINTER(Tensor), ctypes.c_size_t, ctypes.c_double, ctypes.c_double, ctypes.c_double,
        ctypes.c_int, ctypes.c_double, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_int)]
    vp, i64, dbl, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    lib.gc_clip_by_norm.argtypes = [ctypes.POINTER(Tensor), ctypes.c_size_t, dbl, dbl, dbl,
                                    ctypes.POINTER(ctypes.c_double)]
    lib.gc_gemm.argtypes = [cint, cint, cint, i64, i64, i64, dbl, vp, i64, vp, i64, dbl, vp, i64]
    lib.gc_dense_forward.argtypes = [cint, i64, i64, i64, vp, vp, vp, vp, cint, dbl]
    lib.gc_dense_backward.argtypes = [cint, i64, i64, i64, vp, vp, vp, vp, cint, dbl, vp, vp, vp, cint]
    return lib


def ptr(a):
    """The data pointer of an array, or NULL for None."""
    return None if a is None else a.ctypes.data


def tensors(arrays):
    return (Tensor * len(arrays))(*[Tensor(a.ctypes.data, a.size, DTYPES[a.dtype]) for a in arrays])


def sample():
    rng = np.random.default_rng(3)
    return [rng.standard_normal(n).astype(dt) for n, dt in
            [(1000, np.float32), (7, np.float64), (100_000, np.float32)]]


def test_version_and_isa(lib):
    assert lib.gc_version().decode() == gradcore.info()["version"]
    assert lib.gc_isa().decode() == gradcore.info()["isa"]


@pytest.mark.parametrize("ord", [1.0, 2.0, 3.0, math.inf])
def test_norms_match_python(lib, ord):
    arrays = sample()
    out = ctypes.c_double()
    assert lib.gc_global_norm(tensors(arrays), len(arrays), ord, ctypes.byref(out)) == GC_OK
    assert out.value == gradcore.global_norm(arrays, ord)
    per = (ctypes.c_double * len(arrays))()
    assert lib.gc_norms(tensors(arrays), len(arrays), ord, per) == GC_OK
    assert list(per) == list(gradcore.norms(arrays, ord))


def test_clip_by_global_norm_matches_python(lib):
    a, b = sample(), sample()
    total, clipped = ctypes.c_double(), ctypes.c_int()
    assert lib.gc_clip_by_global_norm(tensors(a), len(a), 1.0, 2.0, 1e-6, 0, -1.0, ctypes.byref(total),
                                      ctypes.byref(clipped)) == GC_OK
    expected = gradcore.clip_by_global_norm_(b, 1.0)
    assert total.value == expected and clipped.value == 1
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_errors_are_status_codes_and_modify_nothing(lib):
    arrays = sample()
    before = [x.copy() for x in arrays]
    out = ctypes.c_double()
    assert lib.gc_global_norm(tensors(arrays), len(arrays), 0.0, ctypes.byref(out)) == GC_INVALID_ARGUMENT
    assert "ord" in lib.gc_last_error().decode()
    bad = tensors(arrays)
    bad[1].dtype = 7
    assert lib.gc_clip_by_value(bad, len(arrays), -0.1, 0.1) == GC_INVALID_ARGUMENT
    assert "arrays[1]" in lib.gc_last_error().decode()
    arrays[0][3] = np.nan
    before[0][3] = np.nan
    assert lib.gc_clip_by_global_norm(tensors(arrays), len(arrays), 1.0, 2.0, 1e-6, 1, -1.0, None,
                                      None) == GC_NONFINITE
    for x, y in zip(arrays, before):
        np.testing.assert_array_equal(x, y)
    assert lib.gc_global_norm(tensors(arrays), len(arrays), 2.0, ctypes.byref(out)) == GC_OK
    assert lib.gc_last_error().decode() == ""


def test_clip_by_norm_matches_python(lib):
    a, b = sample(), sample()
    norms = (ctypes.c_double * len(a))()
    assert lib.gc_clip_by_norm(tensors(a), len(a), 0.5, 2.0, 1e-6, norms) == GC_OK
    np.testing.assert_array_equal(list(norms), gradcore.clip_by_norm_(b, 0.5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert lib.gc_clip_by_norm(tensors(a), len(a), 0.5, 2.0, 1e-6, None) == GC_OK  # norms_out optional


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_row_major_blas_convention(lib, dtype, trans_a, trans_b):
    rng = np.random.default_rng(5)
    m, n, k = 13, 21, 9
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    # C is a view with a row stride wider than n: ldc is honoured.
    c_full = rng.standard_normal((m, n + 3)).astype(dtype)
    c_before = c_full.copy()
    code = DTYPES[np.dtype(dtype)]
    status = lib.gc_gemm(code, trans_a, trans_b, m, n, k, 0.5, ptr(a), a.shape[1], ptr(b), b.shape[1],
                         2.0, ptr(c_full), n + 3)
    assert status == GC_OK, lib.gc_last_error()
    op_a = (a.T if trans_a else a).astype(np.float64)
    op_b = (b.T if trans_b else b).astype(np.float64)
    expected = 0.5 * op_a @ op_b + 2.0 * c_before[:, :n]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c_full[:, :n], expected, rtol=tol, atol=tol)
    np.testing.assert_array_equal(c_full[:, n:], c_before[:, n:])  # padding untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_forward_backward_match_python(lib, dtype):
    rng = np.random.default_rng(6)
    batch, n_in, n_out = 7, 11, 5
    x, w = rng.standard_normal((batch, n_in)).astype(dtype), rng.standard_normal((n_out, n_in)).astype(dtype)
    b, grad_y = rng.standard_normal(n_out).astype(dtype), rng.standard_normal((batch, n_out)).astype(dtype)
    code = DTYPES[np.dtype(dtype)]
    y = np.empty((batch, n_out), dtype)
    assert lib.gc_dense_forward(code, batch, n_in, n_out, ptr(x), ptr(w), ptr(b), ptr(y), 3, 0.0) == GC_OK
    np.testing.assert_array_equal(y, gradcore.dense_forward(x, w, b, activation="tanh"))
    gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    assert lib.gc_dense_backward(code, batch, n_in, n_out, ptr(grad_y), ptr(x), ptr(w), ptr(y), 3, 0.0,
                                 ptr(gx), ptr(gw), ptr(gb), 0) == GC_OK
    for got, expected in zip((gx, gw, gb), gradcore.dense_backward(grad_y, x, w, y, activation="tanh")):
        np.testing.assert_array_equal(got, expected)
    # accumulate adds; NULL grad_x and grad_bias are skipped; identity needs no y
    gw2 = gw.copy()
    assert lib.gc_dense_backward(code, batch, n_in, n_out, ptr(grad_y), ptr(x), ptr(w), None, 0, 0.0,
                                 None, ptr(gw2), None, 1) == GC_OK
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gw2, gw + grad_y.T.astype(np.float64) @ x, rtol=tol, atol=tol)


def test_gemm_and_dense_errors_are_status_codes(lib):
    a = np.ones((2, 3))
    c = np.zeros((2, 2))
    assert lib.gc_gemm(5, 0, 0, 2, 2, 3, 1.0, ptr(a), 3, ptr(a), 3, 0.0, ptr(c), 2) == GC_INVALID_ARGUMENT
    assert "dtype" in lib.gc_last_error().decode()
    assert lib.gc_gemm(2, 0, 0, 2, 2, 3, 1.0, ptr(a), 2, ptr(a), 2, 0.0, ptr(c), 2) == GC_INVALID_ARGUMENT
    assert "lda" in lib.gc_last_error().decode()
    assert lib.gc_gemm(2, 0, 0, -1, 2, 3, 1.0, ptr(a), 3, ptr(a), 3, 0.0, ptr(c), 2) == GC_INVALID_ARGUMENT
    y = np.empty((2, 2))
    assert lib.gc_dense_forward(2, 2, 3, 2, ptr(a), ptr(a), None, ptr(y), 9, 0.0) == GC_INVALID_ARGUMENT
    assert "activation" in lib.gc_last_error().decode()
    assert lib.gc_dense_forward(2, 2, 3, 2, None, ptr(a), None, ptr(y), 0, 0.0) == GC_INVALID_ARGUMENT
    assert "x is NULL" in lib.gc_last_error().decode()
    assert lib.gc_dense_backward(2, 2, 3, 2, ptr(y), ptr(a), ptr(a), None, 1, 0.0, None, ptr(a), None,
                                 0) == GC_INVALID_ARGUMENT
    assert "y is NULL" in lib.gc_last_error().decode()
