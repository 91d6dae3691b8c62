// Element-wise activations of the dense layer and their derivatives, over one SIMD
// struct S. Two kinds:
// - relu, leaky_relu, tanh, sigmoid: applied in the GEMM's write-back, derivatives taken
//   from the output y (what torch's autograd saves for them);
// - elu, silu, gelu, gelu_tanh, prelu (needs_saved): derivatives need the input z; a pass
//   over z after the GEMM writes y and act'(z) together (they share the exp / sigmoid /
//   Phi), which the backward then only multiplies by.
// param is the negative slope of leaky_relu or the alpha of elu; prelu's slopes come as a
// vector (one per column, or one shared).
#pragma once

#include <cmath>
#include <cstdint>

#include "gradcore/dense.hpp"
#include "target.hpp"
#include "vector_math.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

using gradcore::Activation;

template <class S, class T>
struct Activations {
    using V = typename S::template V<T>;
    using Math = VectorMath<S, T>;
    static constexpr std::int64_t kLanes = S::template kLanes<T>;
    static constexpr double kSqrt2OverPi = 0.79788456080286535588;
    static constexpr double kGeluCubic = 0.044715;
    static constexpr double kInvSqrt2Pi = 0.39894228040143267794;

    // The write-back activations, inlined into the GEMM's micro-kernel (kept small: the
    // others never reach it). Selections are on -z > 0 (z < 0) so that NaN, for which
    // every ordered compare is false, passes through unchanged as in torch.
    static V epilogue(V z, Activation act, V slope) {
        const V zero = S::set1(T(0));
        switch (act) {
            case Activation::relu:
                return S::where_positive(S::sub(zero, z), zero, z);
            case Activation::leaky_relu:
                return S::where_positive(S::sub(zero, z), S::mul(z, slope), z);
            case Activation::tanh:
                return Math::tanh(z);
            case Activation::sigmoid:
                return Math::sigmoid(z);
            default:
                break;
        }
        return z;
    }

    // Every activation; param is prelu's slope or elu's alpha (or leaky_relu's slope).
    // Inlined, so that a loop calling it with a constant act keeps only that case.
    [[gnu::always_inline]] static V forward(V z, Activation act, V param) {
        const V zero = S::set1(T(0));
        switch (act) {
            case Activation::prelu:
                return S::where_positive(S::sub(zero, z), S::mul(z, param), z);
            case Activation::elu:
                return S::where_positive(S::sub(zero, z), S::mul(param, Math::expm1(z)), z);
            case Activation::silu:
                return S::mul(z, Math::sigmoid(z));
            case Activation::gelu: {
                V density;
                const V q = Math::normal_tail(z, density);
                return S::mul(z, S::where_positive(S::sub(zero, z), q, S::sub(S::set1(T(1)), q)));
            }
            case Activation::gelu_tanh: {
                // 0.5 z (1 + tanh(u)) = z sigmoid(2u): no cancellation where tanh(u) -> -1.
                V r, dr, c;
                gelu_tanh_2u_exact(z, r, dr);
                return S::mul(z, Math::sigmoid_of_sum(r, dr, c));
            }
            default:
                break;
        }
        return epilogue(z, act, param);
    }

    // 2u = A z (1 + k z^2), A = 2 sqrt(2/pi), k = 0.044715, as r + dr to about twice the
    // working precision: in the tail sigmoid(2u) ~ exp(2u) turns an absolute error of 2u
    // into a relative one of the result, and |2u| reaches 740 (float64) / 100 (float32)
    // before it underflows. Constants split in two, products by Dekker's algorithm; z is
    // clamped to +-1e4, where sigmoid(2u) has long saturated.
    static void gelu_tanh_2u_exact(V z, V& r, V& dr) {
        constexpr bool kF64 = sizeof(T) == 8;
        const V a_hi = S::set1(kF64 ? T(1.5957691216057308) : T(1.5957691669464111));
        const V a_lo = S::set1(kF64 ? T(-9.96930880911092e-17) : T(-4.534068054340423e-08));
        const V k_hi = S::set1(kF64 ? T(0.044715) : T(0.044714998453855515));
        const V k_lo = S::set1(kF64 ? T(2.1960211427085595e-18) : T(1.5461444347053543e-09));
        const V one = S::set1(T(1));
        const V zc = S::clamp(z, S::set1(T(-1e4)), S::set1(T(1e4)));
        V s, ds, t, dt, w, dw;
        Math::two_prod(zc, zc, s, ds);                 // z^2 = s + ds
        Math::two_prod(k_hi, s, t, dt);                // k z^2 = t + dt + ...
        dt = S::add(dt, S::add(S::mul(k_hi, ds), S::mul(k_lo, s)));
        const V q = S::add(one, t);                    // 1 + k z^2 = q + dq (Knuth's two-sum)
        const V tb = S::sub(q, one);
        const V dq = S::add(S::add(S::sub(one, S::sub(q, tb)), S::sub(t, tb)), dt);
        Math::two_prod(zc, q, w, dw);                  // z (1 + k z^2) = w + dw
        dw = S::fma(zc, dq, dw);
        Math::two_prod(a_hi, w, r, dr);                // A w = r + dr
        dr = S::add(dr, S::add(S::mul(a_hi, dw), S::mul(a_lo, w)));
    }

    // dL/dz from dL/dy and y = act(z), for the activations applied in the write-back.
    static V backward(V g, V y, Activation act, V slope) {
        const V one = S::set1(T(1));
        switch (act) {
            case Activation::relu:
                return S::where_positive(y, g, S::set1(T(0)));
            case Activation::leaky_relu:
                return S::where_positive(y, g, S::mul(g, slope));
            case Activation::tanh:
                return S::mul(g, S::sub(one, S::mul(y, y)));
            case Activation::sigmoid:
                return S::mul(g, S::mul(y, S::sub(one, y)));
            default:
                break;
        }
        return g;
    }

    // y = act(z) and d = act'(z) for elu, silu, gelu and gelu_tanh (torch's derivatives;
    // at z = 0 elu takes the left one, as torch). For prelu d is z itself, what its
    // backward reads. Inlined for a constant act, as forward.
    [[gnu::always_inline]] static V forward_and_grad(V z, Activation act, V param, V& d) {
        const V zero = S::set1(T(0)), one = S::set1(T(1));
        switch (act) {
            case Activation::elu: {
                const V e = Math::exp(z);
                d = S::where_positive(z, one, S::mul(param, e));
                return S::where_positive(S::sub(zero, z), S::mul(param, Math::expm1_from(z, e)), z);
            }
            case Activation::silu: {
                V c;  // 1 - s, exact where s -> 1
                const V s = Math::sigmoid_with_complement(z, c);
                d = S::mul(s, S::fma(z, c, one));
                return S::mul(z, s);
            }
            case Activation::gelu: {
                V density;
                const V q = Math::normal_tail(z, density);
                const V cdf = S::where_positive(S::sub(zero, z), q, S::sub(one, q));
                d = S::fma(z, S::mul(density, S::set1(T(kInvSqrt2Pi))), cdf);
                return S::mul(z, cdf);
            }
            case Activation::gelu_tanh: {
                // d/dz z s(2u) = s + z 2 s (1 - s) u', u' = sqrt(2/pi) (1 + 3 c z^2), with z
                // clamped in u' where s(1 - s) has underflowed (no 0 * inf).
                V r, dr, c;
                gelu_tanh_2u_exact(z, r, dr);
                const V s = Math::sigmoid_of_sum(r, dr, c);
                const V zc = S::clamp(z, S::set1(T(-1e4)), S::set1(T(1e4)));
                const V du = S::mul(S::set1(T(2 * kSqrt2OverPi)),
                                    S::fma(S::set1(T(3 * kGeluCubic)), S::mul(zc, zc), one));
                d = S::fma(S::mul(z, S::mul(s, c)), du, s);
                return S::mul(z, s);
            }
            case Activation::tanh: {  // (saved only with dropout, which scales y)
                const V t = Math::tanh(z);
                d = S::sub(one, S::mul(t, t));
                return t;
            }
            case Activation::sigmoid: {
                V c;
                const V s = Math::sigmoid_with_complement(z, c);
                d = S::mul(s, c);
                return s;
            }
            default:
                d = z;
                return forward(z, act, param);
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
