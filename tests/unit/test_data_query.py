"""Pure helpers of eoembed.data: query validation, UTM choice, retry policy, signing, sample keys."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from eoembed.data import _query, _retry, _signing, _stack, stac
from eoembed.data._reader import AssetReadError, RetryingReader
from eoembed.data._retry import RetryPolicy, classify_error
from eoembed.data._sample import sample_key
from eoembed.exceptions import ParameterError, QueryError


@pytest.mark.parametrize(
    "lon, lat, epsg",
    [(11.99, 45.5, 32632), (12.0, 45.5, 32633), (-0.1, 51.5, 32630), (-180, 0, 32601), (179.99, -10, 32760),
     (151.2, -33.9, 32756)],
)  # fmt: skip
def test_utm_epsg(lon, lat, epsg):
    assert _query.utm_epsg(lon, lat) == epsg


def test_check_dates_end_day_is_included():
    t0, t1 = _query._check_dates("2024-01-01", "2024-01-31")
    assert t0 == pd.Timestamp("2024-01-01")
    assert t1 > pd.Timestamp("2024-01-31 23:59:59")
    t0, t1 = _query._check_dates("2024-01-01T10:00", "2024-01-01T12:00")
    assert t1 == pd.Timestamp("2024-01-01T12:00")
    with pytest.raises(QueryError, match="reversed"):
        _query._check_dates("2024-02-01", "2024-01-01")


def test_bbox_messages_say_how_to_fix():
    with pytest.raises(QueryError, match="swapped"):
        _query._check_bbox((45.4, 11.9, 45.5, 95.0))
    with pytest.raises(QueryError, match="antimeridian"):
        _query._check_bbox((179.0, 0.0, -179.0, 1.0))
    assert _query._check_bbox([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)


def test_out_bounds_are_snapped_and_cover_the_bbox():
    b = _stack._out_bounds((11.99, 45.49, 12.0, 45.5), 32632, 10)
    assert all(v % 10 == 0 for v in b)
    assert b[2] - b[0] > 700 and b[3] - b[1] > 1000


def test_retry_policy_delays_and_validation():
    p = RetryPolicy(max_attempts=4, backoff=1.0, max_backoff=3.0)
    d = list(p.delays())
    assert len(d) == 3
    assert 1.0 <= d[0] <= 1.1 and 2.0 <= d[1] <= 2.2 and 3.0 <= d[2] <= 3.3
    assert p.gdal_options()["GDAL_HTTP_MAX_RETRY"] == "3"
    r = p.urllib3_retry()
    assert 429 in r.status_forcelist and r.allowed_methods is None
    with pytest.raises(ParameterError):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    "exc, kind",
    [
        (OSError("HTTP response code: 403"), "expired"),
        (OSError("<Code>AuthenticationFailed</Code> Signed expiry time"), "expired"),
        (OSError("HTTP response code: 429"), "transient"),
        (OSError("HTTP response code: 503"), "transient"),
        (OSError("CURL error: Empty reply from server"), "transient"),
        (OSError("CURL error: Operation timed out after 10000 milliseconds"), "transient"),
        (ConnectionResetError("peer"), "transient"),
        (OSError("HTTP response code: 404"), "fatal"),
        (ValueError("bug"), "fatal"),
    ],
)
def test_classify_error(exc, kind):
    assert classify_error(exc) == kind


def test_classify_follows_the_cause_chain():
    try:
        try:
            raise OSError("HTTP response code: 500")
        except OSError as inner:
            raise RuntimeError("Error opening 'x'") from inner
    except RuntimeError as outer:
        assert classify_error(outer) == "transient"


def test_strip_sas_and_resolve_signer():
    signed = "https://a.blob.core.windows.net/c/x.tif?st=1&se=2&sp=rl&sig=abc&keep=1"
    assert _signing.strip_sas(signed) == "https://a.blob.core.windows.net/c/x.tif?keep=1"
    assert _signing.is_signed(signed) and not _signing.is_signed("https://a/x.tif")
    assert isinstance(_signing.resolve_signer("auto", stac.PC_STAC_URL), _signing.PlanetaryComputerSigner)
    assert _signing.resolve_signer("auto", "https://earth-search.aws.element84.com/v1") is None
    assert _signing.resolve_signer(None, stac.PC_STAC_URL) is None
    assert isinstance(_signing.resolve_signer(lambda h: h, None), _signing.CallableSigner)
    with pytest.raises(ParameterError, match="planetary-computer"):
        _signing.resolve_signer("s3", None)


def test_pc_signer_leaves_other_hosts_alone():
    href = "http://example.com/x.tif"
    assert _signing.PlanetaryComputerSigner()(href) == href


def test_reader_and_errors_pickle():
    r = RetryingReader(
        url="http://x/a.tif", spec=None, resampling=None, dtype="float32", fill_value=0.0,
        scale_offset=(1, 0), signer=_signing.PlanetaryComputerSigner(), policy=RetryPolicy(max_attempts=2),
        labels={"http://x/a.tif": ("item", "B02")},
    )  # fmt: skip
    clone = pickle.loads(pickle.dumps(r))
    assert clone.url == r.url and clone.policy == r.policy and clone._label() == ("item", "B02")
    e = pickle.loads(pickle.dumps(AssetReadError("boom", item_id="i", asset="a", url="u")))
    assert (e.item_id, e.asset, e.url, str(e)) == ("i", "a", "u", "boom")


def test_sample_key_is_stable_and_sensitive():
    k = sample_key("sentinel2", (1, 2, 3, 4), "2024-01-01", "2024-02-01", {"composite": "monthly"})
    assert k == sample_key("sentinel2", [1.0, 2.0, 3.0, 4.0], "2024-01-01", "2024-02-01", {"composite": "monthly"})
    assert k != sample_key("sentinel2", (1, 2, 3, 4), "2024-01-01", "2024-03-01", {"composite": "monthly"})
    assert k != sample_key("landsat", (1, 2, 3, 4), "2024-01-01", "2024-02-01", {"composite": "monthly"})
    # retry / gdal_env do not change what is computed
    assert k == sample_key("sentinel2", (1, 2, 3, 4), "2024-01-01", "2024-02-01",
                           {"composite": "monthly", "retry": RetryPolicy(max_attempts=2)})  # fmt: skip
    assert len(k) == 16


def test_default_retry_is_sane():
    assert _retry.DEFAULT_RETRY.max_attempts >= 3
