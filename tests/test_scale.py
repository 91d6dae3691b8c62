"""gradcore.scale_: x *= factor in place, against a NumPy float64 reference, on every
ISA target and thread count; bad input leaves every array untouched."""

import numpy as np
import pytest

import gradcore

SHAPES = [(7,), (13, 5), (70_001,), (), (0,)]   # one over several chunks, a 0-d, an empty


def make(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [np.array(rng.standard_normal(s) * 3, dtype=dtype) for s in SHAPES]


def reference(arrays, factor):
    """x * factor in float64, rounded to the dtype; float32 multiplies by float32(factor),
    as a float32 multiplication does (the float64 product of two float32 values is exact)."""
    out = []
    for x in arrays:
        f = float(np.float32(factor)) if x.dtype == np.float32 else factor
        out.append(np.array(x.astype(np.float64) * f, dtype=x.dtype))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", [2.0 ** -16, 0.5, 1 / 3, -1.75, 65536.0, 0.0, 1e-3])
def test_scale_matches_float64_reference(dtype, factor, every_config):
    original = make(dtype)
    want = reference(original, factor)

    def run():
        arrays = [x.copy() for x in original]
        returned = gradcore.scale_(arrays, factor)
        assert returned is arrays
        return arrays

    for config, got in every_config(run):
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w, err_msg=str(config))


def test_power_of_two_factor_is_exact_in_float32():
    """A loss scaler's 1/scale: the float32 result is exactly x / scale."""
    x = np.array([3.0e30, -1.5, 7.0e-30, 1e20], np.float32)
    y = x.copy()
    gradcore.scale_([y], 2.0 ** -24)
    np.testing.assert_array_equal(y, (x.astype(np.float64) / 2 ** 24).astype(np.float32))


def test_tiny_factor_is_not_lost_to_underflow():
    """A factor below float32's normal range still scales large float32 values."""
    x = np.array([1e30, -3e35], np.float32)
    y = x.copy()
    gradcore.scale_([y], 1e-40)
    np.testing.assert_allclose(y, x.astype(np.float64) * 1e-40, rtol=1e-6)


def test_nan_and_inf_propagate():
    x = np.array([np.nan, np.inf, -np.inf, 2.0], np.float32)
    gradcore.scale_([x], 0.5)
    assert np.isnan(x[0]) and x[1] == np.inf and x[2] == -np.inf and x[3] == 1.0


def test_one_array_and_tuple_are_lists():
    x = np.ones(4)
    gradcore.scale_(x, 3.0)
    np.testing.assert_array_equal(x, 3.0)
    t = (np.ones(2), np.ones(3, np.float32))
    gradcore.scale_(t, 0.25)
    assert all((a == 0.25).all() for a in t)


@pytest.mark.parametrize("factor", ["2", None, [2.0], True, 1 + 2j])
def test_factor_not_a_real_number(factor):
    arrays = make(np.float64)
    before = [a.copy() for a in arrays]
    with pytest.raises(TypeError, match="factor"):
        gradcore.scale_(arrays, factor)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_read_only_array_leaves_every_array_untouched():
    arrays = make(np.float32)
    arrays[-2].flags.writeable = False
    before = [a.copy() for a in arrays]
    with pytest.raises(ValueError, match=r"arrays\[3\] is read-only"):
        gradcore.scale_(arrays, 0.5)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_unsupported_dtype_leaves_every_array_untouched():
    arrays = [np.ones(3), np.ones(3, np.int32)]
    with pytest.raises(TypeError, match=r"arrays\[1\]"):
        gradcore.scale_(arrays, 0.5)
    np.testing.assert_array_equal(arrays[0], 1.0)
