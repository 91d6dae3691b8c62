"""The C++ package shipped in the wheel works for an outside consumer: a CMake project
that does find_package(gradcore) builds, links libgradcore and computes a norm."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradcore


def test_paths_point_into_the_installed_package():
    assert os.path.isfile(os.path.join(gradcore.get_include(), "gradcore", "gradcore.hpp"))
    assert os.path.isfile(os.path.join(gradcore.get_cmake_dir(), "gradcoreConfig.cmake"))
    libs = [f for f in os.listdir(gradcore.get_library_dir()) if f.startswith("libgradcore")]
    assert libs, "libgradcore is not next to the extension module"


def test_cmake_dir_command_prints_the_path(tmp_path):
    # (run outside the checkout, whose gradcore/ has no compiled module)
    out = subprocess.run([sys.executable, "-m", "gradcore", "--cmake-dir"], capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout.strip()
    assert out == gradcore.get_cmake_dir()


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def wave(n, scale, phase):
    """The inputs examples/cpp/train_step.cpp builds: scale * sin(i + phase), in float32."""
    return (np.float32(scale) * np.sin(np.arange(n, dtype=np.float32) + np.float32(phase))).astype(np.float32)


def reference_train_step():
    """The example's dense step in float64 NumPy: relu layer, loss 0.5 ||y||^2, clip to 1."""
    batch, n_in, n_out = 8, 16, 4
    x = wave(batch * n_in, 1.0, 0.5).reshape(batch, n_in).astype(np.float64)
    w = wave(n_out * n_in, 0.25, 1.5).reshape(n_out, n_in).astype(np.float64)
    b = wave(n_out, 0.1, 2.5).astype(np.float64)
    y = np.maximum(x @ w.T + b, 0.0)
    grad_z = y * (y > 0)
    grad_w, grad_b = grad_z.T @ x, grad_z.sum(axis=0)
    total = math.sqrt((grad_w ** 2).sum() + (grad_b ** 2).sum())
    return total, grad_b * min(1.0, 1.0 / (total + 1e-6))


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                    reason="needs cmake and a C++ compiler")
def test_cpp_example_builds_with_find_package_and_runs(tmp_path):
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(EXAMPLES / "cpp"), "-B", str(build),
                    f"-Dgradcore_DIR={gradcore.get_cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    out = subprocess.run([str(build / "train_step")], check=True, capture_output=True, text=True).stdout
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    total, grad_b = reference_train_step()
    assert fields["isa"][0] in gradcore.info()["isa_available"]
    assert float(fields["total_norm"][0]) == pytest.approx(total, rel=1e-5)
    assert fields["clipped"] == ["1"]
    assert float(fields["norm_after"][0]) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose([float(v) for v in fields["grad_bias"]], grad_b, rtol=1e-5)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="needs a C compiler")
def test_cython_example_builds_and_calls_the_kernels_without_the_gil(tmp_path):
    pytest.importorskip("Cython", reason="the Cython example needs Cython (pip install '.[test]')")
    pytest.importorskip("setuptools", reason="the Cython example builds with setuptools")
    src = tmp_path / "cython"
    shutil.copytree(EXAMPLES / "cython", src)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=src, check=True,
                   capture_output=True)
    check = """
import numpy as np, threading, gradcore, gradcore_nogil
rng = np.random.default_rng(0)
grads = [rng.standard_normal(5000).astype(np.float32), 10 * rng.standard_normal((7, 3))]
ref = [g.copy() for g in grads]
total = gradcore_nogil.clip_by_global_norm(grads, 1.0)
assert total == gradcore.clip_by_global_norm_(ref, 1.0), total
assert all(np.array_equal(a, b) for a, b in zip(grads, ref))
x = rng.standard_normal((9, 5)).astype(np.float32)
w = rng.standard_normal((3, 5)).astype(np.float32)
b = rng.standard_normal(3).astype(np.float32)
y = gradcore_nogil.dense_relu_forward(x, w, b)
np.testing.assert_allclose(y, np.maximum(x.astype(np.float64) @ w.T + b, 0), rtol=1e-5, atol=1e-5)
for bad, kind in [([np.arange(3)], TypeError), ([np.ones(4)[::2]], TypeError)]:
    try:
        gradcore_nogil.clip_by_global_norm(bad, 1.0)
    except kind:
        pass
    else:
        raise AssertionError(bad)
try:
    gradcore_nogil.clip_by_global_norm([np.ones(3)], -1.0)  # rejected by the C ABI
except ValueError as e:
    assert "max_norm" in str(e), e
else:
    raise AssertionError("negative max_norm accepted")
# Several threads at once: the kernels run without the GIL.
results = []
threads = [threading.Thread(target=lambda: results.append(
    gradcore_nogil.clip_by_global_norm([np.full(100_000, 2.0)], 1e9))) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert results == [2.0 * 100_000 ** 0.5] * 4, results
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", check], cwd=src, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
