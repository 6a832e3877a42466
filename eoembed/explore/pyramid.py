"""A multiscale pyramid of an embedding cube, for display of cubes of any size.

Level ``l`` has ``2^l``-patch cells: each vector is the mean of the valid (finite, not
all-zero) vectors of a 2×2 block of level ``l−1``, renormalised to unit length, as
the published embedding products do for their coarser levels. Each level is computed
lazily from the level written just before it and streamed to its own Zarr store
(:func:`eoembed.io.save_embeddings`), so memory stays bounded whatever the cube size
and no level reads the full-resolution cube again.

The explorer takes the result as ``explore(emb, pyramid=path)``: its overview is then
the finest level that fits ``max_pixels`` — a read of a few MB instead of a strided
read that touches every chunk of the full cube.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from eoembed.exceptions import InputError, ParameterError

__all__ = ["coarsen_embeddings", "open_pyramid", "pyramid_pca_cog", "write_pyramid"]

_META = "pyramid.json"


def coarsen_embeddings(emb: xr.DataArray, factor: int = 2) -> xr.DataArray:
    """Mean of the valid vectors of each ``factor``×``factor`` block, renormalised to unit length.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` with a CRS (numpy or dask).
    factor:
        Block side in patches (edges padded: a partial block averages what it has).

    Returns
    -------
    xr.DataArray
        float32, same dims and attrs, ``ceil(ny/factor)×ceil(nx/factor)`` patches, x/y at the
        block centres, transform scaled by ``factor``; NaN where a block holds no valid
        vector. Lazy when ``emb`` is dask-backed.
    """
    from affine import Affine

    if int(factor) < 2:
        raise ParameterError(f"factor must be >= 2, got {factor}.")
    f = int(factor)
    v = emb.astype("float32")
    valid = np.isfinite(v).all("embedding") & (np.abs(v).sum("embedding") > 0)
    v = v.where(valid)
    m = v.coarsen(y=f, x=f, boundary="pad").mean()  # NaN-skipping for floats
    norm = np.sqrt((m * m).sum("embedding", skipna=False))
    out = (m / norm.where(norm > 0)).astype("float32")
    a, b, c, d, e, ff = tuple(emb.rio.transform())[:6]
    tr = Affine(a * f, b, c, d, e * f, ff)
    ny, nx = out.sizes["y"], out.sizes["x"]
    out = out.assign_coords(x=c + tr.a * (np.arange(nx) + 0.5), y=ff + tr.e * (np.arange(ny) + 0.5))
    out.attrs = dict(emb.attrs)
    out.name = emb.name
    out = out.rio.write_crs(emb.rio.crs).rio.write_transform(tr)
    return out.transpose(*emb.dims)


def write_pyramid(emb: xr.DataArray, path, *, min_side: int = 256, overwrite: bool = False,
                  chunks: int = 512, pca: bool = True) -> list[Path]:
    """Write levels 1, 2, … of ``emb``'s pyramid under ``path`` until the long side is ≤ ``min_side``.

    Parameters
    ----------
    emb:
        The full-resolution cube (level 0 is not copied: keep your own store of it).
    path:
        Directory; level ``l`` goes to ``path/l.zarr`` and ``path/pyramid.json`` lists them.
    min_side:
        Stop at the first level whose long side is at most this (>= 16).
    overwrite:
        Replace an existing pyramid at ``path``.
    chunks:
        Spatial chunk side of each written level (patches).
    pca:
        Also render the full-resolution PCA-RGB view as a Cloud-Optimized GeoTIFF
        ``path/pca.tif`` (:func:`eoembed.explore.tiles.write_pca_cog`, PCA fitted on the
        coarsest level), which the explorer serves as zoom-dependent tiles. Skipped for a
        cube with ``time`` (its view depends on the date shown).

    Returns
    -------
    list of pathlib.Path
        The level stores, finest first.
    """
    from eoembed.cube import canonical
    from eoembed.io import open_embeddings, save_embeddings

    if int(min_side) < 16:
        raise ParameterError(f"min_side must be >= 16, got {min_side}.")
    root = Path(path)
    if (root / _META).exists() and not overwrite:
        raise InputError(f"A pyramid exists at {root}; pass overwrite=True to replace it.")
    root.mkdir(parents=True, exist_ok=True)
    cur = canonical(emb)
    if max(cur.sizes["y"], cur.sizes["x"]) <= min_side:
        raise ParameterError(f"The cube ({cur.sizes['y']}×{cur.sizes['x']} patches) is already at most "
                             f"min_side={min_side}; the explorer reads it directly, no pyramid needed.")
    levels, meta = [], []
    lvl = 0
    while max(cur.sizes["y"], cur.sizes["x"]) > min_side:
        lvl += 1
        nxt = coarsen_embeddings(cur, 2)
        spatial = {"y": min(chunks, nxt.sizes["y"]), "x": min(chunks, nxt.sizes["x"])}
        nxt = nxt.chunk({**{d: -1 for d in nxt.dims if d not in ("y", "x")}, **spatial})
        for var in ("x", "y"):
            nxt[var].encoding.pop("chunks", None)
        nxt.encoding = {}
        if nxt.name is None or nxt.name in nxt.coords:  # a Zarr variable needs its own name
            nxt.name = "embeddings"
        out = root / f"{lvl}.zarr"
        save_embeddings(nxt, out, overwrite=True)
        cur = canonical(open_embeddings(out, chunks={}))
        levels.append(out)
        meta.append({"level": lvl, "factor": 2 ** lvl, "path": out.name, "shape": [cur.sizes["y"], cur.sizes["x"]]})
    doc = {"eoembed_pyramid": 1, "levels": meta}
    if pca and "time" not in emb.dims:
        from eoembed.explore.tiles import PCA_COG, write_pca_cog

        write_pca_cog(emb, root / PCA_COG, sample_from=cur, overwrite=True)
        doc["pca_cog"] = PCA_COG
    (root / _META).write_text(json.dumps(doc, indent=1))
    return levels


def open_pyramid(path) -> list[xr.DataArray]:
    """The levels written by :func:`write_pyramid`, finest first, lazily (dask)."""
    from eoembed.cube import canonical
    from eoembed.io import open_embeddings

    root = Path(path)
    try:
        meta = json.loads((root / _META).read_text())
    except FileNotFoundError:
        raise InputError(f"No pyramid at {root} ({_META} missing); write one with write_pyramid(emb, path).") from None
    return [canonical(open_embeddings(root / m["path"], chunks={})) for m in meta["levels"]]


def pyramid_pca_cog(path) -> Path | None:
    """The PCA-RGB COG written beside the levels by :func:`write_pyramid` (None if there is none)."""
    root = Path(path)
    try:
        name = json.loads((root / _META).read_text()).get("pca_cog")
    except FileNotFoundError:
        return None
    return root / name if name and (root / name).exists() else None
