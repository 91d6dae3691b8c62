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

    // A yardstick must be at least as fast as any kernel that makes the same pass, or the
    // kernels "beat the limit": eight vectors per iteration, more in flight than any
    // kernel of the library keeps.
    static constexpr int kUnroll = 8;

    static float read(const float* x, std::int64_t n) {
        V acc[kUnroll];
        for (V& a : acc) a = S::set1(0.0f);
        const V one = S::set1(1.0f);
        std::int64_t i = 0;
        for (; i + kUnroll * kLanes <= n; i += kUnroll * kLanes) {
            // Short independent chains (max then min): the loads, not the math, set the pace.
#pragma GCC unroll 8
            for (int u = 0; u < kUnroll; ++u) acc[u] = S::clamp(S::load(x + i + u * kLanes), acc[u], one);
        }
        float out[kUnroll * kLanes];
        for (int u = 0; u < kUnroll; ++u) S::store(out + u * kLanes, acc[u]);
        float r = 0.0f;
        for (std::int64_t k = 0; k < kUnroll * kLanes; ++k) r += out[k];
        for (; i < n; ++i) r += x[i];
        return r;
    }

    // factor is a run-time value (1.0 from the caller): a literal 1.0 would let the
    // compiler delete the whole loop.
    static void update(float* x, std::int64_t n, float factor) {
        using Lane = Lanes<S, float>;
        const V f = S::set1(factor);
        std::int64_t i = 0;
        for (; i + kUnroll * kLanes <= n; i += kUnroll * kLanes) {
#pragma GCC unroll 8
            for (int u = 0; u < kUnroll; ++u) S::store(x + i + u * kLanes, S::mul(S::load(x + i + u * kLanes), f));
        }
        Lane::transform(x, n, [&](V v) { return S::mul(v, f); }, i);
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
