// Few rows times a transposed B (x W^T, the dense forward, with W row-major): computed
// as C^T = B^T A^T by the target's transposed-store micro-kernel (see micro_tc), so that
// W is read as it lies and only the few rows of A are transposed, once, instead of
// every panel of W. The k loop is not blocked: C is written once, never read back.
#include <algorithm>

#include "runtime/gemm/buffers.hpp"
#include "runtime/gemm/parts.hpp"
#include "runtime/thread_pool.hpp"

namespace gradcore::runtime::gemm_parts {

template <class T>
void transposed_store(const GemmCall<T>& call, const GemmPlan<T>& plan) {
    const MatrixRef<const T>& a = call.a;
    const MatrixRef<const T>& b = call.b;
    const MatrixRef<T>& c = call.c;
    const kernels::GemmTable<T>& k = plan.k;
    const std::int64_t M = plan.M, N = plan.N, K = plan.K, MR = plan.MR, NR = plan.NR;
    const std::int64_t a_panels = ceil_div(M, NR);  // A^T's panels: C's rows
    T* at = grow(b_buffer<T>(), a_panels * NR * K);
    k.pack_b(a.data, a.cs, a.rs, K, M, at);  // A^T (K x M): at(k, i) = a(i, k)
    const std::int64_t b_panels = ceil_div(N, MR);  // B^T's row panels: C's columns
    const std::int64_t tasks = std::min<std::int64_t>(plan.threads, b_panels);
    auto rows_of_bt = [&](std::size_t t) {
        const std::int64_t p0 = b_panels * static_cast<std::int64_t>(t) / tasks;
        const std::int64_t p1 = b_panels * static_cast<std::int64_t>(t + 1) / tasks;
        kernels::Epilogue<T> ep{nullptr, call.act, call.slope};
        for (std::int64_t p = p0; p < p1; ++p) {
            const std::int64_t j = p * MR;
            ep.bias = call.bias ? call.bias + j : nullptr;
            for (std::int64_t q = 0; q < a_panels; ++q) {
                const std::int64_t i = q * NR;
                k.micro_tc(K, b.data + j * b.cs, b.cs, at + q * K * NR, c.data + i * c.rs + j, c.rs, call.alpha,
                           call.fused() ? &ep : nullptr, static_cast<int>(std::min(MR, N - j)),
                           static_cast<int>(std::min(NR, M - i)));
            }
        }
    };
    parallel_for(static_cast<std::size_t>(tasks), M * N * K / 4, TaskFn(rows_of_bt));
}

template void transposed_store<float>(const GemmCall<float>&, const GemmPlan<float>&);
template void transposed_store<double>(const GemmCall<double>&, const GemmPlan<double>&);

}  // namespace gradcore::runtime::gemm_parts
