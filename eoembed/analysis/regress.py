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
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from eoembed.analysis._common import as_cube, check_int, provenance
from eoembed.cube import apply_embedding, cube_info, locate_patches, patch_pitch, spatial_coords, write_georef
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
    from rasterio.enums import Resampling

    if "band" in raster.dims:
        if raster.sizes["band"] != 1:
            raise LabelError(f"The target raster has {raster.sizes['band']} bands; pass one (raster.isel(band=0)).")
        raster = raster.isel(band=0)
    if set(raster.dims) != {"y", "x"}:
        raise LabelError(f"The target raster must have dims ('y', 'x'), got {raster.dims}; select or reduce "
                         "the others (e.g. raster.mean('time')).")
    if raster.rio.crs is None:
        raise LabelError("The target raster has no CRS; write one with raster.rio.write_crs(...).")
    nd = nodata if nodata is not None else raster.rio.nodata
    if nd is None:
        nd = raster.rio.encoded_nodata
    r = raster.transpose("y", "x").astype(np.float64)
    if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
        r = r.where(raster.transpose("y", "x") != nd)
    r = r.rio.write_nodata(np.nan, encoded=False)
    ny, nx = emb.sizes["y"], emb.sizes["x"]
    tmpl = xr.DataArray(np.zeros((ny, nx), np.float32), dims=("y", "x"),
                        coords={"y": emb["y"].values, "x": emb["x"].values})
    tmpl = tmpl.rio.write_crs(emb.rio.crs).rio.write_transform(emb.rio.transform())
    onto = r.rio.reproject_match(tmpl, resampling=Resampling.average).values
    rr, cc = np.nonzero(np.isfinite(onto))
    return rr, cc, onto[rr, cc]


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
    v = pd.to_numeric(v, errors="coerce").to_numpy(np.float64)[loc.origin]
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

    def summary(self):
        """Mean ± std over folds of R² and RMSE for the model and each baseline (a DataFrame).

        ``str(result)`` prints it with a header saying how the folds were made.
        """
        import pandas as pd

        rows = {}
        for name, suf in (("model", ""), ("mean baseline", "_mean"), ("spectral baseline", "_spectral")):
            r2, rmse = self.folds[f"r2{suf}"], self.folds[f"rmse{suf}"]
            if rmse.notna().any():
                rows[name] = {"r2_mean": r2.mean(), "r2_std": r2.std(ddof=0), "rmse_mean": rmse.mean(),
                              "rmse_std": rmse.std(ddof=0)}
        return pd.DataFrame.from_dict(rows, orient="index")

    def __str__(self) -> str:
        how = (f"spatial-block CV: {len(self.folds)} folds, {self.block_size:g} m blocks, buffer {self.buffer:g} m"
               if self.cv == "spatial" else f"random {len(self.folds)}-fold CV (optimistic)")
        s = self.summary()
        lines = [f"Regression of {self.value!r} ({self.units or 'no units'}) with "
                 f"{type(_final(self.template)).__name__} on {len(self.y)} patches; {how}"]
        for name, r in s.iterrows():
            lines.append(f"  {name:<18} R² {r.r2_mean:+.3f} ± {r.r2_std:.3f}   RMSE {r.rmse_mean:.4g} ± "
                         f"{r.rmse_std:.3g}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

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
        import eoembed

        ps = emb.attrs.get("eoembed:patch_size")
        kw = {"patch_size": int(ps)} if ps is not None else {}
        base = eoembed.embed(baseline_cube, model="spectral", progress=False, **kw)
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
    rows = _score_folds(template, X, Xb, y, splits)
    import pandas as pd

    folds = pd.DataFrame(rows)
    folds.index.name = "fold"
    unit = units if units is not None else (str(targets.attrs.get("units", "")) if isinstance(targets, xr.DataArray)
                                            else "")
    est = _fit(template, X, y)
    return RegressionResult(est, template, emb, samples, X, y, folds, cv, block_size,
                            buffer if cv == "spatial" else 0.0, time, value, unit,
                            (base.attrs.get("eoembed:model", "spectral") if base is not None else None), notes)


def _score_folds(template, X, Xb, y, splits) -> list[dict[str, Any]]:
    from sklearn.metrics import mean_squared_error, r2_score

    def r2(t, p):
        return float(r2_score(t, p)) if len(t) > 1 else float("nan")

    def rmse(t, p):
        return float(np.sqrt(mean_squared_error(t, p)))

    rows = []
    for tr, te in splits:
        if len(tr) < 2 or len(te) == 0:
            continue
        p = _fit(template, X[tr], y[tr]).predict(X[te])
        m = np.full(len(te), y[tr].mean())
        row = {"n_train": int(len(tr)), "n_test": int(len(te)), "r2": r2(y[te], p), "rmse": rmse(y[te], p),
               "r2_mean": r2(y[te], m), "rmse_mean": rmse(y[te], m), "r2_spectral": np.nan,
               "rmse_spectral": np.nan}
        if Xb is not None:
            pb = _fit(template, Xb[tr], y[tr]).predict(Xb[te])
            row.update(r2_spectral=r2(y[te], pb), rmse_spectral=rmse(y[te], pb))
        rows.append(row)
    if not rows:
        raise TooFewLabelsError("No fold could be scored (every training part was too small after the buffer); "
                                "add targets or pass a smaller buffer=.")
    return rows
