// Fused multi-tensor optimiser steps (torch.optim.SGD, Adam, AdamW semantics): one pass
// over each parameter, its gradient and its state, with the gradient's clipping factor
// (grad_scale) applied on the fly. Arrays of one index share their size; a gradient has
// its parameter's dtype.
//
// Parameters are float32, float64, float16 or bfloat16, mixed in one list. A 16-bit
// parameter is computed in float32 and its state (momentum buffer, moments) is float32.
// Without masters, each step reads the 16-bit value and rounds the result once to
// nearest even. With masters (float32 master weights, one per parameter), the step
// reads and updates masters[i] and writes its rounding into params[i]; a float32 or
// float64 parameter is its own master (masters[i] is params[i] itself).
#pragma once

#include <cstddef>

#include "gradcore/export.hpp"
#include "gradcore/tensor.hpp"

namespace gradcore {

// l1: the L1 penalty l1 * |p|. In the gradient (its subgradient l1 * sign(p), sign(0) = 0),
// or, with proximal, by soft-thresholding the stepped weight: p = sign(u) max(|u| - lr l1, 0)
// with u the step without it, so a weight the penalty would carry across 0 stops at 0.
struct SgdOptions {
    double lr, momentum = 0.0, dampening = 0.0, weight_decay = 0.0, grad_scale = 1.0;
    bool nesterov = false;
    bool first_step = false;  // momentum buffers are initialised from this step's gradient
    double l1 = 0.0;
    bool proximal = false;
};
// buffers may be null when momentum == 0.
GRADCORE_API void sgd_step(const TensorView* params, const TensorView* grads, const TensorView* buffers,
                           std::size_t count, const SgdOptions& options, const TensorView* masters = nullptr);

// l1: Adam adds l1 * sign(p) to the gradient (as its weight decay adds wd * p); AdamW
// decouples it as it does its weight decay, soft-thresholding the decayed weight by
// lr * l1 before the update (a weight the penalty would carry across 0 stops at 0).
struct AdamOptions {
    double lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, grad_scale = 1.0;
    long long step = 1;      // 1 on the first step (bias corrections 1 - beta^step)
    bool decoupled = false;  // AdamW
    double l1 = 0.0;
};
GRADCORE_API void adam_step(const TensorView* params, const TensorView* grads, const TensorView* exp_avg,
                            const TensorView* exp_avg_sq, std::size_t count, const AdamOptions& options,
                            const TensorView* masters = nullptr);

}  // namespace gradcore
