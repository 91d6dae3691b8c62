// From a TensorView's dtype to the right row of the kernel table.
#pragma once

#include <cstdint>

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
template <class T>
const kernels::DropoutTable<T>& dropout_kernels(const kernels::KernelTable& k) {
    if constexpr (sizeof(T) == 4) {
        return k.dropout_f32;
    } else {
        return k.dropout_f64;
    }
}
template <class T>
const kernels::NormalizationTable<T>& normalization_kernels(const kernels::KernelTable& k) {
    if constexpr (sizeof(T) == 4) {
        return k.normalization_f32;
    } else {
        return k.normalization_f64;
    }
}

// Calls f(norm_table_for_T, const T* data).
template <class F>
decltype(auto) with_norm_kernels(const kernels::KernelTable& k, const TensorView& t, F&& f) {
    switch (t.dtype) {
        case DType::float16: return f(k.norm_f16, static_cast<const kernels::Float16*>(t.data));
        case DType::bfloat16: return f(k.norm_bf16, static_cast<const kernels::BFloat16*>(t.data));
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

// Calls f(clip_table_for_T, T* data) for a real array (check_views refused the rest).
template <class F>
decltype(auto) with_clip_kernels(const kernels::KernelTable& k, const TensorView& t, F&& f) {
    switch (t.dtype) {
        case DType::float16: return f(k.clip_f16, static_cast<kernels::Float16*>(t.data));
        case DType::bfloat16: return f(k.clip_bf16, static_cast<kernels::BFloat16*>(t.data));
        case DType::float32: return f(k.clip_f32, static_cast<float*>(t.data));
        default: break;
    }
    return f(k.clip_f64, static_cast<double*>(t.data));
}

}  // namespace gradcore::runtime
