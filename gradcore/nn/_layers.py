"""Feed-forward layers with torch's interface: ``Linear`` (with a fused activation),
``BatchNorm1d``, ``LayerNorm`` and ``Dropout``, their passes on gradcore's kernels
(``dense_forward/backward``, ``batch_norm_forward/backward``, ``layer_norm_forward/backward``,
``dropout``).
This module keeps the caches, the running statistics' bookkeeping and the shapes; the
numerics are the kernels'."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import init
from .._args import count, integer, nonnegative
from .._dense import ACTIVATIONS, NEEDS_SAVED, dense_backward, dense_forward
from .._dropout import dropout
from .._normalization import batch_norm_backward, batch_norm_forward, layer_norm_backward, layer_norm_forward
from ._module import Gradients, Module, add_input_grad, generator, layer_dtype, to_numpy

__all__ = ["BatchNorm1d", "Dropout", "LayerNorm", "Linear"]


class _Layer(Module):
    """A layer of one dtype whose inputs must have it."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype = layer_dtype(dtype)
        self._cache = None

    def _input(self, x, label="x"):
        a = to_numpy(x, label)
        if a.dtype != self.dtype:
            raise TypeError(f"{label} has dtype {a.dtype} but the layer's parameters are "
                            f"{self.dtype} (cast it, or build the layer with dtype={a.dtype})")
        return a

    def _grad_array(self, grad_output):
        g = self._input(grad_output, "grad_output")
        if g.shape != self._cache.out_shape:
            raise ValueError(f"grad_output has shape {g.shape}, expected {self._cache.out_shape} "
                             f"(the last forward's output)")
        return g


class _LinearCache(NamedTuple):
    x: np.ndarray       # the input as (batch, in)
    y: np.ndarray       # the output as (batch, out)
    saved: Any          # what the backward reads for the activations that need z
    in_shape: tuple
    out_shape: tuple


class Linear(_Layer):
    """``y = act(x @ weight.T + bias)``, ``torch.nn.Linear`` followed by an element-wise
    activation fused into the layer (``activation``: identity, relu, leaky_relu with
    ``negative_slope``, tanh, sigmoid applied in the product's write-back; elu with
    ``alpha``, silu, gelu, gelu_tanh, prelu, for which the layer also keeps what the
    backward reads, act'(z) or for prelu z; see ``gradcore.dense_forward``).

    ``Linear(in_features, out_features, bias=True, *, activation="identity",
    negative_slope=0.01, alpha=1.0, prelu_parameters=1, dtype=np.float32, rng=None)``:
    weight (out, in) and bias (out,) drawn as torch draws them (uniform(-1/sqrt(in),
    1/sqrt(in))); ``rng`` a ``numpy.random.Generator`` or an int seed. With prelu, the
    parameter ``prelu_weight`` (``prelu_parameters`` = 1 or out_features slopes, 0.25 as
    torch's ``nn.PReLU``). x is (*, in_features), y (*, out_features).
    """

    def __init__(self, in_features, out_features, bias=True, *, activation="identity",
                 negative_slope=0.01, alpha=1.0, prelu_parameters=1, dtype=np.float32, rng=None):
        super().__init__(dtype)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        self.in_features = count(in_features, "in_features")
        self.out_features = count(out_features, "out_features")
        self.activation = activation
        self.negative_slope = float(negative_slope)
        self.alpha = nonnegative(alpha, "alpha")
        self._params["weight"] = np.zeros((self.out_features, self.in_features), self.dtype)
        if bias:
            self._params["bias"] = np.zeros(self.out_features, self.dtype)
        if activation == "prelu":
            n = count(prelu_parameters, "prelu_parameters")
            if n not in (1, self.out_features):
                raise ValueError(f"prelu_parameters must be 1 or out_features ({self.out_features}), got {n}")
            self._params["prelu_weight"] = np.full(n, 0.25, self.dtype)
        self.reset_parameters(rng)

    def _activation_args(self):
        return dict(negative_slope=self.negative_slope, alpha=self.alpha,
                    prelu_weight=self._params.get("prelu_weight"))

    def reset_parameters(self, rng=None) -> None:
        """torch's default: weight by ``kaiming_uniform(a=sqrt(5))``, i.e. uniform(-1/sqrt(in),
        1/sqrt(in)), and the bias from the same range."""
        gen = generator(rng)
        self._params["weight"][...] = init.kaiming_uniform(self.weight.shape, a=math.sqrt(5), rng=gen,
                                                           dtype=self.dtype)
        if "bias" in self._params:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
            self._params["bias"][...] = gen.uniform(-bound, bound, self.out_features)

    def forward(self, x):
        x = self._input(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x has shape {x.shape}, expected (*, {self.in_features})")
        x2 = x.reshape(-1, self.in_features)
        keep = self.activation in NEEDS_SAVED
        result = dense_forward(x2, self.weight, self._params.get("bias"), self.activation,
                               return_saved=keep, **self._activation_args())
        y2, saved = result if keep else (result, None)
        out_shape = x.shape[:-1] + (self.out_features,)
        self._cache = _LinearCache(x2, y2, saved, x.shape, out_shape)
        return y2.reshape(out_shape)

    def _backward(self, grad, owned, into, need_input):
        c = self._cache
        g2 = grad.reshape(-1, self.out_features)
        has_bias = "bias" in self._params
        into2 = None
        if into is not None:
            # The skip gradient goes in through the input-gradient GEMM's write-back,
            # unless reshaping copied it or that GEMM would read what it writes (an
            # identity layer's grad_z is its grad_output).
            into2 = into.reshape(-1, self.in_features)
            if not np.may_share_memory(into2, into) or np.may_share_memory(into2, g2):
                into2 = None
        gx, gw, gb, *ga = dense_backward(g2, c.x, self.weight, c.y, self.activation, saved=c.saved,
                                         has_bias=has_bias, need_grad_x=need_input or into is not None,
                                         accumulate_grad_x=into2 is not None, grad_x=into2,
                                         **self._activation_args())
        grads = Gradients({"weight": gw, **({"bias": gb} if has_bias else {}),
                           **({"prelu_weight": ga[0]} if ga else {})})
        if into2 is not None:
            grads.input = into
        elif gx is not None:
            grads.input = add_input_grad(gx.reshape(c.in_shape), into)
        return grads

    def __repr__(self):
        extra = "" if "bias" in self._params else ", bias=False"
        if self.activation != "identity":
            extra += f", activation={self.activation!r}"
        return f"Linear({self.in_features}, {self.out_features}{extra}, dtype={self.dtype})"


class _NormCache(NamedTuple):
    kernel: Any         # the forward function's cache
    out_shape: tuple


class BatchNorm1d(_Layer):
    """``torch.nn.BatchNorm1d``: x (N, C) or (N, C, L) normalised per channel with the
    batch's statistics in training mode (the running statistics updated in place with
    the unbiased variance, ``num_batches_tracked`` counted) and with the running ones in
    evaluation mode.

    ``BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, dtype=np.float32)``. ``momentum=None`` is torch's
    cumulative moving average (1 / num_batches_tracked). Without running statistics the
    batch's are used in both modes. Parameters ``weight`` (ones), ``bias`` (zeros);
    buffers ``running_mean``, ``running_var``, ``num_batches_tracked`` (torch's names).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 *, dtype=np.float32):
        super().__init__(dtype)
        self.num_features = count(num_features, "num_features")
        self.eps = nonnegative(eps, "eps")
        self.momentum = None if momentum is None else nonnegative(momentum, "momentum")
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        if self.affine:
            self._params["weight"] = np.ones(c, self.dtype)
            self._params["bias"] = np.zeros(c, self.dtype)
        if self.track_running_stats:
            self._buffers["running_mean"] = np.zeros(c, self.dtype)
            self._buffers["running_var"] = np.ones(c, self.dtype)
            self._buffers["num_batches_tracked"] = np.zeros((), np.int64)

    def forward(self, x):
        x = self._input(x)
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"x has shape {x.shape}, expected (N, {self.num_features}) or "
                             f"(N, {self.num_features}, L)")
        running = self.track_running_stats
        momentum = self.momentum
        if self.training and running:
            momentum = 1.0 / (int(self.num_batches_tracked) + 1) if momentum is None else momentum
        y, cache = batch_norm_forward(x, self._params.get("weight"), self._params.get("bias"),
                                      self._buffers.get("running_mean"), self._buffers.get("running_var"),
                                      training=self.training, momentum=momentum or 0.0, eps=self.eps)
        if self.training and running:  # counted once the forward has succeeded
            self._buffers["num_batches_tracked"][...] += 1
        self._cache = _NormCache(cache, y.shape)
        return y

    def _backward(self, grad, owned, into, need_input):
        return _norm_grads(batch_norm_backward, self, grad, into, need_input)

    def __repr__(self):
        return (f"BatchNorm1d({self.num_features}, eps={self.eps:g}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, dtype={self.dtype})")


class LayerNorm(_Layer):
    """``torch.nn.LayerNorm``: each slice over the trailing ``normalized_shape``
    dimensions normalised by its own mean and biased variance.

    ``LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *,
    dtype=np.float32)``: parameters ``weight`` (ones) and ``bias`` (zeros) of shape
    ``normalized_shape``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *,
                 dtype=np.float32):
        super().__init__(dtype)
        shape = (normalized_shape,) if np.ndim(normalized_shape) == 0 else tuple(normalized_shape)
        self.normalized_shape = tuple(count(n, "normalized_shape") for n in shape)
        self.eps = nonnegative(eps, "eps")
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self._params["weight"] = np.ones(self.normalized_shape, self.dtype)
            if bias:
                self._params["bias"] = np.zeros(self.normalized_shape, self.dtype)

    def forward(self, x):
        x = self._input(x)
        y, cache = layer_norm_forward(x, self.normalized_shape, self._params.get("weight"),
                                      self._params.get("bias"), self.eps)
        self._cache = _NormCache(cache, y.shape)
        return y

    def _backward(self, grad, owned, into, need_input):
        return _norm_grads(layer_norm_backward, self, grad, into, need_input)

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps:g}, "
                f"elementwise_affine={self.elementwise_affine}, dtype={self.dtype})")


def _norm_grads(backward, layer, grad, into, need_input):
    gx, gw, gb = backward(grad, layer._cache.kernel, need_grad_x=need_input or into is not None)
    grads = Gradients({name: g for name, g in (("weight", gw), ("bias", gb)) if name in layer._params})
    if gx is not None:
        grads.input = add_input_grad(gx, into)
    return grads


class _DropoutCache(NamedTuple):
    offset: int | None  # the call's generator offset; None: the identity (eval, p = 0)
    out_shape: tuple


class Dropout(_Layer):
    """``torch.nn.Dropout``: in training mode each element is kept with probability
    ``1 - p`` and scaled by ``1 / (1 - p)``, else zeroed; in evaluation mode the identity.

    ``Dropout(p=0.5, *, seed=None, dtype=np.float32)``. The mask comes from
    ``gradcore.dropout``'s counter-based generator under ``seed`` (drawn from fresh
    entropy when None) with ``offset`` = the number of training forwards so far
    (``layer.offset``, an attribute to save and restore with a checkpoint): the backward
    regenerates the forward's mask instead of storing it, and a seed reproduces a run
    exactly on any thread count. torch's own generator gives other masks with the same
    statistics."""

    def __init__(self, p=0.5, *, seed=None, dtype=np.float32):
        super().__init__(dtype)
        p = nonnegative(p, "p")
        if p > 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.seed = (int(np.random.default_rng().integers(0, 2 ** 63)) if seed is None
                     else integer(seed, "seed", 0, 2 ** 64 - 1))
        self.offset = 0

    def forward(self, x):
        x = self._input(x)
        if not self.training or self.p == 0:
            self._cache = _DropoutCache(None, x.shape)
            return x
        y = dropout(x, self.p, seed=self.seed, offset=self.offset)
        self._cache = _DropoutCache(self.offset, y.shape)
        self.offset += 1
        return y

    def _backward(self, grad, owned, into, need_input):
        offset = self._cache.offset
        grads = Gradients()
        if offset is None:  # the identity; grad is the caller's unless owned
            gx = None if into is not None else (grad if owned else grad.copy())
        else:
            # Into the owned gradient itself: an element-wise pass may write what it reads.
            gx = dropout(grad, self.p, seed=self.seed, offset=offset, out=grad if owned else None)
        grads.input = add_input_grad(grad if gx is None else gx, into)
        return grads

    def __repr__(self):
        return f"Dropout(p={self.p:g}, dtype={self.dtype})"
