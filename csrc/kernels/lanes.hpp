// Partial vectors for loops whose length is not a multiple of the vector width: the
// last n < L values go through a zero-padded buffer, so a kernel's body is written once
// for whole vectors.
#pragma once

#include <cstdint>

#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct Lanes {
    using V = typename S::template V<T>;
    static constexpr std::int64_t L = S::template kLanes<T>;

    // Up to L values at p (n of them; the rest read as 0).
    static V load(const T* p, std::int64_t n) {
        if (n == L) return S::load(p);
        T tmp[L] = {};
        for (std::int64_t i = 0; i < n; ++i) tmp[i] = p[i];
        return S::load(tmp);
    }
    static void store(T* p, V v, std::int64_t n) {
        if (n == L) return S::store(p, v);
        T tmp[L];
        S::store(tmp, v);
        for (std::int64_t i = 0; i < n; ++i) p[i] = tmp[i];
    }
    // f(offset, count) over [0, n) in steps of L, the last step partial.
    template <class F>
    static void for_each(std::int64_t n, F&& f) {
        std::int64_t i = 0;
        for (; i + L <= n; i += L) f(i, L);
        if (i < n) f(i, n - i);
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
