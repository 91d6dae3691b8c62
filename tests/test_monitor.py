"""GradientMonitor: each flag fires exactly when its synthetic
norm sequence says it should, and not before; history, summary and plot."""

import math
import sys

import numpy as np
import pytest

import gradcore
from gradcore.monitor import EVENT_KINDS, Event, GradientMonitor


def arrays_with_norms(norms, dtype=np.float64):
    """One 4-element array per norm, each element n/2: the L2 norm is exactly n."""
    return [np.full(4, n / 2, dtype=dtype) for n in norms]


def run(monitor, sequence, **step_kwargs):
    """Feed a sequence of per-array norm lists; return all events."""
    events = []
    for norms in sequence:
        events.extend(monitor.step(arrays_with_norms(norms), **step_kwargs))
    return events


def at(events, kind):
    return [e.step for e in events if e.kind == kind]


# ------------------------------------------------------------------ spike
def test_spike_after_constant_norms():
    m = GradientMonitor(["w", "b"])
    seq = [[1.0, 0.5]] * 30 + [[100.0, 0.5]] + [[1.0, 0.5]] * 30
    events = run(m, seq)
    assert [(e.step, e.kind) for e in events] == [(30, "spike")]
    e = events[0]
    base = math.hypot(1.0, 0.5)
    assert e.arrays == ("w",) and e.values == (100.0,)
    assert e.value == pytest.approx(math.hypot(100.0, 0.5), rel=1e-14)
    assert e.reference == pytest.approx(base, rel=1e-14)
    assert e.ratio == pytest.approx(math.hypot(100.0, 0.5) / base)
    assert "spike" in str(e) and "w" in str(e)
    assert m.event_counts == {"spike": 1}


def test_spike_needs_warmup_history():
    m = GradientMonitor(warmup=20)
    # a 100x jump at step 5 (median of 5 values) and at step 19 (19 values): not flagged
    seq = [[1.0]] * 5 + [[100.0]] + [[1.0]] * 13 + [[100.0]] + [[1.0]] * 5 + [[100.0]]
    events = run(m, seq)
    assert at(events, "spike") == [len(seq) - 1]


def test_spike_threshold_is_factor_times_median():
    m = GradientMonitor(spike_factor=10.0)
    seq = [[2.0]] * 25 + [[19.9]] + [[2.0]] * 5 + [[20.1]]
    events = run(m, seq)
    assert at(events, "spike") == [31]


def test_spike_median_follows_a_level_shift():
    # the norm settles 50x higher: flagged while the median still holds the old level,
    # then the new level becomes the baseline (window 40 -> the median moves after 20)
    m = GradientMonitor(window=40)
    events = run(m, [[1.0]] * 40 + [[50.0]] * 60)
    assert at(events, "spike") == list(range(40, 60))


def test_spike_names_the_culprit_among_many_arrays():
    m = GradientMonitor([f"layer{i}" for i in range(6)])
    quiet = [1.0, 2.0, 1.0, 0.5, 1.0, 3.0]
    loud = list(quiet)
    loud[3] = 400.0
    events = run(m, [quiet] * 25 + [loud])
    assert at(events, "spike") == [25]
    assert events[0].arrays == ("layer3",)


# ------------------------------------------------------------------ growth
def test_growth_flagged_once_after_growth_steps_rises():
    m = GradientMonitor(growth_steps=10, growth_factor=10.0, spike_factor=math.inf)
    seq = [[1.3 ** t] for t in range(40)]   # rises from step 1; 1.3**10 = 13.8 >= 10
    events = run(m, seq)
    assert at(events, "growth") == [10]
    e = events[0]
    assert e.value == pytest.approx(1.3 ** 10) and e.reference == pytest.approx(1.0)
    assert e.arrays == ("0",)


def test_growth_needs_every_step_to_rise():
    m = GradientMonitor(spike_factor=math.inf)
    seq = [[1.3 ** t] for t in range(8)] + [[1.3 ** 6]] + [[1.3 ** (t - 2)] for t in range(9, 40)]
    events = run(m, seq)
    # the dip at step 8 restarts the count: ten rises again end at step 18
    assert at(events, "growth") == [18]


def test_growth_needs_the_total_factor():
    m = GradientMonitor(spike_factor=math.inf)
    events = run(m, [[1.2 ** t] for t in range(60)])     # 1.2**10 = 6.2 < 10
    assert at(events, "growth") == []


def test_growth_rearms_after_the_rise_stops():
    m = GradientMonitor(spike_factor=math.inf)
    up = [[1.5 ** t] for t in range(15)]
    events = run(m, up + [[1.0]] + up)
    assert at(events, "growth") == [10, 15 + 1 + 10]


def test_steady_growth_is_also_a_spike_once_the_median_lags():
    m = GradientMonitor()
    events = run(m, [[1.3 ** t] for t in range(30)])
    assert at(events, "growth") == [10]
    spikes = at(events, "spike")
    assert spikes and spikes[0] >= 20        # no spike before the warm-up


# ------------------------------------------------------------------ non-finite
def test_nan_in_one_array():
    m = GradientMonitor(["a", "b", "c"])
    events = []
    for t in range(30):
        grads = arrays_with_norms([1.0, 2.0, 3.0])
        if t == 7:
            grads[1][2] = np.nan
            grads[1][3] = np.inf
        if t == 12:
            grads[2][0] = -np.inf
        events.extend(m.step(grads))
    assert [(e.step, e.kind) for e in events] == [(7, "nonfinite_grad"), (12, "nonfinite_grad")]
    assert events[0].arrays == ("b",) and events[0].values == (2,)
    assert math.isnan(events[0].value)
    assert events[1].arrays == ("c",) and events[1].values == (1,) and events[1].value == math.inf
    g = m.global_norms
    assert math.isnan(g[7]) and g[12] == math.inf
    assert np.isfinite(np.delete(g, [7, 12])).all()
    assert m.nonfinite.tolist() == [0] * 7 + [2] + [0] * 4 + [1] + [0] * 17
    assert m.nonfinite_totals.tolist() == [0, 2, 1]
    assert math.isnan(m.per_array_max_abs[7, 1]) and m.per_array_max_abs[12, 2] == math.inf


def test_nonfinite_steps_leave_the_spike_baseline_alone():
    m = GradientMonitor()
    seq = [[1.0]] * 25
    events = run(m, seq)
    for _ in range(30):
        events += m.step([np.full(4, np.nan)])
    events += run(m, [[1.0]] * 5 + [[30.0]])
    assert at(events, "spike") == [60]
    assert at(events, "nonfinite_grad") == list(range(25, 55))
    assert at(events, "growth") == []


def test_nonfinite_loss():
    m = GradientMonitor()
    losses = [1.0, 0.9, None, float("nan"), 0.8, np.float32("inf"), np.array(0.7)]
    events = []
    for loss in losses:
        events.extend(m.step(arrays_with_norms([1.0]), loss=loss))
    assert at(events, "nonfinite_loss") == [3, 5]
    assert math.isnan(events[0].value) and events[1].value == math.inf
    got = m.losses
    assert got[[0, 1, 4]].tolist() == [1.0, 0.9, 0.8] and got[6] == pytest.approx(0.7)
    assert math.isnan(got[2]) and math.isnan(got[3]) and got[5] == math.inf


def test_nonfinite_params_flagged_when_they_start():
    m = GradientMonitor(["w", "b"])
    events = []
    for t in range(10):
        params = [np.ones(3), np.ones(2)]
        if t >= 4 and t != 7:
            params[0][1] = np.nan
        events.extend(m.step(arrays_with_norms([1.0, 1.0]), params))
    assert at(events, "nonfinite_param") == [4, 8]
    assert events[0].arrays == ("w",) and events[0].values == (1,)


# ------------------------------------------------------------------ weights
def test_weights_growing_without_bound():
    m = GradientMonitor(["w", "b"], weight_growth_factor=10.0)
    events = []
    for t in range(20):
        params = [np.full(4, 1.5 ** t / 2), np.full(4, 0.5)]   # norms 1.5**t and 1
        events.extend(m.step(arrays_with_norms([1.0, 1.0]), params))
    # reference: step 0 (norm sqrt(2)); step 6 -> 8.1x, step 7 -> 12.1x; then the
    # reference moves to step 7's norm and the next flag is at 10x that
    ref0 = math.sqrt(2.0)
    expected, ref = [], ref0
    for t in range(20):
        if math.hypot(1.5 ** t, 1.0) >= 10 * ref:
            expected.append(t)
            ref = math.hypot(1.5 ** t, 1.0)
    assert at(events, "weight_growth") == expected == [7, 13, 19]
    e = events[0]
    assert e.arrays == ("w",) and e.reference == pytest.approx(ref0)
    assert e.value == pytest.approx(math.hypot(1.5 ** 7, 1.0))
    assert m.param_norms[0] == pytest.approx(ref0)
    np.testing.assert_allclose(m.per_array_param_norms[:, 0], 1.5 ** np.arange(20), rtol=1e-14)


def test_weights_reference_waits_for_a_nonzero_norm():
    m = GradientMonitor()
    events = []
    for p in [0.0, 0.0, 1.0, 5.0, 9.9, 10.0]:
        events.extend(m.step(arrays_with_norms([1.0]), arrays_with_norms([p])))
    assert at(events, "weight_growth") == [5]


def test_steps_without_params_record_nan():
    m = GradientMonitor()
    m.step(arrays_with_norms([1.0, 1.0]), arrays_with_norms([3.0, 4.0]))
    m.step(arrays_with_norms([1.0, 1.0]))
    assert m.param_norms[0] == pytest.approx(5.0) and math.isnan(m.param_norms[1])
    assert np.isnan(m.per_array_param_norms[1]).all()


# ------------------------------------------------------------------ layer norms
def test_one_layer_far_above_one():
    m = GradientMonitor(["embed", "rnn", "head"])     # window 100 -> 100 consecutive steps
    seq = [[1.0, 50.0, 0.5]] * 150 + [[1.0, 2.0, 0.5]] + [[1.0, 50.0, 0.5]] * 149
    events = run(m, seq)
    assert [(e.step, e.kind) for e in events] == [(99, "layer_norm"), (250, "layer_norm")]
    e = events[0]
    assert e.arrays == ("rnn",) and e.values == (50.0,)
    assert e.value == 50.0 and e.reference == 10.0


def test_layer_norm_steps_and_threshold():
    m = GradientMonitor(layer_norm_threshold=5.0, layer_norm_steps=3)
    events = run(m, [[6.0, 6.0], [6.0, 4.0], [6.0, 6.0], [6.0, 6.0], [6.0, 6.0], [6.0, 6.0]])
    assert [(e.step, e.arrays) for e in events] == [(2, ("0",)), (4, ("1",))]


# ------------------------------------------------------------------ no false positives
def test_stationary_random_sequence_has_no_events():
    rng = np.random.default_rng(1234)
    shapes = [(64, 32), (64,), (256, 64), (10,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    m = GradientMonitor(["w1", "b1", "w2", "b2"])
    events = []
    for t in range(500):
        scale = rng.lognormal(0.0, 0.4)      # batch-to-batch noise of the overall norm
        grads = [(rng.standard_normal(s) * 0.02 * scale * rng.lognormal(0.0, 0.3))
                 .astype(np.float32) for s in shapes]
        drift = [p + 1e-3 * rng.standard_normal(p.shape).astype(np.float32) for p in params]
        events.extend(m.step(grads, drift, loss=1.0 + 0.1 * rng.standard_normal()))
    assert events == [], [str(e) for e in events]
    assert m.event_counts == {}
    assert "events: none" in m.summary()


# ------------------------------------------------------------------ recorded numbers
def test_recorded_norms_match_gradcore_and_numpy():
    rng = np.random.default_rng(7)
    shapes = [(33, 17), (5,), (1000,), (0,), (4, 4, 4)]
    dtypes = [np.float32, np.float64, np.float32, np.float64, np.float64]
    m = GradientMonitor()
    for _ in range(3):
        grads = [(rng.standard_normal(s) * 10 ** rng.uniform(-3, 3)).astype(d)
                 for s, d in zip(shapes, dtypes)]
        params = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
        m.step(grads, params)
        ref = np.array([np.sqrt(np.sum(g.astype(np.float64) ** 2)) for g in grads])
        np.testing.assert_allclose(m.per_array_norms[-1], ref, rtol=1e-12)
        np.testing.assert_allclose(m.per_array_norms[-1], gradcore.norms(grads), rtol=1e-14)
        assert m.global_norms[-1] == pytest.approx(gradcore.global_norm(grads), rel=1e-12)
        assert m.last_global_norm == m.global_norms[-1]
        np.testing.assert_allclose(m.per_array_param_norms[-1], gradcore.norms(params),
                                   rtol=1e-14)
        assert m.param_norms[-1] == pytest.approx(gradcore.global_norm(params), rel=1e-12)
        maxabs = [np.abs(g).max() if g.size else 0.0 for g in grads]
        np.testing.assert_array_equal(m.per_array_max_abs[-1], maxabs)
        assert m.max_abs[-1] == max(maxabs)
    assert m.steps.tolist() == [0, 1, 2] and m.num_steps == 3 and len(m) == 3
    assert m.per_array_norms.dtype == np.float64 and m.steps.dtype == np.int64


def test_huge_and_tiny_norms_do_not_overflow():
    m = GradientMonitor()
    big = [np.full(3, 1e300), np.full(2, 3e299)]
    m.step(big)
    assert m.global_norms[-1] == pytest.approx(gradcore.global_norm(big), rel=1e-12)
    tiny = [np.full(3, 1e-300), np.full(2, 3e-301)]
    m.step(tiny)
    assert m.global_norms[-1] == pytest.approx(gradcore.global_norm(tiny), rel=1e-12)
    m.step([np.zeros(3), np.zeros(2)])
    assert m.global_norms[-1] == 0.0


def test_last_global_norm_feeds_clipping_without_a_second_pass():
    grads = arrays_with_norms([3.0, 4.0])
    m = GradientMonitor()
    m.step(grads)
    assert m.last_global_norm == 5.0
    total = gradcore.clip_by_global_norm_(grads, 1.0, total_norm=m.last_global_norm)
    assert total == 5.0
    assert gradcore.global_norm(grads) == pytest.approx(1.0, rel=1e-5)


def test_accepts_tuples_generators_and_single_arrays():
    m = GradientMonitor()
    m.step(tuple(arrays_with_norms([1.0, 2.0])))
    m.step(g for g in arrays_with_norms([1.0, 2.0]))
    np.testing.assert_array_equal(m.per_array_norms, [[1.0, 2.0], [1.0, 2.0]])
    single = GradientMonitor()
    single.step(np.full(4, 1.5))
    assert single.names == ["0"] and single.global_norms.tolist() == [3.0]


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    m = GradientMonitor()
    grads = [torch.full((4,), 0.5), torch.full((2, 2), 1.0, dtype=torch.float64)]
    m.step(grads, loss=torch.tensor(0.25))
    np.testing.assert_allclose(m.per_array_norms[-1], [1.0, 2.0], rtol=1e-14)
    assert m.losses.tolist() == [0.25]


# ------------------------------------------------------------------ history bound
def test_history_is_bounded():
    m = GradientMonitor(history=50)
    events = run(m, [[float(t % 7 + 1), 1.0] for t in range(120)])
    assert events == []
    assert len(m) == 50 and m.num_steps == 120
    assert m.steps.tolist() == list(range(70, 120))
    assert m.global_norms.shape == (50,) and m.per_array_norms.shape == (50, 2)
    np.testing.assert_array_equal(m.per_array_norms[:, 0], [t % 7 + 1 for t in range(70, 120)])
    for name in ("max_abs", "nonfinite", "losses", "param_norms"):
        assert getattr(m, name).shape == (50,)
    assert m.per_array_max_abs.shape == m.per_array_param_norms.shape == (50, 2)


def test_history_grows_past_its_first_allocation_then_wraps():
    m = GradientMonitor(history=300)
    run(m, [[float(t)] for t in range(1, 701)])
    assert m.steps.tolist() == list(range(400, 700))
    assert m.global_norms.tolist() == [float(t) for t in range(401, 701)]


def test_events_are_bounded_but_counted():
    m = GradientMonitor(history=10)
    for _ in range(25):
        m.step([np.full(2, np.nan)])
    assert len(m.events) == 10 and m.events[0].step == 15
    assert m.event_counts == {"nonfinite_grad": 25}
    assert m.nonfinite_totals.tolist() == [50]


# ------------------------------------------------------------------ arguments
def test_default_names_and_array_count_checks():
    m = GradientMonitor()
    assert m.names == []
    m.step(arrays_with_norms([1.0, 1.0, 1.0]))
    assert m.names == ["0", "1", "2"]
    with pytest.raises(ValueError, match="same across steps"):
        m.step(arrays_with_norms([1.0, 1.0]))
    with pytest.raises(ValueError, match="params"):
        m.step(arrays_with_norms([1.0, 1.0, 1.0]), arrays_with_norms([1.0]))
    assert m.num_steps == 1
    named = GradientMonitor(["a", "b"])
    with pytest.raises(ValueError, match="names"):
        named.step(arrays_with_norms([1.0, 1.0, 1.0]))


@pytest.mark.parametrize("kwargs, error", [
    ({"window": 0}, ValueError), ({"window": 2.5}, TypeError), ({"window": True}, TypeError),
    ({"history": 0}, ValueError), ({"growth_steps": 0}, ValueError),
    ({"spike_factor": 0.0}, ValueError), ({"spike_factor": float("nan")}, ValueError),
    ({"growth_factor": -1.0}, ValueError), ({"weight_growth_factor": "10"}, TypeError),
    ({"layer_norm_threshold": float("nan")}, ValueError), ({"layer_norm_steps": 0}, ValueError),
    ({"names": "abc"}, TypeError), ({"names": ["a", "a"]}, ValueError),
])
def test_invalid_arguments(kwargs, error):
    with pytest.raises(error):
        GradientMonitor(**kwargs)


def test_inf_switches_a_check_off():
    m = GradientMonitor(spike_factor=math.inf, growth_factor=math.inf,
                        weight_growth_factor=math.inf, layer_norm_threshold=math.inf)
    events = run(m, [[1.0]] * 25 + [[1e6 * 2 ** t] for t in range(120)],
                 params=arrays_with_norms([1.0]))
    events += m.step(arrays_with_norms([1.0]), arrays_with_norms([1e9]))
    assert events == []


# ------------------------------------------------------------------ reports
def _eventful_monitor():
    m = GradientMonitor(["encoder.weight", "decoder.bias"])
    run(m, [[1.0, 0.5]] * 30 + [[100.0, 0.5]] + [[1.0, 0.5]] * 5)
    m.step([np.full(4, np.nan), np.ones(4)], loss=float("nan"))
    run(m, [[1.0, 0.5]] * 5, loss=0.5)
    return m


def test_summary_lists_arrays_global_and_event_counts():
    m = _eventful_monitor()
    text = m.summary()
    for needle in ("encoder.weight", "decoder.bias", "(global)", "median", "nonfinite",
                   "spike 1", "nonfinite_grad 1", "nonfinite_loss 1", "42 steps"):
        assert needle in text, (needle, text)
    row = next(line for line in text.splitlines() if line.startswith("encoder.weight"))
    assert row.split()[1:] == ["1", "1", "100", "50", "4"]
    assert "GradientMonitor" in repr(m)
    assert GradientMonitor().summary() == "GradientMonitor: no steps recorded"
    assert set(m.event_counts) <= set(EVENT_KINDS)


def test_event_is_a_frozen_record():
    e = Event(3, "spike", ("w",), (50.0,), 51.0, 1.0)
    assert e.ratio == 51.0 and str(e).startswith("step 3: spike")
    with pytest.raises(AttributeError):
        e.step = 4
    assert Event(1, "nonfinite_loss", value=math.nan).ratio is None


def test_plot_writes_a_file(tmp_path):
    pytest.importorskip("matplotlib")
    m = _eventful_monitor()
    path = tmp_path / "norms.png"
    fig = m.plot(path)
    assert path.exists() and path.stat().st_size > 1000
    assert len(fig.axes) == 3        # global, per-array, loss
    fig2 = GradientMonitor().plot()  # an empty monitor plots empty axes
    assert fig2 is not None


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    m = _eventful_monitor()
    with pytest.raises(ImportError, match=r"gradcore\[plot\]"):
        m.plot()


def test_a_tree_of_gradients_is_watched_leaf_by_leaf():
    """A tree (here with a parameter that has no gradient) is watched as its leaves, in
    leaf order, like the flat list of the same arrays."""
    flat, tree = GradientMonitor(), GradientMonitor()
    for norms in [[1.0, 0.5]] * 30 + [[100.0, 0.5]]:
        w, b = arrays_with_norms(norms)
        flat_events = flat.step([b, w])
        tree_events = tree.step({"w": w, "b": b, "frozen": None})  # leaves: b, then w
        assert [(e.step, e.kind, e.arrays) for e in tree_events] == \
            [(e.step, e.kind, e.arrays) for e in flat_events]
    assert tree.event_counts == flat.event_counts and tree.event_counts.get("spike") == 1
