// The neon target: aarch64 only; NEON is part of the baseline there.
#include "kernels/make_table.hpp"
#include "kernels/simd/neon.hpp"

namespace gradcore::kernels {

const KernelTable& neon_table() {
    static constexpr KernelTable table = make_table<simd::Neon>();
    return table;
}

}  // namespace gradcore::kernels
