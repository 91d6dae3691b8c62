// Layer and batch normalisation (gradcore/normalization.hpp): the arguments checked, the
// work cut into blocks whose split depends only on the shapes, the blocks run on the pool
// and their partial statistics and sums combined in block order, so that a result is the
// same for every thread count.
//
// Passes over the data (the minimum for each, the statistics being those of the batch):
//   layer norm forward:  one read of x (the row's second statistics pass is in cache),
//                        one write of y;
//   layer norm backward: one read of dy and x for the row's sums (in cache for the
//                        second) and the parameters' sums, one write of dx;
//   batch norm forward:  a read of x for the statistics, a read of x and a write of y;
//   batch norm backward: a read of dy and x for the sums, a read of both and a write of dx.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/normalization.hpp"
#include "runtime/argument_rules.hpp"
#include "runtime/checks.hpp"
#include "runtime/chunks.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore {
namespace {

using kernels::GradSums;
using kernels::Moments;

// Elements per block of a reduction whose partial results are kept per block (column
// statistics and sums): enough blocks to spread over the threads, few enough that the
// partials stay small next to the data.
constexpr std::int64_t kReduceBlock = std::int64_t(1) << 16;

template <class T>
const kernels::NormalizationTable<T>& table() {
    return runtime::normalization_kernels<T>(runtime::active_table());
}

void require(bool ok, const char* name, const char* what) {
    if (!ok) throw std::invalid_argument(std::string(name) + " " + what);
}

// A float64 value to every element of n: the tables' "null means none" for coefficients.
std::vector<double> widened(const auto* p, std::int64_t n, double absent) {
    std::vector<double> out(static_cast<std::size_t>(n), absent);
    if (p) {
        for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(p[i]);
    }
    return out;
}

// Blocks of whole rows of `cols` elements holding about `elements` elements each.
struct RowBlocks {
    std::int64_t rows_per_block, count;
    RowBlocks(std::int64_t rows, std::int64_t cols, std::int64_t elements) {
        rows_per_block = cols > 0 && cols < elements ? elements / cols : 1;
        count = rows > 0 ? (rows + rows_per_block - 1) / rows_per_block : 0;
    }
    std::int64_t begin(std::size_t b) const { return static_cast<std::int64_t>(b) * rows_per_block; }
    std::int64_t size(std::size_t b, std::int64_t rows) const {
        return std::min(rows_per_block, rows - begin(b));
    }
};

// Chan et al.'s pairwise update: the moments of a's n_a values followed by b's n_b values.
Moments combined(Moments a, double n_a, Moments b, double n_b) {
    if (n_a == 0.0) return b;
    const double n = n_a + n_b, delta = b.mean - a.mean;
    return {a.mean + delta * (n_b / n), a.m2 + b.m2 + delta * delta * (n_a * n_b / n)};
}

// ---- layer norm ---------------------------------------------------------------------

template <class T>
void layer_norm_forward_impl(const LayerNormForward<T>& f) {
    runtime::require_size(f.rows, "rows");
    runtime::require_size(f.cols, "cols");
    rules::finite_nonnegative(f.eps, "eps");
    const std::int64_t n = f.rows * f.cols;
    if (f.rows == 0) return;
    require(f.mean && f.rstd, "mean and rstd", "must be given (rows entries each)");
    require(n == 0 || (f.x && f.y), "x and y", "must not be null");
    const auto& k = table<T>();
    const RowBlocks blocks(f.rows, f.cols, runtime::kChunkElements);
    auto task = [&](std::size_t b) {
        const std::int64_t r = blocks.begin(b);
        k.layer_norm_rows(f.x + r * f.cols, blocks.size(b, f.rows), f.cols, f.gamma, f.beta, f.eps,
                          f.y + r * f.cols, f.mean + r, f.rstd + r);
    };
    runtime::parallel_for(static_cast<std::size_t>(blocks.count), n, runtime::TaskFn(task));
}

template <class T>
void layer_norm_backward_impl(const LayerNormBackward<T>& b) {
    runtime::require_size(b.rows, "rows");
    runtime::require_size(b.cols, "cols");
    const std::int64_t n = b.rows * b.cols;
    require(n == 0 || (b.grad_y && b.x && b.mean && b.rstd), "grad_y, x, mean and rstd", "must not be null");
    const bool params = b.grad_gamma || b.grad_beta;
    if (!b.grad_x && !params) return;
    const auto& k = table<T>();
    const RowBlocks blocks(b.rows, b.cols, kReduceBlock);
    const std::size_t nb = static_cast<std::size_t>(blocks.count), cols = static_cast<std::size_t>(b.cols);
    // Per block: the parameters' partial sums, added in block order below.
    std::vector<double> dgamma(b.grad_gamma ? nb * cols : 0, 0.0), dbeta(b.grad_beta ? nb * cols : 0, 0.0);
    auto task = [&](std::size_t i) {
        const std::int64_t r = blocks.begin(i), off = r * b.cols;
        k.layer_norm_backward_rows(b.grad_y + off, b.x + off, blocks.size(i, b.rows), b.cols, b.gamma, b.mean + r,
                                   b.rstd + r, b.grad_x ? b.grad_x + off : nullptr,
                                   b.grad_gamma ? dgamma.data() + i * cols : nullptr,
                                   b.grad_beta ? dbeta.data() + i * cols : nullptr);
    };
    runtime::parallel_for(nb, n, runtime::TaskFn(task));
    auto total = [&](const std::vector<double>& partial, T* out) {
        if (!out) return;
        for (std::size_t j = 0; j < cols; ++j) {
            double s = 0.0;
            for (std::size_t i = 0; i < nb; ++i) s += partial[i * cols + j];
            out[j] = static_cast<T>(s);
        }
    };
    total(dgamma, b.grad_gamma);
    total(dbeta, b.grad_beta);
}

// ---- batch norm ---------------------------------------------------------------------

void check_batch_shape(std::int64_t batch, std::int64_t channels, std::int64_t length) {
    runtime::require_size(batch, "batch");
    runtime::require_size(channels, "channels");
    runtime::require_size(length, "length");
}

// The batch's moments per channel over its batch * length values.
template <class T>
std::vector<Moments> batch_moments(const T* x, std::int64_t batch, std::int64_t channels, std::int64_t length) {
    const auto& k = table<T>();
    const std::size_t C = static_cast<std::size_t>(channels);
    std::vector<Moments> out(C, Moments{0.0, 0.0});
    const std::int64_t n = batch * channels * length;
    if (length == 1) {
        // (N, C): per block of rows, the columns' moments; blocks combined in order.
        const RowBlocks blocks(batch, channels, kReduceBlock);
        const std::size_t nb = static_cast<std::size_t>(blocks.count);
        std::vector<double> mean(nb * C), m2(nb * C);
        auto task = [&](std::size_t i) {
            k.column_moments(x + blocks.begin(i) * channels, blocks.size(i, batch), channels, mean.data() + i * C,
                             m2.data() + i * C);
        };
        runtime::parallel_for(nb, n, runtime::TaskFn(task));
        for (std::size_t c = 0; c < C; ++c) {
            double count = 0.0;
            for (std::size_t i = 0; i < nb; ++i) {
                const double rows = static_cast<double>(blocks.size(i, batch));
                out[c] = combined(out[c], count, {mean[i * C + c], m2[i * C + c]}, rows);
                count += rows;
            }
        }
    } else {
        // (N, C, L): each channel's N runs of L values, combined in order; channels in parallel.
        auto task = [&](std::size_t c) {
            Moments m{0.0, 0.0};
            for (std::int64_t i = 0; i < batch; ++i) {
                const Moments run = k.moments(x + (i * channels + static_cast<std::int64_t>(c)) * length, length);
                m = combined(m, static_cast<double>(i * length), run, static_cast<double>(length));
            }
            out[c] = m;
        };
        runtime::parallel_for(C, n, runtime::TaskFn(task));
    }
    return out;
}

// out = cu u + cx (x - m) + c0 per channel (u may be null), over the whole array.
template <class T>
void batch_affine(const T* u, const T* x, std::int64_t batch, std::int64_t channels, std::int64_t length,
                  const std::vector<double>& m, const std::vector<double>& cu, const std::vector<double>& cx,
                  const std::vector<double>& c0, T* out) {
    const auto& k = table<T>();
    const std::int64_t n = batch * channels * length;
    if (length == 1) {
        const RowBlocks blocks(batch, channels, runtime::kChunkElements);
        auto task = [&](std::size_t i) {
            const std::int64_t off = blocks.begin(i) * channels;
            k.affine_rows(u ? u + off : nullptr, x + off, blocks.size(i, batch), channels, m.data(), cu.data(),
                          cx.data(), c0.data(), out + off);
        };
        runtime::parallel_for(static_cast<std::size_t>(blocks.count), n, runtime::TaskFn(task));
        return;
    }
    // Runs of length values, grouped into tasks of about kChunkElements.
    const std::int64_t runs = batch * channels;
    const RowBlocks blocks(runs, length, runtime::kChunkElements);
    auto task = [&](std::size_t i) {
        const std::int64_t r0 = blocks.begin(i), r1 = r0 + blocks.size(i, runs);
        for (std::int64_t r = r0; r < r1; ++r) {
            const std::size_t c = static_cast<std::size_t>(r % channels);
            const std::int64_t off = r * length;
            k.affine_run(u ? u + off : nullptr, x + off, length, m[c], cu[c], cx[c], c0[c], out + off);
        }
    };
    runtime::parallel_for(static_cast<std::size_t>(blocks.count), n, runtime::TaskFn(task));
}

template <class T>
void batch_norm_forward_impl(const BatchNormForward<T>& f) {
    check_batch_shape(f.batch, f.channels, f.length);
    rules::finite_nonnegative(f.eps, "eps");
    require(std::isfinite(f.momentum), "momentum", "must be a finite number");
    require((f.running_mean == nullptr) == (f.running_var == nullptr), "running_mean and running_var",
            "must be given together");
    const bool batch_stats = f.training || !f.running_mean;
    const std::int64_t count = f.batch * f.length, n = count * f.channels;
    if (f.training && count <= 1 && f.channels > 0) {
        throw std::invalid_argument("Expected more than 1 value per channel when training, got " +
                                    std::to_string(count) + " per channel");
    }
    if (f.channels == 0) return;
    require(f.mean && f.rstd, "mean and rstd", "must be given (channels entries each)");
    require(n == 0 || (f.x && f.y), "x and y", "must not be null");
    const std::size_t C = static_cast<std::size_t>(f.channels);
    std::vector<double> mean(C), scale(C);
    if (batch_stats) {
        const std::vector<Moments> m = batch_moments(f.x, f.batch, f.channels, f.length);
        for (std::size_t c = 0; c < C; ++c) {
            mean[c] = m[c].mean;
            f.rstd[c] = 1.0 / std::sqrt(m[c].m2 / static_cast<double>(count) + f.eps);
        }
        if (f.running_mean && f.training) {
            const double keep = 1.0 - f.momentum, unbias = 1.0 / static_cast<double>(count - 1);
            for (std::size_t c = 0; c < C; ++c) {
                f.running_mean[c] = static_cast<T>(keep * static_cast<double>(f.running_mean[c]) + f.momentum * mean[c]);
                f.running_var[c] =
                    static_cast<T>(keep * static_cast<double>(f.running_var[c]) + f.momentum * m[c].m2 * unbias);
            }
        }
    } else {
        for (std::size_t c = 0; c < C; ++c) {
            mean[c] = static_cast<double>(f.running_mean[c]);
            f.rstd[c] = 1.0 / std::sqrt(static_cast<double>(f.running_var[c]) + f.eps);
        }
    }
    for (std::size_t c = 0; c < C; ++c) {
        f.mean[c] = mean[c];
        scale[c] = f.rstd[c] * (f.gamma ? static_cast<double>(f.gamma[c]) : 1.0);
    }
    if (n == 0) return;
    batch_affine<T>(nullptr, f.x, f.batch, f.channels, f.length, mean, scale, scale, widened(f.beta, f.channels, 0.0),
                    f.y);
}

// Per channel {sum dy, sum dy (x - mean)}, blocks combined in order.
template <class T>
std::vector<GradSums> batch_grad_sums(const BatchNormBackward<T>& b) {
    const auto& k = table<T>();
    const std::size_t C = static_cast<std::size_t>(b.channels);
    std::vector<GradSums> out(C, GradSums{0.0, 0.0});
    const std::int64_t n = b.batch * b.channels * b.length;
    if (b.length == 1) {
        const RowBlocks blocks(b.batch, b.channels, kReduceBlock);
        const std::size_t nb = static_cast<std::size_t>(blocks.count);
        std::vector<double> sum_dy(nb * C, 0.0), sum_dy_xc(nb * C, 0.0);
        auto task = [&](std::size_t i) {
            const std::int64_t off = blocks.begin(i) * b.channels;
            k.column_grad_sums(b.grad_y + off, b.x + off, blocks.size(i, b.batch), b.channels, b.mean,
                               sum_dy.data() + i * C, sum_dy_xc.data() + i * C);
        };
        runtime::parallel_for(nb, n, runtime::TaskFn(task));
        for (std::size_t i = 0; i < nb; ++i) {
            for (std::size_t c = 0; c < C; ++c) out[c] = {out[c].dy + sum_dy[i * C + c], out[c].dy_xc + sum_dy_xc[i * C + c]};
        }
    } else {
        auto task = [&](std::size_t c) {
            GradSums s{0.0, 0.0};
            for (std::int64_t i = 0; i < b.batch; ++i) {
                const std::int64_t off = (i * b.channels + static_cast<std::int64_t>(c)) * b.length;
                const GradSums run = k.run_grad_sums(b.grad_y + off, b.x + off, b.length, b.mean[c]);
                s = {s.dy + run.dy, s.dy_xc + run.dy_xc};
            }
            out[c] = s;
        };
        runtime::parallel_for(C, n, runtime::TaskFn(task));
    }
    return out;
}

template <class T>
void batch_norm_backward_impl(const BatchNormBackward<T>& b) {
    check_batch_shape(b.batch, b.channels, b.length);
    const std::int64_t count = b.batch * b.length, n = count * b.channels;
    if (b.channels == 0 || (!b.grad_x && !b.grad_gamma && !b.grad_beta)) return;
    require(b.mean && b.rstd, "mean and rstd", "must not be null");
    require(n == 0 || (b.grad_y && b.x), "grad_y and x", "must not be null");
    const std::size_t C = static_cast<std::size_t>(b.channels);
    const bool need_sums = b.grad_gamma || b.grad_beta || b.batch_stats;
    std::vector<GradSums> sums = need_sums && n > 0 ? batch_grad_sums(b) : std::vector<GradSums>(C, {0.0, 0.0});
    for (std::size_t c = 0; c < C; ++c) {
        if (b.grad_gamma) b.grad_gamma[c] = static_cast<T>(sums[c].dy_xc * b.rstd[c]);
        if (b.grad_beta) b.grad_beta[c] = static_cast<T>(sums[c].dy);
    }
    if (!b.grad_x || n == 0) return;
    // dx = g rstd (dy - sum(dy) / n - xhat sum(dy xhat) / n), xhat = (x - mean) rstd, with
    // batch statistics; dx = g rstd dy with fixed ones.
    std::vector<double> mean(b.mean, b.mean + C), cu(C), cx(C, 0.0), c0(C, 0.0);
    const double inv_n = 1.0 / static_cast<double>(count);
    for (std::size_t c = 0; c < C; ++c) {
        const double rs = b.rstd[c], gr = (b.gamma ? static_cast<double>(b.gamma[c]) : 1.0) * rs;
        cu[c] = gr;
        if (b.batch_stats) {
            cx[c] = -gr * rs * rs * sums[c].dy_xc * inv_n;
            c0[c] = -gr * sums[c].dy * inv_n;
        }
    }
    batch_affine<T>(b.grad_y, b.x, b.batch, b.channels, b.length, mean, cu, cx, c0, b.grad_x);
}

}  // namespace

void layer_norm_forward(const LayerNormForward<float>& args) { layer_norm_forward_impl(args); }
void layer_norm_forward(const LayerNormForward<double>& args) { layer_norm_forward_impl(args); }
void layer_norm_backward(const LayerNormBackward<float>& args) { layer_norm_backward_impl(args); }
void layer_norm_backward(const LayerNormBackward<double>& args) { layer_norm_backward_impl(args); }
void batch_norm_forward(const BatchNormForward<float>& args) { batch_norm_forward_impl(args); }
void batch_norm_forward(const BatchNormForward<double>& args) { batch_norm_forward_impl(args); }
void batch_norm_backward(const BatchNormBackward<float>& args) { batch_norm_backward_impl(args); }
void batch_norm_backward(const BatchNormBackward<double>& args) { batch_norm_backward_impl(args); }

}  // namespace gradcore
