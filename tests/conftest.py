"""Shared fixtures: offline by default, test checkpoints in the published layout, the
real sample cube from ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE = SHARED / "data" / "worldcereal" / "worldcereal_preprocessed_inputs.nc"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test reaches Hugging Face or the user's weight cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path_factory.getbasetemp() / "empty-weights-cache"))


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    """Each test loads its own encoders: the per-process model cache must not carry a model
    (or a monkeypatched download) from one test into the next, whatever the test order."""
    from eoembed.models import clear_model_cache

    clear_model_cache()
    yield
    clear_model_cache()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Random-weight Nano checkpoints for v1, v1.1 and v1.2 (built once per session)."""
    pytest.importorskip("olmoearth_pretrain_minimal")
    from eoembed.testing import make_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {v: make_checkpoint(root / f"nano-{v}", v, "nano", seed=1) for v in ("v1", "v1.1", "v1.2")}


@pytest.fixture(scope="session")
def sample_path():
    if not SAMPLE.exists():
        pytest.fail(f"the shared sample cube is missing: {SAMPLE} (CI clones ../shared beside the repo)")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_cube(sample_path):
    from eoembed.data import open_cube

    return open_cube(sample_path)


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped cleanly without CUDA."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


