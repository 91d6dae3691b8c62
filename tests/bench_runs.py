"""Small synthetic runs of the benchmark harness, shaped like its --json output, for the
tests of `bench compare` and `--plot`."""


def timing(best, median=None):
    median = best if median is None else median
    return {"best_s": best, "median_s": median, "inner": 1, "repeat": 3,
            "samples_s": [best, median, median]}


def case(key, gc, numpy, data="64³ f32", fraction=0.5, spread=0.02, target=1.0, beaten=()):
    return {"suite": "dense", "key": key, "name": "matmul", "data": data, "params": {},
            "gradcore": {"code": "gc()", **timing(*gc)},
            "peers": {"numpy": {"code": "np()", "skipped": False, "note": "",
                                "timing": timing(*numpy), "ratio": numpy[0] / gc[0],
                                "target": target, "pass": numpy[0] / gc[0] >= target},
                      "torch": {"code": "t()", "skipped": True, "note": "--no-torch",
                                "timing": None, "ratio": None, "target": None, "pass": None}},
            "check": "ok", "notes": [],
            "limit": {"name": "FMA f32", "bytes": None, "time_s": fraction * gc[0],
                      "fraction": fraction, "target": None, "pass": None, "spread": spread,
                      "beaten_by": list(beaten), "probes": None}}


def run(cases, fma_samples=(100.0, 99.0)):
    return {"schema": "gradcore-bench/2", "time": "t", "options": {"quick": True},
            "environment": {"gradcore": {"version": "0", "isa": "avx2", "threads": 2},
                            "cpu": {"model": "test cpu"}},
            "machine": {"fma": {"isa": "avx2", "probes": [
                {"isa": "avx2", "dtype": "float32", "GFLOPs": max(fma_samples),
                 "samples_GFLOPs": list(fma_samples)}]}},
            "suites": [{"name": "dense", "description": "d", "cases": cases, "notes": [],
                        "error": ""}]}
