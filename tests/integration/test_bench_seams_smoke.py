"""The seam/throughput benchmark runs and reports sane numbers (timings are not asserted)."""

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_seams_quick(checkpoints):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_seams.py"
    spec = importlib.util.spec_from_file_location("bench_seams", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick", "--weights", str(checkpoints["v1.1"])])
    for key in ("seams_halo0", "seams_default"):
        assert res[key]["pairs"][0] > 0 and res[key]["pairs"][1] > 0
        assert 0 < res[key]["in_tile"] < 2 and 0 < res[key]["cross_tile"] < 2
    assert res["throughput"]["ratio_bare_over_embed"] > 0
