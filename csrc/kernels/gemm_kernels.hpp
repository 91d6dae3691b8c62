// The BLIS-style GEMM pieces for one SIMD struct S: packing of A and B into
// micro-panels and one register-blocked micro-kernel with a fused write-back
// (alpha, beta, bias, activation). The blocking loops and threads live in
// csrc/runtime/gemm/; the panels are the contract between the two:
//
//   packed A: for each panel of MR rows, kc steps of MR values  (a[p][k][r])
//   packed B: for each panel of NR cols, kc steps of NR values  (b[q][k][j])
//
// Both are zero-padded to whole panels. A short last panel of rows has a micro-kernel
// of its own height (instantiated for every height up to MR); a short last panel of
// columns is computed into a scratch tile of MR x NR by the runtime. With few rows the
// runtime may skip packing: the micro-kernel then reads A's rows and B's rows in place
// (see micro()). Few rows times a transposed B are computed transposed, by micro_tc,
// which stores its tile through the register transposes.
#pragma once

#include <cstdint>
#include <cstring>

#include "activations.hpp"
#include "lanes.hpp"
#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

// Register tile: MR rows x NR columns, NR a multiple of the vector width. With 16
// vector registers (AVX2, NEON) 6 x 2 vectors of accumulators leave room for the B row
// and the broadcast; AVX-512 has 32 registers and uses 8 x 2 (wider tiles
// also halve the B traffic per FMA); scalar uses 4 x 4.
template <class S, class T>
struct GemmShape {
    static constexpr int kLanes = S::template kLanes<T>;
    static constexpr int kNVec = kLanes == 1 ? 4 : 2;
    static constexpr int kMR = kLanes == 1 ? 4 : (kLanes * static_cast<int>(sizeof(T)) == 64 ? 8 : 6);
    static constexpr int kNR = kNVec * kLanes;
};

template <class S, class T>
struct GemmKernels {
    using V = typename S::template V<T>;
    static constexpr int kLanes = GemmShape<S, T>::kLanes;
    static constexpr int kNVec = GemmShape<S, T>::kNVec;
    static constexpr int MR = GemmShape<S, T>::kMR;
    static constexpr int NR = GemmShape<S, T>::kNR;

    // a(i, k) = a[i * rs + k * cs], rows [0, mc), columns [0, kc). dst must have room
    // for kPackASlack values past the round_up(mc, MR) * kc of the panels.
    static void pack_a(const T* a, std::int64_t rs, std::int64_t cs, std::int64_t mc,
                       std::int64_t kc, T* dst) {
        if (rs == 1 && cs != 1) {
            pack_a_transposed(a, cs, mc, kc, dst);
            return;
        }
        for (std::int64_t i0 = 0; i0 < mc; i0 += MR) {
            const int rows = static_cast<int>(mc - i0 < MR ? mc - i0 : MR);
            const T* src = a + i0 * rs;
            std::int64_t k = 0;
            if constexpr (S::kHasTranspose && MR <= 8) {
                // Row-major A: kLanes steps of the panel's rows at a time, through registers.
                if (cs == 1) {
                    for (; k + kLanes <= kc; k += kLanes) S::transpose_rows(src + k, rs, rows, dst + k * MR, MR);
                }
            }
            for (; k < kc; ++k) {
                int r = 0;
                for (; r < rows; ++r) dst[k * MR + r] = src[r * rs + k * cs];
                for (; r < MR; ++r) dst[k * MR + r] = T(0);
            }
            dst += kc * MR;
        }
    }

    // A stored transposed (a(i, k) = a[k * cs + i], the dG^T of a weight gradient):
    // each step's MR values are contiguous, but the steps are cs apart, often a power
    // of two, so that panel by panel every source line would be fetched again for each
    // of the panels it holds a piece of. Sixteen steps at a time are copied into all
    // panels instead: their lines stay in L1 while every panel takes its piece.
    static void pack_a_transposed(const T* a, std::int64_t cs, std::int64_t mc, std::int64_t kc, T* dst) {
        constexpr std::int64_t kSteps = 16;
        const std::int64_t n_panels = (mc + MR - 1) / MR;
        for (std::int64_t k0 = 0; k0 < kc; k0 += kSteps) {
            const std::int64_t k1 = kc - k0 < kSteps ? kc : k0 + kSteps;
            for (std::int64_t p = 0; p < n_panels; ++p) {
                const std::int64_t rows = mc - p * MR < MR ? mc - p * MR : MR;
                T* d = dst + p * kc * MR;
                if (rows == MR) {  // (a copy of a constant size: a few vector moves)
                    for (std::int64_t k = k0; k < k1; ++k) std::memcpy(d + k * MR, a + k * cs + p * MR, sizeof(T) * MR);
                    continue;
                }
                for (std::int64_t k = k0; k < k1; ++k) {
                    const T* src = a + k * cs + p * MR;
                    int r = 0;
                    for (; r < rows; ++r) d[k * MR + r] = src[r];
                    for (; r < MR; ++r) d[k * MR + r] = T(0);
                }
            }
        }
    }

    // b(k, j) = b[k * rs + j * cs], rows [0, kc), columns [0, nc).
    static void pack_b(const T* b, std::int64_t rs, std::int64_t cs, std::int64_t kc,
                       std::int64_t nc, T* dst) {
        for (std::int64_t j0 = 0; j0 < nc; j0 += NR) {
            const std::int64_t cols = nc - j0 < NR ? nc - j0 : NR;
            if (cs == 1 && cols == NR) {
                for (std::int64_t k = 0; k < kc; ++k) {
                    const T* src = b + k * rs + j0;
                    for (int v = 0; v < kNVec; ++v) S::store(dst + k * NR + v * kLanes, S::load(src + v * kLanes));
                }
            } else if (rs == 1 && cols == NR) {
                // Transposed B (columns contiguous): square blocks through registers.
                std::int64_t k = 0;
                if constexpr (S::kHasTranspose) {
                    for (; k + kLanes <= kc; k += kLanes) {
                        for (int g = 0; g < NR; g += kLanes) {
                            S::transpose_block(b + (j0 + g) * cs + k, cs, dst + k * NR + g, NR);
                        }
                    }
                }
                for (int j = 0; j < NR; ++j) {
                    const T* src = b + (j0 + j) * cs;
                    for (std::int64_t kk = k; kk < kc; ++kk) dst[kk * NR + j] = src[kk];
                }
            } else if (cs == 1) {  // the last, partial panel of a row-major B: zero-padded
                using Lane = Lanes<S, T>;
                for (std::int64_t k = 0; k < kc; ++k) {
                    const T* src = b + k * rs + j0;
                    for (int v = 0; v < kNVec; ++v) {
                        S::store(dst + k * NR + v * kLanes, Lane::load(src + v * kLanes, Lane::count(cols, v)));
                    }
                }
            } else {
                for (std::int64_t k = 0; k < kc; ++k) {
                    int j = 0;
                    for (; j < cols; ++j) dst[k * NR + j] = b[k * rs + (j0 + j) * cs];
                    for (; j < NR; ++j) dst[k * NR + j] = T(0);
                }
            }
            dst += kc * NR;
        }
    }

    // C[rows x NR] (row stride ldc) = act(alpha * A_panel B_panel + beta * C + bias),
    // rows <= MR (a short last panel of rows computes only its rows).
    // A: a packed panel (lda == 0: MR values per step, also for a short panel), or, with
    // lda > 0, the rows of a row-major A read in place, lda apart (few rows, where
    // packing A costs more than it saves; each thread would pack all of it).
    // beta == 0 never reads C (it may hold garbage or NaN, as BLAS allows).
    // B's rows of NR values are ldb apart: NR for a packed panel, or the row stride of
    // an unpacked, row-major B (few rows again). When b_copy is not null (full panels
    // only) the B rows read are also stored there as a packed panel, so the next row
    // panels reuse B from L1: read in place, B's rows may be a power of two apart and
    // then share a few L1 sets, and the panel would come from L2 every time.
    static void micro(std::int64_t kc, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T* c,
                      std::int64_t ldc, T alpha, T beta, const Epilogue<T>* ep, T* b_copy, int rows) {
        if (lda) {
            micro_a<true>(kc, a, lda, b, ldb, c, ldc, alpha, beta, ep, b_copy, rows);
        } else {
            micro_a<false>(kc, a, lda, b, ldb, c, ldc, alpha, beta, ep, b_copy, rows);
        }
    }

    template <bool kDirectA>
    static void micro_a(std::int64_t kc, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T* c,
                        std::int64_t ldc, T alpha, T beta, const Epilogue<T>* ep, T* b_copy, int rows) {
        if (rows == MR && b_copy) {
            micro_impl<kDirectA, true, MR>(kc, a, lda, b, ldb, c, ldc, alpha, beta, ep, b_copy);
        } else {
            micro_rows<kDirectA, MR>(rows, kc, a, lda, b, ldb, c, ldc, alpha, beta, ep);
        }
    }

    template <bool kDirectA, int R>
    static void micro_rows(int rows, std::int64_t kc, const T* a, std::int64_t lda, const T* b, std::int64_t ldb,
                           T* c, std::int64_t ldc, T alpha, T beta, const Epilogue<T>* ep) {
        if constexpr (R >= 1) {
            if (rows == R) {
                return micro_impl<kDirectA, false, R>(kc, a, lda, b, ldb, c, ldc, alpha, beta, ep, nullptr);
            }
            micro_rows<kDirectA, R - 1>(rows, kc, a, lda, b, ldb, c, ldc, alpha, beta, ep);
        }
    }

    // acc[r][v] = sum over kc steps of A_panel[r][k] * B_panel[k][v lanes] (see micro()).
    template <bool kDirectA, bool kCopyB, int R>
    [[gnu::always_inline]] static void accumulate(std::int64_t kc, const T* a, std::int64_t lda, const T* b,
                                                  std::int64_t ldb, T* b_copy, V (&acc)[R][kNVec]) {
        for (int r = 0; r < R; ++r)
            for (int v = 0; v < kNVec; ++v) acc[r][v] = S::set1(T(0));
#pragma GCC unroll 4
        for (std::int64_t k = 0; k < kc; ++k) {
            V bv[kNVec];
            for (int v = 0; v < kNVec; ++v) bv[v] = S::load(b + v * kLanes);
            if constexpr (kCopyB) {
                for (int v = 0; v < kNVec; ++v) S::store(b_copy + v * kLanes, bv[v]);
                b_copy += NR;
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
                const V av = S::set1(kDirectA ? a[r * lda] : a[r]);
#pragma GCC unroll 4
                for (int v = 0; v < kNVec; ++v) acc[r][v] = S::fma(av, bv[v], acc[r][v]);
            }
            a += kDirectA ? 1 : MR;
            b += ldb;
        }
    }

    template <bool kDirectA, bool kCopyB, int R>
    static void micro_impl(std::int64_t kc, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T* c,
                           std::int64_t ldc, T alpha, T beta, const Epilogue<T>* ep, T* b_copy) {
        // The C tile is touched only after the k loop; fetching it now hides the misses
        // (from the second k block on, C is read as well as written).
        for (int r = 0; r < R; ++r) {
            __builtin_prefetch(c + r * ldc, 1);
            __builtin_prefetch(c + r * ldc + NR - 1, 1);
        }
        V acc[R][kNVec];
        accumulate<kDirectA, kCopyB, R>(kc, a, lda, b, ldb, b_copy, acc);
        const V va = S::set1(alpha);
        const V vb = S::set1(beta);
        for (int r = 0; r < R; ++r) {
            T* row = c + r * ldc;
            for (int v = 0; v < kNVec; ++v) {
                V x = alpha == T(1) ? acc[r][v] : S::mul(acc[r][v], va);
                if (beta != T(0)) x = S::fma(vb, S::load(row + v * kLanes), x);
                if (ep) {
                    if (ep->bias) x = S::add(x, S::load(ep->bias + v * kLanes));
                    x = Activations<S, T>::epilogue(x, ep->act, S::set1(ep->slope));
                }
                S::store(row + v * kLanes, x);
            }
        }
    }

    // Whether micro_tc exists for this target: its full tiles are stored through the
    // register transposes, which write rows of exactly MR = 8 values.
    static constexpr bool kHasTransposedStore = S::kHasTranspose && MR == 8;

    // The transposed tile of a product computed as C^T = B^T A^T: for r < rows (<= MR)
    // and i < cols (<= NR), c[i * ldc + r] = act(alpha * sum_k a[r * lda + k] b[k][i] +
    // bias[r]); A's rows are read in place (unit step), b is a packed panel, C is not
    // read (beta = 0), ep->bias holds one value per row r. This is x W^T with few rows
    // of x, computed as W x^T: the weight is read as it lies, and only the small x is
    // transposed (once, for every tile), instead of every panel of W.
    static void micro_tc(std::int64_t kc, const T* a, std::int64_t lda, const T* b, T* c, std::int64_t ldc,
                         T alpha, const Epilogue<T>* ep, int rows, int cols) {
        micro_tc_rows<MR>(rows, cols, kc, a, lda, b, c, ldc, alpha, ep);
    }

    template <int R>
    static void micro_tc_rows(int rows, int cols, std::int64_t kc, const T* a, std::int64_t lda, const T* b,
                              T* c, std::int64_t ldc, T alpha, const Epilogue<T>* ep) {
        if constexpr (R >= 1) {
            if (rows != R) return micro_tc_rows<R - 1>(rows, cols, kc, a, lda, b, c, ldc, alpha, ep);
            V acc[R][kNVec];
            accumulate<true, false, R>(kc, a, lda, b, NR, nullptr, acc);
            alignas(64) T tile[MR * NR];  // tile[r * NR + i] = C[i][r]
            for (int r = 0; r < R; ++r) {
                const V bias = S::set1(ep && ep->bias ? ep->bias[r] : T(0));
                for (int v = 0; v < kNVec; ++v) {
                    V x = alpha == T(1) ? acc[r][v] : S::mul(acc[r][v], S::set1(alpha));
                    if (ep) x = Activations<S, T>::epilogue(S::add(x, bias), ep->act, S::set1(ep->slope));
                    S::store(tile + r * NR + v * kLanes, x);
                }
            }
            if constexpr (kHasTransposedStore && R == MR) {
                if (cols == NR) {
                    for (int v = 0; v < kNVec; ++v) {
                        S::transpose_rows(tile + v * kLanes, NR, MR, c + v * kLanes * ldc, ldc);
                    }
                    return;
                }
            }
            for (int i = 0; i < cols; ++i)
                for (int r = 0; r < R; ++r) c[i * ldc + r] = tile[r * NR + i];
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
