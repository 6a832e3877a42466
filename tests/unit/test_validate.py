"""eoembed.validate: one place that checks a cube, the same answer at every entry point (issue 17).

Each defect of issue 17 that concerns inputs has a regression test here; legitimate
inputs (south-up, descending x, float16, ±inf as missing) keep working.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import eoembed
from eoembed import exceptions as E
from eoembed.testing import synthetic_cube
from eoembed.validate import check_crs, check_time, ground_scale, validate_cube

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402


@pytest.fixture(scope="module")
def cube():
    return synthetic_cube(height=32, width=32, times=2, seed=3)


def _embed(c, **kw):
    kw = {"tile_size": 16, "halo": 0, "progress": False, **kw}
    return eoembed.embed(c, "spectral", **kw)


def _stitched(c):
    """Two crops of one scene put side by side: a 90 m gap in x at column 16."""
    x = c.x.values.copy()
    x[16:] += 90.0
    return c.assign_coords(x=x)


# --- grid ---------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["embed", "embed_cost", "validate_cube", "dask"])
def test_unevenly_spaced_coordinates_are_refused_at_every_entry_point(cube, entry):
    bad = _stitched(cube)
    with pytest.raises(E.CoordinateError, match="not evenly spaced.*index 15") as info:
        if entry == "embed":
            _embed(bad)
        elif entry == "embed_cost":
            eoembed.embed_cost(bad, "spectral")
        elif entry == "dask":
            _embed(bad.chunk({"x": 16}))
        else:
            validate_cube(bad)
    assert "merge_arrays" in str(info.value) and "reproject" in str(info.value)


def test_unsorted_and_duplicated_coordinates_are_refused(cube):
    with pytest.raises(E.CoordinateError, match="sortby"):
        _embed(cube.isel(x=[*range(10), 12, 11, *range(13, 32)]))
    with pytest.raises(E.CoordinateError, match="drop_duplicates"):
        _embed(cube.isel(y=[0, *range(31)]))


def test_legitimate_grids_dtypes_and_missing_values_keep_working(cube):
    ref = _embed(cube)
    south_up = _embed(cube.isel(y=slice(None, None, -1)))
    np.testing.assert_allclose(south_up.sel(y=ref.y).values, ref.values, atol=1e-6)
    descending = _embed(cube.isel(x=slice(None, None, -1)))
    np.testing.assert_allclose(descending.sel(x=ref.x).values, ref.values, atol=1e-6)
    np.testing.assert_allclose(_embed(cube.astype("float16")).values, ref.values, rtol=1e-3, atol=1e-3)
    with_inf, with_nan = cube.copy(), cube.copy()
    with_inf[0, :, :4, :4] = np.inf
    with_inf[1, :, 8:12, :4] = -np.inf
    with_nan[0, :, :4, :4] = np.nan
    with_nan[1, :, 8:12, :4] = np.nan
    np.testing.assert_array_equal(_embed(with_inf).values, _embed(with_nan).values)
    f32coords = cube.assign_coords(x=cube.x.values.astype("float32"), y=cube.y.values.astype("float32"))
    assert _embed(f32coords).shape == ref.shape  # float32 coordinates: rounding is not a gap


# --- time --------------------------------------------------------------------------------
def test_tz_aware_and_string_times_are_converted_to_utc(cube):
    aware = pd.DatetimeIndex(["2021-03-01T01:00", "2021-04-01T01:00"]).tz_localize("Europe/Paris")
    c = cube.assign_coords(time=np.array(list(aware), dtype=object))
    out = check_time(c)
    assert out.time.dtype == np.dtype("datetime64[ns]")
    assert str(out.time.values[0])[:16] == "2021-03-01T00:00"  # 01:00 CET = 00:00 UTC
    assert _embed(c).attrs["eoembed:time_range"] == ["2021-03-01", "2021-03-31"]  # 01:00 CEST = 23:00 UTC the day before
    s = cube.assign_coords(time=["2021-03-01", "2021-04-01"])
    assert check_time(s).time.dtype == np.dtype("datetime64[ns]")


def test_nat_and_unparsable_times_are_refused(cube):
    nat = cube.assign_coords(time=np.array(["2021-03-01", "NaT"], dtype="datetime64[ns]"))
    with pytest.raises(E.TimeCoordinateError, match="NaT at position"):
        _embed(nat)
    with pytest.raises(E.TimeCoordinateError, match="not dates"):
        _embed(cube.assign_coords(time=["spring", "summer"]))


def test_unsorted_times_are_sorted_with_a_warning_or_refused(cube):
    shuffled = cube.isel(time=[1, 0])
    with pytest.warns(UserWarning, match="sorted"):
        emb = _embed(shuffled, pool_time=False)
    assert (np.diff(emb.time.values) > np.timedelta64(0)).all()
    np.testing.assert_array_equal(emb.values, _embed(cube, pool_time=False).values)
    with pytest.raises(E.TimeCoordinateError, match="sortby"):
        check_time(shuffled, unsorted="raise")


# --- dtype and values --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_eight_bit_quicklooks_are_refused_with_the_fix(cube, dtype):
    q = (cube / 10000 * 255).clip(0, 127).astype(dtype)
    with pytest.raises(E.ScaleError, match="quick-look") as info:
        _embed(q)
    assert "scale=k" in str(info.value) and "uint16" in str(info.value)
    with pytest.raises(E.ScaleError, match="quick-look"):
        eoembed.embed_cost(q, "spectral")


def test_dataset_with_mixed_band_dtypes_is_refused(cube):
    ds = cube.isel(time=0).to_dataset(dim="band")
    ds = ds.assign({b: (ds[b] / 10000).astype("float32") for b in ("B02", "B03")})
    ds = ds.assign({b: ds[b].astype("uint16") for b in ds.data_vars if b not in ("B02", "B03")})
    with pytest.raises(E.ScaleError, match="mix dtypes.*B02") as info:
        _embed(ds.rio.write_crs(cube.rio.crs))
    assert "* 10000" in str(info.value)
    # a float DataArray with the same mix is caught from the values
    da = cube.copy()
    da.loc[{"band": ["B02", "B03"]}] = da.sel(band=["B02", "B03"]) / 10000
    with pytest.raises(E.ScaleError, match="0–1 reflectance.*digital"):
        _embed(da)


def test_dataset_of_s2_dn_and_s1_db_is_fine(cube):
    ds = cube.isel(time=0).astype("uint16").to_dataset(dim="band")
    rng = np.random.default_rng(0)
    ds["vv"] = (("y", "x"), rng.uniform(-20, -5, (32, 32)).astype("float32"))
    ds["vh"] = (("y", "x"), rng.uniform(-25, -10, (32, 32)).astype("float32"))
    ds = ds.expand_dims(time=cube.time.values[:1]).rio.write_crs(cube.rio.crs)
    assert np.isfinite(_embed(ds, modalities=("sentinel2_l2a",), extra_bands="ignore").values).all()


@pytest.mark.parametrize("lazy", [False, True])
def test_an_entirely_empty_band_is_refused(cube, lazy):
    c = cube.copy()
    c.loc[{"band": "B11"}] = np.nan
    c = c.chunk({"x": 16}) if lazy else c
    with pytest.raises(E.EmptyDataError, match=r"\['B11'\].*drop_sel") as info:
        _embed(c)
    assert "absent" in str(info.value)
    # the fix works: the band is then handled as absent
    ok = _embed(c.drop_sel(band="B11"))
    assert np.isfinite(ok.values).all()


def test_a_band_empty_only_under_its_nodata_value_is_refused(cube):
    c = cube.copy()
    c.loc[{"band": "B12"}] = 0.0
    c = c.rio.write_nodata(0.0)
    with pytest.raises(E.EmptyDataError, match="B12"):
        _embed(c)


def test_galileo_with_an_empty_band_is_refused_before_the_model(cube, tmp_path):
    c = cube.copy()
    c.loc[{"band": "B11"}] = np.nan
    with pytest.raises(E.EmptyDataError, match="B11"):
        eoembed.embed(c, "galileo-nano", weights=tmp_path / "none", progress=False)  # before any weights


# --- CRS ---------------------------------------------------------------------------------
def test_web_mercator_ten_metres_is_warned_like_utm_and_gets_ground_resolution(cube, checkpoints):
    # ~50.3°N: a "10 m" Web Mercator pixel is ~6.4 m on the ground
    merc = synthetic_cube(height=32, width=32, times=2, seed=3, crs="EPSG:3857", origin=(1_000_000.0, 6_500_000.0))
    k_m, k_p = ground_scale(merc.rio.crs, 1_000_160.0, 6_499_840.0)
    assert k_m == pytest.approx(k_p, rel=1e-6) and 1.5 < k_m < 1.62
    spec = eoembed.get_model_spec("olmoearth-v1.1-nano")
    with pytest.warns(UserWarning, match="on the ground.*stretches distances"):
        _, res = check_crs(merc, spec)
    assert res == pytest.approx(10 / k_m, rel=1e-3)
    with pytest.warns(UserWarning, match="stretches"):
        emb = eoembed.embed(merc, "olmoearth-v1.1-nano", weights=checkpoints["v1.1"], progress=False)
    assert emb.attrs["eoembed:input_res"] == pytest.approx(10 / k_m, rel=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_crs(cube, spec)  # UTM at 10 m: nothing to say
    assert eoembed.embed_cost(merc, "spectral")["area_km2"] == pytest.approx(0.32 ** 2 / k_m ** 2, rel=1e-2)


def test_a_crs_in_feet_is_refused(cube):
    ft = cube.rio.write_crs("EPSG:2263")  # NY State Plane, US survey feet
    with pytest.raises(E.InputError, match="not metres"):
        _embed(ft)


# --- options -----------------------------------------------------------------------------
def test_negative_halo_is_named_as_such(cube):
    with pytest.raises(E.ParameterError, match="halo=-4 is out of range: it must be 0") as info:
        _embed(cube, halo=-4)
    assert "no core" not in str(info.value)
    with pytest.raises(E.ParameterError, match="tile_size"):
        eoembed.embed_cost(cube, "spectral", tile_size=0)


# --- search, few-shot, explorer ----------------------------------------------------------
def test_identical_positive_and_negative_are_refused():
    pytest.importorskip("faiss")
    emb, _ = make_emb(20, 20, 8, seed=1)
    idx = eoembed.build_index(emb)
    with pytest.raises(E.QueryError, match="identical"):
        idx.similarity_map(positives=[{"patch": (3, 4)}], negatives=[{"patch": (3, 4)}])
    with pytest.raises(E.QueryError, match="negatives\\[1\\] is the same example as positives\\[0\\]"):
        idx.search(positives=[{"patch": (3, 4)}], negatives=[{"patch": (5, 5)}, {"patch": (3, 4)}])
    assert idx.search(positives=[{"patch": (3, 4)}], negatives=[{"patch": (5, 5)}], k=3) is not None


def test_corrupt_index_meta_json_is_a_typed_error(tmp_path):
    pytest.importorskip("faiss")
    emb, _ = make_emb(10, 10, 8, seed=2)
    eoembed.build_index(emb).save(tmp_path / "idx")
    meta = tmp_path / "idx" / "meta.json"
    good = meta.read_text()
    meta.write_text(good[: len(good) // 2])
    with pytest.raises(E.IndexMismatchError, match="damaged.*build_index"):
        eoembed.EmbeddingIndex.load(tmp_path / "idx")
    d = json.loads(good)
    del d["crs_wkt"]
    meta.write_text(json.dumps(d))
    with pytest.raises(E.IndexMismatchError, match="lacks 'crs_wkt'"):
        eoembed.EmbeddingIndex.load(tmp_path / "idx")
    meta.write_text(good)
    faiss_file = tmp_path / "idx" / "index.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:40])
    with pytest.raises(E.IndexMismatchError, match="damaged or truncated"):
        eoembed.EmbeddingIndex.load(tmp_path / "idx")


def test_fewshot_labels_in_a_nullable_string_column():
    pytest.importorskip("sklearn")
    gpd = pytest.importorskip("geopandas")
    import shapely

    emb, truth = make_emb(30, 30, 8, block=10, n_classes=2, seed=4)
    rows, cols = np.meshgrid(np.arange(0, 30, 2), np.arange(0, 30, 2), indexing="ij")
    pts = [shapely.Point(float(emb.x[c]), float(emb.y[r])) for r, c in zip(rows.ravel(), cols.ravel())]
    cls = pd.array([f"c{int(truth.values[r, c])}" for r, c in zip(rows.ravel(), cols.ravel())], dtype="string")
    cls[3] = pd.NA
    gdf = gpd.GeoDataFrame({"class": cls}, geometry=pts, crs=emb.rio.crs)
    clf = eoembed.fewshot(emb, gdf, n_splits=3)
    assert set(clf.classes_) == {"c0", "c1"}


def test_fewshot_refuses_a_stitched_embedding_cube():
    pytest.importorskip("sklearn")
    gpd = pytest.importorskip("geopandas")
    emb, _ = make_emb(20, 20, 8, seed=5)
    x = emb.x.values.copy()
    x[10:] += 500
    with pytest.raises(E.CoordinateError):
        eoembed.fewshot(emb.assign_coords(x=x), gpd.GeoDataFrame({"class": []}, geometry=[], crs=emb.rio.crs))


def test_explore_warns_when_the_cube_does_not_overlap():
    pytest.importorskip("ipyleaflet")
    pytest.importorskip("faiss")
    emb, _ = make_emb(20, 20, 8, seed=6)  # at (500 km, 5700 km) in EPSG:32631
    far = synthetic_cube(height=32, width=32, times=1, origin=(550_000.0, 5_700_000.0))
    with pytest.warns(UserWarning, match="does not overlap.*km away"):
        eoembed.explore.explore(emb, far, scatter=None)
    near = synthetic_cube(height=32, width=32, times=1, origin=(500_100.0, 5_699_900.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        eoembed.explore.explore(emb, near, scatter=None)


# --- command line and open_cube ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["text", "empty", "zarr_folder", "latlon"])
def test_open_cube_and_cli_refuse_unreadable_files_in_one_line(tmp_path, capsys, kind):
    from eoembed.cli import main
    from eoembed.data import open_cube

    if kind == "text":
        path = tmp_path / "scene.nc"
        path.write_text("<html>404</html>")
        fragment = "not a file eoembed can open"
    elif kind == "empty":
        path = tmp_path / "scene.nc"
        path.write_bytes(b"")
        fragment = "0 bytes"
    elif kind == "zarr_folder":
        path = tmp_path / "cube.zarr"
        path.mkdir()
        fragment = "not a readable Zarr store"
    else:
        path = tmp_path / "ll.nc"
        xr.Dataset({"B02": (("lat", "lon"), np.ones((3, 3), "f4"))}, coords={"lat": [1.0, 2, 3], "lon": [1.0, 2, 3]}
                   ).to_netcdf(path)
        fragment = "reproject"
    with pytest.raises(E.InputError, match=fragment) as info:
        open_cube(path)
    assert "keep_extra" not in str(info.value)
    for cmd in (["cost", str(path), "--model", "spectral"], ["embed", str(path), "-o", str(tmp_path / "o.zarr")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error (") and fragment in err


def test_cli_negative_halo_is_one_line(tmp_path, capsys, cube):
    from eoembed.cli import main

    src = tmp_path / "cube.nc"
    cube.to_dataset(dim="band").to_netcdf(src)
    assert main(["embed", str(src), "-o", str(tmp_path / "o.zarr"), "--model", "spectral", "--halo", "-4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "halo=-4" in err and "no core" not in err


def test_value_checks_on_many_dask_blocks_read_a_few_and_fall_back_to_exact():
    from eoembed.validate import SAMPLE_BLOCKS, check_band_values

    c = synthetic_cube(height=64, width=64, times=1, seed=8).copy()
    c.loc[{"band": "B01"}] = np.nan
    c.loc[{"band": "B01", "y": c.y[61], "x": c.x[13]}] = 900.0  # data in one block the sample skips
    c.loc[{"band": "B09"}] = np.nan
    lazy = c.chunk({"y": 8, "x": 8})  # 64 spatial blocks
    assert len(lazy.chunks[-1]) * len(lazy.chunks[-2]) > SAMPLE_BLOCKS
    with pytest.raises(E.EmptyDataError, match=r"\['B09'\]"):  # B01 is not named: its pixel is found
        check_band_values(lazy)
    check_band_values(lazy.drop_sel(band="B09"))
    mixed = c.drop_sel(band=["B01", "B09"]).copy()
    mixed.loc[{"band": "B03"}] = mixed.sel(band="B03") / 10000
    with pytest.raises(E.ScaleError, match="B03"):
        check_band_values(mixed.chunk({"y": 8, "x": 8}))


def test_crs_transformers_are_made_once_per_thread_and_never_shared_between_threads():
    """embed() needs lon/lat and ground scale on every call: the pyproj objects are cached, per thread
    (pyproj transformers must not be used from two threads at once; dask runs blocks in threads)."""
    import threading

    from eoembed.cube import to_crs_xy, transformer

    a = transformer("EPSG:32631", "EPSG:4326")
    assert transformer("EPSG:32631", "EPSG:4326") is a  # cached in this thread
    other = []
    th = threading.Thread(target=lambda: other.append(transformer("EPSG:32631", "EPSG:4326")))
    th.start()
    th.join()
    assert other[0] is not a  # another thread gets its own
    lon, lat = a.transform(500_000.0, 5_500_000.0)
    assert abs(lon - 3.0) < 1e-9 and 49 < lat < 50  # the central meridian of zone 31
    x, y = to_crs_xy([500_000.0], [5_500_000.0], "EPSG:32631", "EPSG:4326")
    assert x[0] == lon and y[0] == lat
