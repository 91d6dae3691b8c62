// The pieces of runtime::gemm, one file each in this folder: the plan (make_plan, in
// plan.cpp) checks the call and picks one strategy; each strategy (transposed_store.cpp,
// column_split.cpp, row_blocks.cpp) cuts C into blocks for the threads and hands them
// to the macro-kernel (macro_kernel.cpp), which packs A and B and calls the target's
// micro-kernel tile by tile. csrc/runtime/gemm.cpp runs plan and strategy.
#pragma once

#include <cstdint>

#include "gradcore/dense.hpp"
#include "kernels/kernel_table.hpp"
#include "runtime/gemm.hpp"

namespace gradcore::runtime::gemm_parts {

// One product as the caller gave it: C = epilogue(alpha * A B + beta * C).
template <class T>
struct GemmCall {
    MatrixRef<const T> a, b;
    MatrixRef<T> c;
    T alpha, beta;
    const T* bias;  // C.cols values, or null
    Activation act;
    T slope;
    const PackedB<T>* packed;  // B already in panels (made by pack_b from this B), or null

    bool fused() const { return bias || act != Activation::identity; }
};

enum class Strategy {
    nothing,           // C is empty
    transposed_store,  // few rows times a transposed B, computed as C^T = B^T A^T
    column_split,      // few rows: every thread takes all rows and a range of columns
    row_blocks,        // the general case: BLIS's loops, threads over row (and column) blocks
};

// What make_plan decides once per call, read by every piece.
template <class T>
struct GemmPlan {
    const kernels::GemmTable<T>& k;  // the active target's kernels, blocking included
    std::int64_t M, N, K, MR, NR;
    int threads;
    std::int64_t n_pc;  // k blocks (at least one, also for K = 0)
    bool small;         // M <= k.blocking.small_rows
    bool panel_b;       // each B micro-panel is packed just before use (see plan.cpp)
    bool direct_a;      // A's rows are read in place by the micro-kernel
    std::int64_t lda;   // a.rs when direct_a, else 0 (packed A)
    Strategy strategy;
};

// Throws std::invalid_argument for shapes that do not agree.
template <class T>
GemmPlan<T> make_plan(const GemmCall<T>& call);

// Rows [ic, ic + mcur) of C times B panels [q0, q1) of the column block [jc, jc + nc),
// for the k block starting at pc.
struct Block {
    std::int64_t ic, mcur, jc, nc, q0, q1, pc;
};

// C[block] += A[rows, k block] B[k block, panels] (the first k block applies beta, the
// last one the epilogue). bp: the packed KC x nc block of B, unless plan.panel_b.
template <class T>
void macro_kernel(const GemmCall<T>& call, const GemmPlan<T>& plan, const Block& block, const T* bp);

template <class T>
void transposed_store(const GemmCall<T>& call, const GemmPlan<T>& plan);
template <class T>
void column_split(const GemmCall<T>& call, const GemmPlan<T>& plan);
template <class T>
void row_blocks(const GemmCall<T>& call, const GemmPlan<T>& plan);

// The KC x nc block (jc_index, pc_index) of a PackedB, in the loop order of pack_b.
template <class T>
const T* packed_block(const GemmCall<T>& call, const GemmPlan<T>& plan, std::int64_t jc_index,
                      std::int64_t pc_index) {
    const auto offset = call.packed->block_offsets[static_cast<std::size_t>(jc_index * plan.n_pc + pc_index)];
    return call.packed->data.data() + offset;
}

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }
inline std::int64_t round_up(std::int64_t a, std::int64_t b) { return ceil_div(a, b) * b; }

}  // namespace gradcore::runtime::gemm_parts
