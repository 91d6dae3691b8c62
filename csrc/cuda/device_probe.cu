// The CUDA backend's probes: whether the build loads, how many devices there are, a
// trivial kernel that proves a device runs our code, and the stream utilities the
// bindings need.
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "common.cuh"
#include "gradcore/cuda.hpp"

namespace gradcore {
namespace {

// Sum of squares of x by one block: the shape of the multi-tensor norm to come.
__global__ void sum_squares_kernel(const double* x, int n, double* out) {
    __shared__ double partial[256];
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i] * x[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = partial[0];
}

std::string error_text(cudaError_t e, const char* what) {
    return std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace

bool cuda_built() { return true; }

int cuda_device_count() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

namespace {

std::string self_test_on_current_device() {
    const int n = 1000;
    std::vector<double> host(n);
    double expected = 0.0;
    for (int i = 0; i < n; ++i) host[i] = 0.5 * i, expected += host[i] * host[i];
    double *x = nullptr, *out = nullptr, result = 0.0;
    cudaError_t e = cudaMalloc(&x, n * sizeof(double));
    if (e != cudaSuccess) return error_text(e, "cudaMalloc");
    e = cudaMalloc(&out, sizeof(double));
    if (e == cudaSuccess) e = cudaMemcpy(x, host.data(), n * sizeof(double), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        sum_squares_kernel<<<1, 256>>>(x, n, out);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(&result, out, sizeof(double), cudaMemcpyDeviceToHost);
    cudaFree(x);
    cudaFree(out);
    if (e != cudaSuccess) return error_text(e, "kernel run");
    if (std::fabs(result - expected) > 1e-9 * expected) return "wrong result from the device";
    return "";
}

}  // namespace

std::string cuda_self_test() {
    if (cuda_device_count() == 0) return "no CUDA device is available";
    try {
        cuda::detail::DeviceGuard on_device_0(0);
        return self_test_on_current_device();
    } catch (const std::exception& e) {
        return e.what();
    }
}

namespace cuda {

std::string device_name(int device) {
    cudaDeviceProp prop{};
    detail::check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    return prop.name;
}

void stream_wait(Stream waiter, void* producer) {
    if (producer == waiter.stream) return;
    detail::DeviceGuard guard(waiter.device);
    cudaEvent_t ready;
    detail::check(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
    cudaError_t e = cudaEventRecord(ready, static_cast<cudaStream_t>(producer));
    if (e == cudaSuccess) e = cudaStreamWaitEvent(detail::native(waiter), ready, 0);
    cudaEventDestroy(ready);  // released once the wait has happened
    detail::check(e, "cudaStreamWaitEvent");
}

void synchronize(Stream stream) {
    detail::DeviceGuard guard(stream.device);
    detail::check(cudaStreamSynchronize(detail::native(stream)), "cudaStreamSynchronize");
}

}  // namespace cuda
}  // namespace gradcore
