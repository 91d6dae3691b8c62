"""``gradcore demo --deep``: the five runs show explosion through depth and its cures,
the output is deterministic, the figure is written, and without scikit-learn the demo
says how to get it."""

import contextlib
import io
import json

import pytest

import gradcore.demo as demo

pytest.importorskip("sklearn")


def run(*argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = demo.main(["--deep", *argv])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    path = tmp_path_factory.mktemp("deep") / "summary.json"
    code, out = run("--plain", "--no-plot", "--json", str(path))
    return code, out, json.loads(path.read_text())


def ratio(run_summary, step="0"):
    norms = run_summary["layer_grad_norms"][step]
    return norms[0] / norms[-1]


def test_default_run_shows_the_explosion_and_the_cures(default):
    code, out, s = default
    assert code == 0
    assert list(s) == ["plain", "He + ReLU", "+ batch norm", "+ residual", "+ clipping"]
    plain, he, bn, res, clipped = s.values()
    assert ratio(plain) > 1e6                 # explodes through depth at the start
    assert ratio(bn) > 100                    # batch norm alone: still growing towards the input
    assert 0.1 < ratio(he) < 10 and 0.1 < ratio(res) < 10
    assert plain["test_accuracy"] < 0.3 and he["test_accuracy"] < 0.5 and bn["test_accuracy"] < 0.5
    assert res["test_accuracy"] > 0.85 and clipped["test_accuracy"] > 0.85
    assert clipped["max_grad_norm"] < res["max_grad_norm"]
    assert sum(plain["event_counts"].values()) >= 1
    for text in ("Weight gradient norm per layer at step 0", "Summary", "Verdict", "=> The cures together"):
        assert text in out


def test_deterministic_small_run(tmp_path):
    args = ("--depth", "4", "--width", "16", "--steps", "25", "--plain", "--no-plot", "--seed", "3")
    code, first = run(*args)
    assert code == 0
    assert run(*args) == (code, first)


def test_figure_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    code, out = run("--depth", "3", "--steps", "12", "--out", str(tmp_path), "--plain")
    assert code == 0
    assert (tmp_path / "gradcore-demo-deep.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "summary.json").read_text())["plain"]["steps_run"] == 12


def test_without_scikit_learn_it_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)
    assert demo.main(["--deep", "--no-plot"]) == 1
    assert "scikit-learn" in capsys.readouterr().err


def test_bad_arguments():
    with pytest.raises(SystemExit):
        run("--depth", "0")
    with pytest.raises(SystemExit):
        run("--lr", "-1")
