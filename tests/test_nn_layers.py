"""gradcore.nn's feed-forward layers (Linear, BatchNorm1d, LayerNorm, Sequential, Residual):
a residual model against a plain NumPy float64 model written from the formulas (on every
ISA, 1 and 2 threads), the skip gradient's fused and unfused paths, parity with the same
torch model (outputs, every gradient, running statistics, state_dict both ways), and bad
input refused before anything changes."""

import numpy as np
import pytest

import gradcore
import gradcore.nn as gnn
import reference_dense as rd
import reference_normalization as rn

F32, F64 = np.float32, np.float64
TOL = {F32: 2e-5, F64: 1e-11}


def rng_array(seed, shape, dtype=F64, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def close(got, want, dtype, what=""):
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want), initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


# --------------------------------------------------------------------------- a NumPy model
def reference_model(params, x, gy):
    """The model built by `model()` below, forward and backward in float64 NumPy:
    h1 = relu(x W0^T + b0); r = h1 + BN(h1 W1^T + b1) (batch statistics); h2 = r + (r W2^T + b2);
    y = LN(h2) W3^T + b3. Returns y, {name: grad}, dL/dx."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x, gy = np.asarray(x, np.float64), np.asarray(gy, np.float64)
    z0 = rd.ref_dense_pre(x, p["0.weight"], p["0.bias"])
    h1 = np.maximum(z0, 0)
    z1 = rd.ref_dense_pre(h1, p["1.block.0.weight"], p["1.block.0.bias"])
    bn, mean, var = rn.batch_norm(z1, p["1.block.1.weight"], p["1.block.1.bias"], None, None, True)[:3]
    r = h1 + bn
    h2 = r + rd.ref_dense_pre(r, p["2.block.weight"], p["2.block.bias"])
    ln, _, _ = rn.layer_norm(h2, (h2.shape[1],), p["3.weight"], p["3.bias"])
    y = rd.ref_dense_pre(ln, p["4.weight"], p["4.bias"])
    g = {"4.weight": gy.T @ ln, "4.bias": gy.sum(0)}
    g_ln = gy @ p["4.weight"]
    g_h2, g["3.weight"], g["3.bias"] = rn.layer_norm_backward(g_ln, h2, (h2.shape[1],), p["3.weight"])
    g["2.block.weight"], g["2.block.bias"] = g_h2.T @ r, g_h2.sum(0)
    g_r = g_h2 + g_h2 @ p["2.block.weight"]
    g_z1, g["1.block.1.weight"], g["1.block.1.bias"] = rn.batch_norm_backward(
        g_r, z1, p["1.block.1.weight"], mean, var, True)
    g["1.block.0.weight"], g["1.block.0.bias"] = g_z1.T @ h1, g_z1.sum(0)
    g_h1 = g_r + g_z1 @ p["1.block.0.weight"]
    g_z0 = g_h1 * (z0 > 0)
    g["0.weight"], g["0.bias"] = g_z0.T @ x, g_z0.sum(0)
    return y, g, g_z0 @ p["0.weight"]


def model(dtype, width=8, n_in=5, n_out=3):
    return gnn.Sequential(
        gnn.Linear(n_in, width, activation="relu", dtype=dtype, rng=0),
        gnn.Residual(gnn.Sequential(gnn.Linear(width, width, dtype=dtype, rng=1), gnn.BatchNorm1d(width, dtype=dtype))),
        gnn.Residual(gnn.Linear(width, width, dtype=dtype, rng=2)),   # identity: the unfused skip path
        gnn.LayerNorm(width, dtype=dtype),
        gnn.Linear(width, n_out, dtype=dtype, rng=3))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_residual_model_against_numpy(isa, threads, dtype):
    m = model(dtype)
    m[1].block[1].weight[...] = rng_array(7, 8, dtype) + 1
    m[3].bias[...] = rng_array(8, 8, dtype)
    x = rng_array(3, (6, 5), dtype)
    gy = rng_array(4, (6, 3), dtype)
    gy_before = gy.copy()
    params = {k: v.copy() for k, v in m.named_parameters()}
    y = m.forward(x)
    grads = m.backward(gy)
    want_y, want_g, want_gx = reference_model(params, x, gy)
    close(y, want_y, dtype, "y")
    close(grads.input, want_gx, dtype, "grad x")
    assert list(grads) == [n for n, _ in m.named_parameters()]
    for name, g in grads.items():
        assert g.dtype == dtype and g.shape == params[name].shape
        close(g, want_g[name], dtype, name)
    np.testing.assert_array_equal(gy, gy_before)          # grad_output is not modified
    assert m.backward(gy, need_input_grad=False).input is None


def test_skip_gradient_paths_agree():
    """The skip gradient added in the Linear's GEMM write-back, by one addition after a
    BatchNorm or an identity Linear, or into the caller's copy: all the same sum."""
    x = rng_array(1, (7, 6))
    gy = rng_array(2, (7, 6))
    for block in [gnn.Linear(6, 6, activation="tanh", dtype=F64, rng=0),   # fused
                  gnn.Linear(6, 6, dtype=F64, rng=0),                      # grad_z is grad_y: unfused
                  gnn.BatchNorm1d(6, dtype=F64),
                  gnn.Sequential(gnn.Linear(6, 6, activation="relu", dtype=F64, rng=0), gnn.LayerNorm(6, dtype=F64))]:
        res = gnn.Residual(block)
        y = res.forward(x)
        grads = res.backward(gy)
        fx = block.forward(x)
        np.testing.assert_allclose(y, x + fx, rtol=0, atol=1e-15)
        alone = block.backward(gy)
        np.testing.assert_allclose(grads.input, gy + alone.input, rtol=1e-14, atol=1e-14)
        for name, g in alone.items():
            np.testing.assert_array_equal(grads["block." + name], g)


def test_nested_residuals_add_every_skip():
    """Residual(Residual(f)) is x + (x + f(x)): its input gradient 2 gy + f'(x)^T gy."""
    f = gnn.Linear(4, 4, activation="sigmoid", dtype=F64, rng=5)
    x, gy = rng_array(1, (3, 4)), rng_array(2, (3, 4))
    outer = gnn.Residual(gnn.Residual(f))
    np.testing.assert_allclose(outer.forward(x), 2 * x + f.forward(x), atol=1e-15)
    outer.forward(x)
    g = outer.backward(gy).input
    f.forward(x)
    np.testing.assert_allclose(g, 2 * gy + f.backward(gy).input, atol=1e-14)


def test_linear_on_leading_dimensions_and_without_bias():
    lin = gnn.Linear(4, 3, bias=False, activation="leaky_relu", negative_slope=0.2, dtype=F64, rng=0)
    x = rng_array(1, (2, 5, 4))
    y = lin.forward(x)
    want = rd.ref_dense_forward(x.reshape(-1, 4), lin.weight, None, "leaky_relu", 0.2).reshape(2, 5, 3)
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-15)
    gy = rng_array(2, y.shape)
    g = lin.backward(gy)
    assert list(g) == ["weight"] and g.input.shape == x.shape
    gz = np.where(want > 0, gy, 0.2 * gy).reshape(-1, 3)
    np.testing.assert_allclose(g["weight"], gz.T @ x.reshape(-1, 4), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(g.input, (gz @ lin.weight).reshape(x.shape), rtol=1e-13, atol=1e-14)


def test_batch_norm_modes_and_buffers():
    bn = gnn.BatchNorm1d(3, momentum=None, dtype=F64)
    xs = [rng_array(i, (5, 3, 2), scale=i + 1) + i for i in range(3)]
    mean, var = np.zeros(3), np.ones(3)
    for k, x in enumerate(xs, start=1):          # cumulative average: momentum 1/k
        bn.forward(x)
        m, v = x.mean((0, 2)), x.var((0, 2), ddof=1)
        mean, var = mean + (m - mean) / k, var + (v - var) / k
    assert int(bn.num_batches_tracked) == 3
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-13)
    bn.eval()
    y = bn.forward(xs[0])
    np.testing.assert_allclose(y, (xs[0] - mean[:, None]) / np.sqrt(var[:, None] + 1e-5), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3       # evaluation leaves the buffers alone
    free = gnn.BatchNorm1d(3, affine=False, track_running_stats=False, dtype=F64).eval()
    assert free.parameters() == [] and list(free.state_dict()) == []
    want = rn.batch_norm(xs[1], None, None, None, None, True)[0]
    np.testing.assert_allclose(free.forward(xs[1]), want, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- torch
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_model(torch, width=8, n_in=5, n_out=3):
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(),
                         Residual(nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width))),
                         Residual(nn.Linear(width, width)), nn.LayerNorm(width), nn.Linear(width, n_out))


def torch_names(names):
    """gradcore's names -> the torch model's (its ReLU is a layer of its own: index + 1
    from the second layer on)."""
    def one(name):
        head, rest = name.split(".", 1)
        return f"{int(head) + (int(head) > 0)}.{rest}"
    return {n: one(n) for n in names}


@pytest.mark.parametrize("dtype", [F32, F64])
def test_model_matches_torch_over_training_steps(torch, dtype):
    """Five SGD steps on the same model in both libraries, then evaluation: outputs, input
    and parameter gradients, running statistics; the state_dict loads both ways."""
    m = model(dtype)
    tm = torch_model(torch).to(torch.float64 if dtype == F64 else torch.float32)
    names = torch_names(m.state_dict())
    tm.load_state_dict({names[k]: torch.from_numpy(v) for k, v in m.state_dict().items()})
    for step in range(5):
        x = rng_array(10 + step, (16, 5), dtype, scale=2.0)
        gy = rng_array(20 + step, (16, 3), dtype)
        y = m.forward(x)
        g = m.backward(gy)
        xt = torch.from_numpy(x).requires_grad_()
        tm.zero_grad()
        yt = tm(xt)
        yt.backward(torch.from_numpy(gy))
        close(y, yt.detach().numpy(), dtype, f"step {step} y")
        close(g.input, xt.grad.numpy(), dtype, f"step {step} grad x")
        tparams = dict(tm.named_parameters())
        for name, grad in g.items():
            close(grad, tparams[names[name]].grad.numpy(), dtype, f"step {step} {name}")
        with torch.no_grad():
            for (name, p), grad in zip(m.named_parameters(), g.values()):
                p -= 0.1 * grad
                tparams[names[name]] -= 0.1 * torch.from_numpy(grad)
    tstate = tm.state_dict()
    for name, v in m.state_dict().items():
        close(v, tstate[names[name]].numpy(), dtype, name)
    m.eval(), tm.eval()
    x = rng_array(99, (4, 5), dtype)
    close(m.forward(x), tm(torch.from_numpy(x)).detach().numpy(), dtype, "eval y")
    back = model(dtype)
    back.load_state_dict({k: tstate[names[k]] for k in m.state_dict()})
    for name, v in back.state_dict().items():
        np.testing.assert_array_equal(v, tstate[names[name]].numpy())


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_anything_changes():
    m = model(F64)
    state = m.state_dict()
    with pytest.raises(TypeError, match="x has dtype float32"):
        m.forward(np.ones((2, 5), F32))
    with pytest.raises(ValueError, match=r"expected \(\*, 5\)"):
        m.forward(np.ones((2, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        model(F64).backward(np.ones((2, 3)))
    m.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match="grad_output has shape"):
        m.backward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="same shape"):
        gnn.Residual(gnn.Linear(5, 4, dtype=F64)).forward(np.ones((2, 5)))
    with pytest.raises(TypeError, match="layer 1"):
        gnn.Sequential(gnn.Linear(2, 2), gnn.LSTM(2, 2))
    with pytest.raises(ValueError, match="expected shape"):
        m.load_state_dict({**state, "0.bias": np.ones(7), "4.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="missing"):
        m.load_state_dict({"0.bias": np.ones(8)})
    after = m.state_dict()
    for k in state:
        if "running" not in k and "num_batches" not in k:   # the forward above trained BN's
            np.testing.assert_array_equal(after[k], state[k])
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        gnn.BatchNorm1d(3, dtype=F64).forward(np.ones((1, 3)))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        gnn.Linear(2, 2, dtype=np.float16)
    with pytest.raises(ValueError, match="activation"):
        gnn.Linear(2, 2, activation="swish")


def test_failed_batch_norm_forward_counts_no_batch():
    bn = gnn.BatchNorm1d(3, dtype=F64)
    with pytest.raises(ValueError):
        bn.forward(np.ones((1, 3)))
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(bn.running_mean, 0)


def test_train_and_eval_reach_every_sublayer():
    m = model(F32)
    assert m.eval() is m and not m[1].block[1].training
    assert m.train().training and m[1].block[1].training


def test_dense_backward_accumulate_grad_x_only():
    """accumulate_grad_x adds dL/dx into grad_x and leaves the parameter gradients
    overwritten; it needs a grad_x and need_grad_x."""
    x, w, gy = rng_array(1, (5, 4)), rng_array(2, (3, 4)), rng_array(3, (5, 3))
    y = gradcore.dense_forward(x, w, None, "tanh")
    gx0, gw0, _ = gradcore.dense_backward(gy, x, w, y, "tanh", has_bias=False)
    buf = rng_array(4, (5, 4))
    start = buf.copy()
    gx, gw, gb = gradcore.dense_backward(gy, x, w, y, "tanh", has_bias=False, accumulate_grad_x=True, grad_x=buf,
                                         grad_weight=np.full((3, 4), 7.0))
    assert gx is buf and gb is None
    np.testing.assert_allclose(buf, start + gx0, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(gw, gw0)
    with pytest.raises(ValueError, match="accumulate_grad_x=True needs grad_x"):
        gradcore.dense_backward(gy, x, w, y, "tanh", accumulate_grad_x=True)
    with pytest.raises(ValueError, match="need_grad_x"):
        gradcore.dense_backward(gy, x, w, y, "tanh", accumulate_grad_x=True, need_grad_x=False, grad_x=buf)
