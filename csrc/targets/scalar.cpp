// The scalar target: the portable reference, compiled with the baseline flags.
#define GRADCORE_TARGET scalar
#include "kernels/make_table.hpp"
#include "kernels/simd/scalar.hpp"

namespace gradcore::kernels {

// Not tuned (the reference, not the fast path): the x86 targets' blocking, so that C is
// summed in the same k blocks as theirs.
constexpr TargetConfig kConfig = {
    .gemm_f32 = {.kc = 256, .mc = 144, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
    .gemm_f64 = {.kc = 256, .mc = 72, .nc = 3072, .small_rows = 64, .max_transposed_depth = 1024},
};

const KernelTable& scalar_table() {
    static constexpr KernelTable table = scalar::make_table<scalar::simd::Scalar>(kConfig);
    return table;
}

}  // namespace gradcore::kernels
