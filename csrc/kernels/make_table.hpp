// Instantiates every generic kernel for one SIMD struct S and collects the pointers.
// Included only by the csrc/targets/<isa>.cpp translation units.
#pragma once

#include <cstdint>

#include "clip_kernels.hpp"
#include "complex_norm_kernels.hpp"
#include "dense_kernels.hpp"
#include "gemm_kernels.hpp"
#include "dropout_kernels.hpp"
#include "kernel_table.hpp"
#include "norm_kernels.hpp"
#include "normalization_kernels.hpp"
#include "optim_kernels.hpp"
#include "probe_kernels.hpp"
#include "rnn_kernels.hpp"
#include "target.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wmissing-field-initializers"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S>
constexpr KernelTable make_table(const TargetConfig& config) {
    return {.name = S::kName,
            .norm_f16 = NormTable<Float16>::of<NormKernels<S, Float16>>(),
            .norm_bf16 = NormTable<BFloat16>::of<NormKernels<S, BFloat16>>(),
            .norm_f32 = NormTable<float>::of<NormKernels<S, float>>(),
            .norm_f64 = NormTable<double>::of<NormKernels<S, double>>(),
            .complex_norm_c64 = ComplexNormTable<float>::of<ComplexNormKernels<S, float>>(),
            .complex_norm_c128 = ComplexNormTable<double>::of<ComplexNormKernels<S, double>>(),
            .clip_f16 = ClipTable<Float16, double>::of<NarrowClipKernels<S, Float16>>(),
            .clip_bf16 = ClipTable<BFloat16, double>::of<NarrowClipKernels<S, BFloat16>>(),
            .clip_f32 = ClipTable<float>::of<ClipKernels<S, float>>(),
            .clip_f64 = ClipTable<double>::of<ClipKernels<S, double>>(),
            .gemm_f32 = GemmTable<float>::of<GemmKernels<S, float>, DenseKernels<S, float>>(config.gemm_f32),
            .gemm_f64 = GemmTable<double>::of<GemmKernels<S, double>, DenseKernels<S, double>>(config.gemm_f64),
            .rnn_f32 = RnnTable<float>::of<RnnKernels<S, float>>(),
            .rnn_f64 = RnnTable<double>::of<RnnKernels<S, double>>(),
            .optim_f32 = OptimTable<float>::of<OptimKernels<S, float>>(),
            .optim_f64 = OptimTable<double>::of<OptimKernels<S, double>>(),
            .optim_f16 = NarrowOptimTable<Float16>::of<NarrowOptimKernels<S, Float16>>(),
            .optim_bf16 = NarrowOptimTable<BFloat16>::of<NarrowOptimKernels<S, BFloat16>>(),
            .normalization_f32 = NormalizationTable<float>::of<NormalizationKernels<S, float>>(),
            .normalization_f64 = NormalizationTable<double>::of<NormalizationKernels<S, double>>(),
            .dropout_f32 = DropoutTable<float>::of<DropoutKernels<float>>(),
            .dropout_f64 = DropoutTable<double>::of<DropoutKernels<double>>(),
            .philox_bits = &DropoutKernels<float>::bits,
            .probe_read = &ProbeKernels<S>::read,
            .probe_update = &ProbeKernels<S>::update,
            .probe_fma_f32 = &ProbeKernels<S>::template fma<float>,
            .probe_fma_f64 = &ProbeKernels<S>::template fma<double>};
}

}  // namespace gradcore::kernels::GRADCORE_TARGET

#pragma GCC diagnostic pop
