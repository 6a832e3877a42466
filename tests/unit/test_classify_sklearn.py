"""FewShotClassifier is a scikit-learn estimator; SpatialBlockKFold is a scikit-learn splitter."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import label_points, make_emb  # noqa: E402

gpd = pytest.importorskip("geopandas")
pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import cross_val_predict, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from eoembed.classify import FewShotClassifier, SpatialBlockKFold, fewshot  # noqa: E402
from eoembed.exceptions import ParameterError  # noqa: E402

NAMES = np.array(["crop", "forest", "water"])


@pytest.fixture(scope="module")
def fitted():
    emb, truth = make_emb(40, 50, 16, nan_frac=0.05, noise=0.6, seed=2)
    labels = label_points(emb, truth, 300, names=NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fewshot(emb, labels, block_size=640, buffer=200), emb


def test_get_params_and_clone(fitted):
    clf, _ = fitted
    p = clf.get_params()
    assert p["block_size"] == 640 and p["buffer"] == 200 and p["n_splits"] == 5
    c = clone(clf)
    assert not hasattr(c, "estimator_") and c.get_params()["block_size"] == 640
    c.set_params(n_splits=3, estimator="knn")
    assert c.n_splits == 3
    c.fit(clf.X, clf.y)
    assert (c.predict(clf.X) == clf.y).mean() > 0.8
    assert c.score(clf.X, clf.y) == pytest.approx((c.predict(clf.X) == clf.y).mean())
    P = c.predict_proba(clf.X)
    assert P.shape == (len(clf.y), 3) and np.allclose(P.sum(1), 1)
    assert list(c.classes_) == list(NAMES)


def test_cross_val_score_with_the_spatial_splitter_matches_cv_report(fitted):
    clf, _ = fitted
    cv = clf.spatial_cv()
    assert isinstance(cv, SpatialBlockKFold)
    folds_sklearn = list(cv.split(clf.X, clf.y))
    folds_own = clf.folds()
    assert len(folds_sklearn) == len(folds_own)
    for (a, b), (c, d) in zip(folds_sklearn, folds_own):
        assert (a == c).all() and (b == d).all()
    scores = cross_val_score(FewShotClassifier(), clf.X, clf.y, cv=cv)
    assert len(scores) == cv.get_n_splits(clf.X, clf.y) == 5
    pred = cross_val_predict(FewShotClassifier(), clf.X, clf.y, cv=cv)
    rep = clf.cv_report()
    assert (pred == clf.y).mean() == pytest.approx(rep.accuracy)
    # in a pipeline, with the coordinates given as groups
    cv2 = SpatialBlockKFold(block_size=640, buffer=200)
    s2 = cross_val_score(make_pipeline(StandardScaler(), FewShotClassifier("knn")), clf.X, clf.y, cv=cv2,
                         groups=clf.samples[["x", "y"]].to_numpy())
    assert len(s2) == 5 and s2.mean() > 0.5


def test_errors(fitted):
    clf, emb = fitted
    with pytest.raises(ParameterError, match="coordinates"):
        list(SpatialBlockKFold(block_size=100).split(clf.X, clf.y))
    with pytest.raises(ParameterError, match="block_size"):
        SpatialBlockKFold(block_size=0)
    with pytest.raises(ParameterError, match="fewshot"):
        FewShotClassifier().fit(emb, None)
    bare = FewShotClassifier().fit(clf.X, clf.y)
    with pytest.raises(ParameterError, match="patch locations"):
        bare.spatial_cv()
    with pytest.raises(ParameterError, match="predict_map"):
        bare.predict_map()
    with pytest.raises(ValueError, match="features"):
        bare.predict(clf.X[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        bare.predict(np.full((2, clf.X.shape[1]), np.nan))
    assert "FewShotClassifier" in repr(FewShotClassifier()) and "patches" in repr(clf)


@pytest.mark.slow
def test_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = check_estimator(FewShotClassifier(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in res if r["status"] == "failed"]
    assert not failed and len(res) > 40
