// In-place element-wise kernels over one contiguous chunk: float32 and float64 in the
// array's own precision (no widening: these are pure memory passes), the 16-bit floats
// in float64 (NarrowClipKernels below).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "lanes.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct ClipKernels {
    using V = typename S::template V<T>;
    using Lane = Lanes<S, T>;
    static constexpr std::int64_t kLanes = S::template kLanes<T>;

    // x *= factor, with factor given in double: a factor below T's normal range (a
    // float32 array clipped to a tiny norm) would lose its digits, or become 0, if it
    // were rounded to T first. Such a factor is applied as m * 2^e1 * 2^e2 * 2^e3 with
    // every piece a normal T (three pieces: |x| up to T's max times 2^e can still be
    // representable for e down to about 2 * min_exponent - max_exponent), so the result
    // is what one multiplication in double would give, up to rounding in the result's
    // own subnormal range.
    static void scale(T* x, std::int64_t n, double factor) {
        if (!(factor < static_cast<double>(std::numeric_limits<T>::min())) || factor == 0.0) {
            multiply(x, n, static_cast<T>(factor), T(1), T(1), T(1));
            return;
        }
        int e = 0;
        const double m = std::frexp(factor, &e);  // factor = m * 2^e, m in [0.5, 1)
        const int min_exp = std::numeric_limits<T>::min_exponent - 1;  // smallest normal 2^k
        e = e < 3 * min_exp + 3 ? 3 * min_exp + 3 : e;  // below: every result is 0 anyway
        const int e1 = e / 3, e2 = (e - e1) / 2, e3 = e - e1 - e2;
        multiply(x, n, static_cast<T>(m), static_cast<T>(std::ldexp(1.0, e1)), static_cast<T>(std::ldexp(1.0, e2)),
                 static_cast<T>(std::ldexp(1.0, e3)));
    }

    static void multiply(T* x, std::int64_t n, T f0, T f1, T f2, T f3) {
        const V v0 = S::set1(f0);
        if (f1 == T(1) && f2 == T(1) && f3 == T(1)) {
            std::int64_t i = 0;
            for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
                S::store(x + i, S::mul(S::load(x + i), v0));
                S::store(x + i + kLanes, S::mul(S::load(x + i + kLanes), v0));
            }
            Lane::transform(x, n, [&](V v) { return S::mul(v, v0); }, i);
            return;
        }
        const V v1 = S::set1(f1), v2 = S::set1(f2), v3 = S::set1(f3);
        Lane::transform(x, n, [&](V v) { return S::mul(S::mul(S::mul(S::mul(v, v0), v1), v2), v3); });
    }

    static void clamp(T* x, std::int64_t n, T lo, T hi) {
        const V l = S::set1(lo), h = S::set1(hi);
        std::int64_t i = 0;
        for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
            S::store(x + i, S::clamp(S::load(x + i), l, h));
            S::store(x + i + kLanes, S::clamp(S::load(x + i + kLanes), l, h));
        }
        Lane::transform(x, n, [&](V v) { return S::clamp(v, l, h); }, i);
    }

    // Returns how many elements were NaN or inf. Chunks hold few enough elements that
    // counting is done on the scalar side only for the ones found.
    static std::int64_t zero_nonfinite(T* x, std::int64_t n) {
        std::int64_t count = 0;
        for (std::int64_t i = 0; i < n; ++i) count += (x[i] - x[i]) == 0 ? 0 : 1;
        if (count == 0) return 0;
        Lane::transform(x, n, [](V v) { return S::zero_nonfinite(v); });
        return count;
    }
};

// The same operations on Float16/BFloat16: each element widened exactly to float64,
// computed there and rounded once to nearest-even (narrow_float.hpp), so the result is
// bit for bit NumPy's float64 computation cast back to the dtype, for any factor (no
// splitting: a float64 factor cannot underflow against a 16-bit value's range). The
// bounds of clamp stay float64: rounding is monotone and x is representable, so
// rounding the clamped value equals clamping to the rounded bounds.
template <class S, class N>
struct NarrowClipKernels {
    using Vd = typename S::Vd;
    using Lane = WideLanes<S, N>;

    static void scale(N* x, std::int64_t n, double factor) {
        const Vd f = S::set1_d(factor);
        Lane::transform(x, n, [&](Vd v) { return S::mul(v, f); });
    }

    static void clamp(N* x, std::int64_t n, double lo, double hi) {
        const Vd l = S::set1_d(lo), h = S::set1_d(hi);
        Lane::transform(x, n, [&](Vd v) { return S::clamp(v, l, h); });
    }

    // NaN and inf are the values whose exponent bits are all set: a test on the bits.
    static std::int64_t zero_nonfinite(N* x, std::int64_t n) {
        std::int64_t count = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            if (is_nonfinite(x[i])) {
                x[i] = N{};
                ++count;
            }
        }
        return count;
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
