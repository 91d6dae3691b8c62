// Dropout (gradcore/dropout.hpp): the elements cut into blocks of whole generator batches,
// which the threads take in any order; every element's word depends only on its index,
// so the split changes nothing in the result.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "gradcore/dropout.hpp"
#include "runtime/argument_rules.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/dropout_rows.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore {
namespace {

constexpr std::int64_t kBlock = std::int64_t(1) << 15;  // elements per task, a multiple of 64

template <class F>
void over_blocks(std::int64_t n, F&& f) {
    const std::int64_t blocks = (n + kBlock - 1) / kBlock;
    auto block = [&](std::size_t b) {
        const std::int64_t first = static_cast<std::int64_t>(b) * kBlock;
        f(first, n - first < kBlock ? n - first : kBlock);
    };
    runtime::parallel_for(static_cast<std::size_t>(blocks), n, runtime::TaskFn(block));
}

// Kept when the word's top 24 bits u satisfy u / 2^24 >= p, i.e. u >= ceil(p 2^24); p = 1
// gives 2^24, above every u.
struct Mask {
    std::uint32_t threshold;
    double scale;
    explicit Mask(double p) {
        rules::probability(p, "p");
        threshold = static_cast<std::uint32_t>(std::ceil(p * 16777216.0));
        scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
    }
};

template <class T>
void run(const Dropout<T>& d) {
    const Mask mask(d.p);
    if (d.n < 0) throw std::invalid_argument("n must be >= 0");
    if (d.n > 0 && (!d.x || !d.y)) throw std::invalid_argument("x and y must not be null");
    const kernels::DropoutTable<T>& k = runtime::dropout_kernels<T>(runtime::active_table());
    over_blocks(d.n, [&](std::int64_t first, std::int64_t count) {
        k.apply(d.x + first, d.y + first, count, first, d.seed, d.offset, mask.threshold, static_cast<T>(mask.scale));
    });
}

}  // namespace

void dropout(const Dropout<float>& args) { run(args); }
void dropout(const Dropout<double>& args) { run(args); }

template <class T>
void runtime::dropout_rows(const T* x, std::int64_t ld_x, T* y, std::int64_t ld_y, std::int64_t rows,
                           std::int64_t cols, double p, std::uint64_t seed, std::uint64_t offset) {
    const Mask mask(p);
    const kernels::DropoutTable<T>& k = runtime::dropout_kernels<T>(runtime::active_table());
    const std::int64_t per_task = cols > 0 ? std::max<std::int64_t>(1, kBlock / cols) : 1;
    auto task = [&](std::size_t t) {
        const std::int64_t r0 = static_cast<std::int64_t>(t) * per_task;
        const std::int64_t r1 = r0 + per_task < rows ? r0 + per_task : rows;
        for (std::int64_t r = r0; r < r1; ++r) {
            k.apply(x + r * ld_x, y + r * ld_y, cols, r * cols, seed, offset, mask.threshold,
                    static_cast<T>(mask.scale));
        }
    };
    runtime::parallel_for(static_cast<std::size_t>((rows + per_task - 1) / per_task), rows * cols,
                          runtime::TaskFn(task));
}
template void runtime::dropout_rows<float>(const float*, std::int64_t, float*, std::int64_t, std::int64_t,
                                           std::int64_t, double, std::uint64_t, std::uint64_t);
template void runtime::dropout_rows<double>(const double*, std::int64_t, double*, std::int64_t, std::int64_t,
                                            std::int64_t, double, std::uint64_t, std::uint64_t);

void dropout_bits(std::uint32_t* out, std::int64_t n, std::uint64_t seed, std::uint64_t offset) {
    if (n < 0) throw std::invalid_argument("n must be >= 0");
    const kernels::KernelTable& k = runtime::active_table();
    over_blocks(n, [&](std::int64_t first, std::int64_t count) {
        k.philox_bits(out + first, count, first, seed, offset);
    });
}

}  // namespace gradcore
