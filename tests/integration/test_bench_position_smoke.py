"""The position benchmark runs end to end (spectral baseline only, quick) and reports every target's number."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "worldcereal-training").exists(), reason="no shared data")
def test_bench_position_quick_spectral():
    spec = importlib.util.spec_from_file_location("bench_position", ROOT / "benchmarks" / "bench_position.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick", "--repeat", "1", "--models", "spectral"])
    (row,) = res["rows"]
    assert row["model"] == "spectral" and row["position"] == "raw"
    # no context: every crop gives the same vectors (its 16-patch windows leave no position statistic on 25 x 25)
    assert row["crop"]["all_overlap_mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert row["cost"]["tokens_ratio"] == pytest.approx(1.0)
    assert len(row["fewshot_balanced_accuracy_folds"]) == 5 and 0 < row["fewshot_balanced_accuracy"] < 1
