// Adaptive gradient clipping (Brock et al. 2021) on the device, with the CPU's rules
// (runtime/adaptive_clip.cpp): per unit, g = ||grad_u||, p = ||param_u|| (L2, float64
// accumulation, Blue's scaling for float64 data); a NaN p leaves the unit alone;
// limit = clipping * max(p, eps); the unit is scaled by limit / g when g > limit.
//
// Work is cut into warp tiles (chunk_table.hpp: make_unit_tables). The table holds one
// entry per (grad, param) pair and each warp decodes its tile number into a slice, so
// a list with millions of small units still uploads one small table:
// - pairs whose units each fit one tile (a unit of at most 8192 elements, or at most 256
//   rows of fewer than 32: e.g. every Linear weight with up to 8192 inputs and unit_axis
//   0, every bias): ONE launch; each warp reduces its units' grad and param slices,
//   computes their factors and scales the grad slice it has just read (still in L1/L2);
// - the other pairs: a reduce launch (one pair of partial sums per unit and tile), a
//   combine launch (one warp per unit, partials in tile order) writing each unit's
//   factor, and a scaling launch that writes only where a factor is not 1.
// Both paths scale only units whose factor is not 1: unclipped grads are only read.
// Reductions are fixed trees of warp shuffles: deterministic, like the norms.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "chunk_table.hpp"
#include "common.cuh"
#include "gradcore/cuda.hpp"
#include "gradcore/norms.hpp"
#include "multi_tensor.cuh"
#include "norm_math.cuh"
#include "runtime/argument_rules.hpp"

namespace gradcore::cuda {
namespace detail {
namespace {

using math::Blue3;

// The last entry whose first tile (or first unit) is <= i; every entry has >= 1 of each.
template <bool kByUnit>
__device__ __forceinline__ int find_entry(const UnitEntry* entries, int n, std::int64_t i) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        const std::int64_t first = kByUnit ? entries[mid].first_unit : entries[mid].first_tile;
        if (first <= i) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

template <class T>
__device__ __forceinline__ void add_square(Blue3& a, T v) {
    if constexpr (std::is_same_v<T, double>) {
        math::l2_add(a, v);
    } else {
        math::l2_add_midrange(a, to_f64(v));
    }
}

// This lane's share of the tile's sum of squares (of unit tile_unit(t, lane)): the
// columns the lane owns (chunk_table.hpp: Tile), over the tile's rows.
template <class T>
__device__ __forceinline__ Blue3 tile_sumsq(const T* __restrict__ x, const Tile& t, int lane) {
    Blue3 a = math::blue_zero();
    if (t.rows_mode) {  // width <= 32: one column per lane, many rows
        if (lane < t.width) {
#pragma unroll 4
            for (std::int64_t r = 0; r < t.rows; ++r) add_square(a, x[tile_element(t, r, lane)]);
        }
    } else {
        for (std::int64_t r = 0; r < t.rows; ++r) {
#pragma unroll 4
            for (int col = lane; col < t.width; col += 32) add_square(a, x[tile_element(t, r, col)]);
        }
    }
    return a;
}

template <class T>
__device__ __forceinline__ void tile_scale(T* x, const Tile& t, int lane, const ScaleFactor& s) {
    for (std::int64_t r = 0; r < t.rows; ++r) {
#pragma unroll 4
        for (int col = lane; col < t.width; col += 32) {
            T* p = x + tile_element(t, r, col);
            *p = scale_value(*p, s);
        }
    }
}

__device__ __forceinline__ Blue3 sumsq_of(const void* data, std::uint8_t dtype, const Tile& t, int lane) {
    Blue3 a = math::blue_zero();
    dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        a = tile_sumsq(static_cast<const T*>(data), t, lane);
    });
    return a;
}

// Within each run of `seg` lanes (seg <= 32, runs starting at multiples of seg), the
// merge of the run's values lands in its first lane; a fixed tree (lane l absorbs
// l + s when l is a multiple of 2s), the same for every launch.
__device__ __forceinline__ Blue3 segment_reduce(Blue3 a, int seg, int lane) {
    const int l = lane % seg;
    for (int s = 1; s < seg; s <<= 1) {
        const Blue3 o = shfl_down(a, s);
        if ((l & (2 * s - 1)) == 0 && l + s < seg) a = math::merge(a, o);
    }
    return a;
}

// A unit's pair of partial sums: grad, then param.
struct PairSums {
    Blue3 g, p;
};

struct PairMerge {
    __device__ PairSums operator()(const PairSums& a, const PairSums& b) const {
        return PairSums{math::merge(a.g, b.g), math::merge(a.p, b.p)};
    }
};

// Found by warp_combine through argument-dependent lookup.
__device__ __forceinline__ PairSums shfl_xor(const PairSums& v, int m) {
    return PairSums{detail::shfl_xor(v.g, m), detail::shfl_xor(v.p, m)};
}

// Units that fit one tile: norms, factor and scaling in one go. Two norms, a factor and
// a scaling loop need more registers than the other kernels (at kMinBlocks ptxas
// spills), so the bound asks for 2 blocks of 256 threads per SM, not 4.
__global__ void __launch_bounds__(kThreads, 2)
    agc_fused_kernel(const UnitEntry* __restrict__ entries, int nentries, std::int64_t ntiles, double clipping,
                     double eps) {
    const int lane = threadIdx.x & 31;
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarps;
    for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); i < ntiles;
         i += stride) {
        const UnitEntry& e = entries[find_entry<false>(entries, nentries, i)];
        const Tile t = decode_tile(e, i - e.first_tile);
        const Blue3 g = segment_reduce(sumsq_of(e.grad, e.grad_dtype, t, lane), t.seg, lane);
        const Blue3 p = segment_reduce(sumsq_of(e.param, e.param_dtype, t, lane), t.seg, lane);
        // Each unit's first lane holds its sums; every lane of the unit takes its factor.
        const int first = lane - lane % t.seg;
        const double f_first = math::agc_factor(math::l2_result(g), math::l2_result(p), clipping, eps);
        double f = shfl_from(f_first, first);
        if (lane >= t.width && t.rows_mode) f = 1.0;
        if (f != 1.0) {  // rows mode: lanes of units that need nothing sit this out
            const ScaleFactor s = make_scale_factor(f);
            dispatch_dtype(e.grad_dtype, [&](auto tag) {
                using T = decltype(tag);
                tile_scale(static_cast<T*>(const_cast<void*>(e.grad)), t, lane, s);
            });
        }
    }
}

// The other units, step 1: per tile, each unit's partial sums of grad and param.
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    agc_reduce_kernel(const UnitEntry* __restrict__ entries, int nentries, std::int64_t ntiles,
                      PairSums* __restrict__ partials) {
    const int lane = threadIdx.x & 31;
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarps;
    for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); i < ntiles;
         i += stride) {
        const UnitEntry& e = entries[find_entry<false>(entries, nentries, i)];
        const Tile t = decode_tile(e, i - e.first_tile);
        const Blue3 g = segment_reduce(sumsq_of(e.grad, e.grad_dtype, t, lane), t.seg, lane);
        const Blue3 p = segment_reduce(sumsq_of(e.param, e.param_dtype, t, lane), t.seg, lane);
        if (lane % t.seg == 0 && lane < t.width) partials[partial_index(e, t, tile_unit(t, lane))] = PairSums{g, p};
    }
}

// Step 2: one warp per unit combines its partials in (row block, column block) order.
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    agc_combine_kernel(const UnitEntry* __restrict__ entries, int nentries, std::int64_t nunits,
                       const PairSums* __restrict__ partials, double* __restrict__ factors, double clipping,
                       double eps) {
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarps;
    for (std::int64_t u = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); u < nunits;
         u += stride) {
        const UnitEntry& e = entries[find_entry<true>(entries, nentries, u)];
        const std::int64_t per_unit = e.partials_per_unit();
        const std::int64_t begin = e.first_partial + (u - e.first_unit) * per_unit;
        const PairSums zero{math::blue_zero(), math::blue_zero()};
        const PairSums s = warp_combine(partials, begin, begin + per_unit, zero, PairMerge{});
        if ((threadIdx.x & 31) == 0) {
            factors[u] = math::agc_factor(math::l2_result(s.g), math::l2_result(s.p), clipping, eps);
        }
    }
}

// Step 3: scale every tile by its units' factors (lanes whose factor is 1 write nothing).
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    agc_scale_kernel(const UnitEntry* __restrict__ entries, int nentries, std::int64_t ntiles,
                     const double* __restrict__ factors) {
    const int lane = threadIdx.x & 31;
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarps;
    for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); i < ntiles;
         i += stride) {
        const UnitEntry& e = entries[find_entry<false>(entries, nentries, i)];
        const Tile t = decode_tile(e, i - e.first_tile);
        double f = 1.0;
        if (lane < t.width || !t.rows_mode) f = factors[e.first_unit + tile_unit(t, lane)];
        if (f != 1.0) {  // the usual case is every factor 1: nothing written
            const ScaleFactor s = make_scale_factor(f);
            dispatch_dtype(e.grad_dtype, [&](auto tag) {
                using T = decltype(tag);
                tile_scale(static_cast<T*>(const_cast<void*>(e.grad)), t, lane, s);
            });
        }
    }
}

unsigned warp_grid(std::int64_t items, int sms) { return grid_for((items + kWarps - 1) / kWarps, sms); }

// outer * units * inner == numel, without overflow.
bool layout_matches(const UnitLayout& l, std::int64_t numel) {
    const unsigned __int128 n = static_cast<unsigned __int128>(l.outer) * static_cast<unsigned __int128>(l.units) *
                                static_cast<unsigned __int128>(l.inner);
    return n == static_cast<unsigned __int128>(numel);
}

}  // namespace
}  // namespace detail

void adaptive_clip_(const TensorView* grads, const TensorView* params, const UnitLayout* layouts,
                    std::size_t count, double clipping, double eps, Stream stream) {
    using namespace detail;
    check_stream(stream);
    rules::finite_nonnegative(clipping, "clipping");
    rules::finite_nonnegative(eps, "eps");
    check_list(grads, count, "grads");
    check_list(params, count, "params");
    if (count && !layouts) bad_argument("layouts is null");
    for (std::size_t i = 0; i < count; ++i) {
        const UnitLayout& l = layouts[i];
        if (l.outer < 0 || l.units < 0 || l.inner < 0) {
            bad_argument("layouts[" + std::to_string(i) + "]: sizes must be >= 0");
        }
        if (grads[i].numel != params[i].numel || !layout_matches(l, grads[i].numel)) {
            bad_argument("grads[" + std::to_string(i) + "] and params[" + std::to_string(i) +
                         "] do not match the unit layout");
        }
    }

    const UnitTables tables = make_unit_tables(grads, params, layouts, count);
    if (tables.fused.empty() && tables.split.empty()) return;
    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const int sms = sm_count(stream.device);

    // One upload: fused entries, then split entries.
    const std::size_t fused_bytes = tables.fused.size() * sizeof(UnitEntry);
    const std::size_t split_bytes = tables.split.size() * sizeof(UnitEntry);
    Workspace ws;
    const std::size_t table_at = ws.reserve(fused_bytes + split_bytes);
    const std::size_t partials_at = ws.reserve(static_cast<std::size_t>(tables.split_partials) * sizeof(PairSums));
    const std::size_t factors_at = ws.reserve(static_cast<std::size_t>(tables.split_units) * sizeof(double));
    ws.allocate(s);
    std::vector<unsigned char> host(fused_bytes + split_bytes);
    if (fused_bytes) std::memcpy(host.data(), tables.fused.data(), fused_bytes);
    if (split_bytes) std::memcpy(host.data() + fused_bytes, tables.split.data(), split_bytes);
    unsigned char* table = ws.at<unsigned char>(table_at);
    check(cudaMemcpyAsync(table, host.data(), host.size(), cudaMemcpyHostToDevice, s),
          "cudaMemcpyAsync (adaptive clip table)");
    const UnitEntry* fused = reinterpret_cast<const UnitEntry*>(table);
    const UnitEntry* split = reinterpret_cast<const UnitEntry*>(table + fused_bytes);
    const int nfused = static_cast<int>(tables.fused.size());
    const int nsplit = static_cast<int>(tables.split.size());

    if (nfused > 0) {
        agc_fused_kernel<<<warp_grid(tables.fused_tiles, sms), kThreads, 0, s>>>(fused, nfused, tables.fused_tiles,
                                                                                 clipping, eps);
        check_launch("gradcore adaptive clip kernel");
    }
    if (nsplit > 0) {
        PairSums* partials = ws.at<PairSums>(partials_at);
        double* factors = ws.at<double>(factors_at);
        agc_reduce_kernel<<<warp_grid(tables.split_tiles, sms), kThreads, 0, s>>>(split, nsplit, tables.split_tiles,
                                                                                  partials);
        check_launch("gradcore adaptive clip reduce kernel");
        agc_combine_kernel<<<warp_grid(tables.split_units, sms), kThreads, 0, s>>>(
            split, nsplit, tables.split_units, partials, factors, clipping, eps);
        check_launch("gradcore adaptive clip combine kernel");
        agc_scale_kernel<<<warp_grid(tables.split_tiles, sms), kThreads, 0, s>>>(split, nsplit, tables.split_tiles,
                                                                                 factors);
        check_launch("gradcore adaptive clip scale kernel");
    }
}

}  // namespace gradcore::cuda
