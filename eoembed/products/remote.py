"""Published products read from where they live: the tiles covering a bounding box, streamed and mosaicked.

:func:`alphaearth` and :func:`tessera` take a lon/lat bounding box and a year, look the covering tiles up in
the producer's own published index, read only the windows the box needs over HTTP, and mosaic them onto one
grid. They return the same lazy embedding cube :func:`eoembed.open_embeddings` returns for a local file
(dims ``("embedding", "y", "x")``, float32, NaN where masked, CRS and transform written, ``eoembed:*`` attrs
with the licence, attribution and the URL of every tile used).

Layouts followed (read from the producers' documentation and code; what was assumed is marked)
------------------------------------------------------------------------------------------------
AlphaEarth Foundations, Satellite Embedding V1 annual
    Layout: the Earth Engine team's README of the GCS copy
    (https://developers.google.com/earth-engine/guides/aef_on_gcs_readme) and the Source Cooperative page
    (https://source.coop/tge-labs/aef): ``<root>/<year>/<zone><N|S>/<file>.tiff``, 8192x8192-pixel COGs with
    overviews, 64 int8 bands ``A00``-``A63``, nodata -128, value ``sign(q) * (q/127.5)**2``, each in its UTM
    zone's CRS; the Source Cooperative copies are "bottom-up" (positive y resolution) and are read as such.
    Index: ``<root>/aef_index.parquet``, a GeoParquet with one row per file and the columns ``path``,
    ``year``, ``crs``, ``utm_zone``, ``utm_west/south/east/north`` and ``wgs84_west/south/east/north``
    (column names as read by jakenotjay/aef-loader, ``aef_loader/index.py`` and its ``tests/conftest.py``,
    and by rasteret's AEF guide, which reads
    ``https://data.source.coop/tge-labs/aef/v1/annual/aef_index.parquet``). ``path`` holds the bucket URI
    (``s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/2024/10N/x.tiff`` or
    ``gs://alphaearth_foundations/satellite_embedding/v1/annual/...``); the file is read from ``source`` +
    the part of ``path`` after ``v1/annual/`` (assumed: that both copies keep the ``<year>/<zone>/<file>``
    tail, which the two READMEs state). Default ``source``: the free Source Cooperative HTTPS endpoint
    :data:`AEF_SOURCE`. The GCS bucket is requester-pays: :data:`AEF_GCS_SOURCE` works only with GDAL
    credentials for Google Cloud (``GS_*``/``GOOGLE_*`` environment) and a billing project.
    Reads: GDAL ``/vsicurl/`` range requests of the COG blocks under each dask chunk, nothing else.
TESSERA (geotessera)
    Layout: ucam-eo/geotessera ``geotessera/registry.py`` (the current Parquet registry): root
    :data:`TESSERA_SOURCE` (``https://data.source.coop/tessera/tessera``), manifest
    ``npy/<dataset>/manifest.parquet`` with the columns ``year``, ``lon``, ``lat`` (tile centres on the 0.05°
    offsets of the 0.1° grid), ``grid_size`` and ``scales_size`` (bytes); tiles
    ``npy/<dataset>/<year>/grid_<lon:.2f>_<lat:.2f>/grid_<lon:.2f>_<lat:.2f>.npy`` (int8, (H, W, 128)) and
    ``..._scales.npy`` (float32, (H, W) or (H, W, 128)); georeferencing from the tile's landmask GeoTIFF
    ``landmasks/<version>/grid_<lon:.2f>_<lat:.2f>.tiff`` (its UTM CRS and transform), as geotessera does.
    The manifest carries sizes, not hashes (geotessera checks Content-Length and an MD5 ETag): the size of
    each file, as the server's ``Content-Range`` gives it, is checked against ``grid_size``/``scales_size``.
    Reads: HTTP range requests of the ``.npy`` header, then of the rows under each dask chunk (a row band
    of a C-order (H, W, C) array is one contiguous byte range; the columns outside the chunk in those rows
    are read and dropped). Tiles are not downloaded whole.

Mosaic: every tile is put on one grid — the UTM zone of the bbox centre (``crs=`` chooses another) at the
product's 10 m — by direct copy when the tile is on that lattice and nearest-neighbour reprojection
otherwise (tiles of a neighbouring UTM zone); ``eoembed:mosaic`` says which. Where tiles overlap the first
valid pixel (tiles in name order) wins.

Missing data: a bbox no tile of that year covers raises :class:`~eoembed.exceptions.MissingTileError` (with
the years the index has and the nearest tile); a tile the index lists but the server does not have (HTTP
404/403) raises the same error by default, or with ``missing="nan"`` leaves its area NaN, warns and names it
in ``eoembed:missing_tiles``. An unreachable host raises
:class:`~eoembed.exceptions.DownloadUnreachableError`, an unreadable index
:class:`~eoembed.exceptions.ProductIndexError`, a malformed bbox :class:`~eoembed.exceptions.BBoxError`.

Tested against a local HTTP server serving files written in these layouts only; not against the live
buckets (the development machines have no internet access).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eoembed.codecs import dequantize_alphaearth, dequantize_tessera
from eoembed.exceptions import (
    BBoxError,
    DownloadNotFoundError,
    DownloadUnreachableError,
    MissingTileError,
    ParameterError,
    ProductFormatError,
    ProductIndexError,
    require,
    user_stacklevel,
)
from eoembed.products._formats import _TESSERA_ATTRIBUTION, ALPHAEARTH_ATTRIBUTION, _base_attrs

__all__ = ["AEF_GCS_SOURCE", "AEF_SOURCE", "REMOTE_CHUNK", "TESSERA_SOURCE", "alphaearth", "tessera"]

log = logging.getLogger("eoembed.products.remote")

#: AlphaEarth annual COGs, Source Cooperative copy (public, HTTPS): ``<this>/aef_index.parquet``, ``<this>/<year>/…``.
AEF_SOURCE = "https://data.source.coop/tge-labs/aef/v1/annual"
#: The Earth Engine team's GCS copy (requester-pays: needs Google Cloud credentials for GDAL and a billing project).
AEF_GCS_SOURCE = "https://storage.googleapis.com/alphaearth_foundations/satellite_embedding/v1/annual"
AEF_INDEX = "aef_index.parquet"
#: geotessera's public repository (Source Cooperative): ``npy/<dataset>/…``, ``landmasks/<version>/…``.
TESSERA_SOURCE = "https://data.source.coop/tessera/tessera"
#: Side (pixels) of the dask chunks of a streamed mosaic.
REMOTE_CHUNK = 512

_AEF_COLUMNS = ("path", "year", "crs", "wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
_TESSERA_COLUMNS = ("year", "lon", "lat")
_OPTIONAL_COLUMNS = ("grid_size", "scales_size", "utm_zone", "version", "variant")
#: GDAL settings for the COG range reads (applied per read with ``rasterio.Env``).
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per file
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.vrt",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "5",
    "GDAL_HTTP_TIMEOUT": "60",
    "VSI_CACHE": "TRUE",
}


def _gdal_env() -> dict:
    """:data:`GDAL_ENV` with the proxy stated explicitly (see :func:`eoembed.data._stack.gdal_proxy`)."""
    from eoembed.data._stack import gdal_proxy

    return {**GDAL_ENV, "GDAL_HTTP_PROXY": gdal_proxy()}


# --------------------------------------------------------------------------------------
# the bbox
# --------------------------------------------------------------------------------------
def check_bbox(bbox: Sequence[float], bbox_crs: Any = "EPSG:4326") -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` in lon/lat, checked; a bbox in another CRS is transformed first."""
    try:
        vals = tuple(float(v) for v in bbox)
    except (TypeError, ValueError) as err:
        raise BBoxError(f"bbox={bbox!r} is not four numbers; pass (west, south, east, north).") from err
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise BBoxError(f"bbox={bbox!r} must be four finite numbers (west, south, east, north).")
    crs = _crs(bbox_crs, "bbox_crs")
    if crs != _crs("EPSG:4326", "bbox_crs"):
        w, s, e, n = vals
        if w >= e or s >= n:
            raise BBoxError(f"bbox={bbox!r} in {bbox_crs}: west must be < east and south < north.")
        from rasterio.warp import transform_bounds

        vals = tuple(transform_bounds(crs, "EPSG:4326", w, s, e, n, densify_pts=21))
    w, s, e, n = vals
    swapped = all(-90 <= v <= 90 for v in (w, e)) and any(abs(v) > 90 for v in (s, n)) and all(
        abs(v) <= 180 for v in (s, n))
    if swapped:
        raise BBoxError(f"bbox={bbox!r} has a latitude beyond ±90 ({s}, {n}) but longitudes that would fit as "
                        f"latitudes: it looks like (south, west, north, east). Pass (west, south, east, north) = "
                        f"({s}, {w}, {n}, {e}).")
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise BBoxError(f"bbox={bbox!r} is outside lon [-180, 180] / lat [-90, 90]; pass (west, south, east, north) "
                        "in degrees, or give bbox_crs= for coordinates in another CRS.")
    if w >= e:
        raise BBoxError(f"bbox={bbox!r}: west ({w}) is not < east ({e}). Pass (west, south, east, north); a box "
                        "across the antimeridian is not supported: read its two halves separately.")
    if s >= n:
        raise BBoxError(f"bbox={bbox!r}: south ({s}) is not < north ({n}). Pass (west, south, east, north).")
    return vals


def _crs(value: Any, name: str):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(value)
    except (CRSError, ValueError, TypeError) as err:
        raise ParameterError(f"{name}={value!r} is not a CRS ({err}); pass e.g. 'EPSG:32631' or a pyproj/rasterio "
                             "CRS.") from err


def utm_crs(lon: float, lat: float):
    """The WGS 84 / UTM CRS of the zone holding (lon, lat) (EPSG:326NN north, 327NN south)."""
    from rasterio.crs import CRS

    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


# --------------------------------------------------------------------------------------
# HTTP: the index, byte ranges
# --------------------------------------------------------------------------------------
_local = threading.local()


def _session():
    import requests

    if getattr(_local, "session", None) is None:
        _local.session = requests.Session()
        _local.session.headers["User-Agent"] = "eoembed (https://github.com/eoembed)"
    return _local.session


def _check_source(source: str, what: str) -> str:
    source = str(source).rstrip("/")
    if not source.startswith(("http://", "https://")):
        raise ParameterError(f"source={source!r}: {what} is read over HTTP(S); pass the https:// root of the "
                             f"published copy (e.g. {AEF_SOURCE!r} or {TESSERA_SOURCE!r}), not an s3:// or gs:// "
                             "URI or a local folder (open local files with eoembed.open_embeddings).")
    return source


class _NotThere(Exception):
    """The server answered 404/403/410 for a URL."""

    def __init__(self, url: str, status: int):
        super().__init__(f"HTTP {status} for {url}")
        self.url, self.status = url, status


def _unreachable(url: str, err: BaseException) -> DownloadUnreachableError:
    text = (str(err).strip().splitlines() or [""])[0][:300]
    return DownloadUnreachableError(
        f"Cannot reach {url} ({type(err).__name__}: {text}). Check the network (or proxy) and the source= URL; "
        f"the published roots are {AEF_SOURCE} (AlphaEarth) and {TESSERA_SOURCE} (TESSERA)."
    )


def get_range(url: str, start: int, stop: int) -> tuple[bytes, int | None]:
    """Bytes ``[start, stop)`` of ``url`` by an HTTP range request, and the file's size (from ``Content-Range``).

    A server that ignores ``Range`` (answers 200 with the whole file) still gives the right bytes.
    """
    import requests

    from eoembed.data.registry import CONNECT_TIMEOUT_S, TIMEOUT_S

    try:
        r = _session().get(url, headers={"Range": f"bytes={start}-{stop - 1}"},
                           timeout=(CONNECT_TIMEOUT_S, TIMEOUT_S))
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise _unreachable(url, err) from err
    if r.status_code in (403, 404, 410):
        raise _NotThere(url, r.status_code)
    if r.status_code == 416:  # asked past the end
        total = r.headers.get("Content-Range", "").rpartition("/")[2]
        return b"", int(total) if total.isdigit() else None
    if r.status_code not in (200, 206):
        raise DownloadNotFoundError(f"{url} answered HTTP {r.status_code} to a range request for bytes "
                                    f"{start}-{stop - 1}; the file cannot be read from there.")
    if r.status_code == 200:
        return r.content[start:stop], len(r.content)
    total = r.headers.get("Content-Range", "").rpartition("/")[2]
    return r.content, int(total) if total.isdigit() else None


def fetch_index(url: str, *, refresh: bool = False) -> Path:
    """The producer's index file, downloaded once into ``<data cache>/products/<url hash>/``.

    Through eoembed's one downloader (:func:`eoembed.data.registry.download`, pooch). The producers publish no
    hash for their index, so the copy is kept as downloaded (its SHA-256 is logged); ``refresh=True``
    downloads it again (the index grows as the producer adds tiles).
    """
    from eoembed.data.registry import data_cache_dir, download

    folder = data_cache_dir() / "products" / hashlib.sha256(url.encode()).hexdigest()[:16]
    fname = url.rstrip("/").rpartition("/")[2] or "index.parquet"
    if refresh and (folder / fname).exists():
        (folder / fname).unlink()
    path = download(url, folder / fname, what="the tile index",
                    fix=f"Check source= (the folder holding {fname}); the published roots are {AEF_SOURCE} "
                        f"(AlphaEarth) and {TESSERA_SOURCE} (TESSERA).")
    log.info("tile index %s: %s (%d bytes, SHA-256 %s)", url, path, path.stat().st_size, _sha256(path))
    return path


def _sha256(path: Path) -> str:
    from eoembed._files import sha256_file

    return sha256_file(path)


def _read_index(path: Path, url: str, columns: Sequence[str]):
    pq = require("pyarrow.parquet", "search", "Reading a producer's tile index")
    try:
        names = pq.read_schema(path).names
        # only the columns used (the AlphaEarth index has a geometry column and one row per COG worldwide)
        table = pq.read_table(path, columns=[c for c in names if c in (*columns, *_OPTIONAL_COLUMNS)])
    except Exception as err:  # noqa: BLE001  (ArrowInvalid, OSError…: not a Parquet file)
        raise ProductIndexError(
            f"The tile index {url} (cached at {path}) is not a readable Parquet file ({type(err).__name__}: "
            f"{str(err)[:200]}). Check source=, or delete the cached copy (refresh_index=True) if it was cut off."
        ) from err
    missing = [c for c in columns if c not in names]
    if missing:
        raise ProductIndexError(
            f"The tile index {url} lacks the column(s) {missing} of the published layout (it has "
            f"{names[:20]}). Check that source= points at the producer's root folder."
        )
    return table.to_pandas()


# --------------------------------------------------------------------------------------
# tiles
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tile:
    """One published file on its own grid; ``read`` returns float32 (C, rows, cols), NaN where no data."""

    name: str
    url: str
    crs: Any
    transform: Any  # affine.Affine as published (may be bottom-up)
    height: int
    width: int


@dataclass(frozen=True)
class _AefTile(_Tile):
    nodata: float | None = None

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        with rasterio.Env(**_gdal_env()), rasterio.open("/vsicurl/" + self.url) as ds:
            q = ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))
        return dequantize_alphaearth(q, renormalize=True, axis=0, nodata=self.nodata)


@dataclass(frozen=True)
class _NpyTile(_Tile):
    scales_url: str = ""
    offset: int = 0  # bytes before the data (the .npy header)
    channels: int = 128
    scales_offset: int = 0
    scales_channels: int = 0  # 0: (H, W) scales; C: (H, W, C)

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        row = self.width * self.channels
        raw, _ = get_range(self.url, self.offset + r0 * row, self.offset + r1 * row)
        q = np.frombuffer(raw, np.int8).reshape(r1 - r0, self.width, self.channels)[:, c0:c1]
        k = max(self.scales_channels, 1)
        srow = self.width * k * 4
        raw, _ = get_range(self.scales_url, self.scales_offset + r0 * srow, self.scales_offset + r1 * srow)
        s = np.frombuffer(raw, "<f4").reshape(r1 - r0, self.width, k)[:, c0:c1]
        s = s[..., 0] if self.scales_channels == 0 else np.moveaxis(s, -1, 0)
        return np.asarray(dequantize_tessera(np.moveaxis(q, -1, 0), s), dtype=np.float32)


def _npy_header(url: str) -> tuple[tuple[int, ...], np.dtype, int, int | None]:
    """Shape, dtype, header length and file size of a remote ``.npy`` (one range request)."""
    raw, total = get_range(url, 0, 4096)
    from numpy.lib import format as npf

    f = io.BytesIO(raw)
    try:
        major, _ = npf.read_magic(f)
        shape, fortran, dtype = (npf.read_array_header_1_0(f) if major == 1 else npf.read_array_header_2_0(f))
    except ValueError as err:
        raise ProductFormatError(f"{url} is not a NumPy .npy file ({err}); the TESSERA layout has one per tile.") \
            from err
    if fortran:
        raise ProductFormatError(f"{url} is stored in Fortran order; TESSERA tiles are C-order (H, W, C).")
    return tuple(shape), dtype, f.tell(), total


# --------------------------------------------------------------------------------------
# the mosaic
# --------------------------------------------------------------------------------------
def _north_up(data: np.ndarray, t):
    from rasterio import Affine

    if t.e > 0:  # bottom-up (Source Cooperative AlphaEarth copies): flip rows
        return data[:, ::-1], Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * data.shape[1])
    return data, t


def _aligned(tile: _Tile, src_t, dst_crs, dst_t) -> bool:
    if tile.crs != dst_crs or abs(abs(src_t.a) - dst_t.a) > 1e-9 or abs(abs(src_t.e) - abs(dst_t.e)) > 1e-9:
        return False
    dx, dy = (src_t.c - dst_t.c) / dst_t.a, (src_t.f - dst_t.f) / dst_t.e
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def _fill_block(tiles: Sequence[_Tile], dst_crs, dst_t, h: int, w: int, dim: int) -> np.ndarray:
    """One dask chunk of the mosaic: every tile's window under it, copied or reprojected (nearest)."""
    from rasterio.transform import array_bounds
    from rasterio.warp import Resampling, reproject, transform_bounds

    out = np.full((dim, h, w), np.nan, np.float32)
    west, south, east, north = array_bounds(h, w, dst_t)
    for tile in tiles:
        if not np.isnan(out[0]).any():
            break
        left, bottom, right, top = transform_bounds(dst_crs, tile.crs, west, south, east, north, densify_pts=21)
        inv = ~tile.transform
        cols, rows = zip(*(inv @ (x, y) for x in (left, right) for y in (bottom, top)))
        pad = 0 if _aligned(tile, tile.transform, dst_crs, dst_t) else 1  # reprojection needs a margin
        r0, r1 = max(math.floor(min(rows) + 1e-6) - pad, 0), min(math.ceil(max(rows) - 1e-6) + pad, tile.height)
        c0, c1 = max(math.floor(min(cols) + 1e-6) - pad, 0), min(math.ceil(max(cols) - 1e-6) + pad, tile.width)
        if r0 >= r1 or c0 >= c1:
            continue
        data = tile.read(r0, r1, c0, c1)
        from rasterio import Affine

        data, src_t = _north_up(data, tile.transform @ Affine.translation(c0, r0))
        if _aligned(tile, src_t, dst_crs, dst_t):
            x0, y0 = round((src_t.c - dst_t.c) / dst_t.a), round((src_t.f - dst_t.f) / dst_t.e)
            ys, xs = slice(max(y0, 0), min(y0 + data.shape[1], h)), slice(max(x0, 0), min(x0 + data.shape[2], w))
            if ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            part = data[:, ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
            view = out[:, ys, xs]
        else:
            part = np.full((dim, h, w), np.nan, np.float32)
            reproject(np.ascontiguousarray(data), part, src_transform=src_t, src_crs=tile.crs, dst_transform=dst_t,
                      dst_crs=dst_crs, resampling=Resampling.nearest, src_nodata=np.nan, dst_nodata=np.nan)
            view = out
        take = np.isnan(view[0]) & ~np.isnan(part).any(axis=0)
        view[:, take] = part[:, take]
    return out


def _mosaic(tiles: Sequence[_Tile], bbox, *, crs, res: float, dim: int, chunks: int | None, attrs: dict):
    import dask
    import dask.array as dsa
    from rasterio import Affine
    from rasterio.warp import transform_bounds

    w, s, e, n = bbox
    chosen = crs is None
    dst_crs = utm_crs((w + e) / 2, (s + n) / 2) if chosen else _crs(crs, "crs")
    if not dst_crs.is_projected:
        raise ParameterError(f"crs={crs!r} is geographic; the mosaic needs a projected CRS in metres "
                             "(leave crs=None for the UTM zone of the bbox centre).")
    left, bottom, right, top = transform_bounds("EPSG:4326", dst_crs, w, s, e, n, densify_pts=21)
    # on the lattice of the first tile in that CRS (so its pixels are copied, not resampled), else of 0
    lattice = next((t.transform for t in tiles if t.crs == dst_crs and abs(abs(t.transform.a) - res) < 1e-9), None)
    ox, oy = (lattice.c % res, lattice.f % res) if lattice is not None else (0.0, 0.0)
    x0, x1 = math.floor((left - ox) / res) * res + ox, math.ceil((right - ox) / res) * res + ox
    y0, y1 = math.floor((bottom - oy) / res) * res + oy, math.ceil((top - oy) / res) * res + oy
    width, height = max(round((x1 - x0) / res), 1), max(round((y1 - y0) / res), 1)
    dst_t = Affine(res, 0, x0, 0, -res, y1)
    side = chunks or max(height, width)
    if not isinstance(side, int) or side <= 0:
        raise ParameterError(f"chunks={chunks!r}: pass the chunk side in pixels (e.g. {REMOTE_CHUNK}) or None.")
    rows = []
    for r in range(0, height, side):
        row = []
        for c in range(0, width, side):
            bh, bw = min(side, height - r), min(side, width - c)
            bt = dst_t @ Affine.translation(c, r)
            block = dask.delayed(_fill_block, pure=False)(list(tiles), dst_crs, bt, bh, bw, dim)
            row.append(dsa.from_delayed(block, shape=(dim, bh, bw), dtype=np.float32))
        rows.append(row)
    data = dsa.block(rows)
    if chunks is None:
        data = data.compute()
    same = all(t.crs == dst_crs for t in tiles)
    attrs = dict(attrs)
    attrs["eoembed:mosaic"] = (
        f"{len(tiles)} tile(s) on one {res:g} m grid in {dst_crs.to_string()} "
        + ("(the UTM zone of the bbox centre)" if chosen else "(crs= given)")
        + ("; copied pixel for pixel" if same else "; tiles in other CRSs reprojected, nearest neighbour")
        + ", cropped to the bbox"
    )
    attrs["eoembed:bbox"] = [float(v) for v in bbox]
    out = xr.DataArray(data, dims=("embedding", "y", "x"), name="embeddings", attrs=attrs,
                       coords={"y": y1 - res * (np.arange(height) + 0.5), "x": x0 + res * (np.arange(width) + 0.5)})
    return out.rio.write_crs(dst_crs).rio.write_transform(dst_t)


def _probe(tiles, opener, missing: str, what: str):
    """Open every tile's header (concurrently); tiles the server does not have are raised or dropped."""
    with ThreadPoolExecutor(max_workers=min(8, max(len(tiles), 1))) as pool:
        results = list(pool.map(lambda t: _try(opener, t), tiles))
    opened = [r for r in results if not isinstance(r, _NotThere)]
    gone = [r for r in results if isinstance(r, _NotThere)]
    if gone:
        names = ", ".join(f"{g.url} (HTTP {g.status})" for g in gone)
        if missing == "raise" or not opened:
            raise MissingTileError(
                f"{len(gone)} of the {len(tiles)} {what} tile(s) the index lists for this bbox are not on the "
                f"server: {names}. The index may be newer than the files (or the copy incomplete): try another "
                "source=, or pass missing='nan' to read the rest with NaN where they are missing."
            )
        warnings.warn(f"{len(gone)} {what} tile(s) listed in the index are missing on the server ({names}); their "
                      "area is NaN (eoembed:missing_tiles).", UserWarning, stacklevel=user_stacklevel())
    return opened, [g.url for g in gone]


def _try(opener, tile):
    try:
        return opener(tile)
    except _NotThere as err:
        return err


def _no_tile(what: str, bbox, year: int, years: Sequence[int], near: str | None) -> MissingTileError:
    have = ", ".join(str(y) for y in sorted(set(int(y) for y in years))) or "none"
    hint = f" The nearest {year} tile is {near}." if near else ""
    return MissingTileError(
        f"No {what} tile of {year} covers bbox {tuple(round(v, 6) for v in bbox)} (west, south, east, north). "
        f"The index has the years {have}.{hint} Pick a year it has, or a bbox over covered land."
    )


def _nearest(df, bbox, boxes) -> str | None:
    if not len(df):
        return None
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    w, s, e, n = boxes
    d = np.hypot(np.clip(cx, w, e) - cx, np.clip(cy, s, n) - cy)
    i = int(np.argmin(d))
    return f"{df['_name'].iloc[i]} ({w[i]:.4f}, {s[i]:.4f}, {e[i]:.4f}, {n[i]:.4f}), {d[i]:.3f}° away"


def _check_common(year, missing):
    if missing not in ("raise", "nan"):
        raise ParameterError(f"missing={missing!r}: pass 'raise' (a tile the server lacks is an error) or 'nan' "
                             "(its area is NaN, with a warning).")
    try:
        return int(year)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"year={year!r}: pass the product year as an integer, e.g. year=2024.") from err


# --------------------------------------------------------------------------------------
# AlphaEarth
# --------------------------------------------------------------------------------------
def alphaearth(bbox: Sequence[float], year: int, *, source: str = AEF_SOURCE, index: str | None = None,
               crs: Any = None, bbox_crs: Any = "EPSG:4326", chunks: int | None = REMOTE_CHUNK,
               missing: str = "raise", refresh_index: bool = False) -> xr.DataArray:
    """AlphaEarth Foundations annual embeddings of a bounding box, streamed from the published COGs.

    Parameters
    ----------
    bbox:
        ``(west, south, east, north)`` in degrees (or in ``bbox_crs``).
    year:
        The product year (2017-2024 on GCS; the Source Cooperative copy has 2018-2024).
    source:
        HTTPS root of a published copy: :data:`AEF_SOURCE` (Source Cooperative, default) or
        :data:`AEF_GCS_SOURCE` (requester-pays), or any server with the same layout.
    index:
        URL of the tile index (default ``<source>/aef_index.parquet``); downloaded once and cached.
    crs:
        CRS of the mosaic (default: the UTM zone of the bbox centre).
    chunks:
        Side of the dask chunks in pixels; ``None`` reads everything now.
    missing:
        ``"raise"`` or ``"nan"`` for tiles the index lists but the server lacks.
    refresh_index:
        Download the index again.

    Returns
    -------
    xr.DataArray
        ``(embedding=64, y, x)`` float32 unit vectors at 10 m, NaN where the product is masked (-128);
        lazy (dask) unless ``chunks=None``; attrs as :func:`eoembed.open_embeddings` gives an AlphaEarth COG,
        plus ``eoembed:tiles`` (the COGs read), ``eoembed:index``, ``eoembed:mosaic`` and ``eoembed:bbox``.
    """
    year = _check_common(year, missing)
    bbox = check_bbox(bbox, bbox_crs)
    source = _check_source(source, "AlphaEarth")
    index_url = index or f"{source}/{AEF_INDEX}"
    df = _read_index(fetch_index(index_url, refresh=refresh_index), index_url, _AEF_COLUMNS)
    df["_name"] = df["path"].astype(str).str.rpartition("/")[2]
    boxes = tuple(df[f"wgs84_{k}"].to_numpy(float) for k in ("west", "south", "east", "north"))
    this = (df["year"].astype(int) == year).to_numpy()
    hit = this & (boxes[0] < bbox[2]) & (boxes[2] > bbox[0]) & (boxes[1] < bbox[3]) & (boxes[3] > bbox[1])
    if not hit.any():
        sub = this if this.any() else np.ones(len(df), bool)
        raise _no_tile("AlphaEarth", bbox, year, df["year"], _nearest(df[sub], bbox, tuple(b[sub] for b in boxes)))
    rows = df[hit].sort_values("path")
    tiles = [_aef_tile(source, p) for p in rows["path"].astype(str)]
    opened, gone = _probe(tiles, _open_aef, missing, "AlphaEarth")
    attrs = _base_attrs(
        model="alphaearth", family="alphaearth", version="GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL", dim=64, res=10.0,
        license="CC-BY-4.0", src=index_url, year=year, product="AlphaEarth Foundations Satellite Embedding (annual)",
        attribution=ALPHAEARTH_ATTRIBUTION,
        quantization="int8, value = sign(q) * (|q|/127.5)**2, nodata -128, renormalised to unit length",
        quantization_source="https://developers.google.com/earth-engine/guides/aef_on_gcs_readme",
        index=index_url, tiles=[t.url for t in opened], streamed="GDAL /vsicurl/ range reads of the COG blocks",
    )
    if gone:
        attrs["eoembed:missing_tiles"] = gone
    res = abs(opened[0].transform.a)
    return _mosaic(opened, bbox, crs=crs, res=res, dim=64, chunks=chunks, attrs=attrs)


def _aef_tile(source: str, path: str) -> _Tile:
    """Where a file the index lists lives under ``source``: the tail of its bucket URI after ``v1/annual/``."""
    if path.startswith(("http://", "https://")):
        url = path
    else:
        tail = path.split("/v1/annual/", 1)[1] if "/v1/annual/" in path else path.split("://", 1)[-1].lstrip("/")
        url = f"{source}/{tail}"
    return _Tile(name=url.rpartition("/")[2], url=url, crs=None, transform=None, height=0, width=0)


def _open_aef(tile: _Tile) -> _AefTile:
    import rasterio

    get_range(tile.url, 0, 1)  # 404 → _NotThere, no host → DownloadUnreachableError (typed, before GDAL)
    try:
        with rasterio.Env(**_gdal_env()), rasterio.open("/vsicurl/" + tile.url) as ds:
            crs, t, h, w, count, dtype, nodata = ds.crs, ds.transform, ds.height, ds.width, ds.count, ds.dtypes[0], \
                ds.nodata
    except rasterio.errors.RasterioIOError as err:
        raise ProductFormatError(f"{tile.url} is not a readable GeoTIFF ({err}); AlphaEarth tiles are COGs.") from err
    if count != 64 or dtype != "int8" or crs is None:
        raise ProductFormatError(f"{tile.url} is not an AlphaEarth COG: expected 64 int8 bands with a CRS, got "
                                 f"{count} {dtype} bands, CRS {crs}.")
    return _AefTile(name=tile.name, url=tile.url, crs=crs, transform=t, height=h, width=w, nodata=nodata)


# --------------------------------------------------------------------------------------
# TESSERA
# --------------------------------------------------------------------------------------
def tessera(bbox: Sequence[float], year: int, *, source: str = TESSERA_SOURCE, dataset: str = "v1",
            index: str | None = None, crs: Any = None, bbox_crs: Any = "EPSG:4326",
            chunks: int | None = REMOTE_CHUNK, missing: str = "raise", refresh_index: bool = False) -> xr.DataArray:
    """TESSERA annual embeddings of a bounding box, streamed from geotessera's published tiles.

    Parameters
    ----------
    bbox, year, crs, bbox_crs, chunks, missing, refresh_index:
        As in :func:`alphaearth`.
    source:
        HTTPS root of the repository (default :data:`TESSERA_SOURCE`).
    dataset:
        The ``npy/`` dataset folder (``"v1"``; geotessera names later ones ``"v1.1-cam"``…); its landmasks
        are read from ``landmasks/<version>/`` (the part before ``-``).
    index:
        URL of the manifest (default ``<source>/npy/<dataset>/manifest.parquet``).

    Returns
    -------
    xr.DataArray
        ``(embedding=128, y, x)`` float32 (``int8 * scales``), NaN where a scale marks no data; lazy unless
        ``chunks=None``; attrs as for a local TESSERA tile plus ``eoembed:tiles``, ``eoembed:index``,
        ``eoembed:mosaic`` and ``eoembed:bbox``.
    """
    year = _check_common(year, missing)
    bbox = check_bbox(bbox, bbox_crs)
    source = _check_source(source, "TESSERA")
    dataset = str(dataset).strip("/")
    index_url = index or f"{source}/npy/{dataset}/manifest.parquet"
    df = _read_index(fetch_index(index_url, refresh=refresh_index), index_url, _TESSERA_COLUMNS)
    if "version" in df.columns or "variant" in df.columns:
        log.info("manifest %s has version/variant columns; all rows are used (one dataset per manifest)", index_url)
    lon, lat = df["lon"].to_numpy(float), df["lat"].to_numpy(float)
    df["_name"] = [f"grid_{x:.2f}_{y:.2f}" for x, y in zip(lon, lat)]
    boxes = (lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05)
    this = (df["year"].astype(int) == year).to_numpy()
    hit = this & (boxes[0] < bbox[2]) & (boxes[2] > bbox[0]) & (boxes[1] < bbox[3]) & (boxes[3] > bbox[1])
    if not hit.any():
        sub = this if this.any() else np.ones(len(df), bool)
        raise _no_tile("TESSERA", bbox, year, df["year"], _nearest(df[sub], bbox, tuple(b[sub] for b in boxes)))
    rows = df[hit].drop_duplicates("_name").sort_values("_name")
    version = dataset.split("-", 1)[0]
    tiles = []
    for _, r in rows.iterrows():
        g = r["_name"]
        tiles.append(dict(name=g, url=f"{source}/npy/{dataset}/{year}/{g}/{g}.npy",
                          scales_url=f"{source}/npy/{dataset}/{year}/{g}/{g}_scales.npy",
                          landmask=f"{source}/landmasks/{version}/{g}.tiff",
                          sizes=(r.get("grid_size"), r.get("scales_size"))))
    opened, gone = _probe(tiles, _open_tessera_tile, missing, "TESSERA")
    dim = opened[0].channels
    attrs = _base_attrs(
        model="tessera", family="tessera", version=dataset, dim=dim, res=abs(opened[0].transform.a),
        license="CC-BY-4.0", src=index_url, year=year, product="TESSERA annual embeddings",
        attribution=_TESSERA_ATTRIBUTION, quantization="int8 * per-pixel scales (geotessera dequantize_embedding); "
        "NaN, inf, 0 or >= 1e30 scales and all-zero vectors are no data",
        index=index_url, tiles=[t.url for t in opened],
        streamed="HTTP range reads: the .npy header, then the rows under each chunk (tiles are not downloaded)",
    )
    if gone:
        attrs["eoembed:missing_tiles"] = gone
    return _mosaic(opened, bbox, crs=crs, res=abs(opened[0].transform.a), dim=dim, chunks=chunks, attrs=attrs)


def _open_tessera_tile(spec: dict) -> _NpyTile:
    import rasterio

    shape, dtype, offset, total = _npy_header(spec["url"])
    sshape, sdtype, soffset, stotal = _npy_header(spec["scales_url"])
    get_range(spec["landmask"], 0, 1)
    with rasterio.Env(**_gdal_env()), rasterio.open("/vsicurl/" + spec["landmask"]) as ds:
        crs, t, h, w = ds.crs, ds.transform, ds.height, ds.width
    if len(shape) != 3 or dtype != np.int8:
        raise ProductFormatError(f"{spec['url']}: a TESSERA tile is int8 (H, W, C); got {dtype} {shape}.")
    if (h, w) != shape[:2] or tuple(sshape[:2]) != shape[:2] or len(sshape) not in (2, 3) or sdtype != np.float32:
        raise ProductFormatError(
            f"{spec['name']}: the tile {shape}, its scales {sdtype} {sshape} and its landmask ({h}, {w}) disagree; "
            "TESSERA pairs an (H, W, C) int8 tile with (H, W) float32 scales on the landmask's grid."
        )
    for got, want, url in ((total, spec["sizes"][0], spec["url"]), (stotal, spec["sizes"][1], spec["scales_url"])):
        if got is not None and want is not None and not (isinstance(want, float) and np.isnan(want)) \
                and int(got) != int(want):
            raise ProductIndexError(f"{url} has {got} bytes but the manifest says {int(want)}: the file changed or "
                                    "the cached manifest is stale. Pass refresh_index=True.")
    return _NpyTile(name=spec["name"], url=spec["url"], crs=crs, transform=t, height=h, width=w,
                    scales_url=spec["scales_url"], offset=offset, channels=int(shape[2]), scales_offset=soffset,
                    scales_channels=int(sshape[2]) if len(sshape) == 3 else 0)
