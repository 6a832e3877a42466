"""Few-shot classification of embedding cubes with honest (spatial) evaluation.

One job per module:

* :mod:`~eoembed.classify.labels` — labels (points, polygons, label rasters) → patches
  (:func:`sample_labels`, through the one patch locator :func:`eoembed.cube.locate_patches`);
* :mod:`~eoembed.classify.cv` — spatial blocks, the one split function :func:`plan_folds`,
  :class:`SpatialBlockKFold`, :class:`CVReport`;
* :mod:`~eoembed.classify.fewshot` — the estimator factory :func:`make_estimator`,
  :class:`FewShotClassifier`, :func:`fewshot`, :func:`linear_direction`.

:mod:`eoembed.analysis.regress` and :mod:`eoembed.evaluate` use the same factory and split
function. Importing this package does not import scikit-learn; using it without the
``search`` extra raises :class:`~eoembed.exceptions.MissingOptionalDependency`.
"""

from eoembed.classify.cv import (
    CVReport,
    Folds,
    SpatialBlockKFold,
    classification_report,
    plan_folds,
    spatial_blocks,
    spatial_splits,
)
from eoembed.classify.fewshot import (
    FewShotClassifier,
    feature_block,
    fewshot,
    fit_estimator,
    linear_direction,
    make_estimator,
    select_time,
)
from eoembed.classify.labels import sample_labels

__all__ = [
    "CVReport",
    "FewShotClassifier",
    "Folds",
    "SpatialBlockKFold",
    "classification_report",
    "feature_block",
    "fewshot",
    "fit_estimator",
    "linear_direction",
    "make_estimator",
    "plan_folds",
    "sample_labels",
    "select_time",
    "spatial_blocks",
    "spatial_splits",
]
