"""Tests of the layer API gradcore.nn (RNN, LSTM, GRU).

Against torch (skipped when it is not importable): forward outputs and every gradient
(parameters, input, initial state) for every cell, 1 and 2 layers, both directions,
batch_first, with and without bias; state_dict interchange; truncated BPTT against a torch
loop that detaches the state between chunks. Without torch: shapes, names, initialisation,
errors, the wiring of directions/layers (against the functional API and by directional
finite differences), and truncated BPTT with k >= T equal to full BPTT.
"""

import numpy as np
import pytest

import gradcore
import gradcore.nn as gnn

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def make(cell, *args, **kwargs):
    if cell.startswith("rnn_"):
        return gnn.RNN(*args, nonlinearity=cell[4:], **kwargs)
    return {"lstm": gnn.LSTM, "gru": gnn.GRU}[cell](*args, **kwargs)


def is_lstm(cell):
    return cell == "lstm"


def state_of(cell, rng, shape, dtype=np.float64):
    """A random initial state (or state gradient) in the layer's form."""
    h = rng.standard_normal(shape).astype(dtype)
    if is_lstm(cell):
        return h, rng.standard_normal(shape).astype(dtype)
    return h


def seq_shape(T, B, F, batch_first):
    return (B, T, F) if batch_first else (T, B, F)


# ---------------------------------------------------------------------------- torch
def torch_module(torch, cell, I, H, **kwargs):
    kwargs.setdefault("dtype", torch.float64)
    if cell.startswith("rnn_"):
        return torch.nn.RNN(I, H, nonlinearity=cell[4:], **kwargs)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H, **kwargs)


def to_torch_state(torch, cell, hx, requires_grad=False):
    if hx is None:
        return None
    if is_lstm(cell):
        return tuple(torch.tensor(a, requires_grad=requires_grad) for a in hx)
    return torch.tensor(hx, requires_grad=requires_grad)


def state_loss(torch, cell, h_n, grad_h_n):
    if grad_h_n is None:
        return 0.0
    if is_lstm(cell):
        return sum((a * torch.from_numpy(g)).sum() for a, g in zip(h_n, grad_h_n))
    return (h_n * torch.from_numpy(grad_h_n)).sum()


def assert_close(actual, expected, name, rtol=1e-9, atol=1e-10):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq", "bf"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_matches_torch(cell, num_layers, bidirectional, batch_first, bias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    T, B, I, H = 5, 3, 4, 6
    m = torch_module(torch, cell, I, H, num_layers=num_layers, bias=bias,
                     batch_first=batch_first, bidirectional=bidirectional)
    layer = gnn.from_torch(m)
    assert type(layer).__name__ == type(m).__name__
    assert layer.dtype == np.float64 and layer.cell == cell
    assert list(layer.state_dict()) == list(m.state_dict())
    assert list(dict(layer.named_parameters())) == [n for n, _ in m.named_parameters()]

    rng = np.random.default_rng(1)
    D = 2 if bidirectional else 1
    x = rng.standard_normal(seq_shape(T, B, I, batch_first))
    h0 = state_of(cell, rng, (num_layers * D, B, H))
    # --- forward
    xt = torch.tensor(x, requires_grad=True)
    h0t = to_torch_state(torch, cell, h0, requires_grad=True)
    out_t, hn_t = m(xt, h0t)
    out, hn = layer.forward(x, h0)
    assert out.shape == tuple(out_t.shape)
    assert_close(out, out_t.detach().numpy(), "output")
    if is_lstm(cell):
        assert_close(hn[0], hn_t[0].detach().numpy(), "h_n")
        assert_close(hn[1], hn_t[1].detach().numpy(), "c_n")
    else:
        assert_close(hn, hn_t.detach().numpy(), "h_n")
    # --- backward with random grad_output and grad_h_n (and grad_c_n)
    grad_out = rng.standard_normal(out.shape)
    grad_hn = state_of(cell, rng, (num_layers * D, B, H))
    loss = (out_t * torch.from_numpy(grad_out)).sum() + state_loss(torch, cell, hn_t, grad_hn)
    loss.backward()
    grads = layer.backward(grad_out, grad_hn)
    assert list(grads) == list(layer.state_dict())
    for name, p in m.named_parameters():
        assert grads[name].shape == tuple(p.shape), name
        assert_close(grads[name], p.grad.numpy(), name)
    assert_close(grads.input, xt.grad.numpy(), "grad input")
    if is_lstm(cell):
        assert_close(grads.hx[0], h0t[0].grad.numpy(), "grad h0")
        assert_close(grads.hx[1], h0t[1].grad.numpy(), "grad c0")
    else:
        assert_close(grads.hx, h0t.grad.numpy(), "grad h0")
    assert sorted(grads.hidden_grad_norms) == sorted(
        f"l{k}" + s for k in range(num_layers) for s in ([""] + ["_reverse"] * bidirectional))
    for key, norms in grads.hidden_grad_norms.items():
        assert norms.shape == (T,) and norms.dtype == np.float64, key
        assert np.all(np.isfinite(norms)) and np.all(norms >= 0), key
    assert layer.hidden_grad_norms is grads.hidden_grad_norms


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_float32_zero_state_and_output_only(cell):
    """float32, h0=None (zeros), loss on the output only (grad_h_n=None)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    T, B, I, H = 7, 4, 5, 9
    m = torch_module(torch, cell, I, H, num_layers=2, bidirectional=True, dtype=torch.float32)
    layer = gnn.from_torch(m)
    assert layer.dtype == np.float32
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    out_t, _ = m(xt)
    out, _ = layer(x)
    assert out.dtype == np.float32
    assert_close(out, out_t.detach().numpy(), "output", rtol=1e-4, atol=1e-5)
    grad_out = rng.standard_normal(out.shape).astype(np.float32)
    (out_t * torch.from_numpy(grad_out)).sum().backward()
    grads = layer.backward(grad_out)
    for name, p in m.named_parameters():
        assert grads[name].dtype == np.float32
        assert_close(grads[name], p.grad.numpy(), name, rtol=1e-4, atol=1e-4)
    assert_close(grads.input, xt.grad.numpy(), "grad input", rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
def test_matches_torch_unbatched(cell):
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    T, I, H = 6, 3, 5
    m = torch_module(torch, cell, I, H, num_layers=2, bidirectional=True, batch_first=True)
    layer = gnn.from_torch(m)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, I))
    h0 = state_of(cell, rng, (4, H))
    xt = torch.tensor(x, requires_grad=True)
    out_t, hn_t = m(xt, to_torch_state(torch, cell, h0))
    out, hn = layer.forward(x, h0)
    assert out.shape == (T, 2 * H)
    assert_close(out, out_t.detach().numpy(), "output")
    hn_np = hn[0] if is_lstm(cell) else hn
    assert hn_np.shape == (4, H)
    grad_out = rng.standard_normal(out.shape)
    (out_t * torch.from_numpy(grad_out)).sum().backward()
    grads = layer.backward(grad_out)
    assert grads.input.shape == x.shape
    assert_close(grads.input, xt.grad.numpy(), "grad input")
    for name, p in m.named_parameters():
        assert_close(grads[name], p.grad.numpy(), name)


def test_state_dict_round_trip_with_torch():
    torch = pytest.importorskip("torch")
    layer = gnn.GRU(4, 3, num_layers=2, bidirectional=True, dtype=np.float64, rng=5)
    m = torch.nn.GRU(4, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    back = gnn.GRU.from_torch(m)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value)
    # torch tensors (requiring grad) load directly too
    fresh = gnn.GRU(4, 3, num_layers=2, bidirectional=True, dtype=np.float64, rng=6)
    fresh.load_state_dict(dict(m.named_parameters()))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value)


def test_from_torch_checks_the_class():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="LSTM"):
        gnn.LSTM.from_torch(torch.nn.GRU(2, 3))
    with pytest.raises(TypeError, match="Linear"):
        gnn.from_torch(torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match="proj_size"):
        gnn.LSTM.from_torch(torch.nn.LSTM(2, 3, proj_size=2))
    relu = gnn.RNN.from_torch(torch.nn.RNN(2, 3, nonlinearity="relu"))
    assert relu.nonlinearity == "relu" and relu.cell == "rnn_relu"
    with pytest.warns(UserWarning, match="dropout"):
        gnn.from_torch(torch.nn.LSTM(2, 3, num_layers=2, dropout=0.5))


def _chunked_torch_grads(torch, m, cell, x, h0, k, grad_out, grad_hn, batch_first):
    """torch loop: chunks of k steps, loss per chunk, state detached between chunks."""
    xt = torch.tensor(x, requires_grad=True)
    h0t = to_torch_state(torch, cell, h0, requires_grad=True)
    h = h0t
    T = x.shape[1 if batch_first else 0]
    outs = []
    for j, start in enumerate(range(0, T, k)):
        sl = slice(start, min(start + k, T))
        xc = xt[:, sl] if batch_first else xt[sl]
        out, h = m(xc, h)
        go = grad_out[:, sl] if batch_first else grad_out[sl]
        loss = (out * torch.from_numpy(go)).sum() + state_loss(torch, cell, h, grad_hn[j])
        loss.backward()
        outs.append(out.detach().numpy())
        h = tuple(a.detach() for a in h) if is_lstm(cell) else h.detach()
    grads = {name: p.grad.numpy().copy() for name, p in m.named_parameters()}
    h0_grad = tuple(a.grad.numpy() for a in h0t) if is_lstm(cell) else h0t.grad.numpy()
    return grads, xt.grad.numpy(), h0_grad, np.concatenate(outs, axis=1 if batch_first else 0)


@pytest.mark.parametrize("cell,bidirectional,batch_first,k", [
    ("lstm", False, False, 3), ("gru", True, True, 4), ("rnn_tanh", False, True, 1),
    ("rnn_relu", True, False, 5), ("lstm", True, True, 2)])
def test_truncated_bptt_matches_detaching_torch_loop(cell, bidirectional, batch_first, k):
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    T, B, I, H, L = 11, 2, 3, 4, 2
    D = 2 if bidirectional else 1
    m = torch_module(torch, cell, I, H, num_layers=L, bidirectional=bidirectional,
                     batch_first=batch_first)
    layer = gnn.from_torch(m)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(seq_shape(T, B, I, batch_first))
    h0 = state_of(cell, rng, (L * D, B, H))
    grad_out = rng.standard_normal(seq_shape(T, B, D * H, batch_first))
    n_chunks = -(-T // k)
    grad_hn = [state_of(cell, rng, (L * D, B, H)) for _ in range(n_chunks)]
    want, want_x, want_h0, want_out = _chunked_torch_grads(torch, m, cell, x, h0, k, grad_out,
                                                           grad_hn, batch_first)
    seen = []

    def loss_grad(steps, output, h_n):
        seen.append(steps)
        go = grad_out[:, steps] if batch_first else grad_out[steps]
        assert output.shape == go.shape
        return go, grad_hn[len(seen) - 1]

    res = gnn.truncated_bptt(layer, x, k, loss_grad, h0)
    assert seen == [slice(s, min(s + k, T)) for s in range(0, T, k)]
    assert_close(res.output, want_out, "output")
    for name in want:
        assert_close(res.grads[name], want[name], name)
    assert_close(res.grads.input, want_x, "grad input")
    if is_lstm(cell):
        assert_close(res.grads.hx[0], want_h0[0], "grad h0")
        assert_close(res.grads.hx[1], want_h0[1], "grad c0")
    else:
        assert_close(res.grads.hx, want_h0, "grad h0")
    for key, norms in res.grads.hidden_grad_norms.items():
        assert norms.shape == (T,), key


# ---------------------------------------------------------------------------- no torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq", "bf"])
def test_shapes_and_names(cell, batch_first):
    T, B, I, H, L = 4, 3, 5, 6, 3
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[cell]
    layer = make(cell, I, H, L, bidirectional=True, batch_first=batch_first, rng=0)
    assert layer.dtype == np.float32 and layer.gate_count == G and layer.num_directions == 2
    names = [n for n, _ in layer.named_parameters()]
    assert names[:8] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                         "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
                         "bias_hh_l0_reverse"]
    assert len(names) == 4 * 2 * L
    assert layer.weight_ih_l0.shape == (G * H, I)
    assert layer.weight_ih_l1_reverse.shape == (G * H, 2 * H)
    assert layer.weight_hh_l2.shape == (G * H, H) and layer.bias_hh_l2.shape == (G * H,)
    x = np.zeros(seq_shape(T, B, I, batch_first), np.float32)
    out, hn = layer.forward(x)
    assert out.shape == seq_shape(T, B, 2 * H, batch_first) and out.dtype == np.float32
    for s in (hn if is_lstm(cell) else (hn,)):
        assert s.shape == (L * 2, B, H) and s.dtype == np.float32
    grads = layer.backward(np.ones_like(out))
    assert [n for n in grads] == names
    assert all(grads[n].shape == p.shape for n, p in layer.named_parameters())
    assert grads.input.shape == x.shape

    nobias = make(cell, I, H, 1, bias=False)
    assert [n for n, _ in nobias.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]


@pytest.mark.parametrize("cell", CELLS)
def test_init_range_and_seed(cell):
    H = 16
    layer = make(cell, 7, H, 2, bidirectional=True, dtype=np.float64, rng=123)
    bound = 1 / np.sqrt(H)
    allp = np.concatenate([p.ravel() for p in layer.parameters()])
    assert np.all(np.abs(allp) <= bound)
    assert allp.min() < -0.9 * bound and allp.max() > 0.9 * bound
    assert abs(allp.mean()) < 0.1 * bound
    again = make(cell, 7, H, 2, bidirectional=True, dtype=np.float64,
                 rng=np.random.default_rng(123))
    for (n, a), (_, b) in zip(layer.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    other = make(cell, 7, H, 2, bidirectional=True, dtype=np.float64, rng=124)
    assert not np.array_equal(other.weight_hh_l0, layer.weight_hh_l0)


def test_state_dict_round_trip_and_load_errors():
    layer = gnn.LSTM(3, 4, 2, bidirectional=True, dtype=np.float64, rng=1)
    sd = layer.state_dict()
    sd["weight_ih_l0"][0, 0] = 99.0  # a copy: the layer is not changed
    assert layer.weight_ih_l0[0, 0] != 99.0
    other = gnn.LSTM(3, 4, 2, bidirectional=True, dtype=np.float64, rng=2)
    other.load_state_dict(layer.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    np.testing.assert_array_equal(other.forward(x)[0], layer.forward(x)[0])
    # float32 arrays load into a float64 layer (converted)
    other.load_state_dict({k: v.astype(np.float32) for k, v in layer.state_dict().items()})
    assert other.weight_hh_l1.dtype == np.float64

    before = other.state_dict()
    bad = layer.state_dict()
    bad["weight_hh_l1_reverse"] = np.zeros((16, 5))
    with pytest.raises(ValueError, match=r"weight_hh_l1_reverse.*\(16, 4\).*\(16, 5\)"):
        other.load_state_dict(bad)
    for name, value in before.items():  # nothing written by the failed load
        np.testing.assert_array_equal(other.state_dict()[name], value, err_msg=name)
    missing = layer.state_dict()
    del missing["bias_hh_l0"]
    with pytest.raises(ValueError, match="bias_hh_l0"):
        other.load_state_dict(missing)
    assert other.load_state_dict(missing, strict=False).missing_keys == ["bias_hh_l0"]
    extra = dict(layer.state_dict(), weight_ih_l2=np.zeros((16, 8)))
    with pytest.raises(ValueError, match="unexpected: weight_ih_l2"):
        other.load_state_dict(extra)
    with pytest.raises(ValueError, match="weight_ih_l0"):
        other.weight_ih_l0 = np.zeros((4, 4))
    other.weight_ih_l0 = np.ones((16, 3))
    assert np.all(other.weight_ih_l0 == 1.0)


def test_argument_errors():
    with pytest.raises(ValueError, match="nonlinearity"):
        gnn.RNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="dtype"):
        gnn.GRU(2, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="hidden_size"):
        gnn.GRU(2, 0)
    with pytest.raises(TypeError, match="num_layers"):
        gnn.GRU(2, 3, 1.5)
    layer = gnn.LSTM(2, 3)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((1, 1, 3), np.float32))
    with pytest.raises(TypeError, match="float64"):
        layer.forward(np.zeros((4, 1, 2)))
    with pytest.raises(ValueError, match="input_size=2"):
        layer.forward(np.zeros((4, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
        layer.forward(np.zeros((4, 2, 2), np.float32),
                      (np.zeros((1, 3, 3), np.float32), np.zeros((1, 3, 3), np.float32)))
    with pytest.raises(TypeError, match="pair"):
        layer.forward(np.zeros((4, 2, 2), np.float32), np.zeros((1, 2, 3), np.float32))
    out, _ = layer.forward(np.zeros((4, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 2, 3\)"):
        layer.backward(np.zeros((4, 2, 4), np.float32))
    with pytest.raises(ValueError, match="k must be >= 1"):
        gnn.truncated_bptt(layer, np.zeros((4, 2, 2), np.float32), 0, lambda *a: None)


@pytest.mark.parametrize("cell", CELLS)
def test_directions_wire_to_the_functional_api(cell):
    """A one-layer bidirectional layer = rnn_forward/rnn_backward on x and on x reversed
    in time; its hidden_grad_norms are the functional ones in input time order; clip_hidden
    is passed through."""
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 2, 3, 5
    layer = make(cell, I, H, bidirectional=True, dtype=np.float64, rng=8)
    x = rng.standard_normal((T, B, I))
    out, _ = layer.forward(x)
    g = rng.standard_normal(out.shape)
    grads = layer.backward(g, clip_hidden=0.05)
    p = layer.state_dict()
    kw = {"cell": cell}
    fw = gradcore.rnn_forward(x, None, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"],
                              p["bias_hh_l0"], **kw)
    rv = gradcore.rnn_forward(x[::-1].copy(), None, p["weight_ih_l0_reverse"],
                              p["weight_hh_l0_reverse"], p["bias_ih_l0_reverse"],
                              p["bias_hh_l0_reverse"], **kw)
    np.testing.assert_allclose(out, np.concatenate([fw.y, rv.y[::-1]], axis=2), rtol=1e-12,
                               atol=1e-14)
    gf = gradcore.rnn_backward(fw.cache, g[:, :, :H].copy(), clip_hidden=0.05)
    gr = gradcore.rnn_backward(rv.cache, g[::-1, :, H:].copy(), clip_hidden=0.05)
    np.testing.assert_allclose(grads.hidden_grad_norms["l0"], gf.hidden_grad_norms, rtol=1e-12)
    np.testing.assert_allclose(grads.hidden_grad_norms["l0_reverse"],
                               gr.hidden_grad_norms[::-1], rtol=1e-12)
    np.testing.assert_allclose(grads["weight_hh_l0"], gf.grad_weight_hh, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads["weight_hh_l0_reverse"], gr.grad_weight_hh, rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(grads.input, gf.grad_x + gr.grad_x[::-1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_by_directional_finite_differences(cell):
    """2 layers, bidirectional, batch_first: <grads, v> = (L(p + e v) - L(p - e v)) / 2e for
    a random direction v over every parameter, the input and the initial state."""
    rng = np.random.default_rng(9)
    T, B, I, H, L = 5, 2, 3, 4, 2
    layer = make(cell, I, H, L, bidirectional=True, batch_first=True, dtype=np.float64, rng=10)
    x = rng.standard_normal((B, T, I))
    h0 = state_of(cell, rng, (2 * L, B, H))
    gout = rng.standard_normal((B, T, 2 * H))
    ghn = state_of(cell, rng, (2 * L, B, H))
    flat = lambda s: list(s) if is_lstm(cell) else [s]  # noqa: E731

    def loss(params, x, h0):
        layer.load_state_dict(params)
        out, hn = layer.forward(x, h0)
        return float(np.sum(out * gout) + sum(np.sum(a * b) for a, b in zip(flat(hn), flat(ghn))))

    p0 = layer.state_dict()
    loss(p0, x, h0)
    grads = layer.backward(gout, ghn)
    vp = {k: rng.standard_normal(v.shape) for k, v in p0.items()}
    vx = rng.standard_normal(x.shape)
    vh = [rng.standard_normal(a.shape) for a in flat(h0)]
    analytic = (sum(np.sum(grads[k] * vp[k]) for k in p0) + np.sum(grads.input * vx)
                + sum(np.sum(g * v) for g, v in zip(flat(grads.hx), vh)))
    eps = 1e-6

    def at(s):
        params = {k: p0[k] + s * vp[k] for k in p0}
        hs = [a + s * v for a, v in zip(flat(h0), vh)]
        return loss(params, x + s * vx, tuple(hs) if is_lstm(cell) else hs[0])

    numeric = (at(eps) - at(-eps)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k", [8, 20])
def test_truncated_bptt_with_k_at_least_T_is_full_bptt(cell, k):
    rng = np.random.default_rng(11)
    T, B, I, H = 8, 3, 4, 5
    layer = make(cell, I, H, 2, bidirectional=True, dtype=np.float64, rng=12)
    x = rng.standard_normal((T, B, I))
    h0 = state_of(cell, rng, (4, B, H))
    gout = rng.standard_normal((T, B, 2 * H))
    ghn = state_of(cell, rng, (4, B, H))
    out, hn = layer.forward(x, h0)
    full = layer.backward(gout, ghn)
    calls = []

    def loss_grad(steps, output, h_n):
        calls.append(steps)
        return gout[steps], ghn

    res = layer.truncated_bptt(x, k, loss_grad, h0)
    assert calls == [slice(0, T)]
    np.testing.assert_array_equal(res.output, out)
    for a, b in zip(res.h_n if is_lstm(cell) else [res.h_n], hn if is_lstm(cell) else [hn]):
        np.testing.assert_array_equal(a, b)
    assert list(res.grads) == list(full)
    for name in full:
        np.testing.assert_array_equal(res.grads[name], full[name], err_msg=name)
    np.testing.assert_array_equal(res.grads.input, full.input)
    for key in full.hidden_grad_norms:
        np.testing.assert_array_equal(res.grads.hidden_grad_norms[key],
                                      full.hidden_grad_norms[key])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_truncated_bptt_chunks_accumulate(cell):
    """k < T without torch: the sum over chunks of per-chunk backward passes run by hand,
    carrying the state; an output-only loss_grad_fn (no tuple) is accepted."""
    rng = np.random.default_rng(13)
    T, B, I, H, k = 10, 2, 3, 4, 4
    layer = make(cell, I, H, 1, batch_first=True, dtype=np.float64, rng=14)
    x = rng.standard_normal((B, T, I))
    gout = rng.standard_normal((B, T, H))
    res = gnn.truncated_bptt(layer, x, k, lambda steps, out, hn: gout[:, steps])
    state, total, inputs = None, None, []
    for s in range(0, T, k):
        out, state = layer.forward(x[:, s:s + k], state)
        g = layer.backward(gout[:, s:s + k])
        total = dict(g) if total is None else {n: total[n] + g[n] for n in g}
        inputs.append(g.input)
    for name in total:
        np.testing.assert_allclose(res.grads[name], total[name], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.grads.input, np.concatenate(inputs, axis=1), rtol=1e-12)
    assert res.output.shape == (B, T, H)
    assert all(v.shape == (T,) for v in res.grads.hidden_grad_norms.values())


def test_retain_cache():
    layer = gnn.GRU(2, 3, dtype=np.float64, rng=0)
    out, _ = layer.forward(np.ones((3, 1, 2)))
    a = layer.backward(np.ones_like(out), retain_cache=True)
    b = layer.backward(np.ones_like(out))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    with pytest.raises(RuntimeError):
        layer.backward(np.ones_like(out))


def test_parameters_are_live():
    layer = gnn.RNN(2, 3, dtype=np.float64, rng=0)
    for p in layer.parameters():
        p[...] = 0.0
    out, hn = layer.forward(np.ones((3, 1, 2)))
    assert np.all(out == 0.0) and np.all(hn == 0.0)
    assert "RNN(2, 3" in repr(layer)


def test_backward_without_grad_output():
    """grad_output=None: the loss is on the final state only."""
    rng = np.random.default_rng(15)
    layer = gnn.LSTM(3, 4, 2, dtype=np.float64, rng=16)
    x = rng.standard_normal((5, 2, 3))
    out, _ = layer.forward(x)
    ghn = (rng.standard_normal((2, 2, 4)), None)
    a = layer.backward(None, ghn, retain_cache=True)
    b = layer.backward(np.zeros_like(out), ghn)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(a.input, b.input)
