// The macro-kernel: one block of C for one k block, tile by tile through the target's
// micro-kernel. Partial tiles (the last NR columns) go through a scratch tile, so the
// micro-kernel only ever writes whole MR x NR (or fewer-row) tiles.
#include <algorithm>

#include "runtime/gemm/buffers.hpp"
#include "runtime/gemm/parts.hpp"

namespace gradcore::runtime::gemm_parts {

template <class T>
void macro_kernel(const GemmCall<T>& call, const GemmPlan<T>& plan, const Block& blk, const T* bp) {
    const MatrixRef<const T>& a = call.a;
    const MatrixRef<const T>& b = call.b;
    const MatrixRef<T>& c = call.c;
    const kernels::GemmTable<T>& k = plan.k;
    const std::int64_t MR = plan.MR, NR = plan.NR;
    const std::int64_t kc = std::min(k.blocking.kc, plan.K - blk.pc);
    const bool last = blk.pc + kc >= plan.K;
    const T beta_k = blk.pc == 0 ? call.beta : T(1);
    const T* ap;  // the A block: rows read in place, or packed panels
    if (plan.direct_a) {
        ap = a.data + blk.ic * a.rs + blk.pc;
    } else {
        T* packed_a = grow(a_buffer<T>(), round_up(blk.mcur, MR) * kc + kernels::kPackASlack);
        k.pack_a(a.data + blk.ic * a.rs + blk.pc * a.cs, a.rs, a.cs, blk.mcur, kc, packed_a);
        ap = packed_a;
    }
    alignas(64) T tile[kernels::kMaxMR * kernels::kMaxNR];
    alignas(64) T tile_bias[kernels::kMaxNR];
    kernels::Epilogue<T> ep{nullptr, call.act, call.slope};
    for (std::int64_t q = blk.q0; q < blk.q1; ++q) {
        const std::int64_t j = q * NR;  // within the jc block
        const std::int64_t ncur = std::min(NR, blk.nc - j);
        const T* bpanel;
        std::int64_t ldb = NR;
        T* b_copy = nullptr;  // set: the first micro-kernel packs the B panel here
        if (!plan.panel_b) {
            bpanel = bp + q * kc * NR;
        } else if (b.cs == 1 && ncur == NR) {
            bpanel = b.data + blk.pc * b.rs + blk.jc + j;
            ldb = b.rs;
            if (blk.mcur > MR) b_copy = grow(b_panel_buffer<T>(), kc * NR);
        } else {  // transposed or strided B, or the last, partial panel
            T* panel = grow(b_panel_buffer<T>(), std::max<std::int64_t>(1, kc * NR));
            k.pack_b(b.data + blk.pc * b.rs + (blk.jc + j) * b.cs, b.rs, b.cs, kc, ncur, panel);
            bpanel = panel;
        }
        const T* tile_bias_src = call.bias ? call.bias + blk.jc + j : nullptr;
        if (ncur < NR && tile_bias_src) {
            std::fill(tile_bias, tile_bias + NR, T(0));
            std::copy(tile_bias_src, tile_bias_src + ncur, tile_bias);
            tile_bias_src = tile_bias;
        }
        ep.bias = tile_bias_src;
        const kernels::Epilogue<T>* epp = last && call.fused() ? &ep : nullptr;
        for (std::int64_t i = 0; i < blk.mcur; i += MR) {
            const std::int64_t mr = std::min(MR, blk.mcur - i);
            T* cij = c.data + (blk.ic + i) * c.rs + blk.jc + j;
            const T* apanel = plan.direct_a ? ap + i * a.rs : ap + i * kc;
            if (ncur == NR) {  // (b_copy is set only when the first panel is full)
                k.micro(kc, apanel, plan.lda, bpanel, ldb, cij, c.rs, call.alpha, beta_k, epp, b_copy,
                        static_cast<int>(mr));
                if (b_copy) bpanel = b_copy, ldb = NR, b_copy = nullptr;
                continue;
            }
            for (std::int64_t r = 0; r < mr; ++r) {
                for (std::int64_t s = 0; s < ncur; ++s) tile[r * NR + s] = beta_k != T(0) ? cij[r * c.rs + s] : T(0);
            }
            k.micro(kc, apanel, plan.lda, bpanel, ldb, tile, NR, call.alpha, beta_k, epp, nullptr,
                    static_cast<int>(mr));
            for (std::int64_t r = 0; r < mr; ++r) {
                for (std::int64_t s = 0; s < ncur; ++s) cij[r * c.rs + s] = tile[r * NR + s];
            }
        }
    }
}

template void macro_kernel<float>(const GemmCall<float>&, const GemmPlan<float>&, const Block&, const float*);
template void macro_kernel<double>(const GemmCall<double>&, const GemmPlan<double>&, const Block&, const double*);

}  // namespace gradcore::runtime::gemm_parts
