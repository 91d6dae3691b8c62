"""Layers made of layers: ``Sequential`` (torch's) and ``Residual`` (``y = x + block(x)``).
Both only route arrays; the one addition of their own, the skip's gradient, goes into
the pass of the block's first layer that writes the input gradient."""

from __future__ import annotations

import numpy as np

from ._module import Gradients, Module

__all__ = ["Residual", "Sequential"]


def _require_layer(layer, what):
    if not isinstance(layer, Module) or type(layer)._backward is Module._backward:
        raise TypeError(f"{what} must be a gradcore.nn feed-forward layer (Linear, BatchNorm1d, "
                        f"LayerNorm, Dropout, Sequential, Residual), got {type(layer).__name__}")
    return layer


def _merge(into, prefix, grads):
    for name, g in grads.items():
        into[prefix + name] = g


class Sequential(Module):
    """``torch.nn.Sequential``: ``Sequential(layer0, layer1, ...)`` applies the layers in
    order; their parameters are named ``"0.weight"``, ``"1.bias"``, ... as torch names
    them. ``model[i]`` is layer i, ``len(model)`` their number."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            self._children[str(i)] = _require_layer(layer, f"layer {i}")
        self._ran = False

    def __getitem__(self, i):
        return list(self._children.values())[i]

    def __len__(self):
        return len(self._children)

    def __iter__(self):
        return iter(self._children.values())

    def forward(self, x):
        for layer in self._children.values():
            x = layer.forward(x)
        self._ran = True
        return x

    @property
    def _cache(self):
        return True if self._ran else None

    def _grad_array(self, grad_output):
        return self[-1]._grad_array(grad_output) if len(self) else grad_output

    def _backward(self, grad, owned, into, need_input):
        grads = Gradients()
        items = list(self._children.items())
        parts = []
        for i in range(len(items) - 1, -1, -1):
            name, layer = items[i]
            first = i == 0
            g = layer._backward(grad, owned, into if first else None, need_input if first else True)
            parts.append((name, g))
            grad, owned = g.input, True
        for name, g in reversed(parts):
            _merge(grads, name + ".", g)
        if not items:  # the identity
            grad = grad if into is None else np.add(into, grad, out=into)
        grads.input = grad
        return grads

    def __repr__(self):
        lines = "".join(f"\n  ({name}): " + repr(layer).replace("\n", "\n  ")
                        for name, layer in self._children.items())
        return f"Sequential({lines}\n)"


class Residual(Module):
    """A skip connection around a block: ``y = x + block(x)`` (He et al. 2016), the
    block's output of x's shape. ``backward`` gives the block's parameters their
    gradients and x the sum of both paths' gradients, the skip's added in the block's
    input-gradient pass (a ``Linear`` first layer adds it in its GEMM's write-back; other
    layers in one addition). The block's parameters are named ``"block.<name>"``."""

    def __init__(self, block):
        super().__init__()
        self._children["block"] = _require_layer(block, "block")

    def forward(self, x):
        fx = self.block.forward(x)
        if fx.shape != np.shape(x):
            raise ValueError(f"the block maps x of shape {np.shape(x)} to shape {fx.shape}; a residual "
                             f"connection needs the same shape")
        # (Not added into fx in place: a Linear block keeps its output for its backward.)
        return np.add(fx, x)

    @property
    def _cache(self):
        return self.block._cache

    def _grad_array(self, grad_output):
        return self.block._grad_array(grad_output)

    def _backward(self, grad, owned, into, need_input):
        # dL/dx = grad + block'(x)^T grad. The block reads grad first; its first layer then
        # adds its input gradient into the target, which starts as grad itself when grad
        # may be overwritten (a copy otherwise, or the outer target plus grad).
        if into is not None:
            np.add(into, grad, out=into)
            target = into
        else:
            target = grad if owned else grad.copy()
        inner = self.block._backward(grad, False, target, True)
        grads = Gradients()
        _merge(grads, "block.", inner)
        grads.input = target
        return grads

    def __repr__(self):
        return f"Residual({self.block!r})"
