"""Shared checks of the analyses: time selection, same-grid checks, provenance attrs."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from eoembed.cube import IDENTITY_ATTRS, canonical, cube_info
from eoembed.exceptions import DimensionError, GridMismatchError, IndexMismatchError, ParameterError


def provenance(emb: xr.DataArray) -> dict[str, Any]:
    """The cube's ``eoembed:`` attrs (model id, weights sha256, licence…), to stamp on outputs."""
    return {k: v for k, v in emb.attrs.items() if str(k).startswith("eoembed:")}


def select_time(emb: xr.DataArray, time: Any, *, what: str = "time") -> xr.DataArray:
    """One timestep (label, date string or integer position) of a ``pool_time=False`` cube.

    A partial date (``"2019-05"``) that matches exactly one timestep selects it.

    ``time=None`` returns ``emb`` unchanged. A cube without a ``time`` dim and a
    non-None ``time`` raises :class:`DimensionError`; a label not in the cube raises
    :class:`ParameterError` listing the available ones.
    """
    if time is None:
        return emb
    if "time" not in emb.dims:
        raise DimensionError(
            f"{what}={time!r} was given but the embedding cube has no 'time' dimension (it was embedded "
            "time-pooled). Embed with eoembed.embed(cube, ..., pool_time=False) for per-timestep vectors, "
            f"or drop {what}=."
        )
    if isinstance(time, (bool, np.bool_)):
        raise ParameterError(f"{what} must be a time label or an integer position, got {time!r}.")
    if isinstance(time, (int, np.integer)) and not np.issubdtype(emb["time"].dtype, np.integer):
        n = emb.sizes["time"]
        if not -n <= int(time) < n:
            raise ParameterError(f"{what}={time} is out of range: the cube has {n} timesteps (0..{n - 1}).")
        return emb.isel(time=int(time))
    try:
        out = emb.sel(time=time)
    except (KeyError, TypeError, ValueError):
        out = None
    if out is not None and "time" in out.dims and out.sizes["time"] == 1:  # "2019-05" on monthly composites
        out = out.isel(time=0)
    if out is None or "time" in out.dims:
        times = [str(t)[:10] for t in emb["time"].values]
        raise ParameterError(
            f"{what}={time!r} does not name one timestep of the cube; its times are {times}. "
            "Pass one of them (a label or a date string) or an integer position."
        )
    return out


def check_same_grid(a: xr.DataArray, b: xr.DataArray, *, names: tuple[str, str] = ("emb_a", "emb_b")) -> None:
    """Refuse two embedding cubes that are not the same model on the same patch grid.

    Raises
    ------
    IndexMismatchError
        Different models, versions or embedding dimensions.
    GridMismatchError
        Different CRS, transform (origin/pitch), shape or patch size.
    """
    na, nb = names
    ia, ib = cube_info(a), cube_info(b)
    if ia.dim != ib.dim:
        raise IndexMismatchError(
            f"{na} has {ia.dim}-d vectors but {nb} has {ib.dim}-d: their embedding dimensions differ (another "
            "model or model size, or one cube reduced, e.g. by PCA, or a subset of its dims), so their vectors "
            "cannot be compared. Compare cubes of the same embedding dimension: embed both with the same model "
            "and settings, and reduce both the same way or neither."
        )
    for key in IDENTITY_ATTRS[:2]:
        va, vb = ia.attrs.get(key), ib.attrs.get(key)
        if va is not None and vb is not None and str(va) != str(vb):
            raise IndexMismatchError(
                f"{na} has {key}={va!r} but {nb} has {vb!r}: vectors of different models (or model "
                "versions) live in different spaces and cannot be compared. Re-embed both with the same "
                f"model, e.g. eoembed.embed(cube_b, model={ia.attrs.get('eoembed:model')!r}, ...)."
            )
    fix = (" Embeddings cannot be resampled like images (a vector describes a whole patch); do not "
           f"reproject_match the embeddings. Re-embed the second cube's imagery on {na}'s grid instead: "
           "reproject/crop the *input* cube to the same extent, resolution and CRS (e.g. "
           "cube_b.rio.reproject_match(cube_a)) and embed it with the same model and patch_size.")
    from pyproj import CRS

    if CRS.from_wkt(ia.crs_wkt) != CRS.from_wkt(ib.crs_wkt):
        raise GridMismatchError(f"{na} is in {a.rio.crs} but {nb} is in {b.rio.crs}." + fix)
    pa, pb = ia.attrs.get("eoembed:patch_size"), ib.attrs.get("eoembed:patch_size")
    if pa is not None and pb is not None and str(pa) != str(pb):
        raise GridMismatchError(f"{na} has patch_size {pa} but {nb} has patch_size {pb}." + fix)
    if ia.shape != ib.shape or not np.allclose(ia.transform, ib.transform, rtol=0, atol=1e-6 * max(
            1.0, abs(ia.transform[0]))):
        raise GridMismatchError(
            f"{na} is a {ia.shape[0]}×{ia.shape[1]} patch grid with transform {ia.transform}, {nb} is "
            f"{ib.shape[0]}×{ib.shape[1]} with {ib.transform}; the patches do not coincide." + fix)


def check_int(value: Any, name: str, *, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` or a :class:`ParameterError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in {low}..{high}"
        raise ParameterError(f"{name} must be {rng}, got {value}.")
    return int(value)


def as_cube(emb: Any) -> xr.DataArray:
    """:func:`eoembed.cube.canonical` plus a CRS check (every analysis is georeferenced)."""
    emb = canonical(emb)
    cube_info(emb)  # raises MissingCRSError
    return emb


def point_xy(emb: xr.DataArray, point: Any, crs: Any = None) -> tuple[float, float]:
    """A point (``(x, y)`` tuple, shapely Point) in ``crs`` (default the cube's) → cube CRS x, y."""
    from eoembed.cube import to_crs_xy
    from eoembed.exceptions import QueryError

    if hasattr(point, "geom_type"):
        if point.geom_type != "Point":
            raise QueryError(f"point must be a Point, got a {point.geom_type}; use geom.centroid.")
        x, y = point.x, point.y
    else:
        try:
            x, y = (float(v) for v in point)
        except (TypeError, ValueError):
            raise QueryError(f"point must be an (x, y) pair or a shapely Point, got {point!r}.") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise QueryError(f"point has non-finite coordinates ({x}, {y}).")
    if crs is not None:
        xs, ys = to_crs_xy([x], [y], crs, emb.rio.crs)
        x, y = float(xs[0]), float(ys[0])
    return x, y
