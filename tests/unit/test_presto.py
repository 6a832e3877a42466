"""Presto: eoembed's own per-pixel encoder against the upstream reference on the real weights.

The reference (``../shared/reference/presto/single_file_presto.py``) is a test oracle
only; the test normalizes the input itself from the published facts and runs the
oracle one missing-data pattern at a time (it needs equal masking within a batch).
"""

from __future__ import annotations

import importlib.util
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
WEIGHTS = SHARED / "weights" / "presto"
ORACLE = SHARED / "reference" / "presto" / "single_file_presto.py"
S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

needs_shared = pytest.mark.skipif(
    not (WEIGHTS / "default_model.pt").is_file() or not ORACLE.is_file(),
    reason=f"real Presto weights/oracle not found at {WEIGHTS} and {ORACLE} (clone ../shared beside the repo)",
)


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("einops", reason="the Presto oracle needs einops (pip install 'eoembed[test]')")
    import torch

    spec = importlib.util.spec_from_file_location("single_file_presto", ORACLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["single_file_presto"] = mod
    spec.loader.exec_module(mod)
    model = mod.Presto.construct()
    model.load_state_dict(torch.load(WEIGHTS / "default_model.pt", map_location="cpu", weights_only=True))
    return model.encoder.eval()


def make_cube(size: int, times: int, seed: int = 0) -> xr.DataArray:
    cube = synthetic_cube(height=size, width=size, times=times, bands=S2, seed=seed, start="2021-05-01")
    rng = np.random.default_rng(seed + 1)
    s1 = xr.DataArray(rng.uniform(-22, -4, size=(times, 2, size, size)).astype("float32"),
                      dims=cube.dims, coords={**{k: cube[k] for k in ("time", "y", "x")}, "band": ["vv", "vh"]})
    return xr.concat([cube, s1], dim="band").rio.write_crs(cube.rio.crs)


def reference(encoder, cube: xr.DataArray, absent=()):
    """Per-pixel oracle embeddings ``(y, x, D)``, NaN where a pixel has no data."""
    import torch
    from pyproj import Transformer

    t, _, h, w = cube.shape
    names = ["vv", "vh", *S2]
    raw = np.stack([cube.sel(band=b).values if b in cube.band.values else np.full((t, h, w), np.nan)
                    for b in names], axis=-1).astype("float64")  # (T, H, W, 12)
    x = np.zeros((t, h, w, 17))
    x[..., :2] = (raw[..., :2] + 25) / 25
    x[..., 2:12] = raw[..., 2:12] / 1e4
    x[..., 16] = (raw[..., 8] - raw[..., 4]) / (raw[..., 8] + raw[..., 4])
    mask = np.zeros((t, h, w, 17))
    mask[..., :12] = ~np.isfinite(raw)
    mask[..., 12:16] = 1  # ERA5, SRTM
    mask[..., 16] = ~np.isfinite(raw[..., 8] + raw[..., 4])
    for b in absent:
        grp = {"B05": [5, 6, 7], "B8A": [9]}[b]
        mask[..., grp] = 1
    x = np.nan_to_num(x)
    xx, yy = np.meshgrid(cube.x.values, cube.y.values)
    lon, lat = Transformer.from_crs(cube.rio.crs, "EPSG:4326", always_xy=True).transform(xx, yy)
    months = torch.as_tensor(cube.time.dt.month.values - 1, dtype=torch.long)[None]  # each timestep's month
    out = np.full((h, w, 128), np.nan)
    for i in range(h):
        for j in range(w):
            m = mask[:, i, j]
            if m[:, :12].all():
                continue
            with torch.no_grad():
                out[i, j] = encoder(
                    torch.as_tensor(x[None, :, i, j], dtype=torch.float32),
                    dynamic_world=torch.full((1, t), 9, dtype=torch.long),
                    latlons=torch.tensor([[lat[i, j], lon[i, j]]], dtype=torch.float32),
                    mask=torch.as_tensor(m[None], dtype=torch.float32), month=months)[0].numpy()
    return out


def ours(cube, p):
    return eoembed.embed(cube, "presto", weights=WEIGHTS, patch_size=p, device="cpu", progress=False)


def patch_mean(ref, p):
    h, w, d = ref.shape
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        return np.nanmean(ref.reshape(h // p, p, w // p, p, d), axis=(1, 3))


def assert_close(a, b):
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN (no data) patterns differ"
    diff = np.nanmax(np.abs(a - b))
    assert diff <= 1e-5, f"max abs diff {diff:.2e} > 1e-5"


@needs_shared
def test_per_pixel_parity(oracle):
    cube = make_cube(6, 4)
    emb = ours(cube, 1)
    assert emb.sizes == {"embedding": 128, "y": 6, "x": 6}
    assert_close(emb.transpose("y", "x", "embedding").values, reference(oracle, cube))


@needs_shared
def test_parity_with_masks_and_patch_mean(oracle):
    cube = make_cube(8, 5, seed=3).drop_sel(band=["B05"])
    cube = cube.copy(data=cube.values)
    s2 = [b for b in cube.band.values if b not in ("vv", "vh")]
    cube.loc[{"time": cube.time[1], "band": s2, "y": cube.y[:4]}] = np.nan  # clouds on the top half
    cube.loc[{"time": cube.time[3], "band": ["vv", "vh"]}] = np.nan  # no S1 this month
    cube.loc[{"y": cube.y[6:], "x": cube.x[6:]}] = np.nan  # no data at all in one corner patch
    ref = reference(oracle, cube, absent=("B05",))
    with pytest.warns(UserWarning, match="B05"):
        per_pixel = ours(cube, 1)
    assert_close(per_pixel.transpose("y", "x", "embedding").values, ref)
    with pytest.warns(UserWarning, match="B05"):
        patches = ours(cube, 2)
    assert_close(patches.transpose("y", "x", "embedding").values, patch_mean(ref, 2))
    assert np.isnan(patches.values[:, 3, 3]).all()


@needs_shared
def test_weekly_and_unsorted_series_get_each_timestep_s_own_month(oracle):
    """Issue 17: months were counted on from the first date (weekly scenes got the wrong months) and
    unsorted dates were taken as given. Weekly scenes across a month boundary, given shuffled."""
    import pandas as pd

    cube = make_cube(4, 5, seed=7).assign_coords(time=pd.date_range("2021-05-19", periods=5, freq="7D"))
    ref = reference(oracle, cube)  # months May, May, June, June, June
    shuffled = cube.isel(time=[3, 0, 4, 2, 1])
    with pytest.warns(UserWarning, match="sorted"):
        emb = ours(shuffled, 1)
    assert_close(emb.transpose("y", "x", "embedding").values, ref)
    consecutive = reference(oracle, cube.assign_coords(time=pd.date_range("2021-05-01", periods=5, freq="MS")))
    assert np.nanmax(np.abs(ref - consecutive)) > 1e-3  # the months matter: the old counting was wrong


@needs_shared
def test_tiles_and_batches_do_not_change_a_pixel(oracle):
    cube = make_cube(20, 3, seed=5)
    one = eoembed.embed(cube, "presto", weights=WEIGHTS, patch_size=1, tile_size=20, halo=0, device="cpu",
                        progress=False)
    many = eoembed.embed(cube.chunk({"x": 8, "y": 8}), "presto", weights=WEIGHTS, patch_size=1, tile_size=12,
                         halo=2, batch_size=3, device="cpu", progress=False)
    np.testing.assert_allclose(many.values, one.values, atol=1e-5)


@needs_shared
def test_provenance_and_refusing_per_timestep():
    emb = ours(make_cube(4, 2), 4)
    a = emb.attrs
    assert a["eoembed:model"] == "presto" and a["eoembed:license"] == "MIT"
    assert a["eoembed:weights_sha256"] == "559c9d76f525bdf2dd3774da8b1e7f1510769b73baacac12e9e4d8d5c67fbe65"
    assert a["eoembed:weights_verified"] == 1 and a["eoembed:weights_revision"].startswith("13173d02")
    with pytest.raises(E.ParameterError, match="one vector per pixel time series"):
        eoembed.embed(make_cube(4, 2), "presto", weights=WEIGHTS, pool_time=False, progress=False)


def test_spec_and_cost():
    s = get_model_spec("presto")
    assert s.embedding_dim == 128 and s.license == "MIT" and s.max_timesteps == 24 and not s.square_tiles
    assert s.weights_source == "github:nasaharvest/presto@13173d02"
    assert s.weight_files[0].url.endswith("13173d028f035abcbcc3b13829314323a5c15d02/data/default_model.pt")
    cost = eoembed.embed_cost(make_cube(16, 3), "presto", patch_size=1)
    assert cost["tokens_per_patch_timestep"] == 7 and cost["halo_overhead"] == 1.0
    assert cost["tokens"] == 16 * 16 * (3 * 7 + 1)  # one sample per cube pixel; padding and halo are never encoded
    # the oracle: multiply-accumulates of the real forward pass, counted by torch on one pixel's series
    # with every group of its 3 timesteps visible (FlopCounterMode counts 2 flops per MAC; attention runs
    # on the math backend, whose matmuls it sees: the fused CPU kernel is not counted)
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from eoembed.models._channel_groups import IN_CHANNELS
    from eoembed.models._presto_net import PrestoEncoder

    torch.manual_seed(0)
    net = PrestoEncoder(IN_CHANNELS, s.embedding_dim, s.depth, s.num_heads, s.mlp_ratio, s.max_timesteps).eval()
    x = {g: torch.randn(1, 3, c) for g, c in IN_CHANNELS.items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        net(x, torch.ones(3, len(IN_CHANNELS), dtype=torch.bool), torch.tensor([[4, 5, 6]]), torch.tensor([[45.0, 5.0]]))
    assert cost["gmacs"] == pytest.approx(16 * 16 * counter.get_total_flops() / 2 / 1e9, rel=0.01)
