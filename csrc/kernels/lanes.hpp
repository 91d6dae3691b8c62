// Loops whose length is not a multiple of the vector width, written once for whole
// vectors: the body takes a count c (L, or fewer on the last step), and load/store
// here are the plain ones for whole vectors and the SIMD struct's load_n/store_n for
// the last, partial one.
#pragma once

#include <cstdint>

#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

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

}  // namespace gradcore::kernels::GRADCORE_TARGET
