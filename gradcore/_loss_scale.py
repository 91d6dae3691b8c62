"""The loss-scale schedule shared by gradcore.amp.GradScaler and
gradcore.torch.amp.GradScaler: torch.amp.GradScaler's rule, in plain Python.

The scale is held as torch holds it, a float32 value: every product is rounded to float32,
so both scalers follow torch's trajectory and state_dict values exactly, whatever the
factors. The rule (torch's ``_amp_update_scale_``): after a step with an inf/NaN
gradient, ``scale *= backoff_factor`` and the growth tracker restarts at 0; otherwise the
tracker counts the step, and when it reaches ``growth_interval`` the scale is multiplied by
``growth_factor`` (kept only if that is finite) and the tracker restarts.
"""

from __future__ import annotations

import math

import numpy as np

from ._args import count, positive_finite, real

#: torch.amp.GradScaler.state_dict()'s keys, in its order
STATE_KEYS = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")


def _float32(value: float) -> float:
    return float(np.float32(value))


def growth_factor(value) -> float:
    v = real(value, "growth_factor")
    if not (v > 1.0 and math.isfinite(v)):
        raise ValueError(f"growth_factor must be a finite number > 1, got {v}")
    return v


def backoff_factor(value) -> float:
    v = real(value, "backoff_factor")
    if not 0.0 < v < 1.0:
        raise ValueError(f"backoff_factor must be in (0, 1), got {v}")
    return v


def growth_interval(value) -> int:
    return count(value, "growth_interval", 1)


class LossScale:
    """The scale, the schedule's factors and the growth tracker.

    ``scale`` is None until ``start()`` (torch creates its scale tensor on the first
    ``scale()`` call; until then ``get_scale()`` is ``init_scale`` as given).
    """

    def __init__(self, init_scale, growth_factor_, backoff_factor_, growth_interval_):
        self.init_scale = positive_finite(init_scale, "init_scale")
        self.growth_factor = growth_factor(growth_factor_)
        self.backoff_factor = backoff_factor(backoff_factor_)
        self.growth_interval = growth_interval(growth_interval_)
        self.init_growth_tracker = 0
        self.scale = None
        self.growth_tracker = None

    @property
    def started(self) -> bool:
        return self.scale is not None

    def start(self) -> None:
        if self.scale is None:
            self.scale = _float32(self.init_scale)
            self.growth_tracker = self.init_growth_tracker

    def current(self) -> float:
        return self.init_scale if self.scale is None else self.scale

    def tracker(self) -> int:
        return self.init_growth_tracker if self.growth_tracker is None else self.growth_tracker

    def inv_scale(self) -> float:
        """1 / scale as torch computes it: in float64, then rounded to float32."""
        return _float32(1.0 / self.scale)

    def set_scale(self, new_scale) -> None:
        self.scale = _float32(positive_finite(new_scale, "new_scale"))

    def update(self, found_inf: bool) -> None:
        if found_inf:
            self.scale = _float32(self.scale * self.backoff_factor)
            self.growth_tracker = 0
            return
        successful = self.growth_tracker + 1
        if successful == self.growth_interval:
            grown = _float32(self.scale * self.growth_factor)
            if math.isfinite(grown):
                self.scale = grown
            self.growth_tracker = 0
        else:
            self.growth_tracker = successful

    def state_dict(self) -> dict:
        return {"scale": self.current(), "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "_growth_tracker": self.tracker()}

    def load_state_dict(self, state: dict) -> None:
        """Every value checked before any is taken (a bad dict changes nothing)."""
        if len(state) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise KeyError(f"state_dict lacks {', '.join(missing)}")
        scale = positive_finite(state["scale"], "state_dict['scale']")
        growth = growth_factor(state["growth_factor"])
        backoff = backoff_factor(state["backoff_factor"])
        interval = growth_interval(state["growth_interval"])
        tracker = count(state["_growth_tracker"], "state_dict['_growth_tracker']", 0)
        self.init_scale, self.growth_factor, self.backoff_factor = scale, growth, backoff
        self.growth_interval, self.init_growth_tracker = interval, tracker
        if self.scale is not None:
            self.scale = _float32(scale)
            self.growth_tracker = tracker


class ScheduleMethods:
    """torch.amp.GradScaler's getters, setters and state dict, for a scaler holding a
    ``LossScale`` in ``_schedule`` and its switch in ``_enabled``. ``_scale_changed`` is
    called after the scale was set from outside the schedule's own update."""

    def _scale_changed(self) -> None:
        pass

    def get_scale(self) -> float:
        """The current scale (1.0 when disabled)."""
        return self._schedule.current() if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._schedule.growth_factor

    def set_growth_factor(self, new_factor) -> None:
        self._schedule.growth_factor = growth_factor(new_factor)

    def get_backoff_factor(self) -> float:
        return self._schedule.backoff_factor

    def set_backoff_factor(self, new_factor) -> None:
        self._schedule.backoff_factor = backoff_factor(new_factor)

    def get_growth_interval(self) -> int:
        return self._schedule.growth_interval

    def set_growth_interval(self, new_interval) -> None:
        self._schedule.growth_interval = growth_interval(new_interval)

    def _get_growth_tracker(self) -> int:
        return self._schedule.tracker() if self._enabled else 0

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict:
        """torch's keys and values (scale, growth_factor, backoff_factor, growth_interval,
        _growth_tracker) as Python floats and ints; ``{}`` when disabled."""
        return self._schedule.state_dict() if self._enabled else {}

    def load_state_dict(self, state_dict) -> None:
        """Load a state dict of either gradcore scaler or of ``torch.amp.GradScaler``,
        checked whole before anything changes; ignored when disabled."""
        if not self._enabled:
            return
        self._schedule.load_state_dict(state_dict)
        self._scale_changed()
