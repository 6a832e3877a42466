"""Rendering helpers for map layers: stretch, colour, warp to Web Mercator, PNG data URLs.

Colour bars and legends are ipyleaflet ``ColormapControl``/``LegendControl`` on the map
(:mod:`eoembed.explore.layers`); why the warp and the data URL stay hand-written is
measured there.

Pure numpy (+ pyproj, Pillow, matplotlib colormaps) and no widgets, so that the pieces
the explorer puts on a Leaflet map can be tested on their own.

Leaflet draws an ``ImageOverlay`` by stretching the image linearly between the
projected (EPSG:3857) positions of its south-west and north-east corners. A raster in
a projected CRS such as UTM is therefore resampled onto a north-up Web Mercator grid
first (:class:`MercatorWarp`, nearest neighbour, computed once per source grid and
reused for every layer on that grid); the overlay bounds are that grid's corners in
lon/lat.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MercatorWarp",
    "categorical_indexed",
    "colormap_indexed",
    "png_data_url",
    "robust_stretch",
    "rgb_to_rgba",
]

#: Colours for classes/labels (matplotlib's tab10), in order of first use.
CLASS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def class_color(i: int) -> str:
    """Hex colour of the ``i``-th class (cycles after 10)."""
    return CLASS_COLORS[i % len(CLASS_COLORS)]


def robust_stretch(bands: np.ndarray, percentiles: tuple[float, float] = (2, 98),
                   max_sample: int = 200_000) -> np.ndarray:
    """Stretch each band of ``(band, y, x)`` from its p-low→p-high percentile to 0→1 (clipped).

    Percentiles are computed per band over finite values (on an evenly strided sample
    of at most ``max_sample`` pixels). NaN stays NaN. A constant band maps to 0.
    """
    b = np.asarray(bands, dtype=np.float32)
    out = np.full(b.shape, np.nan, np.float32)
    flat = b.reshape(b.shape[0], -1)
    step = max(1, flat.shape[1] // max_sample)
    for i in range(b.shape[0]):
        s = flat[i, ::step]
        s = s[np.isfinite(s)]
        if not len(s):
            continue
        lo, hi = np.percentile(s, percentiles)
        scale = (hi - lo) if hi > lo else 1.0
        out[i] = np.clip((b[i] - lo) / scale, 0, 1)
    return out


def rgb_to_rgba(rgb: np.ndarray) -> np.ndarray:
    """``(3, y, x)`` floats in [0, 1] (NaN = nodata) → ``(y, x, 4)`` uint8, transparent where NaN."""
    rgb = np.asarray(rgb, dtype=np.float32)
    ok = np.isfinite(rgb).all(axis=0)
    out = np.zeros(rgb.shape[1:] + (4,), np.uint8)
    out[..., :3] = (np.nan_to_num(np.moveaxis(rgb, 0, -1), nan=0.0) * 255 + 0.5).clip(0, 255).astype(np.uint8)
    out[..., 3] = np.where(ok, 255, 0)
    return out


def _lut(cmap: str, n: int = 256) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0, 1, n)) * 255 + 0.5).astype(np.uint8)


def colormap_indexed(values: np.ndarray, vmin: float, vmax: float,
                     cmap: str = "viridis") -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` floats through a matplotlib colormap as a palette image.

    Returns ``(indices, palette)``: uint8 ``(y, x)`` and ``(256, 4)`` RGBA. Index 0 is
    transparent (NaN); 1..255 run through the colormap from ``vmin`` to ``vmax``
    (clipped). A quarter of the bytes of RGBA to warp and compress, which keeps a
    map click fast.
    """
    v = np.asarray(values, dtype=np.float32)
    ok = np.isfinite(v)
    span = (vmax - vmin) if vmax > vmin else 1.0
    idx = (1 + np.clip((np.where(ok, v, vmin) - vmin) / span, 0, 1) * 254 + 0.5).astype(np.uint8)
    idx[~ok] = 0
    palette = np.zeros((256, 4), np.uint8)
    palette[1:] = _lut(cmap, 255)
    return idx, palette


def categorical_indexed(values: np.ndarray, codes: list[int], colors: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer class map ``(y, x)`` → palette image; ``codes[i]`` drawn in ``colors[i]``, others transparent."""
    v = np.asarray(values)
    idx = np.zeros(v.shape, np.uint8)
    palette = np.zeros((256, 4), np.uint8)
    for i, (code, col) in enumerate(zip(codes[:255], colors)):
        idx[v == code] = i + 1
        palette[i + 1] = _hex_rgba(col)
    return idx, palette


def _hex_rgba(col: str) -> tuple[int, int, int, int]:
    col = col.lstrip("#")
    return (int(col[0:2], 16), int(col[2:4], 16), int(col[4:6], 16), 255)


def png_data_url(rgba: np.ndarray, palette: np.ndarray | None = None) -> str:
    """Image → ``data:image/png;base64,...`` (fast zlib level; no file, no server).

    ``rgba`` is ``(y, x, 4)`` uint8, or ``(y, x)`` uint8 palette indices with
    ``palette`` ``(256, 4)`` RGBA (alpha kept through the PNG ``tRNS`` chunk).
    """
    from PIL import Image

    buf = io.BytesIO()
    if palette is None:
        img = Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA")
        img.save(buf, format="PNG", compress_level=1)
    else:
        img = Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8), mode="L").convert("P")
        img.putpalette(np.ascontiguousarray(palette[:, :3]).ravel().tolist())
        img.save(buf, format="PNG", compress_level=1, transparency=bytes(palette[:, 3].tolist()))
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class MercatorWarp:
    """Nearest-neighbour resampling of one source grid onto a north-up EPSG:3857 grid.

    Build with :meth:`from_grid`; then :meth:`apply` maps any ``(y, x, ...)`` array on
    the source grid to the Web Mercator grid by fancy indexing (no reprojection work
    per layer).

    Attributes
    ----------
    shape: ``(ny, nx)`` of the Mercator image.
    bounds: ``((south, west), (north, east))`` in degrees, the ``ImageOverlay`` bounds.
    mercator_bounds: ``(xmin, ymin, xmax, ymax)`` in EPSG:3857 metres.
    rows, cols: source row/col of every Mercator pixel (``-1`` outside the source grid).
    """

    shape: tuple[int, int]
    bounds: tuple[tuple[float, float], tuple[float, float]]
    mercator_bounds: tuple[float, float, float, float]
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def from_grid(cls, crs, transform, shape: tuple[int, int], *, max_pixels: int = 1024) -> "MercatorWarp":
        """Warp for a grid with affine ``transform`` (``a, b, c, d, e, f``, north-up) in ``crs``.

        The Mercator grid covers the source footprint (edges densified, so curved
        edges are inside). Its long side has up to 4× the source's pixels (sharp patch
        edges for small grids) but no more than ``max(max_pixels, source long side)``.
        """
        from pyproj import CRS, Transformer

        a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
        ny, nx = int(shape[0]), int(shape[1])
        src = CRS.from_user_input(crs)
        fwd = Transformer.from_crs(src, "EPSG:3857", always_xy=True)
        # densified outline of the source footprint (pixel edges, not centres)
        t = np.linspace(0, 1, 65)
        ex = np.r_[t * nx, np.full_like(t, nx), (1 - t) * nx, np.zeros_like(t)]
        ey = np.r_[np.zeros_like(t), t * ny, np.full_like(t, ny), (1 - t) * ny]
        mx, my = fwd.transform(c + a * ex + b * ey, f + d * ex + e * ey)
        x0, x1, y0, y1 = float(np.min(mx)), float(np.max(mx)), float(np.min(my)), float(np.max(my))
        # small grids are oversampled (up to 4×) so nearest resampling misplaces no patch
        # edge by more than 1/8 patch; large ones get about one Mercator pixel per source pixel
        long_side = min(4 * max(nx, ny), max(int(max_pixels), max(nx, ny)))
        res = max(x1 - x0, y1 - y0) / long_side
        wx = max(1, int(math.ceil((x1 - x0) / res)))
        wy = max(1, int(math.ceil((y1 - y0) / res)))
        x1, y0 = x0 + wx * res, y1 - wy * res
        # source row/col of every Mercator pixel centre
        inv = Transformer.from_crs("EPSG:3857", src, always_xy=True)
        px = x0 + res * (np.arange(wx) + 0.5)
        py = y1 - res * (np.arange(wy) + 0.5)
        if wx * wy <= 65_536:
            gx, gy = np.meshgrid(px, py)
            sx, sy = (np.asarray(v).reshape(wy, wx) for v in inv.transform(gx, gy))
        else:  # exact on every 8th pixel, bilinear in between (the projection is smooth at this scale)
            iy, ix = _nodes(wy), _nodes(wx)
            gx, gy = np.meshgrid(px[ix], py[iy])
            cx, cy = inv.transform(gx, gy)
            sx, sy = _bilinear(np.asarray(cx), iy, ix, wy, wx), _bilinear(np.asarray(cy), iy, ix, wy, wx)
        det = a * e - b * d
        dx, dy = sx - c, sy - f
        col = np.floor((e * dx - b * dy) / det).astype(np.int64)
        row = np.floor((-d * dx + a * dy) / det).astype(np.int64)
        inside = (row >= 0) & (row < ny) & (col >= 0) & (col < nx)
        rows = np.where(inside, row, -1).astype(np.int32)
        cols = np.where(inside, col, -1).astype(np.int32)
        to_ll = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
        west, south = to_ll.transform(x0, y0)
        east, north = to_ll.transform(x1, y1)
        return cls((wy, wx), ((float(south), float(west)), (float(north), float(east))),
                   (x0, y0, x1, y1), rows, cols)

    def apply(self, image: np.ndarray, fill=0) -> np.ndarray:
        """Resample ``image`` (``(ny, nx)`` or ``(ny, nx, k)`` on the source grid) to the Mercator grid."""
        img = np.asarray(image)
        inside = self.rows >= 0
        out = img[np.where(inside, self.rows, 0), np.where(inside, self.cols, 0)]
        out[~inside] = fill
        return out

    def pixel_of(self, lon: float, lat: float) -> tuple[int, int]:
        """Mercator image ``(row, col)`` containing a lon/lat (may be outside the image)."""
        from pyproj import Transformer

        mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
        x0, y0, x1, y1 = self.mercator_bounds
        return (int(math.floor((y1 - my) / (y1 - y0) * self.shape[0])),
                int(math.floor((mx - x0) / (x1 - x0) * self.shape[1])))


def _nodes(n: int, step: int = 8) -> np.ndarray:
    return np.unique(np.r_[np.arange(0, n, step), n - 1])


def _bilinear(coarse: np.ndarray, iy: np.ndarray, ix: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """Upsample values known at rows ``iy`` × cols ``ix`` to the full ``(ny, nx)`` grid."""
    def weights(nodes, n):
        j = np.arange(n)
        k = np.clip(np.searchsorted(nodes, j, side="right") - 1, 0, max(len(nodes) - 2, 0))
        span = np.maximum(nodes[np.minimum(k + 1, len(nodes) - 1)] - nodes[k], 1)
        return k, np.minimum(k + 1, len(nodes) - 1), (j - nodes[k]) / span

    k0y, k1y, ty = weights(iy, ny)
    k0x, k1x, tx = weights(ix, nx)
    top = coarse[k0y][:, k0x] * (1 - tx) + coarse[k0y][:, k1x] * tx
    bot = coarse[k1y][:, k0x] * (1 - tx) + coarse[k1y][:, k1x] * tx
    return top * (1 - ty)[:, None] + bot * ty[:, None]
