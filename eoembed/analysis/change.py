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

__all__ = ["ChangeResult", "change", "cosine_distance", "otsu_threshold", "histogram_modes"]

OTSU_BINS = 256
#: Cosine distances at or below this are float noise (float32 vectors: ~1e-7 per component,
#: accumulated); a pair of cubes whose distances all lie below it has not changed.
NOISE_FLOOR = 1e-4
#: Largest number of distances the bimodality check fits (a random subsample above it).
_MODE_SAMPLE = 20_000


def histogram_modes(values: np.ndarray, *, seed: int = 0) -> tuple[bool, str]:
    """Does the distance histogram have two groups? ``(bimodal, reason)``.

    A one- and a two-component Gaussian mixture are fitted to the finite values (at most
    20,000, a random subsample); the histogram counts as two groups only when BIC prefers
    two components **and** the fitted two-component density has two peaks with a dip
    between them (skewed one-mode histograms, which BIC alone splits, have one peak).
    Otsu's rule cuts every histogram somewhere; on one mode its cut is not a
    changed/unchanged boundary.
    """
    from sklearn.mixture import GaussianMixture

    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) < 20:
        return False, f"only {len(v)} valid distances: too few to see two groups"
    if len(v) > _MODE_SAMPLE:
        v = np.random.default_rng(seed).choice(v, _MODE_SAMPLE, replace=False)
    x = v.reshape(-1, 1)
    g1 = GaussianMixture(1, random_state=seed).fit(x)
    g2 = GaussianMixture(2, random_state=seed, n_init=3).fit(x)
    if g2.bic(x) >= g1.bic(x):
        return False, "a single Gaussian describes the histogram as well as two (BIC)"
    grid = np.linspace(v.min(), v.max(), 512).reshape(-1, 1)
    dens = np.exp(g2.score_samples(grid))
    peaks = np.flatnonzero((dens[1:-1] > dens[:-2]) & (dens[1:-1] >= dens[2:])) + 1
    if len(peaks) < 2:
        return False, "the histogram has one peak (a skewed or broad single group)"
    lo, hi = peaks[0], peaks[-1]
    dip = float(dens[lo:hi + 1].min()) / float(min(dens[lo], dens[hi]))
    if dip > 0.9:
        return False, f"the two peaks are not separated (density between them {dip:.0%} of the lower peak)"
    return True, f"two groups (density between the peaks {dip:.0%} of the lower peak)"


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
    threshold: the threshold used. rule: ``"otsu"``, ``"given"`` or ``"no change"`` (every
        distance at or below float noise, :data:`NOISE_FLOOR`: nothing is flagged).
    bimodal: whether the distance histogram has two groups (:func:`histogram_modes`);
        with one group Otsu's cut is not a changed/unchanged boundary. ``modes``: why.
    null: with ``null=``, the distances of a stable pair (``(y, x)``, same grid) and
        ``null_exceed``, the share of those stable patches above the threshold (the
        false-change rate the threshold implies).
    most_changed: GeoDataFrame of the ``top`` largest distances, largest first: ``rank``,
        ``row``, ``col``, ``x``, ``y`` (patch centre), ``distance``, ``geometry`` (patch
        polygon) in the cube CRS.
    """

    distance: xr.DataArray
    changed: xr.DataArray
    threshold: float
    rule: str
    most_changed: Any
    bimodal: bool = True
    modes: str = ""
    null: Any = None
    null_exceed: float = float("nan")

    @property
    def verdict(self) -> str:
        """One line: what the threshold means for this pair."""
        if self.rule == "no change":
            return (f"no change: every distance ≤ {NOISE_FLOOR:g} (float noise); the cubes hold the same vectors")
        parts = []
        if self.rule == "otsu" and not self.bimodal:
            parts.append(f"the distance histogram is unimodal ({self.modes}): Otsu's threshold splits one group "
                         "and is not a change boundary — compare with a stable pair (null=) or give threshold=")
        if np.isfinite(self.null_exceed):
            parts.append(f"{self.null_exceed:.1%} of the stable pair's patches exceed the threshold "
                         f"(null 99th percentile {float(np.nanpercentile(self.null.values, 99)):.4f})")
        return "; ".join(parts) if parts else f"threshold {self.threshold:.4f} ({self.rule})"

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
                f"valid changed (distance > {self.threshold:.4f}, rule {self.rule!r}); {self.verdict}>")


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
    null: Any = None,
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
    null:
        A stable pair to set the threshold against: ``(t0, t1)`` (two timesteps of the
        same cube(s) with no change expected, e.g. adjacent dates) or ``(cube_c, cube_d)``.
        Its distances are returned as ``.null`` and the share above the threshold as
        ``.null_exceed``.

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
    bimodal, modes = True, ""
    if rule == "otsu":
        if float(np.nanmax(d)) <= NOISE_FLOOR:
            rule, thr, bimodal, modes = "no change", NOISE_FLOOR, False, "all distances within float noise"
        else:
            thr = otsu_threshold(d)
            bimodal, modes = histogram_modes(d)
    else:
        thr = float(threshold)
    null_d, null_exceed = None, float("nan")
    if null is not None:
        if not (isinstance(null, (tuple, list)) and len(null) == 2):
            raise ParameterError(f"null must be a stable pair: (t0, t1) timesteps or (cube_c, cube_d), got {null!r}.")
        if isinstance(null[0], xr.DataArray):
            na, nb = _pair(null[0], null[1], None)[:2]
        else:
            na, nb = _pair(emb_a, emb_b, tuple(null))[:2]
        check_same_grid(a, na, names=("emb_a", "null"))
        null_d = np.asarray(cosine_distance(na, nb).values, np.float32)
        if not np.isfinite(null_d).any():
            raise EmptyDataError("The null pair has no patch valid in both cubes.")
        null_exceed = float(np.mean(null_d[np.isfinite(null_d)] > thr))
    attrs = {**provenance(a), "eoembed:change_a": label_a, "eoembed:change_b": label_b,
             "eoembed:change_threshold": thr, "eoembed:change_rule": rule, "eoembed:change_bimodal": int(bimodal)}
    distance = xr.DataArray(d, dims=("y", "x"), coords=spatial_coords(dist), name="distance",
                            attrs={**attrs, "long_name": "cosine distance (1 - cos)", "units": "1",
                                   "valid_min": 0.0, "valid_max": 2.0})
    distance = write_georef(distance, a)
    with np.errstate(invalid="ignore"):
        changed = xr.DataArray(np.isfinite(d) & (d > thr), dims=("y", "x"), coords=spatial_coords(dist),
                               name="changed", attrs={**attrs, "long_name": f"changed (distance > {thr:.4g})"})
    changed = write_georef(changed, a)
    null_da = None
    if null_d is not None:
        null_da = write_georef(xr.DataArray(null_d, dims=("y", "x"), coords=spatial_coords(dist), name="null_distance",
                                            attrs={"long_name": "cosine distance of the stable pair"}), a)
    top_df = _most_changed(d, distance, 0 if rule == "no change" else top)
    return ChangeResult(distance, changed, thr, rule, top_df, bimodal, modes, null_da, null_exceed)
