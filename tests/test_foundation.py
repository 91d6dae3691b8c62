"""The package's plumbing: build facts, ISA and thread switches (API and environment),
CUDA probes, the installed package being the one under test, and the GIL being released
around kernels so Python threads can run them concurrently."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import gradcore
import gradcore.cuda

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, tmp_path, **env):
    """Runs `python -c code` in a fresh process outside the checkout, with env additions
    (a value of None removes the variable)."""
    environ = dict(os.environ)
    for key in ("GRADCORE_ISA", "GRADCORE_NUM_THREADS"):
        environ.pop(key, None)
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run([sys.executable, *code], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- info()


def test_info_keys_and_types():
    """info() holds version/isa/isa_available/threads/cuda/compiler with the right types;
    the active ISA is available and "scalar" always is."""
    info = gradcore.info()
    assert set(info) >= {"version", "isa", "isa_available", "threads", "cuda", "compiler"}
    assert isinstance(info["version"], str) and info["version"] == gradcore.__version__
    assert isinstance(info["isa"], str)
    assert isinstance(info["isa_available"], list)
    assert all(isinstance(name, str) for name in info["isa_available"])
    assert "scalar" in info["isa_available"]
    assert info["isa"] in info["isa_available"]
    assert isinstance(info["threads"], int) and info["threads"] >= 1
    assert info["threads"] == gradcore.get_num_threads()
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["compiler"], str) and info["compiler"]


def test_cli_info_prints_active_isa(tmp_path):
    """`python -m gradcore info` exits 0 and prints the ISA that info() reports in the same
    environment."""
    r = _python(["-m", "gradcore", "info"], tmp_path)
    assert r.returncode == 0, r.stderr
    isa_lines = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == ["isa"]]
    assert len(isa_lines) == 1 and len(isa_lines[0]) == 2, r.stdout
    same_env = _python(["-c", "import gradcore; print(gradcore.info()['isa'])"], tmp_path)
    assert isa_lines[0][1] == same_env.stdout.strip()
    assert isa_lines[0][1] in gradcore.info()["isa_available"]


# --------------------------------------------------------------------------- ISA switches


def test_env_isa_scalar_selects_scalar(tmp_path):
    """GRADCORE_ISA=scalar makes a fresh process run the scalar target."""
    r = _python(["-c", "import gradcore; print(gradcore.info()['isa'])"], tmp_path,
                GRADCORE_ISA="scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"


def test_env_isa_scalar_shows_in_cli(tmp_path):
    """`python -m gradcore info` reports the target forced by GRADCORE_ISA."""
    r = _python(["-m", "gradcore", "info"], tmp_path, GRADCORE_ISA="scalar")
    assert r.returncode == 0, r.stderr
    assert any(line.split()[:2] == ["isa", "scalar"] for line in r.stdout.splitlines())


def test_env_isa_bogus_fails_import_naming_the_variable(tmp_path):
    """GRADCORE_ISA=bogus makes `import gradcore` fail with an ImportError that names
    GRADCORE_ISA (and the bad value)."""
    r = _python(["-c", "import gradcore"], tmp_path, GRADCORE_ISA="bogus")
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "GRADCORE_ISA" in r.stderr and "bogus" in r.stderr


def test_set_isa_bogus_raises_and_keeps_target():
    """_core._set_isa("bogus") raises ValueError and leaves the active target alone."""
    before = gradcore.info()["isa"]
    with pytest.raises(ValueError, match="bogus"):
        gradcore._core._set_isa("bogus")
    assert gradcore.info()["isa"] == before


def test_isa_fixture_switches_target(isa):
    """Every available target can be made active (the `isa` fixture asserts it)."""
    assert gradcore.info()["isa"] == isa
    assert gradcore.global_norm([np.array([3.0, 4.0], np.float32)]) == 5.0


# --------------------------------------------------------------------------- threads


def test_env_num_threads(tmp_path):
    """GRADCORE_NUM_THREADS=1 sets the initial thread count of a fresh process."""
    r = _python(["-c", "import gradcore; print(gradcore.get_num_threads())"], tmp_path,
                GRADCORE_NUM_THREADS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_set_num_threads_round_trip():
    """set_num_threads(n) is what get_num_threads() and info() report afterwards."""
    previous = gradcore.get_num_threads()
    try:
        for n in (1, 3, 2):
            gradcore.set_num_threads(n)
            assert gradcore.get_num_threads() == n
            assert gradcore.info()["threads"] == n
    finally:
        gradcore.set_num_threads(previous)


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_rejects_nonpositive(bad):
    """set_num_threads(n < 1) raises ValueError and changes nothing."""
    before = gradcore.get_num_threads()
    with pytest.raises(ValueError):
        gradcore.set_num_threads(bad)
    assert gradcore.get_num_threads() == before


@pytest.mark.parametrize("bad", ["2", 2.0, None, True])
def test_set_num_threads_rejects_non_int(bad):
    """set_num_threads of a non-int (str, float, None, bool) raises TypeError."""
    before = gradcore.get_num_threads()
    with pytest.raises(TypeError):
        gradcore.set_num_threads(bad)
    assert gradcore.get_num_threads() == before


# --------------------------------------------------------------------------- CUDA


def test_cuda_probes_are_consistent():
    """cuda.is_built() matches info()["cuda"]; without a CUDA build nothing is available."""
    assert isinstance(gradcore.cuda.is_built(), bool)
    assert gradcore.cuda.is_built() == gradcore.info()["cuda"]
    assert isinstance(gradcore.cuda.is_available(), bool)
    assert isinstance(gradcore.cuda.device_count(), int)
    if not gradcore.cuda.is_built():
        assert gradcore.cuda.is_available() is False
        assert gradcore.cuda.device_count() == 0
        with pytest.raises(RuntimeError):
            gradcore.cuda.self_test()


# --------------------------------------------------------------------------- installation


def test_installed_package_is_imported(tmp_path):
    """Importing gradcore from outside the checkout works and uses the installed package
    (not /work/main/gradcore); so does this test process."""
    r = _python(["-c", "import gradcore, numpy as np; "
                       "assert gradcore.global_norm([np.ones(4)]) == 2.0; "
                       "print(gradcore.__file__)"], tmp_path)
    assert r.returncode == 0, r.stderr
    where = os.path.abspath(r.stdout.strip())
    assert not where.startswith(os.path.join(CHECKOUT, "gradcore") + os.sep)
    assert not os.path.abspath(gradcore.__file__).startswith(
        os.path.join(CHECKOUT, "gradcore") + os.sep)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_python_threads_get_exact_answers():
    """global_norm called from 4 Python threads at once on large arrays (GIL released
    around the kernels, the 2-thread pool shared between callers) returns, bit for bit,
    the answer of a 1-thread call (the chunking never depends on who runs the chunks) and
    does not deadlock."""
    rng = np.random.default_rng(1234)
    data = [
        [rng.standard_normal(1_200_000).astype(np.float32), rng.standard_normal((3, 50_000))],
        [rng.standard_normal(1_000_000)],
        [rng.standard_normal(1_100_000).astype(np.float32)] * 2,
        [rng.standard_normal((7, 150_000)).astype(np.float32)],
    ]
    previous = gradcore.get_num_threads()
    try:
        gradcore.set_num_threads(1)
        expected = [gradcore.global_norm(d) for d in data]
        gradcore.set_num_threads(2)
        results = {}
        errors = []
        barrier = threading.Barrier(len(data))

        def worker(i):
            try:
                barrier.wait(timeout=30)
                got = [gradcore.global_norm(data[i]) for _ in range(5)]
                results[i] = got
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(len(data))]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in workers), "deadlock: worker threads still running"
        assert not errors, errors
        for i, exp in enumerate(expected):
            assert all(np.float64(r).tobytes() == np.float64(exp).tobytes() for r in results[i])
    finally:
        gradcore.set_num_threads(previous)


# --------------------------------------------------------------------------- clean exit


def test_process_exits_cleanly_after_array_like_input(tmp_path):
    """A pytest session whose test passes a nested list (converted through
    gradcore._convert) to gradcore exits with status 0 (conftest works around this for
    the suite itself)."""
    (tmp_path / "test_user.py").write_text(
        "import gradcore\n\n"
        "def test_list_input():\n"
        "    assert gradcore.global_norm([[3.0, 4.0]]) == 5.0\n")
    r = _python(["-u", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                 "test_user.py"], tmp_path)
    assert "1 passed" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 0, r.stderr[-2000:]
