// Exact reference conversions of the 16-bit element types (Float16, BFloat16 in
// table_types.hpp), in plain bit manipulation: the scalar target is made of these, and
// the SIMD targets use them for the elements of a chunk's tail.
//
// Results are rounded once, to nearest-even, from the exact value: a float64 result is
// first rounded to float32 *to odd* (truncate, then set the last bit if anything was
// cut off), which keeps enough information that rounding that float32 to 16 bits gives
// what rounding the float64 directly would (float32 has at least two more significand
// bits than either 16-bit format, at every magnitude). Rounding to nearest twice, as a
// plain double -> float -> 16-bit cast does, is wrong for the values just past a
// half-way point of the 16-bit format.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class T>
constexpr bool kIsNarrow = std::is_same_v<T, Float16> || std::is_same_v<T, BFloat16>;

inline std::uint16_t bits_of(Float16 h) { return static_cast<std::uint16_t>(h); }
inline std::uint16_t bits_of(BFloat16 h) { return static_cast<std::uint16_t>(h); }

// Exact: every binary16 and bfloat16 value is a float32 value. NaNs stay NaN (quiet).
inline float to_float(Float16 h) {
    const std::uint32_t b = bits_of(h);
    const std::uint32_t sign = (b & 0x8000u) << 16, exp = (b >> 10) & 0x1f, mant = b & 0x3ff;
    if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
        const float v = static_cast<float>(mant) * 0x1p-24f;
        return std::bit_cast<float>(std::bit_cast<std::uint32_t>(v) | sign);
    }
    if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u));
    return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}
inline float to_float(BFloat16 h) { return std::bit_cast<float>(static_cast<std::uint32_t>(bits_of(h)) << 16); }

// float64 -> float32 rounded to odd. The cast rounds to nearest; one step back toward
// zero undoes a rounding away from it, and the sticky last bit marks an inexact result.
inline float to_float_odd(double x) {
    std::uint32_t b = std::bit_cast<std::uint32_t>(static_cast<float>(x));
    const double rounded = static_cast<double>(std::bit_cast<float>(b));
    if (std::fabs(rounded) > std::fabs(x)) b -= 1;
    if (rounded != x) b |= 1;  // also keeps a NaN a NaN
    return std::bit_cast<float>(b);
}

// float32 -> binary16, to nearest-even; overflow gives inf, NaN stays NaN (quiet).
inline Float16 to_float16(float f) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t a = u & 0x7fffffffu;
    std::uint32_t h;
    if (a > 0x7f800000u) {
        h = 0x7e00u | ((a >> 13) & 0x3ffu);
    } else if (a >= 0x477ff000u) {  // >= 65520, the half-way point above the largest finite
        h = 0x7c00u;
    } else if (a >= 0x38800000u) {  // normal: round the 13 bits dropped, then rebias
        h = (a + 0xfffu + ((a >> 13) & 1u) - (112u << 23)) >> 13;
    } else if (a < 0x33000000u) {   // below 2^-25: rounds to zero (2^-25 itself ties to 0)
        h = 0;
    } else {                        // subnormal: the significand shifted right, to nearest-even
        const std::uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        const std::uint32_t shift = 126u - (a >> 23);  // 14 .. 24
        const std::uint32_t q = mant >> shift, rest = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        h = q + ((rest > halfway || (rest == halfway && (q & 1u))) ? 1u : 0u);
    }
    return static_cast<Float16>(static_cast<std::uint16_t>(sign | h));
}

// float32 -> bfloat16, to nearest-even (subnormals kept); NaN stays NaN (quiet).
inline BFloat16 to_bfloat16(float f) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<BFloat16>(static_cast<std::uint16_t>((u >> 16) | 0x40u));
    return static_cast<BFloat16>(static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16));
}

// float64 -> 16 bits, rounded once (see the top of this file).
template <class N>
N to_narrow(double x) {
    if constexpr (std::is_same_v<N, Float16>) {
        return to_float16(to_float_odd(x));
    } else {
        return to_bfloat16(to_float_odd(x));
    }
}
template <class N>
N to_narrow(float x) {
    if constexpr (std::is_same_v<N, Float16>) {
        return to_float16(x);
    } else {
        return to_bfloat16(x);
    }
}

// NaN or inf: the exponent bits all set.
inline bool is_nonfinite(Float16 h) { return (bits_of(h) & 0x7c00u) == 0x7c00u; }
inline bool is_nonfinite(BFloat16 h) { return (bits_of(h) & 0x7f80u) == 0x7f80u; }

}  // namespace gradcore::kernels::GRADCORE_TARGET
