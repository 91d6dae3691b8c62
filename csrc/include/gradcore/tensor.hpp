// The one way arrays cross the public API, on the CPU and on the GPU alike: a contiguous
// block of numbers of one dtype.
#pragma once

#include <cstdint>

namespace gradcore {

// The one dtype vocabulary of the C++ API, the CUDA API and the C ABI (gc_dtype in
// c_api.h has the same values, checked there). Which operation takes which dtype on
// which device is each operation's rule; int64 appears only as the count outputs.
// complex64/complex128 are interleaved (re, im) pairs of float32/float64, as NumPy,
// DLPack and std::complex lay them out; numel counts complex elements.
enum class DType : std::uint8_t {
    float16 = 0, float32 = 1, float64 = 2, bfloat16 = 3, int64 = 4, complex64 = 5, complex128 = 6
};

constexpr const char* dtype_name(DType t) {
    switch (t) {
        case DType::float16: return "float16";
        case DType::float32: return "float32";
        case DType::float64: return "float64";
        case DType::bfloat16: return "bfloat16";
        case DType::int64: return "int64";
        case DType::complex64: return "complex64";
        case DType::complex128: return "complex128";
    }
    return "unknown";
}

constexpr std::int64_t itemsize(DType t) {
    switch (t) {
        case DType::float16:
        case DType::bfloat16: return 2;
        case DType::float32: return 4;
        case DType::complex128: return 16;
        default: return 8;  // float64, int64, complex64
    }
}

constexpr bool is_complex(DType t) { return t == DType::complex64 || t == DType::complex128; }

// A C-contiguous array seen as a flat run of `numel` elements, in host memory for the
// CPU API and in device memory for the CUDA API. Kernels never look at shapes except
// where an operation is defined per slice (adaptive clipping).
struct TensorView {
    void* data;
    std::int64_t numel;
    DType dtype;
};

}  // namespace gradcore
