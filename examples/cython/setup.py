"""Builds the Cython example against the installed gradcore:

    pip install gradcore cython setuptools
    python setup.py build_ext --inplace
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

import gradcore

library_dir = gradcore.get_library_dir()
extension = Extension(
    "gradcore_nogil",
    ["gradcore_nogil.pyx"],
    include_dirs=[gradcore.get_include()],
    library_dirs=[library_dir],
    libraries=["gradcore"],
    runtime_library_dirs=[library_dir],  # find libgradcore.so inside the installed package
)

setup(name="gradcore-cython-example", ext_modules=cythonize([extension]))
