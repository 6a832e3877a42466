"""Similarity maps: cosine of a query vector with every patch of a cube (no FAISS needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eoembed.cube import apply_embedding, canonical, spatial_coords, write_georef
from eoembed.exceptions import IndexMismatchError, QueryError

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.index.core import EmbeddingIndex

__all__ = ["similarity_map"]


def _cosine(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cosine of every vector (last axis) with the unit vector ``q``; NaN stays NaN."""
    dots = vectors @ q.astype(vectors.dtype, copy=False)
    sq = np.einsum("...i,...i->...", vectors, vectors)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dots / np.sqrt(sq)
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)  # rounding


def similarity_map(emb: xr.DataArray, vector: Any, *, name: str = "similarity", time: Any = None) -> xr.DataArray:
    """Cosine similarity of every patch of ``emb`` with one query vector.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)``, numpy- or dask-backed.
    vector:
        Query vector of length ``embedding`` (any norm; it is normalised).
    name:
        Name of the returned DataArray.
    time:
        For ``pool_time=False`` cubes: one timestep (label, date string or integer
        position) → a ``(y, x)`` map; ``None`` (default) maps every timestep.

    Returns
    -------
    xr.DataArray
        float32 ``(y, x)`` or ``(time, y, x)`` on exactly ``emb``'s grid, CRS written,
        NaN where the patch vector is NaN (or all zero). Lazy when ``emb`` is
        dask-backed: computed chunk by chunk (:func:`eoembed.cube.apply_embedding`; one
        chunk of ``emb`` in memory per task, the ``embedding`` axis merged into one chunk).
    """
    emb = canonical(emb)
    if time is not None:
        from eoembed.analysis._common import select_time

        emb = select_time(emb, time)
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


def similarity_from_store(idx: "EmbeddingIndex", s: int, q: np.ndarray) -> xr.DataArray:
    """The similarity map of source ``s`` rebuilt from the index's stored vectors (eager)."""
    from affine import Affine
    from rioxarray.rioxarray import affine_to_coords

    table = idx.entries_table
    src = table.sources[s]
    nt = 1 if src.times is None else len(src.times)
    out = np.full((nt, *src.shape), np.nan, np.float32)
    sel = np.flatnonzero(table.src == s)
    for i in range(0, len(sel), 200_000):
        ids = sel[i:i + 200_000]
        v = idx.vectors(ids)
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
    return res.rio.write_crs(idx.crs_wkt).rio.write_transform(transform)
