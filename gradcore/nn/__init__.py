"""Layers with PyTorch's interface for NumPy models, on gradcore's kernels.

Import it explicitly (``import gradcore.nn``). Every layer holds its parameters as NumPy
arrays named as torch names them (``state_dict()`` moves between a gradcore model and
the same torch model), runs ``forward(x)`` and then ``backward(grad_output)``, which
returns a :class:`Gradients` (``{name: gradient}`` in ``parameters()`` order, ``.input``
dL/dx), and switches with ``train()`` / ``eval()``:

- feed-forward: :class:`Linear` (an activation fused into the product), :class:`BatchNorm1d`,
  :class:`LayerNorm`, :class:`Dropout` (its mask regenerated in the backward, not stored), combined with :class:`Sequential` and :class:`Residual` (a skip
  connection, ``y = x + block(x)``);
- recurrent: :class:`RNN`, :class:`LSTM`, :class:`GRU` (stacked, bidirectional,
  ``batch_first``, :func:`from_torch`, :func:`truncated_bptt`; see their module's notes
  on shapes and names).

Example, a residual MLP trained with gradcore's optimiser::

    import numpy as np, gradcore.nn as gnn, gradcore.optim as optim

    block = lambda: gnn.Residual(gnn.Sequential(gnn.Linear(64, 64), gnn.BatchNorm1d(64),
                                                gnn.Linear(64, 64, activation="relu")))
    model = gnn.Sequential(gnn.Linear(16, 64, activation="relu"), block(), block(),
                           gnn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, clip_norm=1.0)
    y = model.forward(x)                                  # x (batch, 16) float32
    grads = model.backward(dloss_dy, need_input_grad=False)
    opt.step(list(grads.values()))
"""

from ._containers import Residual, Sequential
from ._layers import BatchNorm1d, Dropout, LayerNorm, Linear
from ._module import Gradients, IncompatibleKeys, Module
from ._recurrent import GRU, LSTM, RNN, TBPTTResult, from_torch, truncated_bptt

__all__ = ["GRU", "LSTM", "RNN", "BatchNorm1d", "Dropout", "Gradients", "IncompatibleKeys", "LayerNorm", "Linear",
           "Module", "Residual", "Sequential", "TBPTTResult", "from_torch", "truncated_bptt"]
