// Argument checks shared by the C++ API's entry points: every size a caller passes is
// checked before it is used in arithmetic (a negative size would otherwise divide by zero
// or wrap to a huge allocation), and every failure is std::invalid_argument.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "gradcore/tensor.hpp"

namespace gradcore::runtime {

inline void require_size(std::int64_t value, const char* name) {
    if (value < 0) throw std::invalid_argument(std::string(name) + " must be >= 0, got " + std::to_string(value));
}

// Whether an operation takes complex arrays: the norms and clip-by-norm do (|z| is
// defined), the element-wise and per-element operations do not (clamping or counting
// a complex number has no one meaning).
enum class Complex { refused, accepted };

// Every view of a list: a size >= 0, data for a non-empty array, a known dtype.
inline void check_views(const TensorView* arrays, std::size_t count, const char* name = "arrays",
                        Complex complex = Complex::refused) {
    if (count && !arrays) throw std::invalid_argument(std::string(name) + " is null");
    for (std::size_t i = 0; i < count; ++i) {
        const TensorView& v = arrays[i];
        const std::string label = std::string(name) + "[" + std::to_string(i) + "]";
        if (v.numel < 0) throw std::invalid_argument(label + ": numel must be >= 0, got " + std::to_string(v.numel));
        if (v.numel > 0 && !v.data) throw std::invalid_argument(label + ": data is null");
        if (is_complex(v.dtype)) {
            if (complex == Complex::accepted) continue;
            throw std::invalid_argument(label + ": dtype " + dtype_name(v.dtype) +
                                        " is not supported by this operation (complex arrays are taken by "
                                        "the norms and clip-by-norm only)");
        }
        if (v.dtype != DType::float16 && v.dtype != DType::bfloat16 && v.dtype != DType::float32 &&
            v.dtype != DType::float64) {
            throw std::invalid_argument(label + ": dtype " + dtype_name(v.dtype) +
                                        " is not supported on the CPU");
        }
    }
}

}  // namespace gradcore::runtime
