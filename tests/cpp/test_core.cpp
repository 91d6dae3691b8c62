// The C++ tests of libgradcore alone, independent of Python: every public
// kernel on every ISA target this CPU supports (gradcore::isa_available()), with 1 and 2
// threads, for float32 and float64 (and float16/bfloat16 where the API takes them), against
// plain references written here in long double. The 16-bit in-place results are checked
// bit for bit against a rounding written here (round_to_narrow), not the kernels' own.
//
// Self-contained on purpose: no test framework. CHECK counts every check, prints
// file:line, the area, the configuration (target/threads) and the case of each failure,
// and main returns nonzero when anything failed, after a one-line summary.
//
// Calls that must throw std::invalid_argument run first in a forked child (POSIX), so a
// crash there is reported as a failed check instead of ending the program, and then
// again in this process (so that the sanitizers see their error paths too).
//
// Areas: runtime, norms, clip, adaptive_clip, complex, gemm, dense, vector_math, rnn, optim,
// c_api, invalid_args. Runs in a few seconds in Release; the references are computed once
// per case, outside the loop over configurations.

#include "gradcore/c_api.h"
#include "gradcore/gradcore.hpp"
#include "runtime/test_hooks.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cfenv>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#define GCT_HAVE_FORK 1
#else
#define GCT_HAVE_FORK 0
#endif

#if defined(__GNUC__)
#define GCT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define GCT_PRINTF(a, b)
#endif

namespace gc = gradcore;

namespace {

using i64 = std::int64_t;
using ld = long double;

long long ll(i64 v) { return static_cast<long long>(v); }

// ================================================================== the harness

struct Area {
    std::string name;
    long checks = 0;
    long failures = 0;
};
std::vector<Area> g_areas;
std::string g_config;  // "avx2/2t" inside for_each_config
std::string g_case;    // the case being checked, set by the tests
long g_checks = 0, g_failures = 0;
constexpr long kMaxReported = 200;

std::string strf(const char* fmt, ...) GCT_PRINTF(1, 2);
std::string strf(const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

struct Where {
    const char* file;
    int line;
};
#define HERE Where{__FILE__, __LINE__}

bool tally(bool ok) {
    ++g_checks;
    ++g_areas.back().checks;
    if (!ok) {
        ++g_failures;
        ++g_areas.back().failures;
    }
    return ok;
}

void report(Where w, const char* what, const std::string& detail) {
    if (g_failures > kMaxReported) return;
    std::fprintf(stderr, "%s:%d: FAILED: %s\n    area=%s config=%s case=%s\n    %s\n", w.file, w.line, what,
                 g_areas.back().name.c_str(), g_config.empty() ? "-" : g_config.c_str(),
                 g_case.empty() ? "-" : g_case.c_str(), detail.c_str());
    if (g_failures == kMaxReported) std::fprintf(stderr, "(further failures are counted, not printed)\n");
}

template <class Msg>
bool check_at(bool ok, Where w, const char* expr, Msg&& msg) {
    if (tally(ok)) return true;
    report(w, expr, msg());
    return false;
}
// CHECK(condition, printf-style message...): the message is formatted only on failure.
#define CHECK(cond, ...) check_at(static_cast<bool>(cond), HERE, #cond, [&] { return strf(__VA_ARGS__); })

// One check over n elements: ok(i) for all i; on failure, how many and the first.
template <class Ok, class Describe>
bool check_each(Where w, const char* what, i64 n, Ok&& ok, Describe&& describe) {
    i64 bad = 0, first = -1;
    for (i64 i = 0; i < n; ++i) {
        if (!ok(i)) {
            if (first < 0) first = i;
            ++bad;
        }
    }
    if (tally(bad == 0)) return true;
    report(w, what, strf("%lld of %lld elements wrong; first at [%lld]: ", ll(bad), ll(n), ll(first)) + describe(first));
    return false;
}

// ------------------------------------------------------------------ configurations

struct Config {
    std::string isa;
    int threads;
};
std::vector<Config> g_configs;  // every available target x {1, 2} threads

void apply(const Config& c) {
    gc::set_isa(c.isa);
    gc::set_num_threads(c.threads);
    g_config = c.isa + "/" + std::to_string(c.threads) + "t";
}

template <class F>
void for_each_config(F&& f) {
    for (const Config& c : g_configs) {
        apply(c);
        f(c);
    }
    g_config.clear();
}

// results[i] belongs to g_configs[i]: for every target, the runs with 1 and 2 threads
// must agree bit for bit.
void check_thread_independent(Where w, const std::vector<std::vector<double>>& results, const char* what) {
    for (std::size_t i = 0; i < g_configs.size() && i < results.size(); ++i) {
        for (std::size_t j = i + 1; j < g_configs.size() && j < results.size(); ++j) {
            if (g_configs[i].isa != g_configs[j].isa) continue;
            const bool same = results[i].size() == results[j].size() &&
                              (results[i].empty() ||
                               std::memcmp(results[i].data(), results[j].data(), results[i].size() * sizeof(double)) == 0);
            std::size_t k = 0;
            if (!same && results[i].size() == results[j].size()) {
                while (k < results[i].size() &&
                       std::memcmp(&results[i][k], &results[j][k], sizeof(double)) == 0) ++k;
            }
            check_at(same, w, what, [&] {
                return strf("%s: %d vs %d threads differ at value %zu: %.17g vs %.17g", g_configs[i].isa.c_str(),
                            g_configs[i].threads, g_configs[j].threads, k,
                            k < results[i].size() ? results[i][k] : 0.0,
                            k < results[j].size() ? results[j][k] : 0.0);
            });
        }
    }
}

// ------------------------------------------------------------------ expected exceptions

enum : int { kThrewInvalid = 40, kThrewOther = 41, kNoThrow = 42 };

template <class F>
int outcome_of(F& f, bool print) {
    try {
        f();
    } catch (const std::invalid_argument&) {
        return kThrewInvalid;
    } catch (const std::exception& e) {
        if (print) std::fprintf(stderr, "    (child: threw %s)\n", e.what());
        return kThrewOther;
    } catch (...) {
        return kThrewOther;
    }
    return kNoThrow;
}

const char* outcome_name(int o) {
    switch (o) {
        case kNoThrow: return "returned without throwing";
        case kThrewOther: return "threw something other than std::invalid_argument";
        default: return "threw std::invalid_argument";
    }
}

// f() must throw std::invalid_argument and must not crash.
template <class F>
bool expect_invalid(Where w, const char* what, F f) {
#if GCT_HAVE_FORK
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(60);
        std::_Exit(outcome_of(f, true));
    }
    if (pid > 0) {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (WIFSIGNALED(status)) {
            const int sig = WTERMSIG(status);
            return check_at(false, w, what, [&] {
                return strf("crashed (in a child process) with signal %d (%s)", sig, strsignal(sig));
            });
        }
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (code != kThrewInvalid) {
            return check_at(false, w, what, [&] {
                if (code == kNoThrow || code == kThrewOther) return strf("%s (in a child process)", outcome_name(code));
                return strf("the child process exited with status %d (a sanitizer report above?)", code);
            });
        }
    }
#endif
    const int o = outcome_of(f, false);
    return check_at(o == kThrewInvalid, w, what, [&] { return strf("%s", outcome_name(o)); });
}
#define EXPECT_INVALID(what, ...) expect_invalid(HERE, what, [&] { __VA_ARGS__; })

// ================================================================== numbers

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();
const ld kNaNL = std::numeric_limits<ld>::quiet_NaN();

template <class T>
ld eps_of() {
    return static_cast<ld>(std::numeric_limits<T>::epsilon());
}
template <class T>
ld denorm_of() {
    return static_cast<ld>(std::numeric_limits<T>::denorm_min());
}
template <class T>
ld max_of() {
    return static_cast<ld>(std::numeric_limits<T>::max());
}
template <class T>
ld tiny_of() {
    return static_cast<ld>(std::numeric_limits<T>::min());
}

// The spacing of T's numbers at |v|, never below T's smallest subnormal.
template <class T>
ld ulp_of(ld v) {
    v = std::fabs(v);
    if (!(v > 0) || std::isinf(v)) return denorm_of<T>();
    int e = 0;
    std::frexp(v, &e);  // v = m 2^e, m in [0.5, 1)
    const ld u = std::ldexp(1.0L, e - std::numeric_limits<T>::digits);
    return u > denorm_of<T>() ? u : denorm_of<T>();
}

// got == ref within tol; NaN only matches NaN, an infinity only itself.
bool agrees(ld got, ld ref, ld tol) {
    if (std::isnan(ref) || std::isnan(got)) return std::isnan(ref) && std::isnan(got);
    if (std::isinf(ref) || std::isinf(got)) return got == ref;
    return std::fabs(got - ref) <= tol;
}

// A T result against an exact value: within ulps * ulp + rel * |ref|; values beyond T's
// range must have overflowed to the infinity of their sign (or be the largest finite T
// just past it).
template <class T>
bool agrees_in(T got, ld ref, ld ulps, ld rel = 0) {
    if (std::isnan(ref)) return std::isnan(got);
    const ld big = max_of<T>();
    if (std::fabs(ref) > big) {
        if (std::isinf(got)) return (got > 0) == (ref > 0);
        return std::fabs(ref) < big * (1 + eps_of<T>()) && std::fabs(static_cast<ld>(got)) == big &&
               (got > 0) == (ref > 0);
    }
    if (std::isnan(got) || std::isinf(got)) return false;
    return std::fabs(static_cast<ld>(got) - ref) <= ulps * ulp_of<T>(ref) + rel * std::fabs(ref);
}

template <class T>
T nan_of() {
    return std::numeric_limits<T>::quiet_NaN();
}

// ------------------------------------------------------------------ random numbers

struct Rng {
    std::uint64_t s;
    explicit Rng(std::uint64_t seed) : s(seed) {}
    std::uint64_t next() {  // splitmix64
        s += 0x9E3779B97F4A7C15ull;
        std::uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }  // [0, 1)
    double uniform(double a, double b) { return a + (b - a) * uniform(); }
    i64 below(i64 n) { return static_cast<i64>(next() % static_cast<std::uint64_t>(n)); }
    bool coin() { return (next() >> 63) != 0; }
};

template <class T>
void fill_uniform(std::vector<T>& v, Rng& r, double lo, double hi) {
    for (T& x : v) x = static_cast<T>(r.uniform(lo, hi));
}

// ------------------------------------------------------------------ float16 and bfloat16

// IEEE binary16 bits -> its exact value.
double half_value(std::uint16_t h) {
    const int e = (h >> 10) & 31;
    const int m = h & 1023;
    double v;
    if (e == 31) {
        v = m != 0 ? kNaN : kInf;
    } else if (e == 0) {
        v = std::ldexp(static_cast<double>(m), -24);
    } else {
        v = std::ldexp(static_cast<double>(1024 + m), e - 25);
    }
    return (h & 0x8000) != 0 ? -v : v;
}

// bfloat16 bits -> its exact value: they are the high half of a float32's bits.
double bf16_value(std::uint16_t b) {
    const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

constexpr std::uint16_t kHalfNaN = 0x7E00, kHalfInf = 0x7C00, kHalfNegInf = 0xFC00;
constexpr std::uint16_t kBf16NaN = 0x7FC0, kBf16Inf = 0x7F80, kBf16NegInf = 0xFF80;

bool is_narrow(gc::DType t) { return t == gc::DType::float16 || t == gc::DType::bfloat16; }

double narrow_value(gc::DType t, std::uint16_t bits) {
    return t == gc::DType::float16 ? half_value(bits) : bf16_value(bits);
}
bool narrow_is_nan(gc::DType t, std::uint16_t bits) { return std::isnan(narrow_value(t, bits)); }

// What the reference rounding needs to know of a 16-bit format.
struct NarrowFormat {
    int digits;       // significand bits, the implicit one included
    int min_exp;      // the smallest normal is 2^min_exp; subnormals are spaced as it is
    int bias;         // of the exponent field
    std::uint16_t inf_bits, nan_bits;
    ld max_finite;
    ld overflow_at;   // half-way from max_finite to the next power of two: rounds to inf
};

const NarrowFormat& narrow_format(gc::DType t) {
    static const NarrowFormat f16{11, -14, 15, kHalfInf, kHalfNaN, 65504.0L, 65520.0L};
    static const NarrowFormat bf16{8, -126, 127, kBf16Inf, kBf16NaN, static_cast<ld>(bf16_value(0x7F7F)),
                                   (static_cast<ld>(bf16_value(0x7F7F)) + std::ldexp(1.0L, 128)) / 2};
    return t == gc::DType::float16 ? f16 : bf16;
}

// The exponent of the quantum's binade at |v|: floor(log2 |v|), but never below the
// smallest normal's (subnormals share its spacing). 0 counts as subnormal.
// (In double: the test's own values are doubles, and double's frexp is much faster.)
int narrow_lead_exp(const NarrowFormat& f, double a) {
    if (!(a > 0)) return f.min_exp;
    int e = 0;
    std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
    return std::max(e - 1, f.min_exp);
}

// The spacing of a 16-bit format's numbers at |v| (finite v).
ld narrow_ulp(gc::DType t, ld v) {
    const NarrowFormat& f = narrow_format(t);
    return std::ldexp(1.0, narrow_lead_exp(f, static_cast<double>(std::fabs(v))) - (f.digits - 1));
}

// A double rounded once, to nearest-even, to float16/bfloat16 bits: the reference for
// every 16-bit in-place result. Written apart from the kernels' narrow_float.hpp (bit
// manipulation through a float32 rounded to odd): the value is divided by the format's
// quantum at its magnitude, std::nearbyint rounds that (FE_TONEAREST: ties to even),
// and the bits are formed from the integer significand. Every other step is exact in
// double (scaling by powers of two well inside its range, integers below 2^12). Overflow (from the half-way
// point above the largest finite value, which is odd, so the tie goes up) gives inf;
// subnormals are kept; a NaN gives the quiet NaN of its sign.
std::uint16_t round_to_narrow(gc::DType t, double v) {
    const NarrowFormat& f = narrow_format(t);
    const auto sign = static_cast<std::uint16_t>(std::signbit(v) ? 0x8000u : 0u);
    if (std::isnan(v)) return static_cast<std::uint16_t>(sign | f.nan_bits);
    const double a = std::fabs(v);
    if (a >= f.overflow_at) return static_cast<std::uint16_t>(sign | f.inf_bits);
    const int lead = narrow_lead_exp(f, a);
    const double q = std::nearbyint(std::ldexp(a, (f.digits - 1) - lead));  // in [0, 2^digits]
    const int frac_bits = f.digits - 1;
    const double implicit = std::ldexp(1.0, frac_bits);
    std::uint32_t exp_field = 0, frac = 0;
    if (q < implicit) {  // a subnormal (or zero): lead is min_exp, the field 0
        frac = static_cast<std::uint32_t>(q);
    } else if (q == 2 * implicit) {  // rounded up into the next binade
        exp_field = static_cast<std::uint32_t>(lead + 1 + f.bias);
    } else {
        exp_field = static_cast<std::uint32_t>(lead + f.bias);
        frac = static_cast<std::uint32_t>(q - implicit);
    }
    return static_cast<std::uint16_t>(sign | (exp_field << frac_bits) | frac);
}

// Bit for bit, except that any NaN matches any NaN: the payload and sign of a NaN
// result are not part of the semantics (NaN stays NaN).
bool same_narrow(gc::DType t, std::uint16_t got, std::uint16_t want) {
    if (narrow_is_nan(t, want)) return narrow_is_nan(t, got);
    return got == want;
}

// ------------------------------------------------------------------ arrays of any dtype

ld eps_of_dtype(gc::DType t) {
    switch (t) {
        case gc::DType::float16: return 0x1p-10L;
        case gc::DType::bfloat16: return 0x1p-7L;
        case gc::DType::float32: return eps_of<float>();
        default: break;  // float64
    }
    return eps_of<double>();
}

ld denorm_of_dtype(gc::DType t) {
    switch (t) {
        case gc::DType::float16: return 0x1p-24L;
        case gc::DType::bfloat16: return 0x1p-133L;
        case gc::DType::float32: return denorm_of<float>();
        default: break;  // float64
    }
    return denorm_of<double>();
}

struct Array {
    gc::DType dtype = gc::DType::float32;
    i64 n = 0;
    std::vector<std::uint16_t> h;  // float16 and bfloat16: the bits
    std::vector<float> f;
    std::vector<double> d;

    Array() = default;
    Array(gc::DType t, i64 size) : dtype(t), n(size) {
        const auto k = static_cast<std::size_t>(size);
        if (is_narrow(t)) {
            h.assign(k, 0);
        } else if (t == gc::DType::float32) {
            f.assign(k, 0.0f);
        } else {
            d.assign(k, 0.0);
        }
    }
    void* data() {
        if (is_narrow(dtype)) return h.data();
        if (dtype == gc::DType::float32) return f.data();
        return d.data();
    }
    const void* data() const { return const_cast<Array*>(this)->data(); }
    std::size_t bytes() const {
        return static_cast<std::size_t>(n) * (is_narrow(dtype) ? 2 : dtype == gc::DType::float32 ? 4 : 8);
    }
    ld get(i64 i) const {
        const auto k = static_cast<std::size_t>(i);
        if (is_narrow(dtype)) return narrow_value(dtype, h[k]);
        if (dtype == gc::DType::float32) return f[k];
        return d[k];
    }
    void set(i64 i, double v) {  // rounded to the dtype (16-bit: by the reference rounding)
        const auto k = static_cast<std::size_t>(i);
        if (is_narrow(dtype)) {
            h[k] = round_to_narrow(dtype, v);
        } else if (dtype == gc::DType::float32) {
            f[k] = static_cast<float>(v);
        } else {
            d[k] = v;
        }
    }
    gc::TensorView view() { return {data(), n, dtype}; }
    bool same_bits(const Array& o) const {
        return dtype == o.dtype && n == o.n && (n == 0 || std::memcmp(data(), o.data(), bytes()) == 0);
    }
};

using List = std::vector<Array>;

std::vector<gc::TensorView> views_of(List& l) {
    std::vector<gc::TensorView> v;
    v.reserve(l.size());
    for (Array& a : l) v.push_back(a.view());
    return v;
}
i64 total_numel(const List& l) {
    i64 n = 0;
    for (const Array& a : l) n += a.n;
    return n;
}
bool same_bits(const List& a, const List& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (!a[i].same_bits(b[i])) return false;
    }
    return true;
}

// agrees_in for a 16-bit element (given as bits), with that format's range and spacing.
bool agrees_in_narrow(gc::DType t, std::uint16_t bits, ld ref, ld ulps, ld rel) {
    const ld got = narrow_value(t, bits);
    if (std::isnan(ref)) return std::isnan(got);
    const NarrowFormat& f = narrow_format(t);
    if (std::fabs(ref) > f.max_finite) {
        if (std::isinf(got)) return (got > 0) == (ref > 0);
        return std::fabs(ref) < f.max_finite * (1 + eps_of_dtype(t)) && std::fabs(got) == f.max_finite &&
               (got > 0) == (ref > 0);
    }
    if (std::isnan(got) || std::isinf(got)) return false;
    return std::fabs(got - ref) <= ulps * narrow_ulp(t, ref) + rel * std::fabs(ref);
}

// Does element i of a match ref within ulps (+ rel * |ref|)?
bool elem_agrees(const Array& a, i64 i, ld ref, ld ulps, ld rel) {
    const auto k = static_cast<std::size_t>(i);
    if (is_narrow(a.dtype)) return agrees_in_narrow(a.dtype, a.h[k], ref, ulps, rel);
    if (a.dtype == gc::DType::float32) return agrees_in<float>(a.f[k], ref, ulps, rel);
    return agrees_in<double>(a.d[k], ref, ulps, rel);
}

// Every element of every array of `got` against expected(array, index).
template <class Expected>
bool check_list(Where w, const char* what, const List& got, Expected&& expected, ld ulps, ld rel = 0) {
    i64 bad = 0;
    std::size_t first_a = 0;
    i64 first_i = -1;
    for (std::size_t a = 0; a < got.size(); ++a) {
        for (i64 i = 0; i < got[a].n; ++i) {
            if (!elem_agrees(got[a], i, expected(a, i), ulps, rel)) {
                if (first_i < 0) first_a = a, first_i = i;
                ++bad;
            }
        }
    }
    return check_at(bad == 0, w, what, [&] {
        return strf("%lld elements wrong; first: array %zu (%s, n=%lld) [%lld]: got %.17Lg, expected %.17Lg", ll(bad),
                    first_a, gc::dtype_name(got[first_a].dtype), ll(got[first_a].n), ll(first_i),
                    got[first_a].get(first_i), expected(first_a, first_i));
    });
}

// Element i of a 16-bit array as the double the kernels widen it to (exactly).
double narrow_in(const Array& a, i64 i) { return narrow_value(a.dtype, a.h[static_cast<std::size_t>(i)]); }

// The expected bits of every 16-bit array of a list (empty for the other dtypes):
// computed once per case, outside the loop over configurations.
using NarrowBits = std::vector<std::vector<std::uint16_t>>;

template <class Want>
NarrowBits narrow_bits_of(const List& l, Want&& want) {
    NarrowBits out(l.size());
    for (std::size_t a = 0; a < l.size(); ++a) {
        if (!is_narrow(l[a].dtype)) continue;
        out[a].resize(static_cast<std::size_t>(l[a].n));
        for (i64 i = 0; i < l[a].n; ++i) out[a][static_cast<std::size_t>(i)] = want(a, i);
    }
    return out;
}

// Every 16-bit array of `got` bit for bit (same_narrow) against `want`; `orig` (the
// arrays before the call) names the input of the first wrong element. Arrays of the
// other dtypes are skipped.
bool check_narrow_bits(Where w, const char* what, const List& got, const List& orig, const NarrowBits& want) {
    i64 bad = 0, first_i = -1;
    std::size_t first_a = 0;
    for (std::size_t a = 0; a < got.size(); ++a) {
        if (!is_narrow(got[a].dtype)) continue;
        for (i64 i = 0; i < got[a].n; ++i) {
            const auto k = static_cast<std::size_t>(i);
            if (!same_narrow(got[a].dtype, got[a].h[k], want[a][k])) {
                if (first_i < 0) first_a = a, first_i = i;
                ++bad;
            }
        }
    }
    return check_at(bad == 0, w, what, [&] {
        const Array& g = got[first_a];
        const auto k = static_cast<std::size_t>(first_i);
        const std::uint16_t x = orig[first_a].h[k], y = g.h[k], e = want[first_a][k];
        return strf("%lld elements wrong; first: array %zu (%s, n=%lld) [%lld]: input 0x%04x (%.17g), got 0x%04x "
                    "(%.17g), expected 0x%04x (%.17g)",
                    ll(bad), first_a, gc::dtype_name(g.dtype), ll(g.n), ll(first_i), x, narrow_value(g.dtype, x), y,
                    narrow_value(g.dtype, y), e, narrow_value(g.dtype, e));
    });
}

// The bits of x * factor for a 16-bit element: the product formed in double, as for a
// float64 array, then rounded once.
std::uint16_t scaled_bits(const Array& a, i64 i, double factor) {
    return round_to_narrow(a.dtype, narrow_in(a, i) * factor);
}

// The bits of a list's 16-bit arrays scaled by per-array factors (1: unchanged), the
// last result kept: the factors come from each configuration's call, and are mostly
// the same for all.
struct ScaledBits {
    std::vector<double> factors;
    NarrowBits bits;
    bool valid = false;
    const NarrowBits& of(const List& orig, const std::vector<double>& f) {
        const bool same = valid && f.size() == factors.size() &&
                          (f.empty() || std::memcmp(f.data(), factors.data(), f.size() * sizeof(double)) == 0);
        if (!same) {
            factors = f;
            bits = narrow_bits_of(orig, [&](std::size_t a, i64 i) {
                return f[a] == 1.0 ? orig[a].h[static_cast<std::size_t>(i)] : scaled_bits(orig[a], i, f[a]);
            });
            valid = true;
        }
        return bits;
    }
};

// PyTorch's clip factor as the library forms it in double (norms.hpp: min(1, max_norm /
// (norm + eps)), NaN stays NaN; 1 for a zero norm): given the norm the call reported,
// the factor its 16-bit results are exactly rounded from.
double clip_factor_double(double max_norm, double norm, double eps) {
    if (norm == 0.0) return 1.0;
    const double f = max_norm / (norm + eps);
    return f != f ? f : (f < 1.0 ? f : 1.0);
}

// ------------------------------------------------------------------ test data

enum class Kind { normal, huge, denormal, tiny, zero };

// A value of class k representable in float32 (f32) or float64.
double gen_real(Rng& r, bool f32, Kind k) {
    const double sign = r.coin() ? -1.0 : 1.0;
    switch (k) {
        case Kind::normal: return sign * r.uniform(0.5, 1.0) * std::ldexp(1.0, static_cast<int>(r.below(13)) - 6);
        case Kind::huge:  // 1e30 .. 3.4e38 for float32, 1e295 .. 1.3e305 for float64 (squares overflow)
            return f32 ? sign * std::ldexp(r.uniform(1.0, 1.99), 100 + static_cast<int>(r.below(28)))
                       : sign * std::ldexp(r.uniform(1.0, 1.99), 980 + static_cast<int>(r.below(33)));
        case Kind::denormal:
            return f32 ? sign * std::ldexp(static_cast<double>(1 + r.below((i64{1} << 23) - 1)), -149)
                       : sign * std::ldexp(static_cast<double>(1 + r.below((i64{1} << 52) - 1)), -1074);
        case Kind::tiny:  // normal, but squares underflow float64 for float64 data
            return f32 ? sign * std::ldexp(r.uniform(1.0, 2.0), -126 + static_cast<int>(r.below(26)))
                       : sign * std::ldexp(r.uniform(1.0, 2.0), -1022 + static_cast<int>(r.below(480)));
        case Kind::zero: return sign * 0.0;
    }
    return 0.0;
}

std::uint16_t gen_half(Rng& r, Kind k) {
    const unsigned sign = r.coin() ? 0x8000u : 0u;
    unsigned mant = static_cast<unsigned>(r.below(1024));
    unsigned e = 0;
    switch (k) {
        case Kind::normal: e = 9 + static_cast<unsigned>(r.below(13)); break;
        case Kind::huge: e = 28 + static_cast<unsigned>(r.below(3)); break;
        case Kind::denormal: e = 0, mant = 1 + static_cast<unsigned>(r.below(1023)); break;
        case Kind::tiny: e = 1 + static_cast<unsigned>(r.below(3)); break;
        case Kind::zero: return static_cast<std::uint16_t>(sign);
    }
    return static_cast<std::uint16_t>(sign | (e << 10) | mant);
}

// bfloat16 as gen_half: the same classes (normals 2^-6 .. 2^7 too), huge ones near
// 3e38 (their squares overflow float32), subnormals down to 2^-133.
std::uint16_t gen_bf16(Rng& r, Kind k) {
    const unsigned sign = r.coin() ? 0x8000u : 0u;
    unsigned mant = static_cast<unsigned>(r.below(128));
    unsigned e = 0;
    switch (k) {
        case Kind::normal: e = 121 + static_cast<unsigned>(r.below(13)); break;
        case Kind::huge: e = 252 + static_cast<unsigned>(r.below(3)); break;  // up to 0x7F7F, the largest
        case Kind::denormal: e = 0, mant = 1 + static_cast<unsigned>(r.below(127)); break;
        case Kind::tiny: e = 1 + static_cast<unsigned>(r.below(3)); break;
        case Kind::zero: return static_cast<std::uint16_t>(sign);
    }
    return static_cast<std::uint16_t>(sign | (e << 7) | mant);
}

std::uint16_t gen_narrow(gc::DType t, Rng& r, Kind k) { return t == gc::DType::float16 ? gen_half(r, k) : gen_bf16(r, k); }

void put(Array& a, i64 i, Kind k, Rng& r) {
    if (is_narrow(a.dtype)) {
        a.h[static_cast<std::size_t>(i)] = gen_narrow(a.dtype, r, k);
    } else {
        a.set(i, gen_real(r, a.dtype == gc::DType::float32, k));
    }
}

void put_special(Array& a, i64 i, double v) {  // NaN or +-inf
    if (a.dtype == gc::DType::float16) {
        a.h[static_cast<std::size_t>(i)] = v != v ? kHalfNaN : (v > 0 ? kHalfInf : kHalfNegInf);
    } else if (a.dtype == gc::DType::bfloat16) {
        a.h[static_cast<std::size_t>(i)] = v != v ? kBf16NaN : (v > 0 ? kBf16Inf : kBf16NegInf);
    } else {
        a.set(i, v);
    }
}

enum class Pattern { normal, nan, inf, nan_inf, huge_mix, all_huge, denormal, tiny, zeros, mixed };
const Pattern kAllPatterns[] = {Pattern::normal,   Pattern::nan,      Pattern::inf,  Pattern::nan_inf, Pattern::huge_mix,
                                Pattern::all_huge, Pattern::denormal, Pattern::tiny, Pattern::zeros,   Pattern::mixed};

const char* pattern_name(Pattern p) {
    switch (p) {
        case Pattern::normal: return "normal";
        case Pattern::nan: return "nan";
        case Pattern::inf: return "inf";
        case Pattern::nan_inf: return "nan+inf";
        case Pattern::huge_mix: return "huge-mix";
        case Pattern::all_huge: return "all-huge";
        case Pattern::denormal: return "denormal";
        case Pattern::tiny: return "tiny";
        case Pattern::zeros: return "zeros";
        case Pattern::mixed: return "mixed";
    }
    return "?";
}

void fill(Array& a, Pattern p, Rng& r) {
    for (i64 i = 0; i < a.n; ++i) {
        Kind k = Kind::normal;
        const double u = r.uniform();
        switch (p) {
            case Pattern::huge_mix: k = u < 0.1 ? Kind::huge : Kind::normal; break;
            case Pattern::all_huge: k = Kind::huge; break;
            case Pattern::denormal: k = Kind::denormal; break;
            case Pattern::tiny: k = u < 0.2 ? Kind::denormal : Kind::tiny; break;
            case Pattern::zeros: k = Kind::zero; break;
            case Pattern::mixed:
                k = u < 0.7 ? Kind::normal : u < 0.8 ? Kind::huge : u < 0.9 ? Kind::denormal : Kind::tiny;
                break;
            default: break;
        }
        put(a, i, k, r);
    }
    if (a.n == 0) return;
    const i64 extra = a.n / 20000;
    switch (p) {
        case Pattern::nan:
            for (i64 j = 0; j <= extra; ++j) put_special(a, r.below(a.n), kNaN);
            break;
        case Pattern::inf:
            put_special(a, r.below(a.n), kInf);
            put_special(a, r.below(a.n), -kInf);
            break;
        case Pattern::nan_inf:
            put_special(a, r.below(a.n), kInf);
            put_special(a, r.below(a.n), kNaN);
            put_special(a, a.n - 1, -kInf);
            break;
        case Pattern::huge_mix: put(a, r.below(a.n), Kind::huge, r); break;
        default: break;
    }
}

Array make_array(gc::DType t, i64 n, Pattern p, Rng& r) {
    Array a(t, n);
    fill(a, p, r);
    return a;
}

// ------------------------------------------------------------------ reference norms

// The p-norm of every element of `arrays` together, in long double, scaled by the max so
// that nothing overflows or underflows: NaN if any NaN, else inf if any inf.
ld reference_norm(const std::vector<const Array*>& arrays, double ord) {
    bool nan = false, inf = false;
    ld m = 0;
    for (const Array* a : arrays) {
        for (i64 i = 0; i < a->n; ++i) {
            const ld v = a->get(i);
            if (std::isnan(v)) {
                nan = true;
            } else if (std::isinf(v)) {
                inf = true;
            } else if (std::fabs(v) > m) {
                m = std::fabs(v);
            }
        }
    }
    if (nan) return kNaNL;
    if (inf) return std::numeric_limits<ld>::infinity();
    if (m == 0 || ord == kInf) return m;
    ld sum = 0;
    for (const Array* a : arrays) {
        for (i64 i = 0; i < a->n; ++i) {
            const ld q = std::fabs(a->get(i)) / m;
            sum += ord == 1.0 ? q : ord == 2.0 ? q * q : std::pow(q, static_cast<ld>(ord));
        }
    }
    const ld norm = ord == 1.0 ? m * sum : ord == 2.0 ? m * std::sqrt(sum) : m * std::pow(sum, 1.0L / static_cast<ld>(ord));
    // As a double: a norm past the largest double (float64 data can have one) is inf.
    return norm >= max_of<double>() * (1 + eps_of<double>() / 2) ? std::numeric_limits<ld>::infinity() : norm;
}
ld reference_norm(const Array& a, double ord) { return reference_norm(std::vector<const Array*>{&a}, ord); }
ld reference_norm(const List& l, double ord) {
    std::vector<const Array*> p;
    for (const Array& a : l) p.push_back(&a);
    return reference_norm(p, ord);
}

// Relative tolerance of a norm of n elements accumulated in float64: n roundings, and a
// few more for the powers of other p.
ld norm_rtol(double ord, i64 n) {
    const ld k = (ord == 1.0 || ord == 2.0) ? 2 : 8;
    return k * static_cast<ld>(n + 8) * eps_of<double>();
}

bool norm_agrees(double got, ld ref, double ord, i64 n) {
    if (std::isnan(ref)) return std::isnan(got);
    if (std::isinf(ref)) return got == kInf;
    if (ref > max_of<double>()) return got == kInf || got == DBL_MAX;  // rounding either way
    if (ord == kInf) return static_cast<ld>(got) == ref;  // the max is exact
    return std::fabs(static_cast<ld>(got) - ref) <= norm_rtol(ord, n) * ref + 2 * denorm_of<double>();
}

// PyTorch's clip factor min(1, max_norm / (norm + eps)), NaN stays NaN; 1 for a zero norm.
ld clip_factor_ref(ld max_norm, ld norm, ld eps) {
    if (norm == 0) return 1;
    const ld f = max_norm / (norm + eps);
    if (std::isnan(f)) return f;
    return f < 1 ? f : 1;
}

// ================================================================== area: runtime

void test_runtime() {
    const std::vector<std::string> isas = gc::isa_available();
    CHECK(!isas.empty() && isas.front() == "scalar", "isa_available() must start with \"scalar\" (got %zu names)",
          isas.size());
    for (const std::string& name : isas) {
        gc::set_isa(name);
        CHECK(gc::isa_active() == name, "set_isa(%s) then isa_active() = %s", name.c_str(), gc::isa_active().c_str());
    }
    for (int n : {1, 2, 3, 1}) {
        gc::set_num_threads(n);
        CHECK(gc::get_num_threads() == n, "set_num_threads(%d) then get_num_threads() = %d", n, gc::get_num_threads());
    }
    CHECK(gc::version() != nullptr && *gc::version() != '\0', "version() is empty");
    CHECK(gc::compiler() != nullptr && *gc::compiler() != '\0', "compiler() is empty");
    CHECK(gc::gate_count(gc::Cell::rnn_tanh) == 1 && gc::gate_count(gc::Cell::rnn_relu) == 1 &&
              gc::gate_count(gc::Cell::lstm) == 4 && gc::gate_count(gc::Cell::gru) == 3,
          "gate_count");
    if (!gc::cuda_built()) {
        CHECK(gc::cuda_device_count() == 0, "no CUDA build but %d devices", gc::cuda_device_count());
        CHECK(!gc::cuda_self_test().empty(), "no CUDA build but cuda_self_test() reports success");
    }

    // The memory probes: read returns a finite value for finite data and modifies
    // nothing; update (x *= 1) leaves every bit as it was.
    Rng r(11);
    for (i64 n : {i64{0}, i64{1}, i64{7}, i64{33}, i64{100003}}) {
        g_case = strf("memory probes n=%lld", ll(n));
        std::vector<float> data(static_cast<std::size_t>(n));
        fill_uniform(data, r, -2.0, 2.0);
        const std::vector<float> orig = data;
        for_each_config([&](const Config&) {
            const double v = gc::memory_probe_read(data.data(), n);
            CHECK(std::isfinite(v), "memory_probe_read = %g", v);
            gc::memory_probe_update(data.data(), n);
            CHECK(data == orig, "memory_probe_update changed the data");
        });
    }
    // The FMA probe: a positive, finite flop rate on every target and thread count.
    g_case = "fma probe";
    for_each_config([&](const Config&) {
        for (gc::DType dt : {gc::DType::float32, gc::DType::float64}) {
            const double flops = gc::fma_probe(dt, 1000);
            CHECK(std::isfinite(flops) && flops > 0.0, "fma_probe = %g flop/s", flops);
        }
    });
    g_case.clear();
}

// ================================================================== area: norms

const i64 kNormSizes[] = {0, 1, 2, 3, 5, 7, 8, 9, 13, 15, 16, 17, 31, 32, 33, 61, 64, 97, 127, 128, 129, 1021,
                          32768, 100003};
const double kOrds[] = {1.0, 2.0, kInf, 3.0, 0.5};

// global_norm, norms (every order) and grad_stats of one list on every configuration,
// against the references; the same results for 1 and 2 threads, bit for bit (norms.hpp:
// per-chunk partials combined in list order, chunks fixed by the sizes alone).
void norm_case(List& arrays, bool all_ords = true) {
    std::vector<gc::TensorView> views = views_of(arrays);
    const std::size_t count = arrays.size();
    const i64 total = total_numel(arrays);
    std::vector<double> ords(std::begin(kOrds), std::end(kOrds));
    if (!all_ords) ords.resize(3);  // 1, 2, inf
    const std::size_t n_ord = ords.size();

    std::vector<ld> ref_global(n_ord), ref_each(n_ord * count);
    for (std::size_t k = 0; k < n_ord; ++k) {
        ref_global[k] = reference_norm(arrays, ords[k]);
        for (std::size_t a = 0; a < count; ++a) {
            ref_each[k * count + a] = count == 1 ? ref_global[k] : reference_norm(arrays[a], ords[k]);
        }
    }
    std::vector<ld> ref_max(count);
    std::vector<i64> ref_nonfinite(count, 0);
    for (std::size_t a = 0; a < count; ++a) {
        ref_max[a] = ref_each[2 * count + a];  // ords[2] is inf
        for (i64 i = 0; i < arrays[a].n; ++i) ref_nonfinite[a] += std::isfinite(arrays[a].get(i)) ? 0 : 1;
    }

    std::vector<std::vector<double>> results;
    for_each_config([&](const Config&) {
        std::vector<double> out;
        for (std::size_t k = 0; k < n_ord; ++k) {
            const double ord = ords[k];
            const double g = gc::global_norm(views.data(), count, ord);
            CHECK(norm_agrees(g, ref_global[k], ord, total), "global_norm(ord=%g) = %.17g, expected %.17Lg (%lld elements)",
                  ord, g, ref_global[k], ll(total));
            std::vector<double> each(count, -7.0);
            gc::norms(views.data(), count, ord, each.data());
            std::size_t bad = count;
            for (std::size_t a = 0; a < count && bad == count; ++a) {
                if (!norm_agrees(each[a], ref_each[k * count + a], ord, arrays[a].n)) bad = a;
            }
            CHECK(bad == count, "norms(ord=%g): array %zu (%s, n=%lld) = %.17g, expected %.17Lg", ord, bad,
                  bad < count ? gc::dtype_name(arrays[bad].dtype) : "", bad < count ? ll(arrays[bad].n) : 0LL,
                  bad < count ? each[bad] : 0.0, bad < count ? ref_each[k * count + bad] : 0.0L);
            out.push_back(g);
            out.insert(out.end(), each.begin(), each.end());
        }
        std::vector<double> l2s(count, -1.0), maxs(count, -1.0);
        std::vector<std::int64_t> nfs(count, -1);
        gc::grad_stats(views.data(), count, l2s.data(), maxs.data(), nfs.data());
        std::size_t bad_l2 = count, bad_max = count, bad_nf = count;
        for (std::size_t a = 0; a < count; ++a) {
            if (bad_l2 == count && !norm_agrees(l2s[a], ref_each[1 * count + a], 2.0, arrays[a].n)) bad_l2 = a;
            const ld m = ref_max[a];
            const bool max_ok = std::isnan(m) ? std::isnan(maxs[a]) : static_cast<ld>(maxs[a]) == m;
            if (bad_max == count && !max_ok) bad_max = a;
            if (bad_nf == count && nfs[a] != ref_nonfinite[a]) bad_nf = a;
            out.push_back(l2s[a]);
            out.push_back(maxs[a]);
            out.push_back(static_cast<double>(nfs[a]));
        }
        CHECK(bad_l2 == count, "grad_stats l2_norm of array %zu = %.17g, expected %.17Lg", bad_l2,
              bad_l2 < count ? l2s[bad_l2] : 0.0, bad_l2 < count ? ref_each[count + bad_l2] : 0.0L);
        CHECK(bad_max == count, "grad_stats max_abs of array %zu = %.17g, expected %.17Lg", bad_max,
              bad_max < count ? maxs[bad_max] : 0.0, bad_max < count ? ref_max[bad_max] : 0.0L);
        CHECK(bad_nf == count, "grad_stats nonfinite of array %zu = %lld, expected %lld", bad_nf,
              bad_nf < count ? ll(nfs[bad_nf]) : 0LL, bad_nf < count ? ll(ref_nonfinite[bad_nf]) : 0LL);
        results.push_back(std::move(out));
    });
    check_thread_independent(HERE, results, "norms independent of the thread count");
}

void test_norms() {
    Rng r(101);
    const gc::DType dtypes[] = {gc::DType::float16, gc::DType::bfloat16, gc::DType::float32, gc::DType::float64};
    const Pattern large_patterns[] = {Pattern::normal, Pattern::nan, Pattern::huge_mix, Pattern::denormal};
    for (gc::DType t : dtypes) {
        for (i64 n : kNormSizes) {
            const bool large = n >= 32768;
            std::vector<Pattern> patterns(std::begin(kAllPatterns), std::end(kAllPatterns));
            if (large) patterns.assign(std::begin(large_patterns), std::end(large_patterns));
            for (Pattern p : patterns) {
                List l;
                l.push_back(make_array(t, n, p, r));
                g_case = strf("one array %s n=%lld %s", gc::dtype_name(t), ll(n), pattern_name(p));
                // Other p make a pass of std::pow per element: all orders on the large
                // arrays for one pattern only.
                norm_case(l, !large || p == Pattern::normal);
            }
        }
    }

    // Lists: norms of the whole list as if concatenated, mixed dtypes.
    {
        List l;
        int i = 0;
        for (i64 n : kNormSizes) {
            const gc::DType t = dtypes[i % 4];
            l.push_back(make_array(t, n, i % 2 ? Pattern::mixed : Pattern::normal, r));
            ++i;
        }
        g_case = "list: every size, dtypes and patterns mixed";
        norm_case(l);
    }
    {
        List l;
        for (int i = 0; i < 4000; ++i) {
            l.push_back(make_array(dtypes[r.below(4)], r.below(41), i % 97 == 0 ? Pattern::mixed : Pattern::normal, r));
        }
        g_case = strf("list: 4000 small arrays (%lld elements)", ll(total_numel(l)));
        norm_case(l);
    }
    {
        List l;
        l.push_back(make_array(gc::DType::float32, 100, Pattern::normal, r));
        l.push_back(make_array(gc::DType::float64, 17, Pattern::nan, r));
        l.push_back(make_array(gc::DType::float16, 9, Pattern::inf, r));
        l.push_back(make_array(gc::DType::float64, 0, Pattern::normal, r));
        l.push_back(make_array(gc::DType::bfloat16, 12, Pattern::all_huge, r));
        g_case = "list: NaN in one array, inf in another";
        norm_case(l);
        l.erase(l.begin() + 1);
        g_case = "list: inf in one array";
        norm_case(l);
    }
    {
        List l;
        l.push_back(make_array(gc::DType::float64, 40, Pattern::all_huge, r));
        l.push_back(make_array(gc::DType::float32, 40, Pattern::normal, r));
        l.push_back(make_array(gc::DType::float64, 40, Pattern::tiny, r));
        g_case = "list: float64 huge + float32 normal + float64 tiny";
        norm_case(l);
        List d;
        d.push_back(make_array(gc::DType::float64, 33, Pattern::denormal, r));
        d.push_back(make_array(gc::DType::float64, 65, Pattern::tiny, r));
        d.push_back(make_array(gc::DType::float16, 17, Pattern::denormal, r));
        d.push_back(make_array(gc::DType::bfloat16, 19, Pattern::denormal, r));
        g_case = "list: denormal and tiny";
        norm_case(d);
    }
    {
        List l;
        l.push_back(make_array(gc::DType::float32, 32767, Pattern::normal, r));
        l.push_back(make_array(gc::DType::float64, 32769, Pattern::mixed, r));
        l.push_back(make_array(gc::DType::float16, 100003, Pattern::normal, r));
        l.push_back(make_array(gc::DType::bfloat16, 32771, Pattern::mixed, r));
        l.push_back(make_array(gc::DType::float32, 5, Pattern::normal, r));
        g_case = "list: arrays across chunk boundaries";
        norm_case(l);
    }
    {
        List l;
        l.push_back(Array(gc::DType::float32, 0));
        l.push_back(Array(gc::DType::float16, 0));
        l.push_back(Array(gc::DType::bfloat16, 0));
        g_case = "list: empty arrays";
        norm_case(l);
        g_case = "empty list (null pointer, count 0)";
        for_each_config([&](const Config&) {
            for (double ord : kOrds) {
                const double g = gc::global_norm(nullptr, 0, ord);
                CHECK(g == 0.0, "global_norm of nothing (ord=%g) = %g", ord, g);
                gc::norms(nullptr, 0, ord, nullptr);
            }
            gc::grad_stats(nullptr, 0, nullptr, nullptr, nullptr);
        });
    }
    g_case.clear();
}

// ================================================================== area: clip

struct NamedList {
    std::string name;
    List list;
};

std::vector<NamedList> make_clip_lists(Rng& r) {
    std::vector<NamedList> out;
    const i64 sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 97, 1021, 100003};
    const Pattern small[] = {Pattern::normal, Pattern::nan_inf, Pattern::huge_mix, Pattern::denormal, Pattern::mixed};
    const Pattern large[] = {Pattern::normal, Pattern::nan_inf};
    for (gc::DType t : {gc::DType::float32, gc::DType::float64, gc::DType::float16, gc::DType::bfloat16}) {
        for (i64 n : sizes) {
            std::vector<Pattern> ps(std::begin(small), std::end(small));
            if (n > 30000) ps.assign(std::begin(large), std::end(large));
            // Large 16-bit arrays with NaN only: the other orders' reference norms (std::pow
            // per element) would double the area's time; the mixed list below and
            // test_narrow_targets have large 16-bit arrays of finite values.
            if (n > 30000 && is_narrow(t)) ps = {Pattern::nan_inf};
            for (Pattern p : ps) {
                NamedList nl{strf("%s n=%lld %s", gc::dtype_name(t), ll(n), pattern_name(p)), {}};
                nl.list.push_back(make_array(t, n, p, r));
                out.push_back(std::move(nl));
            }
        }
    }
    NamedList mixed{"list: mixed dtypes, sizes and patterns", {}};
    mixed.list.push_back(make_array(gc::DType::float32, 17, Pattern::normal, r));
    mixed.list.push_back(make_array(gc::DType::float64, 100003, Pattern::mixed, r));
    mixed.list.push_back(make_array(gc::DType::float32, 0, Pattern::normal, r));
    mixed.list.push_back(make_array(gc::DType::float64, 33, Pattern::huge_mix, r));
    mixed.list.push_back(make_array(gc::DType::float32, 32768, Pattern::denormal, r));
    mixed.list.push_back(make_array(gc::DType::float64, 9, Pattern::nan, r));
    out.push_back(std::move(mixed));
    // The 16-bit arrays among the others: each array's own kernel, chunks across them.
    NamedList narrow{"list: 16-bit and wide dtypes mixed", {}};
    narrow.list.push_back(make_array(gc::DType::float16, 17, Pattern::normal, r));
    narrow.list.push_back(make_array(gc::DType::bfloat16, 1021, Pattern::mixed, r));
    narrow.list.push_back(make_array(gc::DType::float32, 33, Pattern::nan_inf, r));
    narrow.list.push_back(make_array(gc::DType::bfloat16, 0, Pattern::normal, r));
    narrow.list.push_back(make_array(gc::DType::float16, 40000, Pattern::mixed, r));
    narrow.list.push_back(make_array(gc::DType::float64, 9, Pattern::normal, r));
    narrow.list.push_back(make_array(gc::DType::bfloat16, 31, Pattern::huge_mix, r));
    out.push_back(std::move(narrow));
    NamedList many{"list: 3000 small arrays", {}};
    for (int i = 0; i < 3000; ++i) {
        many.list.push_back(make_array(r.coin() ? gc::DType::float32 : gc::DType::float64, r.below(41),
                                       i % 500 == 0 ? Pattern::nan : Pattern::normal, r));
    }
    out.push_back(std::move(many));
    return out;
}

bool is_big(const List& l) { return total_numel(l) > 30000; }

void test_scale(std::vector<NamedList>& lists) {
    for (NamedList& nl : lists) {
        const bool big = is_big(nl.list);
        const bool has_f32 = std::any_of(nl.list.begin(), nl.list.end(),
                                         [](const Array& a) { return a.dtype == gc::DType::float32; });
        const bool has_narrow = std::any_of(nl.list.begin(), nl.list.end(), [](const Array& a) { return is_narrow(a.dtype); });
        // Factors below the smallest normal of the dtype take the split-multiply path.
        std::vector<double> factors = {0.5, 3.0, -0.75, 0.0, 1.0, has_f32 ? 1e-41 : 1e-310, has_f32 ? -3e-39 : -1e-309};
        if (big) factors = {-3.0, has_f32 ? 1e-41 : 1e-310};
        // For 16-bit arrays: products just past a half-way point of either format (where
        // double -> float -> 16 bits rounds twice, wrongly), into the subnormals of
        // float16 (1e-5) and bfloat16 (3e-38), and past their largest values (1e4).
        if (has_narrow) {
            for (double f : {1 + 0x1p-11 + 0x1p-40, -(1 + 0x1p-8 + 0x1p-40), 1e-5, 3e-38, 1e4}) factors.push_back(f);
        }
        for (double factor : factors) {
            g_case = strf("scale_(%g) %s", factor, nl.name.c_str());
            const NarrowBits want = narrow_bits_of(nl.list, [&](std::size_t a, i64 i) { return scaled_bits(nl.list[a], i, factor); });
            for_each_config([&](const Config&) {
                List l = nl.list;
                std::vector<gc::TensorView> v = views_of(l);
                gc::scale_(v.data(), v.size(), factor);
                if (factor == 1.0) {
                    CHECK(same_bits(l, nl.list), "scale_(1) modified the arrays");
                    return;
                }
                check_list(HERE, "scale_ values", l,
                           [&](std::size_t a, i64 i) { return nl.list[a].get(i) * static_cast<ld>(factor); }, 2);
                check_narrow_bits(HERE, "scale_ 16-bit bits", l, nl.list, want);
            });
        }
    }
}

void test_clip_by_value(std::vector<NamedList>& lists) {
    const std::pair<double, double> all_bounds[] = {{-0.5, 0.25}, {0.1, 0.1},  {-kInf, 0.0},
                                                    {0.0, kInf},  {-3.0, -1.0}, {-1e-30, 1e-30}};
    for (NamedList& nl : lists) {
        const bool big = is_big(nl.list);
        for (const auto& [lo, hi] : all_bounds) {
            if (big && lo != -0.5) continue;
            g_case = strf("clip_by_value_(%g, %g) %s", lo, hi, nl.name.c_str());
            // Bounds rounded to each array's precision first. (For the 16-bit formats this is
            // a second formulation: rounding is monotone, so clamping to the rounded bounds
            // gives the rounded clamp that the bits are checked against below.)
            auto rounded = [](gc::DType t, double b) -> ld {
                if (t == gc::DType::float32) return static_cast<float>(b);
                if (is_narrow(t)) return narrow_value(t, round_to_narrow(t, b));
                return b;
            };
            auto expected = [&](std::size_t a, i64 i) -> ld {
                const Array& src = nl.list[a];
                const ld x = src.get(i);
                const ld l = rounded(src.dtype, lo);
                const ld h = rounded(src.dtype, hi);
                return x < l ? l : (x > h ? h : x);
            };
            // 16-bit: clamped in double to the bounds as given, then rounded once.
            const NarrowBits want = narrow_bits_of(nl.list, [&](std::size_t a, i64 i) {
                const double x = narrow_in(nl.list[a], i);
                return round_to_narrow(nl.list[a].dtype, x < lo ? lo : (x > hi ? hi : x));
            });
            for_each_config([&](const Config&) {
                List l = nl.list;
                std::vector<gc::TensorView> v = views_of(l);
                gc::clip_by_value_(v.data(), v.size(), lo, hi);
                check_list(HERE, "clip_by_value_ values", l, expected, 0);
                check_narrow_bits(HERE, "clip_by_value_ 16-bit bits", l, nl.list, want);
            });
        }
    }
}

void test_zero_nonfinite(std::vector<NamedList>& lists) {
    for (NamedList& nl : lists) {
        g_case = strf("zero_nonfinite_ %s", nl.name.c_str());
        i64 expected_count = 0;
        for (const Array& a : nl.list) {
            for (i64 i = 0; i < a.n; ++i) expected_count += std::isfinite(a.get(i)) ? 0 : 1;
        }
        const NarrowBits want = narrow_bits_of(nl.list, [&](std::size_t a, i64 i) -> std::uint16_t {
            return std::isfinite(nl.list[a].get(i)) ? nl.list[a].h[static_cast<std::size_t>(i)] : 0;  // +0
        });
        for_each_config([&](const Config&) {
            List l = nl.list;
            std::vector<gc::TensorView> v = views_of(l);
            const i64 count = gc::zero_nonfinite_(v.data(), v.size());
            CHECK(count == expected_count, "zero_nonfinite_ returned %lld, expected %lld", ll(count), ll(expected_count));
            check_list(HERE, "zero_nonfinite_ values", l, [&](std::size_t a, i64 i) -> ld {
                const ld x = nl.list[a].get(i);
                return std::isfinite(x) ? x : 0;
            }, 0);
            check_narrow_bits(HERE, "zero_nonfinite_ 16-bit bits", l, nl.list, want);
            if (expected_count == 0) CHECK(same_bits(l, nl.list), "zero_nonfinite_ wrote a list without NaN/inf");
        });
    }
}

// The values of a list after scaling by per-array factors (1: untouched, bit for bit).
bool check_scaled(Where w, const char* what, const List& got, const List& orig, const std::vector<ld>& factor,
                  ld rel) {
    bool ok = true;
    for (std::size_t a = 0; a < got.size(); ++a) {
        if (factor[a] == 1) {
            ok &= check_at(got[a].same_bits(orig[a]), w, what, [&] {
                return strf("array %zu has factor 1 but was modified", a);
            });
        }
    }
    List sub_got, sub_orig;
    std::vector<ld> f;
    for (std::size_t a = 0; a < got.size(); ++a) {
        if (factor[a] != 1) {
            sub_got.push_back(got[a]);
            sub_orig.push_back(orig[a]);
            f.push_back(factor[a]);
        }
    }
    if (!sub_got.empty()) {
        ok &= check_list(w, what, sub_got, [&](std::size_t a, i64 i) { return sub_orig[a].get(i) * f[a]; }, 2, rel);
    }
    return ok;
}

void test_clip_by_norm(std::vector<NamedList>& lists) {
    struct P {
        double max_norm, ord, eps;
    };
    const P all[] = {{1.0, 2.0, 1e-6}, {1.0, 2.0, 0.0}, {0.0, 2.0, 1e-6}, {1e5, 2.0, 1e-6},
                     {1.0, 1.0, 1e-6}, {1.0, kInf, 1e-6}, {0.5, 3.0, 1e-6}, {2.0, 0.5, 0.0}};
    for (NamedList& nl : lists) {
        const bool big = is_big(nl.list);
        for (const P& p : all) {
            if (big && !(p.ord == 2.0 && p.eps != 0 && p.max_norm == 1.0) && p.ord != 0.5) continue;
            g_case = strf("clip_by_norm_(max_norm=%g, ord=%g, eps=%g) %s", p.max_norm, p.ord, p.eps, nl.name.c_str());
            const std::size_t count = nl.list.size();
            std::vector<ld> ref_norm(count), factor(count);
            bool ambiguous = false;
            ld rel = 0;
            for (std::size_t a = 0; a < count; ++a) {
                ref_norm[a] = reference_norm(nl.list[a], p.ord);
                factor[a] = clip_factor_ref(p.max_norm, ref_norm[a], p.eps);
                // A factor within rounding of 1 may go either way.
                ambiguous |= factor[a] < 1 && factor[a] > 1 - 1e-9L;
                rel = std::max(rel, norm_rtol(p.ord, nl.list[a].n) + 4 * eps_of<double>());
            }
            ScaledBits scaled;
            for_each_config([&](const Config&) {
                List l = nl.list;
                std::vector<gc::TensorView> v = views_of(l);
                std::vector<double> norms_out(count, -7.0);
                gc::clip_by_norm_(v.data(), count, p.max_norm, p.ord, p.eps, norms_out.data());
                std::size_t bad = count;
                for (std::size_t a = 0; a < count && bad == count; ++a) {
                    if (!norm_agrees(norms_out[a], ref_norm[a], p.ord, nl.list[a].n)) bad = a;
                }
                CHECK(bad == count, "clip_by_norm_ norms_out[%zu] = %.17g, expected %.17Lg", bad,
                      bad < count ? norms_out[bad] : 0.0, bad < count ? ref_norm[bad] : 0.0L);
                if (!ambiguous) check_scaled(HERE, "clip_by_norm_ values", l, nl.list, factor, rel);
                // 16-bit bits, from the factor of the norm the call reported (so also where
                // the reference factor is ambiguous): untouched where it is 1.
                std::vector<double> f(count);
                for (std::size_t a = 0; a < count; ++a) f[a] = clip_factor_double(p.max_norm, norms_out[a], p.eps);
                check_narrow_bits(HERE, "clip_by_norm_ 16-bit bits", l, nl.list, scaled.of(nl.list, f));
            });
        }
    }
}

const char* policy_name(gc::NonFinitePolicy p) {
    switch (p) {
        case gc::NonFinitePolicy::propagate: return "propagate";
        case gc::NonFinitePolicy::error: return "error";
        case gc::NonFinitePolicy::skip: return "skip";
        case gc::NonFinitePolicy::zero: return "zero";
    }
    return "?";
}

void test_clip_by_global_norm(std::vector<NamedList>& lists) {
    const gc::NonFinitePolicy policies[] = {gc::NonFinitePolicy::propagate, gc::NonFinitePolicy::error,
                                            gc::NonFinitePolicy::skip, gc::NonFinitePolicy::zero};
    struct Total {
        bool given;
        double value;
    };
    const Total totals[] = {{false, 0.0}, {true, 2.0}, {true, kNaN}, {true, kInf}, {true, 0.0}};
    struct P {
        double max_norm, ord, eps;
    };
    const P params[] = {{1.0, 2.0, 1e-6}, {0.25, 1.0, 0.0}, {3.0, kInf, 1e-6}, {1.0, 0.5, 1e-6}, {0.0, 2.0, 1e-6}};
    for (NamedList& nl : lists) {
        const bool big = is_big(nl.list);
        i64 nonfinite_elements = 0;
        for (const Array& a : nl.list) {
            for (i64 i = 0; i < a.n; ++i) nonfinite_elements += std::isfinite(a.get(i)) ? 0 : 1;
        }
        List zeroed = nl.list;  // what the zero policy makes of the list
        for (Array& a : zeroed) {
            for (i64 i = 0; i < a.n; ++i) {
                if (!std::isfinite(a.get(i))) a.set(i, 0.0);
            }
        }
        for (const P& p : params) {
            if (big && !(p.ord == 2.0 && p.max_norm == 1.0) && p.ord != 0.5) continue;
            const ld computed_total = reference_norm(nl.list, p.ord);
            const ld zeroed_total = reference_norm(zeroed, p.ord);
            const i64 n = total_numel(nl.list);
            for (const Total& tot : totals) {
                if (big && tot.given && !std::isnan(tot.value)) continue;
                for (gc::NonFinitePolicy policy : policies) {
                    if (big && p.ord == 0.5 && (tot.given || policy == gc::NonFinitePolicy::error)) continue;
                    g_case = strf("clip_by_global_norm_(max_norm=%g, ord=%g, eps=%g, %s, total=%s) %s", p.max_norm, p.ord,
                                  p.eps, policy_name(policy), tot.given ? strf("%g", tot.value).c_str() : "computed",
                                  nl.name.c_str());
                    // The reference.
                    const ld total = tot.given ? static_cast<ld>(tot.value) : computed_total;
                    const bool nonfinite = !std::isfinite(total);
                    bool untouched = false, use_zeroed = false;
                    ld factor = 1;
                    if (nonfinite && (policy == gc::NonFinitePolicy::error || policy == gc::NonFinitePolicy::skip)) {
                        untouched = true;
                    } else if (nonfinite && policy == gc::NonFinitePolicy::zero) {
                        use_zeroed = true;
                        factor = clip_factor_ref(p.max_norm, zeroed_total, p.eps);
                    } else {
                        factor = clip_factor_ref(p.max_norm, total, p.eps);
                    }
                    const bool ambiguous = factor < 1 && factor > 1 - 1e-9L;
                    const bool fresh_norm = !tot.given || use_zeroed;  // the factor comes from a norm pass
                    const ld rel = (fresh_norm ? norm_rtol(p.ord, n) : 0) + 4 * eps_of<double>();
                    const List& base = use_zeroed ? zeroed : nl.list;
                    ScaledBits scaled;
                    for_each_config([&](const Config&) {
                        List l = nl.list;
                        std::vector<gc::TensorView> v = views_of(l);
                        const gc::GlobalClipResult res = gc::clip_by_global_norm_(
                            v.data(), v.size(), p.max_norm, p.ord, p.eps, policy, tot.given, tot.given ? tot.value : 0.0);
                        if (tot.given) {
                            CHECK((std::isnan(total) && std::isnan(res.total_norm)) || res.total_norm == tot.value,
                                  "total_norm = %.17g, but %.17g was given", res.total_norm, tot.value);
                        } else {
                            CHECK(norm_agrees(res.total_norm, total, p.ord, n), "total_norm = %.17g, expected %.17Lg",
                                  res.total_norm, total);
                        }
                        CHECK(res.nonfinite == nonfinite, "nonfinite = %d, expected %d", res.nonfinite, nonfinite);
                        if (untouched) {
                            CHECK(res.factor == 1.0 && !res.clipped, "factor = %g, clipped = %d for a refused clip",
                                  res.factor, res.clipped);
                            CHECK(same_bits(l, nl.list), "policy %s modified the arrays", policy_name(policy));
                            return;
                        }
                        // 16-bit bits from the factor the call reports it applied (so also
                        // where the reference factor is ambiguous).
                        check_narrow_bits(HERE, "clip_by_global_norm_ 16-bit bits", l, base,
                                          scaled.of(base, std::vector<double>(l.size(), res.factor)));
                        if (ambiguous) return;
                        CHECK(agrees(res.factor, factor, rel * std::fabs(factor)), "factor = %.17g, expected %.17Lg",
                              res.factor, factor);
                        // clipped: the arrays were scaled. (Under the zero policy arrays
                        // with NaN/inf are also written when the factor is 1: checked
                        // on its own in test_clipped_flag.)
                        if (!(use_zeroed && nonfinite_elements > 0)) {
                            CHECK(res.clipped == (factor != 1), "clipped = %d with factor %.17Lg", res.clipped, factor);
                        }
                        std::vector<ld> f(l.size(), factor);
                        if (factor == 1 && use_zeroed) {
                            check_list(HERE, "clip_by_global_norm_ values (zeroed)", l,
                                       [&](std::size_t a, i64 i) { return base[a].get(i); }, 0);
                        } else {
                            check_scaled(HERE, "clip_by_global_norm_ values", l, base, f, rel);
                        }
                    });
                }
            }
        }
    }
}

// GlobalClipResult::clipped is documented as "arrays were written" (and the C ABI's
// *clipped as "whether the arrays were written"); under the zero policy the non-finite
// elements are set to 0 even when the factor of what remains is 1.
void test_clipped_flag() {
    g_case = "clip_by_global_norm_ zero policy, factor 1 after zeroing";
    for_each_config([&](const Config&) {
        List l;
        l.push_back(Array(gc::DType::float32, 3));
        l[0].f = {0.1f, std::numeric_limits<float>::quiet_NaN(), -0.2f};
        const List orig = l;
        std::vector<gc::TensorView> v = views_of(l);
        const gc::GlobalClipResult r =
            gc::clip_by_global_norm_(v.data(), 1, 10.0, 2.0, 1e-6, gc::NonFinitePolicy::zero, false, 0.0);
        const bool written = !same_bits(l, orig);
        CHECK(written && l[0].f[1] == 0.0f && r.factor == 1.0, "zero policy: NaN not zeroed (factor %g)", r.factor);
        CHECK(r.clipped == written,
              "GlobalClipResult::clipped = %d but the arrays %s written (norms.hpp: \"clipped; // arrays were written\")",
              r.clipped, written ? "were" : "were not");
    });
    g_case.clear();
}

// The reference rounding itself, first: known roundings at the half-way points that
// matter, and every finite 16-bit value rounding to itself (so decoding and encoding
// agree on all 2 x 65536 patterns).
void test_narrow_reference() {
    g_case = "round_to_narrow, the reference rounding";
    CHECK(fegetround() == FE_TONEAREST, "the rounding mode is not FE_TONEAREST: std::nearbyint would not tie to even");
    struct Known {
        gc::DType t;
        double v;
        std::uint16_t bits;
    };
    const gc::DType F16 = gc::DType::float16, BF16 = gc::DType::bfloat16;
    const Known known[] = {
        {F16, 1 + 0x1p-11, 0x3C00},             // a tie: to the even 1.0
        {F16, 1 + 0x1p-11 + 0x1p-40, 0x3C01},   // just past it: up (double -> float -> half gives 0x3C00)
        {F16, 1 + 0x1p-11 - 0x1p-40, 0x3C00},
        {F16, 1 + 3 * 0x1p-11, 0x3C02},         // a tie from an odd significand: up to even
        {F16, -(1 + 0x1p-11 + 0x1p-40), 0xBC01},
        {F16, 65504.0, 0x7BFF},
        {F16, 65519.99999999999, 0x7BFF},
        {F16, 65520.0, 0x7C00},                 // the half-way point above the largest: inf
        {F16, -1e6, 0xFC00},
        {F16, 0x1p-24, 0x0001},
        {F16, 0x1p-25, 0x0000},                 // a tie between 0 and the smallest subnormal
        {F16, 0x1p-25 + 0x1p-60, 0x0001},
        {F16, 3 * 0x1p-25, 0x0002},             // 1.5 subnormal quanta: to even 2
        {F16, -0x1p-30, 0x8000},                // the sign of zero kept
        {F16, 0x1p-14 - 0x1p-25, 0x0400},       // rounds up into the smallest normal
        {F16, kInf, 0x7C00},
        {BF16, 1 + 0x1p-8, 0x3F80},
        {BF16, 1 + 0x1p-8 + 0x1p-40, 0x3F81},
        {BF16, 1 + 3 * 0x1p-8, 0x3F82},
        {BF16, static_cast<double>(narrow_format(BF16).max_finite), 0x7F7F},
        {BF16, static_cast<double>(narrow_format(BF16).overflow_at), 0x7F80},
        {BF16, static_cast<double>(narrow_format(BF16).overflow_at) * (1 - 0x1p-40), 0x7F7F},
        {BF16, 0x1p-133, 0x0001},
        {BF16, 0x1p-134, 0x0000},
        {BF16, 3 * 0x1p-134, 0x0002},
        {BF16, 0x1p-126 - 0x1p-134, 0x0080},
        {BF16, -0x1p-140, 0x8000},
        {BF16, -kInf, 0xFF80},
    };
    for (const Known& k : known) {
        const std::uint16_t got = round_to_narrow(k.t, k.v);
        CHECK(got == k.bits, "round_to_narrow(%s, %a) = 0x%04x, expected 0x%04x", gc::dtype_name(k.t), k.v, got, k.bits);
    }
    CHECK(narrow_is_nan(F16, round_to_narrow(F16, kNaN)) && narrow_is_nan(BF16, round_to_narrow(BF16, kNaN)),
          "round_to_narrow(NaN) is not a NaN");
    for (gc::DType t : {F16, BF16}) {
        i64 bad = 0, first = -1;
        for (std::uint32_t b = 0; b < 0x10000; ++b) {
            const auto bits = static_cast<std::uint16_t>(b);
            if (narrow_is_nan(t, bits)) continue;
            if (round_to_narrow(t, narrow_value(t, bits)) != bits) {
                if (first < 0) first = b;
                ++bad;
            }
        }
        CHECK(bad == 0, "%s: %lld values do not round to themselves; first 0x%04llx", gc::dtype_name(t), ll(bad), ll(first));
    }
    g_case.clear();
}

// Values of a 16-bit format around the places where rounding is delicate: every power of
// two of its range (so that a factor 1 + tie lands exactly on a half-way point), the
// values just above (odd significands) and just below (the largest significand) each,
// the largest finite value, the smallest subnormals, inf and NaN.
Array narrow_edge_values(gc::DType t) {
    const NarrowFormat& f = narrow_format(t);
    std::vector<double> v;
    const int max_exp = t == gc::DType::float16 ? 15 : 127;
    for (int e = f.min_exp - (f.digits - 1); e <= max_exp; ++e) {
        const double p2 = std::ldexp(1.0, e);
        v.push_back(p2);
        if (e >= f.min_exp) {
            v.push_back(-p2 * (1 + std::ldexp(1.0, 1 - f.digits)));
            v.push_back(p2 * (2 - std::ldexp(1.0, 1 - f.digits)));
        }
    }
    for (double x : {static_cast<double>(f.max_finite), -static_cast<double>(f.max_finite), 3 * std::ldexp(1.0, f.min_exp - f.digits + 1),
                     kInf, -kInf, kNaN}) {
        v.push_back(x);
    }
    Array a(t, static_cast<i64>(v.size()));
    for (i64 i = 0; i < a.n; ++i) a.set(i, v[static_cast<std::size_t>(i)]);
    return a;
}

// scale_, clip_by_value_, clip_by_norm_ and clip_by_global_norm_ at the half-way points
// of both formats, on every configuration: the results must be those of one rounding
// from double, which a double -> float -> 16-bit cast misses just past a tie.
void test_narrow_halfway() {
    for (gc::DType t : {gc::DType::float16, gc::DType::bfloat16}) {
        const NarrowFormat& fmt = narrow_format(t);
        const double tie = std::ldexp(1.0, -fmt.digits);  // half a quantum, relative to a power of two
        const double top = t == gc::DType::float16 ? 0x1p15 : 0x1p127;  // the largest power of two
        const double to_overflow = static_cast<double>(fmt.overflow_at) / top;  // exact
        List l;
        l.push_back(narrow_edge_values(t));
        // scale_: ties, one double ulp and far (2^-40) to either side, ties from odd
        // significands, ties below a power of two, into the subnormals, to the overflow.
        const double factors[] = {1 + tie, 1 + tie + 0x1p-40, 1 + tie - 0x1p-40, 1 + tie + 0x1p-52, 1 + tie - 0x1p-52,
                                  1 + 3 * tie, 1 + 3 * tie - 0x1p-40, 1 - tie / 2, 1 - tie / 2 - 0x1p-40,
                                  1 - tie / 2 + 0x1p-45, -(1 + tie + 0x1p-40), 0.5, 0.5 + 0x1p-40, 1.5, 1.5 - 0x1p-40,
                                  2.5, to_overflow, to_overflow - 0x1p-40, std::ldexp(1 + tie + 0x1p-40, -fmt.digits - 3)};
        for (double factor : factors) {
            g_case = strf("scale_(%a) %s edge values", factor, gc::dtype_name(t));
            const NarrowBits want = narrow_bits_of(l, [&](std::size_t a, i64 i) { return scaled_bits(l[a], i, factor); });
            for_each_config([&](const Config&) {
                List got = l;
                std::vector<gc::TensorView> v = views_of(got);
                gc::scale_(v.data(), v.size(), factor);
                check_narrow_bits(HERE, "scale_ at half-way points", got, l, want);
            });
        }
        // clip_by_value_: bounds at and just past half-way points, and past the largest
        // finite value (the clamped value rounds to inf then).
        const double bounds[] = {1 + tie, 1 + tie + 0x1p-40, 1 + 3 * tie, 1 - tie / 2, 1 - tie / 2 - 0x1p-40,
                                 static_cast<double>(fmt.overflow_at), static_cast<double>(fmt.overflow_at) * (1 - 0x1p-40)};
        for (double b : bounds) {
            for (const auto& [lo, hi] : {std::pair{-kInf, b}, std::pair{b, kInf}, std::pair{-b, b}}) {
                g_case = strf("clip_by_value_(%a, %a) %s edge values", lo, hi, gc::dtype_name(t));
                const NarrowBits want = narrow_bits_of(l, [&](std::size_t a, i64 i) {
                    const double x = narrow_in(l[a], i);
                    return round_to_narrow(t, x < lo ? lo : (x > hi ? hi : x));
                });
                for_each_config([&](const Config&) {
                    List got = l;
                    std::vector<gc::TensorView> v = views_of(got);
                    gc::clip_by_value_(v.data(), v.size(), lo, hi);
                    check_narrow_bits(HERE, "clip_by_value_ at half-way points", got, l, want);
                });
            }
        }
        // clip_by_norm_ / clip_by_global_norm_ with eps 0 on one-element arrays holding
        // powers of two: every norm is exact, the factor max_norm / x too, so each result
        // is max_norm rounded once, whatever the kernels do with the norm.
        for (double max_norm : {1 - tie / 2, 1 - tie / 2 - 0x1p-40, 1 - tie / 2 + 0x1p-40, 0.5 + tie / 2 + 0x1p-45}) {
            g_case = strf("clip_by_norm_ / clip_by_global_norm_(max_norm=%a) %s powers of two", max_norm, gc::dtype_name(t));
            List ones;
            for (double x : {2.0, 4.0, 1024.0}) {
                ones.push_back(Array(t, 1));
                ones.back().set(0, x);
            }
            const NarrowBits want = narrow_bits_of(ones, [&](std::size_t, i64) { return round_to_narrow(t, max_norm); });
            for_each_config([&](const Config&) {
                for (double ord : {1.0, 2.0, kInf}) {
                    List got = ones;
                    std::vector<gc::TensorView> v = views_of(got);
                    std::vector<double> norms_out(v.size());
                    gc::clip_by_norm_(v.data(), v.size(), max_norm, ord, 0.0, norms_out.data());
                    check_narrow_bits(HERE, "clip_by_norm_ to a half-way max_norm", got, ones, want);
                    List one{ones[0]};
                    std::vector<gc::TensorView> w = views_of(one);
                    gc::clip_by_global_norm_(w.data(), 1, max_norm, ord, 0.0, gc::NonFinitePolicy::propagate, false, 0.0);
                    check_narrow_bits(HERE, "clip_by_global_norm_ to a half-way max_norm", one, List{ones[0]}, NarrowBits{want[0]});
                }
            });
        }
    }
    g_case.clear();
}

// Every target against the scalar one, bit for bit (NaN payloads included), for long
// arrays whose lengths leave tails after every vector width, with 1 and 2 threads: the
// operations whose factor does not come from a norm (a norm may differ between targets
// in its last bits), and clip_by_global_norm_ with a given total.
void test_narrow_targets() {
    Rng r(4040);
    const i64 lengths[] = {1, 7, 31, 33, 1000, 100003};
    for (gc::DType t : {gc::DType::float16, gc::DType::bfloat16}) {
        List l;
        for (i64 n : lengths) {
            Array a = make_array(t, n, Pattern::mixed, r);
            // NaNs with other payloads and signs (a signalling one too), and infinities.
            const std::uint16_t specials[] = {
                t == gc::DType::float16 ? kHalfNaN : kBf16NaN, t == gc::DType::float16 ? std::uint16_t{0xFE01} : std::uint16_t{0xFFC1},
                t == gc::DType::float16 ? std::uint16_t{0x7C01} : std::uint16_t{0x7F81},
                t == gc::DType::float16 ? kHalfNegInf : kBf16NegInf};
            for (std::uint16_t b : specials) a.h[static_cast<std::size_t>(r.below(n))] = b;
            l.push_back(std::move(a));
        }
        struct Op {
            std::string name;
            void (*run)(std::vector<gc::TensorView>&);
        };
        const Op ops[] = {
            {"scale_(0.7071067811865476)", [](std::vector<gc::TensorView>& v) { gc::scale_(v.data(), v.size(), 0.7071067811865476); }},
            {"scale_(-3)", [](std::vector<gc::TensorView>& v) { gc::scale_(v.data(), v.size(), -3.0); }},
            {"scale_(1e-5)", [](std::vector<gc::TensorView>& v) { gc::scale_(v.data(), v.size(), 1e-5); }},
            {"scale_(1 + 2^-9 + 2^-40)", [](std::vector<gc::TensorView>& v) { gc::scale_(v.data(), v.size(), 1 + 0x1p-9 + 0x1p-40); }},
            {"clip_by_value_(-0.3, 0.2)", [](std::vector<gc::TensorView>& v) { gc::clip_by_value_(v.data(), v.size(), -0.3, 0.2); }},
            {"clip_by_value_(-1e5, 3e38)", [](std::vector<gc::TensorView>& v) { gc::clip_by_value_(v.data(), v.size(), -1e5, 3e38); }},
            {"zero_nonfinite_", [](std::vector<gc::TensorView>& v) { gc::zero_nonfinite_(v.data(), v.size()); }},
            {"clip_by_global_norm_(given total 7.3)", [](std::vector<gc::TensorView>& v) {
                 gc::clip_by_global_norm_(v.data(), v.size(), 1.0, 2.0, 1e-6, gc::NonFinitePolicy::propagate, true, 7.3);
             }},
        };
        for (const Op& op : ops) {
            g_case = strf("%s %s, every target against scalar", op.name.c_str(), gc::dtype_name(t));
            List want;
            for_each_config([&](const Config& c) {
                List got = l;
                std::vector<gc::TensorView> v = views_of(got);
                op.run(v);
                if (c.isa == "scalar" && c.threads == 1) {
                    want = got;
                    return;
                }
                for (std::size_t a = 0; a < got.size(); ++a) {
                    check_each(HERE, "16-bit results: the same bits as the scalar target", got[a].n,
                               [&](i64 i) { return got[a].h[static_cast<std::size_t>(i)] == want[a].h[static_cast<std::size_t>(i)]; },
                               [&](i64 i) {
                                   const auto k = static_cast<std::size_t>(i);
                                   return strf("n=%lld: input 0x%04x, got 0x%04x, scalar 0x%04x", ll(got[a].n), l[a].h[k],
                                               got[a].h[k], want[a].h[k]);
                               });
                }
            });
        }
    }
    g_case.clear();
}

void test_clip() {
    test_narrow_reference();
    test_narrow_halfway();
    test_narrow_targets();
    Rng r(202);
    std::vector<NamedList> lists = make_clip_lists(r);
    test_scale(lists);
    test_clip_by_value(lists);
    test_zero_nonfinite(lists);
    test_clip_by_norm(lists);
    test_clip_by_global_norm(lists);
    test_clipped_flag();
    g_case.clear();
}

// ================================================================== area: adaptive_clip

void test_adaptive_clip() {
    Rng r(303);
    const gc::UnitLayout layouts[] = {{1, 7, 5}, {3, 4, 9}, {2, 1, 17}, {1, 33, 1}, {0, 3, 4}, {4, 64, 400}, {2, 5, 8}};
    const std::pair<gc::DType, gc::DType> pairs[] = {{gc::DType::float32, gc::DType::float32},
                                                     {gc::DType::float64, gc::DType::float64},
                                                     {gc::DType::float64, gc::DType::float32},
                                                     {gc::DType::float32, gc::DType::float16},
                                                     {gc::DType::float16, gc::DType::float32},
                                                     {gc::DType::bfloat16, gc::DType::float16},
                                                     {gc::DType::bfloat16, gc::DType::bfloat16},
                                                     {gc::DType::float16, gc::DType::float64}};
    const std::pair<double, double> settings[] = {{0.01, 1e-3}, {0.1, 1e-3}, {1.0, 0.0}};
    auto unit_of = [](const gc::UnitLayout& l, i64 i) { return (i / l.inner) % l.units; };

    // Cases: one pair per layout, and one call with three pairs of different layouts.
    std::vector<std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < std::size(layouts); ++i) groups.push_back({i});
    groups.push_back({0, 1, 6});
    for (const auto& [gt, pt] : pairs) {
        for (const auto& group : groups) {
            List grads, params;
            std::vector<gc::UnitLayout> ls;
            for (std::size_t li : group) {
                const gc::UnitLayout& l = layouts[li];
                const i64 n = l.outer * l.units * l.inner;
                ls.push_back(l);
                Array g(gt, n), p(pt, n);
                for (i64 i = 0; i < n; ++i) {
                    const i64 u = unit_of(l, i);
                    // Parameter units of different scales (some all zero), so that some
                    // units are clipped and others not.
                    const double scale = u % 7 == 3 ? 0.0 : std::ldexp(1.0, static_cast<int>(u % 5) - 2);
                    if (is_narrow(pt)) {
                        p.h[static_cast<std::size_t>(i)] = scale == 0 ? 0 : gen_narrow(pt, r, Kind::normal);
                    } else {
                        p.set(i, scale * r.uniform(-1.0, 1.0));
                    }
                    g.set(i, r.uniform(-0.05, 0.05) * (u % 3 == 0 ? 10.0 : 1.0));
                }
                if (n > 20 && li == 1) g.set(5, kNaN);  // a unit with a NaN is left alone
                grads.push_back(std::move(g));
                params.push_back(std::move(p));
            }
            for (const auto& [clipping, eps] : settings) {
                std::string shape;
                for (const auto& l : ls) shape += strf("(%lld,%lld,%lld)", ll(l.outer), ll(l.units), ll(l.inner));
                g_case = strf("adaptive_clip_ grads %s params %s layouts %s clipping=%g eps=%g", gc::dtype_name(gt),
                              gc::dtype_name(pt), shape.c_str(), clipping, eps);
                // Reference factor per (pair, unit).
                std::vector<std::vector<ld>> factor(ls.size());
                bool ambiguous = false;
                for (std::size_t k = 0; k < ls.size(); ++k) {
                    const gc::UnitLayout& l = ls[k];
                    std::vector<ld> gs(static_cast<std::size_t>(l.units), 0), ps(gs.size(), 0);
                    std::vector<bool> nan(gs.size(), false);
                    for (i64 i = 0; i < grads[k].n; ++i) {
                        const auto u = static_cast<std::size_t>(unit_of(l, i));
                        const ld gv = grads[k].get(i), pv = params[k].get(i);
                        if (std::isnan(gv)) nan[u] = true;
                        gs[u] += gv * gv;
                        ps[u] += pv * pv;
                    }
                    factor[k].assign(gs.size(), 1);
                    for (std::size_t u = 0; u < gs.size(); ++u) {
                        const ld gn = std::sqrt(gs[u]), pn = std::sqrt(ps[u]);
                        const ld limit = static_cast<ld>(clipping) * (pn > eps ? pn : static_cast<ld>(eps));
                        if (!nan[u] && gn > limit) factor[k][u] = limit / gn;
                        if (!nan[u] && std::fabs(gn - limit) <= 1e-9L * limit) ambiguous = true;
                    }
                }
                // 16-bit grads are also checked bit for bit, from the factor of the unit
                // norms the library reports (unit_norms: "the norms adaptive_clip_
                // compares"), so also where the reference factor is ambiguous.
                const bool narrow_grads = is_narrow(gt);
                if (ambiguous && !narrow_grads) continue;
                const ld rel = 1e-12L;
                for_each_config([&](const Config&) {
                    std::vector<gc::TensorView> gv = views_of(grads), pv = views_of(params);
                    i64 units = 0;
                    for (const auto& l : ls) units += l.units;
                    std::vector<double> gn(static_cast<std::size_t>(units)), pn(gn.size());
                    if (narrow_grads) {
                        gc::unit_norms(gv.data(), ls.data(), ls.size(), gn.data());
                        gc::unit_norms(pv.data(), ls.data(), ls.size(), pn.data());
                    }
                    List g = grads;
                    gv = views_of(g);
                    gc::adaptive_clip_(gv.data(), pv.data(), ls.data(), ls.size(), clipping, eps);
                    if (narrow_grads) {
                        std::size_t first_unit = 0;
                        NarrowBits want(ls.size());
                        for (std::size_t k = 0; k < ls.size(); ++k) {
                            const gc::UnitLayout& l = ls[k];
                            want[k] = narrow_bits_of(List{grads[k]}, [&](std::size_t, i64 i) {
                                // max_u = clipping * max(param norm, eps); a unit above it is
                                // scaled by max_u / its norm, in double.
                                const std::size_t u = first_unit + static_cast<std::size_t>(unit_of(l, i));
                                const double limit = clipping * (pn[u] > eps ? pn[u] : eps);
                                return gn[u] > limit ? scaled_bits(grads[k], i, limit / gn[u])
                                                     : grads[k].h[static_cast<std::size_t>(i)];
                            })[0];
                            first_unit += static_cast<std::size_t>(l.units);
                        }
                        check_narrow_bits(HERE, "adaptive_clip_ 16-bit bits", g, grads, want);
                    }
                    if (ambiguous) return;
                    for (std::size_t k = 0; k < ls.size(); ++k) {
                        const gc::UnitLayout& l = ls[k];
                        const Array& src = grads[k];
                        const Array& got = g[k];
                        check_each(HERE, "adaptive_clip_ values", got.n, [&](i64 i) {
                            const ld f = factor[k][static_cast<std::size_t>(unit_of(l, i))];
                            if (f == 1) {  // not clipped: untouched, bit for bit
                                const auto j = static_cast<std::size_t>(i);
                                if (is_narrow(got.dtype)) return got.h[j] == src.h[j];
                                return got.dtype == gc::DType::float32 ? std::memcmp(&got.f[j], &src.f[j], 4) == 0
                                                                       : std::memcmp(&got.d[j], &src.d[j], 8) == 0;
                            }
                            return elem_agrees(got, i, src.get(i) * f, 2, rel);
                        }, [&](i64 i) {
                            return strf("pair %zu unit %lld: got %.17Lg, expected %.17Lg (factor %.17Lg)", k,
                                        ll(unit_of(l, i)), got.get(i),
                                        src.get(i) * factor[k][static_cast<std::size_t>(unit_of(l, i))],
                                        factor[k][static_cast<std::size_t>(unit_of(l, i))]);
                        });
                    }
                });
            }
        }
    }
    g_case.clear();
}

// ================================================================== matrices

// m(i, j) = buf[i * rs + j * cs]; the buffer holds the matrix and whatever padding its
// strides leave, which outputs must not touch.
template <class T>
struct Mat {
    i64 rows = 0, cols = 0, rs = 1, cs = 1;
    std::vector<T> buf;
    Mat() = default;
    Mat(i64 r, i64 c, i64 row_stride, i64 col_stride, T fill_value) : rows(r), cols(c), rs(row_stride), cs(col_stride) {
        const i64 need = r > 0 && c > 0 ? (r - 1) * rs + (c - 1) * cs + 1 : 1;
        buf.assign(static_cast<std::size_t>(need), fill_value);
    }
    T& at(i64 i, i64 j) { return buf[static_cast<std::size_t>(i * rs + j * cs)]; }
    T at(i64 i, i64 j) const { return buf[static_cast<std::size_t>(i * rs + j * cs)]; }
    gc::MatrixRef<T> ref() { return {buf.data(), rows, cols, rs, cs}; }
    gc::MatrixRef<const T> cref() const { return {buf.data(), rows, cols, rs, cs}; }
    void fill_random(Rng& r, double lo = -1.0, double hi = 1.0) {
        for (i64 i = 0; i < rows; ++i) {
            for (i64 j = 0; j < cols; ++j) at(i, j) = static_cast<T>(r.uniform(lo, hi));
        }
    }
    void fill_value(T v) {
        for (i64 i = 0; i < rows; ++i) {
            for (i64 j = 0; j < cols; ++j) at(i, j) = v;
        }
    }
    // Every buffer element outside the matrix still holds `sentinel`.
    bool padding_intact(T sentinel) const {
        std::vector<char> inside(buf.size(), 0);
        for (i64 i = 0; i < rows; ++i) {
            for (i64 j = 0; j < cols; ++j) inside[static_cast<std::size_t>(i * rs + j * cs)] = 1;
        }
        for (std::size_t k = 0; k < buf.size(); ++k) {
            if (!inside[k] && std::memcmp(&buf[k], &sentinel, sizeof(T)) != 0) return false;
        }
        return true;
    }
};

// layout 0: row-major; 1: row-major with padded rows; 2: column-major (padded).
template <class T>
Mat<T> make_mat(i64 rows, i64 cols, int layout, T fill_value) {
    if (layout == 2) return Mat<T>(rows, cols, 1, rows + 2, fill_value);
    return Mat<T>(rows, cols, std::max<i64>(cols, 1) + (layout == 1 ? 3 : 0), 1, fill_value);
}
// Outputs (unit column stride).
template <class T>
Mat<T> make_out(i64 rows, i64 cols, bool padded, T fill_value) {
    return Mat<T>(rows, cols, std::max<i64>(cols, 1) + (padded ? 2 : 0), 1, fill_value);
}

template <class T>
const char* type_name() {
    return sizeof(T) == 4 ? "f32" : "f64";
}

// Check a matrix against ref/bound (row-major, rows x cols).
template <class T>
bool check_matrix(Where w, const char* what, const Mat<T>& got, const std::vector<ld>& ref, const std::vector<ld>& bound) {
    return check_each(w, what, got.rows * got.cols, [&](i64 k) {
        const ld g = got.at(k / got.cols, k % got.cols);
        return agrees(g, ref[static_cast<std::size_t>(k)], bound[static_cast<std::size_t>(k)]);
    }, [&](i64 k) {
        return strf("(%lld, %lld): got %.17Lg, expected %.17Lg (tolerance %.3Lg)", ll(k / got.cols), ll(k % got.cols),
                    static_cast<ld>(got.at(k / got.cols, k % got.cols)), ref[static_cast<std::size_t>(k)],
                    bound[static_cast<std::size_t>(k)]);
    });
}

// ================================================================== area: complex

bool same_double(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }


// A complex64 (C = float) or complex128 (C = double) array as interleaved components.
struct ComplexArray {
    gc::DType dtype;
    i64 n;
    std::vector<float> f;
    std::vector<double> d;
    ComplexArray(gc::DType t, i64 size) : dtype(t), n(size) {
        (t == gc::DType::complex64 ? f.assign(2 * size, 0.0f) : d.assign(2 * size, 0.0));
    }
    ld re(i64 i) const { return dtype == gc::DType::complex64 ? f[2 * i] : d[2 * i]; }
    ld im(i64 i) const { return dtype == gc::DType::complex64 ? f[2 * i + 1] : d[2 * i + 1]; }
    ld component(i64 k) const { return dtype == gc::DType::complex64 ? f[k] : d[k]; }
    void set(i64 k, double v) { dtype == gc::DType::complex64 ? void(f[k] = static_cast<float>(v)) : void(d[k] = v); }
    gc::TensorView view() { return {dtype == gc::DType::complex64 ? static_cast<void*>(f.data()) : d.data(), n, dtype}; }
};
using ComplexList = std::vector<ComplexArray>;

enum class ComplexFill { normal, huge, tiny, special, zero };
const char* complex_fill_name(ComplexFill p) {
    switch (p) {
        case ComplexFill::normal: return "normal";
        case ComplexFill::huge: return "huge";
        case ComplexFill::tiny: return "tiny";
        case ComplexFill::special: return "nan/inf components";
        case ComplexFill::zero: return "zero";
    }
    return "?";
}

// huge and tiny: components whose squares overflow or underflow float64 (complex128),
// or the extremes of float32 (complex64), where |z| is still a finite, normal number.
ComplexArray make_complex(gc::DType t, i64 n, ComplexFill p, Rng& r) {
    ComplexArray a(t, n);
    const bool wide = t == gc::DType::complex128;
    for (i64 k = 0; k < 2 * n; ++k) {
        double v = r.uniform(-2.0, 2.0);
        if (p == ComplexFill::huge) v *= wide ? 1e300 : 1e37;
        if (p == ComplexFill::tiny) v *= wide ? 1e-300 : 1e-40;
        if (p == ComplexFill::zero) v = 0.0;
        a.set(k, v);
    }
    if (p == ComplexFill::special && n > 0) {
        a.set(2 * r.below(n) + 1, kInf);  // an inf imaginary part
        if (n > 2) a.set(2 * r.below(n), r.coin() ? kNaN : -kInf);
    }
    return a;
}

// The ord-norm of |z| = hypot(re, im) over all elements; NaN if any component is NaN.
ld reference_complex_norm(const std::vector<const ComplexArray*>& arrays, double ord) {
    bool nan = false, inf = false;
    ld m = 0;
    for (const ComplexArray* a : arrays) {
        for (i64 i = 0; i < a->n; ++i) {
            const ld x = a->re(i), y = a->im(i);
            nan |= std::isnan(x) || std::isnan(y);
            inf |= std::isinf(x) || std::isinf(y);
            if (std::isfinite(x) && std::isfinite(y)) m = std::max(m, std::hypot(x, y));
        }
    }
    if (nan) return kNaNL;
    if (inf) return std::numeric_limits<ld>::infinity();
    if (m == 0 || ord == kInf) return m;
    ld sum = 0;
    for (const ComplexArray* a : arrays) {
        for (i64 i = 0; i < a->n; ++i) {
            const ld q = std::hypot(a->re(i), a->im(i)) / m;
            sum += ord == 1.0 ? q : ord == 2.0 ? q * q : std::pow(q, static_cast<ld>(ord));
        }
    }
    return ord == 1.0 ? m * sum : ord == 2.0 ? m * std::sqrt(sum) : m * std::pow(sum, 1.0L / static_cast<ld>(ord));
}

// As norm_agrees, but the max is a rounded sqrt, not a copy of an element.
bool complex_norm_agrees(double got, ld ref, double ord, i64 n) {
    if (std::isnan(ref)) return std::isnan(got);
    if (std::isinf(ref)) return got == kInf;
    return std::fabs(static_cast<ld>(got) - ref) <= (norm_rtol(ord, n) + 4 * eps_of<double>()) * ref + 2 * denorm_of<double>();
}

// global_norm and norms of a list on every configuration: against the reference, each
// SIMD target against the scalar target, 1 and 2 threads bit for bit.
void complex_norm_case(ComplexList& arrays, const std::vector<gc::TensorView>& views, i64 total) {
    const std::size_t count = views.size();
    std::vector<const ComplexArray*> all;
    for (const ComplexArray& a : arrays) all.push_back(&a);
    std::vector<std::vector<double>> results;
    std::vector<double> scalar;
    for_each_config([&](const Config& c) {
        std::vector<double> out;
        for (double ord : kOrds) {
            const double g = gc::global_norm(views.data(), count, ord);
            const ld ref = reference_complex_norm(all, ord);
            CHECK(complex_norm_agrees(g, ref, ord, total), "global_norm(ord=%g) = %.17g, expected %.17Lg", ord, g, ref);
            std::vector<double> each(count, -7.0);
            gc::norms(views.data(), count, ord, each.data());
            for (std::size_t a = 0; a < count; ++a) {
                const ld r1 = reference_complex_norm({all[a]}, ord);
                CHECK(complex_norm_agrees(each[a], r1, ord, arrays[a].n), "norms(ord=%g)[%zu] = %.17g, expected %.17Lg",
                      ord, a, each[a], r1);
            }
            out.push_back(g);
            out.insert(out.end(), each.begin(), each.end());
        }
        if (c.isa == "scalar") scalar = out;
        for (std::size_t k = 0; k < out.size() && k < scalar.size(); ++k) {
            const ld s = scalar[k];
            CHECK(complex_norm_agrees(out[k], s, 3.0, total), "result %zu = %.17g, the scalar target's %.17g", k, out[k],
                  scalar[k]);
        }
        results.push_back(std::move(out));
    });
    check_thread_independent(HERE, results, "complex norms independent of the thread count");
}

void test_complex_norms(Rng& r) {
    const i64 sizes[] = {0, 1, 2, 3, 5, 8, 9, 16, 17, 33, 1000, 32769};
    const ComplexFill fills[] = {ComplexFill::normal, ComplexFill::huge, ComplexFill::tiny, ComplexFill::special,
                                 ComplexFill::zero};
    for (gc::DType t : {gc::DType::complex64, gc::DType::complex128}) {
        for (i64 n : sizes) {
            for (ComplexFill p : fills) {
                if (n > 1000 && p != ComplexFill::normal && p != ComplexFill::tiny) continue;
                ComplexList l;
                l.push_back(make_complex(t, n, p, r));
                g_case = strf("one array %s n=%lld %s", gc::dtype_name(t), ll(n), complex_fill_name(p));
                std::vector<gc::TensorView> v{l[0].view()};
                complex_norm_case(l, v, n);
            }
        }
    }
    // Mixed with real arrays, and huge with tiny in one list.
    ComplexList l;
    l.push_back(make_complex(gc::DType::complex128, 40, ComplexFill::huge, r));
    l.push_back(make_complex(gc::DType::complex64, 100, ComplexFill::normal, r));
    l.push_back(make_complex(gc::DType::complex128, 33, ComplexFill::tiny, r));
    std::vector<gc::TensorView> v;
    for (ComplexArray& a : l) v.push_back(a.view());
    g_case = "list: complex128 huge + complex64 normal + complex128 tiny";
    complex_norm_case(l, v, 173);

    Array real = make_array(gc::DType::float64, 50, Pattern::normal, r);
    ComplexArray z = make_complex(gc::DType::complex64, 50, ComplexFill::normal, r);
    ComplexArray as_complex(gc::DType::complex128, 50);  // the real array as complex numbers
    for (i64 i = 0; i < 50; ++i) as_complex.set(2 * i, static_cast<double>(real.get(i)));
    g_case = "list: float64 with complex64 is the norm of both as complex";
    const std::vector<gc::TensorView> mixed{real.view(), z.view()}, both{as_complex.view(), z.view()};
    for_each_config([&](const Config&) {
        for (double ord : kOrds) {
            const double a = gc::global_norm(mixed.data(), 2, ord), b = gc::global_norm(both.data(), 2, ord);
            CHECK(complex_norm_agrees(a, b, ord, 100), "ord=%g: %.17g, as complex %.17g", ord, a, b);
        }
    });
}

// Clipping scales both components by the factor of the reference norm; policy zero
// zeroes components one by one.
void test_complex_clip(Rng& r) {
    for (gc::DType t : {gc::DType::complex64, gc::DType::complex128}) {
        for (i64 n : {i64{1}, i64{7}, i64{17}, i64{1000}}) {
            g_case = strf("clip %s n=%lld", gc::dtype_name(t), ll(n));
            const ComplexArray orig = make_complex(t, n, ComplexFill::normal, r);
            const ld norm = reference_complex_norm({&orig}, 2.0);
            // The factor of the norm the call returns (checked against the reference):
            // the float32 kernel multiplies by it rounded to float32, hence 2 ulps.
            ld factor = 0;
            const ld ulps = 2;
            auto scaled_ok = [&](const ComplexArray& got) {
                for (i64 k = 0; k < 2 * n; ++k) {
                    const ld want = orig.component(k) * factor;
                    const bool ok = t == gc::DType::complex64 ? agrees_in<float>(got.f[k], want, ulps)
                                                              : agrees_in<double>(got.d[k], want, ulps);
                    if (!ok) return false;
                }
                return true;
            };
            for_each_config([&](const Config&) {
                ComplexArray a = orig;
                gc::TensorView v = a.view();
                double out = -1;
                gc::clip_by_norm_(&v, 1, 0.5, 2.0, 1e-6, &out);
                CHECK(complex_norm_agrees(out, norm, 2.0, n), "clip_by_norm_ norm %.17g, expected %.17Lg", out, norm);
                factor = clip_factor_ref(0.5L, out, 1e-6L);
                CHECK(scaled_ok(a), "clip_by_norm_: components not scaled by %.17Lg", factor);
                a = orig;
                const gc::GlobalClipResult g = gc::clip_by_global_norm_(&v, 1, 0.5, 2.0, 1e-6,
                                                                        gc::NonFinitePolicy::propagate, false, 0.0);
                CHECK(g.clipped && complex_norm_agrees(g.total_norm, norm, 2.0, n), "clip_by_global_norm_ total %.17g",
                      g.total_norm);
                factor = clip_factor_ref(0.5L, g.total_norm, 1e-6L);
                CHECK(scaled_ok(a), "clip_by_global_norm_: components not scaled by %.17Lg", factor);
            });
        }
        g_case = strf("clip %s policy zero", gc::dtype_name(t));
        ComplexArray orig = make_complex(t, 9, ComplexFill::normal, r);
        orig.set(3, kNaN);   // re of element 1
        orig.set(8, -kInf);  // re of element 4
        orig.set(11, kInf);  // im of element 5
        ComplexArray zeroed = orig;
        for (i64 k : {3, 8, 11}) zeroed.set(k, 0.0);
        const ld norm = reference_complex_norm({&zeroed}, 2.0);
        for_each_config([&](const Config&) {
            ComplexArray a = orig;
            gc::TensorView v = a.view();
            const gc::GlobalClipResult g =
                gc::clip_by_global_norm_(&v, 1, 1e6, 2.0, 1e-6, gc::NonFinitePolicy::zero, false, 0.0);
            CHECK(g.nonfinite && std::isnan(g.total_norm) && g.clipped, "zero: total %g clipped %d", g.total_norm,
                  int(g.clipped));
            bool same = true;
            for (i64 k = 0; k < 18; ++k) same &= a.component(k) == zeroed.component(k);
            CHECK(same, "zero: only the NaN/inf components become 0, the others keep their values");
            a = orig;
            gc::clip_by_global_norm_(&v, 1, 0.25, 2.0, 0.0, gc::NonFinitePolicy::zero, false, 0.0);
            bool scaled = true;
            for (i64 k = 0; k < 18; ++k) {
                const ld want = zeroed.component(k) * (0.25L / norm);
                scaled &= t == gc::DType::complex64 ? agrees_in<float>(a.f[k], want, 1) : agrees_in<double>(a.d[k], want, 2);
            }
            CHECK(scaled, "zero then clip: scaled by 0.25 / the norm of what remains (%.17Lg)", norm);
        });
    }
}

// The operations that have no meaning for complex numbers refuse them, writing nothing;
// the C ABI takes complex where the C++ API does.
void test_complex_refusals(Rng& r) {
    g_case = "complex refused";
    ComplexArray z = make_complex(gc::DType::complex64, 8, ComplexFill::normal, r);
    const ComplexArray before = z;
    gc::TensorView v = z.view();
    double d[1];
    std::int64_t c[1];
    EXPECT_INVALID("clip_by_value_ of complex64", gc::clip_by_value_(&v, 1, -0.1, 0.1));
    EXPECT_INVALID("zero_nonfinite_ of complex64", gc::zero_nonfinite_(&v, 1));
    EXPECT_INVALID("scale_ of complex64", gc::scale_(&v, 1, 0.5));
    EXPECT_INVALID("grad_stats of complex64", gc::grad_stats(&v, 1, d, d, c));
    CHECK(z.f == before.f, "a refused call wrote the array");

    g_case = "C ABI complex";
    ComplexArray w = make_complex(gc::DType::complex128, 21, ComplexFill::normal, r);
    gc::TensorView wv = w.view();
    const gc_tensor t{wv.data, wv.numel, GC_COMPLEX128};
    double out = -1;
    CHECK(gc_global_norm(&t, 1, 1.0, &out) == GC_OK && same_double(out, gc::global_norm(&wv, 1, 1.0)),
          "gc_global_norm of complex128: %s", gc_last_error());
    CHECK(gc_clip_by_value(&t, 1, -1.0, 1.0) == GC_INVALID_ARGUMENT, "gc_clip_by_value took complex128");
    const gc_tensor int64_code{wv.data, wv.numel, 4};
    CHECK(gc_global_norm(&int64_code, 1, 2.0, &out) == GC_INVALID_ARGUMENT &&
              std::strstr(gc_last_error(), "unknown dtype") != nullptr,
          "dtype 4 is not a gc_dtype: %s", gc_last_error());
}

void test_complex() {
    Rng r(1234);
    test_complex_norms(r);
    test_complex_clip(r);
    test_complex_refusals(r);
    g_case.clear();
}

// ================================================================== area: gemm

template <class T>
void gemm_case(Rng& r, i64 m, i64 n, i64 k, bool ta, bool tb, T alpha, T beta, i64 pad, i64 es) {
    g_case = strf("gemm<%s> m=%lld n=%lld k=%lld trans_a=%d trans_b=%d alpha=%g beta=%g pad=%lld elem_stride=%lld",
                  type_name<T>(), ll(m), ll(n), ll(k), ta, tb, static_cast<double>(alpha), static_cast<double>(beta),
                  ll(pad), ll(es));
    // Stored A is (k x m) when transposed, else (m x k); elements es apart in a row.
    const i64 ar = ta ? k : m, ac = ta ? m : k;
    const i64 lda = std::max<i64>(ac * es + pad, 1);
    Mat<T> A(ar, ac, lda, es, T(0));
    A.fill_random(r);
    const gc::MatrixRef<const T> a = ta ? gc::MatrixRef<const T>{A.buf.data(), m, k, es, lda}
                                        : gc::MatrixRef<const T>{A.buf.data(), m, k, lda, es};
    const i64 br = tb ? n : k, bc = tb ? k : n;
    const i64 ldb = std::max<i64>(bc * es + pad, 1);
    Mat<T> B(br, bc, ldb, es, T(0));
    B.fill_random(r);
    const gc::MatrixRef<const T> b = tb ? gc::MatrixRef<const T>{B.buf.data(), k, n, es, ldb}
                                        : gc::MatrixRef<const T>{B.buf.data(), k, n, ldb, es};
    const T sentinel = T(12345.0);
    Mat<T> C0(m, n, std::max<i64>(n, 1) + pad, 1, sentinel);
    if (beta == T(0)) {
        C0.fill_value(nan_of<T>());  // beta == 0 never reads C
    } else {
        C0.fill_random(r);
    }
    auto op_a = [&](i64 i, i64 p) -> ld { return ta ? A.at(p, i) : A.at(i, p); };
    auto op_b = [&](i64 p, i64 j) -> ld { return tb ? B.at(j, p) : B.at(p, j); };
    std::vector<ld> ref(static_cast<std::size_t>(m * n)), bound(ref.size());
    for (i64 i = 0; i < m; ++i) {
        for (i64 j = 0; j < n; ++j) {
            ld s = 0, sa = 0;
            for (i64 p = 0; p < k; ++p) {
                const ld t = op_a(i, p) * op_b(p, j);
                s += t;
                sa += std::fabs(t);
            }
            const ld c = beta == T(0) ? 0 : static_cast<ld>(C0.at(i, j));
            const std::size_t idx = static_cast<std::size_t>(i * n + j);
            ref[idx] = static_cast<ld>(alpha) * s + static_cast<ld>(beta) * c;
            bound[idx] = static_cast<ld>(k + 4) * eps_of<T>() * (std::fabs(static_cast<ld>(alpha)) * sa +
                                                                  std::fabs(static_cast<ld>(beta) * c)) +
                         2 * ulp_of<T>(ref[idx]);
        }
    }
    for_each_config([&](const Config&) {
        Mat<T> C = C0;
        gc::gemm(a, b, C.ref(), alpha, beta);
        check_matrix(HERE, "gemm values", C, ref, bound);
        CHECK(C.padding_intact(sentinel), "gemm wrote outside C (into the padding of its rows)");
    });
}

template <class T>
void gemm_tests(Rng& r) {
    const std::pair<double, double> ab[] = {{1.0, 0.0}, {-0.5, 0.0}, {1.25, 1.0}, {0.75, -0.5}};
    int idx = 0;
    // Every small shape around the micro-tiles (4x4 scalar, 6x16/6x8 AVX2, 8x32/8x16 AVX-512).
    const i64 small[] = {1, 5, 6, 7, 8, 16, 17};
    for (i64 m : small) {
        for (i64 n : small) {
            for (i64 k : {i64{1}, i64{8}, i64{17}}) {
                for (int t = 0; t < 4; ++t) {
                    const auto& [alpha, beta] = ab[idx % 4];
                    gemm_case<T>(r, m, n, k, t & 1, t & 2, T(alpha), T(beta), idx % 3 == 0 ? 3 : 0, 1);
                    ++idx;
                }
            }
        }
    }
    // Each dimension over the sizes around the tiles and the cache blocks (MC = 144 for
    // float32 / 72 for float64, KC = 256, rows <= 64 read B in place).
    const i64 sizes[] = {1, 5, 6, 7, 8, 16, 17, 63, 65, 144, 145, 257};
    std::vector<std::array<i64, 3>> shapes;
    for (i64 s : sizes) {
        shapes.push_back({s, 17, 65});
        shapes.push_back({9, s, 33});
        shapes.push_back({16, 7, s});
    }
    const std::array<i64, 3> more[] = {{63, 65, 257}, {144, 145, 257}, {145, 144, 63}, {70, 70, 70}, {64, 33, 20},
                                       {65, 33, 20},  {73, 40, 30},    {2, 3075, 5},   {9, 17, 600}, {257, 257, 257}};
    shapes.insert(shapes.end(), std::begin(more), std::end(more));
    for (const auto& s : shapes) {
        for (int t = 0; t < 4; ++t) {
            const auto& [alpha, beta] = ab[idx % 4];
            gemm_case<T>(r, s[0], s[1], s[2], t & 1, t & 2, T(alpha), T(beta), idx % 2 ? 5 : 0, 1);
            ++idx;
        }
    }
    // Non-unit element strides in A and B (any strides are allowed).
    for (int t = 0; t < 4; ++t) {
        gemm_case<T>(r, 13, 19, 21, t & 1, t & 2, T(1), T(0), 1, 2);
        gemm_case<T>(r, 70, 33, 40, t & 1, t & 2, T(0.5), T(2), 0, 3);
    }
    // k = 0: C = beta C; alpha = 0.
    gemm_case<T>(r, 5, 7, 0, false, false, T(1), T(0), 0, 1);
    gemm_case<T>(r, 5, 7, 0, true, true, T(1), T(0.5), 2, 1);
    gemm_case<T>(r, 6, 8, 9, false, false, T(0), T(0), 0, 1);
    gemm_case<T>(r, 6, 8, 9, false, true, T(0), T(-1), 0, 1);
    // Empty operands passed as null pointers (what an empty std::vector gives).
    g_case = strf("gemm<%s> empty operands as null pointers", type_name<T>());
    for_each_config([&](const Config&) {
        std::vector<T> c(12, T(3));
        gc::gemm(gc::MatrixRef<const T>{nullptr, 0, 5, 5, 1}, gc::MatrixRef<const T>{c.data(), 5, 4, 4, 1},
                 gc::MatrixRef<T>{nullptr, 0, 4, 4, 1}, T(1), T(0));
        gc::gemm(gc::MatrixRef<const T>{c.data(), 3, 4, 4, 1}, gc::MatrixRef<const T>{c.data(), 4, 0, 1, 1},
                 gc::MatrixRef<T>{nullptr, 3, 0, 1, 1}, T(1), T(0));
        gc::gemm(gc::MatrixRef<const T>{nullptr, 3, 0, 1, 1}, gc::MatrixRef<const T>{nullptr, 0, 4, 4, 1},
                 gc::MatrixRef<T>{c.data(), 3, 4, 4, 1}, T(1), T(0.5));
        CHECK(std::all_of(c.begin(), c.end(), [](T v) { return v == T(1.5); }), "k = 0, beta = 0.5: C != 0.5 C");
        gc::gemm(gc::MatrixRef<const T>{nullptr, 3, 0, 1, 1}, gc::MatrixRef<const T>{nullptr, 0, 4, 4, 1},
                 gc::MatrixRef<T>{c.data(), 3, 4, 4, 1}, T(1), T(0));
        CHECK(std::all_of(c.begin(), c.end(), [](T v) { return v == T(0); }), "k = 0, beta = 0: C != 0");
    });
    g_case.clear();
}

void test_gemm() {
    Rng r(404);
    gemm_tests<float>(r);
    gemm_tests<double>(r);
}

// ================================================================== area: dense

const char* act_name(gc::Activation a) {
    switch (a) {
        case gc::Activation::identity: return "identity";
        case gc::Activation::relu: return "relu";
        case gc::Activation::leaky_relu: return "leaky_relu";
        case gc::Activation::tanh: return "tanh";
        case gc::Activation::sigmoid: return "sigmoid";
        case gc::Activation::elu: return "elu";
        case gc::Activation::silu: return "silu";
        case gc::Activation::gelu: return "gelu";
        case gc::Activation::gelu_tanh: return "gelu_tanh";
        case gc::Activation::prelu: return "prelu";
    }
    return "?";
}

ld sigmoid_ref(ld z) {
    if (z >= 0) return 1 / (1 + std::exp(-z));
    const ld e = std::exp(z);
    return e / (1 + e);
}

ld act_ref(gc::Activation a, ld z, ld slope) {
    switch (a) {
        case gc::Activation::relu: return z > 0 ? z : 0;
        case gc::Activation::leaky_relu: return z < 0 ? z * slope : z;
        case gc::Activation::tanh: return std::tanh(z);
        case gc::Activation::sigmoid: return sigmoid_ref(z);
        default: break;  // the saved-derivative ones: saved_act_ref
    }
    return z;
}

// y and dy/dz of the activations whose backward reads the forward's saved array (alpha
// 0.7 for elu, the slope for prelu), in long double from the definitions.
void saved_act_ref(gc::Activation a, ld z, ld slope, ld& y, ld& d) {
    const ld c = std::sqrt(2.0L / 3.14159265358979323846264338327950288L), k = 0.044715L;
    switch (a) {
        case gc::Activation::elu:
            y = z > 0 ? z : 0.7L * std::expm1(z), d = z > 0 ? 1 : 0.7L * std::exp(z);
            return;
        case gc::Activation::silu: {
            const ld s = sigmoid_ref(z);
            y = z * s, d = s * (1 + z * (1 - s));
            return;
        }
        case gc::Activation::gelu: {
            const ld cdf = 0.5L * std::erfc(-z / std::sqrt(2.0L));
            y = z * cdf, d = cdf + z * std::exp(-z * z / 2) / std::sqrt(2 * 3.14159265358979323846264338327950288L);
            return;
        }
        case gc::Activation::gelu_tanh: {
            const ld t = std::tanh(c * (z + k * z * z * z));
            y = 0.5L * z * (1 + t), d = 0.5L * (1 + t) + 0.5L * z * (1 - t * t) * c * (1 + 3 * k * z * z);
            return;
        }
        case gc::Activation::prelu:
            y = z > 0 ? z : slope * z, d = z;  // prelu saves z itself
            return;
        default:
            y = z, d = 1;
    }
}

// Forward with saved and backward from it, through the C++ API, against saved_act_ref
// applied to the identity layer's z (the same GEMM); prelu with one slope per feature.
template <class T>
void check_saved_activations(Rng& r) {
    const i64 batch = 7, in = 5, out = 300;  // 300: two column strips in the backward
    std::vector<T> x(batch * in), w(out * in), b(out), gy(batch * out), slopes(out);
    for (auto& v : x) v = static_cast<T>(r.uniform(-2, 2));
    for (auto& v : w) v = static_cast<T>(r.uniform(-1, 1));
    for (auto& v : b) v = static_cast<T>(r.uniform(-1, 1));
    for (auto& v : gy) v = static_cast<T>(r.uniform(-1, 1));
    for (i64 j = 0; j < out; ++j) slopes[j] = static_cast<T>(-0.2 + 0.003 * static_cast<double>(j));
    const gc::MatrixRef<const T> xm{x.data(), batch, in, in, 1}, wm{w.data(), out, in, in, 1};
    std::vector<T> z(batch * out);
    gc::dense_forward(gc::DenseForward<T>{xm, wm, b.data(), {z.data(), batch, out, out, 1},
                                          gc::Activation::identity, 0.0});
    const ld tol = sizeof(T) == 4 ? 1e-6L : 1e-14L;
    for (gc::Activation a : {gc::Activation::elu, gc::Activation::silu, gc::Activation::gelu,
                             gc::Activation::gelu_tanh, gc::Activation::prelu}) {
        g_case = act_name(a);
        std::vector<T> y(batch * out), saved(batch * out), gx(batch * in), gw(out * in), gb(out), ga(out);
        gc::DenseForward<T> f{xm, wm, b.data(), {y.data(), batch, out, out, 1}, a, 0.0};
        f.alpha = 0.7;
        f.prelu_weight = slopes.data(), f.prelu_weight_count = out;
        f.saved = {saved.data(), batch, out, out, 1};
        gc::dense_forward(f);
        gc::DenseBackward<T> bw{{gy.data(), batch, out, out, 1}, xm, wm, {nullptr, batch, out, out, 1}, a, 0.0,
                                {gx.data(), batch, in, in, 1}, {gw.data(), out, in, in, 1}, gb.data(), false};
        bw.alpha = 0.7;
        bw.prelu_weight = slopes.data(), bw.prelu_weight_count = out;
        bw.saved = {saved.data(), batch, out, out, 1};
        bw.grad_prelu_weight = ga.data();
        gc::dense_backward(bw);
        ld worst = 0, worst_grad = 0;
        std::vector<ld> gz(batch * out), gb_ref(out, 0), ga_ref(out, 0);
        for (i64 i = 0; i < batch * out; ++i) {
            ld yr, dr;
            saved_act_ref(a, z[i], slopes[i % out], yr, dr);
            worst = std::max(worst, std::fabs(y[i] - yr) / std::max<ld>(1, std::fabs(yr)));
            worst = std::max(worst, std::fabs(saved[i] - dr) / std::max<ld>(1, std::fabs(dr)));
            const ld slope_d = a == gc::Activation::prelu ? (z[i] > 0 ? 1 : slopes[i % out]) : dr;
            gz[i] = gy[i] * slope_d;
            gb_ref[i % out] += gz[i];
            if (a == gc::Activation::prelu && z[i] <= 0) ga_ref[i % out] += gy[i] * static_cast<ld>(z[i]);
        }
        for (i64 j = 0; j < out; ++j) {
            worst_grad = std::max(worst_grad, std::fabs(gb[j] - gb_ref[j]) / std::max<ld>(1, std::fabs(gb_ref[j])));
            if (a == gc::Activation::prelu) {
                worst_grad = std::max(worst_grad, std::fabs(ga[j] - ga_ref[j]) / std::max<ld>(1, std::fabs(ga_ref[j])));
            }
        }
        for (i64 i = 0; i < batch; ++i) {
            for (i64 c = 0; c < in; ++c) {
                ld s = 0;
                for (i64 j = 0; j < out; ++j) s += gz[i * out + j] * w[j * in + c];
                worst_grad = std::max(worst_grad, std::fabs(gx[i * in + c] - s) / std::max<ld>(1, std::fabs(s)));
            }
        }
        CHECK(worst <= tol, "%s: forward / saved off by %.3Lg (relative to max(1, |ref|))", act_name(a), worst);
        CHECK(worst_grad <= 100 * tol, "%s: backward off by %.3Lg", act_name(a), worst_grad);
    }
}

// d act / dz, from the output y (what the backward reads).
ld dact_from_y(gc::Activation a, ld y, ld slope) {
    switch (a) {
        case gc::Activation::relu: return y > 0 ? 1 : 0;
        case gc::Activation::leaky_relu: return y > 0 ? 1 : slope;
        case gc::Activation::tanh: return 1 - y * y;
        case gc::Activation::sigmoid: return y * (1 - y);
        default: break;
    }
    return 1;
}

template <class T>
void dense_case(Rng& r, i64 batch, i64 in, i64 out, gc::Activation act, bool with_bias, int layout) {
    const double slope = 0.1;
    const ld slope_t = static_cast<ld>(static_cast<T>(slope));
    const std::string base = strf("dense<%s> batch=%lld in=%lld out=%lld %s bias=%d layout=%d", type_name<T>(),
                                  ll(batch), ll(in), ll(out), act_name(act), with_bias, layout);
    const T sentinel = T(-4242.0);
    Mat<T> x = make_mat<T>(batch, in, layout, sentinel), w = make_mat<T>(out, in, layout, sentinel);
    x.fill_random(r);
    w.fill_random(r, -0.5, 0.5);
    std::vector<T> bias(static_cast<std::size_t>(std::max<i64>(out, 1)));
    fill_uniform(bias, r, -0.5, 0.5);
    const ld eps = eps_of<T>();

    // ---- forward: y = act(x W^T + b)
    std::vector<ld> y_ref(static_cast<std::size_t>(batch * out)), y_bound(y_ref.size());
    for (i64 i = 0; i < batch; ++i) {
        for (i64 j = 0; j < out; ++j) {
            ld z = with_bias ? static_cast<ld>(bias[static_cast<std::size_t>(j)]) : 0, za = std::fabs(z);
            for (i64 p = 0; p < in; ++p) {
                const ld t = static_cast<ld>(x.at(i, p)) * w.at(j, p);
                z += t;
                za += std::fabs(t);
            }
            const std::size_t k = static_cast<std::size_t>(i * out + j);
            y_ref[k] = act_ref(act, z, slope_t);
            // the GEMM's error passes through act (Lipschitz <= 1), then a few ulp of act
            y_bound[k] = 2 * static_cast<ld>(in + 4) * eps * za + 8 * ulp_of<T>(y_ref[k]);
        }
    }
    g_case = base + " forward";
    for_each_config([&](const Config&) {
        Mat<T> y = make_out<T>(batch, out, layout == 1, sentinel);
        y.fill_value(nan_of<T>());
        gc::dense_forward(gc::DenseForward<T>{x.cref(), w.cref(), with_bias ? bias.data() : nullptr, y.ref(), act, slope});
        check_matrix(HERE, "dense_forward y", y, y_ref, y_bound);
        CHECK(y.padding_intact(sentinel), "dense_forward wrote outside y");
    });

    // ---- backward from y (the reference forward output, rounded to T)
    Mat<T> y = make_out<T>(batch, out, layout == 1, sentinel), gy = make_out<T>(batch, out, layout == 1, sentinel);
    for (i64 i = 0; i < batch; ++i) {
        for (i64 j = 0; j < out; ++j) y.at(i, j) = static_cast<T>(y_ref[static_cast<std::size_t>(i * out + j)]);
    }
    gy.fill_random(r);
    // grad_z and a bound of its rounding error in T
    std::vector<ld> gz(static_cast<std::size_t>(batch * out)), gz_err(gz.size());
    for (i64 i = 0; i < batch; ++i) {
        for (i64 j = 0; j < out; ++j) {
            const ld g = gy.at(i, j), yy = y.at(i, j);
            const std::size_t k = static_cast<std::size_t>(i * out + j);
            gz[k] = g * dact_from_y(act, yy, slope_t);
            gz_err[k] = 4 * eps * std::fabs(g) * (1 + std::fabs(yy) + yy * yy);
        }
    }
    auto gzv = [&](i64 i, i64 j) { return gz[static_cast<std::size_t>(i * out + j)]; };
    auto gze = [&](i64 i, i64 j) { return gz_err[static_cast<std::size_t>(i * out + j)]; };
    std::vector<ld> gx_ref(static_cast<std::size_t>(batch * in)), gx_bound(gx_ref.size());
    for (i64 i = 0; i < batch; ++i) {
        for (i64 j = 0; j < in; ++j) {
            ld s = 0, e = 0;
            for (i64 k = 0; k < out; ++k) {
                s += gzv(i, k) * w.at(k, j);
                e += (static_cast<ld>(out + 4) * eps * std::fabs(gzv(i, k)) + gze(i, k)) * std::fabs(static_cast<ld>(w.at(k, j)));
            }
            gx_ref[static_cast<std::size_t>(i * in + j)] = s;
            gx_bound[static_cast<std::size_t>(i * in + j)] = 2 * e;
        }
    }
    std::vector<ld> gw_ref(static_cast<std::size_t>(out * in)), gw_bound(gw_ref.size());
    for (i64 k = 0; k < out; ++k) {
        for (i64 j = 0; j < in; ++j) {
            ld s = 0, e = 0;
            for (i64 i = 0; i < batch; ++i) {
                s += gzv(i, k) * x.at(i, j);
                e += (static_cast<ld>(batch + 4) * eps * std::fabs(gzv(i, k)) + gze(i, k)) *
                     std::fabs(static_cast<ld>(x.at(i, j)));
            }
            gw_ref[static_cast<std::size_t>(k * in + j)] = s;
            gw_bound[static_cast<std::size_t>(k * in + j)] = 2 * e;
        }
    }
    std::vector<ld> gb_ref(static_cast<std::size_t>(out)), gb_bound(gb_ref.size());
    for (i64 k = 0; k < out; ++k) {
        ld s = 0, e = 0;
        for (i64 i = 0; i < batch; ++i) {
            s += gzv(i, k);
            e += static_cast<ld>(batch + 4) * eps * std::fabs(gzv(i, k)) + gze(i, k);
        }
        gb_ref[static_cast<std::size_t>(k)] = s;
        gb_bound[static_cast<std::size_t>(k)] = 2 * e;
    }

    struct Variant {
        bool gx, gw, gb, accumulate;
    };
    const Variant variants[] = {{true, true, true, false}, {true, true, true, true}, {false, true, false, false},
                                {true, false, true, true}, {false, false, true, false}};
    for (const Variant& v : variants) {
        g_case = base + strf(" backward grad_x=%d grad_weight=%d grad_bias=%d accumulate=%d", v.gx, v.gw, v.gb, v.accumulate);
        // Outputs start as NaN (must be overwritten) or, accumulating, as random values.
        Mat<T> gx0 = make_out<T>(batch, in, layout == 1, sentinel), gw0 = make_out<T>(out, in, layout == 1, sentinel);
        std::vector<T> gb0(static_cast<std::size_t>(std::max<i64>(out, 1)), nan_of<T>());
        if (v.accumulate) {
            gx0.fill_random(r);
            gw0.fill_random(r);
            fill_uniform(gb0, r, -1.0, 1.0);
        } else {
            gx0.fill_value(nan_of<T>());
            gw0.fill_value(nan_of<T>());
        }
        auto plus_prev = [&](const std::vector<ld>& ref, const std::vector<ld>& bound, auto prev, std::vector<ld>& r_out,
                             std::vector<ld>& b_out) {
            r_out = ref;
            b_out = bound;
            for (std::size_t k = 0; k < ref.size(); ++k) {
                if (v.accumulate) r_out[k] += prev(k);
                b_out[k] += 2 * ulp_of<T>(r_out[k]) + (v.accumulate ? 2 * eps * std::fabs(static_cast<ld>(prev(k))) : 0);
            }
        };
        std::vector<ld> gx_r, gx_b, gw_r, gw_b, gb_r, gb_b;
        plus_prev(gx_ref, gx_bound, [&](std::size_t k) -> ld { return gx0.at(static_cast<i64>(k) / std::max<i64>(in, 1), static_cast<i64>(k) % std::max<i64>(in, 1)); }, gx_r, gx_b);
        plus_prev(gw_ref, gw_bound, [&](std::size_t k) -> ld { return gw0.at(static_cast<i64>(k) / std::max<i64>(in, 1), static_cast<i64>(k) % std::max<i64>(in, 1)); }, gw_r, gw_b);
        plus_prev(gb_ref, gb_bound, [&](std::size_t k) -> ld { return gb0[k]; }, gb_r, gb_b);
        for_each_config([&](const Config&) {
            Mat<T> gx = gx0, gw = gw0;
            std::vector<T> gb = gb0;
            gc::DenseBackward<T> args{gy.cref(), x.cref(), w.cref(), y.cref(), act, slope,
                                      v.gx ? gx.ref() : gc::MatrixRef<T>{nullptr, batch, in, in, 1},
                                      v.gw ? gw.ref() : gc::MatrixRef<T>{nullptr, out, in, in, 1},
                                      v.gb ? gb.data() : nullptr, v.accumulate};
            gc::dense_backward(args);
            if (v.gx) {
                check_matrix(HERE, "dense_backward grad_x", gx, gx_r, gx_b);
                CHECK(gx.padding_intact(sentinel), "dense_backward wrote outside grad_x");
            }
            if (v.gw) {
                check_matrix(HERE, "dense_backward grad_weight", gw, gw_r, gw_b);
                CHECK(gw.padding_intact(sentinel), "dense_backward wrote outside grad_weight");
            }
            if (v.gb) {
                check_each(HERE, "dense_backward grad_bias", out, [&](i64 k) {
                    return agrees(gb[static_cast<std::size_t>(k)], gb_r[static_cast<std::size_t>(k)], gb_b[static_cast<std::size_t>(k)]);
                }, [&](i64 k) {
                    return strf("[%lld] got %.17g, expected %.17Lg", ll(k), static_cast<double>(gb[static_cast<std::size_t>(k)]),
                                gb_r[static_cast<std::size_t>(k)]);
                });
            } else {
                CHECK(std::memcmp(gb.data(), gb0.data(), gb.size() * sizeof(T)) == 0, "grad_bias is null but was written");
            }
        });
    }
}

template <class T>
void dense_tests(Rng& r) {
    const std::array<i64, 3> sizes[] = {{1, 1, 1},   {3, 5, 7},   {8, 17, 33}, {16, 64, 9}, {65, 33, 130},
                                        {40, 300, 260}, {0, 5, 7}, {4, 0, 3},   {3, 5, 0}};
    const gc::Activation acts[] = {gc::Activation::identity, gc::Activation::relu, gc::Activation::leaky_relu,
                                   gc::Activation::tanh, gc::Activation::sigmoid};
    int idx = 0;
    for (const auto& s : sizes) {
        const bool big = s[0] * s[1] * s[2] > 100000;
        for (gc::Activation act : acts) {
            for (bool bias : {true, false}) {
                // the largest shape (several column strips, threads) for a few combinations
                if (big && (act == gc::Activation::leaky_relu || act == gc::Activation::tanh ||
                            bias != (act != gc::Activation::relu))) {
                    continue;
                }
                dense_case<T>(r, s[0], s[1], s[2], act, bias, idx % 3);
                ++idx;
            }
        }
    }
}

void test_dense() {
    Rng r(505);
    dense_tests<float>(r);
    dense_tests<double>(r);
    for_each_config([&](const Config&) {
        check_saved_activations<float>(r);
        check_saved_activations<double>(r);
    });
    g_case.clear();
}

// ================================================================== area: vector_math

const char* fn_name(gc::MathFunction f) {
    switch (f) {
        case gc::MathFunction::exp: return "exp";
        case gc::MathFunction::tanh: return "tanh";
        case gc::MathFunction::sigmoid: return "sigmoid";
        case gc::MathFunction::expm1: return "expm1";
        case gc::MathFunction::normal_tail: return "normal_tail";
    }
    return "?";
}

ld math_ref(gc::MathFunction f, ld x) {
    switch (f) {
        case gc::MathFunction::exp: return std::exp(x);
        case gc::MathFunction::tanh: return std::tanh(x);
        case gc::MathFunction::sigmoid: return sigmoid_ref(x);
        case gc::MathFunction::expm1: return std::expm1(x);
        case gc::MathFunction::normal_tail: return 0.5L * std::erfc(std::fabs(x) / std::sqrt(2.0L));
    }
    return x;
}

// The accuracy promised by kernels/vector_math.hpp (and tested from Python): NaN -> NaN;
// results past the largest finite value by half an ulp or more are inf; normal results
// within 4 ulp (the normal tail, a product of several rounded factors: 5); results in the
// subnormal range within 2 smallest subnormals.
template <class T>
bool math_agrees(T got, ld ref, ld max_ulp = 4) {
    if (std::isnan(ref)) return std::isnan(got);
    const ld big = max_of<T>();
    const ld half_ulp_max = std::ldexp(1.0L, std::numeric_limits<T>::max_exponent - std::numeric_limits<T>::digits - 1);
    const ld a = std::fabs(ref);
    if (a >= big + half_ulp_max) return std::isinf(got) && (got > 0) == (ref > 0);
    if (a > big) return (std::isinf(got) || std::fabs(static_cast<ld>(got)) == big) && (got > 0) == (ref > 0);
    if (!std::isfinite(got)) return false;
    const ld err = std::fabs(static_cast<ld>(got) - ref);
    if (a >= tiny_of<T>()) return err <= max_ulp * ulp_of<T>(ref);
    return err <= 2 * denorm_of<T>();
}

template <class T>
std::vector<T> math_points(Rng& r) {
    std::vector<T> v;
    for (int i = -16000; i <= 16000; ++i) v.push_back(static_cast<T>(i * 0.05));  // -800 .. 800
    for (int i = -10000; i <= 10000; ++i) v.push_back(static_cast<T>(i * 0.003));  // -30 .. 30
    const ld lo = std::log(denorm_of<T>()), hi = std::log(max_of<T>() / 2);
    for (int i = 0; i <= 2000; ++i) {  // geometric: the smallest subnormal .. 1 .. max / 2
        const ld f = i / 2000.0L;
        for (ld e : {lo * (1 - f), hi * f}) {
            const T x = static_cast<T>(std::exp(e));
            v.push_back(x);
            v.push_back(-x);
        }
    }
    // Around every threshold: overflow, results turning subnormal and 0, saturation of
    // tanh/sigmoid to 1, the branch points of the implementation, its clamp bounds.
    std::vector<ld> thresholds = {std::log(max_of<T>()),
                                  std::log(tiny_of<T>()),
                                  std::log(denorm_of<T>()),
                                  std::log(denorm_of<T>() / 2),
                                  std::atanh(1 - eps_of<T>() / 4),
                                  -std::log(eps_of<T>() / 4),
                                  0.25L, 0.5L, 0.55L, 1.0L, 2.0L, std::log(2.0L) / 2, 1.0L / 1024, 0x1p-12L, 0x1p-30L};
    if (sizeof(T) == 8) {
        thresholds.insert(thresholds.end(), {710.0L, 709.0L, 746.0L, 745.0L});
    } else {
        thresholds.insert(thresholds.end(), {89.0L, 104.0L, 88.0L, 87.0L});
    }
    for (ld t : thresholds) {
        for (ld s : {1.0L, -1.0L}) {
            const T c = static_cast<T>(s * t);
            T up = c, down = c;
            v.push_back(c);
            for (int i = 0; i < 40; ++i) {
                up = std::nextafter(up, std::numeric_limits<T>::infinity());
                down = std::nextafter(down, -std::numeric_limits<T>::infinity());
                v.push_back(up);
                v.push_back(down);
            }
        }
    }
    for (T s : {T(1), T(-1)}) {
        for (T x : {T(0), std::numeric_limits<T>::min(), std::numeric_limits<T>::denorm_min(),
                    std::numeric_limits<T>::max(), std::numeric_limits<T>::epsilon()}) {
            v.push_back(s * x);
        }
    }
    for (int i = 0; i < 20000; ++i) {  // random bit patterns: every binade, both signs
        const std::uint64_t bits = r.next();
        T x;
        if constexpr (sizeof(T) == 4) {
            const auto b32 = static_cast<std::uint32_t>(bits >> 32);
            std::memcpy(&x, &b32, 4);
        } else {
            std::memcpy(&x, &bits, 8);
        }
        if (std::isfinite(x)) v.push_back(x);
    }
    return v;
}

template <class T>
void math_tests(Rng& r) {
    const std::vector<T> x = math_points<T>(r);
    const i64 n = static_cast<i64>(x.size());
    for (gc::MathFunction fn : {gc::MathFunction::exp, gc::MathFunction::tanh, gc::MathFunction::sigmoid,
                                gc::MathFunction::expm1, gc::MathFunction::normal_tail}) {
        g_case = strf("vector_math<%s> %s, %lld points", type_name<T>(), fn_name(fn), ll(n));
        std::vector<ld> ref(x.size());
        for (std::size_t i = 0; i < x.size(); ++i) ref[i] = math_ref(fn, x[i]);
        for_each_config([&](const Config&) {
            std::vector<T> y = x;
            gc::vector_math(y.data(), n, fn);
            check_each(HERE, "vector_math accuracy", n, [&](i64 i) {
                return math_agrees<T>(y[static_cast<std::size_t>(i)], ref[static_cast<std::size_t>(i)],
                                      fn == gc::MathFunction::normal_tail ? 5 : 4);
            }, [&](i64 i) {
                const auto k = static_cast<std::size_t>(i);
                return strf("x=%.17g: got %.17g, expected %.20Lg (%.3Lg ulp)", static_cast<double>(x[k]),
                            static_cast<double>(y[k]), ref[k],
                            std::fabs(static_cast<ld>(y[k]) - ref[k]) / ulp_of<T>(ref[k]));
            });
            // Partial vectors: every length up to a few vectors, at an odd offset, gives
            // the same bits as the long run and touches nothing around it.
            bool tails_ok = true;
            i64 bad_len = -1;
            for (i64 len = 0; len <= 40 && tails_ok; ++len) {
                const i64 start = 1000 + 7 * len;
                std::vector<T> buf(static_cast<std::size_t>(len + 4), T(777));
                std::copy(x.begin() + start, x.begin() + start + len, buf.begin() + 1);
                gc::vector_math(buf.data() + 1, len, fn);
                tails_ok = buf[0] == T(777) && buf[static_cast<std::size_t>(len + 1)] == T(777) &&
                           std::memcmp(buf.data() + 1, y.data() + start, static_cast<std::size_t>(len) * sizeof(T)) == 0;
                if (!tails_ok) bad_len = len;
            }
            CHECK(tails_ok, "vector_math on %lld elements differs from the long run or writes outside", ll(bad_len));
            gc::vector_math(static_cast<T*>(nullptr), 0, fn);
        });
    }
    // Special values, exactly.
    g_case = strf("vector_math<%s> special values", type_name<T>());
    const T inf = std::numeric_limits<T>::infinity();
    const T specials[] = {nan_of<T>(), inf, -inf, T(0), -T(0)};
    struct Expect {
        gc::MathFunction fn;
        T out[5];
    };
    const Expect expects[] = {{gc::MathFunction::exp, {nan_of<T>(), inf, T(0), T(1), T(1)}},
                              {gc::MathFunction::tanh, {nan_of<T>(), T(1), T(-1), T(0), -T(0)}},
                              {gc::MathFunction::sigmoid, {nan_of<T>(), T(1), T(0), T(0.5), T(0.5)}}};
    for_each_config([&](const Config&) {
        for (const Expect& e : expects) {
            std::vector<T> y(std::begin(specials), std::end(specials));
            gc::vector_math(y.data(), 5, e.fn);
            for (int i = 0; i < 5; ++i) {
                const bool ok = std::isnan(e.out[i]) ? std::isnan(y[static_cast<std::size_t>(i)])
                                                     : std::memcmp(&y[static_cast<std::size_t>(i)], &e.out[i], sizeof(T)) == 0;
                CHECK(ok, "%s(%g) = %g, expected %g (sign included)", fn_name(e.fn), static_cast<double>(specials[i]),
                      static_cast<double>(y[static_cast<std::size_t>(i)]), static_cast<double>(e.out[i]));
            }
        }
    });
}

void test_vector_math() {
    Rng r(606);
    math_tests<float>(r);
    math_tests<double>(r);
    g_case.clear();
}

// ================================================================== area: rnn

const char* cell_name(gc::Cell c) {
    switch (c) {
        case gc::Cell::rnn_tanh: return "rnn_tanh";
        case gc::Cell::rnn_relu: return "rnn_relu";
        case gc::Cell::lstm: return "lstm";
        case gc::Cell::gru: return "gru";
    }
    return "?";
}
const gc::Cell kCells[] = {gc::Cell::rnn_tanh, gc::Cell::rnn_relu, gc::Cell::lstm, gc::Cell::gru};

template <class T>
struct RnnModel {
    gc::Cell cell = gc::Cell::rnn_tanh;
    i64 steps = 0, batch = 0, input = 0, hidden = 0, gates = 1;
    bool bias = true;
    std::vector<T> x, wih, whh, bih, bhh, h0, c0;
    bool lstm() const { return cell == gc::Cell::lstm; }
    bool gru() const { return cell == gc::Cell::gru; }
    i64 bh() const { return batch * hidden; }
    std::string name() const {
        return strf("%s<%s> T=%lld B=%lld I=%lld H=%lld bias=%d", cell_name(cell), type_name<T>(), ll(steps), ll(batch),
                    ll(input), ll(hidden), bias);
    }
};

template <class T>
std::vector<T> random_vec(Rng& r, i64 n, double lo, double hi) {
    std::vector<T> v(static_cast<std::size_t>(n));
    fill_uniform(v, r, lo, hi);
    return v;
}

template <class T>
RnnModel<T> make_rnn(Rng& r, gc::Cell cell, i64 steps, i64 batch, i64 input, i64 hidden, bool bias) {
    RnnModel<T> m;
    m.cell = cell, m.steps = steps, m.batch = batch, m.input = input, m.hidden = hidden, m.bias = bias;
    m.gates = gc::gate_count(cell);
    const i64 gh = m.gates * hidden;
    const double w = 1.0 / std::sqrt(static_cast<double>(hidden));
    m.x = random_vec<T>(r, steps * batch * input, -1.0, 1.0);
    m.wih = random_vec<T>(r, gh * input, -w, w);
    m.whh = random_vec<T>(r, gh * hidden, -w, w);
    m.bih = random_vec<T>(r, gh, -0.3, 0.3);
    m.bhh = random_vec<T>(r, gh, -0.3, 0.3);
    m.h0 = random_vec<T>(r, m.bh(), -0.5, 0.5);
    m.c0 = random_vec<T>(r, m.bh(), -0.5, 0.5);
    return m;
}

// The forward's states, which are also the cache the backward reads, and its output
// copies (y, h_n, c_n).
template <class T>
struct RnnState {
    std::vector<T> hs, cs, gates, ghn, y, h_n, c_n;
};

template <class T>
gc::RnnForward<T> forward_view(const RnnModel<T>& m, RnnState<T>& s) {
    gc::RnnForward<T> f{};
    f.cell = m.cell;
    f.steps = m.steps, f.batch = m.batch, f.input = m.input, f.hidden = m.hidden;
    f.x = m.x.data(), f.weight_ih = m.wih.data(), f.weight_hh = m.whh.data();
    f.bias_ih = m.bias ? m.bih.data() : nullptr;
    f.bias_hh = m.bias ? m.bhh.data() : nullptr;
    f.hs = s.hs.data();
    f.cs = m.lstm() ? s.cs.data() : nullptr;
    f.gates = m.lstm() || m.gru() ? s.gates.data() : nullptr;
    f.gh_n = m.gru() ? s.ghn.data() : nullptr;
    f.h0 = m.h0.data();
    f.c0 = m.lstm() ? m.c0.data() : nullptr;
    f.y = s.y.empty() ? nullptr : s.y.data();
    f.h_n = s.h_n.empty() ? nullptr : s.h_n.data();
    f.c_n = s.c_n.empty() ? nullptr : s.c_n.data();
    return f;
}

template <class T>
RnnState<T> run_forward(const RnnModel<T>& m) {
    RnnState<T> s;
    const i64 bh = m.bh();
    // NaN everywhere: the forward writes every state, hs[0] and cs[0] from h0 and c0.
    s.hs.assign(static_cast<std::size_t>((m.steps + 1) * bh), nan_of<T>());
    if (m.lstm()) s.cs.assign(s.hs.size(), nan_of<T>());
    if (m.lstm() || m.gru()) s.gates.assign(static_cast<std::size_t>(m.steps * bh * m.gates), nan_of<T>());
    if (m.gru()) s.ghn.assign(static_cast<std::size_t>(m.steps * bh), nan_of<T>());
    s.y.assign(static_cast<std::size_t>(m.steps * bh), nan_of<T>());
    s.h_n.assign(static_cast<std::size_t>(bh), nan_of<T>());
    if (m.lstm()) s.c_n.assign(static_cast<std::size_t>(bh), nan_of<T>());
    gc::rnn_forward(forward_view(m, s));
    return s;
}

struct Want {
    bool x = true, h0 = true, c0 = true, wih = true, whh = true, bih = true, bhh = true, norms = true;
};

template <class T>
struct RnnGrads {
    std::vector<T> gx, gh0, gc0, gwih, gwhh, gbih, gbhh;
    std::vector<double> norms;
};

template <class T>
struct NoDeduce {
    using type = T;
};

// ghn / gcn may be nullptr (zeros).
template <class T>
RnnGrads<T> run_backward(const RnnModel<T>& m, RnnState<T>& s, const std::vector<T>& gy,
                         const typename NoDeduce<std::vector<T>>::type* ghn,
                         const typename NoDeduce<std::vector<T>>::type* gcn, double clip, const Want& want = Want{}) {
    RnnGrads<T> g;
    const i64 gh = m.gates * m.hidden;
    auto make = [](std::vector<T>& v, bool on, i64 n) -> T* {
        if (!on) return nullptr;
        v.assign(static_cast<std::size_t>(std::max<i64>(n, 1)), nan_of<T>());
        v.resize(static_cast<std::size_t>(n));
        return v.data();
    };
    gc::RnnBackward<T> b{};
    b.states = gc::states_of(forward_view(m, s));
    b.grad_y = gy.data();
    b.grad_h_n = ghn ? ghn->data() : nullptr;
    b.grad_c_n = gcn ? gcn->data() : nullptr;
    b.clip_hidden = clip;
    b.grad_x = make(g.gx, want.x, m.steps * m.batch * m.input);
    b.grad_h0 = make(g.gh0, want.h0, m.bh());
    b.grad_c0 = make(g.gc0, want.c0 && m.lstm(), m.bh());
    b.grad_weight_ih = make(g.gwih, want.wih, gh * m.input);
    b.grad_weight_hh = make(g.gwhh, want.whh, gh * m.hidden);
    b.grad_bias_ih = make(g.gbih, want.bih, gh);
    b.grad_bias_hh = make(g.gbhh, want.bhh, gh);
    if (want.norms) {
        g.norms.assign(static_cast<std::size_t>(m.steps), kNaN);
        b.hidden_grad_norms = g.norms.data();
    }
    gc::rnn_backward(b);
    return g;
}

// Every output of a forward + backward, by name, as long doubles (for comparisons).
template <class T>
std::vector<std::pair<std::string, std::vector<ld>>> all_outputs(const RnnState<T>& s, const RnnGrads<T>& g) {
    std::vector<std::pair<std::string, std::vector<ld>>> out;
    auto add = [&](const char* name, const auto& v) { out.emplace_back(name, std::vector<ld>(v.begin(), v.end())); };
    add("hs", s.hs);
    add("cs", s.cs);
    add("grad_x", g.gx);
    add("grad_h0", g.gh0);
    add("grad_c0", g.gc0);
    add("grad_weight_ih", g.gwih);
    add("grad_weight_hh", g.gwhh);
    add("grad_bias_ih", g.gbih);
    add("grad_bias_hh", g.gbhh);
    add("hidden_grad_norms", g.norms);
    return out;
}

// The forward pass in long double, PyTorch's equations (gate order i f g o for the LSTM,
// r z n for the GRU, with n = tanh(W_in x + b_in + r (W_hn h + b_hn))).
template <class T>
void reference_forward(const RnnModel<T>& m, std::vector<ld>& hs, std::vector<ld>& cs) {
    const i64 B = m.batch, I = m.input, H = m.hidden, GH = m.gates * H, BH = m.bh();
    hs.assign(static_cast<std::size_t>((m.steps + 1) * BH), 0);
    cs.assign(m.lstm() ? hs.size() : 0, 0);
    std::copy(m.h0.begin(), m.h0.end(), hs.begin());
    if (m.lstm()) std::copy(m.c0.begin(), m.c0.end(), cs.begin());
    std::vector<ld> gi(static_cast<std::size_t>(GH)), gh(gi.size());
    for (i64 t = 0; t < m.steps; ++t) {
        for (i64 b = 0; b < B; ++b) {
            const T* x = m.x.data() + (t * B + b) * I;
            const ld* hp = hs.data() + t * BH + b * H;
            for (i64 q = 0; q < GH; ++q) {
                ld si = m.bias ? static_cast<ld>(m.bih[static_cast<std::size_t>(q)]) : 0;
                ld sh = m.bias ? static_cast<ld>(m.bhh[static_cast<std::size_t>(q)]) : 0;
                for (i64 i = 0; i < I; ++i) si += static_cast<ld>(m.wih[static_cast<std::size_t>(q * I + i)]) * x[i];
                for (i64 k = 0; k < H; ++k) sh += static_cast<ld>(m.whh[static_cast<std::size_t>(q * H + k)]) * hp[k];
                gi[static_cast<std::size_t>(q)] = si;
                gh[static_cast<std::size_t>(q)] = sh;
            }
            ld* h = hs.data() + (t + 1) * BH + b * H;
            for (i64 j = 0; j < H; ++j) {
                auto a = [&](i64 g) { return gi[static_cast<std::size_t>(g * H + j)] + gh[static_cast<std::size_t>(g * H + j)]; };
                switch (m.cell) {
                    case gc::Cell::rnn_tanh: h[j] = std::tanh(a(0)); break;
                    case gc::Cell::rnn_relu: h[j] = a(0) > 0 ? a(0) : 0; break;
                    case gc::Cell::lstm: {
                        const ld ig = sigmoid_ref(a(0)), fg = sigmoid_ref(a(1)), gg = std::tanh(a(2)), og = sigmoid_ref(a(3));
                        const ld c = fg * cs[static_cast<std::size_t>(t * BH + b * H + j)] + ig * gg;
                        cs[static_cast<std::size_t>((t + 1) * BH + b * H + j)] = c;
                        h[j] = og * std::tanh(c);
                        break;
                    }
                    case gc::Cell::gru: {
                        const ld rg = sigmoid_ref(a(0)), zg = sigmoid_ref(a(1));
                        const ld ng = std::tanh(gi[static_cast<std::size_t>(2 * H + j)] + rg * gh[static_cast<std::size_t>(2 * H + j)]);
                        h[j] = (1 - zg) * ng + zg * hp[j];
                        break;
                    }
                }
            }
        }
    }
}

// max |a - b| <= tol * max(1, max |b|), element by element.
bool close_scaled(const std::vector<ld>& a, const std::vector<ld>& b, ld tol, std::size_t* where) {
    if (a.size() != b.size()) {
        *where = std::min(a.size(), b.size());
        return false;
    }
    ld scale = 1;
    for (ld v : b) {
        if (std::isfinite(v)) scale = std::max(scale, std::fabs(v));
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (!agrees(a[i], b[i], tol * scale)) {
            *where = i;
            return false;
        }
    }
    return true;
}

template <class T>
ld rnn_tol(const RnnModel<T>& m) {
    return 16 * eps_of<T>() * static_cast<ld>(m.input + m.hidden + 8) * static_cast<ld>(m.steps + 1);
}

// Forward against the reference, and every target against the scalar target (one
// thread): forward outputs, every gradient, the hidden gradient norms.
template <class T>
void rnn_compare_case(Rng& r, gc::Cell cell, i64 steps, i64 batch, i64 input, i64 hidden, bool bias) {
    const RnnModel<T> m = make_rnn<T>(r, cell, steps, batch, input, hidden, bias);
    g_case = m.name();
    const std::vector<T> gy = random_vec<T>(r, steps * m.bh(), -1.0, 1.0);
    const std::vector<T> ghn = random_vec<T>(r, m.bh(), -1.0, 1.0), gcn = random_vec<T>(r, m.bh(), -1.0, 1.0);
    std::vector<ld> ref_hs, ref_cs;
    reference_forward(m, ref_hs, ref_cs);
    const ld tol = rnn_tol(m);

    apply(g_configs.front());  // scalar, 1 thread
    RnnState<T> s0 = run_forward(m);
    const RnnGrads<T> g0 = run_backward(m, s0, gy, &ghn, m.lstm() ? &gcn : nullptr, 0.0);
    const auto base = all_outputs(s0, g0);
    g_config.clear();

    for_each_config([&](const Config&) {
        RnnState<T> s = run_forward(m);
        std::size_t at = 0;
        const std::vector<ld> hs(s.hs.begin(), s.hs.end()), cs(s.cs.begin(), s.cs.end());
        CHECK(close_scaled(hs, ref_hs, tol, &at), "rnn_forward hs[%zu] = %.17Lg, reference %.17Lg (tol %.3Lg)", at,
              at < hs.size() ? hs[at] : 0.0L, at < ref_hs.size() ? ref_hs[at] : 0.0L, tol);
        if (m.lstm()) {
            CHECK(close_scaled(cs, ref_cs, tol, &at), "rnn_forward cs[%zu] = %.17Lg, reference %.17Lg", at,
                  at < cs.size() ? cs[at] : 0.0L, at < ref_cs.size() ? ref_cs[at] : 0.0L);
        }
        // The output copies are the states, bit for bit.
        const auto last = s.hs.end() - static_cast<std::ptrdiff_t>(m.bh());
        CHECK(std::equal(s.y.begin(), s.y.end(), s.hs.begin() + m.bh()) && std::equal(s.h_n.begin(), s.h_n.end(), last),
              "rnn_forward: y or h_n differ from hs[1:], hs[T]");
        CHECK(!m.lstm() || std::equal(s.c_n.begin(), s.c_n.end(), s.cs.end() - static_cast<std::ptrdiff_t>(m.bh())),
              "rnn_forward: c_n differs from cs[T]");
        const RnnGrads<T> g = run_backward(m, s, gy, &ghn, m.lstm() ? &gcn : nullptr, 0.0);
        const auto outs = all_outputs(s, g);
        for (std::size_t k = 0; k < outs.size(); ++k) {
            CHECK(close_scaled(outs[k].second, base[k].second, tol, &at), "%s[%zu] = %.17Lg, scalar target %.17Lg",
                  outs[k].first.c_str(), at, at < outs[k].second.size() ? outs[k].second[at] : 0.0L,
                  at < base[k].second.size() ? base[k].second[at] : 0.0L);
        }
    });
}

// L = sum(y * R) + sum(h_n * Rh) + sum(c_n * Rc) of a float64 model.
ld rnn_loss(const RnnModel<double>& m, const std::vector<double>& R, const std::vector<double>* Rh,
            const std::vector<double>* Rc) {
    RnnState<double> s = run_forward(m);
    const i64 bh = m.bh();
    ld l = 0;
    for (i64 k = 0; k < m.steps * bh; ++k) l += static_cast<ld>(s.hs[static_cast<std::size_t>(bh + k)]) * R[static_cast<std::size_t>(k)];
    for (i64 k = 0; Rh && k < bh; ++k) {
        l += static_cast<ld>(s.hs[static_cast<std::size_t>(m.steps * bh + k)]) * (*Rh)[static_cast<std::size_t>(k)];
    }
    for (i64 k = 0; Rc && m.lstm() && k < bh; ++k) {
        l += static_cast<ld>(s.cs[static_cast<std::size_t>(m.steps * bh + k)]) * (*Rc)[static_cast<std::size_t>(k)];
    }
    return l;
}

// rnn_backward against central differences of rnn_forward (float64, small sizes).
void rnn_finite_difference_case(Rng& r, gc::Cell cell, bool with_final_grads) {
    RnnModel<double> m = make_rnn<double>(r, cell, 3, 2, 3, 4, true);
    g_case = m.name() + (with_final_grads ? " finite differences, grad_h_n/grad_c_n given" : " finite differences");
    const std::vector<double> R = random_vec<double>(r, m.steps * m.bh(), -1.0, 1.0);
    const std::vector<double> Rh = random_vec<double>(r, m.bh(), -1.0, 1.0), Rc = random_vec<double>(r, m.bh(), -1.0, 1.0);
    const std::vector<double>* rh = with_final_grads ? &Rh : nullptr;
    const std::vector<double>* rc = with_final_grads && m.lstm() ? &Rc : nullptr;
    const double h = 1e-5;

    struct Param {
        const char* name;
        std::vector<double>* values;
        std::vector<double> RnnGrads<double>::*grad;
    };
    std::vector<Param> params = {{"grad_x", &m.x, &RnnGrads<double>::gx},
                                 {"grad_weight_ih", &m.wih, &RnnGrads<double>::gwih},
                                 {"grad_weight_hh", &m.whh, &RnnGrads<double>::gwhh},
                                 {"grad_bias_ih", &m.bih, &RnnGrads<double>::gbih},
                                 {"grad_bias_hh", &m.bhh, &RnnGrads<double>::gbhh},
                                 {"grad_h0", &m.h0, &RnnGrads<double>::gh0}};
    if (m.lstm()) params.push_back({"grad_c0", &m.c0, &RnnGrads<double>::gc0});

    for_each_config([&](const Config&) {
        RnnState<double> s = run_forward(m);
        const RnnGrads<double> g = run_backward(m, s, R, rh, rc, 0.0);
        for (const Param& p : params) {
            const std::vector<double>& an = g.*(p.grad);
            std::vector<ld> fd(p.values->size());
            for (std::size_t i = 0; i < fd.size(); ++i) {
                const double keep = (*p.values)[i];
                (*p.values)[i] = keep + h;
                const ld lp = rnn_loss(m, R, rh, rc);
                (*p.values)[i] = keep - h;
                const ld lm = rnn_loss(m, R, rh, rc);
                (*p.values)[i] = keep;
                fd[i] = (lp - lm) / (2 * h);
            }
            check_each(HERE, p.name, static_cast<i64>(fd.size()), [&](i64 i) {
                const auto k = static_cast<std::size_t>(i);
                return k < an.size() && agrees(an[k], fd[k], 1e-5L * std::fabs(fd[k]) + 1e-7L);
            }, [&](i64 i) {
                const auto k = static_cast<std::size_t>(i);
                return strf("%s[%lld]: backward %.12g, finite difference %.12Lg", p.name, ll(i),
                            k < an.size() ? an[k] : kNaN, fd[k]);
            });
        }
    });
}

// hidden_grad_norms[t] = ||dL/dh_t||: R_t plus what flows back from the later steps,
// which is grad_h0 of the same layer run on the tail of the sequence from h_t (and c_t).
void rnn_hidden_norms_case(Rng& r, gc::Cell cell) {
    const RnnModel<double> m = make_rnn<double>(r, cell, 4, 3, 3, 5, true);
    g_case = m.name() + " hidden_grad_norms";
    const i64 bh = m.bh();
    const std::vector<double> R = random_vec<double>(r, m.steps * bh, -1.0, 1.0);
    const std::vector<double> Rh = random_vec<double>(r, bh, -1.0, 1.0), Rc = random_vec<double>(r, bh, -1.0, 1.0);
    for_each_config([&](const Config&) {
        RnnState<double> s = run_forward(m);
        const RnnGrads<double> g = run_backward(m, s, R, &Rh, m.lstm() ? &Rc : nullptr, 0.0);
        for (i64 t = 0; t < m.steps; ++t) {
            std::vector<double> dh(static_cast<std::size_t>(bh));
            if (t == m.steps - 1) {
                dh = Rh;
            } else {
                RnnModel<double> tail = m;
                tail.steps = m.steps - 1 - t;
                tail.x.assign(m.x.begin() + (t + 1) * m.batch * m.input, m.x.end());
                tail.h0.assign(s.hs.begin() + (t + 1) * bh, s.hs.begin() + (t + 2) * bh);
                if (m.lstm()) tail.c0.assign(s.cs.begin() + (t + 1) * bh, s.cs.begin() + (t + 2) * bh);
                RnnState<double> ts = run_forward(tail);
                const std::vector<double> tail_R(R.begin() + (t + 1) * bh, R.end());
                dh = run_backward(tail, ts, tail_R, &Rh, m.lstm() ? &Rc : nullptr, 0.0).gh0;
            }
            ld sum = 0;
            for (i64 k = 0; k < bh; ++k) {
                const ld v = static_cast<ld>(dh[static_cast<std::size_t>(k)]) + R[static_cast<std::size_t>(t * bh + k)];
                sum += v * v;
            }
            const ld expected = std::sqrt(sum);
            CHECK(agrees(g.norms[static_cast<std::size_t>(t)], expected, 1e-12L * expected),
                  "hidden_grad_norms[%lld] = %.17g, expected %.17Lg", ll(t), g.norms[static_cast<std::size_t>(t)], expected);
        }
    });
}

template <class T>
bool same_vec(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

template <class T>
bool same_grads(const RnnGrads<T>& a, const RnnGrads<T>& b, bool norms) {
    return same_vec(a.gx, b.gx) && same_vec(a.gh0, b.gh0) && same_vec(a.gc0, b.gc0) && same_vec(a.gwih, b.gwih) &&
           same_vec(a.gwhh, b.gwhh) && same_vec(a.gbih, b.gbih) && same_vec(a.gbhh, b.gbhh) &&
           (!norms || same_vec(a.norms, b.norms));
}

// clip_hidden, null outputs, null biases.
template <class T>
void rnn_behaviour_case(Rng& r, gc::Cell cell) {
    // T = 1: clipping dL/dh_0 = clamp(R + Rh) is the same as running unclipped with that
    // clamped gradient as grad_y and no grad_h_n; the norm is taken before clipping.
    {
        const RnnModel<T> m = make_rnn<T>(r, cell, 1, 3, 4, 6, true);
        g_case = m.name() + " clip_hidden, one step";
        const std::vector<T> R = random_vec<T>(r, m.bh(), -1.0, 1.0), Rh = random_vec<T>(r, m.bh(), -1.0, 1.0);
        const std::vector<T> Rc = random_vec<T>(r, m.bh(), -1.0, 1.0);
        const double clip = 0.3;
        std::vector<T> clamped(R.size());
        ld sum = 0;
        for (std::size_t k = 0; k < R.size(); ++k) {
            const T v = R[k] + Rh[k];
            sum += static_cast<ld>(v) * v;
            clamped[k] = std::min(std::max(v, T(-clip)), T(clip));
        }
        for_each_config([&](const Config&) {
            RnnState<T> s = run_forward(m);
            const RnnGrads<T> a = run_backward(m, s, R, &Rh, m.lstm() ? &Rc : nullptr, clip);
            const RnnGrads<T> b = run_backward(m, s, clamped, nullptr, m.lstm() ? &Rc : nullptr, 0.0);
            CHECK(same_grads(a, b, false), "clip_hidden=%g differs from an unclipped run on the clamped gradient", clip);
            CHECK(agrees(a.norms[0], std::sqrt(sum), 1e-14L * std::sqrt(sum)),
                  "hidden_grad_norms[0] = %.17g, expected %.17Lg (before clipping)", a.norms[0], std::sqrt(sum));
            // a clip above every |dL/dh| changes nothing
            const RnnGrads<T> c = run_backward(m, s, R, &Rh, m.lstm() ? &Rc : nullptr, 1e30);
            const RnnGrads<T> d = run_backward(m, s, R, &Rh, m.lstm() ? &Rc : nullptr, 0.0);
            CHECK(same_grads(c, d, true), "clip_hidden=1e30 differs from no clipping");
        });
    }
    // Several steps: clipping bounds what flows back; the last norm is before clipping.
    {
        const RnnModel<T> m = make_rnn<T>(r, cell, 4, 2, 3, 5, true);
        g_case = m.name() + " clip_hidden, several steps";
        const std::vector<T> R = random_vec<T>(r, m.steps * m.bh(), -2.0, 2.0);
        for_each_config([&](const Config&) {
            RnnState<T> s = run_forward(m);
            const RnnGrads<T> a = run_backward(m, s, R, nullptr, nullptr, 0.05);
            const RnnGrads<T> b = run_backward(m, s, R, nullptr, nullptr, 0.0);
            const std::size_t last = static_cast<std::size_t>(m.steps - 1);
            CHECK(a.norms[last] == b.norms[last], "hidden_grad_norms[T-1] with clipping %.17g, without %.17g",
                  a.norms[last], b.norms[last]);
            bool finite = true;
            for (const auto* v : {&a.gx, &a.gh0, &a.gwih, &a.gwhh, &a.gbih, &a.gbhh}) {
                for (T e : *v) finite &= std::isfinite(e);
            }
            for (double e : a.norms) finite &= std::isfinite(e) && e >= 0;
            CHECK(finite, "clipped gradients or norms not finite");
            CHECK(!same_vec(a.gwhh, b.gwhh), "clip_hidden=0.05 had no effect");
        });
    }
    // Null outputs are skipped and the others are unchanged; null biases act as zeros.
    {
        RnnModel<T> m = make_rnn<T>(r, cell, 3, 4, 5, 7, true);
        g_case = m.name() + " null outputs and biases";
        const std::vector<T> R = random_vec<T>(r, m.steps * m.bh(), -1.0, 1.0);
        RnnModel<T> zero_bias = m;
        std::fill(zero_bias.bih.begin(), zero_bias.bih.end(), T(0));
        std::fill(zero_bias.bhh.begin(), zero_bias.bhh.end(), T(0));
        RnnModel<T> no_bias = zero_bias;
        no_bias.bias = false;
        for_each_config([&](const Config&) {
            RnnState<T> s = run_forward(m);
            const RnnGrads<T> full = run_backward(m, s, R, nullptr, nullptr, 0.0);
            Want only_whh;
            only_whh.x = only_whh.h0 = only_whh.c0 = only_whh.wih = only_whh.bih = only_whh.bhh = only_whh.norms = false;
            const RnnGrads<T> a = run_backward(m, s, R, nullptr, nullptr, 0.0, only_whh);
            CHECK(same_vec(a.gwhh, full.gwhh), "grad_weight_hh alone differs from a full backward");
            Want only_x;
            only_x.h0 = only_x.c0 = only_x.wih = only_x.whh = only_x.bih = only_x.bhh = only_x.norms = false;
            const RnnGrads<T> b = run_backward(m, s, R, nullptr, nullptr, 0.0, only_x);
            CHECK(same_vec(b.gx, full.gx), "grad_x alone differs from a full backward");

            RnnState<T> sz = run_forward(zero_bias), sn = run_forward(no_bias);
            bool same = sz.hs.size() == sn.hs.size();
            for (std::size_t k = 0; same && k < sz.hs.size(); ++k) same = sz.hs[k] == sn.hs[k];
            CHECK(same, "null biases differ from zero biases in the forward");
            const RnnGrads<T> gz = run_backward(zero_bias, sz, R, nullptr, nullptr, 0.0);
            const RnnGrads<T> gn = run_backward(no_bias, sn, R, nullptr, nullptr, 0.0);
            bool same_g = gz.gwhh.size() == gn.gwhh.size() && gz.gx.size() == gn.gx.size();
            for (std::size_t k = 0; same_g && k < gz.gwhh.size(); ++k) same_g = gz.gwhh[k] == gn.gwhh[k];
            for (std::size_t k = 0; same_g && k < gz.gx.size(); ++k) same_g = gz.gx[k] == gn.gx[k];
            CHECK(same_g, "null biases differ from zero biases in the backward");
        });
    }
}

void test_rnn() {
    Rng r(707);
    const std::array<i64, 4> sizes[] = {{1, 1, 1, 1}, {3, 2, 3, 4}, {4, 3, 5, 13}, {2, 9, 17, 33}, {6, 16, 32, 64}};
    for (gc::Cell cell : kCells) {
        for (const auto& s : sizes) {
            rnn_compare_case<float>(r, cell, s[0], s[1], s[2], s[3], true);
            rnn_compare_case<double>(r, cell, s[0], s[1], s[2], s[3], true);
        }
        rnn_compare_case<float>(r, cell, 3, 5, 6, 17, false);
        rnn_compare_case<double>(r, cell, 3, 5, 6, 17, false);
        rnn_finite_difference_case(r, cell, false);
        rnn_finite_difference_case(r, cell, true);
        rnn_hidden_norms_case(r, cell);
        rnn_behaviour_case<float>(r, cell);
        rnn_behaviour_case<double>(r, cell);
    }
    g_case.clear();
}

// ================================================================== area: optim

struct OptimLists {
    List p, g, s1, s2;  // params, grads, state (momentum buffer / exp_avg), exp_avg_sq
};

// Index i holds float32 or float64 arrays (alternating) of the sizes around the vector
// widths, and one over several chunks.
OptimLists make_optim_lists(Rng& r) {
    OptimLists o;
    const i64 sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100003};
    int i = 0;
    for (i64 n : sizes) {
        const gc::DType t = i++ % 2 ? gc::DType::float64 : gc::DType::float32;
        Array p(t, n), g(t, n), s1(t, n), s2(t, n);
        for (i64 k = 0; k < n; ++k) {
            p.set(k, r.uniform(-1.0, 1.0));
            g.set(k, r.uniform(-1.0, 1.0));
            s1.set(k, r.uniform(-0.2, 0.2));
            s2.set(k, r.uniform(0.0, 0.01));
        }
        o.p.push_back(std::move(p));
        o.g.push_back(std::move(g));
        o.s1.push_back(std::move(s1));
        o.s2.push_back(std::move(s2));
    }
    return o;
}

// Each element of `got` against ref within 8 eps of its dtype times `scale` (a sum of
// the absolute values of the terms that made it).
template <class Ref>
bool check_abs(Where w, const char* what, const List& got, Ref&& ref) {
    i64 bad = 0;
    std::size_t fa = 0;
    i64 fi = -1;
    ld fg = 0, fr = 0, ft = 0;
    for (std::size_t a = 0; a < got.size(); ++a) {
        const ld eps = eps_of_dtype(got[a].dtype);
        for (i64 i = 0; i < got[a].n; ++i) {
            const std::pair<ld, ld> rs = ref(a, i);  // value, scale
            const ld tol = 8 * eps * rs.second + 2 * denorm_of_dtype(got[a].dtype);
            if (!agrees(got[a].get(i), rs.first, tol)) {
                if (fi < 0) fa = a, fi = i, fg = got[a].get(i), fr = rs.first, ft = tol;
                ++bad;
            }
        }
    }
    return check_at(bad == 0, w, what, [&] {
        return strf("%lld elements wrong; first: array %zu [%lld]: got %.17Lg, expected %.17Lg (tolerance %.3Lg)",
                    ll(bad), fa, ll(fi), fg, fr, ft);
    });
}

void test_sgd(Rng& r) {
    struct Case {
        const char* name;
        gc::SgdOptions o;
        bool buffers;
    };
    auto opts = [](double lr, double mu, double damp, double wd, double scale, bool nesterov, bool first) {
        gc::SgdOptions o{};
        o.lr = lr, o.momentum = mu, o.dampening = damp, o.weight_decay = wd, o.grad_scale = scale;
        o.nesterov = nesterov, o.first_step = first;
        return o;
    };
    const Case cases[] = {{"plain", opts(0.1, 0, 0, 0, 1, false, false), false},
                          {"weight decay + grad_scale, no buffers", opts(0.02, 0, 0, 0.1, 2.0, false, false), false},
                          {"momentum, first step", opts(0.05, 0.9, 0, 0, 1, false, true), true},
                          {"momentum, first step, dampening (not applied)", opts(0.05, 0.9, 0.3, 0.01, 1, false, true), true},
                          {"momentum + dampening + weight decay + grad_scale", opts(0.05, 0.9, 0.1, 1e-2, 0.5, false, false), true},
                          {"nesterov + weight decay", opts(0.01, 0.8, 0, 1e-3, 1, true, false), true},
                          {"nesterov, first step", opts(0.01, 0.8, 0, 0, 0.25, true, true), true}};
    const OptimLists base = make_optim_lists(r);
    for (const Case& c : cases) {
        g_case = strf("sgd_step %s", c.name);
        const gc::SgdOptions& o = c.o;
        // torch.optim.SGD: g = s g + wd p; buf = g (first) or mu buf + (1 - damp) g;
        // d = g + mu buf (nesterov) or buf; p -= lr d. With |terms| for the tolerance.
        struct Out {
            ld p, pa, b, ba;
        };
        auto step = [&](std::size_t a, i64 i) {
            const ld p = base.p[a].get(i), g = base.g[a].get(i), b = base.s1[a].get(i);
            const ld ge = o.grad_scale * g + o.weight_decay * p;
            const ld gea = std::fabs(o.grad_scale * g) + std::fabs(o.weight_decay * p);
            ld d = ge, da = gea, nb = b, nba = std::fabs(b);
            if (o.momentum != 0) {
                nb = o.first_step ? ge : o.momentum * b + (1 - o.dampening) * ge;
                nba = o.first_step ? gea : std::fabs(o.momentum * b) + std::fabs(1 - o.dampening) * gea;
                d = o.nesterov ? ge + o.momentum * nb : nb;
                da = o.nesterov ? gea + std::fabs(o.momentum) * nba : nba;
            }
            return Out{p - o.lr * d, std::fabs(p) + std::fabs(o.lr) * da, nb, nba};
        };
        for_each_config([&](const Config&) {
            OptimLists l = base;
            std::vector<gc::TensorView> p = views_of(l.p), g = views_of(l.g), b = views_of(l.s1);
            gc::sgd_step(p.data(), g.data(), c.buffers ? b.data() : nullptr, p.size(), o);
            check_abs(HERE, "sgd_step params", l.p, [&](std::size_t a, i64 i) {
                const Out s = step(a, i);
                return std::make_pair(s.p, s.pa);
            });
            if (c.buffers) {
                check_abs(HERE, "sgd_step momentum buffers", l.s1, [&](std::size_t a, i64 i) {
                    const Out s = step(a, i);
                    return std::make_pair(s.b, s.ba);
                });
            }
            CHECK(same_bits(l.g, base.g), "sgd_step modified the gradients");
            if (!c.buffers) CHECK(same_bits(l.s1, base.s1), "sgd_step without momentum touched the buffers");
        });
    }
}

void test_adam(Rng& r) {
    auto opts = [](double lr, double b1, double b2, double eps, double wd, double scale, long long step, bool decoupled) {
        gc::AdamOptions o{};
        o.lr = lr, o.beta1 = b1, o.beta2 = b2, o.eps = eps, o.weight_decay = wd, o.grad_scale = scale;
        o.step = step, o.decoupled = decoupled;
        return o;
    };
    const std::pair<const char*, gc::AdamOptions> cases[] = {
        {"defaults, step 1", opts(1e-3, 0.9, 0.999, 1e-8, 0, 1, 1, false)},
        {"coupled weight decay, step 3", opts(1e-2, 0.9, 0.99, 1e-8, 0.01, 1, 3, false)},
        {"AdamW, grad_scale, step 7", opts(1e-2, 0.8, 0.999, 1e-8, 0.05, 0.25, 7, true)},
        {"step 1000, eps 1e-6", opts(0.1, 0.9, 0.999, 1e-6, 0, 1, 1000, false)}};
    const OptimLists base = make_optim_lists(r);
    for (const auto& [name, o] : cases) {
        g_case = strf("adam_step %s", name);
        struct Out {
            ld p, pa, m, ma, v, va;
        };
        const ld bc1 = 1 - std::pow(static_cast<ld>(o.beta1), static_cast<ld>(o.step));
        const ld bc2 = 1 - std::pow(static_cast<ld>(o.beta2), static_cast<ld>(o.step));
        auto step = [&](std::size_t a, i64 i) {
            ld p = base.p[a].get(i);
            const ld g = base.g[a].get(i), m = base.s1[a].get(i), v = base.s2[a].get(i);
            ld ge = o.grad_scale * g, gea = std::fabs(ge);
            const ld pa = std::fabs(p);
            if (o.decoupled) {
                p = p * (1 - static_cast<ld>(o.lr) * o.weight_decay);
            } else {
                ge += o.weight_decay * p;
                gea += std::fabs(o.weight_decay * p);
            }
            const ld nm = o.beta1 * m + (1 - o.beta1) * ge;
            const ld nma = std::fabs(o.beta1 * m) + std::fabs(1 - o.beta1) * gea;
            const ld nv = o.beta2 * v + (1 - o.beta2) * ge * ge;
            const ld nva = std::fabs(o.beta2 * v) + std::fabs(1 - o.beta2) * gea * gea;
            const ld denom = std::sqrt(nv) / std::sqrt(bc2) + o.eps;
            const ld upd = (o.lr / bc1) * nm / denom;
            return Out{p - upd, pa + std::fabs(o.lr / bc1) * (nma / denom) * 2, nm, nma, nv, nva};
        };
        for_each_config([&](const Config&) {
            OptimLists l = base;
            std::vector<gc::TensorView> p = views_of(l.p), g = views_of(l.g), m = views_of(l.s1), v = views_of(l.s2);
            gc::adam_step(p.data(), g.data(), m.data(), v.data(), p.size(), o);
            check_abs(HERE, "adam_step params", l.p, [&](std::size_t a, i64 i) {
                const Out s = step(a, i);
                return std::make_pair(s.p, s.pa);
            });
            check_abs(HERE, "adam_step exp_avg", l.s1, [&](std::size_t a, i64 i) {
                const Out s = step(a, i);
                return std::make_pair(s.m, s.ma);
            });
            check_abs(HERE, "adam_step exp_avg_sq", l.s2, [&](std::size_t a, i64 i) {
                const Out s = step(a, i);
                return std::make_pair(s.v, s.va);
            });
            CHECK(same_bits(l.g, base.g), "adam_step modified the gradients");
        });
    }
}

// The 16-bit parameters: the float32 rules on the float32 values, so the float32 path
// (tested above) is the reference. With masters, the master (a float32 copy of the
// parameter) follows the float32 path bit for bit and the parameter is its rounding to
// nearest even (round_to_narrow); without, the parameter is that same rounding.
void test_narrow_optim(Rng& r) {
    const i64 sizes[] = {0, 1, 7, 15, 16, 17, 33, 100003};
    List p16, g16, p32, g32, s1, s2;  // 16-bit params and grads, their float32 values, float32 state
    int k = 0;
    for (i64 n : sizes) {
        const gc::DType t = k++ % 2 ? gc::DType::bfloat16 : gc::DType::float16;
        Array p(t, n), g(t, n), pw(gc::DType::float32, n), gw(gc::DType::float32, n);
        Array a(gc::DType::float32, n), b(gc::DType::float32, n);
        for (i64 i = 0; i < n; ++i) {
            p.set(i, r.uniform(-1.0, 1.0));
            g.set(i, r.uniform(-1.0, 1.0));
            pw.set(i, static_cast<double>(p.get(i)));  // exact: float32 holds every 16-bit value
            gw.set(i, static_cast<double>(g.get(i)));
            a.set(i, r.uniform(-0.2, 0.2));
            b.set(i, r.uniform(0.0, 0.01));
        }
        p16.push_back(std::move(p));
        g16.push_back(std::move(g));
        p32.push_back(std::move(pw));
        g32.push_back(std::move(gw));
        s1.push_back(std::move(a));
        s2.push_back(std::move(b));
    }
    auto rounded = [&](const List& wide) {
        List out = p16;
        for (std::size_t i = 0; i < out.size(); ++i) {
            for (i64 j = 0; j < out[i].n; ++j) {
                out[i].h[static_cast<std::size_t>(j)] = round_to_narrow(out[i].dtype, static_cast<double>(wide[i].get(j)));
            }
        }
        return out;
    };
    // step(params, grads, state1, state2, masters) for one optimiser.
    auto check = [&](const char* name, auto&& step) {
        g_case = strf("narrow %s", name);
        for_each_config([&](const Config&) {
            // The float32 path of this configuration (targets may differ in the last bit).
            List want_p = p32, want_s1 = s1, want_s2 = s2;
            std::vector<gc::TensorView> wp = views_of(want_p), wg = views_of(g32), wa = views_of(want_s1),
                                        wb = views_of(want_s2);
            step(wp.data(), wg.data(), wa.data(), wb.data(), nullptr, wp.size());
            const List want_narrow = rounded(want_p);
            for (bool with_master : {true, false}) {
                List pn = p16, w = p32, a = s1, b = s2;
                std::vector<gc::TensorView> pv = views_of(pn), gv = views_of(g16), av = views_of(a),
                                            bv = views_of(b), wv = views_of(w);
                step(pv.data(), gv.data(), av.data(), bv.data(), with_master ? wv.data() : nullptr, pv.size());
                const char* how = with_master ? "with masters" : "without masters";
                if (with_master) CHECK(same_bits(w, want_p), "%s: the masters are not the float32 path's", how);
                CHECK(same_bits(pn, want_narrow), "%s: the 16-bit params are not the rounding of the float32 path", how);
                CHECK(same_bits(a, want_s1) && same_bits(b, want_s2), "%s: the state is not the float32 path's", how);
            }
        });
    };
    gc::SgdOptions so{};
    so.lr = 0.05, so.momentum = 0.9, so.dampening = 0.1, so.weight_decay = 1e-2, so.grad_scale = 0.5;
    check("sgd_step", [&](const gc::TensorView* p, const gc::TensorView* g, const gc::TensorView* a,
                          const gc::TensorView*, const gc::TensorView* w, std::size_t n) {
        gc::sgd_step(p, g, a, n, so, w);
    });
    gc::AdamOptions ao{};
    ao.lr = 1e-2, ao.weight_decay = 0.05, ao.grad_scale = 0.25, ao.step = 7, ao.decoupled = true;
    check("adam_step", [&](const gc::TensorView* p, const gc::TensorView* g, const gc::TensorView* a,
                           const gc::TensorView* b, const gc::TensorView* w, std::size_t n) {
        gc::adam_step(p, g, a, b, n, ao, w);
    });
}

void test_optim() {
    Rng r(808);
    test_sgd(r);
    test_adam(r);
    test_narrow_optim(r);
    g_case.clear();
}

// ================================================================== area: normalization

// Layer norm and batch norm through the C++ API against long double formulas written
// here, on every configuration; the same bits on 1 and 2 threads; refusals before any
// write of the running statistics.
template <class T>
void check_layer_norm(Rng& r, i64 rows, i64 cols) {
    std::vector<T> x(static_cast<std::size_t>(rows * cols)), dy(x.size()), g(static_cast<std::size_t>(cols)), b(g.size());
    for (auto& v : x) v = static_cast<T>(r.uniform(99.0, 101.0));
    for (auto& v : dy) v = static_cast<T>(r.uniform(-1.0, 1.0));
    for (std::size_t j = 0; j < g.size(); ++j) g[j] = static_cast<T>(r.uniform(0.5, 1.5)), b[j] = static_cast<T>(r.uniform(-1, 1));
    const double tol = sizeof(T) == 4 ? 1e-6 : 1e-11;
    std::vector<T> first_y, first_dx;
    for_each_config([&](const Config& c) {
        std::vector<T> y(x.size()), dx(x.size()), dg(g.size()), db(g.size());
        std::vector<double> mean(static_cast<std::size_t>(rows)), rstd(mean.size());
        gc::layer_norm_forward(gc::LayerNormForward<T>{x.data(), rows, cols, g.data(), b.data(), 1e-5, y.data(),
                                                       mean.data(), rstd.data()});
        gc::layer_norm_backward(gc::LayerNormBackward<T>{dy.data(), x.data(), rows, cols, g.data(), mean.data(),
                                                         rstd.data(), dx.data(), dg.data(), db.data()});
        long double worst = 0;
        std::vector<long double> wdg(g.size(), 0.0L);
        for (i64 i = 0; i < rows; ++i) {
            long double m = 0, v = 0, sg = 0, sgx = 0;
            for (i64 j = 0; j < cols; ++j) m += x[i * cols + j];
            m /= cols;
            for (i64 j = 0; j < cols; ++j) v += (x[i * cols + j] - m) * (x[i * cols + j] - m);
            const long double rs = 1.0L / std::sqrt(v / cols + 1e-5L);
            for (i64 j = 0; j < cols; ++j) {
                const long double xh = (x[i * cols + j] - m) * rs, gj = dy[i * cols + j] * (long double)g[j];
                worst = std::max(worst, std::fabs(y[i * cols + j] - (xh * g[j] + b[j])) / 3.0L);
                sg += gj, sgx += gj * xh;
                wdg[j] += dy[i * cols + j] * xh;
            }
            for (i64 j = 0; j < cols; ++j) {
                const long double xh = (x[i * cols + j] - m) * rs, gj = dy[i * cols + j] * (long double)g[j];
                worst = std::max(worst, std::fabs(dx[i * cols + j] - rs * (gj - sg / cols - xh * sgx / cols)) / (rs * 2));
            }
        }
        for (std::size_t j = 0; j < g.size(); ++j) worst = std::max(worst, std::fabs(dg[j] - wdg[j]) / (2.0L * rows));
        CHECK(worst <= tol, "layer_norm %lldx%lld %s: error %.3Lg", (long long)rows, (long long)cols, sizeof(T) == 4 ? "f32" : "f64", worst);
        if (c.threads == 1) first_y = y, first_dx = dx;
        else CHECK(first_y == y && first_dx == dx, "layer_norm: 1 and 2 threads differ");
    });
}

template <class T>
void check_batch_norm(Rng& r, i64 n, i64 ch, i64 len) {
    const std::size_t size = static_cast<std::size_t>(n * ch * len), C = static_cast<std::size_t>(ch);
    std::vector<T> x(size), dy(size), g(C), b(C);
    for (auto& v : x) v = static_cast<T>(r.uniform(9.0, 11.0));
    for (auto& v : dy) v = static_cast<T>(r.uniform(-1.0, 1.0));
    for (std::size_t c = 0; c < C; ++c) g[c] = static_cast<T>(r.uniform(0.5, 1.5)), b[c] = static_cast<T>(r.uniform(-1, 1));
    const double tol = sizeof(T) == 4 ? 1e-6 : 1e-11;
    const i64 count = n * len;
    for_each_config([&](const Config&) {
        std::vector<T> y(size), dx(size), dg(C), db(C), rm(C, T(1)), rv(C, T(2));
        std::vector<double> mean(C), rstd(C);
        gc::batch_norm_forward(gc::BatchNormForward<T>{x.data(), n, ch, len, g.data(), b.data(), rm.data(), rv.data(),
                                                       true, 0.25, 1e-5, y.data(), mean.data(), rstd.data()});
        gc::batch_norm_backward(gc::BatchNormBackward<T>{dy.data(), x.data(), n, ch, len, g.data(), mean.data(),
                                                         rstd.data(), true, dx.data(), dg.data(), db.data()});
        long double worst = 0;
        for (std::size_t c = 0; c < C; ++c) {
            auto at = [&](i64 i, i64 l) { return static_cast<std::size_t>((i * ch + static_cast<i64>(c)) * len + l); };
            long double m = 0, v = 0, sdy = 0, sdyx = 0;
            for (i64 i = 0; i < n; ++i) for (i64 l = 0; l < len; ++l) m += x[at(i, l)];
            m /= count;
            for (i64 i = 0; i < n; ++i) for (i64 l = 0; l < len; ++l) {
                const long double d = x[at(i, l)] - m;
                v += d * d, sdy += dy[at(i, l)], sdyx += dy[at(i, l)] * d;
            }
            const long double rs = 1.0L / std::sqrt(v / count + 1e-5L), gr = g[c] * rs;
            worst = std::max(worst, std::fabs(rm[c] - (0.75L + 0.25L * m)) / 10.0L);
            worst = std::max(worst, std::fabs(rv[c] - (1.5L + 0.25L * v / (count - 1))));
            worst = std::max(worst, std::fabs(dg[c] - sdyx * rs) / count);
            for (i64 i = 0; i < n; ++i) for (i64 l = 0; l < len; ++l) {
                const long double d = x[at(i, l)] - m;
                worst = std::max(worst, std::fabs(y[at(i, l)] - (d * gr + b[c])) / 3.0L);
                const long double want = gr * (dy[at(i, l)] - sdy / count - d * rs * rs * sdyx / count);
                worst = std::max(worst, std::fabs(dx[at(i, l)] - want) / (2 * gr));
            }
        }
        CHECK(worst <= tol, "batch_norm %lldx%lldx%lld %s: error %.3Lg", (long long)n, (long long)ch, (long long)len,
              sizeof(T) == 4 ? "f32" : "f64", worst);
    });
}

void test_normalization() {
    Rng r(1212);
    for (auto [rows, cols] : {std::pair<i64, i64>{1, 1}, {3, 17}, {70, 129}, {600, 40}}) {
        g_case = strf("layer_norm %lldx%lld", (long long)rows, (long long)cols);
        check_layer_norm<float>(r, rows, cols);
        check_layer_norm<double>(r, rows, cols);
    }
    for (auto [n, ch, len] : {std::array<i64, 3>{2, 1, 1}, {5, 33, 1}, {3000, 19, 1}, {4, 3, 41}}) {
        g_case = strf("batch_norm %lldx%lldx%lld", (long long)n, (long long)ch, (long long)len);
        check_batch_norm<float>(r, n, ch, len);
        check_batch_norm<double>(r, n, ch, len);
    }
    g_case = "batch_norm refusals";
    std::vector<double> x(12, 1.0), y(12), rm(3, 5.0), rv(3, 7.0), mean(3), rstd(3);
    auto forward = [&](double momentum, double eps, i64 batch, double* rvar) {
        gc::batch_norm_forward(gc::BatchNormForward<double>{x.data(), batch, 3, 1, nullptr, nullptr, rm.data(), rvar,
                                                            true, momentum, eps, y.data(), mean.data(), rstd.data()});
    };
    EXPECT_INVALID("batch_norm: eps < 0", forward(0.1, -1.0, 4, rv.data()));
    EXPECT_INVALID("batch_norm: momentum NaN", forward(std::nan(""), 1e-5, 4, rv.data()));
    EXPECT_INVALID("batch_norm: one value per channel", forward(0.1, 1e-5, 1, rv.data()));
    EXPECT_INVALID("batch_norm: running_var missing", forward(0.1, 1e-5, 4, nullptr));
    EXPECT_INVALID("batch_norm: negative batch", forward(0.1, 1e-5, -1, rv.data()));
    CHECK(rm == std::vector<double>(3, 5.0) && rv == std::vector<double>(3, 7.0), "a refused call wrote the running stats");
    EXPECT_INVALID("layer_norm: eps inf", gc::layer_norm_forward(gc::LayerNormForward<double>{
        x.data(), 3, 4, nullptr, nullptr, INFINITY, y.data(), mean.data(), rstd.data()}));
    g_case.clear();
}

// ================================================================== area: c_api

void test_c_api() {
    Rng r(909);
    CHECK(gc_version() != nullptr && std::strcmp(gc_version(), gc::version()) == 0, "gc_version() != version()");
    for_each_config([&](const Config& c) {
        CHECK(std::string(gc_isa()) == c.isa, "gc_isa() = %s", gc_isa());
    });

    // --- norms: the same results as the C++ API, bit for bit
    List l;
    l.push_back(make_array(gc::DType::float32, 1000, Pattern::normal, r));
    l.push_back(make_array(gc::DType::float64, 333, Pattern::mixed, r));
    l.push_back(make_array(gc::DType::float16, 77, Pattern::normal, r));
    l.push_back(make_array(gc::DType::bfloat16, 45, Pattern::mixed, r));  // GC_BFLOAT16 = 3
    std::vector<gc::TensorView> v = views_of(l);
    std::vector<gc_tensor> t;
    for (const gc::TensorView& x : v) t.push_back({x.data, x.numel, static_cast<int32_t>(x.dtype)});
    g_case = "gc_global_norm / gc_norms";
    for_each_config([&](const Config&) {
        for (double ord : kOrds) {
            double out = -1;
            CHECK(gc_global_norm(t.data(), t.size(), ord, &out) == GC_OK, "gc_global_norm failed: %s", gc_last_error());
            CHECK(same_double(out, gc::global_norm(v.data(), v.size(), ord)), "gc_global_norm(ord=%g) != global_norm", ord);
            std::vector<double> a(t.size(), -1), b(t.size(), -2);
            CHECK(gc_norms(t.data(), t.size(), ord, a.data()) == GC_OK, "gc_norms failed: %s", gc_last_error());
            gc::norms(v.data(), v.size(), ord, b.data());
            CHECK(std::memcmp(a.data(), b.data(), t.size() * sizeof(double)) == 0, "gc_norms(ord=%g) != norms", ord);
        }
    });

    // --- errors: a status, a message, nothing written
    g_case = "C ABI errors";
    auto expect_status = [&](Where w, gc_status got, gc_status want, const char* what) {
        check_at(got == want, w, what, [&] { return strf("status %d, expected %d", static_cast<int>(got), static_cast<int>(want)); });
        check_at(gc_last_error() != nullptr && gc_last_error()[0] != '\0', w, what, [&] {
            return std::string("gc_last_error() is empty after a failed call");
        });
    };
    {
        double out = 42;
        std::vector<double> outs(3, 42);
        // 3 is GC_BFLOAT16 now; 4 is gradcore::DType::int64, a count output, not an input.
        for (int32_t bad_dtype : {4, -1, 7}) {
            gc_tensor bad[2] = {t[0], {t[1].data, t[1].numel, bad_dtype}};
            expect_status(HERE, gc_global_norm(bad, 2, 2.0, &out), GC_INVALID_ARGUMENT, "gc_global_norm: unknown dtype");
            expect_status(HERE, gc_norms(bad, 2, 2.0, outs.data()), GC_INVALID_ARGUMENT, "gc_norms: unknown dtype");
        }
        expect_status(HERE, gc_global_norm(nullptr, 2, 2.0, &out), GC_INVALID_ARGUMENT, "gc_global_norm: NULL arrays");
        expect_status(HERE, gc_global_norm(t.data(), 3, 2.0, nullptr), GC_INVALID_ARGUMENT, "gc_global_norm: NULL out");
        expect_status(HERE, gc_norms(t.data(), 3, 2.0, nullptr), GC_INVALID_ARGUMENT, "gc_norms: NULL out");
        gc_tensor null_data = {nullptr, 5, GC_FLOAT32};
        expect_status(HERE, gc_global_norm(&null_data, 1, 2.0, &out), GC_INVALID_ARGUMENT, "gc_global_norm: NULL data");
        gc_tensor negative = {t[0].data, -1, GC_FLOAT32};
        expect_status(HERE, gc_global_norm(&negative, 1, 2.0, &out), GC_INVALID_ARGUMENT, "gc_global_norm: numel < 0");
        for (double ord : {0.0, -1.0, kNaN, -kInf}) {
            expect_status(HERE, gc_global_norm(t.data(), 3, ord, &out), GC_INVALID_ARGUMENT, "gc_global_norm: bad ord");
            expect_status(HERE, gc_norms(t.data(), 3, ord, outs.data()), GC_INVALID_ARGUMENT, "gc_norms: bad ord");
        }
        CHECK(out == 42 && outs == std::vector<double>(3, 42), "a failed call wrote its output");
        // Valid edge cases.
        gc_tensor empty = {nullptr, 0, GC_FLOAT64};
        CHECK(gc_global_norm(&empty, 1, 2.0, &out) == GC_OK && out == 0.0, "gc_global_norm of an empty array");
        CHECK(gc_global_norm(nullptr, 0, 2.0, &out) == GC_OK && out == 0.0, "gc_global_norm of no arrays");
    }

    // --- in-place clipping: same as the C++ API; refusals modify nothing
    List cl;
    cl.push_back(make_array(gc::DType::float32, 500, Pattern::normal, r));
    cl.push_back(make_array(gc::DType::float64, 77, Pattern::normal, r));
    List cl_nan = cl;
    cl_nan[1].d[5] = kNaN;
    auto tensors = [](List& x) {
        std::vector<gc_tensor> out;
        for (Array& a : x) out.push_back({a.data(), a.n, static_cast<int32_t>(a.dtype)});
        return out;
    };
    g_case = "gc_clip_by_value / gc_clip_by_norm / gc_clip_by_global_norm";
    for_each_config([&](const Config&) {
        {
            List a = cl, b = cl;
            auto ta = tensors(a);
            std::vector<gc::TensorView> vb = views_of(b);
            CHECK(gc_clip_by_value(ta.data(), ta.size(), -0.3, 0.2) == GC_OK, "gc_clip_by_value: %s", gc_last_error());
            gc::clip_by_value_(vb.data(), vb.size(), -0.3, 0.2);
            CHECK(same_bits(a, b), "gc_clip_by_value != clip_by_value_");
            expect_status(HERE, gc_clip_by_value(ta.data(), ta.size(), 0.5, -0.5), GC_INVALID_ARGUMENT,
                          "gc_clip_by_value: min > max");
            expect_status(HERE, gc_clip_by_value(ta.data(), ta.size(), kNaN, 1.0), GC_INVALID_ARGUMENT,
                          "gc_clip_by_value: NaN bound");
            // The 16-bit floats are clipped in place too: as the C++ API does, and as the
            // reference rounding of the clamped double says.
            List h = cl;
            h.push_back(make_array(gc::DType::float16, 9, Pattern::nan_inf, r));
            h.push_back(make_array(gc::DType::bfloat16, 37, Pattern::huge_mix, r));
            const List h0 = h;
            List hb = h;
            auto th = tensors(h);
            std::vector<gc::TensorView> vhb = views_of(hb);
            CHECK(gc_clip_by_value(th.data(), th.size(), -0.1, 0.1) == GC_OK, "gc_clip_by_value with float16/bfloat16: %s",
                  gc_last_error());
            gc::clip_by_value_(vhb.data(), vhb.size(), -0.1, 0.1);
            CHECK(same_bits(h, hb), "gc_clip_by_value != clip_by_value_ with float16/bfloat16 arrays");
            check_narrow_bits(HERE, "gc_clip_by_value 16-bit bits", h, h0, narrow_bits_of(h0, [&](std::size_t k, i64 i) {
                const double x = narrow_in(h0[k], i);
                return round_to_narrow(h0[k].dtype, x < -0.1 ? -0.1 : (x > 0.1 ? 0.1 : x));
            }));
            // A dtype that is no input is still refused before anything is written.
            List h2 = h0;
            auto th2 = tensors(h2);
            th2.push_back({th2[0].data, 4, 4});
            expect_status(HERE, gc_clip_by_value(th2.data(), th2.size(), -0.1, 0.1), GC_INVALID_ARGUMENT,
                          "gc_clip_by_value: dtype 4 after 16-bit arrays");
            CHECK(same_bits(h2, h0) && same_bits(a, b), "a failed gc_clip_by_value modified arrays");
        }
        for (double total_in : {-1.0, 3.5}) {
            for (int policy : {GC_PROPAGATE, GC_ERROR, GC_SKIP, GC_ZERO}) {
                for (const List* src : {&cl, &cl_nan}) {
                    List a = *src, b = *src;
                    auto ta = tensors(a);
                    std::vector<gc::TensorView> vb = views_of(b);
                    double total = -1;
                    int clipped = -1;
                    const gc_status s = gc_clip_by_global_norm(ta.data(), ta.size(), 1.0, 2.0, 1e-6, policy, total_in, &total,
                                                               &clipped);
                    const gc::GlobalClipResult res = gc::clip_by_global_norm_(
                        vb.data(), vb.size(), 1.0, 2.0, 1e-6, static_cast<gc::NonFinitePolicy>(policy), total_in >= 0,
                        total_in >= 0 ? total_in : 0.0);
                    const bool refused = res.nonfinite && policy == GC_ERROR;
                    CHECK(s == (refused ? GC_NONFINITE : GC_OK), "gc_clip_by_global_norm(policy %d, total %g) status %d",
                          policy, total_in, static_cast<int>(s));
                    if (refused) {
                        CHECK(gc_last_error()[0] != '\0', "GC_NONFINITE without a message");
                        CHECK(same_bits(a, *src), "GC_NONFINITE but the arrays were modified");
                    }
                    CHECK(same_double(total, res.total_norm) && clipped == (res.clipped ? 1 : 0) && same_bits(a, b),
                          "gc_clip_by_global_norm(policy %d, total %g) != clip_by_global_norm_ (total %g vs %g, clipped %d "
                          "vs %d)",
                          policy, total_in, total, res.total_norm, clipped, res.clipped);
                }
            }
        }
        {
            List a = cl;
            auto ta = tensors(a);
            CHECK(gc_clip_by_global_norm(ta.data(), ta.size(), 1.0, 2.0, 1e-6, GC_PROPAGATE, -1.0, nullptr, nullptr) == GC_OK,
                  "gc_clip_by_global_norm with NULL total_out/clipped: %s", gc_last_error());
            List b = cl;
            auto tb = tensors(b);
            double total = 7;
            int clipped = 7;
            expect_status(HERE, gc_clip_by_global_norm(tb.data(), tb.size(), 1.0, 2.0, 1e-6, 4, -1.0, &total, &clipped),
                          GC_INVALID_ARGUMENT, "gc_clip_by_global_norm: unknown policy");
            expect_status(HERE, gc_clip_by_global_norm(tb.data(), tb.size(), 1.0, 2.0, 1e-6, -1, -1.0, &total, &clipped),
                          GC_INVALID_ARGUMENT, "gc_clip_by_global_norm: negative policy");
            expect_status(HERE, gc_clip_by_global_norm(tb.data(), tb.size(), -1.0, 2.0, 1e-6, GC_ZERO, -1.0, &total, &clipped),
                          GC_INVALID_ARGUMENT, "gc_clip_by_global_norm: max_norm < 0");
            expect_status(HERE, gc_clip_by_global_norm(tb.data(), tb.size(), 1.0, 0.0, 1e-6, GC_ZERO, -1.0, &total, &clipped),
                          GC_INVALID_ARGUMENT, "gc_clip_by_global_norm: ord 0");
            CHECK(same_bits(b, cl) && total == 7 && clipped == 7, "a failed gc_clip_by_global_norm wrote something");
        }
        for (double ord : {2.0, 1.0, kInf}) {
            List a = cl, b = cl;
            auto ta = tensors(a);
            std::vector<gc::TensorView> vb = views_of(b);
            std::vector<double> na(2, -1), nb(2, -2);
            CHECK(gc_clip_by_norm(ta.data(), ta.size(), 0.5, ord, 1e-6, na.data()) == GC_OK, "gc_clip_by_norm: %s",
                  gc_last_error());
            gc::clip_by_norm_(vb.data(), vb.size(), 0.5, ord, 1e-6, nb.data());
            CHECK(same_bits(a, b) && std::memcmp(na.data(), nb.data(), 2 * sizeof(double)) == 0,
                  "gc_clip_by_norm(ord=%g) != clip_by_norm_", ord);
            List c = cl;
            auto tc = tensors(c);
            CHECK(gc_clip_by_norm(tc.data(), tc.size(), 0.5, ord, 1e-6, nullptr) == GC_OK && same_bits(c, b),
                  "gc_clip_by_norm with NULL norms_out");
            List d = cl;
            auto td = tensors(d);
            expect_status(HERE, gc_clip_by_norm(td.data(), td.size(), kNaN, ord, 1e-6, nullptr), GC_INVALID_ARGUMENT,
                          "gc_clip_by_norm: NaN max_norm");
            expect_status(HERE, gc_clip_by_norm(td.data(), td.size(), 0.5, ord, -1.0, nullptr), GC_INVALID_ARGUMENT,
                          "gc_clip_by_norm: eps < 0");
            CHECK(same_bits(d, cl), "a failed gc_clip_by_norm modified the arrays");
        }
        {  // 16-bit arrays through the C ABI's norm-based clipping: the C++ results, bit for bit.
            List n16;
            n16.push_back(make_array(gc::DType::float16, 50, Pattern::normal, r));
            n16.push_back(make_array(gc::DType::bfloat16, 41, Pattern::mixed, r));
            n16.push_back(make_array(gc::DType::float32, 9, Pattern::normal, r));
            List a = n16, b = n16;
            auto ta = tensors(a);
            std::vector<gc::TensorView> vb = views_of(b);
            std::vector<double> na(3, -1), nb(3, -2);
            CHECK(gc_clip_by_norm(ta.data(), ta.size(), 0.5, 2.0, 1e-6, na.data()) == GC_OK,
                  "gc_clip_by_norm with float16/bfloat16: %s", gc_last_error());
            gc::clip_by_norm_(vb.data(), vb.size(), 0.5, 2.0, 1e-6, nb.data());
            CHECK(same_bits(a, b) && std::memcmp(na.data(), nb.data(), 3 * sizeof(double)) == 0,
                  "gc_clip_by_norm != clip_by_norm_ with float16/bfloat16 arrays");
            List c = n16, d = n16;
            auto tc = tensors(c);
            std::vector<gc::TensorView> vd = views_of(d);
            double total = -1;
            int clipped = -1;
            CHECK(gc_clip_by_global_norm(tc.data(), tc.size(), 0.5, 2.0, 1e-6, GC_PROPAGATE, -1.0, &total, &clipped) == GC_OK,
                  "gc_clip_by_global_norm with float16/bfloat16: %s", gc_last_error());
            const gc::GlobalClipResult res =
                gc::clip_by_global_norm_(vd.data(), vd.size(), 0.5, 2.0, 1e-6, gc::NonFinitePolicy::propagate, false, 0.0);
            CHECK(same_bits(c, d) && same_double(total, res.total_norm) && clipped == (res.clipped ? 1 : 0),
                  "gc_clip_by_global_norm != clip_by_global_norm_ with float16/bfloat16 arrays");
        }
    });

    // --- GEMM: row-major, BLAS-like; equal to the C++ gemm through MatrixRef
    g_case = "gc_gemm";
    for_each_config([&](const Config&) {
        for (int dtype : {GC_FLOAT32, GC_FLOAT64}) {
            for (int ta = 0; ta < 2; ++ta) {
                for (int tb = 0; tb < 2; ++tb) {
                    const i64 m = 13, n = 11, k = 17;
                    const i64 lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
                    const i64 asz = (ta ? k : m) * lda, bsz = (tb ? n : k) * ldb, csz = m * ldc;
                    auto run = [&](auto tag) {
                        using T = decltype(tag);
                        std::vector<T> a = random_vec<T>(r, asz, -1, 1), b = random_vec<T>(r, bsz, -1, 1);
                        std::vector<T> c = random_vec<T>(r, csz, -1, 1), c2 = c;
                        CHECK(gc_gemm(dtype, ta, tb, m, n, k, 0.5, a.data(), lda, b.data(), ldb, 0.25, c.data(), ldc) == GC_OK,
                              "gc_gemm: %s", gc_last_error());
                        const gc::MatrixRef<const T> ma = ta ? gc::MatrixRef<const T>{a.data(), m, k, 1, lda}
                                                             : gc::MatrixRef<const T>{a.data(), m, k, lda, 1};
                        const gc::MatrixRef<const T> mb = tb ? gc::MatrixRef<const T>{b.data(), k, n, 1, ldb}
                                                             : gc::MatrixRef<const T>{b.data(), k, n, ldb, 1};
                        gc::gemm(ma, mb, gc::MatrixRef<T>{c2.data(), m, n, ldc, 1}, T(0.5), T(0.25));
                        CHECK(same_vec(c, c2), "gc_gemm(dtype %d, trans %d %d) != gemm", dtype, ta, tb);
                        const std::vector<T> keep = c;
                        expect_status(HERE, gc_gemm(dtype, ta, tb, m, n, k, 1, a.data(), (ta ? m : k) - 1, b.data(), ldb, 0,
                                                    c.data(), ldc),
                                      GC_INVALID_ARGUMENT, "gc_gemm: lda too small");
                        expect_status(HERE, gc_gemm(dtype, ta, tb, m, n, k, 1, a.data(), lda, b.data(), (tb ? k : n) - 1, 0,
                                                    c.data(), ldc),
                                      GC_INVALID_ARGUMENT, "gc_gemm: ldb too small");
                        expect_status(HERE, gc_gemm(dtype, ta, tb, m, n, k, 1, a.data(), lda, b.data(), ldb, 0, c.data(), n - 1),
                                      GC_INVALID_ARGUMENT, "gc_gemm: ldc too small");
                        expect_status(HERE, gc_gemm(dtype, ta, tb, -1, n, k, 1, a.data(), lda, b.data(), ldb, 0, c.data(), ldc),
                                      GC_INVALID_ARGUMENT, "gc_gemm: m < 0");
                        expect_status(HERE, gc_gemm(dtype, ta, tb, m, n, -2, 1, a.data(), lda, b.data(), ldb, 0, c.data(), ldc),
                                      GC_INVALID_ARGUMENT, "gc_gemm: k < 0");
                        expect_status(HERE, gc_gemm(dtype, ta, tb, m, n, k, 1, nullptr, lda, b.data(), ldb, 0, c.data(), ldc),
                                      GC_INVALID_ARGUMENT, "gc_gemm: NULL a");
                        expect_status(HERE, gc_gemm(dtype, ta, tb, m, n, k, 1, a.data(), lda, b.data(), ldb, 0, nullptr, ldc),
                                      GC_INVALID_ARGUMENT, "gc_gemm: NULL c");
                        for (int bad : {static_cast<int>(GC_FLOAT16), static_cast<int>(GC_BFLOAT16), 5, -1}) {
                            expect_status(HERE, gc_gemm(bad, ta, tb, m, n, k, 1, a.data(), lda, b.data(), ldb, 0, c.data(), ldc),
                                          GC_INVALID_ARGUMENT, "gc_gemm: bad dtype");
                        }
                        CHECK(same_vec(c, keep), "a failed gc_gemm modified C");
                    };
                    if (dtype == GC_FLOAT32) {
                        run(float{});
                    } else {
                        run(double{});
                    }
                }
            }
        }
        std::vector<double> c(4, 1.0);
        CHECK(gc_gemm(GC_FLOAT64, 0, 0, 2, 2, 0, 1, nullptr, 1, nullptr, 2, 0, c.data(), 2) == GC_OK &&
                  c == std::vector<double>(4, 0.0),
              "gc_gemm with k = 0 and NULL a, b");
    });

    // --- dense layer
    g_case = "gc_dense_forward / gc_dense_backward";
    for_each_config([&](const Config&) {
        const i64 batch = 6, in = 9, out = 5;
        auto run = [&](auto tag, int dtype) {
            using T = decltype(tag);
            std::vector<T> x = random_vec<T>(r, batch * in, -1, 1), w = random_vec<T>(r, out * in, -1, 1);
            std::vector<T> bias = random_vec<T>(r, out, -1, 1), gy = random_vec<T>(r, batch * out, -1, 1);
            for (int act = GC_IDENTITY; act <= GC_SIGMOID; ++act) {
                const auto cact = static_cast<gc::Activation>(act);
                std::vector<T> y(static_cast<std::size_t>(batch * out), T(7)), y2 = y;
                CHECK(gc_dense_forward(dtype, batch, in, out, x.data(), w.data(), bias.data(), y.data(), act, 0.2) == GC_OK,
                      "gc_dense_forward: %s", gc_last_error());
                gc::dense_forward(gc::DenseForward<T>{{x.data(), batch, in, in, 1}, {w.data(), out, in, in, 1}, bias.data(),
                                                      {y2.data(), batch, out, out, 1}, cact, 0.2});
                CHECK(same_vec(y, y2), "gc_dense_forward(%s) != dense_forward", act_name(cact));
                for (int acc = 0; acc < 2; ++acc) {
                    std::vector<T> gx = random_vec<T>(r, batch * in, -1, 1), gw = random_vec<T>(r, out * in, -1, 1);
                    std::vector<T> gb = random_vec<T>(r, out, -1, 1);
                    std::vector<T> gx2 = gx, gw2 = gw, gb2 = gb;
                    CHECK(gc_dense_backward(dtype, batch, in, out, gy.data(), x.data(), w.data(), y.data(), act, 0.2,
                                            acc ? gx.data() : nullptr, gw.data(), gb.data(), acc) == GC_OK,
                          "gc_dense_backward: %s", gc_last_error());
                    gc::dense_backward(gc::DenseBackward<T>{{gy.data(), batch, out, out, 1}, {x.data(), batch, in, in, 1},
                                                            {w.data(), out, in, in, 1}, {y.data(), batch, out, out, 1}, cact,
                                                            0.2, {acc ? gx2.data() : nullptr, batch, in, in, 1},
                                                            {gw2.data(), out, in, in, 1}, gb2.data(), acc != 0});
                    CHECK(same_vec(gx, gx2) && same_vec(gw, gw2) && same_vec(gb, gb2),
                          "gc_dense_backward(%s, accumulate %d) != dense_backward", act_name(cact), acc);
                }
            }
            // y may be NULL for the identity only.
            std::vector<T> gw(static_cast<std::size_t>(out * in), T(0));
            CHECK(gc_dense_backward(dtype, batch, in, out, gy.data(), x.data(), w.data(), nullptr, GC_IDENTITY, 0.0, nullptr,
                                    gw.data(), nullptr, 0) == GC_OK,
                  "gc_dense_backward identity with NULL y: %s", gc_last_error());
            std::vector<T> y(static_cast<std::size_t>(batch * out), T(7));
            const std::vector<T> y0 = y, gw0 = gw;
            expect_status(HERE, gc_dense_backward(dtype, batch, in, out, gy.data(), x.data(), w.data(), nullptr, GC_TANH, 0.0,
                                                  nullptr, gw.data(), nullptr, 0),
                          GC_INVALID_ARGUMENT, "gc_dense_backward: NULL y with tanh");
            for (int bad_act : {5, -1}) {
                expect_status(HERE, gc_dense_forward(dtype, batch, in, out, x.data(), w.data(), nullptr, y.data(), bad_act, 0.0),
                              GC_INVALID_ARGUMENT, "gc_dense_forward: unknown activation");
                expect_status(HERE, gc_dense_backward(dtype, batch, in, out, gy.data(), x.data(), w.data(), y.data(), bad_act,
                                                      0.0, nullptr, gw.data(), nullptr, 0),
                              GC_INVALID_ARGUMENT, "gc_dense_backward: unknown activation");
            }
            expect_status(HERE, gc_dense_forward(GC_FLOAT16, batch, in, out, x.data(), w.data(), nullptr, y.data(), 0, 0.0),
                          GC_INVALID_ARGUMENT, "gc_dense_forward: float16");
            expect_status(HERE, gc_dense_forward(dtype, batch, in, out, nullptr, w.data(), nullptr, y.data(), 0, 0.0),
                          GC_INVALID_ARGUMENT, "gc_dense_forward: NULL x");
            expect_status(HERE, gc_dense_forward(dtype, -1, in, out, x.data(), w.data(), nullptr, y.data(), 0, 0.0),
                          GC_INVALID_ARGUMENT, "gc_dense_forward: batch < 0");
            expect_status(HERE, gc_dense_backward(dtype, batch, -3, out, gy.data(), x.data(), w.data(), y.data(), 0, 0.0,
                                                  nullptr, gw.data(), nullptr, 0),
                          GC_INVALID_ARGUMENT, "gc_dense_backward: in_features < 0");
            CHECK(same_vec(y, y0) && same_vec(gw, gw0), "a failed dense call modified its outputs");
        };
        run(float{}, GC_FLOAT32);
        run(double{}, GC_FLOAT64);
    });

    // --- the last error is per thread
    g_case = "gc_last_error per thread";
    double out = 0;
    gc_tensor bad = {nullptr, 3, GC_FLOAT32};
    gc_global_norm(&bad, 1, 2.0, &out);
    const std::string mine = gc_last_error();
    std::string theirs_before, theirs_after;
    std::thread th([&] {
        theirs_before = gc_last_error();
        gc_global_norm(&bad, 1, -5.0, &out);  // a different error
        theirs_after = gc_last_error();
    });
    th.join();
    CHECK(!mine.empty() && theirs_before.empty() && !theirs_after.empty() && std::string(gc_last_error()) == mine,
          "per-thread gc_last_error: main '%s' -> '%s', other thread '%s' then '%s'", mine.c_str(), gc_last_error(),
          theirs_before.c_str(), theirs_after.c_str());
    g_case.clear();
}

// ================================================================== area: invalid_args

void test_invalid_args() {
    Rng r(1010);
    Array a32 = make_array(gc::DType::float32, 40, Pattern::nan_inf, r);
    Array a64 = make_array(gc::DType::float64, 40, Pattern::normal, r);
    Array a16 = make_array(gc::DType::float16, 40, Pattern::normal, r);
    Array abf16 = make_array(gc::DType::bfloat16, 40, Pattern::normal, r);
    gc::TensorView v32 = a32.view(), v64 = a64.view();
    double out[4] = {0, 0, 0, 0};
    double stat_l2[2], stat_max[2];
    std::int64_t stat_nonfinite[2];

    // --- norm orders: p > 0 or +inf
    for (double ord : {0.0, -1.0, -kInf, kNaN, -0.5}) {
        g_case = strf("ord=%g", ord);
        EXPECT_INVALID("check_norm_order: bad ord", gc::check_norm_order(ord));
        EXPECT_INVALID("global_norm: bad ord", gc::global_norm(&v32, 1, ord));
        EXPECT_INVALID("norms: bad ord", gc::norms(&v32, 1, ord, out));
        EXPECT_INVALID("clip_by_norm_: bad ord", gc::clip_by_norm_(&v64, 1, 1.0, ord, 1e-6, out));
        EXPECT_INVALID("clip_by_global_norm_: bad ord",
                       gc::clip_by_global_norm_(&v64, 1, 1.0, ord, 1e-6, gc::NonFinitePolicy::propagate, false, 0.0));
    }

    // --- in-place functions take float16 and bfloat16 (they refused float16 before
    // 6a4e5b5): the calls work and give the reference's bits; a dtype that is no input
    // is still refused before anything, 16-bit arrays included, is written.
    g_case = "float16 and bfloat16 in an in-place list";
    {
        List l;
        l.push_back(make_array(gc::DType::float32, 50, Pattern::nan_inf, r));
        l.push_back(make_array(gc::DType::float16, 9, Pattern::normal, r));
        l.push_back(make_array(gc::DType::bfloat16, 9, Pattern::normal, r));
        const List orig = l;
        // Runs f on a fresh copy of the list; false (a failed check) if it threw.
        auto run = [&](List& c, const char* what, auto f) {
            c = orig;
            std::vector<gc::TensorView> v = views_of(c);
            try {
                f(v);
                return true;
            } catch (const std::exception& e) {
                return CHECK(false, "%s threw: %s", what, e.what());
            }
        };
        List c;
        if (run(c, "scale_", [](std::vector<gc::TensorView>& v) { gc::scale_(v.data(), 3, 0.3); })) {
            check_narrow_bits(HERE, "scale_: 16-bit bits", c, orig,
                              narrow_bits_of(orig, [&](std::size_t a, i64 i) { return scaled_bits(orig[a], i, 0.3); }));
        }
        if (run(c, "clip_by_value_", [](std::vector<gc::TensorView>& v) { gc::clip_by_value_(v.data(), 3, -0.1, 0.1); })) {
            check_narrow_bits(HERE, "clip_by_value_: 16-bit bits", c, orig, narrow_bits_of(orig, [&](std::size_t a, i64 i) {
                const double x = narrow_in(orig[a], i);
                return round_to_narrow(orig[a].dtype, x < -0.1 ? -0.1 : (x > 0.1 ? 0.1 : x));
            }));
        }
        i64 zeroed = -1;
        if (run(c, "zero_nonfinite_", [&](std::vector<gc::TensorView>& v) { zeroed = gc::zero_nonfinite_(v.data(), 3); })) {
            i64 expected = 0;
            for (i64 i = 0; i < orig[0].n; ++i) expected += std::isfinite(orig[0].get(i)) ? 0 : 1;
            CHECK(zeroed == expected && c[1].same_bits(orig[1]) && c[2].same_bits(orig[2]),
                  "zero_nonfinite_ returned %lld (expected %lld, all in the float32 array) or changed the finite 16-bit "
                  "arrays",
                  ll(zeroed), ll(expected));
        }
        double norms_out[3] = {-1, -1, -1};
        if (run(c, "clip_by_norm_", [&](std::vector<gc::TensorView>& v) { gc::clip_by_norm_(v.data(), 3, 1e-3, 2.0, 1e-6, norms_out); })) {
            for (std::size_t a = 1; a < 3; ++a) {
                CHECK(norm_agrees(norms_out[a], reference_norm(orig[a], 2.0), 2.0, orig[a].n), "clip_by_norm_ norms_out[%zu] = %.17g",
                      a, norms_out[a]);
            }
            check_narrow_bits(HERE, "clip_by_norm_: 16-bit bits", c, orig, narrow_bits_of(orig, [&](std::size_t a, i64 i) {
                return scaled_bits(orig[a], i, clip_factor_double(1e-3, norms_out[a], 1e-6));
            }));
        }
        for (gc::NonFinitePolicy p : {gc::NonFinitePolicy::propagate, gc::NonFinitePolicy::zero}) {
            gc::GlobalClipResult res{};
            if (!run(c, "clip_by_global_norm_", [&](std::vector<gc::TensorView>& v) {
                    res = gc::clip_by_global_norm_(v.data(), 3, 1e-3, 2.0, 1e-6, p, false, 0.0);
                })) {
                continue;
            }
            // The float32 array's NaN makes the total NaN: propagate scales by NaN, zero by
            // the norm of what remains (the 16-bit arrays have nothing to zero).
            CHECK(res.nonfinite && (p == gc::NonFinitePolicy::propagate ? std::isnan(res.factor) : res.factor < 1),
                  "clip_by_global_norm_(%s): nonfinite %d, factor %g", policy_name(p), res.nonfinite, res.factor);
            check_narrow_bits(HERE, "clip_by_global_norm_: 16-bit bits", c, orig,
                              narrow_bits_of(orig, [&](std::size_t a, i64 i) { return scaled_bits(orig[a], i, res.factor); }));
        }
        // The refusal that remains: a dtype no in-place function takes (int64, an output
        // type only), after the 16-bit arrays; nothing may be written.
        std::vector<gc::TensorView> v = views_of(l);
        v.push_back({a64.data(), 4, gc::DType::int64});
        EXPECT_INVALID("scale_: int64 after 16-bit arrays", gc::scale_(v.data(), 4, 0.5));
        EXPECT_INVALID("clip_by_value_: int64 after 16-bit arrays", gc::clip_by_value_(v.data(), 4, -0.1, 0.1));
        EXPECT_INVALID("zero_nonfinite_: int64 after 16-bit arrays", gc::zero_nonfinite_(v.data(), 4));
        EXPECT_INVALID("clip_by_norm_: int64 after 16-bit arrays", gc::clip_by_norm_(v.data(), 4, 1e-3, 2.0, 1e-6, out));
        for (gc::NonFinitePolicy p : {gc::NonFinitePolicy::propagate, gc::NonFinitePolicy::zero}) {
            EXPECT_INVALID("clip_by_global_norm_: int64 after 16-bit arrays",
                           gc::clip_by_global_norm_(v.data(), 4, 1e-3, 2.0, 1e-6, p, false, 0.0));
        }
        CHECK(same_bits(l, orig), "an in-place call that threw modified the arrays");
    }

    // --- bounds, max_norm, eps, given total
    g_case = "bounds and scalars";
    {
        const Array keep = a64;
        EXPECT_INVALID("clip_by_value_: min > max", gc::clip_by_value_(&v64, 1, 1.0, -1.0));
        EXPECT_INVALID("clip_by_value_: NaN min", gc::clip_by_value_(&v64, 1, kNaN, 1.0));
        EXPECT_INVALID("clip_by_value_: NaN max", gc::clip_by_value_(&v64, 1, -1.0, kNaN));
        for (double mx : {-1.0, kNaN}) {
            EXPECT_INVALID("clip_by_norm_: bad max_norm", gc::clip_by_norm_(&v64, 1, mx, 2.0, 1e-6, out));
            EXPECT_INVALID("clip_by_global_norm_: bad max_norm",
                           gc::clip_by_global_norm_(&v64, 1, mx, 2.0, 1e-6, gc::NonFinitePolicy::propagate, false, 0.0));
        }
        for (double eps : {-1e-6, kInf, kNaN}) {
            EXPECT_INVALID("clip_by_norm_: bad eps", gc::clip_by_norm_(&v64, 1, 1e-3, 2.0, eps, out));
            EXPECT_INVALID("clip_by_global_norm_: bad eps",
                           gc::clip_by_global_norm_(&v64, 1, 1e-3, 2.0, eps, gc::NonFinitePolicy::propagate, false, 0.0));
        }
        EXPECT_INVALID("clip_by_global_norm_: negative given total",
                       gc::clip_by_global_norm_(&v64, 1, 1e-3, 2.0, 1e-6, gc::NonFinitePolicy::propagate, true, -1.0));
        CHECK(a64.same_bits(keep), "a call that threw modified the array");
    }

    // --- adaptive clipping
    g_case = "adaptive_clip_";
    {
        Array g = make_array(gc::DType::float32, 24, Pattern::normal, r), p = make_array(gc::DType::float32, 24, Pattern::normal, r);
        const Array keep = g;
        gc::TensorView gv = g.view(), pv = p.view();
        const gc::UnitLayout good{2, 3, 4}, wrong{2, 3, 5};
        for (double c : {-1.0, kNaN, kInf}) {
            EXPECT_INVALID("adaptive_clip_: bad clipping", gc::adaptive_clip_(&gv, &pv, &good, 1, c, 1e-3));
        }
        EXPECT_INVALID("adaptive_clip_: bad eps", gc::adaptive_clip_(&gv, &pv, &good, 1, 0.1, -1.0));
        EXPECT_INVALID("adaptive_clip_: layout does not match", gc::adaptive_clip_(&gv, &pv, &wrong, 1, 0.1, 1e-3));
        gc::TensorView short_p{p.data(), 20, gc::DType::float32};
        EXPECT_INVALID("adaptive_clip_: params of another size", gc::adaptive_clip_(&gv, &short_p, &good, 1, 0.1, 1e-3));
        // 16-bit grads are taken now (refused before 6a4e5b5); a 16-bit pair of other sizes is not.
        gc::TensorView h20{a16.data(), 20, gc::DType::float16};
        EXPECT_INVALID("adaptive_clip_: float16 grads of another size", gc::adaptive_clip_(&h20, &pv, &good, 1, 0.01, 1e-3));
        CHECK(g.same_bits(keep), "adaptive_clip_ that threw modified the grads");
        for (gc::DType t : {gc::DType::float16, gc::DType::bfloat16}) {
            List gl;
            gl.push_back(make_array(t, 24, Pattern::normal, r));
            const List gl0 = gl;
            std::vector<gc::TensorView> glv = views_of(gl);
            double gn[3], pn[3];
            gc::unit_norms(glv.data(), &good, 1, gn);
            gc::unit_norms(&pv, &good, 1, pn);
            try {
                gc::adaptive_clip_(glv.data(), &pv, &good, 1, 0.01, 1e-3);
            } catch (const std::exception& e) {
                CHECK(false, "adaptive_clip_ with %s grads threw: %s", gc::dtype_name(t), e.what());
                continue;
            }
            check_narrow_bits(HERE, "adaptive_clip_: 16-bit grads", gl, gl0, narrow_bits_of(gl0, [&](std::size_t, i64 i) {
                const i64 u = (i / good.inner) % good.units;
                const double limit = 0.01 * (pn[u] > 1e-3 ? pn[u] : 1e-3);
                return gn[u] > limit ? scaled_bits(gl0[0], i, limit / gn[u]) : gl0[0].h[static_cast<std::size_t>(i)];
            }));
            CHECK(!gl[0].same_bits(gl0[0]), "adaptive_clip_(clipping=0.01) left %s grads of norm ~1 unclipped", gc::dtype_name(t));
        }
    }

    // --- GEMM shapes
    g_case = "gemm shapes";
    {
        std::vector<float> A(64, 1.0f), B(64, 1.0f), C(64, 5.0f);
        std::vector<double> Ad(64, 1.0), Bd(64, 1.0), Cd(64, 5.0);
        using MF = gc::MatrixRef<const float>;
        using MD = gc::MatrixRef<const double>;
        EXPECT_INVALID("gemm: a.cols != b.rows",
                       gc::gemm(MF{A.data(), 3, 4, 4, 1}, MF{B.data(), 5, 2, 2, 1}, gc::MatrixRef<float>{C.data(), 3, 2, 2, 1}, 1.0f, 0.0f));
        EXPECT_INVALID("gemm: c.rows != a.rows",
                       gc::gemm(MF{A.data(), 3, 4, 4, 1}, MF{B.data(), 4, 2, 2, 1}, gc::MatrixRef<float>{C.data(), 4, 2, 2, 1}, 1.0f, 0.0f));
        EXPECT_INVALID("gemm: c.cols != b.cols",
                       gc::gemm(MD{Ad.data(), 3, 4, 4, 1}, MD{Bd.data(), 4, 2, 2, 1}, gc::MatrixRef<double>{Cd.data(), 3, 3, 3, 1}, 1.0, 0.0));
        EXPECT_INVALID("gemm: C with a non-unit column stride",
                       gc::gemm(MD{Ad.data(), 3, 4, 4, 1}, MD{Bd.data(), 4, 2, 2, 1}, gc::MatrixRef<double>{Cd.data(), 3, 2, 4, 2}, 1.0, 0.0));
        CHECK(std::all_of(C.begin(), C.end(), [](float x) { return x == 5.0f; }) &&
                  std::all_of(Cd.begin(), Cd.end(), [](double x) { return x == 5.0; }),
              "a gemm that threw wrote C");
    }

    // --- dense shapes
    g_case = "dense shapes";
    {
        std::vector<float> x(64, 0.5f), w(64, 0.25f), y(64, 0.0f), gy(64, 1.0f), gx(64, 0.0f), gw(64, 0.0f);
        using M = gc::MatrixRef<const float>;
        using O = gc::MatrixRef<float>;
        EXPECT_INVALID("dense_forward: weight cols != in",
                       gc::dense_forward(gc::DenseForward<float>{M{x.data(), 2, 3, 3, 1}, M{w.data(), 4, 5, 5, 1}, nullptr,
                                                                 O{y.data(), 2, 4, 4, 1}, gc::Activation::relu, 0.0}));
        EXPECT_INVALID("dense_forward: y shape",
                       gc::dense_forward(gc::DenseForward<float>{M{x.data(), 2, 3, 3, 1}, M{w.data(), 4, 3, 3, 1}, nullptr,
                                                                 O{y.data(), 2, 5, 5, 1}, gc::Activation::relu, 0.0}));
        auto bw = [&](i64 gy_cols, i64 gy_cs, i64 gx_rows, i64 gw_cols) {
            return gc::DenseBackward<float>{M{gy.data(), 2, gy_cols, 8, gy_cs}, M{x.data(), 2, 3, 3, 1}, M{w.data(), 4, 3, 3, 1},
                                            M{y.data(), 2, 4, 4, 1}, gc::Activation::tanh, 0.0, O{gx.data(), gx_rows, 3, 3, 1},
                                            O{gw.data(), 4, gw_cols, 8, 1}, nullptr, false};
        };
        EXPECT_INVALID("dense_backward: grad_y shape", gc::dense_backward(bw(5, 1, 2, 3)));
        EXPECT_INVALID("dense_backward: grad_y column stride", gc::dense_backward(bw(4, 2, 2, 3)));
        EXPECT_INVALID("dense_backward: grad_x shape", gc::dense_backward(bw(4, 1, 3, 3)));
        EXPECT_INVALID("dense_backward: grad_weight shape", gc::dense_backward(bw(4, 1, 2, 4)));
        CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 0.0f; }) &&
                  std::all_of(gx.begin(), gx.end(), [](float v) { return v == 0.0f; }) &&
                  std::all_of(gw.begin(), gw.end(), [](float v) { return v == 0.0f; }),
              "a dense call that threw wrote its outputs");
    }

    // --- optimisers
    g_case = "optimisers";
    {
        List p, g, b;
        p.push_back(make_array(gc::DType::float32, 10, Pattern::normal, r));
        g.push_back(make_array(gc::DType::float32, 10, Pattern::normal, r));
        b.push_back(make_array(gc::DType::float32, 10, Pattern::normal, r));
        const List keep = p;
        std::vector<gc::TensorView> pv = views_of(p), gv = views_of(g), bv = views_of(b);
        gc::SgdOptions so{};
        so.lr = 0.1;
        so.momentum = 0.9;
        EXPECT_INVALID("sgd_step: momentum without buffers", gc::sgd_step(pv.data(), gv.data(), nullptr, 1, so));
        gc::TensorView g_short{g[0].data(), 9, gc::DType::float32}, g_f64{a64.data(), 10, gc::DType::float64};
        gc::TensorView p16{a16.data(), 10, gc::DType::float16}, g16{a16.data(), 10, gc::DType::float16};
        EXPECT_INVALID("sgd_step: grads of another size", gc::sgd_step(pv.data(), &g_short, bv.data(), 1, so));
        EXPECT_INVALID("sgd_step: grads of another dtype", gc::sgd_step(pv.data(), &g_f64, bv.data(), 1, so));
        EXPECT_INVALID("sgd_step: buffers of another size", gc::sgd_step(pv.data(), gv.data(), &g_short, 1, so));
        so.momentum = 0;
        gc::TensorView pbf{abf16.data(), 10, gc::DType::bfloat16}, gbf{abf16.data(), 10, gc::DType::bfloat16};
        gc::AdamOptions ao{};
        ao.lr = 1e-3;
        ao.step = 0;
        EXPECT_INVALID("adam_step: step 0", gc::adam_step(pv.data(), gv.data(), bv.data(), bv.data(), 1, ao));
        ao.step = 1;
        {
            // A 16-bit parameter's state and master are float32 arrays of its size; a
            // float32 parameter is its own master.
            const Array keep16 = a16, keepbf = abf16;
            Array s16a = a16, s16b = a16, sbfa = abf16;
            gc::TensorView m16{s16a.data(), 10, gc::DType::float16}, v16{s16b.data(), 10, gc::DType::float16};
            gc::TensorView mbf{sbfa.data(), 10, gc::DType::bfloat16};
            EXPECT_INVALID("adam_step: float16 moments", gc::adam_step(&p16, &g16, &m16, &v16, 1, ao));
            so.momentum = 0.9;
            EXPECT_INVALID("sgd_step: bfloat16 momentum buffers", gc::sgd_step(&pbf, &gbf, &mbf, 1, so));
            so.momentum = 0;
            Array w = b[0];
            const Array keep_w = w;
            gc::TensorView w_short{w.data(), 9, gc::DType::float32}, w_f64{a64.data(), 10, gc::DType::float64};
            gc::TensorView w_other{w.data(), 10, gc::DType::float32};
            EXPECT_INVALID("sgd_step: a master of another size", gc::sgd_step(&p16, &g16, nullptr, 1, so, &w_short));
            EXPECT_INVALID("sgd_step: a float64 master", gc::sgd_step(&pbf, &gbf, nullptr, 1, so, &w_f64));
            EXPECT_INVALID("adam_step: a float32 parameter's master that is not itself",
                           gc::adam_step(pv.data(), gv.data(), bv.data(), bv.data(), 1, ao, &w_other));
            CHECK(a16.same_bits(keep16) && abf16.same_bits(keepbf) && s16a.same_bits(keep16) &&
                      sbfa.same_bits(keepbf) && w.same_bits(keep_w),
                  "an optimiser step that refused its 16-bit arguments modified them");
        }
        EXPECT_INVALID("adam_step: exp_avg of another size", gc::adam_step(pv.data(), gv.data(), &g_short, bv.data(), 1, ao));
        EXPECT_INVALID("adam_step: exp_avg_sq of another dtype", gc::adam_step(pv.data(), gv.data(), bv.data(), &g_f64, 1, ao));
        CHECK(same_bits(p, keep), "an optimiser step that threw modified the params");
    }

    // --- runtime switches and enums
    g_case = "runtime";
    {
        const std::string before = gc::isa_active();
        const std::vector<std::string> avail = gc::isa_available();
        EXPECT_INVALID("set_isa: unknown name", gc::set_isa("no-such-isa"));
        EXPECT_INVALID("set_isa: empty name", gc::set_isa(""));
        for (const char* name : {"avx2", "avx512", "neon"}) {
            if (std::find(avail.begin(), avail.end(), name) == avail.end()) {
                EXPECT_INVALID("set_isa: a target this CPU cannot run", gc::set_isa(name));
            }
        }
        CHECK(gc::isa_active() == before, "a failed set_isa changed the target");
        const int threads = gc::get_num_threads();
        EXPECT_INVALID("set_num_threads(0)", gc::set_num_threads(0));
        EXPECT_INVALID("set_num_threads(-3)", gc::set_num_threads(-3));
        CHECK(gc::get_num_threads() == threads, "a failed set_num_threads changed the thread count");
        EXPECT_INVALID("gate_count: unknown cell", gc::gate_count(static_cast<gc::Cell>(9)));
        RnnModel<float> m = make_rnn<float>(r, gc::Cell::gru, 2, 2, 2, 2, true);
        m.cell = static_cast<gc::Cell>(9);
        std::vector<float> hs(64, 0.0f), cs(64, 0.0f), gates(64, 0.0f), ghn(64, 0.0f);
        gc::RnnForward<float> f{m.cell, 2, 2, 2, 2, m.x.data(), m.wih.data(), m.whh.data(), nullptr, nullptr,
                                hs.data(), cs.data(), gates.data(), ghn.data(), nullptr, nullptr, nullptr, nullptr,
                                nullptr};
        EXPECT_INVALID("rnn_forward: unknown cell", gc::rnn_forward(f));
    }

    // --- negative sizes, everywhere a size is taken
    g_case = "negative sizes";
    {
        gc::TensorView neg{a32.data(), -1, gc::DType::float32};
        gc::TensorView very_neg{a32.data(), -100000, gc::DType::float32};
        gc::TensorView neg64{a64.data(), -1, gc::DType::float64};
        EXPECT_INVALID("global_norm: numel -1", gc::global_norm(&neg, 1, 2.0));
        EXPECT_INVALID("global_norm: numel -100000", gc::global_norm(&very_neg, 1, 2.0));
        EXPECT_INVALID("norms: numel -1", gc::norms(&neg, 1, 3.0, out));
        EXPECT_INVALID("grad_stats: numel -1", gc::grad_stats(&neg, 1, stat_l2, stat_max, stat_nonfinite));
        EXPECT_INVALID("scale_: numel -1", gc::scale_(&neg64, 1, 0.5));
        EXPECT_INVALID("clip_by_value_: numel -1", gc::clip_by_value_(&neg64, 1, -0.1, 0.1));
        EXPECT_INVALID("zero_nonfinite_: numel -1", gc::zero_nonfinite_(&neg64, 1));
        EXPECT_INVALID("clip_by_norm_: numel -1", gc::clip_by_norm_(&neg64, 1, 1.0, 2.0, 1e-6, out));
        EXPECT_INVALID("clip_by_global_norm_: numel -1",
                       gc::clip_by_global_norm_(&neg64, 1, 1.0, 2.0, 1e-6, gc::NonFinitePolicy::propagate, false, 0.0));
        {
            Array g = make_array(gc::DType::float64, 6, Pattern::normal, r), p = make_array(gc::DType::float64, 6, Pattern::normal, r);
            gc::TensorView gv = g.view(), pv = p.view();
            const gc::UnitLayout l{-1, 2, -3};  // the product matches numel 6
            EXPECT_INVALID("adaptive_clip_: negative layout", gc::adaptive_clip_(&gv, &pv, &l, 1, 0.1, 1e-3));
        }
        {
            gc::SgdOptions so{};
            so.lr = 0.1;
            gc::TensorView gneg{a64.data(), -1, gc::DType::float64};
            EXPECT_INVALID("sgd_step: numel -1", gc::sgd_step(&neg64, &gneg, nullptr, 1, so));
            gc::AdamOptions ao{};
            ao.lr = 0.1;
            EXPECT_INVALID("adam_step: numel -1", gc::adam_step(&neg64, &gneg, &gneg, &gneg, 1, ao));
        }
        std::vector<float> A(64, 1.0f), B(64, 1.0f), C(64, 0.0f);
        using MF = gc::MatrixRef<const float>;
        EXPECT_INVALID("gemm: m = -1",
                       gc::gemm(MF{A.data(), -1, 3, 3, 1}, MF{B.data(), 3, 4, 4, 1}, gc::MatrixRef<float>{C.data(), -1, 4, 4, 1}, 1.0f, 0.0f));
        EXPECT_INVALID("gemm: n = -1",
                       gc::gemm(MF{A.data(), 2, 3, 3, 1}, MF{B.data(), 3, -1, 1, 1}, gc::MatrixRef<float>{C.data(), 2, -1, 1, 1}, 1.0f, 0.0f));
        EXPECT_INVALID("gemm: k = -1",
                       gc::gemm(MF{A.data(), 2, -1, 1, 1}, MF{B.data(), -1, 4, 4, 1}, gc::MatrixRef<float>{C.data(), 2, 4, 4, 1}, 1.0f, 0.0f));
        EXPECT_INVALID("dense_forward: batch = -1",
                       gc::dense_forward(gc::DenseForward<float>{MF{A.data(), -1, 3, 3, 1}, MF{B.data(), 4, 3, 3, 1}, nullptr,
                                                                 gc::MatrixRef<float>{C.data(), -1, 4, 4, 1},
                                                                 gc::Activation::identity, 0.0}));
        EXPECT_INVALID("dense_backward: batch = -1",
                       gc::dense_backward(gc::DenseBackward<float>{MF{A.data(), -1, 4, 4, 1}, MF{B.data(), -1, 3, 3, 1},
                                                                   MF{B.data(), 4, 3, 3, 1}, MF{A.data(), -1, 4, 4, 1},
                                                                   gc::Activation::identity, 0.0,
                                                                   gc::MatrixRef<float>{C.data(), -1, 3, 3, 1},
                                                                   gc::MatrixRef<float>{C.data(), 4, 3, 3, 1}, nullptr, false}));
        EXPECT_INVALID("vector_math: n = -1", gc::vector_math(A.data(), -1, gc::MathFunction::exp));
        {
            RnnModel<float> m = make_rnn<float>(r, gc::Cell::lstm, 2, 2, 3, 4, true);
            for (int which = 0; which < 4; ++which) {
                RnnModel<float> bad = m;
                RnnState<float> s = run_forward(m);  // valid buffers of the valid sizes
                gc::RnnForward<float> f = forward_view(bad, s);
                (which == 0 ? f.steps : which == 1 ? f.batch : which == 2 ? f.input : f.hidden) = -1;
                const char* names[] = {"rnn_forward: steps = -1", "rnn_forward: batch = -1", "rnn_forward: input = -1",
                                       "rnn_forward: hidden = -1"};
                EXPECT_INVALID(names[which], gc::rnn_forward(f));
            }
            RnnState<float> s = run_forward(m);
            std::vector<float> gy(64, 0.1f), g1(256, 0.0f);
            gc::RnnBackward<float> b{};
            b.states = gc::states_of(forward_view(m, s));
            b.states.steps = -1;
            b.grad_y = gy.data();
            b.grad_x = g1.data();
            b.grad_weight_hh = g1.data();
            EXPECT_INVALID("rnn_backward: steps = -1", gc::rnn_backward(b));
        }
        EXPECT_INVALID("memory_probe_read: n = -1", gc::memory_probe_read(A.data(), -1));
        EXPECT_INVALID("memory_probe_update: n = -1", gc::memory_probe_update(A.data(), -1));
        EXPECT_INVALID("fma_probe: float16", gc::fma_probe(gc::DType::float16, 1));
        EXPECT_INVALID("fma_probe: iterations = 0", gc::fma_probe(gc::DType::float32, 0));
    }
    g_case.clear();
}

// ================================================================== area: dropout

// Dropout through the C++ API: Random123's published Philox4x32-10 answer for counter and
// key 0, every element either 0 or x * (1 / (1 - p)) rounded to T, the kept fraction near
// 1 - p, the same bits on every configuration, the edge probabilities, and refusals.
template <class T>
void check_dropout(double p) {
    const i64 n = 100003;
    std::vector<T> x(static_cast<std::size_t>(n));
    for (i64 i = 0; i < n; ++i) x[i] = static_cast<T>(1.0 + 1e-3 * static_cast<double>(i % 977));
    const T scale = p < 1 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
    std::vector<T> first;
    for_each_config([&](const Config&) {
        std::vector<T> y(x.size());
        gc::dropout(gc::Dropout<T>{x.data(), y.data(), n, p, 42, 7});
        i64 kept = 0;
        check_each(HERE, "dropout: 0 or x * scale", n, [&](i64 i) { return y[i] == T(0) || y[i] == x[i] * scale; },
                   [&](i64 i) { return strf("p=%g y[%lld]=%.9g x=%.9g", p, (long long)i, (double)y[i], (double)x[i]); });
        for (const T v : y) kept += v != T(0);
        const double sd = std::sqrt(static_cast<double>(n) * p * (1 - p));
        CHECK(std::fabs(static_cast<double>(kept) - static_cast<double>(n) * (1 - p)) <= 5 * sd + 0.5,
              "p=%g: kept %lld of %lld", p, (long long)kept, (long long)n);
        if (first.empty()) first = y;
        CHECK(y == first, "p=%g: a different mask on this configuration", p);
    });
}

void test_dropout() {
    std::uint32_t words[8];
    gc::dropout_bits(words, 8, 0, 0);
    const std::uint32_t kat[4] = {0x6627E8D5u, 0xE169C58Du, 0xBC57AC4Cu, 0x9B00DBD8u};
    CHECK(std::equal(kat, kat + 4, words), "Philox4x32-10(0, 0) = %08x %08x %08x %08x", words[0], words[1], words[2],
          words[3]);
    for (double p : {0.0, 0.3, 0.5, 1.0}) {
        check_dropout<float>(p);
        check_dropout<double>(p);
    }
    std::vector<double> x(4, 1.0), y(4);
    EXPECT_INVALID("dropout: p > 1", gc::dropout(gc::Dropout<double>{x.data(), y.data(), 4, 1.5, 0, 0}));
    EXPECT_INVALID("dropout: p NaN", gc::dropout(gc::Dropout<double>{x.data(), y.data(), 4, std::nan(""), 0, 0}));
    EXPECT_INVALID("dropout: n < 0", gc::dropout(gc::Dropout<double>{x.data(), y.data(), -1, 0.5, 0, 0}));
    EXPECT_INVALID("dropout: null y", gc::dropout(gc::Dropout<double>{x.data(), nullptr, 4, 0.5, 0, 0}));
}

}  // namespace

// ================================================================== main

int main() {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    g_areas.push_back({"setup", 0, 0});
    for (const std::string& isa : gc::isa_available()) {
        for (int threads : {1, 2}) g_configs.push_back({isa, threads});
    }
    std::string targets;
    for (const std::string& isa : gc::isa_available()) targets += (targets.empty() ? "" : ", ") + isa;
    std::printf("gradcore %s (%s), targets: %s; each run with 1 and 2 threads\n", gc::version(), gc::compiler(),
                targets.c_str());
    std::fflush(stdout);

    struct AreaFn {
        const char* name;
        void (*fn)();
    };
    const AreaFn areas[] = {{"runtime", test_runtime},         {"norms", test_norms},   {"clip", test_clip},
                            {"adaptive_clip", test_adaptive_clip}, {"complex", test_complex}, {"gemm", test_gemm},     {"dense", test_dense},
                            {"vector_math", test_vector_math}, {"rnn", test_rnn},       {"optim", test_optim},
                            {"normalization", test_normalization}, {"dropout", test_dropout},
                            {"c_api", test_c_api},             {"invalid_args", test_invalid_args}};
    for (const AreaFn& a : areas) {
        g_areas.push_back({a.name, 0, 0});
        g_case.clear();
        const auto t0 = clock::now();
        try {
            a.fn();
        } catch (const std::exception& e) {
            tally(false);
            report(HERE, "unexpected exception", e.what());
        } catch (...) {
            tally(false);
            report(HERE, "unexpected exception", "(not a std::exception)");
        }
        g_config.clear();
        const double s = std::chrono::duration<double>(clock::now() - t0).count();
        std::printf("  %-14s %7ld checks, %4ld failed  (%.2f s)\n", a.name, g_areas.back().checks, g_areas.back().failures, s);
        std::fflush(stdout);
    }
    const double total = std::chrono::duration<double>(clock::now() - start).count();
    std::printf("gradcore_cpp_tests: %s: %ld checks, %ld failed, %zu areas, %zu configurations, %.1f s\n",
                g_failures == 0 ? "PASSED" : "FAILED", g_checks, g_failures, std::size(areas), g_configs.size(), total);
    return g_failures == 0 ? 0 : 1;
}
