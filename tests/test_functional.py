"""Functional clipping (clip_by_global_norm, clip_by_norm, clip_by_value, adaptive_clip) for
immutable array libraries: the inputs are never modified, the results equal the float64
reference and the in-place functions applied to copies, containers are kept, and inputs
come through DLPack, __array__ and the buffer protocol. Also DLPack round trips of the
in-place functions (the caller's memory is what gets clipped)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradcore
from reference import (
    POLICIES,
    RefNonFiniteError,
    assert_close,
    build_array_list,
    ref_adaptive_clip,
    ref_clip_by_global_norm,
    ref_clip_by_norm,
    ref_clip_by_value,
    same_bits,
    same_float,
)


def snapshot(arrays):
    return [a.tobytes() for a in arrays]


def rtol(a):
    return 4 * float(np.finfo(a.dtype).eps)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 6), max_norm=st.sampled_from([0.0, 0.1, 1.0, 1e3]),
       ord=st.sampled_from([1, 2, math.inf, 3]), policy=st.sampled_from(POLICIES),
       n_special=st.integers(0, 2))
def test_clip_by_global_norm_leaves_inputs_and_matches(seed, n, max_norm, ord, policy, n_special):
    arrays = build_array_list(seed, n, scale_mode="mixed", n_special=n_special)
    for a in arrays:
        a.setflags(write=False)  # read-only inputs are fine for the functional form
    before = snapshot(arrays)
    try:
        expected, expected_total = ref_clip_by_global_norm(arrays, max_norm, ord, nonfinite=policy)
    except RefNonFiniteError:
        with pytest.raises(gradcore.NonFiniteGradientError):
            gradcore.clip_by_global_norm(arrays, max_norm, ord, nonfinite=policy)
        assert snapshot(arrays) == before
        return
    out, total = gradcore.clip_by_global_norm(arrays, max_norm, ord, nonfinite=policy)
    assert snapshot(arrays) == before
    assert isinstance(out, list) and len(out) == len(arrays)
    assert_close(total, expected_total, 1e-12 if ord != 3 else 1e-10)
    copies = [a.copy() for a in arrays]
    in_place_total = gradcore.clip_by_global_norm_(copies, max_norm, ord, nonfinite=policy)
    assert same_float(total, in_place_total)
    for got, ref, same in zip(out, expected, copies):
        assert got.dtype == ref.dtype and got.shape == ref.shape and got.flags.c_contiguous
        assert got.flags.writeable and not any(np.shares_memory(got, a) for a in arrays)
        assert same_bits(got, same)
        assert_close(got, ref, rtol(ref))


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 5), max_norm=st.sampled_from([0.0, 0.5, 10.0]),
       ord=st.sampled_from([1, 2, math.inf]))
def test_clip_by_norm_leaves_inputs_and_matches(seed, n, max_norm, ord):
    arrays = build_array_list(seed, n, scale_mode="mixed")
    before = snapshot(arrays)
    out, norms = gradcore.clip_by_norm(arrays, max_norm, ord)
    assert snapshot(arrays) == before
    expected, expected_norms = ref_clip_by_norm(arrays, max_norm, ord)
    assert_close(norms, expected_norms, 1e-12)
    for got, ref in zip(out, expected):
        assert_close(got, ref, rtol(ref))


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 5), bound=st.sampled_from([0.0, 0.3, 2.0]))
def test_clip_by_value_leaves_inputs_and_matches(seed, n, bound):
    arrays = build_array_list(seed, n, n_special=1)
    before = snapshot(arrays)
    out = gradcore.clip_by_value(arrays, bound)
    assert snapshot(arrays) == before
    copies = [a.copy() for a in arrays]
    gradcore.clip_by_value_(copies, bound)
    # (exact values; the sign of a zero clamped to [-0, 0] is not specified)
    for got, ref, same in zip(out, ref_clip_by_value(arrays, bound), copies):
        assert_close(got, ref, 0.0, atol=0.0)
        assert same_bits(got, same)
    for got, ref in zip(gradcore.clip_by_value(arrays, min=-bound), ref_clip_by_value(arrays, min=-bound)):
        assert_close(got, ref, 0.0, atol=0.0)


def test_adaptive_clip_leaves_inputs_and_matches():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((4, 5)), rng.standard_normal(7).astype(np.float32)]
    params = [0.1 * rng.standard_normal((4, 5)), rng.standard_normal(7).astype(np.float32)]
    before = snapshot(grads) + snapshot(params)
    out = gradcore.adaptive_clip(grads, params, 0.05)
    assert snapshot(grads) + snapshot(params) == before
    for got, ref in zip(out, ref_adaptive_clip(grads, params, 0.05)):
        assert_close(got, ref, rtol(ref))
    named = gradcore.adaptive_clip({"w": grads[0], "b": grads[1]}, {"b": params[1], "w": params[0]}, 0.05)
    assert same_bits(named["w"], out[0]) and same_bits(named["b"], out[1])
    with pytest.raises(ValueError, match="params"):
        gradcore.adaptive_clip({"w": grads[0]}, {"v": params[0]}, 0.05)


def test_containers_are_kept():
    a, b = np.array([3.0, 4.0]), np.array([0.0], dtype=np.float32)
    out, total = gradcore.clip_by_global_norm({"weight": a, "bias": b}, 1.0)
    assert total == 5.0 and list(out) == ["weight", "bias"] and out["bias"].dtype == np.float32
    np.testing.assert_allclose(out["weight"], [0.6, 0.8], rtol=1e-6)
    single, total = gradcore.clip_by_global_norm(a, 1.0)
    assert isinstance(single, np.ndarray) and total == 5.0
    from_tuple, _ = gradcore.clip_by_global_norm((a, b), 1.0)
    from_generator, _ = gradcore.clip_by_global_norm((x for x in (a, b)), 1.0)
    assert isinstance(from_tuple, tuple) and isinstance(from_generator, list)  # (a tuple stays one)
    assert all(same_bits(x, y) for x, y in zip(from_tuple, from_generator))
    assert gradcore.clip_by_value([], 1.0) == [] and gradcore.clip_by_global_norm([], 1.0) == ([], 0.0)


def test_non_contiguous_and_array_likes_are_accepted():
    base = np.arange(24, dtype=np.float64).reshape(4, 6)

    class OnlyArray:  # an array library known only through __array__
        def __array__(self, dtype=None, copy=None):
            return np.array([3.0, 4.0])

    out, total = gradcore.clip_by_global_norm([base[:, ::2], OnlyArray(), memoryview(np.ones(2))], 1e9)
    assert out[0].flags.c_contiguous and same_bits(out[0], np.ascontiguousarray(base[:, ::2]))
    assert same_bits(out[1], np.array([3.0, 4.0])) and same_bits(out[2], np.ones(2))
    assert total == pytest.approx(math.sqrt((base[:, ::2] ** 2).sum() + 25 + 2), rel=1e-15)


def test_errors_name_the_argument_and_modify_nothing():
    a = np.array([3.0, 4.0])
    with pytest.raises(TypeError, match=r"arrays\[1\]"):
        gradcore.clip_by_global_norm([a, np.array([1, 2])], 1.0)
    with pytest.raises(TypeError, match="arrays"):
        gradcore.clip_by_global_norm(3.0, 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        gradcore.clip_by_global_norm([a], -1.0)
    with pytest.raises(ValueError, match="nonfinite"):
        gradcore.clip_by_global_norm([a], 1.0, nonfinite="ignore")
    assert same_bits(a, np.array([3.0, 4.0]))


class DLPackOnly:
    """An array known only through the DLPack protocol (what JAX and CuPy export)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_in_place_functions_write_through_dlpack():
    memory = np.array([3.0, 4.0, 0.0], dtype=np.float32)
    total = gradcore.clip_by_global_norm_([DLPackOnly(memory)], 1.0)
    assert total == 5.0
    np.testing.assert_allclose(memory, [0.6, 0.8, 0.0], rtol=1e-6)
    gradcore.clip_by_value_(DLPackOnly(memory), 0.7)
    np.testing.assert_allclose(memory, [0.6, 0.7, 0.0], rtol=1e-6)


def test_functional_results_export_through_dlpack():
    out, _ = gradcore.clip_by_global_norm([np.array([3.0, 4.0])], 1.0)
    view = np.from_dlpack(out[0])
    assert np.shares_memory(view, out[0])


def test_torch_tensors_round_trip():
    torch = pytest.importorskip("torch", reason="torch is not installed: no torch round trip")
    t = torch.tensor([3.0, 4.0], dtype=torch.float64)
    out, total = gradcore.clip_by_global_norm([t], 1.0)
    assert total == 5.0 and t.tolist() == [3.0, 4.0]  # functional: the tensor is untouched
    back = torch.from_dlpack(out[0])  # and the result goes back to torch without a copy
    assert back.data_ptr() == out[0].ctypes.data
    assert torch.allclose(back, torch.tensor([0.6, 0.8], dtype=torch.float64))
    gradcore.clip_by_global_norm_([t], 1.0)  # in place: through DLPack, torch's own memory
    assert torch.allclose(t, back)
    param = torch.nn.Parameter(torch.tensor([6.0, 8.0]))  # requires grad: read through detach()
    assert gradcore.global_norm([param]) == 10.0
