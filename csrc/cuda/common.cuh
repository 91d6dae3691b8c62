// What every CUDA translation unit of gradcore shares: error checks that throw, the
// device guard, stream-ordered scratch memory, and loading/storing every element type
// as the accumulation type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "gradcore/cuda.hpp"

namespace gradcore::cuda::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* what) {
    throw std::runtime_error(std::string("gradcore CUDA: ") + what + ": " +
                             cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// Checks a runtime call; `what` names it in the error.
inline void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw_cuda_error(e, what);
}

// Checks the launch just made (configuration errors surface here; faults inside the
// kernel surface at the caller's next synchronisation, as in every CUDA library).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

inline cudaStream_t native(Stream s) { return static_cast<cudaStream_t>(s.stream); }

// Makes stream.device current for the scope and restores the caller's device after.
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        check(cudaGetDevice(&previous_), "cudaGetDevice");
        if (device != previous_) check(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceGuard() {
        int now = previous_;
        if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = 0;
};

// Device memory that lives in stream order: allocated on `stream` and freed on it, so
// kernels enqueued in between may use it and the host never waits.
class Scratch {
public:
    Scratch(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
        if (bytes) check(cudaMallocAsync(&data_, bytes, stream), "cudaMallocAsync");
    }
    ~Scratch() {
        if (data_) cudaFreeAsync(data_, stream_);
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    template <class T>
    T* as() const { return static_cast<T*>(data_); }

private:
    void* data_ = nullptr;
    cudaStream_t stream_;
};

// Element <-> accumulation type (float64 for every input type, as on the CPU).
template <class T> __device__ __forceinline__ double load(const T* p) { return static_cast<double>(*p); }
template <> __device__ __forceinline__ double load(const __half* p) { return static_cast<double>(__half2float(*p)); }
template <> __device__ __forceinline__ double load(const __nv_bfloat16* p) { return static_cast<double>(__bfloat162float(*p)); }

template <class T> __device__ __forceinline__ void store(T* p, double v) { *p = static_cast<T>(v); }
template <> __device__ __forceinline__ void store(__half* p, double v) { *p = __double2half(v); }
template <> __device__ __forceinline__ void store(__nv_bfloat16* p, double v) { *p = __double2bfloat16(v); }

// Calls f(T{}) with T the C++ type of `dtype` (__half, __nv_bfloat16, float, double).
template <class F>
decltype(auto) visit_dtype(DType dtype, F&& f) {
    switch (dtype) {
        case DType::float16: return f(__half{});
        case DType::bfloat16: return f(__nv_bfloat16{});
        case DType::float32: return f(float{});
        case DType::float64: return f(double{});
    }
    throw std::invalid_argument("gradcore CUDA: unknown dtype");
}

}  // namespace gradcore::cuda::detail
