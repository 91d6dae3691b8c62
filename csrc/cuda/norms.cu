// Norms of whole lists of device arrays: global_norm, norms, grad_stats, and the norm
// passes the clipping functions reuse (enqueue_list_norms). See multi_tensor.cuh for the
// launch scheme and norm_math.cuh for the arithmetic.
//
// Passes per call (each one launch over the whole list, whatever the dtypes):
//   ord 1, 2, inf: reduce (one partial per chunk) -> finalize (per array or global)
//   other p:       max pass -> finalize (max per array or of the list) -> sum of
//                  (|x| / max)^p -> finalize (max * sum^(1/p)); a max of 0, NaN or inf is
//                  the norm itself and its chunks skip the pow pass.
//   grad_stats:    one fused pass (sum of squares, max |x|, non-finite count) -> finalize.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "chunk_table.hpp"
#include "common.cuh"
#include "gradcore/cuda.hpp"
#include "multi_tensor.cuh"
#include "norm_math.cuh"

namespace gradcore::cuda {
namespace detail {
namespace {

using math::Blue3;
using math::Stats;

enum class Pass { l1, l2, max, lpsum, stats };

// What a block needs to know about its chunk beyond the data: the max |x| and p of the
// general-p sum pass.
struct ChunkArgs {
    double m;
    double p;
};

template <Pass P> struct PassTraits;

template <> struct PassTraits<Pass::l2> {
    using Acc = Blue3;
    using Merge = BlueMerge;
    static __device__ Acc zero() { return math::blue_zero(); }
    template <class T> struct Thread {
        Blue3 a = math::blue_zero();
        __device__ explicit Thread(const ChunkArgs&) {}
        __device__ void operator()(T v) {
            if constexpr (std::is_same_v<T, double>) {
                math::l2_add(a, v);
            } else {
                math::l2_add_midrange(a, to_f64(v));
            }
        }
        __device__ Acc result() const { return a; }
    };
    static __device__ double finish(const Acc& a, const ChunkArgs&) { return math::l2_result(a); }
};

template <> struct PassTraits<Pass::l1> {
    using Acc = Blue3;
    using Merge = BlueMerge;
    static __device__ Acc zero() { return math::blue_zero(); }
    template <class T> struct Thread {
        Blue3 a = math::blue_zero();
        __device__ explicit Thread(const ChunkArgs&) {}
        __device__ void operator()(T v) {
            if constexpr (std::is_same_v<T, double>) {
                math::l1_add(a, v);
            } else {
                math::l1_add_midrange(a, to_f64(v));
            }
        }
        __device__ Acc result() const { return a; }
    };
    static __device__ double finish(const Acc& a, const ChunkArgs&) { return math::l1_result(a); }
};

// max |x|, NaN when a NaN was seen: fmax (which drops NaN) plus a NaN flag, in float
// for the 16- and 32-bit types (|x| is exact in float).
template <> struct PassTraits<Pass::max> {
    using Acc = double;
    using Merge = MaxMerge;
    static __device__ Acc zero() { return 0.0; }
    template <class T> struct Thread {
        using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
        C m = 0;
        bool nan = false;
        __device__ explicit Thread(const ChunkArgs&) {}
        __device__ void operator()(T v) {
            C ax;
            if constexpr (std::is_same_v<T, double>) {
                ax = abs_value(v);
            } else {
                ax = abs_value(to_f32(v));
            }
            m = max_value(m, ax);
            nan |= ax != ax;
        }
        __device__ Acc result() const { return nan ? math::quiet_nan() : static_cast<double>(m); }
    };
    static __device__ double finish(const Acc& a, const ChunkArgs&) { return a; }
};

// sum of (|x| / m)^p; only run when m is finite and > 0 (so every element is finite).
template <> struct PassTraits<Pass::lpsum> {
    using Acc = double;
    using Merge = PlusMerge;
    static __device__ Acc zero() { return 0.0; }
    template <class T> struct Thread {
        double s = 0.0, m, p;
        __device__ explicit Thread(const ChunkArgs& c) : m(c.m), p(c.p) {}
        __device__ void operator()(T v) { s += math::lp_term(to_f64(v), m, p); }
        __device__ Acc result() const { return s; }
    };
    static __device__ double finish(const Acc& a, const ChunkArgs& c) { return math::lp_result(c.m, a, c.p); }
};

template <> struct PassTraits<Pass::stats> {
    using Acc = Stats;
    using Merge = StatsMerge;
    static __device__ Acc zero() { return math::stats_zero(); }
    template <class T> struct Thread {
        using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
        Blue3 sq = math::blue_zero();
        C m = 0;
        bool nan = false;
        long long nonfinite = 0;
        __device__ explicit Thread(const ChunkArgs&) {}
        __device__ void operator()(T v) {
            C x;
            if constexpr (std::is_same_v<T, double>) {
                x = v;
                math::l2_add(sq, x);
            } else {
                x = to_f32(v);
                math::l2_add_midrange(sq, static_cast<double>(x));
            }
            const C ax = abs_value(x);
            m = max_value(m, ax);
            nan |= ax != ax;
            nonfinite += isfinite(x) ? 0 : 1;
        }
        __device__ Acc result() const {
            return Stats{sq, nan ? math::quiet_nan() : static_cast<double>(m), nonfinite};
        }
    };
};

// One partial per chunk. maxes (lpsum only): the max |x| per array (per_tensor_max) or
// of the list (maxes[0]).
template <Pass P>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    reduce_kernel(const ChunkDesc* __restrict__ chunks, int nchunks,
                  typename PassTraits<P>::Acc* __restrict__ partials, const int* gate,
                  const double* maxes, int per_tensor_max, double p) {
    using Tr = PassTraits<P>;
    using Acc = typename Tr::Acc;
    if (gate != nullptr && *gate == 0) return;
    __shared__ Acc smem[kWarps];
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const ChunkDesc d = chunks[c];
        ChunkArgs args{0.0, p};
        if constexpr (P == Pass::lpsum) args.m = maxes[per_tensor_max ? d.tensor : 0];
        Acc acc = Tr::zero();
        if (P != Pass::lpsum || !math::lp_settled(args.m)) {  // uniform per block
            dispatch_dtype(d.dtype, [&](auto tag) {
                using T = decltype(tag);
                typename Tr::template Thread<T> th(args);
                for_each_value(static_cast<const T*>(d.ptr), static_cast<int>(d.len), th);
                acc = th.result();
            });
        }
        acc = block_reduce(acc, Tr::zero(), typename Tr::Merge{}, smem);
        if (threadIdx.x == 0) partials[c] = acc;
    }
}

// out[r] = the norm of array r (per_tensor) or of the list (r = 0), one warp per
// result, from the partials of its chunks in chunk order.
template <Pass P>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    finalize_kernel(const typename PassTraits<P>::Acc* __restrict__ partials,
                    const std::uint32_t* __restrict__ first_chunk, int nchunks, int nresults,
                    int per_tensor, double* out, const int* gate, const double* maxes, double p) {
    using Tr = PassTraits<P>;
    if (gate != nullptr && *gate == 0) return;
    const int lane = threadIdx.x & 31;
    const int stride = static_cast<int>(gridDim.x) * kWarps;
    for (int r = blockIdx.x * kWarps + (threadIdx.x >> 5); r < nresults; r += stride) {
        const std::int64_t begin = per_tensor ? first_chunk[r] : 0;
        const std::int64_t end = per_tensor ? first_chunk[r + 1] : nchunks;
        const auto acc = warp_combine(partials, begin, end, Tr::zero(), typename Tr::Merge{});
        if (lane == 0) {
            const ChunkArgs args{P == Pass::lpsum ? maxes[r] : 0.0, p};
            out[r] = Tr::finish(acc, args);
        }
    }
}

__global__ void __launch_bounds__(kThreads, kMinBlocks)
    finalize_stats_kernel(const Stats* __restrict__ partials, const std::uint32_t* __restrict__ first_chunk,
                          int ntensors, double* l2_out, double* max_abs_out, std::int64_t* nonfinite_out) {
    const int lane = threadIdx.x & 31;
    const int stride = static_cast<int>(gridDim.x) * kWarps;
    for (int r = blockIdx.x * kWarps + (threadIdx.x >> 5); r < ntensors; r += stride) {
        const Stats s = warp_combine(partials, first_chunk[r], first_chunk[r + 1], math::stats_zero(), StatsMerge{});
        if (lane == 0) {
            l2_out[r] = math::l2_result(s.sumsq);
            max_abs_out[r] = s.max_abs;
            nonfinite_out[r] = s.nonfinite;
        }
    }
}

unsigned finalize_grid(int nresults, int sms) { return grid_for((nresults + kWarps - 1) / kWarps, sms); }

// One reduce pass and its finalize.
template <Pass P>
void run_pass(const DeviceList& list, bool per_tensor, void* partials, double* out, const int* gate,
              const double* maxes, double p, int sms, cudaStream_t stream) {
    using Acc = typename PassTraits<P>::Acc;
    Acc* part = static_cast<Acc*>(partials);
    if (list.nchunks > 0) {
        reduce_kernel<P><<<grid_for(list.nchunks, sms), kThreads, 0, stream>>>(
            list.chunks, list.nchunks, part, gate, maxes, per_tensor ? 1 : 0, p);
        check_launch("gradcore norm reduce kernel");
    }
    const int nresults = per_tensor ? list.ntensors : 1;
    if (nresults > 0) {
        finalize_kernel<P><<<finalize_grid(nresults, sms), kThreads, 0, stream>>>(
            part, list.first_chunk, list.nchunks, nresults, per_tensor ? 1 : 0, out, gate, maxes, p);
        check_launch("gradcore norm finalize kernel");
    }
}

}  // namespace

std::size_t list_norm_work_bytes(int nchunks, int ntensors, Order order, bool per_tensor) {
    const std::size_t partials = static_cast<std::size_t>(nchunks) * sizeof(Blue3);  // largest partial
    const std::size_t maxes = order.kind == Order::lp ? 16 + static_cast<std::size_t>(per_tensor ? ntensors : 1) * sizeof(double) : 0;
    return (partials + 15) / 16 * 16 + maxes;
}

void enqueue_list_norms(const DeviceList& list, Order order, bool per_tensor, double* out,
                        const int* gate, void* work, int sms, cudaStream_t stream) {
    const std::size_t partial_bytes = (static_cast<std::size_t>(list.nchunks) * sizeof(Blue3) + 15) / 16 * 16;
    switch (order.kind) {
        case Order::l1: run_pass<Pass::l1>(list, per_tensor, work, out, gate, nullptr, 1.0, sms, stream); break;
        case Order::l2: run_pass<Pass::l2>(list, per_tensor, work, out, gate, nullptr, 2.0, sms, stream); break;
        case Order::linf: run_pass<Pass::max>(list, per_tensor, work, out, gate, nullptr, order.p, sms, stream); break;
        case Order::lp: {
            double* maxes = reinterpret_cast<double*>(static_cast<unsigned char*>(work) + partial_bytes);
            run_pass<Pass::max>(list, per_tensor, work, maxes, gate, nullptr, order.p, sms, stream);
            run_pass<Pass::lpsum>(list, per_tensor, work, out, gate, maxes, order.p, sms, stream);
            break;
        }
    }
}

namespace {

// The common part of global_norm and norms.
void list_norms(const TensorView* arrays, std::size_t count, double ord, double* out,
                bool per_tensor, Stream stream) {
    check_stream(stream);
    check_list(arrays, count, "arrays");
    const Order order = parse_order(ord);
    if (per_tensor && count == 0) return;  // nothing to write (out may be null)
    check_output(out, per_tensor ? "out" : "total_out");

    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const ChunkTable table = make_chunk_table(arrays, count);
    const int nchunks = static_cast<int>(table.chunks.size());
    Workspace ws;
    const std::size_t table_at = ws.reserve(table_bytes(table));
    const std::size_t work_at = ws.reserve(list_norm_work_bytes(nchunks, static_cast<int>(count), order, per_tensor));
    ws.allocate(s);
    const DeviceList list = upload_table(table, ws, table_at, s);
    enqueue_list_norms(list, order, per_tensor, out, nullptr, ws.at<void>(work_at), sm_count(stream.device), s);
}

}  // namespace
}  // namespace detail

void global_norm(const TensorView* arrays, std::size_t count, double ord, double* total_out,
                 Stream stream) {
    detail::list_norms(arrays, count, ord, total_out, false, stream);
}

void norms(const TensorView* arrays, std::size_t count, double ord, double* out, Stream stream) {
    detail::list_norms(arrays, count, ord, out, true, stream);
}

void grad_stats(const TensorView* arrays, std::size_t count, double* l2_out, double* max_abs_out,
                std::int64_t* nonfinite_out, Stream stream) {
    using namespace detail;
    check_stream(stream);
    check_list(arrays, count, "arrays");
    if (count == 0) return;
    check_output(l2_out, "l2_out");
    check_output(max_abs_out, "max_abs_out");
    check_output(nonfinite_out, "nonfinite_out");

    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const int sms = sm_count(stream.device);
    const ChunkTable table = make_chunk_table(arrays, count);
    const int nchunks = static_cast<int>(table.chunks.size());
    Workspace ws;
    const std::size_t table_at = ws.reserve(table_bytes(table));
    const std::size_t partials_at = ws.reserve(static_cast<std::size_t>(nchunks) * sizeof(math::Stats));
    ws.allocate(s);
    const DeviceList list = upload_table(table, ws, table_at, s);
    math::Stats* partials = ws.at<math::Stats>(partials_at);
    if (nchunks > 0) {
        reduce_kernel<Pass::stats><<<grid_for(nchunks, sms), kThreads, 0, s>>>(
            list.chunks, nchunks, partials, nullptr, nullptr, 0, 0.0);
        check_launch("gradcore grad_stats reduce kernel");
    }
    finalize_stats_kernel<<<finalize_grid(list.ntensors, sms), kThreads, 0, s>>>(
        partials, list.first_chunk, list.ntensors, l2_out, max_abs_out, nonfinite_out);
    check_launch("gradcore grad_stats finalize kernel");
}

}  // namespace gradcore::cuda
