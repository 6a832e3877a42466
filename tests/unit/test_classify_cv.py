"""eoembed.classify pieces: the one split function, the CV report, the estimator factory, label sampling."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

gpd = pytest.importorskip("geopandas")
pytest.importorskip("sklearn")
import shapely  # noqa: E402

from eoembed.classify import (  # noqa: E402
    SpatialBlockKFold,
    classification_report,
    fit_estimator,
    make_estimator,
    plan_folds,
    sample_labels,
    spatial_blocks,
)
from eoembed.exceptions import LabelError, ParameterError, TooFewLabelsError  # noqa: E402


def _scatter(n, seed, extent=4000.0, n_classes=3):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, (n, 2)) + [500_000, 5_700_000]
    y = rng.integers(0, n_classes, n)
    return xy, y


def _min_gap(xy, tr, te):
    d = np.hypot(*(xy[tr][:, None, :] - xy[te][None, :, :]).transpose(2, 0, 1))
    return float(d.min())


# ---- the split function -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, block, buffer, classes", [(0, 500.0, 120.0, True), (1, 800.0, 300.0, True),
                                                          (2, 400.0, 0.0, True), (3, 600.0, 150.0, False)])
def test_spatial_folds_never_put_neighbours_across_train_and_test(seed, block, buffer, classes):
    xy, y = _scatter(300, seed)
    f = plan_folds(len(xy), xy=xy, y=y if classes else None, block_size=block, buffer=buffer, n_splits=5,
                   random_state=seed)
    assert f.n_splits == len(f.splits) == 5 and not f.notes
    assert sorted(np.concatenate([te for _, te in f.splits]).tolist()) == list(range(len(xy)))  # each tested once
    blocks = spatial_blocks(xy[:, 0], xy[:, 1], block)
    np.testing.assert_array_equal(f.blocks, blocks)
    for tr, te in f.splits:
        assert not set(blocks[tr]) & set(blocks[te])  # a block is on one side only
        assert not set(tr) & set(te)
        if buffer:
            assert _min_gap(xy, tr, te) >= buffer  # no training sample within the buffer of a test one
            # and only samples within the buffer were dropped
            rest = np.setdiff1d(np.setdiff1d(np.arange(len(xy)), te), tr)
            if len(rest):
                assert _min_gap(xy, rest, te) < buffer
        else:
            assert len(tr) + len(te) == len(xy)
    if classes:  # stratified: every training part sees every class
        assert all(len(np.unique(y[tr])) == 3 for tr, _ in f.splits)


def test_split_function_caps_folds_and_says_why():
    xy, y = _scatter(60, 4)
    y[:] = 0
    y[:3] = 1  # a rare class of 3
    f = plan_folds(len(y), xy=xy, y=y, block_size=300.0, n_splits=5)
    assert f.n_splits == 3 and f.notes == ["Using n_splits=3 instead of 5: class '1' has only 3 labelled "
                                           "patches. Add labelled patches for more folds."]
    near = xy[:, :1].repeat(2, 1) * 0 + [[500_000, 5_700_000]] + np.arange(60)[:, None] * [[1.0, 0]]
    few_blocks = plan_folds(60, xy=near, block_size=40.0, n_splits=5, what="target patches")  # 2 blocks
    assert few_blocks.n_splits == 2 and "only 2 blocks of 40 m" in few_blocks.notes[0]
    with pytest.raises(LabelError, match="one 1e\\+06 m block"):
        plan_folds(60, xy=near, block_size=1e6)
    y[0] = 2
    with pytest.raises(TooFewLabelsError, match="Class '2' has 1 tiles; cross-validation needs >= 2 tiles"):
        plan_folds(60, y=y, spatial=False, what="tiles")
    with pytest.raises(ParameterError, match="xy="):
        plan_folds(60, spatial=True, block_size=100.0)
    # random folds: stratified K-fold for classes, K-fold for values; deterministic by seed
    y2 = np.arange(60) % 3
    r = plan_folds(60, y=y2, spatial=False, n_splits=4, random_state=7)
    assert r.blocks is None and r.n_splits == 4
    assert all(np.bincount(y2[te]).tolist() == [5, 5, 5] for _, te in r.splits)
    again = plan_folds(60, y=y2, spatial=False, n_splits=4, random_state=7)
    assert all((a[1] == b[1]).all() for a, b in zip(r.splits, again.splits))
    assert plan_folds(60, spatial=False, n_splits=6).n_splits == 6


def test_splitter_warns_with_the_planned_note_and_counts_without_building():
    xy, y = _scatter(80, 5)
    y[:] = 0
    y[:4] = 1
    cv = SpatialBlockKFold(xy, block_size=500.0, buffer=100.0, n_splits=5)
    assert cv.get_n_splits() == 5 and cv.get_n_splits(xy, y) == 4
    with pytest.warns(UserWarning, match="n_splits=4 instead of 5"):
        folds = list(cv.split(xy, y))
    assert len(folds) == 4 and all(_min_gap(xy, tr, te) >= 100 for tr, te in folds)


# ---- the CV report ---------------------------------------------------------------------------------------
def test_classification_report_fields_match_a_hand_count():
    y = np.array(list("aaabbbcccaab"))
    classes = np.array(["a", "b", "c"])
    splits = [(np.array([0, 1, 3, 4, 6, 7]), np.array([2, 5, 8])),
              (np.array([5, 8]), np.array([0, 1, 3])),  # class "a" absent from training; 7 rows dropped
              (np.array([0, 9]), np.array([10, 11]))]  # single-class training part: skipped
    wrong = {1, 8}  # test rows predicted wrongly: 1 ("a" as "b"), 8 ("c" as "a")

    def fit_predict(tr, te):
        return np.array([("b" if y[i] == "a" else "a") if i in wrong else y[i] for i in te])

    rep = classification_report(fit_predict, y, classes, splits, notes=["given"], n_blocks=7, block_size=640.0,
                                buffer=200.0, spatial=True)
    tested = [2, 5, 8, 0, 1, 3]
    assert rep.n_samples == 12 and rep.n_splits == 3 and rep.n_blocks == 7
    assert rep.accuracy == pytest.approx(4 / 6)
    assert rep.fold_accuracy == [pytest.approx(2 / 3), pytest.approx(2 / 3)]
    assert rep.dropped_by_buffer == (12 - 3 - 6) + (12 - 3 - 2) + (12 - 2 - 2)
    assert rep.confusion.loc["c", "a"] == 1 and rep.confusion.loc["a", "b"] == 1
    assert int(rep.confusion.values.sum()) == len(tested)
    assert rep.per_class["support"].tolist() == [3, 2, 1]
    assert rep.per_class.loc["a", "recall"] == pytest.approx(2 / 3) and rep.per_class.loc["c", "recall"] == 0
    assert rep.notes == ["given", "fold 1: class(es) ['a'] absent from training",
                         "fold 2 skipped: its training part has a single class"]
    d = rep.to_dict()
    json.dumps(d)  # JSON-friendly
    assert d["accuracy"] == rep.accuracy and d["buffer"] == 200.0 and d["spatial"] is True
    text = str(rep)
    assert "spatial-block CV: 3 folds over 7 blocks of 640 m, buffer 200 m" in text and "note: given" in text
    with pytest.raises(LabelError, match="No fold"):
        classification_report(fit_predict, y, classes, [splits[2]], notes=[], n_blocks=1, block_size=1.0,
                              buffer=0.0, spatial=False)


# ---- the estimator factory -----------------------------------------------------------------------------
def test_one_estimator_factory_for_classes_and_values():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    lr = make_estimator("logistic")
    assert [type(s).__name__ for _, s in lr.steps] == ["StandardScaler", "LogisticRegression"]
    assert lr.steps[-1][1].class_weight == "balanced"
    assert make_estimator("logistic", class_weight=None).steps[-1][1].class_weight is None
    knn = make_estimator("knn")
    assert type(knn).__name__ == "KNeighborsClassifier" and knn.weights == "distance"
    knn2 = make_estimator("knn", standardize=True, n_neighbors=3, weights="uniform")
    assert knn2.steps[-1][1].n_neighbors == 3 and knn2.steps[-1][1].weights == "uniform"
    assert make_estimator("random_forest", random_state=4).random_state == 4
    ridge = make_estimator("ridge", task="regression")
    assert type(ridge.steps[-1][1]).__name__ == "RidgeCV"
    assert type(make_estimator("knn", task="regression")).__name__ == "KNeighborsRegressor"
    assert type(make_estimator("gp", task="regression").steps[-1][1]).__name__ == "GaussianProcessRegressor"
    assert isinstance(make_estimator(LinearRegression(), task="regression"), LinearRegression)
    with pytest.raises(ParameterError, match="regressor"):
        make_estimator(LogisticRegression(), task="regression")
    with pytest.raises(ParameterError, match="Unknown estimator 'ridge'"):
        make_estimator("ridge")  # a regressor name is not a classifier
    with pytest.raises(ParameterError, match="task"):
        make_estimator("knn", task="clustering")
    # fitting caps kNN's neighbours at the training size instead of failing
    X = np.random.default_rng(0).standard_normal((4, 3))
    fitted = fit_estimator(make_estimator("knn"), X, np.array([0, 1, 0, 1]))
    assert fitted.n_neighbors == 4 and fitted.predict(X).tolist() == [0, 1, 0, 1]


# ---- labels -> patches ---------------------------------------------------------------------------------
def test_label_sampling_from_points_polygons_and_lines():
    emb, _ = make_emb(20, 24, 8, seed=6)  # 80 m patches
    x, y = emb.x.values, emb.y.values
    gdf = gpd.GeoDataFrame(
        {"class": ["pt", "field", "tiny", "multi", None, "line", "far"]},
        geometry=[shapely.Point(x[3] + 30, y[2] - 30),
                  shapely.box(x[10] - 1, y[6] - 1, x[12] + 1, y[5] + 1),  # rows 5-6, cols 10-12
                  shapely.Point(x[20] + 10, y[15]).buffer(4),  # smaller than a patch
                  shapely.MultiPoint([(x[1], y[1]), (x[2], y[1])]),
                  shapely.Point(x[0], y[0]),  # no class: skipped
                  shapely.LineString([(x[7] - 20, y[7]), (x[7] + 20, y[7])]),  # no centre inside: patch under it
                  shapely.Point(0, 0)],  # outside the cube: dropped with a warning
        crs=emb.rio.crs)
    with pytest.warns(UserWarning, match="1 labelled location"):
        s = sample_labels(emb, gdf)
    got = {lab: sorted(zip(g["row"], g["col"])) for lab, g in s.groupby("label")}
    assert got == {"pt": [(2, 3)], "field": [(r, c) for r in (5, 6) for c in (10, 11, 12)], "tiny": [(15, 20)],
                   "multi": [(1, 1), (1, 2)], "line": [(7, 7)]}
    assert s.groupby("label")["origin"].first().to_dict() == {"pt": 0, "field": 1, "tiny": 2, "multi": 3,
                                                              "line": 5}  # the row of the label feature
    np.testing.assert_allclose(s["x"], x[s["col"]])
    np.testing.assert_allclose(s["y"], y[s["row"]])
    # the same labels given in lon/lat land on the same patches
    s_ll = sample_labels(emb, gdf.iloc[:6].to_crs("EPSG:4326"))
    assert sorted(zip(s_ll["row"], s_ll["col"], s_ll["label"])) == sorted(zip(s["row"], s["col"], s["label"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sample_labels(emb, gdf.iloc[:6])  # nothing outside: no warning


def test_cv_report_never_prints_an_unmeasured_score():
    from eoembed.classify.cv import classification_report

    y = np.array(["a"] * 6 + ["b"] * 6)
    classes = np.array(["a", "b"])
    # class b is never in a test fold: its recall cannot be measured
    splits = [(np.r_[0:3, 6:12], np.arange(3, 6)), (np.r_[3:12], np.arange(0, 3))]
    rep = classification_report(lambda tr, te: y[te], y, classes, splits, notes=[], n_blocks=2, block_size=1.0,
                                buffer=0.0, spatial=True)
    assert rep.untested == ["b"]
    assert np.isnan(rep.balanced_accuracy)
    assert np.isnan(rep.per_class.loc["b", "recall"])
    text = str(rep)
    assert "balanced accuracy not estimable (class(es) b never tested)" in text
    assert "per-fold balanced accuracy:" in text and "per-fold accuracy:" in text
    assert "fewer than 10" in text  # 6 test patches of a: an anecdote, said so


def test_cv_report_compare_uses_the_paired_rule():
    from eoembed.classify.cv import classification_report

    rng = np.random.default_rng(0)
    y = np.repeat(np.array(["a", "b"]), 50)
    order = rng.permutation(100)
    splits = [(np.setdiff1d(order, order[i::5]), order[i::5]) for i in range(5)]
    how = dict(notes=[], n_blocks=5, block_size=1.0, buffer=0.0, spatial=True)
    perfect = classification_report(lambda tr, te: y[te], y, np.array(["a", "b"]), splits, **how)
    coin = classification_report(lambda tr, te: rng.choice(["a", "b"], len(te)), y, np.array(["a", "b"]), splits,
                                 **how)
    verdict = perfect.compare(coin, names=("model", "coin"))
    assert verdict.verdict == "A better" and "model better than coin" in str(verdict)
    assert perfect.interval().estimate == pytest.approx(1.0)
    other = classification_report(lambda tr, te: y[te], y[:60], np.array(["a", "b"]),
                                  [(np.arange(30, 60), np.arange(30)), (np.arange(30), np.arange(30, 60))], **how)
    with pytest.raises(ParameterError, match="same samples and folds"):
        perfect.compare(other)


def test_area_report_from_a_fewshot_map_and_held_out_labels():
    import rioxarray  # noqa: F401
    import xarray as xr

    from eoembed.classify import fewshot

    emb, truth = make_emb(30, 40, 12, n_classes=3, noise=0.4, seed=2)
    lab = truth if isinstance(truth, xr.DataArray) else xr.DataArray(truth, dims=("y", "x"),
                                                                      coords={"y": emb.y, "x": emb.x})
    lab = lab.rio.write_crs(emb.rio.crs).rio.write_transform(emb.rio.transform())
    train = lab.where(lab.x < lab.x[20], -1).astype("int32").rio.write_nodata(-1)   # west half trains
    held = lab.where(lab.x >= lab.x[20], -1).astype("int32").rio.write_nodata(-1)    # east half validates
    clf = fewshot(emb, train, n_splits=3)
    rep = clf.area_report(held)
    t = rep.table
    assert set(t.index) <= set(np.unique(lab.values).tolist())
    cmap = clf.predict_map()["class"]
    tr = emb.rio.transform()
    assert rep.unit == "ha"
    for c in t.index:  # mapped area = patches of the class × patch area
        assert t.loc[c, "map_area"] == pytest.approx(float((cmap.values == c).sum()) * abs(tr.a * tr.e) / 1e4)
        assert abs(t.loc[c, "area"] - t.loc[c, "map_area"]) <= t.loc[c, "area_ci"] + 0.15 * t.loc[c, "map_area"]
    assert 0.5 <= rep.overall <= 1
    with pytest.raises(LabelError, match="independent"):
        clf.area_report(train)
