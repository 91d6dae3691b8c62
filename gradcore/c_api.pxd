# cython: language_level=3
"""Cython declarations of gradcore's stable C ABI (csrc/include/gradcore/c_api.h).

Every function is nogil and re-entrant, so a Cython extension can call the kernels
inside ``with nogil:`` blocks, the way ``scipy.linalg.cython_blas`` is used::

    from gradcore.c_api cimport gc_tensor, gc_global_norm, GC_FLOAT32, GC_OK

Build the extension with ``include_dirs=[gradcore.get_include()]``,
``library_dirs=[gradcore.get_library_dir()]``, ``libraries=["gradcore"]`` and the same
directory as a runtime library path (see examples/cython/).
"""

from libc.stdint cimport int32_t, int64_t


cdef extern from "gradcore/c_api.h" nogil:
    ctypedef enum gc_status:
        GC_OK
        GC_INVALID_ARGUMENT
        GC_NONFINITE
        GC_INTERNAL_ERROR

    ctypedef enum gc_dtype:
        GC_FLOAT16
        GC_FLOAT32
        GC_FLOAT64
        GC_BFLOAT16

    ctypedef enum gc_nonfinite:
        GC_PROPAGATE
        GC_ERROR
        GC_SKIP
        GC_ZERO

    ctypedef enum gc_activation:
        GC_IDENTITY
        GC_RELU
        GC_LEAKY_RELU
        GC_TANH
        GC_SIGMOID

    ctypedef struct gc_tensor:
        void* data
        int64_t numel
        int32_t dtype

    const char* gc_last_error()
    const char* gc_version()
    const char* gc_isa()

    gc_status gc_global_norm(const gc_tensor* arrays, size_t count, double ord, double* out)
    gc_status gc_norms(const gc_tensor* arrays, size_t count, double ord, double* out)
    gc_status gc_clip_by_value(const gc_tensor* arrays, size_t count, double lo, double hi)
    gc_status gc_clip_by_global_norm(const gc_tensor* arrays, size_t count, double max_norm, double ord,
                                     double eps, int nonfinite, double total_norm, double* total_out,
                                     int* clipped)
    gc_status gc_clip_by_norm(const gc_tensor* arrays, size_t count, double max_norm, double ord,
                              double eps, double* norms_out)
    gc_status gc_gemm(int dtype, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                      const void* a, int64_t lda, const void* b, int64_t ldb, double beta, void* c,
                      int64_t ldc)
    gc_status gc_dense_forward(int dtype, int64_t batch, int64_t in_features, int64_t out_features,
                               const void* x, const void* weight, const void* bias, void* y,
                               int activation, double negative_slope)
    gc_status gc_dense_backward(int dtype, int64_t batch, int64_t in_features, int64_t out_features,
                                const void* grad_y, const void* x, const void* weight, const void* y,
                                int activation, double negative_slope, void* grad_x, void* grad_weight,
                                void* grad_bias, int accumulate)
