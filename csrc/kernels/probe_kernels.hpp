// Machine probes for the benchmark harness: the simplest loops that touch every byte
// once, and a register-resident FMA loop, so that "fraction of the machine's bandwidth"
// and "fraction of the FMA peak" have honest denominators.
#pragma once

#include <cstdint>

#include "gemm_kernels.hpp"
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

    // `iterations` rounds of independent FMA chains acc = acc * m + a, entirely in
    // registers; returns the flops done and stores the sum of the accumulators in *sink
    // (so no chain is dead code). As many chains as the GEMM register tile keeps (16 on
    // AVX-512, 12 on AVX2/NEON): more than FMA ports x latency (2 x 4 on AVX-512 cores,
    // 2 x 5 on the oldest AVX2 ones), so the pipes, not the latency, set the pace, and no
    // more than fit in registers beside the two operands. m < 1 and a > 0 keep every
    // value normal and bounded however long it runs.
    template <class T>
    static std::int64_t fma(std::int64_t iterations, T* sink) {
        using VT = typename S::template V<T>;
        constexpr int kLanesT = S::template kLanes<T>;
        constexpr int kChains = GemmShape<S, T>::kMR * GemmShape<S, T>::kNVec;
        const VT m = S::set1(T(0.9999)), a = S::set1(T(0.001));
        VT acc[kChains];
#pragma GCC unroll 16
        for (int c = 0; c < kChains; ++c) acc[c] = S::set1(T(c));
        for (std::int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
            for (int c = 0; c < kChains; ++c) acc[c] = S::fma(acc[c], m, a);
        }
        T out[kChains * kLanesT];
        for (int c = 0; c < kChains; ++c) S::store(out + c * kLanesT, acc[c]);
        T r = T(0);
        for (int k = 0; k < kChains * kLanesT; ++k) r += out[k];
        *sink = r;
        return 2 * kChains * kLanesT * iterations;
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
