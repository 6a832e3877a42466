"""From an area and a date range to a clean, lazy datacube, via STAC.

Pipeline (one function per stage, like ``stackstac.stack``)::

    validate query ──► search_items ──► _stack (stackstac + RetryingReader)
        ──► sensor step (SCL / QA_PIXEL mask, S2 harmonization, S1 dB)
        ──► composite_median ──► _finish (float32, CRS, attrs)

Why stackstac and not odc-stac: stackstac is the one installed, builds the graph
without touching the data, lets us inject our own ``Reader`` (signing at read time,
retries, errors that name the item and asset), and reprojects items from other UTM
zones with a per-asset ``WarpedVRT``. odc-stac would do the same job; nothing here
depends on stackstac beyond :func:`_stack`.

Harmonization choice: the Sentinel-2 baseline-04.00 offset (+1000 DN) is removed per
scene *before* compositing (a median over scenes of mixed baselines would otherwise
mix two DN scales), and the cube carries ``attrs["eoembed:harmonized"] = True`` so the
core does not subtract it again. The ``s2:processing_baseline`` coordinate along
``time`` still holds the highest baseline among the scenes of each timestep, for
provenance.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eoembed.data._composite import (
    DEFAULT_QA_MASK_BITS,
    DEFAULT_SCL_MASK,
    Period,
    TimestepLimitError,
    baseline_needs_offset,
    composite_median,
    composite_periods,
    harmonize_s2,
    qa_pixel_valid,
    scl_valid,
    to_db,
)
from eoembed.data._retry import DEFAULT_RETRY, RetryPolicy, classify_error
from eoembed.data._signing import PC_STAC_URL, Signer, resolve_signer, strip_sas
from eoembed import sensors
from eoembed.sensors import (  # band tables: owned by eoembed.sensors, re-exported here
    LANDSAT_ASSETS,
    LANDSAT_BANDS,
    LANDSAT_COMMON_NAMES,
    S1_BANDS,
    S2_BANDS,
    S2_COMMON_NAMES,
)
from eoembed.exceptions import DataSourceError, NoItemsFoundError, ParameterError, QueryError, require

__all__ = [
    "PC_STAC_URL",
    "S2_BANDS",
    "S1_BANDS",
    "LANDSAT_BANDS",
    "search_items",
    "sentinel2",
    "sentinel1",
    "landsat",
    "utm_epsg",
]

#: Per-scene harmonization decision (offset in DN, reason), set on each item by
#: :func:`sentinel2` from the item's own metadata (:func:`eoembed.sensors.s2_offset`).
_OFFSET_PROP, _REASON_PROP = "eoembed:s2_offset", "eoembed:s2_offset_reason"
_PROPERTIES = ["s2:processing_baseline", "eo:cloud_cover", "platform", _OFFSET_PROP, _REASON_PROP]


# =====================================================================================
# validation
# =====================================================================================
def _check_bbox(bbox: Any) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in bbox)
    except (TypeError, ValueError) as err:
        raise QueryError(
            f"bbox={bbox!r} is not a sequence of 4 numbers. Expected (min_lon, min_lat, max_lon, max_lat) "
            "in degrees, e.g. bbox=(11.9, 45.4, 12.0, 45.5)."
        ) from err
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise QueryError(
            f"bbox={bbox!r} must hold 4 finite numbers (min_lon, min_lat, max_lon, max_lat) in degrees."
        )
    w, s, e, n = vals
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        hint = ""
        if -90 <= w <= 90 and -90 <= e <= 90 and (abs(s) > 90 or abs(n) > 90):
            hint = " It looks like latitude and longitude are swapped; the order is (lon, lat, lon, lat)."
        elif max(map(abs, vals)) > 360:
            hint = " The values look like projected metres; give degrees (EPSG:4326)."
        raise QueryError(
            f"bbox={vals} is outside the lon/lat range: longitudes must lie in [-180, 180] and latitudes "
            f"in [-90, 90], ordered (min_lon, min_lat, max_lon, max_lat).{hint}"
        )
    if w >= e or s >= n:
        what = "min_lon >= max_lon" if w >= e else "min_lat >= max_lat"
        fix = (
            " If the area crosses the antimeridian, split it into two requests, one on each side."
            if w > e
            else ""
        )
        raise QueryError(
            f"bbox={vals} is inverted or empty ({what}). Expected (min_lon, min_lat, max_lon, max_lat) "
            f"with min < max on both axes.{fix}"
        )
    return vals  # type: ignore[return-value]


def _to_timestamp(value: Any, name: str) -> tuple[pd.Timestamp, bool]:
    """Parse ``value``; also say whether it was a plain date (no time of day)."""
    if value is None:
        raise QueryError(f"{name}=None: give a date such as {name}='2024-01-01'.")
    date_only = isinstance(value, _dt.date) and not isinstance(value, _dt.datetime)
    if isinstance(value, str):
        date_only = len(value.strip()) <= 10
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise QueryError(
            f"{name}={value!r} is not a date. Expected an ISO date like '2024-01-31' "
            "(or a datetime / numpy datetime64)."
        ) from err
    if ts is pd.NaT:
        raise QueryError(f"{name}={value!r} is not a date. Expected an ISO date like '2024-01-31'.")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts, date_only


def _check_dates(start: Any, end: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    t0, _ = _to_timestamp(start, "start")
    t1, end_is_date = _to_timestamp(end, "end")
    if end_is_date:
        t1 = t1 + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)  # whole end day included
    if t0 > t1:
        raise QueryError(
            f"The dates are reversed: start={start!r} is after end={end!r}. Swap them "
            "(start is the first day, end the last day, both included)."
        )
    return t0, t1


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing ``(lon, lat)``.

    Standard 6-degree zones (no Norway/Svalbard exceptions): 326xx north of the
    equator, 327xx south.

    Kept hand-written instead of ``pyproj.database.query_utm_crs_info``: measured here
    (pyproj 3.x, 2 cores) at ~0.2 s per call against microseconds, and on a zone border
    (lon 12.0) it returns both zones, so the same floor rule would still be needed.
    """
    zone = int(math.floor((float(lon) + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _check_options(composite: Any, max_timesteps: Any, resolution: Any) -> None:
    if composite is not None and not isinstance(composite, str):
        raise ParameterError(
            f"composite={composite!r} must be 'monthly', 'seasonal', None or a pandas frequency string."
        )
    if max_timesteps is not None and (not isinstance(max_timesteps, (int, np.integer)) or max_timesteps < 1):
        raise ParameterError(f"max_timesteps={max_timesteps!r} must be a positive integer or None (no limit).")
    try:
        ok = float(resolution) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"resolution={resolution!r} must be a positive number of metres, e.g. 10.")


# =====================================================================================
# search
# =====================================================================================
def _stac_io(policy: RetryPolicy):
    from pystac_client.stac_api_io import StacApiIO

    return StacApiIO(timeout=policy.timeout, max_retries=policy.urllib3_retry())


def _network_error(where: str, err: BaseException) -> DataSourceError:
    status = getattr(err, "status_code", None)
    detail = f"HTTP {status}" if status else f"{type(err).__name__}: {err}"
    text = str(err)
    if len(text) > 300:
        text = text[:300] + "..."
    if status and text:
        detail += f" ({text})"
    return DataSourceError(
        f"Could not reach the STAC catalogue {where}: {detail}. Check the network connection and "
        "the catalog= URL, or try again later (transient failures were already retried)."
    )


def _items_from_local(catalog: Any) -> list:
    """Items from a static catalog / ItemCollection file, object or list."""
    import pystac

    if isinstance(catalog, pystac.Item):
        return [catalog]
    if isinstance(catalog, pystac.ItemCollection):
        return list(catalog.items)
    if isinstance(catalog, pystac.Catalog):  # also Collection
        return list(catalog.get_items(recursive=True))
    if isinstance(catalog, Mapping):
        if catalog.get("type") == "FeatureCollection":
            return list(pystac.ItemCollection.from_dict(dict(catalog)).items)
        if catalog.get("type") == "Feature":
            return [pystac.Item.from_dict(dict(catalog))]
        return list(pystac.read_dict(dict(catalog)).get_items(recursive=True))
    if isinstance(catalog, (list, tuple)):
        out = []
        for obj in catalog:
            if isinstance(obj, pystac.Item):
                out.append(obj)
            elif isinstance(obj, Mapping):
                out.append(pystac.Item.from_dict(dict(obj)))
            else:
                raise ParameterError(
                    f"catalog= list holds a {type(obj).__name__}; expected pystac.Item objects or item dicts."
                )
        return out
    raise ParameterError(
        f"catalog={catalog!r} is not understood. Expected a STAC API URL, a path/URL to a static catalog or "
        "ItemCollection JSON, a pystac Catalog/ItemCollection, or a list of pystac Items."
    )


def _open_href(href: str, policy: RetryPolicy):
    """Open a URL or path: a pystac_client Client for APIs, else items of a static file."""
    import pystac
    from pystac_client import Client

    is_url = href.startswith(("http://", "https://"))
    if not is_url:
        path = Path(href)
        if path.is_dir():
            path = path / "catalog.json"
        if not path.exists():
            raise ParameterError(
                f"catalog={href!r} is neither an http(s) URL nor an existing file. Give a STAC API URL, "
                "a static catalog.json / ItemCollection file, or a list of pystac Items."
            )
        data = json.loads(path.read_text())
        if data.get("type") == "FeatureCollection":
            ic = pystac.ItemCollection.from_file(str(path))
            return None, list(ic.items)
        return None, list(pystac.read_file(str(path)).get_items(recursive=True))
    try:
        client = Client.open(href, stac_io=_stac_io(policy))
    except Exception as err:
        raise _network_error(href, err) from err
    return client, None


def _matches_query(props: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    ops = {
        "eq": lambda a, b: a == b,
        "neq": lambda a, b: a != b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "in": lambda a, b: a in b,
    }
    for key, cond in query.items():
        value = props.get(key)
        if not isinstance(cond, Mapping):
            cond = {"eq": cond}
        for op, ref in cond.items():
            if op not in ops:
                raise ParameterError(f"query operator {op!r} is not supported; use one of {sorted(ops)}.")
            if value is None:
                return False
            try:
                if not ops[op](value, ref):
                    return False
            except TypeError:
                return False
    return True


def _item_time_range(item) -> tuple[pd.Timestamp, pd.Timestamp]:
    props = item.properties
    if item.datetime is not None:
        t = pd.Timestamp(item.datetime)
        t = t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t
        return t, t
    t0 = pd.Timestamp(props.get("start_datetime"))
    t1 = pd.Timestamp(props.get("end_datetime"))
    t0 = t0.tz_convert("UTC").tz_localize(None) if t0.tzinfo else t0
    t1 = t1.tz_convert("UTC").tz_localize(None) if t1.tzinfo else t1
    return t0, t1


def _filter_local(items, collection, bbox, t0, t1, query) -> list:
    w, s, e, n = bbox
    out = []
    for item in items:
        if collection and item.collection_id and item.collection_id != collection:
            continue
        if item.bbox is not None:
            iw, is_, ie, in_ = item.bbox[:2] + item.bbox[-2:] if len(item.bbox) == 6 else item.bbox
            if iw > e or ie < w or is_ > n or in_ < s:
                continue
        a, b = _item_time_range(item)
        if b < t0 or a > t1:
            continue
        if query and not _matches_query(item.properties, query):
            continue
        out.append(item)
    return out


def _check_collection(client, collection: str, where: str) -> None:
    """Raise QueryError with suggestions when the API does not know ``collection``."""
    from pystac_client.exceptions import APIError

    try:
        if client.get_collection(collection) is not None:
            return
    except APIError as err:
        if getattr(err, "status_code", None) != 404:
            if classify_error(err) == "transient":
                raise _network_error(where, err) from err
            return  # the API cannot tell; let the search decide
    except Exception:  # noqa: BLE001 - collection listing is optional in STAC APIs
        return
    try:
        known = [c.id for c in client.get_collections()]
    except Exception:  # noqa: BLE001
        known = []
    close = difflib.get_close_matches(collection, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    listing = f" Known collections include: {', '.join(sorted(known)[:20])}." if known and not close else ""
    raise QueryError(
        f"Unknown collection {collection!r} in the STAC catalogue {where}.{hint}{listing} "
        "Pass collection= with an id the catalogue serves."
    )


def search_items(
    collection: str,
    bbox: Sequence[float],
    start: Any,
    end: Any,
    *,
    catalog: Any = None,
    max_cloud: float | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
    retry: RetryPolicy | None = None,
) -> list:
    """Find the STAC items of ``collection`` over ``bbox`` between ``start`` and ``end``.

    Parameters
    ----------
    collection:
        STAC collection id, e.g. ``"sentinel-2-l2a"``.
    bbox:
        ``(min_lon, min_lat, max_lon, max_lat)`` in degrees (EPSG:4326).
    start, end:
        First and last day (both included), as ISO strings, dates or datetimes.
    catalog:
        Where to search: ``None`` (the Planetary Computer STAC API), the URL of any
        STAC API, a path or URL to a static ``catalog.json`` or ItemCollection JSON,
        a ``pystac.Catalog`` / ``pystac.ItemCollection``, or a list of
        ``pystac.Item``. Static sources are filtered locally by the same rules.
    max_cloud:
        Keep items with ``eo:cloud_cover <= max_cloud`` (percent).
    query:
        Extra STAC API ``query`` conditions, e.g. ``{"platform": {"in": ["landsat-8"]}}``.
    max_items:
        Stop after this many items.
    retry:
        :class:`~eoembed.data.RetryPolicy` for the HTTP calls (429/5xx, timeouts and
        dropped connections are retried with exponential backoff).

    Returns
    -------
    list of pystac.Item
        Sorted by acquisition time; asset hrefs made absolute. Eager (this is the
        network call).

    Raises
    ------
    QueryError
        Invalid bbox or dates, or a collection the API does not know.
    NoItemsFoundError
        Nothing matched.
    DataSourceError
        The catalogue could not be reached after retries.
    """
    bbox = _check_bbox(bbox)
    t0, t1 = _check_dates(start, end)
    require("pystac", "data", "STAC search")
    require("pystac_client", "data", "STAC search")
    policy = retry or DEFAULT_RETRY
    q: dict[str, Any] = dict(query or {})
    if max_cloud is not None:
        if not 0 <= float(max_cloud) <= 100:
            raise ParameterError(f"max_cloud={max_cloud!r} must be a percentage between 0 and 100.")
        q["eo:cloud_cover"] = {"lte": float(max_cloud)}
    where = "(static items)"
    if catalog is None:
        catalog = PC_STAC_URL
    if isinstance(catalog, (str, os.PathLike)):
        where = str(catalog)
        client, local = _open_href(str(catalog), policy)
    else:
        client, local = None, _items_from_local(catalog)

    if client is not None:
        from pystac_client.conformance import ConformanceClasses

        if client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            _check_collection(client, collection, where)
            dt = f"{t0.isoformat()}Z/{t1.isoformat()}Z"
            try:
                search = client.search(
                    collections=[collection], bbox=list(bbox), datetime=dt, query=q or None, max_items=max_items
                )
                items = list(search.items())
            except (QueryError, DataSourceError):
                raise
            except Exception as err:  # noqa: BLE001 - APIError, requests errors
                raise _network_error(where, err) from err
        else:  # a static catalogue opened by URL
            try:
                local = list(client.get_items(recursive=True))
            except Exception as err:  # noqa: BLE001
                raise _network_error(where, err) from err
            items = _filter_local(local, collection, bbox, t0, t1, q)
    else:
        items = _filter_local(local, collection, bbox, t0, t1, q)
        if max_items is not None:
            items = items[:max_items]

    if not items:
        cloud = f", max_cloud={max_cloud}" if max_cloud is not None else ""
        raise NoItemsFoundError(
            f"No {collection!r} items found in {where} for bbox={bbox}, {t0.date()} to {t1.date()}{cloud}. "
            "Widen the date range, raise max_cloud, or check the bbox order (min_lon, min_lat, max_lon, "
            "max_lat) and that the collection covers this area and period."
        )
    for item in items:
        for asset in item.assets.values():
            absolute = asset.get_absolute_href()
            if absolute:
                asset.href = absolute
    items.sort(key=lambda it: _item_time_range(it)[0])
    return items


# =====================================================================================
# stacking
# =====================================================================================
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


def _gdal_env(policy: RetryPolicy, extra: Mapping[str, Any] | None):
    import stackstac

    opts: dict[str, Any] = dict(policy.gdal_options())
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
            properties=_PROPERTIES,
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


def _common(
    *,
    sensor: str,
    collection: str,
    bbox,
    start,
    end,
    catalog,
    sign,
    max_cloud,
    query,
    composite,
    max_timesteps,
    crs,
    resolution,
    chunksize,
    retry,
    gdal_env,
):
    """Validate, search, pick grid and periods: shared by the three sensors."""
    bbox = _check_bbox(bbox)
    t0, t1 = _check_dates(start, end)
    _check_options(composite, max_timesteps, resolution)
    periods = None
    if composite is not None:  # validate the name and the timestep limit before any network call
        periods = _periods(composite, None, t0, t1, max_timesteps)
    policy = retry or DEFAULT_RETRY
    catalog_url = PC_STAC_URL if catalog is None else (str(catalog) if isinstance(catalog, str) else None)
    signer = resolve_signer(sign, catalog_url)
    if crs is None:
        epsg = utm_epsg((bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0)
    else:
        from pyproj import CRS

        try:
            c = CRS.from_user_input(crs)
        except Exception as err:  # noqa: BLE001
            raise ParameterError(f"crs={crs!r} is not a CRS pyproj understands; give e.g. 'EPSG:32632'.") from err
        if not c.is_projected or c.to_epsg() is None:
            raise ParameterError(
                f"crs={crs!r} must be a projected CRS with an EPSG code (metres), e.g. the UTM zone 'EPSG:32632'."
            )
        epsg = int(c.to_epsg())
    items = search_items(
        collection, bbox, t0, t1, catalog=catalog, max_cloud=max_cloud, query=query, retry=policy
    )
    if composite is None:
        items = _limit_scenes(items, max_timesteps, sensor)
        periods = _periods(None, items, t0, t1, max_timesteps)
    bounds = _out_bounds(bbox, epsg, resolution)
    attrs = {
        "eoembed:sensor": sensor,
        "eoembed:collection": collection,
        "eoembed:catalog": catalog_url or "static",
        "eoembed:bbox": list(bbox),
        "eoembed:start": str(t0.date()),
        "eoembed:end": str(t1.date()),
        "eoembed:composite": composite or "none",
        "eoembed:max_cloud": max_cloud,
        "eoembed:items": [it.id for it in items],
        "eoembed:resolution": float(resolution),
    }
    return items, periods, epsg, bounds, signer, policy, attrs


# =====================================================================================
# public loaders
# =====================================================================================
def sentinel2(
    bbox: Sequence[float],
    start: Any,
    end: Any,
    *,
    composite: str | None = "monthly",
    max_cloud: float | None = None,
    bands: Sequence[str] | None = None,
    mask_classes: Iterable[int] | None = DEFAULT_SCL_MASK,
    harmonize: bool = True,
    max_timesteps: int | None = 12,
    catalog: Any = None,
    collection: str = "sentinel-2-l2a",
    sign: Any = "auto",
    crs: Any = None,
    resolution: float = 10,
    chunksize: int = 1024,
    retry: RetryPolicy | None = None,
    gdal_env: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """A clean, lazy Sentinel-2 L2A cube for an area and a date range.

    Searches the catalogue, stacks the scenes on one UTM grid with stackstac, masks
    clouds, shadows and nodata with the SCL layer, removes the processing-baseline
    04.00 offset, and takes the per-pixel median of valid pixels per composite period.

    Parameters
    ----------
    bbox:
        ``(min_lon, min_lat, max_lon, max_lat)`` in degrees.
    start, end:
        First and last day, both included (``"2024-01-01"``, ``"2024-12-31"``).
    composite:
        ``"monthly"`` (calendar months), ``"seasonal"`` (DJF, MAM, JJA, SON), a pandas
        frequency such as ``"16D"``, or ``None`` for one timestep per acquisition day
        (same-day tiles are merged).
    max_cloud:
        Only use scenes with ``eo:cloud_cover <= max_cloud`` percent (``None``: all).
    bands:
        Sentinel-2 band names to return; default all twelve L2A reflectance bands in
        OlmoEarth order ``B02 B03 B04 B08 B05 B06 B07 B8A B11 B12 B01 B09``.
    mask_classes:
        SCL classes set to NaN; default ``(0, 1, 3, 8, 9, 10)`` (no data,
        saturated/defective, cloud shadow, cloud medium/high probability, thin
        cirrus). ``None`` or ``()`` disables SCL masking (nodata is still NaN).
    harmonize:
        Subtract the +1000 DN offset of baseline >= 04.00 scenes (per scene, before
        compositing). The result has ``attrs["eoembed:harmonized"] = True``.
    max_timesteps:
        Upper bound on timesteps (OlmoEarth takes 12). With a composite, more periods
        than this raise :class:`~eoembed.data.TimestepLimitError`; with
        ``composite=None`` the least cloudy acquisition days are kept (with a
        warning). ``None``: no limit.
    catalog:
        ``None`` (Planetary Computer), any STAC API URL, a static catalogue path/URL,
        a ``pystac`` ItemCollection/Catalog or a list of Items.
    collection:
        STAC collection id.
    sign:
        ``"auto"`` (default: Planetary Computer signing for the PC catalogue, none
        otherwise), ``"planetary-computer"``, ``None``, or a function
        ``href -> signed href``. URLs are signed when read, and re-signed when the
        storage answers HTTP 403 (expired token).
    crs:
        Output CRS; default the UTM zone of the bbox centre. Items in other zones are
        reprojected (nearest neighbour).
    resolution:
        Pixel size in metres (default 10). 20 m and 60 m bands and SCL are
        resampled by nearest neighbour.
    chunksize:
        Spatial dask chunk size in pixels.
    retry:
        :class:`~eoembed.data.RetryPolicy` for searches, token requests and reads.
    gdal_env:
        Extra GDAL config options for reads (e.g. ``{"GDAL_HTTP_PROXY": ...}``).

    Returns
    -------
    xarray.DataArray
        Named ``"reflectance"``, dims exactly ``("time", "band", "y", "x")``,
        float32, dask-backed (nothing is read until computed). Values are L2A DN
        (reflectance x 10 000), NaN where masked, missing or never observed; a
        period without any scene is an all-NaN timestep. ``band`` holds S2 names,
        ``common_name`` the STAC common names, ``center_wavelength`` the central
        wavelength in µm (:mod:`eoembed.sensors`); ``x``/``y`` are pixel centres in
        ``cube.rio.crs``. Along ``time``: ``s2:processing_baseline`` (highest
        baseline among contributing scenes, ``""`` if none; ``"04.00"`` is inferred
        from the date for items without the property), ``eoembed:n_scenes``,
        ``eoembed:period_start``/``eoembed:period_end``. ``attrs`` include
        ``eoembed:scale = 10000`` and ``eoembed:harmonized``.

    Raises
    ------
    QueryError
        Bad bbox, dates or collection; :class:`TimestepLimitError` for too many periods.
    NoItemsFoundError
        No scene matched.
    DataSourceError
        Catalogue unreachable; reads failing after retries raise (at compute time)
        an error that names the STAC item id and asset key.
    """
    band_names = list(S2_BANDS if bands is None else bands)
    unknown = [b for b in band_names if b not in S2_COMMON_NAMES]
    if unknown or not band_names:
        raise ParameterError(
            f"Unknown Sentinel-2 band(s) {unknown or band_names}. Expected names from {sorted(S2_COMMON_NAMES)}."
        )
    mask_classes = tuple(int(c) for c in (mask_classes or ()))
    items, periods, epsg, bounds, signer, policy, attrs = _common(
        sensor="sentinel2", collection=collection, bbox=bbox, start=start, end=end, catalog=catalog, sign=sign,
        max_cloud=max_cloud, query=None, composite=composite, max_timesteps=max_timesteps, crs=crs,
        resolution=resolution, chunksize=chunksize, retry=retry, gdal_env=gdal_env,
    )  # fmt: skip
    assets = band_names + (["SCL"] if mask_classes else [])
    decisions = {}
    for it in items:
        off, why = sensors.s2_offset(it.properties, {k: a.to_dict() for k, a in it.assets.items()},
                                     time=_item_time_range(it)[0])
        decisions[it.id] = {_OFFSET_PROP: off, _REASON_PROP: why}
    raw = _stack(
        items, assets, epsg=epsg, bounds=bounds, resolution=resolution, chunksize=chunksize,
        signer=signer, policy=policy, gdal_env=gdal_env, extra_properties=decisions,
    )  # fmt: skip
    missing = [b for b in assets if b not in raw["band"].values]
    if "SCL" in missing:
        raise DataSourceError(
            "The items have no 'SCL' asset, so clouds cannot be masked. Pass mask_classes=None to skip "
            "SCL masking, or use a Sentinel-2 L2A collection."
        )
    data = raw.sel(band=[b for b in band_names if b in raw["band"].values])
    if mask_classes:
        valid = scl_valid(raw.sel(band="SCL", drop=True), mask_classes)
        data = data.where(valid)
    baselines = _time_coord(raw, "s2:processing_baseline")
    offsets = np.array([float(o or 0.0) for o in _time_coord(raw, _OFFSET_PROP)])
    if harmonize:
        data = harmonize_s2(data, offsets)
    if missing:
        data = data.reindex(band=[b for b in band_names])  # absent bands -> NaN, keeps the contract
    inferred = baseline_needs_offset([None] * len(baselines), raw["time"].values)
    filled = [b if b is not None else ("04.00" if n else "") for b, n in zip(baselines, inferred)]
    cube = composite_median(data, periods, baselines=filled)
    attrs.update(
        {
            "eoembed:scale": 10000,
            "eoembed:harmonized": bool(harmonize),
            # per scene: "<item id>: <offset DN removed> (<why>)"
            "eoembed:harmonization": [
                f"{it.id}: {decisions[it.id][_OFFSET_PROP] if harmonize else 0:g} DN removed "
                f"({decisions[it.id][_REASON_PROP]}{'' if harmonize else '; harmonize=False'})"
                for it in items
            ],
            "eoembed:mask_classes": list(mask_classes),
        }
    )
    return _finish(cube, band_names=band_names, common_names=S2_COMMON_NAMES,
                   wavelengths=sensors.S2_WAVELENGTHS, epsg=epsg, name="reflectance", attrs=attrs)


def sentinel1(
    bbox: Sequence[float],
    start: Any,
    end: Any,
    *,
    composite: str | None = "monthly",
    bands: Sequence[str] = S1_BANDS,
    db: bool = True,
    max_timesteps: int | None = 12,
    catalog: Any = None,
    collection: str = "sentinel-1-rtc",
    query: Mapping[str, Any] | None = None,
    sign: Any = "auto",
    crs: Any = None,
    resolution: float = 10,
    chunksize: int = 1024,
    retry: RetryPolicy | None = None,
    gdal_env: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """A lazy Sentinel-1 RTC backscatter cube (``vv``, ``vh`` in dB).

    Parameters are as for :func:`sentinel2`, plus:

    Parameters
    ----------
    bands:
        Polarisations to return, default ``("vv", "vh")``.
    db:
        Convert linear power to decibels, ``10 * log10(x)``; values <= 0 become NaN.
    query:
        Extra STAC ``query`` conditions, e.g. ``{"sat:orbit_state": {"eq": "ascending"}}``.

    Returns
    -------
    xarray.DataArray
        Named ``"backscatter"``, dims ``("time", "band", "y", "x")``, float32, lazy;
        ``band`` = ``["vv", "vh"]``; NaN for nodata; composites are per-pixel medians
        (computed in dB). ``attrs["eoembed:units"]`` is ``"dB"`` or ``"linear"``.
    """
    band_names = [str(b).lower() for b in bands]
    bad = [b for b in band_names if b not in {"vv", "vh", "hh", "hv"}]
    if bad or not band_names:
        raise ParameterError(f"Unknown Sentinel-1 polarisation(s) {bad or band_names}; expected 'vv', 'vh'.")
    items, periods, epsg, bounds, signer, policy, attrs = _common(
        sensor="sentinel1", collection=collection, bbox=bbox, start=start, end=end, catalog=catalog, sign=sign,
        max_cloud=None, query=query, composite=composite, max_timesteps=max_timesteps, crs=crs,
        resolution=resolution, chunksize=chunksize, retry=retry, gdal_env=gdal_env,
    )  # fmt: skip
    raw = _stack(
        items, band_names, epsg=epsg, bounds=bounds, resolution=resolution, chunksize=chunksize,
        signer=signer, policy=policy, gdal_env=gdal_env,
    )  # fmt: skip
    data = raw.reindex(band=band_names)
    if db:
        data = to_db(data)
    cube = composite_median(data, periods)
    attrs["eoembed:units"] = "dB" if db else "linear"
    return _finish(cube, band_names=band_names, common_names={}, epsg=epsg, name="backscatter", attrs=attrs)


def landsat(
    bbox: Sequence[float],
    start: Any,
    end: Any,
    *,
    composite: str | None = "monthly",
    max_cloud: float | None = None,
    bands: Sequence[str] | None = None,
    mask_bits: Iterable[int] | None = DEFAULT_QA_MASK_BITS,
    platforms: Sequence[str] | None = ("landsat-8", "landsat-9"),
    max_timesteps: int | None = 12,
    catalog: Any = None,
    collection: str = "landsat-c2-l2",
    sign: Any = "auto",
    crs: Any = None,
    resolution: float = 10,
    chunksize: int = 1024,
    retry: RetryPolicy | None = None,
    gdal_env: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """A clean, lazy Landsat 8/9 Collection 2 Level-2 cube.

    Asset keys / common names (``coastal``, ``blue``, ..., ``lwir11``) are mapped to
    the OLI/TIRS band numbers OlmoEarth uses (``B1`` ... ``B7``, ``B10``; ``B8``,
    ``B9``, ``B11`` only where the catalogue has them: Level-2 does not). Clouds,
    shadows and fill are masked from ``QA_PIXEL`` bits.

    Parameters are as for :func:`sentinel2`, plus:

    Parameters
    ----------
    bands:
        OLI/TIRS names to return; default every one of :data:`LANDSAT_BANDS` present
        in the items, in OlmoEarth order.
    mask_bits:
        ``QA_PIXEL`` bits that make a pixel invalid; default ``(0, 1, 2, 3, 4)``
        (fill, dilated cloud, cirrus, cloud, cloud shadow). ``None`` disables.
    platforms:
        Platforms to search (band numbers differ on Landsat 4-7); ``None``: all.

    Returns
    -------
    xarray.DataArray
        Named ``"reflectance"``, dims ``("time", "band", "y", "x")``, float32, lazy,
        raw Collection 2 DN (surface reflectance = DN x 2.75e-5 - 0.2, recorded in
        ``attrs["eoembed:scale_factor"]``/``["eoembed:add_offset"]``), NaN where masked.
    """
    wanted = list(LANDSAT_BANDS if bands is None else bands)
    unknown = [b for b in wanted if b not in LANDSAT_ASSETS]
    if unknown or not wanted:
        raise ParameterError(f"Unknown Landsat band(s) {unknown or wanted}; expected names from {list(LANDSAT_BANDS)}.")
    mask_bits = tuple(int(b) for b in (mask_bits or ()))
    query = {"platform": {"in": list(platforms)}} if platforms else None
    items, periods, epsg, bounds, signer, policy, attrs = _common(
        sensor="landsat", collection=collection, bbox=bbox, start=start, end=end, catalog=catalog, sign=sign,
        max_cloud=max_cloud, query=query, composite=composite, max_timesteps=max_timesteps, crs=crs,
        resolution=resolution, chunksize=chunksize, retry=retry, gdal_env=gdal_env,
    )  # fmt: skip
    # asset key per band: first candidate key that any item has
    keys_present = {k for it in items for k in it.assets}
    band_asset: dict[str, str] = {}
    for b in wanted:
        for key in LANDSAT_ASSETS[b]:
            if key in keys_present:
                band_asset[b] = key
                break
    if bands is not None and len(band_asset) < len(wanted):
        absent = [b for b in wanted if b not in band_asset]
        raise DataSourceError(
            f"The Landsat items have no asset for band(s) {absent} (Level-2 has no B8, B9 or B11). "
            f"Available: {sorted(band_asset)}."
        )
    band_names = [b for b in wanted if b in band_asset]
    if not band_names:
        raise DataSourceError(f"The items carry none of the Landsat bands {wanted}; is {collection!r} right?")
    qa_key = next((k for k in ("qa_pixel", "QA_PIXEL") if k in keys_present), None)
    if mask_bits and qa_key is None:
        raise DataSourceError("The items have no 'qa_pixel' asset; pass mask_bits=None to skip cloud masking.")
    assets = [band_asset[b] for b in band_names] + ([qa_key] if mask_bits else [])
    raw = _stack(
        items, assets, epsg=epsg, bounds=bounds, resolution=resolution, chunksize=chunksize,
        signer=signer, policy=policy, gdal_env=gdal_env,
    )  # fmt: skip
    data = raw.sel(band=[band_asset[b] for b in band_names])
    if mask_bits:
        data = data.where(qa_pixel_valid(raw.sel(band=qa_key, drop=True), mask_bits))
    data = data.assign_coords(band=band_names)
    cube = composite_median(data, periods)
    attrs.update(
        {
            "eoembed:scale_factor": 2.75e-05,
            "eoembed:add_offset": -0.2,
            "eoembed:mask_bits": list(mask_bits),
        }
    )
    return _finish(cube, band_names=band_names, common_names=LANDSAT_COMMON_NAMES,
                   wavelengths=sensors.LANDSAT_WAVELENGTHS, epsg=epsg, name="reflectance", attrs=attrs)
