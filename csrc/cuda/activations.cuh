// Element-wise math of the CUDA backend's dense layer and recurrent cells: exp, tanh,
// sigmoid and the dense activations with their derivatives taken from the forward
// output y (what torch's autograd saves), exactly as csrc/kernels/activations.hpp and
// vector_math.hpp define them. Every function here is __host__ __device__ and uses only
// the CUDA math library's accurate functions (expf/tanhf, not __expf), so the same code
// runs in the kernels and in the host test (tests/cpp/test_cuda_cells.cpp).
//
// Also declares the fused "activation derivative + bias reduction" pass of the dense
// backward (defined in dense.cu), which the recurrent backward reuses for its bias
// gradients (identity activation).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "gradcore/dense.hpp"

namespace gradcore::cuda::elem {

using gradcore::Activation;

__host__ __device__ inline float exp_(float x) { return ::expf(x); }
__host__ __device__ inline double exp_(double x) { return ::exp(x); }
__host__ __device__ inline float tanh_(float x) { return ::tanhf(x); }
__host__ __device__ inline double tanh_(double x) { return ::tanh(x); }
__host__ __device__ inline float fma_(float a, float b, float c) { return ::fmaf(a, b, c); }
__host__ __device__ inline double fma_(double a, double b, double c) { return ::fma(a, b, c); }

// With e = exp(-|x|) <= 1: 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0 (the CPU's
// formula): nothing overflows, tiny results for very negative x keep their precision,
// NaN gives NaN.
template <class T>
__host__ __device__ inline T sigmoid(T x) {
    const T ax = x < T(0) ? -x : x;
    const T e = exp_(-ax);
    const T r = T(1) / (T(1) + e);
    return x < T(0) ? e * r : r;
}

// d sigmoid / d a from s = sigmoid(a); d tanh / d a from t = tanh(a).
template <class T>
__host__ __device__ inline T dsigmoid(T s) { return s * (T(1) - s); }
template <class T>
__host__ __device__ inline T dtanh(T t) { return T(1) - t * t; }

// y = act(z). relu/leaky_relu select on z < 0, so NaN passes through unchanged.
template <class T>
__host__ __device__ inline T activation_forward(T z, Activation act, T slope) {
    switch (act) {
        case Activation::relu: return z < T(0) ? T(0) : z;
        case Activation::leaky_relu: return z < T(0) ? z * slope : z;
        case Activation::tanh: return tanh_(z);
        case Activation::sigmoid: return sigmoid(z);
        default: break;  // identity; the pre-activation ones are refused before a launch
    }
    return z;
}

// dL/dz from g = dL/dy and y = act(z).
template <class T>
__host__ __device__ inline T activation_backward(T g, T y, Activation act, T slope) {
    switch (act) {
        case Activation::relu: return y > T(0) ? g : T(0);
        case Activation::leaky_relu: return y > T(0) ? g : g * slope;
        case Activation::tanh: return g * dtanh(y);
        case Activation::sigmoid: return g * dsigmoid(y);
        default: break;
    }
    return g;
}

}  // namespace gradcore::cuda::elem

namespace gradcore::cuda::detail {

// Over a rows x cols block (row-major, the given row strides): grad_z = activation'
// applied to grad_y (written when gz is not null) and grad_bias[j] = sum over rows of
// grad_z[:, j] (when grad_bias is not null; added to it when accumulate). y is not read
// for the identity activation. Deterministic: fixed row chunks per shape, each summed in
// a fixed order, then the chunks in order (no atomics). Enqueued on `stream` (1 or 2
// kernels); nothing when there is nothing to write. Defined for float and double in
// dense.cu.
template <class T>
void grad_z_and_bias(const T* grad_y, std::int64_t ld_grad_y, const T* y, std::int64_t ld_y, Activation act,
                     T slope, T* gz, std::int64_t ld_gz, T* grad_bias, bool accumulate, std::int64_t rows,
                     std::int64_t cols, cudaStream_t stream);

}  // namespace gradcore::cuda::detail
