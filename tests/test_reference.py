"""Self-checks of tests/reference.py: the oracle the other test files trust.

The reference norms are compared with textbook formulas on data where those formulas
are exact enough (moderate magnitudes), and with exact scaling identities on data where
they would overflow or underflow.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference import (
    assert_close,
    build_array_list,
    ref_adaptive_clip,
    ref_clip_by_global_norm,
    ref_clip_by_norm,
    ref_clip_by_value,
    ref_grad_stats,
    ref_norm,
    ref_norms,
    same_bits,
)

ORDS = [1, 2, math.inf, 0.5, 1.5, 3, 7.3]


def _textbook(x, p):
    x = np.abs(np.asarray(x, dtype=np.float64).ravel())
    if x.size == 0:
        return 0.0
    if p == math.inf:
        return float(x.max())
    return float(np.sum(x**p) ** (1.0 / p))


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 12), ord=st.sampled_from(ORDS))
def test_ref_norm_matches_textbook_formula_on_moderate_data(seed, n, ord):
    """On unit-scale data ref_norm equals (sum |x|^p)^(1/p) of the concatenation."""
    arrays = build_array_list(seed, n, (np.float16, np.float32, np.float64), "unit")
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays]) if arrays else []
    assert_close(ref_norm(arrays, ord), _textbook(flat, ord), 1e-13)
    assert_close(ref_norms(arrays, ord), np.array([_textbook(a, ord) for a in arrays]), 1e-13)


@pytest.mark.parametrize("ord", ORDS)
@pytest.mark.parametrize("k", [-1000, -600, 600, 1000])
def test_ref_norm_is_scale_exact_far_from_unit_range(ord, k):
    """norm(x * 2^k) == norm(x) * 2^k, where the textbook formula over/underflows."""
    rng = np.random.default_rng(k + 5000)
    x = rng.standard_normal(257)
    assert_close(ref_norm([np.ldexp(x, k)], ord), math.ldexp(ref_norm([x], ord), k), 1e-14)


def test_ref_norm_special_values():
    """Empty -> 0, NaN wins over inf, inf -> inf, -0.0 counts as 0, float32 1e30 is finite."""
    assert ref_norm([]) == 0.0
    assert ref_norm([np.zeros((0, 3))]) == 0.0
    assert math.isnan(ref_norm([np.array([np.inf, np.nan])]))
    assert ref_norm([np.array([np.inf, 1.0])], 3) == math.inf
    assert ref_norm([np.array([-0.0, 0.0])]) == 0.0
    assert ref_norm([np.full(4, 1e30, np.float32)]) == pytest.approx(2 * float(np.float32(1e30)))
    l2, mx, nf = ref_grad_stats([np.array([1.0, -np.inf, np.nan]), np.array([3.0, -4.0])])
    assert math.isnan(l2[0]) and math.isnan(mx[0]) and nf[0] == 2
    assert (l2[1], mx[1], nf[1]) == (5.0, 4.0, 0)


def test_ref_clip_helpers():
    """The clipping references follow docs/api.md, "Norms and clipping", on hand-checked cases."""
    out = ref_clip_by_value([np.array([-3.0, 0.5, np.nan], np.float32)], 1.0)[0]
    assert same_bits(out[:2], np.array([-1.0, 0.5], np.float32)) and np.isnan(out[2])
    clipped, ns = ref_clip_by_norm([np.array([3.0, 4.0]), np.zeros(2)], 1.0, eps=0.0)
    assert ns.tolist() == [5.0, 0.0]
    assert np.allclose(clipped[0], [0.6, 0.8]) and same_bits(clipped[1], np.zeros(2))
    # zero arrays stay untouched even with max_norm = eps = 0 (no 0/0)
    z = np.array([0.0, -0.0])
    assert same_bits(ref_clip_by_norm([z], 0.0, eps=0.0)[0][0], z)
    clipped, total = ref_clip_by_global_norm([np.array([3.0]), np.array([4.0])], 1.0, eps=0.0)
    assert total == 5.0 and clipped[0][0] == pytest.approx(0.6)
    clipped, total = ref_clip_by_global_norm([np.array([3.0, np.inf])], 1.0, eps=0.0,
                                             nonfinite="zero")
    assert total == math.inf and clipped[0].tolist() == [1.0, 0.0]
    g = [np.full((2, 3), 10.0)]
    prm = [np.array([[1.0, 0, 0], [100.0, 0, 0]])]
    out = ref_adaptive_clip(g, prm, 0.1, unit_axis=0)[0]
    # row 0: limit 0.1, ||g|| = sqrt(300) -> scaled; row 1: limit 10 < sqrt(300) -> scaled
    assert np.allclose(np.linalg.norm(out, axis=1), [0.1, 10.0])
