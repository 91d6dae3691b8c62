// The avx512 target: compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl.
#include "kernels/make_table.hpp"
#include "kernels/simd/avx512.hpp"

namespace gradcore::kernels {

const KernelTable& avx512_table() {
    static constexpr KernelTable table = make_table<simd::Avx512>();
    return table;
}

}  // namespace gradcore::kernels
