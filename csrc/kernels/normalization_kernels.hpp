// The normalisation layers (layer norm, batch norm) over one block of a C-contiguous
// array, generic over the SIMD struct S and T (float, double).
//
// Everything is computed in float64 lanes (S::load2_f64): the statistics, the
// normalised values and the gradients, each rounded once to T when stored. A float32
// batch whose mean is large against its spread keeps its variance: the deviations are
// formed in float64 from the exact values.
//
// The runtime (runtime/normalization.cpp) cuts the work into blocks whose split depends
// on the shapes only and combines the blocks' partial results in order, so results are
// the same for every thread count.
#pragma once

#include <cmath>
#include <cstdint>

#include "lanes.hpp"
#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct NormalizationKernels {
    using Vd = typename S::Vd;
    using Wide = WideLanes<S, T>;
    using D = Lanes<S, double>;
    static constexpr std::int64_t L = Wide::L;  // elements per pair of float64 vectors
    static constexpr std::int64_t H = S::kLanesD;

    // ---- pairs of float64 vectors from float64 arrays (coefficients, accumulators) ----
    static void load_pair(const double* p, std::int64_t c, Vd& lo, Vd& hi) {
        lo = D::load(p, c < H ? c : H);
        hi = D::load(p + H, c > H ? c - H : 0);
    }
    static void store_pair(double* p, Vd lo, Vd hi, std::int64_t c) {
        D::store(p, lo, c < H ? c : H);
        D::store(p + H, hi, c > H ? c - H : 0);
    }
    static std::int64_t step(std::int64_t n, std::int64_t j) { return n - j < L ? n - j : L; }

    // A coefficient of the element-wise passes: one value for the whole run, or one per
    // column (a float64 array).
    struct Same {
        Vd v;
        void at(std::int64_t, std::int64_t, Vd& lo, Vd& hi) const { lo = hi = v; }
    };
    struct PerColumn {
        const double* p;
        void at(std::int64_t j, std::int64_t c, Vd& lo, Vd& hi) const { load_pair(p + j, c, lo, hi); }
    };

    // ---- statistics -----------------------------------------------------------------

    // Mean and sum of squared deviations of x[0, n) (n > 0) in two passes: the run is
    // in cache for the second, and deviations from the exact mean lose nothing to
    // cancellation.
    static Moments moments(const T* x, std::int64_t n) {
        const double mean = Wide::reduce(
                                x, n, [](Vd v, Vd a) { return S::add(a, v); }, [](double v) { return v; }) /
                            static_cast<double>(n);
        const Vd m = S::set1_d(mean);
        const double m2 = Wide::reduce(
            x, n,
            [m](Vd v, Vd a) {
                const Vd d = S::sub(v, m);
                return S::fma(d, d, a);
            },
            [mean](double v) { return (v - mean) * (v - mean); });
        return {mean, m2};
    }

    // Column reductions over a block of rows x cols: term(r, j, c, lo, hi) adds row r's
    // contribution at columns [j, j + c) into the K accumulator pairs lo[k], hi[k]
    // (zero-padded lanes past c must add nothing). Four rows per sweep, each read as
    // its own stream, so the float64 accumulators acc[k][0, cols) are read and written
    // once per four rows; rows are added in order.
    template <int K, class F>
    static void column_sweeps(std::int64_t rows, std::int64_t cols, double* const (&acc)[K], F&& term) {
        constexpr std::int64_t kRowsPerSweep = 4;
        for (std::int64_t r0 = 0; r0 < rows; r0 += kRowsPerSweep) {
            const std::int64_t r1 = rows - r0 < kRowsPerSweep ? rows : r0 + kRowsPerSweep;
            for (std::int64_t j = 0; j < cols; j += L) {
                const std::int64_t c = step(cols, j);
                Vd lo[K], hi[K];
                for (int k = 0; k < K; ++k) load_pair(acc[k] + j, c, lo[k], hi[k]);
                for (std::int64_t r = r0; r < r1; ++r) term(r, j, c, lo, hi);
                for (int k = 0; k < K; ++k) store_pair(acc[k] + j, lo[k], hi[k], c);
            }
        }
    }

    // Per column of a block of rows x cols (rows > 0): mean[j] and m2[j], from sums of
    // the deviations from the block's first row (one pass; the shift is a sample of the
    // column, so the cancellation in m2 = q - s^2 / rows stays small).
    static void column_moments(const T* x, std::int64_t rows, std::int64_t cols, double* mean, double* m2) {
        for (std::int64_t j = 0; j < cols; ++j) mean[j] = m2[j] = 0.0;
        double* const acc[2] = {mean, m2};
        column_sweeps<2>(rows, cols, acc, [&](std::int64_t r, std::int64_t j, std::int64_t c, Vd* lo, Vd* hi) {
            Vd s0, s1, v0, v1;
            Wide::load(x + j, c, s0, s1);
            Wide::load(x + r * cols + j, c, v0, v1);
            v0 = S::sub(v0, s0), v1 = S::sub(v1, s1);
            lo[0] = S::add(lo[0], v0), hi[0] = S::add(hi[0], v1);
            lo[1] = S::fma(v0, v0, lo[1]), hi[1] = S::fma(v1, v1, hi[1]);
        });
        const double inv = 1.0 / static_cast<double>(rows);
        for (std::int64_t j = 0; j < cols; ++j) {
            const double s = mean[j];
            mean[j] = static_cast<double>(x[j]) + s * inv;
            m2[j] -= s * s * inv;
            if (m2[j] < 0.0) m2[j] = 0.0;  // rounding, for columns of equal values
        }
    }

    // sum_dy[j] += sum_r dy[r, j]; sum_dy_xc[j] += sum_r dy[r, j] (x[r, j] - mean[j]).
    static void column_grad_sums(const T* dy, const T* x, std::int64_t rows, std::int64_t cols, const double* mean,
                                 double* sum_dy, double* sum_dy_xc) {
        double* const acc[2] = {sum_dy, sum_dy_xc};
        column_sweeps<2>(rows, cols, acc, [&](std::int64_t r, std::int64_t j, std::int64_t c, Vd* lo, Vd* hi) {
            Vd g0, g1, v0, v1, m0, m1;
            Wide::load(dy + r * cols + j, c, g0, g1);
            Wide::load(x + r * cols + j, c, v0, v1);
            load_pair(mean + j, c, m0, m1);
            lo[0] = S::add(lo[0], g0), hi[0] = S::add(hi[0], g1);
            lo[1] = S::fma(g0, S::sub(v0, m0), lo[1]), hi[1] = S::fma(g1, S::sub(v1, m1), hi[1]);
        });
    }

    // {sum dy, sum dy (x - mean)} over one run of n elements.
    static GradSums run_grad_sums(const T* dy, const T* x, std::int64_t n, double mean) {
        const Vd m = S::set1_d(mean);
        Vd s0 = S::zero_d(), s1 = S::zero_d(), q0 = S::zero_d(), q1 = S::zero_d();
        for (std::int64_t j = 0; j < n; j += L) {  // zero-padded dy adds nothing
            const std::int64_t c = step(n, j);
            Vd g0, g1, v0, v1;
            Wide::load(dy + j, c, g0, g1);
            Wide::load(x + j, c, v0, v1);
            s0 = S::add(s0, g0), s1 = S::add(s1, g1);
            q0 = S::fma(g0, S::sub(v0, m), q0), q1 = S::fma(g1, S::sub(v1, m), q1);
        }
        return {S::reduce_add(S::add(s0, s1)), S::reduce_add(S::add(q0, q1))};
    }

    // ---- element-wise passes --------------------------------------------------------

    // out[j] = cu u[j] + cx (x[j] - m) + c0 over one run of n elements; u null: no u term.
    // Batch norm's forward (u null) and backward (u = dy) in one form.
    template <class C>
    static void affine(const T* u, const T* x, std::int64_t n, const C& m, const C& cu, const C& cx, const C& c0,
                       T* out) {
        for (std::int64_t j = 0; j < n; j += L) {
            const std::int64_t c = step(n, j);
            Vd x0, x1, m0, m1, a0, a1, b0, b1;
            prefetch_ahead(x + j, L * std::int64_t{sizeof(T)});
            Wide::load(x + j, c, x0, x1);
            m.at(j, c, m0, m1);
            cx.at(j, c, a0, a1);
            c0.at(j, c, b0, b1);
            Vd r0 = S::fma(S::sub(x0, m0), a0, b0), r1 = S::fma(S::sub(x1, m1), a1, b1);
            if (u) {
                Vd u0, u1;
                prefetch_ahead(u + j, L * std::int64_t{sizeof(T)});
                Wide::load(u + j, c, u0, u1);
                cu.at(j, c, a0, a1);
                r0 = S::fma(u0, a0, r0), r1 = S::fma(u1, a1, r1);
            }
            Wide::store(out + j, r0, r1, c);
        }
    }
    static void affine_run(const T* u, const T* x, std::int64_t n, double m, double cu, double cx, double c0,
                           T* out) {
        affine(u, x, n, Same{S::set1_d(m)}, Same{S::set1_d(cu)}, Same{S::set1_d(cx)}, Same{S::set1_d(c0)}, out);
    }
    // The same per column (coefficients of cols entries) over a block of rows x cols.
    static void affine_rows(const T* u, const T* x, std::int64_t rows, std::int64_t cols, const double* m,
                            const double* cu, const double* cx, const double* c0, T* out) {
        for (std::int64_t r = 0; r < rows; ++r) {
            affine(u ? u + r * cols : nullptr, x + r * cols, cols, PerColumn{m}, PerColumn{cu}, PerColumn{cx},
                   PerColumn{c0}, out + r * cols);
        }
    }

    // ---- layer norm -----------------------------------------------------------------

    // Each row of a block of rows x cols: mean and rstd = 1 / sqrt(var + eps) (var the
    // biased variance), y = (x - mean) rstd gamma + beta (gamma, beta: cols, or null).
    static void layer_norm_rows(const T* x, std::int64_t rows, std::int64_t cols, const T* gamma, const T* beta,
                                double eps, T* y, double* mean, double* rstd) {
        for (std::int64_t r = 0; r < rows; ++r) {
            const T* xr = x + r * cols;
            const Moments mo = moments(xr, cols);
            const double rs = 1.0 / std::sqrt(mo.m2 / static_cast<double>(cols) + eps);
            mean[r] = mo.mean;
            rstd[r] = rs;
            const Vd m = S::set1_d(mo.mean), vr = S::set1_d(rs);
            T* yr = y + r * cols;
            for (std::int64_t j = 0; j < cols; j += L) {
                const std::int64_t c = step(cols, j);
                Vd a0, a1;
                Wide::load(xr + j, c, a0, a1);
                a0 = S::mul(S::sub(a0, m), vr), a1 = S::mul(S::sub(a1, m), vr);
                if (gamma) {
                    Vd g0, g1;
                    Wide::load(gamma + j, c, g0, g1);
                    a0 = S::mul(a0, g0), a1 = S::mul(a1, g1);
                }
                if (beta) {
                    Vd b0, b1;
                    Wide::load(beta + j, c, b0, b1);
                    a0 = S::add(a0, b0), a1 = S::add(a1, b1);
                }
                Wide::store(yr + j, a0, a1, c);
            }
        }
    }

    // Each row: g = dy gamma, xhat = (x - mean) rstd, n = cols;
    // dx = rstd (g - sum(g) / n - xhat sum(g xhat) / n) unless dx is null, and
    // dgamma[j] += dy xhat, dbeta[j] += dy (float64 accumulators, or null).
    static void layer_norm_backward_rows(const T* dy, const T* x, std::int64_t rows, std::int64_t cols,
                                         const T* gamma, const double* mean, const double* rstd, T* dx,
                                         double* dgamma, double* dbeta) {
        const double inv_n = 1.0 / static_cast<double>(cols);
        for (std::int64_t r = 0; r < rows; ++r) {
            const T *dyr = dy + r * cols, *xr = x + r * cols;
            const Vd m = S::set1_d(mean[r]), vr = S::set1_d(rstd[r]);
            Vd s0 = S::zero_d(), s1 = S::zero_d(), q0 = S::zero_d(), q1 = S::zero_d();
            // One pass for the row's two sums and the parameters' sums; zero-padded dy
            // lanes add nothing to any of them.
            for (std::int64_t j = 0; j < cols; j += L) {
                const std::int64_t c = step(cols, j);
                Vd d0, d1, h0, h1;
                Wide::load(dyr + j, c, d0, d1);
                Wide::load(xr + j, c, h0, h1);
                h0 = S::mul(S::sub(h0, m), vr), h1 = S::mul(S::sub(h1, m), vr);
                if (dgamma) {
                    Vd a0, a1;
                    load_pair(dgamma + j, c, a0, a1);
                    store_pair(dgamma + j, S::fma(d0, h0, a0), S::fma(d1, h1, a1), c);
                }
                if (dbeta) {
                    Vd a0, a1;
                    load_pair(dbeta + j, c, a0, a1);
                    store_pair(dbeta + j, S::add(d0, a0), S::add(d1, a1), c);
                }
                if (!dx) continue;
                if (gamma) {
                    Vd g0, g1;
                    Wide::load(gamma + j, c, g0, g1);
                    d0 = S::mul(d0, g0), d1 = S::mul(d1, g1);
                }
                s0 = S::add(s0, d0), s1 = S::add(s1, d1);
                q0 = S::fma(d0, h0, q0), q1 = S::fma(d1, h1, q1);
            }
            if (!dx) continue;
            // dx = rstd g - rstd sum(g) / n - (x - mean) rstd^2 sum(g xhat) / n
            const double rs = rstd[r];
            const Vd k0 = S::set1_d(-rs * S::reduce_add(S::add(s0, s1)) * inv_n);
            const Vd k1 = S::set1_d(-rs * rs * S::reduce_add(S::add(q0, q1)) * inv_n);
            T* dxr = dx + r * cols;
            for (std::int64_t j = 0; j < cols; j += L) {
                const std::int64_t c = step(cols, j);
                Vd d0, d1, h0, h1;
                Wide::load(dyr + j, c, d0, d1);
                Wide::load(xr + j, c, h0, h1);
                if (gamma) {
                    Vd g0, g1;
                    Wide::load(gamma + j, c, g0, g1);
                    d0 = S::mul(d0, g0), d1 = S::mul(d1, g1);
                }
                const Vd a0 = S::fma(S::sub(h0, m), k1, k0), a1 = S::fma(S::sub(h1, m), k1, k0);
                Wide::store(dxr + j, S::fma(d0, vr, a0), S::fma(d1, vr, a1), c);
            }
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
