"""A stackstac ``Reader`` that signs lazily, refreshes expired signatures and retries.

stackstac builds one reader per (item, asset) and calls ``read(window)`` from dask
threads. :class:`RetryingReader` wraps stackstac's own ``AutoParallelRioReader``
(all GDAL handling, VRT warping for other UTM zones, thread-local datasets stay
stackstac's) and adds:

* signing at open time (never at search time), so long jobs use fresh tokens;
* on HTTP 403 / expired SAS: re-sign with ``refresh=True`` and retry;
* on 429, 5xx, timeouts and dropped connections: exponential backoff, reopen, retry
  (GDAL's own ``GDAL_HTTP_MAX_RETRY`` runs underneath for the HTTP status cases);
* after that, :class:`eoembed.exceptions.DataSourceError` naming the STAC item id and
  the asset key.

Instances are created by :func:`reader_factory`, a picklable ``functools.partial``
carrying the signer, the retry policy and a table ``href -> (item id, asset key)``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from eoembed.data._retry import DEFAULT_RETRY, RetryPolicy, classify_error
from eoembed.data._signing import Signer
from eoembed.exceptions import DataSourceError

__all__ = ["RetryingReader", "reader_factory", "AssetReadError"]


class AssetReadError(DataSourceError):
    """An asset could not be read after retries; names the STAC item and asset."""

    def __init__(self, message: str, *, item_id: str | None = None, asset: str | None = None, url: str = ""):
        super().__init__(message)
        self.item_id = item_id
        self.asset = asset
        self.url = url

    def __reduce__(self):  # keep the fields when dask ships the error between processes
        return (_rebuild_asset_error, (str(self), self.item_id, self.asset, self.url))


def _rebuild_asset_error(message, item_id, asset, url):
    return AssetReadError(message, item_id=item_id, asset=asset, url=url)


class RetryingReader:
    """stackstac ``Reader`` with signing, signature refresh and retries (see module doc)."""

    def __init__(
        self,
        *,
        url: str,
        spec: Any,
        resampling: Any,
        dtype: np.dtype,
        fill_value: int | float,
        scale_offset: tuple[float, float],
        gdal_env: Any = None,
        errors_as_nodata: tuple[Exception, ...] = (),
        signer: Signer | None = None,
        policy: RetryPolicy = DEFAULT_RETRY,
        labels: Mapping[str, tuple[str, str]] | None = None,
        sleep: Any = None,
    ) -> None:
        self.url = url
        self.signer = signer
        self.policy = policy
        self.labels = labels or {}
        self._sleep = sleep or time.sleep
        self._kwargs = dict(
            spec=spec,
            resampling=resampling,
            dtype=dtype,
            fill_value=fill_value,
            scale_offset=scale_offset,
            gdal_env=gdal_env,
            errors_as_nodata=errors_as_nodata,
        )
        self._inner: Any = None  # stackstac.rio_reader.AutoParallelRioReader
        self._generation = 0
        self._lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------
    def _label(self) -> tuple[str | None, str | None]:
        return self.labels.get(self.url, (None, None))

    def _describe(self) -> str:
        item_id, asset = self._label()
        if item_id is None:
            return f"asset {self.url!r}"
        return f"asset {asset!r} of STAC item {item_id!r} ({self.url})"

    def _current(self, *, refresh: bool = False, seen_generation: int | None = None):
        """The inner reader; rebuild it (re-signing) when asked and not already done."""
        from stackstac.rio_reader import AutoParallelRioReader  # data extra; imported lazily

        with self._lock:
            stale = seen_generation is not None and seen_generation == self._generation
            if self._inner is None or stale:
                if self._inner is not None:
                    try:
                        self._inner.close()
                    except Exception:  # pragma: no cover - closing is best effort
                        pass
                href = self.url
                if self._generation:  # a reopen after a failure: drop GDAL's cached failure
                    clear_gdal_http_cache(href)
                if self.signer is not None:
                    href = self.signer(self.url, refresh=refresh and stale)
                self._inner = AutoParallelRioReader(url=href, **self._kwargs)
                self._generation += 1
            return self._inner, self._generation

    # -- Reader protocol ----------------------------------------------------------
    def read(self, window, **kwargs) -> np.ndarray:
        policy = self.policy
        delays = list(policy.delays())
        transient_tries = 0
        refreshes = 0
        inner, gen = self._current()
        while True:
            try:
                return inner.read(window, **kwargs)
            except DataSourceError:
                raise
            except Exception as err:  # noqa: BLE001 - classified below
                kind = classify_error(err)
                item_id, asset = self._label()
                if kind == "expired" and self.signer is not None and refreshes < policy.max_refresh:
                    refreshes += 1
                    inner, gen = self._current(refresh=True, seen_generation=gen)
                    continue
                if kind == "transient" and transient_tries < len(delays):
                    self._sleep(delays[transient_tries])
                    transient_tries += 1
                    inner, gen = self._current(seen_generation=gen)
                    continue
                tries = 1 + transient_tries + refreshes
                if kind == "expired":
                    hint = (
                        "The storage refused the request (HTTP 403) even after re-signing the URL "
                        f"{refreshes} time(s). Check that sign= matches the catalogue "
                        "(sign='planetary-computer' for Planetary Computer data) and that your "
                        "credentials or subscription key are valid."
                        if self.signer is not None
                        else "The storage refused the request (HTTP 403) and no signer is set: "
                        "pass sign='planetary-computer' (or your own sign= function)."
                    )
                elif kind == "transient":
                    hint = (
                        f"The network or server kept failing after {tries} attempts (each with GDAL's own HTTP retries). Try again later, "
                        "or raise the number of attempts with retry=RetryPolicy(max_attempts=...)."
                    )
                else:
                    hint = "This error is not retried; check that the asset exists and is a readable GeoTIFF."
                raise AssetReadError(
                    f"Could not read {self._describe()}: {_root_message(err)}. {hint}",
                    item_id=item_id,
                    asset=asset,
                    url=self.url,
                ) from err

    def close(self) -> None:
        with self._lock:
            if self._inner is not None:
                self._inner.close()
                self._inner = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover
            pass

    def __getstate__(self) -> dict:
        return dict(
            url=self.url, signer=self.signer, policy=self.policy, labels=self.labels, **self._kwargs
        )

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


@functools.lru_cache(maxsize=1)
def _vsicurl_clear_fn():
    """``VSICurlPartialClearCache`` from the GDAL that rasterio loaded, or None.

    rasterio does not expose it. GDAL remembers failed HTTP requests per URL (file
    size, "does not exist") across datasets, so without clearing, a reopen after a
    5xx or a dropped connection would fail again without touching the network.
    """
    import ctypes
    import ctypes.util
    import glob
    import os

    candidates: list[str] = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.rstrip().split(" ")[-1]
                if "libgdal" in os.path.basename(path) and path not in candidates:
                    candidates.append(path)
    except OSError:
        pass
    try:
        import rasterio

        libs = os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)), "rasterio.libs")
        candidates += sorted(glob.glob(os.path.join(libs, "libgdal*")))
    except Exception:  # pragma: no cover
        pass
    found = ctypes.util.find_library("gdal")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            fn = ctypes.CDLL(path).VSICurlPartialClearCache
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_char_p]
        fn.restype = None
        return fn
    return None  # pragma: no cover - then retries rely on GDAL_HTTP_MAX_RETRY only


def clear_gdal_http_cache(href: str) -> bool:
    """Forget GDAL's cached state (incl. failures) for ``href`` and its signed variants."""
    if not href.startswith(("http://", "https://")):
        return False
    fn = _vsicurl_clear_fn()
    if fn is None:
        return False
    fn(("/vsicurl/" + href.split("?", 1)[0]).encode())
    return True


def _root_message(err: BaseException) -> str:
    e: BaseException = err
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {e}"


def reader_factory(
    *,
    signer: Signer | None,
    policy: RetryPolicy,
    labels: Mapping[str, tuple[str, str]],
) -> Any:
    """A ``reader=`` argument for :func:`stackstac.stack` (picklable partial)."""
    return functools.partial(RetryingReader, signer=signer, policy=policy, labels=dict(labels))
