// The scalar target: the portable reference, compiled with the baseline flags.
#include "kernels/make_table.hpp"
#include "kernels/simd/scalar.hpp"

namespace gradcore::kernels {

const KernelTable& scalar_table() {
    static constexpr KernelTable table = make_table<simd::Scalar>();
    return table;
}

}  // namespace gradcore::kernels
