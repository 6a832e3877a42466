"""One place that checks an input cube before any work is done.

Every entry point that embeds or costs an input cube (:func:`eoembed.embed`,
:func:`eoembed.embed_cost`, ``eoembed embed`` / ``eoembed cost``) goes through
:func:`as_cube` and :func:`check_crs` here, so they all give the same answer for the
same cube. The explorer's true-colour layer (a picture, so 8-bit cubes are fine there)
takes the grid rule (:func:`check_spacing`), and :func:`check_embedding_grid` does the
grid part for embedding cubes (few-shot, explorer). What is checked:

* **structure** — dims ``(time, band, y, x)``; a Dataset with one variable per band is
  stacked, after checking its bands agree on dtype and scale (:func:`check_dataset_bands`);
* **grid** — ``x``/``y`` monotonic and evenly spaced (:func:`check_spacing`; south-up
  and descending ``x`` are fine, a cube stitched from two crops is not);
* **time** — dates parsable, time zones converted to UTC, ``NaT`` refused, unsorted
  times sorted with a warning (:func:`check_time`);
* **dtype** — 8-bit quick-looks, booleans, complex numbers refused (:func:`check_dtype`);
* **values** — bands without a single valid pixel, and Sentinel-2 bands on different
  reflectance scales, refused (:func:`check_band_values`);
* **CRS** — present, projected, in metres; square pixels; the *ground* sampling
  (the CRS scale factor at the cube's centre applied, e.g. Web Mercator away from the
  equator) compared with the model's resolution (:func:`check_crs`);
* **options** — tile size and halo (:func:`check_options`).
* **opening stores and products** — the format name, the path, a georeferencing
  ``transform`` (:func:`check_open_options`, :func:`check_transform`), a file that is not
  the format given (:func:`check_format_matches`, :func:`check_npy_array`), a
  channels-first TESSERA tile (:func:`check_tessera_tile`), tables with no row or no
  vector (:func:`check_rows`, :func:`check_some_vector`), a query row past the end
  (:func:`check_row`), an output folder that cannot be written (:func:`check_writable`).
* **the newer surfaces** (issue 27) — hand-edited explorer session files
  (:func:`check_session`), pyramid manifests (:func:`check_pyramid_manifest`), a
  probability map written as a class map (:func:`check_class_map_values`), query vectors
  of the wrong dimension or all NaN (:func:`check_query_vectors`), FAISS keys FAISS
  refuses (:func:`check_faiss_key`), ``k`` (:func:`check_top_k`), TESSERA scales of the
  wrong shape (:func:`check_tessera_scales`).

Legitimate inputs keep working: south-up cubes, descending ``x``, float16, ±inf or NaN
as missing values, dask arrays (values are only sampled).
"""

from __future__ import annotations

import functools
import math
import threading
import warnings

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed.exceptions import (
    CoordinateError,
    DimensionError,
    EmptyDataError,
    GeographicCRSError,
    InputError,
    MissingCRSError,
    ParameterError,
    ScaleError,
    TimeCoordinateError,
    TransformError,
    user_stacklevel,
)

__all__ = [
    "as_cube", "check_band_values", "check_crs", "check_dataset_bands", "check_dtype", "check_embedding_grid",
    "check_format_matches", "check_npy_array", "check_open_options", "check_options", "check_row", "check_rows",
    "check_some_vector", "check_spacing", "check_tessera_tile", "check_time", "check_transform", "check_writable",
    "ground_scale", "validate_cube", "check_session", "check_pyramid_manifest", "check_class_map_values",
    "check_query_vectors", "check_faiss_key", "check_top_k", "check_tessera_scales", "check_pyramid_source",
    "check_has_crs",
]  # fmt: skip

#: Largest departure of one coordinate step from the mean step, as a fraction of the step.
SPACING_RTOL = 1e-3
#: CRS scale factors closer to 1 than this are taken as exactly 1 (UTM: at most ~1.001 in its zone).
SCALE_RTOL = 0.01
#: Relative difference between ground pixel size and the model's resolution that is warned about.
RESOLUTION_RTOL = 0.1


# --- structure ------------------------------------------------------------------------
def _modality(label) -> str | None:
    from eoembed.sensors import canonical_band

    found = canonical_band(str(label))
    return found[0] if found else None


def check_dataset_bands(ds: xr.Dataset, names: list) -> None:
    """Refuse a Dataset whose bands of one sensor have different dtypes or scales.

    Stacking such bands casts them to one dtype, and one reflectance scale would then be
    applied to all: uint16 DN next to float 0–1 reflectance gives nonsense for half the
    bands. Bands of different sensors (Sentinel-2 DN next to Sentinel-1 dB) may differ.

    Raises
    ------
    ScaleError
        Mixed integer/float dtypes, or different ``scale_factor``/``add_offset`` attrs
        (still to be applied) within one sensor's bands; 8-bit bands.
    """
    groups: dict[str, dict[str, xr.DataArray]] = {}
    for n in names:
        groups.setdefault(_modality(n) or "other", {})[str(n)] = ds[n]
    for name, da in ((str(n), ds[n]) for n in names):
        if da.dtype in (np.uint8, np.int8):
            raise ScaleError(_eight_bit_message(da.dtype, f"band {name!r} is"))
    for mod, bands in groups.items():
        if mod == "other" or len(bands) < 2:
            continue
        kinds = {n: ("integer" if np.issubdtype(v.dtype, np.integer) else "float") for n, v in bands.items()}
        if len(set(kinds.values())) > 1:
            ints = [n for n, k in kinds.items() if k == "integer"]
            floats = [n for n, k in kinds.items() if k == "float"]
            raise ScaleError(
                f"the Dataset's {mod} bands mix dtypes: {ints} are integers ("
                f"{', '.join(sorted({str(bands[n].dtype) for n in ints}))}, usually DN = reflectance × 10 000) and "
                f"{floats} are floats ({', '.join(sorted({str(bands[n].dtype) for n in floats}))}, often 0–1 "
                "reflectance); stacked, one scale would be applied to all of them. Put them on one scale first, "
                f"e.g. for b in {floats}: ds[b] = ds[b] * 10000 (if they are 0–1 reflectance), or "
                f"ds[b] = ds[b].astype('float32') / 10000 for the integer ones."
            )
        for key in ("scale_factor", "add_offset"):
            vals = {n: v.attrs.get(key) for n, v in bands.items()}
            if len({None if x is None else float(np.asarray(x).ravel()[0]) for x in vals.values()}) > 1:
                raise ScaleError(
                    f"the Dataset's {mod} bands carry different {key} attrs ({vals}) that were not applied; "
                    "one scale would be used for all. Decode them first: xr.decode_cf(ds), or open the file "
                    "with mask_and_scale=True (eoembed.data.open_cube does)."
                )


def _eight_bit_message(dtype, what: str = "the cube is") -> str:
    return (
        f"{what} {dtype} (values 0–255 at most): an 8-bit quick-look or visual (TCI) product, not "
        "reflectance; read as digital numbers it would be 0–2.5 % reflectance and give wrong embeddings. "
        "Load the L2A reflectance bands instead (uint16 DN or float; e.g. eoembed.data.sentinel2, or the "
        "B02…B12 assets rather than 'visual'). If the values really are reflectance × k, convert and say so: "
        "embed(cube.astype('float32'), scale=k)."
    )


def check_dtype(cube: xr.DataArray) -> None:
    """Refuse dtypes that cannot be reflectance: 8-bit quick-looks, booleans, complex, objects."""
    dt = cube.dtype
    if dt in (np.uint8, np.int8):
        raise ScaleError(_eight_bit_message(dt))
    if dt == bool or np.issubdtype(dt, np.complexfloating) or dt == object or not np.issubdtype(dt, np.number):
        raise InputError(
            f"the cube holds {dt} values; eoembed needs real numbers (reflectance as DN or 0–1). A boolean "
            "cube is usually a mask: apply it with cube.where(mask) instead. Convert with cube.astype('float32') "
            "if the values are numbers stored as another type."
        )


def check_spacing(obj: xr.DataArray | xr.Dataset, dims=("y", "x")) -> None:
    """``x``/``y`` coordinates strictly monotonic and evenly spaced.

    Either direction is fine (south-up, descending ``x``). Tolerance: a step may differ
    from the mean step by :data:`SPACING_RTOL` of it, or by the coordinates' own float
    precision.

    Raises
    ------
    CoordinateError
        Repeated, unsorted or unevenly spaced coordinates, with the offending position.
    """
    for d in dims:
        if d not in obj.coords or obj[d].ndim != 1 or obj.sizes[d] < 2:
            continue
        raw = np.asarray(obj[d].values)
        if not np.issubdtype(raw.dtype, np.number):
            raise CoordinateError(
                f"the {d!r} coordinate holds {raw.dtype} values; it must hold map coordinates (numbers, "
                f"pixel centres in the CRS). Set them with cube.assign_coords({d}=...) or load the file with rioxarray."
            )
        v = raw.astype("float64")
        if not np.isfinite(v).all():
            raise CoordinateError(f"the {d!r} coordinate has NaN/inf values; every pixel needs a map coordinate.")
        steps = np.diff(v)
        if not ((steps > 0).all() or (steps < 0).all()):
            bad = int(np.flatnonzero(np.sign(steps) != np.sign(v[-1] - v[0]) if v[-1] != v[0] else steps == 0)[0])
            raise CoordinateError(
                f"the {d!r} coordinate is not strictly monotonic (at index {bad}: {v[bad]:.6g} then {v[bad + 1]:.6g}); "
                f"a grid needs sorted, distinct pixel centres. Sort with cube.sortby({d!r}) and drop duplicates "
                f"with cube.drop_duplicates({d!r}) — or rebuild the mosaic with rioxarray.merge.merge_arrays."
            )
        mean = (v[-1] - v[0]) / (len(v) - 1)
        eps = np.finfo(raw.dtype).eps if np.issubdtype(raw.dtype, np.floating) else 0.0
        tol = max(SPACING_RTOL * abs(mean), 8 * eps * float(np.abs(v).max()))
        dev = np.abs(steps - mean)
        if dev.max() > tol:
            i = int(dev.argmax())
            raise CoordinateError(
                f"the {d!r} coordinate is not evenly spaced: steps range from {steps.min():.6g} to "
                f"{steps.max():.6g} (mean {mean:.6g}; at index {i}: {v[i]:.6g} → {v[i + 1]:.6g}). A cube "
                "stitched from separate crops (or with a gap) has no single pixel grid, so patch positions "
                "would be wrong. Put it on one regular grid first, e.g. "
                "rioxarray.merge.merge_arrays([...]) for crops of one grid, or "
                f"cube.rio.reproject(cube.rio.crs, resolution={abs(float(np.median(steps))):g})."
            )


def check_embedding_grid(emb: xr.DataArray) -> None:
    """An embedding cube's patch centres lie on one regular grid (see :func:`check_spacing`)."""
    check_spacing(emb)


# --- time --------------------------------------------------------------------------------
def _as_datetimes(values: np.ndarray) -> pd.DatetimeIndex:
    if np.issubdtype(values.dtype, np.datetime64):
        return pd.DatetimeIndex(values)
    if values.dtype.kind in "iufcb":
        raise TimeCoordinateError(
            f"the 'time' coordinate holds numbers ({values.dtype}, e.g. {values.ravel()[:3].tolist()}), not dates (datetime64); "
            "eoembed needs acquisition dates to build the models' timestamps. Convert them, e.g. "
            "cube.assign_coords(time=pd.to_datetime(cube.time.values, unit='D', origin='1970-01-01'))."
        )
    flat = list(values.ravel())
    try:
        if flat and all(hasattr(x, "calendar") for x in flat):  # cftime
            index = xr.CFTimeIndex(flat)
            try:
                return index.to_datetimeindex(time_unit="ns")
            except TypeError:  # xarray < 2025.01 has no time_unit
                return index.to_datetimeindex()
        idx = pd.to_datetime(flat, utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError) as err:
        raise TimeCoordinateError(
            f"the 'time' coordinate holds {values.dtype} values that are not dates "
            f"(e.g. {flat[:3]}): {err}. Convert them: "
            "cube.assign_coords(time=pd.to_datetime(cube.time.values, format=...))."
        ) from None
    return idx.tz_convert("UTC").tz_localize(None)


def check_time(cube: xr.DataArray, *, unsorted: str = "sort") -> xr.DataArray:
    """Dates usable as acquisition times: returns ``cube`` with a sorted datetime64 ``time``.

    Strings and cftime dates are parsed, time-zone-aware dates converted to UTC (the
    convention of satellite acquisition times) and made naive. Unsorted dates are
    sorted (with a warning; ``unsorted="raise"`` refuses them): models that read the
    order (Presto's month sequence) and per-timestep outputs then follow the calendar.

    Raises
    ------
    TimeCoordinateError
        Values that are no dates, ``NaT``, or unsorted dates with ``unsorted="raise"``.
    """
    if "time" not in cube.coords or "time" not in cube.dims:
        return cube
    values = np.atleast_1d(cube["time"].values)
    idx = _as_datetimes(values)
    if idx.isna().any():
        bad = np.flatnonzero(idx.isna()).tolist()
        raise TimeCoordinateError(
            f"the 'time' coordinate has {len(bad)} missing date(s) (NaT at position(s) {bad[:10]}); each "
            "timestep needs its acquisition date. Drop those timesteps with "
            "cube.isel(time=np.flatnonzero(cube.time.notnull().values)) or set their dates."
        )
    if not np.issubdtype(values.dtype, np.datetime64) or values.dtype != np.dtype("datetime64[ns]"):
        cube = cube.assign_coords(time=np.asarray(idx.values, dtype="datetime64[ns]"))
    if not idx.is_monotonic_increasing:
        if unsorted == "raise":
            raise TimeCoordinateError(
                "the 'time' coordinate is not sorted; sort the cube first: cube.sortby('time')."
            )
        warnings.warn(
            "the cube's timesteps were not in date order; they were sorted (cube.sortby('time')) so that "
            "models reading the sequence and per-timestep outputs follow the calendar.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        cube = cube.sortby("time")
    return cube


# --- values --------------------------------------------------------------------------------
def check_band_values(cube: xr.DataArray, *, max_values: int = 200_000) -> None:
    """Every band holds some valid pixel, and Sentinel-2 bands share one reflectance scale.

    Reads a strided sample (the whole array only for bands whose sample is empty). NaN,
    ±inf and the declared nodata value count as missing.

    Raises
    ------
    EmptyDataError
        A band without a single valid pixel: a model would drop or corrupt every patch
        through it. The fix drops it, so the model handles the band as absent.
    ScaleError
        Some Sentinel-2 bands look like 0–1 reflectance and others like DN.
    """
    from eoembed.bands import nodata_value

    nd = nodata_value(cube)
    labels = [str(b) for b in cube["band"].values] if "band" in cube.coords else [str(i) for i in range(cube.sizes["band"])]
    data = cube.transpose("band", ...).data
    sample = _band_sample(data, max_values)
    if nd is not None and not np.isnan(nd):
        sample = np.where(sample == nd, np.nan, sample)
    empty = []
    for i, lab in enumerate(labels):
        if np.isfinite(sample[i]).any():
            continue
        band = data[i]
        valid = np.isfinite(band)
        if nd is not None and not np.isnan(nd):
            valid = valid & (band != nd)
        ok = valid.any()
        ok = bool(ok.compute() if hasattr(ok, "compute") else ok)
        if not ok:
            empty.append(lab)
    if empty:
        if len(empty) == len(labels):
            raise EmptyDataError(
                "the cube holds no valid pixels (all NaN/inf or nodata). Check the area and dates, the "
                "nodata value, or the cloud mask that produced it."
            )
        raise EmptyDataError(
            f"band(s) {empty} hold no valid pixel (all NaN/inf or nodata): a model would lose every patch "
            "through them (or NaN-fill whole vectors). Drop them so they count as absent bands (eoembed then "
            f"fills them the model's way, or says which are required): cube.drop_sel(band={empty})."
        )
    s2 = [i for i, lab in enumerate(labels) if _modality(lab) == "sentinel2_l2a"]
    unit, dn = [], []
    for i in s2:
        v = sample[i][np.isfinite(sample[i])]
        if not v.size:
            continue
        top = float(np.percentile(np.abs(v), 99))
        (unit if top <= 2.0 else dn if top >= 100.0 else []).append(labels[i])
    if unit and dn:
        raise ScaleError(
            f"Sentinel-2 bands {unit} look like 0–1 reflectance (99th percentile ≤ 2) but {dn} like digital "
            "numbers (≥ 100); one scale is applied to all bands, so half of them would be wrong. Put them on one "
            f"scale first, e.g. cube.loc[dict(band={unit})] *= 10000 (or divide the DN bands by 10000)."
        )


#: Most spatial dask blocks read for the value checks (spread evenly over the cube).
SAMPLE_BLOCKS = 16


def _band_sample(data, max_values: int) -> np.ndarray:
    """``(band, n)`` strided sample; for dask, from at most :data:`SAMPLE_BLOCKS` blocks spread over y/x.

    Bands whose sample holds nothing valid are then checked in full by the caller, so a
    band with data only outside the sampled blocks is never refused.
    """
    from eoembed.bands import sample_values

    nb = data.shape[0]
    if not hasattr(data, "blocks") or len(data.chunks[-2]) * len(data.chunks[-1]) <= SAMPLE_BLOCKS:
        return sample_values(data, max_values=max_values).reshape(nb, -1)
    import dask

    side = int(np.sqrt(SAMPLE_BLOCKS))
    iy = np.unique(np.linspace(0, len(data.chunks[-2]) - 1, side).round().astype(int))
    ix = np.unique(np.linspace(0, len(data.chunks[-1]) - 1, side).round().astype(int))
    per = max(1, max_values // (len(iy) * len(ix)))
    parts = []
    for i in iy:
        for j in ix:
            block = data.blocks[(slice(None),) * (data.ndim - 2) + (int(i), int(j))]
            step = max(1, int(np.ceil((block.size / per) ** 0.5)))
            parts.append(block[..., ::step, ::step].reshape(nb, -1))
    return np.concatenate([np.asarray(p, dtype="float64") for p in dask.compute(*parts)], axis=1)


# --- everything for an input cube --------------------------------------------------------
def as_cube(obj, *, values: bool | str = "eager", unsorted_time: str = "sort") -> xr.DataArray:
    """Return ``obj`` as a checked DataArray with dims ``(time, band, y, x)``.

    A Dataset with one variable per band is stacked along ``band`` (after
    :func:`check_dataset_bands`); a missing ``time`` dim becomes a single timestep.
    Then :func:`check_dtype`, :func:`check_spacing`, :func:`check_time` and, when
    ``values`` is True (or ``"eager"`` and the cube is in memory),
    :func:`check_band_values`.
    """
    if isinstance(obj, xr.Dataset):
        names = [v for v, da in obj.data_vars.items() if {"y", "x"} <= set(da.dims)]
        if not names:
            raise DimensionError(
                f"the Dataset has no variable with 'y' and 'x' dims (variables: "
                f"{list(obj.data_vars)}, dims: {dict(obj.sizes)})."
            )
        check_dataset_bands(obj, names)
        crs = obj.rio.crs
        obj = obj[names].to_dataarray("band")
        if crs is not None and obj.rio.crs is None:
            obj = obj.rio.write_crs(crs)
    if not isinstance(obj, xr.DataArray):
        raise InputError(
            f"embed() needs an xarray DataArray (time, band, y, x) or Dataset, got "
            f"{type(obj).__name__}. Wrap numpy arrays with xr.DataArray(..., dims=...) and "
            "set the CRS with .rio.write_crs(...)."
        )
    dims = set(obj.dims)
    if not {"y", "x"} <= dims:
        hint = ""
        if {"lat", "lon"} & dims or {"latitude", "longitude"} & dims:
            hint = (" It looks geographic (lat/lon): reproject to a projected CRS in metres "
                    "with .rio.reproject('EPSG:326xx') and rename to y/x.")
        raise DimensionError(
            f"the cube's dims are {tuple(obj.dims)}; eoembed needs spatial dims named 'y' and "
            f"'x'. Rename them, e.g. cube.rename({{'rows': 'y', 'cols': 'x'}}).{hint}"
        )
    if "band" not in dims:
        if len(dims) == 2 + ("time" in dims):
            raise DimensionError(
                f"the cube has no 'band' dim (dims {tuple(obj.dims)}); eoembed needs several "
                "bands. Add them with xr.concat([...], dim='band') or ds.to_dataarray('band')."
            )
        others = dims - {"y", "x", "time"}
        raise DimensionError(
            f"the cube's dims are {tuple(obj.dims)}; expected (time, band, y, x). If "
            f"{sorted(others)} holds the bands, rename it: cube.rename({{{sorted(others)[0]!r}: 'band'}})."
        )
    extra = dims - {"time", "band", "y", "x"}
    if extra:
        raise DimensionError(
            f"the cube has extra dims {sorted(extra)} besides (time, band, y, x). Select "
            f"one value (cube.isel({sorted(extra)[0]}=0)) or stack them into 'band' or 'time'."
        )
    check_dtype(obj)
    check_spacing(obj)
    if "time" not in dims:
        obj = obj.expand_dims("time")
    else:
        obj = check_time(obj, unsorted=unsorted_time)
    obj = obj.transpose("time", "band", "y", "x")
    if values is True or (values == "eager" and obj.chunks is None):
        check_band_values(obj)
    return obj


@functools.lru_cache(maxsize=32)
def _proj(wkt: str, _thread: int):
    """A pyproj ``Proj`` of ``wkt`` (per thread: pyproj objects are not shared between threads)."""
    from pyproj import Proj

    return Proj(wkt)


def ground_scale(crs, x: float, y: float) -> tuple[float, float]:
    """The CRS's scale factors ``(along meridians, along parallels)`` at ``(x, y)``.

    1.0 means one CRS unit is one metre on the ground (≈ UTM); Web Mercator at 50°N
    gives ≈1.56 both ways (conformal); equal-area projections differ between the two.
    """
    from pyproj import CRS

    from eoembed.cube import transformer

    wkt = crs if isinstance(crs, str) else CRS.from_user_input(crs).to_wkt()
    lon, lat = transformer(wkt, "EPSG:4326").transform(x, y)
    try:
        f = _proj(wkt, threading.get_ident()).get_factors(lon, lat)
        k_m, k_p = float(f.meridional_scale), float(f.parallel_scale)
    except Exception:  # noqa: BLE001  (a CRS pyproj cannot differentiate: assume true scale)
        return 1.0, 1.0
    if not (np.isfinite(k_m) and np.isfinite(k_p) and k_m > 0 and k_p > 0):
        return 1.0, 1.0
    return k_m, k_p


def check_crs(cube: xr.DataArray, spec=None) -> tuple[xr.DataArray, float]:
    """CRS present, projected and in metres, pixels square; returns the cube and the ground pixel size (m).

    The pixel size in CRS units is divided by the CRS's scale factor at the cube's
    centre (:func:`ground_scale`), so a Web Mercator "10 m" pixel at 50°N is reported
    (and passed to the encoder) as the 6.4 m it is on the ground; a warning is given
    when the ground size is off the model's resolution by more than 10 %, whatever the CRS.
    """
    crs = cube.rio.crs
    if crs is None and "epsg" in cube.coords:  # stackstac
        cube = cube.rio.write_crs(int(cube["epsg"].values))
        crs = cube.rio.crs
    if crs is None:
        raise MissingCRSError(
            "the cube has no CRS. Set it with cube.rio.write_crs('EPSG:32631') (the EPSG "
            "code of your data), or load it with eoembed.data.open_cube / rioxarray."
        )
    if not crs.is_projected:
        raise GeographicCRSError(
            f"the cube is in a geographic CRS ({crs.to_string()}), in degrees; patches need "
            "metres. Reproject first: cube.rio.reproject(cube.rio.estimate_utm_crs(), "
            "resolution=10)."
        )
    try:
        units = crs.linear_units.lower()
        factor = float(crs.linear_units_factor[1]) if hasattr(crs, "linear_units_factor") else 1.0
    except Exception:  # noqa: BLE001
        units, factor = "metre", 1.0
    if units not in ("metre", "meter", "m", "metres", "meters") and not math.isclose(factor, 1.0):
        raise InputError(
            f"the cube's CRS ({crs.to_string()}) is in {units}, not metres; patch sizes and the models' "
            "resolution are in metres. Reproject: cube.rio.reproject(cube.rio.estimate_utm_crs(), resolution=10)."
        )
    native = getattr(spec, "native_resolution", 10.0) if spec is not None else 10.0
    if cube.sizes["x"] < 2 or cube.sizes["y"] < 2:
        res = cube.rio.resolution()
    else:
        res = cube.rio.resolution(recalc=True)
    rx, ry = abs(float(res[0])), abs(float(res[1]))
    if not (rx > 0 and ry > 0 and math.isfinite(rx) and math.isfinite(ry)):
        raise CoordinateError(f"the cube's pixel size is {rx:g} × {ry:g}; set x/y coordinates (pixel centres).")
    if not math.isclose(rx, ry, rel_tol=1e-3):
        raise InputError(
            f"pixels are not square ({rx:g} × {ry:g} m). Resample to square pixels: "
            f"cube.rio.reproject(cube.rio.crs, resolution={native:g})."
        )
    left, bottom, right, top = cube.rio.bounds(recalc=cube.sizes["x"] > 1 and cube.sizes["y"] > 1)
    k_m, k_p = ground_scale(crs, (left + right) / 2, (bottom + top) / 2)
    if math.isclose(k_m, 1.0, rel_tol=SCALE_RTOL) and math.isclose(k_p, 1.0, rel_tol=SCALE_RTOL):
        k_m = k_p = 1.0  # UTM and other local grids: the CRS unit is the metre on the ground
    gx, gy = rx / k_p, ry / k_m
    if not math.isclose(gx, gy, rel_tol=RESOLUTION_RTOL):
        warnings.warn(
            f"{crs.to_string()} stretches distances differently along x and y here (scale {k_p:.3g} vs "
            f"{k_m:.3g}): pixels are {gx:.3g} × {gy:.3g} m on the ground, not square. Reproject to a "
            "conformal local CRS: cube.rio.reproject(cube.rio.estimate_utm_crs(), resolution=10).",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    ground = math.sqrt(gx * gy)
    needs = spec is None or getattr(spec, "needs_weights", True)
    if needs and not math.isclose(ground, native, rel_tol=RESOLUTION_RTOL):
        how = "" if math.isclose(math.sqrt(k_m * k_p), 1.0, rel_tol=0.01) else (
            f" ({rx:g} CRS units, but {crs.to_string()} stretches distances ×{math.sqrt(k_m * k_p):.3g} here; "
            "reproject to UTM with cube.rio.reproject(cube.rio.estimate_utm_crs(), resolution=10) to avoid it)"
        )
        name = getattr(spec, "name", "the model")
        warnings.warn(
            f"pixel size is {ground:.3g} m on the ground{how}; {name} was trained at {native:g} m. "
            "Passing input_res to the encoder, but embeddings may be off-distribution.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    # within 1 % (UTM and other local grids) the CRS unit is the metre the user meant
    return cube, float(rx if math.isclose(math.sqrt(k_m * k_p), 1.0, rel_tol=SCALE_RTOL) else ground)


def check_options(*, tile_size=None, halo=None, patch_size=None, batch_size=None) -> None:
    """Tiling options that are numbers in range (before the grid is planned).

    Raises
    ------
    ParameterError
        A negative halo, a non-positive tile, patch or batch size, or a non-integer.
    """
    for name, v, low in (("tile_size", tile_size, 1), ("halo", halo, 0), ("patch_size", patch_size, 1),
                         ("batch_size", batch_size, 1)):
        if v is None:
            continue
        if isinstance(v, bool) or not float(v).is_integer():
            raise ParameterError(f"{name} must be a whole number of pixels, got {v!r}.")
        if int(v) < low:
            what = "0 (no overlap) or more pixels, a multiple of patch_size" if name == "halo" else f">= {low}"
            raise ParameterError(f"{name}={v} is out of range: it must be {what}. Leave it out (None) for the "
                                 "model's default.")


def validate_cube(obj, spec=None, *, values: bool | str = "eager") -> tuple[xr.DataArray, float]:
    """Everything above for an input cube: ``(checked cube (time, band, y, x), ground pixel size in m)``.

    ``spec`` (a :class:`~eoembed.models.registry.ModelSpec`) adds the
    comparison with the model's resolution.
    """
    if isinstance(spec, str):
        raise ParameterError(f"validate_cube takes a ModelSpec, got the name {spec!r}: pass "
                             "eoembed.get_model_spec(name) (validation sits below the model registry).")
    cube = as_cube(obj, values=values)
    return check_crs(cube, spec)


# --- opening stores and products ------------------------------------------------------
#: Formats ``eoembed.open_embeddings`` reads (``"auto"`` guesses one).
OPEN_FORMATS = ("auto", "eoembed", "alphaearth", "tessera", "geoparquet", "geotiff", "zarr")
#: File name endings read as GeoParquet.
PARQUET_EXT = (".parquet", ".geoparquet", ".pq", ".gpq")


def check_transform(transform):
    """``transform`` as an ``affine.Affine``: an ``Affine`` or its numbers ``(a, b, c, d, e, f)`` (9 ending 0, 0, 1).

    The order is rasterio's/affine's — ``x = a*col + b*row + c``, ``y = d*col + e*row + f``
    — not GDAL's geotransform ``(c, a, b, f, d, e)``. A north-up grid is required: a
    rotated or sheared transform is refused, and one that reads as a GDAL
    geotransform is refused with the conversion (``Affine.from_gdal(*gt)``).
    """
    from affine import Affine

    if isinstance(transform, Affine):
        t = transform
    else:
        try:
            v = [float(x) for x in transform]
        except (TypeError, ValueError):
            raise TransformError(f"transform={transform!r} is not an affine transform; pass an affine.Affine or its "
                                 "six numbers (a, b, c, d, e, f) = (pixel width, 0, left x, 0, -pixel height, "
                                 "top y).") from None
        if len(v) == 9 and v[6:] == [0.0, 0.0, 1.0]:
            v = v[:6]
        if len(v) != 6:
            raise TransformError(
                f"transform has {len(v)} numbers ({transform!r}); an affine transform has six, (a, b, c, d, e, f) = "
                "(pixel width, 0, left x, 0, -pixel height, top y). Bounds (4 numbers) are not a transform: use "
                "rasterio.transform.from_bounds(west, south, east, north, width, height)."
            )
        t = Affine(*v)
    if not all(math.isfinite(x) for x in tuple(t)[:6]):
        raise TransformError(f"transform {tuple(t)[:6]} holds non-finite numbers.")
    if t.b != 0 or t.d != 0:
        gdal = t.c == 0 and t.e == 0 and t.a != 0 and t.d != 0
        hint = (f" It reads as GDAL's geotransform order (x0, dx, 0, y0, 0, dy) = {tuple(t)[:6]}: pass "
                "Affine.from_gdal(*geotransform) instead." if gdal else
                " Warp the data north-up first (gdalwarp, rioxarray .rio.reproject).")
        raise TransformError(f"transform {tuple(t)[:6]} is rotated or sheared (b={t.b}, d={t.d}); eoembed reads "
                             f"north-up grids with b = d = 0 in the order (a, b, c, d, e, f).{hint}")
    if t.a == 0 or t.e == 0:
        raise TransformError(f"transform {tuple(t)[:6]} has a zero pixel size (a={t.a}, e={t.e}); expected "
                             "(pixel width, 0, left x, 0, -pixel height, top y).")
    return t


def check_open_options(src: str, *, format: str, transform=None) -> None:
    """What ``eoembed.open_embeddings`` checks before reading: the format name, the path, ``transform``."""
    from pathlib import Path

    if format not in OPEN_FORMATS:
        import difflib

        near = difflib.get_close_matches(str(format), OPEN_FORMATS, n=1)
        raise ParameterError(f"format={format!r} is not one of {OPEN_FORMATS}"
                             + (f"; did you mean {near[0]!r}?" if near else ".") + " Use 'auto' to detect it.")
    if "://" not in src and not Path(src).exists():
        raise InputError(f"{src} does not exist; check the path (or pass a URL).")
    if transform is not None:
        check_transform(transform)


def check_format_matches(src: str, fmt: str) -> None:
    """Refuse a ``format=`` that the local file plainly is not (before a reader fails deep inside a library)."""
    from pathlib import Path

    from eoembed.exceptions import ProductFormatError

    if "://" in src or fmt in ("auto", "eoembed"):
        return
    low = src.lower().rstrip("/")
    is_dir = Path(src).is_dir()
    kind = ("parquet" if low.endswith(PARQUET_EXT) else "npy" if low.endswith(".npy")
            else "zarr" if is_dir or low.endswith(".zarr") else "raster")
    if kind == "npy":
        check_npy_array(src)
    want = {"alphaearth": ("raster",), "tessera": ("npy", "raster", "zarr"), "geoparquet": ("parquet",),
            "geotiff": ("raster",), "zarr": ("zarr",)}[fmt]
    if kind not in want:
        raise ProductFormatError(
            f"format={fmt!r} does not match {src}: it is a {kind} {'folder' if is_dir else 'file'}, and {fmt} is read "
            f"from {' or '.join(want)} files. Pass the format the file is in, or format='auto' to detect it."
        )


def check_npy_array(src: str) -> None:
    """A ``.npy`` file that numpy cannot read as an array is refused with what it is."""
    from eoembed.exceptions import ProductFormatError

    try:
        np.load(src, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ProductFormatError(
            f"{src} is named .npy but is not a NumPy array file ({type(err).__name__}: {err}). TESSERA tiles are "
            "int8 (H, W, 128) arrays written by numpy.save; download the tile again, or pass the right file."
        ) from None


def check_tessera_tile(src: str, shape: tuple, dtype, scales_shape: tuple | None) -> None:
    """A TESSERA ``.npy`` tile is int8 ``(H, W, C)``; a channels-first ``(C, H, W)`` one is named as such."""
    from eoembed.exceptions import ProductFormatError

    if len(shape) != 3 or np.dtype(dtype) != np.int8:
        raise ProductFormatError(f"{src}: expected an int8 (H, W, C) TESSERA tile, got {np.dtype(dtype)} {shape}.")
    if scales_shape is not None and tuple(scales_shape[:2]) == tuple(shape[1:]) != tuple(shape[:2]):
        raise ProductFormatError(
            f"{src} is channels-first {shape} (C, H, W), its scales {tuple(scales_shape)} are (H, W): TESSERA tiles "
            "are channels-last (H, W, C) as geotessera writes them. Save it as np.save(path, np.moveaxis(q, 0, -1))."
        )


def check_tessera_scales(src: str, shape: tuple, scales_shape: tuple) -> None:
    """TESSERA scales are ``(H, W)`` or ``(H, W, C)`` for an ``(H, W, C)`` tile."""
    from eoembed.exceptions import ProductFormatError

    h, w, c = shape
    if tuple(scales_shape) not in ((h, w), (h, w, 1), (h, w, c)):
        raise ProductFormatError(
            f"{src}: its scales are {tuple(scales_shape)} but the tile is (H, W, C) = {tuple(shape)}; expected "
            f"({h}, {w}) (one scale per pixel) or ({h}, {w}, {c}) (one per channel). The scales file belongs to "
            "another tile or another channel count; pass the _scales.npy written with this tile (scales=...).")


def check_rows(src: str, n_rows: int, columns: list) -> None:
    """A table of vectors with no row is refused (not reported as vectors of different lengths)."""
    if n_rows == 0:
        raise EmptyDataError(f"{src} holds no rows (an empty table with columns {list(columns)}); nothing to open. "
                             "Write the vectors first, or check the filter that produced the file.")


def check_some_vector(src: str, X: np.ndarray, column: str) -> None:
    """At least one row of ``X`` ``(n, d)`` is a vector (finite, not all zeros); zeros are not called NaN."""
    finite = np.isfinite(X).all(axis=1)
    if not (finite & (np.abs(np.where(np.isfinite(X), X, 0)).sum(axis=1) > 0)).any():
        what = "all zeros" if finite.all() else "NaN or all zeros"
        raise EmptyDataError(f"{src}: every one of its {len(X)} {column!r} vectors is {what}, so no row holds an "
                             "embedding. Check the export that wrote it (a zero vector is how some producers mark "
                             "no data).")


def check_row(row: int, n: int, *, dim: int, valid: np.ndarray | None = None) -> None:
    """A query by row number names an existing point with a vector."""
    from eoembed.exceptions import QueryError

    if not 0 <= row < n:
        raise QueryError(f"query row {row} is not a point of this index: rows are 0..{n - 1} ({n} points). Pass a "
                         f"row number in that range, a vector of {dim} dims, or a GeoSeries of locations.")
    if valid is not None and not valid[row]:
        raise QueryError(f"point {row} has no valid vector (NaN or all zeros); query another point.")


def check_writable(path) -> None:
    """The folder of an output file exists (created if needed) and can be written."""
    import os
    from pathlib import Path

    from eoembed.exceptions import StoreError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the folder {path.parent} for {path.name} ({err.strerror or err}). "
                         "Choose a writable output path.") from err
    if not os.access(path.parent, os.W_OK):
        raise StoreError(f"cannot write {path}: the folder {path.parent} is read-only (permission denied). Choose a "
                         "writable output path, or change the folder's permissions.")


# --- the newer surfaces (issue 27): sessions, pyramids, maps out, queries -------------------------
def _fail(err, where: str, what: str, fix: str):
    raise err(f"{where}: {what} {fix}")


#: Keys of an explorer session file and the JSON types each may hold (None allowed where listed).
SESSION_SCHEMA = {
    "eoembed_session": (int,), "crs": (str,), "shape": (list,), "mode": (str,), "labels": (dict,),
    "query": (dict, type(None)), "threshold": (int, float, type(None)), "trained": (bool,), "layers": (dict,),
    "basemap": (str, type(None)), "split": (list, type(None)), "split_dates": (list, type(None)),
    "time": (str, type(None)),
}
#: Keys a version-1 session file may lack (the loader then uses its defaults).
SESSION_OPTIONAL = ("mode", "query", "threshold", "trained", "layers", "basemap", "split", "split_dates", "time")
SESSION_REQUIRED = tuple(k for k in SESSION_SCHEMA if k not in SESSION_OPTIONAL)
_SESSION_MODES = ("search", "label")


def check_session(state, path: str, *, version: int) -> dict:
    """A session file's dict has every key of :data:`SESSION_SCHEMA` with the right JSON type.

    A file edited by hand (a key deleted, ``"threshold": "high"``, labels that are not a
    GeoJSON FeatureCollection, query points that are not ``[x, y]``) is refused with the key
    at fault, before anything in the explorer is changed.
    """
    fix = "Save the session again with ex.save_session(path), or restore the file's original content."
    where = f"session file {path!r}"
    if not isinstance(state, dict) or state.get("eoembed_session") != version:
        got = state.get("eoembed_session") if isinstance(state, dict) else type(state).__name__
        raise ParameterError(f"{where} is not an eoembed session of version {version} (found {got!r}); write one "
                             "with ex.save_session(path).")
    for key, types in SESSION_SCHEMA.items():
        if key not in state:
            if key in SESSION_OPTIONAL:  # older version-1 files lack these; the loader uses defaults
                continue
            _fail(ParameterError, where, f"the key {key!r} is missing (expected {', '.join(SESSION_REQUIRED)}, and "
                  f"optionally {', '.join(SESSION_OPTIONAL)}).", fix)
        v = state[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            _fail(ParameterError, where, f"{key!r} is {type(v).__name__} {v!r:.60}, expected {want}.", fix)
    state = {"mode": "search", "query": None, "threshold": None, "trained": False, "layers": {}, "basemap": None,
             "split": None, "split_dates": None, "time": None, **state}
    sh = state["shape"]
    if len(sh) != 2 or not all(isinstance(n, int) and n > 0 for n in sh):
        _fail(ParameterError, where, f"'shape' is {sh!r}, expected [rows, cols] of positive integers.", fix)
    if state["mode"] not in _SESSION_MODES:
        _fail(ParameterError, where, f"'mode' is {state['mode']!r}, expected one of {_SESSION_MODES}.", fix)
    lab = state["labels"]
    if lab.get("type") != "FeatureCollection" or not isinstance(lab.get("features"), list):
        _fail(ParameterError, where, "'labels' is not a GeoJSON FeatureCollection with a 'features' list.", fix)
    for f in lab["features"]:
        if not isinstance(f, dict) or not isinstance(f.get("geometry"), dict) or \
                "class" not in (f.get("properties") or {}):
            _fail(ParameterError, where, "a label is not a GeoJSON Feature with a geometry and a 'class' property.",
                  fix)
    q = state["query"]
    if q is not None:
        for key in ("positives", "negatives"):
            pts = q.get(key)
            if not isinstance(pts, list) or not all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(c, (int, float)) and
                                                                not isinstance(c, bool) for c in p) for p in pts):
                _fail(ParameterError, where, f"query {key!r} is {pts!r:.60}, expected a list of [x, y] numbers.", fix)
        if not isinstance(q.get("polygon"), (str, type(None))):
            _fail(ParameterError, where, "query 'polygon' is not WKT text (or null).", fix)
    t = state["threshold"]
    if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t)):
        _fail(ParameterError, where, f"'threshold' is {t!r}, expected a finite number or null.", fix)
    for name, st in state["layers"].items():
        if not isinstance(st, dict):
            _fail(ParameterError, where, f"layer {name!r} style is {st!r:.60}, expected an object.", fix)
    try:
        from pyproj import CRS

        CRS.from_wkt(state["crs"])
    except Exception:  # noqa: BLE001  (pyproj raises its own CRSError)
        _fail(ParameterError, where, f"'crs' is not a WKT CRS ({state['crs']!r:.60}).", fix)
    return state


def check_pyramid_manifest(doc, root) -> dict:
    """A pyramid's ``pyramid.json`` lists levels ``{level, factor, path, shape}`` inside its folder."""
    from pathlib import Path

    from eoembed.exceptions import StoreIntegrityError

    fix = f"Write the pyramid again with write_pyramid(emb, {str(root)!r}, overwrite=True)."
    where = f"pyramid manifest {Path(root) / 'pyramid.json'}"
    if not isinstance(doc, dict) or doc.get("eoembed_pyramid") != 1:
        _fail(StoreIntegrityError, where, "is not an eoembed pyramid manifest (no 'eoembed_pyramid': 1).", fix)
    levels = doc.get("levels")
    if not isinstance(levels, list) or not levels:
        _fail(StoreIntegrityError, where, "has no 'levels' list (expected one entry per written level).", fix)
    for m in levels:
        if not isinstance(m, dict) or not {"level", "factor", "path", "shape"} <= set(m):
            _fail(StoreIntegrityError, where, f"level entry {m!r:.80} lacks level/factor/path/shape.", fix)
        p = Path(str(m["path"]))
        if p.is_absolute() or ".." in p.parts:
            _fail(StoreIntegrityError, where, f"level path {m['path']!r} points outside the pyramid folder.", fix)
        if not (Path(root) / p).is_dir():
            _fail(StoreIntegrityError, where, f"level {m['level']} store {p} is missing.", fix)
    return doc


def check_class_map_values(arr: np.ndarray) -> None:
    """A map written as ``kind="class"`` holds whole class codes, not probabilities or similarities."""
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.floating):
        return
    v = a[np.isfinite(a)]
    if v.size and not np.allclose(v, np.round(v)):
        raise ParameterError(
            f"A class map needs whole class codes, but the map holds fractions ({float(v.min()):.3g}…"
            f"{float(v.max()):.3g}), like a probability or similarity map; rounding them would write a false class "
            "map (to_cog: write it with kind='continuous'). Threshold it first, e.g. (prob > 0.5).astype('uint8'), "
            "or pass the class map (predict_map(...)['class']).")


def check_query_vectors(vectors, dim: int, what: str = "the index") -> np.ndarray:
    """Query vectors are ``(n, dim)`` (a single ``(dim,)`` vector is accepted) of finite numbers."""
    from eoembed.exceptions import IndexMismatchError, QueryError

    v = np.asarray(vectors)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != dim:
        raise IndexMismatchError(f"query vectors of shape {np.shape(vectors)} do not match {what}, which holds "
                                 f"{dim}-d vectors: pass an (n, {dim}) array from a cube embedded with the same "
                                 "model and settings.")
    if not np.issubdtype(v.dtype, np.number):
        raise QueryError(f"query vectors are {v.dtype}, not numeric; pass float vectors of {dim} dims.")
    if not np.isfinite(v).all(axis=1).any() or not (np.abs(np.nan_to_num(v)).sum(axis=1) > 0).any():
        raise QueryError(f"every query vector is NaN or all zeros; query a patch or point with a valid vector.")
    return v


def check_faiss_key(key: str, dim: int):
    """The FAISS index (inner product) for factory string ``key``; a key FAISS refuses is a ParameterError.

    Returns the index FAISS built, so callers build it once (FAISS raises a bare ``RuntimeError``
    with its C++ trace; this names valid forms instead).
    """
    import faiss

    try:
        return faiss.index_factory(int(dim), str(key), faiss.METRIC_INNER_PRODUCT)
    except Exception as err:  # noqa: BLE001  (FAISS raises a bare RuntimeError with its C++ trace)
        first = str(err).strip().splitlines()[-1][:160] if str(err).strip() else type(err).__name__
        raise ParameterError(f"FAISS cannot build an index from key={key!r} for {dim}-d vectors ({first}). Use a "
                             "FAISS factory string such as 'IVF256,Flat', 'IVF1024,SQ8' or 'IVF1024,PQ32' (PQ "
                             f"sub-quantizers must divide {dim}), or key=None to choose one.") from None


def check_top_k(k) -> int:
    """``k`` (results wanted) is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a positive integer (results wanted), got {k!r}.")
    return int(k)


def check_pyramid_source(source: dict | None, emb: xr.DataArray, levels: list, root, fingerprint_of=None) -> None:
    """A pyramid belongs to ``emb``: same CRS **and** transform/extent, and the same run (value fingerprint).

    Every level must also start at the cube's origin with ``ceil(shape / factor)`` patches.
    ``source`` is the manifest's ``"source"`` entry (None for pyramids written before it was
    recorded: then only the geometry is checked); ``fingerprint_of(emb)`` computes the cube's
    fingerprint the way the pyramid writer did (:func:`eoembed.io.pyramid_source`).
    """
    from pyproj import CRS

    from eoembed.exceptions import GridMismatchError, StoreMismatchError

    fix = f"Write the pyramid from this cube: write_pyramid(emb, {str(root)!r}, overwrite=True)."
    t = tuple(emb.rio.transform())[:6]
    ny, nx = emb.sizes["y"], emb.sizes["x"]
    for lvl in levels:
        lt = tuple(lvl.rio.transform())[:6]
        f = lt[0] / t[0]
        shape = (lvl.sizes["y"], lvl.sizes["x"])
        if lvl.rio.crs is None or not CRS.from_user_input(lvl.rio.crs).equals(CRS.from_user_input(emb.rio.crs)):
            raise GridMismatchError(f"The pyramid at {root} is in {lvl.rio.crs}, this cube in {emb.rio.crs}. " + fix)
        if round(f) != f or f < 2 or not (math.isclose(lt[2], t[2], abs_tol=abs(t[0]) * 1e-3)
                                          and math.isclose(lt[5], t[5], abs_tol=abs(t[4]) * 1e-3)) \
                or shape != (-(-ny // int(f)), -(-nx // int(f))):
            raise GridMismatchError(
                f"The pyramid at {root} covers another extent: its level of {shape[0]}×{shape[1]} patches starts at "
                f"({lt[2]:.1f}, {lt[5]:.1f}) with pitch {lt[0]:g}, this cube ({ny}×{nx} patches) at ({t[2]:.1f}, "
                f"{t[5]:.1f}) with pitch {t[0]:g}; expected a power-of-two coarsening of this very grid. " + fix)
    if source is None:
        return
    st = source.get("transform")
    if source.get("shape") != [ny, nx] or st is None or not np.allclose(st, t, rtol=0, atol=1e-6 * max(1, abs(t[0]))):
        raise GridMismatchError(f"The pyramid at {root} was written from a cube of {source.get('shape')} patches with "
                                f"transform {st}, not this one ({[ny, nx]}, {list(t)}). " + fix)
    fp = source.get("fingerprint")
    if fp is not None and fingerprint_of is not None:
        mine = np.array(fingerprint_of(emb), dtype=float)
        theirs = np.array(fp, dtype=float)
        same = mine.shape == theirs.shape and np.allclose(mine, theirs, rtol=0, atol=2e-3, equal_nan=True)
        if not same:
            raise StoreMismatchError(
                f"The pyramid at {root} was written from another run on this grid (another date, model or input: "
                "its vectors differ from this cube's at the fingerprint patches), so its map would show other data. "
                + fix)


def check_has_crs(obj, what: str = "The embedding cube") -> None:
    """``obj`` (a cube or map) carries a CRS; without one it cannot be put on a map or tied to a grid."""
    if getattr(obj, "rio", None) is None or obj.rio.crs is None:
        raise MissingCRSError(f"{what} has no CRS, so it cannot be placed on a map. Cubes from eoembed.embed keep "
                              "the input's CRS; for a hand-made cube call emb.rio.write_crs('EPSG:…') and "
                              "emb.rio.write_transform(...) first.")

