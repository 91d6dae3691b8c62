// Fused multi-tensor optimiser steps (torch.optim.SGD, Adam, AdamW semantics): one pass
// over each parameter, its gradient and its state, with the gradient's clipping factor
// (grad_scale) applied on the fly. Arrays of one index share size and dtype.
#pragma once

#include <cstddef>

#include "gradcore/export.hpp"
#include "gradcore/tensor.hpp"

namespace gradcore {

struct SgdOptions {
    double lr, momentum = 0.0, dampening = 0.0, weight_decay = 0.0, grad_scale = 1.0;
    bool nesterov = false;
    bool first_step = false;  // momentum buffers are initialised from this step's gradient
};
// buffers may be null when momentum == 0.
GRADCORE_API void sgd_step(const TensorView* params, const TensorView* grads, const TensorView* buffers,
                           std::size_t count, const SgdOptions& options);

struct AdamOptions {
    double lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, grad_scale = 1.0;
    long long step = 1;      // 1 on the first step (bias corrections 1 - beta^step)
    bool decoupled = false;  // AdamW
};
GRADCORE_API void adam_step(const TensorView* params, const TensorView* grads, const TensorView* exp_avg,
                            const TensorView* exp_avg_sq, std::size_t count, const AdamOptions& options);

}  // namespace gradcore
