"""Will this recurrent matrix make gradients explode or vanish?

``recurrent_gain(weight_hh, cell)`` applies the conditions of Pascanu, Mikolov & Bengio,
"On the difficulty of training recurrent neural networks" (ICML 2013, section 2.1).
For ``h_t = act(W h_{t-1} + U x_t + b)`` with ``|act'| <= gamma``, the Jacobian
``dh_t/dh_{t-1} = diag(act'(.)) W`` has norm at most ``gamma * sigma_max(W)``, so

* ``sigma_max < 1/gamma`` is *sufficient* for the long-term gradients to vanish: they
  shrink at least like ``(gamma * sigma_max)^k`` over ``k`` steps ("vanishing certain");
* ``sigma_max > 1/gamma`` is *necessary* for them to explode, but not sufficient
  ("explosion possible": whether they do depends on the data and the hidden states);
* ``sigma_max == 1/gamma`` (within ``rtol``) rules both out: the bound neither forces
  decay nor allows growth ("borderline"), the case of an orthogonal or identity
  initialisation.

``gamma`` is 1 for tanh, 1 for relu (its derivative is 0 or 1) and 1/4 for the sigmoid.

Cells (the layouts of ``gradcore.rnn_forward`` and torch): ``weight_hh`` is ``(G*H, H)``
with ``G`` = 1 for ``"rnn_tanh"``/``"rnn_relu"``, 4 for ``"lstm"`` (gate blocks i, f, g,
o) and 3 for ``"gru"`` (r, z, n). For the gated cells ``per_gate`` gives the largest
singular value of every gate's ``H x H`` block, and the verdict compares the block of the
candidate (lstm ``g``, gru ``n``, both tanh, so the bound is 1) with the bound. That
verdict is only indicative: in an LSTM or GRU the gradient also flows through the cell
state (scaled by the forget gate) or the ``z * h`` path (scaled by the update gate), and
the candidate path is further scaled by the input/output or reset gates, so the gates'
values during training decide as much as ``W``. ``RecurrentGain.largest_singular_value``
is the value that the verdict uses (the whole matrix for plain RNNs, the candidate block
for gated cells).

The largest singular value is ``numpy.linalg.norm(W, 2)`` in float64, which computes the
singular values with LAPACK (``gesdd``) through NumPy: O(H^3), milliseconds for H in the
hundreds, not one of gradcore's C++ kernels.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple

import numpy as np

__all__ = ["RecurrentGain", "recurrent_gain"]

#: cell -> (gate names in torch's order, gate whose block decides the verdict, gamma of
#: that block's activation)
_CELLS = {
    "rnn_tanh": ((), None, 1.0),
    "rnn_relu": ((), None, 1.0),
    "lstm": (("i", "f", "g", "o"), "g", 1.0),
    "gru": (("r", "z", "n"), "n", 1.0),
}
_ACTIVATION = {"rnn_tanh": "tanh", "rnn_relu": "relu", "lstm": "tanh", "gru": "tanh"}


class RecurrentGain(NamedTuple):
    """What ``recurrent_gain`` found.

    largest_singular_value: sigma_max of ``weight_hh`` (rnn_tanh, rnn_relu) or of the
        candidate block (lstm ``g``, gru ``n``): the value compared with ``bound``.
    bound: ``1/gamma`` for the activation of that matrix (1 for tanh and relu).
    ratio: ``largest_singular_value / bound``; above 1: explosion possible, below 1:
        vanishing certain.
    verdict: a plain-English sentence starting with ``"explosion possible"``,
        ``"vanishing certain"`` or ``"borderline"``.
    per_gate: gate name -> sigma_max of that gate's ``H x H`` block (lstm: i, f, g, o;
        gru: r, z, n); empty for rnn_tanh and rnn_relu.
    """

    largest_singular_value: float
    bound: float
    ratio: float
    verdict: str
    per_gate: Dict[str, float]


def _sigma_max(w: np.ndarray) -> float:
    return float(np.linalg.norm(w, 2))  # LAPACK SVD through NumPy


def _as_matrix(weight_hh) -> np.ndarray:
    if hasattr(weight_hh, "detach") and hasattr(weight_hh, "cpu"):  # a torch tensor
        weight_hh = weight_hh.detach().cpu().numpy()
    w = np.asarray(weight_hh)
    if w.dtype.kind not in "fiu" or w.dtype == np.bool_:
        raise TypeError(f"weight_hh must hold real numbers, got dtype {w.dtype}")
    return w.astype(np.float64, copy=False)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def recurrent_gain(weight_hh, cell: str = "rnn_tanh", *, rtol: float = 1e-5) -> RecurrentGain:
    """The largest singular value of a recurrent matrix against the bound of Pascanu,
    Mikolov & Bengio (2013), with a plain verdict.

    ``weight_hh``: the ``(G*H, H)`` hidden-to-hidden matrix (a NumPy array, an array-like
    or a torch tensor), G = 1 for ``"rnn_tanh"``/``"rnn_relu"``, 4 for ``"lstm"``
    (i, f, g, o), 3 for ``"gru"`` (r, z, n). ``rtol``: ``sigma_max`` within this relative
    distance of the bound is "borderline" (so that a float32 orthogonal matrix, whose
    singular values are 1 up to rounding, does not flip between verdicts).

    >>> import numpy as np
    >>> recurrent_gain(1.5 * np.eye(8)).verdict
    'explosion possible: sigma_max = 1.5 > 1/gamma = 1 (tanh, gamma = 1); gradients may (not must) grow exponentially with the number of steps'

    Raises ValueError for an unknown cell, a shape that is not ``(G*H, H)`` with H >= 1,
    or non-finite entries.
    """
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, _CELLS))}; got {cell!r}")
    if isinstance(rtol, bool) or not (isinstance(rtol, (int, float)) and 0 <= rtol < 1):
        raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")
    gates, decisive, gamma = _CELLS[cell]
    w = _as_matrix(weight_hh)
    n_gates = max(len(gates), 1)
    if w.ndim != 2 or w.shape[1] < 1 or w.shape[0] != n_gates * w.shape[1]:
        raise ValueError(f"weight_hh for cell {cell!r} must have shape ({n_gates}*H, H) with "
                         f"H >= 1; got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weight_hh holds NaN or inf values")
    h = w.shape[1]

    per_gate = {g: _sigma_max(w[k * h:(k + 1) * h]) for k, g in enumerate(gates)}
    sigma = per_gate[decisive] if decisive else _sigma_max(w)
    bound = 1.0 / gamma
    ratio = sigma / bound

    act = _ACTIVATION[cell]
    name = f"sigma_max(W_h{decisive})" if decisive else "sigma_max"
    facts = f"{act}, gamma = {_fmt(gamma)}"
    if math.isclose(sigma, bound, rel_tol=rtol, abs_tol=0.0):
        verdict = (f"borderline: {name} = {_fmt(sigma)} ~= 1/gamma = {_fmt(bound)} ({facts}); "
                   "the bound neither forces gradients to vanish nor lets them grow")
    elif sigma > bound:
        verdict = (f"explosion possible: {name} = {_fmt(sigma)} > 1/gamma = {_fmt(bound)} "
                   f"({facts}); gradients may (not must) grow exponentially with the "
                   "number of steps")
    else:
        verdict = (f"vanishing certain: {name} = {_fmt(sigma)} < 1/gamma = {_fmt(bound)} "
                   f"({facts}); gradients shrink at least like {_fmt(gamma * sigma)}^k "
                   "over k steps")
    if decisive:
        verdict += (f" [{cell}: candidate block only; indicative, the gates also scale "
                    "the gradient]")
    return RecurrentGain(sigma, bound, ratio, verdict, per_gate)
