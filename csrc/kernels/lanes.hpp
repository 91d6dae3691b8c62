// Loops whose length is not a multiple of the vector width, written once for whole
// vectors: the body takes a count c (L, or fewer on the last step), and load/store
// here are the plain ones for whole vectors and the SIMD struct's load_n/store_n for
// the last, partial one.
#pragma once

#include <algorithm>
#include <cstdint>

#include "narrow_float.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

// Streams whose loop body is long (the 16-bit conversions, float64 accumulation) keep
// too few cache-line loads in flight for the hardware prefetcher alone to reach memory
// bandwidth: they ask for the lines kPrefetchBytes ahead, one hint per line of the
// `bytes` they are about to read.
inline constexpr std::int64_t kPrefetchBytes = 2048;
template <bool kWrite = false>
inline void prefetch_ahead(const void* p, std::int64_t bytes) {
#if defined(__GNUC__)
    const char* c = static_cast<const char*>(p) + kPrefetchBytes;
    for (std::int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, kWrite ? 1 : 0);
#else
    (void)p, (void)bytes;
#endif
}

template <class S, class T>
struct Lanes {
    using V = typename S::template V<T>;
    static constexpr std::int64_t L = S::template kLanes<T>;

    // n <= L values at p; the other lanes read as 0.
    static V load(const T* p, std::int64_t n) { return n == L ? S::load(p) : S::load_n(p, n); }
    static void store(T* p, V v, std::int64_t n) {
        if (n == L) return S::store(p, v);
        S::store_n(p, v, n);
    }
    // How many of a strip's `width` values its vector v holds: L, fewer, or 0.
    static std::int64_t count(std::int64_t width, std::int64_t v) {
        const std::int64_t c = width - v * L;
        return c < 0 ? 0 : (c > L ? L : c);
    }
    // f(offset, count) over [i, n) in steps of L, the last step partial.
    template <class F>
    static void for_each(std::int64_t n, F&& f, std::int64_t i = 0) {
        for (; i + L <= n; i += L) f(i, L);
        if (i < n) f(i, n - i);
    }
    // x[j] = f(x[j]) in vectors for j in [i, n), the last one partial.
    template <class F>
    static void transform(T* x, std::int64_t n, F&& f, std::int64_t i = 0) {
        for_each(n, [&](std::int64_t j, std::int64_t c) { store(x + j, f(load(x + j, c)), c); }, i);
    }
};

// The same in float64 pairs (S::load2_f64 / store2_f64, 2 * kLanesD elements) for any
// dtype: the 16-bit floats, which no struct holds in a native vector (also read as
// float32 vectors, S::load_f32 / store_f32, kLanes<float> elements), and float32/float64
// in the kernels that compute in float64. A partial last step goes through a small
// buffer (what the structs' own load_n/store_n do on NEON).
template <class S, class N>
struct WideLanes {
    using Vd = typename S::Vd;
    using Vf = typename S::template V<float>;
    static constexpr std::int64_t L = 2 * S::kLanesD;
    static constexpr std::int64_t Lf = S::template kLanes<float>;

    // One element in float64.
    static double widen(N v) {
        if constexpr (kIsNarrow<N>) {
            return to_float(v);
        } else {
            return static_cast<double>(v);
        }
    }

    // The float64 sum over x[0, n) of a term: term(v, acc) adds a vector v's
    // contribution to acc, one of four accumulators; one_term(double) is an element's,
    // for the tail, which goes on element by element after the vectors (that order is
    // part of the result).
    template <class F, class G>
    static double reduce(const N* x, std::int64_t n, F&& term, G&& one_term) {
        Vd a0 = S::zero_d(), a1 = S::zero_d(), a2 = S::zero_d(), a3 = S::zero_d();
        std::int64_t i = 0;
        for (; i + 2 * L <= n; i += 2 * L) {
            Vd v0, v1, v2, v3;
            prefetch_ahead(x + i, 2 * L * std::int64_t{sizeof(N)});
            S::load2_f64(x + i, v0, v1);
            S::load2_f64(x + i + L, v2, v3);
            a0 = term(v0, a0), a1 = term(v1, a1), a2 = term(v2, a2), a3 = term(v3, a3);
        }
        double sum = S::reduce_add(S::add(S::add(a0, a1), S::add(a2, a3)));
        for (; i < n; ++i) sum += one_term(widen(x[i]));
        return sum;
    }

    static void load(const N* p, std::int64_t n, Vd& lo, Vd& hi) {
        if (n == L) return S::load2_f64(p, lo, hi);
        N buf[L] = {};
        std::copy_n(p, n, buf);
        S::load2_f64(buf, lo, hi);
    }
    static void store(N* p, Vd lo, Vd hi, std::int64_t n) {
        if (n == L) return S::store2_f64(p, lo, hi);
        N buf[L];
        S::store2_f64(buf, lo, hi);
        std::copy_n(buf, n, p);
    }
    static Vf load_f32(const N* p, std::int64_t n) {
        if (n == Lf) return S::load_f32(p);
        N buf[Lf] = {};
        std::copy_n(p, n, buf);
        return S::load_f32(buf);
    }
    static void store_f32(N* p, Vf v, std::int64_t n) {
        if (n == Lf) return S::store_f32(p, v);
        N buf[Lf];
        S::store_f32(buf, v);
        std::copy_n(buf, n, p);
    }
    // x[j] = f(x[j]) in float64 for every j, f taking and returning a Vd.
    template <class F>
    static void transform(N* x, std::int64_t n, F&& f) {
        for (std::int64_t i = 0; i < n; i += L) {
            const std::int64_t c = n - i < L ? n - i : L;
            prefetch_ahead<true>(x + i, L * std::int64_t{sizeof(N)});
            Vd lo, hi;
            load(x + i, c, lo, hi);
            store(x + i, f(lo), f(hi), c);
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
