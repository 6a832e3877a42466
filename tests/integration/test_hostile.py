"""The hostile battery (benchmarks/hostile_battery.py, issue 17): no wrong-silent result, no untyped crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_hostile_battery(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("geopandas")
    out = tmp_path / "battery.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hostile_battery.py"), "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    res = json.loads(out.read_text())
    assert res["cases"] >= 40
    assert res["counts"]["wrong-silent"] == 0 and res["counts"]["untyped crash"] == 0, r.stdout[-3000:]
    assert not res["not_as_expected"], r.stdout[-3000:]
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_hostile_surfaces(tmp_path):
    """benchmarks/hostile_surfaces.py (issue 27): ≥ 80 cases over the newer surfaces, none untyped or wrong-silent."""
    pytest.importorskip("faiss")
    pytest.importorskip("geopandas")
    pytest.importorskip("ipyleaflet")
    out = tmp_path / "surfaces.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hostile_surfaces.py"), "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    res = json.loads(out.read_text())
    assert res["cases"] >= 80
    assert sum(r["expect"] != "error" for r in res["rows"]) >= 20  # the legitimate cases
    assert res["counts"]["wrong-silent"] == 0 and res["counts"]["untyped crash"] == 0, r.stdout[-3000:]
    assert not res["not_as_expected"], r.stdout[-3000:]
    assert r.returncode == 0, r.stderr[-2000:]
