"""gradcore.optim: SGD / Adam / AdamW against a NumPy float64 reference of torch.optim's
update formulas, clipping, non-finite skipping, schedules, torch parity and errors."""

import math

import numpy as np
import pytest

import gradcore
from gradcore import optim
from reference_optim import ref_adam, ref_sgd

SHAPES = [(7,), (13, 5), (150_001,), (3, 4, 2)]   # one > 100k elements: several chunks
STEPS = 4


def make(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    return params, grads


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def check(params, ref, dtype):
    for got, want in zip(params, ref):
        assert got.dtype == dtype
        np.testing.assert_allclose(got.astype(np.float64), want, **tol(dtype))


# ------------------------------------------------------------------ SGD / Adam / AdamW

SGD_CASES = [
    dict(momentum=0.0),
    dict(momentum=0.0, weight_decay=0.1),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.9, nesterov=True, weight_decay=0.05),
    dict(momentum=0.5, dampening=0.1, weight_decay=0.01),
    dict(l1=0.02),
    dict(momentum=0.9, weight_decay=0.01, l1=0.05),
    dict(l1=0.5, proximal=True),
    dict(momentum=0.9, nesterov=True, l1=0.3, proximal=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_sgd_matches_reference(isa, dtype, kw):
    params, grad_steps = make(dtype)
    want = ref_sgd(params, grad_steps, 0.05, **kw)
    opt = optim.SGD(params, 0.05, **kw)
    for grads in grad_steps:
        assert opt.step(grads) is True
    assert opt.step_count == STEPS and opt.skipped == 0
    check(params, want, dtype)


ADAM_CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.02),
    dict(l1=0.05),
    dict(weight_decay=0.02, l1=0.5),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decoupled", [False, True], ids=["Adam", "AdamW"])
@pytest.mark.parametrize("kw", ADAM_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_adam_matches_reference(isa, dtype, decoupled, kw):
    params, grad_steps = make(dtype)
    cls = optim.AdamW if decoupled else optim.Adam
    kw = dict(kw)
    if decoupled and "weight_decay" not in kw:
        kw_ref = dict(kw, weight_decay=0.01)       # AdamW's default
    else:
        kw_ref = kw
    want = ref_adam(params, grad_steps, 0.01, decoupled=decoupled, **kw_ref)
    opt = cls(params, 0.01, **kw)
    for grads in grad_steps:
        assert opt.step(grads) is True
    check(params, want, dtype)


def test_adam_state_is_torch_like():
    params, grad_steps = make(np.float64, shapes=[(5,)])
    opt = optim.Adam(params, 0.01)
    opt.step(grad_steps[0])
    np.testing.assert_allclose(opt.exp_avg[0], 0.1 * grad_steps[0][0], rtol=1e-12)
    np.testing.assert_allclose(opt.exp_avg_sq[0], 0.001 * grad_steps[0][0] ** 2, rtol=1e-12)


# ------------------------------------------------------------------ clipping

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_norm", [0.5, 1e9])
def test_sgd_clip_norm(isa, dtype, clip_norm):
    params, grad_steps = make(dtype)
    want = ref_sgd(params, grad_steps, 0.05, momentum=0.9, weight_decay=0.01, clip_norm=clip_norm)
    opt = optim.SGD(params, 0.05, momentum=0.9, weight_decay=0.01, clip_norm=clip_norm)
    for grads in grad_steps:
        before = [g.copy() for g in grads]
        assert opt.step(grads)
        # the clip factor is applied inside the fused pass: the grads are not modified
        for g, b in zip(grads, before):
            np.testing.assert_array_equal(g, b)
        total = math.sqrt(sum(float(np.sum(b.astype(np.float64) ** 2)) for b in before))
        assert opt.last_grad_norm == pytest.approx(total, rel=1e-5)
    check(params, want, dtype)


@pytest.mark.parametrize("decoupled", [False, True], ids=["Adam", "AdamW"])
def test_adam_clip_norm(isa, decoupled):
    params, grad_steps = make(np.float64)
    want = ref_adam(params, grad_steps, 0.01, weight_decay=0.05, decoupled=decoupled, clip_norm=0.3)
    cls = optim.AdamW if decoupled else optim.Adam
    opt = cls(params, 0.01, weight_decay=0.05, clip_norm=0.3)
    for grads in grad_steps:
        assert opt.step(grads)
    check(params, want, np.float64)


def test_clip_norm_uses_given_total_norm():
    params, grad_steps = make(np.float64, shapes=[(10,), (4, 4)])
    p2 = [p.copy() for p in params]
    a = optim.SGD(params, 0.1, clip_norm=1.0)
    b = optim.SGD(p2, 0.1, clip_norm=1.0)
    a.step(grad_steps[0])
    b.step(grad_steps[0], total_norm=100.0)           # trusted as is: scale 1/(100+1e-6)
    want = [q - 0.1 * g * (1.0 / (100.0 + 1e-6)) for q, g in zip(make(np.float64, shapes=[(10,), (4, 4)])[0], grad_steps[0])]
    for got, w in zip(p2, want):
        np.testing.assert_allclose(got, w, rtol=1e-12)
    assert b.last_grad_norm == 100.0
    assert not all(np.allclose(x, y) for x, y in zip(params, p2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_clip_value(isa, dtype):
    params, grad_steps = make(dtype)
    want = ref_sgd(params, grad_steps, 0.05, momentum=0.9, clip_value=0.5)
    opt = optim.SGD(params, 0.05, momentum=0.9, clip_value=0.5)
    for grads in grad_steps:
        assert opt.step(grads)
        # clip_value clamps the grads in place (clip_by_value_)
        assert all(float(np.max(np.abs(g))) <= 0.5 for g in grads)
    check(params, want, dtype)


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, 0.05, momentum=0.9, clip_norm=1.0),
    lambda p: optim.AdamW(p, 0.01, clip_norm=1.0),
], ids=["sgd", "adamw"])
def test_read_only_grads_are_read_unless_clip_value_clamps_them(make_opt):
    """Gradients are only read by a step (clip_norm scales inside the update pass), so
    read-only ones (a JAX array seen through NumPy is one) are taken, unchanged; with
    clip_value they are clamped in place, so they must be writeable."""
    params, grad_steps = make(np.float64)
    ref_params = [p.copy() for p in params]
    opt, ref = make_opt(params), make_opt(ref_params)
    for grads in grad_steps:
        frozen = [g.copy() for g in grads]
        for g in frozen:
            g.flags.writeable = False
        assert opt.step(frozen) and ref.step([g.copy() for g in grads])
        for g, f in zip(grads, frozen):
            np.testing.assert_array_equal(f, g)
    for a, b in zip(params, ref_params):
        np.testing.assert_array_equal(a, b)
    clamping = optim.SGD([p.copy() for p in params], 0.05, clip_value=0.5)
    frozen = [g.copy() for g in grad_steps[0]]
    frozen[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[1\] is read-only"):
        clamping.step(frozen)


# ------------------------------------------------------------------ non-finite skip

@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, 0.05, momentum=0.9, skip_nonfinite=True),
    lambda p: optim.SGD(p, 0.05, momentum=0.9, clip_norm=1.0, skip_nonfinite=True),
    lambda p: optim.Adam(p, 0.01, skip_nonfinite=True),
    lambda p: optim.AdamW(p, 0.01, clip_norm=1.0, skip_nonfinite=True),
], ids=["sgd", "sgd-clip", "adam", "adamw-clip"])
def test_skip_nonfinite(isa, bad, make_opt):
    params, grad_steps = make(np.float32)
    opt = make_opt(params)
    assert opt.step(grad_steps[0])
    state_attrs = [a for a in ("buffers", "exp_avg", "exp_avg_sq") if getattr(opt, a, None) is not None]
    p_before = [p.copy() for p in params]
    s_before = {a: [x.copy() for x in getattr(opt, a)] for a in state_attrs}
    bad_grads = [g.copy() for g in grad_steps[1]]
    bad_grads[2][12345] = bad
    assert opt.step(bad_grads) is False
    assert opt.skipped == 1 and opt.step_count == 1
    for p, b in zip(params, p_before):
        np.testing.assert_array_equal(p, b)
    for a in state_attrs:
        for x, b in zip(getattr(opt, a), s_before[a]):
            np.testing.assert_array_equal(x, b)
    assert not math.isfinite(opt.last_grad_norm)
    # a later finite step is applied again and counts as the second step
    assert opt.step(grad_steps[2]) is True
    assert opt.step_count == 2 and opt.skipped == 1


def test_skip_nonfinite_matches_reference_with_skipped_step():
    params, grad_steps = make(np.float64)
    want = ref_sgd(params, [grad_steps[0], grad_steps[2]], 0.05, momentum=0.9)
    opt = optim.SGD(params, 0.05, momentum=0.9, skip_nonfinite=True)
    bad = [g.copy() for g in grad_steps[1]]
    bad[0][0] = np.nan
    assert [opt.step(grad_steps[0]), opt.step(bad), opt.step(grad_steps[2])] == [True, False, True]
    check(params, want, np.float64)


# ------------------------------------------------------------------ schedules

def test_schedules():
    s = optim.StepLR(1.0, 3, gamma=0.5)
    assert [s(i) for i in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    e = optim.ExponentialLR(2.0, 0.9)
    assert e(0) == 2.0 and e(3) == pytest.approx(2.0 * 0.9 ** 3)
    c = optim.CosineLR(1.0, 10, min_lr=0.1)
    assert c(0) == pytest.approx(1.0)
    assert c(5) == pytest.approx(0.55)
    assert c(10) == pytest.approx(0.1) and c(50) == pytest.approx(0.1)
    w = optim.LinearWarmup(optim.CosineLR(1.0, 10), 4)
    assert [w(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert w(4) == pytest.approx(1.0) and w(9) == pytest.approx(0.5) and w(14) == pytest.approx(0.0)
    const = optim.LinearWarmup(0.2, 2)
    assert [const(i) for i in range(4)] == pytest.approx([0.1, 0.2, 0.2, 0.2])
    with pytest.raises(ValueError):
        optim.StepLR(1.0, 0)
    with pytest.raises(ValueError):
        optim.CosineLR(1.0, 0)


def test_schedule_drives_lr(isa):
    params, grad_steps = make(np.float64)
    sched = optim.StepLR(0.1, 2, gamma=0.5)
    opt = optim.SGD(params, sched)
    p = [x.astype(np.float64).copy() for x in params]
    for i, grads in enumerate(grad_steps):
        assert opt.lr == sched(i)
        opt.step(grads)
        p = [q - sched(i) * g for q, g in zip(p, grads)]
    check(params, p, np.float64)


# ------------------------------------------------------------------ torch parity

def _torch_run(torch_cls, params, grad_steps, clip_norm=None, **kw):
    torch = pytest.importorskip("torch")
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = torch_cls(tp, **kw)
    for grads in grad_steps:
        for t, g in zip(tp, grads):
            t.grad = torch.tensor(g.copy())
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(tp, clip_norm)
        opt.step()
    return [t.detach().numpy() for t in tp]


@pytest.mark.parametrize("kw", [dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                                dict(momentum=0.9, dampening=0.2)])
@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_sgd_torch_parity(kw, clip_norm):
    torch = pytest.importorskip("torch")
    params, grad_steps = make(np.float64)
    want = _torch_run(torch.optim.SGD, params, grad_steps, clip_norm, lr=0.05, **kw)
    opt = optim.SGD(params, 0.05, clip_norm=clip_norm, **kw)
    for grads in grad_steps:
        opt.step(grads)
    check(params, want, np.float64)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_adam_torch_parity(name, clip_norm):
    torch = pytest.importorskip("torch")
    params, grad_steps = make(np.float64)
    kw = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.05)
    want = _torch_run(getattr(torch.optim, name), params, grad_steps, clip_norm, **kw)
    lr = kw.pop("lr")
    opt = getattr(optim, name)(params, lr, clip_norm=clip_norm, **kw)
    for grads in grad_steps:
        opt.step(grads)
    check(params, want, np.float64)


# ------------------------------------------------------------------ errors

def test_errors():
    params, grad_steps = make(np.float64, shapes=[(3,), (4, 2)])
    opt = optim.SGD(params, 0.1, momentum=0.9)
    with pytest.raises(ValueError):
        opt.step(grad_steps[0][:1])
    with pytest.raises(ValueError):
        opt.step(grad_steps[0] + [np.zeros(3)])
    with pytest.raises(ValueError):                      # size mismatch
        opt.step([np.zeros(3), np.zeros(7)])
    with pytest.raises(ValueError):                      # dtype mismatch
        opt.step([np.zeros(3), np.zeros((4, 2), np.float32)])
    with pytest.raises(ValueError):
        optim.SGD(params, 0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.SGD(params, 0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.SGD(params, -0.1)
    with pytest.raises(ValueError):
        optim.Adam(params, 0.1, betas=(1.0, 0.999))
    for cls in (optim.SGD, optim.Adam, optim.AdamW):
        for bad in (np.zeros(4, np.int32), np.zeros(4, np.complex64)):
            with pytest.raises(TypeError, match=r"params\[0\]: dtype"):
                cls([bad], 0.1)
    # a failed step leaves the params untouched
    np.testing.assert_array_equal(params[0], make(np.float64, shapes=[(3,), (4, 2)])[0][0])


@pytest.mark.parametrize("shape", [(2, 4), (8,)])
def test_grad_shape_mismatch_raises(shape):
    params = [np.zeros((4, 2))]
    with pytest.raises(ValueError):
        optim.SGD(params, 0.1).step([np.ones(shape)])


def test_optimisers_take_flat_lists_only():
    """The optimisers pair grads with params by position, so their lists are flat: a dict
    or a None entry is refused by name, never flattened out of step with the params."""
    w = np.ones(3, np.float32)
    for bad in ({"w": w}, [w, None]):
        with pytest.raises(TypeError, match=r"params\[\d\]"):
            gradcore.optim.SGD(bad, lr=0.1)
    opt = gradcore.optim.SGD([w], lr=0.1)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step([None])
    assert w.tolist() == [1.0, 1.0, 1.0]


def test_a_bad_total_norm_modifies_nothing():
    """total_norm is checked before clip_value clamps the gradients in place."""
    p, g = np.ones(3, np.float32), np.full(3, 5.0, np.float32)
    opt = gradcore.optim.Adam([p], lr=0.1, clip_value=1.0, clip_norm=1.0)
    with pytest.raises(TypeError, match="total_norm must be a real number"):
        opt.step([g], total_norm="1.0")
    assert g.tolist() == [5.0, 5.0, 5.0] and p.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_proximal_l1_stops_weights_at_zero(isa, dtype):
    """With a zero gradient the proximal step only shrinks: |p| falls by lr * l1 a step
    and stops exactly at 0 (never crossing it); the subgradient form oscillates around 0
    instead. AdamW's decoupled l1 shrinks the same way."""
    p0 = np.array([1.0, -0.35, 0.05, -0.02, 0.0, 3e-8], dtype)
    zero = [np.zeros_like(p0)]
    prox = [p0.copy()]
    opt = optim.SGD(prox, 0.1, l1=1.0, proximal=True)
    for step in range(1, 16):
        opt.step(zero)
        want = np.sign(p0) * np.maximum(np.abs(p0.astype(np.float64)) - 0.1 * step, 0)
        np.testing.assert_allclose(prox[0], want, rtol=0, atol=4 * step * np.finfo(dtype).eps)
    np.testing.assert_array_equal(prox[0], 0)           # all exactly zero by step 10
    sub = [p0.copy()]
    opt = optim.SGD(sub, 0.1, l1=1.0)
    for _ in range(15):
        opt.step(zero)
    assert np.count_nonzero(sub[0][:4]) == 4             # around 0, not at it
    adamw = [p0.copy()]
    opt = optim.AdamW(adamw, 0.1, weight_decay=0.0, l1=1.0)
    for _ in range(15):
        opt.step(zero)
    np.testing.assert_array_equal(adamw[0], 0)


def test_l1_with_16_bit_parameters_and_master_weights():
    """The 16-bit path runs the same rule in float32 from the master copy."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    params, grad_steps = make(np.float32)
    low = [p.astype(ml_dtypes.bfloat16) for p in params]
    start = [p.astype(np.float64) for p in low]
    opt = optim.SGD(low, 0.05, momentum=0.9, l1=0.1, proximal=True, master_weights=True)
    for grads in grad_steps:
        opt.step([g.astype(ml_dtypes.bfloat16) for g in grads])
    want = ref_sgd(start,
                   [[g.astype(ml_dtypes.bfloat16) for g in gs] for gs in grad_steps], 0.05,
                   momentum=0.9, l1=0.1, proximal=True)
    for master, p, w in zip(opt.master_weights, low, want):
        np.testing.assert_allclose(master, w, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(p, master.astype(ml_dtypes.bfloat16))


def test_l1_must_be_nonnegative():
    with pytest.raises(ValueError, match="l1"):
        optim.SGD([np.zeros(3)], 0.1, l1=-1.0)
    with pytest.raises(ValueError, match="l1"):
        optim.AdamW([np.zeros(3)], l1=float("nan"))
