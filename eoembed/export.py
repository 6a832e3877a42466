"""Results out: maps as Cloud-Optimized GeoTIFFs, points as GeoParquet/GeoJSON, cubes as COGs.

Every writer keeps the CRS and transform, writes nodata explicitly and stamps the
provenance attrs (``eoembed:*``: model, weights, licence…) as GeoTIFF tags or Parquet
metadata, so the files open in QGIS, GDAL, rasterio and geopandas with nothing lost.

* :func:`to_cog` — similarity, probability and class maps (and any other
  ``(y, x)``/``(band, y, x)`` map) through GDAL's COG driver (via rioxarray/rasterio).
  Class maps become ``uint8`` (``uint16`` for codes above 254) with an embedded colour
  table and nodata 255 (65535).
* :func:`to_geoparquet`, :func:`to_geojson` — search hits, labels, matches.
* :func:`embeddings_to_cog` — the embedding cube itself, float32 or int8 in the
  AlphaEarth convention (readable back with :func:`eoembed.open_embeddings`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed.codecs import ALPHAEARTH_NODATA, quantize_unit_int8
from eoembed.exceptions import (
    DimensionError,
    EmptyDataError,
    EOEmbedError,
    InputError,
    MissingCRSError,
    ParameterError,
    require,
)
from eoembed.io import cf_coords  # noqa: F401  (re-exported: CF attributes on x/y live with the stores)
from eoembed.validate import check_class_map_values, check_writable

__all__ = ["CLASS_NODATA", "PALETTE", "cf_coords", "embeddings_to_cog", "to_cog", "to_geojson", "to_geoparquet"]

log = logging.getLogger("eoembed.export")

#: nodata of uint8 class maps (classes 0-254).
CLASS_NODATA = 255
#: nodata of uint16 class maps (classes up to 65534, e.g. WorldCereal crop codes).
CLASS_NODATA_16 = 65535
#: Default class colours (Okabe-Ito then Tableau-like), cycled; pass ``colors=`` to choose.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999",
           "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#17BECF")


def _prepare(path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise EOEmbedError(f"{path} exists; pass overwrite=True to replace it. Nothing was changed.")
    check_writable(path)
    return path


def _tags(attrs: dict) -> dict[str, str]:
    """Provenance attrs as GeoTIFF tag strings (lists/dicts as JSON).

    GDAL splits metadata items at the first ``=`` *or* ``:``, so ``eoembed:model``
    is written as ``eoembed_model`` (:func:`eoembed.open_embeddings` maps it back).
    """
    out = {}
    for k, v in attrs.items():
        if not str(k).startswith("eoembed:") and k not in ("long_name", "units"):
            continue
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, np.ndarray):
            v = v.tolist()
        out[str(k).replace(":", "_")] = v if isinstance(v, str) else json.dumps(v)
    return out


def _rgb(c) -> tuple[int, int, int, int]:
    if isinstance(c, str):
        h = c.lstrip("#")
        if len(h) != 6:
            raise ParameterError(f"colour {c!r} is not '#rrggbb'.")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255
    c = tuple(int(v) for v in c)
    if len(c) not in (3, 4) or not all(0 <= v <= 255 for v in c):
        raise ParameterError(f"colour {c!r} is not an (r, g, b[, a]) tuple of 0-255 integers.")
    return c + (255,) * (4 - len(c))


def _is_class_map(da: xr.DataArray) -> bool:
    return "flag_values" in da.attrs or (np.issubdtype(da.dtype, np.integer) and da.name == "class")


def to_cog(
    map_da: xr.DataArray | xr.Dataset,
    path: str | os.PathLike,
    *,
    kind: str = "auto",
    colors: dict[Any, Any] | None = None,
    overwrite: bool = False,
    compress: str = "DEFLATE",
) -> Path:
    """Write a map as a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    map_da:
        A ``(y, x)`` or ``(band, y, x)`` DataArray on a CRS grid: a similarity map
        (``emb.eo.similarity``), the ``class`` or ``probability`` variable of
        :meth:`~eoembed.classify.FewShotClassifier.predict_map`, a PCA-RGB… A
        ``predict_map`` Dataset writes its ``class`` map. The ``label`` dim of a
        probability map becomes the bands, named after the classes.
    path:
        Output ``.tif``.
    kind:
        ``"class"`` (``uint8`` with nodata 255, or ``uint16`` with nodata 65535 when a
        class value exceeds 254; colour table embedded), ``"continuous"`` (float32,
        nodata NaN) or ``"auto"`` (class when the map has ``flag_values`` — as
        ``predict_map`` writes — or is an integer map named ``class``).
    colors:
        Class maps: ``{class value or name: "#rrggbb" | (r, g, b[, a])}``; classes not
        given take :data:`PALETTE` colours in order.
    overwrite:
        Replace an existing file.
    compress:
        GDAL compression of the COG.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    MissingCRSError
        The map has no CRS.
    ParameterError
        Class values outside 0-65534, unknown ``kind`` or bad colours.
    """
    if isinstance(map_da, xr.Dataset):
        if "class" not in map_da:
            raise InputError(f"to_cog got a Dataset with {list(map_da.data_vars)}; pass one map (a DataArray).")
        da = map_da["class"]
        if da.rio.crs is None and map_da.rio.crs is not None:
            da = da.rio.write_crs(map_da.rio.crs).rio.write_transform(map_da.rio.transform())
        da.attrs = {**{k: v for k, v in map_da.attrs.items() if str(k).startswith("eoembed:")}, **da.attrs}
    elif isinstance(map_da, xr.DataArray):
        da = map_da
    else:
        raise InputError(f"to_cog needs an xarray DataArray map, got {type(map_da).__name__}.")
    if kind not in ("auto", "class", "continuous"):
        raise ParameterError(f"kind={kind!r}: use 'auto', 'class' or 'continuous'.")
    if da.rio.crs is None:
        raise MissingCRSError("The map has no CRS; maps from eoembed carry the cube's CRS. For a hand-made map "
                              "call .rio.write_crs(...) and .rio.write_transform(...).")
    extra = [d for d in da.dims if d not in ("y", "x")]
    if len(extra) > 1 or not {"y", "x"} <= set(da.dims):
        raise DimensionError(f"to_cog writes (y, x) or (band, y, x) maps; got dims {da.dims}. Select one time "
                             "or reduce the extra dims first.")
    path = _prepare(path, overwrite)
    is_class = _is_class_map(da) if kind == "auto" else kind == "class"
    if is_class:
        if extra:
            raise DimensionError(f"A class map has dims (y, x); got {da.dims}.")
        check_class_map_values(da.values)
        _class_cog(da, path, colors=colors, compress=compress)
    else:
        _float_cog(da, path, band_dim=extra[0] if extra else None, compress=compress)
    log.info("wrote %s", path)
    return path


def _float_cog(da: xr.DataArray, path: Path, *, band_dim: str | None, compress: str) -> None:
    out = da.astype(np.float32)
    names = None
    if band_dim is not None:
        names = [str(v) for v in da[band_dim].values] if band_dim in da.coords else None
        out = out.transpose(band_dim, "y", "x")
        if band_dim != "band":
            out = out.drop_vars(band_dim, errors="ignore").rename({band_dim: "band"})
    out = out.rio.write_nodata(np.nan, encoded=False)
    tags = _tags(da.attrs)
    out.attrs = {"long_name": tuple(names)} if names else {}  # rioxarray writes it as the band names
    out.rio.to_raster(path, driver="COG", compress=compress, tags=tags, RESAMPLING="AVERAGE")


def _class_cog(da: xr.DataArray, path: Path, *, colors: dict | None, compress: str) -> None:
    import rasterio
    from rasterio.shutil import copy as rio_copy

    values = [int(v) for v in da.attrs.get("flag_values", [])]
    names = str(da.attrs.get("flag_meanings", "")).split()
    src_nodata = da.attrs.get("nodata", da.rio.nodata)
    arr = np.asarray(da.values)
    valid = np.isfinite(arr) if np.issubdtype(arr.dtype, np.floating) else np.ones(arr.shape, bool)
    if src_nodata is not None:
        valid &= arr != src_nodata
    if not values:
        values = sorted({int(v) for v in np.unique(arr[valid])})
    present = values + ([] if valid.sum() == 0 else [int(v) for v in np.unique(arr[valid])])
    if all(0 <= v < CLASS_NODATA for v in present):
        dtype, nodata = "uint8", CLASS_NODATA
    elif all(0 <= v < CLASS_NODATA_16 for v in present):  # e.g. WorldCereal crop codes (1100, 1200…)
        dtype, nodata = "uint16", CLASS_NODATA_16
    else:
        raise ParameterError(
            f"Class values {sorted(v for v in set(present) if not 0 <= v < CLASS_NODATA_16)[:5]} do not fit a "
            "class map (0-65534). Map the classes to 0..K-1 first (predict_map does for string labels), or "
            "write kind='continuous'."
        )
    out = np.where(valid, arr, nodata).astype(dtype)
    cmap = {v: _rgb(PALETTE[i % len(PALETTE)]) for i, v in enumerate(values)}
    for key, c in (colors or {}).items():
        v = values[names.index(key)] if isinstance(key, str) and key in names else key
        if not isinstance(v, (int, np.integer)) or int(v) not in values:
            raise ParameterError(f"colors has {key!r}, which is not a class of the map (values {values}, "
                                 f"names {names}).")
        cmap[int(v)] = _rgb(c)
    cmap[nodata] = (0, 0, 0, 0)
    t = da.rio.transform()
    profile = dict(driver="GTiff", width=out.shape[1], height=out.shape[0], count=1, dtype=dtype,
                   crs=da.rio.crs, transform=t, nodata=nodata)
    tags = _tags(da.attrs)
    if names:
        tags["eoembed_classes"] = json.dumps(dict(zip(map(str, values), names)))
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        work = Path(tmp) / "class.tif"
        with rasterio.open(work, "w", **profile) as ds:
            ds.write(out, 1)
            ds.write_colormap(1, cmap)
            ds.update_tags(**tags)
            if names:
                ds.set_band_description(1, "class: " + ", ".join(f"{v}={n}" for v, n in zip(values, names)))
        rio_copy(work, path, driver="COG", compress=compress, RESAMPLING="NEAREST")


# --------------------------------------------------------------------------------------
# vectors
# --------------------------------------------------------------------------------------
def _as_gdf(obj, crs):
    gpd = require("geopandas", "search", "Writing GeoParquet/GeoJSON")
    if isinstance(obj, gpd.GeoDataFrame):
        if obj.crs is None:
            if crs is None:
                raise MissingCRSError("The GeoDataFrame has no CRS; set it (gdf.set_crs(...)) or pass crs=.")
            obj = obj.set_crs(crs)
        return obj
    import pandas as pd

    if isinstance(obj, pd.DataFrame) and {"x", "y"} <= set(obj.columns):
        if crs is None:
            raise MissingCRSError("A DataFrame of x/y needs crs= (the cube's CRS, e.g. emb.rio.crs).")
        return gpd.GeoDataFrame(obj, geometry=gpd.points_from_xy(obj["x"], obj["y"]), crs=crs)
    raise InputError(f"Expected a GeoDataFrame (hits, labels, matches) or a DataFrame with x/y columns, got "
                     f"{type(obj).__name__}.")


def _plain_columns(gdf):
    """Columns GeoJSON/Parquet can hold: numpy datetimes and objects as strings where needed."""
    out = gdf.copy()
    for c in out.columns:
        if c == out.geometry.name:
            continue
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: v if v is None or isinstance(v, (str, int, float, bool)) else str(v))
    return out


def to_geoparquet(gdf, path: str | os.PathLike, *, crs: Any = None, attrs: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Write hits/labels/matches as GeoParquet (with ``eoembed:*`` provenance in the file metadata).

    Parameters
    ----------
    gdf:
        A GeoDataFrame (``index.search`` hits, labels, matches) or a DataFrame with
        ``x``/``y`` columns (then ``crs=`` is required).
    path:
        Output ``.parquet``.
    crs:
        CRS for a DataFrame, or for a GeoDataFrame without one.
    attrs:
        Provenance to store (e.g. ``emb.attrs``); only ``eoembed:*`` keys are kept.
    overwrite:
        Replace an existing file.
    """
    require("pyarrow", "search", "Writing GeoParquet")
    import pyarrow.parquet as pq

    path = _prepare(path, overwrite)
    gdf = _plain_columns(_as_gdf(gdf, crs))
    tmp = path.with_name(path.name + ".partial")
    gdf.to_parquet(tmp, index=False)  # GeoParquet 1.x ('geo' metadata, WKB geometry)
    table = pq.read_table(tmp)
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in _tags(attrs or {}).items()})
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    tmp.replace(path)
    log.info("wrote %s (%d rows)", path, len(gdf))
    return path


def to_geojson(gdf, path: str | os.PathLike, *, crs: Any = None, overwrite: bool = False) -> Path:
    """Write hits/labels/matches as GeoJSON in EPSG:4326 (RFC 7946).

    Parameters are as for :func:`to_geoparquet`; coordinates are reprojected to
    longitude/latitude, as GeoJSON requires.
    """
    path = _prepare(path, overwrite)
    gdf = _plain_columns(_as_gdf(gdf, crs)).to_crs("EPSG:4326")
    tmp = path.with_name(path.name + ".partial")
    gdf.to_file(tmp, driver="GeoJSON")
    tmp.replace(path)
    log.info("wrote %s (%d features)", path, len(gdf))
    return path


# --------------------------------------------------------------------------------------
# the embedding cube
# --------------------------------------------------------------------------------------
def embeddings_to_cog(
    emb: xr.DataArray,
    path: str | os.PathLike,
    *,
    quantize: str | None = "int8",
    overwrite: bool = False,
    compress: str = "DEFLATE",
) -> Path:
    """Write an embedding cube as a Cloud-Optimized GeoTIFF, one band per embedding dim.

    ``quantize="int8"`` follows the AlphaEarth convention: each vector is scaled to
    unit length, then ``q = round(sign(v) * sqrt(|v|) * 127.5)`` (clipped to ±127),
    nodata ``-128`` in every band of a masked patch, bands named ``A00``, ``A01``…;
    overviews are nearest-neighbour (valid quantized vectors). Reading it back with
    :func:`eoembed.open_embeddings` de-quantizes (``sign(q) * (q/127.5)**2``) and
    renormalises. Measured on real embeddings (Galileo-Nano weights, ``patch_size=4``,
    the shared 1 km² WorldCereal sample: 625 patches × 128 dims): mean cosine between
    each (unit) vector and its int8 round trip 0.99993 (min 0.99989), i.e. a mean
    cosine error of 7.4e-5; the top-10 cosine neighbours of each patch agree at 99.1 %;
    the file is 0.12 MB against 0.32 MB of float32. Magnitudes are not kept (vectors
    come back unit length; eoembed's search uses cosine, few-shot standardised features).
    ``quantize=None`` writes float32 with nodata NaN, band names ``E000``….

    Parameters
    ----------
    emb:
        Embedding cube ``(embedding, y, x)`` (select one time of a per-time cube first).
    path:
        Output ``.tif``.
    quantize:
        ``"int8"`` or ``None``.
    overwrite, compress:
        Replace an existing file; GDAL compression.

    Returns
    -------
    pathlib.Path
    """
    from eoembed.cube import canonical

    emb = canonical(emb)
    if "time" in emb.dims:
        raise DimensionError(f"embeddings_to_cog writes one (embedding, y, x) cube; this one has {emb.sizes['time']} "
                             "timesteps. Select one (emb.isel(time=0)) or write each time to its own file.")
    if quantize not in ("int8", None):
        raise ParameterError(f"quantize={quantize!r}: use 'int8' (AlphaEarth convention) or None (float32).")
    if emb.rio.crs is None:
        raise MissingCRSError("The cube has no CRS; write one with emb.rio.write_crs(...).")
    if isinstance(emb.data, np.ndarray):  # a dask cube is not read twice just to check
        v = emb.transpose("embedding", ...).values.reshape(emb.sizes["embedding"], -1)
        if not (np.isfinite(v).all(axis=0) & (np.abs(np.nan_to_num(v)).sum(axis=0) > 0)).any():
            raise EmptyDataError(f"The cube's {v.shape[1]} patches hold no valid vector (all NaN or all zeros), so "
                                 "the file would be nodata only. Check the area and dates embedded, or the mask.")
    path = _prepare(path, overwrite)
    dim = emb.sizes["embedding"]
    attrs = {**emb.attrs, "eoembed:embedding_dim": int(dim)}
    data = emb.data
    if quantize == "int8":
        data = quantize_unit_int8(data, axis=0)  # eoembed.codecs: unit length, then the AlphaEarth rule
        names = [f"A{i:02d}" for i in range(dim)]
        nodata, dtype = ALPHAEARTH_NODATA, "int8"
        attrs["eoembed:quantization"] = ("int8, value = sign(q) * (|q|/127.5)**2, nodata -128, "
                                         "renormalised to unit length (AlphaEarth convention)")
        resampling = "NEAREST"
    else:
        names = [f"E{i:03d}" for i in range(dim)]
        nodata, dtype, resampling = np.nan, "float32", "AVERAGE"
        data = data.astype(np.float32)
    out = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": np.arange(1, dim + 1), "y": emb["y"].values,
                                                              "x": emb["x"].values})
    out = out.rio.write_crs(emb.rio.crs).rio.write_transform(emb.rio.transform())
    out = out.rio.write_nodata(nodata, encoded=False)
    out.attrs = {"long_name": tuple(names)}  # rioxarray writes it as the band names
    tags = _tags(attrs)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        work = Path(tmp) / "emb.tif"
        out.rio.to_raster(work, driver="COG", compress=compress, tags=tags, RESAMPLING=resampling, dtype=dtype,
                          BIGTIFF="IF_SAFER")
        shutil.move(work, path)
    log.info("wrote %s (%s, %d bands)", path, dtype, dim)
    return path
