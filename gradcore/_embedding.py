"""Where the C++ side of gradcore lives inside the installed package, for C++, C and
Cython consumers: headers, the shared library (the one copy of the kernels that
gradcore._core itself links), and the CMake package."""

from __future__ import annotations

import os

from . import _core

# Beside the compiled module, not this file: a developer (editable) install runs the Python
# files from the checkout while the built files stay in site-packages.
_ROOT = os.path.dirname(os.path.abspath(_core.__file__))


def get_include() -> str:
    """Directory to add to the include path: ``#include <gradcore/gradcore.hpp>``."""
    return os.path.join(_ROOT, "include")


def get_library_dir() -> str:
    """Directory holding ``libgradcore.so``."""
    return _ROOT


def get_cmake_dir() -> str:
    """Directory of ``gradcoreConfig.cmake``: pass it as ``-Dgradcore_DIR=...``, then
    ``find_package(gradcore CONFIG REQUIRED)`` and link ``gradcore::gradcore``."""
    return os.path.join(_ROOT, "share", "cmake", "gradcore")
