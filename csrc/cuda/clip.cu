// In-place clipping of lists of device arrays: scale_, clip_by_value_, zero_nonfinite_,
// clip_by_norm_, clip_by_global_norm_. float16, bfloat16, float32 and float64 arrays
// (mixed in one list if need be) are modified in place, computing in float (double for
// float64) and storing back in the array's own type.
//
// The clipping factors are computed on the device, from norms that never leave it; the
// scaling kernel reads its factor from device memory and a block whose factor is 1
// returns without touching its chunk (so a list that needs no clipping is only read).
// clip_by_global_norm_ with the "zero" policy enqueues its zeroing pass and second norm
// pass unconditionally, gated by a device flag: when the total turns out finite they
// return at once.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

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

// Where the scaling kernel finds the factor of a chunk.
enum class FactorFrom : int {
    value,     // `value`, the same for every chunk
    device,    // *factor, the same for every chunk
    per_norm,  // clip_factor(max_norm, norms[chunk's array], eps)
};

struct FactorArgs {
    double value;
    const double* factor;
    const double* norms;
    double max_norm;
    double eps;
};

__device__ __forceinline__ double chunk_factor(FactorFrom from, const FactorArgs& a, std::uint32_t tensor) {
    switch (from) {
        case FactorFrom::value: return a.value;
        case FactorFrom::device: return *a.factor;
        case FactorFrom::per_norm: return math::clip_factor(a.max_norm, a.norms[tensor], a.eps);
    }
    return 1.0;
}

template <class T>
struct ScaleOp {
    ScaleFactor s;
    __device__ bool operator()(T& x) const {
        x = scale_value(x, s);
        return true;
    }
};

// x *= factor for every chunk whose factor is not 1 (1: the chunk is not written).
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    scale_kernel(const ChunkDesc* __restrict__ chunks, int nchunks, FactorFrom from, FactorArgs args) {
    if (from == FactorFrom::device && *args.factor == 1.0) return;  // the common case: no clipping
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const ChunkDesc d = chunks[c];
        const double f = chunk_factor(from, args, d.tensor);
        if (f == 1.0) continue;  // uniform per block
        const ScaleFactor s = make_scale_factor(f);
        dispatch_dtype(d.dtype, [&](auto tag) {
            using T = decltype(tag);
            ScaleOp<T> op{s};
            transform_values(static_cast<T*>(const_cast<void*>(d.ptr)), static_cast<int>(d.len), op);
        });
    }
}

// x = min(max(x, lo), hi) with the bounds rounded to the array's type (rounding to
// nearest keeps lo <= hi); NaN stays NaN. Only the elements that change are written.
template <class T>
struct ClampOp {
    using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
    T lo, hi;
    C clo, chi;
    __device__ bool operator()(T& x) const {
        C v;
        if constexpr (std::is_same_v<T, double>) {
            v = x;
        } else {
            v = to_f32(x);
        }
        if (v < clo) {
            x = lo;
            return true;
        }
        if (v > chi) {
            x = hi;
            return true;
        }
        return false;
    }
};

__global__ void __launch_bounds__(kThreads, kMinBlocks)
    clamp_kernel(const ChunkDesc* __restrict__ chunks, int nchunks, double lo, double hi) {
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const ChunkDesc d = chunks[c];
        dispatch_dtype(d.dtype, [&](auto tag) {
            using T = decltype(tag);
            ClampOp<T> op;
            op.lo = from_f64<T>(lo);
            op.hi = from_f64<T>(hi);
            if constexpr (std::is_same_v<T, double>) {
                op.clo = lo, op.chi = hi;
            } else {
                op.clo = to_f32(op.lo), op.chi = to_f32(op.hi);
            }
            transform_values(static_cast<T*>(const_cast<void*>(d.ptr)), static_cast<int>(d.len), op);
        });
    }
}

template <class T>
struct ZeroOp {
    unsigned long long found = 0;
    __device__ bool operator()(T& x) {
        if (finite_value(x)) return false;
        x = from_f64<T>(0.0);
        ++found;
        return true;
    }
};

// NaN/inf elements set to +0; their number added to *count_out (when not null) with
// integer atomics, one per warp that found any (integer sums do not depend on order).
// gate: as in the norm passes.
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    zero_kernel(const ChunkDesc* __restrict__ chunks, int nchunks, std::int64_t* count_out, const int* gate) {
    if (gate != nullptr && *gate == 0) return;
    unsigned long long found = 0;
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const ChunkDesc d = chunks[c];
        dispatch_dtype(d.dtype, [&](auto tag) {
            using T = decltype(tag);
            ZeroOp<T> op;
            transform_values(static_cast<T*>(const_cast<void*>(d.ptr)), static_cast<int>(d.len), op);
            found += op.found;
        });
    }
    if (count_out == nullptr) return;
    for (int m = 16; m >= 1; m >>= 1) found += __shfl_xor_sync(0xffffffffu, found, m);
    if ((threadIdx.x & 31) == 0 && found != 0) {
        atomicAdd(reinterpret_cast<unsigned long long*>(count_out), found);
    }
}

// clip_by_global_norm_, after the norm pass (or with the given total): writes the total
// and decides what follows. *zero_flag: 1 when the zero policy must zero and re-measure
// (the gate of the passes that do it); *factor: the factor to scale by (1: nothing is
// written), also copied to *factor_out unless the zero policy decides it later.
__global__ void global_decide_kernel(const double* total, const double* given_total, double* total_out,
                                     double max_norm, double eps, int policy, int* zero_flag,
                                     double* factor, double* factor_out) {
    const double t = given_total != nullptr ? *given_total : *total;
    *total_out = t;
    const bool nonfinite = math::is_nan(t) || t == HUGE_VAL || t == -HUGE_VAL;
    int zero = 0;
    double f = 1.0;
    if (given_total != nullptr && t < 0.0) {
        f = 1.0;  // a negative given total: an argument error found too late to raise; untouched
    } else if (nonfinite && (policy == static_cast<int>(NonFinitePolicy::error) ||
                             policy == static_cast<int>(NonFinitePolicy::skip))) {
        f = 1.0;
    } else if (nonfinite && policy == static_cast<int>(NonFinitePolicy::zero)) {
        zero = 1;  // the factor comes from the norm after zeroing
    } else {
        f = math::clip_factor(max_norm, t, eps);  // propagate: NaN factor, or 0 for inf
    }
    *zero_flag = zero;
    *factor = f;
    if (factor_out != nullptr && !zero) *factor_out = f;
}

// The zero policy's factor, from the norm of what the zeroing left.
__global__ void global_refactor_kernel(const double* total, const int* zero_flag, double max_norm, double eps,
                                       double* factor, double* factor_out) {
    if (*zero_flag == 0) return;
    const double f = math::clip_factor(max_norm, *total, eps);
    *factor = f;
    if (factor_out != nullptr) *factor_out = f;
}

// The one-pass in-place functions: the chunk table of a checked list uploaded on the
// caller's stream, then launch(list, grid, stream) while the table's scratch lives;
// nothing is enqueued for an empty list.
template <class Launch>
void one_pass(const TensorView* arrays, std::size_t count, Stream stream, Launch&& launch) {
    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const ChunkTable table = make_chunk_table(arrays, count);
    if (table.chunks.empty()) return;
    Workspace ws;
    const std::size_t table_at = ws.reserve(table_bytes(table));
    ws.allocate(s);
    const DeviceList list = upload_table(table, ws, table_at, s);
    launch(list, grid_for(list.nchunks, sm_count(stream.device)), s);
}

}  // namespace
}  // namespace detail

void scale_(const TensorView* arrays, std::size_t count, double factor, Stream stream) {
    using namespace detail;
    check_stream(stream);
    check_list(arrays, count, "arrays");
    if (factor == 1.0) return;  // as on the CPU: nothing is written
    one_pass(arrays, count, stream, [&](const DeviceList& list, unsigned grid, cudaStream_t s) {
        FactorArgs args{factor, nullptr, nullptr, 0.0, 0.0};
        scale_kernel<<<grid, kThreads, 0, s>>>(list.chunks, list.nchunks, FactorFrom::value, args);
        check_launch("gradcore scale kernel");
    });
}

void clip_by_value_(const TensorView* arrays, std::size_t count, double lo, double hi, Stream stream) {
    using namespace detail;
    check_stream(stream);
    rules::clip_bounds(lo, hi);
    check_list(arrays, count, "arrays");
    one_pass(arrays, count, stream, [&](const DeviceList& list, unsigned grid, cudaStream_t s) {
        clamp_kernel<<<grid, kThreads, 0, s>>>(list.chunks, list.nchunks, lo, hi);
        check_launch("gradcore clamp kernel");
    });
}

void zero_nonfinite_(const TensorView* arrays, std::size_t count, std::int64_t* count_out, Stream stream) {
    using namespace detail;
    check_stream(stream);
    check_list(arrays, count, "arrays");
    one_pass(arrays, count, stream, [&](const DeviceList& list, unsigned grid, cudaStream_t s) {
        zero_kernel<<<grid, kThreads, 0, s>>>(list.chunks, list.nchunks, count_out, nullptr);
        check_launch("gradcore zero_nonfinite kernel");
    });
}

void clip_by_norm_(const TensorView* arrays, std::size_t count, double max_norm, double ord, double eps,
                   double* norms_out, Stream stream) {
    using namespace detail;
    check_stream(stream);
    rules::nonnegative(max_norm, "max_norm");
    rules::finite_nonnegative(eps, "eps");
    const Order order = parse_order(ord);
    check_list(arrays, count, "arrays");
    if (count == 0) return;
    check_output(norms_out, "norms_out");

    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const int sms = sm_count(stream.device);
    const ChunkTable table = make_chunk_table(arrays, count);
    const int nchunks = static_cast<int>(table.chunks.size());
    Workspace ws;
    const std::size_t table_at = ws.reserve(table_bytes(table));
    const std::size_t work_at = ws.reserve(list_norm_work_bytes(nchunks, static_cast<int>(count), order, true));
    ws.allocate(s);
    const DeviceList list = upload_table(table, ws, table_at, s);
    enqueue_list_norms(list, order, true, norms_out, nullptr, ws.at<void>(work_at), sms, s);
    if (nchunks == 0) return;
    FactorArgs args{1.0, nullptr, norms_out, max_norm, eps};
    scale_kernel<<<grid_for(nchunks, sms), kThreads, 0, s>>>(list.chunks, nchunks, FactorFrom::per_norm, args);
    check_launch("gradcore scale kernel");
}

void clip_by_global_norm_(const TensorView* arrays, std::size_t count, double max_norm, double ord,
                          double eps, NonFinitePolicy policy, const double* given_total, double* total_out,
                          double* factor_out, Stream stream) {
    using namespace detail;
    check_stream(stream);
    rules::nonnegative(max_norm, "max_norm");
    rules::finite_nonnegative(eps, "eps");
    const Order order = parse_order(ord);
    check_list(arrays, count, "arrays");
    if (static_cast<unsigned>(policy) > static_cast<unsigned>(NonFinitePolicy::zero)) {
        bad_argument("unknown NonFinitePolicy " + std::to_string(static_cast<unsigned>(policy)));
    }
    check_output(total_out, "total_out");

    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const int sms = sm_count(stream.device);
    const ChunkTable table = make_chunk_table(arrays, count);
    const int nchunks = static_cast<int>(table.chunks.size());
    const bool zero_policy = policy == NonFinitePolicy::zero;
    const bool measure = given_total == nullptr || zero_policy;
    Workspace ws;
    const std::size_t table_at = ws.reserve(table_bytes(table));
    const std::size_t work_at = measure ? ws.reserve(list_norm_work_bytes(nchunks, static_cast<int>(count), order, false)) : 0;
    const std::size_t scalars_at = ws.reserve(4 * sizeof(double));  // total, total after zeroing, factor, flag
    ws.allocate(s);
    const DeviceList list = upload_table(table, ws, table_at, s);
    double* total = ws.at<double>(scalars_at);
    double* total2 = total + 1;
    double* factor = total + 2;
    int* zero_flag = reinterpret_cast<int*>(total + 3);

    if (given_total == nullptr) {
        enqueue_list_norms(list, order, false, total, nullptr, ws.at<void>(work_at), sms, s);
    }
    global_decide_kernel<<<1, 1, 0, s>>>(total, given_total, total_out, max_norm, eps, static_cast<int>(policy),
                                         zero_flag, factor, factor_out);
    check_launch("gradcore global clip decide kernel");
    if (zero_policy) {
        if (nchunks > 0) {
            zero_kernel<<<grid_for(nchunks, sms), kThreads, 0, s>>>(list.chunks, nchunks, nullptr, zero_flag);
            check_launch("gradcore zero_nonfinite kernel");
        }
        enqueue_list_norms(list, order, false, total2, zero_flag, ws.at<void>(work_at), sms, s);
        global_refactor_kernel<<<1, 1, 0, s>>>(total2, zero_flag, max_norm, eps, factor, factor_out);
        check_launch("gradcore global clip factor kernel");
    }
    if (nchunks == 0) return;
    FactorArgs args{1.0, factor, nullptr, 0.0, 0.0};
    scale_kernel<<<grid_for(nchunks, sms), kThreads, 0, s>>>(list.chunks, nchunks, FactorFrom::device, args);
    check_launch("gradcore scale kernel");
}

}  // namespace gradcore::cuda
