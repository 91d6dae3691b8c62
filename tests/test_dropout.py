"""gradcore.dropout and gradcore.nn.Dropout: the generator against the published Philox
answers and a plain-Python reference, the mask's statistics (and torch's), reproducible
on every ISA and thread count, the backward regenerating the forward's mask, and bad
input refused before anything is written."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradcore
import gradcore.nn as gnn
import reference_dropout as ref


def test_reference_generator_matches_the_published_answers():
    """Random123's known answers for Philox4x32-10, zero and all-ones inputs."""
    assert ref.philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    ones = 0xFFFFFFFF
    assert ref.philox4x32_10((ones,) * 4, (ones, ones)) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)


def test_kernel_words_match_the_reference(isa, threads):
    for n, seed, offset in [(9, 0, 0), (70_003, 12345, 7), (40, 2 ** 64 - 1, 2 ** 64 - 1), (5, 2 ** 40 + 3, 2 ** 33)]:
        got = gradcore._core._dropout_bits(n, seed, offset)
        np.testing.assert_array_equal(got.astype(np.uint64), ref.words(n, seed, offset))
    assert tuple(gradcore._core._dropout_bits(4, 0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)


@given(n=st.integers(0, 300), p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, 1 / 3]),
       seed=st.integers(0, 2 ** 64 - 1), offset=st.integers(0, 2 ** 64 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_dropout_against_reference(isa, threads, n, p, seed, offset, dtype):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    y = gradcore.dropout(x, p, seed=seed, offset=offset)
    want = ref.dropout(x, p, seed, offset)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, want)


def test_same_bits_on_every_isa_and_thread_count():
    x = np.random.default_rng(0).standard_normal((300, 1001)).astype(np.float32)
    results = []
    previous_isa, previous_threads = gradcore.info()["isa"], gradcore.get_num_threads()
    try:
        for isa in gradcore.info()["isa_available"]:
            gradcore._core._set_isa(isa)
            for t in (1, 2, 3):
                gradcore.set_num_threads(t)
                results.append(gradcore.dropout(x, 0.3, seed=99, offset=5))
    finally:
        gradcore._core._set_isa(previous_isa)
        gradcore.set_num_threads(previous_threads)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mask_statistics(p):
    """The kept fraction is 1 - p within 5 binomial standard deviations, kept values are
    x / (1 - p), masks of different offsets or seeds are independent-looking (their
    agreement is that of independent draws), and the mean is preserved."""
    n = 1_000_000
    x = np.ones(n, np.float64)
    y = gradcore.dropout(x, p, seed=1, offset=0)
    kept = y != 0
    sd = math.sqrt(n * p * (1 - p))
    assert abs(kept.sum() - n * (1 - p)) < 5 * sd
    np.testing.assert_array_equal(y[kept], 1 / (1 - p))
    for other in (gradcore.dropout(x, p, seed=1, offset=1), gradcore.dropout(x, p, seed=2, offset=0)):
        both = np.count_nonzero(kept & (other != 0))
        assert abs(both - n * (1 - p) ** 2) < 5 * math.sqrt(n * (1 - p) ** 2 * (1 - (1 - p) ** 2))
    assert abs(y.mean() - 1) < 5 * math.sqrt(p / (1 - p) / n)
    # runs of kept/dropped elements as long as independent draws give (no stripes)
    runs = 1 + np.count_nonzero(kept[1:] != kept[:-1])
    expected = 1 + 2 * (n - 1) * p * (1 - p)
    assert abs(runs - expected) < 6 * math.sqrt(expected)


def test_matches_torch_statistics():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = torch.ones(400_000, dtype=torch.float32)
    t = torch.nn.functional.dropout(x, 0.3, training=True).numpy()
    g = gradcore.dropout(x.numpy(), 0.3, seed=0)
    assert set(np.unique(t)) == set(np.unique(g))                       # 0 and 1 / 0.7, same rounding
    assert abs(np.count_nonzero(t) - np.count_nonzero(g)) < 5 * math.sqrt(400_000 * 0.21) * math.sqrt(2)


def test_in_place_and_layouts():
    x = np.random.default_rng(3).standard_normal((6, 7))
    want = gradcore.dropout(x, 0.4, seed=5, offset=2)
    buf = x.copy()
    assert gradcore.dropout(buf, 0.4, seed=5, offset=2, out=buf) is buf
    np.testing.assert_array_equal(buf, want)
    # a strided x is read in C order: the result is the contiguous copy's
    np.testing.assert_array_equal(gradcore.dropout(x.T, 0.4, seed=5), gradcore.dropout(x.T.copy(), 0.4, seed=5))


def test_bad_input_writes_nothing():
    x = np.ones(8)
    out = np.full(8, 7.0)
    for kwargs, exc, match in [(dict(p=1.5), ValueError, "p must be in"), (dict(p=-0.1), ValueError, "p must be in"),
                               (dict(p=float("nan")), ValueError, "p must be in"),
                               (dict(p=0.5, seed=-1), ValueError, "seed"),
                               (dict(p=0.5, seed=2 ** 64), ValueError, "seed"),
                               (dict(p=0.5, seed=1.5), TypeError, "seed"),
                               (dict(p=0.5, offset=True), TypeError, "offset")]:
        kwargs.setdefault("seed", 0)
        with pytest.raises(exc, match=match):
            gradcore.dropout(x, out=out, **kwargs)
        np.testing.assert_array_equal(out, 7.0)
    with pytest.raises(TypeError):
        gradcore.dropout(np.ones(4, np.int64), 0.5, seed=0)
    with pytest.raises(ValueError, match="out has shape"):
        gradcore.dropout(x, 0.5, seed=0, out=np.zeros(4))
    with pytest.raises(ValueError, match="overlaps"):
        buf = np.zeros(12)
        gradcore.dropout(buf[:8], 0.5, seed=0, out=buf[4:])
    with pytest.raises(TypeError, match="seed"):
        gradcore.dropout(x, 0.5)                      # the seed is keyword-only and required


# --------------------------------------------------------------------------- the layer
def test_layer_backward_regenerates_the_forward_mask():
    layer = gnn.Dropout(0.25, seed=11, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((50, 40)) + 3   # no zeros
    y1 = layer.forward(x)
    gy = np.random.default_rng(1).standard_normal(x.shape)
    g = layer.backward(gy)
    kept = y1 != 0
    np.testing.assert_array_equal(g.input, np.where(kept, gy * (1 / 0.75), 0.0))
    assert list(g) == [] and layer.parameters() == []
    y2 = layer.forward(x)                                          # the next step: a new mask
    assert layer.offset == 2 and not np.array_equal(y2 != 0, kept)
    np.testing.assert_array_equal(y1, gradcore.dropout(x, 0.25, seed=11, offset=0))
    layer.eval()
    assert layer.forward(x) is not None and np.array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(gy).input, gy)
    assert layer.offset == 2


def test_layer_in_a_model_with_residual_and_seed_reproduces():
    def make():
        return gnn.Sequential(gnn.Linear(8, 8, activation="relu", rng=0, dtype=np.float64),
                              gnn.Dropout(0.5, seed=3, dtype=np.float64),
                              gnn.Residual(gnn.Sequential(gnn.Dropout(0.2, seed=4, dtype=np.float64),
                                                          gnn.Linear(8, 8, rng=1, dtype=np.float64))),
                              gnn.Linear(8, 2, rng=2, dtype=np.float64))
    x = np.random.default_rng(0).standard_normal((16, 8))
    gy = np.random.default_rng(1).standard_normal((16, 2))
    runs = []
    for _ in range(2):
        m = make()
        gy_copy = gy.copy()
        outs = [(m.forward(x), m.backward(gy_copy)) for _ in range(3)]
        np.testing.assert_array_equal(gy_copy, gy)
        runs.append(outs)
    for (y_a, g_a), (y_b, g_b) in zip(*runs):
        np.testing.assert_array_equal(y_a, y_b)
        np.testing.assert_array_equal(g_a.input, g_b.input)
    # against an explicit float64 composition with the same masks
    m = make()
    y = m.forward(x)
    g = m.backward(gy)
    h = np.maximum(x @ m[0].weight.T + m[0].bias, 0)
    d1 = ref.dropout(h, 0.5, 3, 0)
    d2 = ref.dropout(d1, 0.2, 4, 0)
    r = d1 + d2 @ m[2].block[1].weight.T + m[2].block[1].bias
    np.testing.assert_allclose(y, r @ m[3].weight.T + m[3].bias, rtol=1e-12, atol=1e-12)
    g_r = gy @ m[3].weight
    g_d1 = g_r + ref.dropout(g_r @ m[2].block[1].weight, 0.2, 4, 0)
    g_h = ref.dropout(g_d1, 0.5, 3, 0) * (h > 0)
    np.testing.assert_allclose(g.input, g_h @ m[0].weight, rtol=1e-12, atol=1e-12)


def test_layer_arguments():
    with pytest.raises(ValueError, match="p must be in"):
        gnn.Dropout(1.5)
    with pytest.raises(ValueError, match="seed"):
        gnn.Dropout(0.5, seed=-2)
    assert gnn.Dropout(0.5).seed != gnn.Dropout(0.5).seed        # fresh entropy when not given


# --------------------------------------------------------------------------- fused in the dense layer
@pytest.mark.parametrize("act", ["identity", "relu", "leaky_relu", "tanh", "sigmoid", "silu", "gelu", "prelu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_dropout_is_dropout_of_the_layer(isa, threads, dtype, act):
    """dense_forward(..., dropout=p) is gradcore.dropout of the layer without it, bit for
    bit; its backward is the layer's backward of the masked gradient (the mask
    regenerated from seed and offset), through y or the saved derivative."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 11)).astype(dtype)
    w = rng.standard_normal((300, 11)).astype(dtype)
    b = rng.standard_normal(300).astype(dtype)
    gy = rng.standard_normal((37, 300)).astype(dtype)
    kw = dict(prelu_weight=np.linspace(0.1, 0.3, 300).astype(dtype)) if act == "prelu" else {}
    saves = act in ("tanh", "sigmoid", "silu", "gelu", "prelu")
    drop = dict(dropout=0.3, seed=17, offset=4)
    plain = gradcore.dense_forward(x, w, b, act, return_saved=act in ("silu", "gelu", "prelu"), **kw)
    y0, s0 = plain if isinstance(plain, tuple) else (plain, None)
    out = gradcore.dense_forward(x, w, b, act, return_saved=saves, **drop, **kw)
    y, saved = out if saves else (out, None)
    np.testing.assert_array_equal(y, gradcore.dropout(y0, 0.3, seed=17, offset=4))
    if s0 is not None:
        np.testing.assert_array_equal(saved, s0)
    got = gradcore.dense_backward(gy, x, w, y, act, saved=saved, **drop, **kw)
    masked = gradcore.dropout(gy, 0.3, seed=17, offset=4)
    if act in ("tanh", "sigmoid"):   # the reference from the undropped layer's y
        want = gradcore.dense_backward(masked, x, w, y0, act)
    else:
        want = gradcore.dense_backward(masked, x, w, y0, act, saved=s0, **kw)
    # tanh/sigmoid: the saved 1 - t^2 and s (1 - s) (the complement exact) against the
    # reference's from y, which loses bits of 1 - y where y -> 1: a few ulps of the sum
    tol = 8 * np.finfo(dtype).eps * (300 if act in ("tanh", "sigmoid") else 1)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * float(np.max(np.abs(r))))


def test_dense_dropout_arguments():
    x, w = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="dropout must be in"):
        gradcore.dense_forward(x, w, dropout=1.0, seed=0)
    with pytest.raises(ValueError, match="needs seed"):
        gradcore.dense_forward(x, w, dropout=0.5)
    with pytest.raises(ValueError, match="needs saved"):
        y = gradcore.dense_forward(x, w, None, "tanh", dropout=0.5, seed=1)
        gradcore.dense_backward(np.ones((2, 4)), x, w, y, "tanh", dropout=0.5, seed=1)
    y, saved = gradcore.dense_forward(x, w, None, "tanh", dropout=0.5, seed=1, return_saved=True)
    assert saved.shape == y.shape
