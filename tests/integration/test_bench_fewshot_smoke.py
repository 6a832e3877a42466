"""Smoke-run benchmarks/bench_fewshot_worldcereal.py --quick on the real labelled sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "worldcereal-training"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason=f"labelled WorldCereal sample not found at {DATA}")
def test_bench_fewshot_quick(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "fewshot.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_fewshot_worldcereal.py"), "--quick",
                        "--json", str(out)], capture_output=True, text=True, timeout=540, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = {row["model"]: row for row in res["rows"]}
    assert res["quick"] is True and {"majority", "spectral"} <= set(rows)
    n_classes = len(res["classes"])
    # a constant predictor (per fold) gets about one class right: balanced accuracy near 1/K
    assert rows["majority"]["balanced_accuracy"] == pytest.approx(1 / n_classes, abs=0.1)
    # every registered model with weights has a row or a stated reason for being skipped
    for name in ("galileo-nano", "presto"):
        assert (name in rows) != (name in res["skipped"]), name
    for row in rows.values():
        assert 0.0 <= row["balanced_accuracy"] <= 1.0 and row["n_samples"] == rows["majority"]["n_samples"]
    assert "majority-class rate" in r.stdout and "bal.acc spatial" in r.stdout
