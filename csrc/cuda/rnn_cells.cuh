// Per-element math of the recurrent cells on the device, the same formulas (and fma
// placement) as csrc/kernels/rnn_kernels.hpp. __host__ __device__ and free of device-only
// intrinsics, so tests/cpp/test_cuda_cells.cpp checks them on the host against finite
// differences. PyTorch's parameterisation: LSTM gates i, f, g, o; GRU gates r, z, n with
// n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
#pragma once

#include "activations.cuh"

namespace gradcore::cuda::elem {

// ---- LSTM -------------------------------------------------------------------------
template <class T>
struct LstmForward {
    T i, f, g, o;  // gates after their activations (the cache)
    T c, h;
};

// a_* = pre-activations (W_ih x + b_ih + W_hh h_prev + b_hh); c = f c_prev + i g,
// h = o tanh(c).
template <class T>
__host__ __device__ inline LstmForward<T> lstm_forward(T ai, T af, T ag, T ao, T c_prev) {
    LstmForward<T> s;
    s.i = sigmoid(ai);
    s.f = sigmoid(af);
    s.g = tanh_(ag);
    s.o = sigmoid(ao);
    s.c = fma_(s.f, c_prev, s.i * s.g);
    s.h = s.o * tanh_(s.c);
    return s;
}

template <class T>
struct LstmBackward {
    T di, df, dg, do_;  // dL/d(pre-activations)
    T dc_prev;          // dL/dc_{t-1}
};

// From the cached gates, c_prev, c, dh = dL/dh_t (total, clipped) and dc = dL/dc_t
// coming from step t+1 (grad_c_n at the last step).
template <class T>
__host__ __device__ inline LstmBackward<T> lstm_backward(T i, T f, T g, T o, T c_prev, T c, T dh, T dc) {
    const T tc = tanh_(c);
    const T dct = fma_(dh * o, dtanh(tc), dc);
    LstmBackward<T> d;
    d.di = (dct * g) * dsigmoid(i);
    d.df = (dct * c_prev) * dsigmoid(f);
    d.dg = (dct * i) * dtanh(g);
    d.do_ = (dh * tc) * dsigmoid(o);
    d.dc_prev = dct * f;
    return d;
}

// ---- GRU --------------------------------------------------------------------------
template <class T>
struct GruForward {
    T r, z, n;  // gates after their activations (the cache)
    T h;
};

// x_* = W_i* x + b_i*, q_* = W_h* h_prev + b_h* (q_n is cached as gh_n):
// r = sigmoid(x_r + q_r), z = sigmoid(x_z + q_z), n = tanh(x_n + r q_n),
// h = (1 - z) n + z h_prev.
template <class T>
__host__ __device__ inline GruForward<T> gru_forward(T xr, T xz, T xn, T qr, T qz, T qn, T h_prev) {
    GruForward<T> s;
    s.r = sigmoid(xr + qr);
    s.z = sigmoid(xz + qz);
    s.n = tanh_(fma_(s.r, qn, xn));
    s.h = fma_(s.z, h_prev - s.n, s.n);
    return s;
}

template <class T>
struct GruBackward {
    T dr, dz, dn;     // dL/dx_r, dL/dx_z, dL/dx_n: the input-side gate gradients (dgx)
    T dqn;            // dL/dq_n = dn * r; dL/dq_r = dr, dL/dq_z = dz (dgh = dr, dz, dqn)
    T dh_prev_direct;  // z * dh: the part of dL/dh_prev not through W_hh
};

template <class T>
__host__ __device__ inline GruBackward<T> gru_backward(T r, T z, T n, T qn, T h_prev, T dh) {
    GruBackward<T> d;
    d.dn = (dh * (T(1) - z)) * dtanh(n);
    d.dr = (d.dn * qn) * dsigmoid(r);
    d.dz = (dh * (h_prev - n)) * dsigmoid(z);
    d.dqn = d.dn * r;
    d.dh_prev_direct = z * dh;
    return d;
}

// ---- plain RNN (tanh / relu) ----------------------------------------------------------
template <class T>
__host__ __device__ inline T rnn_forward(T a, bool relu) {
    return relu ? activation_forward(a, Activation::relu, T(0)) : tanh_(a);
}

// dL/da from h = act(a) and dh.
template <class T>
__host__ __device__ inline T rnn_backward(T h, T dh, bool relu) {
    return relu ? (h > T(0) ? dh : T(0)) : dh * dtanh(h);
}

// ---- the hidden gradient of one step -------------------------------------------------
// dL/dh_t = (recurrent part from step t+1) + grad_y[t], clamped to [-clip, clip] when
// clip > 0 (NaN stays NaN), as the CPU's gather_hidden_grad.
template <class T>
__host__ __device__ inline T clamp_hidden(T v, T clip) {
    return clip > T(0) ? (v < -clip ? -clip : (v > clip ? clip : v)) : v;
}

}  // namespace gradcore::cuda::elem
