"""`gradcore bench compare` on small synthetic runs, the rule that a measured time may
not beat its limit beyond the limit's spread, and the FMA probe behind that limit."""

import json

import pytest

from bench_runs import case as _case, run as _run, timing as _timing
from gradcore.bench import compare as cmp
from gradcore.bench.common import CaseResult, PeerResult
from gradcore.bench.timing import Timing


OLD = _run([_case("1a", (1.00, 1.02), (2.0, 2.1)),      # unchanged within the spread
            _case("1b", (1.00, 1.01), (2.0, 2.02)),     # slower beyond the spread
            _case("1c", (1.00, 1.01), (2.0, 2.02)),     # faster beyond the spread
            _case("1d", (1.00, 1.01), (2.0, 2.02)),     # other data: not compared
            _case("1e", (1.00, 1.01), (2.0, 2.02))])    # gone in NEW
NEW = _run([_case("1a", (1.01, 1.03), (2.2, 2.3)),
            _case("1b", (1.30, 1.32), (2.2, 2.22)),
            _case("1c", (0.50, 0.51), (2.0, 2.02)),
            _case("1d", (1.00, 1.01), (2.0, 2.02), data="256³ f32"),
            _case("1f", (1.00, 1.01), (2.0, 2.02))], fma_samples=(120.0, 118.0))


def test_compare_computes_the_ratios_and_flags_changes_beyond_the_spread():
    by_key = {c.key: c for c in cmp.compare(OLD, NEW)}
    a, b, c = by_key["1a"], by_key["1b"], by_key["1c"]
    assert a.ratio == pytest.approx(1.01) and a.flag == ""
    assert a.peers == {"numpy": pytest.approx(1.1)}          # the skipped torch has no ratio
    assert a.vs_peers == pytest.approx(1.01 / 1.1)           # gradcore alone, drift removed
    assert b.ratio == pytest.approx(1.3) and b.flag == "slower"
    assert c.ratio == pytest.approx(0.5) and c.flag == "faster"
    assert by_key["1d"].ratio is None and by_key["1d"].flag.startswith("not compared")
    assert by_key["1e"].flag == "only in OLD" and by_key["1f"].flag == "only in NEW"


def test_a_change_inside_either_runs_spread_is_not_flagged():
    # NEW's best (1.04) lies inside OLD's best .. median (1.00 .. 1.05)
    assert cmp.change(_timing(1.00, 1.05), _timing(1.04, 1.06)) == (pytest.approx(1.04), "")
    # with no spread measured, the noise floor still covers a 0.5 % change
    assert cmp.change(_timing(1.0), _timing(1.005))[1] == ""
    assert cmp.change(_timing(1.0), _timing(1.03))[1] == "slower"
    assert cmp.change(None, _timing(1.0)) == (None, "")


def test_compare_limits_shows_the_machine_moving():
    [(name, old, new, ratio, flag)] = cmp.compare_limits(OLD, NEW)
    assert "FMA avx2 float32" in name and (old, new) == (100.0, 120.0)
    assert ratio == pytest.approx(1.2) and flag == "higher"


def test_compare_command_prints_the_table_and_checks(tmp_path, capsys):
    old, new, out = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "cmp.json"
    old.write_text(json.dumps(OLD))
    new.write_text(json.dumps(NEW))
    from gradcore.bench import main
    assert main(["compare", str(old), str(new), "--plain", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1.300" in text and "slower" in text and "faster" in text
    assert "1 slower, 1 faster beyond the spread, of 3 compared" in text
    written = json.loads(out.read_text())
    assert {c["key"]: c["flag"] for c in written["cases"]}["1b"] == "slower"
    assert main(["compare", str(old), str(new), "--plain", "--check"]) == 1
    assert main(["compare", str(old), str(old), "--plain", "--check"]) == 0
    (tmp_path / "bad.json").write_text("{}")
    assert main(["compare", str(old), str(tmp_path / "bad.json")]) == 2


def _limited_case(limit_time, spread, gc_best, peer_best):
    return CaseResult(suite="s", key="1", name="n", data="d",
                      gradcore=Timing(best=gc_best, median=gc_best, inner=1, samples=[gc_best]),
                      peers=[PeerResult("numpy", "np()",
                                        Timing(best=peer_best, median=peer_best, inner=1,
                                               samples=[peer_best]))],
                      limit_name="read", limit_time=limit_time, limit_spread=spread,
                      limit_target=0.5)


def test_a_time_that_beats_its_limit_beyond_the_spread_says_the_limit_is_wrong():
    assert _limited_case(1.0, 0.05, 1.1, 2.0).limit_beaten_by == []
    # 4 % faster than the limit, inside its 5 % spread: at the limit, and a verdict
    at_limit = _limited_case(1.04, 0.05, 1.0, 2.0)
    assert at_limit.limit_beaten_by == [] and at_limit.limit_passed is True
    # 10 % faster than the limit: the limit is wrong, no verdict on it
    wrong = _limited_case(1.1, 0.05, 1.0, 0.9)
    assert wrong.limit_beaten_by == ["gradcore", "numpy"] and wrong.limit_passed is None
    assert wrong.to_dict()["limit"]["beaten_by"] == ["gradcore", "numpy"]


def test_the_fma_probe_measures_a_positive_rate_on_the_librarys_threads():
    from gradcore import _core
    for dtype in ("float32", "float64"):
        assert _core._fma_probe(dtype, 1000) > 0
    with pytest.raises(ValueError):
        _core._fma_probe("float16", 1000)
    with pytest.raises(ValueError):
        _core._fma_probe("float32", 0)
