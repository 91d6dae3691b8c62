// Dropout (gradcore/dropout.hpp): the elements cut into blocks of whole generator batches,
// which the threads take in any order; every element's word depends only on its index,
// so the split changes nothing in the result.
#include <cmath>
#include <stdexcept>

#include "gradcore/dropout.hpp"
#include "runtime/dispatch.hpp"
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

template <class T>
void run(const Dropout<T>& d) {
    if (!(d.p >= 0.0 && d.p <= 1.0)) throw std::invalid_argument("p must be in [0, 1]");
    if (d.n < 0) throw std::invalid_argument("n must be >= 0");
    if (d.n > 0 && (!d.x || !d.y)) throw std::invalid_argument("x and y must not be null");
    // Kept when the word's top 24 bits u satisfy u / 2^24 >= p, i.e. u >= ceil(p 2^24);
    // p = 1 gives 2^24, above every u.
    const auto threshold = static_cast<std::uint32_t>(std::ceil(d.p * 16777216.0));
    const T scale = d.p < 1.0 ? static_cast<T>(1.0 / (1.0 - d.p)) : T(0);
    const kernels::DropoutTable<T>& k = runtime::dropout_kernels<T>(runtime::active_table());
    over_blocks(d.n, [&](std::int64_t first, std::int64_t count) {
        k.apply(d.x + first, d.y + first, count, first, d.seed, d.offset, threshold, scale);
    });
}

}  // namespace

void dropout(const Dropout<float>& args) { run(args); }
void dropout(const Dropout<double>& args) { run(args); }

void dropout_bits(std::uint32_t* out, std::int64_t n, std::uint64_t seed, std::uint64_t offset) {
    if (n < 0) throw std::invalid_argument("n must be >= 0");
    const kernels::KernelTable& k = runtime::active_table();
    over_blocks(n, [&](std::int64_t first, std::int64_t count) {
        k.philox_bits(out + first, count, first, seed, offset);
    });
}

}  // namespace gradcore
