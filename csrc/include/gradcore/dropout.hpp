// Dropout (torch.nn.functional.dropout's training mode) with a mask that is a pure
// function of (seed, offset, element index): y = x / (1 - p) where kept, 0 elsewhere,
// each element kept with probability 1 - p (to 2^-24). The backward is the same call on
// the output's gradient with the same seed and offset: the mask is regenerated, not
// stored. Results are the same on every thread count and instruction set.
// float32 and float64, contiguous arrays of n elements; y may be x.
#pragma once

#include <cstdint>

#include "gradcore/export.hpp"

namespace gradcore {

template <class T>
struct Dropout {
    const T* x;
    T* y;
    std::int64_t n;
    double p;              // in [0, 1] (std::invalid_argument otherwise); 1 zeroes everything
    std::uint64_t seed;    // the generator's key
    std::uint64_t offset;  // a separate stream per call: e.g. the training step
};
GRADCORE_API void dropout(const Dropout<float>& args);
GRADCORE_API void dropout(const Dropout<double>& args);

// The generator's 32-bit words for elements 0 .. n - 1 of (seed, offset): Philox4x32-10,
// element i is word i % 4 of counter (i / 4, offset); kept where (word >> 8) >=
// ceil(p 2^24).
GRADCORE_API void dropout_bits(std::uint32_t* out, std::int64_t n, std::uint64_t seed, std::uint64_t offset);

}  // namespace gradcore
