"""Opt-in: norms and clipping of one float32 array of more than 2^31 elements (8.6 GB),
which only 64-bit indexing gets right. Run with GRADCORE_HUGE_TESTS=1 (needs ~10 GB of
memory and a minute); skipped otherwise.

The data are chosen so that the exact answers are known without a float64 copy: ones
everywhere, with marked elements beyond index 2^31 that a 32-bit index would miss or
misplace."""

import math
import os

import numpy as np
import pytest

import gradcore

pytestmark = pytest.mark.skipif(os.environ.get("GRADCORE_HUGE_TESTS") != "1",
                                reason="opt-in: GRADCORE_HUGE_TESTS=1 runs the > 2^31-element tests")

N = 2**31 + 4099  # past 2^31 and not a multiple of any vector width or chunk size
MARK = 2**31 + 17


@pytest.fixture(scope="module")
def huge():
    a = np.ones(N, dtype=np.float32)
    a[MARK] = 7.0
    a[-1] = -3.0
    return a


def test_norms_past_2_to_the_31(huge):
    ones = N - 2
    assert gradcore.global_norm([huge], math.inf) == 7.0
    assert gradcore.global_norm([huge], 1) == ones + 7.0 + 3.0
    assert gradcore.global_norm([huge], 2) == pytest.approx(math.sqrt(ones + 49.0 + 9.0), rel=1e-12)
    stats = gradcore.grad_stats([huge])
    assert stats.max_abs[0] == 7.0 and stats.nonfinite[0] == 0


def test_clipping_past_2_to_the_31(huge):
    total = gradcore.clip_by_global_norm_([huge], 1.0, math.inf)  # factor 1 / (7 + eps)
    assert total == 7.0
    factor = np.float32(1.0 / (7.0 + 1e-6))
    for i, value in [(0, 1.0), (2**31 - 1, 1.0), (2**31, 1.0), (MARK, 7.0), (N - 2, 1.0), (N - 1, -3.0)]:
        assert huge[i] == pytest.approx(float(factor) * value, rel=1e-6), i
    gradcore.clip_by_value_([huge], 0.1)
    assert huge[MARK] == np.float32(0.1) and huge[N - 1] == np.float32(-0.1)
    assert huge[2**31 + 1] == np.float32(0.1)
