// The dispatch table: one instance per ISA target, filled by csrc/targets/<isa>.cpp and
// chosen at run time by csrc/runtime/dispatch.cpp. Only plain function pointers and
// data cross from a target into the runtime.
#pragma once

#include <cstdint>

#include "partials.hpp"

namespace gradcore::kernels {

template <class T>
struct NormTable {
    ScaledSum (*l1)(const T*, std::int64_t);
    ScaledSum (*l2)(const T*, std::int64_t);
    double (*max_abs)(const T*, std::int64_t);
    double (*lp_sum)(const T*, std::int64_t, double p, double max_abs);
    ChunkStats (*stats)(const T*, std::int64_t);
};

template <class T>
struct ClipTable {
    void (*scale)(T*, std::int64_t, T);
    void (*clamp)(T*, std::int64_t, T, T);
    std::int64_t (*zero_nonfinite)(T*, std::int64_t);
};

struct KernelTable {
    const char* name;
    NormTable<std::uint16_t> norm_f16;
    NormTable<float> norm_f32;
    NormTable<double> norm_f64;
    ClipTable<float> clip_f32;
    ClipTable<double> clip_f64;
    // A plain multi-pass probe of the memory system, the yardstick of the benchmarks:
    // read-only sum of float32 (no widening), and an in-place read-modify-write.
    float (*probe_read)(const float*, std::int64_t);
    void (*probe_update)(float*, std::int64_t, float factor);
};

// Defined once per target translation unit.
const KernelTable& scalar_table();
const KernelTable& avx2_table();
const KernelTable& avx512_table();
const KernelTable& neon_table();

}  // namespace gradcore::kernels
