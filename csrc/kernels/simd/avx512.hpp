// AVX-512 F/BW/DQ/VL (Skylake-SP and later): 8 float64 / 16 float32 lanes.
#pragma once

#include <immintrin.h>

#include <cfloat>
#include <cstdint>

#include "../narrow_float.hpp"
#include "../target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET::simd {

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
    // The 16-bit floats (narrow_float.hpp): AVX-512F's conversions for binary16;
    // bfloat16 is the high half of a float32, so it widens by a shift and rounds in
    // integer arithmetic (AVX-512 BF16's vcvtneps2bf16 flushes subnormals to zero).
    static __m512 load_f32(const Float16* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static __m512 load_f32(const BFloat16* p) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    }
    static void store_f32(Float16* p, __m512 v) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    static void store_f32(BFloat16* p, __m512 v) {
        const __m512i u = _mm512_castps_si512(v), high = _mm512_srli_epi32(u, 16);
        const __m512i lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
        r = _mm512_mask_or_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), high, _mm512_set1_epi32(0x40));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
    }
    // float64 -> float32 rounded to odd: truncated, the last bit set where inexact.
    static __m256 to_f32_odd(__m512d x) {
        const __m256i f = _mm256_castps_si256(_mm512_cvt_roundpd_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC));
        const __mmask8 inexact = _mm512_cmp_pd_mask(_mm512_cvtps_pd(_mm256_castsi256_ps(f)), x, _CMP_NEQ_UQ);
        return _mm256_castsi256_ps(_mm256_mask_or_epi32(f, inexact, f, _mm256_set1_epi32(1)));
    }
    template <class N>
        requires kIsNarrow<N>
    static void load2_f64(const N* p, Vd& lo, Vd& hi) {
        const __m512 f = load_f32(p);
        lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
        hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
    }
    template <class N>
    static void store2_f64(N* p, Vd lo, Vd hi) {
        store_f32(p, _mm512_insertf32x8(_mm512_castps256_ps512(to_f32_odd(lo)), to_f32_odd(hi), 1));
    }
    static void load2_f64(const float* p, Vd& lo, Vd& hi) {
        lo = _mm512_cvtps_pd(_mm256_loadu_ps(p));
        hi = _mm512_cvtps_pd(_mm256_loadu_ps(p + 8));
    }
    static void load2_f64(const double* p, Vd& lo, Vd& hi) {
        lo = _mm512_loadu_pd(p);
        hi = _mm512_loadu_pd(p + 8);
    }
    static void store2_f64(float* p, Vd lo, Vd hi) {
        _mm256_storeu_ps(p, _mm512_cvtpd_ps(lo));
        _mm256_storeu_ps(p + 8, _mm512_cvtpd_ps(hi));
    }
    static void store2_f64(double* p, Vd lo, Vd hi) {
        _mm512_storeu_pd(p, lo);
        _mm512_storeu_pd(p + 8, hi);
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
    // The kLanesD sums of adjacent pairs of the 2 * kLanesD values a then b, in a lane
    // order of the struct's choosing: after load2_f64, (re^2, im^2) pairs become |z|^2.
    static Vd pair_sums(Vd a, Vd b) {
        const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
        return _mm512_add_pd(_mm512_permutex2var_pd(a, even, b), _mm512_permutex2var_pd(a, odd, b));
    }

    static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
    static __m512d load(const double* p) { return _mm512_loadu_pd(p); }
    static void store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
    static void store(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
    // Partial vectors (see README.md): masked loads and stores, which leave the other
    // lanes' memory untouched.
    static __m512 load_n(const float* p, std::int64_t n) { return _mm512_maskz_loadu_ps(mask16(n), p); }
    static __m512d load_n(const double* p, std::int64_t n) { return _mm512_maskz_loadu_pd(mask8(n), p); }
    static void store_n(float* p, __m512 v, std::int64_t n) { _mm512_mask_storeu_ps(p, mask16(n), v); }
    static void store_n(double* p, __m512d v, std::int64_t n) { _mm512_mask_storeu_pd(p, mask8(n), v); }
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

    // GEMM packing of transposed operands (the contract is Avx2's): d[j * ld + i] =
    // s[i * ls + j] for a kLanes x kLanes block.
    static constexpr bool kHasTranspose = true;
    static constexpr bool kHasFma = true;  // fma is fused (one rounding)
    static void transpose_block(const float* s, std::int64_t ls, float* d, std::int64_t ld) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(s + i * ls);
        transpose_4x4_in_lanes(r, 16);
        // r[4g + m], lane L: rows 4g..4g+3 of column 4L + m; gather the lanes of each column.
        for (int m = 0; m < 4; ++m) {
            __m512 out[4];
            transpose_lanes(r[m], r[4 + m], r[8 + m], r[12 + m], out);
            for (int L = 0; L < 4; ++L) _mm512_storeu_ps(d + (4 * L + m) * ld, out[L]);
        }
    }
    static void transpose_block(const double* s, std::int64_t ls, double* d, std::int64_t ld) {
        transpose_8x8(s, ls, 8, d, ld);
    }
    // d[j * ld + i] = s[i * ls + j] for the first `rows` (<= 8) rows of s, zero for the
    // others up to 8, j < kLanes: every d row is 8 values (one panel step of MR = 8).
    static void transpose_rows(const float* s, std::int64_t ls, int rows, float* d, std::int64_t ld) {
        __m512 r[8];
        for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm512_loadu_ps(s + i * ls) : _mm512_setzero_ps();
        transpose_4x4_in_lanes(r, 8);
        // r[4g + m], lane L: rows 4g..4g+3 of column 4L + m; column 4L + m is lane L of
        // r[m] then lane L of r[4 + m].
        const __m512i lanes01 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        const __m512i lanes23 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
        __m256 col[16];
        for (int m = 0; m < 4; ++m) {
            const __m512 c01 = _mm512_permutex2var_ps(r[m], lanes01, r[4 + m]);
            const __m512 c23 = _mm512_permutex2var_ps(r[m], lanes23, r[4 + m]);
            col[m] = _mm512_castps512_ps256(c01);
            col[4 + m] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(c01), 1));
            col[8 + m] = _mm512_castps512_ps256(c23);
            col[12 + m] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(c23), 1));
        }
        for (int j = 0; j < 16; ++j) _mm256_storeu_ps(d + j * ld, col[j]);  // ascending j, as Avx2's
    }
    static void transpose_rows(const double* s, std::int64_t ls, int rows, double* d, std::int64_t ld) {
        transpose_8x8(s, ls, rows, d, ld);
    }
    static __m512 sqrt(__m512 x) { return _mm512_sqrt_ps(x); }
    static __m512d sqrt(__m512d x) { return _mm512_sqrt_pd(x); }

   private:
    // The first n lanes, 0 <= n <= 16 (8).
    static __mmask16 mask16(std::int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }
    static __mmask8 mask8(std::int64_t n) { return static_cast<__mmask8>((1u << n) - 1); }

    // Within every 128-bit lane, the 4 x 4 transpose of each group of four rows:
    // afterwards r[4g + m], lane L, holds rows 4g..4g+3 of column 4L + m.
    static void transpose_4x4_in_lanes(__m512* r, int n) {
        for (int g = 0; g < n; g += 4) {
            const __m512 t0 = _mm512_unpacklo_ps(r[g], r[g + 1]), t1 = _mm512_unpackhi_ps(r[g], r[g + 1]);
            const __m512 t2 = _mm512_unpacklo_ps(r[g + 2], r[g + 3]), t3 = _mm512_unpackhi_ps(r[g + 2], r[g + 3]);
            r[g + 0] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            r[g + 1] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            r[g + 2] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            r[g + 3] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
        }
    }
    // The 4 x 4 transpose of 128-bit lanes: out[L] = (a.L, b.L, c.L, d.L).
    static void transpose_lanes(__m512 a, __m512 b, __m512 c, __m512 d, __m512* out) {
        const __m512 u0 = _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2
        const __m512 u1 = _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1));  // a1 a3 b1 b3
        const __m512 u2 = _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(2, 0, 2, 0));
        const __m512 u3 = _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 1, 3, 1));
        out[0] = _mm512_shuffle_f32x4(u0, u2, _MM_SHUFFLE(2, 0, 2, 0));
        out[1] = _mm512_shuffle_f32x4(u1, u3, _MM_SHUFFLE(2, 0, 2, 0));
        out[2] = _mm512_shuffle_f32x4(u0, u2, _MM_SHUFFLE(3, 1, 3, 1));
        out[3] = _mm512_shuffle_f32x4(u1, u3, _MM_SHUFFLE(3, 1, 3, 1));
    }
    // d[j * ld + i] = s[i * ls + j], i, j < 8, rows past `rows` read as zero.
    static void transpose_8x8(const double* s, std::int64_t ls, int rows, double* d, std::int64_t ld) {
        __m512d r[8];
        for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm512_loadu_pd(s + i * ls) : _mm512_setzero_pd();
        // t[2p + e], lane L: rows 2p, 2p + 1 of column 2L + e.
        __m512 t[8];
        for (int p = 0; p < 4; ++p) {
            t[2 * p] = _mm512_castpd_ps(_mm512_unpacklo_pd(r[2 * p], r[2 * p + 1]));
            t[2 * p + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(r[2 * p], r[2 * p + 1]));
        }
        __m512 even[4], odd[4];
        transpose_lanes(t[0], t[2], t[4], t[6], even);
        transpose_lanes(t[1], t[3], t[5], t[7], odd);
        for (int L = 0; L < 4; ++L) {
            _mm512_storeu_pd(d + (2 * L) * ld, _mm512_castps_pd(even[L]));
            _mm512_storeu_pd(d + (2 * L + 1) * ld, _mm512_castps_pd(odd[L]));
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET::simd
