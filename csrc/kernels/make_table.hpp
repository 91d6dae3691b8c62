// Instantiates every generic kernel for one SIMD struct S and collects the pointers.
// Included only by the csrc/targets/<isa>.cpp translation units.
#pragma once

#include <cstdint>

#include "clip_kernels.hpp"
#include "dense_kernels.hpp"
#include "gemm_kernels.hpp"
#include "kernel_table.hpp"
#include "norm_kernels.hpp"
#include "optim_kernels.hpp"
#include "probe_kernels.hpp"
#include "rnn_kernels.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
constexpr NormTable<T> make_norm_table() {
    using K = NormKernels<S, T>;
    return {&K::l1, &K::l2, &K::max_abs, &K::lp_sum, &K::stats};
}

template <class S, class T>
constexpr ClipTable<T> make_clip_table() {
    using K = ClipKernels<S, T>;
    return {&K::scale, &K::clamp, &K::zero_nonfinite};
}

template <class S, class T>
constexpr GemmTable<T> make_gemm_table() {
    using K = GemmKernels<S, T>;
    return {K::MR, K::NR, &K::pack_a, &K::pack_b, &K::micro, K::kHasTransposedStore ? &K::micro_tc : nullptr,
            &DenseKernels<S, T>::grad_z, &DenseKernels<S, T>::vector_math};
}

template <class S, class T>
constexpr RnnTable<T> make_rnn_table() {
    using K = RnnKernels<S, T>;
    return {&K::lstm_forward, &K::lstm_backward, &K::gru_forward, &K::gru_backward, &K::rnn_backward,
            &K::gather_hidden_grad};
}

template <class S, class T>
constexpr OptimTable<T> make_optim_table() {
    return {&OptimKernels<S, T>::sgd, &OptimKernels<S, T>::adam};
}

template <class S>
constexpr KernelTable make_table() {
    return {S::kName,
            make_norm_table<S, std::uint16_t>(),
            make_norm_table<S, float>(),
            make_norm_table<S, double>(),
            make_clip_table<S, float>(),
            make_clip_table<S, double>(),
            make_gemm_table<S, float>(),
            make_gemm_table<S, double>(),
            make_rnn_table<S, float>(),
            make_rnn_table<S, double>(),
            make_optim_table<S, float>(),
            make_optim_table<S, double>(),
            &ProbeKernels<S>::read,
            &ProbeKernels<S>::update};
}

}  // namespace gradcore::kernels::GRADCORE_TARGET
