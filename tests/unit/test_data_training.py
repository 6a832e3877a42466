"""eoembed.data training extractions: read, align 20 m → 10 m, SCL mask, monthly medians, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from eoembed.data import align_to, read_extraction, training_cube, training_labels, training_surface_temperature
from eoembed.exceptions import InputError, ParameterError

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "worldcereal-training"
X0, Y1 = 500_000.0, 5_600_080.0  # top-left corner, EPSG:32631
TIMES = pd.to_datetime(["2019-01-05", "2019-01-20", "2019-02-10"])
S1_TIMES = pd.to_datetime(["2019-01-03", "2019-02-02", "2019-02-14"])


def _grid(res: float, n: int):
    return {"x": X0 + res / 2 + res * np.arange(n), "y": Y1 - res / 2 - res * np.arange(n)}


def _write(path: Path, variables: dict, res: float, n: int, times=None, scale=1e-4):
    coords = _grid(res, n)
    dims = ("y", "x") if times is None else ("timestamp", "y", "x")
    if times is not None:
        coords["timestamp"] = times
    ds = xr.Dataset(coords=coords)
    for name, (values, fill) in variables.items():
        attrs = {"grid_mapping": "spatial_ref"}
        if fill is not None:
            attrs["_FillValue"] = values.dtype.type(fill)
        if name not in ("SCL", "CT", "LC") and scale is not None:
            attrs["scale_factor"] = scale
        ds[name] = xr.DataArray(values, dims=dims, attrs=attrs)
    ds = ds.rio.write_crs("EPSG:32631")
    ds.attrs = {"start_date": "2019-01-01", "end_date": "2019-02-28", "epsg": "32631"}
    ds.to_netcdf(path, encoding={v: {"_FillValue": None} for v in ds.variables})  # keep raw ints + attrs


@pytest.fixture
def extraction(tmp_path):
    """A 80 m × 80 m extraction: 8×8 px at 10 m, 4×4 px at 20 m, 3 S2 scenes in Jan/Feb."""
    rng = np.random.default_rng(0)
    b10 = {b: (np.full((3, 8, 8), 1000 + 100 * i, np.uint16), 0) for i, b in enumerate(["B02", "B03", "B04", "B08"])}
    b10["B02"][0][1, 0, 0] = 0  # a fill value in scene 1
    b20 = {b: (np.full((3, 4, 4), 2000 + 100 * i, np.uint16), 0)
           for i, b in enumerate(["B05", "B06", "B07", "B8A", "B11", "B12"])}
    b20["B05"][0][:, 0, 1] = [2000, 2100, 2200]  # different per scene in 20 m pixel (0, 1)
    scl = np.full((3, 4, 4), 4, np.uint8)
    scl[2, 0, 1] = 9  # cloud in the February scene over 20 m pixel (0, 1)
    scl[0, 3, 3] = 3  # shadow in the first January scene over 20 m pixel (3, 3)
    b20["SCL"] = (scl, None)
    _write(tmp_path / "S2_L2A_10m_X_32631_2019-01-01_2019-02-28.nc", b10, 10, 8, TIMES)
    _write(tmp_path / "S2_L2A_20m_X_32631_2019-01-01_2019-02-28.nc", b20, 20, 4, TIMES)
    vv = (-10e4 + rng.normal(0, 1e3, (3, 4, 4))).astype(np.int32)
    vh = (-17e4 + rng.normal(0, 1e3, (3, 4, 4))).astype(np.int32)
    _write(tmp_path / "S1_GRD-ASCENDING_20m_X_32631_2019-01-01_2019-02-28.nc",
           {"VV": (vv, 0), "VH": (vh, 0)}, 20, 4, S1_TIMES)
    ct = np.zeros((8, 8), np.uint16)
    ct[:4] = 1110
    ct[4:, :4] = 1200
    _write(tmp_path / "OUTPUT_POLY_10m_X_32631_2019-01-01_2019-02-28.nc", {"CT": (ct, 0)}, 10, 8, None, None)
    return tmp_path


def test_read_extraction_masks_fill_keeps_s2_dn_and_gives_s1_in_db(extraction):
    s2 = read_extraction(next(extraction.glob("S2_L2A_10m_*.nc")))
    assert s2.dims == ("time", "band", "y", "x") and list(s2["band"].values) == ["B02", "B03", "B04", "B08"]
    assert np.isnan(s2.sel(band="B02").values[1, 0, 0]) and s2.sel(band="B03").values[1, 0, 0] == 1100.0
    assert str(s2.rio.crs) == "EPSG:32631" and s2.rio.resolution() == (10.0, -10.0)
    s1 = read_extraction(next(extraction.glob("S1_*.nc")))
    assert s1.attrs["eoembed:s1_units"] == "dB"
    assert abs(float(np.nanmedian(s1.sel(band="vv"))) + 10.0) < 0.2  # -10 dB, not 20·log10(DN) − 83
    assert "SCL" not in read_extraction(next(extraction.glob("S2_L2A_20m_*.nc")))["band"].values
    assert "SCL" in read_extraction(next(extraction.glob("S2_L2A_20m_*.nc")), keep_extra=True)["band"].values


def test_read_extraction_linear_s1_becomes_db_and_unknown_units_raise(tmp_path):
    lin = np.full((2, 4, 4), 1000, np.int32)  # 0.1 linear power → -10 dB
    _write(tmp_path / "lin.nc", {"VV": (lin, 0)}, 20, 4, TIMES[:2])
    got = read_extraction(tmp_path / "lin.nc").sel(band="vv").values
    np.testing.assert_allclose(got, -10.0, atol=1e-4)
    _write(tmp_path / "odd.nc", {"VV": (np.full((2, 4, 4), 300_000, np.int32), 0)}, 20, 4, TIMES[:2])
    with pytest.raises(InputError, match="neither dB"):
        read_extraction(tmp_path / "odd.nc")


def test_read_extraction_without_time_dim_or_file_raises(extraction, tmp_path):
    with pytest.raises(InputError, match="no time dimension"):
        read_extraction(next(extraction.glob("OUTPUT_*.nc")))
    with pytest.raises(InputError, match="does not exist"):
        read_extraction(tmp_path / "nope.nc")


def test_align_to_repeats_each_20m_pixel_over_its_four_10m_pixels(extraction):
    s10 = read_extraction(next(extraction.glob("S2_L2A_10m_*.nc")))
    s20 = read_extraction(next(extraction.glob("S2_L2A_20m_*.nc")))
    s20 = s20.copy(data=np.arange(s20.size, dtype=np.float32).reshape(s20.shape))
    got = align_to(s20, s10)
    assert got.sizes["y"] == got.sizes["x"] == 8 and got.rio.transform() == s10.rio.transform()
    np.testing.assert_array_equal(got.values, np.repeat(np.repeat(s20.values, 2, axis=2), 2, axis=3))


def test_align_to_refuses_different_crs(extraction):
    s10 = read_extraction(next(extraction.glob("S2_L2A_10m_*.nc")))
    other = s10.rio.write_crs("EPSG:32632")
    with pytest.raises(InputError, match="reproject"):
        align_to(other, s10)


def test_training_cube_masks_clouds_composites_monthly_and_adds_s1(extraction):
    cube = training_cube(extraction)
    assert cube.dims == ("time", "band", "y", "x") and cube.sizes["y"] == cube.sizes["x"] == 8
    assert list(pd.to_datetime(cube["time"].values).month) == [1, 2]
    assert list(cube["eoembed:n_scenes"].values) == [2, 1]
    assert set(cube["band"].values) == {"B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12",
                                        "vv", "vh"}
    b05 = cube.sel(band="B05")
    # January: median of scenes 1 and 2 (2000, 2100) on the 2×2 10 m block under 20 m pixel (0, 1)
    np.testing.assert_array_equal(b05.values[0, 0:2, 2:4], 2050.0)
    # February's only scene is cloudy there (SCL 9): no clear observation → NaN, also for 10 m bands
    assert np.isnan(b05.values[1, 0:2, 2:4]).all() and np.isnan(cube.sel(band="B02").values[1, 0:2, 2:4]).all()
    # shadow (SCL 3) in January scene 1 at 20 m pixel (3, 3): January uses scene 2 alone there
    assert cube.sel(band="B02").values[0, 6, 6] == 1000.0
    # scene 2 has B02 fill at (0, 0): January B02 there is scene 1 alone
    assert cube.sel(band="B02").values[0, 0, 0] == 1000.0
    np.testing.assert_allclose(cube["eoembed:clear_fraction"].values, [1 - 4 / 128, 1 - 4 / 64])
    assert abs(float(np.nanmedian(cube.sel(band="vh"))) + 17.0) < 0.2
    assert cube.attrs["eoembed:s1_units"] == "dB" and str(cube.rio.crs) == "EPSG:32631"


def test_training_cube_options_and_errors(extraction, tmp_path):
    no_s1 = training_cube(extraction, sentinel1=False, composite="seasonal")
    assert "vv" not in no_s1["band"].values and no_s1.sizes["time"] == 1  # Jan + Feb are both winter (DJF)
    with pytest.raises(ParameterError, match="scl_keep is empty"):
        training_cube(extraction, scl_keep=[])
    with pytest.raises(ParameterError, match="before start"):
        training_cube(extraction, start="2019-03-01", end="2019-01-01")
    with pytest.raises(InputError, match="S2_L2A_10m"):
        training_cube(tmp_path / "empty_dir_that_is_missing")


def test_training_labels_nodata_zero_on_the_10m_grid(extraction):
    lab = training_labels(extraction)
    cube = training_cube(extraction, sentinel1=False)
    assert lab.rio.nodata == 0 and str(lab.rio.crs) == "EPSG:32631"
    assert lab.rio.transform() == cube.rio.transform()
    assert sorted(np.unique(lab.values).tolist()) == [0, 1110, 1200]
    with pytest.raises(InputError, match="no variable 'XX'"):
        training_labels(extraction, variable="XX")


@pytest.mark.skipif(not REAL.exists(), reason=f"real training sample not found at {REAL}")
def test_real_worldcereal_training_sample():
    cube = training_cube(REAL)
    lab = training_labels(REAL)
    assert cube.sizes == {"time": 16, "band": 12, "y": 64, "x": 64}
    assert lab.rio.transform() == cube.rio.transform()
    # S2 in DN, S1 in dB (README: VV/VH int32 dB × 10⁴)
    assert 200 < float(np.nanmedian(cube.sel(band="B04"))) < 3000
    assert -25 < float(np.nanmedian(cube.sel(band="vv"))) < -3
    counts = dict(zip(*np.unique(lab.values, return_counts=True)))
    assert counts[1110] == 1378 and counts[9120] == 1387 and counts[5100] == 27


def test_crop_type_names_from_the_worldcereal_legend():
    from eoembed.data import CROP_TYPES, crop_type_names

    names = crop_type_names(np.array([1110, 1200, 1510, 8100, 9120]))
    assert names == {1110: "Winter wheat", 1200: "Maize", 1510: "Winter barley", 8100: "Sugar beet",
                     9120: "Permanent grass crops"}
    assert list(crop_type_names([9120.0, 0, 1500])) == [9120, 0, 1500]  # order kept, whole floats accepted
    assert crop_type_names([0]) == {0: "unlabelled"}
    # a code missing from the table is named after its nearest listed group, with the code
    assert 9130 not in CROP_TYPES and crop_type_names([9130])[9130] == "Grasses and other fodder crops (9130)"
    assert crop_type_names([1999])[1999] == "Other cereals (1999)"
    for bad in [1110.5, -1110, 12, 10000, "wheat", None]:
        with pytest.raises(ParameterError, match="crop-type code"):
            crop_type_names([bad])


@pytest.mark.skipif(not REAL.exists(), reason=f"real training sample not found at {REAL}")
def test_every_code_of_the_real_sample_has_a_legend_name():
    from eoembed.data import CROP_TYPES

    codes = set(np.unique(training_labels(REAL).values).tolist()) - {0}
    assert codes <= set(CROP_TYPES), codes - set(CROP_TYPES)


# Landsat Collection-2 QA_PIXEL values: 21824 clear land (bit 6), 22280 cloud (bit 3, no bit 6),
# 21840 = clear bit + cloud-shadow bit 4 (not clear), 1 = fill
L8_TIMES = ["2019-04-02", "2019-05-04", "2019-06-05", "2019-10-11"]


def _l8(folder: Path, st: np.ndarray, qa: np.ndarray) -> Path:
    ds = xr.Dataset({"ST-B10": (("timestamp", "y", "x"), st, {"_FillValue": np.uint16(0), "scale_factor": 1,
                                                                 "grid_mapping": "spatial_ref"}),
                     "QA-PIXEL": (("timestamp", "y", "x"), qa, {"_FillValue": np.uint16(0),
                                                                "grid_mapping": "spatial_ref"})},
                    coords={"timestamp": np.array(L8_TIMES), **_grid(10, 2)})  # string dates, as in the real file
    ds = ds.rio.write_crs("EPSG:32631")
    path = folder / "L8_L2-ST_10m_X_32631_2019-01-01_2019-12-31.nc"
    ds.to_netcdf(path, encoding={v: {"_FillValue": None} for v in ds.variables})
    return path


def test_training_surface_temperature_means_clear_observations_only(tmp_path):
    st = np.array([290, 292, 294, 300], np.uint16)[:, None, None] * np.ones((1, 2, 2), np.uint16)
    qa = np.full((4, 2, 2), 21824, np.uint16)
    qa[1, 0, 0] = 22280  # cloud over pixel (0, 0) in May
    qa[2, 0, 1] = 21840  # clear bit but cloud shadow over (0, 1) in June
    st[0, 1, 0] = 0  # fill over (1, 0) in April
    qa[:3, 1, 1] = 1  # (1, 1) is fill until October
    _l8(tmp_path, st, qa)
    got = training_surface_temperature(tmp_path, min_clear=1)
    assert got.dims == ("y", "x") and got.attrs["units"] == "K" and str(got.rio.crs) == "EPSG:32631"
    np.testing.assert_allclose(got.values, [[np.mean([290, 294, 300]), np.mean([290, 292, 300])],
                                            [np.mean([292, 294, 300]), 300.0]])
    assert got.attrs["eoembed:acquisitions"] == 4 and got.rio.transform().c == X0
    season = training_surface_temperature(tmp_path, start="2019-04-01", end="2019-06-30", min_clear=2)
    np.testing.assert_allclose(season.values, [[292.0, 291.0], [293.0, np.nan]])  # (1, 1): no clear obs
    assert season.attrs["eoembed:acquisitions"] == 3 and season.attrs["eoembed:period"] == ["2019-04-01",
                                                                                           "2019-06-30"]


def test_training_surface_temperature_errors(tmp_path, extraction):
    with pytest.raises(InputError, match="L8_L2-ST"):
        training_surface_temperature(extraction)  # no Landsat file in the folder
    _l8(tmp_path, np.full((4, 2, 2), 295, np.uint16), np.full((4, 2, 2), 22280, np.uint16))
    with pytest.raises(InputError, match="no pixel has 3 clear observations"):
        training_surface_temperature(tmp_path)
    for bad in (0, 2.5, True):
        with pytest.raises(ParameterError, match="min_clear"):
            training_surface_temperature(tmp_path, min_clear=bad)
    with pytest.raises(ParameterError, match="before start"):
        training_surface_temperature(tmp_path, start="2019-09-01", end="2019-05-01")


@pytest.mark.skipif(not REAL.exists(), reason=f"real training sample not found at {REAL}")
def test_real_surface_temperature_on_the_label_grid():
    st = training_surface_temperature(REAL, start="2019-04-01", end="2019-09-30")
    lab = training_labels(REAL)
    assert st.rio.transform() == lab.rio.transform() and st.shape == lab.shape
    assert 280 < float(st.min()) and float(st.max()) < 315  # kelvin, summer half-year in Flanders
    assert st.attrs["eoembed:acquisitions"] > 10 and st.attrs["eoembed:clear_obs_median"] >= 3
