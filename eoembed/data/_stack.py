"""Stacking: STAC items → a lazy ``(time, band, y, x)`` array on one grid, and the finishing steps.

:func:`_stack` is the one call into ``stackstac.stack`` (with eoembed's retrying,
signing :class:`~eoembed.data._reader.RetryingReader`); :func:`_finish` gives every
loader's output the same canonical form (float32, band coords, CRS, attrs).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eoembed.data._composite import Period, TimestepLimitError, composite_periods
from eoembed.data._retry import RetryPolicy
from eoembed.data._search import _item_time_range
from eoembed.data._signing import Signer, strip_sas
from eoembed.exceptions import DataSourceError, require

#: Item properties every stack carries as coordinates along ``time``; per-scene
#: decisions passed as ``extra_properties`` are added to these.
_PROPERTIES = ["s2:processing_baseline", "eo:cloud_cover", "platform"]


def _epsg_of(obj: Mapping[str, Any]) -> int | None:
    if obj.get("proj:epsg") is not None:
        return int(obj["proj:epsg"])
    code = obj.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":", 1)[1])
    return None


def _plain_items(items, signer: Signer | None, asset_keys: Iterable[str],
                 extra_properties: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[list[dict], dict]:
    """Item dicts for stackstac (absolute, unsigned hrefs; proj:epsg filled) + labels.

    ``extra_properties[item.id]`` is merged into the item's properties (stackstac turns
    properties into coordinates along ``time``).
    """
    keys = set(asset_keys)
    plain, labels = [], {}
    for item in items:
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        props = d["properties"]
        props.update((extra_properties or {}).get(item.id, {}))
        epsg = _epsg_of(props)
        if epsg is not None:
            props["proj:epsg"] = epsg
        for key, asset in list(d["assets"].items()):
            if key not in keys:
                del d["assets"][key]
                continue
            href = item.assets[key].get_absolute_href() or asset["href"]
            if signer is not None:
                href = strip_sas(href)  # signed lazily by the reader
            asset["href"] = href
            a_epsg = _epsg_of(asset)
            if a_epsg is not None:
                asset["proj:epsg"] = a_epsg
            labels[href] = (item.id, key)
        plain.append(d)
    return plain, labels


def _out_bounds(bbox, epsg: int, resolution: float) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    xmin, ymin, xmax, ymax = tr.transform_bounds(*bbox, densify_pts=21)
    r = float(resolution)
    return (
        math.floor(xmin / r) * r,
        math.floor(ymin / r) * r,
        math.ceil(xmax / r) * r,
        math.ceil(ymax / r) * r,
    )


def gdal_proxy() -> str:
    """The HTTP proxy GDAL should use, stated explicitly on every read: ``GDAL_HTTP_PROXY`` or the usual
    ``https_proxy``/``http_proxy`` variables, else ``""`` (none).

    GDAL reuses its curl handles and sets a proxy only when one is configured, so a read with
    ``GDAL_HTTP_PROXY`` (a signed STAC load through a proxy) left that proxy on the handle for every later
    read in the process — which then went to the old proxy and came back short. Setting it every time
    (empty: no proxy) keeps reads independent.
    """
    for k in ("GDAL_HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        if os.environ.get(k):
            return os.environ[k]
    return ""


def _gdal_env(policy: RetryPolicy, extra: Mapping[str, Any] | None):
    import stackstac

    opts: dict[str, Any] = dict(policy.gdal_options())
    opts["GDAL_HTTP_PROXY"] = gdal_proxy()
    opts.update({k: v for k, v in (extra or {}).items()})
    return stackstac.DEFAULT_GDAL_ENV.updated(always=opts)


def _stack(
    items,
    assets: Sequence[str],
    *,
    epsg: int,
    bounds: tuple[float, float, float, float],
    resolution: float,
    chunksize: int,
    signer: Signer | None,
    policy: RetryPolicy,
    gdal_env: Mapping[str, Any] | None,
    extra_properties: Mapping[str, Mapping[str, Any]] | None = None,
) -> xr.DataArray:
    stackstac = require("stackstac", "data", "Building a datacube from STAC items")
    from rasterio.enums import Resampling

    from eoembed.data._reader import reader_factory

    plain, labels = _plain_items(items, signer, assets, extra_properties)
    present = [a for a in assets if any(a in d["assets"] for d in plain)]
    if not present:
        raise DataSourceError(
            f"None of the assets {list(assets)} exist in the {len(plain)} items found; is this the right collection?"
        )
    try:
        arr = stackstac.stack(
            plain,
            assets=list(present),
            epsg=int(epsg),
            resolution=float(resolution),
            bounds=bounds,
            snap_bounds=True,
            resampling=Resampling.nearest,
            chunksize=chunksize,
            dtype=np.dtype("float32"),
            fill_value=np.float32(np.nan),
            rescale=False,
            sortby_date="asc",
            xy_coords="center",
            properties=_PROPERTIES + sorted({k for d in (extra_properties or {}).values() for k in d}),
            band_coords=True,
            gdal_env=_gdal_env(policy, gdal_env),
            errors_as_nodata=(),
            reader=reader_factory(signer=signer, policy=policy, labels=labels),
        )
    except ValueError as err:
        raise DataSourceError(
            f"Could not build a datacube from the {len(plain)} items: {err}. Items need proj:epsg (or proj:code) "
            "and proj:transform/proj:shape or a bbox."
        ) from err
    return arr


def _time_coord(arr: xr.DataArray, name: str) -> list:
    """Per-timestep values of a property coordinate (stackstac makes it a scalar when all agree)."""
    if name not in arr.coords:
        return [None] * arr.sizes["time"]
    vals = arr[name].values if "time" in arr[name].dims else np.repeat(arr[name].values, arr.sizes["time"])
    return [None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in vals]


def _limit_scenes(items, max_timesteps: int | None, sensor: str) -> list:
    """composite=None policy: at most ``max_timesteps`` acquisition days, least cloudy first."""
    if max_timesteps is None:
        return items
    days: dict[Any, list] = {}
    for it in items:
        days.setdefault(_item_time_range(it)[0].normalize(), []).append(it)
    if len(days) <= max_timesteps:
        return items

    def cloud(day):
        vals = [it.properties.get("eo:cloud_cover") for it in days[day]]
        vals = [float(v) for v in vals if v is not None]
        return (np.mean(vals) if vals else 100.0, day)

    keep = sorted(sorted(days, key=cloud)[:max_timesteps])
    warnings.warn(
        f"{sensor}: {len(days)} acquisition days found but max_timesteps={max_timesteps}; keeping the "
        f"{max_timesteps} least cloudy days. Use composite='monthly' (or 'seasonal') to use every scene, "
        "or raise max_timesteps.",
        stacklevel=3,
    )
    kept = set(keep)
    return [it for it in items if _item_time_range(it)[0].normalize() in kept]


def _periods(composite: str | None, items, t0, t1, max_timesteps: int | None) -> list[Period]:
    if composite is None:
        days = sorted({_item_time_range(it)[0].normalize() for it in items})
        return [Period(d, d + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")) for d in days]
    periods = composite_periods(composite, t0, t1)
    if max_timesteps is not None and len(periods) > max_timesteps:
        raise TimestepLimitError(
            f"composite={composite!r} from {t0.date()} to {t1.date()} gives {len(periods)} timesteps, more than "
            f"max_timesteps={max_timesteps} (OlmoEarth takes at most 12). Shorten the date range, use a coarser "
            "composite (e.g. 'seasonal'), split the request into several cubes, or raise max_timesteps."
        )
    return periods


def _finish(
    cube: xr.DataArray,
    *,
    band_names: Sequence[str],
    common_names: Mapping[str, str],
    wavelengths: Mapping[str, float] | None = None,
    epsg: int,
    name: str,
    attrs: Mapping[str, Any],
) -> xr.DataArray:
    """Canonical form: (time, band, y, x) float32, band labels, CRS, serialisable attrs."""
    import rioxarray  # noqa: F401 - registers .rio

    cube = cube.transpose("time", "band", "y", "x").astype(np.float32, copy=False)
    keep = {"time", "band", "y", "x", "epsg"}
    drop = [
        c
        for c in cube.coords
        if c not in keep and not c.startswith(("eoembed:", "s2:")) and c != "spatial_ref"
    ]
    cube = cube.drop_vars(drop)
    cube = cube.assign_coords(
        band=("band", np.asarray(list(band_names), dtype=str)),
        common_name=("band", np.asarray([common_names.get(b, "") for b in band_names], dtype=str)),
        center_wavelength=("band", np.asarray([(wavelengths or {}).get(b, np.nan) for b in band_names], dtype=float)),
    )
    transform = cube.attrs.get("transform")
    cube.attrs = {k: v for k, v in attrs.items() if v is not None}
    cube.name = name
    cube = cube.rio.write_crs(f"EPSG:{epsg}")
    if transform is not None:
        cube = cube.rio.write_transform(transform)
    return cube
