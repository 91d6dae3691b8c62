// AVX-512 F/BW/DQ/VL (Skylake-SP and later): 8 float64 / 16 float32 lanes.
#pragma once

#include <immintrin.h>

#include <cfloat>
#include <cstdint>

namespace gradcore::simd {

struct Avx512 {
    static constexpr const char* kName = "avx512";

    using Vd = __m512d;
    static constexpr int kLanesD = 8;
    // Native vector of T, picked by overload (std::conditional would drop the vector
    // types' alignment attributes with a warning).
    static __m512 native_of(float);
    static __m512d native_of(double);
    template <class T>
    using V = decltype(native_of(T{}));
    template <class T>
    static constexpr int kLanes = 64 / sizeof(T);

    static Vd zero_d() { return _mm512_setzero_pd(); }
    static Vd set1_d(double v) { return _mm512_set1_pd(v); }
    static void load2_f64(const std::uint16_t* p, Vd& lo, Vd& hi) {
        const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
        hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
    }
    static void load2_f64(const float* p, Vd& lo, Vd& hi) {
        lo = _mm512_cvtps_pd(_mm256_loadu_ps(p));
        hi = _mm512_cvtps_pd(_mm256_loadu_ps(p + 8));
    }
    static void load2_f64(const double* p, Vd& lo, Vd& hi) {
        lo = _mm512_loadu_pd(p);
        hi = _mm512_loadu_pd(p + 8);
    }

    static Vd fma(Vd a, Vd b, Vd c) { return _mm512_fmadd_pd(a, b, c); }
    static Vd add(Vd a, Vd b) { return _mm512_add_pd(a, b); }
    static Vd abs(Vd a) { return _mm512_abs_pd(a); }
    static Vd max(Vd a, Vd b) { return _mm512_max_pd(a, b); }
    static Vd nan_to_one(Vd a) {
        return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q), _mm512_set1_pd(1.0));
    }
    static Vd nonfinite_to_one(Vd a) {
        const __mmask8 bad = _mm512_cmp_pd_mask(abs(a), _mm512_set1_pd(DBL_MAX), _CMP_NLE_UQ);
        return _mm512_maskz_mov_pd(bad, _mm512_set1_pd(1.0));
    }
    static double reduce_add(Vd a) { return _mm512_reduce_add_pd(a); }
    static double reduce_max(Vd a) { return _mm512_reduce_max_pd(a); }

    static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
    static __m512d load(const double* p) { return _mm512_loadu_pd(p); }
    static void store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
    static void store(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
    static __m512 set1(float v) { return _mm512_set1_ps(v); }
    static __m512d set1(double v) { return _mm512_set1_pd(v); }
    static __m512 mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
    static __m512d mul(__m512d a, __m512d b) { return _mm512_mul_pd(a, b); }
    // Like their AVX forms, max/min return the second operand when either is NaN.
    static __m512 clamp(__m512 x, __m512 lo, __m512 hi) {
        return _mm512_min_ps(hi, _mm512_max_ps(lo, x));
    }
    static __m512d clamp(__m512d x, __m512d lo, __m512d hi) {
        return _mm512_min_pd(hi, _mm512_max_pd(lo, x));
    }
    static __m512 zero_nonfinite(__m512 x) {
        const __mmask16 ok = _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ);
        return _mm512_maskz_mov_ps(ok, x);
    }
    static __m512d zero_nonfinite(__m512d x) {
        const __mmask8 ok = _mm512_cmp_pd_mask(abs(x), _mm512_set1_pd(DBL_MAX), _CMP_LE_OQ);
        return _mm512_maskz_mov_pd(ok, x);
    }

    // Native-vector arithmetic for GEMM micro-kernels and dense epilogues.
    static __m512 fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
    static __m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
    static __m512 sub(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
    static __m512d sub(__m512d a, __m512d b) { return _mm512_sub_pd(a, b); }
    static __m512 div(__m512 a, __m512 b) { return _mm512_div_ps(a, b); }
    static __m512d div(__m512d a, __m512d b) { return _mm512_div_pd(a, b); }
    static __m512 max(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
    static __m512 min(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
    static __m512d min(__m512d a, __m512d b) { return _mm512_min_pd(a, b); }
    static __m512 where_positive(__m512 y, __m512 a, __m512 b) {
        return _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), a);
    }
    static __m512d where_positive(__m512d y, __m512d a, __m512d b) {
        return _mm512_mask_mov_pd(b, _mm512_cmp_pd_mask(y, _mm512_setzero_pd(), _CMP_GT_OQ), a);
    }
    static __m512 round_nearest(__m512 x) {
        return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    static __m512d round_nearest(__m512d x) {
        return _mm512_roundscale_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    // 2^n for integral n in the normal exponent range, built in the exponent field.
    static __m512 pow2i(__m512 n) {
        const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    }
    static __m512d pow2i(__m512d n) {
        const __m512i e = _mm512_add_epi64(_mm512_cvtpd_epi64(n), _mm512_set1_epi64(1023));
        return _mm512_castsi512_pd(_mm512_slli_epi64(e, 52));
    }

    static constexpr bool kHasTranspose = false;  // GEMM packing transposes element-wise
    static __m512 sqrt(__m512 x) { return _mm512_sqrt_ps(x); }
    static __m512d sqrt(__m512d x) { return _mm512_sqrt_pd(x); }
};

}  // namespace gradcore::simd
