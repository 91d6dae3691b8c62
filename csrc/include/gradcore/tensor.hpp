// The one way arrays cross the public API, on the CPU and on the GPU alike: a contiguous
// block of numbers of one dtype.
#pragma once

#include <cstdint>

namespace gradcore {

// The one dtype vocabulary of the C++ API, the CUDA API and the C ABI (gc_dtype in
// c_api.h has the same values, checked there). Which operation takes which dtype on
// which device is each operation's rule; int64 appears only as the count outputs.
enum class DType : std::uint8_t { float16 = 0, float32 = 1, float64 = 2, bfloat16 = 3, int64 = 4 };

constexpr const char* dtype_name(DType t) {
    switch (t) {
        case DType::float16: return "float16";
        case DType::float32: return "float32";
        case DType::float64: return "float64";
        case DType::bfloat16: return "bfloat16";
        case DType::int64: return "int64";
    }
    return "unknown";
}

constexpr std::int64_t itemsize(DType t) {
    return t == DType::float16 || t == DType::bfloat16 ? 2 : t == DType::float32 ? 4 : 8;
}

// A C-contiguous array seen as a flat run of `numel` elements, in host memory for the
// CPU API and in device memory for the CUDA API. Kernels never look at shapes except
// where an operation is defined per slice (adaptive clipping).
struct TensorView {
    void* data;
    std::int64_t numel;
    DType dtype;
};

}  // namespace gradcore
