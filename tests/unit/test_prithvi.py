"""Prithvi-EO: parity with terratorch's Prithvi MAE encoder (the IBM/NASA reference code)
on the same random checkpoint, both published layouts, typed errors, the shared sample."""

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
from eoembed.models.prithvi import V2_MEAN, V2_STD, day_of_year  # noqa: E402
from eoembed.testing import constant_scene, synthetic_cube, window_aligned_origin  # noqa: E402

from _oracles import import_terratorch_prithvi  # noqa: E402

#: Small models in the registered families' layouts (the real files are 0.4–2.5 GB).
TL = dataclasses.replace(get_model_spec("prithvi-eo-2.0-300m-tl"), name="prithvi-test-tl", size="test-tl",
                         embedding_dim=128, depth=2, num_heads=2, params=None, aliases=())
PLAIN = dataclasses.replace(get_model_spec("prithvi-eo-2.0-300m"), name="prithvi-test", size="test",
                            embedding_dim=128, depth=2, num_heads=2, params=None, aliases=())
V1 = dataclasses.replace(get_model_spec("prithvi-eo-1.0-100m"), name="prithvi-test-v1", size="test",
                         embedding_dim=128, depth=2, num_heads=2, params=None, aliases=())
S2 = ["B02", "B03", "B04", "B8A", "B11", "B12"]


def _oracle(frames=4, coords=True, seed=0):
    pm = import_terratorch_prithvi()
    torch.manual_seed(seed)
    m = pm.PrithviViT(img_size=64, patch_size=(1, 16, 16), num_frames=frames, in_chans=6, embed_dim=128, depth=2,
                      num_heads=2, coords_encoding=["time", "location"] if coords else None,
                      coords_scale_learn=coords)
    with torch.no_grad():
        m.cls_token.normal_(0, 0.5)
        m.norm.weight.uniform_(0.5, 1.5)
        if coords:  # make the learned scales matter (upstream initialises them at 0.1)
            m.temporal_embed_enc.scale.fill_(0.7)
            m.location_embed_enc.scale.fill_(1.3)
    return m.eval()


def _save_v2(path, enc):
    """Prithvi-EO-2.0 layout: the MAE's state dict, ``encoder.*`` and ``decoder.*``."""
    sd = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    sd["decoder.decoder_embed.weight"] = torch.zeros(64, 128)
    sd["decoder.mask_token"] = torch.zeros(1, 1, 64)
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def tl_ckpt(tmp_path_factory):
    m = _oracle(frames=4, coords=True)
    return m, _save_v2(tmp_path_factory.mktemp("prithvi") / "Prithvi_test_TL.pt", m)


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory):
    m = _oracle(frames=4, coords=False, seed=1)
    return m, _save_v2(tmp_path_factory.mktemp("prithvi") / "Prithvi_test.pt", m)


def _inputs(b, t, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 6, t, size, size, generator=g)
    temporal = torch.tensor([[[2021.0, 30.0 + 60 * i] for i in range(t)]] * b)
    location = torch.tensor([[5.3, 50.7]] * b)
    return x, temporal, location


@pytest.mark.parametrize("size", [64, 96])
def test_tl_encoder_matches_terratorch(tl_ckpt, size):
    """Same checkpoint and input, temporal + location encodings on: ≤ 1e-5."""
    ref_model, path = tl_ckpt
    net = load_model(TL, weights=path, device="cpu").module
    x, tc, lc = _inputs(2, 4, size)
    with torch.no_grad():
        ref = ref_model.forward_features(x, tc, lc)[-1][:, 1:]
        ours = net(x, None, tc, lc)
        no_coords = net(x, None, None, None)
    assert ours.shape == ref.shape == (2, 4 * (size // 16) ** 2, 128)
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float((ours - no_coords).abs().max()) > 1e-3  # the encodings are really applied


@pytest.mark.parametrize(("frames", "size"), [(4, 64), (2, 64), (3, 96)])
def test_plain_encoder_matches_terratorch_for_other_frames_and_sizes(plain_ckpt, frames, size):
    """Position embeddings recomputed for another frame count and resized for another grid."""
    ref_model, path = plain_ckpt
    net = load_model(PLAIN, weights=path, device="cpu").module
    x, _, _ = _inputs(1, frames, size, seed=frames)
    with torch.no_grad():
        ref = ref_model.forward_features(x)[-1][:, 1:]
        ours = net(x)
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ref.std()) > 0.1


def test_dropped_tokens_match_terratorch_masking(tl_ckpt, monkeypatch):
    """Dropping invisible patch-timesteps = upstream MAE masking keeping exactly those."""
    ref_model, path = tl_ckpt
    net = load_model(TL, weights=path, device="cpu").module
    x, tc, lc = _inputs(2, 4, 64, seed=5)
    keep = torch.ones(2, 64, dtype=torch.bool)
    keep[0, [0, 1, 17, 40, 63]] = False
    keep[1, [5, 6, 7, 8, 9]] = False
    noise = torch.arange(64, dtype=torch.float32)[None].repeat(2, 1) + 1000.0 * (~keep)  # keep in order
    orig = type(ref_model).random_masking
    monkeypatch.setattr(ref_model, "random_masking", lambda seq, ratio, noise_=None: orig(ref_model, seq, ratio, noise))
    with torch.no_grad():
        ref, mask, _ = ref_model(x, tc, lc, mask_ratio=5 / 64)
        ours = net(x, keep, tc, lc)
    assert torch.equal(mask.bool(), ~keep)
    got = torch.stack([ours[i][keep[i]] for i in range(2)])
    assert float((got - ref[:, 1:]).abs().max()) <= 1e-5
    assert float(ours[~keep].abs().max()) == 0.0


def test_embed_matches_direct_terratorch_call(tl_ckpt):
    """embed() of one tile = HLS bands from S2 → v2 mean/std → upstream encoder with the
    cube's dates and centre lon/lat → mean over time."""
    ref_model, path = tl_ckpt
    # origin on the CRS-anchored 64-px window grid: the cube is exactly one window
    cube = synthetic_cube(height=64, width=64, times=4, seed=7, start="2021-02-01", origin=(599040.0, 5600000.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 10 m pixels vs HLS 30 m
        emb = eoembed.embed(cube, TL, weights=path, device="cpu", tile_size=64, halo=0, harmonize=False,
                            progress=False, position="raw")
    x = (cube.sel(band=S2).values.astype("float32") - V2_MEAN[None, :, None, None]) / V2_STD[None, :, None, None]
    x = torch.as_tensor(x.transpose(1, 0, 2, 3)[None], dtype=torch.float32)  # (1, C, T, H, W)
    t = cube.time.to_index()
    tc = torch.tensor([[[float(d.year), float(d.dayofyear)] for d in t]])
    from pyproj import Transformer

    cx, cy = float(cube.x.mean()), float(cube.y.mean())
    lon, lat = Transformer.from_crs(cube.rio.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    with torch.no_grad():
        tok = ref_model.forward_features(x, tc, torch.tensor([[lon, lat]]))[-1][0, 1:]
    ref = tok.reshape(4, 4, 4, 128).mean(0).numpy().transpose(2, 0, 1)
    assert emb.shape == (128, 4, 4)
    np.testing.assert_allclose(emb.values, ref, atol=1e-5, rtol=0)
    assert emb.attrs["eoembed:coords_encoding"].startswith("time")


def test_v1_flat_layout_loads(tmp_path):
    """Prithvi-EO-1.0's file is the flat MAE state dict (encoder keys at top level)."""
    m = _oracle(frames=3, coords=False, seed=3)
    sd = dict(m.state_dict())
    sd["decoder_embed.weight"], sd["mask_token"] = torch.zeros(64, 128), torch.zeros(1, 1, 64)
    sd["decoder_pos_embed"] = torch.zeros(1, 49, 64)
    torch.save(sd, tmp_path / "Prithvi_EO_V1_100M.pt")
    enc = load_model(V1, weights=tmp_path / "Prithvi_EO_V1_100M.pt", device="cpu")
    x, _, _ = _inputs(1, 3, 64)
    with torch.no_grad():
        assert float((enc.module(x) - m.forward_features(x)[-1][:, 1:]).abs().max()) <= 1e-5
    assert enc.mean[0] == 775.0  # v1 normalization


def test_embed_shared_sample(sample_cube, tl_ckpt):
    """The sample has no B8A: map B08 (842 nm) to the HLS narrow NIR explicitly."""
    _, path = tl_ckpt
    cube = sample_cube.isel(time=slice(0, 4))
    # the shared sample's origin is 4 px off the 16-px global grid: embed() says so, and snaps to the cube
    with pytest.warns(UserWarning, match="trained at 30 m"), pytest.warns(GridAlignmentWarning, match="off the global"):
        emb = cube.eo.embed(model=TL, weights=path, device="cpu", bands={"B08": "B8A"}, progress=False)
    assert emb.shape == (128, 7, 7) and np.isfinite(emb.values).all()
    assert emb.attrs["eoembed:weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert emb.attrs["eoembed:license"] == "Apache-2.0"
    assert emb.attrs["eoembed:bands"] == S2
    with pytest.warns(UserWarning, match="trained at 30 m"), pytest.warns(GridAlignmentWarning, match="off the global"):
        per_t = cube.eo.embed(model=TL, weights=path, device="cpu", bands={"B08": "B8A"}, pool_time=False,
                              progress=False)
    assert per_t.dims == ("time", "embedding", "y", "x") and per_t.shape[0] == 4


def test_absent_band_becomes_the_band_mean(tl_ckpt):
    """Prithvi reads no band near B8A, so an absent B8A is set to its mean (0 after
    normalization); mapping B08 → B8A (as above) is the better choice and differs."""
    _, path = tl_ckpt
    enc = load_model(TL, weights=path, device="cpu")
    x = np.full((2, 2, 1, 6), 1500.0, dtype="float32")
    x[..., 3] = np.nan
    out = enc.normalize("sentinel2_l2a", x)
    assert (out[..., 3] == 0).all() and np.isfinite(out).all()
    cube = synthetic_cube(height=32, width=32, times=2, seed=1).drop_sel(band="B8A")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mapped = eoembed.embed(cube, TL, weights=path, device="cpu", bands={"B08": "B8A"}, progress=False)
        absent = eoembed.embed(cube, TL, weights=path, device="cpu", progress=False)
    assert np.isfinite(absent.values).all()
    assert absent.attrs["eoembed:bands_filled"] == ["B8A"] and mapped.attrs["eoembed:bands_filled"] == []
    assert float(np.abs(absent.values - mapped.values).max()) > 1e-3


def test_too_many_timesteps_for_the_model(tl_ckpt):
    _, path = tl_ckpt
    cube = synthetic_cube(height=32, width=32, times=5)
    with pytest.raises(eoembed.exceptions.TooManyTimestepsError, match="at most 4"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 10 m pixels vs HLS 30 m
        eoembed.embed(cube, TL, weights=path, device="cpu", progress=False)


def test_day_of_year():
    ts = np.array([[1, 0, 2021], [31, 11, 2020], [1, 2, 2024]])  # (day, month 0-11, year)
    np.testing.assert_array_equal(day_of_year(ts), [[2021, 1], [2020, 366], [2024, 61]])


def test_partial_checkpoint_names_missing_keys(tmp_path, tl_ckpt):
    ref_model, _ = tl_ckpt
    sd = {f"encoder.{k}": v for k, v in ref_model.state_dict().items() if "location_embed_enc" not in k}
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CorruptWeightsError, match=r"missing keys: location_embed_enc\.scale"):
        load_model(TL, weights=tmp_path / "partial.pt", device="cpu")


def test_plain_model_ignores_time_location_encoders(tl_ckpt):
    """Like the reference loader, a model without coordinate encodings skips their weights."""
    _, path = tl_ckpt
    x, _, _ = _inputs(1, 4, 64)
    with torch.no_grad():
        plain = load_model(PLAIN, weights=path, device="cpu").module(x)
        tl_without = load_model(TL, weights=path, device="cpu").module(x)
    assert torch.equal(plain, tl_without)


def test_unexpected_keys_are_named(tmp_path, tl_ckpt):
    ref_model, _ = tl_ckpt
    sd = {f"encoder.{k}": v for k, v in ref_model.state_dict().items()}
    sd["encoder.blocks.0.attn.q_norm.weight"] = torch.ones(64)
    torch.save(sd, tmp_path / "extra.pt")
    with pytest.raises(CorruptWeightsError, match=r"unexpected keys: blocks\.0\.attn\.q_norm\.weight"):
        load_model(TL, weights=tmp_path / "extra.pt", device="cpu")


def test_wrong_version_checkpoint(tmp_path, plain_ckpt):
    """A 4-frame v2 file given for a 3-frame v1 model is refused, naming the reason."""
    _, path = plain_ckpt
    with pytest.raises(CorruptWeightsError, match="not a multiple of .* 3 frames"):
        load_model(V1, weights=path, device="cpu")
    with pytest.raises(CorruptWeightsError, match=r"wrong shapes: .*expected \(1024"):
        load_model("prithvi-eo-2.0-300m", weights=path, device="cpu")


def test_no_weights_names_the_published_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="Prithvi_EO_V2_600M_TL.pt"):
        load_model("prithvi-eo-2.0-600m-tl", device="cpu")
    with pytest.raises(WeightsNotFoundError, match="Prithvi_EO_V1_100M.pt"):
        load_model("prithvi-eo-1.0-100m", weights=tmp_path, device="cpu")


def test_registry_and_cost():
    names = eoembed.list_models("prithvi*")
    assert names == ["prithvi-eo-1.0-100m", "prithvi-eo-2.0-300m", "prithvi-eo-2.0-300m-tl",
                     "prithvi-eo-2.0-600m", "prithvi-eo-2.0-600m-tl"]
    assert get_model_spec("prithvi-eo-2.0-600m").patch_sizes == (14,)
    cube = synthetic_cube(height=224, width=224, times=4, origin=window_aligned_origin(224))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cost = eoembed.embed_cost(cube, "prithvi-eo-2.0-300m", tile_size=224, halo=0)
    assert cost["tokens_per_tile"] == 14 * 14 * 4
    # ViT-L, 784 tokens, 24 blocks: 24·(12·784·1024² + 2·784²·1024) ≈ 267 GMACs
    assert 250 < cost["gmacs"] < 290


def test_hugging_face_download_asks_for_the_published_file(monkeypatch, tl_ckpt):
    import huggingface_hub

    _, path = tl_ckpt
    calls = []

    def fake_download(repo_id, filename, revision, local_files_only=False):
        calls.append((repo_id, revision, filename))
        return str(path)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(CorruptWeightsError, match="does not fit prithvi-eo-2.0-300m-tl"):  # the small test file
        load_model("prithvi-eo-2.0-300m-tl", device="cpu")
    assert calls == [("ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL", "main", "Prithvi_EO_V2_300M_TL.pt")]


def test_cloudy_tiles_do_not_depend_on_their_batch(tl_ckpt):
    """Tiles with different missing patches share batches (equal visible-token counts)
    without changing each other's result."""
    _, path = tl_ckpt
    cube = synthetic_cube(height=192, width=192, times=3, seed=8)
    rng = np.random.default_rng(0)
    vals = cube.values
    for _ in range(12):  # 16-px cloud squares on random timesteps
        t, i, j = rng.integers(0, 3), rng.integers(0, 6), rng.integers(0, 6)
        vals[t, :, i * 16:(i + 1) * 16, j * 16:(j + 1) * 16] = np.nan
    cube = cube.copy(data=vals)
    kw = dict(weights=path, device="cpu", harmonize=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        one = eoembed.embed(cube, TL, batch_size=1, **kw)
        many = eoembed.embed(cube, TL, batch_size=16, **kw)
    np.testing.assert_allclose(one.values, many.values, atol=1e-5, rtol=0)
    assert np.isfinite(one.values).all()


def _terratorch_prithvi_tables():
    """Constants and configs of terratorch's prithvi_vit.py, read with ast (importing it
    needs terratorch's datasets and lightning)."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("terratorch")
    if spec is None:
        pytest.skip("terratorch is not installed: pip install --no-deps terratorch==1.2.13")
    tree = ast.parse((Path(list(spec.submodule_search_locations)[0]) / "models/backbones/prithvi_vit.py").read_text())
    consts, cfgs, files = {}, {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("PRITHVI_V"):
                consts[name] = ast.literal_eval(node.value)
            elif name == "prithvi_cfgs":
                for k, call in zip(node.value.keys, node.value.values):  # _cfg(...) calls; names stay names
                    cfgs[k.value] = {kw.arg: kw.value.id if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value)
                                     for kw in call.keywords}
            elif name == "pretrained_weights":
                files = ast.literal_eval(node.value)
    return consts, cfgs, files


@pytest.mark.parametrize(("name", "variant"), [
    ("prithvi-eo-1.0-100m", "prithvi_eo_v1_100"), ("prithvi-eo-2.0-300m", "prithvi_eo_v2_300"),
    ("prithvi-eo-2.0-300m-tl", "prithvi_eo_v2_300_tl"), ("prithvi-eo-2.0-600m", "prithvi_eo_v2_600"),
    ("prithvi-eo-2.0-600m-tl", "prithvi_eo_v2_600_tl")])
def test_registry_matches_terratorch_published_configs(name, variant):
    """Repo, file, dims, depth, heads, patch, frames, coordinate encodings, mean/std."""
    from eoembed.models import prithvi as P

    consts, cfgs, files = _terratorch_prithvi_tables()
    defaults = {"embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": [1, 16, 16], "num_frames": 4,
                "coords_encoding": [], "mean": "PRITHVI_V2_MEAN"}
    cfg = {**defaults, **cfgs[variant]}  # _cfg's defaults, then the variant's
    spec = get_model_spec(name)
    arch = P._arch(spec)
    assert (spec.embedding_dim, spec.depth, arch["heads"]) == (cfg["embed_dim"], cfg["depth"], cfg["num_heads"])
    assert [1, arch["patch"], arch["patch"]] == list(cfg["patch_size"]) and spec.patch_sizes == (arch["patch"],)
    assert arch["frames"] == cfg["num_frames"] == spec.max_timesteps
    assert arch["coords"] == (cfg["coords_encoding"] == ["time", "location"])
    assert (spec.hf_repo, P._MODELS[name][10]) == (files[variant]["hf_hub_id"], files[variant]["hf_hub_filename"])
    mean = consts[cfg["mean"]]
    enc_mean = P.V1_MEAN if spec.version == "1.0" else P.V2_MEAN
    np.testing.assert_array_equal(enc_mean, mean)
    np.testing.assert_array_equal(P.V1_STD if spec.version == "1.0" else P.V2_STD,
                                  consts[cfg["mean"].replace("MEAN", "STD")])




def test_neutral_positions_make_a_constant_scene_constant(tl_ckpt):
    """Same pixels everywhere: with neutral positions every patch whose windows lie inside the cube gets one
    vector (edge windows hold fewer tokens beside the CLS token, so they differ); raw positions differ."""
    _, path = tl_ckpt
    cube = constant_scene(synthetic_cube(height=192, width=192, times=2, seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kw = dict(weights=path, device="cpu", tile_size=64, halo=16, blend=True, progress=False)
        neutral = eoembed.embed(cube, TL, **kw).values
        raw = eoembed.embed(cube, TL, position="raw", **kw).values
    inner = (slice(None), slice(3, 9), slice(3, 9))  # 12 x 12 patches; windows of 4 patches fully inside
    spread = lambda v: float(np.abs(v[inner] - v[:, 3:4, 3:4]).max())  # noqa: E731
    assert spread(neutral) < 1e-4
    assert spread(raw) > 1e-2
