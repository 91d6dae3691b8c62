// The GEMM driver shared by matmul, the dense layer and the recurrent layers:
// BLIS's five loops around the target's micro-kernel, with an optional fused epilogue.
#pragma once

#include "gradcore/dense.hpp"
#include "kernels/gemm_kernels.hpp"

namespace gradcore::runtime {

// C = epilogue(alpha * A B + beta * C); bias (C.cols values) may be null.
template <class T>
void gemm(MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c, T alpha, T beta,
          const T* bias, Activation act, T slope);

}  // namespace gradcore::runtime
