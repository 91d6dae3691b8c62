"""gradcore: fast, exact gradient norms, clipping and backprop kernels for NumPy arrays.

See ``gradcore.info()`` for the SIMD target in use, and docs/api.md for the API contract.
Functions whose names end in ``_`` modify their array arguments in place.
"""

from __future__ import annotations

try:
    from . import _core
except ImportError as error:
    from ._missing_core import missing_core_error

    raise missing_core_error(error) from None
from ._args import integer
from . import amp, cuda, diagnose, init, optim
from . import _dense, _dropout, _normalization, _norms, _rnn
# The front doors: each module lists its documented functions in its __all__.
from ._dense import *  # noqa: F403
from ._dropout import *  # noqa: F403
from ._normalization import *  # noqa: F403
from ._norms import *  # noqa: F403
from ._rnn import *  # noqa: F403
from ._functional import adaptive_clip, clip_by_global_norm, clip_by_norm, clip_by_value
from ._embedding import get_cmake_dir, get_include, get_library_dir
from .monitor import Event, GradientMonitor

__version__ = _core._version()

__all__ = [
    "amp", "cuda", "diagnose", "init", "optim",
    *_norms.__all__, *_dense.__all__, *_dropout.__all__, *_normalization.__all__, *_rnn.__all__,
    "Event", "GradientMonitor", "adaptive_clip", "clip_by_global_norm", "clip_by_norm", "clip_by_value",
    "get_cmake_dir", "get_include", "get_library_dir", "get_num_threads", "info", "set_num_threads",
]


def set_num_threads(n: int) -> None:
    """Number of threads the kernels may use (1 to 1024). Also set by ``GRADCORE_NUM_THREADS``;
    the default is the number of cores this process may run on."""
    _core.set_num_threads(integer(n, "n", 1, 1024))


def get_num_threads() -> int:
    """Number of threads the kernels may use."""
    return int(_core.get_num_threads())


def info() -> dict:
    """Facts about this build and process: version, active and available SIMD targets,
    threads, whether CUDA was compiled in, and the compiler."""
    return {
        "version": __version__,
        "isa": _core._isa_active(),
        "isa_available": list(_core._isa_available()),
        "threads": get_num_threads(),
        "cuda": bool(_core._cuda_built()),
        "compiler": _core._compiler(),
    }
