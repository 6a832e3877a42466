"""The map explorer: clicks, labels, training, layer georeferencing, errors in callbacks."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipyleaflet")
pytest.importorskip("bqplot")
pytest.importorskip("faiss")
pytest.importorskip("geopandas")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402
from eoembed.exceptions import LabelError, MissingOptionalDependency, ParameterError, QueryError  # noqa: E402
from eoembed.viz import MercatorWarp, colormap_indexed, png_data_url, robust_stretch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emb_truth():
    return make_emb(40, 50, 16, block=10, seed=3)


@pytest.fixture
def ex(emb_truth):
    return eoembed.explore.explore(emb_truth[0], k=7)


def _lonlat(x, y, crs="EPSG:32631"):
    from pyproj import Transformer

    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)


def _map_click(ex, lon, lat):
    """Exactly the message the browser sends for a click on the map."""
    ex.map._handle_leaflet_event(None, {"event": "interaction", "type": "click", "coordinates": [lat, lon]}, None)


def _centre(emb, r, c):
    return float(emb.x[c]), float(emb.y[r])


# ---- georeferencing -------------------------------------------------------------------
def test_layer_bounds_are_the_grid_corners_in_lonlat(ex, emb_truth):
    emb = emb_truth[0]
    x0, y0, x1, y1 = emb.rio.bounds()
    corners = [_lonlat(x, y) for x in (x0, x1) for y in (y0, y1)]
    lons, lats = [c[0] for c in corners], [c[1] for c in corners]
    (south, west), (north, east) = ex.layers["PCA-RGB"].bounds
    # the overlay holds every corner, and is no larger than the footprint plus one pixel
    px = (east - west) / ex.state.grid.warp.shape[1]
    py = (north - south) / ex.state.grid.warp.shape[0]
    eps = 1e-9  # float round-off of the Mercator→lon/lat conversion
    assert west <= min(lons) + eps and east >= max(lons) - eps and south <= min(lats) + eps
    assert north >= max(lats) - eps
    assert min(lons) - west < 2 * px and east - max(lons) < 2 * px
    assert min(lats) - south < 2 * py and north - max(lats) < 2 * py
    # near 3°E in UTM 31N the grid is almost north-up: corners ≈ the overlay corners
    assert abs(west - _lonlat(x0, y1)[0]) < 0.01 and abs(north - _lonlat(x0, y1)[1]) < 0.01


@pytest.mark.parametrize("max_pixels", [1024, 20])
def test_every_patch_lands_where_it_is_on_the_ground(emb_truth, max_pixels):
    emb = emb_truth[0]
    ex = eoembed.explore.explore(emb, scatter=None, max_pixels=max_pixels)
    s = ex.state.grid.stride
    assert (s == 1) == (max_pixels == 1024)
    assert max(ex.state.grid.warp.shape) == (200 if s == 1 else 20)  # 4× oversampled when small
    warp = ex.state.grid.warp
    (south, west), (north, east) = ex.layers["PCA-RGB"].bounds
    assert warp.bounds == ((south, west), (north, east))
    for r, c in [(0, 0), (39, 49), (0, 49), (39, 0), (17, 23)]:
        lon, lat = _lonlat(*_centre(emb, r, c))
        i, j = warp.pixel_of(lon, lat)
        # the Mercator pixel under the patch centre shows that patch (its overview cell);
        # at 1:1 resolution (the coarse overview) nearest resampling may pick a neighbour
        tol = 0 if s == 1 else 1
        assert abs(warp.rows[i, j] - r // s) <= tol and abs(warp.cols[i, j] - c // s) <= tol


def test_far_from_utm_zone_centre_the_warp_follows_the_rotation():
    """At the zone edge UTM north is ~2° off true north; a naive corner stretch would misplace patches."""
    emb, _ = make_emb(60, 60, 8, x0=200_000.0, y0=6_500_000.0, pitch=100.0)
    warp = MercatorWarp.from_grid("EPSG:32631", emb.rio.transform(), (60, 60))
    for r, c in [(0, 0), (0, 59), (59, 0), (59, 59), (30, 2)]:
        lon, lat = _lonlat(*_centre(emb, r, c))
        i, j = warp.pixel_of(lon, lat)
        assert abs(int(warp.rows[i, j]) - r) <= 1 and abs(int(warp.cols[i, j]) - c) <= 1
    # the footprint is rotated, so its Mercator bounding box has empty (transparent) corners
    assert (warp.rows < 0).any()


def test_large_grids_interpolate_the_projection_without_moving_pixels():
    """Above 256² Mercator pixels the inverse projection is exact on every 8th pixel, bilinear between."""
    from affine import Affine
    from pyproj import Transformer

    tr = Affine(40, 0, 200_000, 0, -40, 6_500_000)  # zone edge: the strongest curvature in UTM
    w = MercatorWarp.from_grid("EPSG:32631", tr, (600, 600))
    x0, y0, x1, y1 = w.mercator_bounds
    wy, wx = w.shape
    res = (x1 - x0) / wx
    gx, gy = np.meshgrid(x0 + res * (np.arange(wx) + 0.5), y1 - res * (np.arange(wy) + 0.5))
    sx, sy = Transformer.from_crs("EPSG:3857", "EPSG:32631", always_xy=True).transform(gx, gy)
    col, row = np.floor((sx - 200_000) / 40), np.floor((sy - 6_500_000) / -40)
    inside = (row >= 0) & (row < 600) & (col >= 0) & (col < 600)
    same = (np.where(inside, row, -1) == w.rows) & (np.where(inside, col, -1) == w.cols)
    assert wx * wy > 65_536 and same.mean() > 0.9999


def test_pca_layer_equals_reduce_pca_rgb(emb_truth):
    emb = emb_truth[0].copy()
    emb[:, 3, 4] = np.nan  # masked patches stay transparent
    emb[:, 5, 6] = 0.0
    ex = eoembed.explore.explore(emb, scatter=None)
    ref = eoembed.reduce.pca_rgb(emb).transpose("band", "y", "x").values
    got = ex.layer_data["PCA-RGB"].values
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.isnan(got[:, 3, 4]).all() and np.isnan(got[:, 5, 6]).all()


def test_true_colour_layer_uses_the_cube_grid_and_a_robust_stretch(emb_truth):
    import xarray as xr
    from affine import Affine

    emb = emb_truth[0]
    rng = np.random.default_rng(0)
    ny, nx = 40 * 8, 50 * 8
    data = rng.uniform(200, 1500, (3, ny, nx)).astype("float32")
    data[:, 0, 0] = 60000  # an outlier must not flatten the stretch
    cube = xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": ["B02", "B03", "B04"], "x": 500_000 + 10 * (np.arange(nx) + 0.5),
                                "y": 5_700_000 - 10 * (np.arange(ny) + 0.5)})
    cube = cube.rio.write_crs("EPSG:32631").rio.write_transform(Affine(10, 0, 500_000, 0, -10, 5_700_000))
    ex = eoembed.explore.explore(emb, cube, scatter=None, max_pixels=100)
    tc = ex.layer_data["true colour"]
    assert list(tc["band"].values) == ["B04", "B03", "B02"]
    assert tc.sizes["y"] == 80 and tc.sizes["x"] == 100  # overview of the 320×400 px cube
    np.testing.assert_allclose(ex.layers["true colour"].bounds, ex.layers["PCA-RGB"].bounds, atol=1e-4)
    st = robust_stretch(tc.values)
    assert 0.3 < np.nanmedian(st) < 0.7  # not squashed to black by the 60000 outlier
    with pytest.raises(ParameterError, match="red/green/blue"):
        eoembed.explore.explore(emb, cube.assign_coords(band=["a", "b", "c"]), scatter=None)


# ---- search -----------------------------------------------------------------------------
def test_click_top_k_equals_index_search_and_similarity_equals_index_map(ex, emb_truth):
    emb = emb_truth[0]
    p = _centre(emb, 12, 31)
    hits = ex.click(*p)
    ref = ex.index.search(point=p, k=7)
    assert list(hits["id"]) == list(ref["id"]) and np.allclose(hits["score"], ref["score"])
    assert hits["row"].iloc[0] == 12 and hits["col"].iloc[0] == 31
    assert list(ex.hits.columns[:4]) == ["rank", "score", "x", "y"] and ex.hits.crs == emb.rio.crs
    sim = ex.similarity
    np.testing.assert_allclose(sim.values, ex.index.similarity_map(point=p).values, atol=1e-6)
    assert sim.dims == ("y", "x") and sim.shape == (40, 50)
    assert "similarity" in ex.layers and ex.view.controls["similarity"] in ex.map.controls and ex.view.controls["similarity"].caption == "cosine similarity"
    assert len(ex.view.hits_group.data["features"]) == 7 + 1  # hits + the query point


def test_map_click_in_lonlat_is_the_same_query(ex, emb_truth):
    emb = emb_truth[0]
    lon, lat = _lonlat(*_centre(emb, 30, 7))
    layers_before = len(ex.map.layers)
    _map_click(ex, lon, lat)
    assert ex.last_error is None
    assert ex.hits["row"].iloc[0] == 30 and ex.hits["col"].iloc[0] == 7
    assert len(ex.map.layers) == layers_before + 1  # the similarity overlay
    first = ex.hits.copy()
    _map_click(ex, *_lonlat(*_centre(emb, 5, 45)))
    assert len(ex.map.layers) == layers_before + 1  # updated in place, not stacked
    assert not first["id"].equals(ex.hits["id"])


def test_refinement_positive_negative_and_clear(ex, emb_truth):
    emb = emb_truth[0]
    p, q, n = _centre(emb, 2, 2), _centre(emb, 25, 35), _centre(emb, 2, 12)
    ex.click(*p)
    ex.click(*q, refine=True)
    hits = ex.click(*n, negative=True)
    ref = ex.index.search(positives=[p, q], negatives=[n], k=7)
    assert list(hits["id"]) == list(ref["id"])
    np.testing.assert_allclose(ex.similarity.values,
                               ex.index.similarity_map(positives=[p, q], negatives=[n]).values, atol=1e-6)
    ex.clear()
    assert ex.hits is None and ex.similarity is None and "similarity" not in ex.layers
    assert ex.view.hits_group.data["features"] == []
    with pytest.raises(QueryError, match="positive"):
        ex.click(*n, negative=True)


def test_cubes_with_time_show_the_mean_or_one_timestep():
    emb, truth = make_emb(20, 30, 8, times=3, block=5, seed=4)
    p = _centre(emb, 4, 3)
    ex = eoembed.explore.explore(emb, scatter=None)
    hits = ex.click(*p)
    assert list(hits["id"]) == list(ex.index.search(point=p, k=20)["id"])
    assert ex.similarity.dims == ("time", "y", "x")
    np.testing.assert_allclose(ex.layer_data["similarity"].values, ex.similarity.mean("time").values, atol=1e-6)
    ex1 = eoembed.explore.explore(emb, time=1, scatter=None)
    hits = ex1.click(*p)
    assert str(hits["time"].iloc[0])[:10] == "2024-02-15" and (hits["row"].iloc[0], hits["col"].iloc[0]) == (4, 3)
    np.testing.assert_allclose(ex1.layer_data["similarity"].values, ex1.similarity.isel(time=1).values, atol=1e-6)
    for r, c in [(0, 0), (10, 20), (19, 29), (5, 12), (15, 3), (2, 25), (12, 12), (18, 8)]:
        ex1.label(*_centre(emb, r, c), f"c{truth.values[r, c]}")
    clf = ex1.train()
    assert ex1.layer_data["class"].dims == ("y", "x")
    np.testing.assert_array_equal(ex1.layer_data["class"].values, clf.predict_map()["class"].values)


def test_index_is_built_once_and_reused(emb_truth, monkeypatch):
    import eoembed.index as index_mod

    calls = []
    real = index_mod.build_index
    monkeypatch.setattr(index_mod, "build_index", lambda *a, **k: calls.append(1) or real(*a, **k))
    ex = eoembed.explore.explore(emb_truth[0], scatter=None)
    assert calls == []  # opening does not build it
    for r in (1, 10, 20):
        ex.click(*_centre(emb_truth[0], r, r))
    assert calls == [1]


def test_dask_cube_is_not_computed_beyond_the_overview(emb_truth):
    import dask

    emb = emb_truth[0].chunk({"y": 10, "x": 10})
    computed = []

    class Count(dask.callbacks.Callback):
        def _start(self, dsk):
            computed.append(len(dsk))

    with Count():
        ex = eoembed.explore.explore(emb, max_pixels=25)
    assert ex.state.grid.ov.shape[-2:] == (20, 25)  # a 1/2 overview, held in memory
    assert ex.layer_data["PCA-RGB"].shape[-2:] == (20, 25)
    assert len(computed) == 1  # one compute: the overview
    ex.click(*_centre(emb, 10, 10))
    assert hasattr(ex.similarity.data, "dask")  # the full-grid similarity stays lazy
    assert ex.layer_data["similarity"].shape == (20, 25)


# ---- labels and training ------------------------------------------------------------------
def _label_checkerboard(ex, emb, truth, n=4):
    rng = np.random.default_rng(1)
    for cls in range(3):
        rr, cc = np.nonzero(truth.values == cls)
        for i in rng.choice(len(rr), n, replace=False):
            ex.label(*_centre(emb, rr[i], cc[i]), f"c{cls}")


def test_label_train_class_layer_equals_predict_map(ex, emb_truth):
    emb, truth = emb_truth
    ex.set_mode("label")
    assert ex.mode == "label"
    _label_checkerboard(ex, emb, truth, n=5)
    assert list(ex.labels.columns) == ["class", "geometry"] and len(ex.labels) == 15
    assert ex.labels.crs == emb.rio.crs
    clf = ex.train()
    assert ex.classifier is clf and list(clf.classes_) == ["c0", "c1", "c2"]
    ref = clf.predict_map()
    np.testing.assert_array_equal(ex.layer_data["class"].values, ref["class"].values)
    np.testing.assert_allclose(ex.layer_data["probability"].values, ref["probability"].max("label").values)
    assert "class" in ex.layers and "probability" in ex.layers
    assert ex.view.controls["class"] is not None and set(ex.view.controls["class"].legend) == {"c0", "c1", "c2"}
    rep = ex.cv_report
    assert rep.spatial and "balanced accuracy" in ex.view.widgets.report_w.value
    assert f"{rep.balanced_accuracy:.3f}" in ex.view.widgets.report_w.value
    for c in ("c0", "c1", "c2"):
        assert f"<td>{c}</td>" in ex.view.widgets.report_w.value  # per-class rows
    # the planted classes are separable: the class map matches the truth
    agree = (np.asarray(clf.classes_)[ref["class"].values] == np.char.add("c", truth.values.astype(str))).mean()
    assert agree > 0.9


def test_map_click_in_label_mode_labels_with_the_panel_class(ex, emb_truth):
    emb = emb_truth[0]
    ex.view.widgets.mode_w.value = "label"  # the toggle button
    ex.view.widgets.class_w.value = "water"
    _map_click(ex, *_lonlat(*_centre(emb, 3, 4)))
    assert ex.last_error is None and list(ex.labels["class"]) == ["water"]
    g = ex.labels.geometry.iloc[0]
    assert abs(g.x - float(emb.x[4])) < 1e-3 and abs(g.y - float(emb.y[3])) < 1e-3
    assert ex.hits is None  # label mode does not search
    assert len(ex.view.labels_group.data["features"]) == 1


def test_labels_round_trip_and_autosave(emb_truth, tmp_path):
    emb, truth = emb_truth
    path = tmp_path / "sub" / "labels.geojson"
    ex = eoembed.explore.explore(emb, labels=path, scatter=None)
    _label_checkerboard(ex, emb, truth, n=2)
    assert path.exists()  # autosaved on every label
    saved = json.loads(path.read_text())
    assert len(saved["features"]) == 6
    ex2 = emb.eo.explore(labels=str(path), scatter=None)
    a, b = ex.labels, ex2.labels
    assert list(a["class"]) == list(b["class"])
    np.testing.assert_allclose(np.c_[a.geometry.x, a.geometry.y], np.c_[b.geometry.x, b.geometry.y], atol=1e-3)
    out = ex2.save_labels(tmp_path / "copy.geojson")
    ex3 = eoembed.explore.explore(emb, labels=ex2.labels.to_crs("EPSG:4326"), scatter=None)
    assert Path(out).exists() and list(ex3.labels["class"]) == list(a["class"])
    ex2.clear_labels()
    assert len(json.loads(path.read_text())["features"]) == 0


def test_train_errors_are_typed(ex, emb_truth):
    emb = emb_truth[0]
    with pytest.raises(LabelError, match="No labels"):
        ex.train()
    ex.label(*_centre(emb, 1, 1), "a")
    with pytest.raises(LabelError, match="one class"):
        ex.train()
    with pytest.raises(LabelError, match="outside"):
        ex.label(0.0, 0.0, "a")
    with pytest.raises(LabelError, match="empty"):
        ex.label(*_centre(emb, 1, 1), "  ")


# ---- errors in callbacks -------------------------------------------------------------------
def test_errors_in_callbacks_are_shown_logged_and_the_widget_survives(ex, emb_truth, caplog):
    emb = emb_truth[0]
    with caplog.at_level("ERROR", logger="eoembed.explore"):
        _map_click(ex, 10.0, 10.0)  # far outside the cube
    assert isinstance(ex.last_error, QueryError)
    assert "outside the embedding cube" in ex.view.widgets.status_w.value and "#b00020" in ex.view.widgets.status_w.value
    assert any("outside" in r.getMessage() or r.exc_info for r in caplog.records)
    ex.view.widgets.train_w.click()  # Train with no labels: shown, not raised
    assert isinstance(ex.last_error, LabelError) and "No labels" in ex.view.widgets.status_w.value
    _map_click(ex, *_lonlat(*_centre(emb, 20, 20)))  # still works afterwards
    assert ex.hits is not None and "#b00020" not in ex.view.widgets.status_w.value


# ---- embedding view ----------------------------------------------------------------------------
def test_scatter_selection_highlights_patches_and_click_highlights_point(ex, emb_truth):
    emb = emb_truth[0]
    sc = ex.scatter.marks[0]
    assert 0 < len(sc.x) <= 2000
    sel = ex.select([0, 5, 9])  # what a brush/lasso does: set Scatter.selected
    assert list(sc.selected) == [0, 5, 9] and len(sel) == 3
    mask = ex.layer_data["selection"].values
    assert np.isfinite(mask).sum() == 3
    for r, c in zip(sel["row"], sel["col"]):
        assert mask[r, c] == 1
    sc.selected = None  # a brush cleared in the browser
    assert "selection" not in ex.layers
    ex.click(*_centre(emb, 8, 9))
    # the points are the PCA of the patches' unit vectors (the space the index searches), so the query
    # vector the index resolved for the click lands on the clicked patch's own point
    data = ex.state.scatter
    i = int(np.flatnonzero((data.rows == 8) & (data.cols == 9))[0])
    q = ex.scatter.marks[1]
    assert q.x[0] == pytest.approx(sc.x[i], abs=1e-5) and q.y[0] == pytest.approx(sc.y[i], abs=1e-5)
    v = emb.isel(y=8, x=9).values.astype("float32")
    xy = eoembed.reduce.fit_pca(emb, 3, sample=20_000).func((v / np.linalg.norm(v))[None, :])[0]
    assert q.x[0] == pytest.approx(xy[0], abs=1e-4) and q.y[0] == pytest.approx(xy[1], abs=1e-4)
    ex.clear()
    assert len(q.x) == 0


# ---- options and missing extras --------------------------------------------------------------------
def test_basemap_is_blank_by_default_and_selectable(emb_truth):
    import ipyleaflet

    ex = eoembed.explore.explore(emb_truth[0], scatter=None)
    assert not any(isinstance(lyr, ipyleaflet.TileLayer) for lyr in ex.map.layers)
    ex = eoembed.explore.explore(emb_truth[0], basemap="osm", scatter=None)
    tiles = [lyr for lyr in ex.map.layers if isinstance(lyr, ipyleaflet.TileLayer)]
    assert len(tiles) == 1 and tiles[0].base and "openstreetmap" in tiles[0].url
    with pytest.raises(ParameterError, match="basemap"):
        eoembed.explore.explore(emb_truth[0], basemap="cartodb")


def test_without_the_viz_extra_a_typed_error_names_it(emb_truth, monkeypatch):
    monkeypatch.setitem(sys.modules, "bqplot", None)  # import bqplot → ImportError
    with pytest.raises(MissingOptionalDependency, match=r"eoembed\[viz\]") as err:
        emb_truth[0].eo.explore()
    assert "bqplot" in str(err.value)


def test_explorer_is_exported_lazily():
    assert eoembed.Explorer is eoembed.explore.Explorer
    import ipywidgets

    assert issubclass(eoembed.Explorer, ipywidgets.HBox)


# ---- rendering helpers -------------------------------------------------------------------------------
def test_palette_png_keeps_transparency_and_colours():
    from PIL import Image

    v = np.array([[0.0, 0.5], [1.0, np.nan]], np.float32)
    idx, pal = colormap_indexed(v, 0.0, 1.0)
    assert idx[1, 1] == 0 and idx[0, 0] == 1 and idx[1, 0] == 255
    url = png_data_url(idx, pal)
    assert url.startswith("data:image/png;base64,")
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))
    assert img[1, 1, 3] == 0 and img[0, 0, 3] == 255
    np.testing.assert_array_equal(img[1, 0], pal[255])


def test_robust_stretch_clips_outliers_per_band():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, (2, 100, 100)).astype("f4")
    b[1] *= 1000
    b[:, 0, 0] = 1e6
    b[0, 1, 1] = np.nan
    s = robust_stretch(b)
    assert np.isnan(s[0, 1, 1]) and s[0, 0, 0] == 1.0
    assert abs(np.nanmean(s[0]) - 0.5) < 0.05 and abs(np.nanmean(s[1]) - 0.5) < 0.05


@pytest.mark.slow
def test_bench_explore_quick(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_explore.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["quick"] is True
    assert res["click"]["topk_equal"] is True
    assert res["click"]["ratio"] < 5
    assert res["open"]["seconds"] < 30
    large = res["large"]
    assert large["ooc_index"]["recall@10"] >= 0.95 and large["pyramid_levels"] >= 1
    assert large["overview_shape"] == [150, 150] and large["open_s"] < 30


def test_train_with_a_single_label_class_explains_the_missing_cv(ex, emb_truth):
    emb, truth = emb_truth
    for r, c in [(0, 0), (5, 12), (12, 3), (18, 25)]:
        ex.label(*_centre(emb, r, c), "a")
    ex.label(*_centre(emb, 10, 10), "b")
    clf = ex.train()  # the classifier and layers exist; CV cannot, and the panel says why
    assert list(clf.classes_) == ["a", "b"] and "class" in ex.layer_data
    assert ex.cv_report is None
    assert "No spatial CV" in ex.view.widgets.report_w.value and "Add more labels of &#x27;b&#x27;" in ex.view.widgets.report_w.value


# ---- leafmap-native ------------------------------------------------------------------------------
def _rgb_cube(emb, scale=8):
    import xarray as xr
    from affine import Affine

    rng = np.random.default_rng(0)
    ny, nx = emb.sizes["y"] * scale, emb.sizes["x"] * scale
    data = rng.uniform(200, 1500, (3, ny, nx)).astype("float32")
    res = 80.0 / scale
    cube = xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": ["B02", "B03", "B04"], "x": 500_000 + res * (np.arange(nx) + 0.5),
                                "y": 5_700_000 - res * (np.arange(ny) + 0.5)})
    return cube.rio.write_crs("EPSG:32631").rio.write_transform(Affine(res, 0, 500_000, 0, -res, 5_700_000))


def test_the_map_is_a_leafmap_map_offline_or_the_users_own(emb_truth):
    import ipyleaflet
    import leafmap

    emb = emb_truth[0]
    ex = eoembed.explore.explore(emb, scatter=None)
    assert isinstance(ex.map, leafmap.Map)
    assert not any(isinstance(lyr, ipyleaflet.TileLayer) for lyr in ex.map.layers)  # offline: no basemap
    assert ex.draw_control in ex.map.controls
    m = leafmap.Map(center=(51.4, 3.0), zoom=8, draw_control=False, toolbar_control=False)
    own = ipyleaflet.GeoJSON(data={"type": "FeatureCollection", "features": []}, name="my fields")
    m.add(own)
    ex2 = eoembed.explore.explore(emb, m=m, scatter=None)
    assert ex2.map is m and own in m.layers and ex2.layers["PCA-RGB"] in m.layers
    assert any(isinstance(lyr, ipyleaflet.TileLayer) for lyr in m.layers)  # the user's basemap is kept
    with pytest.raises(ParameterError, match="leafmap.Map"):
        eoembed.explore.explore(emb, m="not a map")


def test_basemap_picker_offers_xyzservices_providers(emb_truth):
    import ipyleaflet

    ex = eoembed.explore.explore(emb_truth[0], scatter=None)
    ex.view.widgets.basemap_w.value = "Esri.WorldGrayCanvas"  # the picker
    tiles = [lyr for lyr in ex.map.layers if isinstance(lyr, ipyleaflet.TileLayer)]
    assert len(tiles) == 1 and "Canvas" in tiles[0].url and ex.map.layers[0] is tiles[0]
    ex.set_basemap(None)
    assert not any(isinstance(lyr, ipyleaflet.TileLayer) for lyr in ex.map.layers)
    with pytest.raises(ParameterError, match="not known"):
        ex.set_basemap("NoSuch.Provider")


@pytest.mark.parametrize("mapcls", ["ipyleaflet", "leafmap"])
def test_add_layers_puts_each_kind_with_its_colour_bar_or_legend_on_any_map(emb_truth, mapcls):
    import ipyleaflet
    import leafmap

    from eoembed.classify import fewshot
    from eoembed.explore import add_layers
    from eoembed.explore.layers import pca_rgb_2d
    from eoembed.index import build_index
    from eoembed.reduce import fit_pca

    emb, truth = emb_truth
    m = ipyleaflet.Map() if mapcls == "ipyleaflet" else leafmap.Map(draw_control=False, toolbar_control=False)
    n0 = len(m.layers)
    pca = add_layers(m, emb, "pca")
    assert pca in m.layers and pca.eoembed_control is None and pca.name == "eoembed pca"
    # the same colours as the explorer's PCA layer
    ex = eoembed.explore.explore(emb, scatter=None)
    assert pca.url == ex.layers["PCA-RGB"].url
    np.testing.assert_allclose(pca_rgb_2d(fit_pca(emb, 3, sample=20_000), emb).values,
                               ex.layer_data["PCA-RGB"].values, atol=1e-6)
    idx = build_index(emb)
    p = _centre(emb, 5, 5)
    sim = add_layers(m, emb, "similarity", index=idx, point=p)
    assert isinstance(sim.eoembed_control, ipyleaflet.ColormapControl) and sim.eoembed_control in m.controls
    s = idx.similarity_map(point=p).values
    assert 0 <= sim.eoembed_control.value_max - float(np.nanmax(s)) <= 1e-3
    assert sim.eoembed_control.value_max == round(sim.eoembed_control.value_max, 3)  # short colour-bar labels
    labels = ex.labels
    rng = np.random.default_rng(1)
    import geopandas as gpd

    rows = []
    for cls in range(3):
        rr, cc = np.nonzero(truth.values == cls)
        for i in rng.choice(len(rr), 4, replace=False):
            rows.append((f"c{cls}", *_centre(emb, rr[i], cc[i])))
    labels = gpd.GeoDataFrame({"class": [r[0] for r in rows]},
                              geometry=gpd.points_from_xy([r[1] for r in rows], [r[2] for r in rows]), crs=emb.rio.crs)
    clf = fewshot(emb, labels, class_column="class")
    cls = add_layers(m, emb, "class", classifier=clf)
    assert isinstance(cls.eoembed_control, ipyleaflet.LegendControl)
    assert set(cls.eoembed_control.legend) == {"c0", "c1", "c2"}
    prob = add_layers(m, emb, "probability", classifier=clf, name="p")
    assert prob.name == "p" and prob.eoembed_control.caption == "class probability"
    assert len(m.layers) == n0 + 4
    with pytest.raises(ParameterError, match="kind"):
        add_layers(m, emb, "ndvi")
    with pytest.raises(ParameterError, match="classifier="):
        add_layers(m, emb, "class")
    with pytest.raises(ParameterError, match="needs a query"):
        add_layers(m, emb, "similarity", index=idx)
    with pytest.raises(ParameterError, match="leafmap.Map"):
        add_layers(object(), emb)


# ---- map tools -----------------------------------------------------------------------------------
def _square(emb, r0, c0, n):
    from shapely.geometry import box

    a = float(emb.x[1] - emb.x[0])
    x0, y0 = float(emb.x[c0]) - a / 2, float(emb.y[r0]) + a / 2
    return box(x0, y0 - n * a, x0 + n * a, y0)


def test_drawn_polygon_is_the_polygon_mean_query(ex, emb_truth):
    from shapely.geometry import Polygon, mapping
    import shapely
    from pyproj import Transformer

    emb = emb_truth[0]
    poly = _square(emb, 2, 2, 3)  # 3×3 patches inside one class block
    ref = ex.index.search(polygon=poly, k=7)
    to_ll = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform
    gj = {"type": "Feature", "properties": {}, "geometry": mapping(shapely.transform(poly, lambda xy: np.column_stack(to_ll(xy[:, 0], xy[:, 1]))))}
    # exactly the message the browser's draw control sends
    ex.draw_control._handle_leaflet_event(None, {"event": "draw:created", "geo_json": gj}, None)
    assert ex.last_error is None
    assert list(ex.hits["id"]) == list(ref["id"]) and np.allclose(ex.hits["score"], ref["score"], atol=1e-5)
    assert "similarity" in ex.layers and ex.draw_control.data == []
    assert any(f["geometry"]["type"] == "Polygon" for f in ex.view.hits_group.data["features"])
    hits = ex.query_polygon(poly)  # the public method, in the cube CRS
    assert list(hits["id"]) == list(ref["id"])
    with pytest.raises(QueryError, match="does not overlap"):
        ex.query_polygon(Polygon([(0, 0), (1, 0), (1, 1)]))
    with pytest.raises(QueryError, match="Polygon"):
        ex.query_polygon("POINT (500100 5699900)")


def test_threshold_marks_and_exports_the_matches(ex, emb_truth, tmp_path):
    import geopandas as gpd

    emb = emb_truth[0]
    with pytest.raises(QueryError, match="No query"):
        ex.set_threshold(0.5) or ex.matches
    ex.clear()
    ex.click(*_centre(emb, 12, 31))
    sim = ex.similarity.values
    t = float(np.nanpercentile(sim, 90))
    ex.view.widgets.threshold_w.value = t  # the slider
    assert ex.threshold == pytest.approx(t)
    want = int((sim >= ex.threshold).sum())
    m = ex.matches
    assert len(m) == want and (m["score"] >= ex.threshold - 1e-6).all() and m.crs == emb.rio.crs
    assert "matches" in ex.layers and f"{want} patches" in ex.view.widgets.matches_w.value
    r, c = int(m["row"].iloc[0]), int(m["col"].iloc[0])
    assert m["score"].iloc[0] == pytest.approx(float(np.nanmax(sim)))
    assert m.geometry.iloc[0].contains(gpd.points_from_xy([emb.x[c]], [emb.y[r]])[0])
    assert m.geometry.area.round(6).eq(80.0 * 80.0).all()  # one patch square each
    gj = ex.export_matches(tmp_path / "m.geojson")
    back = gpd.read_file(gj)
    assert len(back) == want and back.crs.to_epsg() == 4326
    np.testing.assert_allclose(back["score"], m["score"], atol=1e-6)
    ex.view.widgets.export_path_w.value = str(tmp_path / "m.parquet")
    ex.view.widgets.export_w.click()  # the button
    pq = gpd.read_parquet(tmp_path / "m.parquet")
    assert len(pq) == want and pq.crs == emb.rio.crs and list(pq["row"]) == list(m["row"])
    with pytest.raises(ParameterError, match=".geojson"):
        ex.export_matches(tmp_path / "m.csv")
    with pytest.raises(ParameterError, match=r"\[-1, 1\]"):
        ex.set_threshold(2)


def test_split_map_shows_two_layers_side_by_side(ex, emb_truth):
    import ipyleaflet

    ex.click(*_centre(emb_truth[0], 3, 3))
    ex.split("PCA-RGB", "similarity")
    ctl = [c for c in ex.map.controls if isinstance(c, ipyleaflet.SplitMapControl)]
    assert len(ctl) == 1 and ctl[0].left_layer is ex.layers["PCA-RGB"] and ctl[0].right_layer is ex.layers["similarity"]
    ex.split("similarity", "PCA-RGB")  # replaces, does not stack
    assert sum(isinstance(c, ipyleaflet.SplitMapControl) for c in ex.map.controls) == 1
    ex.clear()  # the similarity layer goes: so does the split
    assert not any(isinstance(c, ipyleaflet.SplitMapControl) for c in ex.map.controls)
    with pytest.raises(ParameterError, match="No layer named"):
        ex.split("PCA-RGB", "nope")


def test_split_two_dates():
    emb, _ = make_emb(20, 20, 8, times=2, seed=4)
    ex = eoembed.explore.explore(emb, scatter=None)
    a, b = ex.add_time_layer(0), ex.add_time_layer(1)
    ex.split(a, b)
    assert ex.view.split.left_layer is ex.layers[a] and ex.layers[a].url != ex.layers[b].url
    with pytest.raises(ParameterError, match="out of range"):
        ex.add_time_layer(5)


def test_gallery_shows_true_colour_chips_of_the_top_hits(emb_truth):
    from PIL import Image

    emb = emb_truth[0]
    cube = _rgb_cube(emb)
    ex = eoembed.explore.explore(emb, cube, scatter=None, k=6)
    with pytest.raises(QueryError, match="No hits"):
        ex.gallery()
    ex.click(*_centre(emb, 20, 20))
    box = ex.gallery(k=4)
    assert len(box.children) == 4 and box in ex.panel.children
    img = np.asarray(Image.open(io.BytesIO(box.children[0].children[0].value)))
    assert img.shape == (32, 32, 4)  # default: 3 patches of 8 px, at least 32 px
    assert "#1 ·" in box.children[0].children[1].value
    ex.click(*_centre(emb, 5, 5))  # refreshed after each query
    assert len(ex.view.widgets.gallery_box.children) == 4
    ex2 = eoembed.explore.explore(emb, scatter=None)
    ex2.click(*_centre(emb, 5, 5))
    with pytest.raises(ParameterError, match="cube="):
        ex2.gallery()


def test_session_round_trip_restores_labels_query_threshold_layers(emb_truth, tmp_path):
    emb, truth = emb_truth
    ex = eoembed.explore.explore(emb, scatter=None, k=7)
    _label_checkerboard(ex, emb, truth, n=3)
    ex.train()
    ex.query_polygon(_square(emb, 2, 2, 3))
    ex.click(*_centre(emb, 30, 40), refine=True)
    ex.click(*_centre(emb, 12, 31), negative=True)
    ex.set_threshold(0.6)
    ex.layers["PCA-RGB"].opacity = 0.4
    ex.split("PCA-RGB", "similarity")
    path = ex.save_session(tmp_path / "s.json")
    ex2 = eoembed.explore.explore(emb, scatter=None, k=7, session=path)
    assert ex2.labels.geom_equals_exact(ex.labels, 1e-6).all() and list(ex2.labels["class"]) == list(ex.labels["class"])
    assert list(ex2.hits["id"]) == list(ex.hits["id"])
    np.testing.assert_allclose(ex2.similarity.values, ex.similarity.values, atol=1e-6)
    assert ex2.threshold == 0.6 and len(ex2.matches) == len(ex.matches)
    assert ex2.classifier is not None and "class" in ex2.layers
    assert ex2.layers["PCA-RGB"].opacity == 0.4 and ex2.state.split_names == ("PCA-RGB", "similarity")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ParameterError, match="invalid JSON"):
        ex2.load_session(tmp_path / "bad.json")
    with pytest.raises(ParameterError, match="No session file"):
        ex2.load_session(tmp_path / "none.json")
    other = eoembed.explore.explore(make_emb(20, 20, 16, seed=3)[0], scatter=None)
    with pytest.raises(ParameterError, match="another embedding grid"):
        other.load_session(path)


def test_basemaps_that_need_an_api_key_are_refused(emb_truth):
    ex = eoembed.explore.explore(emb_truth[0], scatter=None)
    with warnings.catch_warnings():  # xyzservices warns about CartoDB's new key (once per process)
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ParameterError, match="API key"):
            ex.set_basemap("CartoDB.Positron")


# ---- any scale: the pyramid ----------------------------------------------------------------------
def test_pyramid_levels_are_unit_block_means_and_feed_the_overview(tmp_path):
    from eoembed.explore.pyramid import coarsen_embeddings, open_pyramid, write_pyramid

    emb, _ = make_emb(40, 50, 16, seed=5, nan_frac=0.05, chunks={"y": 16, "x": 16})
    paths = write_pyramid(emb, tmp_path / "pyr", min_side=16)
    levels = open_pyramid(tmp_path / "pyr")
    assert [lv.shape[-2:] for lv in levels] == [(20, 25), (10, 13)] and len(paths) == 2
    v = np.asarray(emb.values, np.float64)
    blk = v[:, 2:4, 6:8].reshape(16, -1)
    blk = blk[:, np.isfinite(blk).all(0)]
    ref = blk.mean(1) / np.linalg.norm(blk.mean(1))
    np.testing.assert_allclose(levels[0].values[:, 1, 3], ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(np.nan_to_num(levels[1].values), axis=0)[np.isfinite(levels[1].values).all(0)], 1,
                       atol=1e-5)
    assert levels[1].rio.transform().a == 4 * emb.rio.transform().a and levels[0].attrs == emb.attrs
    # the last, partial block (13th column of level 2) covers cube columns 48-49 only
    np.testing.assert_allclose(float(levels[1].x[-1]), float(emb.x[0]) - 40 + 4 * 80 * 12.5)
    np.testing.assert_allclose(coarsen_embeddings(emb).values, levels[0].values, atol=1e-6)
    with pytest.raises(eoembed.exceptions.InputError, match="overwrite=True"):
        write_pyramid(emb, tmp_path / "pyr", min_side=16)
    ex = eoembed.explore.explore(emb, scatter=None, max_pixels=24, pyramid=tmp_path / "pyr")
    assert ex.state.grid.stride == 4 and ex.state.grid.ov.shape[-2:] == (10, 13)  # level 2: the finest that fits 24 px
    hits = ex.click(*_centre(emb, 12, 31))
    assert hits["row"].iloc[0] == 12 and hits["col"].iloc[0] == 31  # search stays at full resolution
    other, _ = make_emb(40, 50, 16, seed=5, pitch=60.0)
    with pytest.raises(ParameterError, match="not a coarser level"):
        eoembed.explore.explore(other, scatter=None, pyramid=levels)


def test_large_dask_cubes_get_the_out_of_core_index(emb_truth, monkeypatch):
    emb = emb_truth[0].chunk({"y": 10})
    monkeypatch.setattr(eoembed.explore.ExplorerState, "OOC_PATCHES", 1000)
    ex = eoembed.explore.explore(emb, scatter=None, index_kwargs={"key": "IVF16,Flat"})
    hits = ex.click(*_centre(emb, 12, 31))
    assert ex.index.tuning["out_of_core"] and ex.index.key == "IVF16,Flat"
    assert hits["row"].iloc[0] == 12 and hits["col"].iloc[0] == 31


def test_zooming_in_draws_the_view_from_a_finer_level(emb_truth, tmp_path):
    from eoembed.explore.layers import pca_rgb_2d

    emb = emb_truth[0]  # 40 × 50 patches; overview 1/3 at max_pixels=20
    ex = eoembed.explore.explore(emb.chunk({"y": 10}), scatter=None, max_pixels=20)
    assert ex.state.grid.stride == 3
    # a view of 10 × 12 patches fits 20 px at full resolution
    x0, y1 = float(emb.x[5]) - 40, float(emb.y[20]) + 40
    x1, y0 = float(emb.x[16]) + 40, float(emb.y[29]) - 40
    (w, s), (e, n) = _lonlat(x0, y0), _lonlat(x1, y1)
    assert ex.refine_view([[s, w], [n, e]]) == "1/1"
    det = ex.layer_data["PCA-RGB detail"]
    assert det.sizes["y"] >= 10 and det.sizes["x"] >= 12 and det.sizes["y"] <= 12  # the window only
    ref = pca_rgb_2d(ex.state.grid.proj, emb.sel(y=det.y, x=det.x))
    np.testing.assert_allclose(det.values, ref.values, atol=1e-6)
    ex.click(*_centre(emb, 25, 10))
    assert "similarity detail" in ex.layers
    np.testing.assert_allclose(ex.layer_data["similarity detail"].values,
                               ex.similarity.sel(y=det.y, x=det.x).values, atol=1e-6)
    # the map's own pan/zoom message does the same; zooming out to the whole cube removes the detail
    (south, west), (north, east) = ex.layers["PCA-RGB"].bounds
    ex.map.set_state({"south": south, "west": west, "north": north, "east": east})  # as the browser syncs it
    assert ex.last_error is None, ex.last_error
    assert "PCA-RGB detail" not in ex.layers and "similarity detail" not in ex.layers
    ex.map.set_state({"south": s, "west": w, "north": n, "east": e})  # zoomed in again by the user
    assert "PCA-RGB detail" in ex.layers and "similarity detail" in ex.layers
    with pytest.raises(ParameterError, match="south < north"):
        ex.refine_view([[n, w], [s, e]])


def test_opening_the_explorer_does_not_silence_the_sessions_warnings():
    """leafmap adds a global 'ignore' filter on import; the explorer keeps that change local."""
    import warnings

    pytest.importorskip("leafmap")
    from _embfixtures import make_emb

    import eoembed.explore

    emb, _ = make_emb(12, 12, 8, seed=2)
    before = list(warnings.filters)
    eoembed.explore.explore(emb, scatter=None)
    assert warnings.filters == before


def test_clusters_layer_and_a_cluster_turned_into_labels():
    pytest.importorskip("faiss")
    import eoembed

    emb, _ = make_emb(16, 16, 8, seed=4)
    ex = eoembed.explore.explore(emb, scatter=None)
    cm = ex.show_clusters(k=3)
    direct = eoembed.cluster(emb, k=3)  # the layer is exactly the API's cluster map
    np.testing.assert_array_equal(cm.values, direct.values)
    assert "clusters" in ex.layers and set(ex.view.controls["clusters"].legend) == {"cluster 0", "cluster 1", "cluster 2"}
    n0 = int((cm.values == 0).sum())
    labels = ex.label_cluster(0, "big", max_patches=5)
    assert list(labels["class"]) == ["big"] * min(5, n0)
    # every labelled point falls in a patch of cluster 0
    for pt in labels.geometry:
        assert int(cm.sel(x=pt.x, y=pt.y, method="nearest")) == 0
    with pytest.raises(eoembed.exceptions.LabelError, match="no patches"):
        ex.label_cluster(7, "x")


def test_change_layer_matches_the_api():
    import eoembed

    a, _ = make_emb(12, 12, 8, seed=5)
    b = a.copy(data=a.values.copy())
    b.values[:, :4, :4] = -b.values[:, :4, :4]  # a block that turned around
    ex = eoembed.explore.explore(a, scatter=None)
    res = ex.show_change(b)
    direct = eoembed.change(a, b)
    np.testing.assert_allclose(res.distance.values, direct.distance.values)
    assert "change" in ex.layers and res.threshold == direct.threshold
    assert bool(res.changed.values[:4, :4].all()) and not bool(res.changed.values[6:, 6:].any())


def test_regression_layers_match_the_api_and_the_report_states_the_baselines(emb_truth):
    import eoembed

    emb, truth = emb_truth
    rng = np.random.default_rng(0)
    target = (truth.astype("float32") * 2.0 + 0.1 * rng.standard_normal(truth.shape)).rename("height")
    target = target.rio.write_crs(emb.rio.crs).rio.write_transform(emb.rio.transform())
    ex = eoembed.explore.explore(emb, scatter=None, max_pixels=20)  # overview 1/3: predicted on the display grid
    res = ex.regress(target, value="height", estimator="knn")
    direct = eoembed.regress(emb, target, value="height", estimator="knn")
    np.testing.assert_allclose(res.folds["r2"].values, direct.folds["r2"].values)
    full = direct.predict_map().compute()
    ov = ex.layer_data["regression"]
    np.testing.assert_allclose(ov.values, full["prediction"].sel(y=ov.y, x=ov.x).values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ex.layer_data["uncertainty"].values,
                               full["uncertainty"].sel(y=ov.y, x=ov.x).values, rtol=1e-5, atol=1e-5)
    assert ex.layers["regression"].name == "regression: height" and ex.view.controls["regression"].caption == "predicted height"
    assert "R²" in ex.view.widgets.report_w.value and "mean baseline" in ex.view.widgets.report_w.value
    s = res.summary()  # the classes explain much of the target: far above predict-the-mean
    assert s.loc["model", "r2"] > s.loc["mean baseline", "r2"] + 0.3, s
    ex.regress(target, value="height", estimator="ridge")  # no uncertainty from ridge: its layer goes
    assert "uncertainty" not in ex.layers and "uncertainty" not in ex.view.controls
    with pytest.raises(eoembed.exceptions.LabelError, match="empty"):
        ex.regress(target.to_dataframe().iloc[:0].reset_index(), value="height")



def test_the_display_grid_keeps_its_vectors_within_the_byte_budget(monkeypatch):
    import eoembed
    from eoembed.explore.layers import vector_side

    emb, _ = make_emb(120, 90, 64, seed=1)
    assert vector_side(emb, 1024, None) == 1024
    assert vector_side(emb, 1024, 50 * 50 * 64 * 4) == 50  # side² × 64 floats of 4 bytes fit
    per_time, _ = make_emb(40, 40, 8, times=6, seed=1)
    assert vector_side(per_time, 1024, 20 * 20 * 8 * 6 * 4) == 20  # every timestep is held
    monkeypatch.setattr(eoembed.explore.ExplorerState, "OVERVIEW_BYTES", 40 * 40 * 64 * 4)
    ex = eoembed.explore.explore(emb, scatter=None)  # max_pixels 1024 would hold the whole 120 × 90
    assert ex.state.grid.stride == 3 and max(ex.state.grid.ov.sizes["y"], ex.state.grid.ov.sizes["x"]) <= 40
    assert ex.state.grid.ov.nbytes <= 40 * 40 * 64 * 4
