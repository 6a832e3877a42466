"""Shared fixtures: offline by default, test checkpoints in the published layout, the
real sample cube from the sample registry (its mirror ../shared beside the repository in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest



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


def registered(name: str) -> Path:
    """A registered sample file or group (:func:`eoembed.data.sample`): from ../shared beside the repository
    (CI clones it there: nothing is downloaded), else the cache, else downloaded once (a machine with internet
    and without ../shared; EOEMBED_OFFLINE=1 forbids it)."""
    from eoembed.data import sample
    from eoembed.exceptions import DownloadError

    try:
        return sample(name)
    except DownloadError as err:
        pytest.fail(f"{err}")


@pytest.fixture(scope="session")
def sample_path():
    """The demo's real sample cube (WorldCereal, 1 km², 12 months)."""
    from eoembed.data import SAMPLE_CUBE

    return registered(SAMPLE_CUBE)


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


