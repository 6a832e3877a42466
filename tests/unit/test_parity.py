"""embed() equals a direct olmoearth-pretrain-minimal encoder call on the same input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from olmoearth_pretrain_minimal import (
    NormalizerV1,
    NormalizerV1_1,
    NormalizerV1_2,
    load_model_from_path,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample

import eoembed
from eoembed.testing import synthetic_cube

MODEL_ORDER = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
NORMALIZERS = {"v1": NormalizerV1, "v1.1": NormalizerV1_1, "v1.2": NormalizerV1_2}


def _direct(ckpt, version, cube, patch_size):
    """The reference: the package's loader, normalizer and encoder, no eoembed code."""
    model = load_model_from_path(ckpt, load_weights=False)
    model.load_state_dict(torch.load(ckpt / "weights.pth", weights_only=True, map_location="cpu"))
    enc = model.encoder.eval()
    x = cube.sel(band=MODEL_ORDER).values.astype("float32")  # (T, C, H, W), DN
    x = x.transpose(2, 3, 0, 1)[None]  # (1, H, W, T, C)
    x = NORMALIZERS[version]().normalize(Modality.SENTINEL2_L2A, x).astype("float32")
    t = cube.time.to_index()
    ts = torch.tensor([[[d.day, d.month - 1, d.year] for d in t]])
    groups = 3 if version == "v1" else 1
    mask = torch.zeros((*x.shape[:4], groups), dtype=torch.long)
    sample = MaskedOlmoEarthSample(timestamps=ts, sentinel2_l2a=torch.from_numpy(x), sentinel2_l2a_mask=mask)
    with torch.no_grad():
        tok = enc(sample, patch_size=patch_size, input_res=10, fast_pass=True)["tokens_and_masks"].sentinel2_l2a
    return tok.mean(dim=(3, 4))[0].numpy().transpose(2, 0, 1)  # (D, h, w)


@pytest.mark.parametrize("version", ["v1", "v1.1", "v1.2"])
def test_embed_matches_direct_encoder_call(checkpoints, version):
    cube = synthetic_cube(height=32, width=32, times=3, seed=3)
    emb = eoembed.embed(cube, f"olmoearth-{version}-nano", weights=checkpoints[version],
                        patch_size=4, tile_size=32, halo=0, progress=False, position="raw")
    ref = _direct(checkpoints[version], version, cube, 4)
    assert emb.shape == ref.shape == (128, 8, 8)
    np.testing.assert_allclose(emb.values, ref, atol=1e-5, rtol=0)
    # the model actually responds to the input (a constant output would also "match")
    assert float(emb.std(("y", "x")).mean()) > 1e-3


def test_weights_are_loaded_not_random(checkpoints, tmp_path):
    """Two checkpoints with different seeds give different embeddings through embed()."""
    from eoembed.testing import make_checkpoint

    other = make_checkpoint(tmp_path / "other", "v1.1", "nano", seed=99)
    cube = synthetic_cube(height=16, width=16, times=1)
    a = eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], progress=False)
    b = eoembed.embed(cube, "nano", weights=other, progress=False)
    assert np.abs(a.values - b.values).max() > 1e-3
    assert a.attrs["eoembed:weights_sha256"] != b.attrs["eoembed:weights_sha256"]
