#include "runtime/gemm.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/runtime.hpp"
#include "runtime/checks.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore::runtime {
namespace {

template <class T>
const kernels::GemmTable<T>& table() {
    return gemm_kernels<T>(active_table());
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }
std::int64_t round_up(std::int64_t a, std::int64_t b) { return ceil_div(a, b) * b; }

template <class T>
T* grow(std::vector<T>& buffer, std::int64_t n) {
    if (static_cast<std::int64_t>(buffer.size()) < n) buffer.resize(static_cast<std::size_t>(n));
    return buffer.data();
}

// Per-thread packing buffers, kept between calls (allocating a few MB per call would
// cost page faults on every GEMM). A is packed by each task; B by the calling thread's
// tasks into the caller's buffer, which the workers only read.
template <class T>
std::vector<T>& a_buffer() {
    thread_local std::vector<T> buffer;
    return buffer;
}
template <class T>
std::vector<T>& b_buffer() {
    thread_local std::vector<T> buffer;
    return buffer;
}
// One B micro-panel packed into L1 for the row panels of a small-M product.
template <class T>
std::vector<T>& b_panel_buffer() {
    thread_local std::vector<T> buffer;
    return buffer;
}

}  // namespace

template <class T>
PackedB<T> pack_b(MatrixRef<const T> b) {
    const kernels::GemmTable<T>& k = table<T>();
    const kernels::GemmBlocking& B = k.blocking;
    PackedB<T> p;
    p.rows = b.rows;
    p.cols = b.cols;
    std::int64_t total = 0;
    for (std::int64_t jc = 0; jc < b.cols; jc += B.nc) {
        const std::int64_t nc = std::min(B.nc, b.cols - jc);
        for (std::int64_t pc = 0; pc == 0 || pc < b.rows; pc += B.kc) {
            p.block_offsets.push_back(total);
            total += std::min(B.kc, b.rows - pc) * ceil_div(nc, k.nr) * k.nr;
        }
    }
    p.data.resize(static_cast<std::size_t>(std::max<std::int64_t>(total, 1)));
    std::size_t block = 0;
    for (std::int64_t jc = 0; jc < b.cols; jc += B.nc) {
        const std::int64_t nc = std::min(B.nc, b.cols - jc);
        for (std::int64_t pc = 0; pc == 0 || pc < b.rows; pc += B.kc) {
            const std::int64_t kc = std::min(B.kc, b.rows - pc);
            k.pack_b(b.data + pc * b.rs + jc * b.cs, b.rs, b.cs, kc, nc, p.data.data() + p.block_offsets[block++]);
        }
    }
    return p;
}

template <class T>
void gemm(MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c, T alpha, T beta,
          const T* bias, Activation act, T slope, const PackedB<T>* packed) {
    const std::int64_t M = c.rows, N = c.cols, K = a.cols;
    require_size(M, "gemm: rows of C");
    require_size(N, "gemm: columns of C");
    require_size(K, "gemm: columns of A");
    if (a.rows != M || b.rows != K || b.cols != N) {
        throw std::invalid_argument("gemm: shapes (" + std::to_string(a.rows) + ", " + std::to_string(a.cols) +
                                    ") x (" + std::to_string(b.rows) + ", " + std::to_string(b.cols) +
                                    ") -> (" + std::to_string(M) + ", " + std::to_string(N) + ") do not agree");
    }
    if (c.cs != 1 && N > 1) throw std::invalid_argument("gemm: C must have unit column stride");
    if (M == 0 || N == 0) return;
    const kernels::GemmTable<T>& k = table<T>();
    const std::int64_t MR = k.mr, NR = k.nr;
    const kernels::GemmBlocking& B = k.blocking;
    const int threads = threads_for_caller();

    if (packed && (packed->rows != K || packed->cols != N)) {
        throw std::invalid_argument("gemm: the packed B does not match B's shape");
    }
    const std::int64_t n_pc = std::max<std::int64_t>(1, ceil_div(K, B.kc));

    // Few rows: B is reused by only a few row panels, so a packed copy of all of it in
    // memory would cost about as much as it saves. Each B micro-panel is instead packed
    // into L1 just before the row panels use it: by the first row panel's micro-kernel
    // as it reads a row-major B in place (its rows ldb apart: a power-of-two stride
    // would alias them into a few L1 sets if they were read there every time), or by
    // pack_b for other layouts (a transposed weight in x W^T).
    const bool small = M <= B.small_rows;
    const bool panel_b = !packed && small;
    // Few rows of a row-major A: read in place by the micro-kernel (see micro()); with
    // the columns split across threads each would otherwise pack all of A (measured
    // 4-13% faster for M <= 64 on two cores).
    const bool direct_a = small && a.cs == 1 && a.rs > 0;
    const std::int64_t lda = direct_a ? a.rs : 0;

    // C[ic : ic + mcur, B panels q0..q1 of the jc block] += A[., pc block] B[pc block, .]
    // (the first k block applies beta, the last one the epilogue). bp: the packed KC x nc
    // block of B, unless panel_b.
    auto compute = [&](std::int64_t ic, std::int64_t mcur, std::int64_t jc, std::int64_t nc, std::int64_t q0,
                       std::int64_t q1, std::int64_t pc, const T* bp) {
        const std::int64_t kc = std::min(B.kc, K - pc);
        const bool last = pc + kc >= K;
        const T beta_k = pc == 0 ? beta : T(1);
        const T* ap;  // the A block: rows read in place, or packed panels
        if (direct_a) {
            ap = a.data + ic * a.rs + pc;
        } else {
            T* packed_a = grow(a_buffer<T>(), round_up(mcur, MR) * kc + kernels::kPackASlack);
            k.pack_a(a.data + ic * a.rs + pc * a.cs, a.rs, a.cs, mcur, kc, packed_a);
            ap = packed_a;
        }
        alignas(64) T tile[16 * 64];
        alignas(64) T tile_bias[64];
        kernels::Epilogue<T> ep{nullptr, act, slope};
        for (std::int64_t q = q0; q < q1; ++q) {
            const std::int64_t j = q * NR;  // within the jc block
            const std::int64_t ncur = std::min(NR, nc - j);
            const T* bpanel;
            std::int64_t ldb = NR;
            T* b_copy = nullptr;  // set: the first micro-kernel packs the B panel here
            if (!panel_b) {
                bpanel = bp + q * kc * NR;
            } else if (b.cs == 1 && ncur == NR) {
                bpanel = b.data + pc * b.rs + jc + j;
                ldb = b.rs;
                if (mcur > MR) b_copy = grow(b_panel_buffer<T>(), kc * NR);
            } else {  // transposed or strided B, or the last, partial panel
                T* panel = grow(b_panel_buffer<T>(), std::max<std::int64_t>(1, kc * NR));
                k.pack_b(b.data + pc * b.rs + (jc + j) * b.cs, b.rs, b.cs, kc, ncur, panel);
                bpanel = panel;
            }
            const T* tile_bias_src = bias ? bias + jc + j : nullptr;
            if (ncur < NR && tile_bias_src) {
                std::fill(tile_bias, tile_bias + NR, T(0));
                std::copy(tile_bias_src, tile_bias_src + ncur, tile_bias);
                tile_bias_src = tile_bias;
            }
            ep.bias = tile_bias_src;
            const kernels::Epilogue<T>* epp = last && (bias || act != Activation::identity) ? &ep : nullptr;
            for (std::int64_t i = 0; i < mcur; i += MR) {
                const std::int64_t mr = std::min(MR, mcur - i);
                T* cij = c.data + (ic + i) * c.rs + jc + j;
                const T* apanel = direct_a ? ap + i * a.rs : ap + i * kc;
                if (ncur == NR) {  // (b_copy is set only when the first panel is full)
                    k.micro(kc, apanel, lda, bpanel, ldb, cij, c.rs, alpha, beta_k, epp, b_copy, static_cast<int>(mr));
                    if (b_copy) bpanel = b_copy, ldb = NR, b_copy = nullptr;
                    continue;
                }
                for (std::int64_t r = 0; r < mr; ++r) {
                    for (std::int64_t s = 0; s < ncur; ++s) {
                        tile[r * NR + s] = beta_k != T(0) ? cij[r * c.rs + s] : T(0);
                    }
                }
                k.micro(kc, apanel, lda, bpanel, ldb, tile, NR, alpha, beta_k, epp, nullptr, static_cast<int>(mr));
                for (std::int64_t r = 0; r < mr; ++r) {
                    for (std::int64_t s = 0; s < ncur; ++s) cij[r * c.rs + s] = tile[r * NR + s];
                }
            }
        }
    };
    auto packed_block = [&](std::int64_t jc_index, std::int64_t pc_index) -> const T* {
        return packed->data.data() + packed->block_offsets[static_cast<std::size_t>(jc_index * n_pc + pc_index)];
    };

    // Few rows times a transposed B (x W^T, the dense forward, with W row-major):
    // computed as C^T = B^T A^T by the transposed-store micro-kernel (see micro_tc), so
    // that W is read as it lies and only the few rows of A are transposed, once, instead
    // of every panel of W (dense forward 64x512x512 tanh: 190 -> 179 us on two cores, 368 ->
    // 330 us on one; 32x256x256 relu on one: 44 -> 40 us). The k loop is
    // not blocked (C is written once, never read back), for depths whose packed A^T
    // panel (K x NR) still fits in L2 (B.max_transposed_depth).
    if (k.micro_tc && small && !packed && b.rs == 1 && b.cs > 1 && beta == T(0) && K > 0 &&
        K <= B.max_transposed_depth) {
        const std::int64_t a_panels = ceil_div(M, NR);  // A^T's panels: C's rows
        T* at = grow(b_buffer<T>(), a_panels * NR * K);
        k.pack_b(a.data, a.cs, a.rs, K, M, at);  // A^T (K x M): at(k, i) = a(i, k)
        const std::int64_t b_panels = ceil_div(N, MR);  // B^T's row panels: C's columns
        const std::int64_t tasks = std::min<std::int64_t>(threads, b_panels);
        const bool fused = bias || act != Activation::identity;
        auto rows_of_bt = [&](std::size_t t) {
            const std::int64_t p0 = b_panels * static_cast<std::int64_t>(t) / tasks;
            const std::int64_t p1 = b_panels * static_cast<std::int64_t>(t + 1) / tasks;
            kernels::Epilogue<T> ep{nullptr, act, slope};
            for (std::int64_t p = p0; p < p1; ++p) {
                const std::int64_t j = p * MR;
                ep.bias = bias ? bias + j : nullptr;
                for (std::int64_t q = 0; q < a_panels; ++q) {
                    const std::int64_t i = q * NR;
                    k.micro_tc(K, b.data + j * b.cs, b.cs, at + q * K * NR, c.data + i * c.rs + j, c.rs, alpha,
                               fused ? &ep : nullptr, static_cast<int>(std::min(MR, N - j)),
                               static_cast<int>(std::min(NR, M - i)));
                }
            }
        };
        parallel_for(static_cast<std::size_t>(tasks), M * N * K / 4, TaskFn(rows_of_bt));
        return;
    }

    // Few rows and enough columns: each thread takes all rows and a range of the
    // columns, for every k block. It then reads (and packs) only its part of B, no
    // thread gets the short remainder panel of rows on top of a full share, and the
    // threads meet once per product instead of once per k block. Measured on two
    // cores against splitting rows, process against process: up to 25% faster for
    // M <= 64 with B packed here (none slower beyond the noise), 2-4% faster for the
    // recurrent layers' steps (B packed once for all steps).
    if (small && threads > 1 && ceil_div(N, NR) >= 2 * threads) {
        // (Four ranges per thread, taken as threads come free, measured 0-4% slower.)
        const std::int64_t tasks = threads;
        auto columns = [&](std::size_t t) {
            const std::int64_t js = static_cast<std::int64_t>(t);
            for (std::int64_t jc = 0, jci = 0; jc < N; jc += B.nc, ++jci) {
                const std::int64_t nc = std::min(B.nc, N - jc);
                const std::int64_t n_panels = ceil_div(nc, NR);
                const std::int64_t q0 = n_panels * js / tasks, q1 = n_panels * (js + 1) / tasks;
                if (q1 <= q0) continue;
                for (std::int64_t pc = 0, pci = 0; pc == 0 || pc < K; pc += B.kc, ++pci) {
                    compute(0, M, jc, nc, q0, q1, pc, packed ? packed_block(jci, pci) : nullptr);
                }
            }
        };
        parallel_for(static_cast<std::size_t>(tasks), M * N * std::max<std::int64_t>(K, 1) / 4, TaskFn(columns));
        return;
    }

    // Row blocks: at most MC rows, and at least `threads` of them when M allows it, in
    // a multiple of the thread count so that no thread idles at the end.
    std::int64_t n_ic = ceil_div(M, B.mc);
    const std::int64_t max_ic = ceil_div(M, MR);
    if (n_ic > 1 || threads > 1) n_ic = std::min(max_ic, round_up(n_ic, threads));
    const std::int64_t mc = round_up(ceil_div(M, n_ic), MR);
    n_ic = ceil_div(M, mc);
    // Few row blocks (small M): split each block's columns across threads as well.
    const std::int64_t n_js = n_ic >= threads ? 1 : ceil_div(threads, n_ic);

    std::vector<T>& b_buf = b_buffer<T>();
    for (std::int64_t jc = 0, jci = 0; jc < N; jc += B.nc, ++jci) {
        const std::int64_t nc = std::min(B.nc, N - jc);
        const std::int64_t n_panels = ceil_div(nc, NR);
        for (std::int64_t pc = 0, pci = 0; pc == 0 || pc < K; pc += B.kc, ++pci) {
            const std::int64_t kc = std::min(B.kc, K - pc);
            const T* bp = packed ? packed_block(jci, pci)
                          : panel_b ? nullptr
                                    : grow(b_buf, std::max<std::int64_t>(1, kc * n_panels * NR));
            // Pack B, split by panels.
            const std::int64_t pack_tasks = std::min<std::int64_t>(n_panels, 4 * threads);
            auto pack_b = [&](std::size_t t) {
                const std::int64_t p0 = n_panels * static_cast<std::int64_t>(t) / pack_tasks;
                const std::int64_t p1 = n_panels * static_cast<std::int64_t>(t + 1) / pack_tasks;
                if (p1 <= p0) return;
                const std::int64_t j0 = p0 * NR, j1 = std::min(nc, p1 * NR);
                k.pack_b(b.data + pc * b.rs + (jc + j0) * b.cs, b.rs, b.cs, kc, j1 - j0,
                         const_cast<T*>(bp) + p0 * kc * NR);
            };
            if (!panel_b && !packed) parallel_for(static_cast<std::size_t>(pack_tasks), kc * nc, TaskFn(pack_b));

            auto block = [&](std::size_t t) {
                const std::int64_t ic = static_cast<std::int64_t>(t) / n_js * mc;
                const std::int64_t js = static_cast<std::int64_t>(t) % n_js;
                if (ic >= M) return;
                const std::int64_t q0 = n_panels * js / n_js, q1 = n_panels * (js + 1) / n_js;
                if (q1 <= q0) return;
                compute(ic, std::min(mc, M - ic), jc, nc, q0, q1, pc, bp);
            };
            parallel_for(static_cast<std::size_t>(n_ic * n_js), M * nc * std::max<std::int64_t>(kc, 1) / 4, TaskFn(block));
        }
    }
}

template PackedB<float> pack_b<float>(MatrixRef<const float>);
template PackedB<double> pack_b<double>(MatrixRef<const double>);
template void gemm<float>(MatrixRef<const float>, MatrixRef<const float>, MatrixRef<float>, float, float,
                          const float*, Activation, float, const PackedB<float>*);
template void gemm<double>(MatrixRef<const double>, MatrixRef<const double>, MatrixRef<double>, double,
                           double, const double*, Activation, double, const PackedB<double>*);

}  // namespace gradcore::runtime

namespace gradcore {

void gemm(MatrixRef<const float> a, MatrixRef<const float> b, MatrixRef<float> c, float alpha, float beta) {
    runtime::gemm<float>(a, b, c, alpha, beta, nullptr, Activation::identity, 0.0f);
}
void gemm(MatrixRef<const double> a, MatrixRef<const double> b, MatrixRef<double> c, double alpha,
          double beta) {
    runtime::gemm<double>(a, b, c, alpha, beta, nullptr, Activation::identity, 0.0);
}

}  // namespace gradcore
