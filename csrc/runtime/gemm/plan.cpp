// Checks one GEMM call and decides, once, how it is computed.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "runtime/checks.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/gemm/parts.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore::runtime::gemm_parts {
namespace {

void check_shapes(std::int64_t a_rows, std::int64_t a_cols, std::int64_t b_rows, std::int64_t b_cols,
                  std::int64_t M, std::int64_t N) {
    require_size(M, "gemm: rows of C");
    require_size(N, "gemm: columns of C");
    require_size(a_cols, "gemm: columns of A");
    if (a_rows != M || b_rows != a_cols || b_cols != N) {
        throw std::invalid_argument("gemm: shapes (" + std::to_string(a_rows) + ", " + std::to_string(a_cols) +
                                    ") x (" + std::to_string(b_rows) + ", " + std::to_string(b_cols) +
                                    ") -> (" + std::to_string(M) + ", " + std::to_string(N) + ") do not agree");
    }
}

}  // namespace

template <class T>
GemmPlan<T> make_plan(const GemmCall<T>& call) {
    const MatrixRef<const T>& a = call.a;
    const MatrixRef<const T>& b = call.b;
    const std::int64_t M = call.c.rows, N = call.c.cols, K = a.cols;
    check_shapes(a.rows, a.cols, b.rows, b.cols, M, N);
    if (call.c.cs != 1 && N > 1) throw std::invalid_argument("gemm: C must have unit column stride");
    const kernels::GemmTable<T>& k = gemm_kernels<T>(active_table());
    GemmPlan<T> plan{k, M, N, K, k.mr, k.nr, 1, 1, false, false, false, 0, Strategy::nothing};
    if (M == 0 || N == 0) return plan;
    plan.threads = threads_for_caller();
    if (call.packed && (call.packed->rows != K || call.packed->cols != N)) {
        throw std::invalid_argument("gemm: the packed B does not match B's shape");
    }
    const kernels::GemmBlocking& B = k.blocking;
    plan.n_pc = std::max<std::int64_t>(1, ceil_div(K, B.kc));

    // Few rows: B is reused by only a few row panels, so a packed copy of all of it in
    // memory would cost about as much as it saves. Each B micro-panel is instead packed
    // into L1 just before the row panels use it: by the first row panel's micro-kernel
    // as it reads a row-major B in place (its rows ldb apart: a power-of-two stride
    // would alias them into a few L1 sets if they were read there every time), or by
    // pack_b for other layouts (a transposed weight in x W^T).
    plan.small = M <= B.small_rows;
    plan.panel_b = !call.packed && plan.small;
    // Few rows of a row-major A: read in place by the micro-kernel (see micro()); with
    // the columns split across threads each would otherwise pack all of A.
    plan.direct_a = plan.small && a.cs == 1 && a.rs > 0;
    plan.lda = plan.direct_a ? a.rs : 0;

    // The transposed store needs the target's micro_tc; its k loop is not blocked (C is
    // written once, never read back), for depths whose packed A^T panel (K x NR) still
    // fits in L2.
    if (k.micro_tc && plan.small && !call.packed && b.rs == 1 && b.cs > 1 && call.beta == T(0) && K > 0 &&
        K <= B.max_transposed_depth) {
        plan.strategy = Strategy::transposed_store;
    } else if (plan.small && plan.threads > 1 && ceil_div(N, plan.NR) >= 2 * plan.threads) {
        plan.strategy = Strategy::column_split;
    } else {
        plan.strategy = Strategy::row_blocks;
    }
    return plan;
}

template GemmPlan<float> make_plan<float>(const GemmCall<float>&);
template GemmPlan<double> make_plan<double>(const GemmCall<double>&);

}  // namespace gradcore::runtime::gemm_parts
