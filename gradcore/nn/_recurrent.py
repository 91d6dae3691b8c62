"""Recurrent layers with PyTorch's interface: ``RNN``, ``LSTM`` and ``GRU``.

The classes hold their parameters as NumPy
arrays named exactly as ``torch.nn.RNN/LSTM/GRU`` names them, run their forward and
backward passes through ``gradcore.rnn_forward`` / ``gradcore.rnn_backward`` (one call per
layer and direction; docs/api.md, "Recurrent layers"), and add what a training loop needs
around them: stacking, bidirectionality, ``batch_first``, torch interchange and truncated BPTT.
This module only arranges data (views, flips, transposes, concatenation); the numerics
are the kernels'. The only arithmetic done here is adding gradients that meet: the two
directions' input gradients of a bidirectional layer, and the parameter gradients of
successive chunks in :func:`truncated_bptt`.

Example::

    import numpy as np, gradcore.nn as gnn

    lstm = gnn.LSTM(32, 64, num_layers=2, bidirectional=True, rng=0)
    x = np.random.default_rng(1).standard_normal((100, 8, 32), dtype=np.float32)
    y, (h_n, c_n) = lstm.forward(x)          # y (100, 8, 128), h_n/c_n (4, 8, 64)
    grads = lstm.backward(np.ones_like(y))   # {"weight_ih_l0": ..., ...}
    grads.input                              # dL/dx, x's shape
    lstm.hidden_grad_norms["l0_reverse"]     # ||dL/dh_t|| per time step

Shapes (L = num_layers, D = 2 if bidirectional else 1, H = hidden_size), as torch:

    x        (T, B, input_size), or (B, T, input_size) with batch_first, or unbatched
             (T, input_size)
    output   (T, B, D*H) (batch_first: (B, T, D*H); unbatched: (T, D*H)); the forward
             direction's features come first, then the reverse direction's
    h0, h_n  (L*D, B, H) (unbatched: (L*D, H)), never batch-first; row l*D + d is layer l,
             direction d (d = 1 the reverse direction); for LSTM h0 is None or the pair
             (h0, c0) and the state returned is (h_n, c_n)

Parameter names (torch's): ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, each with the ``_reverse`` suffix for the reverse direction;
weight_ih (G*H, in), weight_hh (G*H, H), biases (G*H,) with G = 1 (RNN), 4 (LSTM, gates
i, f, g, o), 3 (GRU, gates r, z, n); in = input_size for layer 0, D*H above it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np

from .._args import count
from .._rnn import rnn_backward, rnn_forward
from ._module import Gradients, Module, generator, layer_dtype, to_numpy

__all__ = ["GRU", "LSTM", "RNN", "TBPTTResult", "from_torch", "truncated_bptt"]

class TBPTTResult(NamedTuple):
    """What :func:`truncated_bptt` returns.

    ``grads``
        :class:`Gradients`: parameter gradients summed over the chunks; ``.input`` the
        input gradient of every step (each chunk's, concatenated in time: the gradient
        w.r.t. x of the truncated computation); ``.hx`` the gradient w.r.t. the ``h0``
        given (it only reaches the first chunk); ``.hidden_grad_norms`` each chunk's
        norms concatenated in time, (T,) per layer/direction.
    ``output``
        the whole sequence's output, as ``forward`` would return it.
    ``h_n``
        the final state (LSTM: (h_n, c_n)), to carry into the next call.
    """
    grads: Gradients
    output: np.ndarray
    h_n: Any


class _Cache(NamedTuple):
    caches: list        # rnn_forward caches, index l*D + d
    steps: int
    batch: int
    batched: bool
    out_shape: tuple    # the output's shape as returned to the caller
    state_shape: tuple  # h_n's shape as returned to the caller


class _RNNBase(Module):
    """Common machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU`."""

    _mode = ""           # torch's module class name: "RNN", "LSTM", "GRU"
    _torch_modes = ()    # torch RNNBase.mode values this class reads

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
                 bidirectional=False, dtype=np.float32, rng=None, _cell, _init=True):
        super().__init__()
        self.input_size = count(input_size, "input_size")
        self.hidden_size = count(hidden_size, "hidden_size")
        self.num_layers = count(num_layers, "num_layers")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = layer_dtype(dtype)
        self.cell = _cell
        self._cache = None
        #: per layer/direction norms of dL/dh_t from the last backward (see Gradients)
        self.hidden_grad_norms = {}
        for name, shape in self._shapes().items():
            self._params[name] = np.zeros(shape, dtype=self.dtype)
        if _init:
            self.reset_parameters(rng)

    # ----------------------------------------------------------------- structure
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gate_count(self) -> int:
        return {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[self.cell]

    def _suffixes(self):
        """(layer, direction, suffix) in torch's parameter order."""
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                yield layer, direction, f"_l{layer}" + ("_reverse" if direction else "")

    def _shapes(self):
        gh, h = self.gate_count * self.hidden_size, self.hidden_size
        shapes = {}
        for layer, _, sfx in self._suffixes():
            fan_in = self.input_size if layer == 0 else h * self.num_directions
            shapes["weight_ih" + sfx] = (gh, fan_in)
            shapes["weight_hh" + sfx] = (gh, h)
            if self.bias:
                shapes["bias_ih" + sfx] = (gh,)
                shapes["bias_hh" + sfx] = (gh,)
        return shapes

    def _layer_params(self, sfx):
        p = self._params
        return (p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx),
                p.get("bias_hh" + sfx))

    # ----------------------------------------------------------------- parameters
    def reset_parameters(self, rng=None) -> None:
        """Draw every parameter from uniform(-1/sqrt(H), 1/sqrt(H)), torch's default
        initialisation, in torch's parameter order. ``rng``: a ``numpy.random.Generator``,
        an int seed, or None (fresh entropy)."""
        gen = generator(rng)
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self._params.items():
            p[...] = gen.uniform(-bound, bound, size=p.shape)

    # ----------------------------------------------------------------- torch
    @classmethod
    def from_torch(cls, module, *, dtype=None):
        """A layer with the configuration and parameters of a ``torch.nn.RNN`` / ``LSTM``
        / ``GRU`` (read through ``.detach().cpu().numpy()``; the module is not changed).

        ``dtype`` defaults to the module's (float32 or float64; other torch dtypes need
        an explicit ``dtype``). LSTMs with ``proj_size > 0`` are not supported
        (``ValueError``); a nonzero ``dropout`` is ignored with a warning (gradcore's
        layers have no dropout; in eval mode torch has none either)."""
        import torch

        if not isinstance(module, torch.nn.RNNBase):
            raise TypeError(f"from_torch needs a torch.nn.RNN, LSTM or GRU, got "
                            f"{type(module).__name__}")
        if cls is _RNNBase:
            cls = _CLASS_OF_MODE.get(module.mode)
            if cls is None:
                raise ValueError(f"unsupported torch RNN mode {module.mode!r}")
        elif module.mode not in cls._torch_modes:
            raise TypeError(f"{cls.__name__}.from_torch needs a torch.nn.{cls._mode}, got "
                            f"{type(module).__name__} (mode {module.mode!r})")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"LSTM with proj_size={module.proj_size} is not supported")
        if module.dropout:
            warnings.warn(f"the torch module's dropout={module.dropout} is ignored",
                          stacklevel=2)
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        if dtype is None:
            first = next(iter(state.values()))
            dtype = {torch.float32: np.float32, torch.float64: np.float64}.get(first.dtype)
            if dtype is None:
                raise TypeError(f"the module's parameters are {first.dtype}; pass "
                                f"dtype=np.float32 or np.float64 to convert them")
        state = {k: (v if v.dtype in (torch.float32, torch.float64) else v.double()).numpy()
                 for k, v in state.items()}
        kwargs = dict(bias=module.bias, batch_first=module.batch_first,
                      bidirectional=module.bidirectional, dtype=dtype, _init=False)
        if cls is RNN:
            kwargs["nonlinearity"] = "relu" if module.mode == "RNN_RELU" else "tanh"
        layer = cls(module.input_size, module.hidden_size, module.num_layers, **kwargs)
        layer.load_state_dict(state)
        return layer

    # ----------------------------------------------------------------- forward
    def _array(self, value, label):
        a = to_numpy(value, label)
        if a.dtype != self.dtype:
            raise TypeError(f"{label} has dtype {a.dtype} but the layer's parameters are "
                            f"{self.dtype} (cast it, or build the layer with dtype={a.dtype})")
        return a

    def _state_arrays(self, hx, batch, batched, label):
        """(h, c) of shape (L*D, B, H) (None where not given) from torch's h0 forms."""
        is_lstm = self.cell == "lstm"
        if hx is None:
            return None, None
        if is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM {label} must be None or a pair (h, c), got "
                                f"{type(hx).__name__}")
            h, c = hx
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"{type(self).__name__} {label} must be one array (only LSTM "
                                "takes a pair (h, c))")
            h, c = hx, None
        shape = (self.num_layers * self.num_directions,) + ((batch,) if batched else ()) + (
            self.hidden_size,)
        out = []
        for name, a in (("h", h), ("c", c)):
            if a is None:
                out.append(None)
                continue
            a = self._array(a, f"{label} ({name})" if is_lstm else label)
            if a.shape != shape:
                raise ValueError(f"{label}{f' ({name})' if is_lstm else ''} must have shape "
                                 f"{shape}, got {a.shape}")
            out.append(a if batched else a[:, None, :])
        return tuple(out)

    def forward(self, x, h0=None):
        """Run the layer over a sequence: returns ``(output, h_n)``, for LSTM
        ``(output, (h_n, c_n))``, with torch's shapes (module docstring).

        ``h0`` None means zeros; for LSTM it is a pair ``(h0, c0)`` (either may be None).
        ``x`` must have the layer's dtype. The per-layer/direction caches are kept for
        ``backward`` (until it runs, or the next ``forward``). Like torch's autograd graph,
        they refer to (do not copy) the parameters and a C-contiguous ``x``: change
        neither between ``forward`` and ``backward``. Cache memory per time step and
        layer/direction: ``B*H`` elements (RNN), ``6*B*H`` (LSTM), ``5*B*H`` (GRU), plus
        each layer's output (``B*D*H``) that the layer above reads."""
        x = self._array(x, "x")
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            want = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"x must be {want} or unbatched (T, input_size) with "
                             f"input_size={self.input_size}, got shape {x.shape}")
        batched = x.ndim == 3
        if not batched:
            seq = x[:, None, :]
        elif self.batch_first:
            seq = x.transpose(1, 0, 2)
        else:
            seq = x
        steps, batch = seq.shape[0], seq.shape[1]
        h0, c0 = self._state_arrays(h0, batch, batched, "h0")
        is_lstm = self.cell == "lstm"
        nd, hs = self.num_directions, self.hidden_size
        h_n = np.empty((self.num_layers * nd, batch, hs), dtype=self.dtype)
        c_n = np.empty_like(h_n) if is_lstm else None
        caches = []
        self._cache = None  # a failed forward leaves nothing stale to backpropagate
        layer_in = seq
        for layer in range(self.num_layers):
            outs = []
            for direction in range(nd):
                idx = layer * nd + direction
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                inp = layer_in[::-1] if direction else layer_in
                r = rnn_forward(inp, None if h0 is None else h0[idx], *self._layer_params(sfx),
                                cell=self.cell,
                                c0=None if c0 is None else c0[idx])
                caches.append(r.cache)
                h_n[idx] = r.h_n
                if is_lstm:
                    c_n[idx] = r.c_n
                outs.append(r.y[::-1] if direction else r.y)
            layer_in = outs[0] if nd == 1 else np.concatenate(outs, axis=2)
        output = layer_in
        if not batched:
            output, h_n = output[:, 0, :], h_n[:, 0, :]
            c_n = None if c_n is None else c_n[:, 0, :]
        elif self.batch_first:
            output = output.transpose(1, 0, 2)
        output = np.ascontiguousarray(output)
        self._cache = _Cache(caches, steps, batch, batched, output.shape, h_n.shape)
        return output, ((h_n, c_n) if is_lstm else h_n)

    __call__ = forward

    # ----------------------------------------------------------------- backward
    def backward(self, grad_output, grad_h_n=None, *, clip_hidden=None,
                 retain_cache: bool = False) -> Gradients:
        """Backpropagate through the last ``forward``: returns a :class:`Gradients`, the
        dict ``{parameter name: gradient}`` (state_dict's keys and order) with the input
        gradient as ``.input``, the initial state's as ``.hx`` and the per-step hidden
        gradient norms as ``.hidden_grad_norms`` (also kept as ``self.hidden_grad_norms``).

        ``grad_output``: dL/d output (output's shape; None for zeros). ``grad_h_n``:
        dL/dh_n (h_n's shape), for LSTM None or the pair (dL/dh_n, dL/dc_n) (either may be
        None). ``clip_hidden``: Graves-style element-wise bound on dL/dh_t at every step of
        every layer and direction (``gradcore.rnn_backward``). Layers are processed top
        down; layer k's input gradient (both directions' summed) is layer k-1's output
        gradient. The cache is released afterwards unless ``retain_cache`` (like torch's
        ``retain_graph``)."""
        c = self._cache
        if c is None:
            raise RuntimeError("backward() needs a forward() first (the cache is released "
                               "after each backward unless retain_cache=True)")
        is_lstm = self.cell == "lstm"
        nd, hs = self.num_directions, self.hidden_size
        if grad_output is None:
            g = np.zeros((c.steps, c.batch, nd * hs), dtype=self.dtype)
        else:
            g = self._array(grad_output, "grad_output")
            if g.shape != c.out_shape:
                raise ValueError(f"grad_output must have the output's shape {c.out_shape}, "
                                 f"got {g.shape}")
            if not c.batched:
                g = g[:, None, :]
            elif self.batch_first:
                g = g.transpose(1, 0, 2)
        gh, gc = self._grad_state(grad_h_n, c)
        grads = {}
        norms = {}
        gh0 = np.empty((self.num_layers * nd, c.batch, hs), dtype=self.dtype)
        gc0 = np.empty_like(gh0) if is_lstm else None
        for layer in reversed(range(self.num_layers)):
            grad_in = None
            for direction in range(nd):
                idx = layer * nd + direction
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                gy = g if nd == 1 else g[:, :, direction * hs:(direction + 1) * hs]
                if direction:
                    gy = gy[::-1]
                r = rnn_backward(c.caches[idx], gy, None if gh is None else gh[idx],
                                 None if gc is None else gc[idx], clip_hidden=clip_hidden)
                grads["weight_ih" + sfx] = r.grad_weight_ih
                grads["weight_hh" + sfx] = r.grad_weight_hh
                if self.bias:
                    grads["bias_ih" + sfx] = r.grad_bias_ih
                    grads["bias_hh" + sfx] = r.grad_bias_hh
                gh0[idx] = r.grad_h0
                if is_lstm:
                    gc0[idx] = r.grad_c0
                gx = r.grad_x
                norm = np.asarray(r.hidden_grad_norms, dtype=np.float64)
                if direction:
                    gx = gx[::-1]
                    norm = norm[::-1].copy()
                norms[f"l{layer}" + ("_reverse" if direction else "")] = norm
                if grad_in is None:
                    grad_in = gx
                elif grad_in.flags.writeable:
                    np.add(grad_in, gx, out=grad_in)
                else:
                    grad_in = grad_in + gx
            g = grad_in
        if not c.batched:
            g, gh0 = g[:, 0, :], gh0[:, 0, :]
            gc0 = None if gc0 is None else gc0[:, 0, :]
        elif self.batch_first:
            g = g.transpose(1, 0, 2)
        if not retain_cache:
            self._cache = None
        ordered = {name: grads[name] for name in self._params}
        norms = {sfx[1:]: norms[sfx[1:]] for _, _, sfx in self._suffixes()}
        self.hidden_grad_norms = norms
        return Gradients(ordered, input=np.ascontiguousarray(g),
                         hx=(gh0, gc0) if is_lstm else gh0, hidden_grad_norms=norms)

    def _grad_state(self, grad_h_n, c):
        if grad_h_n is None:
            return None, None
        is_lstm = self.cell == "lstm"
        if is_lstm:
            if not isinstance(grad_h_n, (tuple, list)) or len(grad_h_n) != 2:
                raise TypeError("LSTM grad_h_n must be None or a pair (grad_h_n, grad_c_n), "
                                f"got {type(grad_h_n).__name__}")
            pair = grad_h_n
        else:
            if isinstance(grad_h_n, (tuple, list)):
                raise TypeError(f"{type(self).__name__} grad_h_n must be one array (only "
                                "LSTM takes a pair)")
            pair = (grad_h_n, None)
        out = []
        for name, a in zip(("grad_h_n", "grad_c_n"), pair):
            if a is None:
                out.append(None)
                continue
            a = self._array(a, name)
            if a.shape != c.state_shape:
                raise ValueError(f"{name} must have h_n's shape {c.state_shape}, got {a.shape}")
            out.append(a if c.batched else a[:, None, :])
        return tuple(out)

    # ----------------------------------------------------------------- TBPTT
    def truncated_bptt(self, x, k, loss_grad_fn, h0=None, *, clip_hidden=None) -> TBPTTResult:
        """``truncated_bptt(self, x, k, loss_grad_fn, h0, clip_hidden=...)`` (see there)."""
        return truncated_bptt(self, x, k, loss_grad_fn, h0, clip_hidden=clip_hidden)

    def __repr__(self):
        extra = ""
        if self.num_layers != 1:
            extra += f", num_layers={self.num_layers}"
        if isinstance(self, RNN) and self.nonlinearity != "tanh":
            extra += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            extra += ", bias=False"
        if self.batch_first:
            extra += ", batch_first=True"
        if self.bidirectional:
            extra += ", bidirectional=True"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
                f"dtype={self.dtype})")


class RNN(_RNNBase):
    """Elman RNN, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, act = tanh or relu
    (``nonlinearity``), like ``torch.nn.RNN``.

    ``RNN(input_size, hidden_size, num_layers=1, *, nonlinearity="tanh", bias=True,
    batch_first=False, bidirectional=False, dtype=np.float32, rng=None)``; ``rng`` (a
    ``numpy.random.Generator`` or int seed) drives the uniform(-1/sqrt(H), 1/sqrt(H))
    initialisation. See the module docstring for shapes and names."""

    _mode = "RNN"
    _torch_modes = ("RNN_TANH", "RNN_RELU")

    def __init__(self, input_size, hidden_size, num_layers=1, *, nonlinearity="tanh", bias=True,
                 batch_first=False, bidirectional=False, dtype=np.float32, rng=None, _init=True):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dtype=dtype, rng=rng,
                         _cell="rnn_" + nonlinearity, _init=_init)


class LSTM(_RNNBase):
    """Long short-term memory, like ``torch.nn.LSTM`` (gates i, f, g, o; no projection).

    ``LSTM(input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
    bidirectional=False, dtype=np.float32, rng=None)``. The state is a pair: ``forward(x,
    (h0, c0))`` returns ``(output, (h_n, c_n))``; ``backward(grad_output, (grad_h_n,
    grad_c_n))``."""

    _mode = "LSTM"
    _torch_modes = ("LSTM",)

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
                 bidirectional=False, dtype=np.float32, rng=None, _init=True):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dtype=dtype, rng=rng, _cell="lstm",
                         _init=_init)


class GRU(_RNNBase):
    """Gated recurrent unit, like ``torch.nn.GRU`` (gates r, z, n;
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).

    ``GRU(input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
    bidirectional=False, dtype=np.float32, rng=None)``."""

    _mode = "GRU"
    _torch_modes = ("GRU",)

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
                 bidirectional=False, dtype=np.float32, rng=None, _init=True):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dtype=dtype, rng=rng, _cell="gru",
                         _init=_init)


_CLASS_OF_MODE = {"RNN_TANH": RNN, "RNN_RELU": RNN, "LSTM": LSTM, "GRU": GRU}


def from_torch(module, *, dtype=None):
    """The gradcore layer (RNN, LSTM or GRU, by the module's type) equivalent to a
    ``torch.nn.RNN/LSTM/GRU``; see ``RNN.from_torch``."""
    return _RNNBase.from_torch(module, dtype=dtype)


def truncated_bptt(layer, x, k, loss_grad_fn: Callable, h0=None, *,
                   clip_hidden=None) -> TBPTTResult:
    """Truncated backpropagation through time (TBPTT(k, k)) over a long sequence.

    The sequence ``x`` (the layer's layout: (T, B, I), (B, T, I) with batch_first, or
    (T, I)) is cut into chunks of ``k`` time steps (the last may be shorter). For each
    chunk in order::

        output, h_n = layer.forward(x_chunk, state)
        grad = loss_grad_fn(steps, output, h_n)
        layer.backward(*grad)            # gradients accumulated over chunks
        state = h_n                      # carried forward, detached

    ``state`` starts as ``h0`` (None: zeros; LSTM: the pair (h0, c0)). ``steps`` is the
    chunk's ``slice(start, stop)`` of time steps, so ``targets[steps]`` (or
    ``targets[:, steps]`` batch-first) picks the chunk's targets. ``loss_grad_fn`` returns
    dL/d output for the chunk (output's shape), or a tuple ``(grad_output, grad_h_n)`` to
    feed gradient into the chunk's final state too (LSTM: ``grad_h_n`` is itself a pair;
    either part may be None). It is the place to compute and record the loss.

    The carried state is a plain array, so no gradient crosses a chunk border: the result
    equals a torch loop that calls ``h.detach()`` between chunks, and with ``k >= T`` it
    is full BPTT. (For a bidirectional layer the reverse direction, like torch's, runs
    within each chunk and its carried state enters the next chunk's start.)

    Returns :class:`TBPTTResult` ``(grads, output, h_n)``: parameter gradients summed over
    the chunks (a :class:`Gradients`: ``.input``, ``.hx``, ``.hidden_grad_norms`` cover the
    whole sequence), the whole output, and the final state. ``layer.hidden_grad_norms``
    is set to the whole sequence's norms. Memory: one chunk's cache at a time.
    """
    if not isinstance(layer, _RNNBase):
        raise TypeError(f"layer must be a gradcore.nn RNN, LSTM or GRU, got {type(layer).__name__}")
    k = count(k, "k")
    if not callable(loss_grad_fn):
        raise TypeError(f"loss_grad_fn must be callable, got {type(loss_grad_fn).__name__}")
    x = layer._array(x, "x")
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be 2-D (unbatched) or 3-D, got shape {x.shape}")
    axis = 1 if (x.ndim == 3 and layer.batch_first) else 0
    steps_total = x.shape[axis]
    if steps_total == 0:
        raise ValueError(f"x has no time steps (shape {x.shape})")
    state = h0
    total = None
    hx_grad = None
    outputs, grad_inputs, norms = [], [], {}
    for start in range(0, steps_total, k):
        steps = slice(start, min(start + k, steps_total))
        chunk = x[:, steps] if axis == 1 else x[steps]
        output, h_n = layer.forward(chunk, state)
        grad = loss_grad_fn(steps, output, h_n)
        grad_output, grad_h_n = grad if isinstance(grad, tuple) else (grad, None)
        g = layer.backward(grad_output, grad_h_n, clip_hidden=clip_hidden)
        if total is None:
            total = {name: np.array(v, copy=True) for name, v in g.items()}
            hx_grad = g.hx
        else:
            for name, v in g.items():
                np.add(total[name], v, out=total[name])
        outputs.append(output)
        grad_inputs.append(g.input)
        for key, v in g.hidden_grad_norms.items():
            norms.setdefault(key, []).append(v)
        state = h_n
    norms = {key: np.concatenate(v) for key, v in norms.items()}
    layer.hidden_grad_norms = norms
    grads = Gradients(total, input=np.concatenate(grad_inputs, axis=axis), hx=hx_grad,
                      hidden_grad_norms=norms)
    return TBPTTResult(grads, np.concatenate(outputs, axis=axis), state)
