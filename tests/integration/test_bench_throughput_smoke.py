"""The throughput benchmark runs end to end and writes a stamped result (timings are not asserted)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_throughput_quick(tmp_path):
    pytest.importorskip("olmoearth_pretrain_minimal")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_throughput.py"
    spec = importlib.util.spec_from_file_location("bench_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "throughput.json"
    res = mod.main(["--quick", "--device", "cpu", "--json", str(out)])
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"olmoearth-v1-nano", "olmoearth-v1.1-nano"}  # both ran, none skipped
    assert all(math.isfinite(r["img_per_s"]) and r["img_per_s"] > 0 and r["images"] >= 1 for r in rows.values())
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))  # the file holds what was printed
    assert {"date", "command", "machine", "load_avg_at_end"} <= set(saved["run"])  # a doc's number is traceable
