// The avx2 target: compiled with -mavx2 -mfma -mf16c.
#include "kernels/make_table.hpp"
#include "kernels/simd/avx2.hpp"

namespace gradcore::kernels {

const KernelTable& avx2_table() {
    static constexpr KernelTable table = make_table<simd::Avx2>();
    return table;
}

}  // namespace gradcore::kernels
