"""Tests for eoembed.analysis: clusters, change, regression, trajectories.

Every number is checked against a direct computation on the same vectors (numpy,
scikit-learn, FAISS), on synthetic cubes with planted structure: two clusters, a
changed block, a linear target.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

faiss = pytest.importorskip("faiss")
pytest.importorskip("sklearn")
gpd = pytest.importorskip("geopandas")
import dask  # noqa: E402
import dask.array as da  # noqa: E402
import pandas as pd  # noqa: E402
import shapely  # noqa: E402
from sklearn.metrics import adjusted_rand_score, mean_squared_error, r2_score, silhouette_score  # noqa: E402

import eoembed  # noqa: E402
from eoembed.analysis import change, cluster, fit_clusters, otsu_threshold, regress, trajectory  # noqa: E402
from eoembed.classify import spatial_blocks, spatial_splits  # noqa: E402
from eoembed.exceptions import (  # noqa: E402
    DimensionError,
    EmptyDataError,
    GridMismatchError,
    IndexMismatchError,
    LabelError,
    MissingCRSError,
    ParameterError,
    QueryError,
    TooFewLabelsError,
)


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _vectors(emb):
    """(y*x, d) float64 vectors of a time-less cube, row-major."""
    return np.asarray(emb.transpose("y", "x", "embedding").values, np.float64).reshape(-1, emb.sizes["embedding"])


class _Counter(dask.callbacks.Callback):
    """Counts dask graph executions."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def _start(self, dsk):
        self.n += 1


# --------------------------------------------------------------------------------- clusters
@pytest.fixture(scope="module")
def two():
    """Two planted clusters (checkerboard of 10×10 blocks), 5 % masked patches."""
    return make_emb(40, 50, 16, n_classes=2, noise=0.3, nan_frac=0.05, seed=3)


def test_cluster_chooses_k_by_silhouette_and_recovers_planted_clusters(two):
    emb, truth = two
    cm = cluster(emb, k_range=(2, 6), seed=0)
    a = cm.attrs
    assert a["eoembed:cluster_criterion"] == "silhouette"
    assert a["eoembed:cluster_k_candidates"] == [2, 3, 4, 5, 6]
    scores = dict(zip(a["eoembed:cluster_k_candidates"], a["eoembed:cluster_scores"]))
    assert a["eoembed:cluster_k"] == 2 == max(scores, key=scores.get)
    ok = truth.values >= 0
    assert adjusted_rand_score(truth.values[ok], cm.values[ok]) == 1.0
    # the stored score is sklearn's silhouette of the map's labels on the (all < 4000) valid vectors
    v = _unit(_vectors(emb))
    valid = np.isfinite(v).all(axis=1)
    direct = silhouette_score(v[valid], cm.values.ravel()[valid], metric="cosine")
    assert scores[2] == pytest.approx(direct, abs=1e-5)


def test_cluster_assignment_equals_faiss_search_and_labels_are_ordered_by_size(two):
    emb, truth = two
    model = fit_clusters(emb, 3, seed=1)
    cm = model.predict_map(emb)
    v = _unit(_vectors(emb)).astype(np.float32)
    valid = np.isfinite(v).all(axis=1)
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(model.centroids)
    _, nn = index.search(np.ascontiguousarray(v[valid]), 1)
    np.testing.assert_array_equal(cm.values.ravel()[valid], nn[:, 0])
    assert (cm.values.ravel()[~valid] == -1).all()
    counts = np.bincount(cm.values.ravel()[valid], minlength=3)
    assert list(counts) == sorted(counts, reverse=True)  # 0 = largest (sample = every patch here)
    # same seed → same labels; the map carries grid, CRS, provenance and nodata
    np.testing.assert_array_equal(cluster(emb, 3, seed=1).values, cm.values)
    assert cm.dtype == np.int32 and cm.rio.nodata == -1
    assert cm.rio.crs == emb.rio.crs and cm.rio.transform() == emb.rio.transform()
    assert cm.attrs["eoembed:model"] == "synthetic" and cm.attrs["eoembed:cluster_criterion"] == "given"
    np.testing.assert_allclose(np.linalg.norm(model.centroids, axis=1), 1, atol=1e-5)


def test_cluster_dask_stays_lazy_and_equals_eager(two):
    emb, _ = two
    lazy = emb.chunk({"y": 16, "x": 20})
    with _Counter() as cnt:
        model = fit_clusters(lazy, 2, seed=0)
        sampled = cnt.n
        cm = model.predict_map(lazy)
        assert cnt.n == sampled  # building the map computes nothing
    assert isinstance(cm.data, da.Array)
    eager = fit_clusters(emb, 2, seed=0).predict_map(emb)
    np.testing.assert_array_equal(cm.compute().values, eager.values)


def test_cluster_time_selection():
    emb, truth = make_emb(20, 20, 8, n_classes=2, times=3, noise=0.3, seed=4)
    all_t = cluster(emb, 2)
    assert all_t.dims == ("time", "y", "x")
    one = cluster(emb, 2, time="2024-02-15")
    assert one.dims == ("y", "x")
    np.testing.assert_array_equal(one.values, cluster(emb.isel(time=1), 2).values)
    np.testing.assert_array_equal(cluster(emb, 2, time=1).values, one.values)
    np.testing.assert_array_equal(cluster(emb, 2, time="2024-02").values, one.values)  # partial date, one match
    with pytest.raises(ParameterError, match="does not name one timestep"):
        cluster(emb, 2, time="2030-01-01")
    with pytest.raises(ParameterError, match="out of range"):
        cluster(emb, 2, time=7)
    with pytest.raises(ParameterError, match="does not name one timestep"):
        cluster(emb, 2, time="2024")  # three timesteps match
    with pytest.raises(DimensionError, match="pool_time=False"):
        cluster(emb.isel(time=0), 2, time=0)


@pytest.mark.parametrize("kw, err", [
    ({"k": 1}, ParameterError), ({"k": 2.5}, ParameterError), ({"k": True}, ParameterError),
    ({"k_range": (5, 3)}, ParameterError), ({"k_range": 4}, ParameterError), ({"k_range": (1, 4)}, ParameterError),
    ({"sample": 0}, ParameterError), ({"seed": -1}, ParameterError), ({"k": 5000}, EmptyDataError),
])
def test_cluster_bad_parameters(two, kw, err):
    with pytest.raises(err):
        cluster(two[0], **kw)


def test_cluster_needs_crs(two):
    bare = xr.DataArray(two[0].values, dims=("embedding", "y", "x"))
    with pytest.raises(MissingCRSError):
        cluster(bare, 2)


def test_accessor_forms(two):
    emb, _ = two
    np.testing.assert_array_equal(emb.eo.cluster(2).values, eoembed.cluster(emb, 2).values)
    np.testing.assert_array_equal(emb.eo.change(emb, threshold=0.1).distance.values,
                                  eoembed.change(emb, emb, threshold=0.1).distance.values)
    assert callable(emb.eo.regress) and callable(emb.eo.trajectory)


# --------------------------------------------------------------------------------- change
@pytest.fixture(scope="module")
def pair():
    """emb_b = emb_a + small noise, with a planted 8×12 changed block (vectors reversed)."""
    a, _ = make_emb(30, 40, 16, n_classes=3, noise=0.3, seed=5)
    rng = np.random.default_rng(6)
    b = a.copy(deep=True)
    b.values = b.values + 0.05 * rng.standard_normal(b.shape).astype(np.float32)
    block = (slice(None), slice(10, 18), slice(20, 32))
    b.values[block] = -b.values[block] + 0.1 * rng.standard_normal((16, 8, 12)).astype(np.float32)
    planted = np.zeros((30, 40), bool)
    planted[10:18, 20:32] = True
    return a, b, planted


def test_change_distance_threshold_and_mask_match_direct(pair):
    a, b, planted = pair
    res = change(a, b)
    va, vb = _vectors(a), _vectors(b)
    direct = 1 - np.einsum("ij,ij->i", _unit(va), _unit(vb))
    np.testing.assert_allclose(res.distance.values.ravel(), direct, atol=1e-5)
    assert res.rule == "otsu"
    np.testing.assert_array_equal(res.changed.values, planted)
    # Otsu: the cut maximises between-class variance over every split of the sorted values (brute force)
    d = np.sort(direct)
    best = max(((i * (len(d) - i)) * (d[:i].mean() - d[i:].mean()) ** 2 for i in range(1, len(d))))
    lo, hi = d[d <= res.threshold], d[d > res.threshold]
    assert (len(lo) * len(hi)) * (lo.mean() - hi.mean()) ** 2 >= 0.999 * best
    assert res.distance.rio.crs == a.rio.crs and res.distance.rio.transform() == a.rio.transform()
    assert res.distance.attrs["eoembed:model"] == "synthetic"
    assert res.distance.attrs["eoembed:change_rule"] == "otsu"


def test_otsu_on_bimodal_values():
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(0.1, 0.02, 900), rng.normal(0.9, 0.05, 100)]
    assert 0.2 < otsu_threshold(v) < 0.75
    with pytest.raises(EmptyDataError):
        otsu_threshold(np.full(10, 0.3))


def test_change_most_changed_geodataframe(pair):
    a, b, planted = pair
    res = change(a, b, threshold=0.5, top=7)
    assert res.rule == "given" and res.threshold == 0.5
    gdf = res.most_changed
    assert len(gdf) == 7 and gdf.crs == a.rio.crs
    d = res.distance.values
    order = np.argsort(-d.ravel(), kind="stable")[:7]
    np.testing.assert_array_equal(gdf["row"] * d.shape[1] + gdf["col"], order)
    np.testing.assert_allclose(gdf["distance"], d.ravel()[order], rtol=1e-6)
    assert planted[gdf["row"], gdf["col"]].all()
    pitch = abs(a.rio.transform().a)
    assert np.allclose(gdf.geometry.area, pitch**2)
    assert shapely.contains_xy(gdf.geometry.values, gdf["x"], gdf["y"]).all()
    ds = res.to_dataset()
    assert set(ds.data_vars) == {"distance", "changed"} and int(ds["changed"].sum()) == int(res.changed.sum())


def test_change_dask_equals_eager_and_reads_chunkwise(pair):
    a, b, _ = pair
    lazy = change(a.chunk({"y": 10, "x": 10}), b.chunk({"y": 15, "x": 20}))
    eager = change(a, b)
    np.testing.assert_allclose(lazy.distance.values, eager.distance.values, atol=1e-6)
    assert lazy.threshold == eager.threshold
    # the distance graph never merges spatial chunks: one output chunk per input chunk of emb_a
    from eoembed.analysis.change import cosine_distance

    graph = cosine_distance(a.chunk({"y": 10, "x": 10}), b)
    assert isinstance(graph.data, da.Array) and graph.data.numblocks == (3, 4)


def test_change_time_pairs():
    emb, _ = make_emb(20, 20, 8, times=3, noise=0.3, seed=7)
    res = change(emb, time=("2024-01-15", 2))
    direct = change(emb.isel(time=0), emb.isel(time=2))
    np.testing.assert_allclose(res.distance.values, direct.distance.values)
    assert res.distance.attrs["eoembed:change_a"] == "2024-01-15"
    both = change(emb, emb.isel(time=slice(None, None, -1)).assign_coords(time=emb["time"].values), time=0)
    np.testing.assert_allclose(both.distance.values, direct.distance.values, atol=1e-6)
    with pytest.raises(ParameterError, match="time=\\(t0, t1\\)"):
        change(emb)
    with pytest.raises(ParameterError, match="time dimension"):
        change(emb, emb)


def test_change_refuses_different_grids_models_and_patch_sizes(pair):
    a, b, _ = pair
    with pytest.raises(GridMismatchError, match="Re-embed"):
        change(a, b.rio.write_crs("EPSG:32632"))
    shifted = b.assign_coords(x=b.x + 40).rio.write_transform(b.rio.transform() @ b.rio.transform().translation(0.5, 0))
    with pytest.raises(GridMismatchError, match="do not coincide"):
        change(a, shifted)
    with pytest.raises(GridMismatchError, match="do not coincide"):
        change(a, b.isel(x=slice(0, 30)))
    with pytest.raises(GridMismatchError, match="patch_size"):
        change(a, b.assign_attrs({"eoembed:patch_size": 16}))
    with pytest.raises(IndexMismatchError, match="different models"):
        change(a, b.assign_attrs({"eoembed:model": "other"}))
    # a subset (or PCA) of the same model's vectors is not "another model" (issue 27): the message names the dimension
    with pytest.raises(IndexMismatchError, match="embedding dimensions differ") as err:
        change(a, b.isel(embedding=slice(0, 8)).assign_attrs({"eoembed:embedding_dim": 8}))
    assert "come from different models" not in str(err.value)


@pytest.mark.parametrize("kw", [{"threshold": "mean"}, {"threshold": 3.0}, {"threshold": -0.1},
                                {"threshold": True}, {"top": -1}, {"top": 2.0}])
def test_change_bad_parameters(pair, kw):
    with pytest.raises(ParameterError):
        change(pair[0], pair[1], **kw)


def test_change_all_masked():
    a, _ = make_emb(10, 10, 8, seed=1)
    b = a.copy(data=np.full(a.shape, np.nan, np.float32))
    with pytest.raises(EmptyDataError):
        change(a, b)


# --------------------------------------------------------------------------------- regression
@pytest.fixture(scope="module")
def linear():
    """A cube and a raster target planted as a linear function of the vectors (plus small noise)."""
    emb, _ = make_emb(30, 40, 12, n_classes=3, noise=0.8, nan_frac=0.03, seed=8)
    rng = np.random.default_rng(9)
    w = rng.standard_normal(12)
    y = np.asarray(emb.transpose("y", "x", "embedding").values, np.float64) @ w + 290
    y = y + 0.05 * rng.standard_normal(y.shape)
    ras = xr.DataArray(y, dims=("y", "x"), coords={"y": emb.y, "x": emb.x}, attrs={"units": "K"})
    ras = ras.rio.write_crs(emb.rio.crs).rio.write_transform(emb.rio.transform())
    return emb, ras


def test_regress_cv_equals_sklearn_on_the_same_folds(linear):
    emb, ras = linear
    res = regress(emb, ras, estimator="ridge", n_splits=4)
    s = res.samples
    assert res.units == "K" and len(s) == int(np.isfinite(emb.isel(embedding=0).values).sum())
    X = np.stack([emb.isel(y=r, x=c).values for r, c in zip(s["row"], s["col"])])
    np.testing.assert_allclose(res.X, X)
    splits = spatial_splits(s[["x", "y"]].to_numpy(), spatial_blocks(s["x"], s["y"], res.block_size), 4,
                            buffer=res.buffer, random_state=0)
    from sklearn.base import clone

    assert len(splits) == len(res.folds) == 4
    for tr, te in splits:  # honest folds: no block on both sides, no training patch within the buffer of a test one
        assert not set(s["block"].iloc[tr]) & set(s["block"].iloc[te])
        gap = np.hypot(*(s[["x", "y"]].to_numpy()[tr][:, None] - s[["x", "y"]].to_numpy()[te][None]).T).min()
        assert gap >= res.buffer
    y = s["value"].to_numpy()
    for (tr, te), (_, row) in zip(splits, res.folds.iterrows()):
        p = clone(res.template).fit(X[tr], y[tr]).predict(X[te])
        assert row.r2 == pytest.approx(r2_score(y[te], p), abs=1e-9)
        assert row.rmse == pytest.approx(np.sqrt(mean_squared_error(y[te], p)), rel=1e-9)
        m = np.full(len(te), y[tr].mean())
        assert row.rmse_mean == pytest.approx(np.sqrt(mean_squared_error(y[te], m)), rel=1e-9)
    # pooled out-of-fold R²: every patch predicted once by the fold that held it out, against the overall mean
    oof = np.full(len(y), np.nan)
    for tr, te in splits:
        oof[te] = clone(res.template).fit(X[tr], y[tr]).predict(X[te])
    t = np.isfinite(oof)
    pooled = 1 - np.sum((y[t] - oof[t]) ** 2) / np.sum((y[t] - y[t].mean()) ** 2)
    summ = res.summary()
    assert summ.loc["model", "r2"] == pytest.approx(pooled, abs=1e-9)
    assert summ.loc["model", "r2_low"] <= summ.loc["model", "r2"] <= summ.loc["model", "r2_high"]
    assert summ.loc["model", "r2"] > 0.99 and summ.loc["mean baseline", "r2"] < 0.05
    assert summ.loc["model", "r2_fold_mean"] == pytest.approx(res.folds["r2"].mean())
    assert summ.loc["model", "skill"] > 0.9
    assert "spectral baseline" not in summ.index and "R²" in str(res)
    assert res.compare("mean").verdict == "A better" and "model better than mean baseline" in str(res)


def test_regress_predict_map_lazy_equals_eager_and_has_colourbar_attrs(linear):
    emb, ras = linear
    res = regress(emb, ras, estimator="ridge", n_splits=3)
    eager = res.predict_map()
    p = eager["prediction"]
    ok = np.isfinite(ras.values) & np.isfinite(emb.isel(embedding=0).values)
    np.testing.assert_allclose(p.values[ok], res.estimator_.predict(_vectors(emb)[ok.ravel()].astype(np.float32)),
                               rtol=1e-5)
    assert np.isnan(p.values[~np.isfinite(emb.isel(embedding=0).values)]).all()
    assert {"vmin", "vmax", "units", "long_name", "cmap"} <= set(p.attrs) and p.attrs["units"] == "K"
    assert p.attrs["vmin"] == pytest.approx(np.percentile(res.y, 2))
    assert "uncertainty" not in eager and p.rio.crs == emb.rio.crs
    lazy_emb = emb.chunk({"y": 10, "x": 20})
    with _Counter() as cnt:
        lazy = res.predict_map(lazy_emb)
        assert cnt.n == 0
    assert isinstance(lazy["prediction"].data, da.Array)
    np.testing.assert_allclose(lazy["prediction"].compute().values, p.values, rtol=1e-6)
    fitted_lazy = regress(lazy_emb, ras, estimator="ridge", n_splits=3)  # fitting reads only the target patches
    pd.testing.assert_frame_equal(fitted_lazy.folds, res.folds)


def test_regress_knn_uncertainty_is_neighbour_spread(linear):
    from sklearn.neighbors import NearestNeighbors

    emb, ras = linear
    res = regress(emb, ras, estimator="knn", n_splits=3)
    m = res.predict_map()
    X = _vectors(emb).astype(np.float32)
    ok = np.isfinite(X).all(axis=1)
    _, ind = NearestNeighbors(n_neighbors=10, metric="cosine").fit(res.X).kneighbors(X[ok])
    np.testing.assert_allclose(m["uncertainty"].values.ravel()[ok], res.y[ind].std(axis=1), rtol=1e-5)
    np.testing.assert_allclose(m["prediction"].values.ravel()[ok], res.y[ind].mean(axis=1), rtol=1e-5)


def test_regress_gp_uncertainty(linear):
    emb, ras = linear
    sub = emb.isel(y=slice(0, 10), x=slice(0, 12))
    res = regress(sub, ras, estimator="gp", n_splits=2, block_size=400.0)
    m = res.predict_map()
    u = m["uncertainty"].values
    assert np.nanmin(u) > 0 and "Gaussian-process" in m["uncertainty"].attrs["long_name"]
    mu, sd = res.estimator_.predict(res.X[:5], return_std=True)
    s = res.samples.iloc[:5]
    np.testing.assert_allclose(u[s["row"], s["col"]], sd, rtol=1e-4)


def test_regress_points_any_crs_and_dataframe(linear):
    from pyproj import Transformer

    emb, ras = linear
    ys, xs = emb.y.values, emb.x.values
    rr = np.array([2, 2, 5, 9, 14, 20, 25, 28, 3, 17, 22, 11])
    cc = np.array([3, 3, 30, 8, 19, 36, 2, 25, 12, 30, 10, 38])
    vals = np.arange(len(rr), dtype=float)
    tr = Transformer.from_crs(emb.rio.crs, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(xs[cc] + 5, ys[rr] - 5)
    gdf = gpd.GeoDataFrame({"t": vals}, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    from eoembed.analysis import sample_targets

    s = sample_targets(emb, gdf, value="t")
    assert len(s) == len(rr) - 1  # the first two share a patch: averaged
    first = s[(s.row == 2) & (s.col == 3)]
    assert first["value"].item() == pytest.approx(0.5)
    df = pd.DataFrame({"x": xs[cc], "y": ys[rr], "t": vals})
    s2 = sample_targets(emb, df, value="t")
    pd.testing.assert_frame_equal(s.sort_values(["row", "col"]).reset_index(drop=True),
                                  s2.sort_values(["row", "col"]).reset_index(drop=True))
    with pytest.raises(LabelError, match="no column"):
        sample_targets(emb, gdf, value="temperature")
    with pytest.raises(LabelError, match="no CRS"):
        sample_targets(emb, gpd.GeoDataFrame({"t": vals}, geometry=gpd.points_from_xy(lon, lat)), value="t")
    with pytest.raises(LabelError, match="inside"):
        sample_targets(emb, pd.DataFrame({"x": [0.0], "y": [0.0], "t": [1.0]}), value="t")


def test_regress_raster_on_finer_grid_is_area_mean(linear):
    emb, _ = linear
    pitch = abs(emb.rio.transform().a)
    t = emb.rio.transform()
    fine = np.random.default_rng(1).normal(280, 5, (30 * 4, 40 * 4))
    from affine import Affine

    ft = Affine(pitch / 4, 0, t.c, 0, -pitch / 4, t.f)
    fx = t.c + pitch / 4 * (np.arange(160) + 0.5)
    fy = t.f - pitch / 4 * (np.arange(120) + 0.5)
    r = xr.DataArray(fine, dims=("y", "x"), coords={"y": fy, "x": fx}).rio.write_crs(emb.rio.crs).rio.write_transform(ft)
    from eoembed.analysis import sample_targets

    s = sample_targets(emb, r)
    block_mean = fine.reshape(30, 4, 40, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(s["value"], block_mean[s["row"], s["col"]], rtol=1e-9)
    assert len(s) == 30 * 40


def test_regress_spectral_baseline_from_a_raw_cube():
    from eoembed.testing import synthetic_cube

    cube = synthetic_cube(height=64, width=64, times=2, seed=3)
    emb = eoembed.embed(cube, model="spectral", patch_size=4, progress=False)
    target = cube.isel(time=0).sel(band="B08").astype(float)  # a quantity the bands carry
    res = regress(emb, target, baseline_cube=cube, n_splits=3, block_size=160.0)
    assert res.folds["rmse_spectral"].notna().all() and res.baseline_model == "spectral"
    np.testing.assert_allclose(res.folds["rmse_spectral"], res.folds["rmse"], rtol=1e-6)  # same features
    assert "spectral baseline" in res.summary().index
    other, _ = make_emb(10, 10, 8, seed=2)
    with pytest.raises(GridMismatchError, match="same patch_size"):
        regress(emb, target, baseline_cube=other, n_splits=3, block_size=160.0)


@pytest.mark.parametrize("kw, err", [
    ({"cv": "kfold"}, ParameterError), ({"n_splits": 1}, ParameterError), ({"estimator": "svm"}, ParameterError),
    ({"block_size": -5}, ParameterError), ({"buffer": "a"}, ParameterError), ({"max_samples": 3}, ParameterError),
])
def test_regress_bad_parameters(linear, kw, err):
    with pytest.raises(err):
        regress(linear[0], linear[1], **kw)


def test_regress_refuses_a_classifier_and_too_few_targets(linear):
    from sklearn.linear_model import LogisticRegression

    emb, ras = linear
    with pytest.raises(ParameterError, match="regressor"):
        regress(emb, ras, estimator=LogisticRegression())
    few = pd.DataFrame({"x": emb.x.values[:4], "y": emb.y.values[:4], "value": [1.0, 2, 3, 4]})
    with pytest.raises(TooFewLabelsError):
        regress(emb, few)
    with pytest.raises(LabelError, match="one"):
        regress(emb, pd.DataFrame({"x": emb.x.values[:12], "y": emb.y.values[[0] * 12], "value": np.arange(12.0)}),
                n_splits=2, block_size=1e6)


def test_regress_random_cv_is_labelled_optimistic(linear):
    res = regress(*linear, cv="random", n_splits=3)
    assert "optimistic" in str(res) and res.buffer == 0.0


# --------------------------------------------------------------------------------- time
def test_trajectory_matches_direct_cosine_and_pca():
    emb, _ = make_emb(12, 12, 8, times=4, noise=0.5, seed=11)
    emb.values[0, :, 3, 4] = np.nan  # first timestep masked at the probed patch
    x, y = float(emb.x[4]), float(emb.y[3])
    df = trajectory(emb, (x + 10, y - 10))
    v = emb.isel(y=3, x=4).transpose("time", "embedding").values.astype(np.float64)
    first = v[1]
    direct = (v @ first) / (np.linalg.norm(v, axis=1) * np.linalg.norm(first))
    assert np.isnan(df["similarity_to_first"].iloc[0]) and not df["valid"].iloc[0]
    np.testing.assert_allclose(df["similarity_to_first"].to_numpy()[1:], direct[1:], atol=1e-6)
    from eoembed.reduce import fit_pca

    p = fit_pca(emb, 1)  # its own fit (a sample of every timestep's vectors): project on it directly
    sample = eoembed.reduce.sample_vectors(emb, 20_000).astype(np.float64)
    mean = sample.mean(axis=0)
    pc1 = np.linalg.svd(sample - mean, full_matrices=False)[2][0]
    pc1 = pc1 * np.sign(pc1[np.argmax(np.abs(pc1))])
    np.testing.assert_allclose(df["pca1"].to_numpy()[1:], (v[1:] - mean) @ pc1, rtol=1e-4, atol=1e-5)
    del p
    assert df.attrs["row"] == 3 and df.attrs["col"] == 4 and list(df.index) == list(emb.time.values)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(emb.rio.crs, "EPSG:4326", always_xy=True).transform(x, y)
    pd.testing.assert_frame_equal(trajectory(emb, shapely.Point(lon, lat), crs="EPSG:4326"), df)
    with pytest.raises(DimensionError, match="pool_time=False"):
        trajectory(emb.isel(time=0), (x, y))
    with pytest.raises(QueryError, match="outside"):
        trajectory(emb, (0.0, 0.0))
    with pytest.raises(QueryError):
        trajectory(emb, "here")


def test_similarity_map_time_selection():
    from eoembed.index import similarity_map

    emb, _ = make_emb(10, 12, 8, times=3, seed=12)
    q = emb.isel(time=0, y=0, x=0).values
    one = similarity_map(emb, q, time=2)
    np.testing.assert_allclose(one.values, similarity_map(emb.isel(time=2), q).values)
    assert one.dims == ("y", "x")
    with pytest.raises(ParameterError):
        similarity_map(emb, q, time="1999-01-01")


def test_no_warnings_on_clean_inputs(two, pair):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("error", RuntimeWarning)
        cluster(two[0], 2)
        change(pair[0], pair[1])


def test_change_knows_when_there_is_no_change(pair):
    a, _, _ = pair
    same = change(a, a.copy(deep=True))
    assert same.rule == "no change" and not same.changed.values.any()
    assert len(same.most_changed) == 0 and "no change" in repr(same)


def test_change_bimodality_check_and_stable_null(pair):
    a, b, planted = pair
    res = change(a, b)
    assert res.bimodal, res.modes  # a planted block of reversed vectors: two groups
    # a seasonal shift: every patch moves a little, by varying amounts — one group
    rng = np.random.default_rng(11)
    shift = a.copy(deep=True)
    shift.values = a.values + rng.gamma(4.0, 0.05, size=(1, 30, 40)).astype(np.float32) * rng.standard_normal(
        a.shape).astype(np.float32)
    uni = change(a, shift)
    assert not uni.bimodal
    assert "unimodal" in uni.verdict and "threshold=" in uni.verdict
    assert uni.distance.attrs["eoembed:change_bimodal"] == 0
    # the stable pair's false-change rate beside the threshold
    quiet = a.copy(deep=True)
    quiet.values = a.values + 0.05 * rng.standard_normal(a.shape).astype(np.float32)
    withnull = change(a, b, null=(a, quiet))
    assert withnull.null is not None and withnull.null.shape == (30, 40)
    assert withnull.null_exceed == pytest.approx(float((withnull.null.values > withnull.threshold).mean()))
    assert withnull.null_exceed < 0.01 and "stable pair" in withnull.verdict
    with pytest.raises(ParameterError, match="stable pair"):
        change(a, b, null=a)


def test_histogram_modes_on_known_shapes():
    from eoembed.analysis.change import histogram_modes

    rng = np.random.default_rng(0)
    assert not histogram_modes(rng.normal(0.3, 0.05, 5000))[0]
    assert not histogram_modes(rng.lognormal(-3, 0.6, 5000))[0]  # skewed, one mode
    assert histogram_modes(np.r_[rng.normal(0.05, 0.01, 4000), rng.normal(0.6, 0.05, 800)])[0]


def test_regress_refuses_meaningless_targets(linear):
    emb, ras = linear
    with pytest.raises(LabelError, match="constant"):
        regress(emb, ras * 0 + 290.0)
    pts = pd.DataFrame({"x": emb.x.values[np.arange(30) % 40], "y": emb.y.values[np.arange(30) % 30]})
    with pytest.raises(LabelError, match="decimal commas"):
        regress(emb, pts.assign(value=[f"{v:.1f}".replace(".", ",") for v in np.linspace(280, 300, 30)]))
    with pytest.raises(LabelError, match="not numeric"):
        regress(emb, pts.assign(value=["wheat", "maize", "grass"] * 10))
    with pytest.raises(LabelError, match="categorical"):
        regress(emb, pts.assign(value=pd.Categorical([1, 2, 3] * 10)))


def test_regress_plot_and_uncertainty_check(linear):
    import matplotlib

    matplotlib.use("Agg")
    emb, ras = linear
    res = regress(emb, ras, estimator="knn", n_splits=3)
    axes = res.plot()
    assert len(axes) == 2
    assert "observed" in axes[0].get_xlabel() and "[K]" in axes[0].get_xlabel()
    assert "out-of-fold R²" in axes[0].get_title() and axes[0].get_legend() is not None
    assert "Spearman" in axes[1].get_title()
    rho = res.uncertainty_check()
    assert np.isfinite(rho) and -1 <= rho <= 1
    assert np.isnan(regress(emb, ras, estimator="ridge", n_splits=3).uncertainty_check())


def test_regression_result_keeps_its_work(linear, monkeypatch):
    """Printing, plot() and uncertainty_check() refit nothing and bootstrap the summary once; the out-of-fold
    uncertainty is the one of the fold model whose prediction is scored (same training rows)."""
    import sys

    import matplotlib

    import eoembed.stats as st

    rg = sys.modules["eoembed.analysis.regress"]  # the module (eoembed.analysis.regress is also the function)

    matplotlib.use("Agg")
    emb, ras = linear
    res = regress(emb, ras, estimator="knn", n_splits=3)
    fits, boots = [0], [0]
    real_fit, real_boot = rg._fit, st.block_bootstrap
    monkeypatch.setattr(rg, "_fit", lambda *a: (fits.__setitem__(0, fits[0] + 1), real_fit(*a))[1])
    monkeypatch.setattr(st, "block_bootstrap", lambda *a, **k: (boots.__setitem__(0, boots[0] + 1),
                                                                 real_boot(*a, **k))[1])
    first = str(res)
    assert boots[0] == 2  # model and mean baseline (no spectral baseline here), once
    assert str(res) == first and repr(res.summary()) == repr(res.summary())
    res.plot()
    rho = res.uncertainty_check()
    assert fits[0] == 0 and boots[0] == 2, (fits, boots)
    edited = res.summary()
    edited.loc["model", "r2"] = 99.0  # a copy: the kept summary is untouched
    assert str(res) == first
    assert res.summary(n_boot=50).shape == res.summary().shape and boots[0] == 4  # another setting: computed
    # the kept uncertainty is the fold model's: refit each fold on its training rows and compare
    folds = res.samples["fold"].to_numpy()
    splits = rg._classify().plan_folds(len(res.y), xy=res.samples[["x", "y"]].to_numpy(), spatial=True,
                                       block_size=res.block_size, buffer=res.buffer, n_splits=3, random_state=0,
                                       what="t").splits
    want = np.full(len(res.y), np.nan)
    for i, (tr, te) in enumerate(splits):
        want[te] = rg._predict(real_fit(res.template, res.X[tr], res.y[tr]), res.X[te], res.y[tr])[1]
    np.testing.assert_allclose(res.oof_uncertainty(), want)
    assert np.isfinite(res.oof_uncertainty()[folds >= 0]).all() and np.isfinite(rho)
    assert np.isnan(regress(emb, ras, estimator="ridge", n_splits=3).oof_uncertainty()).all()


def test_cluster_says_when_the_data_do_not_support_k():
    rng = np.random.default_rng(4)
    emb, _ = make_emb(20, 20, 8, n_classes=3, noise=0.05, seed=4)
    fit = fit_clusters(emb, 3)
    assert fit.structure in ("reasonable", "strong") and fit.silhouette > 0.5
    # one isotropic cloud: any k partitions a continuum
    blob = emb.copy(data=rng.standard_normal(emb.shape).astype(np.float32))
    with pytest.warns(UserWarning, match="no substantial cluster structure"):
        out = cluster(blob, 4)
    assert out.attrs["eoembed:cluster_structure"] == "none"
    same = emb.copy(data=np.ones(emb.shape, np.float32))
    with pytest.raises(EmptyDataError, match="distinct"):
        cluster(same, 3)
