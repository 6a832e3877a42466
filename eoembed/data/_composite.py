"""Pure, lazy array operations for ``eoembed.data``: masks, harmonization, composites.

Every function takes and returns ``xarray.DataArray`` objects and keeps dask arrays
lazy. Nothing here touches the network.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from eoembed import sensors
from eoembed.exceptions import ParameterError, QueryError, TooManyTimestepsError

__all__ = [
    "DEFAULT_SCL_MASK",
    "DEFAULT_QA_MASK_BITS",
    "TimestepLimitError",
    "scl_valid",
    "qa_pixel_valid",
    "baseline_needs_offset",
    "harmonize_s2",
    "to_db",
    "Period",
    "composite_periods",
    "composite_median",
]

#: SCL classes masked by default: 0 no data, 1 saturated/defective, 3 cloud shadow,
#: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus.
DEFAULT_SCL_MASK: tuple[int, ...] = (0, 1, 3, 8, 9, 10)

#: Landsat Collection 2 QA_PIXEL bits masked by default: 0 fill, 1 dilated cloud,
#: 2 cirrus, 3 cloud, 4 cloud shadow.
DEFAULT_QA_MASK_BITS: tuple[int, ...] = (0, 1, 2, 3, 4)



class TimestepLimitError(QueryError, TooManyTimestepsError):
    """The request would produce more timesteps than ``max_timesteps``."""


# --- masks -----------------------------------------------------------------------
def scl_valid(scl: xr.DataArray, mask_classes: Iterable[int] = DEFAULT_SCL_MASK) -> xr.DataArray:
    """Per-pixel validity from a Sentinel-2 Scene Classification (SCL) layer.

    Parameters
    ----------
    scl:
        SCL values (float, NaN where the SCL asset had no data).
    mask_classes:
        SCL classes to treat as invalid.

    Returns
    -------
    xarray.DataArray
        Boolean, same dims as ``scl``, True where the pixel is usable; NaN SCL is
        invalid. Lazy when ``scl`` is.
    """
    classes = sorted({int(c) for c in mask_classes})
    bad = scl.isin(classes) if classes else xr.zeros_like(scl, dtype=bool)
    return scl.notnull() & ~bad


def qa_pixel_valid(qa: xr.DataArray, mask_bits: Iterable[int] = DEFAULT_QA_MASK_BITS) -> xr.DataArray:
    """Per-pixel validity from a Landsat Collection 2 ``QA_PIXEL`` layer.

    Bit 0 (fill) always makes a pixel invalid, whatever ``mask_bits`` says.

    Returns
    -------
    xarray.DataArray
        Boolean, True where none of ``mask_bits`` is set and QA is not NaN. Lazy.
    """
    bits = 1  # fill
    for b in mask_bits:
        if not 0 <= int(b) < 16:
            raise ParameterError(f"QA_PIXEL bit {b!r} is outside 0..15.")
        bits |= 1 << int(b)
    as_int = qa.fillna(0).astype(np.uint16)
    return qa.notnull() & ((as_int & np.uint16(bits)) == 0)


# --- Sentinel-2 harmonization -----------------------------------------------------
def baseline_needs_offset(baselines: Sequence[object], times: Sequence[object]) -> np.ndarray:
    """Which scenes carry the +1000 DN offset, from baseline (else date) alone.

    :func:`eoembed.sensors.s2_offset` without item metadata; the loaders use the
    full rule on each item.

    Returns
    -------
    numpy.ndarray
        Boolean, one value per scene.
    """
    tvals = pd.to_datetime(np.asarray(times))
    return np.array(
        [sensors.s2_offset({"s2:processing_baseline": b}, time=t)[0] > 0 for b, t in zip(baselines, tvals)],
        dtype=bool,
    )


def harmonize_s2(data: xr.DataArray, offsets: np.ndarray) -> xr.DataArray:
    """Remove the baseline-04.00 offset so all scenes share the pre-2022 DN scale.

    ``offsets`` holds one DN offset per scene (or a boolean "carries the +1000
    offset"); ``DN -> max(DN - offset, 0)`` where it is positive, NaN stays NaN.
    Other scenes are untouched.

    Returns
    -------
    xarray.DataArray
        Same dims, dtype and laziness as ``data``.
    """
    offs = np.asarray(offsets)
    offs = np.where(offs, sensors.HARMONIZATION_OFFSET, 0) if offs.dtype == bool else offs.astype("float64")
    if not (offs > 0).any():
        return data
    off = xr.DataArray(offs.astype(np.float32), dims=("time",), coords={"time": data["time"]})
    shifted = np.maximum(data - off, np.float32(0))
    out = xr.where(off > 0, shifted, data, keep_attrs=True)
    return out.astype(data.dtype, copy=False).transpose(*data.dims)


def to_db(data: xr.DataArray) -> xr.DataArray:
    """Linear power to decibels: ``10 * log10(x)``; non-positive and NaN become NaN.

    Returns
    -------
    xarray.DataArray
        Same dims, dtype and laziness as ``data``.
    """
    positive = data.where(data > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.float32(10.0) * np.log10(positive)
    return out.astype(data.dtype, copy=False)


# --- temporal composites -------------------------------------------------------------
_ALIASES = {"monthly": "M", "month": "M", "seasonal": "Q-NOV", "season": "Q-NOV"}


@dataclass(frozen=True)
class Period:
    """One composite window ``[start, end]`` (inclusive) labelled by its middle day."""

    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def label(self) -> pd.Timestamp:
        mid = self.start + (self.end - self.start) / 2
        return mid.floor("D")


def composite_periods(composite: str, start: pd.Timestamp, end: pd.Timestamp) -> list[Period]:
    """The composite windows covering ``[start, end]``.

    ``"monthly"``: calendar months. ``"seasonal"``: meteorological seasons
    (DJF, MAM, JJA, SON; December counts towards the next year's winter). Any other
    string is read as a pandas offset alias (e.g. ``"16D"``, ``"2MS"``), with windows
    starting at ``start``.

    Returns
    -------
    list of Period
        In time order; windows are clipped to ``[start, end]``.
    """
    start = pd.Timestamp(start)
    end = pd.Timestamp(end)
    key = composite.lower() if isinstance(composite, str) else composite
    periods: list[Period] = []
    if key in _ALIASES:
        for p in pd.period_range(start, end, freq=_ALIASES[key]):
            periods.append(Period(max(p.start_time, start), min(p.end_time, end)))
        return periods
    try:
        offset = pd.tseries.frequencies.to_offset(composite)
    except (ValueError, TypeError) as err:
        raise ParameterError(
            f"Unknown composite={composite!r}. Expected 'monthly', 'seasonal', None (one timestep per "
            "scene) or a pandas frequency such as '16D' or '2MS'."
        ) from err
    t = start
    while t <= end:
        nxt = t + offset
        if nxt <= t:  # pragma: no cover - defensive against odd offsets
            raise ParameterError(f"composite={composite!r} does not advance time.")
        periods.append(Period(t, min(nxt - pd.Timedelta(1, "ns"), end)))
        t = nxt
    return periods


def _nanmedian_time(block: np.ndarray) -> np.ndarray:
    # core dim "time" is moved last by apply_ufunc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN, expected
        return np.nanmedian(block, axis=-1).astype(block.dtype, copy=False)


def composite_median(
    data: xr.DataArray,
    periods: Sequence[Period],
    *,
    baselines: Sequence[object] | None = None,
) -> xr.DataArray:
    """Per-pixel median of valid (non-NaN) values of the scenes in each period.

    Parameters
    ----------
    data:
        ``(time, band, y, x)``, masked pixels already NaN.
    periods:
        Composite windows (see :func:`composite_periods`).
    baselines:
        Optional ``s2:processing_baseline`` per scene; the composite gets the highest
        baseline of its contributing scenes (``""`` when none).

    Returns
    -------
    xarray.DataArray
        ``(time, band, y, x)`` with one timestep per period, ``time`` = middle day of
        the period; non-index coords ``eoembed:period_start``, ``eoembed:period_end``,
        ``eoembed:n_scenes`` (and ``s2:processing_baseline`` if given) along
        ``time``. Periods without scenes, and pixels never valid, are NaN. Lazy
        when ``data`` is dask-backed.
    """
    times = pd.to_datetime(data["time"].values)
    template = data.isel(time=0, drop=True)
    template = template.drop_vars([c for c in template.coords if "time" in data[c].dims], errors="ignore")
    slabs = []
    n_scenes = []
    base_out = []
    for period in periods:
        idx = np.flatnonzero((times >= period.start) & (times <= period.end))
        n_scenes.append(len(idx))
        if baselines is not None:
            vals = [(baselines[i], sensors.parse_baseline(baselines[i])) for i in idx]
            vals = [(b, v) for b, v in vals if v is not None]
            base_out.append(str(max(vals, key=lambda bv: bv[1])[0]) if vals else "")
        if len(idx) == 0:
            slab = xr.full_like(template, np.nan, dtype=data.dtype)
        elif len(idx) == 1:
            slab = data.isel(time=int(idx[0]), drop=True)
        else:
            sub = data.isel(time=idx)
            if sub.chunks is not None:
                sub = sub.chunk({"time": -1})
            slab = xr.apply_ufunc(
                _nanmedian_time,
                sub,
                input_core_dims=[["time"]],
                dask="parallelized",
                output_dtypes=[data.dtype],
                keep_attrs=True,
            )
        slab = slab.drop_vars([c for c in slab.coords if c not in template.coords], errors="ignore")
        slabs.append(slab)
    if not slabs:
        raise QueryError("No composite periods between the start and end dates; check start <= end.")
    out = xr.concat(slabs, dim="time", coords="minimal", compat="override", join="override")
    out = out.assign_coords(
        time=("time", pd.DatetimeIndex([p.label for p in periods]).values.astype("datetime64[ns]")),
        **{
            "eoembed:period_start": ("time", np.array([p.start for p in periods], dtype="datetime64[ns]")),
            "eoembed:period_end": ("time", np.array([p.end for p in periods], dtype="datetime64[ns]")),
            "eoembed:n_scenes": ("time", np.asarray(n_scenes, dtype=np.int32)),
        },
    )
    if baselines is not None:
        out = out.assign_coords({"s2:processing_baseline": ("time", np.asarray(base_out, dtype=str))})
    out.attrs = dict(data.attrs)
    return out.transpose("time", *[d for d in data.dims if d != "time"])
