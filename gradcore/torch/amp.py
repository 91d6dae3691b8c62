"""A drop-in for ``torch.amp.GradScaler`` whose unscale, inf/NaN check, global norm and
clip are one read and one write of the gradients.

::

    from gradcore.torch.amp import GradScaler

    scaler = GradScaler()                                # was torch.amp.GradScaler("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    total = scaler.unscale_(optimizer, max_norm=1.0)     # unscale + clip, fused
    scaler.step(optimizer)                               # skipped on inf/NaN
    scaler.update()

Everything torch's GradScaler has works as there, with the same semantics: the
constructor, ``scale`` (a tensor or nested lists/tuples of tensors), ``unscale_``,
``step`` (returns None and leaves the optimizer untouched when a gradient holds inf/NaN;
``RuntimeError`` for ``unscale_`` twice, ``step`` twice, a closure), ``update``, the getters
and setters, ``is_enabled``, ``state_dict`` / ``load_state_dict`` (the same keys and
values: a state dict moves between this class and torch's both ways), optimizers with
their own scale handling (``_step_supports_amp_scaling``, e.g. fused Adam) and the
disabled mode, where everything passes through.

**What gradcore does.** For the optimizer's gradients, when gradcore serves all of them
(CPU, dense, contiguous, plain tensors, a dtype gradcore's in-place kernels take):

- one read pass, ``gradcore.global_norm`` of the still-scaled gradients, accumulated in
  float64 so it cannot overflow: the unscaled total is that times ``inv_scale`` (torch's:
  ``1 / scale`` in float64, rounded to float32), and the step is skipped exactly when it is
  not finite, i.e. when any element is inf or NaN (torch's check);
- one write pass, ``gradcore.scale_(grads, inv_scale * clip)``: one multiplication per
  element.

**What differs from torch, and why.**

- ``unscale_(optimizer, max_norm=None, norm_type=2.0)``: given ``max_norm``, the clip of
  ``torch.nn.utils.clip_grad_norm_`` (factor ``min(1, max_norm / (total + 1e-6))``) is
  folded into the one write, and the unscaled total norm comes back as a 0-dim tensor
  (what ``clip_grad_norm_`` returns, in the gradients' promoted dtype). Torch needs
  ``unscale_`` then ``clip_grad_norm_``: three reads and two writes. When a gradient holds
  inf/NaN the gradients are unscaled but not clipped (the step is skipped anyway). Without
  ``max_norm`` it is torch's ``unscale_`` and returns None.
- A plain ``unscale_`` remembers the total it measured: ``gradcore.torch.clip_grad_norm_``
  called next on the same gradients (the same tensors, none modified since, L2) uses it
  instead of reading them again.
- float16 gradients are accepted. torch refuses them ("Attempting to unscale FP16
  gradients.") because its float16 unscale loses precision; gradcore's check accumulates
  in float64 and multiplies each element once.
- float32 rounding: gradcore multiplies once by ``inv_scale * clip``; torch rounds after
  the unscale and again after the clip. With torch's power-of-two scales the unscaled
  gradients are identical; clipped ones may differ in the last bit, and the total (float64
  accumulation) in the last bits of float32.
- Argument checks: ``init_scale`` must be a finite number > 0, ``growth_factor`` > 1,
  ``backoff_factor`` in (0, 1) and ``growth_interval`` an int >= 1 (``TypeError`` /
  ``ValueError`` naming the argument; torch asserts only the two factors), also in the
  setters and ``load_state_dict``, and in disabled mode; ``unscale_``, ``step`` or
  ``update`` before the first ``scale()``, and ``update()`` with no inf check recorded,
  raise ``RuntimeError`` (torch: ``AssertionError``); a bad ``update(new_scale)`` raises
  ``ValueError``.

Gradients gradcore does not serve (CUDA, sparse, non-contiguous, other dtypes, tensor
subclasses; if any one of an optimizer's gradients is such, all of them go this way) are
unscaled by torch's own ``torch._amp_foreach_non_finite_check_and_unscale_``, as torch's
GradScaler does, and clipped by ``gradcore.torch.clip_grad_norm_``: the class works
wherever torch's does.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections import abc, defaultdict
from enum import Enum

import torch
import torch.autograd.graph

import gradcore as _gc
from gradcore import _loss_scale
from gradcore._args import nonnegative

from . import _host_views, _unscale_record, clip_grad_norm_

__all__ = ["GradScaler", "OptState"]

# The dtypes the fused path may take, asked of the compiled core (below), so that a build
# whose in-place kernels take more dtypes serves them without a change here.
_CANDIDATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _refresh_per_optimizer_state():
    return {"stage": OptState.READY, "found_inf_per_device": {}}


@functools.cache
def _gradcore_dtypes() -> frozenset:
    """The dtypes gradcore both reads (global_norm) and scales in place (scale_)."""
    served = set()
    for dtype in _CANDIDATE_DTYPES:
        probe = torch.empty(0, dtype=dtype)
        try:
            _gc.global_norm([probe])
            _gc.scale_([probe], 1.0)
        except TypeError:
            continue
        served.add(dtype)
    return frozenset(served)


def _served(grads) -> bool:
    """Whether gradcore can read and scale every one of ``grads`` in its own memory."""
    dtypes = _gradcore_dtypes()
    for g in grads:
        if (type(g) not in _PLAIN_TYPES or not g.is_cpu or g.layout is not torch.strided
                or g.dtype not in dtypes or not g.is_contiguous() or g.is_neg() or g.is_conj()):
            return False
    # The same memory twice would be scaled twice: torch's foreach path does the same.
    filled = [g.data_ptr() for g in grads if g.numel() > 0]
    return len(set(filled)) == len(filled)


def _norm_order(norm_type) -> float:
    """norm_type as a float p > 0 or inf (also 'inf'), else ValueError naming it."""
    if isinstance(norm_type, bool):
        raise TypeError("norm_type must be a real number or 'inf', got bool")
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"norm_type must be a real number or 'inf', got {norm_type!r}") from None
    if not p > 0.0:
        raise ValueError(f"norm_type must be > 0 or inf, got {norm_type!r}")
    return p


def _clip_factor(max_norm: float, total: float) -> float:
    """torch.nn.utils.clip_grad_norm_'s factor."""
    return min(1.0, max_norm / (total + 1e-6))


def _grads_of(optimizer):
    """(parameters with a gradient, their gradients), in param_groups order."""
    params, grads = [], []
    for group in optimizer.param_groups:
        for param in group["params"]:
            if not isinstance(param, torch.Tensor):
                raise TypeError(f"expected param to be torch.Tensor, got {type(param).__name__}")
            if param.grad is not None:
                params.append(param)
                grads.append(param.grad)
    return params, grads


class _PerDevice:
    """One copy of a 0-dim tensor per device (torch's _MultiDeviceReplicator)."""

    def __init__(self, master):
        self.master = master
        self.tensors = {}

    def get(self, device):
        t = self.tensors.get(device)
        if t is None:
            t = self.tensors[device] = self.master.to(device=device, non_blocking=True, copy=True)
        return t


class GradScaler(_loss_scale.ScheduleMethods):
    """``torch.amp.GradScaler`` with gradcore's fused unscale (see the module docstring).

    Args:
        device (str): the device type of ``update(new_scale)`` tensors, as torch's
            (default ``"cpu"``; ``"cuda"`` without CUDA disables the scaler with torch's
            warning).
        init_scale (float): the first scale (finite, > 0).
        growth_factor (float): the scale's factor after ``growth_interval`` good steps (> 1).
        backoff_factor (float): the scale's factor after a step with inf/NaN, in (0, 1).
        growth_interval (int): good steps between growths (>= 1).
        enabled (bool): False makes every method pass through (``scale`` returns its
            argument, ``step`` calls ``optimizer.step``, ``get_scale`` is 1.0,
            ``unscale_(..., max_norm=)`` still clips and returns the total).
    """

    def __init__(self, device="cpu", init_scale=2.0 ** 16, growth_factor=2.0,
                 backoff_factor=0.5, growth_interval=2000, enabled=True):
        self._schedule = _loss_scale.LossScale(init_scale, growth_factor, backoff_factor,
                                               growth_interval)
        self._device = device
        self._enabled = bool(enabled)
        if self._device == "cuda" and self._enabled and not torch.cuda.is_available():
            warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  "
                          "Disabling.", stacklevel=2)
            self._enabled = False
        self._scale = None  # the float32 scale tensor, made on the first scale() call
        self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    # ------------------------------------------------------------------ scale

    def _check_started(self, funcname):
        if self._scale is None:
            raise RuntimeError(f"Attempted {funcname} but _scale is None.  This may indicate your "
                               "script did not use scaler.scale(loss or outputs) earlier in the "
                               "iteration.")

    def _start(self, device):
        self._schedule.start()
        self._scale = torch.full((), self._schedule.scale, dtype=torch.float32, device=device)

    def _scale_changed(self):
        if self._scale is not None:
            self._scale.fill_(self._schedule.scale)

    def scale(self, outputs):
        """``outputs`` (a tensor, or nested lists/tuples/iterables of tensors) times the
        scale, as torch's: the same structure back; unchanged when disabled."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, torch.Tensor):
            if self._scale is None:
                self._start(outputs.device)
            return outputs * self._scale.to(device=outputs.device, non_blocking=True)
        per_device = []

        def apply_scale(val):
            if isinstance(val, torch.Tensor):
                if not per_device:
                    if self._scale is None:
                        self._start(val.device)
                    per_device.append(_PerDevice(self._scale))
                return val * per_device[0].get(val.device)
            if isinstance(val, abc.Iterable):
                scaled = map(apply_scale, val)
                if isinstance(val, (list, tuple)):
                    return type(val)(scaled)
                return scaled
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")

        return apply_scale(outputs)

    # ------------------------------------------------------------------ unscale

    def unscale_(self, optimizer, max_norm=None, norm_type=2.0):
        """Divide the optimizer's gradients by the scale in place and record whether any
        holds inf/NaN (``torch.amp.GradScaler.unscale_``); returns None.

        gradcore's extension: with ``max_norm``, also clip them as
        ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)`` would, in the same
        write, and return the unscaled total norm (0-dim tensor, before clipping).
        ``max_norm`` must be a real >= 0, ``norm_type`` a real > 0 or inf.
        """
        bound = None if max_norm is None else nonnegative(max_norm, "max_norm")
        p = _norm_order(norm_type)
        if not self._enabled:
            if bound is None:
                return None
            params, _ = _grads_of(optimizer)
            return clip_grad_norm_(params, bound, p)
        self._check_started("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError(
                "unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        params, grads = _grads_of(optimizer)
        if grads and _served(grads):
            found_inf, total = self._unscale_fused(grads, bound, p)
            state["found_inf_per_device"] = {torch.device("cpu"): found_inf}
        else:
            state["found_inf_per_device"] = self._unscale_by_torch(grads, self._inv_scale_tensor())
            _unscale_record.forget()
            total = None
            if bound is not None:
                total = clip_grad_norm_(params, bound, p) if params else torch.tensor(0.0)
        state["stage"] = OptState.UNSCALED
        return total

    def _inv_scale_tensor(self):
        return torch.full((), self._schedule.inv_scale(), dtype=torch.float32,
                          device=self._scale.device)

    def _unscale_fused(self, grads, bound, p):
        """One read (the norm of the scaled gradients), one write (scale_)."""
        inv_scale = self._schedule.inv_scale()
        order = 2.0 if bound is None else p
        total = _gc.global_norm(_host_views(grads), order) * inv_scale
        found = not math.isfinite(total)
        factor = inv_scale if bound is None or found else inv_scale * _clip_factor(bound, total)
        _gc.scale_(_host_views(grads), factor)
        torch.autograd.graph.increment_version(grads)
        if bound is None:
            _unscale_record.remember(grads, total)
            result = None
        else:
            _unscale_record.forget()
            dtype = functools.reduce(torch.promote_types, (g.dtype for g in grads))
            result = torch.tensor(total, dtype=dtype)
        return torch.full((), float(found), dtype=torch.float32), result

    def _unscale_by_torch(self, grads, inv_scale):
        """torch's own unscale (per device and dtype), for gradients gradcore does not
        serve. Returns {device: found_inf tensor}."""
        inv = _PerDevice(inv_scale)
        found = _PerDevice(torch.full((), 0.0, dtype=torch.float32, device=inv_scale.device))
        by_device_dtype = defaultdict(lambda: defaultdict(list))
        with torch.no_grad():
            for g in grads:
                if g.is_sparse:
                    to_unscale = (g.coalesce() if g.dtype is torch.float16 else g)._values()
                else:
                    to_unscale = g
                by_device_dtype[to_unscale.device][to_unscale.dtype].append(to_unscale)
            for device, per_dtype in by_device_dtype.items():
                for group in per_dtype.values():
                    torch._amp_foreach_non_finite_check_and_unscale_(group, found.get(device),
                                                                     inv.get(device))
        return found.tensors

    def _check_inf_per_device(self, optimizer):
        """Record inf/NaN without unscaling (for optimizers that unscale themselves)."""
        self._check_started("_check_inf_per_device")
        state = self._per_optimizer_states[id(optimizer)]
        _, grads = _grads_of(optimizer)
        if grads and _served(grads):
            found = not math.isfinite(_gc.global_norm(_host_views(grads)))
            state["found_inf_per_device"] = {
                torch.device("cpu"): torch.full((), float(found), dtype=torch.float32)}
        else:
            one = torch.full((), 1.0, dtype=torch.float32, device=self._scale.device)
            state["found_inf_per_device"] = self._unscale_by_torch(grads, one)
        return state["found_inf_per_device"]

    def _found_inf_per_device(self, optimizer):
        return self._per_optimizer_states[id(optimizer)]["found_inf_per_device"]

    # ------------------------------------------------------------------ step / update

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step(*args, **kwargs)`` unless a gradient holds inf/NaN (then
        None); unscales first if ``unscale_`` was not called (torch's semantics)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_started("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            return self._step_self_scaling(optimizer, state, args, kwargs)
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if len(state["found_inf_per_device"]) == 0:
            raise RuntimeError("No inf checks were recorded for this optimizer.")
        retval = None
        if not sum(v.item() for v in state["found_inf_per_device"].values()):
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def _step_self_scaling(self, optimizer, state, args, kwargs):
        """Optimizers that unscale and skip themselves (fused Adam), as torch drives them."""
        has_grad_scaler_kwarg = "grad_scaler" in inspect.signature(optimizer.step).parameters
        if has_grad_scaler_kwarg:
            warnings.warn(
                "GradScaler is going to stop passing itself as a keyword argument to the passed "
                "optimizer. In the near future GradScaler registers `grad_scale: Tensor` and "
                "`found_inf: Tensor` to the passed optimizer and let the optimizer use them directly.",
                FutureWarning, stacklevel=3)
            kwargs.update({"grad_scaler": self})
        else:
            if state["stage"] is OptState.READY:
                self._check_inf_per_device(optimizer)
            scale = self._scale
            found_inf = sum(t.to(scale.device, non_blocking=True)
                            for t in state["found_inf_per_device"].values())
            optimizer.grad_scale = (getattr(optimizer, "grad_scale", None)
                                    if state["stage"] == OptState.UNSCALED
                                    else scale * getattr(optimizer, "grad_scale", 1))
            optimizer.found_inf = found_inf
        retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        if not has_grad_scaler_kwarg:
            del optimizer.grad_scale
            del optimizer.found_inf
        return retval

    def update(self, new_scale=None):
        """Advance the scale schedule by this iteration's inf checks (or set
        ``new_scale``: a real > 0, or a 1-element tensor on this scaler's device type
        without grad), and forget the iteration's per-optimizer state."""
        if not self._enabled:
            return
        self._check_started("update")
        if new_scale is not None:
            if isinstance(new_scale, torch.Tensor):
                if (new_scale.device.type != self._device or new_scale.numel() != 1
                        or new_scale.requires_grad):
                    raise ValueError("new_scale should be a float or a 1-element torch.FloatTensor "
                                     f"on device type {self._device!r} with requires_grad=False.")
                new_scale = new_scale.item()
            self._schedule.set_scale(new_scale)
        else:
            found_infs = [found_inf for state in self._per_optimizer_states.values()
                          for found_inf in state["found_inf_per_device"].values()]
            if not found_infs:
                raise RuntimeError("No inf checks were recorded prior to update.")
            self._schedule.update(bool(sum(float(f.item()) for f in found_infs)))
        self._scale_changed()
        self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)
