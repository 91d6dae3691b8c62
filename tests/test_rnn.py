"""rnn_forward / rnn_backward (docs/api.md, "Recurrent layers", and its
common rules).

1. The float64 NumPy reference in reference_rnn.py is checked against central finite
   differences (every gradient, every cell, h0/c0, biases, grad_h_n/grad_c_n, and
   hidden_grad_norms through a perturbation hook on each step's hidden state), and its
   clip_hidden semantics against a step-by-step composition of single-step backwards.
2. gradcore against that reference on every ISA target and with 1 and 2 threads, on
   Hypothesis-drawn sizes (T = 1, B = 1, H not a multiple of the SIMD width, I != H),
   both dtypes, with and without biases, h0/c0, grad_h_n/grad_c_n and clip_hidden.
3. Parity with torch.nn.RNN / LSTM / GRU (forward values and autograd gradients).
4. Argument errors and degenerate sizes.

Tolerances are relative to the scale of each compared array (its largest magnitude):
float32 1e-4, float64 1e-10 (the worst seen on these sizes, T up to 30, is ~5e-6 and
~5e-14: a wrong element, a missed step or a clip in the wrong place is far above).
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import gradcore
from reference_rnn import CELLS, ref_rnn_backward, ref_rnn_forward, ref_rnn_loss

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64]
DTYPE_IDS = ["float32", "float64"]
CELL_NAMES = list(CELLS)

GRAD_FIELDS = ("grad_x", "grad_h0", "grad_c0", "grad_weight_ih", "grad_weight_hh", "grad_bias_ih",
               "grad_bias_hh", "hidden_grad_norms")


# --------------------------------------------------------------------------- helpers


def make_case(rng, cell, t_len, batch, n_in, hidden, dtype, *, bias_ih=True, bias_hh=True, h0=True,
              c0=True, weight_scale=1.0, input_scale=1.0):
    """Arrays for one layer: inputs, torch-like weights (uniform in +-scale/sqrt(H)), and
    random output gradients. Returns a dict of keyword arguments for forward/backward."""
    g = CELLS[cell]
    k = weight_scale / math.sqrt(hidden)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    def n(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(dtype)

    return dict(
        x=n(t_len, batch, n_in, s=input_scale),
        h0=n(batch, hidden, s=0.5) if h0 else None,
        weight_ih=u(g * hidden, n_in),
        weight_hh=u(g * hidden, hidden),
        bias_ih=u(g * hidden) if bias_ih else None,
        bias_hh=u(g * hidden) if bias_hh else None,
        cell=cell,
        c0=n(batch, hidden, s=0.5) if (c0 and cell == "lstm") else None,
        grad_y=n(t_len, batch, hidden),
        grad_h_n=n(batch, hidden),
        grad_c_n=n(batch, hidden) if cell == "lstm" else None,
    )


def forward_args(case):
    return ((case["x"], case["h0"], case["weight_ih"], case["weight_hh"], case["bias_ih"], case["bias_hh"]),
            dict(cell=case["cell"], c0=case["c0"]))


def run_ref(case, grad_h_n=None, grad_c_n=None, clip_hidden=None, trace=None):
    args, kw = forward_args(case)
    fwd = ref_rnn_forward(*args, **kw)
    grads = ref_rnn_backward(fwd.cache, case["grad_y"], grad_h_n, grad_c_n, clip_hidden=clip_hidden,
                             trace=trace)
    return fwd, grads


def run_lib(case, grad_h_n=None, grad_c_n=None, clip_hidden=None):
    args, kw = forward_args(case)
    fwd = gradcore.rnn_forward(*args, **kw)
    grads = gradcore.rnn_backward(fwd.cache, case["grad_y"], grad_h_n, grad_c_n, clip_hidden=clip_hidden)
    return fwd, grads


def rtol_for(dtype, t_len):
    return 1e-4 if np.dtype(dtype) == F32 else 1e-10


def assert_scaled_close(got, expected, rtol, *, dtype=None, what="", slack=None):
    """got and expected both None, or same shape (and dtype `dtype` if given) with
    |got - expected| <= rtol * max|expected| (+ a floor for all-zero arrays) + slack
    (elementwise, when given)."""
    if expected is None:
        assert got is None, f"{what}: expected None, got {type(got).__name__}"
        return
    assert got is not None, f"{what}: got None"
    assert isinstance(got, np.ndarray), f"{what}: {type(got).__name__} is not an ndarray"
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    if dtype is not None:
        assert got.dtype == dtype, f"{what}: dtype {got.dtype} != {np.dtype(dtype)}"
    if expected.size == 0:
        return
    a = got.astype(np.float64)
    assert np.isfinite(a).all(), f"{what}: non-finite values {a[~np.isfinite(a)][:5]}"
    scale = float(np.max(np.abs(expected)))
    tol = rtol * max(scale, 1e-30)
    if slack is not None:
        tol = tol + slack
    err = np.abs(a - expected)
    if not (err <= tol).all():
        i = tuple(np.unravel_index(int(np.argmax(err - tol)), err.shape))
        tol = tol[i] if np.ndim(tol) else tol
        raise AssertionError(
            f"{what}: {int((err > tol).sum())} of {err.size} elements off; worst at {i}: got {a[i]!r}, "
            f"expected {expected[i]!r}, error {err[i]:.3g} > tol {tol:.3g} (scale {scale:.3g}, "
            f"ratio {float(err[i] / tol):.3g})")


def assert_forward_close(got, exp, dtype, rtol, what=""):
    assert_scaled_close(got.y, exp.y, rtol, dtype=dtype, what=f"{what} y")
    assert_scaled_close(got.h_n, exp.h_n, rtol, dtype=dtype, what=f"{what} h_n")
    assert_scaled_close(got.c_n, exp.c_n, rtol, dtype=dtype, what=f"{what} c_n")


def assert_grads_close(got, exp, dtype, rtol, what="", slack=None):
    for name in GRAD_FIELDS:
        want_dtype = F64 if name == "hidden_grad_norms" else dtype
        assert_scaled_close(getattr(got, name), getattr(exp, name), rtol, dtype=want_dtype,
                            what=f"{what} {name}", slack=(slack or {}).get(name))


def rounding_sensitivity(case, dtype, grad_h_n, grad_c_n, clip, exp_grads):
    """Per gradient, 4 x how far the reference's result moves when the inputs move by at
    most one rounding of `dtype` (each nudged by a random relative change of at most its
    unit roundoff and rounded back to `dtype`: it stays or moves by one ulp). A library
    computing in `dtype` rounds at that level at every step, so an element this
    sensitive (a sum whose terms cancel, e.g. dL/dh0 of a single hidden unit) is that
    uncertain in any implementation; a well-conditioned element adds nothing."""
    rng = np.random.default_rng(12345)
    u = float(np.finfo(dtype).eps) / 2

    def nudged(v):
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            return v
        return (v.astype(np.float64) * (1 + u * rng.uniform(-1, 1, v.shape))).astype(v.dtype)

    moved = {k: nudged(v) for k, v in case.items()}
    _, grads = run_ref(moved, None if grad_h_n is None else nudged(grad_h_n),
                       None if grad_c_n is None else nudged(grad_c_n), clip)
    out = {}
    for name in GRAD_FIELDS:
        a, b = getattr(exp_grads, name), getattr(grads, name)
        if a is not None and b is not None:
            out[name] = 4 * np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return out


def relu_margin(case):
    """Smallest |pre-activation| of a rnn_relu forward (inf for other cells): where it is
    within rounding of 0, float32 may take the other side of the kink, and the derivative
    (0 or 1) legitimately differs."""
    if case["cell"] != "rnn_relu" or case["x"].shape[0] == 0:
        return math.inf
    args, kw = forward_args(case)
    steps = ref_rnn_forward(*args, **kw).cache["steps"]
    return min(float(np.min(np.abs(s["a"]))) if s["a"].size else math.inf for s in steps)


def tanh_saturation(case):
    """For rnn_tanh: the smallest, over the steps, of the largest derivative 1 - h^2 of a
    step (1 for other cells). When every unit of a step is saturated, the derivative the
    library takes from its rounded h (absolute error ~ 2 eps) is relatively inaccurate
    (a 1 - h^2 of 1e-3 in float32 is good to only ~1e-4) and it scales everything
    that flows through that step, so the comparison's tolerance would not be fair."""
    if case["cell"] != "rnn_tanh" or case["x"].shape[0] == 0:
        return 1.0
    args, kw = forward_args(case)
    steps = ref_rnn_forward(*args, **kw).cache["steps"]
    return min(float(np.max(1.0 - s["h"] * s["h"])) if s["h"].size else 1.0 for s in steps)


def well_conditioned(case, dtype):
    return relu_margin(case) > KINK_MARGIN[dtype] and tanh_saturation(case) > SATURATION_MARGIN[dtype]


def clip_value_that_clips(case, grad_h_n):
    """Half the largest |dL/dh| element of the last step (which clipping cannot have
    changed yet): certainly clips there, usually at other steps too."""
    last = np.asarray(case["grad_y"][-1], np.float64)
    if grad_h_n is not None:
        last = last + np.asarray(grad_h_n, np.float64)
    return 0.5 * float(np.max(np.abs(last)))


# --------------------------------------------------------------------------- 1. the reference


PARAM_NAMES = ("x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
GRAD_OF = {"x": "grad_x", "h0": "grad_h0", "c0": "grad_c0", "weight_ih": "grad_weight_ih",
           "weight_hh": "grad_weight_hh", "bias_ih": "grad_bias_ih", "bias_hh": "grad_bias_hh"}


def numeric_grad(loss, array, eps=1e-6):
    """Central differences of loss() with respect to every element of `array` (modified
    in place and restored)."""
    grad = np.zeros_like(array)
    for idx in np.ndindex(array.shape):
        old = array[idx]
        array[idx] = old + eps
        up = loss()
        array[idx] = old - eps
        down = loss()
        array[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


def case_loss(case, grad_h_n, grad_c_n, perturb_h=None):
    return ref_rnn_loss(case["x"], case["h0"], case["weight_ih"], case["weight_hh"], case["bias_ih"],
                        case["bias_hh"], case["cell"], case["c0"], case["grad_y"], grad_h_n, grad_c_n,
                        perturb_h=perturb_h)


@pytest.mark.parametrize("variant", ["full", "bare"])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_reference_matches_finite_differences(cell, variant):
    """Every gradient of the reference (x, h0, c0, both weights, both biases) is the
    gradient of L = <grad_y, y> + <grad_h_n, h_n> + <grad_c_n, c_n>, to central
    differences. "full": biases, grad_h_n, grad_c_n given; "bare": no biases and no
    final-state gradients (their None = zeros)."""
    rng = np.random.default_rng(CELL_NAMES.index(cell) * 10 + (variant == "full"))
    full = variant == "full"
    case = make_case(rng, cell, 3, 2, 2, 3, F64, bias_ih=full, bias_hh=full, weight_scale=1.5)
    if cell == "rnn_relu":
        assert relu_margin(case) > 1e-4  # no pre-activation near the kink (seed chosen so)
    grad_h_n = case["grad_h_n"] if full else None
    grad_c_n = case["grad_c_n"] if full else None
    _, grads = run_ref(case, grad_h_n, grad_c_n)
    assert (grads.grad_c0 is None) == (cell != "lstm")
    assert (grads.grad_bias_ih is None) == (not full)
    for name in PARAM_NAMES:
        if case[name] is None:
            continue
        analytic = getattr(grads, GRAD_OF[name])
        numeric = numeric_grad(lambda: case_loss(case, grad_h_n, grad_c_n), case[name])
        assert np.abs(numeric).max() > 1e-3, name  # the check is not vacuous
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=f"{cell} {name}")


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_reference_hidden_grad_norms_match_finite_differences(cell):
    """hidden_grad_norms[t] = ||dL/dh_t||: the derivative of L with respect to a
    perturbation added to the hidden state after step t (which y[t] and step t+1 both
    see), by central differences."""
    rng = np.random.default_rng(100 + CELL_NAMES.index(cell))
    case = make_case(rng, cell, 4, 2, 3, 2, F64, weight_scale=1.5)
    if cell == "rnn_relu":
        assert relu_margin(case) > 1e-4
    grad_h_n, grad_c_n = case["grad_h_n"], case["grad_c_n"]
    trace = []
    _, grads = run_ref(case, grad_h_n, grad_c_n, trace=trace)
    perturb = np.zeros(case["grad_y"].shape)
    dh = numeric_grad(lambda: case_loss(case, grad_h_n, grad_c_n, perturb_h=perturb), perturb)
    expected = np.sqrt((dh ** 2).sum(axis=(1, 2)))
    assert grads.hidden_grad_norms.dtype == F64 and grads.hidden_grad_norms.shape == (4,)
    np.testing.assert_allclose(grads.hidden_grad_norms, expected, rtol=1e-6)
    # the trace holds dL/dh_t for t = T-1 .. 0
    np.testing.assert_allclose(np.stack([raw for raw, _ in trace[::-1]]), dh, rtol=1e-6, atol=1e-8)
    # at the last step, dL/dh_{T-1} = grad_y[T-1] + grad_h_n exactly
    np.testing.assert_array_equal(trace[0][0], case["grad_y"][-1] + grad_h_n)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_reference_clip_hidden_is_stepwise(cell):
    """clip_hidden in the reference is the composition of single-step (T = 1) backwards
    (each checked by finite differences above) fed dh_t = clip(grad_y[t] + carry); the
    norms are taken before clipping; a bound above every |dh| changes nothing."""
    rng = np.random.default_rng(200 + CELL_NAMES.index(cell))
    t_len = 5
    case = make_case(rng, cell, t_len, 3, 4, 5, F64, weight_scale=2.0)
    grad_h_n, grad_c_n = case["grad_h_n"], case["grad_c_n"]
    clip = clip_value_that_clips(case, grad_h_n)
    trace = []
    fwd, grads = run_ref(case, grad_h_n, grad_c_n, clip_hidden=clip, trace=trace)
    n_clipped = sum(int((np.abs(raw) > clip).sum()) for raw, _ in trace)
    assert n_clipped > 0

    # compose single steps by hand
    h_prev = [case["h0"]] + [fwd.y[t] for t in range(t_len - 1)]
    c_prev = [case["c0"]] + [None] * (t_len - 1)
    if cell == "lstm":
        for t in range(1, t_len):  # the cell states, from one-step forwards
            step = ref_rnn_forward(case["x"][t - 1:t], h_prev[t - 1], case["weight_ih"], case["weight_hh"],
                                   case["bias_ih"], case["bias_hh"], cell=cell, c0=c_prev[t - 1])
            np.testing.assert_allclose(step.h_n, h_prev[t], rtol=1e-14, atol=1e-15)
            c_prev[t] = step.c_n
    carry_h, carry_c = grad_h_n, grad_c_n
    grad_x = np.zeros(case["x"].shape)
    sums = {k: 0.0 for k in ("grad_weight_ih", "grad_weight_hh", "grad_bias_ih", "grad_bias_hh")}
    norms = np.zeros(t_len)
    for t in reversed(range(t_len)):
        dh = case["grad_y"][t] + carry_h
        norms[t] = np.linalg.norm(dh)
        dh = np.clip(dh, -clip, clip)
        step = ref_rnn_forward(case["x"][t:t + 1], h_prev[t], case["weight_ih"], case["weight_hh"],
                               case["bias_ih"], case["bias_hh"], cell=cell, c0=c_prev[t])
        g = ref_rnn_backward(step.cache, dh[None], None, carry_c if cell == "lstm" else None)
        grad_x[t] = g.grad_x[0]
        for k in sums:
            sums[k] = sums[k] + getattr(g, k)
        carry_h, carry_c = g.grad_h0, g.grad_c0
    np.testing.assert_allclose(grads.hidden_grad_norms, norms, rtol=1e-13)
    np.testing.assert_allclose(grads.grad_x, grad_x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads.grad_h0, carry_h, rtol=1e-12, atol=1e-14)
    if cell == "lstm":
        np.testing.assert_allclose(grads.grad_c0, carry_c, rtol=1e-12, atol=1e-14)
    for k, v in sums.items():
        np.testing.assert_allclose(getattr(grads, k), v, rtol=1e-12, atol=1e-14, err_msg=k)

    # a bound no |dh| reaches is no clipping at all
    _, unclipped = run_ref(case, grad_h_n, grad_c_n)
    biggest = max(float(np.abs(raw).max()) for raw, _ in trace)
    _, loose = run_ref(case, grad_h_n, grad_c_n, clip_hidden=10 * biggest + 1e3)
    for name in GRAD_FIELDS:
        a, b = getattr(loose, name), getattr(unclipped, name)
        if b is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)
    # and clipping does change the result
    assert not np.allclose(grads.grad_weight_hh, unclipped.grad_weight_hh)


def test_reference_defaults_are_zeros():
    """h0/c0 None = zeros, grad_h_n/grad_c_n None = zeros."""
    rng = np.random.default_rng(300)
    case = make_case(rng, "lstm", 3, 2, 3, 4, F64)
    z = np.zeros((2, 4))
    a = ref_rnn_forward(case["x"], None, case["weight_ih"], case["weight_hh"], cell="lstm")
    b = ref_rnn_forward(case["x"], z, case["weight_ih"], case["weight_hh"], cell="lstm", c0=z)
    np.testing.assert_array_equal(a.y, b.y)
    ga = ref_rnn_backward(a.cache, case["grad_y"])
    gb = ref_rnn_backward(b.cache, case["grad_y"], z, z)
    for name in GRAD_FIELDS:
        x, y = getattr(ga, name), getattr(gb, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- 2. gradcore vs reference


T_SIZES = [1, 1, 2, 3, 5, 8]
B_SIZES = [1, 1, 2, 3, 4, 7, 9]
I_SIZES = [1, 2, 3, 5, 8, 16, 19]
H_SIZES = [1, 3, 7, 8, 9, 16, 17]


@st.composite
def rnn_cases(draw):
    cell = draw(st.sampled_from(CELL_NAMES))
    return dict(
        cell=cell,
        t_len=draw(st.sampled_from(T_SIZES)),
        batch=draw(st.sampled_from(B_SIZES)),
        n_in=draw(st.sampled_from(I_SIZES)),
        hidden=draw(st.sampled_from(H_SIZES)),
        dtype=draw(st.sampled_from(DTYPES)),
        bias=draw(st.sampled_from(["both", "both", "none", "ih", "hh"])),
        h0=draw(st.booleans()),
        c0=draw(st.booleans()),
        grad_h_n=draw(st.booleans()),
        grad_c_n=draw(st.booleans()),
        clip=draw(st.booleans()),
        weight_scale=draw(st.sampled_from([0.5, 1.0, 1.0, 2.0])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


#: rnn_relu: smallest |pre-activation| for which the library's rounding cannot cross the
#: kink (where it can, the derivative 0 / 1 legitimately differs from the reference's)
KINK_MARGIN = {F32: 3e-5, F64: 1e-9}
#: rnn_tanh: a step whose units all have 1 - h^2 below this is too ill-conditioned to compare
SATURATION_MARGIN = {F32: 1e-2, F64: 1e-10}


def build_case(c):
    rng = np.random.default_rng(c["seed"])
    return make_case(rng, c["cell"], c["t_len"], c["batch"], c["n_in"], c["hidden"], c["dtype"],
                     bias_ih=c["bias"] in ("both", "ih"), bias_hh=c["bias"] in ("both", "hh"),
                     h0=c["h0"], c0=c["c0"], weight_scale=c["weight_scale"])


def check_against_reference(c, what="", *, reseed=False):
    """gradcore vs the reference on the case `c` describes. An ill-conditioned case (a
    rnn_relu pre-activation within KINK_MARGIN of 0, a rnn_tanh step saturated beyond
    SATURATION_MARGIN) is rejected (hypothesis.assume), or, with reseed=True, replaced by
    the next seed's."""
    dt = c["dtype"]
    case = build_case(c)
    while reseed and not well_conditioned(case, dt):
        c = dict(c, seed=c["seed"] + 1)
        case = build_case(c)
    if not reseed:
        assume(well_conditioned(case, dt))
    grad_h_n = case["grad_h_n"] if c["grad_h_n"] else None
    grad_c_n = case["grad_c_n"] if c["grad_c_n"] else None
    clip = clip_value_that_clips(case, grad_h_n) if c["clip"] else None
    originals = {k: v.copy() for k, v in case.items() if isinstance(v, np.ndarray)}

    exp_fwd, exp_grads = run_ref(case, grad_h_n, grad_c_n, clip)
    got_fwd, got_grads = run_lib(case, grad_h_n, grad_c_n, clip)
    rtol = rtol_for(dt, c["t_len"])
    what = f"{what} {c}"
    assert_forward_close(got_fwd, exp_fwd, dt, rtol, what)
    slack = rounding_sensitivity(case, dt, grad_h_n, grad_c_n, clip, exp_grads)
    assert_grads_close(got_grads, exp_grads, dt, rtol, what, slack)
    for k, v in originals.items():  # inputs are never written
        np.testing.assert_array_equal(case[k], v, err_msg=f"{k} was modified")
    return case


#: two thirds of the profile's examples ("ci": 40 per ISA and thread count)
EXAMPLES = max(20, settings.default.max_examples * 2 // 3)


@settings(max_examples=EXAMPLES)
@given(c=rnn_cases())
def test_rnn_matches_reference_random(isa, threads, c):
    """Random sizes (T = 1, B = 1, H around the SIMD widths, I != H), both dtypes, any
    mix of biases, h0/c0, grad_h_n/grad_c_n and a clip_hidden that clips."""
    check_against_reference(c)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
def test_rnn_matches_reference_each_cell(isa, threads, cell, dtype, clip):
    """Every cell, dtype and clip setting once, on sizes with partial SIMD tails (H = 17,
    I = 11, B = 5) and on wider ones (H = 67, I = 40, B = 33; H = 130, B = 64: GEMMs and
    cell kernels split across threads)."""
    for t_len, batch, n_in, hidden in [(4, 5, 11, 17), (6, 33, 40, 67), (3, 64, 33, 130)]:
        check_against_reference(dict(cell=cell, t_len=t_len, batch=batch, n_in=n_in, hidden=hidden,
                                     dtype=dtype, bias="both", h0=True, c0=True, grad_h_n=True,
                                     grad_c_n=True, clip=clip, weight_scale=1.0,
                                     seed=hidden * 7919 + CELL_NAMES.index(cell)),
                                what=f"{(t_len, batch, n_in, hidden)}", reseed=True)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_result_types_and_none_fields(cell):
    """Named results; y (T, B, H) etc. in the input dtype; hidden_grad_norms float64 (T,)
    even for float32; c_n / grad_c0 None except for lstm; grad_bias_* None exactly where
    that bias was None."""
    rng = np.random.default_rng(400)
    for dt in DTYPES:
        for b_ih, b_hh in [(True, True), (False, False), (True, False), (False, True)]:
            case = make_case(rng, cell, 3, 2, 5, 7, dt, bias_ih=b_ih, bias_hh=b_hh)
            fwd, grads = run_lib(case)
            assert fwd.y is fwd[0] and fwd.h_n is fwd[1] and fwd.c_n is fwd[2] and fwd.cache is fwd[3]
            assert len(fwd) == 4 and len(grads) == 8
            assert tuple(grads._fields) == GRAD_FIELDS
            assert fwd.y.shape == (3, 2, 7) and fwd.y.dtype == dt
            assert fwd.h_n.shape == (2, 7) and fwd.h_n.dtype == dt
            np.testing.assert_array_equal(fwd.h_n, fwd.y[-1])
            if cell == "lstm":
                assert fwd.c_n.shape == (2, 7) and fwd.c_n.dtype == dt
                assert grads.grad_c0.shape == (2, 7) and grads.grad_c0.dtype == dt
            else:
                assert fwd.c_n is None and grads.grad_c0 is None
            assert grads.grad_x.shape == (3, 2, 5) and grads.grad_x.dtype == dt
            assert grads.grad_h0.shape == (2, 7) and grads.grad_h0.dtype == dt
            assert grads.grad_weight_ih.shape == case["weight_ih"].shape and grads.grad_weight_ih.dtype == dt
            assert grads.grad_weight_hh.shape == case["weight_hh"].shape and grads.grad_weight_hh.dtype == dt
            assert (grads.grad_bias_ih is None) == (not b_ih)
            assert (grads.grad_bias_hh is None) == (not b_hh)
            for g in (grads.grad_bias_ih, grads.grad_bias_hh):
                if g is not None:
                    assert g.shape == (CELLS[cell] * 7,) and g.dtype == dt
            assert grads.hidden_grad_norms.dtype == F64 and grads.hidden_grad_norms.shape == (3,)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_none_means_zeros(isa, cell):
    """h0/c0 None give the same as zeros; grad_h_n/grad_c_n None the same as zeros."""
    rng = np.random.default_rng(500)
    case = make_case(rng, cell, 4, 3, 5, 9, F64)
    z = np.zeros((3, 9))
    args = (case["x"], None, case["weight_ih"], case["weight_hh"], case["bias_ih"], case["bias_hh"])
    a = gradcore.rnn_forward(*args, cell=cell)
    b = gradcore.rnn_forward(case["x"], z, *args[2:], cell=cell, c0=z if cell == "lstm" else None)
    np.testing.assert_array_equal(a.y, b.y)
    ga = gradcore.rnn_backward(a.cache, case["grad_y"])
    gb = gradcore.rnn_backward(b.cache, case["grad_y"], z, z if cell == "lstm" else None)
    for name in GRAD_FIELDS:
        x, y = getattr(ga, name), getattr(gb, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_backward_repeatable_and_deterministic(every_config, cell):
    """The cache can be used for several backwards (it is not consumed), each
    configuration gives identical bits on a second run, and every configuration agrees
    with the reference."""
    rng = np.random.default_rng(600)
    for dt in DTYPES:
        case = make_case(rng, cell, 5, 9, 13, 21, dt)
        exp_fwd, exp_grads = run_ref(case, case["grad_h_n"], case["grad_c_n"], 0.7)

        def run():
            args, kw = forward_args(case)
            f1 = gradcore.rnn_forward(*args, **kw)
            f2 = gradcore.rnn_forward(*args, **kw)
            g1 = gradcore.rnn_backward(f1.cache, case["grad_y"], case["grad_h_n"], case["grad_c_n"],
                                       clip_hidden=0.7)
            g2 = gradcore.rnn_backward(f1.cache, case["grad_y"], case["grad_h_n"], case["grad_c_n"],
                                       clip_hidden=0.7)
            g3 = gradcore.rnn_backward(f2.cache, case["grad_y"], case["grad_h_n"], case["grad_c_n"],
                                       clip_hidden=0.7)
            np.testing.assert_array_equal(f1.y, f2.y)
            for name in GRAD_FIELDS:
                for other in (g2, g3):
                    x, y = getattr(g1, name), getattr(other, name)
                    if x is not None:
                        np.testing.assert_array_equal(x, y, err_msg=name)
            return f1, g1

        for config, (fwd, grads) in every_config(run):
            assert_forward_close(fwd, exp_fwd, dt, rtol_for(dt, 5), f"{config}")
            assert_grads_close(grads, exp_grads, dt, rtol_for(dt, 5), f"{config}")


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_chunked_forward_carries_state(isa, cell):
    """Truncated-BPTT chunking: the forward over [0, k) then over [k, T) from (h_n, c_n)
    gives the forward over [0, T)."""
    rng = np.random.default_rng(700)
    case = make_case(rng, cell, 7, 4, 6, 10, F64)
    args, kw = forward_args(case)
    full = gradcore.rnn_forward(*args, **kw)
    first = gradcore.rnn_forward(case["x"][:3], *args[1:], **kw)
    second = gradcore.rnn_forward(case["x"][3:], first.h_n, *args[2:], cell=cell, c0=first.c_n)
    np.testing.assert_allclose(np.concatenate([first.y, second.y]), full.y, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(second.h_n, full.h_n, rtol=1e-13, atol=1e-15)
    if cell == "lstm":
        np.testing.assert_allclose(second.c_n, full.c_n, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_accepts_array_likes_and_strided_inputs(isa, cell):
    """Non-contiguous views, Fortran order, negative strides and nested lists are
    array-likes (a new array is returned, the inputs are not written)."""
    rng = np.random.default_rng(800)
    case = make_case(rng, cell, 3, 4, 5, 6, F64)
    exp_fwd, exp_grads = run_ref(case, case["grad_h_n"], case["grad_c_n"])
    x = np.ascontiguousarray(np.transpose(case["x"], (2, 1, 0))).transpose(2, 1, 0)  # not C-contiguous
    h0 = np.asfortranarray(case["h0"])
    w_ih = np.ascontiguousarray(case["weight_ih"][::-1])[::-1]
    big = np.zeros((case["weight_hh"].shape[0], 2 * case["weight_hh"].shape[1]))
    big[:, ::2] = case["weight_hh"]
    w_hh = big[:, ::2]
    b_ih = case["bias_ih"].tolist()
    gy = np.asfortranarray(case["grad_y"])
    fwd = gradcore.rnn_forward(x, h0, w_ih, w_hh, b_ih, case["bias_hh"], cell=cell, c0=case["c0"])
    grads = gradcore.rnn_backward(fwd.cache, gy, case["grad_h_n"].tolist(), case["grad_c_n"])
    assert_forward_close(fwd, exp_fwd, F64, 1e-10, "strided")
    assert_grads_close(grads, exp_grads, F64, 1e-10, "strided")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_rnn_hidden_grad_norms_show_explosion_and_clip(isa, dtype):
    """A long tanh/relu chain with big recurrent weights: the norms grow backwards
    through time (exploding), and clip_hidden keeps every gradient bounded while the
    norms still report the unclipped dL/dh_t."""
    rng = np.random.default_rng(900)
    t_len, hidden = 30, 9
    w_hh = (np.eye(hidden) * 1.6 + rng.standard_normal((hidden, hidden)) * 0.05).astype(dtype)
    x = (rng.standard_normal((t_len, 2, 3)) * 0.01).astype(dtype)
    w_ih = (rng.standard_normal((hidden, 3)) * 0.1).astype(dtype)
    h0 = np.full((2, hidden), 0.01, dtype)
    grad_y = np.zeros((t_len, 2, hidden), dtype)
    grad_y[-1] = 1.0
    fwd = gradcore.rnn_forward(x, h0, w_ih, w_hh, cell="rnn_relu")
    grads = gradcore.rnn_backward(fwd.cache, grad_y)
    norms = grads.hidden_grad_norms
    assert norms[0] > 1e4 * norms[-1]  # 1.6 ** 29 ~ 8e5
    exp = ref_rnn_backward(ref_rnn_forward(x, h0, w_ih, w_hh, cell="rnn_relu").cache, grad_y)
    np.testing.assert_allclose(norms, exp.hidden_grad_norms, rtol=rtol_for(dtype, t_len))
    clipped = gradcore.rnn_backward(fwd.cache, grad_y, clip_hidden=1.0)
    exp_c = ref_rnn_backward(ref_rnn_forward(x, h0, w_ih, w_hh, cell="rnn_relu").cache, grad_y,
                             clip_hidden=1.0)
    assert_grads_close(clipped, exp_c, dtype, rtol_for(dtype, t_len), "clipped")
    assert np.abs(clipped.grad_h0).max() < 2.0  # one step past a clipped dh_0: <= 1.6 * 1 * ~1.1
    # measured before clipping: above sqrt(B * H), the most a clipped (B, H) dh can have
    assert clipped.hidden_grad_norms[:-1].min() > 1.2 * math.sqrt(2 * hidden)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_clip_hidden_values(isa, cell):
    """clip_hidden = inf is no clipping; negative or NaN bounds raise ValueError; 0 may be
    rejected with ValueError or, if accepted, zeroes every dh_t (the reference's result)."""
    rng = np.random.default_rng(950)
    case = make_case(rng, cell, 4, 3, 5, 6, F64)
    _, exp = run_ref(case, case["grad_h_n"], case["grad_c_n"])
    _, got = run_lib(case, case["grad_h_n"], case["grad_c_n"], clip_hidden=math.inf)
    assert_grads_close(got, exp, F64, 1e-10, "clip_hidden=inf")
    fwd = gradcore.rnn_forward(*forward_args(case)[0], **forward_args(case)[1])
    for bad in (-1.0, -1e-300, math.nan, -math.inf):
        with pytest.raises(ValueError):
            gradcore.rnn_backward(fwd.cache, case["grad_y"], clip_hidden=bad)
    try:
        got = gradcore.rnn_backward(fwd.cache, case["grad_y"], case["grad_h_n"], case["grad_c_n"],
                                    clip_hidden=0.0)
    except ValueError:
        return
    _, exp = run_ref(case, case["grad_h_n"], case["grad_c_n"], clip_hidden=0.0)
    assert_grads_close(got, exp, F64, 1e-10, "clip_hidden=0")


def test_rnn_concurrent_python_threads(isa, threads):
    """The GIL is released and the kernels are re-entrant: several Python threads running
    forwards and backwards at once (sharing the kernel thread pool) each get their own
    right answer."""
    import threading

    rng = np.random.default_rng(970)
    jobs = []
    for i, cell in enumerate(CELL_NAMES * 2):
        dt = DTYPES[i % 2]
        case = make_case(rng, cell, 5, 17, 9, 33, dt)
        while not well_conditioned(case, dt):
            case = make_case(rng, cell, 5, 17, 9, 33, dt)
        jobs.append((case, dt, run_ref(case, case["grad_h_n"], case["grad_c_n"], 0.5)))
    failures = []

    def worker(job):
        case, dt, (exp_fwd, exp_grads) = job
        try:
            for _ in range(4):
                fwd, grads = run_lib(case, case["grad_h_n"], case["grad_c_n"], 0.5)
                assert_forward_close(fwd, exp_fwd, dt, rtol_for(dt, 5), case["cell"])
                assert_grads_close(grads, exp_grads, dt, rtol_for(dt, 5), case["cell"])
        except BaseException as exc:  # reported from the main thread below
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not failures, failures[0]


# --------------------------------------------------------------------------- 3. torch parity


def _torch_module(torch, cell, n_in, hidden, bias):
    if cell == "lstm":
        return torch.nn.LSTM(n_in, hidden, num_layers=1, bias=bias, dtype=torch.float64)
    if cell == "gru":
        return torch.nn.GRU(n_in, hidden, num_layers=1, bias=bias, dtype=torch.float64)
    return torch.nn.RNN(n_in, hidden, num_layers=1, nonlinearity=cell[4:], bias=bias, dtype=torch.float64)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_matches_torch(isa, cell, bias):
    """torch.nn.RNN(tanh / relu) / LSTM / GRU, one layer, float64, its own parameters
    passed unchanged: y, h_n, c_n and autograd's gradients of <grad_y, y> + <grad_h_n,
    h_n> + <grad_c_n, c_n> for x, h0, c0 and every parameter."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(CELL_NAMES.index(cell) + 10 * bias)
    t_len, batch, n_in, hidden = 6, 3, 5, 7
    module = _torch_module(torch, cell, n_in, hidden, bias)
    rng = np.random.default_rng(1000 + CELL_NAMES.index(cell))
    x = rng.standard_normal((t_len, batch, n_in))
    h0 = rng.standard_normal((batch, hidden)) * 0.5
    c0 = rng.standard_normal((batch, hidden)) * 0.5
    grad_y = rng.standard_normal((t_len, batch, hidden))
    grad_h_n = rng.standard_normal((batch, hidden))
    grad_c_n = rng.standard_normal((batch, hidden))

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    tc0 = torch.tensor(c0[None], requires_grad=True)
    if cell == "lstm":
        ty, (thn, tcn) = module(tx, (th0, tc0))
    else:
        ty, thn = module(tx, th0)
        tcn = None
    loss = (ty * torch.from_numpy(grad_y)).sum() + (thn[0] * torch.from_numpy(grad_h_n)).sum()
    if cell == "lstm":
        loss = loss + (tcn[0] * torch.from_numpy(grad_c_n)).sum()
    loss.backward()

    params = {name: p.detach().numpy() for name, p in module.named_parameters()}
    fwd = gradcore.rnn_forward(x, h0, params["weight_ih_l0"], params["weight_hh_l0"],
                               params.get("bias_ih_l0"), params.get("bias_hh_l0"), cell=cell,
                               c0=c0 if cell == "lstm" else None)
    grads = gradcore.rnn_backward(fwd.cache, grad_y, grad_h_n, grad_c_n if cell == "lstm" else None)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fwd.y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(fwd.h_n, thn[0].detach().numpy(), **tol)
    if cell == "lstm":
        np.testing.assert_allclose(fwd.c_n, tcn[0].detach().numpy(), **tol)
        np.testing.assert_allclose(grads.grad_c0, tc0.grad[0].numpy(), **tol)
    else:
        assert fwd.c_n is None and grads.grad_c0 is None
    np.testing.assert_allclose(grads.grad_x, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(grads.grad_h0, th0.grad[0].numpy(), **tol)
    p = dict(module.named_parameters())
    np.testing.assert_allclose(grads.grad_weight_ih, p["weight_ih_l0"].grad.numpy(), **tol)
    np.testing.assert_allclose(grads.grad_weight_hh, p["weight_hh_l0"].grad.numpy(), **tol)
    if bias:
        np.testing.assert_allclose(grads.grad_bias_ih, p["bias_ih_l0"].grad.numpy(), **tol)
        np.testing.assert_allclose(grads.grad_bias_hh, p["bias_hh_l0"].grad.numpy(), **tol)
    else:
        assert grads.grad_bias_ih is None and grads.grad_bias_hh is None
    # the reference agrees with torch too (it is what the other tests trust)
    ref = ref_rnn_backward(ref_rnn_forward(x, h0, params["weight_ih_l0"], params["weight_hh_l0"],
                                           params.get("bias_ih_l0"), params.get("bias_hh_l0"), cell=cell,
                                           c0=c0 if cell == "lstm" else None).cache,
                           grad_y, grad_h_n, grad_c_n if cell == "lstm" else None)
    np.testing.assert_allclose(ref.grad_weight_hh, p["weight_hh_l0"].grad.numpy(), **tol)
    np.testing.assert_allclose(ref.grad_x, tx.grad.numpy(), **tol)


# --------------------------------------------------------------------------- 4. errors, degenerate sizes


def _args(cell="lstm", t_len=3, batch=2, n_in=4, hidden=5, dtype=F64):
    g = CELLS[cell]
    return dict(x=np.ones((t_len, batch, n_in), dtype), h0=np.zeros((batch, hidden), dtype),
                weight_ih=np.full((g * hidden, n_in), 0.1, dtype), weight_hh=np.full((g * hidden, hidden), 0.1, dtype),
                bias_ih=np.zeros(g * hidden, dtype), bias_hh=np.zeros(g * hidden, dtype))


def _call(kw, cell="lstm", c0=None):
    return gradcore.rnn_forward(kw["x"], kw["h0"], kw["weight_ih"], kw["weight_hh"], kw["bias_ih"],
                                kw["bias_hh"], cell=cell, c0=c0)


def test_rnn_unknown_cell_names_it():
    kw = _args("lstm")
    for bad in ("LSTM_x", "gru2", "rnn", "relu"):
        with pytest.raises(ValueError) as info:
            _call(kw, cell=bad)
        assert bad in str(info.value)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_weight_shapes_inconsistent_with_gate_count(cell):
    """G*H rows are required (G = 1, 4, 3); weights of another cell's gate count, wrong
    columns, or biases of the wrong length raise ValueError naming the shapes."""
    g = CELLS[cell]
    other_g = 3 if g != 3 else 4
    for key, bad in [("weight_ih", np.ones((other_g * 5, 4))), ("weight_hh", np.ones((other_g * 5, 5))),
                     ("weight_ih", np.ones((g * 5, 3))), ("weight_hh", np.ones((g * 5, 6))),
                     ("weight_ih", np.ones((g * 5 + 1, 4))), ("weight_hh", np.ones((g * 5, 5, 1)))]:
        kw = _args(cell)
        kw[key] = bad
        with pytest.raises(ValueError) as info:
            _call(kw, cell=cell)
        assert str(bad.shape) in str(info.value), (key, bad.shape, str(info.value))
    for key in ("bias_ih", "bias_hh"):
        kw = _args(cell)
        kw[key] = np.zeros(g * 5 + 2)
        with pytest.raises(ValueError) as info:
            _call(kw, cell=cell)
        assert str((g * 5 + 2,)) in str(info.value), str(info.value)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_state_shape_errors(cell):
    for bad in [np.zeros((3, 5)), np.zeros((2, 6)), np.zeros(5), np.zeros((1, 2, 5))]:
        kw = _args(cell)
        kw["h0"] = bad
        with pytest.raises(ValueError) as info:
            _call(kw, cell=cell)
        assert str(bad.shape) in str(info.value), str(info.value)
    if cell == "lstm":
        with pytest.raises(ValueError):
            _call(_args(cell), cell=cell, c0=np.zeros((2, 4)))
    else:  # c0 is only for lstm
        with pytest.raises(ValueError):
            _call(_args(cell), cell=cell, c0=np.zeros((2, 5)))
    kw = _args(cell)
    kw["x"] = np.ones((2, 4))  # not (T, B, I)
    with pytest.raises(ValueError):
        _call(kw, cell=cell)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_backward_shape_errors(cell):
    fwd = _call(_args(cell), cell=cell)
    for bad in [np.zeros((3, 2, 4)), np.zeros((2, 2, 5)), np.zeros((3, 5))]:
        with pytest.raises(ValueError) as info:
            gradcore.rnn_backward(fwd.cache, bad)
        assert str(bad.shape) in str(info.value), str(info.value)
    gy = np.zeros((3, 2, 5))
    with pytest.raises(ValueError):
        gradcore.rnn_backward(fwd.cache, gy, np.zeros((2, 4)))
    if cell == "lstm":
        with pytest.raises(ValueError):
            gradcore.rnn_backward(fwd.cache, gy, None, np.zeros((5, 2)))


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_mixed_and_unsupported_dtypes(cell):
    """Mixed float32/float64 arguments raise TypeError naming both; integer data TypeError
    naming its dtype."""
    for key in ("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        kw = _args(cell)
        kw[key] = kw[key].astype(np.float32)
        with pytest.raises(TypeError) as info:
            _call(kw, cell=cell)
        assert "float32" in str(info.value) and "float64" in str(info.value), (key, str(info.value))
    kw = {k: v.astype(np.float32) for k, v in _args(cell).items()}
    if cell == "lstm":
        with pytest.raises(TypeError):
            _call(kw, cell=cell, c0=np.zeros((2, 5)))
    fwd = _call(kw, cell=cell)
    with pytest.raises(TypeError):
        gradcore.rnn_backward(fwd.cache, np.zeros((3, 2, 5), np.float64))
    kw = {k: v.astype(np.int64) for k, v in _args(cell).items()}
    with pytest.raises(TypeError) as info:
        _call(kw, cell=cell)
    assert "int64" in str(info.value)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_zero_batch(isa, cell):
    """B = 0 may be rejected with ValueError; if accepted, the shapes are right, the
    weight gradients zero and the norms 0."""
    kw = _args(cell, batch=0)
    try:
        fwd = _call(kw, cell=cell, c0=np.zeros((0, 5)) if cell == "lstm" else None)
    except ValueError:
        return
    assert fwd.y.shape == (3, 0, 5) and fwd.h_n.shape == (0, 5)
    grads = gradcore.rnn_backward(fwd.cache, np.zeros((3, 0, 5)))
    assert grads.grad_x.shape == (3, 0, 4) and grads.grad_h0.shape == (0, 5)
    np.testing.assert_array_equal(grads.grad_weight_ih, np.zeros_like(kw["weight_ih"]))
    np.testing.assert_array_equal(grads.grad_weight_hh, np.zeros_like(kw["weight_hh"]))
    np.testing.assert_array_equal(grads.grad_bias_ih, np.zeros_like(kw["bias_ih"]))
    np.testing.assert_array_equal(grads.hidden_grad_norms, np.zeros(3))


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rnn_zero_length_sequence(isa, cell):
    """T = 0 may be rejected with ValueError; if accepted, y is (0, B, H), h_n = h0 (c_n =
    c0), and the backward passes grad_h_n (grad_c_n) straight to grad_h0 (grad_c0)."""
    kw = _args(cell, t_len=0)
    rng = np.random.default_rng(1100)
    kw["h0"] = rng.standard_normal((2, 5))
    c0 = rng.standard_normal((2, 5)) if cell == "lstm" else None
    try:
        fwd = _call(kw, cell=cell, c0=c0)
    except ValueError:
        return
    assert fwd.y.shape == (0, 2, 5)
    np.testing.assert_array_equal(fwd.h_n, kw["h0"])
    if cell == "lstm":
        np.testing.assert_array_equal(fwd.c_n, c0)
    ghn = rng.standard_normal((2, 5))
    gcn = rng.standard_normal((2, 5)) if cell == "lstm" else None
    try:
        grads = gradcore.rnn_backward(fwd.cache, np.zeros((0, 2, 5)), ghn, gcn)
    except ValueError:
        return
    assert grads.grad_x.shape == (0, 2, 4) and grads.hidden_grad_norms.shape == (0,)
    np.testing.assert_array_equal(grads.grad_h0, ghn)
    if cell == "lstm":
        np.testing.assert_array_equal(grads.grad_c0, gcn)
    np.testing.assert_array_equal(grads.grad_weight_hh, np.zeros_like(kw["weight_hh"]))
