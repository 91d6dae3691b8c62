// Memory-bandwidth yardsticks for the benchmark harness, run on the pool like every
// kernel so that "fraction of the machine's bandwidth" compares like with like.
#include <vector>

#include "gradcore/runtime.hpp"
#include "runtime/chunks.hpp"
#include "runtime/dispatch.hpp"

namespace gradcore {

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
