// Portable reference target: one lane, plain C++. Every SIMD target is tested against it.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "../narrow_float.hpp"
#include "../target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET::simd {

struct Scalar {
    static constexpr const char* kName = "scalar";

    using Vd = double;
    static constexpr int kLanesD = 1;
    template <class T>
    using V = T;
    template <class T>
    static constexpr int kLanes = 1;

    static Vd zero_d() { return 0.0; }
    static Vd set1_d(double v) { return v; }
    // The 16-bit floats: the reference conversions themselves (narrow_float.hpp).
    template <class N>
        requires kIsNarrow<N>
    static void load2_f64(const N* p, Vd& lo, Vd& hi) {
        lo = to_float(p[0]);
        hi = to_float(p[1]);
    }
    template <class N>
    static void store2_f64(N* p, Vd lo, Vd hi) {
        p[0] = to_narrow<N>(lo);
        p[1] = to_narrow<N>(hi);
    }
    template <class N>
    static float load_f32(const N* p) { return to_float(*p); }
    template <class N>
    static void store_f32(N* p, float v) { *p = to_narrow<N>(v); }
    static void load2_f64(const float* p, Vd& lo, Vd& hi) {
        lo = p[0];
        hi = p[1];
    }
    static void load2_f64(const double* p, Vd& lo, Vd& hi) {
        lo = p[0];
        hi = p[1];
    }
    static void store2_f64(float* p, Vd lo, Vd hi) {
        p[0] = static_cast<float>(lo);
        p[1] = static_cast<float>(hi);
    }
    static void store2_f64(double* p, Vd lo, Vd hi) {
        p[0] = lo;
        p[1] = hi;
    }

    static Vd fma(Vd a, Vd b, Vd c) { return a * b + c; }
    static Vd add(Vd a, Vd b) { return a + b; }
    static Vd abs(Vd a) { return std::fabs(a); }
    static Vd max(Vd a, Vd b) { return a > b ? a : b; }
    static Vd nan_to_one(Vd a) { return a != a ? 1.0 : 0.0; }
    static Vd nonfinite_to_one(Vd a) {
        return (a - a) == 0.0 ? 0.0 : 1.0;  // inf - inf and NaN - NaN are NaN
    }
    static double reduce_add(Vd a) { return a; }
    static double reduce_max(Vd a) { return a; }
    // The kLanesD sums of adjacent pairs of the 2 * kLanesD values a then b, in a lane
    // order of the struct's choosing: after load2_f64, (re^2, im^2) pairs become |z|^2.
    static Vd pair_sums(Vd a, Vd b) { return a + b; }  // one lane: the pair is (a, b)

    template <class T>
    static T load(const T* p) { return *p; }
    template <class T>
    static void store(T* p, T v) { *p = v; }
    // Partial vectors (see README.md): with one lane, n is 0 or 1.
    template <class T>
    static T load_n(const T* p, std::int64_t n) { return n > 0 ? *p : T(0); }
    template <class T>
    static void store_n(T* p, T v, std::int64_t n) {
        if (n > 0) *p = v;
    }
    template <class T>
    static T set1(T v) { return v; }
    template <class T>
    static T mul(T a, T b) { return a * b; }
    template <class T>
    static T clamp(T x, T lo, T hi) {
        // Comparisons with NaN are false, so a NaN x falls through unchanged.
        return x < lo ? lo : (x > hi ? hi : x);
    }
    template <class T>
    static T zero_nonfinite(T x) { return (x - x) == 0 ? x : T(0); }

    // Native-"vector" arithmetic for GEMM micro-kernels and dense epilogues.
    static float fma(float a, float b, float c) { return a * b + c; }
    static float add(float a, float b) { return a + b; }
    static float max(float a, float b) { return a > b ? a : b; }
    template <class T>
    static T sub(T a, T b) { return a - b; }
    template <class T>
    static T div(T a, T b) { return a / b; }
    template <class T>
    static T min(T a, T b) { return a < b ? a : b; }
    template <class T>
    static T where_positive(T y, T a, T b) { return y > T(0) ? a : b; }
    template <class T>
    static T round_nearest(T x) { return std::nearbyint(x); }
    template <class T>
    static T pow2i(T n) { return std::ldexp(T(1), static_cast<int>(n)); }

    static constexpr bool kHasTranspose = false;  // GEMM packing transposes element-wise
    static constexpr bool kHasFma = false;  // fma is a * b + c, two roundings (no FMA in the baseline ISA)
    template <class T>
    static T sqrt(T x) { return std::sqrt(x); }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET::simd
