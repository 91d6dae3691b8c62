// The element-wise passes of the dense layer: the activations that need their input,
// applied after the GEMM with their derivative saved; the backward's activation
// derivative and bias reduction fused (one read of grad_y and of y or the saved
// derivative, one write of grad_z); the bias reduction alone.
#pragma once

#include <cstdint>
#include <type_traits>

#include "activations.hpp"
#include "lanes.hpp"
#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct DenseKernels {
    using V = typename S::template V<T>;
    using Lane = Lanes<S, T>;
    static constexpr std::int64_t kLanes = S::template kLanes<T>;

    enum class MathFn : int { exp = 0, tanh = 1, sigmoid = 2, expm1 = 3, normal_tail = 4 };

    // x = f(x) in place: the vector exp/tanh/sigmoid exposed for testing against NumPy.
    static void vector_math(T* x, std::int64_t n, int fn) {
        auto f = [fn](V v) {
            switch (static_cast<MathFn>(fn)) {
                case MathFn::tanh: return VectorMath<S, T>::tanh(v);
                case MathFn::sigmoid: return VectorMath<S, T>::sigmoid(v);
                case MathFn::expm1: return VectorMath<S, T>::expm1(v);
                case MathFn::normal_tail: {
                    V density;
                    return VectorMath<S, T>::normal_tail(v, density);
                }
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
        T* const out[1] = {sums};
        strip_sums<1>(rows, cols, out, accumulate, [&](std::int64_t r, std::int64_t j, std::int64_t c) {
            return Vectors<1>{{value(r, j, c)}};
        });
    }

    // N vectors (a plain array: std::array would drop the vector types' attributes).
    template <int N>
    struct Vectors {
        V v[N];
    };

    // The same with N sums per column: value returns Vectors<N>, out[k][j] (+)= their sums
    // (out[k] null: not kept).
    template <int N, class F>
    static void strip_sums(std::int64_t rows, std::int64_t cols, T* const (&out)[N], bool accumulate, F&& value) {
        constexpr std::int64_t kStrip = 4 * kLanes;
        for (std::int64_t j0 = 0; j0 < cols; j0 += kStrip) {
            const std::int64_t width = cols - j0 < kStrip ? cols - j0 : kStrip;
            // The last strip's vectors may be partial, or empty (zeros that add nothing).
            const std::int64_t c[4] = {Lane::count(width, 0), Lane::count(width, 1), Lane::count(width, 2),
                                       Lane::count(width, 3)};
            V sum[N][4];
            for (int k = 0; k < N; ++k)
                for (int v = 0; v < 4; ++v) sum[k][v] = S::set1(T(0));
            for (std::int64_t r = 0; r < rows; ++r) {
                for (int v = 0; v < 4; ++v) {
                    const Vectors<N> g = value(r, j0 + v * kLanes, c[v]);
                    for (int k = 0; k < N; ++k) sum[k][v] = S::add(sum[k][v], g.v[k]);
                }
            }
            for (int k = 0; k < N; ++k) {
                if (!out[k]) continue;
                for (int v = 0; v < 4; ++v) {
                    T* o = out[k] + j0 + v * kLanes;
                    Lane::store(o, accumulate ? S::add(Lane::load(o, c[v]), sum[k][v]) : sum[k][v], c[v]);
                }
            }
        }
    }

    // The slope of prelu at column j (one per column, or one shared), else param.
    static V slope_at(const ActivationArgs<T>& a, std::int64_t j, std::int64_t c) {
        if (a.slopes) return a.per_column ? Lane::load(a.slopes + j, c) : S::set1(a.slopes[0]);
        return S::set1(a.param);
    }

    // f(std::integral_constant<Activation, A>) for a.act = A: the loops below compiled once
    // per activation, with no switch per vector.
    template <class F>
    static void with_activation(Activation act, F&& f) {
        using A = Activation;
        switch (act) {
            case A::elu: return f(std::integral_constant<A, A::elu>{});
            case A::silu: return f(std::integral_constant<A, A::silu>{});
            case A::gelu: return f(std::integral_constant<A, A::gelu>{});
            case A::gelu_tanh: return f(std::integral_constant<A, A::gelu_tanh>{});
            case A::prelu: return f(std::integral_constant<A, A::prelu>{});
            case A::tanh: return f(std::integral_constant<A, A::tanh>{});
            case A::sigmoid: return f(std::integral_constant<A, A::sigmoid>{});
            default: return f(std::integral_constant<A, A::identity>{});
        }
    }

    // y[r, j] = act(z[r, j]) for the needs_saved activations, and saved[r, j] = act'(z) (z for
    // prelu) unless saved is null (inference). y may be z (in place).
    static void activate(const T* z, std::int64_t ld_z, T* y, std::int64_t ld_y, T* saved, std::int64_t ld_s,
                         std::int64_t rows, std::int64_t cols, const ActivationArgs<T>& a) {
        with_activation(a.act, [&](auto act) {
            for (std::int64_t r = 0; r < rows; ++r) {
                Lane::for_each(cols, [&](std::int64_t j, std::int64_t c) {
                    const V zv = Lane::load(z + r * ld_z + j, c);
                    if (saved) {
                        V d;
                        const V yv = Activations<S, T>::forward_and_grad(zv, act.value, slope_at(a, j, c), d);
                        Lane::store(saved + r * ld_s + j, d, c);
                        Lane::store(y + r * ld_y + j, yv, c);
                    } else {
                        Lane::store(y + r * ld_y + j, Activations<S, T>::forward(zv, act.value, slope_at(a, j, c)), c);
                    }
                });
            }
        });
    }

    // gz = act'(z) gy from the forward's saved array (act'(z) itself: one multiply; prelu's z:
    // gy or a gy, with its slopes' gradient grad_slope[j] (+)= sum_r gy z [z <= 0], torch's
    // dL/da per column, the runtime adding them up for a shared slope), with grad_bias[j]
    // (+)= sum_r gz. Null outputs are not kept.
    static void grad_z_from_saved(const T* gy, std::int64_t ld_gy, const T* saved, std::int64_t ld_s, T* gz,
                                  std::int64_t ld_gz, std::int64_t rows, std::int64_t cols,
                                  const ActivationArgs<T>& a, T* grad_bias, T* grad_slope, bool accumulate) {
        const V zero = S::set1(T(0));
        if (a.act != Activation::prelu) {
            column_strips(rows, cols, grad_bias, accumulate, [&](std::int64_t r, std::int64_t j, std::int64_t c) {
                const V d = S::mul(Lane::load(gy + r * ld_gy + j, c), Lane::load(saved + r * ld_s + j, c));
                Lane::store(gz + r * ld_gz + j, d, c);
                return d;
            });
            return;
        }
        T* const out[2] = {grad_bias, grad_slope};
        strip_sums<2>(rows, cols, out, accumulate, [&](std::int64_t r, std::int64_t j, std::int64_t c) {
            const V g = Lane::load(gy + r * ld_gy + j, c), zv = Lane::load(saved + r * ld_s + j, c);
            const V d = S::where_positive(zv, g, S::mul(g, slope_at(a, j, c)));
            Lane::store(gz + r * ld_gz + j, d, c);
            return Vectors<2>{{d, S::where_positive(zv, zero, S::mul(g, zv))}};
        });
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
