"""The display grid of an embedding cube: where the explorer's pixels come from.

:class:`DisplayGrid` holds the cube (not a copy: the caller's array, transposed to
``(time?, embedding, y, x)`` where needed), its CRS and grid, the *overview* that layers
are drawn from (every ``stride``-th patch, or the finest pyramid level that fits; a view
of the cube when the cube itself fits), the Web Mercator warp of that overview, the
PCA projection of the PCA-RGB view, and the zoomed-in windows of :meth:`window`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import xarray as xr

from eoembed.cube import canonical, cube_info, to_crs_xy
from eoembed.exceptions import ParameterError, user_stacklevel
from eoembed.explore.layers import overview, vector_side, warp_for

__all__ = ["DisplayGrid", "pyramid_beside_or_warn"]


def pyramid_beside_or_warn(emb: xr.DataArray, store, pyramid: Any, *, read_bytes_per_s: float,
                           max_seconds: float) -> tuple[Any, str]:
    """``(pyramid, note)``: ``pyramid``, else the one beside ``store`` (``<store>.pyramid``, as
    ``to_zarr(..., pyramid=True)`` writes it); a warning (and a note for the panel) when a dask cube
    without one would take more than ``max_seconds`` to read for a direct overview."""
    if pyramid is not None or emb.chunks is None:
        return pyramid, ""
    if store is not None and (store.parent / (store.name + ".pyramid")).is_dir():
        return store.parent / (store.name + ".pyramid"), ""
    gb = emb.size * emb.dtype.itemsize / 1e9
    sec = gb * 1e9 / read_bytes_per_s
    if sec <= max_seconds:
        return None, ""
    where = f"{store}" if store is not None else "STORE.zarr"
    warnings.warn(
        f"This cube ({gb:.1f} GB) is too large for a direct overview: drawing it reads every chunk, about "
        f"{sec:.0f} s (more on a network file system). Write its pyramid once — "
        f"eoembed.io.write_pyramid(emb, '{where}.pyramid') (or to_zarr(..., pyramid=True)); explore() then finds "
        "it beside the store (or pass pyramid=) and opens in seconds.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
    return None, (f" This cube is too large for a direct overview (read about {sec:.0f} s): write its pyramid "
                  "(eoembed.io.write_pyramid) to open in seconds.")


class DisplayGrid:
    """The cube's grid, its overview and the finer sources for zoomed-in views.

    Attributes
    ----------
    emb: the cube. crs: its ``pyproj.CRS``. transform, shape: its grid. side: the display
    grid's longest side. ov: the overview (in memory). stride: patches per overview cell.
    levels: ``(factor, cube)`` sources, finest first. pca_cog: the pyramid's PCA-RGB COG
    (None without one). warp: the overview's Mercator warp. proj: the PCA-RGB projection.
    """

    def __init__(self, emb: xr.DataArray, *, max_pixels: int, max_bytes: float | None, pyramid: Any = None) -> None:
        from pyproj import CRS

        from eoembed.validate import check_embedding_grid

        self.emb = canonical(emb)
        check_embedding_grid(self.emb)
        info = cube_info(self.emb)
        self.crs = CRS.from_wkt(info.crs_wkt)
        self.transform = info.transform
        self.shape = info.shape
        self.max_pixels = int(max_pixels)
        self.side = vector_side(self.emb, self.max_pixels, max_bytes)
        self.levels: list[tuple[int, xr.DataArray]] = [(1, self.emb)]
        self.pca_cog = None
        self.ov, self.stride = self._overview(pyramid)
        self.warp = warp_for(self.ov, self.max_pixels)
        self.proj = self._fit_projection()

    def _overview(self, pyramid) -> tuple[xr.DataArray, int]:
        if pyramid is None:
            return overview(self.emb, self.side)
        from eoembed.explore.pyramid import open_pyramid, pyramid_pca_cog

        if isinstance(pyramid, (str, os.PathLike)) and "time" not in self.emb.dims:
            self.pca_cog = pyramid_pca_cog(pyramid)
        from eoembed.io import pyramid_source, read_pyramid_manifest
        from eoembed.validate import check_pyramid_source

        from_path = isinstance(pyramid, (str, os.PathLike))
        levels = open_pyramid(pyramid) if from_path else [canonical(p) for p in pyramid]
        if not levels:
            raise ParameterError("pyramid= holds no level; write one with eoembed.explore.pyramid.write_pyramid.")
        a = self.transform[0]
        for lvl in levels:
            f = lvl.rio.transform().a / a
            if round(f) != f or f < 2 or lvl.rio.crs != self.emb.rio.crs:
                raise ParameterError(f"pyramid level of {lvl.sizes['y']}×{lvl.sizes['x']} patches is not a coarser "
                                     "level of this cube (same CRS, patch pitch a power-of-two multiple); write the "
                                     "pyramid from this cube with write_pyramid(emb, path).")
        # same CRS and pitch is not enough: the same extent (origin, shape) and, from a path, the same run
        if from_path:
            check_pyramid_source(read_pyramid_manifest(pyramid).get("source"), self.emb, levels, pyramid,
                                 fingerprint_of=lambda e: pyramid_source(e)["fingerprint"])
        else:
            check_pyramid_source(None, self.emb, levels, "pyramid=")
        self.levels += [(int(round(lvl.rio.transform().a / a)), lvl) for lvl in levels]
        fit = [lvl for lvl in levels if max(lvl.sizes["y"], lvl.sizes["x"]) <= self.side]
        lvl = fit[0] if fit else levels[-1]
        ov, s = overview(lvl, self.side)
        return ov, s * int(round(lvl.rio.transform().a / a))

    def _fit_projection(self):
        from eoembed.reduce import fit_pca

        # with the pyramid's COG: the projection it was coloured with (fitted on the coarsest level)
        src = self.levels[-1][1] if self.pca_cog is not None else self.ov
        return fit_pca(src, 3, sample=20_000)

    # ---- locations -----------------------------------------------------------------------
    def to_emb_crs(self, x, y, crs) -> tuple[float, float]:
        if crs is None:
            return float(x), float(y)
        xx, yy = to_crs_xy([x], [y], crs, self.crs)
        return float(xx[0]), float(yy[0])

    def extent(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        ny, nx = self.shape
        x0, x1 = sorted((c, c + a * nx))
        y0, y1 = sorted((f, f + e * ny))
        return x0, y0, x1, y1

    def check_inside(self, x: float, y: float, err, what: str) -> None:
        """Raise ``err`` naming the cube's extent when ``(x, y)`` (cube CRS) is outside it."""
        a, _, c, _, e, f = self.transform
        ny, nx = self.shape
        col, row = (x - c) / a, (y - f) / e
        if not (0 <= col < nx and 0 <= row < ny):
            x0, y0, x1, y1 = self.extent()
            raise err(f"Cannot {what} at ({x:.1f}, {y:.1f}): outside the embedding cube "
                      f"(x {x0:.0f}…{x1:.0f}, y {y0:.0f}…{y1:.0f} in {self.crs.to_string()}). "
                      "Click inside the coloured layers.")

    def warn_if_apart(self, cube: xr.DataArray) -> None:
        """Warn when ``cube`` does not overlap the embedding cube (it is drawn where it is)."""
        left, bottom, right, top = cube.rio.bounds(recalc=cube.sizes["x"] > 1 and cube.sizes["y"] > 1)
        xs = np.array([left, right, right, left, (left + right) / 2])
        ys = np.array([bottom, bottom, top, top, (bottom + top) / 2])
        cx, cy = to_crs_xy(np.concatenate([xs, np.linspace(left, right, 9)]),
                           np.concatenate([ys, np.linspace(bottom, top, 9)]), cube.rio.crs, self.crs)
        ex0, ey0, ex1, ey1 = self.extent()
        if cx.max() < ex0 or cx.min() > ex1 or cy.max() < ey0 or cy.min() > ey1:
            gap = max(ex0 - cx.max(), cx.min() - ex1, ey0 - cy.max(), cy.min() - ey1, 0.0)
            warnings.warn(
                f"cube= does not overlap the embedding cube (it lies {gap / 1000:.3g} km away): its true-colour "
                "layer is drawn where the cube is, apart from the embeddings. Pass the cube the embeddings were "
                "computed from (or cube=None).",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    # ---- zoomed-in windows -------------------------------------------------------------------
    def window(self, bounds) -> tuple[int, xr.DataArray | None]:
        """The finest source window of a ``[[south, west], [north, east]]`` view that fits the display grid.

        Returns ``(factor × step, window in memory)``, or ``(0, None)`` when the overview is
        already the finest that fits (or the view misses the cube).
        """
        (south, west), (north, east) = bounds
        if not (south < north and west < east):
            raise ParameterError(f"bounds must be [[south, west], [north, east]] with south < north and west < east, "
                                 f"got {bounds}.")
        lon = np.array([west, east, east, west, (west + east) / 2, (west + east) / 2, west, east])
        lat = np.array([south, south, north, north, south, north, (south + north) / 2, (south + north) / 2])
        xs, ys = to_crs_xy(lon, lat, "EPSG:4326", self.crs)
        a, _, c, _, e, f = self.transform
        ny, nx = self.shape
        c0, c1 = int(np.clip(np.floor((np.min(xs) - c) / a), 0, nx)), int(np.clip(np.ceil((np.max(xs) - c) / a), 0, nx))
        r0, r1 = sorted((int(np.clip(np.floor((np.max(ys) - f) / e), 0, ny)),
                         int(np.clip(np.ceil((np.min(ys) - f) / e), 0, ny))))
        if r1 - r0 < 1 or c1 - c0 < 1:
            return 0, None
        side = max(r1 - r0, c1 - c0)
        for factor, src in self.levels:  # finest first
            step = max(1, int(np.ceil(side / factor / self.side)))
            if factor * step < self.stride:
                break
        else:
            return 0, None
        win = src.isel(y=slice(r0 // factor, -(-r1 // factor), step), x=slice(c0 // factor, -(-c1 // factor), step))
        if step > 1:
            from affine import Affine

            ta, tb, tc, td, te, tf = tuple(win.rio.transform())[:6]
            win = win.rio.write_transform(Affine(ta * step, tb, tc, td, te * step, tf))
        win = win.copy(data=np.asarray(win.data)) if not isinstance(win.data, np.ndarray) else win
        return factor * step, win
