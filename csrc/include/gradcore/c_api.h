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

typedef enum gc_dtype { GC_FLOAT16 = 0, GC_FLOAT32 = 1, GC_FLOAT64 = 2 } gc_dtype;

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

#ifdef __cplusplus
}
#endif

#endif /* GRADCORE_C_API_H */
