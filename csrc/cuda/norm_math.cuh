// The arithmetic of the CUDA norms and clipping, as plain __host__ __device__ functions
// (no intrinsics) so that tests/cpp/test_cuda_norm_math.cpp checks them on the host:
//
// - Blue3: Blue's three-accumulator sum of squares, as in LAPACK 3.10's dnrm2 (Anderson,
//   "Algorithm 978: Safe scaling in the Level 1 BLAS", TOMS 2017). Elements above
//   kTbig are squared after scaling by kSbig, elements below kTsml after scaling by kSsml,
//   the rest as they are; all scale factors are powers of two, so the scaling is exact.
//   No finite float64 input overflows or underflows (denormals included), and partial
//   accumulators of chunks combine by adding component-wise, in a fixed order.
//   float16/bfloat16/float32 values all lie in [kTsml, kTbig] (or are 0), so their squares
//   go straight into the middle accumulator: a plain float64 sum, as on the CPU.
// - L1 sums: two accumulators (|x| <= 2^960 as is, larger |x| scaled by 2^-512), so
//   no finite sum overflows before the final result does.
// - The NaN-propagating max, the general-p finish, and the clipping factors of the CPU
//   library (runtime/norms.cpp clip_factor, runtime/adaptive_clip.cpp).
//
// NaN and inf need no special path while accumulating: a NaN element makes some
// accumulator NaN, an inf one makes some accumulator inf (only non-negative terms are
// ever added), and the finishing functions check for both before combining.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GC_HD __host__ __device__ __forceinline__
#else
#define GC_HD inline
#endif

namespace gradcore::cuda::math {

// LAPACK 3.10 la_constants for IEEE double (radix 2, digits 53, minexponent -1021,
// maxexponent 1024): tsml = 2^ceil((minexp - 1) / 2), tbig = 2^floor((maxexp - digits
// + 1) / 2), ssml = 2^-floor((minexp - digits) / 2), sbig = 2^-ceil((maxexp + digits
// - 1) / 2).
constexpr double kTsml = 0x1p-511;
constexpr double kTbig = 0x1p+486;
constexpr double kSsml = 0x1p+537;
constexpr double kSbig = 0x1p-538;
// The middle accumulator takes squares up to 2^972: 2^51 of them (2 PiB of float64)
// still sum below DBL_MAX, more than any list can hold.

constexpr double kL1Big = 0x1p+960;     // |x| above: into the big L1 accumulator...
constexpr double kL1Scale = 0x1p-512;   // ...scaled by this (and back at the end)
constexpr double kL1Unscale = 0x1p+512;

GC_HD double inf() { return HUGE_VAL; }
GC_HD double quiet_nan() { return static_cast<double>(NAN); }
GC_HD bool is_nan(double x) { return x != x; }
GC_HD bool is_inf(double x) { return x == HUGE_VAL; }  // for non-negative sums only

// Sums of squares (L2) or of absolute values (L1, `small` unused). The true sum is
// small / kSsml^2 + med + big / kSbig^2 for L2, med + big / kL1Scale for L1.
struct Blue3 {
    double small;
    double med;
    double big;
};

GC_HD Blue3 blue_zero() { return Blue3{0.0, 0.0, 0.0}; }

GC_HD Blue3 merge(const Blue3& a, const Blue3& b) {
    return Blue3{a.small + b.small, a.med + b.med, a.big + b.big};
}

// Any float64 value (NaN and inf land in a sum and are found by l2_result).
GC_HD void l2_add(Blue3& a, double x) {
    const double ax = fabs(x);
    if (ax > kTbig) {
        const double s = ax * kSbig;
        a.big += s * s;
    } else if (ax < kTsml) {
        const double s = ax * kSsml;
        a.small += s * s;
    } else {
        a.med += ax * ax;  // NaN goes here
    }
}

// A value known to lie in [kTsml, kTbig], or 0, NaN or inf: every float16, bfloat16
// and float32 value widened to double.
GC_HD void l2_add_midrange(Blue3& a, double x) { a.med += x * x; }

// The L2 norm of everything accumulated: NaN if any element was NaN, else inf if any
// was inf (or the true norm exceeds DBL_MAX), else sqrt of the sum, combined as in
// LAPACK's dnrm2.
GC_HD double l2_result(const Blue3& a) {
    if (is_nan(a.small) || is_nan(a.med) || is_nan(a.big)) return quiet_nan();
    if (is_inf(a.small) || is_inf(a.med) || is_inf(a.big)) return inf();
    if (a.big > 0.0) {
        // The middle sum is below 2^1024, so med * kSbig^2 is far from overflow; what
        // it loses to underflow is below 2^-1074 against a big sum of at least 2^-104.
        const double big = a.big + (a.med * kSbig) * kSbig;
        return sqrt(big) * (1.0 / kSbig);
    }
    if (a.small > 0.0) {
        if (a.med > 0.0) {
            const double ymed = sqrt(a.med);
            const double ysml = sqrt(a.small) * (1.0 / kSsml);
            const double ymax = ymed > ysml ? ymed : ysml;
            const double ymin = ymed > ysml ? ysml : ymed;
            const double q = ymin / ymax;
            return ymax * sqrt(1.0 + q * q);
        }
        return sqrt(a.small) * (1.0 / kSsml);
    }
    return sqrt(a.med);
}

GC_HD void l1_add(Blue3& a, double x) {
    const double ax = fabs(x);
    if (ax > kL1Big) {
        a.big += ax * kL1Scale;
    } else {
        a.med += ax;  // NaN goes here
    }
}

// |x| of a float16/bfloat16/float32 value: its sum cannot overflow float64.
GC_HD void l1_add_midrange(Blue3& a, double x) { a.med += fabs(x); }

GC_HD double l1_result(const Blue3& a) {
    if (is_nan(a.med) || is_nan(a.big)) return quiet_nan();
    if (is_inf(a.med) || is_inf(a.big)) return inf();
    if (a.big > 0.0) return (a.big + a.med * kL1Scale) * kL1Unscale;  // inf past DBL_MAX
    return a.med;
}

// max(a, b) that keeps a NaN (std::fmax drops it).
GC_HD double nan_max(double a, double b) {
    if (is_nan(a)) return a;
    if (is_nan(b)) return b;
    return a > b ? a : b;
}

// Whether a max |x| settles a general-p norm by itself (0, NaN or inf).
GC_HD bool lp_settled(double m) { return m == 0.0 || is_nan(m) || m == HUGE_VAL; }

// One term of a general-p sum: (|x| / m)^p with m the max |x|, so the largest term is 1.
GC_HD double lp_term(double x, double m, double p) { return pow(fabs(x) / m, p); }

// The general-p norm from the max |x| and the sum of lp_term over all elements.
GC_HD double lp_result(double m, double sum, double p) {
    return lp_settled(m) ? m : m * pow(sum, 1.0 / p);
}

// grad_stats' per-chunk (then per-array) partial: sum of squares, max |x| (NaN if any
// NaN) and the number of NaN/inf elements.
struct Stats {
    Blue3 sumsq;
    double max_abs;
    long long nonfinite;
};

GC_HD Stats stats_zero() { return Stats{blue_zero(), 0.0, 0}; }

GC_HD Stats merge(const Stats& a, const Stats& b) {
    return Stats{merge(a.sumsq, b.sumsq), nan_max(a.max_abs, b.max_abs), a.nonfinite + b.nonfinite};
}

// PyTorch's clipping factor min(1, max_norm / (norm + eps)), NaN when the norm is NaN
// (torch's clamp keeps NaN), 0 for an inf norm; an all-zero input is never scaled.
// The CPU library's clip_factor, expression for expression.
GC_HD double clip_factor(double max_norm, double norm, double eps) {
    if (norm == 0.0) return 1.0;
    const double f = max_norm / (norm + eps);
    return is_nan(f) ? f : (f < 1.0 ? f : 1.0);
}

// Adaptive clipping of one unit with grad norm g and param norm p: the factor that
// scales the grad unit to clipping * max(p, eps) when it is longer than that, 1 when it
// is not, when g is NaN, or when p is NaN (no limit exists: the unit is left alone).
GC_HD double agc_factor(double g, double p, double clipping, double eps) {
    if (is_nan(p)) return 1.0;
    const double limit = clipping * (p > eps ? p : eps);
    return g > limit ? limit / g : 1.0;
}

}  // namespace gradcore::cuda::math
