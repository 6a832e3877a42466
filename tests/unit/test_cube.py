"""eoembed.cube: the embedding-cube format and apply_embedding (numpy and dask alike)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402
from eoembed.cube import apply_embedding, canonical, cube_info  # noqa: E402


def test_apply_embedding_same_numbers_numpy_and_dask_lazy():
    emb, _ = make_emb(12, 15, 8, times=2, nan_frac=0.2, seed=3)
    lazy = emb.chunk({"y": 5, "x": 4, "embedding": 3})  # split embedding: merged for the function

    def norms(v):
        return np.linalg.norm(v, axis=-1, keepdims=True).repeat(2, axis=-1).astype(np.float32)

    a = apply_embedding(norms, emb, output_dim="k", output_size=2)
    b = apply_embedding(norms, lazy, output_dim="k", output_size=2)
    assert a.dims == ("time", "y", "x", "k") and b.chunks is not None
    assert b.chunks[1] == (5, 5, 2)  # spatial chunks kept: one task per chunk
    np.testing.assert_allclose(b.values, a.values, equal_nan=True)
    # several core dims, no output dim
    c = apply_embedding(lambda v: np.nanmean(v, axis=(-2, -1)), lazy, core_dims=("time", "embedding"))
    assert c.dims == ("y", "x")
    np.testing.assert_allclose(c.values, np.nanmean(emb.values, axis=(0, 1)), rtol=1e-5, equal_nan=True)


def test_consumers_use_apply_embedding_not_their_own_dask_branches():
    root = Path(eoembed.__file__).parent
    index_files = sorted((root / "index").glob("*.py")) if (root / "index").is_dir() else [root / "index.py"]
    for files in (index_files, [root / "reduce.py"], [root / "classify.py"]):
        text = "".join(f.read_text() for f in files)
        assert "apply_embedding" in text, files
        assert "map_blocks" not in text and '__module__.startswith("dask")' not in text, files


def test_cube_info_reads_grid_and_identity():
    emb, _ = make_emb(6, 7, 4, seed=1)
    info = cube_info(emb)
    assert info.shape == (6, 7) and info.dim == 4 and info.model == "synthetic" and not info.has_time
    with pytest.raises(eoembed.exceptions.DimensionError):
        canonical(emb.rename(embedding="band"))
