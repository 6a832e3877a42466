"""STAC search: one call from (collection, bbox, dates, filters) to a sorted list of items.

Works against a STAC API (``pystac_client`` with the :class:`~eoembed.data.RetryPolicy`'s
HTTP retries), a static catalogue opened by URL or path, or in-memory pystac objects;
static sources are filtered locally by the same rules (:func:`_filter_local`).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eoembed.data._query import _check_bbox, _check_dates, _matches_query
from eoembed.data._retry import DEFAULT_RETRY, RetryPolicy, classify_error
from eoembed.data._signing import PC_STAC_URL
from eoembed.exceptions import DataSourceError, NoItemsFoundError, ParameterError, QueryError, require


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
