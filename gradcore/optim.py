"""Fused multi-tensor optimisers (torch.optim.SGD / Adam / AdamW semantics) with an
optional built-in clip and non-finite skip, and small composable learning-rate schedules.

Each ``step(grads)`` is at most one norm pass (only when clipping by norm or skipping
non-finite steps) and then one C++ pass over every parameter, its gradient and its state;
the clipping factor is applied inside that pass, so clipping costs no extra write.

Parameters may be float16 or bfloat16 (NumPy float16, ``ml_dtypes.bfloat16``, torch
tensors), mixed with float32/float64 ones; their gradients have their dtype. A 16-bit
parameter is updated in float32 with float32 state; ``master_weights=True`` keeps a
float32 master copy of it (``optimizer.master_weights``), which the step updates and
rounds, in the same pass, into the 16-bit parameter (to nearest even). Without master
weights each step rounds the 16-bit parameter once, so updates smaller than half its
spacing are lost: what master weights are for.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from ._args import REAL_FLOATS, dtype_names, float32_copy, nonnegative, positive_finite, real, real_float_name
from ._norms import clip_by_value_, global_norm

__all__ = ["SGD", "Adam", "AdamW", "StepLR", "ExponentialLR", "CosineLR", "LinearWarmup"]


class _Optimizer:
    """Shared machinery: the parameter list, the schedule, clipping and skipping."""

    def __init__(self, params, lr, *, master_weights=False, clip_norm=None, clip_value=None,
                 skip_nonfinite=False):
        self.params = _core.host_arrays(params, "params", True)
        for i, p in enumerate(self.params):
            if real_float_name(p.dtype) is None:
                raise TypeError(f"params[{i}]: dtype {p.dtype} is not supported "
                                f"(expected {dtype_names(REAL_FLOATS)})")
        #: float32 master copies of the 16-bit parameters (a float32/float64 parameter is
        #: its own master), or None without master weights
        self.master_weights = ([float32_copy(p) if p.itemsize == 2 else p for p in self.params]
                               if master_weights else None)
        if callable(lr):
            self.schedule, self.base_lr = lr, None
        else:
            self.schedule, self.base_lr = None, nonnegative(lr, "lr")
        self.clip_norm = None if clip_norm is None else nonnegative(clip_norm, "clip_norm")
        self.clip_value = None if clip_value is None else nonnegative(clip_value, "clip_value")
        self.skip_nonfinite = bool(skip_nonfinite)
        self.step_count = 0        # steps applied
        self.skipped = 0           # steps skipped for a non-finite gradient
        self.last_grad_norm = None

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return self.base_lr if self.schedule is None else float(self.schedule(self.step_count))

    def _prepare(self, grads, total_norm, grad_scale=1.0):
        """Returns (grads, the factor the kernel multiplies them by) or None when the step
        is skipped. ``grad_scale`` (a loss scaler's 1/scale) is part of that factor, so the
        clips below act on grads * grad_scale."""
        grad_scale = positive_finite(grad_scale, "grad_scale")
        # Read only, unless clip_value clamps them in place (a JAX array seen through
        # NumPy, for one, is read-only).
        grads = _core.host_arrays(grads, "grads", self.clip_value is not None)
        if len(grads) != len(self.params):
            raise ValueError(f"grads has {len(grads)} arrays, params has {len(self.params)}")
        # Every check before the first write (the clip below modifies grads in place).
        for i, (g, p) in enumerate(zip(grads, self.params)):
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"grads[{i}] has shape {g.shape} and dtype {g.dtype}, "
                                 f"but params[{i}] has shape {p.shape} and dtype {p.dtype}")
        given_total = None if total_norm is None else real(total_norm, "total_norm")
        if self.clip_value is not None:
            # clamp(g * s, -c, c) == s * clamp(g, -c / s, c / s)
            clip_by_value_(grads, self.clip_value / grad_scale)
        scale = grad_scale
        if self.clip_norm is not None or self.skip_nonfinite:
            total = global_norm(grads) * grad_scale if given_total is None else given_total
            self.last_grad_norm = total
            if not math.isfinite(total):
                if self.skip_nonfinite:
                    self.skipped += 1
                    return None
            elif self.clip_norm is not None and total > 0:
                scale *= min(1.0, self.clip_norm / (total + 1e-6))
        return grads, scale

    def _state(self):
        """Zeros of each parameter's compute dtype (float32 for the 16-bit ones)."""
        return [np.zeros(p.shape, np.float32 if p.itemsize == 2 else p.dtype) for p in self.params]


class SGD(_Optimizer):
    """torch.optim.SGD: momentum (with dampening), Nesterov, L2 weight decay, and an L1
    penalty ``l1 * |p|``.

    ``l1``: added to the gradient as its subgradient ``l1 * sign(p)`` (``sign(0) = 0``),
    before momentum; with ``proximal=True`` applied instead as the proximal step of
    the penalty after the update, ``p = sign(u) * max(|u| - lr * l1, 0)`` for the
    updated weight u (soft-thresholding: the penalty never carries a weight across 0, it
    stops at 0, so weights become exactly 0 rather than oscillating around it).

    ``lr`` is a number or a schedule (a callable step -> lr, see StepLR etc.).
    ``clip_norm``: clip the gradients by their global L2 norm first (PyTorch's formula);
    ``clip_value``: clamp them element-wise first; ``skip_nonfinite``: when the gradient
    norm is NaN/inf, leave the parameters untouched and count the skip. ``step(grads,
    total_norm=None, *, grad_scale=1.0)`` returns True when the step was applied;
    ``total_norm`` reuses a norm computed earlier (e.g.
    ``GradientMonitor.last_global_norm``). ``grad_scale`` (a finite real > 0, e.g. a loss
    scaler's ``1 / scale``) multiplies the gradients inside the fused pass; ``total_norm``,
    when given, is then the norm of ``grads * grad_scale``. ``master_weights=True``: float32
    master weights for the 16-bit parameters (see the module's docstring).
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, l1=0.0, proximal=False, **options):
        super().__init__(params, lr, **options)
        self.l1 = nonnegative(l1, "l1")
        self.proximal = bool(proximal)
        self.momentum = nonnegative(momentum, "momentum")
        self.dampening = real(dampening, "dampening")
        self.weight_decay = nonnegative(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        self.buffers = self._state() if self.momentum else None

    def step(self, grads, total_norm=None, *, grad_scale=1.0) -> bool:
        prepared = self._prepare(grads, total_norm, grad_scale)
        if prepared is None:
            return False
        grads, scale = prepared
        _core.sgd_step(self.params, grads, self.buffers, self.lr, self.momentum, self.dampening,
                       self.nesterov, self.weight_decay, scale, self.step_count == 0, self.l1,
                       self.proximal, self.master_weights)
        self.step_count += 1
        return True


class Adam(_Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient), fused; see SGD for the
    schedule, clipping and skipping options. ``l1``: ``l1 * sign(p)`` added to the
    gradient, as the weight decay is (it goes through the moments)."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, l1=0.0,
                 **options):
        super().__init__(params, lr, **options)
        self.l1 = nonnegative(l1, "l1")
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"betas must be a pair of numbers (beta1, beta2), got {betas!r}")
        b1, b2 = betas
        self.beta1, self.beta2 = real(b1, "betas[0]"), real(b2, "betas[1]")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.eps = nonnegative(eps, "eps")
        self.weight_decay = nonnegative(weight_decay, "weight_decay")
        self.exp_avg, self.exp_avg_sq = self._state(), self._state()

    def step(self, grads, total_norm=None, *, grad_scale=1.0) -> bool:
        prepared = self._prepare(grads, total_norm, grad_scale)
        if prepared is None:
            return False
        grads, scale = prepared
        _core.adam_step(self.params, grads, self.exp_avg, self.exp_avg_sq, self.lr, self.beta1,
                        self.beta2, self.eps, self.weight_decay, self._decoupled, scale,
                        self.step_count + 1, self.l1, self.master_weights)
        self.step_count += 1
        return True


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay (p -= lr * wd * p), default wd 0.01.
    ``l1`` is decoupled the same way: the decayed weight is soft-thresholded by
    ``lr * l1`` (``sign(p) * max(|p| - lr * l1, 0)``) before the Adam update."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, *, l1=0.0,
                 **options):
        super().__init__(params, lr, betas, eps, weight_decay, l1=l1, **options)


# -------------------------------------------------------------------- schedules
# Each is a callable step -> lr; they compose: LinearWarmup(CosineLR(...), warmup_steps).

class StepLR:
    """lr * gamma ** (step // step_size)."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)
        if self.step_size < 1:
            raise ValueError("step_size must be >= 1")

    def __call__(self, step):
        return self.lr * self.gamma ** (step // self.step_size)


class ExponentialLR:
    """lr * gamma ** step."""

    def __init__(self, lr, gamma):
        self.lr, self.gamma = float(lr), float(gamma)

    def __call__(self, step):
        return self.lr * self.gamma ** step


class CosineLR:
    """Cosine annealing from lr to min_lr over total_steps, then min_lr."""

    def __init__(self, lr, total_steps, min_lr=0.0):
        self.lr, self.total, self.min_lr = float(lr), int(total_steps), float(min_lr)
        if self.total < 1:
            raise ValueError("total_steps must be >= 1")

    def __call__(self, step):
        t = min(step, self.total) / self.total
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))


class LinearWarmup:
    """Linear ramp from 0 to the wrapped schedule's value over warmup_steps, then the
    wrapped schedule (shifted so that it starts where the warm-up ends)."""

    def __init__(self, schedule, warmup_steps):
        self.schedule = schedule if callable(schedule) else (lambda step, v=float(schedule): v)
        self.warmup = int(warmup_steps)

    def __call__(self, step):
        if step < self.warmup:
            return self.schedule(0) * (step + 1) / self.warmup
        return self.schedule(step - self.warmup)
