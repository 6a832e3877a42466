"""Change between two embedding cubes of the same place: per-patch cosine distance.

Two cubes of the same model on the same patch grid (two dates, two years, two halves
of a season — or two timesteps of one ``pool_time=False`` cube) are compared patch by
patch: ``distance = 1 - cos(a, b)`` in ``[0, 2]``. A patch is *changed* when its
distance exceeds a threshold, either given or chosen by **Otsu's rule** on the
distance histogram (256 bins over the observed range: the cut that maximises the
between-class variance of "unchanged" and "changed"; the middle of a tie). The distance map is computed
chunk by chunk (a dask cube is never loaded whole; only the ``(y, x)`` map, 1/dim of
the cube, is held).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from eoembed.analysis._common import as_cube, check_int, check_same_grid, provenance, select_time
from eoembed.cube import spatial_coords, write_georef
from eoembed.exceptions import EmptyDataError, ParameterError

__all__ = ["ChangeResult", "change", "cosine_distance", "otsu_threshold"]

OTSU_BINS = 256


def _distance_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` along the last axis; NaN where either vector is NaN, infinite or all zero.

    Dot products and norms accumulate in float64 without float64 copies of the block
    (``einsum(..., dtype=float64)`` casts in small buffers), so a task holds little more
    than its two input chunks.
    """
    fa, fb = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    dots = np.einsum("ij,ij->i", fa, fb, dtype=np.float64)
    na = np.sqrt(np.einsum("ij,ij->i", fa, fa, dtype=np.float64))
    nb = np.sqrt(np.einsum("ij,ij->i", fb, fb, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (na * nb)
    bad = ~(np.isfinite(cos) & np.isfinite(na) & np.isfinite(nb) & (na > 0) & (nb > 0))
    out = (1.0 - np.clip(cos, -1.0, 1.0)).astype(np.float32)
    out[bad] = np.nan
    return out.reshape(a.shape[:-1])


def cosine_distance(emb_a: xr.DataArray, emb_b: xr.DataArray) -> xr.DataArray:
    """Per-patch ``1 - cosine`` of two cubes on one grid (lazy when either is dask-backed).

    No grid check here: :func:`change` checks first.
    """
    if emb_a.chunks is not None or emb_b.chunks is not None:
        chunks = emb_a.chunks or emb_b.chunks
        dims = emb_a.dims if emb_a.chunks is not None else emb_b.dims
        spec = {d: c for d, c in zip(dims, chunks)}
        spec["embedding"] = -1
        emb_a, emb_b = emb_a.chunk(spec), emb_b.chunk(spec)
    b = emb_b.assign_coords(y=emb_a["y"].values, x=emb_a["x"].values)  # same grid, float noise in coords
    out = xr.apply_ufunc(_distance_block, emb_a, b, input_core_dims=[["embedding"], ["embedding"]],
                         dask="parallelized", output_dtypes=[np.float32], keep_attrs=False)
    return out.assign_coords(spatial_coords(emb_a)).rename("distance")


def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of finite ``values``: the histogram cut maximising between-class variance.

    Returns the upper edge of the last "low" bin (values ``>`` it are the high class); when
    several cuts score the same (empty bins between two modes) the middle one.
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2 or v.min() == v.max():
        raise EmptyDataError(
            f"Otsu's rule needs at least two distinct finite distances, got {len(v)} value(s)"
            + (f" all equal to {v[0]:.4g}" if len(v) else "") + ". Give threshold= as a number.")
    hist, edges = np.histogram(v, bins=bins, range=(float(v.min()), float(v.max())))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    w1 = len(v) - w0
    s0 = np.cumsum(hist * centres)[:-1]
    m0 = s0 / np.where(w0 > 0, w0, 1)
    m1 = (np.sum(hist * centres) - s0) / np.where(w1 > 0, w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1
    # well-separated modes leave a plateau of equal scores over the empty bins between them:
    # cut in the middle of the plateau, not at its lower end (the edge of the "unchanged" mode)
    first = int(np.argmax(between))
    flat = between >= between[first] * (1 - 1e-12)
    last = first
    while last + 1 < len(flat) and flat[last + 1]:
        last += 1
    return float(edges[1:-1][(first + last) // 2])


@dataclass
class ChangeResult:
    """What :func:`change` returns.

    Attributes
    ----------
    distance: ``(y, x)`` float32 cosine distance ``1 - cos`` (0 = same direction, NaN where
        either cube is masked), on the cubes' grid with CRS written.
    changed: ``(y, x)`` bool, ``distance > threshold`` (False where NaN).
    threshold: the threshold used. rule: ``"otsu"`` or ``"given"``.
    most_changed: GeoDataFrame of the ``top`` largest distances, largest first: ``rank``,
        ``row``, ``col``, ``x``, ``y`` (patch centre), ``distance``, ``geometry`` (patch
        polygon) in the cube CRS.
    """

    distance: xr.DataArray
    changed: xr.DataArray
    threshold: float
    rule: str
    most_changed: Any

    def to_dataset(self) -> xr.Dataset:
        """``distance`` and ``changed`` (as uint8 0/1, 255 = no data) in one Dataset, ready for Zarr/GeoTIFF."""
        ch = xr.where(self.distance.notnull(), self.changed.astype(np.uint8), np.uint8(255)).astype(np.uint8)
        ch.attrs = {**self.changed.attrs, "flag_values": [0, 1], "flag_meanings": "unchanged changed",
                    "nodata": 255}
        ds = xr.Dataset({"distance": self.distance, "changed": ch.rio.write_nodata(255)})
        ds.attrs = dict(self.distance.attrs)
        return ds

    def __repr__(self) -> str:
        n = int(self.changed.sum())
        valid = int(self.distance.notnull().sum())
        return (f"<ChangeResult {self.distance.sizes['y']}×{self.distance.sizes['x']} patches: {n} of {valid} "
                f"valid changed (distance > {self.threshold:.4f}, rule {self.rule!r})>")


def _pair(emb_a, emb_b, time):
    """Resolve the (a, b) pair and a label for each side."""
    emb_a = as_cube(emb_a)
    if emb_b is None:
        if not (isinstance(time, (tuple, list)) and len(time) == 2):
            raise ParameterError(
                "With one cube, give the two timesteps to compare: change(emb, time=(t0, t1)) "
                "(emb embedded with pool_time=False), or pass a second cube: change(emb_a, emb_b).")
        a, b = select_time(emb_a, time[0], what="time[0]"), select_time(emb_a, time[1], what="time[1]")
        return a, b, str(time[0]), str(time[1])
    emb_b = as_cube(emb_b)
    if isinstance(time, (tuple, list)):
        if len(time) != 2:
            raise ParameterError(f"time must be one timestep or a (time_a, time_b) pair, got {time!r}.")
        ta, tb = time
    else:
        ta = tb = time
    a, b = select_time(emb_a, ta, what="time (emb_a)"), select_time(emb_b, tb, what="time (emb_b)")
    for side, cube in (("emb_a", a), ("emb_b", b)):
        if "time" in cube.dims:
            raise ParameterError(
                f"{side} has a time dimension ({cube.sizes['time']} timesteps); choose the timestep to compare "
                "with time=<label> (both cubes) or time=(label_a, label_b).")
    return a, b, ("emb_a" if ta is None else str(ta)), ("emb_b" if tb is None else str(tb))


def _most_changed(dist: np.ndarray, emb: xr.DataArray, top: int):
    import geopandas as gpd
    import pandas as pd
    import shapely

    flat = np.where(np.isfinite(dist), dist, -np.inf).ravel()
    n = min(top, int(np.isfinite(dist).sum()))
    idx = np.argsort(-flat, kind="stable")[:n]
    r, c = np.divmod(idx, dist.shape[1])
    a, _, x0, _, e, y0 = tuple(emb.rio.transform())[:6]
    left, top_ = x0 + a * c, y0 + e * r
    geoms = shapely.box(np.minimum(left, left + a), np.minimum(top_, top_ + e),
                        np.maximum(left, left + a), np.maximum(top_, top_ + e))
    df = pd.DataFrame({"rank": np.arange(1, n + 1), "row": r, "col": c, "x": emb["x"].values[c],
                       "y": emb["y"].values[r], "distance": flat[idx].astype(np.float64)})
    return gpd.GeoDataFrame(df, geometry=geoms, crs=emb.rio.crs)


def change(
    emb_a: xr.DataArray,
    emb_b: xr.DataArray | None = None,
    *,
    threshold: str | float = "otsu",
    top: int = 20,
    time: Any = None,
) -> ChangeResult:
    """Per-patch change between two embedding cubes of the same grid.

    Parameters
    ----------
    emb_a, emb_b:
        Embedding cubes of the same model, version and patch grid (CRS, transform,
        shape, patch size). ``emb_b=None``: compare two timesteps of ``emb_a`` (a
        ``pool_time=False`` cube) given as ``time=(t0, t1)``.
    threshold:
        ``"otsu"`` (Otsu's rule on a 256-bin histogram of the valid distances) or a
        number in ``[0, 2]``.
    top:
        Number of most-changed patches to list (>= 0).
    time:
        With one cube: ``(t0, t1)``. With two cubes that have a time dim: one label
        (used on both) or ``(t_a, t_b)``. Labels, date strings or integer positions.

    Returns
    -------
    ChangeResult
        ``.distance`` (``(y, x)`` float32 ``1 - cos``), ``.changed`` (bool mask),
        ``.threshold``, ``.rule``, ``.most_changed`` (GeoDataFrame of patch polygons),
        ``.to_dataset()``. Maps carry the cube's CRS, transform and provenance attrs.

    Raises
    ------
    IndexMismatchError
        Different models/versions/dimensions.
    GridMismatchError
        Different CRS, transform, shape or patch size (re-embed on the same grid;
        embeddings must not be resampled).
    ParameterError, DimensionError
        Bad ``threshold``, ``top`` or ``time``.
    EmptyDataError
        No patch valid in both cubes.
    """
    if isinstance(threshold, str):
        if threshold.lower() != "otsu":
            raise ParameterError(f"threshold must be 'otsu' or a number in [0, 2], got {threshold!r}.")
        rule = "otsu"
    elif isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.number)) \
            or not 0.0 <= float(threshold) <= 2.0:
        raise ParameterError(f"threshold must be 'otsu' or a number in [0, 2] (cosine distance), got {threshold!r}.")
    else:
        rule = "given"
    top = check_int(top, "top", low=0)
    a, b, label_a, label_b = _pair(emb_a, emb_b, time)
    check_same_grid(a, b, names=("emb_a", "emb_b") if emb_b is not None else ("time[0]", "time[1]"))
    dist = cosine_distance(a, b)
    d = np.asarray(dist.values, np.float32)  # one pass over both cubes, chunk by chunk
    if not np.isfinite(d).any():
        raise EmptyDataError("No patch has a valid (non-NaN) vector in both cubes; nothing to compare.")
    thr = otsu_threshold(d) if rule == "otsu" else float(threshold)
    attrs = {**provenance(a), "eoembed:change_a": label_a, "eoembed:change_b": label_b,
             "eoembed:change_threshold": thr, "eoembed:change_rule": rule}
    distance = xr.DataArray(d, dims=("y", "x"), coords=spatial_coords(dist), name="distance",
                            attrs={**attrs, "long_name": "cosine distance (1 - cos)", "units": "1",
                                   "valid_min": 0.0, "valid_max": 2.0})
    distance = write_georef(distance, a)
    with np.errstate(invalid="ignore"):
        changed = xr.DataArray(np.isfinite(d) & (d > thr), dims=("y", "x"), coords=spatial_coords(dist),
                               name="changed", attrs={**attrs, "long_name": f"changed (distance > {thr:.4g})"})
    changed = write_georef(changed, a)
    return ChangeResult(distance, changed, thr, rule, _most_changed(d, distance, top))
