"""Zoom-dependent map tiles of eoembed layers, served by localtileserver (rio-tiler over GDAL).

Why this split (measured, ``benchmarks/bench_explore.py``):

* **Static layers** — the PCA-RGB view of a cube, and any map written with
  :func:`eoembed.export.to_cog` (class maps, cluster maps, change maps, probabilities)
  — are rendered **once** into a Cloud-Optimized GeoTIFF with internal overviews and
  then served as XYZ tiles by localtileserver: a tile reads only the overview and the
  window it needs, so a 10⁸-patch cube shows its full detail at every zoom and a tile
  costs tens of milliseconds from a warm file. rio-tiler's ``XarrayReader`` on the lazy
  embedding pyramid was the alternative: it reprojects all embedding dimensions per tile
  through dask (0.6–1.6 s per tile, 16-d), far over the 200 ms target.
* **Per-query layers** (similarity, matches) change on every click; rendering a
  full-resolution COG per click would read the whole cube each time. They stay an
  overview at the pyramid level that fits the view, redrawn for the visible window on
  pan/zoom (:meth:`eoembed.explore.Explorer.refine_view`).

The PCA-RGB COG is streamed block by block (memory bounded by ``max_block_mb``), the
projection is fitted once on a sample (the coarsest pyramid level when there is one), so
its colours are identical at every zoom. In a remote JupyterLab, localtileserver's
bundled jupyter-server extension proxies the tile URLs (``<base_url>/localtileserver-proxy/``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import InputError, MissingOptionalDependency, ParameterError

__all__ = ["add_cog", "tile_layer", "write_pca_cog"]

PCA_COG = "pca.tif"


def _require_tiles() -> None:
    try:
        import localtileserver  # noqa: F401
    except ImportError as e:  # pragma: no cover - the viz extra brings it
        raise MissingOptionalDependency(
            "Zoom-dependent tiles need localtileserver: pip install 'eoembed[viz]' (or pip install localtileserver)."
        ) from e


def _block_side(ny: int, nx: int, dim: int, chunk: int, max_block_mb: float) -> int:
    """Block side (patches, a multiple of the cube's chunk) whose float32 vectors fit ``max_block_mb``."""
    side = int(np.sqrt(max_block_mb * 2**20 / (4.0 * max(dim, 1))))
    side = max(chunk, (side // chunk) * chunk)
    return min(side, max(ny, nx))


def write_pca_cog(emb: xr.DataArray, path, *, proj: Any = None, time: Any = None, overwrite: bool = False,
                  max_block_mb: float = 256.0, sample_from: xr.DataArray | None = None) -> Path:
    """Render the PCA-RGB view of ``emb`` at full resolution into a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` with a CRS, numpy or dask (read block by
        block, never whole).
    path:
        Output ``.tif``: 4 bands (R, G, B, alpha) uint8, the cube's CRS and transform,
        internal overviews (average) so that any zoom reads a few tiles.
    proj:
        A fitted :class:`eoembed.reduce.Projection` (``kind="pca"``) to colour with; default:
        :func:`eoembed.reduce.fit_pca` on a 20,000-vector sample of ``sample_from`` (e.g. the
        coarsest pyramid level) or of an overview of ``emb``.
    time:
        For a cube with ``time``: the mean over time (None), a position (int) or a label.
    overwrite:
        Replace an existing file (it is replaced only once the new one is complete).
    max_block_mb:
        Upper bound on the float32 vectors held in memory at once.

    Returns
    -------
    pathlib.Path
        ``path``. Transparent (alpha 0) where a patch has no valid vector.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is False.
    ParameterError
        ``proj`` is not a PCA projection of this cube's dimension.
    """
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    from eoembed.cube import canonical
    from eoembed.explore.layers import display_2d, overview, pca_rgb_2d
    from eoembed.reduce import fit_pca
    from eoembed.validate import check_embedding_grid
    from eoembed.viz import rgb_to_rgba

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass overwrite=True to replace it.")
    if float(max_block_mb) < 1:
        raise ParameterError(f"max_block_mb must be >= 1, got {max_block_mb}.")
    emb = canonical(emb)
    check_embedding_grid(emb)
    e = display_2d(emb, time).transpose("embedding", "y", "x")
    d, ny, nx = e.shape
    if proj is None:
        src = display_2d(canonical(sample_from), time) if sample_from is not None else overview(e, 1024)[0]
        proj = fit_pca(src, 3, sample=20_000)
    if getattr(proj, "kind", None) != "pca" or getattr(proj, "dim", d) != d:
        raise ParameterError(f"proj must be a PCA projection fitted on {d}-d vectors of this cube "
                             "(eoembed.reduce.fit_pca), or None to fit one.")
    chunk = int(e.chunks[-1][0]) if e.chunks is not None else 512
    side = _block_side(ny, nx, d, chunk, float(max_block_mb))
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(f".{path.name}.tiled.tif")
    final = path.with_name(f".{path.name}.partial")
    profile = dict(driver="GTiff", width=nx, height=ny, count=4, dtype="uint8", crs=e.rio.crs,
                   transform=e.rio.transform(), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", photometric="RGB", alpha="YES", BIGTIFF="IF_SAFER")
    try:
        with rasterio.open(work, "w", **profile) as dst:
            for r0 in range(0, ny, side):
                for c0 in range(0, nx, side):
                    blk = e.isel(y=slice(r0, r0 + side), x=slice(c0, c0 + side))
                    blk = blk.copy(data=np.asarray(blk.data))
                    rgba = rgb_to_rgba(pca_rgb_2d(proj, blk).values)
                    dst.write(np.moveaxis(rgba, -1, 0),
                              window=Window(c0, r0, rgba.shape[1], rgba.shape[0]))
        rio_copy(work, final, driver="COG", compress="DEFLATE", RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER", BLOCKSIZE=256,
                 OVERVIEWS="AUTO")
        os.replace(final, path)
    finally:
        for p in (work, final):
            if p.exists():
                p.unlink()
    return path


def tile_layer(source, *, name: str, opacity: float = 1.0, colormap: str | None = None,
               vmin: float | None = None, vmax: float | None = None, nodata: float | None = None,
               indexes: list[int] | None = None, **kwargs: Any):
    """An ipyleaflet ``TileLayer`` of a GeoTIFF/COG, served by localtileserver (zoom-dependent tiles).

    Parameters
    ----------
    source:
        Path of a GeoTIFF (a COG reads fastest: :func:`write_pca_cog`,
        :func:`eoembed.export.to_cog`).
    name:
        Layer name in the map's layer control.
    colormap, vmin, vmax, nodata, indexes:
        For a single-band raster: matplotlib colormap and value range; ignored for RGB(A).
    **kwargs:
        Passed to ``ipyleaflet.TileLayer`` (e.g. ``max_zoom``).

    Returns
    -------
    ipyleaflet.TileLayer
        With ``tile_server`` (the running ``TileClient``, kept alive by the layer).
    """
    _require_tiles()
    from localtileserver import TileClient, get_leaflet_tile_layer

    p = Path(source)
    if not p.exists():
        raise InputError(f"No raster at {p}; write one with eoembed.explore.tiles.write_pca_cog or "
                         "eoembed.export.to_cog.")
    import rasterio

    try:
        with rasterio.open(p) as ds:
            if ds.crs is None:
                raise InputError(f"{p} has no CRS; tiles cannot be placed on a map. Write it with a CRS "
                                 "(eoembed.export.to_cog keeps the cube's).")
    except rasterio.errors.RasterioIOError as err:
        raise InputError(f"{p} is not a raster GDAL can read ({err}).") from None
    client = TileClient(str(p))
    layer = get_leaflet_tile_layer(client, name=name, opacity=float(opacity), colormap=colormap, vmin=vmin,
                                   vmax=vmax, nodata=nodata, indexes=indexes, **kwargs)
    layer.eoembed_source = str(p)
    return layer


def add_cog(m, source, *, name: str | None = None, below: tuple = (), **kwargs: Any):
    """Add :func:`tile_layer` of ``source`` to a leafmap/ipyleaflet map (under the layers in ``below``)."""
    import ipyleaflet

    if not isinstance(m, ipyleaflet.Map):
        raise ParameterError(f"m must be a leafmap.Map or ipyleaflet.Map, got {type(m).__name__}; "
                             "create one with leafmap.Map().")
    layer = tile_layer(source, name=name or Path(source).stem, **kwargs)
    at = [i for i, lyr in enumerate(m.layers) if any(lyr is g for g in below)]
    m.add(layer, index=min(at)) if at else m.add(layer)
    return layer
