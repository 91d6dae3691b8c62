"""Complex arrays (complex64, complex128) in the norms and in clip-by-norm.

The reference is NumPy in float64: |z| = np.abs of the complex128 copy (hypot, which
neither overflows nor underflows), then the real norm of tests/reference.py. The one
convention of gradcore's own: a NaN real or imaginary part gives NaN for every order
(where hypot(inf, nan) is inf), as the L2 norm of the components does.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradcore
from reference import assert_close, ref_norm, ref_norms

C64, C128, F32, F64 = np.complex64, np.complex128, np.float32, np.float64
INF = math.inf
ORDS = [1, 2, INF, 3, 0.5]
SIZES = [0, 1, 3, 17, 1000, 70_001]  # 70_001: three chunks, the last one partial


def magnitudes(a):
    """|z| in float64 (a real array as |x|), NaN where either part is NaN."""
    a = np.asarray(a)
    if a.dtype.kind != "c":
        return np.abs(np.asarray(a, F64)).ravel()
    z = np.asarray(a, C128).ravel()
    m = np.abs(z)
    m[np.isnan(z.real) | np.isnan(z.imag)] = np.nan
    return m


def ref_complex_norm(arrays, ord):
    return ref_norm([magnitudes(a) for a in arrays], ord)


def ref_complex_norms(arrays, ord):
    return ref_norms([magnitudes(a) for a in arrays], ord)


def rtol(ord, dtype=C128):
    return 1e-12 if ord in (1, 2, INF) else 1e-10


def random_complex(rng, n, dtype, scale=1.0):
    z = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    with np.errstate(over="ignore", under="ignore"):
        return (z * scale).astype(dtype)


# ------------------------------------------------------------------ norms


@pytest.mark.parametrize("dtype", [C64, C128])
@pytest.mark.parametrize("n", SIZES)
def test_norms_match_the_reference(isa, threads, dtype, n):
    rng = np.random.default_rng(n)
    z = random_complex(rng, n, dtype)
    for ord in ORDS if n < 70_000 else [1, 2, INF]:
        assert_close(gradcore.global_norm([z], ord), ref_complex_norm([z], ord), rtol(ord),
                     err_msg=f"global_norm ord={ord}")
        assert_close(gradcore.norms([z, z[: n // 2]], ord), ref_complex_norms([z, z[: n // 2]], ord),
                     rtol(ord), err_msg=f"norms ord={ord}")


@pytest.mark.parametrize("ord", ORDS)
def test_complex128_near_overflow_and_underflow_is_exact(isa, threads, ord):
    """Components whose squares overflow or underflow float64, finite |z| and norms."""
    cases = {
        "huge": np.array([1e300 + 1e300j, -1e300j, 3e306 - 4e306j] * 2, C128),
        "tiny": np.array([1e-300 + 1e-300j, 3e-310j, 5e-324 + 0j, -2e-305 + 1e-306j] * 9, C128),
        "huge and tiny": np.array([1e300 + 1e300j, 1e-300 + 1e-300j, 0j] * 11, C128),
        "subnormal": np.full(33, 5e-324 + 5e-324j, C128),
    }
    for name, z in cases.items():
        # The reference on z / 2^e (exact) near 1, times 2^e: |z| of subnormal parts
        # would otherwise be rounded to a subnormal magnitude before it is summed.
        _, e = np.frexp(np.max(np.abs(z.view(F64))))
        unit = np.ldexp(z.real, -e) + 1j * np.ldexp(z.imag, -e)
        expected = float(np.ldexp(ref_complex_norm([unit], ord), e))
        assert math.isfinite(expected) and expected > 0
        assert_close(gradcore.global_norm([z], ord), expected, rtol(ord), err_msg=f"{name} ord={ord}")
        assert_close(gradcore.norms([z], ord), [expected], rtol(ord), err_msg=name)


def test_complex64_extremes_are_exact(isa):
    """|z| of complex64 beyond float32's range and squares below it: float64 sums."""
    z = np.array([3e38 + 3e38j, 1e-45 + 1e-45j, -1e-40j, 0j] * 5, C64)
    for ord in ORDS:
        assert_close(gradcore.global_norm(z, ord), ref_complex_norm([z], ord), rtol(ord))


def test_nan_and_inf_components(isa, threads):
    base = random_complex(np.random.default_rng(0), 40, C128)
    for dtype in (C64, C128):
        for where, value, expected in [(3, complex(np.nan, 1), math.nan), (39, complex(2, np.nan), math.nan),
                                       (0, complex(np.inf, 0), INF), (17, complex(1, -np.inf), INF),
                                       (5, complex(np.inf, np.nan), math.nan)]:
            z = base.astype(dtype)
            z[where] = value
            for ord in ORDS:
                got = gradcore.global_norm([np.ones(3, F32), z], ord)
                assert (math.isnan(got) if math.isnan(expected) else got == expected), (value, ord, got)
                assert_close(gradcore.norms([z, np.ones(2)], ord), [expected, ref_norm([np.ones(2)], ord)], 1e-15)


@given(st.lists(st.tuples(st.sampled_from(["float32", "float64", "complex64", "complex128"]),
                          st.integers(0, 300), st.integers(-300, 300)), max_size=6),
       st.sampled_from(ORDS), st.integers(0, 2**32 - 1))
def test_mixed_real_and_complex_lists(isa, threads, specs, ord, seed):
    rng = np.random.default_rng(seed)
    arrays = []
    for dtype, n, exp in specs:
        if dtype in ("float32", "complex64"):
            exp = max(-30, min(30, exp))
        scale = 10.0 ** exp
        if dtype.startswith("complex"):
            arrays.append(random_complex(rng, n, dtype, scale))
        else:
            arrays.append((rng.standard_normal(n) * scale).astype(dtype))
    assert_close(gradcore.global_norm(arrays, ord), ref_complex_norm(arrays, ord), rtol(ord))
    assert_close(gradcore.norms(arrays, ord), ref_complex_norms(arrays, ord), rtol(ord))


def test_a_real_array_as_complex_has_the_same_norm(isa):
    x = np.random.default_rng(3).standard_normal(101)
    for ord in ORDS:
        assert_close(gradcore.global_norm(x.astype(C128), ord), gradcore.global_norm(x, ord), 1e-14)


def test_non_contiguous_and_multidimensional_complex_is_read(isa):
    z = random_complex(np.random.default_rng(4), 60, C128).reshape(6, 10)
    for ord in ORDS:
        assert_close(gradcore.global_norm(z[:, ::3], ord), ref_complex_norm([z[:, ::3]], ord), rtol(ord))
        assert_close(gradcore.global_norm(z.T, ord), ref_complex_norm([z], ord), rtol(ord))


# ------------------------------------------------------------------ clipping


def scaled(a, factor):
    """Both parts times factor in float64, rounded once to a's component dtype."""
    a = np.asarray(a)
    out = np.empty_like(a)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        out.real = (np.asarray(a.real, F64) * factor).astype(a.real.dtype)
        out.imag = (np.asarray(a.imag, F64) * factor).astype(a.real.dtype)
    return out


def factor_of(max_norm, norm, eps):
    return 1.0 if norm == 0 else min(1.0, max_norm / (norm + eps))


def close_arrays(got, expected, dtype):
    assert got.dtype == expected.dtype
    tol = 3e-7 if np.dtype(dtype) == C64 else 1e-13
    assert_close(got.view(got.real.dtype), expected.view(expected.real.dtype), tol)


@pytest.mark.parametrize("dtype", [C64, C128])
@pytest.mark.parametrize("ord", ORDS)
def test_clip_by_norm_in_place(isa, threads, dtype, ord):
    rng = np.random.default_rng(7)
    arrays = [random_complex(rng, n, dtype) for n in (1, 17, 1000)] + [np.full(3, 1e-3, F32)]
    before = [a.copy() for a in arrays]
    ns = gradcore.clip_by_norm_(arrays, 0.5, ord, eps=1e-6)
    expected_norms = ref_complex_norms(before, ord)
    assert_close(ns, expected_norms, rtol(ord))
    for a, b, n in zip(arrays, before, ns):
        f = factor_of(0.5, n, 1e-6)
        if f == 1.0:
            assert np.array_equal(a, b)
        else:
            close_arrays(a, scaled(b, f), b.dtype)


@pytest.mark.parametrize("dtype", [C64, C128])
def test_clip_by_global_norm_in_place(isa, threads, dtype):
    rng = np.random.default_rng(8)
    arrays = [random_complex(rng, 500, dtype), rng.standard_normal(20).astype(F64),
              random_complex(rng, 3, dtype)]
    before = [a.copy() for a in arrays]
    total = gradcore.clip_by_global_norm_(arrays, 1.0, 2)
    expected = ref_complex_norm(before, 2)
    assert_close(total, expected, 1e-12)
    for a, b in zip(arrays, before):
        if b.dtype.kind == "c":
            close_arrays(a, scaled(b, 1.0 / (expected + 1e-6)), b.dtype)
        else:
            assert_close(a, b * (1.0 / (expected + 1e-6)), 1e-13)


@pytest.mark.parametrize("dtype", [C64, C128])
def test_policy_zero_is_component_wise(isa, threads, dtype):
    z = random_complex(np.random.default_rng(9), 20, dtype)
    z[2] = complex(np.nan, 0.75)
    z[5] = complex(-0.5, np.inf)
    z[7] = complex(-np.inf, np.nan)
    before = z.copy()
    total = gradcore.clip_by_global_norm_([z], 0.1, nonfinite="zero")
    assert math.isnan(total)
    zeroed = np.nan_to_num(before, nan=0, posinf=0, neginf=0)
    assert zeroed[2] == 0.75j and zeroed[5] == -0.5  # the other part stays
    remaining = ref_complex_norm([zeroed], 2)
    close_arrays(z, scaled(zeroed, 0.1 / (remaining + 1e-6)), dtype)


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_policies_that_leave_complex_untouched(isa, policy):
    z = random_complex(np.random.default_rng(10), 9, C128)
    z[4] = complex(np.inf, 1)
    before = z.copy()
    if policy == "error":
        with pytest.raises(gradcore.NonFiniteGradientError):
            gradcore.clip_by_global_norm_([z], 1.0, nonfinite=policy)
    else:
        assert gradcore.clip_by_global_norm_([z], 1.0, nonfinite=policy) == INF
    assert np.array_equal(z, before)


def test_functional_forms_keep_the_dtype_and_match_in_place(isa):
    rng = np.random.default_rng(11)
    tree = {"a": random_complex(rng, 30, C64), "b": [random_complex(rng, 5, C128), np.ones(4, F32)]}
    originals = {"a": tree["a"].copy(), "b": [x.copy() for x in tree["b"]]}
    out, total = gradcore.clip_by_global_norm(tree, 0.5)
    flat_in = [originals["a"]] + originals["b"]
    in_place = [x.copy() for x in flat_in]
    assert total == gradcore.clip_by_global_norm_(in_place, 0.5)
    for got, want in zip([out["a"]] + out["b"], in_place):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(tree["a"], originals["a"])  # inputs untouched
    copies, ns = gradcore.clip_by_norm([originals["a"]], 0.1, 1)
    assert copies[0].dtype == C64
    assert_close(ns, ref_complex_norms([originals["a"]], 1), 1e-12)


# ------------------------------------------------------------------ refusals


def _refusals():
    return {
        "clip_by_value_": lambda a: gradcore.clip_by_value_(a, 0.1),
        "zero_nonfinite_": lambda a: gradcore._core.zero_nonfinite_(a),  # behind distributed
        "grad_stats": lambda a: gradcore.grad_stats(a),
        "unit_norms": lambda a: gradcore.unit_norms(a),
        "adaptive_clip_": lambda a: gradcore.adaptive_clip_(a, [np.ones(np.shape(x)) for x in a]),
        "clip_by_value": lambda a: gradcore.clip_by_value(a, 0.1),
        "adaptive_clip": lambda a: gradcore.adaptive_clip(a, [np.ones(np.shape(x)) for x in a]),
    }


@pytest.mark.parametrize("dtype", [C64, C128])
@pytest.mark.parametrize("call", list(_refusals()))
def test_element_wise_operations_refuse_complex(dtype, call):
    good = np.full(8, 100.0, F32)
    bad = np.full(3, 100 + 100j, dtype)
    arrays = [good, bad]
    name = "grads" if "adaptive" in call or call == "unit_norms" else "arrays"
    with pytest.raises(TypeError, match=rf"{name}\[1\]: dtype {np.dtype(dtype).name} is not supported "
                                        r"\(expected "):
        _refusals()[call](arrays)
    assert np.all(good == 100.0) and np.all(bad == 100 + 100j)


def test_complex_params_of_adaptive_clip_are_refused():
    g, p = np.ones(4, F32), np.ones(4, C64)
    with pytest.raises(TypeError, match=r"params\[0\]: dtype complex64 is not supported"):
        gradcore.adaptive_clip_([g], [p])
    assert np.all(g == 1.0)


def test_the_layers_refuse_complex():
    x = np.ones((2, 3), C64)
    with pytest.raises(TypeError, match=r"a: dtype complex64 is not supported \(expected float32 or float64\)"):
        gradcore.matmul(x, np.ones((3, 2), F32))


# ------------------------------------------------------------------ other producers


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_torch_complex_tensors_through_dlpack(isa, threads):
    import torch

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.complex64, torch.complex128):
        t = torch.randn(1000, dtype=dtype, generator=g)
        for ord in ORDS:
            expected = float(torch.linalg.vector_norm(t.to(torch.complex128), ord))
            assert_close(gradcore.global_norm(t, ord), expected, rtol(ord))
            assert_close(gradcore.global_norm(t, ord), ref_complex_norm([t.numpy()], ord), rtol(ord))
        clipped = t.clone()
        ns = gradcore.clip_by_norm_([clipped], 1.0)
        assert clipped.dtype == dtype
        want = t.to(torch.complex128) * (1.0 / (float(ns[0]) + 1e-6))
        tol = 3e-7 if dtype == torch.complex64 else 1e-13
        assert torch.allclose(clipped.to(torch.complex128), want, rtol=tol, atol=0)
        with pytest.raises(TypeError, match=r"arrays\[0\]: dtype complex"):
            gradcore.clip_by_value_([t.clone()], 1.0)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
@pytest.mark.parametrize("ord", [2.0, 1.0, INF, 3.0])
def test_gradcore_torch_clips_complex_gradients_as_torch_does(ord):
    """gradcore.torch serves complex gradients itself (in their own memory) and returns
    what torch.nn.utils returns: a real total, float64 when a gradient is complex128."""
    import torch

    import gradcore.torch as gct

    g = torch.Generator().manual_seed(1)
    for dtypes in [(torch.complex64, torch.float32), (torch.complex128, torch.float32),
                   (torch.complex64, torch.complex64)]:
        ours = [torch.nn.Parameter(torch.zeros(n, dtype=d)) for n, d in zip((300, 7), dtypes)]
        theirs = [torch.nn.Parameter(torch.zeros(n, dtype=d)) for n, d in zip((300, 7), dtypes)]
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, dtype=a.dtype, generator=g) * 5
            b.grad = a.grad.clone()
        storage = [p.grad.data_ptr() for p in ours]
        want_total = torch.nn.utils.get_total_norm([p.grad for p in theirs], ord)
        total = gct.get_total_norm([p.grad for p in ours], ord)
        assert total.dtype == want_total.dtype
        assert_close(float(total), float(want_total), 1e-6)
        want = torch.nn.utils.clip_grad_norm_(theirs, 1.0, ord)
        got = gct.clip_grad_norm_(ours, 1.0, ord)
        assert got.dtype == want.dtype
        assert_close(float(got), float(want), 1e-6)
        assert [p.grad.data_ptr() for p in ours] == storage
        for a, b in zip(ours, theirs):
            assert a.grad.dtype == b.grad.dtype
            assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=0)
    # gradcore's own path, not torch's: complex64 squares of 5e30 overflow torch's float32
    # norm; gradcore's is exact (and clips to max_norm).
    big = torch.nn.Parameter(torch.zeros(4, dtype=torch.complex64))
    big.grad = torch.full((4,), 3e30 + 4e30j, dtype=torch.complex64)
    assert math.isinf(float(torch.nn.utils.get_total_norm([big.grad.clone()])))
    assert float(gct.clip_grad_norm_([big], 1.0)) == pytest.approx(1e31, rel=1e-6)
    assert float(torch.linalg.vector_norm(big.grad.to(torch.complex128))) == pytest.approx(1.0, rel=1e-5)
    # A conjugate view (torch does not export it through DLPack) is handed to torch.
    z = torch.randn(5, dtype=torch.complex64, generator=g).conj()
    assert z.is_conj()
    assert float(gct.get_total_norm([z])) == pytest.approx(float(torch.linalg.vector_norm(z)))


def test_complex_device_arrays_are_refused():
    """No CUDA kernels for complex: a complex device array is refused by dtype, on the
    CPU-only build too (the dtype is checked before the device is used)."""

    class ComplexCAI:
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<c8", "data": (1 << 20, False),
                                    "strides": None, "version": 3}

        def __dlpack_device__(self):
            return (2, 0)

    with pytest.raises(TypeError, match=r"arrays\[0\]: dtype complex64 is not supported \(expected "
                                        r"float16, bfloat16, float32 or float64\)"):
        gradcore.global_norm([ComplexCAI()])


@pytest.mark.skipif(importlib.util.find_spec("optax") is None, reason="needs jax and optax")
def test_optax_clip_by_global_norm_on_complex_leaves():
    import jax.numpy as jnp
    import optax

    import gradcore.optax as gco

    rng = np.random.default_rng(12)
    updates = {"w": jnp.asarray(random_complex(rng, 50, C64) * 3), "b": jnp.ones(4, jnp.float32)}
    ours, _ = gco.clip_by_global_norm(1.0).update(updates, gco.clip_by_global_norm(1.0).init(updates))
    theirs, _ = optax.clip_by_global_norm(1.0).update(updates, optax.clip_by_global_norm(1.0).init(updates))
    assert ours["w"].dtype == jnp.complex64
    for k in updates:
        np.testing.assert_allclose(np.asarray(ours[k]), np.asarray(theirs[k]), rtol=2e-6)
