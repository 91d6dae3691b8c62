"""Global gradient norms and clipping across processes (mpi4py or ``torch.distributed``).

Import explicitly (``import gradcore`` never imports this module, torch or mpi4py)::

    import gradcore.distributed as gcd

    # ZeRO / FSDP: every rank holds a disjoint shard of the gradients
    total = gcd.clip_by_global_norm_(my_grad_shards, 1.0, comm=torch.distributed.group.WORLD)

    # plain data parallel: the gradients were all-reduced and are the same on every rank
    total = gcd.clip_by_global_norm_(grads, 1.0, comm=MPI.COMM_WORLD, sharded=False)

``comm`` is an ``mpi4py.MPI.Comm`` (an intracommunicator) or a
``torch.distributed.ProcessGroup`` (e.g. ``torch.distributed.group.WORLD``); every rank of
it must make the same call. Neither library is a dependency: the kind of ``comm`` is told
from the modules its class (or a base class) comes from, and the library is imported only
then. ``None`` is refused rather than read as torch's default group, so that an MPI
program never imports torch by accident.

**Sharded** (``sharded=True``, the default): each rank computes the norm of its own arrays
with gradcore (overflow-safe), then one ``allgather`` exchanges two float64 numbers per
rank: the local norm, and a flag saying whether the rank rejected its arguments. Every rank
combines the gathered norms in rank order with the same float64 arithmetic (scaled by the
largest, so nothing overflows), so every rank gets the same total bit for bit and clips by
the same factor. NaN on any rank makes the total NaN; otherwise inf on any rank makes it inf.

**Replicated** (``sharded=False``): the arrays are the same on every rank (data
parallelism after the gradient all-reduce), so each rank computes the norm of its own copy
and nothing is sent. The totals agree across ranks because the inputs do (gradcore's norms
are deterministic for the same data and thread count).

**Non-finite totals.** The total is the same on every rank, so the policies agree:
``"error"`` raises ``gradcore.NonFiniteGradientError`` on every rank and ``"skip"`` returns
the non-finite total on every rank, with no array modified anywhere; ``"propagate"``
scales everywhere as ``torch.nn.utils.clip_grad_norm_`` would. ``"zero"`` needs the norm of
what is left after the non-finite elements are zeroed, across all ranks: the ranks whose
local norm was NaN/inf zero those elements and recompute their norm (the others' is
unchanged), and a second ``allgather`` combines them. That second exchange happens only in
this case, and on every rank (each knows from the first exchange that it is needed).

**Errors.** ``comm``, ``max_norm``, ``ord``, ``eps``, ``nonfinite`` and ``sharded`` are
checked before anything else (``TypeError``/``ValueError`` naming the argument). Problems
with a rank's own arrays (dtype, read-only, non-contiguous) are found before any array is
touched too, but that rank still takes part in the exchange, flagging the failure: it then
raises its own error and every other rank raises :class:`PeerError`, instead of waiting
forever in a collective that one rank never joined. No array is modified on any rank.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from ._pytree import leaf_list
from ._norms import clip_by_global_norm_ as _clip_local
from ._norms import global_norm as _norm_local

__all__ = ["PeerError", "clip_by_global_norm_", "global_norm"]


class PeerError(RuntimeError):
    """Raised on every rank whose own arguments were fine when another rank rejected its
    arrays (that rank raises the actual ``TypeError``/``ValueError``). No array was
    modified on any rank. ``ranks`` lists the ranks that failed."""

    def __init__(self, ranks):
        self.ranks = list(ranks)
        super().__init__(f"rank(s) {', '.join(map(str, self.ranks))} rejected their arrays "
                         "(see the error raised there); no array was modified on any rank")


def global_norm(local_arrays, ord=2, *, comm, sharded=True) -> float:
    """The ``ord``-norm of the arrays of all ranks together, as if they were concatenated.

    ``local_arrays``: this rank's arrays (float16/32/64, any shape; a list, one array or
    an iterable), or an empty list. ``ord``: a real p > 0 or inf. ``sharded``: True when
    the ranks hold disjoint pieces (one collective), False when they hold the same arrays
    (no communication). Returns the same float on every rank (NaN if any element is NaN,
    else inf if any is inf). Raises ``TypeError``/``ValueError`` for bad arguments and
    :class:`PeerError` when another rank rejected its arrays.
    """
    gather = _exchange(comm)
    p = _core.norm_order(ord)
    _check_sharded(sharded)
    local_arrays = leaf_list(local_arrays, "local_arrays")
    if not sharded:
        return _norm_local(local_arrays, p)
    try:
        local, error = _norm_local(local_arrays, p), None
    except Exception as exc:  # reported to the other ranks below, then re-raised here
        local, error = 0.0, exc
    return _combine(_gather_checked(gather, local, error)[:, 0], p)


def clip_by_global_norm_(local_arrays, max_norm, ord=2, *, comm, sharded=True, eps=1e-6,
                         nonfinite="propagate") -> float:
    """Scale the arrays of all ranks in place by ``min(1, max_norm / (total + eps))``, where
    ``total`` is :func:`global_norm` of all of them; the distributed
    ``gradcore.clip_by_global_norm_``, with the same factor on every rank.

    ``local_arrays``: this rank's writeable, C-contiguous float32/float64 arrays (or
    tensors sharing their memory). ``nonfinite``: ``"propagate"``, ``"error"``, ``"skip"``
    or ``"zero"``, applied the same way on every rank (see the module docstring).
    Returns ``total``, the norm before clipping (NaN/inf as found), the same on every rank.
    Raises ``gradcore.NonFiniteGradientError`` on every rank for ``"error"`` with a
    non-finite total, ``TypeError``/``ValueError`` for bad arguments, and
    :class:`PeerError` when another rank rejected its arrays; in all these cases no array
    is modified on any rank.
    """
    gather = _exchange(comm)
    p = _core.norm_order(ord)
    # The scalar arguments, checked before any exchange by the core's own rules (on an
    # empty list, where nothing else happens).
    _core.clip_by_global_norm_([], max_norm, p, eps, nonfinite)
    max_norm, eps = float(max_norm), float(eps)
    _check_sharded(sharded)
    local_arrays = leaf_list(local_arrays, "local_arrays")
    if not sharded:
        return _clip_local(local_arrays, max_norm, p, eps=eps, nonfinite=nonfinite)

    try:
        # A dry run (max_norm=inf, total_norm=0: factor 1, so nothing is written and no
        # norm pass is made) puts this rank's arrays through the core's own checks (dtype,
        # writeable, contiguous) before the exchange, so a bad array on one rank cannot
        # leave the other ranks already clipped.
        _clip_local(local_arrays, math.inf, p, eps=eps, total_norm=0.0)
        local, error = _norm_local(local_arrays, p), None
    except Exception as exc:  # reported to the other ranks below, then re-raised here
        local, error = 0.0, exc
    gathered = _gather_checked(gather, local, error)[:, 0]
    total = _combine(gathered, p)

    if nonfinite == "zero" and not math.isfinite(total) and not np.isfinite(gathered).all():
        # The ranks holding NaN/inf zero them; the norm of what remains needs their new
        # local norms (a finite local norm means nothing was zeroed there).
        if not math.isfinite(local):
            _core.zero_nonfinite_(local_arrays)
            local = _norm_local(local_arrays, p)
        remaining = _combine(gather([local])[:, 0], p)
        # Already zeroed: scale by the global remaining norm. "propagate" so that the core
        # does not recompute a (local) norm if even that is inf (an overflowing float64
        # total, where the single-process "zero" also scales by 0).
        _clip_local(local_arrays, max_norm, p, eps=eps, nonfinite="propagate",
                    total_norm=remaining)
        return total
    # With a finite total, or "zero" where nothing is non-finite (the total overflowed),
    # this is exactly the single-process function fed with the global total.
    policy = "propagate" if nonfinite == "zero" else nonfinite
    return _clip_local(local_arrays, max_norm, p, eps=eps, nonfinite=policy, total_norm=total)


# -- combining -----------------------------------------------------------------------------

def _combine(local_norms, p: float) -> float:
    """The p-norm of the vector of per-rank norms: the norm of the concatenation.

    Every rank runs this on the same gathered values, so every rank gets the same bits:
    Python floats are IEEE float64, math.fsum and math.sqrt are correctly rounded, and
    for other p the ``**`` of the C library is the same on every rank of one installation.
    Scaling by the largest norm keeps every term <= 1: no overflow or harmful underflow,
    however large or small the norms.
    """
    norms = [float(n) for n in local_norms]
    if any(math.isnan(n) for n in norms):
        return math.nan
    largest = max(norms, default=0.0)
    if largest == 0.0 or math.isinf(largest) or p == math.inf:
        return largest
    if p == 2.0:
        return largest * math.sqrt(math.fsum((n / largest) * (n / largest) for n in norms))
    if p == 1.0:
        return largest * math.fsum(n / largest for n in norms)
    return largest * math.fsum((n / largest) ** p for n in norms) ** (1.0 / p)


def _gather_checked(gather, local: float, error):
    """Allgather [local norm, failed] from every rank: a (size, 2) float64 array. Raises
    this rank's own ``error`` if it has one, else PeerError if another rank failed."""
    gathered = gather([local, 0.0 if error is None else 1.0])
    if error is not None:
        raise error
    failed = np.flatnonzero(gathered[:, 1])
    if failed.size:
        raise PeerError(failed.tolist())
    return gathered


def _check_sharded(sharded):
    if not isinstance(sharded, (bool, np.bool_)):
        raise TypeError(f"sharded must be a bool, got {type(sharded).__name__}")


# -- communicators -------------------------------------------------------------------------

def _exchange(comm):
    """A function ``gather(values) -> ndarray (size, len(values)) float64`` that allgathers a
    few floats over ``comm``, rows in rank order. TypeError/ValueError naming ``comm`` for
    anything that is not a usable mpi4py communicator or torch ProcessGroup."""
    # Which library the object comes from, read off its classes (subclasses included),
    # so that neither library is imported unless comm is one of its objects.
    origins = {cls.__module__.partition(".")[0] for cls in type(comm).__mro__}
    if "mpi4py" in origins:
        return _mpi_exchange(comm)
    if "torch" in origins:
        return _torch_exchange(comm)
    hint = (" (torch.distributed.group.WORLD is None until init_process_group() is called)"
            if comm is None else "")
    raise TypeError("comm must be an mpi4py.MPI.Comm or a torch.distributed.ProcessGroup, "
                    "e.g. mpi4py.MPI.COMM_WORLD or torch.distributed.group.WORLD; "
                    f"got {type(comm).__name__}{hint}")


def _mpi_exchange(comm):
    from mpi4py import MPI

    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py.MPI.Comm, got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise ValueError("comm is MPI.COMM_NULL")
    if comm.Is_inter():
        # Allgather on an intercommunicator collects the *other* group's values.
        raise ValueError("comm must be an intracommunicator, got an intercommunicator")

    def gather(values):
        send = np.asarray(values, dtype=np.float64)
        recv = np.empty((comm.Get_size(), send.size), dtype=np.float64)
        comm.Allgather(send, recv)
        return recv

    return gather


def _torch_exchange(group):
    import torch
    import torch.distributed as dist

    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"comm must be a torch.distributed.ProcessGroup, "
                        f"got {type(group).__name__}")

    def gather(values):
        send = torch.tensor(values, dtype=torch.float64, device=_torch_device(group))
        recv = [torch.empty_like(send) for _ in range(group.size())]
        dist.all_gather(recv, send, group=group)
        return torch.stack(recv).cpu().numpy()

    return gather


def _torch_device(group):
    """Where the exchanged tensor must live: the CPU when the group's backend takes CPU
    tensors (gloo, mpi), else the current device of its accelerator (e.g. NCCL: CUDA)."""
    import torch

    devices = getattr(group, "_device_types", None)  # private in torch; CPU if absent
    if not devices or any(d.type == "cpu" for d in devices):
        return torch.device("cpu")
    kind = devices[0].type
    return torch.device(kind, torch.get_device_module(kind).current_device())
