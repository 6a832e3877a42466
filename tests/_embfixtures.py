"""Synthetic embedding cubes with planted structure, shared by the search/few-shot tests.

Import from test modules with::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _embfixtures import make_emb
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from affine import Affine

import rioxarray  # noqa: F401  (registers .rio)

X0, Y0 = 500_000.0, 5_700_000.0


def make_emb(
    ny: int = 40,
    nx: int = 50,
    d: int = 16,
    *,
    n_classes: int = 3,
    block: int = 10,
    noise: float = 0.35,
    times: int | None = None,
    nan_frac: float = 0.0,
    chunks: dict | None = None,
    seed: int = 0,
    crs: str = "EPSG:32631",
    pitch: float = 80.0,
    x0: float = X0,
    y0: float = Y0,
    model: str = "synthetic",
    model_version: str = "1",
    prototypes: np.ndarray | None = None,
) -> tuple[xr.DataArray, xr.DataArray]:
    """A georeferenced embedding cube and its ground-truth class map.

    Classes form a checkerboard of ``block``×``block`` patch squares; each patch vector
    is its class prototype (random unit vector, or ``prototypes``) plus Gaussian noise.
    ``nan_frac`` of the patches are all-NaN (masked). Returns ``(emb, truth)`` where
    ``truth`` is ``(y, x)`` int with -1 on masked patches.
    """
    rng = np.random.default_rng(seed)
    if prototypes is None:
        prototypes = rng.standard_normal((n_classes, d))
        prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    rows, cols = np.mgrid[0:ny, 0:nx]
    cls = ((rows // block) + (cols // block)) % n_classes
    nt = times or 1
    vec = prototypes[cls][None] + noise * rng.standard_normal((nt, ny, nx, d)) / np.sqrt(d) * 2
    vec = np.moveaxis(vec, -1, 1).astype(np.float32)  # (t, d, y, x)
    truth = cls.astype(np.int64)
    if nan_frac:
        m = rng.random((ny, nx)) < nan_frac
        vec[:, :, m] = np.nan
        truth = np.where(m, -1, truth)
    transform = Affine(pitch, 0, x0, 0, -pitch, y0)
    xs = x0 + pitch * (np.arange(nx) + 0.5)
    ys = y0 - pitch * (np.arange(ny) + 0.5)
    attrs = {
        "eoembed:model": model,
        "eoembed:model_version": model_version,
        "eoembed:embedding_dim": d,
        "eoembed:patch_size": 8,
        "eoembed:weights_revision": "none",
        "eoembed:license": "none",
        "eoembed:version": "test",
    }
    if times:
        t = np.array([f"2024-0{i + 1}-15" for i in range(times)], dtype="datetime64[ns]")
        emb = xr.DataArray(vec, dims=("time", "embedding", "y", "x"),
                           coords={"time": t, "embedding": np.arange(d), "y": ys, "x": xs},
                           name="embedding", attrs=attrs)
    else:
        emb = xr.DataArray(vec[0], dims=("embedding", "y", "x"),
                           coords={"embedding": np.arange(d), "y": ys, "x": xs},
                           name="embedding", attrs=attrs)
    emb = emb.rio.write_crs(crs).rio.write_transform(transform)
    if chunks:
        emb = emb.chunk(chunks)
    truth_da = xr.DataArray(truth, dims=("y", "x"), coords={"y": ys, "x": xs}, name="truth")
    truth_da = truth_da.rio.write_crs(crs).rio.write_transform(transform)
    return emb, truth_da


def label_points(emb: xr.DataArray, truth: xr.DataArray, n: int, *, seed: int = 0, names=None, crs: int = 32631):
    """``n`` random patches' true classes as a point GeoDataFrame at the patch centres (class < 0 dropped).

    ``names`` maps class indices to labels (default: the indices). Same draws as
    ``rng.integers`` over rows then columns, so fixtures built on it are reproducible.
    """
    import geopandas as gpd

    rng = np.random.default_rng(seed)
    r, c = rng.integers(0, emb.sizes["y"], n), rng.integers(0, emb.sizes["x"], n)
    keep = truth.values[r, c] >= 0
    r, c = r[keep], c[keep]
    cls = truth.values[r, c] if names is None else np.asarray(names)[truth.values[r, c]]
    return gpd.GeoDataFrame({"class": cls}, geometry=gpd.points_from_xy(emb.x.values[c], emb.y.values[r]), crs=crs)
