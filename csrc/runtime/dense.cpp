// Dense layer forward/backward as GEMMs with fused element-wise work:
// forward = one GEMM whose write-back adds the bias and applies the activation (for the
// activations whose derivative needs their input, the GEMM writes z into y and one pass
// turns it into y and saves act'(z), or z for prelu: what the backward reads);
// backward = one fused pass (activation derivative + bias reduction) producing grad_z,
// then grad_x = grad_z W and grad_W = grad_z^T x. grad_z is the only temporary, the
// same one NumPy's composition materialises; with the identity activation grad_y is
// used directly and there is none.
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/dense.hpp"
#include "gradcore/runtime.hpp"
#include "runtime/argument_rules.hpp"
#include "runtime/checks.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/dropout_rows.hpp"
#include "runtime/gemm.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore {
namespace {

std::string shape(std::int64_t r, std::int64_t c) {
    return "(" + std::to_string(r) + ", " + std::to_string(c) + ")";
}

using runtime::transposed;

// Rows per task of the element-wise passes over a (batch, out) matrix.
std::int64_t rows_per_task(std::int64_t cols) {
    return std::max<std::int64_t>(1, (std::int64_t(1) << 14) / std::max<std::int64_t>(cols, 1));
}

template <class T>
kernels::ActivationArgs<T> activation_args(Activation act, double alpha, const T* prelu_weight, std::int64_t count,
                                          std::int64_t out) {
    if (act == Activation::prelu && (!prelu_weight || (count != 1 && count != out))) {
        throw std::invalid_argument("prelu needs prelu_weight with 1 or out_features (" + std::to_string(out) +
                                    ") values, got " + std::to_string(prelu_weight ? count : 0));
    }
    if (act == Activation::elu) rules::finite_nonnegative(alpha, "alpha");
    return {act, static_cast<T>(alpha), act == Activation::prelu ? prelu_weight : nullptr, count > 1};
}

void check_dropout(const DenseDropout& d) {
    rules::probability_below_one(d.p, "dropout");
}

template <class T>
const kernels::GemmTable<T>& gemm_table() {
    return runtime::gemm_kernels<T>(runtime::active_table());
}

template <class T>
void forward(const DenseForward<T>& f) {
    const std::int64_t batch = f.x.rows, in = f.x.cols, out = f.weight.rows;
    if (f.weight.cols != in) {
        throw std::invalid_argument("x has shape " + shape(batch, in) + " but weight has shape " +
                                    shape(out, f.weight.cols) + " (expected (out, " + std::to_string(in) + "))");
    }
    if (f.y.rows != batch || f.y.cols != out) {
        throw std::invalid_argument("y has shape " + shape(f.y.rows, f.y.cols) + ", expected " + shape(batch, out));
    }
    check_dropout(f.dropout);
    const DenseDropout& drop = f.dropout;
    if (!needs_saved(f.act, drop.p)) {
        runtime::gemm<T>(f.x, transposed(f.weight), f.y, T(1), T(0), f.bias, f.act,
                         static_cast<T>(f.negative_slope));
        if (drop.p > 0) runtime::dropout_rows(f.y.data, f.y.rs, f.y.data, f.y.rs, batch, out, drop.p, drop.seed,
                                              drop.offset);
        return;
    }
    const kernels::ActivationArgs<T> args =
        activation_args(f.act, f.alpha, f.prelu_weight, f.prelu_weight_count, out);
    const MatrixRef<T>& s = f.saved;
    if (s.data && (s.rows != batch || s.cols != out || (batch > 0 && out > 0 && s.cs != 1))) {
        throw std::invalid_argument("saved has shape " + shape(s.rows, s.cols) + ", expected " + shape(batch, out) +
                                    " with contiguous rows");
    }
    if (batch > 0 && out > 0 && f.y.cs != 1) throw std::invalid_argument("y must have contiguous rows");
    runtime::gemm<T>(f.x, transposed(f.weight), f.y, T(1), T(0), f.bias, Activation::identity, T(0));
    const std::int64_t step = rows_per_task(out);
    const kernels::GemmTable<T>& k = gemm_table<T>();
    auto rows = [&](std::size_t t) {
        const std::int64_t r0 = static_cast<std::int64_t>(t) * step, r1 = std::min(batch, r0 + step);
        T* y = f.y.data + r0 * f.y.rs;
        k.activate(y, f.y.rs, y, f.y.rs, s.data ? s.data + r0 * s.rs : nullptr, s.rs, r1 - r0, out, args);
    };
    runtime::parallel_for(static_cast<std::size_t>((batch + step - 1) / step), batch * out, runtime::TaskFn(rows));
    // (saved holds act'(z) unmasked: the backward regenerates the mask)
    if (drop.p > 0) runtime::dropout_rows(f.y.data, f.y.rs, f.y.data, f.y.rs, batch, out, drop.p, drop.seed, drop.offset);
}

template <class T>
void backward(const DenseBackward<T>& b) {
    const std::int64_t batch = b.x.rows, in = b.x.cols, out = b.weight.rows;
    check_dropout(b.dropout);
    const DenseDropout& drop = b.dropout;
    const bool from_saved = needs_saved(b.act, drop.p);
    // What the activation's derivative is taken from: the forward's saved array, or y.
    const MatrixRef<const T>& y = from_saved ? b.saved : b.y;
    const char* y_name = from_saved ? "saved" : "y";
    if (from_saved && !y.data && batch > 0 && out > 0) {
        throw std::invalid_argument("this activation's backward needs saved (the forward's)");
    }
    // (NumPy's strides of zero-size arrays are arbitrary: only non-empty ones matter.)
    if (batch > 0 && out > 0 && (b.grad_y.cs != 1 || y.cs != 1)) {
        throw std::invalid_argument(std::string("grad_y and ") + y_name + " must have contiguous rows");
    }
    auto expect = [](const char* name, std::int64_t r, std::int64_t c, std::int64_t er, std::int64_t ec) {
        if (r != er || c != ec) {
            throw std::invalid_argument(std::string(name) + " has shape " + shape(r, c) + ", expected " + shape(er, ec));
        }
    };
    expect("weight", b.weight.rows, b.weight.cols, out, in);
    expect("grad_y", b.grad_y.rows, b.grad_y.cols, batch, out);
    expect(y_name, y.rows, y.cols, batch, out);
    const kernels::ActivationArgs<T> args =
        activation_args(b.act, b.alpha, b.prelu_weight, b.prelu_weight_count, out);
    if (b.grad_x.data) expect("grad_x", b.grad_x.rows, b.grad_x.cols, batch, in);
    if (b.grad_weight.data) expect("grad_weight", b.grad_weight.rows, b.grad_weight.cols, out, in);

    // With dropout, grad_z starts as the masked grad_y (the mask regenerated), which the
    // activation's pass then scales in place.
    const bool need_grad_z = b.act != Activation::identity || drop.p > 0;
    MatrixRef<const T> grad_z = b.grad_y;
    std::unique_ptr<T[]> grad_z_buffer;  // (not zeroed: every element is written first)
    const kernels::GemmTable<T>& k = gemm_table<T>();
    const T slope = static_cast<T>(b.negative_slope);
    const Activation act = need_grad_z ? b.act : Activation::identity;
    if (need_grad_z || b.grad_bias) {
        T* gz = nullptr;
        std::int64_t ld_gz = 0;
        if (need_grad_z) {
            grad_z_buffer.reset(new T[static_cast<std::size_t>(batch * out)]);
            gz = grad_z_buffer.get();
            ld_gz = out;
            grad_z = {gz, batch, out, out, 1};
        }
        if (drop.p > 0) {
            runtime::dropout_rows(b.grad_y.data, b.grad_y.rs, gz, ld_gz, batch, out, drop.p, drop.seed, drop.offset);
        }
        const T* g_src = drop.p > 0 ? gz : b.grad_y.data;
        const std::int64_t ld_g = drop.p > 0 ? ld_gz : b.grad_y.rs;
        // Column strips in parallel: each strip owns its bias entries (no reduction
        // across threads, deterministic for any thread count). A shared prelu slope's
        // gradient is summed from per-column sums, in column order.
        constexpr std::int64_t kStrip = 256;
        const std::int64_t strips = (out + kStrip - 1) / kStrip;
        const bool slope_grad = b.act == Activation::prelu && b.grad_prelu_weight;
        // (zeros: accumulating into them is writing them)
        std::vector<T> slope_columns(slope_grad && !args.per_column ? static_cast<std::size_t>(out) : 0);
        T* slope_out = !slope_grad ? nullptr : args.per_column ? b.grad_prelu_weight : slope_columns.data();
        auto strip = [&](std::size_t s) {
            const std::int64_t j0 = static_cast<std::int64_t>(s) * kStrip;
            const std::int64_t w = std::min(kStrip, out - j0);
            if (from_saved) {
                T* bias = b.grad_bias ? b.grad_bias + j0 : nullptr;
                T* slope_sums = slope_out ? slope_out + j0 : nullptr;
                kernels::ActivationArgs<T> strip_args = args;  // the strip's own slopes
                if (args.per_column) strip_args.slopes += j0;
                k.grad_z_from_saved(g_src + j0, ld_g, y.data + j0, y.rs, gz + j0, ld_gz, batch, w, strip_args, bias,
                                    slope_sums, b.accumulate);
            } else if (act != Activation::identity) {
                k.grad_z(g_src + j0, ld_g, b.y.data + j0, b.y.rs, gz + j0, ld_gz, batch, w, act, slope,
                         b.grad_bias ? b.grad_bias + j0 : nullptr, b.accumulate);
            } else if (b.grad_bias) {  // identity: only the bias reduction is needed
                k.column_sums(g_src + j0, ld_g, batch, w, b.grad_bias + j0, b.accumulate);
            }
        };
        runtime::parallel_for(static_cast<std::size_t>(strips), batch * out, runtime::TaskFn(strip));
        if (!slope_columns.empty()) {
            T total = T(0);
            for (const T v : slope_columns) total += v;
            b.grad_prelu_weight[0] = b.accumulate ? b.grad_prelu_weight[0] + total : total;
        }
    }
    const T beta = b.accumulate ? T(1) : T(0);
    const T beta_x = b.accumulate || b.accumulate_grad_x ? T(1) : T(0);
    // grad_x[:, j0:j1] = grad_z weight[:, j0:j1]; grad_weight[i0:i1, :] = grad_z[:, i0:i1]^T x.
    auto grad_x = [&](std::int64_t j0, std::int64_t j1) {
        runtime::gemm<T>(grad_z, runtime::columns(b.weight, j0, j1), runtime::columns(b.grad_x, j0, j1), T(1),
                         beta_x, nullptr, Activation::identity, T(0));
    };
    auto grad_weight = [&](std::int64_t i0, std::int64_t i1) {
        runtime::gemm<T>(transposed(runtime::columns(grad_z, i0, i1)), b.x, runtime::rows(b.grad_weight, i0, i1),
                         T(1), beta, nullptr, Activation::identity, T(0));
    };
    // Small and medium layers: the two products (same flops, independent) are cut into
    // pieces, grad_x by columns and grad_weight by rows, that the threads take as they
    // come free, each piece a GEMM on one thread: no barrier inside a product, no B
    // shared between cores, and no thread waiting for the other's longer product
    // (grad_weight's depth is the batch: its short k loops make it the slower one).
    // On two threads this measured the same as one product per thread (32x256x256:
    // 56 us either way); it spreads over any number of threads.
    // For bigger layers each product alone keeps every core busy (one after the other
    // measured from 8% slower to 3% faster than side by side at 1024 x 2048 x 2048).
    // (A GEMM called inside a pool task runs on that task's thread.)
    constexpr std::int64_t kSideBySideMaxWork = std::int64_t(1) << 28;
    const int threads = runtime::threads_for_caller();
    if (b.grad_x.data && b.grad_weight.data && threads > 1 && batch * in * out <= kSideBySideMaxWork) {
        const std::int64_t pieces = 2 * threads;  // per product
        const std::int64_t x_panels = (in + k.nr - 1) / k.nr, w_panels = (out + k.mr - 1) / k.mr;
        auto piece = [&](std::size_t t) {
            const std::int64_t p = static_cast<std::int64_t>(t / 2);
            if (t % 2 == 0) {
                const std::int64_t j0 = x_panels * p / pieces * k.nr;
                const std::int64_t j1 = std::min(in, x_panels * (p + 1) / pieces * k.nr);
                if (j0 < j1) grad_x(j0, j1);
            } else {
                const std::int64_t i0 = w_panels * p / pieces * k.mr;
                const std::int64_t i1 = std::min(out, w_panels * (p + 1) / pieces * k.mr);
                if (i0 < i1) grad_weight(i0, i1);
            }
        };
        runtime::parallel_for(static_cast<std::size_t>(2 * pieces), batch * in * out, runtime::TaskFn(piece));
        return;
    }
    if (b.grad_x.data) grad_x(0, in);
    if (b.grad_weight.data) grad_weight(0, out);
}

}  // namespace

void dense_forward(const DenseForward<float>& args) { forward(args); }
void dense_forward(const DenseForward<double>& args) { forward(args); }
void dense_backward(const DenseBackward<float>& args) { backward(args); }
void dense_backward(const DenseBackward<double>& args) { backward(args); }

}  // namespace gradcore
