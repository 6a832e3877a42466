"""eoembed.data STAC loaders against a real (local) HTTP server: no internet, ever.

The server (tests/stac_server.py) is a STAC API + Range-capable file host + fake Azure
blob storage + fake Planetary Computer token endpoint, with fault injection. Values
are checked against a numpy hand computation from the arrays written to the COGs.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

import stac_server as ss
from eoembed.data import _composite, stac
from eoembed.data._reader import AssetReadError
from eoembed.data._retry import RetryPolicy
from eoembed.data._sample import SampleUnavailableError, fetch_sample
from eoembed.exceptions import (
    DataSourceError,
    NoItemsFoundError,
    ParameterError,
    QueryError,
    TooManyTimestepsError,
)
from unit.test_products_remote import aef  # noqa: F401  (the AlphaEarth layout served over HTTP, a fixture)

FAST = RetryPolicy(max_attempts=3, backoff=0.01, max_backoff=0.05, timeout=10)
MASK = _composite.DEFAULT_SCL_MASK


# --------------------------------------------------------------------------------------
# hand computation
# --------------------------------------------------------------------------------------
def expected_scenes(scenes, cube, *, mask=MASK, harmonize=True):
    """(scene, band, y, x) float64: stored DN at the output pixel centres, SCL-masked,
    minus 1000 for baseline >= 04.00 (clipped at 0)."""
    xs, ys = np.meshgrid(cube["x"].values, cube["y"].values)
    out = np.full((len(scenes), cube.sizes["band"], *xs.shape), np.nan)
    for i, sc in enumerate(scenes):
        if sc.epsg == 32632:
            px, py = xs, ys
        else:
            px, py = Transformer.from_crs(32632, sc.epsg, always_xy=True).transform(xs, ys)
        scl = sc.value_at("SCL", px, py)
        valid = ~np.isnan(scl) & ~np.isin(scl, mask)
        for j, band in enumerate(cube["band"].values):
            v = sc.value_at(str(band), px, py)
            if harmonize and sc.baseline is not None and float(sc.baseline) >= 4:
                v = np.maximum(v - 1000, 0)
            out[i, j] = np.where(valid, v, np.nan)
    return out


def nanmedian(a, axis=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def by_id(scenes, *ids):
    return [next(s for s in scenes if s.id == i) for i in ids]


# --------------------------------------------------------------------------------------
# the canonical cube
# --------------------------------------------------------------------------------------
def test_sentinel2_monthly_cube_is_canonical_lazy_and_matches_hand_composite(s2):
    cube = s2.load(composite="monthly", max_cloud=50)

    # lazy: building the cube read no pixels
    assert s2.server.hits(s2.container) == 0
    assert cube.chunks is not None

    assert cube.dims == ("time", "band", "y", "x")
    assert cube.dtype == np.float32
    assert cube.name == "reflectance"
    assert list(cube["band"].values) == list(stac.S2_BANDS)
    assert list(cube["common_name"].values[:4]) == ["blue", "green", "red", "nir"]
    assert list(cube["common_name"].values[4:7]) == ["rededge1", "rededge2", "rededge3"]  # STAC EO names
    assert cube["center_wavelength"].values[:3].tolist() == [0.490, 0.560, 0.665]
    assert cube.rio.crs.to_epsg() == 32632  # UTM zone of the bbox centre (11.997 E)
    assert cube.sizes["time"] == 3
    assert list(pd.DatetimeIndex(cube["time"].values).month) == [1, 2, 3]
    assert list(cube["eoembed:n_scenes"].values) == [3, 1, 0]
    # per-time baseline: the highest of the contributing scenes, "" for an empty month
    assert list(cube["s2:processing_baseline"].values) == ["05.10", "05.11", ""]
    assert cube.attrs["eoembed:harmonized"] is True
    assert cube.attrs["eoembed:scale"] == 10000
    # x/y are pixel centres on a 10 m grid
    dx = np.diff(cube["x"].values)
    dy = np.diff(cube["y"].values)
    assert np.allclose(dx, 10) and np.allclose(dy, -10)
    assert np.allclose(cube["x"].values % 10, 5) and np.allclose(cube["y"].values % 10, 5)
    assert cube.rio.transform().a == 10
    # the bbox is covered
    w, s, e, n = Transformer.from_crs(4326, 32632, always_xy=True).transform_bounds(*s2.bbox)
    assert cube["x"].min() - 5 <= w and cube["x"].max() + 5 >= e
    assert cube["y"].min() - 5 <= s and cube["y"].max() + 5 >= n

    values = cube.values
    jan = by_id(s2.scenes, "S2A_20240105", "S2B_20240115", "S2A_20240125_Z33")
    feb = by_id(s2.scenes, "S2B_20240210")
    exp_jan = nanmedian(expected_scenes(jan, cube))
    exp_feb = expected_scenes(feb, cube)[0]
    np.testing.assert_allclose(values[0], exp_jan, atol=0.01)
    np.testing.assert_allclose(values[1], exp_feb, atol=0.01)
    # March: no scene -> all NaN, never zeros
    assert np.isnan(values[2]).all()
    # February has masked (NaN) pixels exactly where SCL says so, and valid ones elsewhere
    assert 0.1 < np.isnan(values[1]).mean() < 0.6
    # signing went through the (fake) Planetary Computer token endpoint
    assert s2.server.token_requests >= 1
    assert s2.server.hits(s2.container, status=403) == 0


def test_zone33_item_is_reprojected_not_dropped(s2):
    cube = s2.load(composite=None)
    t = list(cube["time"].values).index(np.datetime64("2024-01-25"))
    z33 = by_id(s2.scenes, "S2A_20240125_Z33")[0]
    got = cube.isel(time=t).values
    # constant 2000 + 100*k per band in the file, baseline 05.10 -> minus 1000
    for j, band in enumerate(cube["band"].values):
        assert np.all(got[j] == z33.arrays[str(band)][0, 0] - 1000)


def test_composite_none_one_timestep_per_scene_with_harmonization_per_scene(s2):
    cube = s2.load(composite=None)
    assert cube.sizes["time"] == 4
    assert list(cube["eoembed:n_scenes"].values) == [1, 1, 1, 1]
    assert list(cube["s2:processing_baseline"].values) == ["05.10", "03.01", "05.10", "05.11"]
    exp = expected_scenes(s2.scenes, cube)
    np.testing.assert_allclose(cube.values, exp, atol=0.01)
    # the 03.01 scene keeps its values (no offset); the 05.10 one is shifted
    raw = expected_scenes(s2.scenes, cube, harmonize=False)
    np.testing.assert_allclose(cube.values[1], raw[1], atol=0.01)
    assert np.nanmax(raw[0] - cube.values[0]) == pytest.approx(1000)


def test_harmonize_false_keeps_offset_and_says_so(s2):
    cube = s2.load(composite=None, harmonize=False, bands=["B04"])
    assert cube.attrs["eoembed:harmonized"] is False
    exp = expected_scenes(s2.scenes, cube, harmonize=False)
    np.testing.assert_allclose(cube.values, exp, atol=0.01)


def test_mask_classes_configurable(s2):
    cube = s2.load(composite=None, bands=["B02"], mask_classes=[9])
    exp = expected_scenes(s2.scenes, cube, mask=(0, 9))  # SCL 0 is also nodata in the file
    np.testing.assert_allclose(cube.values, exp, atol=0.01)


def test_seasonal_composite(s2):
    cube = s2.load(composite="seasonal", bands=["B03"])
    # Jan-Feb fall in DJF 2023/24, March in MAM 2024
    assert cube.sizes["time"] == 2
    assert list(cube["eoembed:n_scenes"].values) == [4, 0]
    exp = nanmedian(expected_scenes(s2.scenes, cube))
    np.testing.assert_allclose(cube.values[0], exp, atol=0.01)
    assert np.isnan(cube.values[1]).all()


def test_max_cloud_filters_scenes(s2):
    cube = s2.load(composite=None, max_cloud=15, bands=["B02"])
    assert cube.attrs["eoembed:items"] == ["S2A_20240105", "S2B_20240210"]


def test_too_many_timesteps_fails_before_any_request(s2):
    n0 = len(s2.server.log)
    with pytest.raises(TooManyTimestepsError, match="max_timesteps=12") as info:
        s2.load(start="2023-01-01", end="2024-12-31", composite="monthly")
    assert isinstance(info.value, QueryError)
    assert "seasonal" in str(info.value)
    assert len(s2.server.log) == n0


def test_composite_none_keeps_least_cloudy_days(s2):
    with pytest.warns(UserWarning, match="least cloudy"):
        cube = s2.load(composite=None, max_timesteps=2, bands=["B02"])
    assert cube.attrs["eoembed:items"] == ["S2A_20240105", "S2B_20240210"]  # clouds 12 and 5


def test_explicit_crs_and_resolution(s2):
    cube = s2.load(composite="monthly", crs="EPSG:32633", resolution=20, bands=["B02"])
    assert cube.rio.crs.to_epsg() == 32633
    assert np.allclose(np.diff(cube["x"].values), 20)
    assert np.isfinite(cube.values[0]).any()


# --------------------------------------------------------------------------------------
# catalogue inputs
# --------------------------------------------------------------------------------------
def test_static_item_collection_file_and_item_list(s2_plain, tmp_path):
    import json

    import pystac

    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": s2_plain.items}))
    a = stac.sentinel2(s2_plain.bbox, "2024-01-01", "2024-01-31", composite="monthly", catalog=str(path),
                       sign=None, retry=FAST, bands=["B02", "B8A"])  # fmt: skip
    items = [pystac.Item.from_dict(d) for d in s2_plain.items]
    b = stac.sentinel2(s2_plain.bbox, "2024-01-01", "2024-01-31", composite="monthly", catalog=items,
                       retry=FAST, bands=["B02", "B8A"])  # fmt: skip
    assert a.attrs["eoembed:catalog"] == str(path) and b.attrs["eoembed:catalog"] == "static"
    exp = nanmedian(expected_scenes(s2_plain.scenes[:3], a))
    np.testing.assert_allclose(a.values[0], exp, atol=0.01)
    np.testing.assert_allclose(b.values, a.values, atol=0)


def test_search_pages_through_the_api(s2_plain):
    s2_plain.server.page_size = 1
    items = stac.search_items("sentinel-2-l2a", s2_plain.bbox, "2024-01-01", "2024-12-31",
                              catalog=s2_plain.catalog, retry=FAST)  # fmt: skip
    assert [i.id for i in items] == [s.id for s in s2_plain.scenes]
    assert s2_plain.server.hits("/search", method="POST") == 4


# --------------------------------------------------------------------------------------
# network faults
# --------------------------------------------------------------------------------------
def test_search_retries_429_and_500(s2_plain):
    srv = s2_plain.server
    srv.add_fault("/search", "429", times=1)
    srv.add_fault("/search", "500", times=1)
    items = stac.search_items("sentinel-2-l2a", s2_plain.bbox, "2024-01-01", "2024-03-31",
                              catalog=s2_plain.catalog, retry=FAST)  # fmt: skip
    assert len(items) == 4
    assert srv.hits("/search", status=429) == 1 and srv.hits("/search", status=500) == 1


def test_search_retries_dropped_connection(s2_plain):
    srv = s2_plain.server
    srv.add_fault("/search", "drop", times=2)
    items = stac.search_items("sentinel-2-l2a", s2_plain.bbox, "2024-01-01", "2024-03-31",
                              catalog=s2_plain.catalog, retry=FAST)  # fmt: skip
    assert len(items) == 4
    assert srv.hits("/search", status=0) == 2


def test_search_persistent_500_is_a_datasource_error_naming_the_catalogue(s2_plain):
    srv = s2_plain.server
    srv.add_fault("/search", "500", times=100)
    with pytest.raises(DataSourceError, match="500") as info:
        stac.search_items("sentinel-2-l2a", s2_plain.bbox, "2024-01-01", "2024-03-31",
                          catalog=s2_plain.catalog, retry=FAST)  # fmt: skip
    assert srv.url in str(info.value)
    assert srv.hits("/search", status=500) == FAST.max_attempts


def test_unreachable_catalogue_is_a_datasource_error():
    with pytest.raises(DataSourceError, match="127.0.0.1:9"):
        stac.search_items("sentinel-2-l2a", (11.9, 45.4, 12.0, 45.5), "2024-01-01", "2024-01-31",
                          catalog="http://127.0.0.1:9", retry=FAST)  # fmt: skip


@pytest.mark.parametrize("kind", ["500", "429", "drop"])
def test_read_faults_are_retried_by_eoembed(s2, kind):
    """GDAL's own retries are switched off, so only eoembed's read loop can recover."""
    target = s2.asset("S2B_20240210", "B04")
    s2.server.add_fault(target, kind, times=2)
    cube = s2.load(composite=None, bands=["B04"], gdal_env={"GDAL_HTTP_PROXY": s2.server.proxy, "GDAL_HTTP_MAX_RETRY": "0"})
    got = cube.values
    exp = expected_scenes(s2.scenes, cube)
    np.testing.assert_allclose(got, exp, atol=0.01)
    bad = 0 if kind == "drop" else int(kind)
    assert s2.server.hits(target, status=bad) == 2  # both faults were served, then success
    assert s2.server.hits(target, status=206) >= 1


def test_read_faults_also_use_gdal_retries(s2):
    target = s2.asset("S2B_20240210", "B04")
    s2.server.add_fault(target, "503", times=2)
    cube = s2.load(composite=None, bands=["B04"])
    np.testing.assert_allclose(cube.values, expected_scenes(s2.scenes, cube), atol=0.01)
    assert s2.server.hits(target, status=503) == 2


def test_persistent_read_failure_names_item_and_asset(s2):
    target = s2.asset("S2B_20240210", "B8A")
    s2.server.add_fault(target, "500", times=1000)
    cube = s2.load(composite=None, bands=["B8A"], gdal_env={"GDAL_HTTP_PROXY": s2.server.proxy, "GDAL_HTTP_MAX_RETRY": "0"})
    with pytest.raises(DataSourceError) as info:
        cube.compute()
    err = info.value
    assert isinstance(err, AssetReadError)
    assert "S2B_20240210" in str(err) and "'B8A'" in str(err)
    assert err.item_id == "S2B_20240210" and err.asset == "B8A"
    assert "500" in str(err) and "RetryPolicy" in str(err)
    assert s2.server.hits(target, status=500) == FAST.max_attempts


def test_missing_asset_is_not_retried_and_named(s2):
    (s2.server.root / "blob" / s2.asset("S2B_20240115", "B02")).unlink()
    cube = s2.load(composite=None, bands=["B02"], mask_classes=None)
    with pytest.raises(AssetReadError, match="S2B_20240115.*404|404.*S2B_20240115"):
        cube.compute()
    assert s2.server.hits(s2.asset("S2B_20240115", "B02"), status=404) <= 2


def test_expired_token_is_refreshed_not_fatal(s2):
    from planetary_computer import sas

    sas.get_token("pcacct", s2.container)  # a token is cached ...
    s2.server.expire_tokens()  # ... and expires before the job reads
    n_tokens = s2.server.token_requests
    cube = s2.load(composite=None, bands=["B02"])
    np.testing.assert_allclose(cube.values, expected_scenes(s2.scenes, cube), atol=0.01)
    assert s2.server.hits(s2.container, status=403) >= 1  # the expired signature was rejected
    assert s2.server.token_requests > n_tokens  # ... and a fresh one was fetched


def test_unsigned_read_of_protected_storage_says_to_sign(s2):
    cube = s2.load(composite=None, bands=["B02"], sign=None)
    with pytest.raises(AssetReadError, match="sign='planetary-computer'"):
        cube.compute()


def test_custom_sign_callable_is_used_and_refreshed(s2):
    from planetary_computer import sas

    calls = []

    def signer(href, refresh=False):
        calls.append(refresh)
        sas.TOKEN_CACHE.clear() if refresh else None
        return sas.sign_url(href)

    sas.get_token("pcacct", s2.container)
    s2.server.expire_tokens()
    cube = s2.load(composite=None, bands=["B02"], sign=signer)
    np.testing.assert_allclose(cube.values, expected_scenes(s2.scenes, cube), atol=0.01)
    assert False in calls and True in calls


def test_graph_pickles_for_distributed(s2):
    import cloudpickle

    cube = s2.load(composite="monthly", bands=["B02"])
    clone = pickle.loads(cloudpickle.dumps(cube))
    np.testing.assert_allclose(clone.values, cube.values, atol=0)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bbox, match",
    [
        ((12.0, 45.4, 11.9, 45.5), "inverted or empty"),
        ((11.9, 45.5, 12.0, 45.5), "inverted or empty"),
        ((45.4, 11.9, 45.5, 200.0), "outside the lon/lat range"),
        ((11.9, 95.0, 12.0, 96.0), "outside the lon/lat range"),
        ((500000, 5000000, 510000, 5010000), "projected metres"),
        ((1, 2, 3), "4 finite numbers"),
        ("abc", "not a sequence of 4 numbers"),
    ],
)
def test_bad_bbox_is_a_query_error(bbox, match):
    with pytest.raises(QueryError, match=match):
        stac.sentinel2(bbox, "2024-01-01", "2024-01-31", catalog="http://127.0.0.1:9")


def test_reversed_dates_and_bad_dates():
    with pytest.raises(QueryError, match="reversed.*Swap"):
        stac.sentinel2((11.9, 45.4, 12.0, 45.5), "2024-03-01", "2024-01-01", catalog="http://127.0.0.1:9")
    with pytest.raises(QueryError, match="not a date"):
        stac.sentinel2((11.9, 45.4, 12.0, 45.5), "yesterday", "2024-01-01", catalog="http://127.0.0.1:9")


def test_bad_options_are_parameter_errors():
    bbox = (11.9, 45.4, 12.0, 45.5)
    with pytest.raises(ParameterError, match="composite"):
        stac.sentinel2(bbox, "2024-01-01", "2024-01-31", composite="fortnightly-ish", catalog="http://127.0.0.1:9")
    with pytest.raises(ParameterError, match="Sentinel-2 band"):
        stac.sentinel2(bbox, "2024-01-01", "2024-01-31", bands=["B13"], catalog="http://127.0.0.1:9")
    with pytest.raises(ParameterError, match="sign="):
        stac.sentinel2(bbox, "2024-01-01", "2024-01-31", sign="aws", catalog="http://127.0.0.1:9")
    with pytest.raises(ParameterError, match="projected"):
        stac.sentinel2(bbox, "2024-01-01", "2024-01-31", crs="EPSG:4326", catalog="http://127.0.0.1:9")


def test_unknown_collection_suggests_the_right_one(s2_plain):
    with pytest.raises(QueryError, match="Unknown collection 'sentinel-2-l2'.*sentinel-2-l2a"):
        stac.sentinel2(s2_plain.bbox, "2024-01-01", "2024-01-31", catalog=s2_plain.catalog,
                       collection="sentinel-2-l2", retry=FAST)  # fmt: skip


def test_no_items_found(s2_plain):
    with pytest.raises(NoItemsFoundError, match="Widen the date range"):
        stac.sentinel2(s2_plain.bbox, "2021-01-01", "2021-01-31", catalog=s2_plain.catalog, retry=FAST)
    with pytest.raises(NoItemsFoundError, match="max_cloud=1"):
        stac.sentinel2(s2_plain.bbox, "2024-01-01", "2024-01-31", catalog=s2_plain.catalog, retry=FAST,
                       max_cloud=1)  # fmt: skip


# --------------------------------------------------------------------------------------
# Sentinel-1 and Landsat
# --------------------------------------------------------------------------------------
def _grid(bbox):
    lon, lat = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    e, n = ss.utm_point(lon, lat, 32632)
    return round(e / 60) * 60 - 600, round(n / 60) * 60 + 600


def test_sentinel1_rtc_in_decibels(stac_server, s2_scenes):
    _, bbox = s2_scenes
    x0, y0 = _grid(bbox)
    rng = np.random.default_rng(1)
    vv = rng.lognormal(-2.5, 0.5, (60, 60)).astype(np.float32)
    vh = rng.lognormal(-4.0, 0.5, (60, 60)).astype(np.float32)
    vv[:5, :5] = 0.0  # non-positive -> NaN
    vh[:5, :5] = -1.0
    vv[-3:, -3:] = -32768  # nodata
    item = ss.write_simple_item(
        stac_server.root, item_id="S1A_IW_20240110", datetime="2024-01-10T05:00:00Z", epsg=32632, x0=x0, y0=y0,
        res=20, assets={"vv": (vv, -32768), "vh": (vh, -32768)}, properties={"sat:orbit_state": "ascending"},
        asset_base=f"{stac_server.url}/blob", container="s1", collection="sentinel-1-rtc",
    )  # fmt: skip
    stac_server.add_items([item])
    cube = stac.sentinel1(bbox, "2024-01-01", "2024-02-29", catalog=stac_server.url, retry=FAST)
    assert cube.dims == ("time", "band", "y", "x") and cube.dtype == np.float32
    assert list(cube["band"].values) == ["vv", "vh"]
    assert cube.name == "backscatter" and cube.attrs["eoembed:units"] == "dB"
    assert list(cube["eoembed:n_scenes"].values) == [1, 0]
    xs, ys = np.meshgrid(cube["x"].values, cube["y"].values)
    col = np.floor((xs - x0) / 20).astype(int)
    row = np.floor((y0 - ys) / 20).astype(int)
    for j, arr in enumerate([vv, vh]):
        lin = arr[row, col].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            exp = np.where(lin > 0, 10 * np.log10(lin), np.nan)
        np.testing.assert_allclose(cube.values[0, j], exp, atol=1e-4)
    assert np.isnan(cube.values[1]).all()


def test_landsat_band_names_and_qa_mask(stac_server, s2_scenes):
    _, bbox = s2_scenes
    x0, y0 = _grid(bbox)
    rng = np.random.default_rng(2)
    keys = ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "lwir11"]
    arrays = {k: (rng.integers(7000, 20000, (40, 40)).astype(np.uint16), 0) for k in keys}
    qa = np.full((40, 40), 21824, np.uint16)  # clear
    qa[:10] = 21824 | (1 << 3)  # cloud
    qa[10:15] = 21824 | (1 << 4)  # cloud shadow
    qa[15:18] = 21824 | (1 << 5)  # snow: kept by default
    qa[-2:] = 1  # fill
    arrays["qa_pixel"] = (qa, 1)
    items = [
        ss.write_simple_item(
            stac_server.root, item_id=f"LC0{p[-1]}_2024011{i}", datetime=f"2024-01-1{i}T10:00:00Z", epsg=32632,
            x0=x0, y0=y0, res=30, assets=arrays, properties={"platform": p, "eo:cloud_cover": 10.0},
            asset_base=f"{stac_server.url}/blob", container="ls", collection="landsat-c2-l2",
        )  # fmt: skip
        for i, p in enumerate(["landsat-8", "landsat-7"])
    ]
    stac_server.add_items(items)
    cube = stac.landsat(bbox, "2024-01-01", "2024-01-31", catalog=stac_server.url, retry=FAST)
    assert cube.attrs["eoembed:items"] == ["LC08_20240110"]  # landsat-7 filtered out (other band numbers)
    assert list(cube["band"].values) == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B10"]
    assert list(cube["common_name"].values)[:2] == ["coastal", "blue"]
    assert cube.dims == ("time", "band", "y", "x") and cube.rio.crs.to_epsg() == 32632
    xs, ys = np.meshgrid(cube["x"].values, cube["y"].values)
    col = np.floor((xs - x0) / 30).astype(int)
    row = np.floor((y0 - ys) / 30).astype(int)
    q = qa[row, col]
    valid = (q != 1) & ((q & 0b11111) == 0)
    for j, k in enumerate(keys):
        exp = np.where(valid, arrays[k][0][row, col], np.nan)
        np.testing.assert_allclose(cube.values[0, j], exp, atol=0)
    assert np.isnan(cube.values[0]).any() and np.isfinite(cube.values[0]).any()


# --------------------------------------------------------------------------------------
# sample cache
# --------------------------------------------------------------------------------------
def test_fetch_sample_writes_once_then_reads_offline(s2_plain, tmp_path):
    cache = tmp_path / "cache"
    opts = dict(catalog=s2_plain.catalog, sign=None, retry=FAST, bands=["B02", "B04"])
    first = fetch_sample(s2_plain.bbox, "2024-01-01", "2024-02-29", cache, **opts)
    stores = list(cache.glob("eoembed-sample-*.zarr"))
    assert len(stores) == 1 and not list(cache.glob(".*partial"))
    n = len(s2_plain.server.log)
    second = fetch_sample(s2_plain.bbox, "2024-01-01", "2024-02-29", cache, **opts)
    assert len(s2_plain.server.log) == n  # served from the cache, no request
    assert second.dims == ("time", "band", "y", "x") and second.dtype == np.float32
    assert second.rio.crs.to_epsg() == 32632
    assert list(second["band"].values) == ["B02", "B04"]
    assert list(second["s2:processing_baseline"].values) == list(first["s2:processing_baseline"].values)
    assert second.attrs["eoembed:harmonized"] in (True, 1)
    np.testing.assert_allclose(second.values, first.values, atol=0)
    # the demo's `--sample PATH` route reads the same store with open_cube
    from eoembed.data import open_cube

    again = open_cube(stores[0], chunks={})
    assert again.dims == ("time", "band", "y", "x") and again.rio.crs.to_epsg() == 32632
    np.testing.assert_allclose(again.values, first.values, atol=0)
    # a different request is a different store
    fetch_sample(s2_plain.bbox, "2024-01-01", "2024-01-31", cache, **opts)
    assert len(list(cache.glob("eoembed-sample-*.zarr"))) == 2


def test_fetch_sample_without_network_points_to_sample_option(tmp_path):
    with pytest.raises(SampleUnavailableError, match="--sample PATH") as info:
        fetch_sample((11.9, 45.4, 12.0, 45.5), "2024-01-01", "2024-01-31", tmp_path,
                     catalog="http://127.0.0.1:9", retry=FAST)  # fmt: skip
    assert isinstance(info.value, DataSourceError)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------
# into the core
# --------------------------------------------------------------------------------------
def test_cube_embeds_with_the_spectral_baseline(s2):
    import eoembed

    from eoembed.grid import GridAlignmentWarning

    cube = s2.load(composite="monthly")
    with pytest.warns(GridAlignmentWarning, match="off the global 4-px"):  # the test scenes' grid: 2 px off
        emb = eoembed.embed(cube, model="spectral")
    assert "embedding" in emb.dims
    assert emb.rio.crs.to_epsg() == 32632


# --------------------------------------------------------------------------------------
# harmonization follows what each item says about itself (issue 8, A7)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour, source", [
    ("planetary-computer", "s2:processing_baseline"),
    ("earth-search", "earthsearch:boa_offset_applied"),
    ("cdse", "raster:bands"),
])
def test_harmonization_reads_each_providers_item_metadata(stac_server, s2_scenes, flavour, source):
    import uuid

    scenes, bbox = s2_scenes
    container = "h" + uuid.uuid4().hex[:10]
    stac_server.require_sas = False
    items = ss.write_s2_catalog(scenes, stac_server.root, asset_base=f"{stac_server.url}/blob",
                                container=container, flavour=flavour)
    stac_server.add_items(items)
    if flavour == "cdse":  # projection extension v2: proj:code only (stackstac reads proj:epsg)
        assert all("proj:epsg" not in it["properties"] and "proj:code" in it["properties"] for it in items)
    cube = stac.sentinel2(bbox, "2024-01-01", "2024-03-31", composite=None, catalog=stac_server.url,
                          sign=None, retry=FAST)
    raw = expected_scenes(scenes, cube, harmonize=False)
    exp = np.stack([np.maximum(r - ss.scene_offset(sc, flavour), 0) for r, sc in zip(raw, scenes)])
    np.testing.assert_allclose(cube.values, exp, atol=0.01)
    # the decision is recorded per scene, naming the metadata that made it
    decisions = cube.attrs["eoembed:harmonization"]
    assert len(decisions) == len(scenes)
    for sc in scenes:
        line = next(d for d in decisions if d.startswith(sc.id + ":"))
        # Earth Search's flag is false on pre-04.00 scenes: "not removed", the baseline decides
        said = "s2:processing_baseline" if flavour == "earth-search" and sc.baseline == "03.01" else source
        assert said in line and f"{sc.id}: {ss.scene_offset(sc, flavour):g} DN removed" in line
    if flavour == "cdse":
        assert cube.rio.crs.to_epsg() == 32632 and not np.isnan(cube.values[2]).all()  # zone-33 scene kept


def test_a_signed_load_leaves_no_proxy_for_later_streams(s2, aef):
    """Found in CI: after a signed load (GDAL_HTTP_PROXY pointed at the fake blob store), GDAL's reused curl
    handles kept that proxy, and a later AlphaEarth stream read its tiles through it and came back short.
    eoembed now states the proxy (or none) on every read."""
    import eoembed
    from unit.test_products_remote import X0, Y0, YEAR, _deq_aef, _utm_bbox, _value_at

    cube = s2.load(composite=None, bands=["B04"])
    np.testing.assert_allclose(cube.values, expected_scenes(s2.scenes, cube), atol=0.01)  # through the proxy
    emb = eoembed.products.alphaearth(_utm_bbox(X0 + 405, Y0 - 395, X0 + 905, Y0 - 55), YEAR, source=aef["source"])
    np.testing.assert_allclose(_value_at(emb, X0 + 635, Y0 - 105), _deq_aef(aef["qa"])[:, 10, 63], atol=1e-6)
    assert not np.isnan(emb.values).any()
