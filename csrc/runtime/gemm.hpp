// The GEMM driver shared by matmul, the dense layer and the recurrent layers: BLIS's
// loops around the target's micro-kernel, with an optional fused epilogue. Its pieces
// (plan, strategies, macro-kernel) are in csrc/runtime/gemm/.
#pragma once

#include <vector>

#include "gradcore/dense.hpp"

namespace gradcore::runtime {

// m with rows and columns swapped (no data moves: the GEMM packs transposes for free).
template <class T>
MatrixRef<const T> transposed(MatrixRef<const T> m) {
    return {m.data, m.cols, m.rows, m.cs, m.rs};
}

// Columns [j0, j1) and rows [i0, i1) of m, as views.
template <class T>
MatrixRef<T> columns(MatrixRef<T> m, std::int64_t j0, std::int64_t j1) {
    return {m.data + j0 * m.cs, m.rows, j1 - j0, m.rs, m.cs};
}
template <class T>
MatrixRef<T> rows(MatrixRef<T> m, std::int64_t i0, std::int64_t i1) {
    return {m.data + i0 * m.rs, i1 - i0, m.cols, m.rs, m.cs};
}

// B packed once into the GEMM's panel layout, for a B that many GEMMs share (the
// recurrent weights, used at every time step): those GEMMs then skip packing B.
template <class T>
struct PackedB {
    std::int64_t rows = 0, cols = 0;
    std::vector<T> data;
    std::vector<std::int64_t> block_offsets;  // per (column block, depth block), in loop order
};

template <class T>
PackedB<T> pack_b(MatrixRef<const T> b);

// C = epilogue(alpha * A B + beta * C); bias (C.cols values) may be null. With `packed`
// (made by pack_b from this very B), B is not packed again.
template <class T>
void gemm(MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c, T alpha, T beta,
          const T* bias, Activation act, T slope, const PackedB<T>* packed = nullptr);

}  // namespace gradcore::runtime
