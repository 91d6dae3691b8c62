"""What gradcore knows about CUDA: whether it was built with it and whether a GPU is usable.

A CUDA build imports and runs on machines without a GPU; ``is_available()`` is then False.
"""

from __future__ import annotations

from . import _core


def is_built() -> bool:
    """True when this copy of gradcore was compiled with ``GRADCORE_CUDA=ON``."""
    return bool(_core._cuda_built())


def device_count() -> int:
    """Number of CUDA devices the runtime sees (0 without a CUDA build or without a GPU)."""
    return int(_core._cuda_device_count())


def is_available() -> bool:
    """True when gradcore was built with CUDA and at least one GPU is usable."""
    return is_built() and device_count() > 0


def self_test() -> None:
    """Run a trivial kernel on the current device; raise ``RuntimeError`` if it fails."""
    if not is_available():
        raise RuntimeError("gradcore.cuda.self_test: no usable CUDA device "
                           f"(built with CUDA: {is_built()}, devices: {device_count()})")
    message = _core._cuda_self_test()
    if message:
        raise RuntimeError(f"gradcore.cuda.self_test failed: {message}")
