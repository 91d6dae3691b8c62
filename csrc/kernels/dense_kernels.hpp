// The element-wise passes of the dense backward: activation derivative and bias
// reduction fused (one read of grad_y and y, one write of grad_z), and the bias
// reduction alone.
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

    // gz[r, j] = act'(y[r, j]) gy[r, j]; grad_bias[j] (+)= sum_r gz[r, j] when grad_bias is
    // not null.
    static void grad_z(const T* gy, std::int64_t ld_gy, const T* y, std::int64_t ld_y, T* gz,
                       std::int64_t ld_gz, std::int64_t rows, std::int64_t cols, Activation act,
                       T slope, T* grad_bias, bool accumulate_bias) {
        const V vslope = S::set1(slope);
        column_strips(rows, cols, grad_bias, accumulate_bias, [&](std::int64_t r, std::int64_t j, std::int64_t c) {
            const V g = Activations<S, T>::backward(Lane::load(gy + r * ld_gy + j, c), Lane::load(y + r * ld_y + j, c),
                                                    act, vslope);
            Lane::store(gz + r * ld_gz + j, g, c);
            return g;
        });
    }

    // sums[j] (+)= sum_r x[r * ld + j]: a bias gradient from a gradient already formed. The
    // same sums, in the same order, as grad_z's with the identity.
    static void column_sums(const T* x, std::int64_t ld, std::int64_t rows, std::int64_t cols, T* sums,
                            bool accumulate) {
        column_strips(rows, cols, sums, accumulate,
                      [&](std::int64_t r, std::int64_t j, std::int64_t c) { return Lane::load(x + r * ld + j, c); });
    }

    // Column strips of four vectors, so that the strip's sums stay in registers across all
    // rows: g = value(r, j, c) for every row r in order and every vector of the strip (at
    // column j, c of its lanes inside the matrix), sums[j] (+)= sum_r g unless sums is null.
    template <class F>
    static void column_strips(std::int64_t rows, std::int64_t cols, T* sums, bool accumulate, F&& value) {
        constexpr std::int64_t kStrip = 4 * kLanes;
        for (std::int64_t j0 = 0; j0 < cols; j0 += kStrip) {
            const std::int64_t width = cols - j0 < kStrip ? cols - j0 : kStrip;
            // The last strip's vectors may be partial, or empty (zeros that add nothing).
            const std::int64_t c[4] = {Lane::count(width, 0), Lane::count(width, 1), Lane::count(width, 2),
                                       Lane::count(width, 3)};
            V sum[4] = {S::set1(T(0)), S::set1(T(0)), S::set1(T(0)), S::set1(T(0))};
            for (std::int64_t r = 0; r < rows; ++r) {
                for (int v = 0; v < 4; ++v) sum[v] = S::add(sum[v], value(r, j0 + v * kLanes, c[v]));
            }
            if (!sums) continue;
            for (int v = 0; v < 4; ++v) {
                T* out = sums + j0 + v * kLanes;
                Lane::store(out, accumulate ? S::add(Lane::load(out, c[v]), sum[v]) : sum[v], c[v]);
            }
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
