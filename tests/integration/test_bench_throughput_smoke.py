"""The throughput benchmark runs and its units agree (timings are not asserted)."""

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_throughput_quick():
    pytest.importorskip("olmoearth_pretrain_minimal")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_throughput.py"
    spec = importlib.util.spec_from_file_location("bench_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick", "--device", "cpu"])
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"olmoearth-v1-nano", "olmoearth-v1.1-nano"}
    for r in rows.values():
        assert r["images"] == 4 and r["img_per_s"] > 0
        # one image is 128 x 128 px at 10 m = 1.6384 km²; 16 x 16 patches at p=8
        assert r["km2_per_s"] == pytest.approx(r["img_per_s"] * 1.6384)
        assert r["patches_per_s"] == pytest.approx(r["img_per_s"] * 256)
    assert rows["olmoearth-v1-nano"]["v1.1_speedup"] == pytest.approx(
        rows["olmoearth-v1.1-nano"]["img_per_s"] / rows["olmoearth-v1-nano"]["img_per_s"])
