"""examples/torch_training_loop.py runs from a fresh install and trains exactly as the same
loop with torch's own clip_grad_norm_ does (float64: equal up to rounding)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_training_loop.py"


def test_torch_training_loop_example_matches_torch_clip(tmp_path):
    pytest.importorskip("torch", reason="the PyTorch example needs torch")
    run = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "30", "--compare-torch"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    fields = dict(line.split(maxsplit=1) for line in run.stdout.splitlines() if line.count(" ") >= 1)
    clipped, _, steps = fields["clipped_steps"].split()
    assert int(steps) == 30 and 0 < int(clipped) <= 30
    assert float(fields["max_weight_difference_vs_torch"]) < 1e-8
    assert float(fields["max_total_norm_rel_difference_vs_torch"]) < 1e-9
    assert "GradientMonitor: 30 steps" in run.stdout
