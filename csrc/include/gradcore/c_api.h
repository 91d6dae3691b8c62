/* The stable C ABI of gradcore: plain C types, status codes, no exceptions across it,
 * for frameworks in other languages (ctypes, cffi, Rust, Julia, ...) and for Cython's
 * nogil blocks. Thread-safe and re-entrant; the last error message is per thread. */
#ifndef GRADCORE_C_API_H
#define GRADCORE_C_API_H

#include <stddef.h>
#include <stdint.h>

#include "gradcore/export.hpp"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gc_status {
    GC_OK = 0,
    GC_INVALID_ARGUMENT = 1, /* bad dtype, order, bound, ...: nothing was modified */
    GC_NONFINITE = 2,        /* clip with policy "error" met a NaN/inf total: nothing modified */
    GC_INTERNAL_ERROR = 3
} gc_status;

/* The values of gradcore::DType. The CPU takes float16, bfloat16, float32, float64;
 * the norms and clip-by-norm also take complex64/complex128 (interleaved re, im; numel
 * counts complex elements; |z| = hypot(re, im)). */
typedef enum gc_dtype {
    GC_FLOAT16 = 0, GC_FLOAT32 = 1, GC_FLOAT64 = 2, GC_BFLOAT16 = 3, GC_COMPLEX64 = 5, GC_COMPLEX128 = 6
} gc_dtype;

/* A C-contiguous run of `numel` numbers of one dtype. */
typedef struct gc_tensor {
    void* data;
    int64_t numel;
    int32_t dtype; /* gc_dtype */
} gc_tensor;

typedef enum gc_nonfinite { GC_PROPAGATE = 0, GC_ERROR = 1, GC_SKIP = 2, GC_ZERO = 3 } gc_nonfinite;

/* The message of this thread's last failed call ("" if none). */
GRADCORE_API const char* gc_last_error(void);
/* The version string, and the active SIMD target ("scalar", "avx2", "avx512", "neon"). */
GRADCORE_API const char* gc_version(void);
GRADCORE_API const char* gc_isa(void);

/* ord: any p > 0 or INFINITY. */
GRADCORE_API gc_status gc_global_norm(const gc_tensor* arrays, size_t count, double ord, double* out);
GRADCORE_API gc_status gc_norms(const gc_tensor* arrays, size_t count, double ord, double* out);
GRADCORE_API gc_status gc_clip_by_value(const gc_tensor* arrays, size_t count, double lo, double hi);
/* total_norm < 0: compute it; otherwise use it (no norm pass). *total_out gets the
 * total before clipping, *clipped whether the arrays were written (either may be NULL). */
GRADCORE_API gc_status gc_clip_by_global_norm(const gc_tensor* arrays, size_t count, double max_norm,
                                              double ord, double eps, int nonfinite, double total_norm,
                                              double* total_out, int* clipped);

/* Each array on its own: factor = min(1, max_norm / (norm + eps)); norms_out (count
 * doubles, may be NULL) gets the norms before clipping. */
GRADCORE_API gc_status gc_clip_by_norm(const gc_tensor* arrays, size_t count, double max_norm, double ord,
                                       double eps, double* norms_out);

/* Row-major GEMM, BLAS-like: C = alpha * op(A) op(B) + beta * C with op(A) m x k and op(B)
 * k x n; trans_a / trans_b != 0 mean A is stored k x m / B is stored n x k. lda, ldb,
 * ldc are row strides in elements. dtype is GC_FLOAT32 or GC_FLOAT64 for all three.
 * beta == 0 never reads C. */
GRADCORE_API gc_status gc_gemm(int dtype, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                               double alpha, const void* a, int64_t lda, const void* b, int64_t ldb,
                               double beta, void* c, int64_t ldc);

typedef enum gc_activation {
    GC_IDENTITY = 0, GC_RELU = 1, GC_LEAKY_RELU = 2, GC_TANH = 3, GC_SIGMOID = 4
} gc_activation;

/* The torch.nn.Linear layout, all C-contiguous, one dtype (GC_FLOAT32 or GC_FLOAT64):
 * x (batch, in), weight (out, in), bias (out) or NULL, y (batch, out).
 * y = act(x weight^T + bias); negative_slope is used by GC_LEAKY_RELU only. */
GRADCORE_API gc_status gc_dense_forward(int dtype, int64_t batch, int64_t in_features, int64_t out_features,
                                        const void* x, const void* weight, const void* bias, void* y,
                                        int activation, double negative_slope);

/* grad_z = grad_y * act'(y); grad_x = grad_z weight (NULL: not computed);
 * grad_weight = grad_z^T x; grad_bias = column sums of grad_z (NULL: not computed).
 * accumulate != 0 adds into the outputs instead of overwriting them. */
GRADCORE_API gc_status gc_dense_backward(int dtype, int64_t batch, int64_t in_features, int64_t out_features,
                                         const void* grad_y, const void* x, const void* weight, const void* y,
                                         int activation, double negative_slope, void* grad_x, void* grad_weight,
                                         void* grad_bias, int accumulate);

#ifdef __cplusplus
}
#endif

#endif /* GRADCORE_C_API_H */
