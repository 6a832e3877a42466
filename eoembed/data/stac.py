"""From an area and a date range to a clean, lazy datacube, via STAC.

Pipeline (one function per stage, like ``stackstac.stack``), one module per stage::

    _query (bbox, dates, CRS, filters) ──► _search.search_items
        ──► _recipes (per-sensor assets and mask rule, as data) ──► _stack._stack (stackstac + RetryingReader)
        ──► sensor step (S2 harmonization, S1 dB) ──► composite_median ──► _stack._finish (float32, CRS, attrs)

This module holds only the public loaders, which wire those stages together.

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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from eoembed import sensors
from eoembed.data._composite import (
    DEFAULT_QA_MASK_BITS,
    DEFAULT_SCL_MASK,
    baseline_needs_offset,
    composite_median,
    harmonize_s2,
    to_db,
)
from eoembed.data._query import _check_bbox, _check_crs, _check_dates, _check_options, utm_epsg
from eoembed.data._recipes import LANDSAT, SENTINEL1, SENTINEL2, SensorRecipe, resolve_assets, select_bands
from eoembed.data._retry import DEFAULT_RETRY, RetryPolicy
from eoembed.data._search import _item_time_range, search_items
from eoembed.data._signing import PC_STAC_URL, resolve_signer
from eoembed.data._stack import _finish, _limit_scenes, _out_bounds, _periods, _stack, _time_coord
from eoembed.sensors import LANDSAT_BANDS, S1_BANDS, S2_BANDS  # band tables: owned by eoembed.sensors

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


def _common(
    recipe: SensorRecipe,
    *,
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
    """Validate, search, pick grid and periods: shared by the three sensors (attrs include the recipe's scale)."""
    bbox = _check_bbox(bbox)
    t0, t1 = _check_dates(start, end)
    _check_options(composite, max_timesteps, resolution)
    periods = None
    if composite is not None:  # validate the name and the timestep limit before any network call
        periods = _periods(composite, None, t0, t1, max_timesteps)
    policy = retry or DEFAULT_RETRY
    catalog_url = PC_STAC_URL if catalog is None else (str(catalog) if isinstance(catalog, str) else None)
    signer = resolve_signer(sign, catalog_url)
    epsg = _check_crs(crs, bbox)
    items = search_items(
        collection, bbox, t0, t1, catalog=catalog, max_cloud=max_cloud, query=query, retry=policy
    )
    if composite is None:
        items = _limit_scenes(items, max_timesteps, recipe.sensor)
        periods = _periods(None, items, t0, t1, max_timesteps)
    bounds = _out_bounds(bbox, epsg, resolution)
    attrs = {
        "eoembed:sensor": recipe.sensor,
        "eoembed:collection": collection,
        "eoembed:catalog": catalog_url or "static",
        "eoembed:bbox": list(bbox),
        "eoembed:start": str(t0.date()),
        "eoembed:end": str(t1.date()),
        "eoembed:composite": composite or "none",
        "eoembed:max_cloud": max_cloud,
        "eoembed:items": [it.id for it in items],
        "eoembed:resolution": float(resolution),
        **recipe.attrs,
    }
    return items, periods, epsg, bounds, signer, policy, attrs


def _fetch(recipe: SensorRecipe, items, band_names, mask_values: tuple[int, ...], *, explicit: bool,
           collection: str, extra_properties=None, **grid) -> tuple[xr.DataArray, xr.DataArray]:
    """The shared path of every loader: assets from the recipe → stack → masked bands.

    Returns ``(data, raw)``: ``data`` has the recipe's band names (absent ones NaN or
    dropped, per the recipe), ``raw`` is the stack with its per-scene coordinates.
    """
    names, band_asset, mask_key = resolve_assets(recipe, items, band_names, explicit=explicit,
                                                 masked=bool(mask_values), collection=collection)
    assets = [band_asset[b] for b in names if b in band_asset] + ([mask_key] if mask_key else [])
    raw = _stack(items, assets, extra_properties=extra_properties, **grid)
    return select_bands(recipe, raw, names, band_asset, mask_key, mask_values), raw


def _finish_as(recipe: SensorRecipe, cube, band_names, epsg: int, attrs) -> xr.DataArray:
    return _finish(cube, band_names=band_names, common_names=recipe.common_names, wavelengths=recipe.wavelengths,
                   epsg=epsg, name=recipe.name, attrs=attrs)


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
    collection: str = SENTINEL2.collection,
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
    band_names = SENTINEL2.check_bands(bands)
    mask_classes = tuple(int(c) for c in (mask_classes or ()))
    items, periods, epsg, bounds, signer, policy, attrs = _common(
        SENTINEL2, collection=collection, bbox=bbox, start=start, end=end, catalog=catalog, sign=sign,
        max_cloud=max_cloud, query=None, composite=composite, max_timesteps=max_timesteps, crs=crs,
        resolution=resolution, chunksize=chunksize, retry=retry, gdal_env=gdal_env,
    )  # fmt: skip
    decisions = {}
    for it in items:
        off, why = sensors.s2_offset(it.properties, {k: a.to_dict() for k, a in it.assets.items()},
                                     time=_item_time_range(it)[0])
        decisions[it.id] = {_OFFSET_PROP: off, _REASON_PROP: why}
    data, raw = _fetch(
        SENTINEL2, items, band_names, mask_classes, explicit=bands is not None, collection=collection, epsg=epsg,
        bounds=bounds, resolution=resolution, chunksize=chunksize, signer=signer, policy=policy, gdal_env=gdal_env,
        extra_properties=decisions,
    )  # fmt: skip
    baselines = _time_coord(raw, "s2:processing_baseline")
    offsets = np.array([float(o or 0.0) for o in _time_coord(raw, _OFFSET_PROP)])
    if harmonize:
        data = harmonize_s2(data, offsets)
    inferred = baseline_needs_offset([None] * len(baselines), raw["time"].values)
    filled = [b if b is not None else ("04.00" if n else "") for b, n in zip(baselines, inferred)]
    cube = composite_median(data, periods, baselines=filled)
    attrs.update(
        {
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
    return _finish_as(SENTINEL2, cube, band_names, epsg, attrs)


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
    collection: str = SENTINEL1.collection,
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
    band_names = SENTINEL1.check_bands(bands)
    items, periods, epsg, bounds, signer, policy, attrs = _common(
        SENTINEL1, collection=collection, bbox=bbox, start=start, end=end, catalog=catalog, sign=sign,
        max_cloud=None, query=query, composite=composite, max_timesteps=max_timesteps, crs=crs,
        resolution=resolution, chunksize=chunksize, retry=retry, gdal_env=gdal_env,
    )  # fmt: skip
    data, _ = _fetch(
        SENTINEL1, items, band_names, (), explicit=True, collection=collection, epsg=epsg, bounds=bounds,
        resolution=resolution, chunksize=chunksize, signer=signer, policy=policy, gdal_env=gdal_env,
    )  # fmt: skip
    if db:
        data = to_db(data)
    cube = composite_median(data, periods)
    attrs["eoembed:units"] = "dB" if db else "linear"
    return _finish_as(SENTINEL1, cube, band_names, epsg, attrs)


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
    collection: str = LANDSAT.collection,
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
    wanted = LANDSAT.check_bands(bands)
    mask_bits = tuple(int(b) for b in (mask_bits or ()))
    query = {"platform": {"in": list(platforms)}} if platforms else None
    items, periods, epsg, bounds, signer, policy, attrs = _common(
        LANDSAT, collection=collection, bbox=bbox, start=start, end=end, catalog=catalog, sign=sign,
        max_cloud=max_cloud, query=query, composite=composite, max_timesteps=max_timesteps, crs=crs,
        resolution=resolution, chunksize=chunksize, retry=retry, gdal_env=gdal_env,
    )  # fmt: skip
    data, _ = _fetch(
        LANDSAT, items, wanted, mask_bits, explicit=bands is not None, collection=collection, epsg=epsg,
        bounds=bounds, resolution=resolution, chunksize=chunksize, signer=signer, policy=policy, gdal_env=gdal_env,
    )  # fmt: skip
    band_names = [str(b) for b in data["band"].values]
    cube = composite_median(data, periods)
    attrs["eoembed:mask_bits"] = list(mask_bits)
    return _finish_as(LANDSAT, cube, band_names, epsg, attrs)
