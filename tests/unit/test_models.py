"""Registry invariants and the weight search order (user path → cache → Hugging Face)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import eoembed
from eoembed import exceptions as E
from eoembed.models import get_model_spec, list_models
from eoembed.testing import synthetic_cube

OLMO = list_models("olmoearth-*")


def test_the_issue_lists_exactly_these_models():
    assert sorted(OLMO) == sorted(
        [f"olmoearth-v1-{s}" for s in ("nano", "tiny", "base", "large")]
        + [f"olmoearth-v1.1-{s}" for s in ("nano", "tiny", "base")]
        + [f"olmoearth-v1.2-{s}" for s in ("nano", "tiny", "small", "base")]
    )
    assert list_models(pretrained=False) == ["spectral"]


@pytest.mark.parametrize("name", OLMO)
def test_spec_invariants(name):
    s = get_model_spec(name)
    assert s.embedding_dim == {"nano": 128, "tiny": 192, "small": 384, "base": 768, "large": 1024}[s.size]
    assert s.modalities["sentinel2_l2a"][:4] == ("B02", "B03", "B04", "B08") and len(s.modalities["sentinel2_l2a"]) == 12
    assert s.max_timesteps == 12 and s.default_patch_size in s.patch_sizes and max(s.patch_sizes) == 8
    assert s.square_tiles == (s.version in ("v1", "v1.1"))
    assert s.token_groups["sentinel2_l2a"] == (3 if s.version == "v1" else 1)
    assert s.hf_repo.startswith("allenai/OlmoEarth-v1") and len(s.hf_revision) == 40
    int(s.hf_revision, 16)  # a commit sha, not a branch
    assert s.license == "OlmoEarth Artifact License"


@pytest.mark.parametrize("alias,target", [("nano", "olmoearth-v1.1-nano"), ("tiny", "olmoearth-v1.1-tiny"),
                                          ("base", "olmoearth-v1.1-base"), ("TINY", "olmoearth-v1.1-tiny"),
                                          ("olmoearth-v1_2-small", "olmoearth-v1.2-small")])
def test_short_names_mean_v1_1(alias, target):
    assert get_model_spec(alias).name == target


def test_list_models_filter():
    assert list_models("*v1.2*") == [n for n in OLMO if "v1.2" in n]


def test_cache_dir_is_searched(tmp_path, monkeypatch, checkpoints):
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path))
    shutil.copytree(checkpoints["v1.1"], tmp_path / "OlmoEarth-v1_1-Nano")
    emb = eoembed.embed(synthetic_cube(height=16, width=16, times=1), "nano", progress=False)
    assert emb.attrs["eoembed:weights_origin"] == "cache"
    assert emb.attrs["eoembed:weights_revision"] == get_model_spec("nano").hf_revision


def test_hugging_face_download_uses_the_pinned_revision(monkeypatch, checkpoints):
    calls = []

    def fake_download(repo_id, filename, revision):
        calls.append((repo_id, filename, revision))
        return str(Path(checkpoints["v1.2"]) / filename)

    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    enc = eoembed.load_model("olmoearth-v1.2-nano", device="cpu")
    spec = get_model_spec("olmoearth-v1.2-nano")
    assert calls == [("allenai/OlmoEarth-v1_2-Nano", "config.json", spec.hf_revision),
                     ("allenai/OlmoEarth-v1_2-Nano", "weights.pth", spec.hf_revision)]
    assert enc.provenance()["eoembed:weights_origin"] == "huggingface"


def test_download_failure_is_a_clear_error(monkeypatch):
    import huggingface_hub

    def unreachable(**kw):
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(E.WeightsNotFoundError, match="Could not download .* OSError"):
        eoembed.load_model("olmoearth-v1-base")


def test_device_choice(checkpoints):
    enc = eoembed.load_model("nano", weights=checkpoints["v1.1"], device="auto")
    import torch

    assert enc.device == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(E.ParameterError, match="no CUDA"):
            eoembed.load_model("nano", weights=checkpoints["v1.1"], device="cuda")


@pytest.mark.gpu
def test_gpu_matches_cpu(checkpoints):
    cube = synthetic_cube(height=32, width=32, times=2)
    cpu = eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], device="cpu", progress=False)
    gpu = eoembed.embed(cube, "nano", weights=checkpoints["v1.1"], device="cuda", progress=False)
    cos = (cpu * gpu).sum("embedding") / np.sqrt((cpu**2).sum("embedding") * (gpu**2).sum("embedding"))
    assert float(cos.min()) > 0.99  # bf16 autocast on GPU


def test_core_import_does_not_need_torch():
    import subprocess
    import sys

    code = "import sys, eoembed; eoembed.list_models(); assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
