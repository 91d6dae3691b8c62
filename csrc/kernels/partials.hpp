// Plain data handed from the kernels to the runtime that combines them.
#pragma once

#include <cstdint>

namespace gradcore::kernels {

// A partial sum of |x|^p over one chunk, kept in scaled form so that no finite input
// overflows or underflows: the true sum is `sum * 2^(p * exp)`. `exp` is 0 on the fast
// path; the kernels set it only when the plain sum left the safe range. NaN and inf
// are reported in `sum` (exp 0): NaN if the chunk holds a NaN, inf if it holds an inf.
struct ScaledSum {
    double sum;
    int exp;
};

// One fused pass over a chunk: sum of squares (scaled), max |x| (NaN if any NaN) and
// the number of NaN/inf elements.
struct ChunkStats {
    ScaledSum sumsq;
    double max_abs;
    std::int64_t nonfinite;
};

}  // namespace gradcore::kernels
