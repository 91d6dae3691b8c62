// The avx512 target: compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl.
#define GRADCORE_TARGET avx512
#include "kernels/make_table.hpp"
#include "kernels/simd/avx512.hpp"

namespace gradcore::kernels {

// Tuned on Zen 4, like avx2's: with NR = 32 floats / 16 doubles the KC = 256 micro-panel
// of B is 32 KiB, all of L1, and the A panels' lines stream past it from L2. Deeper and
// shallower k blocks (KC 192 to 512, MC 96 to 192) were as fast. Few rows times a
// transposed B go through micro_tc up to a depth whose packed A^T panel (K x NR) still
// fits in L2.
constexpr TargetConfig kConfig = {
    .gemm_f32 = {.kc = 256, .mc = 144, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
    .gemm_f64 = {.kc = 256, .mc = 72, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
};

const KernelTable& avx512_table() {
    static constexpr KernelTable table = avx512::make_table<avx512::simd::Avx512>(kConfig);
    return table;
}

}  // namespace gradcore::kernels
