// The C ABI: translate, call the C++ API, turn every exception into a status code and a
// per-thread message (an exception must never unwind into C or another language).
#include "gradcore/c_api.h"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "gradcore/dense.hpp"
#include "gradcore/norms.hpp"
#include "gradcore/runtime.hpp"

namespace {

// gc_dtype and gradcore::DType are one vocabulary: the C ABI casts one to the other.
static_assert(GC_FLOAT16 == static_cast<int>(gradcore::DType::float16));
static_assert(GC_FLOAT32 == static_cast<int>(gradcore::DType::float32));
static_assert(GC_FLOAT64 == static_cast<int>(gradcore::DType::float64));
static_assert(GC_BFLOAT16 == static_cast<int>(gradcore::DType::bfloat16));
static_assert(GC_COMPLEX64 == static_cast<int>(gradcore::DType::complex64));
static_assert(GC_COMPLEX128 == static_cast<int>(gradcore::DType::complex128));

// 4 is gradcore::DType::int64, a count output only: not a gc_dtype.
bool known_dtype(int32_t t) { return (t >= GC_FLOAT16 && t <= GC_BFLOAT16) || t == GC_COMPLEX64 || t == GC_COMPLEX128; }

thread_local std::string t_last_error;

std::vector<gradcore::TensorView> views(const gc_tensor* arrays, size_t count) {
    if (count && !arrays) throw std::invalid_argument("arrays is NULL");
    std::vector<gradcore::TensorView> v(count);
    for (size_t i = 0; i < count; ++i) {
        if (!known_dtype(arrays[i].dtype)) {
            throw std::invalid_argument("arrays[" + std::to_string(i) + "]: unknown dtype " +
                                        std::to_string(arrays[i].dtype));
        }
        if (arrays[i].numel < 0 || (arrays[i].numel > 0 && !arrays[i].data)) {
            throw std::invalid_argument("arrays[" + std::to_string(i) + "]: bad data or numel");
        }
        v[i] = {arrays[i].data, arrays[i].numel, static_cast<gradcore::DType>(arrays[i].dtype)};
    }
    return v;
}

template <class F>
gc_status guarded(F&& f) {
    try {
        f();
        t_last_error.clear();
        return GC_OK;
    } catch (const std::invalid_argument& e) {
        t_last_error = e.what();
        return GC_INVALID_ARGUMENT;
    } catch (const std::exception& e) {
        t_last_error = e.what();
        return GC_INTERNAL_ERROR;
    } catch (...) {
        t_last_error = "unknown error";
        return GC_INTERNAL_ERROR;
    }
}

thread_local std::string t_string;  // storage for the strings returned below

void require(bool ok, const char* message) {
    if (!ok) throw std::invalid_argument(message);
}

// Calls f with a null pointer of the element type that `dtype` names (float or double).
template <class F>
void with_real_dtype(int dtype, F&& f) {
    if (dtype == GC_FLOAT32) {
        f(static_cast<float*>(nullptr));
    } else if (dtype == GC_FLOAT64) {
        f(static_cast<double*>(nullptr));
    } else {
        throw std::invalid_argument("dtype must be GC_FLOAT32 or GC_FLOAT64, got " + std::to_string(dtype));
    }
}

// A C-contiguous rows x cols matrix. NULL data is allowed when it holds nothing, or
// when the callee reads NULL as "not needed" (optional).
template <class T>
gradcore::MatrixRef<T> contiguous(T* data, int64_t rows, int64_t cols, const char* name, bool optional = false) {
    if (!data && !optional && rows * cols > 0) throw std::invalid_argument(std::string(name) + " is NULL");
    return {data, rows, cols, cols, 1};
}

gradcore::Activation activation(int act) {
    require(act >= GC_IDENTITY && act <= GC_SIGMOID, "unknown activation");
    return static_cast<gradcore::Activation>(act);
}

void check_dense_sizes(int64_t batch, int64_t in_features, int64_t out_features) {
    require(batch >= 0 && in_features >= 0 && out_features >= 0, "batch, in_features and out_features must be >= 0");
}

}  // namespace

extern "C" {

const char* gc_last_error(void) { return t_last_error.c_str(); }

const char* gc_version(void) {
    t_string = gradcore::version();
    return t_string.c_str();
}

const char* gc_isa(void) {
    gc_status s = guarded([] { t_string = gradcore::isa_active(); });
    return s == GC_OK ? t_string.c_str() : "";
}

gc_status gc_global_norm(const gc_tensor* arrays, size_t count, double ord, double* out) {
    return guarded([&] {
        if (!out) throw std::invalid_argument("out is NULL");
        const auto v = views(arrays, count);
        *out = gradcore::global_norm(v.data(), v.size(), ord);
    });
}

gc_status gc_norms(const gc_tensor* arrays, size_t count, double ord, double* out) {
    return guarded([&] {
        if (count && !out) throw std::invalid_argument("out is NULL");
        const auto v = views(arrays, count);
        gradcore::norms(v.data(), v.size(), ord, out);
    });
}

gc_status gc_clip_by_value(const gc_tensor* arrays, size_t count, double lo, double hi) {
    return guarded([&] {
        const auto v = views(arrays, count);
        gradcore::clip_by_value_(v.data(), v.size(), lo, hi);
    });
}

gc_status gc_clip_by_global_norm(const gc_tensor* arrays, size_t count, double max_norm, double ord, double eps,
                                 int nonfinite, double total_norm, double* total_out, int* clipped) {
    bool refused = false;
    const gc_status s = guarded([&] {
        if (nonfinite < GC_PROPAGATE || nonfinite > GC_ZERO) throw std::invalid_argument("unknown nonfinite policy");
        const auto v = views(arrays, count);
        const auto r = gradcore::clip_by_global_norm_(v.data(), v.size(), max_norm, ord, eps,
                                                      static_cast<gradcore::NonFinitePolicy>(nonfinite),
                                                      total_norm >= 0.0, total_norm >= 0.0 ? total_norm : 0.0);
        if (total_out) *total_out = r.total_norm;
        if (clipped) *clipped = r.clipped ? 1 : 0;
        refused = r.nonfinite && nonfinite == GC_ERROR;
    });
    if (s == GC_OK && refused) {
        t_last_error = "the total norm is not finite; the arrays were not modified";
        return GC_NONFINITE;
    }
    return s;
}

gc_status gc_clip_by_norm(const gc_tensor* arrays, size_t count, double max_norm, double ord, double eps,
                          double* norms_out) {
    return guarded([&] {
        const auto v = views(arrays, count);
        std::vector<double> scratch(norms_out ? 0 : count);
        gradcore::clip_by_norm_(v.data(), v.size(), max_norm, ord, eps, norms_out ? norms_out : scratch.data());
    });
}

gc_status gc_gemm(int dtype, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const void* a, int64_t lda, const void* b, int64_t ldb, double beta, void* c, int64_t ldc) {
    return guarded([&] {
        require(m >= 0 && n >= 0 && k >= 0, "m, n and k must be >= 0");
        // Stored shapes: A is (k x m) when transposed, else (m x k); likewise B.
        const int64_t a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
        require(lda >= std::max<int64_t>(a_cols, 1), "lda is smaller than a row of A");
        require(ldb >= std::max<int64_t>(b_cols, 1), "ldb is smaller than a row of B");
        require(ldc >= std::max<int64_t>(n, 1), "ldc is smaller than a row of C");
        require((a || m * k == 0) && (b || k * n == 0) && (c || m * n == 0), "a, b or c is NULL");
        with_real_dtype(dtype, [&](auto* tag) {
            using T = std::remove_pointer_t<decltype(tag)>;
            // op(X) as a rows x cols view of row-major storage with row stride ld.
            auto op = [](const void* data, int64_t rows, int64_t cols, int64_t ld, int trans) {
                const T* p = static_cast<const T*>(data);
                return trans ? gradcore::MatrixRef<const T>{p, rows, cols, 1, ld}
                             : gradcore::MatrixRef<const T>{p, rows, cols, ld, 1};
            };
            const auto ma = op(a, m, k, lda, trans_a), mb = op(b, k, n, ldb, trans_b);
            gradcore::gemm(ma, mb, gradcore::MatrixRef<T>{static_cast<T*>(c), m, n, ldc, 1}, static_cast<T>(alpha),
                           static_cast<T>(beta));
        });
    });
}

gc_status gc_dense_forward(int dtype, int64_t batch, int64_t in_features, int64_t out_features, const void* x,
                           const void* weight, const void* bias, void* y, int act, double negative_slope) {
    return guarded([&] {
        check_dense_sizes(batch, in_features, out_features);
        const auto activation_kind = activation(act);
        with_real_dtype(dtype, [&](auto* tag) {
            using T = std::remove_pointer_t<decltype(tag)>;
            gradcore::dense_forward(gradcore::DenseForward<T>{
                contiguous(static_cast<const T*>(x), batch, in_features, "x"),
                contiguous(static_cast<const T*>(weight), out_features, in_features, "weight"),
                static_cast<const T*>(bias), contiguous(static_cast<T*>(y), batch, out_features, "y"),
                activation_kind, negative_slope});
        });
    });
}

gc_status gc_dense_backward(int dtype, int64_t batch, int64_t in_features, int64_t out_features,
                            const void* grad_y, const void* x, const void* weight, const void* y, int act,
                            double negative_slope, void* grad_x, void* grad_weight, void* grad_bias,
                            int accumulate) {
    return guarded([&] {
        check_dense_sizes(batch, in_features, out_features);
        const auto activation_kind = activation(act);
        with_real_dtype(dtype, [&](auto* tag) {
            using T = std::remove_pointer_t<decltype(tag)>;
            gradcore::dense_backward(gradcore::DenseBackward<T>{
                contiguous(static_cast<const T*>(grad_y), batch, out_features, "grad_y"),
                contiguous(static_cast<const T*>(x), batch, in_features, "x"),
                contiguous(static_cast<const T*>(weight), out_features, in_features, "weight"),
                // y is read only for the derivative of a non-identity activation.
                contiguous(static_cast<const T*>(y), batch, out_features, "y", activation_kind == gradcore::Activation::identity),
                activation_kind, negative_slope,
                contiguous(static_cast<T*>(grad_x), batch, in_features, "grad_x", true),
                contiguous(static_cast<T*>(grad_weight), out_features, in_features, "grad_weight", true),
                static_cast<T*>(grad_bias), accumulate != 0});
        });
    });
}

}  // extern "C"
