"""Why ``gradcore._core`` could not be imported, in words a user can act on.

Python puts the current directory first on ``sys.path`` (``python -m``, ``python -c``, a
notebook), so from the root of a checkout the source tree's ``gradcore/``, which holds no
compiled extension, shadows the installed package. Left alone, Python reports that as
"cannot import name '_core' from partially initialized module", which points at a circular
import that does not exist.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec


def is_checkout(directory: str) -> bool:
    """Whether ``directory`` is the root of a gradcore source tree."""
    return (os.path.isfile(os.path.join(directory, "pyproject.toml"))
            and os.path.isdir(os.path.join(directory, "csrc")))


def _found_elsewhere(name: str) -> bool:
    """Whether an import hook knows where the extension is (a developer install keeps it
    in its build directory, not in the package)."""
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_core_error(error: ImportError) -> ImportError:
    """The error to raise in place of ``error``, the failed ``from . import _core``."""
    package = os.path.dirname(os.path.abspath(__file__))
    if (any(os.path.exists(os.path.join(package, "_core" + s)) for s in EXTENSION_SUFFIXES)
            or _found_elsewhere(__package__ + "._core")):
        return error  # the extension is there but failed to load: its own message says why
    if is_checkout(os.path.dirname(package)):
        return ImportError(
            f"gradcore was imported from its source tree ({package}), which holds no compiled "
            "extension: Python looks in the current directory before the installed package. "
            "Run Python from another directory (the `gradcore` command works from anywhere), "
            "or make a developer install in this checkout: "
            "pip install --no-build-isolation -e . (see README.md, 'Contributing').")
    return ImportError(
        f"gradcore's compiled extension gradcore._core is missing from {package}: this "
        "installation is incomplete: reinstall it (pip install --force-reinstall . from "
        "gradcore's checkout).")
