"""Shared fixtures: every ISA target the machine runs, thread counts, Hypothesis profiles.

Hypothesis profiles: "ci" (the default) keeps the whole suite within a couple of minutes
on 2 cores; "dev" runs many more examples. Pick one with HYPOTHESIS_PROFILE=dev.
"""

import os
import sys

# The tests exercise the installed gradcore. `python -m pytest` run from the checkout
# puts the checkout (cwd) first on sys.path, where gradcore/ has no compiled _core: drop
# it so that `import gradcore` finds the installed package. A developer (editable)
# install is installed too: its import hook serves the checkout's Python files with the
# compiled module it built.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _CHECKOUT]

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import gradcore  # noqa: E402

def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU and gradcore's CUDA backend (skipped otherwise)")


# The fixtures below hold process-wide state (ISA, thread count) constant for every
# example of a test, which is exactly what they are for.
_SUPPRESS = [
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
]
settings.register_profile("ci", deadline=None, max_examples=60, suppress_health_check=_SUPPRESS,
                          print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=600,
                          suppress_health_check=_SUPPRESS, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: every instruction-set target compiled in and supported by this CPU ("scalar" first)
ISAS = list(gradcore.info()["isa_available"])
THREADS = [1, 2]


def _set_isa(name):
    gradcore._core._set_isa(name)


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test on one ISA target; restores the previous target afterwards."""
    previous = gradcore.info()["isa"]
    _set_isa(request.param)
    try:
        assert gradcore.info()["isa"] == request.param
        yield request.param
    finally:
        _set_isa(previous)


@pytest.fixture(params=THREADS)
def threads(request):
    """Runs the test with 1 or 2 kernel threads; restores the previous count afterwards."""
    previous = gradcore.get_num_threads()
    gradcore.set_num_threads(request.param)
    try:
        assert gradcore.get_num_threads() == request.param
        yield request.param
    finally:
        gradcore.set_num_threads(previous)


@pytest.fixture
def every_config():
    """`run(fn)` calls fn() once on every (isa, threads) pair and returns
    [((isa, threads), result), ...]; the previous ISA and thread count are restored."""

    def run(fn):
        previous_isa = gradcore.info()["isa"]
        previous_threads = gradcore.get_num_threads()
        results = []
        try:
            for name in ISAS:
                _set_isa(name)
                for n in THREADS:
                    gradcore.set_num_threads(n)
                    results.append(((name, n), fn()))
        finally:
            _set_isa(previous_isa)
            gradcore.set_num_threads(previous_threads)
        return results

    return run
