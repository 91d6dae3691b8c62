// Fused optimiser updates: one pass over parameter, gradient and state per step, the
// gradient's clipping factor applied on the fly (no separate scaling pass).
#pragma once

#include <cmath>
#include <cstdint>

#include "lanes.hpp"
#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct OptimKernels {
    using V = typename S::template V<T>;

    using Lane = Lanes<S, T>;
    static V load(const T* p, std::int64_t n) { return Lane::load(p, n); }
    static void store(T* p, V v, std::int64_t n) { Lane::store(p, v, n); }

    // torch.optim.SGD: g = s*g + wd*p; buf = g (first step) or mu*buf + (1-damp)*g;
    // d = g + mu*buf (nesterov) or buf; p -= lr*d. buf may be null when momentum == 0.
    static void sgd(T* p, const T* g, T* buf, std::int64_t n, const SgdParams& a) {
        const V lr = S::set1(T(a.lr)), mu = S::set1(T(a.momentum)), wd = S::set1(T(a.weight_decay));
        const V keep = S::set1(T(1 - a.dampening)), scale = S::set1(T(a.grad_scale));
        Lane::for_each(n, [&](std::int64_t i, std::int64_t c) {
            const V pv = load(p + i, c);
            V gv = S::fma(wd, pv, S::mul(scale, load(g + i, c)));
            if (a.momentum != 0.0) {
                const V b = a.first_step ? gv : S::fma(mu, load(buf + i, c), S::mul(keep, gv));
                store(buf + i, b, c);
                gv = a.nesterov ? S::fma(mu, b, gv) : b;
            }
            store(p + i, S::sub(pv, S::mul(lr, gv)), c);
        });
    }

    // torch.optim.Adam / AdamW (no amsgrad).
    static void adam(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamParams& a) {
        const V b1 = S::set1(T(a.beta1)), b2 = S::set1(T(a.beta2));
        const V c1 = S::set1(T(1 - a.beta1)), c2 = S::set1(T(1 - a.beta2));
        const V scale = S::set1(T(a.grad_scale)), wd = S::set1(T(a.weight_decay));
        const V step = S::set1(T(a.lr / a.bias_correction1));
        const V inv_sqrt_bc2 = S::set1(T(1.0 / std::sqrt(a.bias_correction2)));
        const V eps = S::set1(T(a.eps));
        const V decay = S::set1(T(1 - a.lr * a.weight_decay));
        Lane::for_each(n, [&](std::int64_t i, std::int64_t c) {
            V pv = load(p + i, c);
            V gv = S::mul(scale, load(g + i, c));
            if (a.decoupled) {
                pv = S::mul(pv, decay);
            } else {
                gv = S::fma(wd, pv, gv);
            }
            const V mv = S::fma(b1, load(m + i, c), S::mul(c1, gv));
            const V vv = S::fma(b2, load(v + i, c), S::mul(c2, S::mul(gv, gv)));
            store(m + i, mv, c);
            store(v + i, vv, c);
            const V denom = S::add(S::mul(S::sqrt(vv), inv_sqrt_bc2), eps);
            store(p + i, S::sub(pv, S::div(S::mul(step, mv), denom)), c);
        });
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
