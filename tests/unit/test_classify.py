"""Tests for eoembed.classify: label sampling, spatial-block CV, class/probability maps."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

gpd = pytest.importorskip("geopandas")
pytest.importorskip("sklearn")
import shapely  # noqa: E402
from pyproj import Transformer  # noqa: E402

from eoembed.classify import FewShotClassifier, fewshot, sample_labels, spatial_blocks  # noqa: E402
from eoembed.exceptions import LabelError, ParameterError  # noqa: E402

NAMES = np.array(["crop", "forest", "water"])


@pytest.fixture(scope="module")
def cube():
    return make_emb(40, 50, 16, nan_frac=0.05, noise=0.6, seed=2)


def points(emb, truth, n=150, seed=0, crs=32631):
    rng = np.random.default_rng(seed)
    r, c = rng.integers(0, emb.sizes["y"], n), rng.integers(0, emb.sizes["x"], n)
    keep = truth.values[r, c] >= 0
    r, c = r[keep], c[keep]
    x, y = emb.x.values[c] + 10, emb.y.values[r] - 10  # off-centre, inside the patch
    if crs != 32631:
        x, y = Transformer.from_crs(32631, crs, always_xy=True).transform(x, y)
    return gpd.GeoDataFrame({"class": NAMES[truth.values[r, c]]}, geometry=gpd.points_from_xy(x, y), crs=crs), r, c


def test_points_in_other_crs_are_reprojected(cube):
    emb, truth = cube
    gdf, r, c = points(emb, truth, crs=4326)
    s = sample_labels(emb, gdf)
    # duplicates merged, order kept
    pairs = list(dict.fromkeys(zip(r.tolist(), c.tolist())))
    assert list(zip(s["row"], s["col"])) == pairs
    assert (s["label"].to_numpy() == NAMES[truth.values[s["row"], s["col"]]]).all()
    np.testing.assert_allclose(s["x"], emb.x.values[s["col"]])


def test_fewshot_points_end_to_end(cube):
    emb, truth = cube
    gdf, _, _ = points(emb, truth)
    clf = fewshot(emb, gdf)
    assert isinstance(clf, FewShotClassifier) and list(clf.classes_) == list(NAMES)
    rep = clf.cv_report()
    assert rep.spatial and rep.n_splits == 5 and rep.accuracy > 0.8
    assert list(rep.per_class.columns) == ["precision", "recall", "f1", "support"]
    assert list(rep.confusion.index) == list(NAMES) == list(rep.confusion.columns)
    assert int(rep.confusion.values.sum()) == rep.n_samples == len(clf.y)
    assert "spatial-block CV" in str(rep) and rep.to_dict()["n_blocks"] == rep.n_blocks
    ds = clf.predict_map()
    assert set(ds.data_vars) == {"class", "probability"}
    assert ds["class"].dims == ("y", "x") and ds["probability"].dims == ("label", "y", "x")
    assert list(ds["label"].values) == list(NAMES)
    np.testing.assert_array_equal(ds.x, emb.x)
    assert ds.rio.crs == emb.rio.crs and ds["class"].rio.transform() == emb.rio.transform()
    assert ds["class"].attrs["flag_meanings"] == "crop forest water"
    nan = truth.values < 0
    assert (ds["class"].values[nan] == -1).all() and ds["class"].rio.nodata == -1
    assert np.isnan(ds["probability"].values[:, nan]).all()
    np.testing.assert_allclose(ds["probability"].values[:, ~nan].sum(0), 1, atol=1e-5)
    acc = (ds["class"].values == truth.values)[~nan].mean()
    assert acc > 0.9


def test_polygons_label_all_patch_centres_inside(cube):
    emb, truth = cube
    x0, y0 = emb.x.values[2], emb.y.values[2]
    box = shapely.box(x0 - 1, emb.y.values[5] - 1, emb.x.values[6] + 1, y0 + 1)  # rows 2-5, cols 2-6
    tiny = shapely.Point(emb.x.values[30] + 5, emb.y.values[30] - 5).buffer(3)  # inside one patch
    gdf = gpd.GeoDataFrame({"lc": ["a", "b"]}, geometry=[box, tiny], crs=32631)
    s = sample_labels(emb, gdf, class_column="lc")
    a = s[s["label"] == "a"]
    assert sorted(zip(a["row"], a["col"])) == [(r, c) for r in range(2, 6) for c in range(2, 7)]
    assert s[s["label"] == "b"][["row", "col"]].values.tolist() == [[30, 30]]


def test_label_raster_on_another_grid(cube):
    emb, truth = cube
    # a 20 m raster in UTM 31N covering the left 3/4 of the cube, nodata 255 in one corner
    import rioxarray  # noqa: F401
    from affine import Affine

    fine = np.repeat(np.repeat(truth.values, 4, axis=0), 4, axis=1)[:, :150].astype(np.uint8)
    fine[fine == 255] = 0
    fine = np.where(truth.values.repeat(4, 0).repeat(4, 1)[:, :150] < 0, 255, fine).astype(np.uint8)
    fine[:20, :20] = 255
    tr = emb.rio.transform()
    ras = xr.DataArray(fine, dims=("y", "x"),
                       coords={"y": tr.f - 20 * (np.arange(160) + 0.5), "x": tr.c + 20 * (np.arange(150) + 0.5)})
    ras = ras.rio.write_crs(32631).rio.write_transform(Affine(20, 0, tr.c, 0, -20, tr.f)).rio.write_nodata(255)
    s = sample_labels(emb, ras)
    assert s["col"].max() == 36 and (s["label"] == truth.values[s["row"], s["col"]]).all()
    assert not ((s["row"] < 5) & (s["col"] < 5)).any()  # nodata corner excluded
    # same raster reprojected to lon/lat still lands on the right patches (nearest)
    ras_ll = ras.rio.reproject("EPSG:4326", resolution=0.0001)
    s2 = sample_labels(emb, ras_ll)
    assert (s2["label"].astype(int) == truth.values[s2["row"], s2["col"]]).mean() > 0.97
    clf = fewshot(emb, ras, max_samples=500)
    assert len(clf.y) == 500 and clf.cv_report().accuracy > 0.85


def test_cv_blocks_are_disjoint_and_buffered(cube):
    emb, truth = cube
    gdf, _, _ = points(emb, truth, n=400, seed=3)
    clf = fewshot(emb, gdf, block_size=640, buffer=200)
    blocks = clf.samples["block"].to_numpy()
    xy = clf.samples[["x", "y"]].to_numpy()
    folds = clf.folds()
    assert len(folds) == 5
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen) == list(range(len(clf.y)))  # every sample tested exactly once
    for tr, te in folds:
        assert not set(blocks[tr]) & set(blocks[te])
        d = np.hypot(*(xy[tr][:, None, :] - xy[te][None, :, :]).transpose(2, 0, 1))
        assert d.min() >= 200
    # blocks are 640 m squares
    b = spatial_blocks(xy[:, 0], xy[:, 1], 640)
    for g in np.unique(b):
        p = xy[b == g]
        assert np.ptp(np.floor(p / 640), axis=0).max() == 0


def test_spatial_cv_is_honest_where_random_cv_leaks():
    # Embeddings carry no class signal, only a per-block "place" signature; classes are
    # random per block. Memorising neighbours wins random CV, not spatial CV.
    rng = np.random.default_rng(5)
    ny = nx = 40
    d = 8
    blocks = (np.arange(ny)[:, None] // 5) * 8 + np.arange(nx)[None, :] // 5
    sig = rng.standard_normal((64, d))
    cls = rng.integers(0, 2, 64)
    vec = sig[blocks] + 0.1 * rng.standard_normal((ny, nx, d))
    emb, _ = make_emb(ny, nx, d, seed=5)
    emb = emb.copy(data=np.moveaxis(vec, -1, 0).astype(np.float32))
    truth = xr.DataArray(cls[blocks], dims=("y", "x"), coords={"y": emb.y, "x": emb.x}).rio.write_crs(32631)
    truth = truth.rio.write_transform(emb.rio.transform())
    clf = fewshot(emb, truth, estimator="knn", block_size=400)
    honest, leaky = clf.cv_report().accuracy, clf.cv_report(spatial=False).accuracy
    assert leaky > 0.95
    assert honest < 0.75
    assert clf.cv_report() is clf.cv_report()  # cached


def test_lazy_predict_map_equals_eager(cube):
    emb, truth = cube
    gdf, _, _ = points(emb, truth)
    lazy = emb.chunk({"embedding": 4, "y": 16, "x": 20})
    clf_l = fewshot(lazy, gdf)
    clf_e = fewshot(emb, gdf)
    ml, me = clf_l.predict_map(), clf_e.predict_map()
    assert ml["class"].chunks is not None and ml["probability"].chunks is not None
    xr.testing.assert_allclose(ml.compute(), me, atol=1e-5)


def test_time_feature_modes():
    emb, truth = make_emb(20, 20, 8, times=3, seed=6, block=5)
    rr, cc = np.meshgrid(np.arange(0, 20, 2), np.arange(0, 20, 2), indexing="ij")
    gdf = gpd.GeoDataFrame({"class": truth.values[rr, cc].ravel()},
                           geometry=gpd.points_from_xy(emb.x.values[cc.ravel()], emb.y.values[rr.ravel()]), crs=32631)
    assert fewshot(emb, gdf).X.shape[1] == 24  # stacked
    assert fewshot(emb, gdf, time="mean").X.shape[1] == 8
    one = fewshot(emb, gdf, time=emb.time.values[1])
    assert one.X.shape[1] == 8
    np.testing.assert_allclose(one.X[0], emb.isel(time=1, y=0, x=0).values)
    for clf in (fewshot(emb, gdf), one, fewshot(emb, gdf, time=2)):
        m = clf.predict_map()
        assert m["class"].dims == ("y", "x")
        assert (m["class"].values == truth.values).mean() > 0.9
        assert m["class"].dtype == np.int32  # integer labels kept as values
        assert m["class"].attrs["flag_values"] == [0, 1, 2]
    with pytest.raises(ParameterError, match="not in the cube's times"):
        fewshot(emb, gdf, time=np.datetime64("2031-01-01"))


def test_pluggable_estimators(cube):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import LinearSVC

    emb, truth = cube
    gdf, _, _ = points(emb, truth)
    rf = RandomForestClassifier(n_estimators=20, random_state=0)
    clf = fewshot(emb, gdf, estimator=rf)
    assert clf.estimator_ is not rf and type(clf.estimator_) is RandomForestClassifier
    assert clf.cv_report().accuracy > 0.7
    svc = fewshot(emb, gdf, estimator=LinearSVC())  # no predict_proba: one-hot probabilities
    p = svc.predict_map()["probability"].values
    assert set(np.unique(p[np.isfinite(p)])) <= {0.0, 1.0}
    with pytest.raises(ParameterError, match="Unknown estimator"):
        fewshot(emb, gdf, estimator="deep-magic")


def test_label_errors(cube):
    emb, truth = cube
    gdf, _, _ = points(emb, truth)
    with pytest.raises(LabelError, match="empty"):
        fewshot(emb, gdf.iloc[:0])
    with pytest.raises(LabelError, match="one class"):
        fewshot(emb, gdf[gdf["class"] == "water"])
    far = gdf.copy()
    far.geometry = far.geometry.translate(1e6, 0)
    with pytest.raises(LabelError, match="fall inside the embedding cube"):
        fewshot(emb, far)
    with pytest.raises(LabelError, match="no CRS"):
        fewshot(emb, gdf.set_crs(None, allow_override=True))
    with pytest.raises(LabelError, match="class_column"):
        fewshot(emb, gdf, class_column="landcover")
    with pytest.raises(LabelError, match="GeoDataFrame"):
        fewshot(emb, [(1, 2, "a")])
    r, c = np.argwhere(truth.values < 0)[:2].T
    masked = gpd.GeoDataFrame({"class": ["a", "b"]}, geometry=gpd.points_from_xy(emb.x.values[c], emb.y.values[r]),
                              crs=32631)
    with pytest.raises(LabelError, match="NaN"):
        fewshot(emb, masked)
    # a few masked labels are excluded with a warning, not an error
    mixed = gpd.GeoDataFrame(__import__("pandas").concat([gdf, masked], ignore_index=True), crs=32631)
    with pytest.warns(UserWarning, match="NaN"):
        clf = fewshot(emb, mixed)
    assert clf.excluded == 2
    # conflicting labels on one patch are dropped; partly-outside labels warn
    conflict = gpd.GeoDataFrame(__import__("pandas").concat([gdf, gdf.iloc[:1].assign(**{"class": "other"})]),
                                crs=32631)
    with pytest.warns(UserWarning, match="disagree"):
        clf = fewshot(emb, conflict)
    assert "other" not in clf.classes_
    with pytest.warns(UserWarning, match="outside"):
        fewshot(emb, __import__("pandas").concat([gdf, far.iloc[:3]]))
    # everything in one block: no honest split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fewshot(emb, gdf, block_size=1e7)
    with pytest.raises(LabelError, match="one .* block"):
        clf.cv_report()


def _few_labels(emb, truth, per_class, seed=0):
    """Point labels: ``per_class[k]`` patches of planted class k, spread over the cube."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, n in enumerate(per_class):
        rc = np.argwhere(truth.values == k)
        rows += [(r, c, k) for r, c in rc[rng.choice(len(rc), n, replace=False)]]
    r, c, k = np.array(rows).T
    return gpd.GeoDataFrame({"class": NAMES[k]}, geometry=gpd.points_from_xy(emb.x.values[c], emb.y.values[r]),
                            crs=32631)


@pytest.mark.parametrize("spatial", [True, False])
def test_folds_are_capped_by_the_rarest_class_with_a_warning(cube, spatial):
    emb, truth = cube
    clf = fewshot(emb, _few_labels(emb, truth, [6, 3, 8]), block_size=200, buffer=0)
    assert clf.samples["block"].nunique() >= 5  # the block count is not what limits the folds
    with pytest.warns(UserWarning, match=r"n_splits=3 instead of 5: class 'forest' has only 3"):
        folds = clf.folds(spatial=spatial)
    assert len(folds) == 3
    for tr, te in folds:  # every sample is tested exactly once over the folds
        assert not set(tr) & set(te)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(len(clf.y)))
    with pytest.warns(UserWarning, match="n_splits=3"):
        rep = clf.cv_report(spatial=spatial)
    assert rep.n_splits == 3 and any("n_splits=3" in n for n in rep.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for no more folds than possible: silent
        assert len(clf.folds(spatial=spatial, n_splits=2)) == 2


def test_folds_refuse_a_class_with_one_label(cube):
    from eoembed.exceptions import EOEmbedError, TooFewLabelsError

    emb, truth = cube
    clf = fewshot(emb, _few_labels(emb, truth, [4, 1, 4]), block_size=200)
    for spatial in (True, False):
        with pytest.raises(TooFewLabelsError, match=r"Class 'forest' has 1 labelled patch.*Add more labels of 'forest'"):
            clf.folds(spatial=spatial)
    with pytest.raises(LabelError, match="crop: 4, forest: 1, water: 4") as err:
        clf.cv_report()
    assert isinstance(err.value, EOEmbedError)
    assert clf.predict_map()["class"].sizes["y"] == emb.sizes["y"]  # the classifier itself still works
