// Multi-tensor launches in the style of Apex's multi_tensor_apply, with the chunk table
// in device memory so that a list of any length is one launch per pass:
//
// - the host builds the chunk table (chunk_table.hpp), stages it in one host buffer and
//   copies it with ONE cudaMemcpyAsync into stream-ordered scratch memory (cudaMallocAsync,
//   one allocation per call for the table and every partial). The source is pageable
//   memory: the driver copies the bytes into its own staging memory before the call
//   returns (so the buffer may be freed at once) and the DMA to the device follows in
//   stream order; the call does not wait for the kernels already queued. (CUDA's "API
//   synchronization behavior" page still allows the driver to synchronise when it must
//   stage pageable memory; tables are small, 24 bytes per 32768 elements, i.e. under
//   64 KiB up to ~89 million elements.) A consequence: these calls cannot be captured
//   into a CUDA graph (the host buffer is gone when the graph replays).
// - kernels run one 256-thread block per chunk, grid-striding over the chunks when
//   there are more than kBlocksPerSm blocks per multiprocessor, and dispatch per chunk
//   on its dtype: one launch covers a list of mixed dtypes (the branch is uniform per
//   block, so it costs nothing but code size; grouping the list by dtype instead would
//   cost up to four launches per pass and reorder the partials);
// - reductions write one partial per chunk (a fixed tree over the block); a second
//   kernel combines each array's (or the list's) partials with one warp in a fixed
//   order: lane l folds partials l, l + 32, ... in turn, then a fixed xor-butterfly.
//   Neither tree depends on the grid size, the number of SMs or the timing, and no
//   floating-point atomics are used anywhere: results are bit-for-bit reproducible.
// - scalars that decide later work (factors, flags) stay in device memory; nothing
//   synchronises with the host.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "chunk_table.hpp"
#include "common.cuh"
#include "gradcore/cuda.hpp"
#include "gradcore/norms.hpp"
#include "norm_math.cuh"

namespace gradcore::cuda::detail {

constexpr int kThreads = 256;  // every multi-tensor kernel's block
constexpr int kWarps = kThreads / 32;
constexpr int kBlocksPerSm = 8;  // grid cap per multiprocessor (blocks then stride)
// __launch_bounds__(kThreads, kMinBlocks): with the block size alone ptxas aims at full
// occupancy (32 registers) and spills a few; 4 blocks of 256 threads leave it 64
// registers and still keep 1024 threads per SM in flight, plenty for these streams.
constexpr int kMinBlocks = 4;

// ---- argument checks (host, before anything is enqueued) ----------------------------

[[noreturn]] inline void bad_argument(const std::string& what) {
    throw std::invalid_argument("gradcore CUDA: " + what);
}

inline void check_stream(Stream s) {
    if (s.device < 0) bad_argument("stream.device must be >= 0, got " + std::to_string(s.device));
}

// Every array of a list: a size >= 0, data for a non-empty array, a known dtype.
inline void check_list(const TensorView* arrays, std::size_t count, const char* name) {
    if (count && !arrays) bad_argument(std::string(name) + " is null");
    if (count > 0xffffffffu) bad_argument(std::string(name) + ": too many arrays");
    for (std::size_t i = 0; i < count; ++i) {
        const TensorView& t = arrays[i];
        const std::string label = std::string(name) + "[" + std::to_string(i) + "]";
        if (t.numel < 0) bad_argument(label + ": numel must be >= 0, got " + std::to_string(t.numel));
        if (t.numel > 0 && !t.data) bad_argument(label + ": data is null");
        if (static_cast<unsigned>(t.dtype) > 3u) bad_argument(label + ": unknown dtype");
    }
}

inline void check_output(const void* p, const char* name) {
    if (!p) bad_argument(std::string(name) + " is null");
}

// The norm order as the kernels see it (after gradcore::check_norm_order).
struct Order {
    enum Kind { l1, l2, linf, lp } kind;
    double p;
};

inline Order parse_order(double ord) {
    check_norm_order(ord);  // std::invalid_argument unless p > 0 or +inf
    if (ord == 1.0) return {Order::l1, 1.0};
    if (ord == 2.0) return {Order::l2, 2.0};
    if (ord == HUGE_VAL) return {Order::linf, ord};
    return {Order::lp, ord};
}

// ---- one scratch allocation per call -------------------------------------------------

// Reserve every buffer a call needs, then allocate once (cudaMallocAsync on the stream;
// freed in stream order when the Workspace goes out of scope, after the kernels).
class Workspace {
public:
    std::size_t reserve(std::size_t bytes) {
        const std::size_t offset = (size_ + 15) / 16 * 16;
        size_ = offset + (bytes ? bytes : 1);
        return offset;
    }
    void allocate(cudaStream_t stream) { scratch_.emplace(size_, stream); }
    template <class T>
    T* at(std::size_t offset) const {
        return reinterpret_cast<T*>(scratch_->as<unsigned char>() + offset);
    }

private:
    std::size_t size_ = 0;
    std::optional<Scratch> scratch_;
};

// The chunk table on the device.
struct DeviceList {
    const ChunkDesc* chunks;
    int nchunks;
    const std::uint32_t* first_chunk;  // ntensors + 1 entries
    int ntensors;
};

inline std::size_t table_bytes(const ChunkTable& t) {
    return t.chunks.size() * sizeof(ChunkDesc) + t.first_chunk.size() * sizeof(std::uint32_t);
}

// Copies the table to ws at `offset` (reserved with table_bytes) with one
// cudaMemcpyAsync from a pageable staging buffer (see the top of this file).
inline DeviceList upload_table(const ChunkTable& t, const Workspace& ws, std::size_t offset,
                               cudaStream_t stream) {
    const std::size_t chunk_bytes = t.chunks.size() * sizeof(ChunkDesc);
    std::vector<unsigned char> host(table_bytes(t));
    if (chunk_bytes) std::memcpy(host.data(), t.chunks.data(), chunk_bytes);
    std::memcpy(host.data() + chunk_bytes, t.first_chunk.data(), t.first_chunk.size() * sizeof(std::uint32_t));
    unsigned char* dst = ws.at<unsigned char>(offset);
    check(cudaMemcpyAsync(dst, host.data(), host.size(), cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync (chunk table)");
    return DeviceList{reinterpret_cast<const ChunkDesc*>(dst), static_cast<int>(t.chunks.size()),
                      reinterpret_cast<const std::uint32_t*>(dst + chunk_bytes),
                      static_cast<int>(t.first_chunk.size()) - 1};
}

inline int sm_count(int device) {
    int n = 0;
    check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    return n > 0 ? n : 1;
}

// Blocks for `items` units of one block each, capped (the kernels stride beyond).
inline unsigned grid_for(std::int64_t items, int sms) {
    const std::int64_t cap = static_cast<std::int64_t>(sms) * kBlocksPerSm;
    return static_cast<unsigned>(items < 1 ? 1 : (items < cap ? items : cap));
}

// Implemented in norms.cu, used by the clipping functions too: enqueues the passes that
// write the norm of each array (per_tensor) or of the whole list (out[0]). `gate`, when
// not null, is a device flag: every kernel returns at once when it reads 0. `work` is
// device scratch of list_norm_work_bytes.
std::size_t list_norm_work_bytes(int nchunks, int ntensors, Order order, bool per_tensor);
void enqueue_list_norms(const DeviceList& list, Order order, bool per_tensor, double* out,
                        const int* gate, void* work, int sms, cudaStream_t stream);

// ---- device helpers --------------------------------------------------------------------

// f(T{}) with T the element type of a DType (validated on the host).
template <class F>
__device__ __forceinline__ void dispatch_dtype(std::uint8_t dtype, F&& f) {
    switch (dtype) {
        case static_cast<std::uint8_t>(DType::float16): f(__half{}); break;
        case static_cast<std::uint8_t>(DType::float32): f(float{}); break;
        case static_cast<std::uint8_t>(DType::float64): f(double{}); break;
        case static_cast<std::uint8_t>(DType::bfloat16): f(__nv_bfloat16{}); break;
        default: break;
    }
}

__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ double to_f64(__half v) { return static_cast<double>(__half2float(v)); }
__device__ __forceinline__ double to_f64(__nv_bfloat16 v) { return static_cast<double>(__bfloat162float(v)); }
__device__ __forceinline__ double to_f64(float v) { return static_cast<double>(v); }
__device__ __forceinline__ double to_f64(double v) { return v; }

template <class T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }

template <class T> __device__ __forceinline__ T from_f64(double v);
template <> __device__ __forceinline__ __half from_f64<__half>(double v) { return __double2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f64<__nv_bfloat16>(double v) { return __double2bfloat16(v); }
template <> __device__ __forceinline__ float from_f64<float>(double v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ double from_f64<double>(double v) { return v; }

// Warp shuffles of the accumulator types.
__device__ __forceinline__ double shfl_xor(double v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ long long shfl_xor(long long v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ math::Blue3 shfl_xor(const math::Blue3& v, int m) {
    return math::Blue3{shfl_xor(v.small, m), shfl_xor(v.med, m), shfl_xor(v.big, m)};
}
__device__ __forceinline__ math::Stats shfl_xor(const math::Stats& v, int m) {
    return math::Stats{shfl_xor(v.sumsq, m), shfl_xor(v.max_abs, m), shfl_xor(v.nonfinite, m)};
}
__device__ __forceinline__ double shfl_down(double v, int d) { return __shfl_down_sync(0xffffffffu, v, d); }
__device__ __forceinline__ math::Blue3 shfl_down(const math::Blue3& v, int d) {
    return math::Blue3{shfl_down(v.small, d), shfl_down(v.med, d), shfl_down(v.big, d)};
}
__device__ __forceinline__ double shfl_from(double v, int lane) { return __shfl_sync(0xffffffffu, v, lane); }

// The merges of the partial types.
struct BlueMerge {
    __device__ math::Blue3 operator()(const math::Blue3& a, const math::Blue3& b) const { return math::merge(a, b); }
};
struct StatsMerge {
    __device__ math::Stats operator()(const math::Stats& a, const math::Stats& b) const { return math::merge(a, b); }
};
struct MaxMerge {
    __device__ double operator()(double a, double b) const { return math::nan_max(a, b); }
};
struct PlusMerge {
    __device__ double operator()(double a, double b) const { return a + b; }
};

// All 32 lanes get merge of all lanes' values, by a fixed xor-butterfly.
template <class Acc, class Merge>
__device__ __forceinline__ Acc warp_allreduce(Acc a, Merge merge) {
#pragma unroll
    for (int m = 16; m >= 1; m >>= 1) a = merge(a, shfl_xor(a, m));
    return a;
}

// The block's merge of every thread's value, valid in thread 0; fixed shape (a warp
// butterfly, then warp 0 over the kWarps warp results). smem: kWarps entries; the
// function ends with a barrier, so smem may be reused at once.
template <class Acc, class Merge>
__device__ __forceinline__ Acc block_reduce(Acc a, Acc identity, Merge merge, Acc* smem) {
    a = warp_allreduce(a, merge);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) smem[warp] = a;
    __syncthreads();
    if (warp == 0) {
        Acc b = lane < kWarps ? smem[lane] : identity;
#pragma unroll
        for (int m = kWarps / 2; m >= 1; m >>= 1) b = merge(b, shfl_xor(b, m));
        a = b;
    }
    __syncthreads();
    return a;
}

// Partials [begin, end) merged by one warp in a fixed order (lane l takes l, l + 32, ...
// then a butterfly); every lane gets the result.
template <class Acc, class Merge>
__device__ __forceinline__ Acc warp_combine(const Acc* partials, std::int64_t begin, std::int64_t end,
                                            Acc identity, Merge merge) {
    const int lane = threadIdx.x & 31;
    Acc a = identity;
    for (std::int64_t i = begin + lane; i < end; i += 32) a = merge(a, partials[i]);
    return warp_allreduce(a, merge);
}

// 16 bytes of elements, loaded and stored as one vector.
template <class T>
struct alignas(16) Pack {
    static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
    T v[kSize];
};

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0;
}

// f(v) for every element of a chunk, read by the whole block: 16-byte loads when the
// chunk is 16-byte aligned (thread t takes vectors t, t + 256, ...), then the tail
// element by element. Which thread sees which element depends only on the chunk.
template <class T, class F>
__device__ __forceinline__ void for_each_value(const T* p, int n, F& f) {
    constexpr int kVec = Pack<T>::kSize;
    int done = 0;
    if (aligned16(p)) {
        const int nv = n / kVec;
        const Pack<T>* pv = reinterpret_cast<const Pack<T>*>(p);
#pragma unroll 4
        for (int i = threadIdx.x; i < nv; i += kThreads) {
            const Pack<T> v = pv[i];
#pragma unroll
            for (int k = 0; k < kVec; ++k) f(v.v[k]);
        }
        done = nv * kVec;
    }
    for (int i = done + threadIdx.x; i < n; i += kThreads) f(p[i]);
}

// x = f(x) in place for every element of a chunk; f(T& x) returns whether it changed
// x, and a vector (or element) is stored back only when something in it changed.
template <class T, class F>
__device__ __forceinline__ void transform_values(T* p, int n, F& f) {
    constexpr int kVec = Pack<T>::kSize;
    int done = 0;
    if (aligned16(p)) {
        const int nv = n / kVec;
        Pack<T>* pv = reinterpret_cast<Pack<T>*>(p);
#pragma unroll 2
        for (int i = threadIdx.x; i < nv; i += kThreads) {
            Pack<T> v = pv[i];
            bool changed = false;
#pragma unroll
            for (int k = 0; k < kVec; ++k) changed |= f(v.v[k]);
            if (changed) pv[i] = v;
        }
        done = nv * kVec;
    }
    for (int i = done + threadIdx.x; i < n; i += kThreads) {
        T v = p[i];
        if (f(v)) p[i] = v;
    }
}

// A scaling factor prepared once per chunk. float16/bfloat16/float32 are scaled in
// float, by the factor rounded to float, as the CPU's float32 kernel does; a factor
// below float's normal range (which rounding to float would flush or truncate) is
// applied in double instead: one multiplication in double, rounded once to the type.
// float64 is scaled in double.
struct ScaleFactor {
    double f64;
    float f32;
    bool in_double;
};

__device__ __forceinline__ ScaleFactor make_scale_factor(double f) {
    const bool tiny = fabs(f) < 0x1p-126 && f != 0.0;  // NaN and inf are not tiny
    return ScaleFactor{f, static_cast<float>(f), tiny};
}

template <class T>
__device__ __forceinline__ T scale_value(T x, const ScaleFactor& s) {
    if constexpr (std::is_same_v<T, double>) {
        return x * s.f64;
    } else {
        if (s.in_double) return from_f64<T>(to_f64(x) * s.f64);
        return from_f32<T>(to_f32(x) * s.f32);
    }
}

__device__ __forceinline__ float abs_value(float x) { return fabsf(x); }
__device__ __forceinline__ double abs_value(double x) { return fabs(x); }
// max that drops NaN (the callers track NaN on their own).
__device__ __forceinline__ float max_value(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double max_value(double a, double b) { return fmax(a, b); }

template <class T>
__device__ __forceinline__ bool finite_value(T x) {
    if constexpr (std::is_same_v<T, double>) {
        return isfinite(x);
    } else {
        return isfinite(to_f32(x));
    }
}

}  // namespace gradcore::cuda::detail
