// One training step of a dense layer through gradcore's C++ API: forward (bias and relu
// fused into the GEMM), backward of the loss 0.5 * ||y||^2 (so grad_y = y), the global
// norm of the parameter gradients, and clipping by that norm. Prints the numbers that
// tests/test_embedding.py checks against NumPy.
#include <gradcore/gradcore.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

namespace {

// Deterministic inputs that the test can rebuild in NumPy: v[i] = scale * sin(i + phase).
std::vector<float> wave(std::size_t n, float scale, float phase) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = scale * std::sin(static_cast<float>(i) + phase);
    return v;
}

}  // namespace

int main() {
    constexpr std::int64_t batch = 8, in = 16, out = 4;
    const std::vector<float> x = wave(batch * in, 1.0f, 0.5f);
    const std::vector<float> weight = wave(out * in, 0.25f, 1.5f);
    const std::vector<float> bias = wave(out, 0.1f, 2.5f);
    std::vector<float> y(batch * out), grad_weight(out * in), grad_bias(out);

    using gradcore::MatrixRef;
    gradcore::dense_forward(gradcore::DenseForward<float>{
        MatrixRef<const float>{x.data(), batch, in, in, 1}, MatrixRef<const float>{weight.data(), out, in, in, 1},
        bias.data(), MatrixRef<float>{y.data(), batch, out, out, 1}, gradcore::Activation::relu, 0.0});

    // The first layer of a network: no grad_x (null data).
    const MatrixRef<const float> y_ref{y.data(), batch, out, out, 1};
    gradcore::dense_backward(gradcore::DenseBackward<float>{
        y_ref, MatrixRef<const float>{x.data(), batch, in, in, 1}, MatrixRef<const float>{weight.data(), out, in, in, 1},
        y_ref, gradcore::Activation::relu, 0.0, MatrixRef<float>{nullptr, batch, in, in, 1},
        MatrixRef<float>{grad_weight.data(), out, in, in, 1}, grad_bias.data(), false});

    const gradcore::TensorView grads[2] = {{grad_weight.data(), out * in, gradcore::DType::float32},
                                           {grad_bias.data(), out, gradcore::DType::float32}};
    const gradcore::GlobalClipResult r =
        gradcore::clip_by_global_norm_(grads, 2, 1.0, 2.0, 1e-6, gradcore::NonFinitePolicy::propagate, false, 0.0);
    const double after = gradcore::global_norm(grads, 2, 2.0);

    std::printf("isa %s\n", gradcore::isa_active().c_str());
    std::printf("total_norm %.9g\n", r.total_norm);
    std::printf("clipped %d\n", r.clipped ? 1 : 0);
    std::printf("norm_after %.9g\n", after);
    std::printf("grad_bias");
    for (float g : grad_bias) std::printf(" %.9g", g);
    std::printf("\n");
    return 0;
}
