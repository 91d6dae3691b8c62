// Norm reductions over one contiguous chunk, generic over the SIMD struct S and the
// element type T (Float16, BFloat16, float, double). Every reduction widens to float64
// lanes with S::load2_f64, so one body serves all dtypes.
//
// Accuracy: 16-bit and float32 squares cannot overflow or underflow float64, so their fast
// path is always exact-range. For float64 the fast path is kept when its result lies in
// [2^-960, DBL_MAX]; there, values whose squares underflowed contribute < 2^-1074 each,
// far below an ulp of the result. Otherwise the chunk is summed again (it is still in
// cache) scaled by a power of two near its max |x|.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "lanes.hpp"
#include "narrow_float.hpp"
#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct NormKernels {
    using Vd = typename S::Vd;
    using Wide = WideLanes<S, T>;
    static constexpr std::int64_t kStep = Wide::L;  // elements per load2_f64

    // Max |x|, NaN if any element is NaN.
    static double max_abs(const T* x, std::int64_t n) {
        Vd m0 = S::zero_d(), m1 = S::zero_d(), nan = S::zero_d();
        std::int64_t i = 0;
        for (; i + kStep <= n; i += kStep) {
            Vd a, b;
            S::load2_f64(x + i, a, b);
            m0 = S::max(m0, S::abs(a));
            m1 = S::max(m1, S::abs(b));
            nan = S::add(nan, S::add(S::nan_to_one(a), S::nan_to_one(b)));
        }
        double m = S::reduce_max(S::max(m0, m1));
        bool has_nan = S::reduce_add(nan) != 0.0;
        for (; i < n; ++i) {
            const double v = std::fabs(Wide::widen(x[i]));
            has_nan |= v != v;
            m = v > m ? v : m;
        }
        return has_nan ? std::numeric_limits<double>::quiet_NaN() : m;
    }

    // Plain sum of (x * scale)^2; scale = 1 on the fast path.
    template <bool kScaled>
    static double sum_squares(const T* x, std::int64_t n, double scale) {
        const Vd s = S::set1_d(scale);
        return Wide::reduce(
            x, n,
            [s](Vd v, Vd a) {
                if constexpr (kScaled) v = S::mul(v, s);
                return S::fma(v, v, a);
            },
            [scale](double v) {
                v *= kScaled ? scale : 1.0;
                return v * v;
            });
    }

    // Plain sum of |x| * scale.
    template <bool kScaled>
    static double sum_abs(const T* x, std::int64_t n, double scale) {
        const Vd s = S::set1_d(scale);
        return Wide::reduce(
            x, n,
            [s](Vd v, Vd a) {
                v = S::abs(v);
                if constexpr (kScaled) v = S::mul(v, s);
                return S::add(v, a);
            },
            [scale](double v) { return std::fabs(v) * (kScaled ? scale : 1.0); });
    }

    // The power-of-two exponent e with max_abs / 2^e in [0.5, 1), clamped so that 2^-e
    // stays finite for subnormal maxima.
    static int scale_exponent(double m) {
        int e;
        std::frexp(m, &e);
        return e < -1022 ? -1022 : e;
    }

    // Handles the chunks whose max |x| is 0, NaN or inf; returns false for the others.
    static bool degenerate(double m, ScaledSum& out) {
        if (m == 0.0 || m != m || m == std::numeric_limits<double>::infinity()) {
            out = {m, 0};
            return true;
        }
        return false;
    }

    static ScaledSum l2(const T* x, std::int64_t n) {
        const double fast = sum_squares<false>(x, n, 1.0);
        if constexpr (!std::is_same_v<T, double>) {
            return {fast, 0};
        } else {
            if (fast != fast || (fast >= 0x1p-960 && fast <= DBL_MAX)) return {fast, 0};
            ScaledSum out;
            const double m = max_abs(x, n);
            if (degenerate(m, out)) return out;
            const int e = scale_exponent(m);
            return {sum_squares<true>(x, n, std::ldexp(1.0, -e)), e};
        }
    }

    static ScaledSum l1(const T* x, std::int64_t n) {
        const double fast = sum_abs<false>(x, n, 1.0);
        if (!std::is_same_v<T, double> || !(fast > DBL_MAX)) return {fast, 0};
        ScaledSum out;
        const double m = max_abs(x, n);
        if (degenerate(m, out)) return out;
        const int e = scale_exponent(m);
        return {sum_abs<true>(x, n, std::ldexp(1.0, -e)), e};
    }

    // Any other p: sum of (|x| / m)^p where m is the max |x| of the whole array or list
    // (found by a first pass), so the largest term is exactly 1 and nothing overflows
    // or underflows for any p. std::pow per element: the rare path, not worth a vector pow.
    static double lp_sum(const T* x, std::int64_t n, double p, double m) {
        double sum = 0.0;
        for (std::int64_t i = 0; i < n; ++i) sum += std::pow(std::fabs(Wide::widen(x[i])) / m, p);
        return sum;
    }

    // One pass for the sum of squares and max |x|. NaN/inf are counted only when the sum
    // says there are some (a non-finite element makes it NaN or inf): the count costs a
    // second look at the rare chunk that has them, not a compare per element everywhere.
    static ChunkStats stats(const T* x, std::int64_t n) {
        Vd sq0 = S::zero_d(), sq1 = S::zero_d(), m0 = S::zero_d(), m1 = S::zero_d();
        std::int64_t i = 0;
        for (; i + kStep <= n; i += kStep) {
            Vd a, b;
            S::load2_f64(x + i, a, b);
            sq0 = S::fma(a, a, sq0);
            sq1 = S::fma(b, b, sq1);
            m0 = S::max(m0, S::abs(a));
            m1 = S::max(m1, S::abs(b));
        }
        double sq = S::reduce_add(S::add(sq0, sq1));
        double m = S::reduce_max(S::max(m0, m1));
        for (; i < n; ++i) {
            const double v = Wide::widen(x[i]);
            sq += v * v;
            m = std::fabs(v) > m ? std::fabs(v) : m;
        }
        ChunkStats out{{sq, 0}, m, 0};
        if (!(sq <= DBL_MAX)) {  // NaN or inf: count the non-finite elements
            for (std::int64_t j = 0; j < n; ++j) {
                const double v = Wide::widen(x[j]);
                out.nonfinite += (v - v) == 0.0 ? 0 : 1;
            }
        }
        if (sq != sq) {
            out.max_abs = std::numeric_limits<double>::quiet_NaN();
        } else if (std::is_same_v<T, double> && !(sq >= 0x1p-960 && sq <= DBL_MAX)) {
            out.sumsq = l2(x, n);  // rare: rescale
        }
        return out;
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
