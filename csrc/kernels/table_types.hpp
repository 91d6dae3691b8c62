// The plain data that crosses between the runtime and the targets: what table entries
// take and return. No code lives here (every type is trivial), so this header, with
// kernel_table.hpp, is all of csrc/kernels that the runtime may include; it stays in
// gradcore::kernels, outside the per-target namespaces.
#pragma once

#include <cstdint>
#include <type_traits>

#include "gradcore/dense.hpp"

namespace gradcore::kernels {

// The 16-bit floating-point element types, IEEE binary16 and bfloat16: distinct types
// over the same bits, so that kernels overload on them (conversions: narrow_float.hpp).
enum class Float16 : std::uint16_t {};
enum class BFloat16 : std::uint16_t {};

// A partial sum of |x|^p over one chunk, kept in scaled form so that no finite input
// overflows or underflows: the true sum is `sum * 2^(p * exp)`. `exp` is 0 on the fast
// path; the kernels set it only when the plain sum left the safe range. NaN and inf
// are reported in `sum` (exp 0): NaN if the chunk holds a NaN, inf if it holds an inf.
struct ScaledSum {
    double sum;
    int exp;
};

// One fused pass over a chunk: sum of squares (scaled), max |x| (NaN if any NaN) and
// the number of NaN/inf elements.
struct ChunkStats {
    ScaledSum sumsq;
    double max_abs;
    std::int64_t nonfinite;
};

// The activation of a needs_saved pass: param is elu's alpha (or leaky_relu's
// slope); prelu's slopes, when given, are one per column (per_column) or one shared.
template <class T>
struct ActivationArgs {
    Activation act;
    T param;
    const T* slopes;
    bool per_column;
};

// The fused write-back of a GEMM tile.
template <class T>
struct Epilogue {
    const T* bias;  // NR values for this tile (added before the activation), or null
    Activation act;
    T slope;        // leaky_relu's negative slope
};

// A target's GEMM cache blocking and strategy thresholds, in elements: what fits where
// depends on the target's register tile (MR x NR) and on the caches of the machines
// it is tuned for, so each target chooses its own (csrc/targets/<isa>.cpp).
struct GemmBlocking {
    std::int64_t kc;  // depth of a k block: the KC x NR micro-panel of B stays in L1
    std::int64_t mc;  // rows of an A block: MC x KC in L2 while the micro-kernel sweeps it
    std::int64_t nc;  // columns of a B block: KC x NC in L3, shared by the threads
    std::int64_t small_rows;            // M up to this: the few-rows strategies
    std::int64_t max_transposed_depth;  // K up to this: few rows times a transposed B by micro_tc
};

// The vector transposes that pack a row-major A write whole vectors (see
// Avx2::transpose_rows): the last one may reach this many values past the panels.
constexpr std::int64_t kPackASlack = 8;

// The largest register tile of any target: the runtime's scratch tile for partial
// column panels has this size (make_table checks every target against it).
constexpr int kMaxMR = 16;
constexpr int kMaxNR = 64;

struct SgdParams {
    double lr, momentum, dampening, weight_decay, grad_scale, l1;
    bool nesterov, first_step;  // first_step: the momentum buffer starts as the gradient (torch)
    bool proximal;              // l1 by soft-thresholding the stepped weight, not in the gradient
};

struct AdamParams {
    double lr, beta1, beta2, eps, weight_decay, grad_scale, l1;
    double bias_correction1, bias_correction2;  // 1 - beta^t
    bool decoupled;                              // AdamW: p -= lr * wd * p, not g += wd * p
};

// The normalisation layers' statistics of a run of values: the mean and the sum of
// squared deviations from it (variance = m2 / count), and the two sums of a backward:
// sum dy and sum dy (x - mean).
struct Moments {
    double mean, m2;
};
struct GradSums {
    double dy, dy_xc;
};

static_assert(std::is_trivial_v<ScaledSum> && std::is_trivial_v<ChunkStats> &&
              std::is_trivial_v<Epilogue<float>> && std::is_trivial_v<ActivationArgs<float>> &&
              std::is_trivial_v<GemmBlocking> &&
              std::is_trivial_v<SgdParams> &&
              std::is_trivial_v<AdamParams> && std::is_trivial_v<Moments> && std::is_trivial_v<GradSums>);

}  // namespace gradcore::kernels
