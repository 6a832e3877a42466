"""The tiling sweep measures cost and quality per tiling and applies its choice rule (timings not asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_tiling_sweep", BENCH / "bench_tiling_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_sweep_finds_hard_window_borders_and_picks_a_tiling_without_them(tmp_path):
    mod = _load()
    out = tmp_path / "sweep.json"
    res = mod.main(["--quick", "--models", "olmoearth-v1.1-nano", "--tilings", "w12-h0,w12-h1-blend",
                    "--json", str(out)])
    m = res["models"][0]
    rows = {r["label"]: r for r in m["rows"]}
    hard, blend = rows["w12-h0"], rows["w12-h1-blend"]
    # the seam null: hard window borders stand out above every shifted lattice, a blended halo's do not
    assert hard["seams_visible"] and hard["seam_ratio"] > hard["seam_null_max"]
    assert not blend["seams_visible"] and blend["seam_ratio"] <= blend["seam_null_max"]
    # cost: the same encoder GMACs per km² for hard windows of a stride and the blended window of that core
    assert blend["over_hard_gmacs"] == pytest.approx((12 / 10) ** 2, rel=0.5) and blend["over_hard_gmacs"] > 1.2
    assert hard["over_hard_gmacs"] == pytest.approx(1.0)
    assert len(blend["fold_balanced_accuracy"]) == 5 and 0 <= blend["balanced_accuracy"] <= 1
    assert m["choice"]["label"] == "w12-h1-blend"  # the only one without visible seams
    assert json.loads(out.read_text())["models"][0]["choice"] == m["choice"]


def test_choice_rule_takes_the_cheapest_passing_tiling():
    mod = _load()

    def row(label, gmacs, seams=False, hits=0.5, worse=False, ratio=1.0, position="neutral"):
        return {"label": label, "gmacs_per_km2": gmacs, "s_per_km2": gmacs / 100, "seams_visible": seams,
                "seam_ratio": ratio, "same_position_over_chance": hits, "worse_than_best": worse,
                "position": position}

    rows = [row("cheap-seams", 10, seams=True), row("cheap-biased", 11, hits=3.0), row("cheap-worse", 12, worse=True),
            row("unmeasured", 13, ratio=float("nan")), row("raw", 5, position="raw"), row("ok", 20), row("dear", 40)]
    assert mod.choose(rows, learned=True)["label"] == "ok"
    assert mod.choose(rows, learned=False)["label"] == "cheap-worse"  # random weights: accuracy is not evidence
    assert mod.choose([row("s", 1, seams=True)], learned=True) is None
