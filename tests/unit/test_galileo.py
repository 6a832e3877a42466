"""Galileo-Nano: eoembed's own encoder against the upstream reference on the real weights.

The reference (``../shared/reference/galileo/single_file_galileo.py``) is a test oracle
only. Its forward pass runs on an input the test normalizes itself from the published
facts (normalization.json, NDVI from B04/B08), with the same masks; eoembed's
``embed()`` over one window covering the whole cube must match it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import eoembed
from eoembed import exceptions as E
from eoembed.models import get_model_spec
from eoembed.testing import synthetic_cube

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "galileo-nano"
ORACLE = SHARED / "reference" / "galileo" / "single_file_galileo.py"
S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

needs_shared = pytest.mark.skipif(
    not (WEIGHTS / "encoder.pt").is_file() or not ORACLE.is_file(),
    reason=f"real Galileo weights/oracle not found at {WEIGHTS} and {ORACLE} (clone ../shared beside the repo)",
)


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("einops", reason="the Galileo oracle needs einops (pip install 'eoembed[test]')")
    spec = importlib.util.spec_from_file_location("single_file_galileo", ORACLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["single_file_galileo"] = mod
    spec.loader.exec_module(mod)
    import torch

    enc = mod.Encoder.load_from_folder(WEIGHTS, device=torch.device("cpu")).eval()
    return mod, enc


def make_cube(size: int, times: int, *, with_s1: bool = True, seed: int = 0) -> xr.DataArray:
    # origin a multiple of 240 px from the CRS origin: on the window grid of every window size used here
    # (12, 15, 16 px), so a cube of one window's size is encoded as exactly that window
    cube = synthetic_cube(height=size, width=size, times=times, bands=S2, seed=seed, origin=(600000.0, 5601600.0))
    if not with_s1:
        return cube
    rng = np.random.default_rng(seed + 1)
    s1 = xr.DataArray(rng.uniform(-22, -4, size=(times, 2, size, size)).astype("float32"),
                      dims=cube.dims, coords={**{k: cube[k] for k in ("time", "y", "x")}, "band": ["vv", "vh"]})
    return xr.concat([cube, s1], dim="band").rio.write_crs(cube.rio.crs)


def reference(oracle, cube: xr.DataArray, p: int, absent: tuple[str, ...] = ()):
    """Normalize the way the published facts say, run the oracle, pool per patch."""
    import torch

    mod, enc = oracle
    stats = json.loads((WEIGHTS / "normalization.json").read_text())["13"]
    mean, std = np.array(stats["mean"]), np.array(stats["std"])
    t, _, h, w = cube.shape
    names = ["vv", "vh", *S2]
    raw = np.stack([cube.sel(band=b).values if b in cube.band.values else np.full((t, h, w), np.nan)
                    for b in names], axis=-1).astype("float64")  # (T, H, W, 12)
    x = (raw - (mean[:12] - 2 * std[:12])) / (4 * std[:12])
    ndvi = (raw[..., 8] - raw[..., 4]) / (raw[..., 8] + raw[..., 4])
    x = np.concatenate([x, ndvi[..., None]], axis=-1).transpose(1, 2, 0, 3)[None]  # (1, H, W, T, 13)
    groups = [["vv", "vh"], ["B02", "B03", "B04"], ["B05", "B06", "B07"], ["B08"], ["B8A"], ["B11", "B12"],
              ["B04", "B08"]]
    masked = np.zeros((1, h, w, t, 7), dtype="float32")
    for g, bands in enumerate(groups):
        idx = [names.index(b) for b in bands]
        bad = ~np.isfinite(raw[..., idx]).all(axis=-1).transpose(1, 2, 0)  # (H, W, T)
        masked[0, ..., g] = bad | any(b in absent for b in bands)
    x = np.nan_to_num(x).astype("float32")
    months = torch.as_tensor(cube.time.dt.month.values - 1)[None]
    args = (torch.as_tensor(x), torch.zeros(1, h, w, 16), torch.zeros(1, t, 6), torch.zeros(1, 18),
            torch.as_tensor(masked), torch.ones(1, h, w, 16), torch.ones(1, t, 6), torch.ones(1, 18))
    with torch.no_grad():
        out = enc(*args, months=months, patch_size=p, input_resolution_m=10)
    pooled = mod.Encoder.apply_mask_and_average_tokens_per_patch(*out[:8])  # (1, h*w, D)
    hp = h // p
    pooled = pooled[0].reshape(hp, hp, -1).numpy()
    st_x, st_m = out[0][0].numpy(), out[4][0].numpy()  # (h, w, T, G, D), (h, w, T, G)
    keep = 1 - st_m
    with np.errstate(invalid="ignore"):
        per_t = (st_x * keep[..., None]).sum(3) / keep.sum(3)[..., None]  # (h, w, T, D)
    return pooled, per_t


def ours(cube, p, pool_time=True):
    size = cube.sizes["x"]
    return eoembed.embed(cube, "galileo-nano", weights=WEIGHTS, patch_size=p, tile_size=size, halo=0,
                         device="cpu", pool_time=pool_time, progress=False, position="raw")


def assert_close(a, b):
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN (nothing visible) patterns differ"
    diff = np.nanmax(np.abs(a - b))
    assert diff <= 1e-5, f"max abs diff {diff:.2e} > 1e-5"
    return diff


@needs_shared
@pytest.mark.parametrize("p,size", [(4, 16), (2, 12), (3, 15), (8, 16)])
def test_parity_with_reference_all_visible(oracle, p, size):
    cube = make_cube(size, 3)
    emb = ours(cube, p)
    ref, _ = reference(oracle, cube, p)
    assert emb.sizes["embedding"] == 128
    assert_close(emb.transpose("y", "x", "embedding").values, ref)


@needs_shared
def test_parity_with_masked_groups_and_timesteps(oracle):
    cube = make_cube(16, 4).drop_sel(band=["B05"])  # red-edge group cannot be formed: masked
    cube = cube.copy(data=cube.values)
    s2 = [b for b in cube.band.values if b not in ("vv", "vh")]
    cube.loc[{"time": cube.time[1], "band": s2}] = np.nan  # a cloudy month: S2 groups masked, S1 kept
    cube.loc[{"time": cube.time[2], "band": s2, "y": cube.y[:8], "x": cube.x[:4]}] = np.nan  # a cloud
    cube.loc[{"time": cube.time[3], "band": ["vv", "vh"]}] = np.nan  # no S1 this month
    cube.loc[{"band": ["vv", "vh"], "y": cube.y[12:], "x": cube.x[12:]}] = np.nan  # S1 gap: one patch S2-only
    with pytest.warns(UserWarning, match="B05"):
        emb = ours(cube, 4)
    ref, per_t = reference(oracle, cube, 4, absent=("B05",))
    assert_close(emb.transpose("y", "x", "embedding").values, ref)
    with pytest.warns(UserWarning, match="B05"):
        emb_t = ours(cube, 4, pool_time=False)
    assert emb_t.dims == ("time", "embedding", "y", "x")
    assert_close(emb_t.transpose("y", "x", "time", "embedding").values, per_t)


@needs_shared
def test_patch_with_nothing_visible_is_nan(oracle):
    cube = make_cube(16, 2, with_s1=False)
    cube = cube.copy(data=cube.values)
    cube.loc[{"y": cube.y[:4], "x": cube.x[:4]}] = np.nan
    emb = ours(cube, 4)
    assert np.isnan(emb.values[:, 0, 0]).all() and np.isfinite(emb.values[:, 1:, 1:]).all()
    ref, _ = reference(oracle, cube, 4)
    assert_close(emb.transpose("y", "x", "embedding").values, ref)


@needs_shared
def test_provenance_and_licence_are_stamped():
    emb = ours(make_cube(8, 1, with_s1=False), 4)
    a = emb.attrs
    assert a["eoembed:model"] == "galileo-nano" and a["eoembed:license"] == "MIT"
    assert a["eoembed:weights_sha256"] == "eab6acacf527886a508a555bc24efe4b4a2cf91b162e84cd1c4a1807e942180c"
    assert a["eoembed:weights_verified"] == 1
    assert a["eoembed:weights_revision"] == get_model_spec("galileo-nano").source_revision
    assert emb.rio.crs.to_epsg() == 32631


def test_specs_and_cost():
    nano, tiny, base = (get_model_spec(f"galileo-{s}") for s in ("nano", "tiny", "base"))
    assert (nano.embedding_dim, tiny.embedding_dim, base.embedding_dim) == (128, 192, 768)
    assert nano.license == "MIT" and nano.square_tiles and nano.max_timesteps == 24
    assert nano.modalities["sentinel2_l2a"] == S2 and nano.modalities["sentinel1"] == ("vv", "vh")
    assert nano.weights_source.startswith("github:nasaharvest/galileo@d0482291")
    urls = [f.url for f in nano.weight_files]
    assert all(u.startswith("https://raw.githubusercontent.com/nasaharvest/galileo/d04822911e85") for u in urls)
    cube = make_cube(32, 3)
    cost = eoembed.embed_cost(cube, "galileo-nano", patch_size=4)
    assert cost["tokens_per_patch_timestep"] == 7  # 5 S2 groups + NDVI + S1
    assert cost["tile_size"] == 6 * 4  # the family default: 6-patch windows (benchmarks/bench_tiling_sweep.py)
    assert cost["tokens_per_tile"] == 6 ** 2 * 3 * 7
    # the oracle: multiply-accumulates of the real Nano forward pass on one 4×4-patch, 2-timestep tile,
    # counted by torch (2 flops per MAC; attention on the math backend, whose matmuls it sees)
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from eoembed.models._channel_groups import IN_CHANNELS
    from eoembed.models._galileo_net import GalileoEncoder

    small = eoembed.embed_cost(make_cube(16, 2), "galileo-nano", patch_size=4, tile_size=16, halo=0)
    net = GalileoEncoder(IN_CHANNELS, nano.embedding_dim, nano.depth, nano.num_heads, nano.mlp_ratio, 24, 8).eval()
    x = {g: torch.randn(1, 16, 16, 2, c) for g, c in IN_CHANNELS.items()}
    for proj in net.space_time_embed.values():
        proj.kernel(4)  # the resized patch kernels are made once per model, not per tile
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        net(x, torch.ones(1, 4, 4, 2, len(IN_CHANNELS), dtype=torch.bool), torch.tensor([[4, 5]]), 4, 10.0)
    assert small["gmacs"] / small["tiles"] == pytest.approx(counter.get_total_flops() / 2 / 1e9, rel=0.02)


def test_too_many_timesteps_for_galileo():
    with pytest.raises(E.TooManyTimestepsError, match="at most 24"):
        eoembed.embed(make_cube(8, 25, with_s1=False), "galileo-nano", weights=WEIGHTS, progress=False)


@needs_shared
def test_wrong_size_folder_is_a_typed_error():
    with pytest.raises(E.CorruptWeightsError, match="128-d Galileo encoder, but galileo-tiny is 192-d"):
        eoembed.load_model("galileo-tiny", weights=WEIGHTS, device="cpu")


def test_folder_missing_normalization_is_a_typed_error(tmp_path):
    (tmp_path / "encoder.pt").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(E.WeightsNotFoundError, match="lacks normalization.json"):
        eoembed.load_model("galileo-nano", weights=tmp_path, device="cpu")


@needs_shared
def test_windows_with_different_masks_in_one_batch_match_alone():
    """Padding to the longest window (attention mask) must not change any window's result."""
    from eoembed.encode import TileBatch

    enc = eoembed.load_model("galileo-nano", weights=WEIGHTS, device="cpu")
    rng = np.random.default_rng(0)
    s2 = enc.normalize("sentinel2_l2a", rng.uniform(300, 4000, size=(2, 8, 8, 3, 10)).astype("float32"))
    vis = np.ones((2, 2, 2, 3), bool)
    vis[1, 0, :, 1] = False  # the second window misses two patch-timesteps
    ts = np.broadcast_to(np.array([[1, 3, 2021], [1, 4, 2021], [1, 5, 2021]]), (2, 3, 3)).copy()

    def run(sl):
        return enc.encode(TileBatch(data={"sentinel2_l2a": s2[sl]}, visible={"sentinel2_l2a": vis[sl]},
                                    timestamps=ts[sl], patch_size=4, input_res=10.0,
                                    present={"sentinel2_l2a": np.ones(10, bool)}), pool_time=True)

    both = run(slice(0, 2))
    np.testing.assert_allclose(both[0:1], run(slice(0, 1)), atol=1e-5)
    np.testing.assert_allclose(both[1:2], run(slice(1, 2)), atol=1e-5)


@needs_shared
def test_unreadable_or_foreign_files_are_typed_errors(tmp_path):
    import shutil

    bad_norm = tmp_path / "bad_norm"
    shutil.copytree(WEIGHTS, bad_norm)
    (bad_norm / "normalization.json").chmod(0o644)
    (bad_norm / "normalization.json").write_text('{"13": {"mean": [1, 2]}}')
    with pytest.raises(E.CorruptWeightsError, match="13-band '13' entry"):
        eoembed.load_model("galileo-nano", weights=bad_norm, device="cpu")
    presto = SHARED / "weights" / "presto" / "default_model.pt"
    foreign = tmp_path / "foreign"
    shutil.copytree(WEIGHTS, foreign)
    (foreign / "encoder.pt").chmod(0o644)
    shutil.copyfile(presto, foreign / "encoder.pt")
    with pytest.raises(E.CorruptWeightsError, match="does not fit galileo-nano"):
        eoembed.load_model("galileo-nano", weights=foreign, device="cpu")


@needs_shared
def test_non_square_window_is_a_typed_error():
    from eoembed.encode import TileBatch

    enc = eoembed.load_model("galileo-nano", weights=WEIGHTS, device="cpu")
    s2 = enc.normalize("sentinel2_l2a", np.full((1, 8, 4, 1, 10), 1000, dtype="float32"))
    batch = TileBatch(data={"sentinel2_l2a": s2}, visible={"sentinel2_l2a": np.ones((1, 2, 1, 1), bool)},
                      timestamps=np.array([[[1, 5, 2021]]]), patch_size=4, input_res=10.0,
                      present={"sentinel2_l2a": np.ones(10, bool)})
    with pytest.raises(E.ParameterError, match="square windows"):
        enc.encode(batch, pool_time=True)
