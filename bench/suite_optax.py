"""Suite "optax" (informative): gradcore.optax's gradient transformations against
optax's own on the GPT-2 small gradient list, on JAX's CPU backend.

Inside ``jax.jit`` gradcore.optax clips on the host through ``jax.pure_callback``: every
step copies the gradients out of XLA and back, and XLA can neither fuse the clip nor
overlap it. This suite shows what that costs against optax's fused clip, inside ``jit``
and outside it (where optax runs op by op and gradcore clips the arrays directly). There
is no goal: the ratios say where the callback costs more than gradcore's kernels save.
Skipped when jax or optax is not importable (``pip install "gradcore[jax]"``).

Data: the 148 float32 arrays of GPT-2 small (``--quick``: wte cut to 5000 rows), N(0, 1);
``clip_by_global_norm`` with max_norm = half the total (every step scales), ``clip`` with
max_delta = 1.0. Each timed call waits for its result (``jax.block_until_ready``).
"""

from __future__ import annotations

from .common import SuiteResult, max_rel_err, run_check, time_case
from .suite_norms import gpt2_small_shapes

NAME = "optax"
DESCRIPTION = "gradcore.optax transforms vs optax's, jitted and not, on JAX's CPU backend"
NEEDS = ()


def run(ctx) -> SuiteResult:
    suite = SuiteResult(NAME, DESCRIPTION)
    try:
        import jax
        import jax.numpy as jnp
        import optax

        import gradcore.optax as gco
    except ImportError as exc:
        suite.notes.append(f"skipped: {exc} (pip install \"gradcore[jax]\")")
        return suite
    np = ctx.np
    vocab = 5000 if ctx.quick else 50257
    rng = np.random.default_rng(0)
    grads = [jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in gpt2_small_shapes(vocab=vocab)]
    data = f"GPT-2 {'(wte 5000 rows) ' if ctx.quick else ''}f32, JAX CPU"
    max_norm = 0.5 * float(optax.global_norm(grads))
    pairs = [("1", "clip_by_global_norm", f"max_norm={max_norm:.4g}",
              gco.clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)),
             ("2", "clip", "max_delta=1.0", gco.clip(1.0), optax.clip(1.0))]
    for key, name, arg, ours, theirs in pairs:
        state = ours.init(grads)

        def update(tx, g, state=state):
            return tx.update(g, state)[0]

        for suffix, how, wrap in (("a", "jit", jax.jit), ("b", "no jit", lambda f: f)):
            mine = wrap(lambda g, ours=ours: update(ours, g))
            peer = wrap(lambda g, theirs=theirs: update(theirs, g))
            check = run_check(lambda: _agree(np, mine(grads), peer(grads)))
            time_case(ctx, suite, key + suffix, f"{name} ({how})", data,
                      f"gradcore.optax.{name}({arg}).update",
                      lambda f=mine: jax.block_until_ready(f(grads)),
                      [("optax", f"optax.{name}({arg}).update",
                        lambda f=peer: jax.block_until_ready(f(grads)), None, False)],
                      check=check, params={"arrays": len(grads), "elements": sum(g.size for g in grads)})
    suite.notes += [
        "ratio = optax time / gradcore.optax time (> 1: gradcore.optax faster); informative, no goal.",
        "jit: gradcore.optax runs its host function through jax.pure_callback (a device -> host -> "
        "device copy of every gradient per step, no fusion); no jit: optax runs op by op, "
        "gradcore.optax clips the arrays on the host directly.",
    ]
    return suite


def _agree(np, mine, theirs) -> str:
    """Both transformations give the same updates (float32 rounding: gradcore's norm is
    accumulated in float64, optax's in float32)."""
    err = max(max_rel_err(np, np.asarray(a), np.asarray(b)) for a, b in zip(mine, theirs))
    if err > 1e-5:
        return f"gradcore.optax and optax differ: max relative error {err:.3g}"
    return "ok"
