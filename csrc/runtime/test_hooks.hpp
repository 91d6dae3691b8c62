// Entry points for the library's own tests and benchmark harness, not for users: not
// part of the public headers (csrc/include/gradcore/, which are installed), but
// exported from libgradcore so that the C++ tests and gradcore._core can call them.
#pragma once

#include <cstdint>

#include "gradcore/export.hpp"
#include "gradcore/tensor.hpp"

namespace gradcore {

// x = f(x) in place with the library's vector exp/tanh/sigmoid (the ones the dense and
// recurrent kernels use), on the calling thread: what the tests hold against NumPy.
enum class MathFunction : int { exp = 0, tanh = 1, sigmoid = 2, expm1 = 3, normal_tail = 4 };
GRADCORE_API void vector_math(float* x, std::int64_t n, MathFunction fn);
GRADCORE_API void vector_math(double* x, std::int64_t n, MathFunction fn);

// Yardsticks of the memory system for benchmarks, run on the library's threads: a plain
// read of every element (returns a value derived from them so the pass cannot be
// skipped), and an in-place read-modify-write of every element (x *= 1).
GRADCORE_API double memory_probe_read(const float* data, std::int64_t n);
GRADCORE_API void memory_probe_update(float* data, std::int64_t n);

// Yardstick of the FMA peak for benchmarks: every thread the library uses runs
// `iterations` rounds of register-resident FMA chains of the active target in `dtype`
// (float32 or float64, else std::invalid_argument); returns flop/s of them all together.
GRADCORE_API double fma_probe(DType dtype, std::int64_t iterations);

}  // namespace gradcore
