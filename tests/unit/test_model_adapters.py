"""One encoder pattern for every family (issue 25): one Mlp/Block, one adapter base doing the
batching/device/autocast/pooling glue, no import circle inside eoembed.models, one wavelength table."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eoembed  # noqa: E402
from eoembed import sensors  # noqa: E402
from eoembed.models import _encoder, _layers  # noqa: E402

MODELS = Path(eoembed.__file__).parent / "models"


def test_one_mlp_and_block_for_every_net():
    # no net module defines its own transformer layers
    for f in MODELS.glob("_*.py"):
        if f.name == "_layers.py":
            continue
        names = {n.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ClassDef)}
        assert not names & {"Mlp", "Block", "Attention"}, f"{f.name} defines {names & {'Mlp', 'Block', 'Attention'}}"
    from eoembed.models._channel_groups import IN_CHANNELS
    from eoembed.models._galileo_net import GalileoEncoder
    from eoembed.models._presto_net import PrestoEncoder
    from eoembed.models._prithvinet import PrithviNet
    from eoembed.models._vit import PlainViT

    nets = [GalileoEncoder(IN_CHANNELS, 32, 1, 4, 4.0, 24, 8), PrestoEncoder(IN_CHANNELS, 32, 1, 4),
            PlainViT(32, 1, 4, 17), PrithviNet(dim=32, depth=1, heads=4, patch=16, bands=6, frames=1, grid=4,
                                               coords=False)]
    for net in nets:
        blk = net.blocks[0]
        assert type(blk) is _layers.Block and type(blk.mlp) is _layers.Mlp, type(net).__name__
    # the published layouts the checkpoints use: split q/k/v for Galileo, fused qkv elsewhere
    assert {k for k in nets[0].state_dict() if k.startswith("blocks.0.attn.")} == {
        f"blocks.0.attn.{p}.{w}" for p in ("q", "k", "v", "proj") for w in ("weight", "bias")}
    for net in nets[1:]:
        assert {k for k in net.state_dict() if k.startswith("blocks.0.attn.")} == {
            f"blocks.0.attn.{p}.{w}" for p in ("qkv", "proj") for w in ("weight", "bias")}


def test_split_and_fused_attention_compute_the_same():
    """Galileo's split q/k/v and the fused layout are one computation: copy the weights across."""
    torch.manual_seed(0)
    fused = _layers.Block(32, 4, 4.0).eval()
    split = _layers.Block(32, 4, 4.0, fused_qkv=False).eval()
    sd = dict(fused.state_dict())
    w, b = sd.pop("attn.qkv.weight"), sd.pop("attn.qkv.bias")
    for i, name in enumerate("qkv"):
        sd[f"attn.{name}.weight"], sd[f"attn.{name}.bias"] = w[32 * i: 32 * (i + 1)], b[32 * i: 32 * (i + 1)]
    split.load_state_dict(sd)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(split(x), fused(x), atol=1e-6, rtol=0)
    # a key mask hides tokens: the kept tokens' outputs equal a run without the hidden ones
    keep = torch.tensor([[True, True, True, False, False]] * 2)
    torch.testing.assert_close(fused(x, keep)[:, :3], fused(x[:, :3]), atol=1e-6, rtol=0)


def test_every_family_is_one_adapter_pattern():
    from eoembed.models import galileo, olmoearth, phileo, presto, prithvi, vitmae

    classes = [galileo.GalileoEncoderAdapter, presto.PrestoEncoderAdapter, olmoearth.OlmoEarthEncoder,
               prithvi.PrithviEncoder, vitmae.ViTMAEEncoder, phileo.PhilEOEncoder]
    for cls in classes:
        assert issubclass(cls, _encoder.TorchEncoder), cls
        # the glue (weights, device, freezing, inference context, pooling, attrs) is written once
        for glue in ("load", "encode", "provenance", "tensor"):
            assert glue not in vars(cls), f"{cls.__name__} rewrites {glue}"
        assert "tokens" in vars(cls) and "build_module" in vars(cls), cls
    spec = eoembed.get_model_spec("vitmae-rs-base")
    assert isinstance(vitmae.ViTMAEEncoder(spec, None, "cpu", None), eoembed.encode.Encoder)


def test_pooling_is_the_mean_of_kept_tokens():
    tok = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(1, 1, 1, 2, 3, 2)  # (B, h, w, T=2, G=3, D=2)
    keep = torch.tensor([[True, False, True], [False, False, False]]).reshape(1, 1, 1, 2, 3)
    per_t = _encoder.pool_tokens(tok, keep, pool_time=False)[0, 0, 0]
    np.testing.assert_allclose(per_t[0].numpy(), (tok[0, 0, 0, 0, 0] + tok[0, 0, 0, 0, 2]).numpy() / 2)
    assert torch.isnan(per_t[1]).all()  # nothing kept at t=1
    pooled = _encoder.pool_tokens(tok, keep, pool_time=True)[0, 0, 0]
    np.testing.assert_allclose(pooled.numpy(), per_t[0].numpy())  # t=1 holds no token: not a zero vote
    # one token per patch and timestep: (B, h, w, T, D) with (B, h, w, T)
    one = _encoder.pool_tokens(tok[..., 0, :], keep[..., 0], pool_time=True)[0, 0, 0]
    np.testing.assert_allclose(one.numpy(), tok[0, 0, 0, 0, 0].numpy())


def test_one_wavelength_table():
    # a missing B8A is read from B08, its nearest neighbour in sensors.S2_WAVELENGTHS
    bands = ("B02", "B08", "B8A", "B11")
    x = np.array([[1.0, 2.0, np.nan, 4.0]], dtype="float32")
    np.testing.assert_array_equal(_encoder.fill_nearest_band(x, bands), [[1.0, 2.0, 2.0, 4.0]])
    assert min((b for b in sensors.S2_WAVELENGTHS if b != "B8A"),
               key=lambda b: abs(sensors.S2_WAVELENGTHS[b] - sensors.S2_WAVELENGTHS["B8A"])) == "B08"
    # no other module of eoembed holds a Sentinel-2 wavelength table
    root = Path(eoembed.__file__).parent
    for f in root.rglob("*.py"):
        if f.name == "sensors.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                numeric = all(isinstance(v, ast.Constant) and isinstance(v.value, (int, float)) for v in node.values)
                assert not (len(keys & set(sensors.S2_ALL_BANDS)) >= 6 and numeric), (
                    f"{f.relative_to(root)}:{node.lineno} holds an S2 number table; use eoembed.sensors")


@pytest.mark.parametrize("version", ["v1.1", "v1.2"])
def test_olmoearth_zero_fill_is_silent_without_touching_warning_filters(checkpoints, version, monkeypatch):
    """The package normalizer warns when it zero-fills a missing band; eoembed masks those tokens and says so
    once per call, so the encoder's normalizer stays silent. Done on the instance, not with catch_warnings
    (process-global: it let the note escape from a threaded dask run), so normalize never touches the filters."""
    import warnings

    enc = eoembed.load_model(f"olmoearth-{version}-nano", weights=checkpoints[version], device="cpu")
    order = enc.spec.modalities["sentinel2_l2a"]
    data = np.full((2, 4, 4, 1, len(order)), 1500.0, dtype="float32")
    data[0, 1, 1, 0, :4] = np.nan  # four bands missing at one pixel: past the package's warning threshold

    def touched(*args, **kwargs):
        raise AssertionError("normalize changed the process-wide warning filters")

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "catch_warnings", touched)
        monkeypatch.setattr(warnings, "simplefilter", touched)
        out = enc.normalize("sentinel2_l2a", data)
        monkeypatch.undo()
    assert not [w for w in rec if "set to 0" in str(w.message)]
    assert (out[0, 1, 1, 0, :4] == 0).all() and np.isfinite(out).all()  # the fill itself is the package's
    assert not (out[1] == 0).any()
