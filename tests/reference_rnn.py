"""Plain NumPy float64 reference for gradcore's recurrent layers 
(docs/api.md, "Recurrent layers").

Written from the contract alone; nothing here imports or calls gradcore. Every function
converts its inputs to float64 (exact for float32 data) and returns new float64 arrays,
so a test can hand the very same input arrays to gradcore and to the reference. The code
favours clarity over speed: one Python loop over time, one NumPy expression per equation.

Layout and parameterisation are PyTorch's (torch.nn.RNN / LSTM / GRU, one layer, one
direction, batch_first=False): x (T, B, I), h0 / c0 (B, H), weight_ih (G*H, I),
weight_hh (G*H, H), biases (G*H,), gate blocks stacked along the rows:

    rnn_tanh (G=1)  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    rnn_relu (G=1)  h' = relu(W_ih x + b_ih + W_hh h + b_hh)
    lstm     (G=4)  [i, f, g, o] = W_ih x + b_ih + W_hh h + b_hh
                    i, f, o = sigmoid(.), g = tanh(.)
                    c' = f * c + i * g,  h' = o * tanh(c')
    gru      (G=3)  [r_i, z_i, n_i] = W_ih x + b_ih,  [r_h, z_h, n_h] = W_hh h + b_hh
                    r = sigmoid(r_i + r_h), z = sigmoid(z_i + z_h)
                    n = tanh(n_i + r * n_h),  h' = (1 - z) * n + z * h

y[t] = h_{t+1} (the hidden state after step t), h_n = y[T-1], c_n the last cell state
(lstm only).

Backward (BPTT) with the loss L = sum(grad_y * y) + sum(grad_h_n * h_n)
+ sum(grad_c_n * c_n). At step t (T-1 down to 0):

    dh_t = grad_y[t] + (gradient flowing back from step t+1;  grad_h_n at t = T-1)
    hidden_grad_norms[t] = ||dh_t||_2 over the whole (B, H) matrix, BEFORE clipping
    if clip_hidden is not None: dh_t = clip(dh_t, -clip_hidden, clip_hidden)
    ... the cell's backward with dh_t (and, for lstm, dc_t, which is never clipped)

grad_h0 is the gradient that leaves step 0 towards h0; it is not a step's dh_t and is
neither measured nor clipped. grad_c0 likewise. With clip_hidden, the result is no
longer the gradient of L (that is the point of clipping); without it, it is exactly the
gradient, which test_rnn.py verifies by central finite differences.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: cell name -> gate count G
CELLS = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


class RNNForward(NamedTuple):
    y: np.ndarray
    h_n: np.ndarray
    c_n: np.ndarray | None
    cache: dict


class RNNGrads(NamedTuple):
    grad_x: np.ndarray
    grad_h0: np.ndarray
    grad_c0: np.ndarray | None
    grad_weight_ih: np.ndarray
    grad_weight_hh: np.ndarray
    grad_bias_ih: np.ndarray | None
    grad_bias_hh: np.ndarray | None
    hidden_grad_norms: np.ndarray


def _f64(a):
    return None if a is None else np.array(a, dtype=np.float64, copy=True)


def mm(a, b):
    """a @ b in float64 by einsum (no BLAS: independent of the BLAS build and its threads)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[1]))
    return np.einsum("ik,kj->ij", a, b)


def sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check(x, h0, w_ih, w_hh, b_ih, b_hh, cell, c0):
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}")
    g = CELLS[cell]
    if x.ndim != 3:
        raise ValueError(f"x must be (T, B, I), got {x.shape}")
    t, b, i = x.shape
    h = w_hh.shape[1] if w_hh.ndim == 2 else -1
    if w_ih.shape != (g * h, i) or w_hh.shape != (g * h, h):
        raise ValueError(f"weights {w_ih.shape}, {w_hh.shape} do not fit cell {cell!r} and x {x.shape}")
    for name, bias in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if bias is not None and bias.shape != (g * h,):
            raise ValueError(f"{name} {bias.shape} != {(g * h,)}")
    if h0.shape != (b, h):
        raise ValueError(f"h0 {h0.shape} != {(b, h)}")
    if c0 is not None:
        if cell != "lstm":
            raise ValueError(f"c0 is only for lstm, not {cell!r}")
        if c0.shape != (b, h):
            raise ValueError(f"c0 {c0.shape} != {(b, h)}")


def ref_rnn_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, cell="lstm", c0=None,
                    perturb_h=None):
    """Forward pass; returns RNNForward(y, h_n, c_n, cache) in float64.

    h0 / c0 None mean zeros. `perturb_h` (T, B, H), a testing hook, is added to each
    step's new hidden state h_{t+1} (both to y[t] and to what step t+1 reads): the
    derivative of the loss with respect to perturb_h[t] is exactly dL/dh_t of the
    backward, so its norm per step can be checked by finite differences."""
    x, w_ih, w_hh = _f64(x), _f64(weight_ih), _f64(weight_hh)
    b_ih, b_hh = _f64(bias_ih), _f64(bias_hh)
    t_len, batch = x.shape[0], x.shape[1]
    hidden = w_hh.shape[1]
    h = np.zeros((batch, hidden)) if h0 is None else _f64(h0)
    if cell == "lstm":
        c = np.zeros((batch, hidden)) if c0 is None else _f64(c0)
    _check(x, h, w_ih, w_hh, b_ih, b_hh, cell, _f64(c0))
    H = hidden
    zero = np.zeros(CELLS[cell] * H)
    bi = zero if b_ih is None else b_ih
    bh = zero if b_hh is None else b_hh

    steps = []  # per step: what the backward needs
    y = np.zeros((t_len, batch, hidden))
    h_first = h.copy()
    c_first = c.copy() if cell == "lstm" else None
    for t in range(t_len):
        gi = mm(x[t], w_ih.T) + bi  # (B, G*H)
        gh = mm(h, w_hh.T) + bh
        step = dict(h_prev=h)
        if cell in ("rnn_tanh", "rnn_relu"):
            a = gi + gh
            h_new = np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0.0)
            step.update(a=a, h=h_new)
        elif cell == "lstm":
            a = gi + gh
            i = sigmoid(a[:, 0 * H:1 * H])
            f = sigmoid(a[:, 1 * H:2 * H])
            g = np.tanh(a[:, 2 * H:3 * H])
            o = sigmoid(a[:, 3 * H:4 * H])
            c_new = f * c + i * g
            tc = np.tanh(c_new)
            h_new = o * tc
            step.update(c_prev=c, i=i, f=f, g=g, o=o, tc=tc, c=c_new)
            c = c_new
        else:  # gru
            r = sigmoid(gi[:, 0 * H:1 * H] + gh[:, 0 * H:1 * H])
            z = sigmoid(gi[:, 1 * H:2 * H] + gh[:, 1 * H:2 * H])
            n_h = gh[:, 2 * H:3 * H]
            n = np.tanh(gi[:, 2 * H:3 * H] + r * n_h)
            h_new = (1.0 - z) * n + z * h
            step.update(r=r, z=z, n=n, n_h=n_h)
        if perturb_h is not None:
            h_new = h_new + np.asarray(perturb_h, dtype=np.float64)[t]
        y[t] = h_new
        h = h_new
        steps.append(step)
    cache = dict(cell=cell, x=x, w_ih=w_ih, w_hh=w_hh, has_bias_ih=b_ih is not None,
                 has_bias_hh=b_hh is not None, steps=steps, h0=h_first, c0=c_first)
    return RNNForward(y, h.copy(), c.copy() if cell == "lstm" else None, cache)


def ref_rnn_backward(cache, grad_y, grad_h_n=None, grad_c_n=None, *, clip_hidden=None, trace=None):
    """BPTT; returns RNNGrads in float64 (grad_c0 None unless lstm, grad_bias_* None
    where that bias was None). `trace`, if a list, receives (dh_t before clipping,
    dh_t after clipping) for t = T-1 down to 0 (a testing hook)."""
    cell, x, w_ih, w_hh, steps = cache["cell"], cache["x"], cache["w_ih"], cache["w_hh"], cache["steps"]
    t_len, batch, _ = x.shape
    H = w_hh.shape[1]
    grad_y = _f64(grad_y)
    if grad_y.shape != (t_len, batch, H):
        raise ValueError(f"grad_y {grad_y.shape} != {(t_len, batch, H)}")
    dh_next = np.zeros((batch, H)) if grad_h_n is None else _f64(grad_h_n)
    if dh_next.shape != (batch, H):
        raise ValueError(f"grad_h_n {dh_next.shape} != {(batch, H)}")
    if cell == "lstm":
        dc_next = np.zeros((batch, H)) if grad_c_n is None else _f64(grad_c_n)
        if dc_next.shape != (batch, H):
            raise ValueError(f"grad_c_n {dc_next.shape} != {(batch, H)}")

    grad_x = np.zeros_like(x)
    gw_ih = np.zeros_like(w_ih)
    gw_hh = np.zeros_like(w_hh)
    gb_ih = np.zeros(w_ih.shape[0])
    gb_hh = np.zeros(w_hh.shape[0])
    norms = np.zeros(t_len)
    for t in reversed(range(t_len)):
        s = steps[t]
        dh = grad_y[t] + dh_next
        norms[t] = np.sqrt(np.sum(dh * dh))
        dh_raw = dh.copy()
        if clip_hidden is not None:
            dh = np.clip(dh, -float(clip_hidden), float(clip_hidden))
        if trace is not None:
            trace.append((dh_raw, dh.copy()))
        h_prev = s["h_prev"]
        if cell in ("rnn_tanh", "rnn_relu"):
            if cell == "rnn_tanh":
                da = dh * (1.0 - s["h"] * s["h"])
            else:
                da = dh * (s["a"] > 0)
            d_gi = d_gh = da
            dh_direct = 0.0
        elif cell == "lstm":
            i, f, g, o, tc = s["i"], s["f"], s["g"], s["o"], s["tc"]
            dc = dc_next + dh * o * (1.0 - tc * tc)
            d_i = dc * g
            d_f = dc * s["c_prev"]
            d_g = dc * i
            d_o = dh * tc
            da = np.concatenate([d_i * i * (1.0 - i), d_f * f * (1.0 - f),
                                 d_g * (1.0 - g * g), d_o * o * (1.0 - o)], axis=1)
            d_gi = d_gh = da
            dh_direct = 0.0
            dc_next = dc * f
        else:  # gru
            r, z, n, n_h = s["r"], s["z"], s["n"], s["n_h"]
            d_n = dh * (1.0 - z)
            d_z = dh * (h_prev - n)
            dh_direct = dh * z
            d_an = d_n * (1.0 - n * n)  # pre-activation of n: n_i + r * n_h
            d_r = d_an * n_h
            d_ar = d_r * r * (1.0 - r)
            d_az = d_z * z * (1.0 - z)
            d_gi = np.concatenate([d_ar, d_az, d_an], axis=1)
            d_gh = np.concatenate([d_ar, d_az, d_an * r], axis=1)
        grad_x[t] = mm(d_gi, w_ih)
        gw_ih += mm(d_gi.T, x[t])
        gw_hh += mm(d_gh.T, h_prev)
        gb_ih += d_gi.sum(axis=0)
        gb_hh += d_gh.sum(axis=0)
        dh_next = mm(d_gh, w_hh) + dh_direct
    return RNNGrads(
        grad_x=grad_x,
        grad_h0=np.array(dh_next, dtype=np.float64) + np.zeros((batch, H)),
        grad_c0=dc_next.copy() if cell == "lstm" else None,
        grad_weight_ih=gw_ih,
        grad_weight_hh=gw_hh,
        grad_bias_ih=gb_ih if cache["has_bias_ih"] else None,
        grad_bias_hh=gb_hh if cache["has_bias_hh"] else None,
        hidden_grad_norms=norms,
    )


def ref_rnn_loss(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, cell, c0, grad_y, grad_h_n=None,
                 grad_c_n=None, perturb_h=None):
    """L = sum(grad_y * y) + sum(grad_h_n * h_n) + sum(grad_c_n * c_n): the scalar whose
    gradient ref_rnn_backward (without clip_hidden) returns."""
    fwd = ref_rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, cell=cell, c0=c0,
                          perturb_h=perturb_h)
    loss = float(np.sum(_f64(grad_y) * fwd.y))
    if grad_h_n is not None:
        loss += float(np.sum(_f64(grad_h_n) * fwd.h_n))
    if grad_c_n is not None and cell == "lstm":
        loss += float(np.sum(_f64(grad_c_n) * fwd.c_n))
    return loss
