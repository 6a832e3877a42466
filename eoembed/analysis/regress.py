"""Regression of a continuous quantity from an embedding cube, honestly validated.

Targets are measured points (GeoDataFrame / DataFrame with ``x``, ``y``) or a raster on
any grid (area-mean resampled onto the embedding's patch grid). A scikit-learn
regressor is fitted on the patch vectors; spatial-block cross-validation (the
splitter of :mod:`eoembed.classify`: whole blocks on one side, plus a buffer) reports
R² and RMSE per fold against two baselines scored on the same folds: *predict the
training mean* and the same estimator on the *spectral* model's features (band
statistics, no weights) when ``baseline_cube=`` is given.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from eoembed.analysis._common import as_cube, check_int, provenance
from eoembed.cube import (apply_embedding, cube_info, locate_patches, patch_pitch, raster_on_patches, spatial_coords,
                          write_georef)
from eoembed.exceptions import LabelError, ParameterError, TooFewLabelsError


def _classify():
    """eoembed.classify (estimator factory, features, time selection, spatial blocks and the one split
    function), imported when first needed:
    it loads scikit-learn, which importing eoembed.analysis (or reading its signatures) must not."""
    import eoembed.classify

    return eoembed.classify

__all__ = ["RegressionResult", "make_regressor", "regress", "sample_targets"]

_CV = ("spatial", "random")


# ---------------------------------------------------------------------------------
# targets → patches
# ---------------------------------------------------------------------------------
def _raster_targets(emb: xr.DataArray, raster: xr.DataArray, nodata: Any):
    return raster_on_patches(emb, raster, resampling="average", nodata=nodata, what="target")


def _numeric_target(col, value: str) -> np.ndarray:
    """A target column as float64; strings, categories and decimal commas are refused, not coerced to NaN."""
    import pandas as pd

    if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == bool:
        raise LabelError(f"The target column {value!r} is {'categorical' if col.dtype != bool else 'boolean'} "
                         f"({col.dtype}); regression needs a continuous number. For classes use "
                         "eoembed.classify.fewshot(emb, labels, class_column=...).")
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.to_numpy(np.float64)
    text = col.dropna().astype(str).str.strip()
    num = pd.to_numeric(text, errors="coerce")
    bad = text[num.isna() & (text != "")]
    if len(bad):
        commas = bad.str.fullmatch(r"[+-]?\d+,\d*").mean() if len(bad) else 0.0
        if commas > 0.5:
            raise LabelError(f"The target column {value!r} holds numbers with decimal commas ({list(bad[:3])}); "
                             f"{len(bad)} of {len(text)} values would be lost. Convert it first: "
                             f"df[{value!r}] = df[{value!r}].str.replace(',', '.').astype(float).")
        raise LabelError(f"The target column {value!r} is not numeric: {len(bad)} of {len(text)} values are text "
                         f"(e.g. {list(bad.unique()[:3])}). Regression needs a continuous number per place; for "
                         "classes use eoembed.classify.fewshot.")
    return pd.to_numeric(col, errors="coerce").to_numpy(np.float64)


def _point_targets(emb: xr.DataArray, targets, value: str, crs: Any):
    import pandas as pd

    if value not in targets.columns:
        raise LabelError(f"The targets have no column {value!r}; columns are {list(targets.columns)}. "
                         "Pass value='<your column>'.")
    if hasattr(targets, "geometry") and "geometry" in targets.columns:
        if targets.crs is None:
            raise LabelError("The target GeoDataFrame has no CRS; set it with targets.set_crs('EPSG:4326') "
                             "(or the CRS your coordinates are in).")
        g = targets[targets.geometry.notna() & ~targets.geometry.is_empty]
        loc = locate_patches(emb, g.geometry.representative_point())  # one patch per target, its CRS
        v = g[value]
    else:
        if not {"x", "y"} <= set(targets.columns):
            raise LabelError("A target DataFrame needs 'x' and 'y' columns (in crs=, default the cube's CRS), "
                             f"got {list(targets.columns)}.")
        xy = np.column_stack([pd.to_numeric(targets[k], errors="coerce").to_numpy(np.float64) for k in "xy"])
        loc = locate_patches(emb, xy, crs=crs)
        v = targets[value]
    v = _numeric_target(v, value)[loc.origin]
    r, c = loc.row, loc.col
    inside = loc.inside
    if len(r) and not inside.any():
        x0, y0, x1, y1 = (float(b) for b in emb.rio.bounds())
        raise LabelError(f"None of the {len(r)} target points fall inside the embedding cube (bounds {x0:.0f}, "
                         f"{y0:.0f}, {x1:.0f}, {y1:.0f} in {emb.rio.crs}). Check their CRS.")
    if (~inside).any():
        warnings.warn(f"{int((~inside).sum())} target point(s) fall outside the embedding cube and were dropped.",
                      stacklevel=4)
    ok = inside & np.isfinite(v)
    df = pd.DataFrame({"row": r[ok], "col": c[ok], "value": v[ok]}).groupby(["row", "col"], as_index=False).mean()
    return df["row"].to_numpy(), df["col"].to_numpy(), df["value"].to_numpy()


def sample_targets(emb: xr.DataArray, targets: Any, *, value: str = "value", crs: Any = None,
                   nodata: Any = None):
    """Continuous targets on the patch grid of ``emb``.

    Parameters
    ----------
    targets:
        Points: a GeoDataFrame (any CRS; polygons use a representative point) or a
        DataFrame with ``x``, ``y`` columns in ``crs`` (default the cube's), both with
        a numeric ``value`` column — several points in one patch are averaged. Or a
        raster DataArray ``(y, x)`` on any grid/CRS, area-mean resampled onto the patch
        grid (``nodata``/NaN pixels ignored).

    Returns
    -------
    pandas.DataFrame
        ``row``, ``col``, ``x``, ``y`` (patch centre), ``value``; one row per patch.
    """
    import pandas as pd

    if isinstance(targets, xr.DataArray):
        r, c, v = _raster_targets(emb, targets, nodata)
    elif hasattr(targets, "columns"):
        if len(targets) == 0:
            raise LabelError("The targets table is empty; give at least a few measured places.")
        r, c, v = _point_targets(emb, targets, value, crs)
    else:
        raise LabelError("targets must be a GeoDataFrame/DataFrame of points with a value column or a raster "
                         f"DataArray, got {type(targets).__name__}.")
    if len(r) == 0:
        raise LabelError("No usable target value on the embedding grid (all NaN/nodata or outside the cube).")
    df = pd.DataFrame({"row": np.asarray(r, np.int64), "col": np.asarray(c, np.int64),
                       "value": np.asarray(v, np.float64)})
    df["x"] = emb["x"].values[df["col"].to_numpy()]
    df["y"] = emb["y"].values[df["row"].to_numpy()]
    return df[["row", "col", "x", "y", "value"]]


# ---------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------
def make_regressor(estimator: Any = "ridge", *, random_state: int = 0):
    """Regressor for ``"ridge"``, ``"knn"``, ``"gp"`` or a clone of a scikit-learn regressor
    (:func:`eoembed.classify.make_estimator` with ``task="regression"``)."""
    return _classify().make_estimator(estimator, task="regression", random_state=random_state)


def _final(est):
    return est.steps[-1][1] if hasattr(est, "steps") else est


def _fit(template, X, y):
    return _classify().fit_estimator(template, X, y)


def _predict(est, X: np.ndarray, y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Prediction and, where the estimator gives one, a per-row uncertainty."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.neighbors import KNeighborsRegressor

    inner = _final(est)
    if isinstance(inner, GaussianProcessRegressor):
        mu, sd = est.predict(X, return_std=True)
        return np.asarray(mu), np.asarray(sd)
    pred = np.asarray(est.predict(X))
    if isinstance(inner, KNeighborsRegressor):
        Xt = est[:-1].transform(X) if hasattr(est, "steps") else X
        _, ind = inner.kneighbors(Xt)
        return pred, np.asarray(y_train)[ind].std(axis=1)
    return pred, None


def _uncertainty_kind(est) -> str | None:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.neighbors import KNeighborsRegressor

    inner = _final(est)
    if isinstance(inner, GaussianProcessRegressor):
        return "Gaussian-process predictive standard deviation"
    if isinstance(inner, KNeighborsRegressor):
        return "standard deviation of the neighbours' target values"
    return None


# ---------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------
@dataclass
class RegressionResult:
    """A regressor fitted on the targets, with its cross-validated scores.

    Attributes
    ----------
    estimator_: fitted on every usable target patch. samples: DataFrame of those patches
    (``row``, ``col``, ``x``, ``y``, ``value``, ``block``). folds: DataFrame, one row per
    fold: ``n_train``, ``n_test``, ``r2``/``rmse`` (model), ``r2_mean``/``rmse_mean``
    (predict-the-training-mean), ``r2_spectral``/``rmse_spectral`` (same estimator on the
    spectral baseline's features; NaN without ``baseline_cube``). cv, block_size,
    buffer, value, units: how it was made.
    """

    estimator_: Any
    template: Any
    emb: xr.DataArray
    samples: Any
    X: np.ndarray
    y: np.ndarray
    folds: Any
    cv: str
    block_size: float
    buffer: float
    time: Any
    value: str
    units: str
    baseline_model: str | None
    notes: list[str]
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    _SUFFIX = {"model": ("", "pred"), "mean baseline": ("_mean", "pred_mean"),
               "spectral baseline": ("_spectral", "pred_spectral")}

    def summary(self, *, level: float = 0.95, n_boot: int = 500):
        """Pooled out-of-fold R² (with a spatial-block bootstrap interval) and RMSE per scorer (a DataFrame).

        Every target patch is predicted once, by the fold that held it out; R² is
        ``1 - SS_res / SS_tot`` over all of them against the overall mean (per-fold R²,
        each against its own small fold's mean, collapses with small blocks and is kept
        as detail in ``folds``). ``r2_low``/``r2_high``: percentile interval from
        resampling whole spatial blocks (:func:`eoembed.stats.block_bootstrap`).
        ``skill``: ``1 - RMSE / RMSE of predict-the-mean``. ``r2_fold_mean``: the old
        per-fold mean, for reference.

        Computed once per ``(level, n_boot)`` and kept (printing the result, ``plot()`` and
        ``compare()`` reuse it); a copy is returned, so editing it changes nothing here.
        """
        key = ("summary", float(level), int(n_boot))
        if key not in self._cache:
            self._cache[key] = self._summary(level, n_boot)
        return self._cache[key].copy()

    def _summary(self, level: float, n_boot: int):
        import pandas as pd

        from eoembed.stats import block_bootstrap

        tested = self.samples["fold"].to_numpy() >= 0
        yt = self.y[tested]
        blocks = self.samples["block"].to_numpy()[tested]
        rmse_mean = _rmse(yt, self.samples["pred_mean"].to_numpy()[tested])
        rows = {}
        for name, (suf, col) in self._SUFFIX.items():
            p = self.samples[col].to_numpy()[tested]
            if not np.isfinite(p).all():
                continue
            iv = block_bootstrap(_pooled_r2, blocks, yt, p, n_boot=n_boot, level=level)
            rm = _rmse(yt, p)
            rows[name] = {"r2": iv.estimate, "r2_low": iv.low, "r2_high": iv.high, "rmse": rm,
                          "skill": 1.0 - rm / rmse_mean if rmse_mean > 0 else np.nan,
                          "r2_fold_mean": float(self.folds[f"r2{suf}"].mean())}
        return pd.DataFrame.from_dict(rows, orient="index")

    def compare(self, baseline: str = "mean", *, level: float = 0.95):
        """The paired verdict (:func:`eoembed.stats.compare`) of the model's per-fold RMSE against a baseline's.

        ``baseline``: ``"mean"`` (predict the training mean) or ``"spectral"``.
        """
        from eoembed.stats import compare

        if baseline not in ("mean", "spectral"):
            raise ParameterError(f"baseline must be 'mean' or 'spectral', got {baseline!r}.")
        other = self.folds[f"rmse_{baseline}"].to_numpy()
        if not np.isfinite(other).any():
            raise ParameterError("No spectral baseline was scored; pass baseline_cube= to regress().")
        key = ("compare", baseline, float(level))
        if key not in self._cache:  # a frozen Comparison: shared safely
            self._cache[key] = compare(self.folds["rmse"].to_numpy(), other, names=("model", f"{baseline} baseline"),
                                       metric=f"RMSE ({self.units or 'target units'})", higher_is_better=False,
                                       level=level)
        return self._cache[key]

    def __str__(self) -> str:
        how = (f"spatial-block CV: {len(self.folds)} folds, {self.block_size:g} m blocks, buffer {self.buffer:g} m"
               if self.cv == "spatial" else f"random {len(self.folds)}-fold CV (optimistic)")
        s = self.summary()
        lines = [f"Regression of {self.value!r} ({self.units or 'no units'}) with "
                 f"{type(_final(self.template)).__name__} on {len(self.y)} patches; {how}",
                 "pooled out-of-fold scores (95% interval: spatial-block bootstrap):"]
        for name, r in s.iterrows():
            lines.append(f"  {name:<18} R² {r.r2:+.3f} [{r.r2_low:+.3f}, {r.r2_high:+.3f}]   RMSE {r.rmse:.4g}   "
                         f"skill vs mean {r.skill:+.3f}")
        lines.append("verdicts (" + "paired per-fold RMSE" + "):")
        for base in ("mean", "spectral"):
            if np.isfinite(self.folds[f"rmse_{base}"].to_numpy()).any():
                lines.append(f"  {self.compare(base)}")
        lines.append("per-fold R² (each against its own fold's mean; detail): "
                     + ", ".join(f"{v:+.2f}" for v in self.folds["r2"]))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, ax=None, *, uncertainty: bool = True):
        """Predicted (out-of-fold) vs observed, with the 1:1 line; beside it, when the estimator gives one,
        the predicted uncertainty against |error| (binned means) — a useful uncertainty map tracks the error.

        Returns the matplotlib axes (one or two).
        """
        import matplotlib.pyplot as plt

        tested = self.samples["fold"].to_numpy() >= 0
        y, p = self.y[tested], self.samples["pred"].to_numpy()[tested]
        unc = self.oof_uncertainty()[tested] if uncertainty else None
        two = unc is not None and np.isfinite(unc).any()
        if ax is None:
            _, ax = plt.subplots(1, 2 if two else 1, figsize=(11 if two else 5.5, 4.8))
        axes = np.atleast_1d(ax)
        s = self.summary().loc["model"]
        a = axes[0]
        a.scatter(y, p, s=8, alpha=0.6, label="target patches (out-of-fold)")
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        a.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
        a.set_xlabel(f"observed {self.value} [{self.units or '-'}]")
        a.set_ylabel(f"predicted {self.value} [{self.units or '-'}]")
        a.set_title(f"out-of-fold R² {s.r2:+.2f} [{s.r2_low:+.2f}, {s.r2_high:+.2f}], RMSE {s.rmse:.3g}")
        a.legend(loc="upper left")
        if two:
            err = np.abs(p - y)
            order = np.argsort(unc)
            bins = np.array_split(order, min(10, max(2, len(order) // 10)))
            axes[1].plot([unc[b].mean() for b in bins], [err[b].mean() for b in bins], "o-",
                         label="binned mean |error|")
            axes[1].set_xlabel(f"predicted uncertainty [{self.units or '-'}]")
            axes[1].set_ylabel(f"|out-of-fold error| [{self.units or '-'}]")
            rho = _spearman(unc, err)
            axes[1].set_title(f"uncertainty vs error (Spearman ρ {rho:+.2f})")
            axes[1].legend(loc="upper left")
        return axes if two else axes[0]

    def oof_uncertainty(self) -> np.ndarray:
        """Out-of-fold predicted uncertainty per target patch (NaN when the estimator gives none, and for
        patches no fold tested): from the same fold model whose prediction is scored, kept when it was fitted."""
        return self.samples["pred_uncertainty"].to_numpy(np.float64, copy=True)

    def uncertainty_check(self) -> float:
        """Spearman rank correlation of out-of-fold uncertainty with |error| (NaN without uncertainty)."""
        tested = self.samples["fold"].to_numpy() >= 0
        unc = self.oof_uncertainty()[tested]
        if not np.isfinite(unc).any():
            return float("nan")
        return _spearman(unc, np.abs(self.samples["pred"].to_numpy()[tested] - self.y[tested]))

    _repr_pretty_ = lambda self, p, cycle: p.text(str(self))  # noqa: E731

    def _block(self, vectors: np.ndarray, mode: Any, nlead: int) -> np.ndarray:
        block = np.moveaxis(vectors, list(range(-nlead, 0)), list(range(nlead)))
        feats = _classify().feature_block(block, mode, mode is not None)
        shape = feats.shape[:-1]
        f = feats.reshape(-1, feats.shape[-1])
        out = np.full((len(f), 2), np.nan, np.float32)
        ok = np.isfinite(f).all(axis=1)
        if ok.any():
            pred, unc = _predict(self.estimator_, f[ok].astype(np.float32), self.y)
            out[ok, 0] = pred
            if unc is not None:
                out[ok, 1] = unc
        return out.reshape(shape + (2,))

    def predict_map(self, emb: xr.DataArray | None = None) -> xr.Dataset:
        """Predict every patch of a cube (default the training cube).

        Returns
        -------
        xr.Dataset
            ``prediction`` ``(y, x)`` float32 (NaN where the embedding is NaN) with
            colour-bar attrs (``long_name``, ``units``, ``vmin``/``vmax`` = 2nd/98th
            percentile of the training targets, ``cmap``) and, for estimators that give
            one (GP: predictive std; kNN: the neighbours' spread), ``uncertainty``
            ``(y, x)`` in the target's units. Same grid/CRS as ``emb``; lazy if dask.
        """
        src = self.emb if emb is None else as_cube(emb)
        if emb is not None and src.sizes["embedding"] != self.emb.sizes["embedding"]:
            from eoembed.exceptions import IndexMismatchError

            raise IndexMismatchError(f"The regressor was fitted on {self.emb.sizes['embedding']}-d vectors; the "
                                     f"cube has {src.sizes['embedding']}-d ones. Use a cube of the same model.")
        src, mode = _classify().select_time(src, self.time)
        lead = ("time", "embedding") if "time" in src.dims else ("embedding",)
        both = apply_embedding(self._block, src, core_dims=lead, output_dim="out", output_size=2,
                               kwargs={"mode": mode, "nlead": len(lead)})
        coords = spatial_coords(src, drop=lead)
        lo, hi = (float(v) for v in np.percentile(self.y, [2, 98]))
        base = {**provenance(src), "eoembed:regressor": type(_final(self.template)).__name__,
                "eoembed:target": self.value}
        pred = xr.DataArray(both.isel(out=0).transpose("y", "x").data, dims=("y", "x"), coords=coords,
                            name="prediction",
                            attrs={**base, "long_name": f"predicted {self.value}", "units": self.units,
                                   "vmin": lo, "vmax": hi, "cmap": "viridis"})
        out = {"prediction": pred}
        kind = _uncertainty_kind(self.estimator_)
        if kind:
            out["uncertainty"] = xr.DataArray(
                both.isel(out=1).transpose("y", "x").data, dims=("y", "x"), coords=coords, name="uncertainty",
                attrs={**base, "long_name": f"uncertainty of {self.value} ({kind})", "units": self.units,
                       "vmin": 0.0, "vmax": float(np.std(self.y)) or 1.0, "cmap": "magma"})
        ds = xr.Dataset(out, attrs=base)
        return write_georef(ds, src)


# ---------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------
def _features(emb: xr.DataArray, samples, time: Any) -> np.ndarray:
    sel, mode = _classify().select_time(emb, time)
    idx = {"y": xr.DataArray(samples["row"].to_numpy(), dims="s"),
           "x": xr.DataArray(samples["col"].to_numpy(), dims="s")}
    vals = np.asarray(sel.isel(idx).values)  # (time?, embedding, s)
    return _classify().feature_block(vals, mode, mode is not None).astype(np.float32)


def _baseline_emb(emb: xr.DataArray, baseline_cube: Any) -> xr.DataArray:
    """The spectral baseline's embedding on ``emb``'s grid (embedded here from a raw cube)."""
    if isinstance(baseline_cube, xr.DataArray) and "embedding" in baseline_cube.dims:
        base = as_cube(baseline_cube)
    else:
        from eoembed.embed import embed

        ps = emb.attrs.get("eoembed:patch_size")
        kw = {"patch_size": int(ps)} if ps is not None else {}
        base = embed(baseline_cube, model="spectral", progress=False, **kw)
    ia, ib = cube_info(emb), cube_info(base)
    pa, pb = emb.attrs.get("eoembed:patch_size"), base.attrs.get("eoembed:patch_size")
    if ia.shape != ib.shape or emb.rio.crs != base.rio.crs or (pa is not None and pb is not None and pa != pb) \
            or not np.allclose(ia.transform, ib.transform, rtol=0, atol=1e-6 * max(1.0, abs(ia.transform[0]))):
        from eoembed.exceptions import GridMismatchError

        raise GridMismatchError(
            f"The spectral baseline is a {ib.shape[0]}×{ib.shape[1]} patch grid with transform {ib.transform} "
            f"({base.rio.crs}, patch_size {pb}); the embedding is {ia.shape[0]}×{ia.shape[1]} with "
            f"{ia.transform} ({emb.rio.crs}, patch_size {pa}). Embed the baseline from the same input cube with "
            "the same patch_size/tile_size/halo (eoembed.embed(cube, model='spectral', ...)) and pass that "
            "embedding as baseline_cube=.")
    return base


def regress(
    emb: xr.DataArray,
    targets: Any,
    *,
    value: str = "value",
    estimator: Any = "ridge",
    cv: str = "spatial",
    block_size: float | None = None,
    buffer: float | None = None,
    n_splits: int = 5,
    time: Any = "stack",
    baseline_cube: Any = None,
    crs: Any = None,
    nodata: Any = None,
    units: str | None = None,
    max_samples: int | None = 20_000,
    random_state: int = 0,
) -> RegressionResult:
    """Fit a regressor of a continuous target on an embedding cube and cross-validate it.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` (numpy or dask; only target
        patches are read for fitting).
    targets:
        Points (GeoDataFrame, or DataFrame with ``x``/``y`` in ``crs``) with a numeric
        ``value`` column, or a raster DataArray ``(y, x)`` on any grid, area-mean
        resampled onto the patch grid. See :func:`sample_targets`.
    value:
        Target column of a point table (also the target's name in outputs).
    estimator:
        ``"ridge"`` (standardised ridge, alpha by internal leave-one-out over 1e-2..1e4),
        ``"knn"`` (10 nearest neighbours, cosine; uncertainty = neighbours' spread),
        ``"gp"`` (Gaussian process, constant × RBF + white noise on standardised
        features; uncertainty = predictive std), or a scikit-learn regressor (cloned).
    cv:
        ``"spatial"`` (block folds + buffer; honest) or ``"random"`` (K-fold;
        optimistic, for comparison).
    block_size, buffer:
        Spatial block side and buffer in metres (default 10 and 1.5 patch spacings).
    n_splits:
        Folds (capped, with a warning, by the number of blocks).
    time:
        ``"stack"``, ``"mean"`` or one timestep, for cubes with time (as in
        :func:`eoembed.classify.fewshot`).
    baseline_cube:
        The input cube (embedded here with ``model="spectral"`` and the embedding's
        patch size) or a spectral embedding on the same grid; scored with the same
        estimator and folds. ``None``: only the mean baseline.
    crs, nodata, units:
        CRS of a DataFrame's ``x``/``y``; nodata of a raster target; units for the map's
        colour bar (default the raster's ``units`` attr).
    max_samples:
        Subsample target patches above this count.
    random_state:
        Seed for subsampling, fold shuffling and the estimator.

    Returns
    -------
    RegressionResult
        ``.summary()``, ``.folds``, ``.predict_map(emb)``; ``print(result)``.

    Raises
    ------
    LabelError, TooFewLabelsError
        Unusable targets, or fewer than ``2 * n_splits`` usable patches / fewer than 2 blocks.
    ParameterError
        Bad ``estimator``, ``cv``, ``block_size``, ``buffer``, ``n_splits``.
    GridMismatchError
        The baseline embedding is not on the embedding's grid.
    """
    emb = as_cube(emb)
    info = cube_info(emb)
    if cv not in _CV:
        raise ParameterError(f"cv must be one of {_CV}, got {cv!r}.")
    n_splits = check_int(n_splits, "n_splits", low=2)
    random_state = check_int(random_state, "random_state", low=0)
    if max_samples is not None:
        max_samples = check_int(max_samples, "max_samples", low=2 * n_splits)
    for name, v in (("block_size", block_size), ("buffer", buffer)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                              or not np.isfinite(v) or v < (0 if name == "buffer" else 1e-9)):
            raise ParameterError(f"{name} must be a {'non-negative' if name == 'buffer' else 'positive'} number "
                                 f"of metres, got {v!r}.")
    template = make_regressor(estimator, random_state=random_state)
    samples = sample_targets(emb, targets, value=value, crs=crs, nodata=nodata)
    if max_samples is not None and len(samples) > max_samples:
        samples = samples.sample(n=max_samples, random_state=random_state).reset_index(drop=True)
    X = _features(emb, samples, time)
    base = _baseline_emb(emb, baseline_cube) if baseline_cube is not None else None
    Xb = _features(base, samples, "stack") if base is not None else None
    ok = np.isfinite(X).all(axis=1) & (np.isfinite(Xb).all(axis=1) if Xb is not None else True)
    notes = []
    if (~ok).any():
        notes.append(f"{int((~ok).sum())} target patch(es) with NaN (masked) embeddings excluded")
        warnings.warn(notes[-1] + ".", stacklevel=2)
    samples, X = samples[ok].reset_index(drop=True), X[ok]
    Xb = Xb[ok] if Xb is not None else None
    y = samples["value"].to_numpy(np.float64)
    spread = float(np.std(y)) if len(y) else 0.0
    if len(y) >= 2 and spread <= 1e-9 * max(1.0, float(np.max(np.abs(y)))):
        raise LabelError(f"The target is constant ({y[0]:.6g} at all {len(y)} usable patches): there is nothing to "
                         "predict and R² is undefined (it would read 1.000 for any model). Check the value column "
                         "or the raster's nodata.")
    if len(y) < 2 * n_splits:
        raise TooFewLabelsError(f"{len(y)} usable target patches; {n_splits}-fold CV needs at least {2 * n_splits}. "
                                "Measure more places, or lower n_splits.")
    pitch = max(patch_pitch(info), 1e-9)
    block_size = float(block_size) if block_size is not None else 10.0 * pitch
    buffer = float(buffer) if buffer is not None else 1.5 * pitch
    samples["block"] = _classify().spatial_blocks(samples["x"].to_numpy(), samples["y"].to_numpy(), block_size)
    folds = _classify().plan_folds(len(y), xy=samples[["x", "y"]].to_numpy(), spatial=cv == "spatial",
                                   block_size=block_size, buffer=buffer, n_splits=n_splits,
                                   random_state=random_state, what="target patches")
    for note in folds.notes:
        notes.append(note)
        warnings.warn(note, UserWarning, stacklevel=2)
    splits = folds.splits
    rows, oof, fold_of = _score_folds(template, X, Xb, y, splits)
    import pandas as pd

    samples["fold"] = fold_of
    samples["pred"], samples["pred_mean"], samples["pred_spectral"] = oof[:, 0], oof[:, 1], oof[:, 2]
    samples["pred_uncertainty"] = oof[:, 3]
    folds = pd.DataFrame(rows)
    folds.index.name = "fold"
    unit = units if units is not None else (str(targets.attrs.get("units", "")) if isinstance(targets, xr.DataArray)
                                            else "")
    est = _fit(template, X, y)
    return RegressionResult(est, template, emb, samples, X, y, folds, cv, block_size,
                            buffer if cv == "spatial" else 0.0, time, value, unit,
                            (base.attrs.get("eoembed:model", "spectral") if base is not None else None), notes)


def _rmse(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(t) - np.asarray(p)) ** 2)))


def _pooled_r2(t: np.ndarray, p: np.ndarray) -> float:
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return 1.0 - float(np.sum((t - p) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 else float("nan")


def _score_folds(template, X, Xb, y, splits) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Per-fold scores, the out-of-fold predictions (model, mean baseline, spectral baseline, and the model's
    uncertainty where the estimator gives one: column 3) and each patch's fold (-1: never tested)."""
    from sklearn.metrics import mean_squared_error, r2_score

    def r2(t, p):
        return float(r2_score(t, p)) if len(t) > 1 else float("nan")

    def rmse(t, p):
        return float(np.sqrt(mean_squared_error(t, p)))

    rows = []
    oof = np.full((len(y), 4), np.nan)  # model, mean baseline, spectral baseline, model's uncertainty
    fold_of = np.full(len(y), -1)
    for i, (tr, te) in enumerate(splits):
        if len(tr) < 2 or len(te) == 0:
            continue
        p, unc = _predict(_fit(template, X[tr], y[tr]), X[te], y[tr])
        m = np.full(len(te), y[tr].mean())
        oof[te, 0], oof[te, 1], fold_of[te] = p, m, i
        if unc is not None:  # the same fold model's uncertainty: kept, so nothing is refitted for it later
            oof[te, 3] = unc
        row = {"n_train": int(len(tr)), "n_test": int(len(te)), "r2": r2(y[te], p), "rmse": rmse(y[te], p),
               "r2_mean": r2(y[te], m), "rmse_mean": rmse(y[te], m), "r2_spectral": np.nan,
               "rmse_spectral": np.nan}
        if Xb is not None:
            pb = _fit(template, Xb[tr], y[tr]).predict(Xb[te])
            row.update(r2_spectral=r2(y[te], pb), rmse_spectral=rmse(y[te], pb))
            oof[te, 2] = pb
        rows.append(row)
    if not rows:
        raise TooFewLabelsError("No fold could be scored (every training part was too small after the buffer); "
                                "add targets or pass a smaller buffer=.")
    return rows, oof, fold_of
