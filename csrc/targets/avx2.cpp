// The avx2 target: compiled with -mavx2 -mfma -mf16c.
#define GRADCORE_TARGET avx2
#include "kernels/make_table.hpp"
#include "kernels/simd/avx2.hpp"

namespace gradcore::kernels {

const KernelTable& avx2_table() {
    static constexpr KernelTable table = avx2::make_table<avx2::simd::Avx2>();
    return table;
}

}  // namespace gradcore::kernels
