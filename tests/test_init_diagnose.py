"""gradcore.init (initialisers) and gradcore.diagnose.recurrent_gain.

Initialisers: the sample statistics of large draws match the formulas (bound of the
uniform ones, std of all), and the formulas match torch.nn.init when torch is importable
(fan, gain, and the bound/std of torch's own draws; the random values are not compared).
recurrent_gain: matrices with known spectra.
"""

import math

import numpy as np
import pytest

from gradcore import init
from gradcore.diagnose import RecurrentGain, recurrent_gain

try:
    import torch
    import torch.nn.init as tinit
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

SHAPES = [(512, 256), (300, 700), (64, 32, 3, 3), (128, 16, 5)]


# ---------------------------------------------------------------------------------------
# calculate_gain, fans

GAINS = [
    ("linear", None, 1.0), ("conv1d", None, 1.0), ("conv2d", None, 1.0), ("conv3d", None, 1.0),
    ("conv_transpose1d", None, 1.0), ("conv_transpose2d", None, 1.0),
    ("conv_transpose3d", None, 1.0), ("sigmoid", None, 1.0), ("tanh", None, 5 / 3),
    ("relu", None, math.sqrt(2)), ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
    ("leaky_relu", 0.2, math.sqrt(2 / 1.04)), ("leaky_relu", 0, math.sqrt(2)),
    ("leaky_relu", 1, 1.0), ("selu", None, 0.75),
]


@pytest.mark.parametrize("name,param,expected", GAINS)
def test_calculate_gain(name, param, expected):
    assert init.calculate_gain(name, param) == pytest.approx(expected, rel=1e-15)
    if torch is not None:
        assert init.calculate_gain(name, param) == pytest.approx(
            tinit.calculate_gain(name, param), rel=1e-15)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", "0.1")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", True)
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", float("nan"))


@pytest.mark.parametrize("shape,expected", [
    ((10, 20), (20, 10)), ((8, 3, 5, 5), (75, 200)), ((4, 6, 7), (42, 28)), ((5, 0), (0, 5))])
def test_fans(shape, expected):
    assert init.calculate_fan_in_and_fan_out(shape) == expected
    if torch is not None:
        assert init.calculate_fan_in_and_fan_out(shape) == tinit._calculate_fan_in_and_fan_out(
            torch.empty(shape))


# ---------------------------------------------------------------------------------------
# distributions: formulas, and sample statistics of large draws


def _expected(kind, shape, **kw):
    """(distribution, parameter) from the formulas: ("uniform", bound) or ("normal", std)."""
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(shape)
    if kind.startswith("xavier"):
        std = kw.get("gain", 1.0) * math.sqrt(2 / (fan_in + fan_out))
    else:
        fan = fan_in if kw.get("mode", "fan_in") == "fan_in" else fan_out
        std = init.calculate_gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0)) \
            / math.sqrt(fan)
    return ("uniform", math.sqrt(3) * std) if kind.endswith("uniform") else ("normal", std)


CASES = [
    ("xavier_uniform", {}), ("xavier_uniform", {"gain": 5 / 3}), ("xavier_normal", {}),
    ("xavier_normal", {"gain": 2.5}), ("kaiming_uniform", {}),
    ("kaiming_uniform", {"a": math.sqrt(5)}),  # torch's nn.Linear default
    ("kaiming_uniform", {"mode": "fan_out", "nonlinearity": "relu"}), ("kaiming_normal", {}),
    ("kaiming_normal", {"mode": "fan_out", "nonlinearity": "tanh"}),
    ("kaiming_normal", {"a": 0.2, "nonlinearity": "leaky_relu"}),
]


def _check_stats(x, dist, param):
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    assert abs(x.mean()) < 6 * param / math.sqrt(n)
    if dist == "uniform":
        assert np.abs(x).max() <= param * (1 + 1e-6)
        assert np.abs(x).max() >= param * (1 - 1e-3)  # n >= 1e5 draws nearly reach it
        assert x.std() == pytest.approx(param / math.sqrt(3), rel=0.02)
    else:
        assert x.std() == pytest.approx(param, rel=0.02)
        # normal: about 31.7% of the mass beyond one std
        assert np.mean(np.abs(x) > param) == pytest.approx(0.3173, abs=0.01)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,kw", CASES)
def test_distribution_statistics(kind, kw, shape):
    x = getattr(init, kind)(shape, rng=np.random.default_rng(1), **kw)
    assert x.shape == shape and x.dtype == np.float32
    _check_stats(x, *_expected(kind, shape, **kw))


@needs_torch
@pytest.mark.parametrize("shape", SHAPES[:2] + SHAPES[3:])
@pytest.mark.parametrize("kind,kw", CASES)
def test_distribution_matches_torch(kind, kw, shape):
    # torch's own draws have the bound/std that our formulas give
    torch.manual_seed(0)
    t = getattr(tinit, kind + "_")(torch.empty(shape), **kw).numpy()
    _check_stats(t, *_expected(kind, shape, **kw))


def test_dtype_and_int_shape_errors():
    x = init.xavier_normal((40, 30), rng=0, dtype=np.float64)
    assert x.dtype == np.float64
    with pytest.raises(TypeError, match="floating-point"):
        init.xavier_normal((4, 3), rng=0, dtype=np.int32)
    with pytest.raises(TypeError, match="rng"):
        init.xavier_normal((4, 3), rng="seed")
    with pytest.raises(TypeError, match="shape"):
        init.xavier_normal((4, 3.0), rng=0)
    with pytest.raises(ValueError, match=">= 0"):
        init.xavier_normal((4, -3), rng=0)
    with pytest.raises(ValueError, match="gain"):
        init.xavier_normal((4, 3), gain=float("inf"), rng=0)


@pytest.mark.parametrize("fn", ["xavier_uniform", "xavier_normal", "kaiming_uniform",
                                "kaiming_normal", "orthogonal"])
@pytest.mark.parametrize("shape", [(), 5, (7,)])
def test_fewer_than_two_dims(fn, shape):
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        getattr(init, fn)(shape, rng=0)


@pytest.mark.parametrize("fn", ["kaiming_uniform", "kaiming_normal"])
def test_kaiming_errors(fn):
    with pytest.raises(ValueError, match="mode"):
        getattr(init, fn)((4, 3), mode="fan_avg", rng=0)
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        getattr(init, fn)((4, 3), nonlinearity="gelu", rng=0)
    # torch lower-cases the mode
    assert getattr(init, fn)((4, 3), mode="FAN_OUT", rng=0).shape == (4, 3)


@pytest.mark.parametrize("fn", ["xavier_uniform", "xavier_normal", "kaiming_uniform",
                                "kaiming_normal", "orthogonal"])
def test_reproducible_and_fresh(fn):
    f = getattr(init, fn)
    a = f((16, 12), rng=42)
    np.testing.assert_array_equal(a, f((16, 12), rng=42))
    np.testing.assert_array_equal(a, f((16, 12), rng=np.random.default_rng(42)))
    assert not np.array_equal(a, f((16, 12), rng=43))
    g = np.random.default_rng(7)
    assert not np.array_equal(f((16, 12), rng=g), f((16, 12), rng=g))  # the generator advances
    assert f((16, 12)).shape == (16, 12)  # rng=None: fresh entropy
    assert f((0, 12), rng=0).shape == (0, 12)


# ---------------------------------------------------------------------------------------
# orthogonal


@pytest.mark.parametrize("shape", [(64, 64), (32, 80), (80, 32), (12, 4, 3, 3), (1, 9), (9, 1)])
@pytest.mark.parametrize("gain", [1.0, 0.5, 5 / 3])
def test_orthogonal(shape, gain):
    w = init.orthogonal(shape, gain, rng=3, dtype=np.float64)
    assert w.shape == shape
    m = w.reshape(shape[0], -1)
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(min(rows, cols)), atol=1e-12)
    sv = np.linalg.svd(m, compute_uv=False)
    np.testing.assert_allclose(sv, gain, rtol=1e-12)


def test_orthogonal_float32_and_haar_signs():
    w = init.orthogonal((128, 128), rng=0)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w @ w.T, np.eye(128), atol=1e-5)
    # the sign correction makes Q Haar-distributed: the diagonal has no preferred sign
    # (an uncorrected Householder QR gives a biased diagonal); mean of 1000 diagonal
    # entries of N(0, 1/128)-like values
    diag = np.concatenate([np.diag(init.orthogonal((128, 128), rng=s, dtype=np.float64))
                           for s in range(8)])
    assert abs(diag.mean()) < 5 * (1 / math.sqrt(128)) / math.sqrt(diag.size)


@needs_torch
def test_orthogonal_like_torch():
    torch.manual_seed(0)
    for shape in [(30, 50), (50, 30), (6, 4, 5)]:
        t = tinit.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=2.0).numpy()
        ours = init.orthogonal(shape, 2.0, rng=0, dtype=np.float64)
        for m in (t, ours):
            np.testing.assert_allclose(np.linalg.svd(m.reshape(shape[0], -1), compute_uv=False),
                                       2.0, rtol=1e-10)


# ---------------------------------------------------------------------------------------
# recurrent_gain


def _orth(h, seed):
    return init.orthogonal((h, h), rng=seed, dtype=np.float64)


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu"])
def test_recurrent_gain_plain(cell):
    h = 32
    low = recurrent_gain(0.5 * _orth(h, 0), cell)
    assert isinstance(low, RecurrentGain)
    assert low.largest_singular_value == pytest.approx(0.5, rel=1e-12)
    assert low.bound == 1.0 and low.ratio == pytest.approx(0.5, rel=1e-12)
    assert low.verdict.startswith("vanishing certain: sigma_max = 0.5 < 1/gamma = 1")
    assert low.per_gate == {}

    high = recurrent_gain(1.5 * _orth(h, 1), cell)
    assert high.largest_singular_value == pytest.approx(1.5, rel=1e-12)
    assert high.ratio == pytest.approx(1.5, rel=1e-12)
    assert high.verdict.startswith("explosion possible: sigma_max = 1.5 > 1/gamma = 1")


def test_recurrent_gain_known_spectrum():
    # W = U diag(s) V^T: sigma_max is max(s), whatever the other singular values
    rng = np.random.default_rng(5)
    h = 24
    u, v = _orth(h, 10), _orth(h, 11)
    s = rng.uniform(0.1, 0.9, h)
    s[7] = 1.8
    r = recurrent_gain(u @ np.diag(s) @ v.T)
    assert r.largest_singular_value == pytest.approx(1.8, rel=1e-12)
    assert r.verdict.startswith("explosion possible: sigma_max = 1.8 > 1/gamma = 1")
    # spectral radius < 1 but sigma_max > 1 (non-normal): still "explosion possible"
    nonnormal = np.array([[0.5, 3.0], [0.0, 0.5]])
    assert recurrent_gain(nonnormal).verdict.startswith("explosion possible")
    # float32 identity / orthogonal: borderline, not a random flip between verdicts
    assert recurrent_gain(np.eye(16, dtype=np.float32)).verdict.startswith("borderline")
    assert recurrent_gain(init.orthogonal((64, 64), rng=0)).verdict.startswith("borderline")
    # accepts lists and ints
    assert recurrent_gain([[2, 0], [0, 1]]).largest_singular_value == 2.0


@pytest.mark.parametrize("cell,gates,decisive", [("lstm", "ifgo", "g"), ("gru", "rzn", "n")])
def test_recurrent_gain_gated(cell, gates, decisive):
    h = 16
    scales = {g: 0.3 + 0.4 * k for k, g in enumerate(gates)}  # 0.3, 0.7, 1.1, (1.5)
    w = np.concatenate([scales[g] * _orth(h, k) for k, g in enumerate(gates)])
    assert w.shape == (len(gates) * h, h)
    r = recurrent_gain(w, cell)
    assert list(r.per_gate) == list(gates)
    for g in gates:
        assert r.per_gate[g] == pytest.approx(scales[g], rel=1e-12)
    assert r.largest_singular_value == pytest.approx(scales[decisive], rel=1e-12)
    assert r.bound == 1.0
    expected = "explosion possible" if scales[decisive] > 1 else "vanishing certain"
    assert r.verdict.startswith(expected) and "indicative" in r.verdict
    assert f"W_h{decisive}" in r.verdict

    # only the candidate block decides: shrink it below 1, keep the others large
    w2 = w.copy()
    k = gates.index(decisive)
    w2[k * h:(k + 1) * h] = 0.5 * _orth(h, 99)
    w2[:h] *= 10
    r2 = recurrent_gain(w2, cell)
    assert r2.verdict.startswith("vanishing certain")
    assert r2.per_gate[gates[0]] == pytest.approx(10 * scales[gates[0]], rel=1e-12)


@needs_torch
def test_recurrent_gain_torch_tensor_and_layout():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 12)
    w = lstm.weight_hh_l0  # requires grad
    r = recurrent_gain(w, "lstm")
    wn = w.detach().numpy().astype(np.float64)
    assert r.per_gate["g"] == pytest.approx(np.linalg.norm(wn[24:36], 2), rel=1e-12)
    gru = torch.nn.GRU(8, 12)
    assert set(recurrent_gain(gru.weight_hh_l0, "gru").per_gate) == {"r", "z", "n"}


@pytest.mark.parametrize("cell,shape", [
    ("rnn_tanh", (8, 4)), ("rnn_tanh", (8,)), ("rnn_relu", (2, 3, 3)), ("lstm", (8, 8)),
    ("lstm", (12, 4)), ("gru", (16, 4)), ("gru", (0, 0)), ("rnn_tanh", (0, 0))])
def test_recurrent_gain_shape_errors(cell, shape):
    with pytest.raises(ValueError, match=r"must have shape"):
        recurrent_gain(np.zeros(shape), cell)


def test_recurrent_gain_other_errors():
    with pytest.raises(ValueError, match="cell must be one of"):
        recurrent_gain(np.eye(3), "transformer")
    w = np.eye(3)
    w[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        recurrent_gain(w)
    with pytest.raises(TypeError, match="real numbers"):
        recurrent_gain(np.eye(3, dtype=complex))
    with pytest.raises(ValueError, match="rtol"):
        recurrent_gain(np.eye(3), rtol=-1)
