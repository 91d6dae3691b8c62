"""What every gradcore.nn layer shares: parameters, buffers and sublayers by name, torch's
``state_dict`` naming and order, train/eval mode, and the gradients ``backward`` returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _core

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def layer_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def to_numpy(value, label):
    """A NumPy array for ``value``: arrays as is, torch tensors (on any device, with or
    without grad) through ``.detach().cpu()``, other array-likes by conversion."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
    return _core.host_array(value, label, False)


def generator(rng):
    """A ``numpy.random.Generator`` from a Generator, an int seed or None (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Gradients(dict):
    """What ``backward`` returns: a ``dict`` of parameter gradients keyed by parameter
    name, with the same keys in the same order as ``state_dict()``/``parameters()`` (so
    ``zip(layer.parameters(), grads.values())`` pairs them), plus three attributes:

    ``input``
        dL/dx, x's shape (batch_first / unbatched as x was given); None when the input's
        gradient was not asked for (``need_input_grad=False``).
    ``hx``
        recurrent layers: dL/dh0, shaped like h0 ((L*D, B, H)); for LSTM the pair
        (dL/dh0, dL/dc0). Computed also when ``forward`` got ``h0=None`` (the gradient
        w.r.t. the zero state).
    ``hidden_grad_norms``
        recurrent layers: dict ``"l{k}"`` / ``"l{k}_reverse"`` -> float64 (T,): entry t
        is the L2 norm over the batch of dL/dh_t of that layer and direction at time
        step t of the *input sequence* (the reverse direction's norms are flipped back
        into input time order), before any ``clip_hidden``. Growth towards small t is
        the picture of exploding gradients; decay, of vanishing ones.
    """

    def __init__(self, grads=(), input=None, hx=None, hidden_grad_norms=None):
        super().__init__(grads)
        self.input = input
        self.hx = hx
        self.hidden_grad_norms = {} if hidden_grad_norms is None else hidden_grad_norms

    def __repr__(self):
        keys = ", ".join(self.keys())
        shape = None if self.input is None else self.input.shape
        return f"Gradients({{{keys}}}, input={shape})"


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` reports (as torch does)."""
    missing_keys: list
    unexpected_keys: list


class Module:
    """The base of gradcore.nn's layers.

    A layer holds NumPy arrays by name: parameters (what an optimiser updates and
    ``backward`` returns gradients for), buffers (state such as a batch norm's running
    statistics) and sublayers. ``state_dict()`` names and orders them as torch does (own
    parameters, own buffers, then each sublayer's under ``"<name>."``), so a state dict
    moves between a gradcore model and the same torch model. Parameters and buffers are
    attributes (``layer.weight``); assigning one copies into the existing array.
    """

    training = True

    def __init__(self):
        d = self.__dict__
        d["_params"], d["_buffers"], d["_children"] = {}, {}, {}

    # ----------------------------------------------------------------- names
    def _named_arrays(self, prefix="", buffers=True):
        yield from ((prefix + k, v) for k, v in self._params.items())
        if buffers:
            yield from ((prefix + k, v) for k, v in self._buffers.items())
        for name, child in self._children.items():
            yield from child._named_arrays(f"{prefix}{name}.", buffers)

    def parameters(self) -> list:
        """The parameter arrays themselves (not copies), in torch's order: update them in
        place (``p -= lr * g``, or through ``gradcore.optim``) to train. Same order as
        ``state_dict()`` and the gradients ``backward`` returns."""
        return [p for _, p in self._named_arrays(buffers=False)]

    def named_parameters(self) -> list:
        """[(name, array), ...] in torch's order; the arrays are the parameters themselves."""
        return list(self._named_arrays(buffers=False))

    def state_dict(self) -> dict:
        """{name: copy} of every parameter and buffer, in torch's order and naming, so it
        loads into a torch module of the same configuration (after ``torch.from_numpy``)
        and back into this class with ``load_state_dict``."""
        return {name: np.array(a, copy=True) for name, a in self._named_arrays()}

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy parameters and buffers in from a mapping of name -> array (NumPy arrays,
        torch tensors, anything array-like), converting to each array's dtype.

        Every entry is checked before anything is written: a wrong shape raises
        ``ValueError`` naming the entry and both shapes, a non-numeric dtype
        ``TypeError``; with ``strict`` (the default) missing or unexpected names raise
        ``ValueError`` listing them. Returns ``(missing_keys, unexpected_keys)``."""
        if not hasattr(state_dict, "items"):
            raise TypeError(f"state_dict must be a mapping of name -> array, "
                            f"got {type(state_dict).__name__}")
        expected = dict(self._named_arrays())
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing: {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected: {', '.join(map(str, unexpected))}")
            raise ValueError(f"state_dict does not match {self!r}: " + "; ".join(parts))
        staged = []
        for name, target in expected.items():
            if name not in state_dict:
                continue
            value = to_numpy(state_dict[name], name)
            if value.dtype.kind not in "fiu":
                raise TypeError(f"{name}: expected a real floating-point array, got dtype "
                                f"{value.dtype}")
            if value.shape != target.shape:
                raise ValueError(f"{name}: expected shape {target.shape}, got {value.shape}")
            staged.append((target, value))
        for target, value in staged:
            target[...] = value  # casts to the array's dtype
        return IncompatibleKeys(missing, unexpected)

    def __getattr__(self, name):
        for table in ("_params", "_buffers", "_children"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self.__dict__.get("_params", ()) or name in self.__dict__.get("_buffers", ()):
            self.load_state_dict({name: value}, strict=False)
        else:
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------------- mode
    def train(self, mode: bool = True):
        """Training mode (``mode=True``) or evaluation mode, for this layer and every
        sublayer; returns the layer. Only layers that behave differently care: batch
        norm (batch or running statistics) and dropout."""
        object.__setattr__(self, "training", bool(mode))
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self):
        """``train(False)``."""
        return self.train(False)

    # ----------------------------------------------------------------- passes
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def backward(self, grad_output, *, need_input_grad: bool = True) -> Gradients:
        """Gradients of the last ``forward`` for ``grad_output`` = dL/d output: a
        :class:`Gradients` of the parameters' gradients, ``.input`` dL/dx (None with
        ``need_input_grad=False``, which saves the input-gradient product of a first
        layer). ``grad_output`` is not modified."""
        if getattr(self, "_cache", None) is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._backward(self._grad_array(grad_output), False, None, bool(need_input_grad))

    def _grad_array(self, grad_output):
        return to_numpy(grad_output, "grad_output")

    def _backward(self, grad, owned, into, need_input):
        """The backward pass behind ``backward``. ``owned``: ``grad`` was made by the layer
        above inside this model and may be overwritten. ``into``: None, or an array of
        the input's shape to which the input gradient is added (a residual connection's
        skip gradient; a layer adds it in the pass that writes its input gradient when
        it can); ``.input`` is then ``into``."""
        raise NotImplementedError


def add_input_grad(grad_input, into):
    """``into += grad_input``, for layers whose kernels cannot add on write."""
    if into is None:
        return grad_input
    np.add(into, grad_input, out=into)
    return into
