"""Retry policy shared by STAC API calls, token requests and asset reads.

One frozen :class:`RetryPolicy` drives three layers so they agree on how hard to try:

* ``requests``/``urllib3`` (STAC API search, via pystac-client's ``StacApiIO``):
  :meth:`RetryPolicy.urllib3_retry`.
* GDAL's own HTTP retries inside ``/vsicurl`` (asset reads):
  :meth:`RetryPolicy.gdal_options`.
* A Python-level loop around each windowed read (``eoembed.data._reader``), which
  also catches what GDAL does not retry (dropped connections during open, expired
  signatures): :func:`classify_error` and :meth:`RetryPolicy.delays`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from collections.abc import Iterator
from typing import Literal

from eoembed.exceptions import ParameterError

#: every classified network failure is logged here (INFO: will be retried/re-signed, WARNING: fatal)
log = logging.getLogger("eoembed.data.retry")

__all__ = ["RetryPolicy", "classify_error", "DEFAULT_RETRY"]

#: Status codes worth retrying: rate limiting and server-side trouble.
RETRY_STATUS = (429, 500, 502, 503, 504)

ErrorKind = Literal["expired", "transient", "fatal"]

_HTTP_CODE = re.compile(r"HTTP (?:response )?(?:code|error|status)[:= ]*\s*(\d{3})", re.IGNORECASE)
_TRANSIENT_TEXT = re.compile(
    r"timed? ?out|timeout|connection (?:was )?(?:reset|refused|aborted|closed)|empty reply|"
    r"recv failure|send failure|transfer closed|couldn'?t connect|failed to connect|"
    r"broken pipe|remote ?disconnected|connection ?error|protocol ?error|"
    r"ssl|curl error|read failed|IReadBlock failed|TIFFReadEncodedTile|TIFFFillTile",
    re.IGNORECASE,
)
_EXPIRED_TEXT = re.compile(
    r"AuthenticationFailed|signature (?:not valid|expired)|signed expiry|token (?:has )?expired|"
    r"expired (?:sas|token)",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently eoembed retries network operations.

    Parameters
    ----------
    max_attempts:
        Total tries of one operation (first try included). ``1`` disables retries.
    backoff:
        Delay in seconds before the second try; it doubles on each further try
        (exponential backoff), with up to 10 % random jitter.
    max_backoff:
        Upper bound of one delay, in seconds.
    timeout:
        Timeout of one HTTP request, in seconds (connect and read).
    max_refresh:
        How many times an expired or rejected URL signature (HTTP 403) is refreshed
        before the read is declared failed.
    """

    max_attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    timeout: float = 60.0
    max_refresh: int = 2

    def __post_init__(self) -> None:
        if int(self.max_attempts) < 1:
            raise ParameterError(
                f"RetryPolicy(max_attempts={self.max_attempts!r}) must be >= 1; "
                "use max_attempts=1 to disable retries."
            )
        for name in ("backoff", "max_backoff", "timeout"):
            if not float(getattr(self, name)) >= 0:
                raise ParameterError(f"RetryPolicy({name}={getattr(self, name)!r}) must be a number >= 0.")
        if int(self.max_refresh) < 0:
            raise ParameterError(f"RetryPolicy(max_refresh={self.max_refresh!r}) must be >= 0.")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        base = min(self.backoff * (2.0**attempt), self.max_backoff)
        return base * (1.0 + 0.1 * random.random())

    def delays(self) -> Iterator[float]:
        """The waits between consecutive tries: ``max_attempts - 1`` values."""
        for attempt in range(self.max_attempts - 1):
            yield self.delay(attempt)

    def urllib3_retry(self):
        """A ``urllib3.Retry`` for ``requests`` sessions (STAC API, token endpoint).

        Retries connection errors, dropped reads and :data:`RETRY_STATUS` answers on
        every HTTP verb (STAC ``POST /search`` is a read and safe to repeat), honours
        ``Retry-After`` and returns the last response instead of raising, so the caller
        can report the status it saw.
        """
        from urllib3.util.retry import Retry

        return Retry(
            total=self.max_attempts - 1,
            connect=self.max_attempts - 1,
            read=self.max_attempts - 1,
            status=self.max_attempts - 1,
            backoff_factor=self.backoff / 2.0,  # urllib3 sleeps factor * 2**(n-1)
            backoff_max=self.max_backoff,
            status_forcelist=RETRY_STATUS,
            allowed_methods=None,
            respect_retry_after_header=True,
            raise_on_status=False,
        )

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options for ``/vsicurl`` reads that follow this policy.

        GDAL retries 429 and 5xx answers itself (``GDAL_HTTP_MAX_RETRY``); what it
        does not retry is caught by the Python loop in the reader.
        """
        return {
            "GDAL_HTTP_MAX_RETRY": str(self.max_attempts - 1),
            "GDAL_HTTP_RETRY_DELAY": f"{max(self.backoff, 0.0):g}",
            "GDAL_HTTP_RETRY_CODES": ",".join(str(c) for c in RETRY_STATUS),
            "GDAL_HTTP_TIMEOUT": str(max(int(round(self.timeout)), 1)),
            "GDAL_HTTP_CONNECTTIMEOUT": str(max(int(round(min(self.timeout, 30.0))), 1)),
        }


DEFAULT_RETRY = RetryPolicy()


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([e.__cause__, e.__context__])


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status code mentioned by ``exc`` or its causes, if any."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
        m = _HTTP_CODE.search(str(e))
        if m:
            return int(m.group(1))
    return None


def classify_error(exc: BaseException) -> ErrorKind:
    """Decide what to do about a failed network operation.

    Returns
    -------
    str
        ``"expired"``: the URL signature was rejected (HTTP 403, or an Azure
        ``AuthenticationFailed``/expiry message): re-sign and retry.
        ``"transient"``: rate limiting (429), server errors (5xx), timeouts, dropped
        connections and other I/O hiccups: back off and retry.
        ``"fatal"``: anything else (404, 400, 401, programming errors): do not retry.
    """
    text = " | ".join(str(e) for e in _chain(exc))
    status = http_status_of(exc)
    kind = _classify(exc, text, status)
    log.log(logging.WARNING if kind == "fatal" else logging.INFO, "network error (%s%s): %s: %s",
            kind, f", HTTP {status}" if status is not None else "", type(exc).__name__, str(exc)[:300])
    return kind


def _classify(exc: BaseException, text: str, status: int | None) -> ErrorKind:
    if status == 403 or _EXPIRED_TEXT.search(text):
        return "expired"
    if status is not None:
        return "transient" if status in RETRY_STATUS or status == 408 else "fatal"
    if _TRANSIENT_TEXT.search(text):
        return "transient"
    names = {type(e).__name__ for e in _chain(exc)}
    transient_types = {
        "ConnectionError",
        "ConnectionResetError",
        "ConnectionAbortedError",
        "TimeoutError",
        "Timeout",
        "ReadTimeout",
        "ConnectTimeout",
        "ChunkedEncodingError",
        "ProtocolError",
        "RemoteDisconnected",
        "IncompleteRead",
    }
    if names & transient_types:
        return "transient"
    return "fatal"
