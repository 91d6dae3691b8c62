// Few rows and enough columns: each thread takes all rows and a range of the columns,
// for every k block. It then reads (and packs) only its part of B, no thread gets the
// short remainder panel of rows on top of a full share, and the threads meet once per
// product instead of once per k block. One range per thread: smaller ranges taken as
// threads come free were no faster.
#include <algorithm>

#include "runtime/gemm/parts.hpp"
#include "runtime/thread_pool.hpp"

namespace gradcore::runtime::gemm_parts {

template <class T>
void column_split(const GemmCall<T>& call, const GemmPlan<T>& plan) {
    const kernels::GemmBlocking& B = plan.k.blocking;
    const std::int64_t M = plan.M, N = plan.N, K = plan.K;
    const std::int64_t tasks = plan.threads;
    auto columns = [&](std::size_t t) {
        const std::int64_t js = static_cast<std::int64_t>(t);
        for (std::int64_t jc = 0, jci = 0; jc < N; jc += B.nc, ++jci) {
            const std::int64_t nc = std::min(B.nc, N - jc);
            const std::int64_t n_panels = ceil_div(nc, plan.NR);
            const std::int64_t q0 = n_panels * js / tasks, q1 = n_panels * (js + 1) / tasks;
            if (q1 <= q0) continue;
            for (std::int64_t pc = 0, pci = 0; pc == 0 || pc < K; pc += B.kc, ++pci) {
                macro_kernel(call, plan, Block{0, M, jc, nc, q0, q1, pc},
                             call.packed ? packed_block(call, plan, jci, pci) : nullptr);
            }
        }
    };
    parallel_for(static_cast<std::size_t>(tasks), M * N * std::max<std::int64_t>(K, 1) / 4, TaskFn(columns));
}

template void column_split<float>(const GemmCall<float>&, const GemmPlan<float>&);
template void column_split<double>(const GemmCall<double>&, const GemmPlan<double>&);

}  // namespace gradcore::runtime::gemm_parts
