"""Layer and batch normalisation, forward and backward (docs/api.md, "Normalisation
layers"), with the semantics of ``torch.nn.functional.layer_norm`` and
``torch.nn.functional.batch_norm`` (``nn.LayerNorm``, ``nn.BatchNorm1d/2d/3d``).

The statistics, the normalised values and the gradients are computed in float64 and
rounded once to the arrays' dtype (float32 or float64), so a float32 batch whose mean is
large against its spread keeps its variance. The forward returns the output and a cache
(the inputs and the per-row or per-channel ``mean`` and ``rstd = 1 / sqrt(var + eps)``,
float64) that the backward reads. Results are the same for every thread count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _core

__all__ = ["BatchNormCache", "LayerNormCache", "NormalizationForward", "NormalizationGrads",
           "batch_norm_backward", "batch_norm_forward", "layer_norm_backward", "layer_norm_forward"]


class LayerNormCache(NamedTuple):
    """What ``layer_norm_backward`` reads from the forward pass."""
    x: Any
    gamma: Any
    mean: Any              #: float64, x.shape without the normalised dimensions
    rstd: Any              #: float64, the same shape
    normalized_shape: Any
    has_beta: bool


class BatchNormCache(NamedTuple):
    """What ``batch_norm_backward`` reads from the forward pass."""
    x: Any
    gamma: Any
    mean: Any              #: float64 (C,): the statistics x was normalised with
    rstd: Any              #: float64 (C,)
    batch_stats: bool      #: they were the batch's (training, or no running statistics)
    has_beta: bool


class NormalizationForward(NamedTuple):
    """What the forward functions return: the output and the cache of their backward."""
    y: Any
    cache: Any


class NormalizationGrads(NamedTuple):
    """What the backward functions return."""
    grad_x: Any            #: None when need_grad_x=False
    grad_gamma: Any        #: None without gamma
    grad_beta: Any         #: None without beta


def layer_norm_forward(x, normalized_shape, gamma=None, beta=None, eps=1e-5) -> NormalizationForward:
    """``torch.nn.functional.layer_norm``: each slice over the trailing dimensions
    ``normalized_shape`` (an int or a tuple) is normalised with its own mean and biased
    variance, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``. ``gamma``/``beta`` have
    the shape ``normalized_shape`` or are None (no scale / no shift). float32 or float64,
    one dtype throughout; ``eps`` a finite number >= 0.

    Returns ``(y, cache)``; ``cache.mean`` and ``cache.rstd`` (float64) have the shape of
    the leading dimensions.
    """
    y, mean, rstd = _core.layer_norm_forward(x, normalized_shape, gamma, beta, eps)
    return NormalizationForward(y, LayerNormCache(x, gamma, mean, rstd, normalized_shape, beta is not None))


def layer_norm_backward(grad_y, cache: LayerNormCache, *, need_grad_x=True) -> NormalizationGrads:
    """The gradients of ``layer_norm_forward`` for ``grad_y`` = dL/dy: ``(grad_x,
    grad_gamma, grad_beta)``, the parameters' ones None where the forward had none."""
    return NormalizationGrads(*_core.layer_norm_backward(
        grad_y, cache.x, cache.gamma, cache.mean, cache.rstd, cache.normalized_shape, need_grad_x,
        cache.has_beta))


def batch_norm_forward(x, gamma, beta, running_mean, running_var, *, training, momentum=0.1,
                       eps=1e-5) -> NormalizationForward:
    """``torch.nn.functional.batch_norm`` on x of shape (N, C) or (N, C, *) (BatchNorm1d,
    2d, 3d): per channel, the statistics of its N * L values (L the product of the
    trailing dimensions).

    With ``training=True``, or without running statistics (``running_mean`` and
    ``running_var`` both None, torch's ``track_running_stats=False``), x is normalised
    with the batch's mean and biased variance; training also updates the running
    statistics in place, ``r = (1 - momentum) r + momentum s`` with the unbiased variance
    (they must be writeable arrays of x's dtype, shape (C,)). Training needs more than one
    value per channel (``ValueError``, as torch). With ``training=False`` and running
    statistics, x is normalised with them, which are left as they are.
    ``gamma``/``beta``: (C,) or None.

    Returns ``(y, cache)``; ``cache.mean`` and ``cache.rstd`` (float64, (C,)) are the
    statistics used.
    """
    y, mean, rstd = _core.batch_norm_forward(x, gamma, beta, running_mean, running_var, training,
                                             momentum, eps)
    batch_stats = bool(training) or running_mean is None
    return NormalizationForward(y, BatchNormCache(x, gamma, mean, rstd, batch_stats, beta is not None))


def batch_norm_backward(grad_y, cache: BatchNormCache, *, need_grad_x=True) -> NormalizationGrads:
    """The gradients of ``batch_norm_forward`` for ``grad_y`` = dL/dy: ``(grad_x,
    grad_gamma, grad_beta)``, the parameters' ones None where the forward had none. With
    batch statistics every element's gradient goes through them (two passes: the
    per-channel sums, then grad_x); with running statistics ``grad_x = grad_y * gamma *
    rstd``."""
    return NormalizationGrads(*_core.batch_norm_backward(
        grad_y, cache.x, cache.gamma, cache.mean, cache.rstd, cache.batch_stats, need_grad_x,
        cache.has_beta))
