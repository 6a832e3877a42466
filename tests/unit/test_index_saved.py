"""The index of a store: built once (counted), saved beside it, reopened without a rebuild, invalidated
when the store changes, built ahead by ``eoembed index STORE``; the explorer says what a build costs
before it runs, and a cube too large for a direct overview says so."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402,F401
import eoembed.index as index_mod  # noqa: E402
from eoembed.index.saved import index_path, store_index  # noqa: E402
from eoembed.io import open_embeddings, store_fingerprint, to_zarr  # noqa: E402


@pytest.fixture
def builds(monkeypatch):
    calls = []
    real = index_mod.build_index
    monkeypatch.setattr(index_mod, "build_index", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _store(tmp_path, seed=3, name="s.zarr"):
    emb, _ = make_emb(40, 50, 16, block=10, seed=seed)
    path = tmp_path / name
    to_zarr(emb.chunk({"y": 20, "x": 25}), path, progress=False, overwrite=True)
    return path


def _centre(emb, r, c):
    return float(emb.x[c]), float(emb.y[r])


def test_saved_index_is_reopened_without_a_rebuild(tmp_path, builds):
    path = _store(tmp_path)
    emb = open_embeddings(path)
    idx = emb.eo.index()
    assert builds == [1] and idx.tuning["build"] == "built"
    assert (index_path(path) / "store.json").is_file() and index_path(path).name == "s.zarr.index"
    again = open_embeddings(path).eo.index()  # a new session
    assert builds == [1] and again.tuning["build"] == "loaded"
    p = _centre(emb, 5, 7)
    assert list(again.search(point=p, k=5)["id"]) == list(idx.search(point=p, k=5)["id"])
    # the similarity map of a loaded index reads the store (not only the stored vectors)
    np.testing.assert_allclose(again.similarity_map(point=p).values, idx.similarity_map(point=p).values, atol=1e-6)
    # other build options: another index
    with pytest.warns(UserWarning, match="other options"):
        open_embeddings(path).eo.index(kind="hnsw")
    assert builds == [1, 1]


def test_changed_store_invalidates_its_index(tmp_path, builds):
    path = _store(tmp_path, seed=3)
    open_embeddings(path).eo.index()
    before = store_fingerprint(path)
    _store(tmp_path, seed=4)  # the store re-written with other vectors
    assert store_fingerprint(path)["sha256"] != before["sha256"]
    with pytest.warns(UserWarning, match="store changed since its index was built.*rebuilding"):
        idx = open_embeddings(path).eo.index()
    assert builds == [1, 1] and idx.tuning["build"] == "built"
    assert open_embeddings(path).eo.index().tuning["build"] == "loaded" and builds == [1, 1]


def test_plain_store_fingerprint_follows_its_files(tmp_path):
    from eoembed.io import save_embeddings

    emb, _ = make_emb(10, 12, 4, seed=1)
    emb = emb.rename("embeddings")
    path = save_embeddings(emb, tmp_path / "p.zarr")
    fp = store_fingerprint(path)
    assert fp["kind"] == "files" and store_fingerprint(path) == fp
    save_embeddings(emb * 2, path, overwrite=True)
    assert store_fingerprint(path)["sha256"] != fp["sha256"]


def test_cli_index_builds_ahead_and_explore_reuses_it(tmp_path, builds, capsys):
    from eoembed.cli import main
    from eoembed.explore.state import ExplorerState

    path = _store(tmp_path)
    assert main(["index", str(path)]) == 0
    assert "built in" in capsys.readouterr().out and builds == [1]
    assert main(["index", str(path)]) == 0
    assert "loaded" in capsys.readouterr().out and builds == [1]
    emb = open_embeddings(path)
    s = ExplorerState(emb, scatter=None)
    assert "Search index loaded" in s.notes.status and "index_load" in s.timings
    s.click(*_centre(emb, 3, 4))
    assert builds == [1]


def test_first_click_says_what_it_builds_before_building(tmp_path, builds):
    from eoembed.explore.state import ExplorerState

    path = _store(tmp_path)
    emb = open_embeddings(path)
    s = ExplorerState(emb, scatter=None)
    said = []
    s.notes.listen(lambda text, error: said.append(text))
    calls_when_said = []
    real = index_mod.build_index
    index_mod.build_index = lambda *a, **k: calls_when_said.append(list(said)) or real(*a, **k)
    try:
        s.click(*_centre(emb, 3, 4))
    finally:
        index_mod.build_index = real
    assert calls_when_said and "Building the search index of 2,000 patches" in calls_when_said[0][0]
    assert "about" in calls_when_said[0][0] and str(index_path(path)) in calls_when_said[0][0]
    assert any(t.startswith("Search index built in") for t in said)
    assert "index_build" in s.timings and index_path(path).is_dir()


def test_too_large_cube_says_so_and_points_at_the_pyramid(tmp_path):
    from eoembed.explore.state import ExplorerState

    path = _store(tmp_path)
    emb = open_embeddings(path)

    class Tiny(ExplorerState):
        READ_BYTES_PER_S = 1000.0  # 2,000 × 16 float32 = 128 kB → 128 s

    with pytest.warns(UserWarning, match=r"too large for a direct overview.*about 128 s.*write_pyramid.*pyramid=True"):
        s = Tiny(emb, scatter=None)
    assert "too large for a direct overview" in s.notes.status
    from eoembed.io import write_pyramid

    write_pyramid(emb, f"{path}.pyramid", min_side=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        s = Tiny(emb, scatter=None)  # the pyramid beside the store is found
    assert s.grid.stride >= 1 and len(s.grid.levels) > 1
