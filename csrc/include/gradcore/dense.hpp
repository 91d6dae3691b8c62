// Dense-layer backprop on our own GEMM: matrices are plain pointers with element
// strides (any layout, transposes included, costs nothing: the GEMM packs its inputs).
#pragma once

#include <cstdint>

#include "gradcore/export.hpp"

namespace gradcore {

// y = act(z). identity .. sigmoid: applied in the GEMM's write-back, derivatives taken from
// y. elu (alpha), silu (z sigmoid(z)), gelu (z Phi(z)), gelu_tanh (torch's approximate="tanh")
// and prelu (a learnable slope per output feature, or one shared): their derivatives need
// z, so the forward saves what the backward reads: act'(z) itself (computed with y, from
// the same exp / Phi), or for prelu z (its slopes' gradient needs it). See
// kernels/activations.hpp.
enum class Activation : int {
    identity = 0, relu = 1, leaky_relu = 2, tanh = 3, sigmoid = 4,
    elu = 5, silu = 6, gelu = 7, gelu_tanh = 8, prelu = 9
};

// Whether the backward reads the forward's `saved` array instead of y: the activations
// above, and with dropout also tanh and sigmoid (y is then scaled by the mask).
constexpr bool needs_saved(Activation a, double dropout = 0.0) {
    return static_cast<int>(a) >= static_cast<int>(Activation::elu) ||
           (dropout > 0.0 && (a == Activation::tanh || a == Activation::sigmoid));
}

// Dropout fused into the layer (y = dropout(act(z)), gradcore/dropout.hpp's mask with
// element (r, j) = r * out + j of the call): p in [0, 1); the backward, given the same p,
// seed and offset, regenerates the mask.
struct DenseDropout {
    double p = 0.0;
    std::uint64_t seed = 0, offset = 0;
};

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
// Bias and the write-back activations are applied in the GEMM's write-back; for the
// needs_saved ones the GEMM writes z = x W^T + bias into y and one pass over it writes y
// and, when saved.data is not null, saved (act'(z), or z for prelu).
template <class T>
struct DenseForward {
    MatrixRef<const T> x, weight;
    const T* bias;
    MatrixRef<T> y;
    Activation act;
    double negative_slope;           // leaky_relu
    double alpha = 1.0;              // elu (>= 0)
    const T* prelu_weight = nullptr;  // prelu: prelu_weight_count = 1 (shared) or out slopes
    std::int64_t prelu_weight_count = 0;
    MatrixRef<T> saved{};            // (batch, out), unit column stride; data may be null
    DenseDropout dropout{};
};
GRADCORE_API void dense_forward(const DenseForward<float>& args);
GRADCORE_API void dense_forward(const DenseForward<double>& args);

// grad_z = grad_y * act'(y); grad_x = grad_z W; grad_W = grad_z^T x; grad_b = sum_rows grad_z.
// Outputs with null data are not computed. accumulate: add into the outputs instead of
// overwriting them; accumulate_grad_x: add into grad_x only (a residual connection adds
// the skip's gradient there: the GEMM's write-back does the addition).
// The needs_saved activations read the forward's saved array instead of y (whose data may
// then be null); prelu also adds dL/da into grad_prelu_weight (its prelu_weight_count
// entries, when not null).
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
    double alpha = 1.0;
    const T* prelu_weight = nullptr;
    std::int64_t prelu_weight_count = 0;
    MatrixRef<const T> saved{};
    T* grad_prelu_weight = nullptr;
    DenseDropout dropout{};
};
GRADCORE_API void dense_backward(const DenseBackward<float>& args);
GRADCORE_API void dense_backward(const DenseBackward<double>& args);

}  // namespace gradcore
