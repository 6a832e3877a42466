"""Few-shot classification of embedding cubes with honest (spatial) evaluation.

A handful of labelled points, polygons or a label raster is sampled at patch centres
of an embedding cube; a scikit-learn estimator is fitted on the patch vectors and
applied to every patch, giving a class map and per-class probabilities on the cube
grid.

Neighbouring patches are strongly correlated (overlapping context, same field), so
random K-fold cross-validation overstates accuracy. :meth:`FewShotClassifier.cv_report`
therefore groups samples into square spatial blocks of ``block_size`` metres and
keeps each block on one side of every split (``StratifiedGroupKFold``), and also
drops training samples closer than ``buffer`` to any test sample, so that patches
adjacent across a block border are never split between train and test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eoembed.cube import (
    apply_embedding,
    canonical,
    check_same_space,
    cube_info,
    patch_pitch,
    spatial_coords,
    to_crs_xy,
    write_georef,
    xy_to_rowcol,
)
from eoembed.exceptions import LabelError, ParameterError, QueryError, TooFewLabelsError, require

__all__ = ["FewShotClassifier", "CVReport", "SpatialBlockKFold", "fewshot", "linear_direction", "sample_labels",
           "spatial_blocks", "spatial_splits"]

_FEATURE_MODES = ("stack", "mean")


# ---------------------------------------------------------------------------------
# labels → patches
# ---------------------------------------------------------------------------------
def _geo_labels(emb: xr.DataArray, gdf, class_column: str):
    import shapely

    if class_column not in gdf.columns:
        raise LabelError(
            f"The labels have no column {class_column!r}; columns are {list(gdf.columns)}. "
            "Pass class_column='<your column>'."
        )
    if gdf.crs is None:
        raise LabelError(
            "The label GeoDataFrame has no CRS; set it with labels.set_crs('EPSG:4326') "
            "(or the CRS your coordinates are in)."
        )
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    g = gdf.to_crs(emb.rio.crs)
    info = cube_info(emb)
    xs, ys = emb["x"].values, emb["y"].values
    rows, cols, labels, origin = [], [], [], []
    for i, (geom, lab) in enumerate(zip(g.geometry.values, g[class_column].values)):
        if np.ndim(lab) == 0 and pd.isna(lab):  # None, NaN, pd.NA (nullable string/Int columns), NaT
            continue
        if geom.geom_type in ("Point", "MultiPoint"):
            pts = shapely.get_coordinates(geom)
            r, c = xy_to_rowcol(info.transform, pts[:, 0], pts[:, 1])
        else:
            x0, y0, x1, y1 = geom.bounds
            ci = np.flatnonzero((xs >= x0) & (xs <= x1))
            ri = np.flatnonzero((ys >= y0) & (ys <= y1))
            rr, cc = np.meshgrid(ri, ci, indexing="ij")
            rr, cc = rr.ravel(), cc.ravel()
            inside = shapely.contains_xy(geom, xs[cc], ys[rr]) if len(rr) else np.zeros(0, bool)
            r, c = rr[inside], cc[inside]
            if len(r) == 0:  # smaller than a patch: the patch under it
                p = geom.representative_point()
                r, c = xy_to_rowcol(info.transform, [p.x], [p.y])
        rows.append(np.asarray(r))
        cols.append(np.asarray(c))
        labels.append(np.full(len(r), lab, dtype=object))
        origin.append(np.full(len(r), i))
    if not rows:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, object), np.zeros(0, int)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(labels), np.concatenate(origin)


def _raster_labels(emb: xr.DataArray, raster: xr.DataArray, nodata: Any):
    if "band" in raster.dims:
        if raster.sizes["band"] != 1:
            raise LabelError(f"The label raster has {raster.sizes['band']} bands; pass one band (raster.isel(band=0)).")
        raster = raster.isel(band=0)
    if set(raster.dims) != {"y", "x"}:
        raise LabelError(f"The label raster must have dims ('y', 'x'), got {raster.dims}.")
    raster = raster.transpose("y", "x")
    rcrs = raster.rio.crs
    if rcrs is None:
        raise LabelError(
            "The label raster has no CRS; write one with raster.rio.write_crs(...) so it can be "
            "matched to the embedding grid."
        )
    ny, nx = emb.sizes["y"], emb.sizes["x"]
    rr, cc = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    px, py = to_crs_xy(emb["x"].values[cc], emb["y"].values[rr], emb.rio.crs, rcrs)
    lr, lc = xy_to_rowcol(tuple(raster.rio.transform())[:6], px, py)
    inside = (lr >= 0) & (lr < raster.sizes["y"]) & (lc >= 0) & (lc < raster.sizes["x"])
    vals = np.asarray(raster.values)[lr[inside], lc[inside]]
    nd = nodata if nodata is not None else raster.rio.nodata
    if nd is None:
        nd = raster.rio.encoded_nodata
    ok = np.ones(len(vals), bool)
    if np.issubdtype(vals.dtype, np.floating):
        ok &= np.isfinite(vals)
    if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
        ok &= vals != nd
    r, c, v = rr[inside][ok], cc[inside][ok], vals[ok]
    if np.issubdtype(v.dtype, np.floating) and len(v) and np.all(v == np.round(v)):
        v = v.astype(np.int64)
    return r, c, v.astype(object), np.arange(len(r))


def sample_labels(
    emb: xr.DataArray,
    labels: Any,
    *,
    class_column: str = "class",
    nodata: Any = None,
):
    """Locate labels on the patch grid of ``emb``.

    Parameters
    ----------
    emb:
        Embedding cube (CRS required).
    labels:
        A GeoDataFrame of points and/or polygons with a ``class_column`` in any CRS
        (reprojected; a polygon labels every patch whose centre it contains, or the
        patch under it if it contains none), or a label raster DataArray ``(y, x)`` on
        any grid/CRS (nearest pixel at each patch centre; ``nodata``/NaN excluded).
    class_column, nodata:
        Class column of a GeoDataFrame; nodata value of a raster (default its
        ``rio.nodata``).

    Returns
    -------
    pandas.DataFrame
        One row per labelled patch: ``row``, ``col``, ``x``, ``y`` (patch centre),
        ``label``, ``origin`` (row number of the label feature). Patches outside the
        cube are dropped with a warning; duplicate (patch, class) pairs are merged and
        patches given conflicting classes are dropped with a warning.

    Raises
    ------
    LabelError
        No labels, or none inside the cube.
    """
    import pandas as pd

    emb = canonical(emb)
    info = cube_info(emb)
    if isinstance(labels, xr.DataArray):
        r, c, lab, origin = _raster_labels(emb, labels, nodata)
        what = "label raster"
    else:
        if not hasattr(labels, "geometry"):
            raise LabelError(
                f"labels must be a GeoDataFrame (points/polygons with a {class_column!r} column) or "
                f"a label raster DataArray, got {type(labels).__name__}."
            )
        if len(labels) == 0:
            raise LabelError("The label GeoDataFrame is empty; draw or load at least two classes of examples.")
        r, c, lab, origin = _geo_labels(emb, labels, class_column)
        what = "labels"
    ny, nx = info.shape
    inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
    n_out = int((~inside).sum())
    if len(r) and not inside.any():
        x0, y0, x1, y1 = (float(v) for v in emb.rio.bounds())
        raise LabelError(
            f"None of the {len(r)} {what} fall inside the embedding cube (bounds {x0:.0f}, {y0:.0f}, "
            f"{x1:.0f}, {y1:.0f} in {emb.rio.crs}). Check the labels' CRS, or embed the area they cover."
        )
    if n_out:
        warnings.warn(f"{n_out} labelled location(s) fall outside the embedding cube and were dropped.",
                      stacklevel=3)
    r, c, lab, origin = r[inside], c[inside], lab[inside], origin[inside]
    if len(r) == 0:
        raise LabelError(f"The {what} hold no usable label (empty, all nodata or all NaN classes).")
    df = pd.DataFrame({"row": r.astype(np.int64), "col": c.astype(np.int64), "label": lab, "origin": origin})
    df = df.drop_duplicates(subset=["row", "col", "label"])
    dup = df.duplicated(subset=["row", "col"], keep=False)
    if dup.any():
        warnings.warn(
            f"{int(dup.sum())} label(s) on {df[dup].groupby(['row', 'col']).ngroups} patch(es) disagree "
            "about the class; those patches were dropped.", stacklevel=3)
        df = df[~dup]
    df["x"] = emb["x"].values[df["col"].to_numpy()]
    df["y"] = emb["y"].values[df["row"].to_numpy()]
    return df.reset_index(drop=True)[["row", "col", "x", "y", "label", "origin"]]


def spatial_blocks(x: np.ndarray, y: np.ndarray, block_size: float) -> np.ndarray:
    """Integer id of the ``block_size``-metre square (anchored at 0, 0) holding each point."""
    if not block_size > 0:
        raise ParameterError(f"block_size must be > 0 metres, got {block_size!r}.")
    bx = np.floor(np.asarray(x, float) / block_size).astype(np.int64)
    by = np.floor(np.asarray(y, float) / block_size).astype(np.int64)
    _, ids = np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)
    return ids.ravel()


def spatial_splits(xy: np.ndarray, groups: np.ndarray, n_splits: int, *, y: np.ndarray | None = None,
                   buffer: float = 0.0, random_state: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Spatial-block ``(train, test)`` index pairs with a buffer.

    Whole blocks (``groups``, from :func:`spatial_blocks`) go to one side of every split:
    ``StratifiedGroupKFold`` when class labels ``y`` are given (classification),
    ``GroupKFold`` with shuffled block order otherwise (continuous targets). Training
    samples closer than ``buffer`` (CRS units) to any test sample are then dropped.
    ``n_splits`` must not exceed the number of blocks (callers cap it and say so).
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    xy = np.asarray(xy, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" notices
        if y is not None:
            splits = list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
                          .split(xy, y, groups))
        else:
            try:  # block order shuffled (scikit-learn >= 1.6)
                kf = GroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
            except TypeError:  # pragma: no cover - older scikit-learn: size-balanced, deterministic
                kf = GroupKFold(n_splits=n_splits)
            splits = list(kf.split(xy, None, groups))
    if buffer > 0:
        from scipy.spatial import cKDTree

        splits = [(tr[cKDTree(xy[te]).query(xy[tr], k=1)[0] >= buffer], te) for tr, te in splits]
    return splits


# ---------------------------------------------------------------------------------
# features and estimators
# ---------------------------------------------------------------------------------
def _feature_block(block: np.ndarray, mode: Any, has_time: bool) -> np.ndarray:
    """``(time?, embedding, ...)`` numpy → ``(..., F)`` features."""
    if has_time:
        if mode == "mean":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                block = np.nanmean(block, axis=0)
        else:  # stack
            block = block.reshape((-1,) + block.shape[2:])
    return np.moveaxis(block, 0, -1)


def _select_time(emb: xr.DataArray, time: Any) -> tuple[xr.DataArray, Any]:
    if "time" not in emb.dims:
        return emb, None
    if isinstance(time, str) and time in _FEATURE_MODES:
        return emb, time
    if time is None:
        return emb, "stack"
    if isinstance(time, (int, np.integer)) and not np.issubdtype(emb["time"].dtype, np.integer):
        return emb.isel(time=int(time)), None
    try:
        return emb.sel(time=time), None
    except KeyError:
        raise ParameterError(
            f"time={time!r} is not in the cube's times {list(emb['time'].values)}; use 'stack', 'mean', "
            "an index or a time label."
        ) from None


def make_estimator(estimator: Any = "logistic", *, random_state: int = 0):
    """Estimator for a name (``"logistic"``, ``"knn"``, ``"random_forest"``) or a clone of an instance."""
    require("sklearn", "search", "Few-shot classification")
    from sklearn.base import clone, is_classifier

    if not isinstance(estimator, str):
        if not is_classifier(estimator) and not hasattr(estimator, "predict"):
            raise ParameterError(f"estimator must be a name or a scikit-learn classifier, got {estimator!r}.")
        return clone(estimator)
    name = estimator.lower()
    if name in ("logistic", "logreg", "linear"):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000))
    if name in ("knn", "kneighbors"):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=5, weights="distance", metric="cosine")
    if name in ("random_forest", "rf"):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=200, class_weight="balanced", random_state=random_state)
    raise ParameterError(
        f"Unknown estimator {estimator!r}; use 'logistic', 'knn', 'random_forest' or a scikit-learn "
        "classifier instance."
    )


def _fit(est, X: np.ndarray, y: np.ndarray):
    from sklearn.base import clone

    est = clone(est)
    inner = est.steps[-1][1] if hasattr(est, "steps") else est
    if hasattr(inner, "n_neighbors") and inner.n_neighbors > len(X):
        inner.set_params(n_neighbors=len(X))
    return est.fit(X, y)


def _class_from_proba(p: np.ndarray, *, values: np.ndarray, nodata: int) -> np.ndarray:
    """``(..., K)`` probabilities → class values, ``nodata`` where any is NaN."""
    valid = np.isfinite(p).all(axis=-1)
    arg = np.argmax(np.where(np.isfinite(p), p, -1.0), axis=-1)
    return np.where(valid, values[arg], nodata).astype(np.int32)


# ---------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------
@dataclass
class CVReport:
    """Cross-validated accuracy of a few-shot classifier (out-of-fold predictions pooled).

    Attributes
    ----------
    accuracy, balanced_accuracy: pooled over all test folds.
    per_class: DataFrame indexed by class: precision, recall, f1, support.
    confusion: DataFrame, rows = true class, columns = predicted class.
    fold_accuracy, fold_balanced_accuracy: accuracy and balanced accuracy of each evaluated fold
    (in fold order: pair them across feature sets of one cube to compare models). n_samples, n_blocks, n_splits, block_size,
    buffer, spatial: how the split was made. dropped_by_buffer: training samples
    removed (summed over folds) because they were within ``buffer`` of a test sample.
    """

    accuracy: float
    balanced_accuracy: float
    per_class: Any
    confusion: Any
    fold_accuracy: list[float]
    n_samples: int
    n_blocks: int
    n_splits: int
    block_size: float
    buffer: float
    spatial: bool
    dropped_by_buffer: int = 0
    notes: list[str] = field(default_factory=list)
    fold_balanced_accuracy: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (JSON-friendly)."""
        return {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "fold_accuracy": self.fold_accuracy,
            "fold_balanced_accuracy": self.fold_balanced_accuracy,
            "per_class": self.per_class.to_dict(orient="index"),
            "confusion": self.confusion.to_dict(orient="index"),
            "n_samples": self.n_samples,
            "n_blocks": self.n_blocks,
            "n_splits": self.n_splits,
            "block_size": self.block_size,
            "buffer": self.buffer,
            "spatial": self.spatial,
            "dropped_by_buffer": self.dropped_by_buffer,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        how = (f"spatial-block CV: {self.n_splits} folds over {self.n_blocks} blocks of {self.block_size:g} m, "
               f"buffer {self.buffer:g} m" if self.spatial else f"random {self.n_splits}-fold CV (optimistic)")
        lines = [
            f"Few-shot classifier, {self.n_samples} labelled patches; {how}",
            f"accuracy {self.accuracy:.3f}  balanced accuracy {self.balanced_accuracy:.3f}  "
            f"(folds: {', '.join(f'{a:.2f}' for a in self.fold_accuracy)})",
            "",
            self.per_class.round(3).to_string(),
            "",
            "confusion (rows true, columns predicted):",
            self.confusion.to_string(),
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    _repr_pretty_ = lambda self, p, cycle: p.text(str(self))  # noqa: E731


# ---------------------------------------------------------------------------------
# classifier
# ---------------------------------------------------------------------------------
class SpatialBlockKFold:
    """Spatial-block cross-validation splitter (scikit-learn's splitter protocol).

    Samples are grouped into square blocks of ``block_size`` (CRS units, metres for
    projected CRSs, anchored at 0, 0); whole blocks go to one side of every split
    (``StratifiedGroupKFold``) and training samples closer than ``buffer`` to any test
    sample are dropped. Usable wherever scikit-learn takes ``cv=``::

        cv = clf.spatial_cv()                     # bound to the labelled patches
        cross_val_score(FewShotClassifier(), clf.X, clf.y, cv=cv)

    ``n_splits`` is reduced, with a ``UserWarning``, to the label count of the rarest
    class and to the number of blocks.

    Parameters
    ----------
    xy:
        ``(n, 2)`` sample coordinates, in the order of the ``X`` rows passed to
        :meth:`split`. ``None``: pass them as ``groups`` to :meth:`split`.
    block_size, buffer:
        Block side and train/test buffer (CRS units).
    n_splits, random_state:
        Requested folds; seed of the fold shuffle.
    """

    def __init__(self, xy: np.ndarray | None = None, *, block_size: float, buffer: float = 0.0,
                 n_splits: int = 5, random_state: int | None = 0):
        self.xy = None if xy is None else np.asarray(xy, dtype=float)
        self.block_size = float(block_size)
        self.buffer = float(buffer)
        self.n_splits = int(n_splits)
        self.random_state = random_state
        if not self.block_size > 0:
            raise ParameterError(f"block_size must be > 0, got {block_size!r}.")

    def __repr__(self) -> str:
        return (f"SpatialBlockKFold(n_splits={self.n_splits}, block_size={self.block_size:g}, "
                f"buffer={self.buffer:g})")

    def _xy(self, n: int, groups) -> np.ndarray:
        xy = self.xy if groups is None else np.asarray(groups, dtype=float)
        if xy is None or xy.ndim != 2 or xy.shape != (n, 2):
            raise ParameterError(
                f"SpatialBlockKFold needs the (n, 2) sample coordinates for the {n} rows: give them as xy= "
                f"or as groups= in split()/cross_val_score (got {None if xy is None else xy.shape})."
            )
        return xy

    def _plan(self, y: np.ndarray, blocks: np.ndarray) -> int:
        """Effective number of folds (warns when fewer than asked)."""
        classes, counts = np.unique(y, return_counts=True)
        rare = classes[np.argmin(counts)]
        if counts.min() < 2:
            raise TooFewLabelsError(
                f"Class {str(rare)!r} has {counts.min()} labelled patch(es); cross-validation needs at least 2 "
                f"per class (label counts: {', '.join(f'{c}: {n}' for c, n in zip(classes, counts))}). "
                f"Add more labels of {str(rare)!r}, or drop that class."
            )
        k = min(self.n_splits, int(counts.min()))
        why = f"class {str(rare)!r} has only {int(counts.min())} labelled patches"
        nb = len(np.unique(blocks))
        if nb < 2:
            raise LabelError(
                f"All {len(y)} labelled patches fall in one {self.block_size:g} m block, so no spatially "
                "honest split exists. Label more widely spread areas, or pass a smaller block_size=."
            )
        if nb < k:
            k, why = nb, f"the labels fall in only {nb} blocks of {self.block_size:g} m"
        if k < self.n_splits:
            warnings.warn(f"Using n_splits={k} instead of {self.n_splits}: {why}. Add labels for more folds.",
                          UserWarning, stacklevel=4)
        return k

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """Folds :meth:`split` yields (the requested number unless ``X`` and ``y`` are given)."""
        if X is None or y is None:
            return self.n_splits
        xy = self._xy(len(y), groups)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._plan(np.asarray(y), spatial_blocks(xy[:, 0], xy[:, 1], self.block_size))

    def split(self, X, y, groups=None):
        """Yield ``(train, test)`` index arrays: blocks disjoint, training buffered from the test samples."""
        y = np.asarray(y)
        xy = self._xy(len(y), groups)
        blocks = spatial_blocks(xy[:, 0], xy[:, 1], self.block_size)
        k = self._plan(y, blocks)
        yield from spatial_splits(xy, blocks, k, y=y, buffer=self.buffer,
                                  random_state=0 if self.random_state is None else self.random_state)


try:  # the search extra; without it fewshot() raises MissingOptionalDependency naming the extra
    from sklearn.base import BaseEstimator as _BaseEstimator
    from sklearn.base import ClassifierMixin as _ClassifierMixin

    _BASES: tuple = (_ClassifierMixin, _BaseEstimator)
except ImportError:  # exercised by tests/unit/test_packaging.py (core-only import)
    _BaseEstimator = None
    _BASES = ()


class FewShotClassifier(*_BASES):
    """A scikit-learn classifier for embedding vectors, with spatial-block evaluation.

    Usually created fitted on an embedding cube by :func:`fewshot` (or
    ``emb.eo.fewshot(labels)``), which samples the labelled patches and keeps them
    for :meth:`cv_report` and :meth:`predict_map`. It is also a plain scikit-learn
    estimator (``fit``/``predict``/``predict_proba``/``score``, ``get_params``/
    ``set_params``, ``sklearn.base.clone``) over feature rows, so it composes with
    pipelines and ``cross_val_score``; :meth:`spatial_cv` gives the matching
    :class:`SpatialBlockKFold`.

    Parameters
    ----------
    estimator:
        ``"logistic"``, ``"knn"``, ``"random_forest"`` or a scikit-learn classifier
        (cloned at fit). See :func:`make_estimator`.
    time:
        Feature mode for cubes with time (see :func:`fewshot`).
    block_size, buffer:
        Spatial CV block side and buffer in metres (``None``: :func:`fewshot` derives
        them from the patch spacing).
    n_splits, random_state:
        CV folds; seed.

    Attributes
    ----------
    estimator_: the estimator fitted on all rows. classes_: class labels (sorted).
    n_features_in_: feature count. samples: DataFrame of the labelled patches used
    (row, col, x, y, label, origin, block; cube-fitted only). excluded: labelled
    patches dropped because their embedding is NaN (masked).
    """

    def __init__(self, estimator: Any = "logistic", *, time: Any = "stack", block_size: float | None = None,
                 buffer: float | None = None, n_splits: int = 5, random_state: int = 0):
        self.estimator = estimator
        self.time = time
        self.block_size = block_size
        self.buffer = buffer
        self.n_splits = n_splits
        self.random_state = random_state

    # ---- scikit-learn estimator API ------------------------------------------------
    def fit(self, X, y) -> "FewShotClassifier":
        """Fit on feature rows ``X`` ``(n, F)`` and labels ``y``; NaN rows are refused."""
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        self._refuse_cube(X)
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=False, reset=True)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise LabelError(f"Only one class ({classes[0]!r}) among the {len(y)} labels; a classifier needs at "
                             "least two. Add examples of another class (e.g. 'other'/background).")
        self._template = make_estimator(self.estimator, random_state=self.random_state)
        self.X_, self.y_ = X, y
        self.classes_ = classes
        self.estimator_ = _fit(self._template, X, y)
        self._reports: dict[Any, CVReport] = {}
        return self

    @staticmethod
    def _refuse_cube(X) -> None:
        if isinstance(X, (xr.DataArray, xr.Dataset)):
            raise ParameterError("fit()/predict() take feature rows (n_samples, n_features); for a cube use "
                                 "fewshot(emb, labels) and clf.predict_map(emb).")

    def _check_X(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        self._refuse_cube(X)
        check_is_fitted(self, "estimator_")
        return validate_data(self, X, dtype=np.float32, reset=False)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` (columns in ``classes_`` order)."""
        return self.predict_proba_vectors(self._check_X(X)).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """Most probable class per row."""
        X = self._check_X(X)
        return np.asarray(self.classes_)[np.argmax(self.predict_proba_vectors(X), axis=1)]

    def spatial_cv(self, *, n_splits: int | None = None) -> SpatialBlockKFold:
        """The :class:`SpatialBlockKFold` over this classifier's labelled patches (cube-fitted)."""
        if getattr(self, "samples_", None) is None:
            raise ParameterError("spatial_cv() needs the patch locations: fit with fewshot(emb, labels), or build "
                                 "SpatialBlockKFold(xy, block_size=...) yourself.")
        return SpatialBlockKFold(self.samples_[["x", "y"]].to_numpy(), block_size=self.block_size,
                                 buffer=self.buffer, n_splits=int(n_splits or self.n_splits),
                                 random_state=self.random_state)

    # ---- the cube it was fitted on (fewshot) -----------------------------------------
    def _fit_cube(self, emb, samples, X, y, excluded: int) -> "FewShotClassifier":
        self.fit(X, y)
        self.emb_, self.samples_, self.excluded_ = emb, samples, int(excluded)
        return self

    emb = property(lambda self: getattr(self, "emb_", None), doc="The cube the classifier was fitted on.")
    samples = property(lambda self: getattr(self, "samples_", None), doc="The labelled patches (DataFrame).")
    X = property(lambda self: self.X_, doc="Training features (n, F).")
    y = property(lambda self: self.y_, doc="Training labels (n,).")
    excluded = property(lambda self: getattr(self, "excluded_", 0), doc="Labelled patches dropped as NaN.")

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        if not hasattr(self, "y_"):
            return super().__repr__(N_CHAR_MAX) if _BaseEstimator is not None else "FewShotClassifier()"
        counts = ", ".join(f"{c}: {int((self.y == c).sum())}" for c in self.classes_)
        bs = f"; block_size={self.block_size:g} m" if self.block_size is not None else ""
        return f"<FewShotClassifier {type(self._template).__name__} on {len(self.y)} patches ({counts}){bs}>"

    # ---- cross-validation ---------------------------------------------------------
    def folds(self, *, spatial: bool = True, n_splits: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(train, test)`` index arrays used by :meth:`cv_report`.

        Spatial folds: whole blocks go to one side (``StratifiedGroupKFold``), then
        training samples within ``buffer`` of any test sample are removed.

        ``n_splits`` (default the classifier's) is reduced, with a ``UserWarning``, to the
        label count of the rarest class (stratified folds cannot outnumber it) and, for
        spatial folds, to the number of blocks. A class with fewer than 2 labelled patches
        raises :class:`~eoembed.exceptions.TooFewLabelsError`.
        """
        from sklearn.model_selection import StratifiedKFold

        if self.samples is None:
            raise ParameterError("folds()/cv_report() need the patch locations: fit with fewshot(emb, labels), or "
                                 "use cross_val_score(clf, X, y, cv=SpatialBlockKFold(xy, block_size=...)).")
        requested = int(n_splits or self.n_splits)
        if spatial:
            cv = SpatialBlockKFold(self.samples[["x", "y"]].to_numpy(), block_size=self.block_size,
                                   buffer=self.buffer, n_splits=requested, random_state=self.random_state)
            return list(cv.split(self.X, self.y))
        y = self.y
        counts = {c: int((y == c).sum()) for c in self.classes_}
        rare = min(counts, key=counts.get)
        if counts[rare] < 2:
            raise TooFewLabelsError(
                f"Class {str(rare)!r} has {counts[rare]} labelled patch(es); cross-validation needs at least 2 "
                f"per class (label counts: {', '.join(f'{c}: {n}' for c, n in counts.items())}). "
                f"Add more labels of {str(rare)!r}, or drop that class."
            )
        k = min(requested, counts[rare])
        if k < requested:
            warnings.warn(f"Using n_splits={k} instead of {requested}: class {str(rare)!r} has only "
                          f"{counts[rare]} labelled patches. Add labels for more folds.", UserWarning, stacklevel=2)
        return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=self.random_state).split(self.X, y))

    def cv_report(self, *, spatial: bool = True, n_splits: int | None = None) -> CVReport:
        """Cross-validated accuracy, per-class precision/recall/F1 and confusion matrix.

        Parameters
        ----------
        spatial:
            ``True`` (default): spatial-block folds with a buffer (honest). ``False``:
            random stratified K-fold, for comparison only — neighbouring patches then
            sit on both sides and the score is optimistic.
        n_splits:
            Folds (default the classifier's). Capped, with a warning and a report note, by
            the label count of the rarest class and (spatial) by the number of blocks.

        Returns
        -------
        CVReport
            ``print(report)`` for a summary; ``report.confusion`` and
            ``report.per_class`` are DataFrames.

        Raises
        ------
        TooFewLabelsError
            A class has fewer than 2 labelled patches.
        LabelError
            Too few blocks or samples to split.
        """
        import pandas as pd
        from sklearn.metrics import (
            accuracy_score,
            balanced_accuracy_score,
            confusion_matrix,
            precision_recall_fscore_support,
        )

        key = (spatial, n_splits)
        if key in self._reports:
            return self._reports[key]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            splits = self.folds(spatial=spatial, n_splits=n_splits)
        notes = []
        for w in caught:  # e.g. fewer folds than asked: say it in the report and to the caller
            notes.append(str(w.message))
            warnings.warn(w.message, w.category, stacklevel=2)
        pred = np.empty(len(self.y), dtype=self.y.dtype)
        tested = np.zeros(len(self.y), bool)
        fold_acc, fold_bacc, dropped = [], [], 0
        for i, (tr, te) in enumerate(splits):
            dropped += int(len(self.y) - len(te) - len(tr))
            if len(np.unique(self.y[tr])) < 2:
                notes.append(f"fold {i} skipped: its training part has a single class")
                continue
            missing = set(self.classes_) - set(np.unique(self.y[tr]))
            if missing:
                notes.append(f"fold {i}: class(es) {sorted(map(str, missing))} absent from training")
            est = _fit(self._template, self.X[tr], self.y[tr])
            pred[te] = est.predict(self.X[te])
            tested[te] = True
            fold_acc.append(float(accuracy_score(self.y[te], pred[te])))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a class absent from a test fold
                fold_bacc.append(float(balanced_accuracy_score(self.y[te], pred[te])))
        if not tested.any():
            raise LabelError("No fold could be evaluated (every training part had one class); add labels.")
        yt, yp = self.y[tested], pred[tested]
        p, r, f, s = precision_recall_fscore_support(yt, yp, labels=self.classes_, zero_division=0)
        names = [str(c) for c in self.classes_]
        per_class = pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}, index=names)
        per_class.index.name = "class"
        cm = pd.DataFrame(confusion_matrix(yt, yp, labels=self.classes_), index=names, columns=names)
        cm.index.name, cm.columns.name = "true", "predicted"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            bacc = float(balanced_accuracy_score(yt, yp))
        rep = CVReport(
            accuracy=float(accuracy_score(yt, yp)), balanced_accuracy=bacc, per_class=per_class,
            confusion=cm, fold_accuracy=fold_acc, fold_balanced_accuracy=fold_bacc, n_samples=int(len(self.y)),
            n_blocks=int(self.samples["block"].nunique()), n_splits=len(splits),
            block_size=self.block_size, buffer=self.buffer if spatial else 0.0, spatial=spatial,
            dropped_by_buffer=dropped, notes=notes,
        )
        self._reports[key] = rep
        return rep

    # ---- prediction ----------------------------------------------------------------
    def predict_proba_vectors(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` for feature rows (NaN rows → NaN)."""
        features = np.asarray(features, dtype=np.float32)
        out = np.full((len(features), len(self.classes_)), np.nan, np.float32)
        ok = np.isfinite(features).all(axis=1)
        if ok.any():
            est = self.estimator_
            if hasattr(est, "predict_proba"):
                proba = est.predict_proba(features[ok])
                cols = np.searchsorted(self.classes_, np.asarray(est.classes_))
                out[np.ix_(np.flatnonzero(ok), cols)] = proba
                out[np.flatnonzero(ok)] = np.nan_to_num(out[np.flatnonzero(ok)], nan=0.0)
            else:
                pred = est.predict(features[ok])
                onehot = (pred[:, None] == self.classes_[None, :]).astype(np.float32)
                out[ok] = onehot
        return out

    def _proba(self, vectors: np.ndarray, mode: Any, nlead: int) -> np.ndarray:
        """``(y, x, [time,] embedding)`` → ``(y, x, K)`` class probabilities."""
        block = np.moveaxis(vectors, list(range(-nlead, 0)), list(range(nlead)))  # (time?, emb, y, x)
        feats = _feature_block(block, mode, mode is not None)
        shape = feats.shape[:-1]
        p = self.predict_proba_vectors(feats.reshape(-1, feats.shape[-1]))
        return p.reshape(shape + (len(self.classes_),))

    def predict_map(self, emb: xr.DataArray | None = None) -> xr.Dataset:
        """Classify every patch of a cube.

        Parameters
        ----------
        emb:
            Cube to classify (default: the cube the classifier was trained on). Must
            have the same model, dimension and times layout.

        Returns
        -------
        xr.Dataset
            ``class`` ``(y, x)``: predicted class — the label values for integer
            labels, else codes ``0..K-1`` (names in ``flag_meanings``); ``nodata``
            (``-1``, or ``min(classes) - 1`` if ``-1`` is a class) where the embedding
            is NaN. ``probability`` ``(label, y, x)`` float32 (``label`` coord = class
            names as strings; the dim cannot be called ``class`` as that is the
            class-map variable), NaN where the embedding is NaN. Same grid and CRS as ``emb``; lazy (chunk-wise) when ``emb`` is
            dask-backed.
        """
        src = self.emb if emb is None else emb
        if src is None:
            raise ParameterError("This classifier was fitted on feature rows, not a cube: pass the cube to "
                                 "classify, clf.predict_map(emb).")
        src = canonical(src)
        if emb is not None:
            check_same_space(self.emb.attrs, dict(src.attrs), expected_dim=self.emb.sizes["embedding"],
                             got_dim=src.sizes["embedding"], what="The cube to classify")
        src, mode = _select_time(src, self.time)
        lead = ("time", "embedding") if "time" in src.dims else ("embedding",)
        K = len(self.classes_)
        prob = apply_embedding(self._proba, src, core_dims=lead, output_dim="label", output_size=K,
                               kwargs={"mode": mode, "nlead": len(lead)}).transpose("label", "y", "x").data
        coords = spatial_coords(src, drop=lead)
        names = [str(c) for c in self.classes_]
        probability = xr.DataArray(prob, dims=("label", "y", "x"), coords={**coords, "label": names},
                                   name="probability")
        int_labels = np.issubdtype(np.asarray(self.classes_).dtype, np.integer) or all(
            isinstance(c, (int, np.integer)) for c in self.classes_)
        values = np.asarray(self.classes_, dtype=np.int64) if int_labels else np.arange(K, dtype=np.int64)
        nodata = -1 if -1 not in values else int(values.min()) - 1
        cls = xr.apply_ufunc(_class_from_proba, probability, input_core_dims=[["label"]],
                             kwargs={"values": values, "nodata": nodata}, dask="parallelized",
                             output_dtypes=[np.int32]).rename("class")
        cls.attrs = {"long_name": "predicted class", "flag_values": values.tolist(),
                     "flag_meanings": " ".join(n.replace(" ", "_") for n in names), "nodata": nodata}
        probability.attrs = {"long_name": "class probability"}
        ds = xr.Dataset({"class": cls, "probability": probability})
        ds.attrs = {k: v for k, v in src.attrs.items() if k.startswith("eoembed:")}
        ds.attrs["eoembed:classifier"] = type(self._template).__name__
        ds = write_georef(ds, src)
        ds["class"] = ds["class"].rio.write_nodata(nodata)
        return ds


def fewshot(
    emb: xr.DataArray,
    labels: Any,
    *,
    estimator: Any = "logistic",
    class_column: str = "class",
    block_size: float | None = None,
    buffer: float | None = None,
    n_splits: int = 5,
    time: Any = "stack",
    nodata: Any = None,
    max_samples: int | None = 50_000,
    random_state: int = 0,
) -> FewShotClassifier:
    """Fit a classifier on labelled patches of an embedding cube.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` (numpy or dask; only labelled
        patches are read for fitting).
    labels:
        GeoDataFrame of points/polygons with a ``class_column`` (any CRS), or a label
        raster DataArray (any grid/CRS; nearest-sampled at patch centres). See
        :func:`sample_labels`.
    estimator:
        ``"logistic"`` (standardised logistic regression, balanced class weights),
        ``"knn"`` (5 nearest neighbours, cosine, distance-weighted),
        ``"random_forest"``, or any scikit-learn classifier instance (cloned).
    class_column:
        Column holding the class in a GeoDataFrame.
    block_size:
        Side of the square spatial CV blocks in metres (default 10 patch spacings).
    buffer:
        Training samples closer than this (metres) to a test sample are dropped in
        each spatial fold (default 1.5 patch spacings: the 8 neighbours).
    n_splits:
        Number of CV folds (capped by the number of blocks).
    time:
        For cubes with time: ``"stack"`` (concatenate all timesteps' vectors,
        default), ``"mean"`` (average over time) or a time label/index to use one
        timestep.
    nodata:
        Nodata value of a label raster (default ``labels.rio.nodata``).
    max_samples:
        Randomly subsample labelled patches above this count (dense rasters).
    random_state:
        Seed for subsampling, CV shuffling and estimators.

    Returns
    -------
    FewShotClassifier
        Fitted on all usable labelled patches; ``.cv_report()``, ``.predict_map()``.

    Raises
    ------
    LabelError
        Empty labels, a single class, labels outside the cube, or all labelled
        patches masked (NaN). Labelled patches with NaN embeddings are excluded with a
        warning (``clf.excluded``).
    """
    require("sklearn", "search", "Few-shot classification")
    emb = canonical(emb)
    from eoembed.validate import check_embedding_grid

    check_embedding_grid(emb)  # labels are placed by patch centre: the grid must be regular
    info = cube_info(emb)
    est = make_estimator(estimator, random_state=random_state)
    samples = sample_labels(emb, labels, class_column=class_column, nodata=nodata)
    if max_samples is not None and len(samples) > max_samples:
        samples = samples.sample(n=max_samples, random_state=random_state).reset_index(drop=True)
    sel, mode = _select_time(emb, time)
    idx_r = xr.DataArray(samples["row"].to_numpy(), dims="sample")
    idx_c = xr.DataArray(samples["col"].to_numpy(), dims="sample")
    vals = np.asarray(sel.isel(y=idx_r, x=idx_c).values)  # (time?, embedding, sample)
    X = _feature_block(vals, mode, mode is not None).astype(np.float32)
    ok = np.isfinite(X).all(axis=1)
    excluded = int((~ok).sum())
    if not ok.any():
        raise LabelError(
            f"All {len(X)} labelled patches have NaN (masked) embeddings — clouds or no data there. "
            "Label patches with valid data (check the similarity/PCA map) or use a cleaner composite."
        )
    if excluded:
        warnings.warn(f"{excluded} labelled patch(es) have NaN (masked) embeddings and were excluded.",
                      stacklevel=2)
    samples = samples[ok].reset_index(drop=True)
    X = X[ok]
    y = np.asarray(samples["label"].tolist())
    classes = np.unique(y)
    if len(classes) < 2:
        raise LabelError(
            f"Only one class ({classes[0]!r}) among the {len(y)} usable labelled patches; a classifier "
            "needs at least two. Add examples of another class (e.g. 'other'/background)."
        )
    pitch = max(patch_pitch(info), 1e-9)
    block_size = float(block_size) if block_size is not None else 10.0 * pitch
    buffer = float(buffer) if buffer is not None else 1.5 * pitch
    samples["block"] = spatial_blocks(samples["x"].to_numpy(), samples["y"].to_numpy(), block_size)
    clf = FewShotClassifier(estimator=est, time=time, block_size=block_size, buffer=buffer, n_splits=n_splits,
                            random_state=random_state)
    return clf._fit_cube(emb, samples, X, y, excluded)


def linear_direction(positives: list[np.ndarray], negatives: list[np.ndarray],
                     background: np.ndarray) -> np.ndarray:
    """Weight vector of a logistic regression: positives vs negatives + background.

    The search direction of ``method="linear"`` queries (:class:`eoembed.index.Query`).
    Explicit negatives alone only teach what separates positives *from them*; a
    direction trained that way can rank unrelated land cover highest. The
    ``background`` vectors (a random sample of the index) join the negatives with a
    total weight equal to the explicit negatives' (or the positives' when there are none).

    Parameters
    ----------
    positives, negatives:
        Lists of ``(n_i, dim)`` arrays (one per example).
    background:
        ``(m, dim)`` weak negatives.

    Returns
    -------
    numpy.ndarray
        ``(dim,)`` float64 weights (not normalised).
    """
    require("sklearn", "search", "method='linear' query refinement")
    from sklearn.linear_model import LogisticRegression

    nb = len(background)
    if not negatives and nb == 0:
        raise QueryError("method='linear' needs negatives= (or background > 0) to train a direction.")
    npos = sum(len(v) for v in positives)
    nneg = sum(len(v) for v in negatives)
    X = np.concatenate(list(positives) + list(negatives) + [background])
    y = np.r_[np.ones(npos), np.zeros(nneg + nb)]
    w = np.r_[np.ones(npos + nneg), np.full(nb, (nneg or npos) / max(nb, 1))]
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    clf.fit(X, y, sample_weight=w)
    return clf.coef_[0]
