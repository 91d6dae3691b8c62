// exp, expm1, sigmoid, tanh and the normal distribution's tail over one SIMD struct S,
// accurate to a few ulp over the whole range of float32/float64 (tested against NumPy and
// mpmath), NaN in -> NaN out. Shared by the dense activations and the recurrent cells.
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

    // exp(x) - 1 without the cancellation near 0: for |x| < ln(2)/2 the exp series less
    // its first term, x * sum x^k / (k+1)!; beyond, exp(x) - 1, which is at least 0.29 in
    // magnitude there (the subtraction costs under an ulp).
    static V expm1(V x) { return expm1_from(x, exp(x)); }

    // expm1(x) given ex = exp(x) (a caller that needs both computes exp once).
    static V expm1_from(V x, V ex) {
        constexpr int kDegree = kF64 ? 12 : 7;
        V p = S::set1(static_cast<T>(kInverseFactorial[kDegree + 1]));
        for (int k = kDegree - 1; k >= 0; --k) p = S::fma(p, x, S::set1(static_cast<T>(kInverseFactorial[k + 1])));
        const V ax = S::max(S::sub(S::set1(T(0)), x), x);
        return S::where_positive(S::sub(S::set1(T(0.34657359027997264)), ax), S::mul(x, p),
                                 S::sub(ex, S::set1(T(1))));
    }

    // Chebyshev coefficients of g(w) = (1 + t) erfc(t) exp(t^2), w = (t - 4) / (t + 4),
    // derived by csrc/kernels/derive/erfc_chebyshev.py (interpolation at Chebyshev points;
    // relative error 3.8e-9 for float32's 13 terms, 1.6e-18 for float64's 26, on t in
    // [0, 30]). g runs from 1 to 1/sqrt(pi): the sum has no cancellation.
    static constexpr double kErfcFloat[] = {
    0.73779249711555315050,
    -0.21817361893805363042,
    0.049503721225762800049,
    -0.0025726982280634632705,
    -0.0041933395017663017088,
    0.0025732881485097480576,
    -0.00095453787863813448256,
    0.00026047574743978766862,
    -0.000053142109693600200499,
    7.4330221572696801837e-6,
    -4.3106411325760936856e-7,
    -8.6759428939778183164e-8,
    2.4904225108817123258e-8};
    static constexpr double kErfcDouble[] = {
    0.73779249711555315115,
    -0.21817361893805363369,
    0.049503721225762783386,
    -0.0025726982280633707367,
    -0.0041933395017658978360,
    0.0025732881485069262184,
    -0.00095453787864679435241,
    0.00026047574753294395529,
    -0.000053142109585007945778,
    7.4330190501770418725e-6,
    -4.3106001359615523309e-7,
    -8.6667844618502913807e-8,
    2.4441299316170358831e-8,
    -1.3958179331627472574e-9,
    -4.6292579264676441821e-10,
    9.1584321275269425516e-11,
    4.0996614541353999466e-12,
    -3.1070926383127572090e-12,
    1.0859225472076325306e-13,
    9.3156286696918133870e-14,
    -8.6598698050734099445e-15,
    -2.8218398652622946337e-15,
    4.0387112560688336041e-16,
    9.2546787062591602430e-17,
    -1.6613939919346215121e-17,
    -3.5544839382671741453e-18};

    // a * b rounded, as an FMA with 0: a product the compiler cannot fuse into the add or
    // subtract that consumes it (GCC contracts vector mul + add under its default
    // -ffp-contract=fast), which would break the error-free transformations below.
    static V product(V a, V b) { return S::fma(a, b, S::set1(T(0))); }

    // Veltkamp's split: a = hi + lo exactly, each with at most half the significand's bits,
    // so products of halves are exact (no FMA needed; |a| well below max / 2^27).
    static void split(V a, V& hi, V& lo) {
        const V c = product(a, S::set1(kF64 ? T(134217729.0) : T(4097.0)));  // 2^27 + 1, 2^12 + 1
        hi = S::sub(c, S::sub(c, a));
        lo = S::sub(a, hi);
    }

    // a b = p + e exactly: one FMA where the target fuses it, else Dekker's product.
    static void two_prod(V a, V b, V& p, V& e) {
        p = product(a, b);
        if constexpr (S::kHasFma) {
            e = S::fma(a, b, S::sub(S::set1(T(0)), p));
        } else {
            V ah, al, bh, bl;
            split(a, ah, al);
            split(b, bh, bl);
            e = S::add(S::add(S::add(S::sub(S::mul(ah, bh), p), S::mul(ah, bl)), S::mul(al, bh)), S::mul(al, bl));
        }
    }

    // s = sigmoid(r + dr) and c = 1 - s, each to a few ulp (c not from a subtraction), for
    // |dr| <= a few ulp of r: exp(-|r|) corrected to first order.
    static V sigmoid_of_sum(V r, V dr, V& c) {
        const V zero = S::set1(T(0)), one = S::set1(T(1));
        const V shift = S::where_positive(r, S::sub(zero, dr), dr);  // the correction to -|r|
        const V e = S::mul(exp(S::sub(zero, S::max(S::sub(zero, r), r))), S::add(one, shift));
        const V t = S::div(one, S::add(one, e));  // sigmoid(|r|); e t = 1 - t
        const V et = S::mul(e, t);
        const V negative = S::sub(zero, r);
        c = S::where_positive(negative, t, et);
        return S::where_positive(negative, et, t);
    }

    // sigmoid(x) with c = 1 - sigmoid(x) = sigmoid(-x), both without cancellation.
    static V sigmoid_with_complement(V x, V& c) { return sigmoid_of_sum(x, S::set1(T(0)), c); }

    // The standard normal distribution's tail: returns Q = Phi(-|z|) = erfc(|z|/sqrt 2) / 2
    // and sets density = exp(-z^2 / 2), so Phi(z) = z < 0 ? Q : 1 - Q and
    // phi(z) = density / sqrt(2 pi). Q = density g(w) / (2 (1 + t)), t = |z| / sqrt 2, with
    // g by Clenshaw's recurrence. z^2 = p + e exactly (two_prod), so exp(-z^2/2) =
    // exp(-p/2) (1 - e/2) keeps its relative accuracy where it is far below 1. |z| is
    // clamped where Q has long underflowed (40 for float64, 15 for float32).
    static V normal_tail(V z, V& density) {
        const V zero = S::set1(T(0)), half = S::set1(T(0.5)), one = S::set1(T(1));
        const V az = S::clamp(S::max(S::sub(zero, z), z), zero, S::set1(kF64 ? T(40) : T(15)));
        V p, e;
        two_prod(az, az, p, e);
        density = S::mul(exp(S::mul(S::set1(T(-0.5)), p)), S::sub(one, S::mul(half, e)));
        // w = (t - 4) / (t + 4) = (|z| - 4 sqrt 2) / (|z| + 4 sqrt 2): t itself never rounded.
        const V k = S::set1(T(5.6568542494923801952));
        const V w = S::div(S::sub(az, k), S::add(az, k));
        const V t = S::mul(az, S::set1(T(0.70710678118654752440)));
        constexpr int kTerms = kF64 ? 26 : 13;
        const double* coef = kF64 ? kErfcDouble : kErfcFloat;
        V b1 = zero, b2 = zero;
        const V w2 = S::add(w, w);
        for (int j = kTerms - 1; j >= 1; --j) {
            const V b0 = S::add(S::fma(w2, b1, S::sub(zero, b2)), S::set1(static_cast<T>(coef[j])));
            b2 = b1;
            b1 = b0;
        }
        const V g = S::add(S::fma(w, b1, S::sub(zero, b2)), S::set1(static_cast<T>(coef[0])));
        return S::div(S::mul(S::mul(half, density), g), S::add(t, one));
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
