// The element-wise pass of the dense backward: activation derivative and bias
// reduction fused, one read of grad_y and y, one write of grad_z.
#pragma once

#include <cstdint>

#include "activations.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct DenseKernels {
    using V = typename S::template V<T>;
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
        std::int64_t i = 0;
        for (; i + kLanes <= n; i += kLanes) S::store(x + i, f(S::load(x + i)));
        if (i < n) {
            T tail[kLanes] = {};
            for (std::int64_t j = i; j < n; ++j) tail[j - i] = x[j];
            S::store(tail, f(S::load(tail)));
            for (std::int64_t j = i; j < n; ++j) x[j] = tail[j - i];
        }
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
            V sum[4] = {S::set1(T(0)), S::set1(T(0)), S::set1(T(0)), S::set1(T(0))};
            T tail_gy[kStrip], tail_y[kStrip], tail_gz[kStrip];
            for (std::int64_t r = 0; r < rows; ++r) {
                const T* gy_row = gy + r * ld_gy + j0;
                const T* y_row = y + r * ld_y + j0;
                T* gz_row = gz ? gz + r * ld_gz + j0 : tail_gz;
                if (width < kStrip) {  // partial strip: through padded copies
                    for (std::int64_t j = 0; j < kStrip; ++j) {
                        tail_gy[j] = j < width ? gy_row[j] : T(0);
                        tail_y[j] = j < width ? y_row[j] : T(0);
                    }
                    gy_row = tail_gy, y_row = tail_y, gz_row = tail_gz;
                }
                for (int v = 0; v < 4; ++v) {
                    const V g = Activations<S, T>::backward(S::load(gy_row + v * kLanes),
                                                            S::load(y_row + v * kLanes), act, vslope);
                    if (gz) S::store(gz_row + v * kLanes, g);
                    sum[v] = S::add(sum[v], g);
                }
                if (width < kStrip && gz) {
                    T* out = gz + r * ld_gz + j0;
                    for (std::int64_t j = 0; j < width; ++j) out[j] = tail_gz[j];
                }
            }
            if (grad_bias) {
                T b[kStrip];
                for (int v = 0; v < 4; ++v) S::store(b + v * kLanes, sum[v]);
                for (std::int64_t j = 0; j < width; ++j) {
                    grad_bias[j0 + j] = accumulate_bias ? grad_bias[j0 + j] + b[j] : b[j];
                }
            }
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
