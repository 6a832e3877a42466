"""The tiling benchmark (seams, position bias, throughput) runs and reports sane numbers (timings are not asserted)."""

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_tiling_quick(checkpoints):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tiling.py"
    spec = importlib.util.spec_from_file_location("bench_tiling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick", "--repeat", "1", "--weights", str(checkpoints["v1.1"])])
    rows = {r["tiling"]: r for r in res["tilings"]}
    assert rows["w64-h0"]["tokens_per_patch_rel"] == 1.0
    assert rows["w64-h16 (old default)"]["tokens_per_patch_rel"] == pytest.approx(4.0)
    for r in res["tilings"]:
        assert r["pairs"][0] > 0 and r["pairs"][1] > 0 and r["seam_ratio"] > 0
        assert r["embed_over_bare"] > 0 and r["time_per_patch_rel"] > 0
        assert 0 <= r["pc1_position_share"] <= 1 and r["same_position_over_chance"] >= 0
    assert res["position"] == "neutral"
