"""Behaviour of embed(): chunk invariance, georeferencing, bands, scale, harmonization, masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

import eoembed
from eoembed.testing import synthetic_cube


def _holes(cube):
    """Realistic gaps: a cloud blob in t=0, a fully missing timestep, a NaN stripe."""
    c = cube.copy(data=cube.values.copy())
    c[0, :, 5:17, 9:30] = np.nan
    c[1] = np.nan
    c[2, :, 40:, :3] = np.nan
    return c


@pytest.fixture(scope="module")
def cube():
    return _holes(synthetic_cube(height=54, width=70, times=3, seed=5))


def test_numpy_and_dask_agree_for_any_chunking(cube, checkpoints):
    ck = checkpoints["v1.1"]
    ref = eoembed.embed(cube, "nano", weights=ck, progress=False)
    assert isinstance(ref.data, np.ndarray)
    for chunks in ({"y": 17, "x": 23}, {"y": 54, "x": 35}, {"time": 1, "y": 30, "x": 64}):
        lazy = eoembed.embed(cube.chunk(chunks), "nano", weights=ck)
        assert lazy.chunks is not None, "dask in must give dask out"
        np.testing.assert_allclose(lazy.values, ref.values, atol=1e-5, equal_nan=True)
    assert np.isfinite(ref.values).mean() > 0.9


def test_patch_coordinates_map_back_to_pixels(cube):
    """Spectral features of patch (i, j) are the statistics of exactly its pixels."""
    clean = synthetic_cube(height=20, width=28, times=2, seed=7)
    emb = eoembed.embed(clean, "spectral", patch_size=4, progress=False)
    t = clean.rio.transform()
    inv = ~t
    for i, j in [(0, 0), (2, 5), (4, 6)]:
        x, y = float(emb.x[j]), float(emb.y[i])
        col, row = inv @ (x, y)
        assert (col, row) == pytest.approx((4 * j + 2, 4 * i + 2))
        # first feature block = per-band means of t=0, in the model band order, reflectance
        window = clean.isel(time=0, y=slice(4 * i, 4 * i + 4), x=slice(4 * j, 4 * j + 4)).sel(band="B02")
        assert float(emb[0, i, j]) == pytest.approx(float(window.mean()) / 1e4, rel=1e-5)
    assert emb.rio.transform() == t @ rasterio.Affine.scale(4)


def test_crs_survives_to_raster_and_zarr(tmp_path, cube):
    emb = eoembed.embed(cube, "spectral", progress=False)
    tif = tmp_path / "emb.tif"
    emb.isel(embedding=slice(0, 3)).rio.to_raster(tif)
    with rasterio.open(tif) as src:
        assert src.crs.to_epsg() == 32631
        assert src.transform == emb.rio.transform()
    from eoembed.io import open_embeddings, save_embeddings

    save_embeddings(emb, tmp_path / "emb.zarr")
    back = open_embeddings(tmp_path / "emb.zarr")
    assert back.rio.crs.to_epsg() == 32631
    assert back.rio.transform() == emb.rio.transform()
    assert back.attrs["eoembed:model"] == "spectral"
    np.testing.assert_array_equal(back.values, emb.values)


def test_shuffled_and_renamed_bands_give_the_same_result(cube, checkpoints):
    ck = checkpoints["v1.1"]
    ref = eoembed.embed(cube, "nano", weights=ck, progress=False)
    order = np.random.default_rng(0).permutation(cube.sizes["band"])
    shuffled = cube.isel(band=order)
    common = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
              "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
              "B11": "swir16", "B12": "swir22"}
    renamed = shuffled.assign_coords(band=[common[b] for b in shuffled.band.values])
    for variant in (shuffled, renamed):
        out = eoembed.embed(variant, "nano", weights=ck, progress=False)
        np.testing.assert_allclose(out.values, ref.values, atol=1e-5, equal_nan=True)


def test_reflectance_scale_is_detected(cube, checkpoints):
    ck = checkpoints["v1.1"]
    dn = eoembed.embed(cube, "nano", weights=ck, progress=False)
    refl = eoembed.embed(cube / 10000.0, "nano", weights=ck, progress=False)
    np.testing.assert_allclose(refl.values, dn.values, atol=1e-4, equal_nan=True)
    assert "0–1 reflectance" in refl.attrs["eoembed:scale"]
    as_int = eoembed.embed(cube.fillna(0).astype("uint16"), "spectral", progress=False)
    assert "integer" in as_int.attrs["eoembed:scale"]


def test_harmonization_removes_the_baseline_04_offset(checkpoints):
    ck = checkpoints["v1.1"]
    old = synthetic_cube(height=16, width=16, times=2, start="2021-05-01")
    new = (old + 1000).assign_coords(time=pd.date_range("2023-05-01", periods=2, freq="MS"))
    a = eoembed.embed(old, "spectral", progress=False)
    b = eoembed.embed(new, "spectral", progress=False)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert "2022-01-25" in b.attrs["eoembed:harmonization"]
    # the processing-baseline coordinate wins over dates
    pb = (old + 1000).assign_coords({"s2:processing_baseline": ("time", ["04.00", "05.09"])})
    c = eoembed.embed(pb, "spectral", progress=False)
    np.testing.assert_allclose(a.values, c.values, atol=1e-5)
    # upstream harmonization is not applied twice, and it can be switched off
    done = new - 1000
    done.attrs["eoembed:harmonized"] = True
    np.testing.assert_allclose(eoembed.embed(done, "spectral", progress=False).values, a.values, atol=1e-5)
    off = eoembed.embed(new, "spectral", harmonize=False, progress=False)
    assert np.abs(off.values - a.values).max() > 0.05


def test_a_sample_does_not_change_when_batched_with_gappy_samples(checkpoints):
    """Tile A alone vs in one batch with tiles that miss timesteps: same vectors."""
    ck = checkpoints["v1.2"]
    base = synthetic_cube(height=32, width=96, times=4, seed=11)
    gappy = base.copy(data=base.values.copy())
    gappy[1, :, :, 32:64] = np.nan  # tile 2 lacks t=1
    gappy[2:, :, :, 64:] = np.nan  # tile 3 lacks t=2,3
    kw = dict(weights=ck, patch_size=4, tile_size=32, halo=0, progress=False)
    together = eoembed.embed(gappy, "olmoearth-v1.2-nano", batch_size=8, **kw)
    alone = eoembed.embed(gappy.isel(x=slice(0, 32)), "olmoearth-v1.2-nano", batch_size=1, **kw)
    np.testing.assert_allclose(together.values[:, :, :8], alone.values, atol=1e-5)
    # and a tile with a missing timestep is embedded from its visible tokens only
    mid_alone = eoembed.embed(gappy.isel(x=slice(32, 64)), "olmoearth-v1.2-nano", batch_size=1, **kw)
    np.testing.assert_allclose(together.values[:, :, 8:16], mid_alone.values, atol=1e-5)
    nomiss = eoembed.embed(base.isel(x=slice(32, 64)), "olmoearth-v1.2-nano", **kw)
    assert np.abs(mid_alone.values - nomiss.values).max() > 1e-4


def test_masked_patches_are_nan_and_partial_edges_kept(checkpoints):
    cube = synthetic_cube(height=30, width=30, times=2, seed=2)  # 30 px: last patch row is 2 px
    cube = cube.copy(data=cube.values.copy())
    cube[:, :, :8, :8] = np.nan  # patches (0..1, 0..1) have no data at any time
    emb = eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], progress=False)
    assert emb.sizes["y"] == emb.sizes["x"] == 8
    assert np.isnan(emb.values[:, :2, :2]).all()
    assert np.isfinite(emb.values[:, 2:, 2:]).all()
    assert np.isfinite(emb.values[:, 7, 7]).all(), "a partial edge patch with data must be embedded"


def test_per_timestep_output(checkpoints):
    cube = synthetic_cube(height=16, width=16, times=3)
    cube = cube.copy(data=cube.values.copy())
    cube[1] = np.nan
    emb = eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], pool_time=False, progress=False)
    assert emb.dims == ("time", "embedding", "y", "x")
    assert np.isnan(emb.isel(time=1).values).all()
    assert np.isfinite(emb.isel(time=[0, 2]).values).all()
    pooled = eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], progress=False)
    # pooled = mean over the visible timesteps' token means
    np.testing.assert_allclose(emb.isel(time=[0, 2]).mean("time").values, pooled.values, atol=1e-5)


def test_dataset_input_and_accessor_and_attrs(checkpoints):
    cube = synthetic_cube(height=16, width=16, times=2)
    ds = cube.to_dataset("band")
    emb = ds.eo.embed(model="nano", weights=checkpoints["v1.1"], progress=False)
    assert emb.attrs["eoembed:model"] == "olmoearth-v1.1-nano"
    assert emb.attrs["eoembed:license"] == "OlmoEarth Artifact License"
    assert len(emb.attrs["eoembed:weights_sha256"]) == 64
    assert emb.attrs["eoembed:version"] == eoembed.__version__
    assert emb.attrs["eoembed:patch_size"] == 4
    assert emb.rio.crs.to_epsg() == 32631


def test_missing_bands_are_filled_with_a_warning(sample_cube, checkpoints):
    small = sample_cube.isel(x=slice(0, 32), y=slice(0, 32), time=slice(2, 5))
    with pytest.warns(UserWarning, match="B8A, B01, B09"):
        emb = small.eo.embed(model="olmoearth-v1-nano", weights=checkpoints["v1"], progress=False)
    assert emb.attrs["eoembed:bands_filled"] == ["B8A", "B01", "B09"]
    assert "sentinel1:vv" in emb.attrs["eoembed:bands"]  # S1 used alongside S2
    assert np.isfinite(emb.values).all()


def test_embed_cost_reports_tokens_gmacs_and_area():
    # origin on the CRS-anchored 128-px window grid (x 59904 px = 468 windows): exactly one window
    cube = synthetic_cube(height=128, width=128, times=4, origin=(599040.0, 5600000.0))
    v11 = eoembed.embed_cost(cube, "tiny", patch_size=4, tile_size=128, halo=0)
    v1 = eoembed.embed_cost(cube, "olmoearth-v1-tiny", patch_size=4, tile_size=128, halo=0)
    assert v11["tokens"] == 32 * 32 * 4 and v1["tokens"] == 3 * v11["tokens"]
    assert 80 < v11["gmacs"] < 120  # measured for this setting: ~102 GMACs
    assert v1["gmacs"] > 5 * v11["gmacs"]
    assert v11["area_km2"] == pytest.approx(1.28 * 1.28)
    default = eoembed.embed_cost(cube, "tiny")  # OlmoEarth: 8-patch windows, 1-patch blended halo
    assert default["halo_overhead"] == pytest.approx((8 / 6) ** 2) and default["blend"] is True
    assert (default["tile_size"], default["halo"]) == (32, 4)
    # v1.2 (relative positions) has its own row of the sweep: 6-patch windows, blended 1-patch halo
    v12 = eoembed.embed_cost(cube, "olmoearth-v1.2-tiny")
    assert (v12["tile_size"], v12["halo"], v12["blend"]) == (24, 4, True)
    hard = eoembed.embed_cost(cube, "tiny", tile_size=64, halo=16, blend=False)
    assert hard["halo_overhead"] == pytest.approx(4.0) and hard["blend"] is False
    # the same cube 64 px further east straddles two windows along x: the cost says so
    shifted = eoembed.embed_cost(synthetic_cube(height=128, width=128, times=4, origin=(599680.0, 5600000.0)),
                                 "tiny", patch_size=4, tile_size=128, halo=0)
    assert shifted["tiles"] == 2 and shifted["tokens"] == 2 * v11["tokens"]


def _on_window_grid(window):
    """``window``'s pixels moved to an origin on the CRS-anchored window grid (x 59904 px, y -560000 px),
    so embedding it alone runs exactly one window whose first pixel is the cube's."""
    aligned = synthetic_cube(height=window.sizes["y"], width=window.sizes["x"], times=1, origin=(599040.0, 5600000.0))
    return window.assign_coords(x=aligned.x.values, y=aligned.y.values)


def test_halo_tile_core_equals_a_single_window_run(checkpoints):
    """A core patch with a halo (hard tiling) is embedded exactly as its whole context window alone."""
    cube = synthetic_cube(height=100, width=100, times=2, seed=4)
    ck = checkpoints["v1.1"]
    tiled = eoembed.embed(cube, "nano", weights=ck, tile_size=64, halo=16, blend=False, progress=False)
    window = _on_window_grid(cube.isel(y=slice(16, 80), x=slice(16, 80)))  # tile (1, 1): core 32..64 px + halo
    alone = eoembed.embed(window, "nano", weights=ck, tile_size=64, halo=0, progress=False)
    np.testing.assert_allclose(tiled.values[:, 8:16, 8:16], alone.values[:, 4:12, 4:12], atol=1e-5)
    # blended: a patch outside every overlap takes its one window's output, exactly
    # origin on the 56-px stride of the window grid (x 59976 px), so window (1, 1)'s core starts at 56 px
    cube = synthetic_cube(height=128, width=128, times=2, seed=4, origin=(599760.0, 5600000.0))
    blended = eoembed.embed(cube, "nano", weights=ck, tile_size=64, halo=4, blend=True, progress=False)
    window = _on_window_grid(cube.isel(y=slice(52, 116), x=slice(52, 116)))  # window (1, 1): core 56..112, halo 4
    alone = eoembed.embed(window, "nano", weights=ck, tile_size=64, halo=0, progress=False)
    # window (1, 1) starts at patch 13; its weights are 1 from its 3rd patch to its 14th
    np.testing.assert_allclose(blended.values[:, 16:26, 16:26], alone.values[:, 3:13, 3:13], atol=1e-5)


def test_pooled_cube_keeps_its_time_span_as_coordinates(tmp_path):
    cube = synthetic_cube(height=32, width=32, times=3, start="2021-04-01")
    emb = eoembed.embed(cube, "spectral", progress=False)
    assert emb["time_start"].values == cube.time.values.min() and emb["time_end"].values == cube.time.values.max()
    per_t = eoembed.embed(cube, "spectral", pool_time=False, progress=False)
    assert "time_start" not in per_t.coords and per_t.sizes["time"] == 3  # the time axis itself says it
    from eoembed.io import open_embeddings, save_embeddings

    back = open_embeddings(save_embeddings(emb, tmp_path / "e.zarr"))
    assert back["time_start"].values == emb["time_start"].values and back["time_end"].values == emb["time_end"].values


def test_embed_never_writes_into_the_input_cube(checkpoints):
    """embed() reads an in-memory cube in place where it can (consecutive bands, DN already, float32): it must
    never write into it. A read-only cube gives the same vectors as a writable copy, eager and lazy, with and
    without gaps to fill, and the input is unchanged."""
    cube = synthetic_cube(height=64, width=64, times=2, origin=(599040.0, 5600000.0)).astype("float32")
    gappy = cube.copy()
    gappy[0, :, 5:9, 5:7] = np.nan  # a partial gap inside one patch: filled with the patch mean
    kw = dict(weights=checkpoints["v1.1"], tile_size=32, halo=0, blend=False, progress=False)
    for c in (cube, gappy):
        ref = eoembed.embed(c.copy(deep=True), "nano", **kw).values
        frozen = c.copy(deep=True)
        before = frozen.values.copy()
        frozen.values.flags.writeable = False
        got = eoembed.embed(frozen, "nano", **kw).values
        lazy = eoembed.embed(frozen.chunk({"y": 32, "x": 32}), "nano", **kw).values
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_allclose(lazy, ref, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(frozen.values, before)
