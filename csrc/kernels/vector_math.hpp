// exp, sigmoid and tanh over one SIMD struct S, accurate to a few ulp over the whole
// range of float32/float64 (tested against NumPy), NaN in -> NaN out. Shared by the
// dense epilogues and the recurrent cells.
#pragma once

#include <type_traits>

#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct VectorMath {
    using V = typename S::template V<T>;
    static constexpr bool kF64 = std::is_same_v<T, double>;

    // 1 / k! for k = 0..13, correctly rounded to double.
    static constexpr double kInverseFactorial[] = {
        1.0, 1.0, 0.5, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
        1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800};

    // exp(x) = 2^n * e^r, n = round(x / ln 2), |r| <= ln(2)/2, e^r by its Taylor series
    // (degree 8 for float32, 13 for float64: truncation below half an ulp on that range).
    // 2^n is applied in two halves so that results in the subnormal range and the
    // overflow to inf both come out right.
    static V exp(V x) {
        const V lo = S::set1(kF64 ? T(-746.0) : T(-104.0));
        const V hi = S::set1(kF64 ? T(710.0) : T(89.0));
        x = S::clamp(x, lo, hi);
        const V n = S::round_nearest(S::mul(x, S::set1(T(1.4426950408889634))));
        // Cody-Waite: ln 2 split so that n * ln2_hi is exact.
        const T ln2_hi = kF64 ? T(0.693147180369123816490) : T(0.693145751953125);
        const T ln2_lo = kF64 ? T(1.90821492927058770002e-10) : T(1.428606765330187045e-06);
        V r = S::fma(n, S::set1(-ln2_hi), x);
        r = S::fma(n, S::set1(-ln2_lo), r);
        // Taylor series in Horner form, sum of r^k / k! (|r| <= ln2 / 2: the last term
        // is below half an ulp).
        constexpr int kDegree = kF64 ? 13 : 8;
        V p = S::set1(static_cast<T>(kInverseFactorial[kDegree]));
        for (int k = kDegree - 1; k >= 0; --k) p = S::fma(p, r, S::set1(static_cast<T>(kInverseFactorial[k])));
        const V half = S::round_nearest(S::mul(n, S::set1(T(0.5))));
        return S::mul(S::mul(p, S::pow2i(half)), S::pow2i(S::sub(n, half)));
    }

    // With e = exp(-|x|) <= 1: 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, so
    // nothing overflows and tiny (subnormal) results for very negative x stay right.
    static V sigmoid(V x) {
        const V zero = S::set1(T(0));
        const V one = S::set1(T(1));
        const V e = exp(S::sub(zero, S::max(S::sub(zero, x), x)));
        const V r = S::div(one, S::add(one, e));
        return S::where_positive(S::sub(zero, x), S::mul(e, r), r);
    }

    // |x| < 0.55: the odd Taylor series (exact rationals from the Bernoulli numbers;
    // each term is ~0.12x the previous there, 8 terms reach float32's precision, 19
    // float64's); beyond, sign(x) * (1 - 2 / (exp(2|x|) + 1)), where tanh > 1/2 keeps
    // the subtraction free of cancellation, and which saturates to +-1 cleanly.
    static V tanh(V x) {
        static constexpr double kCoef[] = {
            1.0, -0.33333333333333331, 0.13333333333333333, -0.053968253968253971,
            0.021869488536155203, -0.0088632355299021973, 0.0035921280365724811,
            -0.0014558343870513183, 0.00059002744094558595, -0.00023912911424355248,
            9.6915379569294509e-05, -3.9278323883316833e-05, 1.5918905069328964e-05,
            -6.4516892156554306e-06, 2.6147711512907546e-06, -1.0597268320104654e-06,
            4.2949110782738057e-07, -1.7406618963571648e-07, 7.0546369464009681e-08};
        constexpr int kTerms = kF64 ? 19 : 8;
        const V zero = S::set1(T(0));
        const V one = S::set1(T(1));
        const V x2 = S::mul(x, x);
        V p = S::set1(T(kCoef[kTerms - 1]));
        for (int k = kTerms - 2; k >= 0; --k) p = S::fma(p, x2, S::set1(T(kCoef[k])));
        const V small = S::mul(x, p);
        const V ax = S::max(S::sub(zero, x), x);
        const V e = exp(S::add(ax, ax));
        const V large = S::sub(one, S::div(S::set1(T(2)), S::add(e, one)));
        const V signed_large = S::where_positive(x, large, S::sub(zero, large));
        return S::where_positive(S::sub(S::set1(T(0.55)), ax), small, signed_large);
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
