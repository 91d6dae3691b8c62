// In-place element-wise kernels over one contiguous chunk of float32 or float64, in the
// array's own precision (no widening: these are pure memory passes).
#pragma once

#include <cstdint>

namespace gradcore::kernels {

template <class S, class T>
struct ClipKernels {
    using V = typename S::template V<T>;
    static constexpr std::int64_t kLanes = S::template kLanes<T>;

    static void scale(T* x, std::int64_t n, T factor) {
        const V f = S::set1(factor);
        std::int64_t i = 0;
        for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
            S::store(x + i, S::mul(S::load(x + i), f));
            S::store(x + i + kLanes, S::mul(S::load(x + i + kLanes), f));
        }
        for (; i < n; ++i) x[i] *= factor;
    }

    static void clamp(T* x, std::int64_t n, T lo, T hi) {
        const V l = S::set1(lo), h = S::set1(hi);
        std::int64_t i = 0;
        for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
            S::store(x + i, S::clamp(S::load(x + i), l, h));
            S::store(x + i + kLanes, S::clamp(S::load(x + i + kLanes), l, h));
        }
        for (; i < n; ++i) x[i] = x[i] < lo ? lo : (x[i] > hi ? hi : x[i]);
    }

    // Returns how many elements were NaN or inf. Chunks hold few enough elements that
    // counting is done on the scalar side only for the ones found.
    static std::int64_t zero_nonfinite(T* x, std::int64_t n) {
        std::int64_t count = 0;
        for (std::int64_t i = 0; i < n; ++i) count += (x[i] - x[i]) == 0 ? 0 : 1;
        if (count == 0) return 0;
        std::int64_t i = 0;
        for (; i + kLanes <= n; i += kLanes) S::store(x + i, S::zero_nonfinite(S::load(x + i)));
        for (; i < n; ++i) x[i] = (x[i] - x[i]) == 0 ? x[i] : T(0);
        return count;
    }
};

}  // namespace gradcore::kernels
