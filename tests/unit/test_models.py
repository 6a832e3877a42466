"""Registry invariants (every entry: spec, cost, pins, licence) and the weight search order
(user path → cache → Hugging Face)."""

from __future__ import annotations

import importlib
import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import eoembed
from eoembed import exceptions as E
from eoembed.grid import GridAlignmentWarning
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


def _with_hashes_of(spec, folder):
    """``spec`` publishing the hashes of the (random-weight) files in ``folder``."""
    from dataclasses import replace

    from eoembed.models.registry import WeightFile
    from eoembed.models.weights import sha256_file

    return replace(spec, weights=replace(spec.weights, files=tuple(
        WeightFile(f.name, f.role, sha256_file(Path(folder) / f.name), f.url, f.required) for f in spec.weight_files)))


def test_cache_dir_is_searched_and_verified(tmp_path, monkeypatch, checkpoints):
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path))
    shutil.copytree(checkpoints["v1.1"], tmp_path / "OlmoEarth-v1_1-Nano")
    spec = _with_hashes_of(get_model_spec("nano"), checkpoints["v1.1"])
    emb = eoembed.embed(synthetic_cube(height=16, width=16, times=1), spec, progress=False)
    assert emb.attrs["eoembed:weights_origin"] == "cache"
    assert emb.attrs["eoembed:weights_revision"] == spec.hf_revision
    assert emb.attrs["eoembed:weights_verified"] == 1
    assert emb.attrs["eoembed:weights_sha256"] == spec.weight_files[1].sha256


def test_cache_hit_with_the_wrong_hash_is_refused(tmp_path, monkeypatch, checkpoints):
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path))
    shutil.copytree(checkpoints["v1.1"], tmp_path / "OlmoEarth-v1_1-Nano")
    spec = get_model_spec("nano")
    published = spec.weight_files[0].sha256  # config.json, checked first
    from eoembed.models.weights import sha256_file

    got = sha256_file(tmp_path / "OlmoEarth-v1_1-Nano" / "config.json")
    with pytest.raises(E.WeightsHashMismatchError) as err:
        eoembed.load_model("nano", device="cpu")
    assert published in str(err.value) and got in str(err.value) and "Delete" in str(err.value)


def test_user_weights_with_unknown_hash_are_stamped_not_refused(checkpoints):
    from eoembed.models.weights import sha256_file

    enc = eoembed.load_model("nano", weights=checkpoints["v1.1"], device="cpu")
    prov = enc.provenance()
    assert prov["eoembed:weights_verified"] == 0
    assert prov["eoembed:weights_revision"].startswith("local:")
    assert prov["eoembed:weights_sha256"] == sha256_file(Path(checkpoints["v1.1"]) / "weights.pth")


def test_olmoearth_specs_publish_torchgeo_hashes():
    for name in OLMO:
        files = {f.name: f.sha256 for f in get_model_spec(name).weight_files}
        assert set(files) == {"config.json", "weights.pth"}
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in files.values())


def test_hugging_face_download_uses_the_pinned_revision_and_its_cache(monkeypatch, checkpoints):
    calls = []

    def fake_download(repo_id, filename, revision, local_files_only):
        calls.append((repo_id, filename, revision, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not in the Hugging Face cache")
        return str(Path(checkpoints["v1.2"]) / filename)

    import huggingface_hub

    from eoembed.models import weights as W

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(W, "_reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    spec = _with_hashes_of(get_model_spec("olmoearth-v1.2-nano"), checkpoints["v1.2"])
    enc = eoembed.load_model(spec, device="cpu")
    repo, rev = "allenai/OlmoEarth-v1_2-Nano", spec.hf_revision
    assert calls == [(repo, "config.json", rev, True), (repo, "weights.pth", rev, True),  # HF cache first
                     (repo, "config.json", rev, False), (repo, "weights.pth", rev, False)]
    assert enc.provenance()["eoembed:weights_origin"] == "huggingface"
    assert enc.provenance()["eoembed:weights_verified"] == 1


def test_hugging_face_download_with_the_wrong_hash_is_refused(monkeypatch, checkpoints):
    import huggingface_hub

    from eoembed.models import weights as W

    def fake_download(repo_id, filename, revision, local_files_only):
        return str(Path(checkpoints["v1.2"]) / filename)  # random weights, not the published ones

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(E.WeightsHashMismatchError, match="published config.json .* has SHA-256"):
        W.resolve_weights(get_model_spec("olmoearth-v1.2-nano"))


def test_download_failure_is_a_clear_error(monkeypatch):
    import huggingface_hub

    from eoembed.models import weights as W

    def unreachable(**kw):
        if kw.get("local_files_only"):
            raise FileNotFoundError("not cached")
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(W, "_reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(E.WeightsNotFoundError, match="Could not download .* OSError"):
        eoembed.load_model("olmoearth-v1-base")


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    """No network: one short attempt, then the typed error (no ~30 s of retries)."""
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path / "w"))
    t0 = time.perf_counter()
    with pytest.raises(E.NetworkUnavailableError, match=f"Cannot reach http://127.0.0.1:{port}"):
        eoembed.load_model("olmoearth-v1.1-tiny", device="cpu")
    assert time.perf_counter() - t0 < 5


def test_hf_hub_offline_skips_the_attempt(monkeypatch, tmp_path):
    from eoembed.models import weights as W

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(W, "_reachable", lambda *a, **k: pytest.fail("must not touch the network"))
    with pytest.raises(E.WeightsNotFoundError, match="downloads are disabled"):
        W.resolve_weights(get_model_spec("tiny"))


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


def test_one_device_resolver_for_every_family(tmp_path):
    import torch

    from eoembed.models import _torchcommon

    rd = _torchcommon.resolve_device
    # every torch family loads through the one adapter base, which resolves the device first
    for name in ("galileo-nano", "presto", "olmoearth-v1.1-nano", "prithvi-eo-1.0-100m", "vitmae-rs-base",
                 "phileo-geoaware-nano"):
        with pytest.raises(E.ParameterError, match="device must be 'auto', 'cpu'"):
            eoembed.load_model(name, weights=tmp_path, device="tpu")
    assert rd(None) == rd("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert rd("cpu") == "cpu"
    with pytest.raises(E.ParameterError, match="device must be 'auto', 'cpu'"):
        rd("tpu")
    if not torch.cuda.is_available():
        for dev in ("cuda", "cuda:1"):
            with pytest.raises(E.ParameterError, match="no CUDA device; use device='cpu'"):
                rd(dev)


# --- every registry entry (torchgeo-style: parametrised over the registry) -------------------
ALL = list_models()
HEX40, HEX64 = re.compile(r"[0-9a-f]{40}"), re.compile(r"[0-9a-f]{64}")


@pytest.mark.parametrize("name", ALL)
def test_registry_entry_is_a_self_sufficient_spec(name):
    from eoembed.models import registry, spec_token

    s = get_model_spec(name)
    assert s.name == name == name.lower() and all(get_model_spec(a) is s for a in s.aliases)
    # the loader travels with the spec and is importable by name (what a dask worker unpickles)
    assert callable(s.loader) and registry.get_loader(s) is s.loader
    assert getattr(importlib.import_module(s.loader.__module__), s.loader.__qualname__) is s.loader
    back = pickle.loads(pickle.dumps(s))
    assert back == s and spec_token(back) == spec_token(s)  # a worker's cache key is the client's
    assert s.default_patch_size in s.patch_sizes and s.max_timesteps >= 1
    assert set(s.required_modalities) <= set(s.modalities) == set(s.token_groups)
    for bands in s.modalities.values():
        assert len(set(bands)) == len(bands) > 0
    if s.embedding_dim is None:
        assert not s.needs_weights  # only a weight-free baseline has an input-dependent size
    else:
        assert s.embedding_dim > 0 and (s.num_heads is None or s.embedding_dim % s.num_heads == 0)


@pytest.mark.parametrize("name", ALL)
def test_registry_entry_cost_function(name):
    s = get_model_spec(name)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        one, two = (eoembed.embed_cost(synthetic_cube(height=112, width=112, times=t), name) for t in (1, 2))
    # a generic 10-m cube at the origin of synthetic_cube: the only notes are the grid alignment (patch sizes that do
    # not divide its origin) and a model trained at another resolution; nothing else
    notes = [str(w.message) for w in rec if isinstance(w.message, UserWarning)
             and not (isinstance(w.message, GridAlignmentWarning) or "was trained at" in str(w.message))]
    assert not notes, notes
    assert one["model"] == name and one["tiles"] >= 1 and one["patches"] > 0 and two["tokens"] > one["tokens"]
    if not s.needs_weights:
        assert one["gmacs"] == two["gmacs"] == 0
        return
    assert 0 < one["gmacs"] < two["gmacs"] < np.inf  # a second timestep costs more
    if s.macs_per_pixel:  # a CNN: the per-pixel figure, no transformer layers
        assert s.depth == 0 and s.macs_per_pixel > 0
    else:  # the transformer estimate reads depth and width: they must match the parameter count
        assert 0.9 < s.params / (12 * s.depth * s.embedding_dim**2) < 2.5, (s.params, s.depth, s.embedding_dim)


@pytest.mark.parametrize("name", ALL)
def test_registry_entry_pins_and_licence(name):
    from eoembed.models.registry import NO_WEIGHTS_LICENSE

    s = get_model_spec(name)
    w = s.weights
    if w is None:
        assert not s.needs_weights and s.license == NO_WEIGHTS_LICENSE and s.weights_source == "none"
        return
    assert s.license == w.license and w.license.strip()
    names = [f.name for f in w.files]
    assert len(set(names)) == len(names) and [f.role for f in w.files].count("weights") == 1
    for f in w.files:
        assert f.role in ("weights", "config", "normalization")
        assert f.sha256 is None or HEX64.fullmatch(f.sha256), f
        if f.url is not None:  # a pinned URL: https at the pinned commit
            assert w.pinned and f.url.startswith("https://") and w.revision in f.url, f
    if w.repo is None:  # bring-your-own weights: nothing is downloaded, so nothing to pin
        assert w.revision is None and all(f.url is None for f in w.files)
        return
    # downloaded weights: a named licence, a commit (or a branch the record admits to), the state dict hashed
    assert not w.license.lower().startswith(("unspecified", "unconfirmed"))
    assert w.revision is not None
    assert w.pinned == bool(HEX40.fullmatch(w.revision))
    if w.pinned:
        assert next(f for f in w.files if f.role == "weights").sha256 is not None
        assert s.weights_source == f"{w.repo}@{w.revision[:8]}"
    else:
        assert "not pinned" in w.notes
    assert w.page and (w.repo.split(":")[-1] in w.page)


def test_spectral_gives_nan_for_empty_patches_without_numpy_warnings():
    """An all-NaN patch (or a patch with no valid timestep) is NaN, computed without numpy's empty-slice
    warnings: silencing those with catch_warnings is not thread-safe, and one escaped into CI's run."""
    import warnings

    import eoembed
    from eoembed.testing import synthetic_cube

    cube = synthetic_cube(height=64, width=64, times=4, seed=5)
    v = cube.values.copy()
    v[:, :, :8, :8] = np.nan  # two patches with no pixel at any time
    v[1, :, 16:24, 16:32] = np.nan  # gaps at one timestep only
    cube = cube.copy(data=v)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pooled = eoembed.embed(cube, "spectral", progress=False, min_valid=0.01).values
        per_t = eoembed.embed(cube, "spectral", progress=False, pool_time=False, min_valid=0.01).values
    assert np.isnan(pooled[:, :2, :2]).all() and np.isnan(per_t[:, :, :2, :2]).all()
    assert np.isfinite(pooled[:, 4:, 4:]).all()  # the one-timestep gaps are filled from the other dates
    assert np.isnan(per_t[1, :, 4:6, 4:8]).all() and np.isfinite(per_t[0, :, 4:6, 4:8]).all()
