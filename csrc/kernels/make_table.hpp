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

// Every entry is set by name: two entries of one signature (l1 and l2) cannot trade
// places when a table's fields are reordered (the initialisers must follow the
// declaration order, or the build fails), and one left out is an error here, not a
// null pointer at run time.
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wmissing-field-initializers"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
constexpr NormTable<T> make_norm_table() {
    using K = NormKernels<S, T>;
    return {.l1 = &K::l1, .l2 = &K::l2, .max_abs = &K::max_abs, .lp_sum = &K::lp_sum, .stats = &K::stats};
}

template <class S, class T>
constexpr ClipTable<T> make_clip_table() {
    using K = ClipKernels<S, T>;
    return {.scale = &K::scale, .clamp = &K::clamp, .zero_nonfinite = &K::zero_nonfinite};
}

template <class S, class T>
constexpr GemmTable<T> make_gemm_table(const GemmBlocking& blocking) {
    using K = GemmKernels<S, T>;
    using D = DenseKernels<S, T>;
    static_assert(K::MR <= kMaxMR && K::NR <= kMaxNR, "the runtime's scratch tile is too small for this tile");
    return {.mr = K::MR,
            .nr = K::NR,
            .blocking = blocking,
            .pack_a = &K::pack_a,
            .pack_b = &K::pack_b,
            .micro = &K::micro,
            .micro_tc = K::kHasTransposedStore ? &K::micro_tc : nullptr,
            .grad_z = &D::grad_z,
            .column_sums = &D::column_sums,
            .vector_math = &D::vector_math};
}

template <class S, class T>
constexpr RnnTable<T> make_rnn_table() {
    using K = RnnKernels<S, T>;
    return {.lstm_forward = &K::lstm_forward,
            .lstm_backward = &K::lstm_backward,
            .gru_forward = &K::gru_forward,
            .gru_backward = &K::gru_backward,
            .elman_backward = &K::elman_backward,
            .gather_hidden_grad = &K::gather_hidden_grad};
}

template <class S, class T>
constexpr OptimTable<T> make_optim_table() {
    using K = OptimKernels<S, T>;
    return {.sgd = &K::sgd, .adam = &K::adam};
}

template <class S>
constexpr KernelTable make_table(const TargetConfig& config) {
    return {.name = S::kName,
            .norm_f16 = make_norm_table<S, std::uint16_t>(),
            .norm_f32 = make_norm_table<S, float>(),
            .norm_f64 = make_norm_table<S, double>(),
            .clip_f32 = make_clip_table<S, float>(),
            .clip_f64 = make_clip_table<S, double>(),
            .gemm_f32 = make_gemm_table<S, float>(config.gemm_f32),
            .gemm_f64 = make_gemm_table<S, double>(config.gemm_f64),
            .rnn_f32 = make_rnn_table<S, float>(),
            .rnn_f64 = make_rnn_table<S, double>(),
            .optim_f32 = make_optim_table<S, float>(),
            .optim_f64 = make_optim_table<S, double>(),
            .probe_read = &ProbeKernels<S>::read,
            .probe_update = &ProbeKernels<S>::update,
            .probe_fma_f32 = &ProbeKernels<S>::template fma<float>,
            .probe_fma_f64 = &ProbeKernels<S>::template fma<double>};
}

}  // namespace gradcore::kernels::GRADCORE_TARGET

#pragma GCC diagnostic pop
