// Norms of whole lists of arrays, and in-place clipping.
//
// Every function takes the list as a table of TensorViews and makes one pass (or the
// fewest passes the operation allows) over all of them, split into chunks across the
// library's threads. float16, bfloat16 and float32 are accumulated in float64; float64
// sums are rescaled when they would overflow or underflow, so every finite input has a
// finite, correctly rounded-ish norm. In-place results in float16/bfloat16 are computed
// in float64 from the exact values and rounded once to nearest-even. Results depend neither on the thread count nor on the
// ISA target beyond the last bits of floating-point reassociation: partial sums are
// formed per fixed-size chunk and combined in list order.
//
// Complex arrays (complex64, complex128) are taken by global_norm, norms, clip_by_norm_
// and clip_by_global_norm_, with |z| = hypot(re, im) per element as NumPy and optax
// define it (a NaN component gives NaN for every order); complex128 is rescaled like
// float64. The other functions throw std::invalid_argument for them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gradcore/export.hpp"
#include "gradcore/tensor.hpp"

namespace gradcore {

// Throws std::invalid_argument unless ord is a real p > 0 or +infinity.
GRADCORE_API void check_norm_order(double ord);

// Norm of all arrays taken together, as if concatenated.
GRADCORE_API double global_norm(const TensorView* arrays, std::size_t count, double ord);

// One norm per array, written to out[0..count).
GRADCORE_API void norms(const TensorView* arrays, std::size_t count, double ord, double* out);

// Per array, in one pass: L2 norm, max |x| (NaN if the array holds a NaN) and the
// number of non-finite elements, each into its own array of `count` entries (as the
// CUDA backend's grad_stats writes them).
GRADCORE_API void grad_stats(const TensorView* arrays, std::size_t count, double* l2_norm, double* max_abs,
                             std::int64_t* nonfinite);

// x *= factor for every element of every array, the product formed in double.
GRADCORE_API void scale_(const TensorView* arrays, std::size_t count, double factor);

// x = min(max(x, lo), hi); NaN stays NaN. Requires lo <= hi.
GRADCORE_API void clip_by_value_(const TensorView* arrays, std::size_t count, double lo,
                                 double hi);

// Sets NaN and +-inf elements to 0; returns how many were set.
GRADCORE_API std::int64_t zero_nonfinite_(const TensorView* arrays, std::size_t count);

// Each array on its own: factor = min(1, max_norm / (norm + eps)); arrays whose factor
// is 1 are not written. Writes the norms before clipping to norms_out.
GRADCORE_API void clip_by_norm_(const TensorView* arrays, std::size_t count, double max_norm,
                                double ord, double eps, double* norms_out);

enum class NonFinitePolicy : std::uint8_t { propagate, error, skip, zero };

struct GlobalClipResult {
    double total_norm;  // norm before clipping (as given, when given)
    double factor;      // the factor applied (1: nothing written; NaN/0: propagated)
    bool clipped;       // arrays were written
    bool nonfinite;     // total_norm was NaN or inf
};

// PyTorch's formula: factor = min(1, max_norm / (total + eps)); nothing is written when
// the factor is 1. With has_given_total, given_total is the total and no norm pass is
// made. When the total is NaN/inf: propagate scales anyway (NaN factor, or 0 for inf,
// as PyTorch does); error and skip leave the arrays untouched (the caller reads
// `nonfinite` and raises or skips); zero sets the non-finite elements to 0 and clips by
// the norm of what remains (complex arrays component by component: a NaN or inf real
// or imaginary part becomes 0). total_norm is returned as found, before any of this.
GRADCORE_API GlobalClipResult clip_by_global_norm_(const TensorView* arrays, std::size_t count,
                                                   double max_norm, double ord, double eps,
                                                   NonFinitePolicy policy, bool has_given_total,
                                                   double given_total);

// Adaptive gradient clipping (Brock et al. 2021, NFNets). Each pair (grads[i],
// params[i]) has the same numel and is seen as a (outer, units, inner) block where
// `units` is the extent of the unit axis; unit u is every element with that middle
// index. max_u = clipping * max(||param_u||, eps); a grad unit whose norm exceeds max_u
// is scaled to max_u.
struct UnitLayout {
    std::int64_t outer;
    std::int64_t units;
    std::int64_t inner;
};
GRADCORE_API void adaptive_clip_(const TensorView* grads, const TensorView* params,
                                 const UnitLayout* layouts, std::size_t count, double clipping,
                                 double eps);

// The L2 norm of every unit of every array (the norms adaptive_clip_ compares), in list
// order: layouts[0].units entries for arrays[0], then those of arrays[1], ...
GRADCORE_API void unit_norms(const TensorView* arrays, const UnitLayout* layouts, std::size_t count,
                             double* out);

}  // namespace gradcore
