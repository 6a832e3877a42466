"""Download-once cache of a STAC composite cube, written to a Zarr store.

The files the demo, tutorials and tests use (sample cubes, weights) are in :mod:`eoembed.data.registry`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import DataSourceError, NoItemsFoundError, ParameterError

__all__ = ["fetch_sample", "sample_key", "SampleUnavailableError"]

_SOURCES = ("sentinel2", "sentinel1", "landsat")
_VAR = "cube"


class SampleUnavailableError(DataSourceError):
    """The sample cube is not cached and could not be downloaded."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def sample_key(source: str, bbox: Sequence[float], start: Any, end: Any, options: dict[str, Any]) -> str:
    """Stable 16-hex-digit key of a sample request (source, area, dates, options)."""
    payload = {
        "source": source,
        "bbox": [round(float(v), 7) for v in bbox],
        "start": str(start),
        "end": str(end),
        "options": _jsonable({k: v for k, v in options.items() if k not in {"retry", "gdal_env"}}),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _open(store: Path) -> xr.DataArray:
    import rioxarray  # noqa: F401

    ds = xr.open_zarr(store, consolidated=False, decode_coords="all")
    cube = ds[_VAR]
    crs = cube.attrs.pop("eoembed:crs", None) or ds.attrs.get("eoembed:crs")
    if crs:
        cube = cube.rio.write_crs(crs)
    cube.name = ds.attrs.get("eoembed:name", cube.name)
    return cube


def fetch_sample(
    bbox: Sequence[float],
    start: Any,
    end: Any,
    cache_dir: str | Path,
    *,
    source: str = "sentinel2",
    composite: str | None = "monthly",
    overwrite: bool = False,
    **options: Any,
) -> xr.DataArray:
    """Compute a composite cube once, keep it in ``cache_dir`` as Zarr, reuse it after.

    The store is named ``eoembed-sample-<key>.zarr`` where ``key`` hashes the source,
    bbox, dates and options, so a different request never reads a stale cube. The
    store is written to a temporary name and renamed when complete, so an interrupted
    download is never mistaken for a finished one.

    Parameters
    ----------
    bbox, start, end:
        As for :func:`eoembed.data.sentinel2`.
    cache_dir:
        Folder for the Zarr stores (created if needed).
    source:
        ``"sentinel2"`` (default), ``"sentinel1"`` or ``"landsat"``.
    composite:
        Passed to the loader (default ``"monthly"``).
    overwrite:
        Recompute even if the store exists.
    **options:
        Keyword options of the loader (``max_cloud``, ``catalog``, ``resolution``...).

    Returns
    -------
    xarray.DataArray
        The cube as read back from Zarr: same dims, coords, attrs and CRS as the
        loader's result, dask-backed on the local store.

    Raises
    ------
    SampleUnavailableError
        (a :class:`~eoembed.exceptions.DataSourceError`) when the cube is not cached
        and the catalogue or assets cannot be reached; the message points to
        ``eoembed demo --sample PATH`` for offline use.
    NoItemsFoundError, QueryError
        As for the loader.
    """
    from eoembed.data.stac import landsat, sentinel1, sentinel2  # the submodule, not the package: no import circle

    if source not in _SOURCES:
        raise ParameterError(f"source={source!r} is not one of {_SOURCES}.")
    cache = Path(cache_dir).expanduser()
    key = sample_key(source, bbox, start, end, {"composite": composite, **options})
    store = cache / f"eoembed-sample-{key}.zarr"
    if store.exists() and not overwrite:
        return _open(store)

    loader = {"sentinel2": sentinel2, "sentinel1": sentinel1, "landsat": landsat}[source]
    try:
        cube = loader(bbox, start, end, composite=composite, **options)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{store.name}.{uuid.uuid4().hex[:8]}.partial"
        ds = _to_dataset(cube)
        with warnings.catch_warnings():  # zarr notes that fixed-width strings (band names) have no Zarr v3 spec
            # yet; this cache is read back only by eoembed through the same zarr, so the note is not the user's
            try:
                from zarr.errors import UnstableSpecificationWarning
            except ImportError:  # a zarr without it does not warn
                pass
            else:
                warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
            ds.to_zarr(tmp, mode="w", consolidated=False, compute=True)
    except NoItemsFoundError:
        raise
    except DataSourceError as err:
        _cleanup(locals().get("tmp"))
        raise SampleUnavailableError(
            f"Could not download the sample cube ({err}). Without network access, run the demo on a "
            "cube you already have: `eoembed demo --sample PATH` with PATH a Zarr store or NetCDF/GeoTIFF "
            f"file written earlier (e.g. a copy of {store})."
        ) from err
    except BaseException:
        _cleanup(locals().get("tmp"))
        raise
    if store.exists():  # overwrite=True, or another process finished first
        shutil.rmtree(store, ignore_errors=True)
    tmp.rename(store)
    return _open(store)


def _cleanup(path: Path | None) -> None:
    if path is not None and Path(path).exists():
        shutil.rmtree(path, ignore_errors=True)


def _to_dataset(cube: xr.DataArray) -> xr.Dataset:
    """A Zarr-safe Dataset: fixed-width strings, JSON attrs, CRS kept."""
    cube = cube.copy()
    crs = cube.rio.crs
    for name, coord in list(cube.coords.items()):
        if coord.dtype == object:
            cube = cube.assign_coords({name: (coord.dims, np.asarray(coord.values, dtype=str))})
    attrs = {k: v for k, v in cube.attrs.items() if _is_json(v)}
    cube.attrs = attrs
    ds = cube.to_dataset(name=_VAR)
    ds.attrs = {"eoembed:name": str(cube.name or _VAR), "eoembed:crs": crs.to_wkt() if crs else ""}
    for var in ds.variables.values():
        var.encoding.pop("chunks", None)
        var.encoding.pop("preferred_chunks", None)
    return ds


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
