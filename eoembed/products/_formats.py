"""The product formats :func:`open_embeddings` reads: AlphaEarth, TESSERA, GeoParquet rows, any raster of vectors.

:func:`open_embeddings` (the one reader, defined in :mod:`eoembed.io` and re-exported here;
it hands every format but eoembed's own stores to the reader this module registers) returns
the embedding cube the rest of eoembed consumes — an
``xr.DataArray`` named ``"embeddings"``, dims ``("embedding", "y", "x")`` (plus
``"time"`` first when the product has several dates), float32, NaN where the product
is masked, ``x``/``y`` at pixel (patch) centres, the CRS and transform written by
rioxarray, and attrs under the ``eoembed:`` prefix stating the product, its
provenance and licence. :func:`eoembed.build_index`, :func:`eoembed.classify.fewshot`,
``emb.eo.similarity``/``pca_rgb``/``explore`` then work on it exactly as on a cube
made by :func:`eoembed.embed`.

Formats (``format=``):

``"alphaearth"``
    Google/DeepMind AlphaEarth Foundations annual Satellite Embedding COGs (GCS
    ``gs://alphaearth_foundations`` and its Source Cooperative copy): 64 int8 bands
    ``A00``–``A63``, nodata ``-128`` (masked in all bands at once), de-quantised as
    ``sign(q) * (|q| / 127.5) ** 2`` and renormalised to unit length (the published
    README: https://developers.google.com/earth-engine/guides/aef_on_gcs_readme). The
    Source Cooperative copies are "bottom-up" (positive y resolution); they are flipped
    to north-up here. CC-BY-4.0 with the attribution text in the attrs.
``"tessera"``
    TESSERA (University of Cambridge) tiles: 128 int8 channels ``q`` with per-pixel
    float32 ``scales`` (``(H, W)`` or ``(H, W, 128)``) in ``<tile>_scales.npy``;
    value = ``q * scales`` (geotessera's ``dequantize_embedding``), NaN where the
    pixel is no data (:mod:`eoembed.codecs`: a scale that is 0, NaN, ±inf, negative or
    at least 1e30 — geotessera's largest-float marker — or an all-zero vector). The
    ``.npy`` tiles carry no georeferencing: pass ``georef=`` (the tile's landmask
    GeoTIFF, as geotessera does, or any GeoTIFF on the same grid) or ``crs=`` and
    ``transform=``. An int8 GeoTIFF with a ``<name>_scales.npy``/``_scales.tif``
    sidecar is read the same way, and so is geotessera's Zarr store (one ``utm{NN}``
    group per UTM zone with int8 ``embeddings`` (time, band, y, x), float32
    ``scales`` (time, y, x), the CRS as ``proj:code``): ``zone=`` and ``year=`` pick
    one zone and year. CC-BY-4.0.
``"geoparquet"``
    Rows of ``geometry`` (points, or chip polygons → their centroids) and an
    ``embedding`` column (list, fixed-size list or fixed-shape tensor), optionally a
    time column (``timestamp``, ``datetime`` or ``date``; Major-TOM, Clay, Earth Index
    style); ``.parquet``, ``.geoparquet``, ``.pq``, ``.gpq``. When the points lie on a
    regular lattice (float noise in computed centroids ignored) filled to at least
    :data:`GRID_MIN_FILL` the rows become a cube on
    that grid (NaN where a cell has no row). Otherwise a :class:`PointEmbeddings` is
    returned: the point index eoembed accepts for scattered vectors (its own
    :meth:`~PointEmbeddings.search` and :meth:`~PointEmbeddings.fewshot`).
``"geotiff"`` / ``"zarr"``
    Any multi-band float GeoTIFF (bands = embedding dims) or Zarr store of vectors
    (a variable with ``y``, ``x`` and one other dim, or one 2-D variable per dim).
``"eoembed"``
    A store written by eoembed itself (:func:`eoembed.io.open_store`).
``"auto"``
    Chosen from the extension and, for GeoTIFFs, from the dtype, band count, band
    names, nodata and sidecars. Ambiguous int8 rasters are refused with the fix.

GeoTIFFs and Zarr open lazily (dask chunks); nothing is read until needed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed._version import __version__
from eoembed.codecs import (  # noqa: F401  (re-exported: the codecs' historical import path)
    ALPHAEARTH_NODATA,
    dequantize_alphaearth,
    dequantize_tessera,
    quantize_alphaearth,
)
from eoembed.codecs import where as _where
from eoembed.exceptions import (
    DimensionError,
    InputError,
    MissingCRSError,
    ParameterError,
    ProductFormatError,
    require,
)
from eoembed.io import open_embeddings, open_store, register_reader  # noqa: F401  (the one public reader)
from eoembed.validate import (
    OPEN_FORMATS,
    PARQUET_EXT,
    check_format_matches,
    check_npy_array,
    check_row,
    check_rows,
    check_some_vector,
    check_tessera_scales,
    check_tessera_tile,
    check_transform,
)

__all__ = [
    "ALPHAEARTH_ATTRIBUTION", "FORMATS", "GRID_MIN_FILL", "PointEmbeddings", "dequantize_alphaearth",
    "dequantize_tessera", "open_embeddings", "quantize_alphaearth",
]  # fmt: skip

log = logging.getLogger("eoembed.products")

FORMATS = OPEN_FORMATS
#: A GeoParquet lattice becomes a cube only if at least this share of its cells has a row.
GRID_MIN_FILL = 0.25
ALPHAEARTH_ATTRIBUTION = ("The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and "
                          "Google DeepMind.")
_TESSERA_ATTRIBUTION = ("TESSERA embeddings, University of Cambridge (https://github.com/ucam-eo/tessera, "
                        "arXiv:2506.20380)")
_RASTER_EXT = (".tif", ".tiff", ".vrt", ".cog")
_PARQUET_EXT = PARQUET_EXT
#: Time columns looked for in GeoParquet rows when ``time_column`` is not given, in this order.
TIME_COLUMNS = ("timestamp", "datetime", "date")


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------
def _open_product(src: str, format: str = "auto", *, chunks: Any = "auto", year: int | None = None,
                  zone: int | str | None = None, georef=None, crs: Any = None, transform: Any = None, scales=None,
                  column: str = "embedding", time_column: str | None = None, model: str | None = None):
    """The product reader behind :func:`eoembed.io.open_embeddings` (registered with it below)."""
    remote = "://" in src
    fmt = _detect(src, remote) if format == "auto" else format
    log.info("opening %s as %s", src, fmt)
    if fmt == "eoembed":
        return open_store(src, chunks=chunks if chunks is not None else "auto")
    check_format_matches(src, fmt)
    if fmt == "alphaearth":
        return _open_alphaearth(src, chunks=chunks, year=year)
    if fmt == "tessera":
        if _tessera_zarr_groups(src) is not None:
            return _open_tessera_zarr(src, chunks=chunks, year=year, zone=zone)
        return _open_tessera(src, chunks=chunks, year=year, georef=georef, crs=crs, transform=transform,
                             scales=scales)
    if fmt == "geoparquet":
        return _open_geoparquet(src, column=column, time_column=time_column, model=model)
    if fmt == "geotiff":
        return _open_geotiff(src, chunks=chunks, model=model, year=year)
    return _open_zarr(src, chunks=chunks, model=model)


register_reader(_open_product)


def _detect(src: str, remote: bool) -> str:
    low = src.lower().rstrip("/")
    if low.endswith(_PARQUET_EXT):
        return "geoparquet"
    if low.endswith(".npy"):
        return "tessera"
    if low.endswith((".nc", ".nc4")):
        return "eoembed"
    if low.endswith(".zarr") or (not remote and Path(src).is_dir()):
        if _is_own_zarr(src):
            return "eoembed"
        return "tessera" if _tessera_zarr_groups(src) is not None else "zarr"
    import rasterio

    try:
        with rasterio.open(src) as ds:
            dtype, count, nodata = ds.dtypes[0], ds.count, ds.nodata
            names = [d or "" for d in ds.descriptions]
            tags = ds.tags()
    except rasterio.errors.RasterioIOError as err:
        raise InputError(f"{src} is neither a GeoTIFF, a Zarr store nor GeoParquet that eoembed can read "
                         f"({err}). Pass format= explicitly.") from err
    if dtype == "int8":
        if (count == 64 or "eoembed_model" in tags) and (names[:2] == ["A00", "A01"] or nodata in (-128, -127)):
            return "alphaearth"
        if _scales_sidecar(src) is not None:
            return "tessera"
        raise ParameterError(
            f"{src} holds int8 vectors ({count} bands) whose quantization eoembed cannot tell: not the "
            "AlphaEarth layout (64 bands A00-A63, nodata -128) and no TESSERA scales file next to it. "
            "Pass format='alphaearth' or format='tessera' (with scales=...)."
        )
    return "geotiff"


def _is_own_zarr(src: str) -> bool:
    from eoembed.io import is_store

    return is_store(src)


# --------------------------------------------------------------------------------------
# rasters
# --------------------------------------------------------------------------------------
#: Default dask chunk side (pixels) of rasters: a multiple of the 256/512 COG blocks.
RASTER_CHUNK = 1024


def _open_raster(src: str, chunks: Any) -> xr.DataArray:
    if chunks == "auto":  # every band in one chunk (vectors are read whole), COG-block-aligned tiles
        chunks = {"band": -1, "y": RASTER_CHUNK, "x": RASTER_CHUNK}
    da = rioxarray.open_rasterio(src, chunks=chunks, masked=False, mask_and_scale=False)
    if isinstance(da, list):
        raise InputError(f"{src} holds several subdatasets; open one of them.")
    if da.rio.crs is None:
        raise MissingCRSError(f"{src} has no CRS; write one (gdal_edit.py -a_srs EPSG:xxxx) or reproject it.")
    t = da.rio.transform()
    if t.b != 0 or t.d != 0:
        raise InputError(f"{src} has a rotated grid; warp it north-up first (gdalwarp).")
    if t.e > 0:  # bottom-up COG (Source Cooperative AlphaEarth copies): flip to north-up
        da = da.isel(y=slice(None, None, -1))
        da = da.rio.write_transform(da.rio.transform(recalc=True))
    return da


def _cube(data, ref: xr.DataArray, attrs: dict) -> xr.DataArray:
    """An embedding cube on ``ref``'s (band, y, x) grid."""
    out = xr.DataArray(data, dims=("embedding", "y", "x"), coords={"y": ref["y"].values, "x": ref["x"].values},
                       name="embeddings", attrs=attrs)
    out = out.rio.write_crs(ref.rio.crs).rio.write_transform(ref.rio.transform())
    out.encoding.pop("_FillValue", None)
    return out


def _year(src: str, year: int | None) -> int | None:
    if year is not None:
        return int(year)
    m = re.search(r"(?<!\d)(20[1-3]\d)(?!\d)", Path(src).name)
    if m:
        return int(m.group(1))
    # folder layouts: TESSERA <root>/global_0.1_degree_representation/<year>/grid_*.npy,
    # AlphaEarth <bucket>/<year>/<utm zone>/<file>.tiff
    for part in reversed(Path(src).parent.parts[-3:]):
        if re.fullmatch(r"20[1-3]\d", part):
            return int(part)
    return None


def _base_attrs(*, model: str, family: str, version: str, dim: int, res: float, license: str,
                src: str, year: int | None, **extra) -> dict:
    attrs = {
        "eoembed:model": model,
        "eoembed:model_family": family,
        "eoembed:model_version": version,
        "eoembed:embedding_dim": int(dim),
        "eoembed:patch_size": 1,
        "eoembed:patch_size_m": float(res),
        "eoembed:pool_time": 1,
        "eoembed:license": license,
        "eoembed:source": src,
        "eoembed:version": __version__,
    }
    if year is not None:
        attrs["eoembed:time_range"] = [f"{year}-01-01", f"{year}-12-31"]
    attrs.update({f"eoembed:{k}": v for k, v in extra.items()})
    return attrs


def _open_alphaearth(src: str, *, chunks: Any, year: int | None) -> xr.DataArray:
    da = _open_raster(src, chunks)
    own = "eoembed_model" in da.attrs  # eoembed.export writes any dimension in this convention
    if da.dtype != np.int8 or (da.sizes["band"] != 64 and not own):
        raise InputError(
            f"{src} is not an AlphaEarth embedding COG: expected 64 int8 bands (A00-A63), got "
            f"{da.sizes['band']} {da.dtype} bands. For float vectors use format='geotiff'."
        )
    declared = da.rio.nodata  # AlphaEarth's -128 always; a re-export may declare another (e.g. -127)
    v = dequantize_alphaearth(da.data, renormalize=True, axis=0, nodata=declared)
    year = _year(src, year)
    attrs = _base_attrs(
        model="alphaearth", family="alphaearth", version="GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL", dim=64,
        res=abs(da.rio.resolution()[0]), license="CC-BY-4.0", src=src, year=year,
        product="AlphaEarth Foundations Satellite Embedding (annual)", attribution=ALPHAEARTH_ATTRIBUTION,
        quantization="int8, value = sign(q) * (|q|/127.5)**2, nodata -128"
                     + (f" and the declared {int(declared)}" if declared is not None and np.isfinite(declared)
                        and int(declared) != ALPHAEARTH_NODATA else "") + ", renormalised to unit length",
        quantization_source="https://developers.google.com/earth-engine/guides/aef_on_gcs_readme",
    )
    tags = _eoembed_tags(da)
    if "eoembed:model" in tags:  # written by eoembed.export.embeddings_to_cog: the cube's own provenance
        attrs = {k: v_ for k, v_ in attrs.items() if k in ("eoembed:source", "eoembed:quantization",
                                                          "eoembed:quantization_source")}
        attrs.update({k: v_ for k, v_ in tags.items() if k not in attrs})
        attrs["eoembed:embedding_dim"] = int(da.sizes["band"])
    return _cube(v, da, attrs)


def _scales_sidecar(src: str) -> Path | None:
    p = Path(src)
    for cand in (p.with_name(p.stem + "_scales.npy"), p.with_name(p.stem + "_scales.tif"),
                 p.with_name(p.stem + "_scales.tiff")):
        if cand.exists():
            return cand
    return None


def _read_scales(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        s = np.load(path, mmap_mode="r")
        return np.asarray(s if s.ndim == 2 else np.moveaxis(s, -1, 0))  # (H, W) or (H, W, C) → (C, H, W)
    import rasterio

    with rasterio.open(path) as ds:
        s = ds.read()
    return s[0] if s.shape[0] == 1 else s


def _open_tessera(src: str, *, chunks: Any, year: int | None, georef, crs, transform, scales) -> xr.DataArray:
    scales_path = Path(scales) if scales is not None else _scales_sidecar(src)
    if scales_path is None or not scales_path.exists():
        raise InputError(
            f"No TESSERA scales found for {src}: expected {Path(src).stem}_scales.npy (or _scales.tif) next to "
            "it. Pass scales='path/to/<tile>_scales.npy'."
        )
    if src.lower().endswith(".npy"):
        check_npy_array(src)
        q = np.load(src, mmap_mode="r")
        s_shape = np.load(scales_path, mmap_mode="r").shape if scales_path.suffix == ".npy" else None
        check_tessera_tile(src, q.shape, q.dtype, s_shape)
        h, w = q.shape[:2]
        ref = _npy_grid(src, h, w, georef=georef, crs=crs, transform=transform)
        import dask.array as dsa

        qc = dsa.from_array(q, chunks=(min(h, 1024), min(w, 1024), -1)).transpose(2, 0, 1)
        if chunks is None:
            qc = qc.compute()
    else:
        ref = _open_raster(src, chunks)
        if ref.dtype != np.int8:
            raise InputError(f"{src}: TESSERA int8 channels expected, got {ref.dtype}. "
                             "Dequantized GeoTIFF exports open with format='geotiff'.")
        qc = ref.data
        h, w = ref.sizes["y"], ref.sizes["x"]
    s = _read_scales(scales_path)
    if s.shape[-2:] != (h, w):
        raise InputError(f"{scales_path}: scales of shape {s.shape} do not match the {h}x{w} tile {src}.")
    check_tessera_scales(src, (h, w, int(qc.shape[0])), s.shape if s.ndim == 2 else (h, w, s.shape[0]))
    v = dequantize_tessera(qc, s)
    attrs = _base_attrs(
        model="tessera", family="tessera", version="v1", dim=int(qc.shape[0]), res=abs(ref.rio.resolution()[0]),
        license="CC-BY-4.0", src=src, year=_year(src, year), product="TESSERA annual embeddings",
        attribution=_TESSERA_ATTRIBUTION, quantization="int8 * per-pixel scales (geotessera dequantize_embedding)",
        scales=str(scales_path),
    )
    return _cube(v, ref, attrs)


def _npy_grid(src: str, h: int, w: int, *, georef, crs, transform) -> xr.DataArray:
    """A (band, y, x) template on the tile's grid, from a landmask/georef GeoTIFF or crs+transform."""
    if georef is not None:
        ref = _open_raster(os.fspath(georef), None)
        if (ref.sizes["y"], ref.sizes["x"]) != (h, w):
            raise InputError(f"georef {georef} is {ref.sizes['y']}x{ref.sizes['x']} but the tile {src} is {h}x{w}.")
        return ref.isel(band=[0])
    if crs is None or transform is None:
        raise MissingCRSError(
            f"{src} is a TESSERA .npy tile, which carries no georeferencing. Pass georef= (the tile's landmask "
            "GeoTIFF from geotessera) or both crs= and transform=."
        )
    t = check_transform(transform)
    x = t.c + t.a * (np.arange(w) + 0.5)
    y = t.f + t.e * (np.arange(h) + 0.5)
    ref = xr.DataArray(np.broadcast_to(np.int8(0), (1, h, w)), dims=("band", "y", "x"), coords={"y": y, "x": x})
    return ref.rio.write_crs(crs).rio.write_transform(t)


def _tessera_zarr_groups(src: str) -> list[str] | None:
    """The groups of a TESSERA Zarr store that hold ``embeddings`` and ``scales`` (``[""]`` for a zone group itself).

    None when ``src`` is not laid out that way (or is not a local Zarr store).
    """
    if "://" in src or not Path(src).is_dir():
        return None
    import zarr

    try:
        root = zarr.open_group(src, mode="r")
        if {"embeddings", "scales"} <= set(root.array_keys()):
            return [""]
        groups = sorted(n for n, g in root.groups() if {"embeddings", "scales"} <= set(g.array_keys()))
    except Exception:  # noqa: BLE001  (not a Zarr group: not this layout)
        return None
    return groups or None


def _tessera_crs(*attr_sets: dict):
    for attrs in attr_sets:
        for key in ("proj:code", "proj:wkt2", "proj:projjson", "crs_wkt", "spatial_ref", "crs"):
            if attrs.get(key):
                return attrs[key]
        if attrs.get("epsg") or attrs.get("proj:epsg"):
            return f"EPSG:{int(attrs.get('epsg') or attrs.get('proj:epsg'))}"
    return None


def _open_tessera_zarr(src: str, *, chunks: Any, year: int | None, zone: int | str | None) -> xr.DataArray:
    """geotessera's Zarr store: one ``utm{NN}`` group per UTM zone with int8 ``embeddings`` (time, band, y, x),
    float32 ``scales`` (time, y, x) and the years as ``time``; CRS as ``proj:code`` in the attrs."""
    import warnings

    import zarr

    groups = _tessera_zarr_groups(src) or []
    if groups == [""]:
        group = None
    else:
        names = {g: g for g in groups}
        names.update({str(int(g[3:])): g for g in groups if g[:3] == "utm" and g[3:].isdigit()})
        if zone is None:
            if len(groups) != 1:
                raise ParameterError(f"{src} is a TESSERA store with {len(groups)} UTM zones ({', '.join(groups)}); "
                                     f"pick one with zone=, e.g. zone={groups[0]!r}.")
            group = groups[0]
        else:
            key = str(zone).lower()
            group = names.get(key) or names.get(str(int(key[3:])) if key[:3] == "utm" and key[3:].isdigit() else "")
            if group is None:
                raise ParameterError(f"zone={zone!r} is not in {src}; its zones are {', '.join(groups)}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "not consolidated"
        ds = xr.open_zarr(src, group=group, consolidated=None, chunks=chunks if chunks is not None else None)
    root_attrs = dict(zarr.open_group(src, mode="r").attrs)
    parent_attrs = {}
    if group is None:  # a zone group opened by its own path: the CRS may sit on the store root above it
        try:
            parent_attrs = dict(zarr.open_group(str(Path(src).parent), mode="r").attrs)
        except Exception:  # noqa: BLE001
            parent_attrs = {}
    crs = _tessera_crs(ds.attrs, root_attrs, parent_attrs)
    if crs is None:
        raise MissingCRSError(f"{src}{'/' + group if group else ''}: a TESSERA zone without a CRS ('proj:code' "
                              "attribute, e.g. 'EPSG:32631', on the zone group or the store root); write it with "
                              "zarr.open_group(store, mode='r+').attrs['proj:code'] = 'EPSG:326NN'.")
    q, s = ds["embeddings"], ds["scales"]
    if q.dtype != np.int8:
        raise ProductFormatError(f"{src}: TESSERA 'embeddings' must be int8, got {q.dtype}.")
    chosen = None
    if "time" in q.dims:
        years = [int(v) for v in np.asarray(ds["time"].values).ravel()]
        if year is None:
            if len(years) != 1:
                raise ParameterError(f"{src}{'/' + group if group else ''} holds the years {years}; pick one with "
                                     f"year=, e.g. year={years[-1]}.")
            chosen = years[0]
        elif int(year) not in years:
            raise ParameterError(f"year={year} is not in {src}{'/' + group if group else ''}; its years are {years}.")
        else:
            chosen = int(year)
        i = years.index(chosen)
        q, s = q.isel(time=i), s.isel(time=i)
    band = [d for d in q.dims if d not in ("y", "x")]
    if len(band) != 1 or set(s.dims) != {"y", "x"}:
        raise DimensionError(f"{src}: TESSERA 'embeddings' must be (time?, band, y, x) and 'scales' (time?, y, x); "
                             f"got {q.dims} and {s.dims}.")
    q = q.transpose(band[0], "y", "x")
    s = s.transpose("y", "x")
    v = dequantize_tessera(q.data, s.data)
    ref = xr.DataArray(np.broadcast_to(np.int8(0), (1, q.sizes["y"], q.sizes["x"])), dims=("band", "y", "x"),
                       coords={"y": q["y"].values, "x": q["x"].values}).rio.write_crs(crs)
    ref = ref.rio.write_transform(ref.rio.transform(recalc=True))
    attrs = _base_attrs(
        model="tessera", family="tessera", version=str(root_attrs.get("geoemb:version", "v1")),
        dim=int(q.shape[0]), res=abs(ref.rio.resolution()[0]), license="CC-BY-4.0", src=src,
        year=chosen if chosen is not None else _year(src, year), product="TESSERA annual embeddings (Zarr)",
        attribution=_TESSERA_ATTRIBUTION, quantization="int8 * per-pixel scales (geotessera dequantise); NaN, inf, "
        "0 or >= 1e30 scales and all-zero vectors are no data", zone=group or Path(src).name,
    )
    return _cube(v, ref, attrs)


def _open_geotiff(src: str, *, chunks: Any, model: str | None, year: int | None) -> xr.DataArray:
    da = _open_raster(src, chunks)
    if not np.issubdtype(da.dtype, np.floating):
        raise ParameterError(
            f"{src} holds {da.dtype} values; format='geotiff' reads float vectors. For quantized products pass "
            "format='alphaearth' or format='tessera'."
        )
    v = da.data.astype(np.float32)
    nodata = da.rio.nodata
    if nodata is not None and np.isfinite(nodata):
        v = _where((v == np.float32(nodata)).all(axis=0, keepdims=True), np.float32(np.nan), v)
    tags = _eoembed_tags(da)
    attrs = _base_attrs(model=model or str(tags.get("eoembed:model", "unknown")), family="unknown",
                        version=str(tags.get("eoembed:model_version", "")), dim=da.sizes["band"],
                        res=abs(da.rio.resolution()[0]), license=str(tags.get("eoembed:license", "unknown")),
                        src=src, year=year)
    attrs.update({k: _tag_value(v_) for k, v_ in tags.items() if k not in ("eoembed:source",)})
    attrs["eoembed:embedding_dim"] = int(da.sizes["band"])
    if model:
        attrs["eoembed:model"] = model
    return _cube(v, da, attrs)


def _eoembed_tags(da: xr.DataArray) -> dict:
    """``eoembed_*`` GeoTIFF tags (written by :mod:`eoembed.export`) as ``eoembed:*`` attrs."""
    return {"eoembed:" + k[len("eoembed_"):]: _tag_value(v) for k, v in da.attrs.items()
            if str(k).startswith("eoembed_")}


def _tag_value(v: Any) -> Any:
    """GeoTIFF tags come back as strings: restore numbers and JSON lists written by eoembed.export."""
    if not isinstance(v, str):
        return v
    import json

    try:
        return json.loads(v)
    except ValueError:
        return v


def _open_zarr(src: str, *, chunks: Any, model: str | None) -> xr.DataArray:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # stores written without consolidated metadata
            ds = xr.open_zarr(src, consolidated=None, chunks=chunks if chunks is not None else None,
                              decode_coords="all")
    except Exception as err:  # noqa: BLE001  (any unreadable store: say what was expected)
        raise InputError(f"{src} is not a Zarr store xarray can open ({type(err).__name__}: {err}).") from err
    if any("embedding" in v.dims for v in ds.data_vars.values()):
        from eoembed.io import open_embeddings as _own

        return _own(src, chunks=chunks if chunks is not None else "auto")
    three = [n for n, v in ds.data_vars.items() if v.ndim == 3 and {"y", "x"} <= set(v.dims)]
    # one variable per dim: in the order of their names (A00, A01, ... or A1, A2, ..., A10), never the store's
    # listing order, which a store without consolidated metadata does not keep
    flat = sorted((n for n, v in ds.data_vars.items() if set(v.dims) == {"y", "x"}),
                  key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(n))])
    if len(three) == 1:
        da = ds[three[0]]
        other = [d for d in da.dims if d not in ("y", "x")][0]
        da = da.rename({other: "embedding"}).drop_vars("embedding", errors="ignore")
    elif len(flat) >= 2 and not three:
        da = ds[flat].to_dataarray("embedding").drop_vars("embedding")
    else:
        raise DimensionError(
            f"{src} holds no single vector variable: expected one variable with dims (y, x) and one more "
            f"(the embedding), or one (y, x) variable per embedding dim; found {dict(ds.sizes)} with "
            f"variables {list(ds.data_vars)}. Rename lat/lon-style dims to y/x."
        )
    da = da.transpose("embedding", "y", "x").astype(np.float32)
    if da.rio.crs is None:
        raise MissingCRSError(f"{src}: the vectors have no CRS (no grid_mapping/spatial_ref); write one with "
                              "rioxarray (ds.rio.write_crs(...)) before saving.")
    attrs = _base_attrs(model=model or str(da.attrs.get("eoembed:model", "unknown")), family="unknown",
                        version="", dim=da.sizes["embedding"], res=abs(da.rio.resolution()[0]),
                        license=str(da.attrs.get("license", "unknown")), src=src, year=None)
    return _cube(da.data, da, attrs)


# --------------------------------------------------------------------------------------
# GeoParquet
# --------------------------------------------------------------------------------------
def _embedding_matrix(table, column: str) -> np.ndarray:
    """``(n, d)`` float32 from a list / fixed-size list / fixed-shape tensor column."""
    import pyarrow as pa

    if column not in table.column_names:
        raise InputError(f"The GeoParquet has no {column!r} column (columns: {table.column_names}); "
                         "pass column= with the name of the vector column.")
    col = table.column(column).combine_chunks()
    if isinstance(col, pa.ExtensionArray) and hasattr(col, "to_numpy_ndarray"):  # fixed_shape_tensor
        m = col.to_numpy_ndarray()
        return np.asarray(m, np.float32).reshape(len(col), -1)
    if (pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) \
            and not (pa.types.is_integer(col.type.value_type) or pa.types.is_floating(col.type.value_type)):
        raise InputError(f"The {column!r} column holds lists of {col.type.value_type}, which is not numeric: expected "
                         "lists of numbers (one vector per row). Convert the values to floats first.")
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lens = np.asarray(col.value_lengths().to_numpy(zero_copy_only=False))
        if col.null_count or len(set(lens.tolist())) != 1:
            raise InputError(f"The {column!r} vectors have different lengths ({sorted(set(lens.tolist()))[:5]}) "
                             "or nulls; every row needs one vector of the same dimension.")
        return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(col), int(lens[0]))
    if pa.types.is_binary(col.type) or pa.types.is_fixed_size_binary(col.type):
        raise InputError(f"The {column!r} column holds raw bytes; decode it to a list of floats first "
                         "(np.frombuffer(..., dtype=...)).")
    raise InputError(f"The {column!r} column has type {col.type}, which is not numeric: expected a list or "
                     "fixed-size list of numbers (one vector per row). Pass column= naming the vector column, or "
                     "convert the text to float lists first.")


#: Coordinates closer than this (relative to their magnitude, at least 1e-9 CRS units) are one lattice
#: line: centroids computed in floating point carry ~1e-16 relative noise, which is not a grid step.
LATTICE_RTOL = 1e-9


def _lattice(v: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """(origin, step, index) if the values lie on a regular lattice, else None.

    Values within :data:`LATTICE_RTOL` of each other are merged first, so float noise in
    computed centroids is neither taken as the grid step nor as a line of its own.
    """
    v = np.asarray(v, np.float64)
    u = np.unique(v)
    tol = max(1e-9, LATTICE_RTOL * float(np.max(np.abs(u))) if len(u) else 0.0)
    gaps = np.diff(u)
    lines = u[np.r_[True, gaps > tol]]  # one representative per cluster of nearly equal values
    if len(lines) == 1:
        return float(lines[0]), 0.0, np.zeros(len(v), np.int64)
    step = float(np.min(np.diff(lines)))
    k = (v - lines[0]) / step
    ki = np.round(k)
    if step <= 0 or np.max(np.abs(k - ki)) > 1e-3:
        return None
    return float(lines[0]), step, ki.astype(np.int64)


def _open_geoparquet(src: str, *, column: str, time_column: str | None, model: str | None):
    require("pyarrow", "search", "Reading GeoParquet embeddings")
    gpd = require("geopandas", "search", "Reading GeoParquet embeddings")
    import pyarrow.parquet as pq
    import shapely

    try:
        table = pq.read_table(src)
    except Exception as err:  # noqa: BLE001  (pyarrow's errors: not Parquet at all)
        raise ProductFormatError(f"{src} is not a Parquet file pyarrow can read ({type(err).__name__}: {err}). "
                                 "Pass the format the file is in, or format='auto'.") from None
    check_rows(src, table.num_rows, table.column_names)
    try:
        gdf = gpd.read_parquet(src, columns=[c for c in table.column_names if c != column])
    except ValueError as err:
        raise InputError(f"{src} is not GeoParquet with a 'geometry' column ({err}).") from err
    if gdf.crs is None:
        raise MissingCRSError(f"{src} states no CRS in its GeoParquet metadata; set it with gdf.set_crs(...).")
    X = _embedding_matrix(table, column)
    check_some_vector(src, X, column)
    geom = gdf.geometry.values
    pts = shapely.centroid(geom) if not (shapely.get_type_id(geom) == 0).all() else geom
    x, y = shapely.get_x(pts), shapely.get_y(pts)
    meta = (table.schema.metadata or {})
    attrs = {
        "eoembed:model": model or _meta(meta, "model") or "unknown",
        "eoembed:model_version": _meta(meta, "model_version") or "",
        "eoembed:embedding_dim": int(X.shape[1]),
        "eoembed:license": _meta(meta, "license") or "unknown",
        "eoembed:source": src,
        "eoembed:version": __version__,
    }
    times = None
    if time_column is None:
        time_column = next((c for c in TIME_COLUMNS if c in gdf.columns), None)
    elif time_column not in gdf.columns:
        raise InputError(f"{src} has no {time_column!r} column (columns: {list(gdf.columns)}); pass time_column= "
                         "with the name of the time column, or leave it out to use the first of "
                         f"{TIME_COLUMNS} present.")
    if time_column is not None:
        import pandas as pd

        try:
            t = pd.to_datetime(gdf[time_column])
        except (ValueError, TypeError) as err:
            raise InputError(f"{src}: the {time_column!r} column does not hold dates ({err}); pass time_column= "
                             "with the name of the time column.") from None
        times = (t.dt.tz_convert(None) if t.dt.tz is not None else t).to_numpy()
    lx, ly = _lattice(x), _lattice(y)
    if lx is not None and ly is not None:
        (x0, dx, ix), (y0, dy, iy) = lx, ly
        dx = dx or dy
        dy = dy or dx
        if dx and dy:
            nx, ny = int(ix.max()) + 1, int(iy.max()) + 1
            ut = np.unique(times) if times is not None else np.array([0])
            fill = len(X) / (nx * ny * len(ut))
            if fill >= GRID_MIN_FILL:
                return _rows_to_cube(X, ix, iy, nx, ny, x0, y0, dx, dy, times, gdf.crs, attrs)
            log.info("%s: the points fill %.0f%% of their lattice (< %.0f%%): returning PointEmbeddings",
                     src, 100 * fill, 100 * GRID_MIN_FILL)
    gdf = gdf.set_geometry(gpd.GeoSeries(pts, crs=gdf.crs))
    return PointEmbeddings(X, gdf, attrs=attrs, times=times)


def _meta(meta: dict, key: str) -> str | None:
    for k in (f"eoembed_{key}".encode(), f"eoembed:{key}".encode(), key.encode()):
        if k in meta:
            return meta[k].decode()
    return None


def _rows_to_cube(X, ix, iy, nx, ny, x0, y0, dx, dy, times, crs, attrs) -> xr.DataArray:
    from affine import Affine

    # rows are north-up: the largest y is row 0
    row = (ny - 1) - iy
    xs = x0 + dx * np.arange(nx)
    ys = y0 + dy * np.arange(ny)[::-1]
    transform = Affine(dx, 0.0, x0 - dx / 2, 0.0, -dy, ys[0] + dy / 2)
    attrs = {**attrs, "eoembed:patch_size": 1, "eoembed:patch_size_m": float(dx)}
    if times is not None and len(np.unique(times)) > 1:
        ut, it = np.unique(times, return_inverse=True)
        cube = np.full((len(ut), X.shape[1], ny, nx), np.nan, np.float32)
        key = it * ny * nx + row * nx + ix
        if len(np.unique(key)) != len(key):
            raise InputError("Several GeoParquet rows share one location and timestamp; deduplicate them first.")
        cube[it, :, row, ix] = X
        out = xr.DataArray(cube, dims=("time", "embedding", "y", "x"), coords={"time": ut, "y": ys, "x": xs},
                           name="embeddings", attrs={**attrs, "eoembed:pool_time": 0})
    else:
        if len(np.unique(row * nx + ix)) != len(ix):
            raise InputError("Several GeoParquet rows share one location; deduplicate them or give each a "
                             "distinct timestamp.")
        cube = np.full((X.shape[1], ny, nx), np.nan, np.float32)
        cube[:, row, ix] = X.T
        if times is not None:
            t = str(np.datetime_as_string(np.unique(times)[0], unit="D"))
            attrs["eoembed:time_range"] = [t, t]
        out = xr.DataArray(cube, dims=("embedding", "y", "x"), coords={"y": ys, "x": xs}, name="embeddings",
                           attrs={**attrs, "eoembed:pool_time": 1})
    return out.rio.write_crs(crs).rio.write_transform(transform)


class PointEmbeddings:
    """Scattered vectors (GeoParquet rows that do not form a grid): a small point index.

    ``vectors`` ``(n, d)`` float32, ``gdf`` the rows' GeoDataFrame (points), ``attrs``
    provenance. :meth:`search` ranks the points by cosine similarity (exact, FAISS's
    numpy path); :meth:`fewshot` fits a scikit-learn-compatible
    :class:`~eoembed.classify.FewShotClassifier` on labelled points and
    :meth:`predict` classifies every point. Spatial-block CV works through
    :meth:`spatial_cv`.
    """

    def __init__(self, vectors: np.ndarray, gdf, *, attrs: dict, times: np.ndarray | None = None):
        self.vectors = np.asarray(vectors, np.float32)
        self.gdf = gdf.reset_index(drop=True)
        self.attrs = dict(attrs)
        self.times = times
        n = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self._unit = np.where(n > 0, self.vectors / np.where(n > 0, n, 1), np.nan).astype(np.float32)

    def __len__(self) -> int:
        return len(self.vectors)

    def __repr__(self) -> str:
        return (f"<PointEmbeddings {len(self)} points × {self.vectors.shape[1]} dims, "
                f"model {self.attrs.get('eoembed:model')!r}, {self.gdf.crs}>")

    @property
    def crs(self):
        """CRS of the points."""
        return self.gdf.crs

    def nearest(self, geometry, *, max_distance: float | None = None) -> np.ndarray:
        """Row of the point nearest to each of ``geometry`` (a GeoSeries/GeoDataFrame, any CRS)."""
        g = geometry.to_crs(self.crs) if getattr(geometry, "crs", None) is not None else geometry
        geoms = g.geometry.values if hasattr(g, "geometry") else g.values
        import shapely

        q = shapely.centroid(geoms)
        tree = shapely.STRtree(self.gdf.geometry.values)
        idx = tree.query_nearest(q, max_distance=max_distance, all_matches=False)
        out = np.full(len(q), -1, np.int64)
        out[idx[0]] = idx[1]
        return out

    def search(self, query, k: int = 10):
        """The ``k`` points most similar (cosine) to ``query``.

        ``query``: a vector ``(d,)``, a point row number, or a GeoSeries/GeoDataFrame
        of locations (their nearest points' vectors are averaged). Returns a
        GeoDataFrame of the hits with ``score`` and ``rank``, best first.
        """
        from eoembed.index.backend import numpy_topk
        from eoembed.validate import check_query_vectors, check_top_k

        k = check_top_k(k)
        if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
            check_row(int(query), len(self), dim=self.vectors.shape[1], valid=np.isfinite(self._unit).all(axis=1))
            q = self._unit[int(query)]
        elif hasattr(query, "geometry") or hasattr(query, "geom_type"):
            rows = self.nearest(query)
            q = np.nanmean(self._unit[rows[rows >= 0]], axis=0)
        else:
            q = check_query_vectors(np.asarray(query).ravel(), self.vectors.shape[1], "these points")[0]
            q = q.astype(np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        ok = np.isfinite(self._unit).all(axis=1)
        s, i = numpy_topk(self._unit[ok], q[None].astype(np.float32), int(k))
        keep = i[0] >= 0
        rows = np.flatnonzero(ok)[i[0][keep]]
        hits = self.gdf.iloc[rows].copy()
        hits["score"] = s[0][keep]
        hits["rank"] = np.arange(1, len(rows) + 1)
        return hits

    def labelled(self, labels, *, class_column: str = "class", max_distance: float | None = None):
        """``(X, y, rows)`` for the points nearest to each label (points/polygons, any CRS)."""
        if class_column not in labels.columns:
            from eoembed.exceptions import LabelError

            raise LabelError(f"labels have no {class_column!r} column (columns: {list(labels.columns)}).")
        rows = self.nearest(labels, max_distance=max_distance)
        ok = rows >= 0
        X = self.vectors[rows[ok]]
        y = labels[class_column].to_numpy()[ok]
        fin = np.isfinite(X).all(axis=1)
        return X[fin], y[fin], rows[ok][fin]

    def spatial_cv(self, rows: np.ndarray, *, block_size: float, buffer: float = 0.0, n_splits: int = 5,
                   random_state: int = 0):
        """A :class:`~eoembed.classify.SpatialBlockKFold` over the points ``rows``."""
        from eoembed.classify import SpatialBlockKFold

        g = self.gdf.geometry.values[rows]
        import shapely

        xy = np.c_[shapely.get_x(g), shapely.get_y(g)]
        return SpatialBlockKFold(xy, block_size=block_size, buffer=buffer, n_splits=n_splits,
                                 random_state=random_state)

    def fewshot(self, labels, *, estimator: Any = "logistic", class_column: str = "class",
                max_distance: float | None = None, random_state: int = 0):
        """A :class:`~eoembed.classify.FewShotClassifier` fitted on the labelled points."""
        from eoembed.classify import FewShotClassifier

        X, y, _ = self.labelled(labels, class_column=class_column, max_distance=max_distance)
        return FewShotClassifier(estimator=estimator, random_state=random_state).fit(X, y)

    def predict(self, clf):
        """Every point classified by ``clf``: the GeoDataFrame with ``class`` and ``probability_<c>`` columns."""
        out = self.gdf.copy()
        ok = np.isfinite(self.vectors).all(axis=1)
        p = np.full((len(self), len(clf.classes_)), np.nan, np.float32)
        p[ok] = clf.predict_proba(self.vectors[ok])
        out["class"] = None
        out.loc[ok, "class"] = np.asarray(clf.classes_)[np.argmax(p[ok], axis=1)]
        for j, c in enumerate(clf.classes_):
            out[f"probability_{c}"] = p[:, j]
        return out
