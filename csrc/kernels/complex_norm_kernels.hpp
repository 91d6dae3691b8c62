// Norm reductions of |z| = hypot(re, im) over one chunk of complex numbers stored as
// interleaved (re, im) components of C (float: complex64, double: complex128); n counts
// complex elements, so x holds 2n components. The L2 norm and scaling need no kernel
// of their own: they are the real ones over the 2n components (norms.cpp).
//
// NaN: a NaN component makes the result NaN for every order (as the L2 norm of the
// components is), even where hypot(inf, NaN) would be inf.
//
// Accuracy, as in norm_kernels.hpp: complex64 components widen to float64, where their
// squares can neither overflow nor underflow. For complex128 the fast path squares as
// they are and is kept when its result shows that nothing left the safe range; else the
// chunk is done again scaled by the power of two near its largest component (exact),
// found by the real max_abs over the components.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "norm_kernels.hpp"
#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class C>
struct ComplexNormKernels {
    using Vd = typename S::Vd;
    using Components = NormKernels<S, C>;
    static constexpr std::int64_t kStep = S::kLanesD;  // complex elements per load2_f64
    static constexpr bool kWide = std::is_same_v<C, double>;
    static constexpr double kInf = std::numeric_limits<double>::infinity();

    // |z_j|^2 * scale^2 of kStep elements from x, in pair_sums' lane order.
    template <bool kScaled>
    static Vd squares(const C* x, Vd scale) {
        Vd lo, hi;
        S::load2_f64(x, lo, hi);
        if constexpr (kScaled) lo = S::mul(lo, scale), hi = S::mul(hi, scale);
        return S::pair_sums(S::mul(lo, lo), S::mul(hi, hi));
    }

    template <bool kScaled>
    static double square(const C* x, std::int64_t i, double scale) {
        const double re = static_cast<double>(x[2 * i]) * (kScaled ? scale : 1.0);
        const double im = static_cast<double>(x[2 * i + 1]) * (kScaled ? scale : 1.0);
        return re * re + im * im;
    }

    // Max |z|^2 * scale^2, NaN if any component is NaN (a NaN square is one).
    template <bool kScaled>
    static double max_square(const C* x, std::int64_t n, double scale) {
        const Vd s = S::set1_d(scale);
        Vd m0 = S::zero_d(), m1 = S::zero_d(), nan = S::zero_d();
        std::int64_t i = 0;
        for (; i + 2 * kStep <= n; i += 2 * kStep) {
            const Vd a = squares<kScaled>(x + 2 * i, s), b = squares<kScaled>(x + 2 * (i + kStep), s);
            m0 = S::max(m0, a);
            m1 = S::max(m1, b);
            nan = S::add(nan, S::add(S::nan_to_one(a), S::nan_to_one(b)));
        }
        double m = S::reduce_max(S::max(m0, m1));
        bool has_nan = S::reduce_add(nan) != 0.0;
        for (; i < n; ++i) {
            const double q = square<kScaled>(x, i, scale);
            has_nan |= q != q;
            m = q > m ? q : m;
        }
        return has_nan ? std::numeric_limits<double>::quiet_NaN() : m;
    }

    // Plain sum of |z| * scale.
    template <bool kScaled>
    static double sum_moduli(const C* x, std::int64_t n, double scale) {
        const Vd s = S::set1_d(scale);
        Vd a0 = S::zero_d(), a1 = S::zero_d();
        std::int64_t i = 0;
        for (; i + 2 * kStep <= n; i += 2 * kStep) {
            a0 = S::add(a0, S::sqrt(squares<kScaled>(x + 2 * i, s)));
            a1 = S::add(a1, S::sqrt(squares<kScaled>(x + 2 * (i + kStep), s)));
        }
        double sum = S::reduce_add(S::add(a0, a1));
        for (; i < n; ++i) sum += std::sqrt(square<kScaled>(x, i, scale));
        return sum;
    }

    // The largest component of a chunk whose fast path left the safe range: 0 and inf
    // settle the result (an inf component, or all components 0), anything else gives
    // the exponent to scale by.
    static double largest_component(const C* x, std::int64_t n) { return Components::max_abs(x, 2 * n); }

    static double max_abs(const C* x, std::int64_t n) {
        const double fast = max_square<false>(x, n, 1.0);
        // A max square in [2^-960, DBL_MAX] was squared without overflow, and its larger
        // component without underflow; the other's lost bits are below an ulp.
        if (!kWide || fast != fast || (fast >= 0x1p-960 && fast <= DBL_MAX)) return std::sqrt(fast);
        const double m = largest_component(x, n);
        if (m == 0.0 || m == kInf) return m;
        const int e = Components::scale_exponent(m);
        return std::ldexp(std::sqrt(max_square<true>(x, n, std::ldexp(1.0, -e))), e);
    }

    static ScaledSum l1(const C* x, std::int64_t n) {
        const double fast = sum_moduli<false>(x, n, 1.0);
        // An element whose squares left the normal range has |z| < 2^-511 and a modulus
        // off by < 2^-537; 2^15 of them in a chunk stay below an ulp of a sum >= 2^-440.
        // A finite sum had no square overflow (an overflowed square makes it inf).
        if (!kWide || fast != fast || (fast >= 0x1p-440 && fast <= DBL_MAX)) return {fast, 0};
        const double m = largest_component(x, n);
        if (m == 0.0 || m == kInf) return {m, 0};
        const int e = Components::scale_exponent(m);
        return {sum_moduli<true>(x, n, std::ldexp(1.0, -e)), e};
    }

    // Any other p: sum of (|z| / m)^p with m the max |z| of the array or list (as the
    // real lp_sum). The parts are divided by m before std::hypot: a |z| among the
    // subnormals would be rounded to one of them first (the real lp_sum's |x| is exact).
    // The rare path: scalar.
    static double lp_sum(const C* x, std::int64_t n, double p, double m) {
        double sum = 0.0;
        for (std::int64_t i = 0; i < n; ++i) {
            const double re = static_cast<double>(x[2 * i]) / m, im = static_cast<double>(x[2 * i + 1]) / m;
            sum += std::pow(std::hypot(re, im), p);
        }
        return sum;
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
