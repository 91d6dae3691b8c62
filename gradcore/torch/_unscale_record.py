"""The L2 norm GradScaler.unscale_ measured, kept for the clip_grad_norm_ that follows.

``unscale_`` reads every gradient once anyway (its inf/NaN check is the global norm); the
usual next line, ``clip_grad_norm_(model.parameters(), max_norm)``, would read them all
again for the same number. The record lets it skip that read, but only when the data is
provably the one measured: the very same tensor objects (held weakly, so the record keeps
no gradient alive) and unchanged autograd version counters (every in-place op on a tensor,
including gradcore's own, bumps its counter after the record was written).
"""

from __future__ import annotations

import weakref

_record = None  # (total, {id(tensor): (weakref to it, its _version)}) or None


def remember(grads, total: float) -> None:
    """Record ``total``, the L2 norm of ``grads`` as they are now."""
    global _record
    _record = (total, {id(g): (weakref.ref(g), g._version) for g in grads})


def forget() -> None:
    global _record
    _record = None


def recorded_total(grads):
    """The recorded L2 norm if ``grads`` is exactly the recorded set, unmodified; else None."""
    if _record is None:
        return None
    total, entries = _record
    if len(grads) != len(entries):
        return None
    for g in grads:
        entry = entries.get(id(g))
        if entry is None or entry[0]() is not g or g._version != entry[1]:
            return None
    # len(grads) == len(entries) and every grad is a distinct entry only if no grad repeats.
    if len({id(g) for g in grads}) != len(grads):
        return None
    return total
