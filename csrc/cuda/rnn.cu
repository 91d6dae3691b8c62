// Recurrent layers on the device in oneDNN's shape, the same algorithm as
// csrc/runtime/rnn.cpp with cuBLAS for the GEMMs (cublas_loader.hpp) and fused
// element-wise kernels (the per-element math in rnn_cells.cuh).
//
// Forward (G gates, GH = G * H):
//   1. input projections of all T steps in one GEMM, straight into the cache that
//      holds them on the CPU too: gates (T*B, GH) for lstm/gru, hs[1:] for rnn_*; b_ih
//      is broadcast into it first (one kernel) and the GEMM adds with beta = 1;
//   2. per step: one recurrent GEMM h_{t-1} W_hh^T (into gates[t] / hs[t+1] with
//      beta = 1; for the GRU into scratch (B, GH), since r multiplies its n part) and
//      one fused cell kernel (b_hh, activations, state update, writes hs[t+1], cs[t+1],
//      gates, gh_n).
// Backward:
//   per step t = T-1 .. 0, one fused kernel: dL/dh_t = dh (from step t+1, grad_h_n at
//   the end) + grad_y[t]; its squares summed in double per block into partial[t][block]
//   (before clipping); the clip_hidden clamp; the gate gradients dG_t into scratch
//   (T, B, GH) (GRU: dgx for the input side and dgh, whose n part is dn * r, for the
//   W_hh side, and dh <- z * dL/dh_t, the direct path); LSTM: dc <- dL/dc_{t-1} in place.
//   Then one GEMM dh = dG_t W_hh (beta 1 for the GRU, adding to the direct path).
//   The clamp is element-wise with a fixed bound, so it needs nothing from the norm: the
//   norm is only recorded, and all T norms are finished by one kernel after the loop.
//   After the loop: grad_x = dG W_ih, grad_weight_ih = dG^T X, grad_weight_hh =
//   dGh^T hs[0:T] (one GEMM each over all T*B rows) and the bias gradients by one
//   deterministic column reduction (grad_z_and_bias, identity).
// Launches: forward 2 (+1 with b_ih) + 2 per step; backward 2 per step + about 6.
// Determinism: no atomics; every reduction has a partition fixed by the shape and a
// fixed order (the norms: grid-stride per thread, warp-shuffle tree, warps in order,
// blocks in order; the bias: dense.cu's chunked column sums).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "activations.cuh"
#include "common.cuh"
#include "cublas_loader.hpp"
#include "gradcore/cuda.hpp"
#include "gradcore/rnn.hpp"
#include "rnn_cells.cuh"
#include "runtime/checks.hpp"

namespace gradcore::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxFlatBlocks = 4096;
// Blocks of the backward step kernel: a function of B*H only (never of the device), so
// the per-block partial norms, and their sum, are the same on every run.
constexpr std::int64_t kMaxStepBlocks = 1024;

unsigned blocks_for(std::int64_t n, std::int64_t cap) {
    const std::int64_t blocks = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(blocks, cap)));
}

#define GC_FOR_EACH(i, n)                                                                       \
    for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

// Sum of v over the block (kThreads threads), in a fixed order; the result is in thread 0.
__device__ double block_sum(double v) {
    __shared__ double warp_sums[kThreads / 32];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    double total = 0.0;
    if (threadIdx.x == 0) {
        for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    }
    __syncthreads();  // warp_sums may be reused by the caller's next call
    return total;
}

// ---- forward ------------------------------------------------------------------------

// out (rows, cols), row-major: every row = bias.
template <class T>
__global__ void __launch_bounds__(kThreads)
    broadcast_rows_kernel(T* __restrict__ out, std::int64_t rows, std::int64_t cols, const T* __restrict__ bias) {
    GC_FOR_EACH(i, rows * cols) { out[i] = bias[i % cols]; }
}

// h (B, H) holds x W_ih^T + b_ih + h_prev W_hh^T: h = act(h + b_hh).
template <class T>
__global__ void __launch_bounds__(kThreads)
    rnn_forward_step_kernel(T* __restrict__ h, std::int64_t count, std::int64_t hidden, const T* __restrict__ b_hh,
                            bool relu) {
    GC_FOR_EACH(i, count) {
        T v = h[i];
        if (b_hh) v += b_hh[i % hidden];
        h[i] = elem::rnn_forward(v, relu);
    }
}

// gates (B, 4H) of this step hold x W_ih^T + b_ih + h_prev W_hh^T; b_hh is added here and
// they are replaced by i, f, g, o after their activations.
template <class T>
__global__ void __launch_bounds__(kThreads)
    lstm_forward_step_kernel(std::int64_t batch, std::int64_t hidden, T* __restrict__ gates,
                             const T* __restrict__ b_hh, const T* __restrict__ c_prev, T* __restrict__ c,
                             T* __restrict__ h) {
    GC_FOR_EACH(i, batch * hidden) {
        const std::int64_t b = i / hidden, j = i - b * hidden;
        T* g = gates + b * 4 * hidden + j;
        T a[4] = {g[0], g[hidden], g[2 * hidden], g[3 * hidden]};
        if (b_hh) {
            for (int k = 0; k < 4; ++k) a[k] += b_hh[k * hidden + j];
        }
        const elem::LstmForward<T> s = elem::lstm_forward(a[0], a[1], a[2], a[3], c_prev[i]);
        g[0] = s.i, g[hidden] = s.f, g[2 * hidden] = s.g, g[3 * hidden] = s.o;
        c[i] = s.c;
        h[i] = s.h;
    }
}

// gates (B, 3H) of this step hold x W_ih^T + b_ih, gh (B, 3H) h_prev W_hh^T (b_hh added
// here); gates are replaced by r, z, n, gh_n = W_hn h_prev + b_hn.
template <class T>
__global__ void __launch_bounds__(kThreads)
    gru_forward_step_kernel(std::int64_t batch, std::int64_t hidden, T* __restrict__ gates, const T* __restrict__ gh,
                            const T* __restrict__ b_hh, const T* __restrict__ h_prev, T* __restrict__ gh_n,
                            T* __restrict__ h) {
    GC_FOR_EACH(i, batch * hidden) {
        const std::int64_t b = i / hidden, j = i - b * hidden;
        T* g = gates + b * 3 * hidden + j;
        const T* q = gh + b * 3 * hidden + j;
        T qr = q[0], qz = q[hidden], qn = q[2 * hidden];
        if (b_hh) qr += b_hh[j], qz += b_hh[hidden + j], qn += b_hh[2 * hidden + j];
        const elem::GruForward<T> s = elem::gru_forward(g[0], g[hidden], g[2 * hidden], qr, qz, qn, h_prev[i]);
        g[0] = s.r, g[hidden] = s.z, g[2 * hidden] = s.n;
        gh_n[i] = qn;
        h[i] = s.h;
    }
}

// ---- backward -----------------------------------------------------------------------

template <class T>
struct BackwardStep {
    std::int64_t batch, hidden;
    const T* grad_y;   // grad_y[t] (B, H), or null (zeros)
    T* dh;             // in: dL/dh_t from step t+1; GRU out: z * dL/dh_t (clipped)
    T clip;            // > 0: clamp dL/dh_t to [-clip, clip]
    const T* gates;    // gates[t] (B, G*H), lstm/gru
    const T* h;        // hs[t+1], rnn_*
    const T* h_prev;   // hs[t], gru
    const T* c_prev;   // cs[t], lstm
    const T* c;        // cs[t+1], lstm
    T* dc;             // lstm: in dL/dc_t, out dL/dc_{t-1}
    const T* gh_n;     // gh_n[t], gru
    T* dgx;            // dG_t (B, G*H): input side (and W_hh side but for the GRU)
    T* dgh;            // gru: dG_t of the W_hh side (B, 3H)
    double* norm_partial;  // [gridDim.x] sums of squares of dL/dh_t, or null
    bool relu;
};

template <class T, Cell kCell>
__global__ void __launch_bounds__(kThreads) backward_step_kernel(BackwardStep<T> a) {
    const std::int64_t hidden = a.hidden;
    double sumsq = 0.0;
    GC_FOR_EACH(i, a.batch * hidden) {
        const T v = a.dh[i] + (a.grad_y ? a.grad_y[i] : T(0));
        sumsq += static_cast<double>(v) * static_cast<double>(v);
        const T dh = elem::clamp_hidden(v, a.clip);
        if constexpr (kCell == Cell::lstm) {
            const std::int64_t b = i / hidden, j = i - b * hidden;
            const T* g = a.gates + b * 4 * hidden + j;
            T* d = a.dgx + b * 4 * hidden + j;
            const elem::LstmBackward<T> r =
                elem::lstm_backward(g[0], g[hidden], g[2 * hidden], g[3 * hidden], a.c_prev[i], a.c[i], dh, a.dc[i]);
            d[0] = r.di, d[hidden] = r.df, d[2 * hidden] = r.dg, d[3 * hidden] = r.do_;
            a.dc[i] = r.dc_prev;
        } else if constexpr (kCell == Cell::gru) {
            const std::int64_t b = i / hidden, j = i - b * hidden;
            const T* g = a.gates + b * 3 * hidden + j;
            T* dx = a.dgx + b * 3 * hidden + j;
            T* dq = a.dgh + b * 3 * hidden + j;
            const elem::GruBackward<T> r =
                elem::gru_backward(g[0], g[hidden], g[2 * hidden], a.gh_n[i], a.h_prev[i], dh);
            dx[0] = r.dr, dx[hidden] = r.dz, dx[2 * hidden] = r.dn;
            dq[0] = r.dr, dq[hidden] = r.dz, dq[2 * hidden] = r.dqn;
            a.dh[i] = r.dh_prev_direct;
        } else {
            a.dgx[i] = elem::rnn_backward(a.h[i], dh, a.relu);
        }
    }
    if (a.norm_partial) {  // the same for the whole block
        const double total = block_sum(sumsq);
        if (threadIdx.x == 0) a.norm_partial[blockIdx.x] = total;
    }
}

// out[t] = sqrt(sum of partial[t][0 .. per_step)), one block per step.
__global__ void __launch_bounds__(kThreads)
    norms_finish_kernel(const double* __restrict__ partial, std::int64_t per_step, std::int64_t steps,
                        double* __restrict__ out) {
    for (std::int64_t t = blockIdx.x; t < steps; t += gridDim.x) {
        double s = 0.0;
        for (std::int64_t k = threadIdx.x; k < per_step; k += blockDim.x) s += partial[t * per_step + k];
        s = block_sum(s);
        if (threadIdx.x == 0) out[t] = ::sqrt(s);
    }
}

#undef GC_FOR_EACH

// ---- host side ----------------------------------------------------------------------

struct Dims {
    std::int64_t steps, batch, input, hidden, gates, gh, bh, tb;
};

[[noreturn]] void too_large(const std::string& what) {
    throw std::invalid_argument(what + " is too large for the device backend (cuBLAS takes int sizes)");
}

// Sizes >= 0, gate count of a known cell, every GEMM dimension within int and every
// array's byte size within int64.
template <class View>  // RnnForward or RnnStates
Dims check_dims(const View& f) {
    runtime::require_size(f.steps, "steps");
    runtime::require_size(f.batch, "batch");
    runtime::require_size(f.input, "input");
    runtime::require_size(f.hidden, "hidden");
    const std::int64_t G = gate_count(f.cell);  // std::invalid_argument for an unknown cell
    Dims d{f.steps, f.batch, f.input, f.hidden, G, 0, 0, 0};
    if (f.batch > kMaxBlasDim) too_large("batch = " + std::to_string(f.batch));
    if (f.input > kMaxBlasDim) too_large("input = " + std::to_string(f.input));
    if (f.hidden > kMaxBlasDim / G) too_large("gates * hidden");
    if (f.batch > 0 && f.steps > kMaxBlasDim / f.batch) too_large("steps * batch");
    d.gh = G * f.hidden;
    d.bh = f.batch * f.hidden;
    d.tb = f.steps * f.batch;
    constexpr std::int64_t kMaxElements = (std::int64_t(1) << 60) / static_cast<std::int64_t>(sizeof(*f.x));
    const std::int64_t widest = std::max(d.gh, std::max(f.input, f.hidden));
    if (widest > 0 && d.tb + f.batch > kMaxElements / widest) too_large("steps * batch * width");
    return d;
}

template <class T>
void require_data(const T* p, bool needed, const char* name) {
    if (needed && !p) throw std::invalid_argument(std::string(name) + " is null");
}

// Offsets into one stream-ordered allocation, each 256-byte aligned.
struct Layout {
    std::size_t bytes = 0;
    std::size_t take(std::size_t n) {
        const std::size_t at = bytes;
        bytes += (n + 255) / 256 * 256;
        return at;
    }
};

template <class T>
void copy_or_zero(T* dst, const T* src, std::int64_t n, cudaStream_t s) {
    if (n <= 0 || dst == src) return;
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
    if (src) {
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    } else {
        check(cudaMemsetAsync(dst, 0, bytes, s), "cudaMemsetAsync");
    }
}

template <class T>
void forward_steps(const RnnForward<T>& f, const Dims& d, cudaStream_t s) {
    if (d.steps == 0 || d.batch == 0 || d.hidden == 0) return;
    const bool lstm = f.cell == Cell::lstm, gru = f.cell == Cell::gru, plain = !lstm && !gru;
    require_data(f.weight_hh, true, "weight_hh");
    require_data(f.x, d.input > 0, "x");
    require_data(f.weight_ih, d.input > 0, "weight_ih");
    require_data(f.gates, !plain, "gates");
    require_data(f.gh_n, gru, "gh_n");

    const Blas blas = blas_on(s);
    const std::int64_t B = d.batch, H = d.hidden, GH = d.gh, BH = d.bh;

    // 1. Input projections of every step: (T*B, GH) = x (T*B, I) W_ih^T (+ b_ih).
    T* proj = plain ? f.hs + BH : f.gates;
    if (f.bias_ih) {
        broadcast_rows_kernel<T><<<blocks_for(d.tb * GH, kMaxFlatBlocks), kThreads, 0, s>>>(proj, d.tb, GH, f.bias_ih);
        check_launch("rnn broadcast_rows_kernel");
    }
    gemm_row_major(blas, false, true, d.tb, GH, d.input, T(1), f.x, d.input, f.weight_ih, d.input,
                   f.bias_ih ? T(1) : T(0), proj, GH);

    // 2. Per step: recurrent GEMM + fused cell.
    Scratch gh_buffer(gru ? static_cast<std::size_t>(B * GH) * sizeof(T) : 0, s);
    const unsigned blocks = blocks_for(BH, kMaxFlatBlocks);
    for (std::int64_t t = 0; t < d.steps; ++t) {
        const T* h_prev = f.hs + t * BH;
        T* h = f.hs + (t + 1) * BH;
        if (plain) {
            gemm_row_major(blas, false, true, B, H, H, T(1), h_prev, H, f.weight_hh, H, T(1), h, H);
            rnn_forward_step_kernel<T><<<blocks, kThreads, 0, s>>>(h, BH, H, f.bias_hh, f.cell == Cell::rnn_relu);
            check_launch("rnn_forward_step_kernel");
        } else if (lstm) {
            T* g = f.gates + t * B * GH;
            gemm_row_major(blas, false, true, B, GH, H, T(1), h_prev, H, f.weight_hh, H, T(1), g, GH);
            lstm_forward_step_kernel<T><<<blocks, kThreads, 0, s>>>(B, H, g, f.bias_hh, f.cs + t * BH,
                                                                     f.cs + (t + 1) * BH, h);
            check_launch("lstm_forward_step_kernel");
        } else {
            T* g = f.gates + t * B * GH;
            T* gh = gh_buffer.as<T>();
            gemm_row_major(blas, false, true, B, GH, H, T(1), h_prev, H, f.weight_hh, H, T(0), gh, GH);
            gru_forward_step_kernel<T><<<blocks, kThreads, 0, s>>>(B, H, g, gh, f.bias_hh, h_prev, f.gh_n + t * BH, h);
            check_launch("gru_forward_step_kernel");
        }
    }
}

// The initial states, the steps, then the copies the caller asked for, all on the stream.
template <class T>
void forward(const RnnForward<T>& f, Stream stream) {
    const Dims d = check_dims(f);
    const bool lstm = f.cell == Cell::lstm;
    require_data(f.hs, d.bh > 0, "hs");
    require_data(f.cs, lstm && d.bh > 0, "cs");
    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const std::int64_t last = d.steps * d.bh;
    copy_or_zero(f.hs, f.h0, d.bh, s);
    if (lstm) copy_or_zero(f.cs, f.c0, d.bh, s);
    forward_steps(f, d, s);
    if (f.y) copy_or_zero(f.y, f.hs + d.bh, last, s);
    if (f.h_n) copy_or_zero(f.h_n, f.hs + last, d.bh, s);
    if (f.c_n && lstm) copy_or_zero(f.c_n, f.cs + last, d.bh, s);
}

template <class T>
void backward(const RnnBackward<T>& bw, Stream stream) {
    const RnnStates<T>& f = bw.states;
    const Dims d = check_dims(f);
    const bool lstm = f.cell == Cell::lstm, gru = f.cell == Cell::gru, plain = !lstm && !gru;
    const std::int64_t Tn = d.steps, B = d.batch, I = d.input, H = d.hidden, GH = d.gh, BH = d.bh, TB = d.tb;
    const bool loop = Tn > 0 && BH > 0;
    require_data(f.hs, loop, "hs");
    require_data(f.weight_hh, loop, "weight_hh");
    require_data(f.cs, loop && lstm, "cs");
    require_data(f.gates, loop && !plain, "gates");
    require_data(f.gh_n, loop && gru, "gh_n");
    require_data(f.weight_ih, bw.grad_x && TB > 0 && I > 0 && GH > 0, "weight_ih");
    require_data(f.x, bw.grad_weight_ih && TB > 0 && I > 0 && GH > 0, "x");

    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const Blas blas = blas_on(s);

    // Scratch: dG (T, B, GH) (+ the GRU's W_hh-side dG), dh / dc when grad_h0 / grad_c0
    // are not asked for (otherwise those outputs are the running state), and the
    // per-block partial norms (T, blocks).
    const std::int64_t step_blocks = static_cast<std::int64_t>(blocks_for(BH, kMaxStepBlocks));
    const bool norms = bw.hidden_grad_norms && loop;
    const std::size_t dg_bytes = static_cast<std::size_t>(TB * GH) * sizeof(T);
    Layout layout;
    const std::size_t at_dgx = layout.take(dg_bytes);
    const std::size_t at_dgh = layout.take(gru ? dg_bytes : 0);
    const std::size_t at_dh = layout.take(bw.grad_h0 ? 0 : static_cast<std::size_t>(BH) * sizeof(T));
    const std::size_t at_dc = layout.take(lstm && !bw.grad_c0 ? static_cast<std::size_t>(BH) * sizeof(T) : 0);
    const std::size_t at_norm = layout.take(norms ? static_cast<std::size_t>(Tn * step_blocks) * sizeof(double) : 0);
    Scratch scratch(layout.bytes, s);
    char* base = scratch.as<char>();
    T* dgx = reinterpret_cast<T*>(base + at_dgx);
    T* dgh = gru ? reinterpret_cast<T*>(base + at_dgh) : dgx;
    T* dh = bw.grad_h0 ? bw.grad_h0 : reinterpret_cast<T*>(base + at_dh);
    T* dc = lstm ? (bw.grad_c0 ? bw.grad_c0 : reinterpret_cast<T*>(base + at_dc)) : nullptr;
    double* partial = norms ? reinterpret_cast<double*>(base + at_norm) : nullptr;

    copy_or_zero(dh, bw.grad_h_n, BH, s);
    if (lstm) copy_or_zero(dc, bw.grad_c_n, BH, s);

    const T clip = bw.clip_hidden > 0 ? static_cast<T>(bw.clip_hidden) : T(0);
    for (std::int64_t t = Tn - 1; loop && t >= 0; --t) {
        BackwardStep<T> a{};
        a.batch = B;
        a.hidden = H;
        a.grad_y = bw.grad_y ? bw.grad_y + t * BH : nullptr;
        a.dh = dh;
        a.clip = clip;
        a.gates = plain ? nullptr : f.gates + t * B * GH;
        a.h = f.hs + (t + 1) * BH;
        a.h_prev = f.hs + t * BH;
        a.c_prev = lstm ? f.cs + t * BH : nullptr;
        a.c = lstm ? f.cs + (t + 1) * BH : nullptr;
        a.dc = dc;
        a.gh_n = gru ? f.gh_n + t * BH : nullptr;
        a.dgx = dgx + t * B * GH;
        a.dgh = dgh + t * B * GH;
        a.norm_partial = norms ? partial + t * step_blocks : nullptr;
        a.relu = f.cell == Cell::rnn_relu;
        const unsigned grid = static_cast<unsigned>(step_blocks);
        if (lstm) {
            backward_step_kernel<T, Cell::lstm><<<grid, kThreads, 0, s>>>(a);
        } else if (gru) {
            backward_step_kernel<T, Cell::gru><<<grid, kThreads, 0, s>>>(a);
        } else {
            backward_step_kernel<T, Cell::rnn_tanh><<<grid, kThreads, 0, s>>>(a);
        }
        check_launch("rnn backward_step_kernel");
        // dh_{t-1} = dG_t W_hh (+ z * dL/dh_t for the GRU, already in dh); at t = 0 that
        // is grad_h0, not computed when not asked for.
        if (t > 0 || bw.grad_h0) {
            gemm_row_major(blas, false, false, B, H, GH, T(1), a.dgh, GH, f.weight_hh, H, gru ? T(1) : T(0), dh, H);
        }
    }
    if (norms) {
        norms_finish_kernel<<<static_cast<unsigned>(std::min<std::int64_t>(Tn, 65535)), kThreads, 0, s>>>(
            partial, step_blocks, Tn, bw.hidden_grad_norms);
        check_launch("rnn norms_finish_kernel");
    } else if (bw.hidden_grad_norms && Tn > 0) {  // B * H == 0: every norm is 0
        check(cudaMemsetAsync(bw.hidden_grad_norms, 0, static_cast<std::size_t>(Tn) * sizeof(double), s),
              "cudaMemsetAsync");
    }

    // Merged over all T*B rows.
    if (bw.grad_x) {  // (T*B, I) = dG (T*B, GH) W_ih (GH, I)
        gemm_row_major(blas, false, false, TB, I, GH, T(1), dgx, GH, f.weight_ih, I, T(0), bw.grad_x, I);
    }
    if (bw.grad_weight_ih) {  // (GH, I) = dG^T (GH, T*B) X (T*B, I)
        gemm_row_major(blas, true, false, GH, I, TB, T(1), dgx, GH, f.x, I, T(0), bw.grad_weight_ih, I);
    }
    if (bw.grad_weight_hh) {  // (GH, H) = dGh^T (GH, T*B) hs[0:T] (T*B, H)
        gemm_row_major(blas, true, false, GH, H, TB, T(1), dgh, GH, f.hs, H, T(0), bw.grad_weight_hh, H);
    }
    T* bias_ih = bw.grad_bias_ih;
    T* bias_hh = bw.grad_bias_hh;
    if (bias_ih) {
        grad_z_and_bias<T>(dgx, GH, nullptr, 1, Activation::identity, T(0), nullptr, 1, bias_ih, false, TB, GH, s);
    }
    if (bias_hh) {
        if (!gru && bias_ih) {  // the same sums (dG is shared): copy them
            copy_or_zero(bias_hh, static_cast<const T*>(bias_ih), GH, s);
        } else {
            grad_z_and_bias<T>(dgh, GH, nullptr, 1, Activation::identity, T(0), nullptr, 1, bias_hh, false, TB, GH,
                               s);
        }
    }
}

}  // namespace
}  // namespace detail

void rnn_forward(const RnnForward<float>& f, Stream stream) { detail::forward(f, stream); }
void rnn_forward(const RnnForward<double>& f, Stream stream) { detail::forward(f, stream); }
void rnn_backward(const RnnBackward<float>& b, Stream stream) { detail::backward(b, stream); }
void rnn_backward(const RnnBackward<double>& b, Stream stream) { detail::backward(b, stream); }

}  // namespace gradcore::cuda
