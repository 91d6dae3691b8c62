// The one way arrays cross the public API: a contiguous block of numbers of one dtype.
#pragma once

#include <cstdint>

namespace gradcore {

enum class DType : std::uint8_t { float16 = 0, float32 = 1, float64 = 2 };

// A C-contiguous array seen as a flat run of `numel` elements. Kernels never look at
// shapes except where an operation is defined per slice (adaptive clipping).
struct TensorView {
    void* data;
    std::int64_t numel;
    DType dtype;
};

}  // namespace gradcore
