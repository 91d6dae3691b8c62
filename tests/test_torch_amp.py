"""gradcore.torch.amp.GradScaler against torch.amp.GradScaler("cpu") itself: the same
skipped steps, scale trajectory, state_dict and weights over mixed-precision training
loops (autocast bfloat16 and float16, and bfloat16/float16 parameters and gradients; SGD
with momentum and Adam; inf/NaN injected), the
fused clip against torch's unscale_ + clip_grad_norm_, the norm record that
gradcore.torch.clip_grad_norm_ reuses, torch's fallback path, errors and the one
intended overflow difference."""

import contextlib
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gradcore  # noqa: E402
import gradcore.torch as gct  # noqa: E402
from gradcore.torch import _unscale_record  # noqa: E402
from gradcore.torch.amp import GradScaler  # noqa: E402

STEPS = 50
INJECT = {5: math.inf, 6: math.nan, 17: -math.inf, 30: math.nan}  # step -> value put in a grad
MAX_NORM = 0.5


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return model.to(dtype)


def make_optimizer(kind, model, **extra):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, **extra)
    return torch.optim.Adam(model.parameters(), lr=1e-2, **extra)


def batches(steps=STEPS, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=gen), torch.randn(16, 3, generator=gen))
            for _ in range(steps)]


def train(scaler, opt_kind, autocast_dtype, clip, ours, steps=STEPS, inject=INJECT,
          param_dtype=torch.float32, **opt_extra):
    """A training loop; clip: None, "plain" (unscale_ then clip_grad_norm_) or "fused"
    (ours: unscale_(opt, max_norm=); torch: unscale_ then torch's clip_grad_norm_).
    autocast_dtype None runs without autocast, the model and data in ``param_dtype``.
    Returns (per-step step() results, scales after update, totals, model)."""
    model = make_model(param_dtype)
    opt = make_optimizer(opt_kind, model, **opt_extra)
    clip_grad_norm = gct.clip_grad_norm_ if ours else torch.nn.utils.clip_grad_norm_
    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=autocast_dtype)
    results, scales, totals = [], [], []
    for step, (x, y) in enumerate(batches(steps)):
        opt.zero_grad()
        with autocast():
            loss = torch.nn.functional.mse_loss(model(x.to(param_dtype)), y.to(param_dtype))
        scaler.scale(loss).backward()
        if step in inject:
            model[0].weight.grad[1, 2] = inject[step]
        if clip == "fused" and ours:
            totals.append(scaler.unscale_(opt, max_norm=MAX_NORM))
        elif clip is not None:
            scaler.unscale_(opt)
            totals.append(clip_grad_norm(model.parameters(), MAX_NORM))
        results.append(scaler.step(opt))
        scaler.update()
        scales.append(scaler.get_scale())
    return results, scales, totals, model


def assert_same_weights(a, b, rtol=2e-6, atol=1e-7):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


# fp16 CPU autocast is supported by the installed torch (checked by the first test).
AUTOCAST = [torch.bfloat16, torch.float16]


def test_float16_cpu_autocast_is_supported():
    with torch.autocast("cpu", dtype=torch.float16):
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float16


@pytest.mark.parametrize("autocast_dtype", AUTOCAST)
@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("clip", [None, "plain", "fused"])
def test_training_loop_matches_torch(autocast_dtype, opt_kind, clip):
    kw = dict(growth_interval=3)
    theirs = torch.amp.GradScaler("cpu", **kw)
    ours = GradScaler("cpu", **kw)
    t_res, t_scales, t_totals, t_model = train(theirs, opt_kind, autocast_dtype, clip, False)
    o_res, o_scales, o_totals, o_model = train(ours, opt_kind, autocast_dtype, clip, True)
    # step() returns None for a skip, but SGD/Adam.step return None too: the scale tells.
    backoffs = [i for i, s in enumerate(t_scales) if s < ([2.0 ** 16] + t_scales)[i]]
    assert set(INJECT) <= set(backoffs)  # float16 also overflows by itself as the scale grows
    assert o_scales == t_scales
    assert len(set(t_scales)) > 3  # both growth and backoff happened
    assert ours.state_dict() == theirs.state_dict()
    for step, (a, b) in enumerate(zip(o_totals, t_totals)):
        assert a.dtype == b.dtype and a.shape == b.shape == torch.Size([])
        if not math.isfinite(b.item()):
            assert not math.isfinite(a.item())
        else:
            assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert_same_weights(o_model, t_model)


def test_skips_are_the_injected_steps():
    """The scale backs off exactly at the injected steps and the weights are untouched there."""
    scaler = GradScaler(growth_interval=1000)
    model = make_model()
    opt = make_optimizer("sgd", model)
    for step, (x, y) in enumerate(batches(8)):
        opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        if step in INJECT:
            model[0].weight.grad[1, 2] = INJECT[step]
        before = [p.detach().clone() for p in model.parameters()]
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        changed = any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
        assert changed == (step not in INJECT)
        assert scaler.get_scale() == (scale * 0.5 if step in INJECT else scale)


def test_fused_adam_matches_torch():
    """Optimizers that unscale themselves (_step_supports_amp_scaling) are driven as torch does."""
    kw = dict(growth_interval=3)
    t = train(torch.amp.GradScaler("cpu", **kw), "adam", torch.bfloat16, None, False, fused=True)
    o = train(GradScaler("cpu", **kw), "adam", torch.bfloat16, None, True, fused=True)
    assert o[1] == t[1]
    assert_same_weights(o[3], t[3])


def test_non_power_of_two_schedule_matches_torch():
    """Scales held in float32 as torch holds them, whatever the factors."""
    kw = dict(init_scale=1000.0, growth_factor=3.0, backoff_factor=0.3, growth_interval=2)
    theirs = torch.amp.GradScaler("cpu", **kw)
    ours = GradScaler("cpu", **kw)
    t = train(theirs, "sgd", torch.bfloat16, "fused", False, steps=20)
    o = train(ours, "sgd", torch.bfloat16, "fused", True, steps=20)
    assert o[1] == t[1]
    assert ours.state_dict() == theirs.state_dict()
    assert_same_weights(o[3], t[3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_round_trips_between_the_two(direction):
    """Train 12 steps with one scaler, load its state into the other, train on with both
    from the same point: identical trajectories."""
    kw = dict(growth_interval=3)
    first = torch.amp.GradScaler("cpu", **kw) if direction == "torch_to_ours" else GradScaler(**kw)
    train(first, "sgd", torch.bfloat16, None, direction != "torch_to_ours", steps=12)
    state = first.state_dict()
    assert set(state) == {"scale", "growth_factor", "backoff_factor", "growth_interval",
                          "_growth_tracker"}
    second = GradScaler() if direction == "torch_to_ours" else torch.amp.GradScaler("cpu")
    second.load_state_dict(state)
    assert second.state_dict() == state
    reference = torch.amp.GradScaler("cpu")
    reference.load_state_dict(state)
    a = train(second, "sgd", torch.bfloat16, None, direction == "torch_to_ours", steps=10)
    b = train(reference, "sgd", torch.bfloat16, None, False, steps=10)
    assert a[1] == b[1]
    assert second.state_dict() == reference.state_dict()


def test_state_dict_before_the_first_scale_is_torchs():
    theirs, ours = torch.amp.GradScaler("cpu", init_scale=3.3), GradScaler(init_scale=3.3)
    assert ours.state_dict() == theirs.state_dict()
    assert ours.get_scale() == theirs.get_scale() == 3.3


# ---------------------------------------------------------------- the fused pass itself

def scaled_params(dtype=torch.float32, scale=2.0 ** 16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in [(7,), (40, 30), (3, 5, 2)]:
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        p.grad = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
        params.append(p)
    return params


def started_scaler(**kw):
    scaler = GradScaler(**kw)
    scaler.scale(torch.ones(()))
    return scaler


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("max_norm", [None, 1.0, 1e9])
def test_unscale_against_float64_reference(dtype, max_norm):
    params = scaled_params(dtype)
    opt = torch.optim.SGD(params, lr=0.1)
    scaled = [p.grad.double().clone() for p in params]
    grads = [p.grad for p in params]
    storage = [g.data_ptr() for g in grads]
    scaler = started_scaler()
    result = scaler.unscale_(opt, max_norm=max_norm)
    total = math.sqrt(sum(float((g ** 2).sum()) for g in scaled)) / 2 ** 16
    factor = 2.0 ** -16
    if max_norm is None:
        assert result is None
    else:
        rel = 1e-7 if dtype == torch.float32 else 1e-12  # the total rounded to the dtype
        assert result.dtype == dtype and result.item() == pytest.approx(total, rel=rel)
        factor *= min(1.0, max_norm / (total + 1e-6))
    for p, g, s, ptr in zip(params, grads, scaled, storage):
        assert p.grad is g and g.data_ptr() == ptr  # in place
        f = float(np.float32(factor)) if dtype == torch.float32 else factor
        torch.testing.assert_close(g, (s * f).to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("norm_type", [1.0, 3.0, math.inf, "inf"])
def test_fused_clip_of_other_orders_matches_torch(norm_type):
    params, twins = scaled_params(), scaled_params()
    ours, theirs = started_scaler(), torch.amp.GradScaler("cpu")
    theirs.scale(torch.ones(()))
    total = ours.unscale_(torch.optim.SGD(params, lr=0.1), max_norm=2.0, norm_type=norm_type)
    theirs.unscale_(torch.optim.SGD(twins, lr=0.1))
    want = torch.nn.utils.clip_grad_norm_(twins, 2.0, norm_type)
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    for p, q in zip(params, twins):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-6, atol=0)


def test_overflowing_float32_squares_give_a_finite_exact_total():
    """float32 gradients of 1e20 (squares overflow float32): torch's norm is inf and its
    clip zeroes everything; gradcore's total is exact and the clip is proper."""
    p = torch.nn.Parameter(torch.zeros(10))
    scaler = started_scaler(init_scale=4.0)
    p.grad = torch.full((10,), 4e20)
    total = scaler.unscale_(torch.optim.SGD([p], lr=0.1), max_norm=1.0)
    assert total.item() == pytest.approx(math.sqrt(10) * 1e20, rel=1e-6)
    torch.testing.assert_close(p.grad, torch.full((10,), 1 / math.sqrt(10)), rtol=1e-6, atol=0)
    q = torch.nn.Parameter(torch.zeros(10))
    q.grad = torch.full((10,), 1e20)
    assert math.isinf(torch.nn.utils.clip_grad_norm_([q], 1.0).item())  # torch's


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_any_nonfinite_element_skips(bad):
    params = scaled_params()
    params[1].grad[3, 4] = bad
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    scaler = started_scaler()
    total = scaler.unscale_(opt, max_norm=1.0)
    assert not math.isfinite(total.item())
    assert scaler.step(opt) is None
    for p, b in zip(params, before):
        assert torch.equal(p, b)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 15


# ---------------------------------------------------------------- the norm record

class NormPassCounter:
    """Counts gradcore.clip_by_global_norm_ calls that compute their own norm."""

    def __init__(self, monkeypatch):
        self.computed = self.given = 0
        real = gradcore.clip_by_global_norm_

        def spy(arrays, max_norm, ord=2, *, eps=1e-6, nonfinite="propagate", total_norm=None):
            if total_norm is None:
                self.computed += 1
            else:
                self.given += 1
            return real(arrays, max_norm, ord, eps=eps, nonfinite=nonfinite, total_norm=total_norm)

        monkeypatch.setattr(gradcore, "clip_by_global_norm_", spy)


def test_clip_after_unscale_reuses_the_recorded_norm(monkeypatch):
    params = scaled_params()
    twins = scaled_params()
    scaler = started_scaler()
    scaler.unscale_(torch.optim.SGD(params, lr=0.1))
    counter = NormPassCounter(monkeypatch)
    total = gct.clip_grad_norm_(params, 1.0)
    assert (counter.computed, counter.given) == (0, 1)
    # the same result as reading the gradients again
    _unscale_record.forget()
    started_scaler().unscale_(torch.optim.SGD(twins, lr=0.1))
    _unscale_record.forget()
    want = gct.clip_grad_norm_(twins, 1.0)
    assert counter.computed == 1
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    for p, q in zip(params, twins):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)


def test_reuse_also_serves_error_if_nonfinite(monkeypatch):
    params = scaled_params()
    started_scaler().unscale_(torch.optim.SGD(params, lr=0.1))
    calls = []
    real = gradcore.global_norm
    monkeypatch.setattr(gradcore, "global_norm", lambda *a, **k: calls.append(a) or real(*a, **k))
    gct.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert calls == []


@pytest.mark.parametrize("change", ["grad_modified_in_place", "grad_replaced", "other_set",
                                    "norm_type", "already_clipped"])
def test_no_reuse_when_the_data_may_differ(monkeypatch, change):
    params = scaled_params()
    started_scaler().unscale_(torch.optim.SGD(params, lr=0.1))
    norm_type = 2.0
    if change == "grad_modified_in_place":
        params[1].grad.mul_(3.0)
    elif change == "grad_replaced":
        params[0].grad = params[0].grad.clone()
    elif change == "other_set":
        params = params[:2]
    elif change == "norm_type":
        norm_type = 1.0
    elif change == "already_clipped":
        gct.clip_grad_norm_(params, 1e-3)  # writes: the counters move on
    counter = NormPassCounter(monkeypatch)
    want = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params)) if norm_type == 2 else None
    total = gct.clip_grad_norm_(params, 1.0, norm_type)
    assert (counter.computed, counter.given) == (1, 0)
    if want is not None:
        assert total.item() == pytest.approx(want, rel=1e-6)


def test_fused_unscale_leaves_no_record(monkeypatch):
    params = scaled_params()
    started_scaler().unscale_(torch.optim.SGD(params, lr=0.1), max_norm=1.0)
    counter = NormPassCounter(monkeypatch)
    gct.clip_grad_norm_(params, 1.0)
    assert counter.computed == 1


def test_record_holds_no_gradient_alive():
    import gc
    import weakref
    params = scaled_params()
    started_scaler().unscale_(torch.optim.SGD(params, lr=0.1))
    ref = weakref.ref(params[0].grad)
    params[0].grad = None
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------- torch's path

def test_float16_gradients_are_accepted_where_torch_refuses():
    params = scaled_params(torch.float16, scale=64.0)
    scaled = [p.grad.double().clone() for p in params]
    theirs = torch.amp.GradScaler("cpu", init_scale=64.0)
    theirs.scale(torch.ones(()))
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        theirs.unscale_(torch.optim.SGD(params, lr=0.1))
    ours = started_scaler(init_scale=64.0)
    ours.unscale_(torch.optim.SGD(params, lr=0.1))
    for p, s in zip(params, scaled):
        torch.testing.assert_close(p.grad, (s / 64.0).half(), rtol=0, atol=0)


def test_gradients_gradcore_does_not_serve_go_through_torch(monkeypatch):
    """A non-contiguous gradient sends the whole list to torch's foreach unscale, with
    torch's results."""
    params, twins = scaled_params(), scaled_params()
    for ps in (params, twins):
        ps[1].grad = ps[1].grad.t().contiguous().t()  # same values, transposed strides
        assert not ps[1].grad.is_contiguous()
    calls = []
    monkeypatch.setattr(gradcore, "scale_", lambda *a: calls.append(a))
    ours, theirs = started_scaler(), torch.amp.GradScaler("cpu")
    theirs.scale(torch.ones(()))
    total = ours.unscale_(torch.optim.SGD(params, lr=0.1), max_norm=1.0)
    theirs.unscale_(torch.optim.SGD(twins, lr=0.1))
    want = torch.nn.utils.clip_grad_norm_(twins, 1.0)
    assert calls == []
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    for p, q in zip(params, twins):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)


def test_no_gradients_at_all_is_torchs_error():
    p = torch.nn.Parameter(torch.ones(3))
    for scaler in (started_scaler(), torch.amp.GradScaler("cpu")):
        scaler.scale(torch.ones(()))
        with pytest.raises((RuntimeError, AssertionError), match="No inf checks were recorded"):
            scaler.step(torch.optim.SGD([p], lr=0.1))


# ---------------------------------------------------------------- scale(), disabled mode

def test_scale_keeps_torchs_structure():
    ours, theirs = GradScaler(init_scale=4.0), torch.amp.GradScaler("cpu", init_scale=4.0)
    a, b = torch.tensor(1.5), torch.tensor([2.0, 3.0], dtype=torch.bfloat16)
    for outputs in (a, [a, b], (a, [b, (a,)])):
        got, want = ours.scale(outputs), theirs.scale(outputs)
        assert type(got) is type(want)
        flat_got = torch.utils._pytree.tree_leaves(got)
        flat_want = torch.utils._pytree.tree_leaves(want)
        for g, w in zip(flat_got, flat_want):
            assert g.dtype == w.dtype and torch.equal(g, w)
    with pytest.raises(ValueError, match="outputs must be a Tensor"):
        ours.scale([a, 3])


def test_disabled_passes_through():
    scaler = GradScaler(enabled=False)
    params = scaled_params(scale=1.0)
    grads = [p.grad.clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = torch.tensor(2.0)
    assert scaler.scale(loss) is loss
    assert scaler.unscale_(opt) is None
    for p, g in zip(params, grads):
        assert torch.equal(p.grad, g)  # nothing divided
    total = scaler.unscale_(opt, max_norm=1.0)  # still clips, as clip_grad_norm_
    assert total.item() == pytest.approx(math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads)))
    assert scaler.step(opt) is None and not torch.equal(params[0], torch.zeros(7))
    scaler.update()
    assert (scaler.get_scale(), scaler.state_dict(), scaler.is_enabled()) == (1.0, {}, False)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(init_scale=0.0), ValueError, "init_scale"),
    (dict(init_scale=-1.0), ValueError, "init_scale"),
    (dict(init_scale=math.inf), ValueError, "init_scale"),
    (dict(init_scale="big"), TypeError, "init_scale"),
    (dict(growth_factor=1.0), ValueError, "growth_factor"),
    (dict(growth_factor=-2.0), ValueError, "growth_factor"),
    (dict(backoff_factor=1.0), ValueError, "backoff_factor"),
    (dict(backoff_factor=0.0), ValueError, "backoff_factor"),
    (dict(growth_interval=0), ValueError, "growth_interval"),
    (dict(growth_interval=2.5), TypeError, "growth_interval"),
    (dict(growth_interval=True), TypeError, "growth_interval"),
])
def test_bad_constructor_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        GradScaler(**kwargs)


@pytest.mark.parametrize("setter, value", [("set_growth_factor", 0.5), ("set_backoff_factor", 2.0),
                                           ("set_growth_interval", 0)])
def test_bad_setter_arguments_change_nothing(setter, value):
    scaler = GradScaler()
    before = scaler.state_dict()
    with pytest.raises(ValueError, match=setter[4:]):
        getattr(scaler, setter)(value)
    assert scaler.state_dict() == before


def test_unscale_twice_and_step_twice_are_torchs_errors():
    params = scaled_params()
    opt = torch.optim.SGD(params, lr=0.1)
    scaler = started_scaler()
    scaler.unscale_(opt)
    after_first = [p.grad.clone() for p in params]
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step"):
        scaler.unscale_(opt)
    for p, g in zip(params, after_first):
        assert torch.equal(p.grad, g)
    with pytest.raises(RuntimeError, match="Closure"):
        scaler.step(opt, closure=lambda: 0.0)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(max_norm=-1.0), ValueError, "max_norm"),
    (dict(max_norm=math.nan), ValueError, "max_norm"),
    (dict(max_norm="1"), TypeError, "max_norm"),
    (dict(max_norm=1.0, norm_type=0), ValueError, "norm_type"),
    (dict(max_norm=1.0, norm_type=-math.inf), ValueError, "norm_type"),
    (dict(max_norm=1.0, norm_type="two"), TypeError, "norm_type"),
])
def test_bad_unscale_arguments_change_nothing(kwargs, exc, name):
    params = scaled_params()
    before = [p.grad.clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    scaler = started_scaler()
    with pytest.raises(exc, match=name):
        scaler.unscale_(opt, **kwargs)
    for p, g in zip(params, before):
        assert torch.equal(p.grad, g)
    scaler.unscale_(opt)  # the stage did not move on


def test_bad_state_dict_changes_nothing():
    scaler = GradScaler(growth_interval=7)
    before = scaler.state_dict()
    with pytest.raises(ValueError, match="backoff_factor"):
        scaler.load_state_dict({**before, "scale": 8.0, "backoff_factor": 3.0})
    assert scaler.state_dict() == before
    with pytest.raises(RuntimeError, match="empty"):
        scaler.load_state_dict({})


def test_update_with_new_scale():
    scaler = started_scaler()
    scaler.update(new_scale=128.0)
    assert scaler.get_scale() == 128.0
    scaler.update(torch.tensor(32.0))
    assert scaler.get_scale() == 32.0
    with pytest.raises(ValueError, match="new_scale"):
        scaler.update(-1.0)
    assert scaler.get_scale() == 32.0


def test_methods_before_the_first_scale_raise():
    opt = torch.optim.SGD(scaled_params(), lr=0.1)
    scaler = GradScaler()
    for call in (lambda: scaler.unscale_(opt), lambda: scaler.step(opt), scaler.update):
        with pytest.raises(RuntimeError, match="did not use scaler.scale"):
            call()


# ---------------------------------------------------------------- low-precision gradients

class TestLowPrecisionGradients:
    """bfloat16/float16 gradients served by gradcore's fused path (a model converted to
    that dtype, so the gradients themselves are low precision); the first assertion checks
    that gradcore, not torch's fallback, did the write."""

    @staticmethod
    def grads_after_backward(dtype, scaler):
        model = make_model(dtype)
        x, y = batches(1)[0]
        loss = torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype))
        scaler.scale(loss).backward()
        return model, [p.grad.double().clone() for p in model.parameters()]

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("max_norm", [None, 0.05])
    def test_unscale_against_float64_reference(self, monkeypatch, dtype, max_norm):
        scaler = GradScaler(init_scale=2.0 ** 10)
        model, scaled = self.grads_after_backward(dtype, scaler)
        writes = []
        real = gradcore.scale_
        monkeypatch.setattr(gradcore, "scale_", lambda a, f: writes.append(f) or real(a, f))
        total = scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0.1), max_norm=max_norm)
        assert len(writes) == 1, "gradcore did not unscale these gradients itself"
        want_total = math.sqrt(sum(float((s ** 2).sum()) for s in scaled)) / 2 ** 10
        factor = 2.0 ** -10
        if max_norm is not None:
            assert total.dtype == dtype
            assert total.item() == pytest.approx(want_total, rel=torch.finfo(dtype).eps)
            factor *= min(1.0, max_norm / (want_total + 1e-6))
            assert factor < 2.0 ** -10  # the clip acted
        for p, s in zip(model.parameters(), scaled):
            want = (s * factor).to(dtype)
            if max_norm is None:  # a power of two: exact
                torch.testing.assert_close(p.grad, want, rtol=0, atol=0)
            else:
                torch.testing.assert_close(p.grad, want, rtol=torch.finfo(dtype).eps, atol=0)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_skip_on_nonfinite(self, dtype):
        scaler = GradScaler(init_scale=16.0)
        model, _ = self.grads_after_backward(dtype, scaler)
        model[0].weight.grad[0, 0] = math.inf
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(torch.optim.SGD(model.parameters(), lr=0.1))
        assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


# ------------------------------------------ 16-bit parameters: the loop against torch's

class Float16TorchScaler(torch.amp.GradScaler):
    """torch's scaler with its float16 guard lifted, the reference for float16 parameters:
    torch refuses to unscale float16 gradients ("Attempting to unscale FP16 gradients."),
    although with its power-of-two scales its unscale of them is exact."""

    def _unscale_grads_(self, optimizer, inv_scale, found_inf, allow_fp16):
        return super()._unscale_grads_(optimizer, inv_scale, found_inf, True)


def test_torch_refuses_float16_gradients():
    """Why the reference above lifts the guard (if torch stops refusing, it is not needed)."""
    scaler = torch.amp.GradScaler("cpu")
    model = make_model(torch.float16)
    x, y = batches(1)[0]
    scaler.scale(torch.nn.functional.mse_loss(model(x.half()), y.half())).backward()
    with pytest.raises(ValueError, match="FP16"):
        scaler.unscale_(make_optimizer("sgd", model))


@pytest.mark.parametrize("param_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("clip", [None, "plain", "fused"])
def test_low_precision_parameters_loop_matches_torch(param_dtype, opt_kind, clip):
    """Parameters, activations and gradients in bfloat16/float16 (no autocast), torch's
    optimizers, inf/NaN injected: the same skipped steps and scale trajectory as torch's
    scaler, and the same weights. Unclipped, the unscale by a power of two is exact in both,
    so the weights are bit-for-bit torch's; clipped, torch's 16-bit norm is rounded to
    8 (bf16) or 11 (fp16) bits and gradcore's is exact, so the clip factors differ by about
    an ulp of the dtype and the weights by a few of its ulps."""
    kw = dict(init_scale=2.0 ** 10, growth_interval=3)
    reference = Float16TorchScaler if param_dtype == torch.float16 else torch.amp.GradScaler
    theirs, ours = reference("cpu", **kw), GradScaler("cpu", **kw)
    # Adam's default eps (1e-8) is 0 in float16: its updates would divide by zero.
    extra = dict(eps=1e-4) if opt_kind == "adam" and param_dtype == torch.float16 else {}
    _, t_scales, t_totals, t_model = train(theirs, opt_kind, None, clip, False,
                                           param_dtype=param_dtype, **extra)
    _, o_scales, o_totals, o_model = train(ours, opt_kind, None, clip, True,
                                           param_dtype=param_dtype, **extra)
    assert all(torch.isfinite(p).all() for p in t_model.parameters())
    assert all(p.dtype == p.grad.dtype == param_dtype for p in o_model.parameters())
    backoffs = [i for i, s in enumerate(t_scales) if s < ([kw["init_scale"]] + t_scales)[i]]
    assert set(INJECT) <= set(backoffs)
    assert o_scales == t_scales
    assert len(set(t_scales)) > 3  # both growth and backoff happened
    assert ours.state_dict() == theirs.state_dict()
    eps = torch.finfo(param_dtype).eps
    for a, b in zip(o_totals, t_totals):
        assert math.isfinite(a.item()) == math.isfinite(b.item())
        if math.isfinite(b.item()):  # torch's total is rounded to the 16-bit dtype
            assert a.item() == pytest.approx(b.item(), rel=2 * eps)
    for p, q in zip(o_model.parameters(), t_model.parameters()):
        if clip is None:
            assert torch.equal(p, q)
        else:  # within a few ulps of the tensor's largest weight
            p, q = p.detach().double(), q.detach().double()
            gap = float((p - q).abs().max() / q.abs().max())
            assert gap <= 4 * eps
