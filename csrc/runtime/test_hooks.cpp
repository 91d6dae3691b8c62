// The test and benchmark hooks (test_hooks.hpp). The memory probes run on the pool
// like every kernel, so that "fraction of the machine's bandwidth" compares like with
// like.
#include "runtime/test_hooks.hpp"

#include <vector>

#include "runtime/checks.hpp"
#include "runtime/chunks.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore {

void vector_math(float* x, std::int64_t n, MathFunction fn) {
    runtime::require_size(n, "n");
    runtime::gemm_kernels<float>(runtime::active_table()).vector_math(x, n, static_cast<int>(fn));
}
void vector_math(double* x, std::int64_t n, MathFunction fn) {
    runtime::require_size(n, "n");
    runtime::gemm_kernels<double>(runtime::active_table()).vector_math(x, n, static_cast<int>(fn));
}

double memory_probe_read(const float* data, std::int64_t n) {
    const auto& k = runtime::active_table();
    const TensorView view{const_cast<float*>(data), n, DType::float32};
    const runtime::ChunkList list = runtime::make_chunks(&view, 1);
    std::vector<float> partial(list.chunks.size());
    runtime::for_each_chunk(list, [&](std::size_t i) {
        partial[i] = k.probe_read(data + list.chunks[i].begin, list.chunks[i].size);
    });
    double sum = 0.0;
    for (float p : partial) sum += p;
    return sum;
}

void memory_probe_update(float* data, std::int64_t n) {
    const auto& k = runtime::active_table();
    const TensorView view{data, n, DType::float32};
    const runtime::ChunkList list = runtime::make_chunks(&view, 1);
    volatile float one = 1.0f;  // opaque to the optimiser, see ProbeKernels::update
    const float factor = one;
    runtime::for_each_chunk(list, [&](std::size_t i) {
        k.probe_update(data + list.chunks[i].begin, list.chunks[i].size, factor);
    });
}

}  // namespace gradcore
