"""Position-neutral, extent-independent embeddings: windows on a CRS-anchored grid, neutral in-window positions,
and the position-bias diagnostic — on real Galileo-Nano weights where a learned embedding is meant."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import eoembed
from eoembed.exceptions import ParameterError
from eoembed.grid import GridAlignmentWarning, grid_of
from eoembed.position import position_stats
from eoembed.testing import constant_scene, synthetic_cube

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GALILEO = SHARED / "weights" / "galileo-nano"
needs_galileo = pytest.mark.skipif(not (GALILEO / "encoder.pt").exists(), reason="../shared/weights/galileo-nano missing")


def _sample(sample_cube, times=(2, 5, 8)):
    return sample_cube.isel(time=list(times))


# -- the diagnostic itself ------------------------------------------------------------------------
def test_position_stats_finds_a_planted_position_component_and_not_noise():
    rng = np.random.default_rng(0)
    content = rng.normal(size=(16, 60, 60))
    period = 10
    table = rng.normal(size=(16, period, period)) * 3
    planted = content + np.tile(table, (1, 6, 6))
    s_noise = position_stats(content, period=period)
    s_pos = position_stats(planted, period=period)
    # noise: hits at chance, PC1's position share at its null expectation (G-1)/(N-1)
    assert s_noise["same_position_over_chance"] < 2
    assert s_noise["pc1_position_share_null"] == pytest.approx(99 / 3599)
    assert s_noise["pc1_position_share"] < 3 * s_noise["pc1_position_share_null"]
    assert s_pos["same_position_over_chance"] > 20 and s_pos["pc1_position_share"] > 0.8
    # a phase offset moves which patches share a position: the planted table is found only with the right one
    # a period that is not the window stride finds (almost) nothing
    assert position_stats(planted, period=7)["same_position_over_chance"] < 3


def test_position_stats_ignores_nan_patches_and_refuses_tiny_grids():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(8, 30, 30))
    v[:, :5] = np.nan
    s = position_stats(v, period=5)
    assert s["patches"] == 25 * 30
    assert position_stats(v[:, :6, :6], period=5) is None
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ParameterError, match="period must be"):
            position_stats(v, period=bad)
    with pytest.raises(ParameterError, match="k "):
        position_stats(v, period=5, k=0)
    with pytest.raises(ParameterError, match="shape"):
        position_stats(v[0, 0], period=5)


# -- errors -----------------------------------------------------------------------------------------
def test_position_argument_is_checked():
    cube = synthetic_cube(height=32, width=32, times=1)
    with pytest.raises(ParameterError, match="not one of"):
        eoembed.embed(cube, "spectral", position="none", progress=False)
    with pytest.raises(ParameterError, match="already position-free"):
        eoembed.embed(cube, "spectral", position="neutral", progress=False)
    emb = eoembed.embed(cube, "spectral", progress=False)
    assert emb.attrs["eoembed:position"] == "raw"


# -- grid anchoring ---------------------------------------------------------------------------------
def test_a_cube_off_the_global_patch_grid_is_snapped_with_a_warning_that_says_how_to_align_it():
    cube = synthetic_cube(height=64, width=64, times=1, origin=(600010.0, 5600000.0))  # x one pixel off
    with pytest.warns(GridAlignmentWarning, match=r"cube.isel\(y=slice\(0, None\), x=slice\(3, None\)\)"):
        emb = eoembed.embed(cube, "spectral", patch_size=4, progress=False)
    assert emb.sizes["x"] == 16  # still the cube's own patch grid
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridAlignmentWarning)
        eoembed.embed(cube.isel(x=slice(3, None)), "spectral", patch_size=4, progress=False)


@pytest.mark.parametrize("offset_px", [0, 8, 20])
def test_dask_blocks_and_window_phase_do_not_change_the_result(checkpoints, offset_px):
    """Blocks start on the cube's patches, windows on the CRS grid: chunking never changes a vector."""
    cube = synthetic_cube(height=96, width=112, times=2, seed=5, origin=(600000.0 + 10 * offset_px, 5600000.0))
    kw = dict(weights=checkpoints["v1.1"], tile_size=32, halo=4, blend=True, progress=False)
    eager = eoembed.embed(cube, "nano", **kw)
    lazy = eoembed.embed(cube.chunk({"y": 24, "x": 40}), "nano", **kw)
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.values, eager.values, atol=1e-5)
    # the window phase, in pixels like every length of the grid: core 24 px, so the phase is offset mod 24
    assert eager.attrs["eoembed:window_offset"][1] == offset_px % 24


def test_every_crop_of_a_synthetic_cube_keeps_its_interior_vectors(checkpoints):
    cube = synthetic_cube(height=80, width=80, times=2, seed=9)
    kw = dict(weights=checkpoints["v1.1"], tile_size=32, halo=4, blend=True, progress=False)
    full = eoembed.embed(cube, "nano", **kw).values
    for k in range(1, 9):  # every multiple of the patch size up to one window (8 patches)
        part = eoembed.embed(cube.isel(y=slice(4 * k, None), x=slice(4 * k, None)), "nano", **kw).values
        m = 8  # a window spans 8 patches: patches 8 from every edge see only windows inside both cubes
        np.testing.assert_allclose(part[:, m:-m, m:-m], full[:, k + m : -m, k + m : -m], atol=1e-5)


# -- real weights -------------------------------------------------------------------------------------
def _embed_sample(cube, *args, **kwargs):
    """embed() of the shared sample, which has no B8A: Galileo masks that channel group and says so (asserted)."""
    with pytest.warns(UserWarning, match="B8A are not in the cube"):
        return eoembed.embed(cube, *args, **kwargs)


@needs_galileo
@pytest.mark.slow
def test_real_galileo_crops_keep_interior_vectors_identical(sample_cube):
    """Crop the real sample by every multiple of the patch size up to one window: interior patches identical."""
    cube = _sample(sample_cube)
    kw = dict(weights=GALILEO, patch_size=4, tile_size=32, halo=4, blend=True, progress=False)  # 8-patch windows
    full = _embed_sample(cube, "galileo-nano", **kw).values
    m = 8
    for k in range(1, 9):
        part = _embed_sample(cube.isel(y=slice(4 * k, None), x=slice(4 * k, None)), "galileo-nano", **kw).values
        a, b = part[:, m:-m, m:-m], full[:, k + m : -m, k + m : -m]
        assert a.size and np.isfinite(a).all()
        assert float(np.abs(a - b).max()) <= 1e-5, k


@needs_galileo
@pytest.mark.slow
def test_real_galileo_default_is_position_neutral_and_raw_is_not(sample_cube):
    cube = _sample(sample_cube)
    neutral = _embed_sample(cube, "galileo-nano", weights=GALILEO, progress=False)
    raw = _embed_sample(cube, "galileo-nano", weights=GALILEO, progress=False, position="raw")
    assert neutral.attrs["eoembed:position"] == "neutral" and raw.attrs["eoembed:position"] == "raw"
    phase = grid_of(neutral).patch_period()  # the window period and phase in patches, from the pixel attrs
    assert phase["period"] == (neutral.attrs["eoembed:tile_size"] - 2 * neutral.attrs["eoembed:halo"]) // 4
    sn = position_stats(neutral.values, **phase)
    sr = position_stats(raw.values, **phase)
    # raw: the window position is a large part of the vectors (6-patch default windows: hits ~10x chance, PC1
    # ~47 % position, its noise level ~2 %; 12-patch windows: ~99 %); neutral: hits at or below chance, PC1
    # position share at its noise level
    assert sr["same_position_over_chance"] > 5 and sr["pc1_position_share"] > 10 * sr["pc1_position_share_null"]
    assert sn["same_position_over_chance"] <= 2.0
    assert sn["pc1_position_share"] <= sn["pc1_position_share_null"] + 0.05
    # the attrs carry the same diagnostic, estimated on a bounded sample (a centre crop, fewer queries)
    a, r = neutral.attrs, raw.attrs
    assert a["eoembed:position_hit_rate"] <= 2.0 * a["eoembed:position_hit_chance"]
    assert r["eoembed:position_hit_rate"] > 5 * r["eoembed:position_hit_chance"]
    assert a["eoembed:position_pc1_share"] == pytest.approx(sn["pc1_position_share"], abs=0.05)
    assert r["eoembed:position_pc1_share"] > 10 * r["eoembed:position_pc1_share_null"]
    # a constant scene: neutral positions give one vector wherever the windows are whole; raw do not
    flat = constant_scene(cube)
    fn = _embed_sample(flat, "galileo-nano", weights=GALILEO, progress=False).values
    fr = _embed_sample(flat, "galileo-nano", weights=GALILEO, progress=False, position="raw").values
    assert float(np.abs(fn - fn[:, :1, :1]).max()) < 1e-4  # no CLS token: even edge windows agree
    assert float(np.abs(fr - fr[:, :1, :1]).max()) > 1e-2


def test_olmoearth_v1_2_has_relative_positions_so_neutral_is_refused(checkpoints):
    cube = synthetic_cube(height=32, width=32, times=1)
    assert not eoembed.get_model_spec("olmoearth-v1.2-nano").window_positions  # 3-D RoPE: relative
    with pytest.raises(ParameterError, match="already position-free"):
        eoembed.embed(cube, "olmoearth-v1.2-nano", weights=checkpoints["v1.2"], position="neutral", progress=False)


@pytest.mark.parametrize("version", ["v1", "v1.1"])
def test_olmoearth_neutral_positions_make_a_constant_scene_constant(checkpoints, version):
    cube = synthetic_cube(height=96, width=96, times=2, seed=2)
    flat = constant_scene(cube)
    name = {"v1": "olmoearth-v1-nano", "v1.1": "nano"}[version]
    kw = dict(weights=checkpoints[version], tile_size=32, halo=4, blend=True, progress=False)
    neutral = eoembed.embed(flat, name, **kw).values
    raw = eoembed.embed(flat, name, position="raw", **kw).values
    inner = neutral[:, 8:-8, 8:-8]
    assert float(np.abs(inner - inner[:, :1, :1]).max()) < 1e-4
    assert float(np.abs(raw[:, 8:-8, 8:-8] - raw[:, 8:9, 8:9]).max()) > 1e-3
    # the package's own position encoder is untouched for raw calls and other threads
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn import flexi_vit

    import torch

    enc = flexi_vit.get_2d_sincos_pos_encoding_with_resolution(4, torch.ones(1), 16, "cpu")
    assert float(enc.std(dim=1).max()) > 0.1


def test_streamed_store_carries_the_position_mode_and_diagnostic(checkpoints, tmp_path):
    from eoembed.io import open_embeddings, to_zarr

    cube = synthetic_cube(height=160, width=160, times=1, seed=8, origin=(600080.0, 5600000.0))
    kw = dict(weights=checkpoints["v1.1"], tile_size=32, halo=4, blend=True, progress=False)
    eager = eoembed.embed(cube, "nano", **kw)
    lazy = eoembed.embed(cube.chunk({"y": 64, "x": 64}), "nano", **kw)
    to_zarr(lazy, tmp_path / "e.zarr", progress=False)
    back = open_embeddings(tmp_path / "e.zarr")
    np.testing.assert_allclose(back.values, eager.values, atol=1e-5)
    assert back.attrs["eoembed:position"] == "neutral" and back.attrs["eoembed:window_offset"] == [16, 8]
    for key in ("eoembed:position_hit_rate", "eoembed:position_hit_chance", "eoembed:position_pc1_share"):
        assert back.attrs[key] == pytest.approx(eager.attrs[key], abs=1e-4)
