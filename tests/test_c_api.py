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
    return lib


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
