// The neon target: aarch64 only; NEON is part of the baseline there.
#define GRADCORE_TARGET neon
#include "kernels/make_table.hpp"
#include "kernels/simd/neon.hpp"

namespace gradcore::kernels {

const KernelTable& neon_table() {
    static constexpr KernelTable table = neon::make_table<neon::simd::Neon>();
    return table;
}

}  // namespace gradcore::kernels
