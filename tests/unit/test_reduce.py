"""Tests for eoembed.reduce: PCA / PCA-RGB / UMAP fitted on a sample, applied lazily."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

from eoembed.exceptions import EmptyDataError, ParameterError  # noqa: E402
from eoembed.reduce import fit_pca, pca, pca_rgb, sample_vectors, umap  # noqa: E402


@pytest.fixture(scope="module")
def cube():
    return make_emb(30, 40, 16, nan_frac=0.1, seed=21)


def test_sample_vectors_skips_nan(cube):
    emb, truth = cube
    v = sample_vectors(emb, 10_000)
    assert v.shape == (int((truth.values >= 0).sum()), 16) and np.isfinite(v).all()
    assert len(sample_vectors(emb, 100)) <= 100
    with pytest.raises(EmptyDataError, match="No valid"):
        sample_vectors(emb * np.nan, 50)


def test_pca_matches_sklearn_on_full_sample(cube):
    from sklearn.decomposition import PCA

    emb, truth = cube
    p = pca(emb, 4, sample=10**6)
    assert p.dims == ("component", "y", "x") and p.dtype == np.float32 and p.name == "pca"
    np.testing.assert_array_equal(p.x, emb.x)
    assert p.rio.crs == emb.rio.crs and p.rio.transform() == emb.rio.transform()
    ok = truth.values >= 0
    assert np.isnan(p.values[:, ~ok]).all() and np.isfinite(p.values[:, ok]).all()
    X = emb.values[:, ok].T
    ref = PCA(4).fit(X)
    ours = p.values[:, ok].T
    theirs = ref.transform(X)
    for i in range(4):  # equal up to sign
        s = np.sign(ours[:, i] @ theirs[:, i])
        np.testing.assert_allclose(ours[:, i], s * theirs[:, i], atol=1e-3)
    np.testing.assert_allclose(p.attrs["explained_variance_ratio"], ref.explained_variance_ratio_, atol=1e-4)
    # planted structure: 3 classes are separable in the first 2 components
    c = truth.values[ok]
    means = np.array([ours[c == k, :2].mean(0) for k in range(3)])
    assert np.min([np.linalg.norm(means[a] - means[b]) for a, b in [(0, 1), (0, 2), (1, 2)]]) > 0.5


def test_pca_lazy_equals_eager_and_time(cube):
    emb, _ = make_emb(32, 24, 16, nan_frac=0.1, seed=22, times=2)
    lazy = emb.chunk({"time": 1, "embedding": 8, "y": 8, "x": 12})
    pl = pca(lazy, 3, sample=500)
    pe = pca(emb, 3, sample=500)
    assert pl.chunks is not None and pl.dims == ("time", "component", "y", "x")
    assert pl.data.npartitions == 2 * 4 * 2
    xr.testing.assert_allclose(pl.compute(), pe, atol=1e-5)
    # a reused fit gives identical numbers on another cube of the same model
    f = fit_pca(emb, 3, sample=500)
    other, _ = make_emb(10, 10, 16, seed=23)
    np.testing.assert_allclose(pca(other, fitted=f).values, f.transform(other).values)
    with pytest.raises(ParameterError, match="fitted on 16-d"):
        f.transform(make_emb(5, 5, 8)[0])
    with pytest.raises(ParameterError, match="n_components"):
        pca(emb, 99)


def test_pca_rgb_float_and_uint8(cube):
    emb, truth = cube
    rgb = pca_rgb(emb)
    assert rgb.dims == ("band", "y", "x") and list(rgb.band.values) == [1, 2, 3]
    assert rgb.dtype == np.float32
    ok = truth.values >= 0
    v = rgb.values[:, ok]
    assert v.min() >= 0 and v.max() <= 1 and (v == 0).mean() < 0.1 and (v == 1).mean() < 0.1
    assert np.isnan(rgb.values[:, ~ok]).all()
    assert rgb.rio.crs == emb.rio.crs
    u8 = pca_rgb(emb.chunk({"y": 10}), dtype="uint8")
    assert u8.chunks is not None
    u = u8.values
    assert u.dtype == np.uint8 and u8.rio.nodata == 0
    assert (u[:, ~ok] == 0).all() and (u[:, ok] >= 1).all()
    np.testing.assert_allclose(u[:, ok], 1 + np.round(v * 254), atol=1)
    with pytest.raises(ParameterError, match="dtype"):
        pca_rgb(emb, dtype="int16")


@pytest.mark.slow
def test_umap_projection_lazy(cube):
    pytest.importorskip("umap")
    emb, truth = cube
    lazy = emb.chunk({"y": 15, "x": 20})
    u = umap(lazy, 2, sample=400, n_neighbors=10)
    assert u.dims == ("component", "y", "x") and u.chunks is not None and u.name == "umap"
    vals = u.values
    ok = truth.values >= 0
    assert np.isnan(vals[:, ~ok]).all() and np.isfinite(vals[:, ok]).all()
    c = truth.values[ok]
    pts = vals[:, ok].T
    # classes form separate clusters: nearest centroid classification is near perfect
    cent = np.array([pts[c == k].mean(0) for k in range(3)])
    pred = np.argmin(((pts[:, None, :] - cent[None]) ** 2).sum(-1), axis=1)
    assert (pred == c).mean() > 0.95
