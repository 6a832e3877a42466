"""How a place moves through the season: per-timestep vectors of ``pool_time=False`` cubes."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from eoembed.analysis._common import as_cube, point_xy, provenance
from eoembed.cube import locate_patches, valid_mask
from eoembed.exceptions import DimensionError, EmptyDataError

__all__ = ["trajectory"]


def trajectory(emb: xr.DataArray, point: Any, *, crs: Any = None, fitted: Any = None,
               sample: int = 20_000, random_state: int = 0):
    """A place's path through time: cosine similarity to its own first valid timestep, and PCA-1.

    Parameters
    ----------
    emb:
        Per-timestep embedding cube ``(time, embedding, y, x)`` (``pool_time=False``).
    point:
        ``(x, y)`` or a shapely Point, in ``crs`` (default the cube's CRS; e.g.
        ``crs="EPSG:4326"`` for lon/lat). The patch containing it is used.
    fitted:
        A :class:`eoembed.reduce.Projection` (``fit_pca``) to project on; default a
        1-component PCA fitted on a sample of all the cube's per-timestep vectors, so
        values are comparable between places of the same cube. Drawing that sample
        reads every chunk holding a sampled patch (for a large lazy cube, fit once
        with :func:`eoembed.reduce.fit_pca` and pass it here for every place).
    sample, random_state:
        Sample size and seed of that PCA fit.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``time``: ``similarity_to_first`` (cosine with the patch's first
        timestep that has a valid vector; 1 there, NaN where the vector is NaN),
        ``pca1`` (first principal component), ``valid``. ``attrs`` hold the patch
        ``row``, ``col``, ``x``, ``y`` and the cube's provenance.

    Raises
    ------
    DimensionError
        The cube has no ``time`` dim (it was embedded time-pooled).
    QueryError
        The point is unreadable, or outside the cube (:class:`~eoembed.exceptions.OutsideCubeError`).
    EmptyDataError
        The patch has no valid vector at any timestep.
    """
    import pandas as pd

    emb = as_cube(emb)
    if "time" not in emb.dims:
        raise DimensionError("trajectory needs per-timestep vectors; embed with eoembed.embed(cube, ..., "
                             "pool_time=False).")
    x, y = point_xy(emb, point, crs)
    loc = locate_patches(emb, (x, y), outside="raise")  # OutsideCubeError (a QueryError) off the cube
    r, c = int(loc.row[0]), int(loc.col[0])
    v = np.asarray(emb.isel(y=r, x=c).transpose("time", "embedding").values, np.float64)  # (T, d)
    ok = valid_mask(v)
    if not ok.any():
        raise EmptyDataError(f"The patch at row {r}, col {c} has no valid vector at any timestep (all masked).")
    first = v[np.flatnonzero(ok)[0]]
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (v @ first) / (np.linalg.norm(v, axis=1) * np.linalg.norm(first))
    sim = np.where(ok, np.clip(sim, -1, 1), np.nan)
    if fitted is None:
        from eoembed.reduce import fit_pca

        fitted = fit_pca(emb, 1, sample=sample, random_state=random_state)
    pc = fitted._project(v.astype(np.float32))[:, 0]
    df = pd.DataFrame({"similarity_to_first": sim, "pca1": pc, "valid": ok},
                      index=pd.Index(emb["time"].values, name="time"))
    df.attrs = {"row": r, "col": c, "x": float(emb["x"].values[c]), "y": float(emb["y"].values[r]),
                **provenance(emb)}
    return df
