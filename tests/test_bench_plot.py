"""`gradcore bench --plot` on a small synthetic run."""

import pytest

from bench_runs import case as _case, run as _run


def test_plot_writes_one_row_per_suite_with_speedups_and_fractions(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from gradcore.bench import plot

    saved = {}
    real_savefig = Figure.savefig

    def spy(fig, path, *a, **kw):
        saved["axes"] = fig.axes
        return real_savefig(fig, path, *a, **kw)

    run = _run([_case("1a", (1.0,), (2.0,)), _case("1b", (1.0,), (3.0,), fraction=1.2,
                                                   beaten=("gradcore",))])
    path = tmp_path / "bench.png"
    Figure.savefig = spy
    try:
        assert plot.plot_run(run, str(path)) == f"wrote {path}"
    finally:
        Figure.savefig = real_savefig
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    speed, limit = saved["axes"][:2]
    assert speed.get_title() == "dense: speed-up over peers" and speed.get_yscale() == "log"
    assert [t.get_text() for t in speed.get_xticklabels()] == ["1a", "1b"]
    heights = sorted(round(p.get_height(), 6) for p in speed.patches)
    assert heights == [2.0, 3.0]                              # numpy only: torch was skipped
    assert limit.get_title() == "dense: fraction of the limit"
    assert [round(p.get_height()) for p in limit.patches] == [50, 100]   # capped, not 120 %
    assert "limit wrong" in [t.get_text() for t in limit.texts]


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch, tmp_path):
    import builtins

    from gradcore.bench import plot

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    note = plot.plot_run(_run([_case("1a", (1.0,), (2.0,))]), str(tmp_path / "x.png"))
    assert note.startswith("No figure") and "pip install matplotlib" in note
    assert not (tmp_path / "x.png").exists()
