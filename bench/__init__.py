"""gradcore micro-benchmark harness (installed as ``gradcore.bench``).

Run it with ``gradcore bench [options]`` (or ``python -m gradcore bench``), which calls
:func:`main` with the arguments after "bench".  From a source checkout, ``python -m bench``
does the same.  Every case runs gradcore and its peers (NumPy always, PyTorch CPU
when importable) side by side in this process and prints best-of-N times, the
ratio peer/gradcore against the project's goals (PASS/MISS) and the
fraction of the machine limit (memory bandwidth for norms, FMA peak for dense and
recurrent layers), both measured on this machine (see ``machine.py``).  ``--json``
writes every result (schema :data:`SCHEMA`, described in the README), ``--plot`` a
figure of it (``plot.py``), and ``gradcore bench compare OLD.json NEW.json`` compares
two such runs case by case (``compare.py``).

Suites are the modules ``suite_<name>.py`` of this package, found at run time
(so ``suite_dense.py`` / ``suite_rnn.py`` only need to be dropped in).  A suite
module defines ``NAME``, ``DESCRIPTION``, optionally ``NEEDS`` (machine limits
to measure up front: ``"memory"`` and/or ``"fma"``), and
``run(ctx: common.Context) -> common.SuiteResult``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import sys
import time
from typing import Optional

__all__ = ["main", "available_suites"]

#: display / run order of the suites we know about; others follow alphabetically
SUITE_ORDER = ("norms", "dense", "rnn", "cuda")
DEFAULT_REPEAT = 7
QUICK_REPEAT = 3
#: every case is measured this many times over, gradcore and its peers in turn
#: (best of all rounds): a slow spell of a shared machine then falls on every library
DEFAULT_ROUNDS = 2
QUICK_ROUNDS = 1
DEFAULT_MIN_TIME = 0.02
#: the JSON written by --json (documented in the README, read by ``bench compare``)
SCHEMA = "gradcore-bench/2"


def available_suites() -> dict:
    """{suite name: module name} for every ``suite_*.py`` module in this package."""
    found = {m.name[len("suite_"):]: m.name for m in pkgutil.iter_modules(__path__)
             if m.name.startswith("suite_")}
    order = [n for n in SUITE_ORDER if n in found] + sorted(n for n in found if n not in SUITE_ORDER)
    return {n: found[n] for n in order}


def _parse_suites(spec: str, parser: argparse.ArgumentParser) -> list:
    avail = available_suites()
    names = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            names += list(avail)
        elif part in avail:
            names.append(part)
        else:
            parser.error(f"argument --suite: unknown suite {part!r} "
                         f"(choose from {', '.join(list(avail) + ['all'])}; comma-separated)")
    out = []
    for n in names:
        if n not in out:
            out.append(n)
    if not out:
        parser.error("argument --suite: no suite selected")
    return out


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    suites = ", ".join(list(available_suites()) + ["all"])
    p = argparse.ArgumentParser(
        prog="gradcore bench",
        description="Benchmark gradcore against NumPy and PyTorch (side by side, best-of-N), "
                    "with the project's goals and the fraction of the machine limits "
                    "(memory bandwidth and FMA peak, measured on this machine).",
        epilog="gradcore bench compare OLD.json NEW.json: the ratio NEW/OLD of every case "
               "of two --json runs (gradcore bench compare --help).")
    p.add_argument("--suite", default="all", metavar="NAMES",
                   help=f"suite(s) to run, comma-separated: {suites} (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and fewer repeats (a smoke run, < 1 min on 2 cores)")
    p.add_argument("--json", metavar="PATH",
                   help="also write every result machine-readably to PATH ('-': stdout); "
                        "the input of 'gradcore bench compare'")
    p.add_argument("--plot", metavar="PATH",
                   help="also write a figure to PATH (.png, .pdf, .svg): per suite, the "
                        "speed-up over each peer and the fraction of the limit (needs "
                        "matplotlib)")
    p.add_argument("--repeat", type=_positive_int, metavar="N",
                   help=f"best-of-N timed batches (default {DEFAULT_REPEAT}, --quick {QUICK_REPEAT})")
    p.add_argument("--rounds", type=_positive_int, metavar="N",
                   help=f"rounds of gradcore-then-peers per case, best of all kept "
                        f"(default {DEFAULT_ROUNDS}, --quick {QUICK_ROUNDS})")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="gradcore.set_num_threads(N) (and torch.set_num_threads(N), so peers "
                        "run on as many threads); default: the libraries' defaults")
    p.add_argument("--min-time", type=_positive_float, default=DEFAULT_MIN_TIME, metavar="S",
                   help=f"minimum duration of one timed batch in seconds (default {DEFAULT_MIN_TIME})")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    p.add_argument("--plain", action="store_true", help="plain-text tables even if rich is installed")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when a goal is missed, a result check fails or "
                        "a measured time beats its limit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    return p


def _environment(gradcore, np, torch, torch_note: str) -> dict:
    from .machine import cpu_description

    env = {"python": platform.python_version(), "cpu": cpu_description()}
    try:
        env["gradcore"] = dict(gradcore.info())
    except Exception as exc:
        env["gradcore"] = {"version": getattr(gradcore, "__version__", "?"),
                           "info_error": f"{type(exc).__name__}: {exc}"}
    try:
        env["gradcore"]["get_num_threads"] = int(gradcore.get_num_threads())
    except Exception:
        pass
    env["numpy"] = {"version": np.__version__}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        env["numpy"]["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        pass
    try:
        import threadpoolctl
        env["numpy"]["threadpools"] = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads")}
            for d in threadpoolctl.threadpool_info()]
    except Exception:
        pass
    if torch is not None:
        env["torch"] = {"version": torch.__version__, "num_threads": torch.get_num_threads(),
                        "num_interop_threads": torch.get_num_interop_threads()}
    else:
        env["torch"] = {"skipped": torch_note}
    env["env_vars"] = {k: os.environ[k] for k in
                       ("GRADCORE_NUM_THREADS", "GRADCORE_ISA", "OMP_NUM_THREADS",
                        "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    return env


def _header_rows(env: dict, args) -> list:
    g = env["gradcore"]
    gc_bits = [f"version {g.get('version', '?')}", f"isa {g.get('isa', '?')}"]
    if "isa_available" in g:
        avail = g["isa_available"]
        if isinstance(avail, (list, tuple)):
            avail = ",".join(map(str, avail))
        gc_bits.append(f"available {avail}")
    gc_bits.append(f"threads {g.get('threads', g.get('get_num_threads', '?'))}")
    for k in ("compiler", "cuda"):
        if k in g:
            gc_bits.append(f"{k} {g[k]}")
    if "info_error" in g:
        gc_bits.append(f"info() failed: {g['info_error']}")
    n = env["numpy"]
    np_txt = f"{n['version']}" + (f" ({n['blas']})" if "blas" in n else "")
    if "threadpools" in n:
        np_txt += " " + ", ".join(f"{d['internal_api']} {d['num_threads']} threads"
                                  for d in n["threadpools"])
    t = env["torch"]
    if "skipped" in t:
        torch_txt = f"not used: {t['skipped']}"
    else:
        torch_txt = (f"{t['version']}, get_num_threads() = {t['num_threads']}, "
                     f"interop {t['num_interop_threads']}")
    cpu = env["cpu"]
    rows = [
        ("gradcore", ", ".join(gc_bits)),
        ("numpy", np_txt),
        ("torch", torch_txt),
        ("python", env["python"]),
        ("cpu", f"{cpu['model']} ({cpu['machine']}), {cpu['usable_cpus']} usable of "
                f"{cpu['cpu_count']} CPUs"),
        ("threads", ("--threads %d (gradcore and torch)" % args.threads) if args.threads
         else "library defaults"),
        ("timing", f"{args.rounds} round(s) of gradcore then peers, each best of {args.repeat}, "
                   f"batches >= {args.min_time * 1e3:g} ms, GC off, warm-up first"
                   + (", --quick" if args.quick else "")),
    ]
    if env["env_vars"]:
        rows.append(("env", " ".join(f"{k}={v}" for k, v in env["env_vars"].items())))
    return rows


def _machine_rows(mem) -> list:
    rows = [
        ("read", f"{mem.read_bw / 1e9:.2f} GB/s  (multi-threaded read pass, {mem.threads} threads)"),
        ("update", f"{mem.update_bw / 1e9:.2f} GB/s of array  ({2 * mem.update_bw / 1e9:.2f} GB/s "
                   f"traffic; in-place read+write pass)"),
        ("probe", f"{mem.probe_bytes >> 20} MB float32, gradcore's memory probe; measured again "
                  f"around every memory-bound case, which is held to the probes around it"),
        ("np.sum", f"{mem.numpy_sum_bw / 1e9:.2f} GB/s  (NumPy, single thread; reference)"),
    ]
    if mem.torch_sum_bw is not None:
        rows.append(("torch.sum", f"{mem.torch_sum_bw / 1e9:.2f} GB/s  "
                                  f"({mem.torch_threads} threads; reference)"))
    return rows


def _fma_rows(fma) -> list:
    rows = []
    for dt in ("float32", "float64"):
        p, t = fma.probe(dt), fma.theory(dt)
        txt = f"{p.best / 1e9:.1f} GFLOP/s  ({fma.isa}, {fma.threads} thread(s), best of " \
              f"{len(p.samples)}, spread {p.spread:.1%})"
        if p.ghz:
            txt += f" = {p.cores} cores × {p.fma_units} FMA/cycle × {p.lanes} lanes × 2 flops " \
                   f"× {p.ghz:.2f} GHz implied"
        if t:
            txt += f"; theoretical {t / 1e9:.1f} at {fma.ghz:.3g} GHz ({fma.clock_source}), reference"
        rows.append((f"limit {fma.label(dt)}", txt))
    others = [p for p in fma.probes if p.isa != fma.isa]
    if others:
        rows.append(("other isas", ", ".join(
            f"{p.isa} {fma.label(p.dtype)} {p.best / 1e9:.1f}" for p in others) + " GFLOP/s (reference)"))
    return rows


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from .compare import main as compare_main
        return compare_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, mod in available_suites().items():
            try:
                desc = getattr(importlib.import_module(f".{mod}", __name__), "DESCRIPTION", "")
            except Exception as exc:
                desc = f"(cannot import: {type(exc).__name__}: {exc})"
            print(f"{name:8s} {desc}")
        return 0
    suite_names = _parse_suites(args.suite, parser)
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else DEFAULT_REPEAT
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS

    from .common import Context, SuiteResult
    from .machine import Machine
    from .report import Reporter, write_json

    rep = Reporter(plain=args.plain, verbose=not args.quiet)
    try:
        import numpy as np
        gradcore = importlib.import_module("gradcore")
    except Exception as exc:
        print(f"gradcore bench: cannot import gradcore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    torch, torch_note = None, ""
    if args.no_torch:
        torch_note = "--no-torch"
    else:
        try:
            import torch
        except Exception as exc:
            torch, torch_note = None, f"torch not importable ({type(exc).__name__}: {exc})"
    if args.threads:
        gradcore.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    env = _environment(gradcore, np, torch, torch_note)
    rep.rule("gradcore bench")
    rep.kv_block("environment", _header_rows(env, args))

    machine = Machine(gradcore=gradcore, np=np, torch=torch, quick=args.quick,
                      repeat=args.repeat, min_time=args.min_time, log=rep.log)
    ctx = Context(gradcore=gradcore, np=np, torch=torch, torch_note=torch_note,
                  quick=args.quick, repeat=args.repeat, min_time=args.min_time,
                  machine=machine, log=rep.log, rounds=args.rounds)

    modules = {}
    for name in suite_names:
        modules[name] = importlib.import_module(f".{available_suites()[name]}", __name__)
    if any("memory" in getattr(m, "NEEDS", ()) for m in modules.values()):
        mem = machine.memory()
        rep.kv_block("machine limits (memory bandwidth)", _machine_rows(mem))
    if any("fma" in getattr(m, "NEEDS", ()) for m in modules.values()):
        fma = machine.fma()
        rep.kv_block("machine limits (FMA peak)", _fma_rows(fma))

    results = []
    for name, mod in modules.items():
        t0 = time.perf_counter()
        try:
            res = mod.run(ctx)
        except Exception as exc:
            import traceback
            rep.log(traceback.format_exc())
            res = SuiteResult(name, getattr(mod, "DESCRIPTION", ""),
                              error=f"{type(exc).__name__}: {exc}")
        res_time = time.perf_counter() - t0
        rep.log(f"suite {name} took {res_time:.1f} s")
        results.append(res)
        rep.suite_table(res)

    n_pass, n_miss, n_bad, n_wrong = rep.summary(results)
    elapsed = time.perf_counter() - t_start
    rep.line(f"total {elapsed:.1f} s", style="dim")

    payload = {
        "schema": SCHEMA,
        "argv": argv,
        "options": {"suites": suite_names, "quick": args.quick, "repeat": args.repeat,
                    "rounds": args.rounds, "threads": args.threads,
                    "min_time_s": args.min_time, "torch": torch is not None},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "machine": machine.measured,
        "suites": [r.to_dict() for r in results],
        "summary": {"pass": n_pass, "miss": n_miss, "failed_checks": n_bad,
                    "wrong_limits": n_wrong, "elapsed_s": elapsed},
    }
    if args.json:
        write_json(args.json, payload)
        if args.json != "-":
            rep.log(f"wrote {args.json}")
    status = 0
    if args.plot:
        from .plot import plot_run
        note = plot_run(payload, args.plot)
        rep.line(note, style=None if note.startswith("wrote") else "bold red")
        status = 0 if note.startswith("wrote") else 1

    if any(r.error for r in results):
        return 1
    if args.check and (n_miss or n_bad or n_wrong):
        return 1
    return status
