// The neon target: aarch64 only; NEON is part of the baseline there.
#define GRADCORE_TARGET neon
#include "kernels/make_table.hpp"
#include "kernels/simd/neon.hpp"

namespace gradcore::kernels {

// Not tuned on an aarch64 machine yet: avx2's blocking (the same 6 x 2-vector tile
// shape, half as wide), a starting point for whoever measures one.
constexpr TargetConfig kConfig = {
    .gemm_f32 = {.kc = 256, .mc = 144, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
    .gemm_f64 = {.kc = 256, .mc = 72, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
};

const KernelTable& neon_table() {
    static constexpr KernelTable table = neon::make_table<neon::simd::Neon>(kConfig);
    return table;
}

}  // namespace gradcore::kernels
