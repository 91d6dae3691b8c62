"""Loss scaling for the NumPy optimisers of ``gradcore.optim``: ``torch.amp.GradScaler``'s
schedule, with the unscale folded into the optimiser's own fused pass.

::

    scaler = gradcore.amp.GradScaler()
    opt = gradcore.optim.Adam(params, lr=1e-3)
    for batch in data:
        grads = backward(scaler.scale(1.0))      # the seed of backprop, times the scale
        scaler.step(opt, grads, max_norm=1.0)    # False (nothing applied) on inf/NaN
        scaler.update()

``step(optimizer, grads)`` reads the gradients once (``gradcore.global_norm`` of the
scaled gradients, accumulated in float64, so it cannot overflow: the unscaled total is
that times ``1 / scale``, and the step is skipped exactly when a gradient holds inf/NaN)
and then hands them to the optimiser unmodified, with ``grad_scale = clip / scale``: the
unscale and the clip are multiplications inside the optimiser's one fused pass over
parameters, gradients and state, so they cost no write of their own. ``unscale_(grads)``
is there for code that needs the unscaled gradients themselves (inspection, a clip of its
own): one read, one write (``gradcore.scale_``); ``step`` then takes them as they are.

The schedule, the arguments and the state dict are torch's (the same keys and values, so
a state dict moves between this class and either torch scaler): the scale is a float32
value; after a step with inf/NaN it is multiplied by ``backoff_factor``, after
``growth_interval`` good steps in a row by ``growth_factor``. Differences from torch: the
gradients are NumPy arrays (float32/float64, and whatever dtypes gradcore's kernels
take), ``step`` takes them and ``max_norm`` (torch: ``unscale_`` then
``clip_grad_norm_``), returns True/False, and the arguments are checked (``init_scale``
a finite number > 0, ``growth_factor`` > 1, ``backoff_factor`` in (0, 1),
``growth_interval`` an int >= 1).
"""

from __future__ import annotations

import math

from . import _loss_scale
from ._args import nonnegative
from ._norms import global_norm, scale_

__all__ = ["GradScaler"]

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


def _clip_factor(max_norm: float, total: float) -> float:
    """torch.nn.utils.clip_grad_norm_'s factor."""
    return min(1.0, max_norm / (total + 1e-6))


def _max_norm(value):
    if value is None:
        return None
    bound = nonnegative(value, "max_norm")
    if bound == 0.0:
        # the clip would be a factor 0, and an optimiser's grad_scale must be > 0
        raise ValueError("max_norm must be > 0, got 0.0")
    return bound


class GradScaler(_loss_scale.ScheduleMethods):
    """A loss scaler for ``gradcore.optim`` optimisers (see the module docstring).

    Args:
        init_scale (float): the first scale (finite, > 0).
        growth_factor (float): the scale's factor after ``growth_interval`` good steps (> 1).
        backoff_factor (float): the scale's factor after a step with inf/NaN, in (0, 1).
        growth_interval (int): good steps between growths (>= 1).
        enabled (bool): False passes through, as torch's: ``scale`` returns its
            argument, ``get_scale`` is 1.0, ``update`` does nothing, ``unscale_`` only
            returns the norm, ``step`` is ``optimizer.step(grads)`` (with the clip by
            ``max_norm`` when given) and no order of calls is enforced.

    One iteration: ``scale``, then optionally ``unscale_(grads)`` (once), then ``step``
    (once), then ``update``. ``unscale_`` twice or ``step`` twice in one iteration raise
    ``RuntimeError``, as in torch.
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self._schedule = _loss_scale.LossScale(init_scale, growth_factor, backoff_factor,
                                               growth_interval)
        self._schedule.start()
        self._enabled = bool(enabled)
        self._new_iteration()

    def _new_iteration(self):
        self._stage = _READY
        self._found_inf = None       # this iteration's inf check, once made
        self._unscaled_total = None  # the L2 norm of the unscaled gradients, once read

    def scale(self, value):
        """``value * scale``: a loss (a float) or an array (the seed of backprop, a new
        array); ``value`` itself when disabled."""
        if not self._enabled:
            return value
        return value * self._schedule.scale

    def unscale_(self, grads) -> float:
        """Divide ``grads`` by the scale in place (one read, one write) and return the L2
        norm of the unscaled gradients (NaN/inf when one holds NaN/inf: ``step`` then
        skips). Disabled: only the norm, nothing written."""
        if not self._enabled:
            return global_norm(grads)
        if self._stage == _UNSCALED:
            raise RuntimeError("unscale_() has already been called since the last update().")
        if self._stage == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = self._schedule.inv_scale()
        total = global_norm(grads) * inv_scale
        scale_(grads, inv_scale)
        self._stage, self._unscaled_total = _UNSCALED, total
        self._found_inf = not math.isfinite(total)
        return total

    def step(self, optimizer, grads, max_norm=None) -> bool:
        """Apply ``optimizer.step`` to the unscaled (and, with ``max_norm``, clipped by the
        global L2 norm, torch's formula) ``grads``, unless one holds inf/NaN; returns True
        when the step was applied (the optimiser's own answer).

        Without ``unscale_`` first: one read pass here, and the factor ``clip / scale`` is
        the optimiser's ``grad_scale`` (the gradients are not written). ``optimizer`` is a
        ``gradcore.optim`` optimiser (anything whose ``step`` takes ``total_norm=`` and
        ``grad_scale=``); its own ``clip_norm`` then acts on the unscaled gradients.
        """
        bound = _max_norm(max_norm)
        if not self._enabled:
            return self._step_disabled(optimizer, grads, bound)
        if self._stage == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if self._stage == _READY:
            grad_scale = self._schedule.inv_scale()
            total = global_norm(grads) * grad_scale
        else:
            grad_scale, total = 1.0, self._unscaled_total
        found_inf = not math.isfinite(total)
        applied = False
        if not found_inf:
            clip = 1.0 if bound is None else _clip_factor(bound, total)
            applied = bool(optimizer.step(grads, total_norm=total * clip,
                                          grad_scale=grad_scale * clip))
        self._stage, self._found_inf, self._unscaled_total = _STEPPED, found_inf, total
        return applied

    @staticmethod
    def _step_disabled(optimizer, grads, bound):
        if bound is None:
            return bool(optimizer.step(grads))
        total = global_norm(grads)
        if not math.isfinite(total):  # the optimiser's own policy decides (skip_nonfinite)
            return bool(optimizer.step(grads, total_norm=total))
        clip = _clip_factor(bound, total)
        return bool(optimizer.step(grads, total_norm=total * clip, grad_scale=clip))

    def update(self, new_scale=None) -> None:
        """Advance the schedule by this iteration's inf check (or set ``new_scale``, a
        finite real > 0) and start the next iteration. Does nothing when disabled."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._schedule.set_scale(new_scale)
        else:
            if self._found_inf is None:
                raise RuntimeError("No inf checks were recorded prior to update(): call "
                                   "unscale_() or step() first.")
            self._schedule.update(self._found_inf)
        self._new_iteration()
