"""Build a cube and a label raster from a labelled training extraction (WorldCereal style).

An extraction pipeline (openEO/GEE, as used for WorldCereal's training data) writes one
NetCDF per sensor and resolution for a small footprint, plus a label raster:

* ``S2_L2A_10m_*.nc`` — B02, B03, B04, B08 at 10 m, every acquisition (dim ``timestamp``);
* ``S2_L2A_20m_*.nc`` — B05, B06, B07, B8A, B11, B12 and ``SCL`` at 20 m;
* ``S1_GRD-*_20m_*.nc`` — VV, VH at 20 m, its own acquisition dates;
* ``OUTPUT_*.nc`` — labels (``CT`` crop type, ``LC`` land cover…), 0 = unlabelled.

Values are integers with a ``scale_factor`` attribute and a fill value. This module does
what a user must do before embedding: read each file as a ``(time, band, y, x)`` cube,
mask clouds with SCL, bring the 20 m bands onto the 10 m grid, and composite the
irregular acquisitions (monthly medians by default), reusing
:func:`eoembed.data._composite.scl_valid`, :func:`composite_periods` and
:func:`composite_median`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed.sensors import canonical_band
from eoembed.data._composite import (
    baseline_needs_offset,
    composite_median,
    composite_periods,
    harmonize_s2,
    scl_valid,
)
from eoembed.data._open import _from_dataset
from eoembed.exceptions import InputError, ParameterError

__all__ = [
    "DEFAULT_SCL_KEEP",
    "read_extraction",
    "align_to",
    "training_cube",
    "training_labels",
    "training_surface_temperature",
]

#: SCL classes kept as clear: 4 vegetation, 5 bare soil, 6 water, 7 unclassified, 11 snow/ice.
DEFAULT_SCL_KEEP: tuple[int, ...] = (4, 5, 6, 7, 11)

_TIME_DIMS = ("timestamp", "t", "time")
_FILES = {
    "s2_10m": "S2_L2A_10m_*.nc",
    "s2_20m": "S2_L2A_20m_*.nc",
    "s1": "S1_GRD*_*.nc",
    "labels": "OUTPUT_*.nc",
    "l8_st": "L8_L2-ST_*.nc",
}

#: Landsat Collection-2 ``QA_PIXEL`` bits that make an observation unusable: 0 fill, 1 dilated cloud,
#: 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow (bit 6 "clear" must be set).
QA_BAD_BITS = 0b111111
QA_CLEAR_BIT = 6


def _find(folder: Path, key: str, *, required: bool = True) -> Path | None:
    hits = sorted(glob.glob(str(folder / _FILES[key])))
    if len(hits) > 1:
        raise InputError(
            f"{len(hits)} files match {_FILES[key]!r} in {folder}: {[Path(h).name for h in hits]}. "
            "Keep one extraction (one location) per folder."
        )
    if not hits:
        if required:
            raise InputError(
                f"No file matching {_FILES[key]!r} in {folder} (files there: "
                f"{sorted(p.name for p in folder.iterdir()) if folder.is_dir() else 'none, not a folder'}). "
                "Point to the folder of one training extraction (S2_L2A_10m_*.nc, S2_L2A_20m_*.nc, "
                "S1_GRD-*_*.nc, OUTPUT_*.nc)."
            )
        return None
    return Path(hits[0])


def _s1_to_db(values: xr.DataArray, scale: float, source: str) -> xr.DataArray:
    """Scaled Sentinel-1 values → dB, checking which unit the file actually holds."""
    db = values * np.float32(scale)
    finite = db.values[np.isfinite(db.values)] if db.size else np.array([])
    if finite.size == 0:
        return db
    med = float(np.median(finite))
    if -45.0 <= med <= 5.0 and (finite < 0).mean() > 0.5:
        return db  # already decibels (typical VV around -10 dB, VH around -17 dB)
    if 0.0 < med < 1.0 and (finite >= 0).all():
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10.0 * np.log10(db.where(db > 0))  # linear power
    raise InputError(
        f"{source}: Sentinel-1 values scaled by {scale:g} have median {med:.4g}, which is neither dB "
        "(about -45…5) nor linear power (0…1). Convert the backscatter to dB yourself and build the cube "
        "with eoembed.data.align_to and composite_median."
    )


def read_extraction(path, *, keep_extra: bool = False) -> xr.DataArray:
    """Read one extraction NetCDF as a ``(time, band, y, x)`` float32 cube.

    Parameters
    ----------
    path:
        A NetCDF written by an extraction pipeline: one variable per band with dims
        ``(timestamp|t|time, y, x)``, integer values with a ``scale_factor`` attribute
        and a ``_FillValue``, CRS in a grid-mapping variable.
    keep_extra:
        Also keep variables that are not bands (``SCL``, …) as extra ``band`` labels.

    Returns
    -------
    xarray.DataArray
        float32, NaN where the value is the fill value. Sentinel-2 stays in DN
        (reflectance × 10 000, what ``eoembed.embed`` expects); Sentinel-1 is
        converted to dB (``eoembed:s1_units`` = ``"dB"``). CRS written; ``time`` from
        the file's time dimension.

    Raises
    ------
    InputError
        Missing file, no time dimension, or Sentinel-1 in an unrecognised unit.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    ds = xr.open_dataset(path, mask_and_scale=False)
    tdim = next((d for d in _TIME_DIMS if d in ds.dims), None)
    if tdim is None:
        raise InputError(
            f"{path.name} has no time dimension (looked for {list(_TIME_DIMS)}; dims are {dict(ds.sizes)}). "
            "For a single-date raster use eoembed.data.open_cube."
        )
    ds = ds.rename({tdim: "time"}) if tdim != "time" else ds
    out = {}
    for var, da in ds.data_vars.items():
        if set(da.dims) != {"time", "y", "x"}:
            continue
        fill = da.attrs.get("_FillValue")
        vals = da.astype("float32")
        if fill is not None:
            vals = vals.where(da != fill)
        mapped = canonical_band(var)
        scale = float(da.attrs.get("scale_factor", 1.0))
        if mapped is not None and mapped[0] == "sentinel1":
            vals = _s1_to_db(vals, scale, path.name).astype("float32")
        elif mapped is None and not keep_extra:
            continue
        vals.attrs = {}
        out[var] = vals
    if not out:
        raise InputError(f"{path.name}: no (time, y, x) band variable found (variables: {list(ds.data_vars)}).")
    cube = _from_dataset(xr.Dataset(out, coords={"spatial_ref": ds["spatial_ref"]} if "spatial_ref" in ds else None),
                         nodata=None, keep_extra=keep_extra, source=str(path))
    return cube


def align_to(src: xr.DataArray, like: xr.DataArray) -> xr.DataArray:
    """Put ``src`` on the ``y``/``x`` grid of ``like`` by nearest neighbour (e.g. 20 m → 10 m).

    Both must share a CRS (reproject first with ``src.rio.reproject_match(like)`` if not).
    A target pixel whose centre is more than half a source pixel outside ``src`` is NaN.

    Returns
    -------
    xarray.DataArray
        ``src`` values on ``like``'s ``y``, ``x`` coordinates; other dims unchanged;
        CRS and transform of ``like``.
    """
    if src.rio.crs is None or like.rio.crs is None or src.rio.crs != like.rio.crs:
        raise InputError(
            f"align_to needs both cubes in one CRS (got {src.rio.crs} and {like.rio.crs}); reproject "
            "first: src.rio.reproject_match(like, resampling=Resampling.nearest)."
        )
    rx, ry = (abs(float(r)) for r in src.rio.resolution())
    out = src.reindex(x=like["x"].values, method="nearest", tolerance=rx / 2 + 1e-6)
    out = out.reindex(y=like["y"].values, method="nearest", tolerance=ry / 2 + 1e-6)
    return out.rio.write_crs(like.rio.crs).rio.write_transform(like.rio.transform())


def _scl_mask(scl: xr.DataArray, keep: Iterable[int]) -> xr.DataArray:
    keep = {int(k) for k in keep}
    if not keep:
        raise ParameterError("scl_keep is empty: every pixel would be masked. Keep at least class 4 (vegetation).")
    bad = [c for c in range(256) if c not in keep]
    return scl_valid(scl, mask_classes=bad)


def training_cube(
    folder,
    *,
    composite: str = "monthly",
    start=None,
    end=None,
    scl_keep: Iterable[int] = DEFAULT_SCL_KEEP,
    sentinel1: bool = True,
    harmonize: bool = False,
) -> xr.DataArray:
    """The composited ``(time, band, y, x)`` cube of one training extraction, on the 10 m grid.

    Steps: read the 10 m and 20 m Sentinel-2 files (:func:`read_extraction`); bring the
    20 m bands and SCL onto the 10 m grid (:func:`align_to`, nearest); mask every band
    where SCL is not in ``scl_keep``; composite each period's clear pixels by median
    (:func:`composite_median`); the same for Sentinel-1 (no cloud mask) if asked.

    Parameters
    ----------
    folder:
        Folder holding one extraction (``S2_L2A_10m_*.nc``, ``S2_L2A_20m_*.nc``,
        optionally ``S1_GRD*_*.nc``).
    composite:
        ``"monthly"`` (default), ``"seasonal"`` or a pandas frequency (``"16D"``).
    start, end:
        Time range of the composites (default: the files' ``start_date``/``end_date``
        attrs, else the first/last acquisition).
    scl_keep:
        SCL classes treated as clear (default 4, 5, 6, 7, 11).
    sentinel1:
        Add VV/VH (dB) composites when the folder has a Sentinel-1 file.
    harmonize:
        Subtract the +1000 DN offset from scenes acquired from 2022-01-25 (processing
        baseline 04.00). Leave False for collections that are already harmonized.

    Returns
    -------
    xarray.DataArray
        float32 ``(time, band, y, x)``; the 10 m bands, then the 20 m bands, as
        named in the files (DN), [+ vh, vv (dB)]; one timestep per period (middle day); NaN where no clear
        observation; coords ``eoembed:n_scenes`` (scenes per period) and
        ``eoembed:clear_fraction`` (share of clear S2 pixel-observations per period);
        CRS written.
    """
    folder = Path(os.fspath(folder))
    f10, f20 = _find(folder, "s2_10m"), _find(folder, "s2_20m")
    s10 = read_extraction(f10)
    s20 = read_extraction(f20, keep_extra=True)
    if "SCL" not in s20["band"].values:
        raise InputError(f"{f20.name} has no SCL variable; it is needed for the cloud mask.")
    common = np.intersect1d(s10["time"].values, s20["time"].values)
    if len(common) == 0:
        raise InputError(f"{f10.name} and {f20.name} share no acquisition time; are they the same extraction?")
    s10, s20 = s10.sel(time=common), s20.sel(time=common)
    s20 = align_to(s20, s10)
    scl = s20.sel(band="SCL", drop=True)
    s20 = s20.drop_sel(band="SCL")
    s2 = xr.concat([s10, s20], dim="band", coords="minimal", compat="override", join="override")
    if harmonize:
        s2 = harmonize_s2(s2, baseline_needs_offset([None] * s2.sizes["time"], s2["time"].values))
    clear = _scl_mask(scl, scl_keep)
    s2 = s2.where(clear)
    attrs = xr.open_dataset(f10, mask_and_scale=False).attrs
    t0 = pd.Timestamp(start if start is not None else attrs.get("start_date", s2["time"].values.min()))
    t1 = pd.Timestamp(end if end is not None else attrs.get("end_date", s2["time"].values.max()))
    if t1 < t0:
        raise ParameterError(f"end ({t1.date()}) is before start ({t0.date()}).")
    periods = composite_periods(composite, t0.floor("D"), t1.floor("D") + pd.Timedelta("1D") - pd.Timedelta(1, "ns"))
    times = pd.to_datetime(s2["time"].values)
    frac = []
    for p in periods:
        sel = (times >= p.start) & (times <= p.end)
        frac.append(float(clear.isel(time=np.flatnonzero(sel)).mean()) if sel.any() else 0.0)
    out = composite_median(s2.rio.write_crs(s10.rio.crs), periods)
    parts = [out]
    f1 = _find(folder, "s1", required=False) if sentinel1 else None
    if f1 is not None:
        s1 = composite_median(read_extraction(f1), periods)
        parts.append(align_to(s1, s10).drop_vars([c for c in s1.coords if c.startswith("eoembed:")]))
    cube = xr.concat(parts, dim="band", coords="minimal", compat="override", join="override") if len(parts) > 1 \
        else out
    cube = cube.assign_coords({"eoembed:clear_fraction": ("time", np.asarray(frac, np.float32))})
    cube.name = "reflectance"
    cube.attrs = {
        "source": str(folder),
        "eoembed:composite": str(composite),
        "eoembed:scl_keep": [int(k) for k in sorted(set(scl_keep))],
    }
    if f1 is not None:
        cube.attrs["eoembed:s1_units"] = "dB"
    return cube.astype("float32").rio.write_crs(s10.rio.crs).rio.write_transform(s10.rio.transform())


def training_labels(folder, *, variable: str = "CT") -> xr.DataArray:
    """The label raster ``(y, x)`` of a training extraction (``OUTPUT_*.nc``).

    Parameters
    ----------
    folder:
        Folder holding one ``OUTPUT_*.nc``.
    variable:
        ``"CT"`` (crop type, WorldCereal legend; default), ``"LC"`` (land cover) or
        another variable of the file.

    Returns
    -------
    xarray.DataArray
        int32 codes, 0 = unlabelled, written as ``rio.nodata`` (so
        :func:`eoembed.classify.fewshot` skips it); CRS and transform written.
    """
    folder = Path(os.fspath(folder))
    path = _find(folder, "labels")
    ds = xr.open_dataset(path, mask_and_scale=False)
    if variable not in ds.data_vars:
        raise InputError(f"{path.name} has no variable {variable!r}; it has {list(ds.data_vars)}.")
    da = ds[variable]
    fill = int(da.attrs.get("_FillValue", ds.attrs.get("NoData", 0)))
    crs = ds.rio.crs
    if crs is None and "epsg" in ds.attrs:
        crs = f"EPSG:{int(ds.attrs['epsg'])}"
    out = da.astype("int32")
    out.attrs = {"source": str(path), "long_name": variable}
    out = out.rio.write_crs(crs).rio.write_transform(out.rio.transform(recalc=True))
    return out.rio.write_nodata(fill)


#: WorldCereal crop-type legend (the ``CT`` codes of WorldCereal training extractions): the
#: groups (``x000``), their main classes and the classes of European field crops. Source: the
#: WorldCereal Reference Data Module's legend, github.com/WorldCereal/ewoc_rdm_web,
#: ``src/utils/Legends.ts`` (``CropTypes``, commit 81c553e6). Codes nest by digits: ``1110``
#: (winter wheat) is a ``1100`` (wheat), which is a ``1000`` (cereal).
CROP_TYPES: dict[int, str] = {
    1000: "Cereals", 1100: "Wheat", 1110: "Winter wheat", 1120: "Spring wheat", 1200: "Maize", 1300: "Rice",
    1400: "Sorghum", 1500: "Barley", 1510: "Winter barley", 1520: "Spring barley", 1600: "Rye", 1610: "Winter rye",
    1620: "Spring rye", 1700: "Oats", 1800: "Millets", 1900: "Other cereals", 1910: "Winter cereal",
    1920: "Spring cereal",
    2000: "Vegetables and melons", 2100: "Leafy or stem vegetables", 2200: "Fruit-bearing vegetables",
    2300: "Root vegetables", 2900: "Other vegetables",
    3000: "Fruit and nuts", 3300: "Grapes", 3400: "Berries", 3500: "Pome fruits and stone fruits", 3600: "Nuts",
    4000: "Oilseed crops", 4100: "Soya beans", 4200: "Groundnuts", 4300: "Temporary oilseed crops",
    4350: "Rapeseed", 4351: "Winter rapeseed", 4352: "Spring rapeseed", 4380: "Sunflower",
    5000: "Root/tuber crops", 5100: "Potatoes", 5200: "Sweet potatoes", 5300: "Cassava",
    6000: "Beverage and spice crops",
    7000: "Leguminous crops", 7100: "Beans", 7200: "Broad beans", 7700: "Peas",
    8000: "Sugar crops", 8100: "Sugar beet", 8200: "Sugar cane",
    9000: "Other crops", 9100: "Grasses and other fodder crops", 9110: "Temporary grass crops",
    9120: "Permanent grass crops", 9200: "Fibre crops", 9213: "Flax, hemp and similar", 9500: "Flower crops",
    9600: "Tobacco", 9700: "Alfalfa", 9998: "Mixed cropping",
}


def crop_type_names(codes: Iterable) -> dict[int, str]:
    """Names of WorldCereal crop-type codes (``CT``), e.g. for legends and confusion matrices.

    Parameters
    ----------
    codes:
        Integer crop-type codes (numpy integers and whole floats accepted).

    Returns
    -------
    dict
        ``{code: name}`` in the order given, from :data:`CROP_TYPES`. ``0`` is
        ``"unlabelled"``; a code missing from the table is named after its nearest listed
        group, with the code (``9130`` → ``"Grasses and other fodder crops (9130)"``).

    Raises
    ------
    ParameterError
        A code that is not a non-negative whole number, or is not a 4-digit code of the
        legend's groups 1000–9999.
    """
    out: dict[int, str] = {}
    for c in codes:
        try:
            f = float(c)
        except (TypeError, ValueError):
            f = float("nan")
        if not np.isfinite(f) or f != int(f) or f < 0:
            raise ParameterError(f"crop-type codes are non-negative whole numbers (WorldCereal legend, e.g. 1110); "
                                 f"got {c!r}")
        code = int(f)
        if code == 0:
            out[code] = "unlabelled"
            continue
        if not 1000 <= code <= 9999:
            raise ParameterError(f"crop-type code {code} is not in the WorldCereal legend (4-digit codes 1000–9999, "
                                 "e.g. 1110 winter wheat); is this the CT variable of a WorldCereal extraction?")
        parent = next((p for p in (code, code // 10 * 10, code // 100 * 100, code // 1000 * 1000)
                       if p in CROP_TYPES), None)
        out[code] = CROP_TYPES[parent] if parent == code else f"{CROP_TYPES[parent]} ({code})"
    return out


def training_surface_temperature(folder, *, start=None, end=None, min_clear: int = 3) -> xr.DataArray:
    """Clear-sky mean Landsat 8 surface temperature (kelvin) of a training extraction, ``(y, x)``.

    Reads ``L8_L2-ST_*.nc`` (``ST-B10`` in kelvin, ``QA-PIXEL`` Landsat Collection-2 bit
    flags, dim ``timestamp``). An observation counts as clear when ``QA-PIXEL`` has bit 6
    ("clear") set and bits 0–5 (fill, dilated cloud, cirrus, cloud, cloud shadow, snow)
    unset, and ``ST-B10`` is not the fill value. Each pixel's target is the mean of its
    clear observations between ``start`` and ``end``; pixels with fewer than
    ``min_clear`` clear observations are NaN.

    Parameters
    ----------
    folder:
        Folder holding one ``L8_L2-ST_*.nc``.
    start, end:
        Inclusive date range (default: every acquisition in the file).
    min_clear:
        Clear observations a pixel needs (>= 1).

    Returns
    -------
    xarray.DataArray
        float64 ``(y, x)`` in kelvin on the file's grid, CRS and transform written, NaN
        where fewer than ``min_clear`` clear observations; attrs ``units`` (``"K"``),
        ``long_name``, ``source``, ``eoembed:acquisitions`` (acquisitions in the range),
        ``eoembed:clear_obs_median`` (median clear observations per pixel),
        ``eoembed:min_clear``, ``eoembed:period``. Landsat's thermal band is ~100 m
        native, resampled in the file: neighbouring pixels are not independent.

    Raises
    ------
    InputError
        No ``L8_L2-ST_*.nc`` (or more than one) in ``folder``, a file without
        ``ST-B10``/``QA-PIXEL`` or a CRS, or no pixel with ``min_clear`` clear observations.
    ParameterError
        ``min_clear`` not an integer >= 1, or ``end`` before ``start``.
    """
    if isinstance(min_clear, (bool, np.bool_)) or not isinstance(min_clear, (int, np.integer)) or min_clear < 1:
        raise ParameterError(f"min_clear must be an integer >= 1 (clear observations per pixel), got {min_clear!r}.")
    folder = Path(os.fspath(folder))
    path = _find(folder, "l8_st")
    ds = xr.open_dataset(path, mask_and_scale=False)
    missing = [v for v in ("ST-B10", "QA-PIXEL") if v not in ds.data_vars]
    tdim = next((d for d in _TIME_DIMS if d in ds.dims), None)
    if missing or tdim is None:
        raise InputError(f"{path.name} needs variables 'ST-B10' and 'QA-PIXEL' over a time dimension "
                         f"(variables: {list(ds.data_vars)}, dims: {dict(ds.sizes)}). Is it a Landsat "
                         "Collection-2 surface-temperature extraction?")
    st, qa = ds["ST-B10"], ds["QA-PIXEL"].astype("int64")
    fill = st.attrs.get("_FillValue", 0)
    scale = float(st.attrs.get("scale_factor", 1.0))
    offset = float(st.attrs.get("add_offset", 0.0))
    clear = (((qa >> QA_CLEAR_BIT) & 1) == 1) & ((qa & QA_BAD_BITS) == 0) & (st != fill)
    times = pd.to_datetime(np.asarray(ds[tdim].values).astype(str) if ds[tdim].dtype.kind in "US"
                           else ds[tdim].values)
    t0 = pd.Timestamp(start) if start is not None else times.min()
    t1 = pd.Timestamp(end) if end is not None else times.max()
    if t1 < t0:
        raise ParameterError(f"end ({t1.date()}) is before start ({t0.date()}).")
    sel = np.flatnonzero((times >= t0) & (times <= t1 + pd.Timedelta("1D") - pd.Timedelta(1, "ns")))
    kelvin = (st.astype("float64") * scale + offset).isel({tdim: sel})
    clear = clear.isel({tdim: sel})
    n = clear.sum(tdim)
    out = kelvin.where(clear).mean(tdim).where(n >= min_clear)
    if not bool(out.notnull().any()):
        raise InputError(f"{path.name}: no pixel has {min_clear} clear observations between {t0.date()} and "
                         f"{t1.date()} ({len(sel)} acquisitions). Widen the date range or lower min_clear.")
    crs = ds.rio.crs
    if crs is None and "spatial_ref" in ds.variables:
        crs = ds["spatial_ref"].attrs.get("crs_wkt") or ds["spatial_ref"].attrs.get("spatial_ref")
    if crs is None and "epsg" in ds.attrs:
        crs = f"EPSG:{int(ds.attrs['epsg'])}"
    if crs is None:
        raise InputError(f"{path.name} has no CRS (no grid-mapping variable, no 'epsg' attribute); write one "
                         "with ds.rio.write_crs(...) and save the file again.")
    out = out.transpose("y", "x")
    out.name = "surface_temperature"
    out.attrs = {"units": "K", "long_name": f"Landsat 8 surface temperature, clear-sky mean "
                                            f"{t0.date()}..{t1.date()}",
                 "source": str(path), "eoembed:acquisitions": int(len(sel)),
                 "eoembed:clear_obs_median": float(n.median()), "eoembed:min_clear": int(min_clear),
                 "eoembed:period": [str(t0.date()), str(t1.date())]}
    out = out.drop_vars([c for c in out.coords if c not in ("y", "x")])
    return out.rio.write_crs(crs).rio.write_transform(out.rio.transform(recalc=True))
