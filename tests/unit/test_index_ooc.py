"""Out-of-core index: trained on a sample, filled chunk by chunk, recall measured against exact search."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

from eoembed.exceptions import EmptyDataError, ParameterError  # noqa: E402
from eoembed.index import build_index  # noqa: E402
from eoembed.index.ooc import build_index_ooc  # noqa: E402


@pytest.fixture(scope="module")
def emb():
    return make_emb(120, 100, 16, seed=2, nan_frac=0.03, chunks={"y": 30, "x": 100})[0]


def test_ooc_index_matches_exact_search_and_states_its_recall(emb):
    import dask

    reads = []

    def count(*a, **k):  # every compute is one row of chunks: memory stays bounded
        reads.append(1)

    idx = build_index_ooc(emb, seed=0, n_queries=100)
    flat = build_index(emb, kind="flat")
    assert idx.ntotal == flat.ntotal and idx.key.startswith("IVF") and idx.key.endswith(",Flat")
    assert idx.tuning["out_of_core"] and idx.tuning["recall@10"] >= 0.95
    np.testing.assert_array_equal(idx.entries_table.row, flat.entries_table.row)  # same ids, same places
    np.testing.assert_array_equal(idx.entries_table.col, flat.entries_table.col)
    rng = np.random.default_rng(1)
    got = []
    for r, c in zip(rng.integers(0, 120, 30), rng.integers(0, 100, 30)):
        if not np.isfinite(emb.values[:, r, c]).all():
            continue
        p = (float(emb.x[c]), float(emb.y[r]))
        a, b = idx.search(point=p, k=10), flat.search(point=p, k=10)
        got.append(len(set(a["id"]) & set(b["id"])) / 10)
    assert np.mean(got) >= 0.9
    with dask.config.set(scheduler="sync"):
        with dask.callbacks.Callback(pretask=None, posttask=None, start=count):
            build_index_ooc(emb, seed=0, n_queries=20, key="IVF16,Flat")
    assert len(reads) == 2 * 4  # two passes × four rows of chunks


def test_ooc_index_codes_follow_the_memory_budget_and_a_missed_target_warns(emb):
    small = build_index_ooc(emb, max_memory=100_000, n_queries=50)  # 12,000 × 16 × 4 B do not fit
    assert small.key.endswith(",SQ8") and small.tuning["recall@10"] > 0.5
    with pytest.warns(UserWarning, match="recall@10"):
        coarse = build_index_ooc(emb, key="IVF16,PQ2", target_recall=0.999, n_queries=50)
    assert coarse.tuning["recall@10"] < 0.999 and coarse.tuning["nprobe"] == 16


def test_ooc_index_errors_are_typed(emb):
    with pytest.raises(ParameterError, match="IVF key"):
        build_index_ooc(emb, key="HNSW32")
    with pytest.raises(ParameterError, match="target_recall"):
        build_index_ooc(emb, target_recall=1.5)
    with pytest.raises(EmptyDataError, match="no valid patch"):
        build_index_ooc(emb.where(emb > 1e9), key="IVF16,Flat")
