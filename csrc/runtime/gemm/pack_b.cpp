// runtime::pack_b: a B that many GEMMs share packed once, block by block in the order
// the strategies walk it (column blocks, then k blocks), with the active target's
// blocking and panel width.
#include <algorithm>

#include "runtime/dispatch.hpp"
#include "runtime/gemm/parts.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore::runtime {

template <class T>
PackedB<T> pack_b(MatrixRef<const T> b) {
    using gemm_parts::ceil_div;
    const kernels::GemmTable<T>& k = gemm_kernels<T>(active_table());
    const kernels::GemmBlocking& B = k.blocking;
    PackedB<T> p;
    p.rows = b.rows;
    p.cols = b.cols;
    std::int64_t total = 0;
    for (std::int64_t jc = 0; jc < b.cols; jc += B.nc) {
        const std::int64_t nc = std::min(B.nc, b.cols - jc);
        for (std::int64_t pc = 0; pc == 0 || pc < b.rows; pc += B.kc) {
            p.block_offsets.push_back(total);
            total += std::min(B.kc, b.rows - pc) * ceil_div(nc, k.nr) * k.nr;
        }
    }
    p.data.resize(static_cast<std::size_t>(std::max<std::int64_t>(total, 1)));
    std::size_t block = 0;
    for (std::int64_t jc = 0; jc < b.cols; jc += B.nc) {
        const std::int64_t nc = std::min(B.nc, b.cols - jc);
        for (std::int64_t pc = 0; pc == 0 || pc < b.rows; pc += B.kc) {
            const std::int64_t kc = std::min(B.kc, b.rows - pc);
            k.pack_b(b.data + pc * b.rs + jc * b.cs, b.rs, b.cs, kc, nc, p.data.data() + p.block_offsets[block++]);
        }
    }
    return p;
}

template PackedB<float> pack_b<float>(MatrixRef<const float>);
template PackedB<double> pack_b<double>(MatrixRef<const double>);

}  // namespace gradcore::runtime
