"""Similarity maps: cosine of a query vector with every patch of a cube (no FAISS needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import xarray as xr

from eoembed.cube import (
    apply_embedding,
    canonical,
    check_same_space,
    locate_patches,
    spatial_coords,
    valid_mask,
    write_georef,
)
from eoembed.exceptions import IndexMismatchError, QueryError

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.index.entries import EntryTable

__all__ = ["similarity_map"]


def _cosine(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cosine of every vector (last axis) with the unit vector ``q``; NaN stays NaN."""
    dots = vectors @ q.astype(vectors.dtype, copy=False)
    sq = np.einsum("...i,...i->...", vectors, vectors)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dots / np.sqrt(sq)
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)  # rounding


def similarity_map(emb: xr.DataArray, vector: Any = None, *, point: Any = None, polygon: Any = None,
                   crs: Any = None, name: str = "similarity", time: Any = None) -> xr.DataArray:
    """Cosine similarity of every patch of ``emb`` with one query: a vector, or the patch(es)
    under a point or polygon of the cube itself. Needs no FAISS.

    Give exactly one of ``vector``, ``point`` or ``polygon``. ``emb.eo.similarity(point=(x, y),
    crs="EPSG:4326")`` is the map ``build_index(emb).similarity_map(point=(x, y), crs=...)`` gives.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)``, numpy- or dask-backed.
    vector:
        Query vector of length ``embedding`` (any norm; it is normalised), or a DataArray
        with an ``embedding`` dim (its ``eoembed:model`` attrs must match the cube's; several
        vectors are averaged).
    point:
        ``(x, y)`` or a shapely Point in ``crs``: the query is the patch containing it
        (the mean of its unit vectors over the cube's times).
    polygon:
        A shapely geometry in ``crs``: the mean unit vector of the patches whose centres
        it contains, or of the patch under its representative point when it contains none
        (:func:`eoembed.cube.locate_patches`).
    crs:
        CRS of ``point``/``polygon`` (anything pyproj reads; default the cube's).
    name:
        Name of the returned DataArray.
    time:
        For ``pool_time=False`` cubes: one timestep (label, date string or integer
        position) → a ``(y, x)`` map, its point/polygon query taken from that timestep;
        ``None`` (default) maps every timestep.

    Returns
    -------
    xr.DataArray
        float32 ``(y, x)`` or ``(time, y, x)`` on exactly ``emb``'s grid, CRS written,
        NaN where the patch vector is NaN (or all zero). Lazy when ``emb`` is
        dask-backed: computed chunk by chunk (:func:`eoembed.cube.apply_embedding`; one
        chunk of ``emb`` in memory per task, the ``embedding`` axis merged into one chunk);
        a point/polygon query reads only its own patches first.

    Raises
    ------
    QueryError
        Not exactly one query, an unreadable point/polygon, or a query on masked patches.
    OutsideCubeError
        The point or polygon is off the cube (check ``crs=``).
    MissingCRSError
        ``crs=`` given but the cube has no CRS.
    DimensionError, IndexMismatchError
        Not an embedding cube; a vector of another length or model.
    """
    emb = canonical(emb)
    given = [k for k, v in (("vector", vector), ("point", point), ("polygon", polygon)) if v is not None]
    if len(given) != 1:
        raise QueryError(f"Give exactly one of vector=, point= or polygon= (got {given or 'none'}), e.g. "
                         "emb.eo.similarity(point=(x, y), crs='EPSG:4326').")
    if crs is not None and vector is not None:
        raise QueryError("crs= applies to point= and polygon= only; a vector has no location.")
    if time is not None:
        from eoembed.analysis._common import select_time

        emb = select_time(emb, time)
    if vector is None:
        vector = _located_query(emb, point, polygon, crs)
    elif isinstance(vector, xr.DataArray):
        d = int(vector.sizes["embedding"]) if "embedding" in vector.dims else int(vector.size)
        check_same_space(dict(emb.attrs), dict(vector.attrs), expected_dim=int(emb.sizes["embedding"]),
                         got_dim=d, what="The query vector")
        vector = (vector.transpose(..., "embedding").values.reshape(-1, d).mean(axis=0)
                  if "embedding" in vector.dims and vector.ndim > 1 else vector.values)
    q = np.asarray(vector, dtype=np.float64).reshape(-1)
    if q.shape[0] != emb.sizes["embedding"]:
        raise IndexMismatchError(
            f"Query vector has {q.shape[0]} values but the cube's embedding dimension is "
            f"{emb.sizes['embedding']}."
        )
    nrm = np.linalg.norm(q)
    if not np.isfinite(nrm) or nrm == 0:
        raise QueryError("Query vector is all zero or not finite; nothing to compare against.")
    q = (q / nrm).astype(np.float32)
    res = apply_embedding(_cosine, emb, kwargs={"q": q}).rename(name)
    res = res.assign_coords(spatial_coords(emb))
    res.attrs = {k: v for k, v in emb.attrs.items() if k.startswith("eoembed:")}
    res.attrs["long_name"] = "cosine similarity"
    return write_georef(res, emb)


def _located_query(emb: xr.DataArray, point: Any, polygon: Any, crs: Any) -> np.ndarray:
    """Mean unit vector of the patches under ``point``/``polygon`` (the index's query rule)."""
    import shapely

    if point is not None:
        if isinstance(point, shapely.Geometry):
            if point.geom_type != "Point":
                raise QueryError(f"point= must be a Point, got a {point.geom_type}; pass it as polygon=.")
        else:
            try:
                point = tuple(float(v) for v in point)
            except (TypeError, ValueError):
                point = None
            if point is None or len(point) != 2:
                raise QueryError("point= must be an (x, y) pair or a shapely Point.")
        where = point
    else:
        if not isinstance(polygon, shapely.Geometry):
            raise QueryError(f"polygon= must be a shapely geometry, got {type(polygon).__name__}.")
        where = polygon
    loc = locate_patches(emb, where, crs=crs, outside="raise")
    sel = emb.isel(y=xr.DataArray(loc.row, dims="patch"), x=xr.DataArray(loc.col, dims="patch"))
    v = np.asarray(sel.transpose(..., "patch", "embedding").values, np.float64).reshape(-1, emb.sizes["embedding"])
    ok = valid_mask(v)
    if not ok.any():
        raise QueryError(f"The {'point' if point is not None else 'polygon'} lies on masked (NaN) patches only; "
                         "pick a place with valid embeddings (see the cube's NaN mask).")
    return (v[ok] / np.linalg.norm(v[ok], axis=1, keepdims=True)).mean(axis=0)


def similarity_from_store(table: "EntryTable", vectors: Callable[[np.ndarray], np.ndarray], crs_wkt: str,
                          s: int, q: np.ndarray) -> xr.DataArray:
    """The similarity map of source ``s`` of an entry table rebuilt from stored vectors (eager);
    ``vectors(ids)`` returns the stored vectors of entry ids (e.g. ``EmbeddingIndex.vectors``)."""
    from affine import Affine
    from rioxarray.rioxarray import affine_to_coords

    src = table.sources[s]
    nt = 1 if src.times is None else len(src.times)
    out = np.full((nt, *src.shape), np.nan, np.float32)
    sel = np.flatnonzero(table.src == s)
    for i in range(0, len(sel), 200_000):
        ids = sel[i:i + 200_000]
        v = vectors(ids)
        with np.errstate(invalid="ignore", divide="ignore"):
            sc = (v @ q) / np.linalg.norm(v, axis=1) / np.linalg.norm(q)
        out[table.t[ids], table.row[ids], table.col[ids]] = sc
    transform = Affine(*src.transform[:6])
    coords = affine_to_coords(transform, src.shape[1], src.shape[0])  # patch centres
    if src.times is None:
        res = xr.DataArray(out[0], dims=("y", "x"), coords=coords, name="similarity")
    else:
        res = xr.DataArray(out, dims=("time", "y", "x"), coords={"time": src.times, **coords}, name="similarity")
    res.attrs = {k: v for k, v in src.attrs.items() if k.startswith("eoembed:")}
    res.attrs["long_name"] = "cosine similarity"
    return res.rio.write_crs(crs_wkt).rio.write_transform(transform)
