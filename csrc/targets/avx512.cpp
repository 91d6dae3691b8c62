// The avx512 target: compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl.
#define GRADCORE_TARGET avx512
#include "kernels/make_table.hpp"
#include "kernels/simd/avx512.hpp"

namespace gradcore::kernels {

const KernelTable& avx512_table() {
    static constexpr KernelTable table = avx512::make_table<avx512::simd::Avx512>();
    return table;
}

}  // namespace gradcore::kernels
