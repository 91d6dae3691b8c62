// The public norm and clipping API: splits lists into chunks, runs the active target's
// kernels over them on the pool, and combines the per-chunk partials in list order.
#include "gradcore/norms.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/argument_rules.hpp"
#include "runtime/chunks.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/norm_combiner.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore {
namespace {

using kernels::ChunkStats;
using kernels::KernelTable;
using kernels::ScaledSum;
using runtime::Chunk;
using runtime::ChunkList;
using runtime::Complex;
using runtime::make_chunks;
using runtime::NormCombiner;
using runtime::NormOrder;
using runtime::OrderKind;
using runtime::check_views;
using runtime::with_clip_kernels;
using runtime::with_complex_norm_kernels;
using runtime::with_norm_kernels;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

NormOrder parse_order(double ord) {
    check_norm_order(ord);
    if (ord == 1.0) return {OrderKind::l1, 1.0};
    if (ord == 2.0) return {OrderKind::l2, 2.0};
    if (ord == kInf) return {OrderKind::linf, kInf};
    return {OrderKind::lp, ord};
}

// A chunk as the real kernels see it: a complex array's chunk (whole elements) as the
// chunk of its components, two per element; a real array's as it is.
struct RealChunk {
    TensorView view;
    Chunk chunk;
};
RealChunk real_chunk(const TensorView& t, const Chunk& c) {
    if (!is_complex(t.dtype)) return {t, c};
    return {runtime::components(t), {c.array, 2 * c.begin, 2 * c.size}};
}

// Per-chunk partial of an L1, L2 or L-inf norm. A complex array's L2 norm is the L2 norm
// of its components; L1 and L-inf need |z| per element.
ScaledSum chunk_partial(const KernelTable& k, const TensorView& t, const Chunk& c, OrderKind kind) {
    if (is_complex(t.dtype)) {
        if (kind == OrderKind::l2) {
            const RealChunk r = real_chunk(t, c);
            return chunk_partial(k, r.view, r.chunk, kind);
        }
        return with_complex_norm_kernels(k, t, [&](const auto& tab, const auto* x) -> ScaledSum {
            x += 2 * c.begin;
            return kind == OrderKind::l1 ? tab.l1(x, c.size) : ScaledSum{tab.max_abs(x, c.size), 0};
        });
    }
    return with_norm_kernels(k, t, [&](const auto& tab, const auto* x) -> ScaledSum {
        x += c.begin;
        switch (kind) {
            case OrderKind::l1: return tab.l1(x, c.size);
            case OrderKind::l2: return tab.l2(x, c.size);
            default: return {tab.max_abs(x, c.size), 0};
        }
    });
}

// Per-chunk sum of (|x| / m)^p.
double chunk_lp_sum(const KernelTable& k, const TensorView& t, const Chunk& c, double p, double m) {
    if (is_complex(t.dtype)) {
        return with_complex_norm_kernels(k, t, [&](const auto& tab, const auto* x) {
            return tab.lp_sum(x + 2 * c.begin, c.size, p, m);
        });
    }
    return with_norm_kernels(k, t, [&](const auto& tab, const auto* x) { return tab.lp_sum(x + c.begin, c.size, p, m); });
}

// Norms of a chunked list: per array when `per_array` is non-null, and of everything
// together as the return value.
double list_norms(const TensorView* arrays, std::size_t count, NormOrder order, double* per_array) {
    const KernelTable& k = runtime::active_table();
    const ChunkList list = make_chunks(arrays, count, Complex::accepted);
    const std::vector<Chunk>& chunks = list.chunks;

    // L1, L2, L-inf: one pass, partials folded in order.
    const OrderKind pass_kind = order.kind == OrderKind::lp ? OrderKind::linf : order.kind;
    std::vector<ScaledSum> partials(chunks.size());
    runtime::for_each_chunk(list, [&](std::size_t i) {
        partials[i] = chunk_partial(k, arrays[chunks[i].array], chunks[i], pass_kind);
    });
    const NormOrder pass_order{pass_kind, order.p};
    NormCombiner total(pass_order);
    std::vector<double> array_max;  // for p: each array's max |x|
    for (std::size_t c = 0, a = 0; a < count; ++a) {
        NormCombiner one(pass_order);
        for (; c < chunks.size() && chunks[c].array == a; ++c) {
            one.add(partials[c]);
            total.add(partials[c]);
        }
        if (order.kind == OrderKind::lp) {
            array_max.push_back(one.result());
        } else if (per_array) {
            per_array[a] = one.result();
        }
    }
    if (order.kind != OrderKind::lp) return total.result();

    // Any other p: a second pass of sum (|x| / m)^p, with m the max of the whole list
    // (for the total) and of each array (for per-array norms). The max alone settles
    // zero, NaN and inf.
    const double list_max = total.result();
    const auto settled = [](double m) { return m == 0.0 || m != m || m == kInf; };
    std::vector<double> sums(chunks.size() * (per_array ? 2 : 1), 0.0);
    runtime::for_each_chunk(list, [&](std::size_t i) {
        const Chunk& c = chunks[i];
        const TensorView& t = arrays[c.array];
        if (!settled(list_max)) sums[i] = chunk_lp_sum(k, t, c, order.p, list_max);
        const double m = array_max[c.array];
        if (per_array && !settled(m)) sums[chunks.size() + i] = chunk_lp_sum(k, t, c, order.p, m);
    });
    const auto finish = [&](double m, double sum) {
        return settled(m) ? m : m * std::pow(sum, 1.0 / order.p);
    };
    double list_sum = 0.0;
    for (std::size_t c = 0, a = 0; a < count; ++a) {
        double array_sum = 0.0;
        for (; c < chunks.size() && chunks[c].array == a; ++c) {
            list_sum += sums[c];
            if (per_array) array_sum += sums[chunks.size() + c];
        }
        if (per_array) per_array[a] = finish(array_max[a], array_sum);
    }
    return finish(list_max, list_sum);
}

// min(1, max_norm / (norm + eps)), NaN when the norm is NaN (PyTorch's clamp keeps
// NaN). An all-zero input needs no scaling whatever eps is.
double clip_factor(double max_norm, double norm, double eps) {
    if (norm == 0.0) return 1.0;
    const double f = max_norm / (norm + eps);
    return f != f ? f : (f < 1.0 ? f : 1.0);
}

// x *= factors[array] for every array whose factor is not 1.
void scale_arrays(const TensorView* arrays, std::size_t count, const double* factors) {
    const KernelTable& k = runtime::active_table();
    std::vector<TensorView> todo;
    std::vector<double> todo_factor;
    for (std::size_t a = 0; a < count; ++a) {
        if (factors[a] != 1.0 && arrays[a].numel > 0) {
            todo.push_back(arrays[a]);
            todo_factor.push_back(factors[a]);
        }
    }
    const ChunkList list = make_chunks(todo.data(), todo.size(), Complex::accepted);
    runtime::for_each_chunk(list, [&](std::size_t i) {
        const RealChunk r = real_chunk(todo[list.chunks[i].array], list.chunks[i]);
        with_clip_kernels(k, r.view, [&](const auto& tab, auto* x) {
            tab.scale(x + r.chunk.begin, r.chunk.size, todo_factor[r.chunk.array]);
        });
    });
}

// NaN/inf set to 0 in every array, complex ones component by component (as
// np.nan_to_num(z, nan=0, posinf=0, neginf=0)); returns how many values were.
std::int64_t zero_nonfinite_arrays(const TensorView* arrays, std::size_t count) {
    const KernelTable& k = runtime::active_table();
    const ChunkList list = make_chunks(arrays, count, Complex::accepted);
    std::vector<std::int64_t> found(list.chunks.size(), 0);
    runtime::for_each_chunk(list, [&](std::size_t i) {
        const RealChunk r = real_chunk(arrays[list.chunks[i].array], list.chunks[i]);
        found[i] = with_clip_kernels(k, r.view, [&](const auto& tab, auto* x) {
            return tab.zero_nonfinite(x + r.chunk.begin, r.chunk.size);
        });
    });
    std::int64_t total = 0;
    for (std::int64_t f : found) total += f;
    return total;
}

}  // namespace

void check_norm_order(double ord) { rules::norm_order(ord); }

double global_norm(const TensorView* arrays, std::size_t count, double ord) {
    return list_norms(arrays, count, parse_order(ord), nullptr);
}

void norms(const TensorView* arrays, std::size_t count, double ord, double* out) {
    list_norms(arrays, count, parse_order(ord), out);
}

void grad_stats(const TensorView* arrays, std::size_t count, double* l2_out, double* max_abs_out,
                std::int64_t* nonfinite_out) {
    const KernelTable& k = runtime::active_table();
    const ChunkList list = make_chunks(arrays, count);
    std::vector<ChunkStats> partials(list.chunks.size());
    runtime::for_each_chunk(list, [&](std::size_t i) {
        const Chunk& c = list.chunks[i];
        partials[i] = with_norm_kernels(k, arrays[c.array], [&](const auto& tab, const auto* x) {
            return tab.stats(x + c.begin, c.size);
        });
    });
    for (std::size_t c = 0, a = 0; a < count; ++a) {
        NormCombiner l2({OrderKind::l2, 2.0});
        double max_abs = 0.0;
        std::int64_t nonfinite = 0;
        for (; c < list.chunks.size() && list.chunks[c].array == a; ++c) {
            l2.add(partials[c].sumsq);
            const double m = partials[c].max_abs;
            if (max_abs == max_abs && (m != m || m > max_abs)) max_abs = m;  // NaN sticks
            nonfinite += partials[c].nonfinite;
        }
        l2_out[a] = l2.result();
        max_abs_out[a] = max_abs;
        nonfinite_out[a] = nonfinite;
    }
}

void scale_(const TensorView* arrays, std::size_t count, double factor) {
    check_views(arrays, count);
    const std::vector<double> factors(count, factor);
    scale_arrays(arrays, count, factors.data());
}

void clip_by_value_(const TensorView* arrays, std::size_t count, double lo, double hi) {
    rules::clip_bounds(lo, hi);
    check_views(arrays, count);
    const KernelTable& k = runtime::active_table();
    const ChunkList list = make_chunks(arrays, count);
    runtime::for_each_chunk(list, [&](std::size_t i) {
        const Chunk& c = list.chunks[i];
        with_clip_kernels(k, arrays[c.array], [&](const auto& tab, auto* x) {
            // Bounds rounded to the array's precision (float64 for the 16-bit floats, whose
            // kernels round the clamped value instead); rounding can only widen, never
            // swap them.
            using Bound = typename std::remove_cvref_t<decltype(tab)>::bound_type;
            tab.clamp(x + c.begin, c.size, static_cast<Bound>(lo), static_cast<Bound>(hi));
        });
    });
}

std::int64_t zero_nonfinite_(const TensorView* arrays, std::size_t count) {
    check_views(arrays, count);
    return zero_nonfinite_arrays(arrays, count);
}

void clip_by_norm_(const TensorView* arrays, std::size_t count, double max_norm, double ord,
                   double eps, double* norms_out) {
    rules::nonnegative(max_norm, "max_norm");
    rules::finite_nonnegative(eps, "eps");
    const NormOrder order = parse_order(ord);
    check_views(arrays, count, "arrays", Complex::accepted);
    list_norms(arrays, count, order, norms_out);
    std::vector<double> factors(count);
    for (std::size_t a = 0; a < count; ++a) factors[a] = clip_factor(max_norm, norms_out[a], eps);
    scale_arrays(arrays, count, factors.data());
}

GlobalClipResult clip_by_global_norm_(const TensorView* arrays, std::size_t count, double max_norm,
                                      double ord, double eps, NonFinitePolicy policy,
                                      bool has_given_total, double given_total) {
    rules::nonnegative(max_norm, "max_norm");
    rules::finite_nonnegative(eps, "eps");
    const NormOrder order = parse_order(ord);
    check_views(arrays, count, "arrays", Complex::accepted);
    if (has_given_total) rules::given_total(given_total);
    GlobalClipResult r{};
    r.total_norm = has_given_total ? given_total : list_norms(arrays, count, order, nullptr);
    r.nonfinite = !(r.total_norm <= kInf) || r.total_norm == kInf;
    double norm_for_factor = r.total_norm;
    if (r.nonfinite) {
        switch (policy) {
            case NonFinitePolicy::error:
            case NonFinitePolicy::skip:
                r.factor = 1.0;
                return r;
            case NonFinitePolicy::zero:
                // Zeroing writes the arrays: `clipped` says so even if no scaling follows.
                r.clipped = zero_nonfinite_arrays(arrays, count) > 0;
                norm_for_factor = list_norms(arrays, count, order, nullptr);
                break;
            case NonFinitePolicy::propagate:
                break;
        }
    }
    r.factor = clip_factor(max_norm, norm_for_factor, eps);
    if (r.factor != 1.0) {
        const std::vector<double> factors(count, r.factor);
        scale_arrays(arrays, count, factors.data());
        r.clipped = true;
    }
    return r;
}

}  // namespace gradcore
