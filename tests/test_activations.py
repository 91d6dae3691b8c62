"""The activations whose derivative needs their input (elu, silu, gelu, gelu_tanh, prelu):
accuracy in ulp over the whole range of float32/float64 through the dense layer, forward,
saved derivative and backward against plain NumPy float64 references on every ISA and
thread count, parity with torch's F.elu/silu/gelu/prelu and nn.PReLU's weight gradient,
the gradcore.nn.Linear that saves for them, and bad input refused before anything is
written."""

import math

import numpy as np
import pytest

import gradcore
import gradcore.nn as gnn
import reference_dense as rd

LD = np.longdouble
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
ACTS = ["elu", "silu", "gelu", "gelu_tanh", "prelu"]
#: ulps allowed for normal results: the contract of exp/tanh/sigmoid, and gelu's (its
#: Phi is a product of several rounded factors; 4.6 measured in float32)
MAX_ULP = {"elu": 4.0, "silu": 4.0, "gelu_tanh": 4.0, "prelu": 4.0, "gelu": 6.0}
INV_SQRT2PI = 0.3989422804014327
LONGDOUBLE_OK = np.finfo(LD).nmant >= 63
erfc = np.vectorize(math.erfc, otypes=[np.float64])


# --------------------------------------------------------------------------- references
def ref_act(z, act, alpha=1.0, slope=0.25, dtype=F64):
    """act(z) in long double where it has the precision (x87), else float64; gelu's
    Phi from math.erfc (float64, within an ulp or two of float64, ample for float32) or,
    for float64 results, mpmath at 30 digits."""
    wide = LD if LONGDOUBLE_OK else np.float64
    z = np.asarray(z).astype(wide)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if act == "elu":
            return np.where(z > 0, z, wide(alpha) * np.expm1(z))
        if act == "prelu":
            return np.where(z > 0, z, wide(slope) * z)
        if act == "silu":
            e = np.exp(-np.abs(z))
            return z * np.where(z >= 0, 1 / (1 + e), e / (1 + e))
        if act == "gelu_tanh":   # the constants in long double too: z^3 reaches 1e4
            u = np.sqrt(wide(2) / np.arccos(wide(-1))) * (z + wide("0.044715") * z ** 3)
            e = np.exp(-np.abs(2 * u))
            return z * np.where(u >= 0, 1 / (1 + e), e / (1 + e))  # = 0.5 z (1 + tanh u)
        if act == "gelu":
            if dtype == F64:
                mpmath = pytest.importorskip("mpmath")
                mpmath.mp.dps = 30
                return np.array([float(mpmath.mpf(v) * mpmath.ncdf(v)) if abs(v) < 50 else (v if v > 0 else -0.0)
                                 for v in z.astype(np.float64).ravel().tolist()]).reshape(z.shape)
            z64 = z.astype(np.float64)
            return z64 * 0.5 * erfc(-z64 / math.sqrt(2))
    raise AssertionError(act)


def ref_grad(z, act, alpha=1.0, slope=0.25):
    """act'(z) in float64 (torch's formulas)."""
    z = np.asarray(z, np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if act == "elu":
            return np.where(z > 0, 1.0, alpha * np.exp(z))
        if act == "prelu":
            return np.where(z > 0, 1.0, slope)
        s = 1 / (1 + np.exp(-z))
        if act == "silu":
            return s * (1 + z * (1 - s))
        if act == "gelu":
            return 0.5 * erfc(-z / math.sqrt(2)) + z * np.exp(-z * z / 2) * INV_SQRT2PI
        if act == "gelu_tanh":
            c = math.sqrt(2 / math.pi)
            t = np.tanh(c * (z + 0.044715 * z ** 3))
            return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)
    raise AssertionError(act)


def test_references_match_finite_differences():
    z = np.linspace(-6, 6, 241) + 1e-3   # away from the kinks at 0
    h = 1e-6
    for act in ACTS:
        num = (ref_act(z + h, act).astype(np.float64) - ref_act(z - h, act).astype(np.float64)) / (2 * h)
        np.testing.assert_allclose(ref_grad(z, act), num, rtol=1e-6, atol=1e-8, err_msg=act)


def kwargs_for(act, dtype):
    """The activation's arguments for the 1 x 1 layer of through_dense: one shared slope of
    0.25 (ref_act's) for prelu."""
    if act == "prelu":
        return dict(prelu_weight=np.full(1, 0.25, dtype))
    if act == "elu":
        return dict(alpha=1.0)
    return {}


def through_dense(z, act, dtype, **kw):
    """act(z) elementwise via dense_forward with a 1 x 1 identity weight (z exact)."""
    x = np.asarray(z, dtype).reshape(-1, 1)
    y = gradcore.dense_forward(x, np.ones((1, 1), dtype), None, act, **kw)
    return y.ravel()


# --------------------------------------------------------------------------- accuracy
def ulps(got, ref, dtype):
    """|got - ref| in ulps of dtype at ref, for normal results; subnormal results count
    in units of the smallest subnormal."""
    fi = np.finfo(dtype)
    ref = np.asarray(ref)
    _, e = np.frexp(np.abs(ref).astype(np.float64))
    u = np.ldexp(1.0, e - (fi.nmant + 1)).astype(np.float64)
    u = np.maximum(u, float(fi.smallest_subnormal))
    return np.abs(got.astype(LD) - ref.astype(LD)).astype(np.float64) / u


def grid(dtype):
    fi = np.finfo(dtype)
    rng = np.random.default_rng(7)
    geo = np.geomspace(float(fi.smallest_subnormal), 1.0, 3000)
    parts = [np.linspace(-60, 60, 60_001), np.linspace(-3, 3, 20_001), rng.uniform(-40, 40, 10_000),
             geo, -geo, np.geomspace(1, float(fi.max) / 2, 500), -np.geomspace(1, float(fi.max) / 2, 500),
             np.array([0.0, -0.0, fi.tiny, -fi.tiny, fi.max, -fi.max])]
    return np.concatenate([p.astype(dtype) for p in parts])


@pytest.mark.skipif(not LONGDOUBLE_OK, reason="np.longdouble is no wider than float64 here")
@pytest.mark.parametrize("act", ["elu", "silu", "gelu_tanh", "prelu", "gelu"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_accuracy_over_the_whole_range(isa, dtype, act):
    """At most MAX_ULP for normal results wherever the result and the sigmoid/Phi factor
    inside it are normal (below that a product with a subnormal factor keeps only the
    factor's bits, as in every libm's composition)."""
    z = grid(dtype)
    if act == "gelu" and dtype == F64:
        z = z[::20]                                    # mpmath is slow: a thinner grid
    y = through_dense(z, act, dtype, **kwargs_for(act, dtype))
    ref = ref_act(z, act, dtype=dtype)
    fi = np.finfo(dtype)
    with np.errstate(all="ignore"):   # the sigmoid / Phi factor of z, where there is one
        factor = np.abs(ref.astype(np.float64) / z.astype(np.float64)) if act in ("silu", "gelu", "gelu_tanh") \
            else np.ones(z.shape)
    normal = np.isfinite(ref) & (np.abs(ref) >= float(fi.tiny)) & (factor >= 4 * float(fi.tiny))
    err = ulps(y[normal], ref[normal], dtype)
    worst = int(np.argmax(err)) if err.size else 0
    assert err.size == 0 or err.max() <= MAX_ULP[act], (
        f"{act} {dtype.name}: {err.max():.3g} ulp at z={z[normal][worst]!r} "
        f"(got {y[normal][worst]!r}, ref {float(ref[normal][worst])!r})")
    # everywhere else: finite where the reference is, and within a few smallest normals
    other = np.isfinite(ref) & ~normal
    assert np.all(np.abs(y[other].astype(np.float64) - ref[other].astype(np.float64)) <= 8 * float(fi.tiny) +
                  1e-6 * np.abs(ref[other].astype(np.float64)))


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_special_values(isa, dtype, act):
    inf, nan = np.inf, np.nan
    z = np.array([nan, inf, -inf, 0.0, -0.0, 1.0, -1.0], dtype)
    y = through_dense(z, act, dtype, **kwargs_for(act, dtype))
    assert np.isnan(y[0])
    assert y[1] == inf
    # -inf: elu's limit; silu and both gelus are -inf * 0 = NaN, as torch gives
    want_neg_inf = {"elu": -1.0, "silu": nan, "gelu": nan, "gelu_tanh": nan, "prelu": -inf}[act]
    assert y[2] == want_neg_inf or (np.isnan(want_neg_inf) and np.isnan(y[2]))
    assert y[3] == 0 and y[4] == 0


# --------------------------------------------------------------------------- dense layer
def case(seed, dtype, batch=9, n_in=13, n_out=21):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (batch, n_in)).astype(dtype)
    w = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
    b = rng.uniform(-1, 1, n_out).astype(dtype)
    gy = rng.uniform(-1, 1, (batch, n_out)).astype(dtype)
    return x, w, b, gy


@pytest.mark.parametrize("act,per_channel,n_out", [(a, False, 21) for a in ACTS] + [("prelu", True, 21),
                                                                                    ("prelu", True, 600),
                                                                                    ("gelu", False, 600)])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_dense_forward_backward_against_numpy(isa, threads, dtype, act, per_channel, n_out):
    """(600 outputs: several column strips of the backward's fused pass.)"""
    x, w, b, gy = case(3, dtype, n_out=n_out)
    slopes = np.linspace(-0.3, 0.6, n_out).astype(dtype) if per_channel else np.array([0.2], dtype)
    kw = dict(prelu_weight=slopes) if act == "prelu" else (dict(alpha=0.7) if act == "elu" else {})
    y, saved = gradcore.dense_forward(x, w, b, act, return_saved=True, **kw)
    # z: the same GEMM as the identity layer's (the GEMM's own accuracy); y and saved are
    # the activation of z and its derivative (or z itself for prelu)
    z = gradcore.dense_forward(x, w, b)
    rd.assert_gemm_close(z, rd.ref_dense_pre(x, w, b), rd.ref_dense_forward_scale(x, w, b), dtype, x.shape[1])
    slope = slopes.astype(np.float64) if act == "prelu" else 0.25
    ref_y = ref_act(z, act, alpha=0.7, slope=slope, dtype=dtype).astype(np.float64)
    np.testing.assert_allclose(y, ref_y, rtol=8 * np.finfo(dtype).eps, atol=8 * np.finfo(dtype).tiny)
    np.testing.assert_array_equal(gradcore.dense_forward(x, w, b, act, **kw), y)   # without saving
    if act == "prelu":
        np.testing.assert_array_equal(saved, z)
    else:
        np.testing.assert_allclose(saved, ref_grad(z, act, alpha=0.7), rtol=16 * np.finfo(dtype).eps,
                                   atol=16 * np.finfo(dtype).eps)
    grads = gradcore.dense_backward(gy, x, w, None, act, saved=saved, **kw)
    gz = gy.astype(np.float64) * ref_grad(z, act, alpha=0.7, slope=slope)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == F32 else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(grads[0], gz @ w.astype(np.float64), **tol)
    np.testing.assert_allclose(grads[1], gz.T @ x.astype(np.float64), **tol)
    np.testing.assert_allclose(grads[2], gz.sum(0), **tol)
    if act == "prelu":
        assert len(grads) == 4
        per = (gy.astype(np.float64) * np.where(z > 0, 0, z)).sum(0)
        np.testing.assert_allclose(grads[3], per if per_channel else [per.sum()], **tol)
    else:
        assert len(grads) == 3


def test_same_bits_on_every_thread_count():
    x, w, b, gy = case(5, F32, batch=300, n_in=70, n_out=600)
    out = []
    for t in (1, 2, 3):
        gradcore.set_num_threads(t)
        try:
            for act in ACTS:
                kw = dict(prelu_weight=np.array([0.1], np.float32)) if act == "prelu" else {}
                y, saved = gradcore.dense_forward(x, w, b, act, return_saved=True, **kw)
                out.append((act, y, gradcore.dense_backward(gy, x, w, y, act, saved=saved, **kw)))
        finally:
            gradcore.set_num_threads(2)
    n = len(ACTS)
    for i in range(n, len(out)):
        act, y, g = out[i]
        np.testing.assert_array_equal(y, out[i % n][1], err_msg=act)
        for a, b2 in zip(g, out[i % n][2]):
            np.testing.assert_array_equal(a, b2, err_msg=act)


# --------------------------------------------------------------------------- torch
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("act", ["elu", "silu", "gelu", "gelu_tanh", "prelu", "prelu_channel"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_matches_torch(torch, dtype, act):
    x, w, b, gy = case(11, dtype, batch=17, n_in=10, n_out=12)
    F = torch.nn.functional
    tdt = torch.float32 if dtype == F32 else torch.float64
    slopes = np.linspace(-0.2, 0.5, 12).astype(dtype) if act == "prelu_channel" else np.array([0.25], dtype)
    name = "prelu" if act.startswith("prelu") else act
    kw = dict(prelu_weight=slopes) if name == "prelu" else {}
    xt, wt, bt = (torch.tensor(a, dtype=tdt, requires_grad=True) for a in (x, w, b))
    at = torch.tensor(slopes, dtype=tdt, requires_grad=True)
    zt = F.linear(xt, wt, bt)
    yt = {"elu": lambda z: F.elu(z), "silu": F.silu, "gelu": F.gelu,
          "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"), "prelu": lambda z: F.prelu(z, at)}[name](zt)
    yt.backward(torch.tensor(gy))
    y, saved = gradcore.dense_forward(x, w, b, name, return_saved=True, **kw)
    grads = gradcore.dense_backward(gy, x, w, y, name, saved=saved, **kw)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == F32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    for got, want in zip(grads, [xt.grad, wt.grad, bt.grad] + ([at.grad] if name == "prelu" else [])):
        np.testing.assert_allclose(got, want.numpy(), **tol)


@pytest.mark.parametrize("act", ACTS)
def test_nn_linear_saves_for_its_backward_and_matches_torch(torch, act):
    """gradcore.nn.Linear(activation=...) against torch.nn.Linear followed by the torch
    activation module (nn.PReLU's weight as the layer's prelu_weight)."""
    lin = gnn.Linear(6, 5, activation=act, dtype=np.float64, rng=0,
                     **({"prelu_parameters": 5} if act == "prelu" else {}))
    if act == "prelu":
        lin.prelu_weight[...] = np.linspace(-0.1, 0.4, 5)
    nn = torch.nn
    module = {"elu": nn.ELU(), "silu": nn.SiLU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"),
              "prelu": nn.PReLU(5)}[act]
    tl = nn.Linear(6, 5).double()
    tl.load_state_dict({k: torch.from_numpy(lin.state_dict()[k]) for k in ("weight", "bias")})
    if act == "prelu":
        module = module.double()
        module.weight.data = torch.from_numpy(lin.prelu_weight.copy())
    x = np.random.default_rng(1).standard_normal((7, 6))
    gy = np.random.default_rng(2).standard_normal((7, 5))
    y = lin.forward(x)
    g = lin.backward(gy)
    xt = torch.from_numpy(x).requires_grad_()
    yt = module(tl(xt))
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g.input, xt.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g["weight"], tl.weight.grad.numpy(), rtol=1e-12, atol=1e-13)
    if act == "prelu":
        assert list(g) == ["weight", "bias", "prelu_weight"]
        np.testing.assert_allclose(g["prelu_weight"], module.weight.grad.numpy(), rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- bad input
def test_bad_input_writes_nothing():
    x, w, b, gy = case(2, F64)
    out = np.full((x.shape[0], w.shape[0]), 7.0)
    bad = [
        (dict(activation="prelu"), ValueError, "prelu_weight"),
        (dict(activation="prelu", prelu_weight=np.ones(3)), ValueError, "prelu_weight has 3 values"),
        (dict(activation="prelu", prelu_weight=np.ones(1, np.float32)), TypeError, "prelu_weight"),
        (dict(activation="relu", prelu_weight=np.ones(1)), ValueError, "only for activation 'prelu'"),
        (dict(activation="elu", alpha=-1.0), ValueError, "alpha"),
        (dict(activation="relu", return_saved=True), ValueError, "return_saved"),
        (dict(activation="swish"), ValueError, "activation"),
    ]
    for kwargs, exc, match in bad:
        with pytest.raises(exc, match=match):
            gradcore.dense_forward(x, w, b, out=out, **kwargs)
        np.testing.assert_array_equal(out, 7.0)
    y, saved = gradcore.dense_forward(x, w, b, "silu", return_saved=True)
    with pytest.raises(ValueError, match="needs saved"):
        gradcore.dense_backward(gy, x, w, y, "silu")
    with pytest.raises(ValueError, match="saved has shape"):
        gradcore.dense_backward(gy, x, w, y, "silu", saved=saved[:, :3])
    gw = np.full(w.shape, 7.0)
    with pytest.raises(ValueError, match="prelu_weight"):
        gradcore.dense_backward(gy, x, w, y, "prelu", saved=saved, grad_weight=gw)
    np.testing.assert_array_equal(gw, 7.0)
