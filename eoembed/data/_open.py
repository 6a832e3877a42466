"""Open cubes written by others (openEO NetCDF, Zarr, GeoTIFF stacks) in canonical form."""

from __future__ import annotations

import glob
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed.sensors import canonical_band
from eoembed.exceptions import DimensionError, InputError, MissingCRSError

# openEO/WorldCereal store Sentinel-1 backscatter as uint16 DN = 10 ** ((dB + 83) / 20).
_S1_DN_OFFSET_DB = 83.0


def _worldcereal_s1_to_db(values: xr.DataArray) -> xr.DataArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 20.0 * np.log10(values.where(values > 0)) - _S1_DN_OFFSET_DB


def _crs_from_grid_mapping(ds: xr.Dataset, var: str):
    gm = ds[var].attrs.get("grid_mapping") or ds[var].encoding.get("grid_mapping")
    for name in [gm, "crs", "spatial_ref"]:
        if name and name in ds.variables:
            attrs = ds[name].attrs
            for key in ("crs_wkt", "spatial_ref"):
                if key in attrs:
                    return attrs[key]
    return None


def _from_dataset(ds: xr.Dataset, *, nodata, keep_extra: bool, source: str) -> xr.DataArray:
    ds = ds.rename({d: "time" for d in ("t",) if d in ds.dims})
    names, labels, s1 = [], [], []
    for var, da in ds.data_vars.items():
        if not {"y", "x"} <= set(da.dims):
            continue
        mapped = canonical_band(var)
        if mapped is None and not keep_extra:
            continue
        names.append(var)
        labels.append(mapped[1] if mapped else str(var))
        if mapped and mapped[0] == "sentinel1":
            s1.append(var)
    if not names:
        spatial = [v for v, da in ds.data_vars.items() if {"y", "x"} <= set(da.dims)]
        if not spatial:
            dims = sorted({str(d) for da in ds.data_vars.values() for d in da.dims})
            geo = {"lat", "lon", "latitude", "longitude"} & set(dims)
            hint = (f" Its grid is geographic ({sorted(geo)}, degrees): reproject it to a projected CRS in metres "
                    "first, e.g. da = ds[name].rio.set_spatial_dims(x_dim='lon', y_dim='lat').rio.write_crs(4326); "
                    "da.rio.reproject(da.rio.estimate_utm_crs(), resolution=10), then save and open that."
                    if geo else " Rename the spatial dims to y/x (ds.rename({'rows': 'y', 'cols': 'x'})).")
            raise DimensionError(
                f"{source}: no variable has y/x dims (variables: {list(ds.data_vars)}, dims: {dims}).{hint}"
            )
        raise DimensionError(
            f"{source}: no variable with y/x dims is a band eoembed recognises (variables: "
            f"{list(ds.data_vars)}). Rename them to band names (B02…B12, vv, vh), or pass keep_extra=True "
            "to keep them as they are (then map them with embed(..., bands={'name': 'B04'}))."
        )
    crs = ds.rio.crs or _crs_from_grid_mapping(ds, names[0])
    planes = []
    for var in names:
        da = ds[var]
        nd = nodata
        if nd == "auto":
            nd = da.attrs.get("_FillValue", da.encoding.get("_FillValue"))
            if nd is None and da.encoding.get("_Unsigned") == "true":
                nd = np.iinfo(da.dtype).max if np.issubdtype(da.dtype, np.integer) else None
            if nd is None and da.dtype == np.uint16:
                nd = 65535
        da = da.astype("float32")
        if nd is not None:
            da = da.where(da != float(nd))
        if var in s1 and np.issubdtype(ds[var].dtype, np.integer):
            da = _worldcereal_s1_to_db(da).astype("float32")
        planes.append(da.drop_vars([c for c in da.coords if c not in da.dims]))
    cube = xr.concat(planes, dim=pd.Index(labels, name="band"))
    if "time" not in cube.dims:
        cube = cube.expand_dims("time")
    cube = cube.transpose("time", "band", "y", "x")
    cube.name = "reflectance"
    cube.attrs = {"source": str(source)}
    if s1:
        cube.attrs["eoembed:s1_units"] = "dB"
    if crs is None:
        raise MissingCRSError(
            f"{source} has no CRS (no grid_mapping/spatial_ref). Open it and set one with "
            ".rio.write_crs('EPSG:xxxx')."
        )
    return cube.rio.write_crs(crs).rio.write_transform(cube.rio.transform(recalc=True))


def _from_tiffs(paths: list[str], *, times, nodata, chunks) -> xr.DataArray:
    arrays = []
    for p in paths:
        da = rioxarray.open_rasterio(p, masked=nodata == "auto", chunks=chunks)
        desc = da.attrs.get("long_name")
        if isinstance(desc, (list, tuple)) and len(desc) == da.sizes["band"]:
            da = da.assign_coords(band=[str(d) for d in desc])
        elif isinstance(desc, str) and da.sizes["band"] == 1:
            da = da.assign_coords(band=[desc])
        if nodata not in ("auto", None):
            da = da.where(da != nodata)
        arrays.append(da.astype("float32"))
    if times is None:
        found = [re.search(r"(\d{4}-?\d{2}-?\d{2})", Path(p).name) for p in paths]
        times = [pd.Timestamp(m.group(1)) for m in found] if all(found) else None
    if times is None and len(paths) > 1:
        raise InputError(
            f"{len(paths)} GeoTIFFs but no dates: put a YYYY-MM-DD date in each file name or "
            "pass times=[...] to open_cube."
        )
    cube = xr.concat(arrays, dim="time") if len(arrays) > 1 else arrays[0].expand_dims("time")
    if times is not None:
        cube = cube.assign_coords(time=pd.DatetimeIndex(times))
    cube = cube.drop_vars([c for c in cube.coords if c not in ("time", "band", "y", "x", "spatial_ref")])
    return cube.transpose("time", "band", "y", "x")


def open_cube(path, *, nodata="auto", keep_extra: bool = False, chunks=None, times=None) -> xr.DataArray:
    """Open a cube file (or files) as a ``(time, band, y, x)`` DataArray.

    Parameters
    ----------
    path:
        A NetCDF file (openEO style: one variable per band, CF grid mapping, ``t`` dim),
        a Zarr store (an embedding or input cube written with ``to_zarr``), a GeoTIFF/COG,
        or a list/glob of GeoTIFFs (one per timestep, dated by ``times`` or by a
        ``YYYY-MM-DD`` in the file name).
    nodata:
        ``"auto"``: the declared ``_FillValue``/nodata, or 65535 for unsigned 16-bit
        openEO bands; a number; or None for none.
    keep_extra:
        Keep variables that are not bands eoembed recognises (slope, elevation…).
    chunks:
        Passed to xarray/rioxarray; ``None`` reads eagerly, ``{}`` or a dict gives dask.
    times:
        Dates of the GeoTIFFs when their names carry none.

    Returns
    -------
    xarray.DataArray
        float32, NaN for nodata, band labels canonical (``B02``, ``vv``…), CRS written.
        Sentinel-1 stored as openEO/WorldCereal uint16 is converted to dB
        (``20·log10(DN) − 83``).
    """
    if isinstance(path, (list, tuple)):
        paths = [str(p) for p in path]
    else:
        path = os.fspath(path)
        paths = sorted(glob.glob(path)) if any(ch in path for ch in "*?[") else [path]
    if not paths:
        raise InputError(f"no files match {path!r}")
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"{p} does not exist")
        if os.path.isfile(p) and os.path.getsize(p) == 0:
            raise InputError(f"{p} is empty (0 bytes): a download or write that did not finish. Fetch or write "
                             "it again.")
    first = paths[0]
    suffix = Path(first).suffix.lower()
    if suffix in (".tif", ".tiff", ".vrt", ".jp2"):
        try:
            return _from_tiffs(paths, times=times, nodata=nodata, chunks=chunks)
        except (OSError, ValueError) as err:  # rasterio's RasterioIOError is an OSError
            if isinstance(err, InputError):
                raise
            raise InputError(f"{first}: cannot be read as a GeoTIFF/COG ({type(err).__name__}: {err}). Check "
                             "that the file is complete (re-download it) and is a raster.") from err
    if len(paths) > 1:
        raise InputError("several files are only supported for GeoTIFF stacks")
    if suffix == ".zarr" or os.path.isdir(first):
        try:
            with warnings.catch_warnings():  # a store without consolidated metadata (eoembed's own streamed
                # stores, many others) is read fine without it; xarray's note says only that it looked first
                warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
                ds = xr.open_zarr(first, chunks=chunks, decode_coords="all")
        except Exception as err:  # noqa: BLE001  (zarr raises many types for a folder that is no store)
            raise InputError(
                f"{first} is not a readable Zarr store ({type(err).__name__}: {err}); an empty folder, or a "
                "write that did not finish. Point to the store folder itself (the one holding zarr.json or "
                ".zgroup), or write it again."
            ) from err
        arrays = [v for v in ds.data_vars.values() if {"band", "y", "x"} <= set(v.dims)]
        if len(arrays) == 1:
            cube = arrays[0]
            if cube.rio.crs is None and ds.rio.crs is not None:
                cube = cube.rio.write_crs(ds.rio.crs)
            if "time" not in cube.dims:
                cube = cube.expand_dims("time")
            return cube.transpose("time", "band", "y", "x")
        return _from_dataset(ds, nodata=nodata, keep_extra=keep_extra, source=first)
    try:
        ds = xr.open_dataset(first, chunks=chunks, mask_and_scale=True)
    except (OSError, ValueError) as err:
        with open(first, "rb") as fh:
            head = fh.read(8)
        raise InputError(
            f"{first} is not a file eoembed can open (no reader recognises it; it starts with {head!r}). "
            "open_cube reads NetCDF (.nc), Zarr folders and GeoTIFF/COG "
            "(.tif): check the path and that the file is complete, or convert it (e.g. gdal_translate -of GTiff)."
        ) from err
    return _from_dataset(ds, nodata=nodata, keep_extra=keep_extra, source=first)
