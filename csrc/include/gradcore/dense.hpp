// Dense-layer backprop on our own GEMM: matrices are plain pointers with element
// strides (any layout, transposes included, costs nothing: the GEMM packs its inputs).
#pragma once

#include <cstdint>

#include "gradcore/export.hpp"

namespace gradcore {

// y = act(z), derivatives taken from y (see kernels/activations.hpp).
enum class Activation : int { identity = 0, relu = 1, leaky_relu = 2, tanh = 3, sigmoid = 4 };

// m(i, j) = data[i * rs + j * cs].
template <class T>
struct MatrixRef {
    T* data;
    std::int64_t rows, cols, rs, cs;
};

// C = alpha * A B + beta * C. C must have unit column stride (cs == 1); A and B any
// strides. beta == 0 never reads C. Shapes must agree (std::invalid_argument).
GRADCORE_API void gemm(MatrixRef<const float> a, MatrixRef<const float> b, MatrixRef<float> c,
                       float alpha, float beta);
GRADCORE_API void gemm(MatrixRef<const double> a, MatrixRef<const double> b, MatrixRef<double> c,
                       double alpha, double beta);

// y = act(x W^T + bias), x (batch, in), W (out, in), bias (out) or null, y (batch, out).
// Bias and activation are applied in the GEMM's write-back.
template <class T>
struct DenseForward {
    MatrixRef<const T> x, weight;
    const T* bias;
    MatrixRef<T> y;
    Activation act;
    double negative_slope;
};
GRADCORE_API void dense_forward(const DenseForward<float>& args);
GRADCORE_API void dense_forward(const DenseForward<double>& args);

// grad_z = grad_y * act'(y); grad_x = grad_z W; grad_W = grad_z^T x; grad_b = sum_rows grad_z.
// Outputs with null data are not computed. accumulate: add into the outputs instead of
// overwriting them; accumulate_grad_x: add into grad_x only (a residual connection adds
// the skip's gradient there: the GEMM's write-back does the addition).
template <class T>
struct DenseBackward {
    MatrixRef<const T> grad_y, x, weight, y;
    Activation act;
    double negative_slope;
    MatrixRef<T> grad_x;       // data may be null (need_grad_x=False)
    MatrixRef<T> grad_weight;
    T* grad_bias;              // may be null
    bool accumulate;
    bool accumulate_grad_x = false;
};
GRADCORE_API void dense_backward(const DenseBackward<float>& args);
GRADCORE_API void dense_backward(const DenseBackward<double>& args);

}  // namespace gradcore
