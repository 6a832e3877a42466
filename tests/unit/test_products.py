"""eoembed.products: published embedding products read into eoembed's embedding cube.

Every fixture is written here with rasterio/numpy/pyarrow to the product's published
layout; the specs are cited per test. The de-quantization rules are written out in
the tests themselves (not imported from eoembed) so a wrong rule in the library fails.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402
from eoembed.exceptions import DimensionError, InputError, MissingCRSError, ParameterError  # noqa: E402
from eoembed.products import PointEmbeddings, open_embeddings  # noqa: E402

T = from_origin(500_000, 5_700_000, 10, 10)  # UTM 31N, 10 m, north-up


def _unit(rng, d, h, w):
    v = rng.normal(size=(d, h, w)).astype(np.float32)
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def _aef_quantize(v):
    """The inverse of the published de-quantization (see test_alphaearth_cog)."""
    return np.clip(np.round(np.sign(v) * np.sqrt(np.abs(v)) * 127.5), -127, 127).astype(np.int8)


def _write_aef(path, q, transform=T, crs="EPSG:32631", driver="COG"):
    with rasterio.open(path, "w", driver=driver, width=q.shape[2], height=q.shape[1], count=q.shape[0],
                       dtype="int8", crs=crs, transform=transform, nodata=-128) as ds:
        ds.write(q)
        ds.descriptions = tuple(f"A{i:02d}" for i in range(q.shape[0]))


@pytest.fixture
def aef(tmp_path):
    rng = np.random.default_rng(0)
    v = _unit(rng, 64, 20, 24)
    q = _aef_quantize(v)
    q[:, 3, 5] = -128  # a masked pixel: -128 in every band
    path = tmp_path / "aef_utm31N_2023.tif"
    _write_aef(path, q)
    return path, v, q


def test_alphaearth_cog(aef):
    """Spec: AlphaEarth Foundations GCS/Source Cooperative README
    (https://developers.google.com/earth-engine/guides/aef_on_gcs_readme, mirrored at
    https://source.coop/tge-labs/aef): 64 int8 channels A00-A63, -128 = masked in all
    channels (NoData -128), de-quantization value = (q / 127.5) ** 2 * sign(q), unit length
    after de-quantization, CC-BY 4.0 with a fixed attribution text."""
    path, v, q = aef
    emb = open_embeddings(path)
    assert emb.name == "embeddings" and emb.dims == ("embedding", "y", "x") and emb.dtype == np.float32
    assert emb.chunks is not None  # lazy
    assert emb.rio.crs.to_epsg() == 32631 and tuple(emb.rio.transform())[:6] == tuple(T)[:6]
    np.testing.assert_allclose(emb.x.values[:2], [500_005, 500_015])
    x = emb.values
    assert np.isnan(x[:, 3, 5]).all() and np.isfinite(np.delete(x.reshape(64, -1), 3 * 24 + 5, axis=1)).all()
    ref = (q.astype(np.float64) / 127.5) ** 2 * np.sign(q)
    ref /= np.linalg.norm(ref, axis=0, keepdims=True)
    ref[:, 3, 5] = np.nan
    np.testing.assert_allclose(x, ref, atol=1e-6)
    np.testing.assert_allclose(np.nansum(x * x, axis=0)[np.isfinite(x[0])], 1, atol=1e-5)
    cos = np.nansum(x * v, axis=0)[np.isfinite(x[0])]
    assert cos.mean() > 0.999  # the rule inverts the quantization
    a = emb.attrs
    assert a["eoembed:model"] == "alphaearth" and a["eoembed:license"] == "CC-BY-4.0"
    assert "Google DeepMind" in a["eoembed:attribution"] and a["eoembed:time_range"] == ["2023-01-01", "2023-12-31"]
    assert a["eoembed:embedding_dim"] == 64 and a["eoembed:patch_size"] == 1 and a["eoembed:patch_size_m"] == 10
    # explicit format and year agree with auto
    e2 = open_embeddings(str(path), format="alphaearth", year=2021)
    assert e2.attrs["eoembed:time_range"][0] == "2021-01-01"
    # the bucket layout <year>/<utm zone>/<file>: the year comes from the folder
    nested = path.parent / "2019" / "31N" / "xa3lkmkmf-0000008192-0000000000.tiff"
    nested.parent.mkdir(parents=True)
    _write_aef(nested, q)
    assert open_embeddings(nested).attrs["eoembed:time_range"] == ["2019-01-01", "2019-12-31"]


def test_alphaearth_bottom_up_copy_is_flipped_north_up(aef, tmp_path):
    """Source Cooperative's copies are 'bottom-up' (positive y resolution, origin bottom-left)."""
    path, _, q = aef
    up = tmp_path / "bottom_up.tif"
    h = q.shape[1]
    _write_aef(up, q[:, ::-1, :], transform=rasterio.Affine(10, 0, 500_000, 0, 10, 5_700_000 - 10 * h),
               driver="GTiff")
    a, b = open_embeddings(path).compute(), open_embeddings(up, format="alphaearth").compute()
    assert b.rio.transform().e < 0 and tuple(b.rio.transform()) == tuple(a.rio.transform())
    np.testing.assert_array_equal(a.y.values, b.y.values)
    np.testing.assert_allclose(a.values, b.values, equal_nan=True)


def test_alphaearth_cube_works_with_search_and_fewshot(aef):
    gpd = pytest.importorskip("geopandas")
    pytest.importorskip("faiss")
    path, _, _ = aef
    emb = open_embeddings(path)
    idx = eoembed.build_index(emb)
    hits = idx.search_vectors(emb.values[:, 0, 0][None], k=1)
    assert hits[1][0][0] >= 0 and hits[0][0][0] == pytest.approx(1, abs=1e-5)
    sim = emb.eo.similarity(emb.values[:, 0, 0])
    assert sim.dims == ("y", "x") and float(sim[0, 0]) == pytest.approx(1, abs=1e-5)
    rng = np.random.default_rng(1)
    r, c = rng.integers(0, 20, 40), rng.integers(0, 24, 40)
    labels = gpd.GeoDataFrame({"class": np.where(c < 12, "west", "east")},
                              geometry=gpd.points_from_xy(emb.x.values[c], emb.y.values[r]), crs=32631)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = emb.eo.fewshot(labels, block_size=60)
    m = clf.predict_map()
    assert m["class"].shape == (20, 24) and m.rio.crs.to_epsg() == 32631
    assert m.attrs["eoembed:model"] == "alphaearth"


def test_int8_without_a_known_rule_is_refused(tmp_path):
    q = np.zeros((16, 4, 4), np.int8)
    p = tmp_path / "mystery.tif"
    with rasterio.open(p, "w", driver="GTiff", width=4, height=4, count=16, dtype="int8", crs="EPSG:32631",
                       transform=T) as ds:
        ds.write(q)
    with pytest.raises(ParameterError, match="format='alphaearth' or format='tessera'"):
        open_embeddings(p)
    with pytest.raises(ParameterError, match="float vectors"):
        open_embeddings(p, format="geotiff")
    with pytest.raises(InputError, match="64 int8 bands"):
        open_embeddings(p, format="alphaearth")
    with pytest.raises(ParameterError, match="format="):
        open_embeddings(p, format="earthengine")
    with pytest.raises(InputError, match="does not exist"):
        open_embeddings(tmp_path / "missing.tif")


# ---- TESSERA ---------------------------------------------------------------------------
def _tessera_tile(tmp_path, h=12, w=10, c=128, per_channel=False):
    """Layout from geotessera (github.com/ucam-eo/geotessera, geotessera/core.py
    ``dequantize_embedding`` and tiles.py): ``grid_<lon>_<lat>.npy`` int8 (H, W, 128),
    ``grid_<lon>_<lat>_scales.npy`` float32 (H, W) or (H, W, 128), value = q * scales;
    georeferencing from the tile's landmask GeoTIFF. Pixels with scale 0 are empty."""
    rng = np.random.default_rng(5)
    q = rng.integers(-127, 128, size=(h, w, c)).astype(np.int8)
    s = rng.uniform(0.01, 0.1, size=(h, w, c) if per_channel else (h, w)).astype(np.float32)
    s[0, 0] = 0
    d = tmp_path / "global_0.1_degree_representation" / "2024"
    d.mkdir(parents=True)
    np.save(d / "grid_0.15_52.05.npy", q)
    np.save(d / "grid_0.15_52.05_scales.npy", s)
    lm = tmp_path / "landmask.tif"
    with rasterio.open(lm, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=T) as ds:
        ds.write(np.ones((1, h, w), np.uint8))
    return d / "grid_0.15_52.05.npy", q, s, lm


@pytest.mark.parametrize("per_channel", [False, True])
def test_tessera_npy_tile(tmp_path, per_channel):
    npy, q, s, lm = _tessera_tile(tmp_path, per_channel=per_channel)
    emb = open_embeddings(npy, georef=lm)
    assert emb.dims == ("embedding", "y", "x") and emb.sizes["embedding"] == 128
    ref = q.astype(np.float32) * (s if per_channel else s[..., None])
    ref = np.moveaxis(ref, -1, 0)
    ref[:, 0, 0] = np.nan
    np.testing.assert_allclose(emb.values, ref, rtol=1e-6, equal_nan=True)
    assert tuple(emb.rio.transform())[:6] == tuple(T)[:6] and emb.rio.crs.to_epsg() == 32631
    a = emb.attrs
    assert a["eoembed:model"] == "tessera" and a["eoembed:license"] == "CC-BY-4.0"
    assert a["eoembed:time_range"] == ["2024-01-01", "2024-12-31"]
    # crs + transform instead of the landmask: same cube
    e2 = open_embeddings(npy, crs="EPSG:32631", transform=T)
    np.testing.assert_allclose(e2.values, emb.values, equal_nan=True)
    np.testing.assert_allclose(e2.x.values, emb.x.values)


def test_tessera_int8_geotiff_with_scales_sidecar(tmp_path):
    npy, q, s, _ = _tessera_tile(tmp_path)
    tif = tmp_path / "tile.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=10, height=12, count=128, dtype="int8", crs="EPSG:32631",
                       transform=T) as ds:
        ds.write(np.moveaxis(q, -1, 0))
    np.save(tmp_path / "tile_scales.npy", s)
    emb = open_embeddings(tif)  # auto: int8 + a scales sidecar
    assert emb.attrs["eoembed:model"] == "tessera"
    np.testing.assert_allclose(emb.values[:, 5, 5], q[5, 5].astype(np.float32) * s[5, 5], rtol=1e-6)


def test_tessera_errors(tmp_path):
    npy, q, s, lm = _tessera_tile(tmp_path)
    with pytest.raises(MissingCRSError, match="georef="):
        open_embeddings(npy)
    other = tmp_path / "other.npy"
    np.save(other, q)
    with pytest.raises(InputError, match="_scales.npy"):
        open_embeddings(other, georef=lm)
    np.save(tmp_path / "other_scales.npy", s[:5])
    with pytest.raises(InputError, match="do not match"):
        open_embeddings(other, georef=lm)


def test_tessera_nodata_scale_and_empty_pixel_are_nan(tmp_path):
    """geotessera marks a pixel without a vector by a huge scale (the largest float32) and a pixel without
    observations by a zero vector; both are no data: NaN in every channel, never ±inf or a zero vector."""
    npy, q, s, lm = _tessera_tile(tmp_path)
    q, s = q.copy(), s.copy()
    s[1, 1] = np.finfo(np.float32).max  # times any channel >= 2 overflows to ±inf in float32
    s[1, 2] = np.inf
    s[1, 3] = np.nan
    q[2, 2, :] = 0  # no observations: the model wrote zeros, the scale is an ordinary one
    np.save(npy, q)
    np.save(npy.with_name(npy.stem + "_scales.npy"), s)
    emb = open_embeddings(npy, georef=lm).values
    assert not np.isinf(emb).any()
    for r, c in [(0, 0), (1, 1), (1, 2), (1, 3), (2, 2)]:
        assert np.isnan(emb[:, r, c]).all(), (r, c)
    np.testing.assert_allclose(emb[:, 5, 5], q[5, 5].astype(np.float32) * s[5, 5], rtol=1e-6)
    assert np.isfinite(emb).all(axis=0).sum() == 12 * 10 - 5


def _tessera_zarr(path, *, zones=(31, 32), years=(2023, 2024), c=8, h=6, w=5, crs=True):
    """geotessera's Zarr layout (github.com/ucam-eo/geotessera, geotessera/zarr.py and store.py): one
    ``utm{NN}`` group per UTM zone holding ``embeddings`` int8 (time, band, y, x), ``scales`` float32
    (time, y, x; NaN = water, +inf = not filled), ``time`` (years), ``x``/``y`` pixel centres, ``band``;
    the CRS as ``proj:code`` and the grid as ``spatial:transform`` in the zone group's attributes."""
    rng = np.random.default_rng(9)
    out = {}
    for z in zones:
        q = rng.integers(-127, 128, size=(len(years), c, h, w)).astype(np.int8)
        s = rng.uniform(0.01, 0.1, size=(len(years), h, w)).astype(np.float32)
        s[:, 0, 0] = np.nan
        s[:, 0, 1] = np.inf
        x = T.c + 10 * (np.arange(w) + 0.5)
        y = T.f - 10 * (np.arange(h) + 0.5)
        attrs = {"proj:code": f"EPSG:326{z:02d}", "spatial:transform": [10.0, 0.0, T.c, 0.0, -10.0, T.f]} if crs else {}
        ds = xr.Dataset({"embeddings": (("time", "band", "y", "x"), q), "scales": (("time", "y", "x"), s)},
                        coords={"time": np.array(years, np.int32), "band": np.arange(c, dtype=np.int32),
                                "y": y, "x": x}, attrs=attrs)
        ds.to_zarr(path, group=f"utm{z:02d}", mode="a", consolidated=False)
        out[z] = (q, s)
    import zarr

    zarr.open_group(str(path), mode="r+").attrs["geoemb:dimensions"] = c
    return out


def test_tessera_zarr_store(tmp_path):
    store = tmp_path / "tessera.zarr"
    data = _tessera_zarr(store)
    with pytest.raises(ParameterError, match=r"2 UTM zones \(utm31, utm32\).*zone="):
        open_embeddings(store)
    with pytest.raises(ParameterError, match=r"years \[2023, 2024\].*year="):
        open_embeddings(store, zone=31)
    with pytest.raises(ParameterError, match="its zones are utm31, utm32"):
        open_embeddings(store, zone=33, year=2024)
    with pytest.raises(ParameterError, match="its years are"):
        open_embeddings(store, zone=31, year=2019)
    emb = open_embeddings(store, zone="utm32", year=2024)
    q, s = data[32]
    assert emb.dims == ("embedding", "y", "x") and emb.shape == (8, 6, 5)
    ref = q[1].astype(np.float32) * s[1][None]
    ref[:, 0, :2] = np.nan  # water (NaN scale) and not-filled (+inf scale) pixels
    np.testing.assert_allclose(emb.values, ref, rtol=1e-6, equal_nan=True)
    assert emb.rio.crs.to_epsg() == 32632 and tuple(emb.rio.transform())[:6] == tuple(T)[:6]
    assert emb.attrs["eoembed:model"] == "tessera" and emb.attrs["eoembed:time_range"][0] == "2024-01-01"
    # a zone group opened by its own path
    z31 = open_embeddings(store / "utm31", year=2023)
    np.testing.assert_allclose(z31.values[:, 3, 3], data[31][0][0, :, 3, 3] * data[31][1][0, 3, 3], rtol=1e-6)
    # no CRS anywhere: say where it goes
    bare = tmp_path / "bare.zarr"
    _tessera_zarr(bare, zones=(31,), years=(2024,), crs=False)
    with pytest.raises(MissingCRSError, match="proj:code"):
        open_embeddings(bare / "utm31")


# ---- GeoParquet ------------------------------------------------------------------------
def _clay_chips(n_lon=6, n_lat=5, d=4, *, seed=0, dates=("2024-06-01",), time_column="date"):
    """Clay v1.5-style chips on a 1° lattice in EPSG:4326: square chip polygons whose centroids carry
    float rounding noise (~1e-16 relative), a ``date``/``datetime`` column, one vector per chip."""
    import pandas as pd

    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    rng = np.random.default_rng(seed)
    frames = []
    for k, day in enumerate(dates):
        lon, lat = np.meshgrid(10.1 + np.arange(n_lon), 45.3 + np.arange(n_lat))
        lon, lat = lon.ravel(), lat.ravel()
        noisy = np.arange(lon.size) % 3 == 1  # centroids off by one ulp, as computed centroids are
        lon = np.where(noisy, np.nextafter(lon, np.inf), lon)
        lat = np.where(noisy, np.nextafter(lat, -np.inf), lat)
        geom = [shapely.box(x - 0.5, y - 0.5, x + 0.5, y + 0.5) for x, y in zip(lon, lat)]
        V = rng.normal(size=(lon.size, d)).astype(np.float32)
        when = pd.Timestamp(day)
        frames.append(gpd.GeoDataFrame({"embedding": list(V), time_column: when.date() if time_column == "date"
                                        else when}, geometry=geom, crs=4326))
    return pd.concat(frames, ignore_index=True)


def test_geoparquet_regular_lattice_with_float_noise_becomes_a_cube(tmp_path):
    """Clay v1.5 chips on a 1° lattice, written by geopandas as ``.gpq``: the float noise in their centroids is
    not the grid step, and the ``date`` column is read as the time."""
    gdf = _clay_chips()
    p = tmp_path / "clay_v15.gpq"
    gdf.to_parquet(p)
    cube = open_embeddings(p)
    assert isinstance(cube, xr.DataArray) and cube.shape == (4, 5, 6)
    assert cube.rio.resolution() == pytest.approx((1.0, -1.0))
    np.testing.assert_allclose(cube.x.values, 10.1 + np.arange(6), atol=1e-9)
    assert cube.attrs["eoembed:time_range"] == ["2024-06-01", "2024-06-01"]
    V = np.stack(gdf["embedding"].to_numpy())
    np.testing.assert_allclose(cube.values[:, -1, 0], V[0], rtol=1e-6)  # first row: the southernmost, westernmost
    assert np.isfinite(cube.values).all()
    # two dates in a ``datetime`` column: a time dim
    two = _clay_chips(dates=("2024-03-01", "2024-09-01"), time_column="datetime")
    p2 = tmp_path / "two.parquet"
    two.to_parquet(p2)
    c2 = open_embeddings(p2)
    assert c2.dims == ("time", "embedding", "y", "x") and c2.sizes["time"] == 2
    with pytest.raises(InputError, match="no 'acquired' column"):
        open_embeddings(p2, time_column="acquired")


def _rows(emb, *, drop=0, seed=0, times=None):
    """One row per patch centre: ``geometry`` points and ``embedding`` vectors."""
    gpd = pytest.importorskip("geopandas")
    yy, xx = np.meshgrid(emb.y.values, emb.x.values, indexing="ij")
    V = emb.values.reshape(emb.sizes["embedding"], -1).T
    keep = np.ones(len(V), bool)
    if drop:
        keep[np.random.default_rng(seed).choice(len(V), drop, replace=False)] = False
    df = gpd.GeoDataFrame({"embedding": list(V[keep])}, geometry=gpd.points_from_xy(xx.ravel()[keep],
                                                                                    yy.ravel()[keep]),
                          crs=emb.rio.crs)
    return df, V, keep


def test_geoparquet_rows_on_a_grid_become_a_cube(tmp_path):
    """Row layout of Major-TOM / Clay / Earth Index embedding GeoParquet: a ``geometry``
    column (GeoParquet 1.x, WKB) and an ``embedding`` list column; here as a list
    (written by geopandas) and as a fixed-size list (written with pyarrow)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    emb, _ = make_emb(6, 7, 8, seed=1)
    gdf, V, keep = _rows(emb, drop=5)
    p = tmp_path / "rows.parquet"
    gdf.to_parquet(p)
    cube = open_embeddings(p, model="clay")
    assert cube.dims == ("embedding", "y", "x") and cube.shape == (8, 6, 7)
    np.testing.assert_allclose(cube.x.values, emb.x.values)
    np.testing.assert_allclose(cube.y.values, emb.y.values)
    assert tuple(cube.rio.transform()) == tuple(emb.rio.transform()) and cube.rio.crs == emb.rio.crs
    flat = cube.values.reshape(8, -1).T
    np.testing.assert_allclose(flat[keep], V[keep], rtol=1e-6)
    assert np.isnan(flat[~keep]).all()
    assert cube.attrs["eoembed:model"] == "clay"
    # fixed-size list column
    t = pq.read_table(p)
    values = pa.array(np.stack(gdf["embedding"].to_numpy()).ravel().astype(np.float32))
    t = t.set_column(t.column_names.index("embedding"), "embedding", pa.FixedSizeListArray.from_arrays(values, 8))
    p2 = tmp_path / "fixed.parquet"
    pq.write_table(t, p2)
    np.testing.assert_allclose(open_embeddings(p2).values, cube.values, equal_nan=True)
    # fixed-shape tensor extension column (arrow.fixed_shape_tensor)
    mat = np.stack(gdf["embedding"].to_numpy()).astype(np.float32)
    t3 = t.set_column(t.column_names.index("embedding"), "embedding",
                      pa.FixedShapeTensorArray.from_numpy_ndarray(mat))
    p3 = tmp_path / "tensor.parquet"
    pq.write_table(t3, p3)
    np.testing.assert_allclose(open_embeddings(p3).values, cube.values, equal_nan=True)
    # chip footprints (polygons, as Major-TOM/Clay publish) are placed at their centroids
    chips = gdf.copy()
    chips["geometry"] = chips.geometry.buffer(40, cap_style="square")
    p4 = tmp_path / "chips.parquet"
    chips.to_parquet(p4)
    np.testing.assert_allclose(open_embeddings(p4).values, cube.values, equal_nan=True)


def test_geoparquet_timestamps_become_a_time_dim(tmp_path):
    import pandas as pd

    emb, _ = make_emb(4, 5, 6, seed=2)
    a, _, _ = _rows(emb)
    b = a.copy()
    b["embedding"] = [v * 2 for v in b["embedding"]]
    a["timestamp"], b["timestamp"] = pd.Timestamp("2024-05-01"), pd.Timestamp("2024-08-01")
    p = tmp_path / "t.parquet"
    pd.concat([a, b]).to_parquet(p)
    cube = open_embeddings(p)
    assert cube.dims == ("time", "embedding", "y", "x") and cube.sizes["time"] == 2
    np.testing.assert_allclose(cube.isel(time=1).values, 2 * emb.values, rtol=1e-6)
    dup = tmp_path / "dup.parquet"
    pd.concat([a, a]).to_parquet(dup)
    with pytest.raises(InputError, match="share one location"):
        open_embeddings(dup)


def test_scattered_geoparquet_is_a_point_index(tmp_path):
    gpd = pytest.importorskip("geopandas")
    pytest.importorskip("sklearn")
    from sklearn.model_selection import cross_val_score

    from eoembed.classify import FewShotClassifier

    rng = np.random.default_rng(3)
    n = 300
    x, y = rng.uniform(0, 5000, n) + 500_000, rng.uniform(0, 5000, n) + 5_700_000
    cls = (x - 500_000 > 2500).astype(int)
    V = rng.normal(size=(n, 16)).astype(np.float32) * 0.5
    V[:, 0] += np.where(cls == 1, 2, -2)
    gdf = gpd.GeoDataFrame({"embedding": list(V)}, geometry=gpd.points_from_xy(x, y), crs=32631)
    p = tmp_path / "pts.parquet"
    gdf.to_parquet(p)
    pts = open_embeddings(p)
    assert isinstance(pts, PointEmbeddings) and len(pts) == n and pts.crs.to_epsg() == 32631
    hits = pts.search(7, k=5)
    assert hits.iloc[0].name == 7 and hits["score"].iloc[0] == pytest.approx(1, abs=1e-6)
    assert (np.diff(hits["score"].to_numpy()) <= 1e-7).all()
    labels = gpd.GeoDataFrame({"class": np.where(cls[:80] == 1, "east", "west")},
                              geometry=gpd.points_from_xy(x[:80] + 1, y[:80] + 1), crs=32631).to_crs(4326)
    clf = pts.fewshot(labels)
    out = pts.predict(clf)
    assert (out["class"].to_numpy() == np.where(cls == 1, "east", "west")).mean() > 0.95
    Xl, yl, rows = pts.labelled(labels)
    cv = pts.spatial_cv(rows, block_size=1000, buffer=100)
    scores = cross_val_score(FewShotClassifier(), Xl, yl, cv=cv)
    assert len(scores) == cv.get_n_splits(Xl, yl) and scores.mean() > 0.9


def test_geoparquet_errors(tmp_path):
    gpd = pytest.importorskip("geopandas")
    g = gpd.GeoDataFrame({"embedding": [[1.0, 2.0], [1.0]]}, geometry=gpd.points_from_xy([0, 10], [0, 0]),
                         crs=32631)
    p = tmp_path / "ragged.parquet"
    g.to_parquet(p)
    with pytest.raises(InputError, match="different lengths"):
        open_embeddings(p)
    with pytest.raises(InputError, match="no 'vec' column"):
        open_embeddings(p, column="vec")


# ---- generic rasters and eoembed's own stores -----------------------------------------
def test_float_geotiff_and_zarr_of_vectors(tmp_path):
    emb, _ = make_emb(5, 6, 4, seed=4)
    tif = tmp_path / "v.tif"
    emb.rename(embedding="band").assign_coords(band=np.arange(1, 5)).rio.to_raster(tif)
    g = open_embeddings(tif, model="mine")
    np.testing.assert_allclose(g.values, emb.values, rtol=1e-6)
    assert g.attrs["eoembed:model"] == "mine" and tuple(g.rio.transform()) == tuple(emb.rio.transform())
    # a generic Zarr: (band, y, x) variable with a grid mapping
    z = tmp_path / "v.zarr"
    emb.rename(embedding="channel").to_dataset(name="features").to_zarr(z, consolidated=False)
    zc = open_embeddings(z)
    assert zc.dims == ("embedding", "y", "x") and zc.rio.crs == emb.rio.crs
    np.testing.assert_allclose(zc.values, emb.values, rtol=1e-6)
    # one 2-D variable per dim (A00.. as separate variables)
    z2 = tmp_path / "split.zarr"
    ds = xr.Dataset({f"A{i}": emb.isel(embedding=i, drop=True) for i in (2, 0, 3, 1)})  # any order: names rule
    ds.to_zarr(z2, consolidated=False)  # no consolidated metadata: variables come back in listing order
    np.testing.assert_allclose(open_embeddings(z2, format="zarr").values, emb.values, rtol=1e-6)
    bad = tmp_path / "bad.zarr"
    xr.Dataset({"v": (("a", "b"), np.zeros((2, 2)))}).to_zarr(bad, consolidated=False)
    with pytest.raises(DimensionError, match="no single vector variable"):
        open_embeddings(bad)


def test_own_store_round_trip_dispatches_to_io(tmp_path):
    from eoembed.io import save_embeddings

    emb, _ = make_emb(5, 6, 4, seed=5)
    emb = emb.rename("embeddings")
    p = save_embeddings(emb, tmp_path / "own.zarr")
    back = open_embeddings(p)  # auto-detected as eoembed's own store
    assert back.attrs == {**emb.attrs, **back.attrs} and back.attrs["eoembed:model"] == emb.attrs["eoembed:model"]
    np.testing.assert_allclose(back.values, emb.values)
    assert eoembed.open_embeddings is open_embeddings  # the package-level name is the product reader


# ---- the whole workflow on products (issue 20's "done when") ----------------------------
def _planted_products(tmp_path):
    """The same planted 3-class cube as an AlphaEarth int8 COG and as GeoParquet rows."""
    emb, truth = make_emb(30, 36, 64, block=6, noise=0.3, seed=11, pitch=10.0)
    v = emb.values / np.linalg.norm(emb.values, axis=0, keepdims=True)
    aef = tmp_path / "aef_2024.tif"
    _write_aef(aef, _aef_quantize(v), transform=emb.rio.transform())
    gdf, _, _ = _rows(emb)
    gp = tmp_path / "rows.parquet"
    gdf.to_parquet(gp)
    return emb, truth, {"alphaearth": aef, "geoparquet": gp}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["alphaearth", "geoparquet"])
def test_search_fewshot_explorer_and_class_map_on_products(tmp_path, fmt):
    pytest.importorskip("faiss")
    pytest.importorskip("ipyleaflet")
    gpd = pytest.importorskip("geopandas")
    from eoembed import export

    own, truth, paths = _planted_products(tmp_path)
    emb = open_embeddings(paths[fmt])
    assert emb.rio.crs == own.rio.crs and tuple(emb.rio.transform()) == tuple(own.rio.transform())
    # search: the top hits of a patch share its planted class
    idx = emb.eo.index()
    hits = idx.search(point=(float(emb.x[4]), float(emb.y[4])), k=10)
    assert (truth.values[hits["row"], hits["col"]] == truth.values[4, 4]).mean() >= 0.9
    # few-shot with spatial CV
    rng = np.random.default_rng(0)
    r, c = rng.integers(0, 30, 120), rng.integers(0, 36, 120)
    labels = gpd.GeoDataFrame({"class": np.char.add("c", truth.values[r, c].astype(str))},
                              geometry=gpd.points_from_xy(emb.x.values[c], emb.y.values[r]), crs=emb.rio.crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = emb.eo.fewshot(labels)
        assert clf.cv_report().accuracy > 0.8
    pm = clf.predict_map()
    # the explorer: a click is the index query, labels train the same classifier
    ex = emb.eo.explore(k=5)
    h = ex.click(float(emb.x[4]), float(emb.y[4]))
    assert list(h["id"]) == list(idx.search(point=(float(emb.x[4]), float(emb.y[4])), k=5)["id"])
    for i in range(0, 120, 4):
        ex.label(float(emb.x[c[i]]), float(emb.y[r[i]]), f"c{truth.values[r[i], c[i]]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ex.train().predict_map()["class"].shape == (30, 36)
    # the class map leaves as a COG with its colours
    out = export.to_cog(pm, tmp_path / "classes.tif", colors={"c0": (255, 0, 0)})
    with rasterio.open(out) as ds:
        assert ds.crs == own.rio.crs and tuple(ds.transform)[:6] == tuple(own.rio.transform())[:6]
        assert ds.colormap(1)[0] == (255, 0, 0, 255) and ds.nodata == 255
        a = ds.read(1)
    assert (a == pm["class"].values).mean() > 0.99


# ---- validated at the door: each bad input gets a typed, actionable error (issue 27) -----------
def test_alphaearth_cog_declaring_its_own_nodata_is_masked(tmp_path):
    """A re-exported AlphaEarth COG (64 int8 bands A00-A63) that declares nodata -127: a pixel at -127 in every
    band is no data, as GDAL readers of the file see it."""
    rng = np.random.default_rng(1)
    q = _aef_quantize(_unit(rng, 64, 6, 7))
    q[:, 2, 3] = -127
    path = tmp_path / "aef_reexport_2023.tif"
    with rasterio.open(path, "w", driver="COG", width=7, height=6, count=64, dtype="int8", crs="EPSG:32631",
                       transform=T, nodata=-127) as ds:
        ds.write(q)
        ds.descriptions = tuple(f"A{i:02d}" for i in range(64))
    emb = open_embeddings(path).values
    assert np.isnan(emb[:, 2, 3]).all() and np.isfinite(emb[:, 2, 2]).all()
    assert np.isfinite(emb).all(axis=0).sum() == 41


def test_transform_order_and_shape_are_checked(tmp_path):
    from affine import Affine

    from eoembed.exceptions import TransformError

    npy, q, s, lm = _tessera_tile(tmp_path)
    gdal = (T.c, T.a, 0.0, T.f, 0.0, T.e)  # GDAL geotransform order
    with pytest.raises(TransformError, match=r"GDAL's geotransform order.*Affine.from_gdal"):
        open_embeddings(npy, crs="EPSG:32631", transform=gdal)
    with pytest.raises(TransformError, match="has 4 numbers.*from_bounds"):
        open_embeddings(npy, crs="EPSG:32631", transform=(500_000, 5_699_880, 500_100, 5_700_000))
    with pytest.raises(TransformError, match="rotated or sheared"):
        open_embeddings(npy, crs="EPSG:32631", transform=Affine(10, 1, T.c, 0, -10, T.f))
    # the documented forms: an Affine, its six numbers, or Affine.from_gdal of a geotransform
    a = open_embeddings(npy, crs="EPSG:32631", transform=Affine.from_gdal(*gdal))
    b = open_embeddings(npy, crs="EPSG:32631", transform=tuple(T)[:6])
    np.testing.assert_array_equal(a.x.values, b.x.values)


def test_file_that_does_not_match_its_format(tmp_path, aef):
    from eoembed.exceptions import ProductFormatError

    fake = tmp_path / "grid_0.15_52.05.npy"
    fake.write_text("<html>404 Not Found</html>")
    np.save(tmp_path / "grid_0.15_52.05_scales.npy", np.ones((2, 2), np.float32))
    with pytest.raises(ProductFormatError, match="not a NumPy array file"):
        open_embeddings(fake, crs="EPSG:32631", transform=T)
    path, _, _ = aef
    with pytest.raises(ProductFormatError, match=r"format='geoparquet' does not match.*raster"):
        open_embeddings(path, format="geoparquet")
    with pytest.raises(ProductFormatError, match=r"format='zarr' does not match"):
        open_embeddings(path, format="zarr")
    with pytest.raises(ParameterError, match="did you mean 'tessera'"):
        open_embeddings(path, format="tesera")


def test_channels_first_tessera_tile_is_named_as_such(tmp_path):
    from eoembed.exceptions import ProductFormatError

    npy, q, s, lm = _tessera_tile(tmp_path)
    np.save(npy, np.moveaxis(q, -1, 0))  # (C, H, W): channels first
    with pytest.raises(ProductFormatError, match=r"channels-first.*np.moveaxis"):
        open_embeddings(npy, georef=lm)


def test_empty_and_all_zero_geoparquet(tmp_path):
    gpd = pytest.importorskip("geopandas")
    from eoembed.exceptions import EmptyDataError

    empty = gpd.GeoDataFrame({"embedding": []}, geometry=gpd.GeoSeries([], crs=32631), crs=32631)
    p = tmp_path / "empty.parquet"
    empty.to_parquet(p)
    with pytest.raises(EmptyDataError, match="holds no rows"):
        open_embeddings(p)
    zeros = gpd.GeoDataFrame({"embedding": [[0.0, 0.0]] * 3}, geometry=gpd.points_from_xy([0, 10, 20], [0, 0, 0]),
                             crs=32631)
    p2 = tmp_path / "zeros.parquet"
    zeros.to_parquet(p2)
    with pytest.raises(EmptyDataError, match="is all zeros"):
        open_embeddings(p2)


def test_point_search_row_past_the_end(tmp_path):
    gpd = pytest.importorskip("geopandas")
    from eoembed.exceptions import QueryError

    rng = np.random.default_rng(0)
    g = gpd.GeoDataFrame({"embedding": list(rng.normal(size=(20, 4)).astype(np.float32))},
                         geometry=gpd.points_from_xy(rng.uniform(0, 1e4, 20), rng.uniform(0, 1e4, 20)), crs=32631)
    p = tmp_path / "pts.parquet"
    g.to_parquet(p)
    pts = open_embeddings(p)
    assert isinstance(pts, PointEmbeddings)
    with pytest.raises(QueryError, match=r"rows are 0..19"):
        pts.search(20)
    with pytest.raises(QueryError, match=r"rows are 0..19"):
        pts.search(-1)


def test_all_zero_raster_vectors_are_not_called_nan(tmp_path):
    """A float GeoTIFF whose vectors are all zeros opens (lazily), and indexing it says zeros, not NaN."""
    pytest.importorskip("faiss")
    from eoembed.exceptions import EmptyDataError

    emb, _ = make_emb(5, 6, 4, seed=4)
    tif = tmp_path / "zeros.tif"
    (emb * 0).rename(embedding="band").assign_coords(band=np.arange(1, 5)).rio.to_raster(tif)
    cube = open_embeddings(tif)
    with pytest.raises(EmptyDataError, match="all zeros"):
        cube.eo.index()
