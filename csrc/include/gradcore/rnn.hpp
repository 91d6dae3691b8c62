// One recurrent layer (one direction), forward and backpropagation through time, in
// PyTorch's parameterisation: x (T, B, I), h (B, H), weight_ih (G*H, I),
// weight_hh (G*H, H), biases (G*H). All arrays are C-contiguous.
#pragma once

#include <cstdint>

#include "gradcore/export.hpp"

namespace gradcore {

enum class Cell : int { rnn_tanh = 0, rnn_relu = 1, lstm = 2, gru = 3 };

// Gates per cell: 1 (rnn), 4 (lstm: i, f, g, o), 3 (gru: r, z, n).
GRADCORE_API int gate_count(Cell cell);

// The forward pass's states double as the cache the backward reads:
//   hs     (T+1, B, H)  hs[0] = h0, hs[t+1] = h_t (so y = hs[1:])
//   cs     (T+1, B, H)  lstm only: cs[0] = c0, cs[t+1] = c_t
//   gates  (T, B, G*H)  lstm/gru: the gates after their activations
//   gh_n   (T, B, H)    gru only: W_hn h_{t-1} + b_hn (needed for dr)
// y, h_n and c_n are copies of the states, for a caller whose outputs must not alias
// the cache.
template <class T>
struct RnnForward {
    Cell cell;
    std::int64_t steps, batch, input, hidden;
    const T* x;
    const T* weight_ih;
    const T* weight_hh;
    const T* bias_ih;  // may be null
    const T* bias_hh;  // may be null
    T* hs;
    T* cs;             // lstm
    T* gates;          // lstm, gru
    T* gh_n;           // gru
    const T* h0;       // (B, H), copied to hs[0]; null: zeros
    const T* c0;       // (B, H), copied to cs[0] (lstm); null: zeros
    T* y;              // (T, B, H) or null
    T* h_n;            // (B, H) or null
    T* c_n;            // (B, H) or null (lstm)
};
GRADCORE_API void rnn_forward(const RnnForward<float>& f);
GRADCORE_API void rnn_forward(const RnnForward<double>& f);

// The cache as the backward reads it: the forward's arguments and the states it wrote,
// all read-only.
template <class T>
struct RnnStates {
    Cell cell;
    std::int64_t steps, batch, input, hidden;
    const T* x;
    const T* weight_ih;
    const T* weight_hh;
    const T* bias_ih;  // may be null
    const T* bias_hh;  // may be null
    const T* hs;
    const T* cs;
    const T* gates;
    const T* gh_n;
};

template <class T>
constexpr RnnStates<T> states_of(const RnnForward<T>& f) {
    return {f.cell, f.steps, f.batch, f.input, f.hidden, f.x, f.weight_ih, f.weight_hh, f.bias_ih, f.bias_hh,
            f.hs, f.cs, f.gates, f.gh_n};
}

// Gradients; grad_h_n / grad_c_n may be null (zeros); outputs with null data are not
// computed. hidden_grad_norms[t] = ||dL/dh_t|| over the batch, before clipping;
// clip_hidden > 0 clamps dL/dh_t to [-clip, clip] at every step (<= 0: no clipping).
template <class T>
struct RnnBackward {
    RnnStates<T> states;    // as rnn_forward left them (the cache)
    const T* grad_y;        // (T, B, H)
    const T* grad_h_n;
    const T* grad_c_n;
    double clip_hidden;
    T* grad_x;              // (T, B, I)
    T* grad_h0;             // (B, H)
    T* grad_c0;             // (B, H), lstm
    T* grad_weight_ih;
    T* grad_weight_hh;
    T* grad_bias_ih;
    T* grad_bias_hh;
    double* hidden_grad_norms;  // (T)
};
GRADCORE_API void rnn_backward(const RnnBackward<float>& b);
GRADCORE_API void rnn_backward(const RnnBackward<double>& b);

}  // namespace gradcore
