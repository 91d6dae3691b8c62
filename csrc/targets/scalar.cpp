// The scalar target: the portable reference, compiled with the baseline flags.
#define GRADCORE_TARGET scalar
#include "kernels/make_table.hpp"
#include "kernels/simd/scalar.hpp"

namespace gradcore::kernels {

const KernelTable& scalar_table() {
    static constexpr KernelTable table = scalar::make_table<scalar::simd::Scalar>();
    return table;
}

}  // namespace gradcore::kernels
