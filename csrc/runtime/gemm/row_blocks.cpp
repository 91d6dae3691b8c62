// The general case, BLIS's loops: for each NC column block and KC k block, B is packed
// once (split across the threads by panels) and the threads take row blocks of at most
// MC rows, each packing its own A block for the macro-kernel.
#include <algorithm>
#include <vector>

#include "runtime/gemm/buffers.hpp"
#include "runtime/gemm/parts.hpp"
#include "runtime/thread_pool.hpp"

namespace gradcore::runtime::gemm_parts {

template <class T>
void row_blocks(const GemmCall<T>& call, const GemmPlan<T>& plan) {
    const MatrixRef<const T>& b = call.b;
    const kernels::GemmTable<T>& k = plan.k;
    const kernels::GemmBlocking& B = k.blocking;
    const std::int64_t M = plan.M, N = plan.N, K = plan.K, MR = plan.MR, NR = plan.NR;
    const int threads = plan.threads;

    // Row blocks: at most MC rows, and at least `threads` of them when M allows it, in
    // a multiple of the thread count so that no thread idles at the end.
    std::int64_t n_ic = ceil_div(M, B.mc);
    const std::int64_t max_ic = ceil_div(M, MR);
    if (n_ic > 1 || threads > 1) n_ic = std::min(max_ic, round_up(n_ic, threads));
    const std::int64_t mc = round_up(ceil_div(M, n_ic), MR);
    n_ic = ceil_div(M, mc);
    // Few row blocks (small M): split each block's columns across threads as well.
    const std::int64_t n_js = n_ic >= threads ? 1 : ceil_div(threads, n_ic);

    std::vector<T>& b_buf = b_buffer<T>();
    for (std::int64_t jc = 0, jci = 0; jc < N; jc += B.nc, ++jci) {
        const std::int64_t nc = std::min(B.nc, N - jc);
        const std::int64_t n_panels = ceil_div(nc, NR);
        for (std::int64_t pc = 0, pci = 0; pc == 0 || pc < K; pc += B.kc, ++pci) {
            const std::int64_t kc = std::min(B.kc, K - pc);
            const T* bp = call.packed  ? packed_block(call, plan, jci, pci)
                          : plan.panel_b ? nullptr
                                         : grow(b_buf, std::max<std::int64_t>(1, kc * n_panels * NR));
            // Pack B, split by panels.
            const std::int64_t pack_tasks = std::min<std::int64_t>(n_panels, 4 * threads);
            auto pack_b = [&](std::size_t t) {
                const std::int64_t p0 = n_panels * static_cast<std::int64_t>(t) / pack_tasks;
                const std::int64_t p1 = n_panels * static_cast<std::int64_t>(t + 1) / pack_tasks;
                if (p1 <= p0) return;
                const std::int64_t j0 = p0 * NR, j1 = std::min(nc, p1 * NR);
                k.pack_b(b.data + pc * b.rs + (jc + j0) * b.cs, b.rs, b.cs, kc, j1 - j0,
                         const_cast<T*>(bp) + p0 * kc * NR);
            };
            if (!plan.panel_b && !call.packed) {
                parallel_for(static_cast<std::size_t>(pack_tasks), kc * nc, TaskFn(pack_b));
            }

            auto block = [&](std::size_t t) {
                const std::int64_t ic = static_cast<std::int64_t>(t) / n_js * mc;
                const std::int64_t js = static_cast<std::int64_t>(t) % n_js;
                if (ic >= M) return;
                const std::int64_t q0 = n_panels * js / n_js, q1 = n_panels * (js + 1) / n_js;
                if (q1 <= q0) return;
                macro_kernel(call, plan, Block{ic, std::min(mc, M - ic), jc, nc, q0, q1, pc}, bp);
            };
            parallel_for(static_cast<std::size_t>(n_ic * n_js), M * nc * std::max<std::int64_t>(kc, 1) / 4,
                         TaskFn(block));
        }
    }
}

template void row_blocks<float>(const GemmCall<float>&, const GemmPlan<float>&);
template void row_blocks<double>(const GemmCall<double>&, const GemmPlan<double>&);

}  // namespace gradcore::runtime::gemm_parts
