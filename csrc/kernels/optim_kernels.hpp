// Fused optimiser updates: one pass over parameter, gradient and state per step, the
// gradient's clipping factor applied on the fly (no separate scaling pass).
//
// The update rules are written once, over an access policy that says where a step
// reads and writes its parameter and gradient: the parameter itself (float32, float64),
// or a 16-bit parameter computed in float32, either from a float32 master copy that
// the step updates and rounds to the 16-bit parameter, or from the 16-bit value alone
// (rounded once per step, no master). The state (momentum, moments) is in the compute
// type, float32 for the 16-bit parameters.
#pragma once

#include <cmath>
#include <cstdint>

#include "lanes.hpp"
#include "table_types.hpp"
#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

template <class S, class T>
struct InPlaceParam {
    using Lane = Lanes<S, T>;
    using V = typename S::template V<T>;
    T* p;
    const T* g;

    V param(std::int64_t i, std::int64_t c) const { return Lane::load(p + i, c); }
    V grad(std::int64_t i, std::int64_t c) const { return Lane::load(g + i, c); }
    void update(std::int64_t i, V v, std::int64_t c) const { Lane::store(p + i, v, c); }
};

// N: Float16 or BFloat16; kMaster: the step reads and writes the float32 master and
// stores its rounding (to nearest even) into p.
template <class S, class N, bool kMaster>
struct NarrowParam {
    using Lane = Lanes<S, float>;
    using Narrow = WideLanes<S, N>;
    using V = typename S::template V<float>;
    float* master;
    N* p;
    const N* g;

    V param(std::int64_t i, std::int64_t c) const {
        if constexpr (kMaster) {
            return Lane::load(master + i, c);
        } else {
            return Narrow::load_f32(p + i, c);
        }
    }
    V grad(std::int64_t i, std::int64_t c) const { return Narrow::load_f32(g + i, c); }
    void update(std::int64_t i, V v, std::int64_t c) const {
        if constexpr (kMaster) Lane::store(master + i, v, c);
        Narrow::store_f32(p + i, v, c);
    }
};

template <class S, class T>
struct OptimKernels {
    using V = typename S::template V<T>;
    using Lane = Lanes<S, T>;

    // -1, 0 or 1 (0 for 0 and NaN): the L1 penalty's subgradient.
    static V sign(V p) {
        const V zero = S::set1(T(0));
        return S::where_positive(p, S::set1(T(1)), S::where_positive(S::sub(zero, p), S::set1(T(-1)), zero));
    }

    // sign(u) max(|u| - t, 0), t >= 0: exactly 0 where |u| <= t, u -+ t (one rounding)
    // elsewhere.
    static V soft_threshold(V u, V t) { return S::sub(u, S::clamp(u, S::sub(S::set1(T(0)), t), t)); }

    // torch.optim.SGD: g = s*g + wd*p (+ l1*sign(p)); buf = g (first step) or
    // mu*buf + (1-damp)*g; d = g + mu*buf (nesterov) or buf; p -= lr*d, then with
    // proximal p = soft_threshold(p, lr*l1). buf may be null when momentum == 0.
    template <class P>
    static void sgd_with(const P& x, T* buf, std::int64_t n, const SgdParams& a) {
        const V lr = S::set1(T(a.lr)), mu = S::set1(T(a.momentum)), wd = S::set1(T(a.weight_decay));
        const V keep = S::set1(T(1 - a.dampening)), scale = S::set1(T(a.grad_scale));
        const V l1 = S::set1(T(a.l1)), shrink = S::set1(T(a.lr * a.l1));
        const bool l1_grad = a.l1 != 0.0 && !a.proximal, l1_prox = a.l1 != 0.0 && a.proximal;
        Lane::for_each(n, [&](std::int64_t i, std::int64_t c) {
            const V pv = x.param(i, c);
            V gv = S::fma(wd, pv, S::mul(scale, x.grad(i, c)));
            if (l1_grad) gv = S::fma(l1, sign(pv), gv);
            if (a.momentum != 0.0) {
                const V b = a.first_step ? gv : S::fma(mu, Lane::load(buf + i, c), S::mul(keep, gv));
                Lane::store(buf + i, b, c);
                gv = a.nesterov ? S::fma(mu, b, gv) : b;
            }
            const V stepped = S::sub(pv, S::mul(lr, gv));
            x.update(i, l1_prox ? soft_threshold(stepped, shrink) : stepped, c);
        });
    }

    // torch.optim.Adam / AdamW (no amsgrad).
    template <class P>
    static void adam_with(const P& x, T* m, T* v, std::int64_t n, const AdamParams& a) {
        const V b1 = S::set1(T(a.beta1)), b2 = S::set1(T(a.beta2));
        const V c1 = S::set1(T(1 - a.beta1)), c2 = S::set1(T(1 - a.beta2));
        const V scale = S::set1(T(a.grad_scale)), wd = S::set1(T(a.weight_decay));
        const V step = S::set1(T(a.lr / a.bias_correction1));
        const V inv_sqrt_bc2 = S::set1(T(1.0 / std::sqrt(a.bias_correction2)));
        const V eps = S::set1(T(a.eps));
        const V decay = S::set1(T(1 - a.lr * a.weight_decay));
        const V l1 = S::set1(T(a.l1)), shrink = S::set1(T(a.lr * a.l1));
        const bool has_l1 = a.l1 != 0.0;
        Lane::for_each(n, [&](std::int64_t i, std::int64_t c) {
            V pv = x.param(i, c);
            V gv = S::mul(scale, x.grad(i, c));
            if (a.decoupled) {
                pv = S::mul(pv, decay);
                if (has_l1) pv = soft_threshold(pv, shrink);
            } else {
                gv = S::fma(wd, pv, gv);
                if (has_l1) gv = S::fma(l1, sign(pv), gv);
            }
            const V mv = S::fma(b1, Lane::load(m + i, c), S::mul(c1, gv));
            const V vv = S::fma(b2, Lane::load(v + i, c), S::mul(c2, S::mul(gv, gv)));
            Lane::store(m + i, mv, c);
            Lane::store(v + i, vv, c);
            const V denom = S::add(S::mul(S::sqrt(vv), inv_sqrt_bc2), eps);
            x.update(i, S::sub(pv, S::div(S::mul(step, mv), denom)), c);
        });
    }

    static void sgd(T* p, const T* g, T* buf, std::int64_t n, const SgdParams& a) {
        sgd_with(InPlaceParam<S, T>{p, g}, buf, n, a);
    }
    static void adam(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamParams& a) {
        adam_with(InPlaceParam<S, T>{p, g}, m, v, n, a);
    }
};

// The 16-bit parameters: the float32 rules above, master may be null.
template <class S, class N>
struct NarrowOptimKernels {
    using K = OptimKernels<S, float>;

    static void sgd(float* master, N* p, const N* g, float* buf, std::int64_t n, const SgdParams& a) {
        if (master) {
            K::sgd_with(NarrowParam<S, N, true>{master, p, g}, buf, n, a);
        } else {
            K::sgd_with(NarrowParam<S, N, false>{nullptr, p, g}, buf, n, a);
        }
    }
    static void adam(float* master, N* p, const N* g, float* m, float* v, std::int64_t n, const AdamParams& a) {
        if (master) {
            K::adam_with(NarrowParam<S, N, true>{master, p, g}, m, v, n, a);
        } else {
            K::adam_with(NarrowParam<S, N, false>{nullptr, p, g}, m, v, n, a);
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
