// AVX2 + FMA (+ F16C, present on every AVX2 CPU): 4 float64 / 8 float32 lanes.
#pragma once

#include <immintrin.h>

#include <cfloat>
#include <cstdint>

#include "../narrow_float.hpp"
#include "../target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET::simd {

struct Avx2 {
    static constexpr const char* kName = "avx2";

    using Vd = __m256d;
    static constexpr int kLanesD = 4;
    // Native vector of T, picked by overload (std::conditional would drop the vector
    // types' alignment attributes with a warning).
    static __m256 native_of(float);
    static __m256d native_of(double);
    template <class T>
    using V = decltype(native_of(T{}));
    template <class T>
    static constexpr int kLanes = 32 / sizeof(T);

    static Vd zero_d() { return _mm256_setzero_pd(); }
    static Vd set1_d(double v) { return _mm256_set1_pd(v); }
    // The 16-bit floats (narrow_float.hpp): F16C for binary16; bfloat16 is the high half
    // of a float32, so it widens by a shift and rounds in integer arithmetic.
    static __m256 load_f32(const Float16* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static __m256 load_f32(const BFloat16* p) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
    static void store_f32(Float16* p, __m256 v) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    static void store_f32(BFloat16* p, __m256 v) {
        const __m256i u = _mm256_castps_si256(v), high = _mm256_srli_epi32(u, 16);
        const __m256i lsb = _mm256_and_si256(high, _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
        const __m256i quiet_nan = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
        r = _mm256_blendv_epi8(r, quiet_nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
        // packus narrows within each 128-bit half; qwords 0 and 2 hold the 8 results.
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
    }
    // float64 -> float32 rounded to odd: the rounding cast, one step back toward zero
    // where it rounded away from zero, and the last bit set where it was inexact.
    static __m128 to_f32_odd(__m256d x) {
        const __m128 f = _mm256_cvtpd_ps(x);
        const __m256d back = _mm256_cvtps_pd(f);
        const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        const auto to32 = [&](__m256d mask) {
            return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(mask), low_dwords));
        };
        const __m128i away = to32(_mm256_cmp_pd(abs(back), abs(x), _CMP_GT_OQ));  // -1 there
        const __m128i inexact = to32(_mm256_cmp_pd(back, x, _CMP_NEQ_UQ));
        const __m128i b = _mm_add_epi32(_mm_castps_si128(f), away);
        return _mm_castsi128_ps(_mm_or_si128(b, _mm_and_si128(inexact, _mm_set1_epi32(1))));
    }
    template <class N>
        requires kIsNarrow<N>
    static void load2_f64(const N* p, Vd& lo, Vd& hi) {
        const __m256 f = load_f32(p);
        lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
        hi = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
    }
    template <class N>
    static void store2_f64(N* p, Vd lo, Vd hi) {
        store_f32(p, _mm256_set_m128(to_f32_odd(hi), to_f32_odd(lo)));
    }
    static void load2_f64(const float* p, Vd& lo, Vd& hi) {
        lo = _mm256_cvtps_pd(_mm_loadu_ps(p));
        hi = _mm256_cvtps_pd(_mm_loadu_ps(p + 4));
    }
    static void load2_f64(const double* p, Vd& lo, Vd& hi) {
        lo = _mm256_loadu_pd(p);
        hi = _mm256_loadu_pd(p + 4);
    }
    static void store2_f64(float* p, Vd lo, Vd hi) {
        _mm_storeu_ps(p, _mm256_cvtpd_ps(lo));
        _mm_storeu_ps(p + 4, _mm256_cvtpd_ps(hi));
    }
    static void store2_f64(double* p, Vd lo, Vd hi) {
        _mm256_storeu_pd(p, lo);
        _mm256_storeu_pd(p + 4, hi);
    }

    static Vd fma(Vd a, Vd b, Vd c) { return _mm256_fmadd_pd(a, b, c); }
    static Vd add(Vd a, Vd b) { return _mm256_add_pd(a, b); }
    static Vd abs(Vd a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
    static Vd max(Vd a, Vd b) { return _mm256_max_pd(a, b); }
    static Vd nan_to_one(Vd a) {
        return _mm256_and_pd(_mm256_cmp_pd(a, a, _CMP_UNORD_Q), _mm256_set1_pd(1.0));
    }
    static Vd nonfinite_to_one(Vd a) {
        const __m256d bad = _mm256_cmp_pd(abs(a), _mm256_set1_pd(DBL_MAX), _CMP_NLE_UQ);
        return _mm256_and_pd(bad, _mm256_set1_pd(1.0));
    }
    static double reduce_add(Vd a) {
        const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
        return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
    }
    static double reduce_max(Vd a) {
        const __m128d s = _mm_max_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
        return _mm_cvtsd_f64(_mm_max_sd(s, _mm_unpackhi_pd(s, s)));
    }
    // The kLanesD sums of adjacent pairs of the 2 * kLanesD values a then b, in a lane
    // order of the struct's choosing: after load2_f64, (re^2, im^2) pairs become |z|^2.
    static Vd pair_sums(Vd a, Vd b) { return _mm256_hadd_pd(a, b); }  // a0+a1, b0+b1, a2+a3, b2+b3

    static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
    static __m256d load(const double* p) { return _mm256_loadu_pd(p); }
    static void store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
    static void store(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
    // Partial vectors (see README.md). The masked loads never touch the memory of the
    // lanes they leave out; the masked stores are microcoded on AMD's cores, so store_n
    // goes through a buffer instead (a wide store read back narrow forwards well).
    static __m256 load_n(const float* p, std::int64_t n) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane));
    }
    static __m256d load_n(const double* p, std::int64_t n) {
        const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
        return _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lane));
    }
    template <class T, class Vec>
    static void store_n(T* p, Vec v, std::int64_t n) {
        alignas(32) T lanes[32 / sizeof(T)];
        store(lanes, v);
        for (std::int64_t i = 0; i < n; ++i) p[i] = lanes[i];
    }
    static __m256 set1(float v) { return _mm256_set1_ps(v); }
    static __m256d set1(double v) { return _mm256_set1_pd(v); }
    static __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
    static __m256d mul(__m256d a, __m256d b) { return _mm256_mul_pd(a, b); }
    // max/min return their second operand when either is NaN: keep x second.
    static __m256 clamp(__m256 x, __m256 lo, __m256 hi) {
        return _mm256_min_ps(hi, _mm256_max_ps(lo, x));
    }
    static __m256d clamp(__m256d x, __m256d lo, __m256d hi) {
        return _mm256_min_pd(hi, _mm256_max_pd(lo, x));
    }
    static __m256 zero_nonfinite(__m256 x) {
        const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
        return _mm256_and_ps(x, _mm256_cmp_ps(a, _mm256_set1_ps(FLT_MAX), _CMP_LE_OQ));
    }
    static __m256d zero_nonfinite(__m256d x) {
        return _mm256_and_pd(x, _mm256_cmp_pd(abs(x), _mm256_set1_pd(DBL_MAX), _CMP_LE_OQ));
    }

    // Native-vector arithmetic for GEMM micro-kernels and dense epilogues.
    static __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
    static __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
    static __m256 sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
    static __m256d sub(__m256d a, __m256d b) { return _mm256_sub_pd(a, b); }
    static __m256 div(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
    static __m256d div(__m256d a, __m256d b) { return _mm256_div_pd(a, b); }
    static __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
    static __m256 min(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
    static __m256d min(__m256d a, __m256d b) { return _mm256_min_pd(a, b); }
    static __m256 where_positive(__m256 y, __m256 a, __m256 b) {
        return _mm256_blendv_ps(b, a, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ));
    }
    static __m256d where_positive(__m256d y, __m256d a, __m256d b) {
        return _mm256_blendv_pd(b, a, _mm256_cmp_pd(y, _mm256_setzero_pd(), _CMP_GT_OQ));
    }
    static __m256 round_nearest(__m256 x) {
        return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    static __m256d round_nearest(__m256d x) {
        return _mm256_round_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    // 2^n for integral n in the normal exponent range, built in the exponent field.
    static __m256 pow2i(__m256 n) {
        const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    }
    static __m256d pow2i(__m256d n) {
        // n + 1.5 * 2^52 holds n in its low mantissa bits (AVX2 has no double -> int64).
        const __m256i i = _mm256_castpd_si256(_mm256_add_pd(n, _mm256_set1_pd(0x1.8p52)));
        return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(i, _mm256_set1_epi64x(1023)), 52));
    }

    // d[j * ld + i] = s[i * ls + j] for a kLanes x kLanes block (GEMM packing of
    // transposed operands).
    static constexpr bool kHasTranspose = true;
    static constexpr bool kHasFma = true;  // fma is fused (one rounding)
    static void transpose_block(const float* s, std::int64_t ls, float* d, std::int64_t ld) {
        __m256 r[8], t[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * ls);
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int h = 0; h < 8; h += 4) {  // rows 0-3, then 4-7
            r[h + 0] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
            r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
            r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
            r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (int j = 0; j < 4; ++j) {
            _mm256_storeu_ps(d + j * ld, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
            _mm256_storeu_ps(d + (j + 4) * ld, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
        }
    }
    static void transpose_block(const double* s, std::int64_t ls, double* d, std::int64_t ld) {
        const __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + ls);
        const __m256d r2 = _mm256_loadu_pd(s + 2 * ls), r3 = _mm256_loadu_pd(s + 3 * ls);
        const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
        const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
        _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
        _mm256_storeu_pd(d + ld, _mm256_permute2f128_pd(t1, t3, 0x20));
        _mm256_storeu_pd(d + 2 * ld, _mm256_permute2f128_pd(t0, t2, 0x31));
        _mm256_storeu_pd(d + 3 * ld, _mm256_permute2f128_pd(t1, t3, 0x31));
    }
    // d[j * ld + i] = s[i * ls + j] for the first `rows` (<= 8) rows of s, zero for the
    // others up to 8, j < kLanes (GEMM packing of a row-major A into row panels of
    // MR <= 8). Each d row is written as whole vectors of 8 values, in ascending j: with
    // ld < 8 a row's tail lands on the start of the next one, which overwrites it, and
    // the last row's tail reaches 8 - ld values past d + kLanes * ld.
    static void transpose_rows(const float* s, std::int64_t ls, int rows, float* d, std::int64_t ld) {
        __m256 r[8], t[8];
        for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(s + i * ls) : _mm256_setzero_ps();
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int h = 0; h < 8; h += 4) {
            r[h + 0] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
            r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
            r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
            r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (int j = 0; j < 4; ++j) _mm256_storeu_ps(d + j * ld, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
        for (int j = 0; j < 4; ++j) _mm256_storeu_ps(d + (j + 4) * ld, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
    }
    static void transpose_rows(const double* s, std::int64_t ls, int rows, double* d, std::int64_t ld) {
        __m256d col[2][4];  // [rows 0-3 | rows 4-7][j]
        for (int h = 0; h < 2; ++h) {
            __m256d r[4];
            for (int i = 0; i < 4; ++i) {
                r[i] = 4 * h + i < rows ? _mm256_loadu_pd(s + (4 * h + i) * ls) : _mm256_setzero_pd();
            }
            const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
            const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
            col[h][0] = _mm256_permute2f128_pd(t0, t2, 0x20);
            col[h][1] = _mm256_permute2f128_pd(t1, t3, 0x20);
            col[h][2] = _mm256_permute2f128_pd(t0, t2, 0x31);
            col[h][3] = _mm256_permute2f128_pd(t1, t3, 0x31);
        }
        for (int j = 0; j < 4; ++j) {
            _mm256_storeu_pd(d + j * ld, col[0][j]);
            _mm256_storeu_pd(d + j * ld + 4, col[1][j]);
        }
    }
    static __m256 sqrt(__m256 x) { return _mm256_sqrt_ps(x); }
    static __m256d sqrt(__m256d x) { return _mm256_sqrt_pd(x); }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET::simd
