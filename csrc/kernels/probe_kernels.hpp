// Memory-system probes for the benchmark harness: the simplest loops that touch every
// byte once, so that "fraction of the machine's bandwidth" has an honest denominator.
#pragma once

#include <cstdint>

#include "lanes.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S>
struct ProbeKernels {
    using V = typename S::template V<float>;
    static constexpr std::int64_t kLanes = S::template kLanes<float>;

    static float read(const float* x, std::int64_t n) {
        V a0 = S::set1(0.0f), a1 = a0, a2 = a0, a3 = a0;
        const V one = S::set1(1.0f);
        std::int64_t i = 0;
        for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
            // Short independent chains (max then min): the loads, not the math, set the pace.
            a0 = S::clamp(S::load(x + i), a0, one);
            a1 = S::clamp(S::load(x + i + kLanes), a1, one);
            a2 = S::clamp(S::load(x + i + 2 * kLanes), a2, one);
            a3 = S::clamp(S::load(x + i + 3 * kLanes), a3, one);
        }
        float out[4 * kLanes];
        S::store(out, a0), S::store(out + kLanes, a1), S::store(out + 2 * kLanes, a2),
            S::store(out + 3 * kLanes, a3);
        float r = 0.0f;
        for (std::int64_t k = 0; k < 4 * kLanes; ++k) r += out[k];
        for (; i < n; ++i) r += x[i];
        return r;
    }

    // factor is a run-time value (1.0 from the caller): a literal 1.0 would let the
    // compiler delete the whole loop.
    static void update(float* x, std::int64_t n, float factor) {
        using Lane = Lanes<S, float>;
        const V f = S::set1(factor);
        Lane::transform(x, n, [&](V v) { return S::mul(v, f); });
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
