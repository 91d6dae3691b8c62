// From a TensorView's dtype to the right row of the kernel table.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "gradcore/tensor.hpp"
#include "runtime/checks.hpp"
#include "kernels/kernel_table.hpp"

namespace gradcore::runtime {

// The active target's GEMM / recurrent kernels for T (float or double).
template <class T>
const kernels::GemmTable<T>& gemm_kernels(const kernels::KernelTable& k) {
    if constexpr (sizeof(T) == 4) {
        return k.gemm_f32;
    } else {
        return k.gemm_f64;
    }
}
template <class T>
const kernels::RnnTable<T>& rnn_kernels(const kernels::KernelTable& k) {
    if constexpr (sizeof(T) == 4) {
        return k.rnn_f32;
    } else {
        return k.rnn_f64;
    }
}

// Calls f(norm_table_for_T, const T* data).
template <class F>
decltype(auto) with_norm_kernels(const kernels::KernelTable& k, const TensorView& t, F&& f) {
    switch (t.dtype) {
        case DType::float16: return f(k.norm_f16, static_cast<const std::uint16_t*>(t.data));
        case DType::float32: return f(k.norm_f32, static_cast<const float*>(t.data));
        default: break;  // float64 (check_views refused the rest)
    }
    return f(k.norm_f64, static_cast<const double*>(t.data));
}

// Calls f(complex_norm_table_for_C, const C* components) for a complex64/complex128 array.
template <class F>
decltype(auto) with_complex_norm_kernels(const kernels::KernelTable& k, const TensorView& t, F&& f) {
    if (t.dtype == DType::complex64) return f(k.complex_norm_c64, static_cast<const float*>(t.data));
    return f(k.complex_norm_c128, static_cast<const double*>(t.data));
}

// A complex array as its 2 * numel real components, the view of the kernels whose
// result is the same for components as for complex elements (L2, scaling, zeroing).
inline TensorView components(const TensorView& t) {
    return {t.data, 2 * t.numel, t.dtype == DType::complex64 ? DType::float32 : DType::float64};
}

// Calls f(clip_table_for_T, T* data); float32 and float64 only (see below).
template <class F>
decltype(auto) with_clip_kernels(const kernels::KernelTable& k, const TensorView& t, F&& f) {
    if (t.dtype == DType::float32) return f(k.clip_f32, static_cast<float*>(t.data));
    return f(k.clip_f64, static_cast<double*>(t.data));
}

// In-place kernels exist for float32 and float64 (and, for the operations that accept
// complex arrays, their components); checked for the whole list before anything is
// written.
inline void require_writable_dtypes(const TensorView* arrays, std::size_t count,
                                    const char* name = "arrays", Complex complex = Complex::refused) {
    check_views(arrays, count, name, complex);
    for (std::size_t i = 0; i < count; ++i) {
        if (arrays[i].dtype == DType::float16) {
            throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) +
                                        "]: in-place operations support float32 and float64, "
                                        "not float16");
        }
    }
}

}  // namespace gradcore::runtime
