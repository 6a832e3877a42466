"""PhilEO Geo-Aware U-Net encoder: published state-dict layout (round trip, both the
pretrained-encoder and fine-tuned U-Net files), block arithmetic against an
independent functional re-computation, shapes/strides, determinism, the shared sample.
(There is no installable PhilEO package to use as an oracle, and its code has no licence.)"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")
F = torch.nn.functional

import eoembed  # noqa: E402
from eoembed.exceptions import CorruptWeightsError, WeightsNotFoundError  # noqa: E402
from eoembed.grid import GridAlignmentWarning  # noqa: E402
from eoembed.models import get_model_spec, load_model  # noqa: E402
from eoembed.models._phileonet import GeoAwareEncoder  # noqa: E402
from eoembed.models.phileo import S2_BANDS, SIZES  # noqa: E402
from eoembed.testing import synthetic_cube, window_aligned_origin  # noqa: E402

SMALL = dataclasses.replace(get_model_spec("phileo-geoaware-nano"), name="phileo-test", size="test",
                            embedding_dim=128, params=None, macs_per_pixel=None, aliases=())


def _random_net(depths, dims, seed=0):
    torch.manual_seed(seed)
    net = GeoAwareEncoder(bands=10, depths=depths, dims=dims)
    with torch.no_grad():  # trained-looking batch-norm statistics, so eval mode is not an identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net.eval()


def _save_encoder(path, net, head_dim=4):
    """Pretrained-encoder layout: ``stem.*``, ``encoder_blocks.*`` and the geo head."""
    sd = dict(net.state_dict())
    sd["head.2.weight"], sd["head.2.bias"] = torch.zeros(head_dim, net.encoder_blocks[-1].blocks[0].conv3.out_channels), torch.zeros(head_dim)
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    net = _random_net((1, 1, 1, 1), (16, 32, 64, 128))
    return net, _save_encoder(tmp_path_factory.mktemp("phileo") / "phileo-test.pt", net)


def test_nano_layout_matches_the_published_encoder():
    """Key names and shapes of the Nano encoder as the published files hold them."""
    net = GeoAwareEncoder(bands=10, depths=SIZES["nano"][0], dims=SIZES["nano"][1])
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["stem.conv1.weight"] == (80, 10, 1, 1)
    assert shapes["stem.match_channels.0.weight"] == (80, 10, 1, 1)
    assert shapes["stem.squeeze.excitation.0.weight"] == (5, 80)
    assert shapes["stem.conv2.weight"] == (80, 1, 3, 3)  # depth-wise
    assert shapes["encoder_blocks.1.blocks.0.match_channels.1.running_var"] == (160,)
    assert shapes["encoder_blocks.2.blocks.7.conv3.weight"] == (320, 320, 3, 3)
    assert "encoder_blocks.0.blocks.0.match_channels.0.weight" not in shapes  # 80 → 80: identity
    assert "encoder_blocks.3.blocks.2.conv1.weight" not in shapes  # depths 2, 2, 8, 2
    assert sum(p.numel() for p in net.parameters()) == get_model_spec("phileo-geoaware-nano").params


def test_block_arithmetic_matches_a_functional_recomputation():
    """stem block = ReLU6(BN3(conv3(...)) · SE(...) + match(x)), with SE(y) = y · gate(y)."""
    net = _random_net((1, 1, 1, 1), (16, 32, 64, 128), seed=2)
    blk = net.stem
    x = torch.randn(2, 10, 16, 16)

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    y = F.relu6(bn(F.conv2d(x, blk.conv1.weight, blk.conv1.bias), blk.norm1))
    y = F.relu6(bn(F.conv2d(y, blk.conv2.weight, blk.conv2.bias, padding=1, groups=16), blk.norm2))
    y = bn(F.conv2d(y, blk.conv3.weight, blk.conv3.bias, padding=1), blk.norm3)
    ex = blk.squeeze.excitation
    gate = torch.sigmoid(F.relu(y.mean(dim=(2, 3)) @ ex[0].weight.T) @ ex[2].weight.T)[:, :, None, None]
    y = y * (y * gate)
    ref = F.relu6(y + bn(F.conv2d(x, blk.match_channels[0].weight), blk.match_channels[1]))
    with torch.no_grad():
        assert float((blk(x) - ref).abs().max()) <= 1e-5


@pytest.mark.parametrize(("size", "stride"), [(64, 16), (64, 8), (128, 16), (96, 8)])
def test_feature_map_strides(small_ckpt, size, stride):
    net, _ = small_ckpt
    with torch.no_grad():
        out = net.features(torch.randn(1, 10, size, size), stride=stride)
    assert out.shape == (1, 128, size // stride, size // stride)
    if stride == 8:  # the stride-16 map is that map max-pooled
        with torch.no_grad():
            s16 = net.features(torch.randn(1, 10, size, size).fill_(0.3), stride=16)
            s8 = net.features(torch.randn(1, 10, size, size).fill_(0.3), stride=8)
        assert torch.allclose(F.max_pool2d(s8, 2), s16)


def test_state_dict_round_trip_both_layouts(tmp_path, small_ckpt):
    """The pretrained-encoder file and a fine-tuned U-Net file (stem.0.*, bridge, decoder,
    head) both load, and every encoder tensor arrives unchanged."""
    net, path = small_ckpt
    enc = load_model(SMALL, weights=path, device="cpu")
    ref = net.state_dict()
    got = enc.module.state_dict()
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    unet = {("stem.0." + k[5:] if k.startswith("stem.") else k): v for k, v in ref.items()}
    unet["bridge.0.conv1.weight"] = torch.zeros(128, 128, 1, 1)
    unet["decoder_blocks.0.blocks.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    unet["head.1.weight"] = torch.zeros(1, 16, 1, 1)
    torch.save(unet, tmp_path / "unet.pt")
    got2 = load_model(SMALL, weights=tmp_path / "unet.pt", device="cpu").module.state_dict()
    assert all(torch.equal(got2[k], ref[k]) for k in ref)


def test_embed_is_deterministic_and_batch_independent(small_ckpt):
    _, path = small_ckpt
    cube = synthetic_cube(height=64, width=64, times=2, seed=3)
    a = eoembed.embed(cube, SMALL, weights=path, device="cpu", batch_size=16, progress=False)
    b = eoembed.embed(cube, SMALL, weights=path, device="cpu", batch_size=1, progress=False)
    again = eoembed.embed(cube, SMALL, weights=path, device="cpu", batch_size=16, progress=False)
    np.testing.assert_array_equal(a.values, again.values)
    assert a.shape == (128, 4, 4)
    np.testing.assert_allclose(a.values, b.values, atol=1e-6, rtol=0)  # conv kernels may differ by batch size
    assert float(a.std(("y", "x")).mean()) > 1e-4


def test_embed_equals_direct_encoder_call(small_ckpt):
    """One 64-px tile, no halo: DN / 10 000 in PhilEO's band order → encoder → stride-16 map."""
    net, path = small_ckpt
    cube = synthetic_cube(height=64, width=64, times=1, seed=5, origin=window_aligned_origin(64))
    emb = eoembed.embed(cube, SMALL, weights=path, device="cpu", tile_size=64, halo=0, progress=False)
    x = torch.as_tensor(cube.sel(band=list(S2_BANDS)).values / 10000.0, dtype=torch.float32)
    with torch.no_grad():
        ref = net.features(x)[0].numpy()
    np.testing.assert_allclose(emb.values, ref, atol=1e-5, rtol=0)
    fine = eoembed.embed(cube, SMALL, weights=path, device="cpu", patch_size=8, tile_size=64, halo=0,
                         progress=False)
    assert fine.shape == (128, 8, 8) and fine.attrs["eoembed:patch_size"] == 8


def test_embed_shared_sample_through_accessor(sample_cube, small_ckpt):
    """The sample has no B8A: it is read from B08, the nearest band in wavelength."""
    _, path = small_ckpt
    cube = sample_cube.isel(time=slice(0, 3))
    # the shared sample's origin is 4 px off the 16-px global grid: embed() says so, and snaps to the cube
    with pytest.warns(UserWarning, match="B8A"), pytest.warns(GridAlignmentWarning, match="off the global"):
        emb = cube.eo.embed(model=SMALL, weights=path, device="cpu", progress=False)
    assert emb.shape == (128, 7, 7) and np.isfinite(emb.values).all()
    assert emb.attrs["eoembed:weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert emb.attrs["eoembed:license"].startswith("unspecified")
    assert "stride 16" in emb.attrs["eoembed:feature_level"]
    # identical to giving B8A explicitly as a copy of B08
    both = xr.concat([cube, cube.sel(band=["B08"]).assign_coords(band=["B8A"])], dim="band")
    with pytest.warns(GridAlignmentWarning, match="off the global"):
        ref = eoembed.embed(both, SMALL, weights=path, device="cpu", progress=False)
    np.testing.assert_allclose(emb.values, ref.values, atol=1e-5)


def test_nano_loads_a_full_size_checkpoint(tmp_path):
    net = _random_net(SIZES["nano"][0], SIZES["nano"][1], seed=1)
    path = _save_encoder(tmp_path / "phileo-geoaware-nano.pt", net)
    cube = synthetic_cube(height=32, width=32, times=1)
    emb = eoembed.embed(cube, "phileo", weights=tmp_path, device="cpu", progress=False)
    assert emb.shape == (640, 2, 2) and emb.attrs["eoembed:model"] == "phileo-geoaware-nano"
    with pytest.raises(CorruptWeightsError, match=r"wrong shapes: .*expected \(96"):
        load_model("phileo-geoaware-tiny", weights=path, device="cpu")


def test_partial_checkpoint_names_missing_keys(tmp_path, small_ckpt):
    net, _ = small_ckpt
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("encoder_blocks.3.")}
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CorruptWeightsError, match=r"missing keys: encoder_blocks\.3\.blocks\.0\."):
        load_model(SMALL, weights=tmp_path / "partial.pt", device="cpu")


def test_unknown_keys_are_named(tmp_path, small_ckpt):
    net, _ = small_ckpt
    sd = dict(net.state_dict())
    sd["encoder_blocks.4.blocks.0.conv1.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pt")
    with pytest.raises(CorruptWeightsError, match=r"unexpected keys: encoder_blocks\.4"):
        load_model(SMALL, weights=tmp_path / "extra.pt", device="cpu")


def test_no_weights_says_how_to_pass_them():
    with pytest.raises(WeightsNotFoundError, match="weights="):
        load_model("phileo-geoaware-nano", device="cpu")


def test_cost_counts_convolutions():
    cube = synthetic_cube(height=128, width=128, times=2, origin=window_aligned_origin(128))
    cost = eoembed.embed_cost(cube, "phileo", tile_size=128, halo=0)
    assert cost["tiles"] == 1
    # the oracle: multiply-accumulates of the real Nano forward pass to the stride-16 map, counted by
    # torch (FlopCounterMode: 2 flops per MAC; convolutions and the squeeze-excitation linears)
    from torch.utils.flop_counter import FlopCounterMode

    net = GeoAwareEncoder(bands=len(S2_BANDS), depths=SIZES["nano"][0], dims=SIZES["nano"][1]).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.features(torch.zeros(2, len(S2_BANDS), 128, 128), stride=16)  # two timesteps = two images
    assert cost["gmacs"] == pytest.approx(counter.get_total_flops() / 2 / 1e9, rel=0.01)
    assert 25 < cost["gmacs"] < 40  # ~0.96 M MACs per pixel for Nano


def test_dask_input_gives_the_numpy_result(tmp_path):
    """Same tiling code as every family: a chunked cube embeds lazily to the same numbers."""
    net = _random_net(SIZES["nano"][0], SIZES["nano"][1], seed=4)
    _save_encoder(tmp_path / "phileo-geoaware-nano.pt", net)
    cube = synthetic_cube(height=64, width=64, times=2, seed=6)
    eager = eoembed.embed(cube, "phileo-nano", weights=tmp_path, device="cpu", progress=False)
    lazy = eoembed.embed(cube.chunk({"x": 32, "y": 32}), "phileo-nano", weights=tmp_path, device="cpu")
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.compute().values, eager.values, atol=1e-5, rtol=0)
