// The test and benchmark hooks (test_hooks.hpp). The memory probes run on the pool
// like every kernel, so that "fraction of the machine's bandwidth" compares like with
// like.
#include "runtime/test_hooks.hpp"

#include <chrono>
#include <limits>
#include <stdexcept>

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

double fma_probe(DType dtype, std::int64_t iterations) {
    if (dtype != DType::float32 && dtype != DType::float64) {
        throw std::invalid_argument("fma_probe: dtype must be float32 or float64");
    }
    if (iterations < 1) throw std::invalid_argument("fma_probe: iterations must be >= 1");
    const auto& k = runtime::active_table();
    // Several slices per thread: a worker that wakes late leaves its share to the others
    // instead of doubling the wall time, so the figure is the pool's throughput.
    constexpr int kSlicesPerThread = 8;
    const int threads = runtime::threads_for_caller();
    const std::size_t n_tasks = static_cast<std::size_t>(threads) * kSlicesPerThread;
    const std::int64_t per_task = (iterations + kSlicesPerThread - 1) / kSlicesPerThread;
    std::vector<std::int64_t> flops(n_tasks);
    std::vector<double> sink(n_tasks);  // one slot per task: no two threads write one place
    auto task = [&](std::size_t i) {
        if (dtype == DType::float32) {
            float s = 0.0f;
            flops[i] = k.probe_fma_f32(per_task, &s);
            sink[i] = s;
        } else {
            flops[i] = k.probe_fma_f64(per_task, &sink[i]);
        }
    };
    const auto start = std::chrono::steady_clock::now();
    // The largest work hint: every thread takes part however short the run, since the
    // probe measures the pool, not one core.
    runtime::parallel_for(n_tasks, std::numeric_limits<std::int64_t>::max(), runtime::TaskFn(task));
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    double total = 0.0;
    for (std::int64_t f : flops) total += static_cast<double>(f);
    return total / elapsed.count();
}

}  // namespace gradcore
