"""eoembed.bands: nodata, scale detection, harmonization decisions, band preparation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import eoembed
from eoembed import bands as B
from eoembed.testing import synthetic_cube


# ---- nodata on decoded data (issue 8, A5) -----------------------------------------
def _write_decoded(tmp_path, stored: np.ndarray, **encoding) -> xr.DataArray:
    cube = synthetic_cube(height=stored.shape[-2], width=stored.shape[-1], times=stored.shape[0], seed=3)
    dec = stored.astype("float64")
    fill = encoding.get("_FillValue")
    dec = np.where(stored == fill, np.nan, dec * encoding.get("scale_factor", 1.0) + encoding.get("add_offset", 0.0))
    raw = cube.copy(data=dec)  # what the file means; to_netcdf encodes it back to ``stored``
    raw.encoding = {}
    raw.name = "reflectance"
    path = tmp_path / "cube.nc"
    raw.drop_vars("spatial_ref", errors="ignore").to_netcdf(path, encoding={"reflectance": encoding})
    back = xr.open_dataarray(path)  # mask_and_scale=True: the fill becomes NaN
    return back.rio.write_crs(cube.rio.crs).rio.write_transform(cube.rio.transform())


def test_decoded_fill_does_not_mask_real_values(tmp_path):
    """uint16 DN stored with _FillValue=0 and add_offset=-1000 (the baseline-04 offset):
    stored 1000 decodes to a real 0.0, stored 0 (the fill) to NaN."""
    cube = synthetic_cube(height=16, width=16, times=1, seed=3)
    stored = np.clip(np.asarray(cube.values), 1100, 60000).astype("uint16")
    stored[:, :, :4, :4] = 1000  # real dark pixels -> 0.0 after decoding
    stored[:, :, 12:, 12:] = 0   # nodata
    dec = _write_decoded(tmp_path, stored, dtype="uint16", _FillValue=0, add_offset=-1000.0, scale_factor=1.0)
    assert dec.encoding["_FillValue"] == 0 and float(dec[0, 0, 0, 0]) == 0.0
    assert np.isnan(dec[0, 0, 13, 13])
    nd = B.nodata_value(dec)
    assert nd is None or np.isnan(nd), f"decoded cube reported nodata {nd}: real zeros would be masked"
    # end to end: the dark patch is embedded, the nodata patch is NaN
    emb = eoembed.embed(dec, "spectral", patch_size=4, scale=10000, harmonize=False, progress=False)
    assert np.isfinite(emb.isel(y=0, x=0)).all()
    assert np.isnan(emb.isel(y=3, x=3)).all()


def test_undecoded_fill_still_masks(tmp_path):
    cube = synthetic_cube(height=8, width=8, times=1, seed=3)
    stored = np.clip(np.asarray(cube.values), 1, 60000).astype("uint16")
    stored[:, :, :4, :4] = 0
    path = tmp_path / "raw.nc"
    raw = cube.copy(data=stored).drop_vars("spatial_ref", errors="ignore")
    raw.name = "r"
    raw.to_netcdf(path, encoding={"r": {"_FillValue": 0}})
    back = xr.open_dataarray(path, mask_and_scale=False).rio.write_crs(cube.rio.crs)
    assert B.nodata_value(back) == 0.0
    emb = eoembed.embed(back.rio.write_transform(cube.rio.transform()), "spectral", patch_size=4,
                        harmonize=False, progress=False)
    assert np.isnan(emb.isel(y=0, x=0)).all() and np.isfinite(emb.isel(y=1, x=1)).all()


# ---- scale detection refuses impossible values (issue 8, A6) ------------------------
def _s2(values: np.ndarray) -> xr.DataArray:
    c = synthetic_cube(height=16, width=16, times=1, seed=4)
    return c.copy(data=values.reshape(c.shape).astype(values.dtype))


def _dn():
    c = synthetic_cube(height=16, width=16, times=1, seed=4)
    return np.asarray(c.values, dtype="float64")


@pytest.mark.parametrize("case, make, match", [
    ("mostly negative 0-1", lambda v: v / 1e4 - 0.5, "most values are negative"),
    ("mostly negative DN (offset removed from wrong data)", lambda v: v - 30000, "most values are negative"),
    ("millions", lambda v: v * 500, "far beyond any Sentinel-2 range"),
    # bright uint16 DN (e.g. 40000 on saturated cloud/snow) read as int16 wrap to -25536
    ("int16 wrapped", lambda v: np.where(np.arange(v.size).reshape(v.shape) % 5 == 0, 40000, v)
     .astype("uint16").view("int16"), "wrapped"),
])
def test_scale_refuses_impossible_values(case, make, match):
    cube = _s2(make(_dn()))
    with pytest.raises(eoembed.exceptions.ScaleError, match=match) as e:
        B.detect_scale(cube, list(range(cube.sizes["band"])))
    assert "percentiles" in str(e.value) and "Expected" in str(e.value)
    with pytest.raises(eoembed.exceptions.ScaleError):
        eoembed.embed(cube, "spectral", progress=False)


@pytest.mark.parametrize("make, factor", [
    (lambda v: v - 1000, 1.0),  # harmonized DN: dark pixels down to about -600
    (lambda v: (v - 1000) / 1e4, 10000.0),  # 0-1 reflectance, small negatives (-0.1)
    (lambda v: v.astype("uint16"), 1.0),
])
def test_scale_tolerates_small_negatives(make, factor):
    v = make(_dn())
    cube = _s2(v)
    assert B.detect_scale(cube, list(range(cube.sizes["band"])))[0] == factor


# ---- harmonization: the item's own word first (issue 8, A7) -------------------------
from eoembed import sensors  # noqa: E402

_ES_ASSET = {"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}


@pytest.mark.parametrize("props, assets, offset, why", [
    # Planetary Computer: baseline only
    ({"s2:processing_baseline": "05.10", "datetime": "2024-01-05T10:30:00Z"}, {}, 1000, "s2:processing_baseline"),
    ({"s2:processing_baseline": "03.01", "datetime": "2024-01-05T10:30:00Z"}, {}, 0, "s2:processing_baseline"),
    # Earth Search: the applied flag wins over its (unreliable) raster:bands offset and the baseline
    ({"earthsearch:boa_offset_applied": True, "s2:processing_baseline": "05.10"}, {"red": _ES_ASSET}, 0,
     "boa_offset_applied"),
    ({"earthsearch:boa_offset_applied": False, "s2:processing_baseline": "05.10"}, {"red": _ES_ASSET}, 1000,
     "s2:processing_baseline"),
    # Earth Search Collection 1 / Copernicus Data Space: raster:bands scale/offset
    ({"processing:version": "05.11", "proj:code": "EPSG:32632"}, {"B04": _ES_ASSET}, 1000, "raster:bands"),
    ({"processing:version": "05.11"}, {"B04": {"raster:bands": [{"scale": 0.0001, "offset": 0.0}]}}, 0,
     "raster:bands"),
    ({"processing:version": "N0400"}, {}, 1000, "processing:version"),
    ({"s2:processing_baseline": "N0301", "datetime": "2024-02-01"}, {}, 0, "s2:processing_baseline"),
    # nothing but the date
    ({"datetime": "2022-01-24T10:00:00Z"}, {}, 0, "acquired 2022-01-24"),
    ({"datetime": "2022-01-25T10:00:00+00:00"}, {}, 1000, "acquired 2022-01-25"),
])
def test_s2_offset_rule(props, assets, offset, why):
    got, reason = sensors.s2_offset(props, assets)
    assert got == offset and why in reason


def test_parse_baseline_forms():
    assert [sensors.parse_baseline(v) for v in ("05.10", "N0510", "04_00", "4.0", 5.1, "", None, "x")] == [
        5.1, 5.1, 4.0, 4.0, 5.1, None, None, None]


def test_embed_honours_an_applied_flag_coordinate():
    """stackstac over Earth Search puts the flag along time: no second -1000."""
    old = synthetic_cube(height=16, width=16, times=2, start="2021-05-01")
    new = old.assign_coords(time=pd.date_range("2023-05-01", periods=2, freq="MS"))
    flagged = new.assign_coords({"earthsearch:boa_offset_applied": ("time", [True, True])})
    offs, reasons = B.harmonization_decisions(flagged)
    assert offs.tolist() == [0, 0] and all("boa_offset_applied" in r for r in reasons)
    a = eoembed.embed(old, "spectral", progress=False)
    b = eoembed.embed(flagged, "spectral", progress=False)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert "boa_offset_applied" in b.attrs["eoembed:harmonization"]


# ---- small ones (issue 8, A8) --------------------------------------------------------
def test_missing_band_warning_points_at_the_caller_also_through_the_accessor(checkpoints):
    cube = synthetic_cube(height=16, width=16, times=1, seed=2).drop_sel(band=["B01", "B09"])
    for call in (lambda: cube.eo.embed("nano", weights=checkpoints["v1.1"], progress=False),
                 lambda: eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], progress=False)):
        with pytest.warns(UserWarning, match="B01, B09 are not in the cube") as rec:
            call()
        w = next(r for r in rec if "are not in the cube" in str(r.message))
        assert w.filename == __file__, f"warning points into {w.filename}"


def test_cube_without_time_is_refused_for_olmoearth_and_says_how(checkpoints):
    cube = synthetic_cube(height=16, width=16, times=1, seed=2).isel(time=0, drop=True)
    with pytest.raises(eoembed.exceptions.MissingTimeError, match=r"expand_dims\(time=\[np.datetime64") as e:
        eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], harmonize=False, progress=False)
    assert "month" in str(e.value)
    assert eoembed.get_model_spec("nano").needs_dates and not eoembed.get_model_spec("spectral").needs_dates
    # with a date it runs
    dated = cube.expand_dims(time=[np.datetime64("2024-06-15")])
    assert np.isfinite(eoembed.embed(dated, "nano", weights=checkpoints["v1.1"], harmonize=False,
                                     progress=False)).any()


def test_cube_without_time_warns_for_date_free_learned_models():
    from dataclasses import replace

    spec = replace(eoembed.get_model_spec("nano"), needs_dates=False)
    cube = synthetic_cube(height=8, width=8, times=1, seed=2).isel(time=0, drop=True).expand_dims("time")
    with pytest.warns(UserWarning, match="placeholder date 2022-07-01.*expand_dims") as rec:
        ts = B.timestamps(cube, spec)
    assert ts.tolist() == [[1, 6, 2022]] and rec[0].filename == __file__
    # the spectral baseline reads no dates: no warning, no error
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        B.timestamps(cube, eoembed.get_model_spec("spectral"))


# ---- sensor knowledge has one owner (issue 8, B2) -----------------------------------------
def test_band_tables_come_from_sensors_only():
    import ast
    from pathlib import Path

    from eoembed.data import _recipes, stac
    from eoembed.models import olmoearth, spectral

    assert olmoearth.S2_BANDS is sensors.S2_BANDS and stac.S2_BANDS is sensors.S2_BANDS
    assert olmoearth.LANDSAT_BANDS is sensors.LANDSAT_BANDS and _recipes.LANDSAT.band_assets is sensors.LANDSAT_ASSETS
    assert _recipes.SENTINEL2.bands is sensors.S2_BANDS and _recipes.SENTINEL1.bands is sensors.S1_BANDS
    assert spectral.SPEC.modalities["sentinel2_l2a"] is sensors.S2_BANDS
    assert B.canonical_band is sensors.canonical_band
    # STAC EO names tell the three red-edge bands apart; the data loader labels them so
    assert [sensors.S2_COMMON_NAMES[b] for b in ("B05", "B06", "B07")] == ["rededge1", "rededge2", "rededge3"]
    assert [B.canonical_band(n) for n in ("rededge1", "rededge2", "rededge3")] == [
        ("sentinel2_l2a", "B05"), ("sentinel2_l2a", "B06"), ("sentinel2_l2a", "B07")]
    # the band-handling modules spell out no band table (a literal of 6+ S2 bands, or vv/vh)
    root = Path(eoembed.__file__).parent
    for f in [root / "bands.py", *(root / "data").glob("*.py"), root / "models" / "olmoearth.py",
              root / "models" / "spectral.py", root / "testing.py", root / "evaluate.py"]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                elts = node.keys if isinstance(node, ast.Dict) else node.elts
                consts = {e.value for e in elts if isinstance(e, ast.Constant)}
                assert not (len(consts & set(sensors.S2_ALL_BANDS)) >= 6 or consts == {"vv", "vh"}), (
                    f"{f.relative_to(root)}:{node.lineno} holds a band table; import it from eoembed.sensors")


# ---- one place for band decisions (issue 8, B5) -----------------------------------------
def test_prepare_holds_every_band_decision():
    import dataclasses

    cube = synthetic_cube(height=16, width=16, times=2, start="2023-05-01", seed=6)
    cube = cube.reindex(band=list(cube.band.values) + ["junk"]).drop_sel(band="B09")
    prep = B.prepare(cube, eoembed.get_model_spec("spectral"), extra_bands="ignore")
    assert dataclasses.is_dataclass(prep) and dataclasses.fields(prep)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prep.scale_factor = 2.0
    s2 = prep.sources["sentinel2_l2a"]
    names = [str(cube.band.values[prep.band_index[i]]) if i >= 0 else None for i in s2]
    assert names == [b if b != "B09" else None for b in sensors.S2_BANDS]
    assert prep.scale_factor == 1.0 and "DN" in prep.scale_how
    assert prep.offsets == (1000.0, 1000.0) and len(prep.harmonization) == 2
    assert prep.timestamps == ((1, 4, 2023), (1, 5, 2023))
    assert prep.select(cube).sizes["band"] == len(prep.band_index) and "junk" in prep.plan.ignored


def test_embed_makes_no_band_decisions_inline():
    """embed.py delegates bands, scale, harmonization, nodata, S1 units and dates to bands.prepare."""
    import ast
    from pathlib import Path

    src = (Path(eoembed.__file__).parent / "embed.py").read_text()
    fn = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == "embed")
    called = {n.func.attr for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "prepare" in called
    assert not called & {"resolve_bands", "detect_scale", "harmonization_offsets", "harmonization_decisions",
                         "nodata_value", "sample_values", "timestamps"}


def test_band_selection_is_a_view_for_consecutive_bands_and_equal_to_isel():
    """embed() selects the used bands of an in-memory cube without copying it when they are consecutive (the
    common case); any other selection copies, as xarray does. Values and coords are isel's either way."""
    from eoembed.bands import isel_bands
    from eoembed.testing import synthetic_cube

    cube = synthetic_cube(height=16, width=16, times=2)
    for index in ([0, 1, 2, 3], [2, 3, 4], [0, 2, 3], [3, 1], [-1], [-2, -1]):
        got, ref = isel_bands(cube, index), cube.isel(band=index)
        xr.testing.assert_identical(got, ref)
        consecutive = index[0] >= 0 and index == list(range(index[0], index[-1] + 1))
        assert np.shares_memory(got.values, cube.values) == consecutive
