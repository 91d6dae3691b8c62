"""The C++ package shipped in the wheel works for an outside consumer: a CMake project
that does find_package(gradcore) builds, links libgradcore and computes a norm."""

import os
import shutil
import subprocess
import sys

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


CONSUMER_CMAKE = """
cmake_minimum_required(VERSION 3.18)
project(consumer LANGUAGES CXX)
find_package(gradcore CONFIG REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE gradcore::gradcore)
"""

CONSUMER_MAIN = """
#include <gradcore/gradcore.hpp>
#include <cstdio>
#include <vector>
int main() {
    std::vector<float> a{3.0f, 4.0f};
    std::vector<double> b{12.0};
    const gradcore::TensorView views[2] = {{a.data(), 2, gradcore::DType::float32},
                                           {b.data(), 1, gradcore::DType::float64}};
    std::printf("%.17g %s\\n", gradcore::global_norm(views, 2, 2.0), gradcore::isa_active().c_str());
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                    reason="needs cmake and a C++ compiler")
def test_find_package_consumer_builds_and_runs(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text(CONSUMER_CMAKE)
    (tmp_path / "main.cpp").write_text(CONSUMER_MAIN)
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(tmp_path), "-B", str(build), f"-Dgradcore_DIR={gradcore.get_cmake_dir()}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    out = subprocess.run([str(build / "consumer")], check=True, capture_output=True, text=True).stdout.split()
    assert float(out[0]) == pytest.approx(13.0, rel=1e-15)
    assert out[1] in gradcore.info()["isa_available"]
