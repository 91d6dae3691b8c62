"""gradcore.optim with float16/bfloat16 parameters: the float32 master weights follow the
float32 optimiser bit for bit and the 16-bit parameters are their rounding to nearest
even; without master weights each step rounds once; float64 references; the loss scaler
over 50 steps with 16-bit gradients; torch tensors in place; mixed lists; refusals."""

import math

import ml_dtypes
import numpy as np
import pytest

import gradcore
from gradcore import optim
from gradcore.amp import GradScaler
from reference_optim import ref_adam, ref_sgd

HALVES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
SHAPES = [(7,), (13, 5), (150_001,), (3, 4, 2)]  # one > 100k elements: several chunks
STEPS = 4

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.02, momentum=0.8, nesterov=True)),
    ("Adam", dict(lr=1e-2, weight_decay=0.01)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.05, betas=(0.8, 0.99))),
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def data(dtype, seed=0, shapes=SHAPES, steps=STEPS):
    """16-bit params and gradient steps (normal values rounded once to dtype)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


def widened(arrays):
    return [a.astype(np.float32) for a in arrays]  # exact


def bits_equal(a, b):
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint16), b.view(np.uint16))


def state_of(opt):
    return opt.buffers if isinstance(opt, optim.SGD) else opt.exp_avg + opt.exp_avg_sq


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_master_weights_follow_the_float32_optimiser(isa, threads, dtype, name, kw):
    params, steps = data(dtype)
    cls = getattr(optim, name)
    opt = cls(params, master_weights=True, **kw)
    wide = cls(widened(params), **kw)  # gradcore's own float32 path, tested elsewhere
    for grads in steps:
        opt.step(grads)
        wide.step(widened(grads))
    for master, p, want in zip(opt.master_weights, opt.params, wide.params):
        assert master.dtype == np.float32 and np.array_equal(master, want)
        assert p.dtype == dtype and bits_equal(p, want.astype(dtype))  # NumPy/ml_dtypes: to nearest even
    for ours, theirs in zip(state_of(opt) or [], state_of(wide) or []):
        assert ours.dtype == np.float32 and np.array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_without_master_weights_each_step_rounds_once(isa, dtype, name, kw):
    params, steps = data(dtype, seed=1)
    cls = getattr(optim, name)
    opt = cls(params, **kw)
    assert opt.master_weights is None
    wide = cls(widened(params), **kw)
    for grads in steps:
        for w, p in zip(wide.params, params):
            w[...] = p  # the float32 path restarts from the rounded values every step
        opt.step(grads)
        wide.step(widened(grads))
        for p, want in zip(params, wide.params):
            assert bits_equal(p, want.astype(dtype))


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_master_weights_against_float64_reference(dtype, clip_norm):
    params, steps = data(dtype, seed=2)
    for cls, ref, kw in [(optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
                         (optim.AdamW, ref_adam, dict(lr=1e-2, weight_decay=0.05))]:
        mine = [p.copy() for p in params]
        opt = cls(mine, master_weights=True, clip_norm=clip_norm, **kw)
        for grads in steps:
            opt.step(grads)
        if ref is ref_adam:
            kw = dict(kw, decoupled=True)
        want = ref(params, steps, clip_norm=clip_norm, **kw)
        for master, p, w in zip(opt.master_weights, mine, want):
            np.testing.assert_allclose(master, w, rtol=1e-5, atol=1e-6)
            # one rounding of the master: within half a 16-bit spacing of it
            err = np.abs(p.astype(np.float64) - master.astype(np.float64))
            assert np.all(err <= 0.5 * np.abs(master.astype(np.float64)) * float(ml_dtypes.finfo(dtype).eps)
                          + float(ml_dtypes.finfo(dtype).smallest_subnormal))


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_master_weights_keep_the_updates_a_16_bit_parameter_loses(dtype):
    """An update below half the spacing of the parameter is lost by a 16-bit parameter at
    every step; the float32 master accumulates it."""
    lr, steps = 1e-4 if dtype == np.float16 else 1e-3, 20
    with_master, without = np.ones(4, dtype), np.ones(4, dtype)
    a = optim.SGD([with_master], lr=lr, master_weights=True)
    b = optim.SGD([without], lr=lr)
    for _ in range(steps):
        a.step([np.ones(4, dtype)])
        b.step([np.ones(4, dtype)])
    assert np.all(without == 1)
    expected = np.float32(1)
    for _ in range(steps):
        expected = np.float32(expected - np.float32(lr))
    assert np.all(a.master_weights[0] == expected)
    assert bits_equal(with_master, np.full(4, expected).astype(dtype)) and np.all(with_master < 1)


def test_mixed_list():
    """float32/float64 parameters are their own masters; each dtype gets its own path."""
    rng = np.random.default_rng(4)
    dtypes = [np.float32, ml_dtypes.bfloat16, np.float64, np.float16]
    params = [rng.standard_normal(37).astype(d) for d in dtypes]
    grads = [rng.standard_normal(37).astype(d) for d in dtypes]
    opt = optim.Adam(params, lr=1e-2, master_weights=True)
    assert opt.master_weights[0] is opt.params[0] and opt.master_weights[2] is opt.params[2]
    assert opt.master_weights[1].dtype == opt.master_weights[3].dtype == np.float32
    singles = [optim.Adam([p.copy() if p.itemsize > 2 else p.astype(np.float32)], lr=1e-2) for p in params]
    for _ in range(3):
        opt.step(grads)
        for s, g in zip(singles, grads):
            s.step([g if g.itemsize > 2 else g.astype(np.float32)])
    for i, s in enumerate(singles):
        assert np.array_equal(opt.master_weights[i], s.params[0])


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_grad_scaler_loop_with_16_bit_gradients(dtype):
    """50 steps of the NumPy loss scaler with 16-bit gradients and master weights: the
    steps skipped are those whose scaled gradients overflowed or were poisoned (float16
    overflows by itself at torch's initial scale 2**16), the scale follows torch's rule,
    and the masters are the float32 optimiser's on the same gradients and factor."""
    rng = np.random.default_rng(5)
    shapes, inject = [(9,), (20, 6)], {5: math.inf, 6: math.nan, 17: -math.inf, 30: math.nan}
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    opt = optim.Adam(params, lr=1e-2, master_weights=True)
    wide = optim.Adam(widened(params), lr=1e-2)
    scaler = GradScaler(growth_interval=3)
    scale, tracker, skipped = 2.0 ** 16, 0, []
    for step in range(50):
        grads = [rng.standard_normal(s) for s in shapes]
        if step in inject:
            grads[1][2, 3] = inject[step]
        with np.errstate(over="ignore", invalid="ignore"):
            seen = [(g * scaler.get_scale()).astype(dtype) for g in grads]  # backprop from a scaled seed
        found_inf = not all(np.isfinite(s.astype(np.float64)).all() for s in seen)
        applied = scaler.step(opt, seen, max_norm=5.0)
        assert applied == (not found_inf)
        if applied:
            inv = 1.0 / scale  # a power of two: torch's float32 reciprocal is exact
            total = math.sqrt(sum(float(np.sum(s.astype(np.float64) ** 2)) for s in seen)) * inv
            wide.step(widened(seen), grad_scale=inv * min(1.0, 5.0 / (total + 1e-6)))
        else:
            skipped.append(step)
        scaler.update()
        if found_inf:
            scale, tracker = scale * 0.5, 0
        else:
            tracker += 1
            if tracker == 3:
                scale, tracker = scale * 2.0, 0
        assert scaler.get_scale() == scale
    assert set(inject) <= set(skipped)
    if dtype == np.float16:
        assert skipped[:2] == [0, 1]  # 2**16 and 2**15 overflow float16
    for master, p, w in zip(opt.master_weights, params, wide.params):
        assert np.array_equal(master, w) and bits_equal(p, w.astype(dtype))


def test_torch_tensors_in_place():
    """torch bfloat16 parameters and gradients, zero copy, against torch.optim.AdamW run in
    float32 on the masters' start."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen).to(torch.bfloat16) for s in [(33,), (8, 5)]]
    ref = [torch.nn.Parameter(p.float()) for p in ps]
    opt = optim.AdamW(ps, lr=1e-2, master_weights=True)
    theirs = torch.optim.AdamW(ref, lr=1e-2)
    for _ in range(5):
        gs = [torch.randn(p.shape, generator=gen).to(torch.bfloat16) for p in ps]
        opt.step(gs)
        for r, g in zip(ref, gs):
            r.grad = g.float()
        theirs.step()
    for p, master, r in zip(ps, opt.master_weights, ref):
        torch.testing.assert_close(torch.from_numpy(master), r.detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(p, torch.from_numpy(master).to(torch.bfloat16))


# ------------------------------------------------------------------------- refusals

def test_gradients_of_another_dtype_change_nothing():
    p = np.ones(4, np.float16)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, master_weights=True)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(4,\) and dtype float32"):
        opt.step([np.ones(4, np.float32)])
    assert np.all(p == 1) and np.all(opt.master_weights[0] == 1) and np.all(opt.buffers[0] == 0)


def test_read_only_16_bit_params_are_refused():
    p = np.ones(4, ml_dtypes.bfloat16)
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\]"):
        optim.Adam([p], master_weights=True)


@pytest.mark.parametrize("masters, message", [
    (lambda p: [np.ones(3, np.float32), p[1]], r"masters\[0\]"),                    # size
    (lambda p: [np.ones(4, np.float64), p[1]], r"masters\[0\].*float32"),            # dtype
    (lambda p: [np.ones(4, np.float32), np.ones(4, np.float32)], r"masters\[1\] must be params\[1\] itself"),
    (lambda p: [np.ones(4, np.float32)], r"masters"),                                # length
], ids=["size", "dtype", "not-itself", "length"])
def test_mismatched_master_weights_change_nothing(masters, message):
    """The compiled step checks the master list it is given (the optimiser builds its own)
    before it writes anything."""
    params = [np.ones(4, np.float16), np.ones(4, np.float32)]
    grads = [np.ones(4, np.float16), np.ones(4, np.float32)]
    buffers = [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    given = masters(params)
    before = [m.copy() for m in given]
    with pytest.raises(ValueError, match=message):
        gradcore._core.sgd_step(params, grads, buffers, 0.1, 0.9, 0.0, False, 0.0, 1.0, True, masters=given)
    assert all(np.all(p == 1) for p in params) and all(np.all(b == 0) for b in buffers)
    assert all(np.array_equal(m, b) for m, b in zip(given, before))


def test_16_bit_state_is_refused():
    p, g = np.ones(4, np.float16), np.ones(4, np.float16)
    with pytest.raises(TypeError, match=r"exp_avg\[0\]: dtype float16"):
        gradcore._core.adam_step([p], [g], [np.zeros(4, np.float16)], [np.zeros(4, np.float32)],
                                 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 1.0, 1)
    assert np.all(p == 1)
