"""Plain RS ViT-MAE: parity with timm's VisionTransformer on the same checkpoint, the
published checkpoint layouts, typed load errors, and embedding the shared sample."""

from __future__ import annotations

import dataclasses
import hashlib

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eoembed  # noqa: E402
from eoembed.exceptions import CorruptWeightsError, WeightsNotFoundError  # noqa: E402
from eoembed.grid import GridAlignmentWarning  # noqa: E402
from eoembed.models import get_model_spec, load_model  # noqa: E402
from eoembed.testing import constant_scene, synthetic_cube, window_aligned_origin  # noqa: E402

from _oracles import import_timm  # noqa: E402

#: A small ViT in the registered family's layout (ViT-B/L checkpoints are 350 MB–1.2 GB).
TINY = dataclasses.replace(get_model_spec("vitmae-rs-base"), name="vitmae-rs-test", size="test",
                           embedding_dim=128, depth=2, num_heads=2, params=None, aliases=())


def _timm_vit(img_size=96, seed=0, dim=128, depth=2):
    vt = import_timm()
    torch.manual_seed(seed)
    m = vt.VisionTransformer(img_size=img_size, patch_size=16, in_chans=3, embed_dim=dim, depth=depth,
                             num_heads=dim // 64, num_classes=0, global_pool="", dynamic_img_size=True)
    with torch.no_grad():  # timm initialises pos_embed/cls small: make them matter
        m.pos_embed.normal_(0, 0.5)
        m.cls_token.normal_(0, 0.5)
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.normal_(0, 0.1)
    return m.eval()


def _mae_checkpoint(path, model):
    """MAE pretraining layout: {"model": encoder + decoder state dict}."""
    sd = dict(model.state_dict())
    dim = model.embed_dim
    sd["mask_token"] = torch.zeros(1, 1, 64)
    sd["decoder_embed.weight"] = torch.zeros(64, dim)
    sd["decoder_pos_embed"] = torch.zeros(1, sd["pos_embed"].shape[1], 64)
    torch.save({"model": sd, "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory):
    model = _timm_vit()
    return model, _mae_checkpoint(tmp_path_factory.mktemp("vitmae") / "mae_pretrain_vit_test.pth", model)


@pytest.mark.parametrize("size", [96, 64, 128])
def test_patch_tokens_match_timm_forward_features(vit_ckpt, size):
    """Same checkpoint, same input: tokens equal timm's (pos-embed resampled for 64/128 px)."""
    model, path = vit_ckpt
    enc = load_model(TINY, weights=path, device="cpu")
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        ref = model.forward_features(x)[:, 1:]
        ours = enc.patch_tokens(x)
    assert ours.shape == ref.shape == (2, (size // 16) ** 2, 128)
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ref.std()) > 0.1  # a real, non-constant output


def test_dropped_tokens_match_timm_with_attention_mask(vit_ckpt):
    """Dropping invisible patches equals timm attending only to visible ones."""
    model, path = vit_ckpt
    enc = load_model(TINY, weights=path, device="cpu")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[0, [0, 5, 6]] = False
    keep[1, [3, 9, 15]] = False
    attn = torch.cat([torch.ones(2, 1, dtype=torch.bool), keep], dim=1)[:, None, None, :]
    with torch.no_grad():
        ref = model.forward_features(x, attn_mask=attn)[:, 1:]
        ours = enc.patch_tokens(x, keep)
    assert float((ours[keep] - ref[keep]).abs().max()) <= 1e-5
    assert float(ours[~keep].abs().max()) == 0.0
    with torch.no_grad():  # and dropping does change the visible tokens
        full = enc.patch_tokens(x)
    assert float((full[keep] - ours[keep]).abs().max()) > 1e-4


def test_embed_matches_direct_timm_call(vit_ckpt):
    """embed() on one 64-px tile = DN → true colour → ImageNet norm → timm, CLS dropped."""
    model, path = vit_ckpt
    cube = synthetic_cube(height=64, width=64, times=1, seed=4, origin=(599040.0, 5600000.0))  # one 64-px window
    emb = eoembed.embed(cube, TINY, weights=path, device="cpu", tile_size=64, halo=0, progress=False, position="raw")
    rgb = cube.sel(band=["B04", "B03", "B02"]).values[0].astype("float32")  # (3, H, W) DN
    x = np.clip(rgb / 3000.0, 0, 1)
    x = (x - np.array([0.485, 0.456, 0.406])[:, None, None]) / np.array([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        ref = model.forward_features(torch.as_tensor(x[None], dtype=torch.float32))[0, 1:]
    ref = ref.numpy().reshape(4, 4, 128).transpose(2, 0, 1)
    assert emb.shape == (128, 4, 4)
    np.testing.assert_allclose(emb.values, ref, atol=1e-5, rtol=0)


def test_torchgeo_style_bare_state_dict_loads(tmp_path, vit_ckpt):
    """A bare timm state dict with a classifier head (TorchGeo/timm layout) gives the same tokens."""
    model, mae_path = vit_ckpt
    sd = dict(model.state_dict())
    sd["head.weight"], sd["head.bias"] = torch.zeros(10, 128), torch.zeros(10)
    path = tmp_path / "vit_torchgeo.pth"
    torch.save(sd, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = load_model(TINY, weights=path, device="cpu").patch_tokens(x)
        b = load_model(TINY, weights=mae_path, device="cpu").patch_tokens(x)
    assert torch.equal(a, b)


def test_embed_shared_sample_through_accessor(sample_cube, vit_ckpt):
    _, path = vit_ckpt
    # the shared sample's origin is 4 px off the 16-px global grid: embed() says so, and snaps to the cube
    with pytest.warns(GridAlignmentWarning, match="off the global 16-px patch grid"):
        emb = sample_cube.isel(time=slice(0, 3)).eo.embed(model=TINY, weights=path, device="cpu", progress=False)
    assert emb.dims == ("embedding", "y", "x") and emb.shape == (128, 7, 7)
    assert np.isfinite(emb.values).all()
    assert emb.attrs["eoembed:model"] == "vitmae-rs-test"
    assert emb.attrs["eoembed:weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "unconfirmed" in emb.attrs["eoembed:license"]
    assert emb.attrs["eoembed:bands"] == ["B04", "B03", "B02"]
    assert emb.rio.crs == sample_cube.rio.crs
    with pytest.warns(GridAlignmentWarning, match="off the global 16-px patch grid"):
        per_t = sample_cube.isel(time=slice(0, 3)).eo.embed(model=TINY, weights=path, device="cpu",
                                                           pool_time=False, progress=False)
    assert per_t.shape == (3, 128, 7, 7)
    np.testing.assert_allclose(per_t.mean("time").values, emb.values, atol=1e-5)


def test_missing_timestep_is_left_out_of_the_pool(vit_ckpt):
    _, path = vit_ckpt
    cube = synthetic_cube(height=32, width=32, times=2, seed=2)
    full = eoembed.embed(cube, TINY, weights=path, device="cpu", pool_time=False, tile_size=32, halo=0,
                         progress=False)
    cube[1] = np.nan
    pooled = eoembed.embed(cube, TINY, weights=path, device="cpu", tile_size=32, halo=0, progress=False)
    np.testing.assert_allclose(pooled.values, full.isel(time=0).values, atol=1e-5)


def test_partial_checkpoint_names_missing_keys(tmp_path, vit_ckpt):
    model, _ = vit_ckpt
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.1.mlp")}
    torch.save({"model": sd}, tmp_path / "partial.pth")
    with pytest.raises(CorruptWeightsError, match=r"missing keys: blocks\.1\.mlp\.fc1\.bias"):
        load_model(TINY, weights=tmp_path / "partial.pth", device="cpu")


def test_unexpected_keys_are_named(tmp_path, vit_ckpt):
    model, _ = vit_ckpt
    sd = dict(model.state_dict())
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(64)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(CorruptWeightsError, match=r"unexpected keys: blocks\.0\.attn\.q_norm\.weight"):
        load_model(TINY, weights=tmp_path / "extra.pth", device="cpu")


def test_wrong_size_checkpoint_names_shapes(vit_ckpt):
    """The small test checkpoint is not a ViT-B: the error says which shapes differ."""
    _, path = vit_ckpt
    with pytest.raises(CorruptWeightsError, match=r"wrong shapes: .*\(expected \(768"):
        load_model("vitmae-rs-base", weights=path, device="cpu")


def test_not_a_vit_checkpoint(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "cnn.pth")
    with pytest.raises(CorruptWeightsError, match="no 'pos_embed'"):
        load_model(TINY, weights=tmp_path / "cnn.pth", device="cpu")


def test_no_weights_says_what_to_pass(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="weights="):
        load_model("vitmae-rs-large", device="cpu")
    with pytest.raises(WeightsNotFoundError, match="mae_pretrain_vit_large.pth"):
        load_model("vitmae-rs-large", weights=tmp_path, device="cpu")


def test_registry_and_cost():
    assert {"vitmae-rs-base", "vitmae-rs-large"} <= set(eoembed.list_models("vitmae*"))
    cube = synthetic_cube(height=224, width=224, times=2, origin=window_aligned_origin(224))
    cost = eoembed.embed_cost(cube, "vitmae-rs-base", tile_size=224, halo=0)
    assert cost["tokens_per_tile"] == 14 * 14 * 2
    # ViT-B/16 at 224 px: 17.6 GMACs per image (timm's model card, patch embedding included)
    assert cost["gmacs"] == pytest.approx(2 * 17.5, rel=0.03)
    one = eoembed.embed_cost(synthetic_cube(height=224, width=224, times=1, origin=window_aligned_origin(224)),
                             "vitmae-rs-base", tile_size=224, halo=0)
    assert cost["gmacs"] == pytest.approx(2 * one["gmacs"])  # timesteps are separate images


def test_training_checkpoint_with_pickled_args_is_refused(tmp_path, vit_ckpt):
    """MAE *training* checkpoints also pickle an argparse.Namespace: weights_only refuses it."""
    import argparse

    from eoembed.exceptions import UnsafeWeightsError

    model, _ = vit_ckpt
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "checkpoint-799.pth")
    with pytest.raises(UnsafeWeightsError, match="re-save|Re-save"):
        load_model(TINY, weights=tmp_path / "checkpoint-799.pth", device="cpu")


def test_cloudy_tiles_do_not_depend_on_their_batch(vit_ckpt):
    _, path = vit_ckpt
    cube = synthetic_cube(height=192, width=192, times=2, seed=8)
    vals = cube.values
    rng = np.random.default_rng(1)
    for _ in range(10):
        t, i, j = rng.integers(0, 2), rng.integers(0, 6), rng.integers(0, 6)
        vals[t, :, i * 16:(i + 1) * 16, j * 16:(j + 1) * 16] = np.nan
    cube = cube.copy(data=vals)
    one = eoembed.embed(cube, TINY, weights=path, device="cpu", batch_size=1, progress=False)
    many = eoembed.embed(cube, TINY, weights=path, device="cpu", batch_size=16, progress=False)
    np.testing.assert_allclose(one.values, many.values, atol=1e-5, rtol=0)


def test_unequal_visible_counts_in_one_batch_are_refused():
    from eoembed.models._vit import gather_visible, scatter_back

    x = torch.randn(2, 4, 3)
    keep = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    tok, order = gather_visible(x, keep)
    assert torch.equal(tok[0], x[0, [0, 1, 3]]) and torch.equal(tok[1], x[1, [1, 2, 3]])
    assert torch.equal(scatter_back(tok, order, 4), x * keep[..., None])
    with pytest.raises(ValueError, match=r"mixes tiles with \[2, 3\] visible tokens"):
        gather_visible(x, torch.tensor([[1, 1, 0, 1], [0, 1, 0, 1]], dtype=torch.bool))



def test_neutral_positions_make_a_constant_scene_constant(vit_ckpt):
    """Same pixels everywhere: with neutral positions every patch whose windows lie inside the cube gets one
    vector (edge windows hold fewer tokens beside the CLS token, so they differ); raw positions differ."""
    _, path = vit_ckpt
    cube = constant_scene(synthetic_cube(height=192, width=192, times=1, seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kw = dict(weights=path, device="cpu", tile_size=64, halo=16, blend=True, progress=False)
        neutral = eoembed.embed(cube, TINY, **kw).values
        raw = eoembed.embed(cube, TINY, position="raw", **kw).values
    inner = (slice(None), slice(3, 9), slice(3, 9))  # 12 x 12 patches; windows of 4 patches fully inside
    spread = lambda v: float(np.abs(v[inner] - v[:, 3:4, 3:4]).max())  # noqa: E731
    assert spread(neutral) < 1e-4
    assert spread(raw) > 1e-2
