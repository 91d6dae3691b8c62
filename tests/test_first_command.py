"""What a new user meets first: the installed `gradcore` command run from the repository
root (where Python would find the source tree's `gradcore/` before the installed package),
the demo's verdict and figure, and the message of an import from a tree with no build."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import gradcore.demo as demo

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _console_script() -> str:
    script = Path(sysconfig.get_path("scripts")) / "gradcore"
    found = str(script) if script.exists() else shutil.which("gradcore")
    assert found, "the `gradcore` console script is not installed (pip install . installs it)"
    return found


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _verdict(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("=> ")]


def test_console_script_from_repository_root(tmp_path):
    proc = subprocess.run([_console_script(), "demo", "--quick", "--plain", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "partially initialized" not in proc.stderr
    verdict = _verdict(proc.stdout)
    assert len(verdict) == 1 and verdict[0].startswith("=> Clipping cured it"), proc.stdout
    png = tmp_path / demo.FIGURE
    if _has_matplotlib():
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert f"figure written to {png}" in proc.stdout
    else:
        assert not png.exists() and "matplotlib is not installed" in proc.stdout


def test_figure_goes_to_the_current_directory_by_default(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--steps", "30", "--plain"]) == 0
    assert (tmp_path / demo.FIGURE).read_bytes()[:8] == PNG_SIGNATURE
    assert f"figure written to {tmp_path / demo.FIGURE}" in capsys.readouterr().out
    assert demo.main(["--steps", "30", "--plain", "--no-plot"]) == 0
    assert "figure" not in capsys.readouterr().out


@pytest.mark.parametrize("where, hint", [("checkout", 'pip install ".[plot]"'),
                                         ("elsewhere", "pip install matplotlib")])
def test_without_matplotlib_the_demo_names_the_command_that_adds_it(where, hint, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    monkeypatch.chdir(ROOT if where == "checkout" else tmp_path)
    out_dir = tmp_path / "out"
    assert demo.main(["--steps", "30", "--plain", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert f"No figure: matplotlib is not installed. {hint} adds it" in out
    assert _verdict(out)
    assert not (out_dir / demo.FIGURE).exists() and (out_dir / "summary.json").exists()


def _copy_of_the_package(dest: Path) -> None:
    shutil.copytree(ROOT / "gradcore", dest / "gradcore",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))


def _import_error(cwd: Path) -> str:
    # -S: no site-packages, so neither an installed gradcore nor a developer install's
    # import hook can answer; the directory Python starts in is the only place to look.
    proc = subprocess.run([sys.executable, "-S", "-c", "import gradcore"], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "partially initialized" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_import_from_a_source_tree_without_a_build_says_what_to_do(tmp_path):
    _copy_of_the_package(tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "csrc").mkdir()
    message = _import_error(tmp_path)
    assert message.startswith("ImportError: gradcore was imported from its source tree")
    assert str(tmp_path / "gradcore") in message
    assert "Run Python from another directory" in message
    assert "pip install --no-build-isolation -e ." in message


def test_import_of_an_incomplete_installation_says_so(tmp_path):
    _copy_of_the_package(tmp_path)
    message = _import_error(tmp_path)
    assert message.startswith("ImportError: gradcore's compiled extension gradcore._core is "
                              "missing")
    assert "reinstall it" in message
