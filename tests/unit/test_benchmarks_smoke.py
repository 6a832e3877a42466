"""Smoke-run benchmarks/bench_search.py --quick (sizes scaled down; < 60 s on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_search_quick(tmp_path):
    pytest.importorskip("faiss")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_search.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["quick"] is True
    assert res["exact"]["topk_agreement"] == 1.0
    for row in res["ann"]:
        assert row["recall@10"] >= 0.95, row
    sim = res["similarity_map"]
    # chunk-wise: peak memory stays a few chunks (2 worker threads), far below the cube
    assert sim["peak_in_chunks"] < 8
    assert sim["peak_mb"] < sim["cube_gb"] * 1000 / 2
    assert "[similarity]" in r.stdout and "[exact]" in r.stdout and "[ann]" in r.stdout


def test_bench_overhead_bare_loop_equals_embed_and_reports_a_ratio():
    """benchmarks/bench_overhead.py: the bare encoder loop gives embed(halo=0)'s vectors (same work), and the
    row carries the ratio and the profile shares."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_overhead", ROOT / "benchmarks" / "bench_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (row,) = bench.run(["olmoearth-v1.1-nano"], windows=4, window=32, patch_size=8, times=1, repeat=1, profile=True)
    assert row["max_abs_diff"] == 0.0 and row["windows"] == 4
    assert row["ratio"] > 0 and 0 <= row["diagnostics_share"] < 1 and 0 <= row["outside_encoder_share"] < 1


def test_bench_gpu_dry_run_and_cpu_quick(tmp_path):
    """benchmarks/bench_gpu.py keeps working without a GPU: the plan in a dry run, one small model end to end on
    the CPU (same windows as the bare loop: equal vectors, a ratio), GPU-only figures None."""
    import importlib.util

    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    plan = bench.main(["--dry-run", "--device", "cpu"])
    assert plan["dry_run"] and {r["model"] for r in plan["rows"]} == set(bench.MODELS)
    assert all("planned" in r or "skipped" in r for r in plan["rows"])
    out = tmp_path / "gpu.json"
    res = bench.main(["--device", "cpu", "--quick", "--json", str(out)])
    (row,) = res["rows"]
    assert row["images_per_s"] > 0 and row["km2_per_s"] > 0 and row["peak_gpu_mib"] is None
    assert row["autocast"] is None and row["max_abs_diff"] == 0.0 and row["ratio"] > 0
    assert row["default_tiling"] == "w8-h1-blend" and row["default_km2_per_s"] > 0  # OlmoEarth's own default
    saved = json.loads(out.read_text())
    assert saved["run"]["machine"]["cores"] and saved["rows"][0]["model"] == "olmoearth-v1.1-nano"


def test_benchmark_weights_come_from_the_registry(tmp_path, monkeypatch):
    """bench_overhead and bench_throughput take each model's weights from one helper: the data registry
    (never downloading), a random checkpoint in the published layout for OlmoEarth, None otherwise."""
    import importlib.util

    from eoembed.data import registry

    spec = importlib.util.spec_from_file_location("_meta", ROOT / "benchmarks" / "_meta.py")
    meta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(meta)
    ck = meta.weights_for("olmoearth-v1.1-nano", tmp_path)
    assert ck is not None and ck.exists() and ck.is_relative_to(tmp_path)
    assert meta.weights_for("spectral", tmp_path) is None  # no weights in the registry
    shared = ROOT.parent / "shared" / "weights" / "galileo-nano"
    if shared.is_dir():
        assert meta.weights_for("galileo-nano", tmp_path) == registry.sample("galileo-nano", download=False)
    # neither a mirror nor the cache holds them: skipped (None), nothing downloaded
    monkeypatch.setenv("EOEMBED_DATA_MIRROR", "")
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(registry, "_download", lambda *a, **k: pytest.fail("weights_for must not download"))
    assert meta.weights_for("galileo-nano", tmp_path) is None
    for bench in ("bench_overhead.py", "bench_throughput.py"):
        src = (ROOT / "benchmarks" / bench).read_text()
        assert "_meta.weights_for(name, root)" in src and "def _weights" not in src and "make_checkpoint(" not in src
