// cuBLAS opened at run time: the CUDA build links no libcublas, so it imports (and runs
// its norms and clipping) on machines without the nvidia-cublas wheel. The library is
// dlopen'ed on the first GEMM, its entry points resolved with the header's own
// prototypes (so the compiler checks the ABI), and one handle is kept per (device, host
// thread). gemm_row_major is the only way the rest of the backend calls a GEMM.
//
// Where libcublas is looked for, in this order (the first that loads and resolves wins):
//   1. "libcublas.so.13"  the system search path (LD_LIBRARY_PATH, ld.so.cache, RUNPATH);
//   2. <dir of libgradcore.so>/../nvidia/cu13/lib/libcublas.so.13
//      <dir of libgradcore.so>/../../nvidia/cu13/lib/libcublas.so.13
//      (the nvidia-cublas wheel: pip installs gradcore/ and nvidia/ side by side in
//      site-packages; our directory comes from dladdr, with and without symlinks resolved);
//   3. "libcublas.so"     an unversioned development link.
//
// Plain C++ (compiled by the host compiler as well as by nvcc).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace gradcore::cuda::detail {

// The entry points we use, typed from cublas_api.h.
struct CublasApi {
    decltype(&cublasCreate_v2) create = nullptr;
    decltype(&cublasDestroy_v2) destroy = nullptr;
    decltype(&cublasSetStream_v2) set_stream = nullptr;
    decltype(&cublasSetMathMode) set_math_mode = nullptr;
    decltype(&cublasSgemm_v2) sgemm = nullptr;
    decltype(&cublasDgemm_v2) dgemm = nullptr;
    decltype(&cublasGetStatusString) status_string = nullptr;  // optional
};

// Loads libcublas on the first call (thread-safe, once) and returns its entry points.
// Throws std::runtime_error("cuBLAS could not be loaded (pip install nvidia-cublas): ...")
// when no candidate loads.
const CublasApi& cublas_api();

// A handle of the calling host thread for the current device, bound to `stream`.
struct Blas {
    cublasHandle_t handle;
    cudaStream_t stream;
};
// Makes the handle of (current device, this thread) — created on first use, default math
// mode (no TF32: float32 GEMMs round like the CPU's) — and sets its stream. Throws
// std::runtime_error when cuBLAS cannot be loaded or a call fails.
Blas blas_on(cudaStream_t stream);

// Largest m, n, k or leading dimension the GEMMs accept (cuBLAS takes int).
constexpr std::int64_t kMaxBlasDim = 2147483647;

// Row-major C (m x n, row stride ldc) = alpha * op(A) op(B) + beta * C, with op(A) m x k
// and op(B) k x n; A is stored m x k (k x m when trans_a) with row stride lda, B k x n
// (n x k when trans_b) with row stride ldb. cuBLAS is column-major, where a row-major
// matrix reads as its transpose: C^T = op(B)^T op(A)^T is what is asked of it.
// m == 0 or n == 0: nothing. k == 0: C = beta * C (beta 0: zeros, beta 1: untouched,
// other beta: handed to cuBLAS). beta == 0 never reads C. Leading dimensions must be
// >= the row lengths (not checked here: the entry points validate their arguments).
void gemm_row_major(const Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                    std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
                    std::int64_t ldb, float beta, float* c, std::int64_t ldc);
void gemm_row_major(const Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                    std::int64_t k, double alpha, const double* a, std::int64_t lda,
                    const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc);

}  // namespace gradcore::cuda::detail
