"""Few-shot classification of embedding cubes, and the estimator factory of eoembed.

A handful of labelled points, polygons or a label raster is sampled at patch centres
of an embedding cube (:mod:`eoembed.classify.labels`); a scikit-learn estimator
(:func:`make_estimator`, also the factory of :mod:`eoembed.analysis.regress` and
:mod:`eoembed.evaluate`) is fitted on the patch vectors and applied to every patch,
giving a class map and per-class probabilities on the cube grid. Evaluation is
spatial-block cross-validation (:mod:`eoembed.classify.cv`). :func:`linear_direction` is
the search direction of ``method="linear"`` index queries.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from eoembed.classify.cv import CVReport, SpatialBlockKFold, classification_report, plan_folds, spatial_blocks
from eoembed.classify.labels import sample_labels
from eoembed.cube import apply_embedding, canonical, check_same_space, cube_info, patch_pitch, spatial_coords, \
    write_georef
from eoembed.exceptions import LabelError, ParameterError, QueryError, require

__all__ = ["FewShotClassifier", "feature_block", "fewshot", "fit_estimator", "linear_direction", "make_estimator",
           "select_time"]

_FEATURE_MODES = ("stack", "mean")


# ---------------------------------------------------------------------------------
# features and estimators
# ---------------------------------------------------------------------------------
def feature_block(block: np.ndarray, mode: Any, has_time: bool) -> np.ndarray:
    """Feature rows of patch vectors (the classifier's and the regressor's features):
    ``(time?, embedding, ...)`` numpy → ``(..., F)`` features."""
    if has_time:
        if mode == "mean":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                block = np.nanmean(block, axis=0)
        else:  # stack
            block = block.reshape((-1,) + block.shape[2:])
    return np.moveaxis(block, 0, -1)


def select_time(emb: xr.DataArray, time: Any) -> tuple[xr.DataArray, Any]:
    """``emb`` restricted to one timestep, or with its feature mode (``"stack"``/``"mean"``)."""
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


def make_estimator(estimator: Any = "logistic", *, task: str = "classification", random_state: int = 0,
                   standardize: bool | None = None, **params: Any):
    """The one estimator factory: a scikit-learn estimator for a name, or a clone of an instance.

    Parameters
    ----------
    estimator:
        ``task="classification"``: ``"logistic"`` (standardised logistic regression, balanced
        class weights), ``"knn"`` (5 neighbours, cosine, distance-weighted),
        ``"random_forest"``. ``task="regression"``: ``"ridge"`` (standardised, alpha by
        leave-one-out over 1e-2..1e4), ``"knn"`` (10 neighbours, cosine), ``"gp"`` (Gaussian
        process, constant × RBF + white noise on standardised features). Or an instance
        (cloned; a classifier for classification, a regressor for regression).
    standardize:
        Put a ``StandardScaler`` in front (default: as listed above).
    **params:
        Parameters of the named estimator (``n_neighbors=``, ``class_weight=``, ``weights=``…).

    Raises
    ------
    ParameterError
        Unknown name or task, or an instance of the wrong kind.
    """
    require("sklearn", "search", "Few-shot classification" if task == "classification" else "Regression")
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task not in ("classification", "regression"):
        raise ParameterError(f"task must be 'classification' or 'regression', got {task!r}.")
    names = "'logistic', 'knn', 'random_forest'" if task == "classification" else "'ridge', 'knn', 'gp'"
    kind = "classifier" if task == "classification" else "regressor"
    if not isinstance(estimator, str):
        ok = (is_classifier(estimator) or hasattr(estimator, "predict")) if task == "classification" else (
            is_regressor(estimator) or (hasattr(estimator, "fit") and hasattr(estimator, "predict")
                                        and not hasattr(estimator, "predict_proba")))
        if not ok:
            raise ParameterError(f"estimator must be {names} or a scikit-learn {kind}, got {estimator!r}.")
        return clone(estimator)
    name = estimator.lower()
    scaled = True
    if task == "classification" and name in ("logistic", "logreg", "linear"):
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(**{"C": 1.0, "class_weight": "balanced", "max_iter": 3000, **params})
    elif name in ("knn", "kneighbors"):
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        scaled = False
        est = (KNeighborsClassifier(**{"n_neighbors": 5, "weights": "distance", "metric": "cosine", **params})
               if task == "classification" else
               KNeighborsRegressor(**{"n_neighbors": 10, "metric": "cosine", **params}))
    elif task == "classification" and name in ("random_forest", "rf"):
        from sklearn.ensemble import RandomForestClassifier

        scaled = False
        est = RandomForestClassifier(**{"n_estimators": 200, "class_weight": "balanced",
                                        "random_state": random_state, **params})
    elif task == "regression" and name == "ridge":
        from sklearn.linear_model import RidgeCV

        est = RidgeCV(**{"alphas": np.logspace(-2, 4, 13), **params})
    elif task == "regression" and name == "gp":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        kernel = ConstantKernel(1.0) * RBF(length_scale=10.0, length_scale_bounds=(1e-2, 1e4)) + WhiteKernel(0.1)
        est = GaussianProcessRegressor(**{"kernel": kernel, "normalize_y": True, "random_state": random_state,
                                          **params})
    else:
        raise ParameterError(f"Unknown estimator {estimator!r}; use {names} or a scikit-learn {kind} instance.")
    return make_pipeline(StandardScaler(), est) if (scaled if standardize is None else standardize) else est


def fit_estimator(template: Any, X: np.ndarray, y: np.ndarray):
    """A fitted clone of ``template`` (kNN's ``n_neighbors`` capped at the training size)."""
    from sklearn.base import clone

    est = clone(template)
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
# classifier
# ---------------------------------------------------------------------------------
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
        self.estimator_ = fit_estimator(self._template, X, y)
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
    def _folds(self, spatial: bool, n_splits: int | None):
        if self.samples is None:
            raise ParameterError("folds()/cv_report() need the patch locations: fit with fewshot(emb, labels), or "
                                 "use cross_val_score(clf, X, y, cv=SpatialBlockKFold(xy, block_size=...)).")
        return plan_folds(len(self.y), xy=self.samples[["x", "y"]].to_numpy(), y=self.y, spatial=spatial,
                          block_size=self.block_size, buffer=self.buffer, n_splits=int(n_splits or self.n_splits),
                          random_state=self.random_state)

    def folds(self, *, spatial: bool = True, n_splits: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(train, test)`` index arrays used by :meth:`cv_report` (:func:`~eoembed.classify.plan_folds`).

        Spatial folds: whole blocks go to one side (``StratifiedGroupKFold``), then
        training samples within ``buffer`` of any test sample are removed.

        ``n_splits`` (default the classifier's) is reduced, with a ``UserWarning``, to the
        label count of the rarest class (stratified folds cannot outnumber it) and, for
        spatial folds, to the number of blocks. A class with fewer than 2 labelled patches
        raises :class:`~eoembed.exceptions.TooFewLabelsError`.
        """
        f = self._folds(spatial, n_splits)
        for note in f.notes:
            warnings.warn(note, UserWarning, stacklevel=2)
        return f.splits

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
        key = (spatial, n_splits)
        if key in self._reports:
            return self._reports[key]
        f = self._folds(spatial, n_splits)
        for note in f.notes:  # e.g. fewer folds than asked: say it in the report and to the caller
            warnings.warn(note, UserWarning, stacklevel=2)

        def fit_predict(tr, te):
            return fit_estimator(self._template, self.X[tr], self.y[tr]).predict(self.X[te])

        rep = classification_report(fit_predict, self.y, self.classes_, f.splits, notes=f.notes,
                                    n_blocks=int(self.samples["block"].nunique()), block_size=self.block_size,
                                    buffer=self.buffer if spatial else 0.0, spatial=spatial)
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
        feats = feature_block(block, mode, mode is not None)
        shape = feats.shape[:-1]
        p = self.predict_proba_vectors(feats.reshape(-1, feats.shape[-1]))
        return p.reshape(shape + (len(self.classes_),))

    def area_report(self, validation: Any, *, class_column: str = "class", class_map: Any = None,
                    emb: xr.DataArray | None = None, level: float = 0.95):
        """Class areas with confidence intervals and user's/producer's accuracy (Olofsson et al. 2014).

        Parameters
        ----------
        validation:
            Reference labels **not used for training**, ideally a stratified random sample of
            the map (:func:`eoembed.stats.stratified_sample` draws one to label): a
            GeoDataFrame of points/polygons with ``class_column`` or a label raster, located on
            the map's patches with the one patch locator.
        class_map:
            The ``(y, x)`` class map (default ``self.predict_map(emb)["class"]``).

        Returns
        -------
        eoembed.stats.AreaReport
            Per class: mapped area, estimated area ± CI (ha on a metric CRS), user's and
            producer's accuracy ± CI; overall accuracy.

        Raises
        ------
        LabelError
            A validation patch is also a training patch (not independent), or no
            validation label falls on a mapped patch.
        """
        from eoembed.classify.labels import sample_labels
        from eoembed.stats import area_report

        cmap = self.predict_map(emb)["class"] if class_map is None else class_map
        ref = sample_labels(cmap.expand_dims(embedding=1), validation, class_column=class_column)
        if self.samples is not None and len(self.samples):
            train = set(zip(self.samples["row"].tolist(), self.samples["col"].tolist()))
            overlap = [rc for rc in zip(ref["row"].tolist(), ref["col"].tolist()) if rc in train]
            if overlap and (class_map is None and emb is None):
                raise LabelError(
                    f"{len(overlap)} validation patch(es) are training patches of this classifier; an area estimate "
                    "needs independent reference labels. Hold them out of training (e.g. draw them with "
                    "eoembed.stats.stratified_sample and label them) or pass a class_map made without them.")
        mapped = np.asarray(cmap.values)[ref["row"].to_numpy(), ref["col"].to_numpy()]
        nodata = cmap.attrs.get("nodata")
        ok = mapped != nodata if nodata is not None else np.ones(len(mapped), bool)
        if not ok.any():
            raise LabelError("No validation label falls on a mapped (non-nodata) patch of the class map.")
        values = np.asarray(cmap.attrs.get("flag_values", []))
        names = str(cmap.attrs.get("flag_meanings", "")).split()
        ref_vals = ref["label"].to_numpy()[ok]
        if len(values) == len(names) and not np.issubdtype(np.asarray(self.classes_).dtype, np.integer):
            code = {str(c): v for c, v in zip(self.classes_, values)}  # string classes are coded 0..K-1 on the map
            ref_vals = np.array([code.get(str(v), -9999) for v in ref_vals])
        return area_report(cmap, mapped[ok], ref_vals, nodata=nodata, level=level)

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
        src, mode = select_time(src, self.time)
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
    sel, mode = select_time(emb, time)
    idx_r = xr.DataArray(samples["row"].to_numpy(), dims="sample")
    idx_c = xr.DataArray(samples["col"].to_numpy(), dims="sample")
    vals = np.asarray(sel.isel(y=idx_r, x=idx_c).values)  # (time?, embedding, sample)
    X = feature_block(vals, mode, mode is not None).astype(np.float32)
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
