// Recurrent layers in oneDNN's shape: one GEMM for the input projections of all T steps,
// then per step one recurrent GEMM plus one fused cell kernel; backwards, per step the
// fused cell backward and dh_{t-1} = dG_t W_hh, and after the loop merged GEMMs over all
// steps for grad_x, grad_weight_ih and grad_weight_hh, and one reduction per bias.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/rnn.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/gemm.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore {
namespace {

template <class T>
const kernels::RnnTable<T>& rnn_table() {
    return runtime::rnn_kernels<T>(runtime::active_table());
}
template <class T>
const kernels::GemmTable<T>& gemm_table() {
    return runtime::gemm_kernels<T>(runtime::active_table());
}
using runtime::transposed;

template <class T>
MatrixRef<const T> mat(const T* p, std::int64_t rows, std::int64_t cols) {
    return {p, rows, cols, cols, 1};
}
template <class T>
MatrixRef<T> out(T* p, std::int64_t rows, std::int64_t cols) {
    return {p, rows, cols, cols, 1};
}

// Runs fn(first_row, rows) over the batch in slices on the pool: the cell kernels are
// element-wise with a few exp per element, worth spreading once B*H is in the thousands.
template <class F>
void for_batch_rows(std::int64_t batch, std::int64_t hidden, F&& fn) {
    const std::int64_t slices = std::min<std::int64_t>(batch, 8);
    auto task = [&](std::size_t s) {
        const std::int64_t b0 = batch * static_cast<std::int64_t>(s) / slices;
        const std::int64_t b1 = batch * static_cast<std::int64_t>(s + 1) / slices;
        if (b1 > b0) fn(b0, b1 - b0);
    };
    runtime::parallel_for(static_cast<std::size_t>(slices), batch * hidden * 16, runtime::TaskFn(task));
}

template <class View>  // RnnForward or RnnStates
void check_sizes(const View& f) {
    runtime::require_size(f.steps, "steps");
    runtime::require_size(f.batch, "batch");
    runtime::require_size(f.input, "input");
    runtime::require_size(f.hidden, "hidden");
}

template <class T>
void copy_or_zero(T* dst, const T* src, std::int64_t n) {
    if (n <= 0) return;
    if (src) {
        std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
    } else {
        std::memset(dst, 0, static_cast<std::size_t>(n) * sizeof(T));
    }
}

template <class T>
void forward_steps(const RnnForward<T>& f) {
    const std::int64_t Tn = f.steps, B = f.batch, I = f.input, H = f.hidden, G = gate_count(f.cell);
    const std::int64_t GH = G * H, BH = B * H;
    if (Tn <= 0 || B <= 0 || H <= 0) return;
    const kernels::RnnTable<T>& k = rnn_table<T>();
    // W_hh^T is the B of every step's GEMM: packed once for all T steps.
    const MatrixRef<const T> whh_tm = transposed(mat(f.weight_hh, GH, H));  // (H, G*H)
    const runtime::PackedB<T> whh_packed = runtime::pack_b(whh_tm);
    const MatrixRef<const T> wih_t = transposed(mat(f.weight_ih, GH, I));
    const MatrixRef<const T> xs = mat(f.x, Tn * B, I);

    if (f.cell == Cell::rnn_tanh || f.cell == Cell::rnn_relu) {
        // Input projections straight into hs[1:], then h_t = act(hs[t+1] + h_{t-1} W_hh^T + b_hh):
        // one GEMM per step with the activation in its write-back.
        const Activation act = f.cell == Cell::rnn_tanh ? Activation::tanh : Activation::relu;
        runtime::gemm<T>(xs, wih_t, out(f.hs + BH, Tn * B, H), T(1), T(0), f.bias_ih, Activation::identity, T(0));
        for (std::int64_t t = 0; t < Tn; ++t) {
            runtime::gemm<T>(mat<T>(f.hs + t * BH, B, H), whh_tm, out(f.hs + (t + 1) * BH, B, H), T(1), T(1),
                             f.bias_hh, act, T(0), &whh_packed);
        }
        return;
    }
    runtime::gemm<T>(xs, wih_t, out(f.gates, Tn * B, GH), T(1), T(0), f.bias_ih, Activation::identity, T(0));
    if (f.cell == Cell::lstm) {
        for (std::int64_t t = 0; t < Tn; ++t) {
            T* g = f.gates + t * B * GH;
            runtime::gemm<T>(mat<T>(f.hs + t * BH, B, H), whh_tm, out(g, B, GH), T(1), T(1), f.bias_hh,
                             Activation::identity, T(0), &whh_packed);
            T* c_prev = f.cs + t * BH;
            T* h = f.hs + (t + 1) * BH;
            for_batch_rows(B, H, [&](std::int64_t b0, std::int64_t nb) {
                k.lstm_forward(nb, H, g + b0 * GH, c_prev + b0 * H, c_prev + BH + b0 * H, h + b0 * H);
            });
        }
        return;
    }
    std::vector<T> gh(static_cast<std::size_t>(B * GH));
    for (std::int64_t t = 0; t < Tn; ++t) {
        runtime::gemm<T>(mat<T>(f.hs + t * BH, B, H), whh_tm, out(gh.data(), B, GH), T(1), T(0), f.bias_hh,
                         Activation::identity, T(0), &whh_packed);
        T* g = f.gates + t * B * GH;
        T* h_prev = f.hs + t * BH;
        T* gh_n = f.gh_n + t * BH;
        for_batch_rows(B, H, [&](std::int64_t b0, std::int64_t nb) {
            k.gru_forward(nb, H, g + b0 * GH, gh.data() + b0 * GH, h_prev + b0 * H, gh_n + b0 * H,
                          h_prev + BH + b0 * H);
        });
    }
}

template <class T>
void backward(const RnnBackward<T>& bw) {
    const RnnStates<T>& f = bw.states;
    check_sizes(f);
    const std::int64_t Tn = f.steps, B = f.batch, I = f.input, H = f.hidden, G = gate_count(f.cell);
    const std::int64_t GH = G * H, BH = B * H;
    const kernels::RnnTable<T>& k = rnn_table<T>();
    const bool lstm = f.cell == Cell::lstm, gru = f.cell == Cell::gru;

    // The gate gradients of all steps (and the GRU's recurrent ones): every value is
    // written by the step's cell kernel before any GEMM reads it, so they are not
    // zeroed first (a pass over T * B * G * H values).
    const std::size_t n_gates = static_cast<std::size_t>(Tn * B * GH);
    const std::unique_ptr<T[]> dgx(new T[n_gates]);
    const std::unique_ptr<T[]> dgh_gru(gru ? new T[n_gates] : nullptr);
    T* dgh = gru ? dgh_gru.get() : dgx.get();
    std::vector<T> dh(static_cast<std::size_t>(BH), T(0)), dc(lstm ? static_cast<std::size_t>(BH) : 0, T(0));
    if (bw.grad_h_n) std::copy(bw.grad_h_n, bw.grad_h_n + BH, dh.begin());
    if (lstm && bw.grad_c_n) std::copy(bw.grad_c_n, bw.grad_c_n + BH, dc.begin());
    std::vector<T> direct(gru ? static_cast<std::size_t>(BH) : 0);
    const MatrixRef<const T> whh = mat(f.weight_hh, GH, H);
    const runtime::PackedB<T> whh_packed = runtime::pack_b(whh);  // B of every step's dh GEMM
    const T clip = bw.clip_hidden > 0 ? static_cast<T>(bw.clip_hidden) : T(0);

    for (std::int64_t t = Tn - 1; t >= 0; --t) {
        const double sumsq = k.gather_hidden_grad(BH, bw.grad_y + t * BH, dh.data(), clip);
        if (bw.hidden_grad_norms) bw.hidden_grad_norms[t] = std::sqrt(sumsq);
        T* gx = dgx.get() + t * B * GH;
        T* gh = dgh + t * B * GH;
        const T* gates = f.gates ? f.gates + t * B * GH : nullptr;
        for_batch_rows(B, H, [&](std::int64_t b0, std::int64_t nb) {
            const std::int64_t r = b0 * H, rg = b0 * GH;
            if (lstm) {
                k.lstm_backward(nb, H, gates + rg, f.cs + t * BH + r, f.cs + (t + 1) * BH + r, dh.data() + r,
                                dc.data() + r, gx + rg);
            } else if (gru) {
                k.gru_backward(nb, H, gates + rg, f.gh_n + t * BH + r, f.hs + t * BH + r, dh.data() + r, gx + rg,
                               gh + rg, direct.data() + r);
            } else {
                k.elman_backward(nb * H, f.hs + (t + 1) * BH + r, dh.data() + r, gx + r, f.cell == Cell::rnn_relu);
            }
        });
        // dh_{t-1} = dG_t W_hh (+ z * dh_t for the GRU).
        if (gru) std::copy(direct.begin(), direct.end(), dh.begin());
        runtime::gemm<T>(mat<const T>(gh, B, GH), whh, out(dh.data(), B, H), T(1), gru ? T(1) : T(0), nullptr,
                         Activation::identity, T(0), &whh_packed);
    }
    if (bw.grad_h0) std::copy(dh.begin(), dh.end(), bw.grad_h0);
    if (lstm && bw.grad_c0) std::copy(dc.begin(), dc.end(), bw.grad_c0);

    const MatrixRef<const T> dgx_m = mat<const T>(dgx.get(), Tn * B, GH);
    const MatrixRef<const T> dgh_m = mat<const T>(dgh, Tn * B, GH);
    if (bw.grad_x) {
        runtime::gemm<T>(dgx_m, mat(f.weight_ih, GH, I), out(bw.grad_x, Tn * B, I), T(1), T(0), nullptr,
                         Activation::identity, T(0));
    }
    if (bw.grad_weight_ih) {
        runtime::gemm<T>(transposed(dgx_m), mat(f.x, Tn * B, I), out(bw.grad_weight_ih, GH, I), T(1), T(0), nullptr,
                         Activation::identity, T(0));
    }
    if (bw.grad_weight_hh) {
        runtime::gemm<T>(transposed(dgh_m), mat<const T>(f.hs, Tn * B, H), out(bw.grad_weight_hh, GH, H), T(1), T(0),
                         nullptr, Activation::identity, T(0));
    }
    const kernels::GemmTable<T>& gk = gemm_table<T>();
    if (bw.grad_bias_ih) gk.column_sums(dgx.get(), GH, Tn * B, GH, bw.grad_bias_ih, false);
    if (bw.grad_bias_hh && !gru && bw.grad_bias_ih) {  // both biases enter every gate alike
        std::copy(bw.grad_bias_ih, bw.grad_bias_ih + GH, bw.grad_bias_hh);
    } else if (bw.grad_bias_hh) {
        gk.column_sums(dgh, GH, Tn * B, GH, bw.grad_bias_hh, false);
    }
}

}  // namespace

int gate_count(Cell cell) {
    switch (cell) {
        case Cell::lstm: return 4;
        case Cell::gru: return 3;
        case Cell::rnn_tanh:
        case Cell::rnn_relu: return 1;
    }
    throw std::invalid_argument("unknown cell");
}

// The initial states, the steps, then the copies the caller asked for.
template <class T>
void forward(const RnnForward<T>& f) {
    check_sizes(f);
    const std::int64_t BH = f.batch * f.hidden, last = f.steps * BH;
    const bool lstm = f.cell == Cell::lstm;
    copy_or_zero(f.hs, f.h0, BH);
    if (lstm) copy_or_zero(f.cs, f.c0, BH);
    forward_steps(f);
    if (f.y) copy_or_zero(f.y, f.hs + BH, last);
    if (f.h_n) copy_or_zero(f.h_n, f.hs + last, BH);
    if (f.c_n && lstm) copy_or_zero(f.c_n, f.cs + last, BH);
}

void rnn_forward(const RnnForward<float>& f) { forward(f); }
void rnn_forward(const RnnForward<double>& f) { forward(f); }
void rnn_backward(const RnnBackward<float>& b) { backward(b); }
void rnn_backward(const RnnBackward<double>& b) { backward(b); }

}  // namespace gradcore
