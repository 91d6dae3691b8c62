"""Plain NumPy float64 references of gradcore.optim's update rules: torch.optim.SGD, Adam
and AdamW as their documentation writes them, with gradcore's clip by global norm
(PyTorch's formula) and clip by value applied to the gradients first.

Written from the contract alone; nothing here imports gradcore. Inputs are converted to
float64 (exact for every float dtype) and new float64 arrays returned.
"""

import math

import numpy as np


def clip_scale(grads, clip_norm):
    if clip_norm is None:
        return 1.0
    total = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads))
    return min(1.0, clip_norm / (total + 1e-6)) if total > 0 else 1.0


def soft_threshold(u, t):
    """The proximal step of t * |u|: sign(u) * max(|u| - t, 0)."""
    return np.sign(u) * np.maximum(np.abs(u) - t, 0.0)


def ref_sgd(params, grad_steps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
            nesterov=False, clip_norm=None, clip_value=None, l1=0.0, proximal=False):
    """l1: l1 * sign(p) added to the gradient, or with proximal the updated weights
    soft-thresholded by lr * l1."""
    p = [np.asarray(x, np.float64).copy() for x in params]
    buf = None
    for grads in grad_steps:
        g = [np.asarray(x, np.float64).copy() for x in grads]
        if clip_value is not None:
            g = [np.clip(x, -clip_value, clip_value) for x in g]
        s = clip_scale(g, clip_norm)
        g = [x * s for x in g]
        if weight_decay:
            g = [x + weight_decay * q for x, q in zip(g, p)]
        if l1 and not proximal:
            g = [x + l1 * np.sign(q) for x, q in zip(g, p)]
        if momentum:
            if buf is None:
                buf = [x.copy() for x in g]
            else:
                buf = [momentum * b + (1 - dampening) * x for b, x in zip(buf, g)]
            g = [x + momentum * b for x, b in zip(g, buf)] if nesterov else buf
        p = [q - lr * x for q, x in zip(p, g)]
        if l1 and proximal:
            p = [soft_threshold(q, lr * l1) for q in p]
    return p


def ref_adam(params, grad_steps, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             decoupled=False, clip_norm=None, l1=0.0):
    """l1: Adam adds l1 * sign(p) to the gradient; AdamW soft-thresholds the decayed
    weights by lr * l1."""
    b1, b2 = betas
    p = [np.asarray(x, np.float64).copy() for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t, grads in enumerate(grad_steps, 1):
        g = [np.asarray(x, np.float64).copy() for x in grads]
        s = clip_scale(g, clip_norm)
        g = [x * s for x in g]
        if decoupled:
            p = [soft_threshold(q * (1 - lr * weight_decay), lr * l1) for q in p]
        else:
            g = [x + weight_decay * q + l1 * np.sign(q) for x, q in zip(g, p)]
        m = [b1 * a + (1 - b1) * x for a, x in zip(m, g)]
        v = [b2 * a + (1 - b2) * x * x for a, x in zip(v, g)]
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        p = [q - (lr / bc1) * a / (np.sqrt(w) / math.sqrt(bc2) + eps) for q, a, w in zip(p, m, v)]
    return p
