"""Plain NumPy float64 references for gradcore's layer and batch normalisation
(docs/api.md, "Normalisation layers").

Written from the contract alone (torch.nn.functional.layer_norm / batch_norm semantics);
nothing here imports or calls gradcore. Inputs are converted to float64 (exact for float32
data); results are new float64 arrays. The backward formulas are the textbook ones, checked
against central finite differences of the forward in tests/test_normalization.py.
"""

from __future__ import annotations

import numpy as np


def _f64(a):
    return None if a is None else np.array(a, dtype=np.float64, copy=True)


def layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5):
    """(y, mean, rstd) with mean/rstd over the trailing len(normalized_shape) dimensions."""
    x = _f64(x)
    axes = tuple(range(x.ndim - len(tuple(normalized_shape)), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean) * rstd
    if gamma is not None:
        y = y * _f64(gamma)
    if beta is not None:
        y = y + _f64(beta)
    return y, mean.reshape(x.shape[:x.ndim - len(axes)]), rstd.reshape(x.shape[:x.ndim - len(axes)])


def layer_norm_backward(grad_y, x, normalized_shape, gamma=None, eps=1e-5):
    """(grad_x, grad_gamma, grad_beta) of layer_norm; grad_gamma/grad_beta over all the
    leading dimensions."""
    gy, x = _f64(grad_y), _f64(x)
    k = len(tuple(normalized_shape))
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    mean = x.mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    g = gy * (_f64(gamma) if gamma is not None else 1.0)
    grad_x = rstd * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    return grad_x, (gy * xhat).sum(axis=lead), gy.sum(axis=lead)


def _channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """(y, mean, var_used, new_running_mean, new_running_var) for x (N, C, *). Batch
    statistics when training or without running statistics; the running ones are updated
    only when training, with the unbiased variance."""
    x = _f64(x)
    axes = _channel_axes(x)
    count = x.size // x.shape[1] if x.shape[1] else 0
    new_rm, new_rv = _f64(running_mean), _f64(running_var)
    if training or running_mean is None:
        mean = x.mean(axis=axes)
        var = ((x - _per_channel(mean, x)) ** 2).mean(axis=axes)
        if training and running_mean is not None:
            new_rm = (1 - momentum) * new_rm + momentum * mean
            new_rv = (1 - momentum) * new_rv + momentum * var * count / (count - 1)
    else:
        mean, var = _f64(running_mean), _f64(running_var)
    y = (x - _per_channel(mean, x)) / np.sqrt(_per_channel(var, x) + eps)
    if gamma is not None:
        y = y * _per_channel(gamma, x)
    if beta is not None:
        y = y + _per_channel(beta, x)
    return y, mean, var, new_rm, new_rv


def batch_norm_backward(grad_y, x, gamma, mean, var, batch_stats, eps=1e-5):
    """(grad_x, grad_gamma, grad_beta) of batch_norm with the statistics (mean, var) it
    used; batch_stats: they were the batch's (and depend on x)."""
    gy, x = _f64(grad_y), _f64(x)
    axes = _channel_axes(x)
    rstd = _per_channel(1.0 / np.sqrt(_f64(var) + eps), x)
    xhat = (x - _per_channel(mean, x)) * rstd
    g = gy * (_per_channel(gamma, x) if gamma is not None else 1.0)
    if batch_stats:
        grad_x = rstd * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    else:
        grad_x = g * rstd
    return grad_x, (gy * xhat).sum(axis=axes), gy.sum(axis=axes)
