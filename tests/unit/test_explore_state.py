"""The explorer's widget-free state: every action driven without ipywidgets, layers as data,
one resolve per click, the vectors read from the index, one job per class."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("geopandas")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

from eoembed.exceptions import LabelError, ParameterError, QueryError  # noqa: E402
from eoembed.explore.model import ColorBar, Legend, Raster  # noqa: E402
from eoembed.explore.state import ExplorerState  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WIDGET_LIBS = ("ipywidgets", "ipyleaflet", "leafmap", "bqplot", "traitlets")


@pytest.fixture(scope="module")
def emb_truth():
    return make_emb(40, 50, 16, block=10, seed=3)


def _centre(emb, r, c):
    return float(emb.x[c]), float(emb.y[r])


def test_the_state_runs_a_whole_session_in_a_process_without_widget_libraries(tmp_path):
    """Import, click, label, train, threshold, session: ipywidgets & co. are never imported."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from _embfixtures import make_emb
        from eoembed.explore.state import ExplorerState
        emb, truth = make_emb(30, 30, 8, block=10, seed=1)
        st = ExplorerState(emb, k=5)
        hits = st.click(float(emb.x[4]), float(emb.y[3]))
        for r, c in [(2, 2), (5, 25), (25, 5), (15, 15), (28, 28), (3, 14), (14, 3), (22, 22)]:
            st.label(float(emb.x[c]), float(emb.y[r]), "c%d" % truth.values[r, c])
        clf = st.train()
        n = st.set_threshold(0.9)
        st.save_session({str(tmp_path / "s.json")!r})
        st2 = ExplorerState(emb, k=5)
        st2.load_session({str(tmp_path / "s.json")!r})
        print(json.dumps({{"hit": [int(hits["row"].iloc[0]), int(hits["col"].iloc[0])],
                           "layers": list(st.scene.layers), "matches": n,
                           "restored": [list(st2.hits["id"]) == list(hits["id"]), st2.threshold,
                                        st2.classifier is not None, len(st2.labels)],
                           "widgets": sorted(m for m in {WIDGET_LIBS!r} if m in sys.modules)}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["widgets"] == []
    assert out["hit"] == [3, 4]
    assert out["layers"] == ["PCA-RGB", "similarity", "probability", "class", "matches"]
    assert out["matches"] > 0 and out["restored"] == [True, 0.9, True, 8]


def test_click_returns_data_and_puts_layers_as_data_in_the_scene(emb_truth):
    emb = emb_truth[0]
    st = ExplorerState(emb, k=7, scatter=None)
    p = _centre(emb, 12, 31)
    hits = st.click(*p)
    ref = st.index.search(point=p, k=7)
    assert list(hits["id"]) == list(ref["id"]) and np.allclose(hits["score"], ref["score"], atol=1e-6)
    sim = st.scene.layers["similarity"]
    assert isinstance(sim, Raster) and sim.palette.shape == (256, 4) and sim.image.shape == (40, 50)
    np.testing.assert_allclose(sim.data.values, st.index.similarity_map(point=p).values, atol=1e-6)
    assert sim.bounds == st.grid.warp.bounds  # drawn on the display grid's warp
    bar = st.scene.controls["similarity"]
    assert isinstance(bar, ColorBar) and bar.caption == "cosine similarity"
    assert bar.vmax >= float(np.nanmax(sim.data.values)) and bar.vmax == round(bar.vmax, 3)
    feats = st.scene.markers["hits"]["features"]
    assert len(feats) == 7 + 1 and feats[0]["properties"]["style"]["fillColor"] == "#ff00ff"
    st.clear()
    assert st.hits is None and "similarity" not in st.scene.layers and "similarity" not in st.scene.controls
    assert st.scene.markers["hits"]["features"] == []


def test_a_query_that_cannot_be_resolved_changes_nothing(emb_truth):
    emb = emb_truth[0].copy(data=emb_truth[0].values.copy())
    emb.values[:, 5, 5] = np.nan  # a masked patch
    st = ExplorerState(emb, k=5, scatter=None)
    st.click(*_centre(emb, 20, 20))
    before = list(st.hits["id"])
    with pytest.raises(QueryError, match="masked"):
        st.click(*_centre(emb, 5, 5), refine=True)
    assert st.search.positives == [_centre(emb, 20, 20)] and list(st.hits["id"]) == before
    with pytest.raises(QueryError, match="outside"):
        st.click(0.0, 0.0)


def test_one_resolve_per_click_and_no_read_of_the_cube(emb_truth, monkeypatch):
    """A click locates its patch once (the index's look-up) and reads its vector from the index: with the
    index built, a click on a dask cube computes nothing."""
    import dask

    from eoembed.index.entries import EntryTable

    emb = emb_truth[0].chunk({"y": 10, "x": 10})
    st = ExplorerState(emb, k=5)  # with the embedding scatter: its query point comes from the same vector
    st.index  # built once
    calls = []
    real = EntryTable.ids_at
    monkeypatch.setattr(EntryTable, "ids_at", lambda self, *a: calls.append(1) or real(self, *a))
    computed = []

    class Count(dask.callbacks.Callback):
        def _start(self, dsk):
            computed.append(len(dsk))

    with Count():
        hits = st.click(*_centre(emb, 12, 31))
    assert calls == [1] and computed == []
    assert (hits["row"].iloc[0], hits["col"].iloc[0]) == (12, 31)
    assert st.scatter.query_xy is not None
    calls.clear()
    st.click(*_centre(emb, 30, 3), refine=True)  # two examples: two look-ups, still one resolve
    assert calls == [1, 1]


def test_the_display_grid_is_the_cube_itself_when_it_fits(emb_truth):
    emb = emb_truth[0]
    st = ExplorerState(emb, scatter=None)
    assert st.grid.stride == 1 and np.shares_memory(st.grid.ov.values, emb.values)  # a view, not a copy
    st = ExplorerState(emb, scatter=None, max_pixels=20)
    assert st.grid.stride == 3 and st.grid.ov.shape[-2:] == (14, 17)


def test_labels_train_threshold_and_settings_are_data(emb_truth, tmp_path):
    emb, truth = emb_truth
    st = ExplorerState(emb, scatter=None, labels=tmp_path / "labels.geojson")
    with pytest.raises(LabelError, match="No labels"):
        st.train()
    rng = np.random.default_rng(1)
    for cls in range(3):
        rr, cc = np.nonzero(truth.values == cls)
        for i in rng.choice(len(rr), 4, replace=False):
            st.label(*_centre(emb, rr[i], cc[i]), f"c{cls}")
    assert (tmp_path / "labels.geojson").exists() and len(st.scene.markers["labels"]["features"]) == 12
    clf = st.train()
    np.testing.assert_array_equal(st.layer_data["class"].values, clf.predict_map()["class"].values)
    legend = st.scene.controls["class"]
    assert isinstance(legend, Legend) and set(legend.items) == {"c0", "c1", "c2"}
    assert "balanced accuracy" in st.notes.report
    assert st.set_threshold(0.5) == 0  # no query yet: nothing matches
    st.click(*_centre(emb, 3, 3))
    n = st.set_threshold(0.8)
    assert n == int((st.similarity.values >= 0.8).sum()) == len(st.matches)
    with pytest.raises(ParameterError, match="search"):
        st.set_mode("draw")
    st.set_mode("label")
    st.set_layer_style("class", opacity=0.3)
    st.split("PCA-RGB", "class")
    assert st.mode == "label" and st.scene.styles["class"]["opacity"] == 0.3
    assert st.split_names == ("PCA-RGB", "class")
    with pytest.raises(ParameterError, match="No layer named"):
        st.split("PCA-RGB", "nope")
    with pytest.raises(ParameterError, match="not known"):
        st.set_basemap("NoSuch.Provider")
    st.set_basemap("osm")
    assert st.basemap_name == "osm" and st.basemap.name == "OpenStreetMap.Mapnik"


def test_time_layers_carry_the_date_in_their_titles():
    emb, _ = make_emb(12, 14, 8, times=3, seed=4)
    st = ExplorerState(emb, scatter=None)
    assert st.scene.layers["PCA-RGB"].title == "PCA-RGB (mean of 3 dates)"
    st.click(*_centre(emb, 4, 5))
    assert st.trajectory_data.attrs["row"] == 4 and st.trajectory_data.attrs["col"] == 5
    st.set_time(1)
    assert st.scene.layers["similarity"].title == "similarity 2024-02-15"
    np.testing.assert_allclose(st.layer_data["similarity"].values, st.similarity.isel(time=1).values, atol=1e-6)


# ---- structure ----------------------------------------------------------------------------------------
def _classes():
    for path in sorted((ROOT / "eoembed" / "explore").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                yield path.name, node


def test_no_explorer_class_is_over_400_lines_and_each_part_assigns_only_its_own_attributes():
    """Classes are cut by job; a part changes another part only through its methods (no ``state.x = …``
    or ``self._s.search.x = …`` from outside), so each attribute has one owner, in one file."""
    sizes = {f"{f}:{c.name}": c.end_lineno - c.lineno + 1 for f, c in _classes()}
    assert max(sizes.values()) <= 400, sizes
    refs = {"s", "st", "state", "_s", "_state", "_host", "host"}  # names of the state / explorer in explore/
    foreign = []
    for path in sorted((ROOT / "eoembed" / "explore").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
            for t in targets:
                for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    chain = []
                    while isinstance(el, ast.Attribute):
                        chain.append(el.attr)
                        el = el.value
                    if isinstance(el, ast.Name) and chain:
                        names = [el.id, *reversed(chain)]
                        if names[0] in refs or (names[0] == "self" and len(names) > 2 and names[1] in refs):
                            foreign.append(f"{path.name}:{node.lineno} {'.'.join(names)}")
    assert foreign == [], foreign
