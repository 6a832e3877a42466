"""URL signing for asset reads, with refresh for long jobs.

Assets are stacked with their *unsigned* hrefs and signed by the reader when it opens
them (``eoembed.data._reader``). A job that runs for hours therefore never reads with
a token fetched at search time, and an expired or rejected signature (HTTP 403) is
handled by :meth:`Signer.__call__` with ``refresh=True``: drop the cached token, get a
fresh one, retry.

Signers are small picklable objects so that the dask graph can travel to distributed
workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

from eoembed.exceptions import DataSourceError, ParameterError

__all__ = ["Signer", "PlanetaryComputerSigner", "CallableSigner", "resolve_signer", "PC_STAC_URL"]

PC_STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"

#: Query parameters of an Azure SAS token; their presence means "already signed".
_SAS_KEYS = {"st", "se", "sp", "sig", "sv", "sr", "skoid", "sktid", "skt", "ske", "sks", "skv", "spr"}


class Signer(Protocol):
    """Turns an unsigned href into a readable one."""

    def __call__(self, href: str, *, refresh: bool = False) -> str:  # pragma: no cover - protocol
        ...


def strip_sas(href: str) -> str:
    """``href`` without Azure SAS query parameters (other parameters are kept)."""
    parts = urlsplit(href)
    if not parts.query:
        return href
    kept = [
        kv
        for kv in parts.query.split("&")
        if kv and kv.split("=", 1)[0].lower() not in _SAS_KEYS
    ]
    return urlunsplit(parts._replace(query="&".join(kept)))


def is_signed(href: str) -> bool:
    """Whether ``href`` already carries an Azure SAS token."""
    return bool(set(parse_qs(urlsplit(href).query)) & {"st", "se", "sp", "sig"})


class PlanetaryComputerSigner:
    """Sign Azure Blob Storage hrefs with the ``planetary-computer`` package.

    The SAS token endpoint is ``planetary_computer.settings.Settings.get().sas_url``
    (environment variable ``PC_SDK_SAS_URL``; a subscription key from
    ``PC_SDK_SUBSCRIPTION_KEY`` raises rate limits). Tokens are cached by the package
    per storage account and container; ``refresh=True`` drops that cache entry first,
    so a token that was rejected is never reused.
    """

    def __call__(self, href: str, *, refresh: bool = False) -> str:
        try:
            import planetary_computer as pc
            from planetary_computer import sas
            from planetary_computer.utils import parse_blob_url
        except ImportError as err:  # pragma: no cover - part of the data extra
            from eoembed.exceptions import MissingOptionalDependency

            raise MissingOptionalDependency(
                "Signing Planetary Computer assets needs the 'planetary-computer' package. "
                "Install it with: pip install 'eoembed[data]', or pass sign=None."
            ) from err
        unsigned = strip_sas(href)
        parts = urlsplit(unsigned)
        if not parts.netloc.endswith(sas.BLOB_STORAGE_DOMAIN):
            return href  # not in Azure blob storage: nothing to sign
        if refresh:
            account, container = parse_blob_url(parts)
            key = f"{pc.settings.Settings.get().sas_url}/{account}/{container}"
            sas.TOKEN_CACHE.pop(key, None)
        try:
            return sas.sign_url(unsigned)
        except Exception as err:
            raise DataSourceError(
                f"Could not get a Planetary Computer SAS token to read {unsigned!r}: {err}. "
                "Check the network connection (and PC_SDK_SUBSCRIPTION_KEY if you use one); "
                "the token endpoint is "
                f"{pc.settings.Settings.get().sas_url!r}."
            ) from err

    def __repr__(self) -> str:
        return "PlanetaryComputerSigner()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlanetaryComputerSigner)

    def __hash__(self) -> int:
        return hash(type(self))

    def __dask_tokenize__(self) -> Any:
        return "eoembed-PlanetaryComputerSigner"


class CallableSigner:
    """Adapt a user function ``f(href) -> signed_href`` to the :class:`Signer` protocol.

    On refresh the function is simply called again on the unsigned href; it is
    expected to fetch a fresh token when its previous one has expired.
    """

    def __init__(self, func: Callable[[str], str]) -> None:
        self.func = func

    def __call__(self, href: str, *, refresh: bool = False) -> str:
        try:
            import inspect

            if "refresh" in inspect.signature(self.func).parameters:
                out = self.func(href, refresh=refresh)  # type: ignore[call-arg]
            else:
                out = self.func(href)
        except DataSourceError:
            raise
        except Exception as err:
            raise DataSourceError(f"The sign= function failed on {href!r}: {err!r}") from err
        if not isinstance(out, str):
            raise ParameterError(
                f"The sign= function returned {type(out).__name__}, expected the signed href as a str."
            )
        return out

    def __repr__(self) -> str:
        return f"CallableSigner({getattr(self.func, '__qualname__', self.func)!r})"


def resolve_signer(sign: Any, catalog_url: str | None) -> Signer | None:
    """Turn the public ``sign=`` option into a :class:`Signer` (or None).

    ``"auto"`` means Planetary Computer signing when the catalogue is the Planetary
    Computer STAC API, no signing otherwise.
    """
    if sign == "auto":
        if catalog_url is not None and "planetarycomputer.microsoft.com" in catalog_url:
            return PlanetaryComputerSigner()
        return None
    if sign is None or sign is False:
        return None
    if isinstance(sign, str):
        if sign.lower().replace("_", "-") in {"planetary-computer", "pc", "planetarycomputer"}:
            return PlanetaryComputerSigner()
        raise ParameterError(
            f"Unknown sign={sign!r}. Expected 'planetary-computer', None (no signing), "
            "'auto' (sign only for the Planetary Computer catalogue) or a function href -> signed href."
        )
    if isinstance(sign, (PlanetaryComputerSigner, CallableSigner)):
        return sign
    if callable(sign):
        return CallableSigner(sign)
    raise ParameterError(
        f"sign= must be 'planetary-computer', None, 'auto' or a callable, not {type(sign).__name__}."
    )
