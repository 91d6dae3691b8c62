// libcublas opened with dlopen on first use, its entry points, the per-(device, thread)
// handles and the row-major GEMM helper. See cublas_loader.hpp for where the library is
// looked for.
#include "cublas_loader.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gradcore/cuda.hpp"

namespace gradcore::cuda {
namespace detail {
namespace {

// An object of libgradcore itself: dladdr on it names the file we were loaded from.
const char self_anchor = 0;

struct Library {
    void* handle = nullptr;
    std::string path;   // where it was loaded from, when loaded
    std::string error;  // why it could not be, otherwise
    CublasApi api;
};

// dlsym's void* to a typed function pointer (memcpy: no object/function pointer cast).
template <class F>
bool resolve(void* lib, const char* name, F& out) {
    static_assert(sizeof(F) == sizeof(void*), "function pointers must be pointer-sized");
    dlerror();
    void* p = dlsym(lib, name);
    if (!p) return false;
    std::memcpy(&out, &p, sizeof(out));
    return true;
}

std::string directory_of(const std::string& file) {
    const std::size_t slash = file.rfind('/');
    return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

std::vector<std::string> candidates() {
    std::vector<std::string> names{"libcublas.so.13"};
    Dl_info info{};
    if (dladdr(&self_anchor, &info) && info.dli_fname && info.dli_fname[0]) {
        std::vector<std::string> dirs{directory_of(info.dli_fname)};
        if (char* real = realpath(info.dli_fname, nullptr)) {
            const std::string real_dir = directory_of(real);
            std::free(real);
            if (real_dir != dirs[0]) dirs.push_back(real_dir);
        }
        for (const std::string& dir : dirs) {
            names.push_back(dir + "/../nvidia/cu13/lib/libcublas.so.13");
            names.push_back(dir + "/../../nvidia/cu13/lib/libcublas.so.13");
        }
    }
    names.emplace_back("libcublas.so");
    return names;
}

// Tries to resolve every entry point of `lib`; returns the first missing name or null.
const char* resolve_all(void* lib, CublasApi& api) {
    if (!resolve(lib, "cublasCreate_v2", api.create)) return "cublasCreate_v2";
    if (!resolve(lib, "cublasDestroy_v2", api.destroy)) return "cublasDestroy_v2";
    if (!resolve(lib, "cublasSetStream_v2", api.set_stream)) return "cublasSetStream_v2";
    if (!resolve(lib, "cublasSetMathMode", api.set_math_mode)) return "cublasSetMathMode";
    if (!resolve(lib, "cublasSgemm_v2", api.sgemm)) return "cublasSgemm_v2";
    if (!resolve(lib, "cublasDgemm_v2", api.dgemm)) return "cublasDgemm_v2";
    if (!resolve(lib, "cublasGetStatusString", api.status_string)) api.status_string = nullptr;
    return nullptr;
}

Library load() {
    Library lib;
    std::string reasons;
    for (const std::string& name : candidates()) {
        void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char* e = dlerror();
            reasons += (reasons.empty() ? "" : "; ") + std::string(e ? e : name + ": dlopen failed");
            continue;
        }
        CublasApi api;
        if (const char* missing = resolve_all(h, api)) {
            reasons += (reasons.empty() ? "" : "; ") + name + ": no symbol " + missing;
            dlclose(h);
            continue;
        }
        lib.handle = h;
        lib.api = api;
        Dl_info info{};
        void* create_address = nullptr;
        std::memcpy(&create_address, &api.create, sizeof(create_address));
        lib.path = dladdr(create_address, &info) && info.dli_fname && info.dli_fname[0]
                       ? std::string(info.dli_fname)
                       : name;
        if (char* real = realpath(lib.path.c_str(), nullptr)) {  // without the ../
            lib.path = real;
            std::free(real);
        }
        return lib;
    }
    lib.error = "cuBLAS could not be loaded (pip install nvidia-cublas): " + reasons;
    return lib;
}

// Loaded once (a function-local static: thread-safe initialisation); a failure is
// remembered, not retried.
const Library& library() {
    static const Library lib = load();
    return lib;
}

[[noreturn]] void throw_cublas(cublasStatus_t status, const char* what) {
    const CublasApi& api = library().api;
    const char* text = api.status_string ? api.status_string(status) : nullptr;
    throw std::runtime_error(std::string("gradcore CUDA: ") + what + " failed: " +
                             (text ? std::string(text) : "cuBLAS status " + std::to_string(static_cast<int>(status))));
}

void check_cublas(cublasStatus_t status, const char* what) {
    if (status != CUBLAS_STATUS_SUCCESS) throw_cublas(status, what);
}

void check_cuda(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
        throw std::runtime_error(std::string("gradcore CUDA: ") + what + ": " + cudaGetErrorName(e) + ": " +
                                 cudaGetErrorString(e));
    }
}

// Handles of threads that have exited, per device, for the next thread to take. Never
// destroyed (nor are the handles): at process exit the CUDA context may already be gone,
// and cublasDestroy would synchronise the device (PyTorch's pool does the same).
struct HandlePool {
    std::mutex mutex;
    std::vector<std::pair<int, cublasHandle_t>> free;
};
HandlePool& handle_pool() {
    static HandlePool* pool = new HandlePool();
    return *pool;
}

// The calling thread's handles, one per device; given back to the pool when it exits.
struct ThreadHandles {
    std::vector<std::pair<int, cublasHandle_t>> held;
    ThreadHandles() = default;
    ThreadHandles(const ThreadHandles&) = delete;
    ThreadHandles& operator=(const ThreadHandles&) = delete;
    ~ThreadHandles() {
        HandlePool& pool = handle_pool();
        std::lock_guard<std::mutex> lock(pool.mutex);
        for (const auto& entry : held) pool.free.push_back(entry);
    }
};

cublasHandle_t handle_for(int device) {
    thread_local ThreadHandles mine;
    for (const auto& entry : mine.held) {
        if (entry.first == device) return entry.second;
    }
    const CublasApi& api = cublas_api();
    cublasHandle_t handle = nullptr;
    {
        HandlePool& pool = handle_pool();
        std::lock_guard<std::mutex> lock(pool.mutex);
        for (std::size_t i = 0; i < pool.free.size(); ++i) {
            if (pool.free[i].first == device) {
                handle = pool.free[i].second;
                pool.free.erase(pool.free.begin() + static_cast<std::ptrdiff_t>(i));
                break;
            }
        }
    }
    if (!handle) {
        check_cublas(api.create(&handle), "cublasCreate_v2");
        // Default math: float32 GEMMs in float32 (no TF32), as on the CPU.
        const cublasStatus_t s = api.set_math_mode(handle, CUBLAS_DEFAULT_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) {
            api.destroy(handle);
            throw_cublas(s, "cublasSetMathMode");
        }
    }
    mine.held.emplace_back(device, handle);
    return handle;
}

int blas_int(std::int64_t v, const char* what) {
    if (v < 0 || v > kMaxBlasDim) {
        throw std::invalid_argument(std::string("gradcore CUDA: GEMM ") + what + " = " + std::to_string(v) +
                                    " is outside cuBLAS's int range");
    }
    return static_cast<int>(v);
}

template <class T, class Gemm>
void gemm_impl(Gemm gemm, const char* name, const Blas& blas, bool trans_a, bool trans_b, std::int64_t m,
               std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda, const T* b, std::int64_t ldb,
               T beta, T* c, std::int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        if (beta == T(0)) {
            check_cuda(cudaMemset2DAsync(c, static_cast<std::size_t>(ldc) * sizeof(T), 0,
                                         static_cast<std::size_t>(n) * sizeof(T), static_cast<std::size_t>(m),
                                         blas.stream),
                       "cudaMemset2DAsync");
            return;
        }
        if (beta == T(1)) return;
        k = 0;
        if (lda < 1) lda = 1;  // cuBLAS wants leading dimensions >= 1 even when k == 0
        if (ldb < 1) ldb = 1;
    }
    // Column-major view: C^T (n x m) = op(B)^T (n x k) op(A)^T (k x m).
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_cublas(gemm(blas.handle, op_b, op_a, blas_int(n, "n"), blas_int(m, "m"), blas_int(k, "k"), &alpha, b,
                      blas_int(ldb, "ldb"), a, blas_int(lda, "lda"), &beta, c, blas_int(ldc, "ldc")),
                 name);
}

}  // namespace

const CublasApi& cublas_api() {
    const Library& lib = library();
    if (!lib.handle) throw std::runtime_error(lib.error);
    return lib.api;
}

Blas blas_on(cudaStream_t stream) {
    const CublasApi& api = cublas_api();
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    const cublasHandle_t handle = handle_for(device);
    check_cublas(api.set_stream(handle, stream), "cublasSetStream_v2");
    return {handle, stream};
}

void gemm_row_major(const Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                    float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                    float* c, std::int64_t ldc) {
    gemm_impl<float>(cublas_api().sgemm, "cublasSgemm_v2", blas, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                     beta, c, ldc);
}

void gemm_row_major(const Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                    double alpha, const double* a, std::int64_t lda, const double* b, std::int64_t ldb, double beta,
                    double* c, std::int64_t ldc) {
    gemm_impl<double>(cublas_api().dgemm, "cublasDgemm_v2", blas, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                      beta, c, ldc);
}

}  // namespace detail

std::string cublas_status() {
    const detail::Library& lib = detail::library();
    return lib.handle ? lib.path : lib.error;
}

}  // namespace gradcore::cuda
