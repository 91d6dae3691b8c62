"""The demo (``gradcore demo``): runs, shows the explosion and the cure, is
deterministic, and runs as a module from outside the checkout."""

import json
import math
import os
import subprocess
import sys

import pytest

import gradcore.demo as demo


def _run(capsys, *argv):
    code = demo.main(list(argv))
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run's stdout and JSON summary (plain tables, as the tests read them)."""
    path = tmp_path_factory.mktemp("demo") / "summary.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = demo.main(["--quick", "--seed", "0", "--plain", "--no-plot", "--json", str(path)])
    return code, buf.getvalue(), json.loads(path.read_text())


def test_quick_runs_and_shows_explosion_and_cure(quick):
    code, out, summary = quick
    assert code == 0
    plain, clipped = summary["unclipped"], summary["clipped"]
    # the unclipped run exploded: flagged by the monitor, huge norm, and the text says so
    assert plain["events"] >= 1
    assert plain["max_grad_norm"] > 50
    assert "Without clipping the gradient exploded" in out
    assert "spike" in out
    # the clipped run stayed finite and learned: final test MSE below its initial one
    assert clipped["nonfinite_steps"] == 0
    assert math.isfinite(clipped["final_mse"])
    start = float(out.split("test MSE ")[-1].split(" -> ")[0])
    assert clipped["final_mse"] < start
    assert clipped["final_mse"] < plain["final_mse"]
    # the tables and hidden_grad_norms section are there
    for text in ("Training, side by side", "Summary", "Verdict", "dL/dh_t through time"):
        assert text in out


def test_deterministic(capsys, quick):
    _, first, _ = quick
    code, again = _run(capsys, "--quick", "--seed", "0", "--plain", "--no-plot", "--json",
                       os.devnull)
    assert code == 0
    drop_path = lambda s: "\n".join(l for l in s.splitlines() if "summary written" not in l)  # noqa: E731
    assert drop_path(again) == drop_path(first)


def test_rich_output_and_no_plot_backend(capsys, tmp_path):
    pytest.importorskip("rich")
    png = tmp_path / "demo.png"
    code, out = _run(capsys, "--steps", "30", "--no-color", "--plot", str(png))
    assert code == 0
    assert "Summary" in out and "Verdict" in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out and not png.exists()
    else:
        assert png.stat().st_size > 0


def test_nan_run_is_handled(capsys):
    # a violent initialisation and step size: the unclipped weights go NaN and the run stops
    code, out = _run(capsys, "--steps", "60", "--gain", "2.0", "--lr", "1.0", "--plain", "--no-plot")
    assert code == 0
    assert "stopped" in out.lower() or "nan" in out.lower()


def test_module_entry_point_outside_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "gradcore.demo", "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Verdict" in proc.stdout
    assert "No figure" in proc.stdout or (tmp_path / demo.FIGURE).exists()
