"""Tiling owned by GridSpec: windows, blending, seam metric, model cache, batch sizing, OOM retry."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

import eoembed
from eoembed import models
from eoembed.encode import encode_with_retry, gpu_batch_size
from eoembed.exceptions import ParameterError
from eoembed.grid import GridSpec, seam_stats
from eoembed.testing import synthetic_cube


def _grid(**kw):
    base = dict(transform=Affine(10, 0, 600000, 0, -10, 5600000), height=100, width=70, patch_size=4,
                tile_size=24, halo=4)
    base.update(kw)
    return GridSpec(**base)


def test_window_weights_cross_fade_and_hard_cores():
    hard = _grid().window_weights()
    np.testing.assert_array_equal(hard, [0, 1, 1, 1, 1, 0])
    g = _grid(blend=True)
    w = g.window_weights()
    assert w[0] < w[1] <= w[2] == 1.0 and w[::-1].tolist() == w.tolist()
    # neighbouring windows (stride = core = 4 patches) sum to 1 across their overlap
    overlap = (g.tile_size - g.core) // g.patch_size
    np.testing.assert_allclose(w[-overlap:] + w[:overlap], 1.0)


@pytest.mark.parametrize("blend, offset", [(True, 0), (True, 12), (False, 0), (False, 8)])
def test_block_windows_are_the_same_global_windows_in_any_block(blend, offset):
    g = _grid(blend=blend, halo=8, tile_size=32, offset_y=offset)  # core 16 px, windows 8 patches
    assert g.depth == (28 if blend else 20)
    n_px = g.patches_y * g.patch_size
    whole = g.block_windows(0, n_px, 0)
    # every window covering part of the cube, and only those (weights > 0 somewhere inside)
    w = g.window_weights()
    for k, start in whole:
        first = start - g.depth  # cube pixel of the window's first pixel
        assert first == k * g.core - offset - g.halo
        touched = [first + i * g.patch_size for i in range(len(w)) if w[i] > 0]
        assert any(0 <= px < n_px for px in touched)
    assert len(whole) == g.tiles_y
    # blocks cut anywhere on patches see the same global windows for their own patches
    for cut in (8, 20, 36, 52):
        a = {k for k, _ in g.block_windows(0, cut, 0)}
        b = {k for k, _ in g.block_windows(cut, n_px - cut, 0)}
        assert a | b == {k for k, _ in whole}
        for k, start in g.block_windows(cut, n_px - cut, 0):  # positions relative to each block agree
            assert start + cut - g.depth == k * g.core - offset - g.halo
    assert g.overhead == pytest.approx(4.0)


def test_window_phase_comes_from_the_crs_not_the_cube_corner():
    from eoembed.grid import window_offsets

    # x = 600000 m is global pixel 60000 (a multiple of the 40-px stride); y = 5600000 m -> -560000
    assert window_offsets(Affine(10, 0, 600000, 0, -10, 5600000), 4, 40) == ((0, 0), (0, 0))
    # a cube starting 3 patches (12 px) further right and down: its first core starts 12 px before it
    (oy, ox), mis = window_offsets(Affine(10, 0, 600120, 0, -10, 5600000 - 120), 4, 40)
    assert (oy, ox) == (12, 12) and mis == (0, 0)
    # one pixel off the 4-px patch grid: reported, windows snapped to the nearest patch
    (oy, ox), mis = window_offsets(Affine(10, 0, 600010, 0, -10, 5600000), 4, 40)
    assert mis == (0, 1) and ox == 0


def test_grid_refuses_a_tiling_without_core():
    with pytest.raises(ParameterError, match="leaves no core"):
        _grid(tile_size=16, halo=8)


def test_patch_centres_come_from_the_patch_transform():
    g = _grid()
    x, y = g.patch_centers()
    assert x[0] == 600020 and y[0] == 5600000 - 20 and x[1] - x[0] == 40 and len(y) == 25


def test_seam_stats_find_a_planted_border_and_ignore_smooth_fields():
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(8, 1, 1)) + 0.02 * rng.normal(size=(8, 24, 24))
    assert seam_stats(smooth, 6)["ratio"] < 1.3
    seamy = smooth.copy()
    for k in range(0, 24, 6):  # each window its own offset: a jump at every core border
        seamy[:, k : k + 6] += rng.normal(size=(8, 1, 1)) * 0.5
    s = seam_stats(seamy, 6)
    assert s["ratio"] > 3 and s["cross_over_in"] > 3
    assert seam_stats(smooth, 1) is None
    # a cross-fade spreads the same jump over the pairs next to the border: spread catches it
    ramp = smooth.copy()
    for k in range(6, 24, 6):
        off = rng.normal(size=(8, 1, 1)) * 0.5
        ramp[:, k - 1 : k + 1] += off * np.array([1 / 3, 2 / 3])[None, :, None]
        ramp[:, k + 1 :] += off
    assert seam_stats(ramp, 6, spread=1)["ratio"] > 2


def test_blended_embedding_is_chunk_independent_and_records_seams(checkpoints, monkeypatch):
    import importlib

    embed_mod = importlib.import_module("eoembed.embed")

    monkeypatch.setattr(embed_mod, "BLEND_MIN_CORES", 1)  # small blocks: many block borders
    cube = synthetic_cube(height=56, width=48, times=2, seed=3)
    ck = checkpoints["v1.1"]
    kw = dict(weights=ck, tile_size=24, halo=4, blend=True)
    eager = eoembed.embed(cube, "nano", progress=False, **kw)
    assert eager.attrs["eoembed:blend"] == 1 and "eoembed:seam_ratio" in eager.attrs
    for chunks in ({"y": 17, "x": 23}, {"y": 40, "x": 48}):
        lazy = eoembed.embed(cube.chunk(chunks), "nano", **kw)
        assert chunks["x"] == 48 or lazy.data.npartitions > 1
        np.testing.assert_allclose(lazy.values, eager.values, atol=1e-5, equal_nan=True)
    hard = eoembed.embed(cube, "nano", progress=False, **{**kw, "blend": False})
    # the centre of a core is far from every overlap: blending leaves it as it was
    np.testing.assert_allclose(eager.values[:, 1:3, 1:3], hard.values[:, 1:3, 1:3], atol=1e-5)
    assert not np.allclose(eager.values[:, 3:5], hard.values[:, 3:5], atol=1e-4)
    cost = eoembed.embed_cost(cube, "nano", tile_size=24, halo=4, blend=True)
    assert cost["blend"] is True and cost["halo_overhead"] == pytest.approx(2.25)


def test_a_model_is_loaded_once_per_process(checkpoints):
    models.clear_model_cache()
    start = models.model_cache_info()["loads"]

    def calls():
        return models.model_cache_info()["loads"] - start

    cube = synthetic_cube(height=16, width=16, times=1)
    for _ in range(3):
        eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], device="cpu", progress=False)
    assert calls() == 1
    eoembed.embed(cube, "nano", weights=checkpoints["v1.2"].parent / checkpoints["v1.1"].name, device="cpu",
                  progress=False)
    assert calls() == 1  # same folder, spelled differently
    eoembed.load_model("olmoearth-v1.2-nano", weights=checkpoints["v1.2"], device="cpu")
    assert calls() == 2
    models.clear_model_cache()


class _FakeOOM(RuntimeError):
    pass


_FakeOOM.__name__ = "OutOfMemoryError"


class _TightEncoder:
    """Fails like CUDA does when a batch holds more than ``limit`` tiles."""

    def __init__(self, limit):
        self.limit, self.sizes = limit, []

    def encode(self, batch, *, pool_time):
        self.sizes.append(len(batch))
        if len(batch) > self.limit:
            raise _FakeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.asarray(batch, dtype="float32")[:, None] * 2


@pytest.mark.parametrize("prefetch", [False, True])
def test_out_of_memory_halves_the_batch_and_retries(prefetch):
    enc, drops = _TightEncoder(limit=3), []
    out = encode_with_retry(enc, lambda c: c, list(range(10)), 16, True, on_oom=drops.append, prefetch=prefetch)
    assert [float(o[0]) for o in out] == [2.0 * i for i in range(10)]
    assert drops == [8, 4, 2] and max(enc.sizes[3:]) <= 2
    with pytest.raises(_FakeOOM):
        encode_with_retry(_TightEncoder(limit=0), lambda c: c, [1, 2], 4, True)
    with pytest.raises(ValueError):  # other errors are not retried
        encode_with_retry(_Broken(), lambda c: c, [1, 2], 4, True)


class _Broken:
    def encode(self, batch, *, pool_time):
        raise ValueError("bad input")


def test_batch_size_by_device(checkpoints):
    enc = eoembed.load_model("nano", weights=checkpoints["v1.1"], device="cpu")
    from eoembed.encode import CPU_BATCH_SIZE, auto_batch_size

    assert auto_batch_size(enc, _grid(), 4) == CPU_BATCH_SIZE == 16
    assert gpu_batch_size(1 << 20, 4096, 768) == 1  # never below one tile


@pytest.mark.parametrize("free_gib, tokens, dim, mlp", [(8, 1024, 192, 4.0), (80, 1024, 192, 4.0),
                                                      (24, 576, 768, 4.0), (40, 2304, 128, 2.0)])
def test_gpu_batch_fits_its_memory_share_and_is_the_largest_that_does(free_gib, tokens, dim, mlp):
    """The batch's activations (the documented per-tile estimate) fit the allowed share of free memory,
    one tile more would not, and ten times the memory gives ten times the batch (up to the cap)."""
    from eoembed.encode import GPU_BATCH_MAX, GPU_MEMORY_FRACTION

    free = free_gib << 30
    per_tile = tokens * dim * (6 + 2 * mlp) * 2 + tokens * tokens * max(1, dim // 64) * 4
    budget = GPU_MEMORY_FRACTION * free
    b = gpu_batch_size(free, tokens, dim, mlp)
    assert 1 <= b <= GPU_BATCH_MAX
    assert b * per_tile <= budget or b == 1
    assert (b + 1) * per_tile > budget or b == GPU_BATCH_MAX
    ten = gpu_batch_size(10 * free, tokens, dim, mlp)
    assert ten == min(GPU_BATCH_MAX, int(10 * budget // per_tile)) and ten >= min(GPU_BATCH_MAX, 10 * b)
    # more tokens per tile (a bigger window, more timesteps): never a bigger batch
    assert gpu_batch_size(free, 4 * tokens, dim, mlp) <= b


@pytest.mark.gpu
def test_gpu_matches_cpu_within_bf16_tolerance(checkpoints):
    """bf16 autocast on CUDA: every patch within cosine 0.99 of the fp32 CPU result."""
    cube = synthetic_cube(height=64, width=64, times=3, seed=6)
    kw = dict(weights=checkpoints["v1.1"], progress=False, tile_size=32, halo=0)
    cpu = eoembed.embed(cube, "nano", device="cpu", **kw).values.reshape(128, -1)
    gpu = eoembed.embed(cube, "nano", device="cuda", **kw).values.reshape(128, -1)
    cos = (cpu * gpu).sum(0) / np.linalg.norm(cpu, axis=0) / np.linalg.norm(gpu, axis=0)
    assert cos.min() > 0.99, cos.min()
    big = eoembed.embed(cube, "nano", device="cuda", batch_size=None, **kw)  # batch sized to free memory
    np.testing.assert_allclose(big.values.reshape(128, -1), gpu, atol=2e-2)


# --- the geometry in the attrs: pixels, one round trip, older stores ---------------------
def test_grid_attrs_round_trip_in_pixels():
    from eoembed.grid import GRID_ATTRS_VERSION

    g = _grid(blend=True, halo=8, tile_size=32, offset_y=12, offset_x=4, height=101, width=70)
    attrs = g.to_attrs()
    assert attrs["eoembed:grid_version"] == GRID_ATTRS_VERSION == 2
    assert attrs["eoembed:window_offset"] == [12, 4] and attrs["eoembed:halo"] == 8  # pixels, like tile_size
    import json

    assert GridSpec.from_attrs(json.loads(json.dumps(attrs))) == g  # serialisable and exact
    assert g.patch_period() == {"period": 4, "offset": (3, 1)}  # array units only for patch arrays


def test_grid_attrs_of_older_stores_are_read_or_refused_with_a_typed_error():
    from eoembed.exceptions import GridAttrsError, StoreError

    g = _grid(blend=True, halo=8, tile_size=32, offset_y=12, offset_x=4, height=100, width=72)
    # version 1 (before the grid version): window_offset in patches, no input shape or transform
    old = {"eoembed:patch_size": 4, "eoembed:tile_size": 32, "eoembed:halo": 8, "eoembed:blend": 1,
           "eoembed:window_offset": [3, 1]}
    back = GridSpec.from_attrs(old, patches=(25, 18), out_transform=g.out_transform)
    assert back == g
    assert GridSpec.from_attrs({k: v for k, v in old.items() if k != "eoembed:window_offset"},
                               patches=(25, 18)).offset_y == 0
    with pytest.raises(GridAttrsError, match="input_shape"):
        GridSpec.from_attrs(old)  # no shape anywhere
    with pytest.raises(GridAttrsError, match="eoembed:tile_size") as err:
        GridSpec.from_attrs({"eoembed:patch_size": 4}, patches=(2, 2))
    assert isinstance(err.value, StoreError)
    with pytest.raises(GridAttrsError, match="upgrade"):
        GridSpec.from_attrs({**g.to_attrs(), "eoembed:grid_version": 3})
    with pytest.raises(GridAttrsError, match="inconsistent"):
        GridSpec.from_attrs({**g.to_attrs(), "eoembed:window_offset": [2, 0]})  # not on the patch grid


def test_a_store_written_before_pixel_attrs_opens_and_gives_the_same_diagnostics(checkpoints, tmp_path):
    """A store whose attrs predate grid version 2 (offset in patches) still opens, and its grid and seam/position
    figures are those of the run; the eager cube and the streamed store carry the same figures (one function)."""
    import zarr

    from eoembed.grid import diagnostics, grid_of
    from eoembed.io import open_embeddings, to_zarr

    cube = synthetic_cube(height=96, width=96, times=1, seed=4, origin=(600040.0, 5600000.0))
    kw = dict(weights=checkpoints["v1.1"], tile_size=24, halo=4, blend=True, progress=False)
    eager = eoembed.embed(cube, "nano", **kw)
    g = grid_of(eager)
    assert g.offset_x == 4 and eager.attrs["eoembed:window_offset"] == [0, 4]
    path = tmp_path / "e.zarr"
    to_zarr(eoembed.embed(cube.chunk({"y": 48, "x": 48}), "nano", **kw), path, progress=False)
    back = open_embeddings(path)
    for key in ("eoembed:seam_ratio", "eoembed:position_hit_rate", "eoembed:position_pc1_share"):
        assert back.attrs[key] == pytest.approx(eager.attrs[key], abs=1e-4)
    # rewrite the attrs as an older eoembed wrote them
    arr = zarr.open_array(str(path), path=back.name, mode="r+")
    for key in ("eoembed:grid_version", "eoembed:input_shape", "eoembed:input_transform"):
        del arr.attrs[key]
    arr.attrs["eoembed:window_offset"] = [0, 1]  # patches
    old = open_embeddings(path)
    assert grid_of(old) == g
    assert diagnostics(old.data, grid_of(old)) == diagnostics(eager.values, g)


def test_eager_embed_is_the_block_graph_run_in_the_calling_thread(monkeypatch):
    """numpy in: the dask graph is built and run synchronously (no dask thread pool competing with the encoder)."""
    import threading

    import dask

    from eoembed.models.spectral import SpectralEncoder as FakeEncoder

    cube = synthetic_cube(height=48, width=40, times=1, seed=2)
    seen, computes = [], []
    real_encode, real_compute = FakeEncoder.encode, dask.array.Array.compute
    monkeypatch.setattr(FakeEncoder, "encode", lambda self, b, **k: seen.append(threading.get_ident())
                        or real_encode(self, b, **k))
    monkeypatch.setattr(dask.array.Array, "compute", lambda self, **k: computes.append(
        k.get("scheduler", dask.config.get("scheduler", None))) or real_compute(self, **k))
    eager = eoembed.embed(cube, "spectral", patch_size=4, tile_size=16, halo=4, progress=False)
    assert isinstance(eager.data, np.ndarray) and computes == ["synchronous"]
    assert seen and set(seen) == {threading.get_ident()}
    lazy = eoembed.embed(cube.chunk({"y": 16, "x": 16}), "spectral", patch_size=4, tile_size=16, halo=4)
    np.testing.assert_array_equal(lazy.values, eager.values)


def test_grid_of_a_crop_is_placed_on_the_crop():
    """A crop keeps its parent's attrs; grid_of gives the crop's own shape, transform and window phase."""
    from eoembed.grid import grid_of

    cube = synthetic_cube(height=64, width=64, times=1, seed=1)
    emb = eoembed.embed(cube, "spectral", patch_size=4, tile_size=24, halo=4, blend=True, progress=False)
    g = grid_of(emb)
    assert g == GridSpec.from_attrs(emb.attrs)
    crop = emb.isel(y=slice(2, 14), x=slice(5, None))
    gc = grid_of(crop)
    assert (gc.patches_y, gc.patches_x) == (12, 11) and gc.out_transform == crop.rio.transform(recalc=True)
    ph, phc = g.patch_period(), gc.patch_period()
    assert phc["offset"] == ((ph["offset"][0] + 2) % ph["period"], (ph["offset"][1] + 5) % ph["period"])


def test_seam_ratio_comes_with_its_null():
    """A field with structure at every scale (no windows) scores the same on the border lattice and on the
    lattice shifted half a window; a planted border only on the real one."""
    rng = np.random.default_rng(1)
    from scipy.ndimage import uniform_filter

    field = uniform_filter(rng.normal(size=(8, 120, 120)), size=(1, 3, 3)) + 0.3  # smooth land, no windows
    base = seam_stats(field, 6)
    assert abs(base["ratio"] - base["ratio_null"]) < 0.1 * base["ratio_null"]
    seamy = field.copy()
    for k in range(0, 120, 6):
        seamy[:, k : k + 6] += rng.normal(size=(8, 1, 1)) * 20
    s = seam_stats(seamy, 6)
    assert s["ratio"] > 2 * s["ratio_null"]
