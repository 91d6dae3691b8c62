// The element-wise pass of the dense backward: activation derivative and bias
// reduction fused, one read of grad_y and y, one write of grad_z.
#pragma once

#include <cstdint>

#include "activations.hpp"
#include "lanes.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct DenseKernels {
    using V = typename S::template V<T>;
    using Lane = Lanes<S, T>;
    static constexpr std::int64_t kLanes = S::template kLanes<T>;

    enum class MathFn : int { exp = 0, tanh = 1, sigmoid = 2 };

    // x = f(x) in place: the vector exp/tanh/sigmoid exposed for testing against NumPy.
    static void vector_math(T* x, std::int64_t n, int fn) {
        auto f = [fn](V v) {
            switch (static_cast<MathFn>(fn)) {
                case MathFn::tanh: return VectorMath<S, T>::tanh(v);
                case MathFn::sigmoid: return VectorMath<S, T>::sigmoid(v);
                case MathFn::exp: break;
            }
            return VectorMath<S, T>::exp(v);
        };
        Lane::transform(x, n, f);
    }

    // gz may be null: then only the bias reduction is done.
    static void grad_z(const T* gy, std::int64_t ld_gy, const T* y, std::int64_t ld_y, T* gz,
                       std::int64_t ld_gz, std::int64_t rows, std::int64_t cols, Activation act,
                       T slope, T* grad_bias, bool accumulate_bias) {
        const V vslope = S::set1(slope);
        // Column strips keep the bias accumulators in registers across all rows.
        constexpr std::int64_t kStrip = 4 * kLanes;
        for (std::int64_t j0 = 0; j0 < cols; j0 += kStrip) {
            const std::int64_t width = cols - j0 < kStrip ? cols - j0 : kStrip;
            // The last strip's vectors may be partial, or empty (zeros that add nothing).
            const std::int64_t c[4] = {Lane::count(width, 0), Lane::count(width, 1), Lane::count(width, 2),
                                       Lane::count(width, 3)};
            V sum[4] = {S::set1(T(0)), S::set1(T(0)), S::set1(T(0)), S::set1(T(0))};
            for (std::int64_t r = 0; r < rows; ++r) {
                const T* gy_row = gy + r * ld_gy + j0;
                const T* y_row = y + r * ld_y + j0;
                for (int v = 0; v < 4; ++v) {
                    const V g = Activations<S, T>::backward(Lane::load(gy_row + v * kLanes, c[v]),
                                                            Lane::load(y_row + v * kLanes, c[v]), act, vslope);
                    if (gz) Lane::store(gz + r * ld_gz + j0 + v * kLanes, g, c[v]);
                    sum[v] = S::add(sum[v], g);
                }
            }
            if (grad_bias) {
                for (int v = 0; v < 4; ++v) {
                    T* b = grad_bias + j0 + v * kLanes;
                    Lane::store(b, accumulate_bias ? S::add(Lane::load(b, c[v]), sum[v]) : sum[v], c[v]);
                }
            }
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
