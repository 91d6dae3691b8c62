// The avx2 target: compiled with -mavx2 -mfma -mf16c.
#define GRADCORE_TARGET avx2
#include "kernels/make_table.hpp"
#include "kernels/simd/avx2.hpp"

namespace gradcore::kernels {

// Tuned on Zen 3 / Zen 4 (32 KiB L1d, 512 KiB / 1 MiB L2 per core, 32 MiB L3). With
// NR = 16 floats / 8 doubles the KC = 256 micro-panel of B is 16 KiB, half of L1;
// MC x KC of A is 144 KiB of L2 for either dtype; KC x NC of B is shared in L3. Shorter
// k blocks read and write the C tile more often (float64 slowed at KC = 128).
constexpr TargetConfig kConfig = {
    .gemm_f32 = {.kc = 256, .mc = 144, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
    .gemm_f64 = {.kc = 256, .mc = 72, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
};

const KernelTable& avx2_table() {
    static constexpr KernelTable table = avx2::make_table<avx2::simd::Avx2>(kConfig);
    return table;
}

}  // namespace gradcore::kernels
