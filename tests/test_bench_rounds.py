"""The benchmark harness measures every case in rounds of gradcore then its peers and
keeps the best of all rounds (a slow spell of a shared machine then hits every library,
not only the one timed during it)."""

import numpy as np

from gradcore.bench.common import Context, SuiteResult, merge_timings, time_case
from gradcore.bench.timing import Timing


def test_merge_timings_keeps_the_best_and_every_sample():
    a = Timing(best=2.0, median=3.0, inner=4, samples=[2.0, 3.0, 4.0])
    b = Timing(best=1.5, median=5.0, inner=8, samples=[5.0, 1.5])
    m = merge_timings(a, b)
    assert m.best == 1.5 and m.inner == 8
    assert sorted(m.samples) == [1.5, 2.0, 3.0, 4.0, 5.0] and m.median == 3.0
    assert merge_timings(None, a) is a and merge_timings(a, None) is a
    assert merge_timings(None, None) is None


def _context(rounds):
    import gradcore
    return Context(gradcore=gradcore, np=np, torch=None, torch_note="no torch", quick=True,
                   repeat=2, min_time=1e-4, machine=None, log=lambda _msg: None, rounds=rounds)


def test_time_case_alternates_gradcore_and_peers_for_each_round():
    order = []
    suite = SuiteResult("t", "test")
    res = time_case(_context(3), suite, "1a", "case", "data", "gc()", lambda: order.append("gc"),
                    [("numpy", "np()", lambda: order.append("np"), 1.0, False),
                     ("torch", "torch()", None, 2.0, True),      # needs torch: skipped with a note
                     ("other", "other()", None, None, False)])   # no callable: not available
    # Each round times gradcore's calls, then numpy's: the first numpy call comes after
    # gradcore's first batch and the last gradcore call after a numpy call.
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert switches == 2 * 3 - 1
    assert res.gradcore is not None and res.gradcore.repeat == 3 * 2
    numpy_peer, torch_peer, other = res.peers
    assert numpy_peer.timing.repeat == 3 * 2 and numpy_peer.note == ""
    assert torch_peer.timing is None and torch_peer.note == "no torch"
    assert other.timing is None and other.note == "not available"
    assert suite.cases == [res]


def test_a_failing_gradcore_call_is_reported_and_peers_are_not_timed():
    calls = []

    def boom():
        raise RuntimeError("kaput")

    res = time_case(_context(2), SuiteResult("t", "test"), "1a", "case", "data", "gc()", boom,
                    [("numpy", "np()", lambda: calls.append(1), 1.0, False)])
    assert res.gradcore is None and "kaput" in res.check
    assert calls == [] and res.peers[0].note == "gradcore failed"
