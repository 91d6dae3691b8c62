// AArch64 Advanced SIMD: 2 float64 / 4 float32 lanes (always present on aarch64).
#pragma once

#include <arm_neon.h>

#include <cfloat>
#include <cstdint>

#include "../narrow_float.hpp"
#include "../target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET::simd {

struct Neon {
    static constexpr const char* kName = "neon";

    using Vd = float64x2_t;
    static constexpr int kLanesD = 2;
    // Native vector of T, picked by overload (std::conditional would drop the vector
    // types' alignment attributes with a warning).
    static float32x4_t native_of(float);
    static float64x2_t native_of(double);
    template <class T>
    using V = decltype(native_of(T{}));
    template <class T>
    static constexpr int kLanes = 16 / sizeof(T);

    static Vd zero_d() { return vdupq_n_f64(0.0); }
    static Vd set1_d(double v) { return vdupq_n_f64(v); }
    // The 16-bit floats (narrow_float.hpp): the FP16 conversions for binary16; bfloat16
    // is the high half of a float32, so it widens by a shift and rounds in integer
    // arithmetic. FCVTXN rounds float64 to float32 to odd in one instruction.
    static const std::uint16_t* bits(const Float16* p) { return reinterpret_cast<const std::uint16_t*>(p); }
    static const std::uint16_t* bits(const BFloat16* p) { return reinterpret_cast<const std::uint16_t*>(p); }
    static float32x4_t load_f32(const Float16* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(bits(p)))); }
    static float32x4_t load_f32(const BFloat16* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(bits(p)), 16)); }
    static void store_f32(Float16* p, float32x4_t v) {
        vst1_u16(reinterpret_cast<std::uint16_t*>(p), vreinterpret_u16_f16(vcvt_f16_f32(v)));
    }
    static void store_f32(BFloat16* p, float32x4_t v) {
        const uint32x4_t u = vreinterpretq_u32_f32(v), high = vshrq_n_u32(u, 16);
        const uint32x4_t lsb = vandq_u32(high, vdupq_n_u32(1));
        const uint32x4_t r = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), lsb), 16);
        const uint32x4_t nan = vmvnq_u32(vceqq_f32(v, v));
        const uint32x4_t out = vbslq_u32(nan, vorrq_u32(high, vdupq_n_u32(0x40)), r);
        vst1_u16(reinterpret_cast<std::uint16_t*>(p), vmovn_u32(out));
    }
    template <class N>
        requires kIsNarrow<N>
    static void load2_f64(const N* p, Vd& lo, Vd& hi) {
        const float32x4_t f = load_f32(p);
        lo = vcvt_f64_f32(vget_low_f32(f));
        hi = vcvt_high_f64_f32(f);
    }
    template <class N>
    static void store2_f64(N* p, Vd lo, Vd hi) {
        store_f32(p, vcvtx_high_f32_f64(vcvtx_f32_f64(lo), hi));
    }
    static void load2_f64(const float* p, Vd& lo, Vd& hi) {
        const float32x4_t f = vld1q_f32(p);
        lo = vcvt_f64_f32(vget_low_f32(f));
        hi = vcvt_high_f64_f32(f);
    }
    static void load2_f64(const double* p, Vd& lo, Vd& hi) {
        lo = vld1q_f64(p);
        hi = vld1q_f64(p + 2);
    }
    static void store2_f64(float* p, Vd lo, Vd hi) {
        vst1q_f32(p, vcvt_high_f32_f64(vcvt_f32_f64(lo), hi));
    }
    static void store2_f64(double* p, Vd lo, Vd hi) {
        vst1q_f64(p, lo);
        vst1q_f64(p + 2, hi);
    }

    static Vd fma(Vd a, Vd b, Vd c) { return vfmaq_f64(c, a, b); }
    static Vd add(Vd a, Vd b) { return vaddq_f64(a, b); }
    static Vd abs(Vd a) { return vabsq_f64(a); }
    static Vd max(Vd a, Vd b) { return vmaxq_f64(a, b); }
    static Vd nan_to_one(Vd a) {
        const uint64x2_t not_nan = vceqq_f64(a, a);
        return vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(vdupq_n_f64(1.0)), not_nan));
    }
    static Vd nonfinite_to_one(Vd a) {
        const uint64x2_t ok = vcleq_f64(vabsq_f64(a), vdupq_n_f64(DBL_MAX));
        return vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(vdupq_n_f64(1.0)), ok));
    }
    static double reduce_add(Vd a) { return vaddvq_f64(a); }
    static double reduce_max(Vd a) { return vmaxvq_f64(a); }
    // The kLanesD sums of adjacent pairs of the 2 * kLanesD values a then b, in a lane
    // order of the struct's choosing: after load2_f64, (re^2, im^2) pairs become |z|^2.
    static Vd pair_sums(Vd a, Vd b) { return vpaddq_f64(a, b); }

    static float32x4_t load(const float* p) { return vld1q_f32(p); }
    static float64x2_t load(const double* p) { return vld1q_f64(p); }
    static void store(float* p, float32x4_t v) { vst1q_f32(p, v); }
    static void store(double* p, float64x2_t v) { vst1q_f64(p, v); }
    // Partial vectors (see README.md): NEON has no masked loads or stores; through a
    // buffer.
    template <class T>
    static auto load_n(const T* p, std::int64_t n) {
        T lanes[16 / sizeof(T)] = {};
        for (std::int64_t i = 0; i < n; ++i) lanes[i] = p[i];
        return load(lanes);
    }
    template <class T, class Vec>
    static void store_n(T* p, Vec v, std::int64_t n) {
        T lanes[16 / sizeof(T)];
        store(lanes, v);
        for (std::int64_t i = 0; i < n; ++i) p[i] = lanes[i];
    }
    static float32x4_t set1(float v) { return vdupq_n_f32(v); }
    static float64x2_t set1(double v) { return vdupq_n_f64(v); }
    static float32x4_t mul(float32x4_t a, float32x4_t b) { return vmulq_f32(a, b); }
    static float64x2_t mul(float64x2_t a, float64x2_t b) { return vmulq_f64(a, b); }
    // vmax/vmin propagate NaN, which is what clamp needs for NaN x.
    static float32x4_t clamp(float32x4_t x, float32x4_t lo, float32x4_t hi) {
        return vminq_f32(hi, vmaxq_f32(lo, x));
    }
    static float64x2_t clamp(float64x2_t x, float64x2_t lo, float64x2_t hi) {
        return vminq_f64(hi, vmaxq_f64(lo, x));
    }
    static float32x4_t zero_nonfinite(float32x4_t x) {
        const uint32x4_t ok = vcleq_f32(vabsq_f32(x), vdupq_n_f32(FLT_MAX));
        return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(x), ok));
    }
    static float64x2_t zero_nonfinite(float64x2_t x) {
        const uint64x2_t ok = vcleq_f64(vabsq_f64(x), vdupq_n_f64(DBL_MAX));
        return vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(x), ok));
    }

    // Native-vector arithmetic for GEMM micro-kernels and dense epilogues.
    static float32x4_t fma(float32x4_t a, float32x4_t b, float32x4_t c) { return vfmaq_f32(c, a, b); }
    static float32x4_t add(float32x4_t a, float32x4_t b) { return vaddq_f32(a, b); }
    static float32x4_t sub(float32x4_t a, float32x4_t b) { return vsubq_f32(a, b); }
    static float64x2_t sub(float64x2_t a, float64x2_t b) { return vsubq_f64(a, b); }
    static float32x4_t div(float32x4_t a, float32x4_t b) { return vdivq_f32(a, b); }
    static float64x2_t div(float64x2_t a, float64x2_t b) { return vdivq_f64(a, b); }
    static float32x4_t max(float32x4_t a, float32x4_t b) { return vmaxq_f32(a, b); }
    static float32x4_t min(float32x4_t a, float32x4_t b) { return vminq_f32(a, b); }
    static float64x2_t min(float64x2_t a, float64x2_t b) { return vminq_f64(a, b); }
    static float32x4_t where_positive(float32x4_t y, float32x4_t a, float32x4_t b) {
        return vbslq_f32(vcgtq_f32(y, vdupq_n_f32(0.0f)), a, b);
    }
    static float64x2_t where_positive(float64x2_t y, float64x2_t a, float64x2_t b) {
        return vbslq_f64(vcgtq_f64(y, vdupq_n_f64(0.0)), a, b);
    }
    static float32x4_t round_nearest(float32x4_t x) { return vrndnq_f32(x); }
    static float64x2_t round_nearest(float64x2_t x) { return vrndnq_f64(x); }
    // 2^n for integral n in the normal exponent range, built in the exponent field.
    static float32x4_t pow2i(float32x4_t n) {
        const int32x4_t e = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
        return vreinterpretq_f32_s32(vshlq_n_s32(e, 23));
    }
    static float64x2_t pow2i(float64x2_t n) {
        const int64x2_t e = vaddq_s64(vcvtnq_s64_f64(n), vdupq_n_s64(1023));
        return vreinterpretq_f64_s64(vshlq_n_s64(e, 52));
    }

    static constexpr bool kHasTranspose = false;  // GEMM packing transposes element-wise
    static constexpr bool kHasFma = true;         // fma is fused (one rounding)
    static float32x4_t sqrt(float32x4_t x) { return vsqrtq_f32(x); }
    static float64x2_t sqrt(float64x2_t x) { return vsqrtq_f64(x); }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET::simd
