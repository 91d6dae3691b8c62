// Host checks of the CUDA backend's arithmetic and tables, no GPU needed:
// csrc/cuda/norm_math.cuh (Blue's scaled sum of squares, L1 sums, NaN-aware max,
// general-p finish, clipping factors) against long-double references on tricky inputs,
// the determinism of the chunk-ordered combination, and csrc/cuda/chunk_table.hpp (the
// chunk table and the adaptive-clipping tiles: every element covered exactly once, in
// the right unit). Build and run (from the repository root):
//
//   nvcc -x cu -std=c++17 tests/cpp/test_cuda_norm_math.cpp -I csrc -I csrc/include -o /tmp/test_cuda_norm_math
//   /tmp/test_cuda_norm_math
//
// Exits 0 when every check passes, 1 otherwise (each failure is printed).
#include <cfloat>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "cuda/chunk_table.hpp"
#include "cuda/norm_math.cuh"

namespace m = gradcore::cuda::math;
namespace d = gradcore::cuda::detail;
using DeviceTensor = gradcore::TensorView;
using gradcore::DType;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kDenormMin = std::numeric_limits<double>::denorm_min();
constexpr double kUlp = DBL_EPSILON;

int failures = 0;
int checks = 0;

void expect(bool ok, const char* what, int line) {
    ++checks;
    if (!ok) {
        ++failures;
        std::printf("FAIL (line %d): %s\n", line, what);
    }
}
#define EXPECT(cond) expect((cond), #cond, __LINE__)

// |got - want| <= tol * |want| (or below the smallest denormal, for results in the
// denormal range, which cannot be closer), with NaN == NaN and inf == inf.
void expect_close(double got, long double want, double tol, const char* what, int line) {
    ++checks;
    bool ok;
    if (std::isnan(static_cast<double>(want))) {
        ok = std::isnan(got);
    } else if (std::isinf(static_cast<double>(want)) || want > static_cast<long double>(DBL_MAX)) {
        ok = std::isinf(got) && got > 0;
    } else {
        const long double err = std::fabs(static_cast<long double>(got) - want);
        ok = err <= static_cast<long double>(tol) * std::fabs(want) || err <= static_cast<long double>(kDenormMin);
    }
    if (!ok) {
        ++failures;
        std::printf("FAIL (line %d): %s: got %.17g, want %.17Lg (rel err %.3Lg)\n", line, what, got, want,
                    want != 0 ? std::fabs(static_cast<long double>(got) - want) / std::fabs(want) : 0.0L);
    }
}
#define EXPECT_CLOSE(got, want, tol) expect_close((got), (want), (tol), #got, __LINE__)

// ---- references in long double (x86: 64-bit mantissa, 15-bit exponent, so squares of
// every double, denormals and DBL_MAX included, are exact-range) ----------------------

long double ref_l2(const std::vector<double>& x) {
    bool nan = false, inf = false;
    long double s = 0.0L;
    for (double v : x) {
        nan |= std::isnan(v);
        inf |= std::isinf(v);
        s += static_cast<long double>(v) * static_cast<long double>(v);
    }
    if (nan) return NAN;
    if (inf) return INFINITY;
    return std::sqrt(s);
}

long double ref_l1(const std::vector<double>& x) {
    bool nan = false, inf = false;
    long double s = 0.0L;
    for (double v : x) {
        nan |= std::isnan(v);
        inf |= std::isinf(v);
        s += std::fabs(static_cast<long double>(v));
    }
    if (nan) return NAN;
    if (inf) return INFINITY;
    return s;
}

// ---- the device's combination structure, run on the host ------------------------------

// merge of 32 lanes by the xor butterfly of warp_allreduce; lane 0's result.
template <class Acc, class Merge>
Acc butterfly(std::vector<Acc> lanes, Merge merge) {
    for (int mask = 16; mask >= 1; mask >>= 1) {
        std::vector<Acc> next(lanes);
        for (int l = 0; l < 32; ++l) next[l] = merge(lanes[l], lanes[l ^ mask]);
        lanes = next;
    }
    return lanes[0];
}

// One chunk as a 256-thread block reduces it (element path): thread t takes elements
// t, t + 256, ...; a butterfly per warp; warp 0 merges the 8 warp results.
template <class Add>
m::Blue3 chunk_partial(const double* x, int n, Add add) {
    std::vector<m::Blue3> thread(256, m::blue_zero());
    for (int i = 0; i < n; ++i) add(thread[i % 256], x[i]);
    const auto merge = [](const m::Blue3& a, const m::Blue3& b) { return m::merge(a, b); };
    std::vector<m::Blue3> warps(32, m::blue_zero());
    for (int w = 0; w < 8; ++w) {
        std::vector<m::Blue3> lanes(thread.begin() + 32 * w, thread.begin() + 32 * (w + 1));
        warps[w] = butterfly(lanes, merge);
    }
    std::vector<m::Blue3> w8(warps.begin(), warps.begin() + 8);
    for (int mask = 4; mask >= 1; mask >>= 1) {
        std::vector<m::Blue3> next(w8);
        for (int l = 0; l < 8; ++l) next[l] = merge(w8[l], w8[l ^ mask]);
        w8 = next;
    }
    return w8[0];
}

// Partials combined as finalize_kernel does: lane l folds l, l + 32, ..., then a butterfly.
m::Blue3 warp_combine(const std::vector<m::Blue3>& partials) {
    std::vector<m::Blue3> lanes(32, m::blue_zero());
    for (std::size_t i = 0; i < partials.size(); ++i) lanes[i % 32] = m::merge(lanes[i % 32], partials[i]);
    return butterfly(lanes, [](const m::Blue3& a, const m::Blue3& b) { return m::merge(a, b); });
}

// A whole list's L2 norm the device way, the chunks visited in the order a grid of
// `grid` blocks would (block b: chunks b, b + grid, ...): partials land by chunk index.
double device_like_l2(const std::vector<double>& x, int grid) {
    const int chunk = static_cast<int>(d::kChunkElements);
    const int nchunks = static_cast<int>((x.size() + chunk - 1) / chunk);
    std::vector<m::Blue3> partials(nchunks);
    for (int b = 0; b < grid; ++b) {
        for (int c = b; c < nchunks; c += grid) {
            const int n = static_cast<int>(x.size()) - c * chunk < chunk ? static_cast<int>(x.size()) - c * chunk : chunk;
            partials[c] = chunk_partial(x.data() + static_cast<std::size_t>(c) * chunk, n,
                                        [](m::Blue3& a, double v) { m::l2_add(a, v); });
        }
    }
    return m::l2_result(warp_combine(partials));
}

double l2_of(const std::vector<double>& x) {
    m::Blue3 a = m::blue_zero();
    for (double v : x) m::l2_add(a, v);
    return m::l2_result(a);
}

double l1_of(const std::vector<double>& x) {
    m::Blue3 a = m::blue_zero();
    for (double v : x) m::l1_add(a, v);
    return m::l1_result(a);
}

std::uint64_t bits(double v) {
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
}

// Doubles with exponents spread over the whole range (denormals included), random signs.
std::vector<double> wide_random(std::size_t n, std::uint64_t seed, int emin, int emax) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> e(emin, emax);
    std::uniform_real_distribution<double> mant(0.5, 1.0);
    std::vector<double> x(n);
    for (auto& v : x) v = std::ldexp(mant(rng), e(rng)) * ((rng() & 1) ? -1.0 : 1.0);
    return x;
}

void test_l2() {
    EXPECT(l2_of({}) == 0.0);
    EXPECT(l2_of({0.0, -0.0}) == 0.0);
    EXPECT(l2_of({3.0, 4.0}) == 5.0);
    EXPECT(l2_of({-3.0, 4.0}) == 5.0);

    const std::vector<std::vector<double>> cases = {
        {1e300, 1e300},                               // squares overflow a plain sum
        {1e300, -1e300, 1e300},
        {1e-300, 1e-300, 1e-300},                     // squares underflow a plain sum
        {kDenormMin},                                 // the smallest denormal
        {kDenormMin, kDenormMin, 3 * kDenormMin},
        {1e-320, 2.5e-310, 4e-315},                   // denormals
        {1e300, 1e-300, 1.0, kDenormMin, 1e200},       // every range at once
        {1e-160, 1e-158, 3e-154, 1e-170},             // small and middle sums combined
        {1.0, 1e-160},                                // middle with a negligible small part
        {DBL_MAX},
        {DBL_MAX / 2, DBL_MAX / 4},
        {0x1p486, 0x1p486},                           // exactly at tbig: middle
        {0x1.0000000000001p486, 1.0},                 // just above: big
        {0x1p-511, 0x1p-511},                         // exactly at tsml: middle
        {0x1.fffffffffffffp-512, 1e-300},             // just below: small
        {1e154, 1e154, 1e-154},
    };
    for (const auto& x : cases) EXPECT_CLOSE(l2_of(x), ref_l2(x), 4 * kUlp);

    // Overflow of the result itself: inf, as the true norm exceeds DBL_MAX.
    EXPECT(std::isinf(l2_of({DBL_MAX, DBL_MAX})));

    // 10^4 equal values in each accumulator (a sequential sum here: rounding grows with n).
    EXPECT_CLOSE(l2_of(std::vector<double>(10000, 1e-200)), 100.0L * 1e-200L, 1e-12);
    EXPECT_CLOSE(l2_of(std::vector<double>(10000, 1e200)), 100.0L * 1e200L, 1e-12);
    EXPECT_CLOSE(l2_of(std::vector<double>(10000, 4 * kDenormMin)), 400.0L * kDenormMin, 1e-12);

    // Many elements over the whole exponent range, and over ranges that stress each
    // accumulator on its own.
    const struct {
        int emin, emax;
    } ranges[] = {{-1074, 1023}, {-1074, -1000}, {-1074, -500}, {-600, -400}, {400, 1023}, {-30, 30}, {480, 490}};
    std::uint64_t seed = 1;
    for (const auto& r : ranges) {
        const auto x = wide_random(200000, seed++, r.emin, r.emax);
        EXPECT_CLOSE(l2_of(x), ref_l2(x), 1e-12);
    }

    // NaN anywhere gives NaN (whatever else is there); otherwise inf gives inf.
    EXPECT(std::isnan(l2_of({1.0, kNaN})));
    EXPECT(std::isnan(l2_of({kNaN, kInf})));
    EXPECT(std::isnan(l2_of({kInf, kNaN})));
    EXPECT(std::isnan(l2_of({1e300, kNaN, 1e-300})));
    EXPECT(std::isnan(l2_of({-kNaN})));
    EXPECT(l2_of({1.0, kInf}) == kInf);
    EXPECT(l2_of({-kInf, 1e-300}) == kInf);
    EXPECT(l2_of({kInf, -kInf}) == kInf);
    {
        m::Blue3 a = m::blue_zero(), b = m::blue_zero();
        m::l2_add(a, 1e-300);  // NaN found in a chunk with only small values elsewhere
        m::l2_add(b, kNaN);
        EXPECT(std::isnan(m::l2_result(m::merge(a, b))));
    }

    // float16/bfloat16/float32 values take the middle accumulator directly: the same
    // result as the classifying path for every float32 value (denormals, FLT_MAX).
    {
        const std::vector<double> f32 = {static_cast<double>(FLT_MAX), static_cast<double>(FLT_MIN),
                                         static_cast<double>(std::numeric_limits<float>::denorm_min()), 1e20, -1e-20,
                                         65504.0, 5.960464477539063e-08};
        m::Blue3 a = m::blue_zero(), b = m::blue_zero();
        for (double v : f32) {
            m::l2_add(a, v);
            m::l2_add_midrange(b, v);
        }
        EXPECT_CLOSE(m::l2_result(b), ref_l2(f32), 2 * kUlp);
        EXPECT_CLOSE(m::l2_result(a), ref_l2(f32), 2 * kUlp);
        std::vector<double> many(1 << 20, static_cast<double>(FLT_MAX));  // 2^20 * FLT_MAX^2: no overflow
        m::Blue3 c = m::blue_zero();
        for (double v : many) m::l2_add_midrange(c, v);
        EXPECT_CLOSE(m::l2_result(c), 1024.0L * FLT_MAX, 1e-12);
    }
}

void test_l1() {
    EXPECT(l1_of({}) == 0.0);
    EXPECT(l1_of({-1.5, 2.5}) == 4.0);
    EXPECT(l1_of({kDenormMin, kDenormMin, -kDenormMin}) == 3 * kDenormMin);
    EXPECT_CLOSE(l1_of({1e308, 5e307}), 1.5e308L, 2 * kUlp);   // past 2^960: big accumulator
    EXPECT(std::isinf(l1_of({1e308, 1e308})));                 // the true sum exceeds DBL_MAX
    EXPECT_CLOSE(l1_of({DBL_MAX, -1.0, 1e-300}), static_cast<long double>(DBL_MAX), kUlp);
    EXPECT_CLOSE(l1_of({0x1p960, 0x1.0000000000001p960, 1e-10}), ref_l1({0x1p960, 0x1.0000000000001p960, 1e-10}),
                 2 * kUlp);
    std::uint64_t seed = 100;
    for (int emax : {1023, 0, -1000}) {
        const auto x = wide_random(200000, seed++, -1074, emax);
        EXPECT_CLOSE(l1_of(x), ref_l1(x), 1e-12);
    }
    {
        const std::vector<double> big(1000, 1e306);  // sum 1e309 > DBL_MAX
        EXPECT(std::isinf(l1_of(big)));
        const std::vector<double> fits(100, 1e306);  // 1e308: fits
        EXPECT_CLOSE(l1_of(fits), 1e308L, 1e-14);
    }
    EXPECT(std::isnan(l1_of({1.0, kNaN, kInf})));
    EXPECT(std::isnan(l1_of({1e308, kNaN})));
    EXPECT(l1_of({-kInf, 2.0}) == kInf);
    EXPECT(l1_of({kInf, 1e308}) == kInf);
}

void test_max_lp() {
    EXPECT(std::isnan(m::nan_max(kNaN, 1.0)));
    EXPECT(std::isnan(m::nan_max(1.0, kNaN)));
    EXPECT(std::isnan(m::nan_max(kInf, kNaN)));
    EXPECT(m::nan_max(2.0, 1.0) == 2.0);
    EXPECT(m::nan_max(1.0, 2.0) == 2.0);
    EXPECT(m::nan_max(0.0, kInf) == kInf);

    EXPECT(m::lp_settled(0.0) && m::lp_settled(kNaN) && m::lp_settled(kInf) && !m::lp_settled(1e-300));
    EXPECT(m::lp_result(0.0, 0.0, 3.0) == 0.0);
    EXPECT(std::isnan(m::lp_result(kNaN, 0.0, 3.0)));
    EXPECT(m::lp_result(kInf, 0.0, 3.0) == kInf);

    // p = 3 on values whose cubes overflow / underflow a plain sum; p = 0.5.
    const auto lp = [](const std::vector<double>& x, double p) {
        double mx = 0.0;
        for (double v : x) mx = m::nan_max(mx, std::fabs(v));
        double sum = 0.0;
        if (!m::lp_settled(mx)) {
            for (double v : x) sum += m::lp_term(v, mx, p);
        }
        return m::lp_result(mx, sum, p);
    };
    const auto ref_lp = [](const std::vector<double>& x, long double p) {
        long double mx = 0.0L, s = 0.0L;
        for (double v : x) mx = std::fmax(mx, std::fabs(static_cast<long double>(v)));
        for (double v : x) s += std::pow(std::fabs(static_cast<long double>(v)) / mx, p);
        return mx * std::pow(s, 1.0L / p);
    };
    EXPECT_CLOSE(lp({1e300, -1e300, 1e-300}, 3.0), ref_lp({1e300, -1e300, 1e-300}, 3.0L), 8 * kUlp);
    EXPECT_CLOSE(lp({1e-300, 2e-300, kDenormMin}, 3.0), ref_lp({1e-300, 2e-300, kDenormMin}, 3.0L), 8 * kUlp);
    EXPECT_CLOSE(lp({1.0, 4.0}, 0.5), 9.0L, 8 * kUlp);
    EXPECT_CLOSE(lp({DBL_MAX, DBL_MAX / 2}, 7.5), ref_lp({DBL_MAX, DBL_MAX / 2}, 7.5L), 16 * kUlp);
    EXPECT(lp({0.0, -0.0}, 3.0) == 0.0);
    EXPECT(std::isnan(lp({1.0, kNaN, kInf}, 3.0)));
    EXPECT(lp({1.0, -kInf}, 3.0) == kInf);
}

void test_stats() {
    m::Stats a = m::stats_zero(), b = m::stats_zero();
    a.max_abs = 3.0, a.nonfinite = 2;
    b.max_abs = kNaN, b.nonfinite = 5;
    const m::Stats c = m::merge(a, b), c2 = m::merge(b, a);
    EXPECT(std::isnan(c.max_abs) && std::isnan(c2.max_abs));
    EXPECT(c.nonfinite == 7 && c2.nonfinite == 7);
    b.max_abs = kInf;
    EXPECT(m::merge(a, b).max_abs == kInf);
}

void test_factors() {
    // clip_factor: runtime/norms.cpp's, case by case.
    EXPECT(m::clip_factor(1.0, 0.0, 1e-6) == 1.0);   // all zero: never scaled
    EXPECT(m::clip_factor(0.0, 0.0, 0.0) == 1.0);
    EXPECT(std::isnan(m::clip_factor(1.0, kNaN, 1e-6)));
    EXPECT(m::clip_factor(1.0, kInf, 1e-6) == 0.0);  // torch: grads * 0
    EXPECT(std::isnan(m::clip_factor(kInf, kInf, 0.0)));
    EXPECT(m::clip_factor(kInf, 5.0, 0.0) == 1.0);
    EXPECT(m::clip_factor(1.0, 10.0, 0.0) == 0.1);
    EXPECT(m::clip_factor(1.0, 10.0, 1e-6) == 1.0 / (10.0 + 1e-6));
    EXPECT(m::clip_factor(10.0, 1.0, 1e-6) == 1.0);
    EXPECT(m::clip_factor(1.0, 1.0, 0.0) == 1.0);
    EXPECT(m::clip_factor(0.0, 2.0, 0.0) == 0.0);

    // agc_factor: runtime/adaptive_clip.cpp's rule.
    EXPECT(m::agc_factor(1.0, kNaN, 0.01, 1e-3) == 1.0);   // NaN param: left alone
    EXPECT(m::agc_factor(kNaN, 1.0, 0.01, 1e-3) == 1.0);   // NaN grad: left alone
    EXPECT(m::agc_factor(1.0, 10.0, 0.01, 1e-3) == 0.1);   // limit 0.1 < 1
    EXPECT(m::agc_factor(0.05, 10.0, 0.01, 1e-3) == 1.0);  // within the limit
    EXPECT(m::agc_factor(1.0, 0.0, 0.5, 1e-3) == 0.5 * 1e-3);  // eps floor on the param norm
    EXPECT(m::agc_factor(kInf, 1.0, 0.5, 1e-3) == 0.0);    // inf grad: scaled by 0, as on the CPU
    EXPECT(m::agc_factor(1.0, kInf, 0.0, 1e-3) == 1.0);    // 0 * inf limit is NaN: left alone
    EXPECT(m::agc_factor(1.0, kInf, 0.5, 1e-3) == 1.0);
    EXPECT(m::agc_factor(1.0, 1.0, 0.0, 1e-3) == 0.0);     // clipping 0 zeroes every non-zero unit
}

void test_determinism() {
    // 5 chunks and a tail, values over the whole range: the same bits whatever the grid,
    // and close to the reference.
    const auto x = wide_random(5 * 32768 + 1234, 77, -1074, 1023);
    const double r1 = device_like_l2(x, 1);
    EXPECT_CLOSE(r1, ref_l2(x), 1e-12);
    for (int grid : {2, 3, 6, 1000}) EXPECT(bits(device_like_l2(x, grid)) == bits(r1));
    // Merges commute bit for bit (the butterfly gives every lane the same value).
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(0.0, 1e10);
    for (int i = 0; i < 1000; ++i) {
        const m::Blue3 a{u(rng), u(rng), u(rng)}, b{u(rng), u(rng), u(rng)};
        const m::Blue3 ab = m::merge(a, b), ba = m::merge(b, a);
        EXPECT(bits(ab.small) == bits(ba.small) && bits(ab.med) == bits(ba.med) && bits(ab.big) == bits(ba.big));
    }
    // The fixed-order combination agrees with a plain sequential one to rounding.
    std::vector<double> y = wide_random(3 * 32768, 8, -20, 20);
    EXPECT_CLOSE(device_like_l2(y, 4), static_cast<long double>(l2_of(y)), 1e-13);
}

void test_chunk_table() {
    std::vector<unsigned char> memory(1 << 22);
    const std::int64_t sizes[] = {0, 1, 32768, 32769, 100000, 0, 65536, 7};
    const DType dtypes[] = {DType::float32, DType::float16, DType::float64, DType::bfloat16,
                            DType::float32, DType::float64, DType::float16, DType::float64};
    std::vector<DeviceTensor> arrays;
    std::size_t offset = 0;
    for (int i = 0; i < 8; ++i) {
        arrays.push_back({memory.data() + offset, sizes[i], dtypes[i]});
        offset += static_cast<std::size_t>(sizes[i]) * d::element_size(dtypes[i]);
    }
    const d::ChunkTable t = d::make_chunk_table(arrays.data(), arrays.size());
    EXPECT(t.first_chunk.size() == arrays.size() + 1);
    EXPECT(t.chunks.size() == 0 + 1 + 1 + 2 + 4 + 0 + 2 + 1);
    for (std::size_t a = 0; a < arrays.size(); ++a) {
        std::int64_t covered = 0;
        for (std::uint32_t c = t.first_chunk[a]; c < t.first_chunk[a + 1]; ++c) {
            const d::ChunkDesc& ch = t.chunks[c];
            EXPECT(ch.tensor == a);
            EXPECT(ch.dtype == static_cast<std::uint8_t>(arrays[a].dtype));
            EXPECT(ch.len >= 1 && ch.len <= d::kChunkElements);
            EXPECT(static_cast<const unsigned char*>(ch.ptr) ==
                   static_cast<const unsigned char*>(arrays[a].data) + covered * d::element_size(arrays[a].dtype));
            if (c + 1 < t.first_chunk[a + 1]) EXPECT(ch.len == d::kChunkElements);  // only the last is short
            covered += ch.len;
        }
        EXPECT(covered == arrays[a].numel);
    }
    EXPECT(t.first_chunk.back() == t.chunks.size());
    const d::ChunkTable empty = d::make_chunk_table(nullptr, 0);
    EXPECT(empty.chunks.empty() && empty.first_chunk.size() == 1 && empty.first_chunk[0] == 0);
}

// Every (grad, param) layout: tiles cover each element exactly once, in its own unit;
// split entries' partial slots are distinct and fill their range; fused units fit one tile.
void test_unit_tiles() {
    const gradcore::UnitLayout layouts[] = {
        {1, 300, 4096}, {1, 7, 20000}, {1000, 70, 1}, {3, 5, 7},     {2, 3, 40},   {500, 3, 17}, {1, 1, 1},
        {1, 1, 100000}, {9000, 2, 1},  {1, 64, 32},   {40, 9, 31},   {300, 1, 33}, {2, 2, 8192}, {1, 5, 8193},
    };
    constexpr std::size_t n = sizeof(layouts) / sizeof(layouts[0]);
    std::vector<DeviceTensor> grads, params;
    for (const auto& l : layouts) {
        const std::int64_t numel = l.outer * l.units * l.inner;
        grads.push_back({reinterpret_cast<void*>(0x1000), numel, DType::float32});
        params.push_back({reinterpret_cast<void*>(0x2000), numel, DType::float16});
    }
    const d::UnitTables tabs = d::make_unit_tables(grads.data(), params.data(), layouts, n);
    EXPECT(tabs.fused.size() + tabs.split.size() == n);
    std::vector<int> partial_hits(static_cast<std::size_t>(tabs.split_partials), 0);
    std::int64_t fused_tiles = 0, split_tiles = 0, split_units = 0;
    for (int which = 0; which < 2; ++which) {
        const std::vector<d::UnitEntry>& entries = which == 0 ? tabs.fused : tabs.split;
        for (const d::UnitEntry& e : entries) {
            const std::int64_t numel = e.outer * e.units * e.inner;
            EXPECT((e.partials_per_unit() == 1) == (which == 0));
            EXPECT(e.first_tile == (which == 0 ? fused_tiles : split_tiles));
            if (which == 1) EXPECT(e.first_unit == split_units);
            std::vector<int> hits(static_cast<std::size_t>(numel), 0);
            bool units_ok = true, sizes_ok = true;
            for (std::int64_t i = 0; i < e.tiles(); ++i) {
                const d::Tile t = d::decode_tile(e, i);
                if (t.width < 1 || (t.rows_mode && t.width > 32) || t.rows < 1 ||
                    t.rows * t.width > d::kTileElements) {
                    sizes_ok = false;
                }
                for (std::int64_t r = 0; r < t.rows; ++r) {
                    for (int col = 0; col < t.width; ++col) {  // every lane's columns
                        const std::int64_t idx = d::tile_element(t, r, col);
                        if (idx < 0 || idx >= numel) {
                            sizes_ok = false;
                            continue;
                        }
                        ++hits[static_cast<std::size_t>(idx)];
                        if ((idx / e.inner) % e.units != d::tile_unit(t, col)) units_ok = false;
                    }
                }
                if (which == 1) {  // the reduce kernel's partial slots: first lane of each unit
                    for (int lane = 0; lane < 32 && lane < t.width; lane += t.seg) {
                        const std::int64_t at = d::partial_index(e, t, d::tile_unit(t, lane));
                        if (at >= 0 && at < tabs.split_partials) ++partial_hits[static_cast<std::size_t>(at)];
                    }
                }
            }
            bool once = true;
            for (int h : hits) once &= h == 1;
            EXPECT(once);
            EXPECT(units_ok);
            EXPECT(sizes_ok);
            (which == 0 ? fused_tiles : split_tiles) += e.tiles();
            if (which == 1) split_units += e.units;
        }
    }
    bool partials_once = true;
    for (int h : partial_hits) partials_once &= h == 1;
    EXPECT(partials_once);
    EXPECT(fused_tiles == tabs.fused_tiles && split_tiles == tabs.split_tiles && split_units == tabs.split_units);
    // The common Linear case is fused: rows of 4096 inputs.
    EXPECT(d::make_unit_entry(grads[0], params[0], layouts[0]).partials_per_unit() == 1);
    // Empty pairs are left out.
    const DeviceTensor none{nullptr, 0, DType::float32};
    const gradcore::UnitLayout zero{1, 0, 5};
    const d::UnitTables e = d::make_unit_tables(&none, &none, &zero, 1);
    EXPECT(e.fused.empty() && e.split.empty());
}

}  // namespace

int main() {
    test_l2();
    test_l1();
    test_max_lp();
    test_stats();
    test_factors();
    test_determinism();
    test_chunk_table();
    test_unit_tiles();
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
