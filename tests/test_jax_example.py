"""The README's "JAX and optax" training loop, run as written: the code block is taken
from README.md and run in a fresh interpreter, which must train (the loss falls) with
gradcore.optax clipping inside jax.jit."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("### JAX and optax\n", 1)
    assert len(section) == 2, "README.md has no section 'JAX and optax'"
    block = re.search(r"```python\n(.*?)```", section[1], re.S)
    assert block, "the 'JAX and optax' section has no python code block"
    return block.group(1)


def test_the_example_is_a_jitted_optax_chain_with_gradcore():
    code = readme_example()
    assert "import gradcore.optax" in code and "optax.chain(gco." in code and "@jax.jit" in code


def test_readme_training_loop_runs_and_trains(tmp_path):
    pytest.importorskip("jax", reason="jax is not installed: the README's JAX example is not run")
    pytest.importorskip("optax", reason="optax is not installed: the README's JAX example is not run")
    proc = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"^loss (\S+) -> (\S+)$", proc.stdout, re.M)
    assert found, proc.stdout
    first, last = map(float, found.groups())
    assert last < 0.2 * first, proc.stdout
