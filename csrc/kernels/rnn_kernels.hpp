// The fused element-wise "post-GEMM" kernels of the recurrent cells (oneDNN's
// structure): one pass per time step over the gate pre-activations computes the
// activations, the state update and, backwards, the gate gradients. Rows of B, columns
// of H in vectors, with a zero-padded partial vector at the end of each row.
#pragma once

#include <cstdint>

#include "lanes.hpp"
#include "target.hpp"
#include "vector_math.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct RnnKernels {
    using V = typename S::template V<T>;
    using M = VectorMath<S, T>;
    static constexpr std::int64_t L = S::template kLanes<T>;

    static V load(const T* p, std::int64_t n) { return Lanes<S, T>::load(p, n); }
    static void store(T* p, V v, std::int64_t n) { Lanes<S, T>::store(p, v, n); }
    static V one() { return S::set1(T(1)); }
    // d sigma / d a from sigma, d tanh / d a from tanh
    static V dsigmoid(V s) { return S::mul(s, S::sub(one(), s)); }
    static V dtanh(V t) { return S::sub(one(), S::mul(t, t)); }

    // gates (B, 4H): pre-activations (gx + gh + biases) in, i f g o out;
    // c = f c_prev + i g; h = o tanh(c).
    static void lstm_forward(std::int64_t batch, std::int64_t hidden, T* gates, const T* c_prev, T* c, T* h) {
        for (std::int64_t b = 0; b < batch; ++b) {
            T* g = gates + b * 4 * hidden;
            for (std::int64_t j = 0; j < hidden; j += L) {
                const std::int64_t n = hidden - j < L ? hidden - j : L;
                const V i = M::sigmoid(load(g + j, n));
                const V f = M::sigmoid(load(g + hidden + j, n));
                const V gg = M::tanh(load(g + 2 * hidden + j, n));
                const V o = M::sigmoid(load(g + 3 * hidden + j, n));
                const V cn = S::fma(f, load(c_prev + b * hidden + j, n), S::mul(i, gg));
                store(g + j, i, n), store(g + hidden + j, f, n), store(g + 2 * hidden + j, gg, n);
                store(g + 3 * hidden + j, o, n);
                store(c + b * hidden + j, cn, n);
                store(h + b * hidden + j, S::mul(o, M::tanh(cn)), n);
            }
        }
    }

    // dh: dL/dh_t (B, H); dc: in dL/dc_t from step t+1, out dL/dc_{t-1}; dg (B, 4H) out.
    static void lstm_backward(std::int64_t batch, std::int64_t hidden, const T* gates, const T* c_prev,
                              const T* c, const T* dh, T* dc, T* dg) {
        for (std::int64_t b = 0; b < batch; ++b) {
            const T* g = gates + b * 4 * hidden;
            T* d = dg + b * 4 * hidden;
            for (std::int64_t j = 0; j < hidden; j += L) {
                const std::int64_t n = hidden - j < L ? hidden - j : L;
                const std::int64_t r = b * hidden + j;
                const V i = load(g + j, n), f = load(g + hidden + j, n);
                const V gg = load(g + 2 * hidden + j, n), o = load(g + 3 * hidden + j, n);
                const V tc = M::tanh(load(c + r, n));
                const V dhv = load(dh + r, n);
                const V dct = S::fma(S::mul(dhv, o), dtanh(tc), load(dc + r, n));
                store(d + j, S::mul(S::mul(dct, gg), dsigmoid(i)), n);
                store(d + hidden + j, S::mul(S::mul(dct, load(c_prev + r, n)), dsigmoid(f)), n);
                store(d + 2 * hidden + j, S::mul(S::mul(dct, i), dtanh(gg)), n);
                store(d + 3 * hidden + j, S::mul(S::mul(dhv, tc), dsigmoid(o)), n);
                store(dc + r, S::mul(dct, f), n);
            }
        }
    }

    // gates (B, 3H): gx (+ b_ih) in, r z n out; gh (B, 3H) = W_hh h_prev + b_hh.
    // n = tanh(gx_n + r * gh_n); h = (1 - z) n + z h_prev.
    static void gru_forward(std::int64_t batch, std::int64_t hidden, T* gates, const T* gh, const T* h_prev,
                            T* gh_n, T* h) {
        for (std::int64_t b = 0; b < batch; ++b) {
            T* g = gates + b * 3 * hidden;
            const T* q = gh + b * 3 * hidden;
            for (std::int64_t j = 0; j < hidden; j += L) {
                const std::int64_t n = hidden - j < L ? hidden - j : L;
                const std::int64_t r = b * hidden + j;
                const V rv = M::sigmoid(S::add(load(g + j, n), load(q + j, n)));
                const V zv = M::sigmoid(S::add(load(g + hidden + j, n), load(q + hidden + j, n)));
                const V hn = load(q + 2 * hidden + j, n);
                const V nv = M::tanh(S::fma(rv, hn, load(g + 2 * hidden + j, n)));
                const V hp = load(h_prev + r, n);
                store(g + j, rv, n), store(g + hidden + j, zv, n), store(g + 2 * hidden + j, nv, n);
                store(gh_n + r, hn, n);
                store(h + r, S::fma(zv, S::sub(hp, nv), nv), n);
            }
        }
    }

    // dgx (B, 3H) for W_ih, b_ih and x; dgh (B, 3H) for W_hh and b_hh;
    // dh_prev_direct = z * dh (the path that does not go through W_hh).
    static void gru_backward(std::int64_t batch, std::int64_t hidden, const T* gates, const T* gh_n,
                             const T* h_prev, const T* dh, T* dgx, T* dgh, T* dh_prev_direct) {
        for (std::int64_t b = 0; b < batch; ++b) {
            const T* g = gates + b * 3 * hidden;
            T* dx = dgx + b * 3 * hidden;
            T* dq = dgh + b * 3 * hidden;
            for (std::int64_t j = 0; j < hidden; j += L) {
                const std::int64_t n = hidden - j < L ? hidden - j : L;
                const std::int64_t r = b * hidden + j;
                const V rv = load(g + j, n), zv = load(g + hidden + j, n), nv = load(g + 2 * hidden + j, n);
                const V dhv = load(dh + r, n);
                const V dan = S::mul(S::mul(dhv, S::sub(one(), zv)), dtanh(nv));
                const V dar = S::mul(S::mul(dan, load(gh_n + r, n)), dsigmoid(rv));
                const V daz = S::mul(S::mul(dhv, S::sub(load(h_prev + r, n), nv)), dsigmoid(zv));
                store(dx + j, dar, n), store(dx + hidden + j, daz, n), store(dx + 2 * hidden + j, dan, n);
                store(dq + j, dar, n), store(dq + hidden + j, daz, n);
                store(dq + 2 * hidden + j, S::mul(dan, rv), n);
                store(dh_prev_direct + r, S::mul(zv, dhv), n);
            }
        }
    }

    // dg = dh * act'(h) for the plain (Elman) RNN cells, from h = act(a).
    static void elman_backward(std::int64_t count, const T* h, const T* dh, T* dg, bool relu) {
        const V zero = S::set1(T(0));
        for (std::int64_t j = 0; j < count; j += L) {
            const std::int64_t n = count - j < L ? count - j : L;
            const V hv = load(h + j, n), dhv = load(dh + j, n);
            store(dg + j, relu ? S::where_positive(hv, dhv, zero) : S::mul(dhv, dtanh(hv)), n);
        }
    }

    // dh = dh_next + gy, returns sum(dh^2) (in double, before clipping), then clamps dh
    // to [-clip, clip] when clip > 0.
    static double gather_hidden_grad(std::int64_t count, const T* gy, T* dh, T clip) {
        double sum = 0.0;
        for (std::int64_t i = 0; i < count; ++i) {
            const T v = dh[i] + gy[i];
            sum += static_cast<double>(v) * static_cast<double>(v);
            dh[i] = clip > T(0) ? (v < -clip ? -clip : (v > clip ? clip : v)) : v;
        }
        return sum;
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
