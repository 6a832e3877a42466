"""Dimensionality reduction of embedding cubes (PCA, PCA-RGB, UMAP).

The reducer is *fitted on a random sample* of valid patch vectors (a few thousand are
plenty) and then *applied lazily* to the whole cube chunk by chunk, so a dask-backed
cube stays dask-backed and never needs to fit in memory. Fitted reducers
(:class:`Projection`) can be reused on other cubes of the same model so colours agree
between tiles: ``p = fit_pca(emb_a); p.rgb(emb_b)``.

Note that drawing the sample reads (computes) every chunk that holds a sampled patch —
for an expensive lazy embedding, persist or write it to Zarr first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import xarray as xr

from eoembed.cube import apply_embedding, canonical, spatial_coords, valid_mask, write_georef
from eoembed.exceptions import EmptyDataError, ParameterError, require

__all__ = ["Projection", "fit_pca", "fit_umap", "pca", "pca_rgb", "sample_vectors", "umap"]


def sample_vectors(emb: xr.DataArray, sample: int = 20_000, *, random_state: int = 0) -> np.ndarray:
    """Up to ``sample`` random valid patch vectors of ``emb`` as ``(n, embedding)`` float32.

    Raises
    ------
    EmptyDataError
        The cube has no valid (non-NaN) patch.
    """
    emb = canonical(emb)
    rng = np.random.default_rng(random_state)
    nt = emb.sizes.get("time", 1)
    ny, nx = emb.sizes["y"], emb.sizes["x"]
    total = nt * ny * nx
    flat = np.sort(rng.choice(total, size=min(int(sample), total), replace=False))
    t, rem = np.divmod(flat, ny * nx)
    r, c = np.divmod(rem, nx)
    ind = {"y": xr.DataArray(r, dims="s"), "x": xr.DataArray(c, dims="s")}
    if "time" in emb.dims:
        ind["time"] = xr.DataArray(t, dims="s")
    v = emb.isel(ind).transpose("s", "embedding").values.astype(np.float32)
    v = v[valid_mask(v)]
    if len(v) == 0:
        raise EmptyDataError(
            "No valid (non-NaN) patch found in the sample; the cube is empty or almost all masked. "
            "Pass a larger sample= or check the cube's validity mask."
        )
    return v


@dataclass
class Projection:
    """A reducer fitted on sampled patch vectors, applicable to any cube of the same model.

    Attributes
    ----------
    kind: ``"pca"`` or ``"umap"``. n_components: output size. dim: input embedding size.
    low, high: per-component 2nd/98th percentiles of the fitted sample (for RGB stretch).
    info: extra facts (``explained_variance_ratio`` for PCA).
    """

    kind: str
    n_components: int
    dim: int
    func: Callable[[np.ndarray], np.ndarray]  # (n, dim) → (n, n_components)
    low: np.ndarray
    high: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def _project(self, vectors: np.ndarray) -> np.ndarray:
        """``(..., dim)`` → ``(..., n_components)``; NaN rows stay NaN."""
        shape = vectors.shape[:-1]
        flat = vectors.reshape(-1, vectors.shape[-1])
        out = np.full((len(flat), self.n_components), np.nan, np.float32)
        ok = valid_mask(flat)
        if ok.any():
            out[ok] = self.func(flat[ok].astype(np.float32))
        return out.reshape(shape + (self.n_components,))

    def transform(self, emb: xr.DataArray) -> xr.DataArray:
        """Project a cube: ``(time?, component, y, x)`` float32, NaN where ``emb`` is NaN, lazy if dask."""
        emb = canonical(emb)
        if emb.sizes["embedding"] != self.dim:
            raise ParameterError(
                f"This {self.kind} was fitted on {self.dim}-d embeddings; the cube has "
                f"{emb.sizes['embedding']}. Fit it on a cube of the same model."
            )
        out = apply_embedding(self._project, emb, output_dim="component", output_size=self.n_components)
        out = out.transpose(*("component" if d == "embedding" else d for d in emb.dims)).data
        dims = tuple("component" if d == "embedding" else d for d in emb.dims)
        coords = {**spatial_coords(emb), "component": np.arange(self.n_components)}
        res = xr.DataArray(out, dims=dims, coords=coords, name=self.kind)
        res.attrs = {k: v for k, v in emb.attrs.items() if k.startswith("eoembed:") and k != "eoembed:embedding_dim"}
        res.attrs["eoembed:reducer"] = self.kind
        res.attrs.update({k: v for k, v in self.info.items() if isinstance(v, (str, int, float, list))})
        return write_georef(res, emb)

    def rgb(self, emb: xr.DataArray, *, dtype: str = "float32") -> xr.DataArray:
        """First three components stretched to ``[0, 1]`` (or ``1..255`` uint8) as ``(band, y, x)``.

        The stretch maps each component's sample 2nd→98th percentile to 0→1 (clipped),
        so colours are comparable across cubes projected with the same fit.
        ``dtype="uint8"`` maps to 1..255 and uses 0 as nodata (written with rioxarray).
        """
        if self.n_components < 3:
            raise ParameterError(f"RGB needs 3 components; this {self.kind} has {self.n_components}.")
        comp = self.transform(emb).isel(component=slice(0, 3))
        lo = xr.DataArray(self.low[:3], dims="component")
        hi = xr.DataArray(self.high[:3], dims="component")
        scaled = ((comp - lo) / (hi - lo).where(hi > lo, 1.0)).clip(0, 1)
        scaled = scaled.rename(component="band").assign_coords(band=[1, 2, 3])
        scaled.attrs = {**comp.attrs, "long_name": f"{self.kind.upper()} RGB (components 1-3)"}
        if dtype == "uint8":
            u = (1 + scaled * 254).round().fillna(0).astype(np.uint8)
            u.attrs = scaled.attrs
            scaled = u.rio.write_nodata(0)
        elif dtype != "float32":
            raise ParameterError(f"dtype must be 'float32' or 'uint8', got {dtype!r}.")
        else:
            scaled = scaled.astype(np.float32)
        scaled.name = "rgb"
        return write_georef(scaled, canonical(emb))


def _stretch(proj: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.percentile(proj, percentiles, axis=0)
    return lo.astype(np.float32), hi.astype(np.float32)


def fit_pca(
    emb: xr.DataArray,
    n_components: int = 3,
    *,
    sample: int = 20_000,
    whiten: bool = False,
    percentiles: tuple[float, float] = (2, 98),
    random_state: int = 0,
) -> Projection:
    """Fit PCA on a random sample of valid patch vectors (numpy SVD; no extra needed).

    Component signs are fixed (largest-magnitude loading positive) so results are
    reproducible. ``info["explained_variance_ratio"]`` lists each component's share.
    """
    v = sample_vectors(emb, sample, random_state=random_state).astype(np.float64)
    d = v.shape[1]
    if not 1 <= n_components <= min(d, len(v)):
        raise ParameterError(f"n_components must be in 1..{min(d, len(v))}, got {n_components}.")
    mean = v.mean(axis=0)
    _, s, vt = np.linalg.svd(v - mean, full_matrices=False)
    comps = vt[:n_components]
    signs = np.sign(comps[np.arange(n_components), np.argmax(np.abs(comps), axis=1)])
    comps = comps * signs[:, None]
    var = s**2 / max(len(v) - 1, 1)
    scale = np.sqrt(var[:n_components]) if whiten else np.ones(n_components)
    scale = np.where(scale > 0, scale, 1.0)
    mean32 = mean.astype(np.float32)
    w32 = (comps / scale[:, None]).T.astype(np.float32)  # (d, k)

    def func(x: np.ndarray) -> np.ndarray:
        return (x - mean32) @ w32

    proj = func(v.astype(np.float32))
    low, high = _stretch(proj, percentiles)
    evr = (var / var.sum())[:n_components] if var.sum() > 0 else np.zeros(n_components)
    return Projection("pca", n_components, d, func, low, high,
                      {"explained_variance_ratio": [round(float(e), 6) for e in evr], "n_sample": int(len(v))})


def pca(
    emb: xr.DataArray,
    n_components: int = 3,
    *,
    sample: int = 20_000,
    whiten: bool = False,
    fitted: Projection | None = None,
    random_state: int = 0,
) -> xr.DataArray:
    """Principal components of an embedding cube.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)``.
    n_components:
        Number of components.
    sample:
        Number of random patches used to fit (NaN patches skipped).
    whiten:
        Scale components to unit variance.
    fitted:
        Reuse a :class:`Projection` from :func:`fit_pca` (e.g. fitted on another tile).
    random_state:
        Sampling seed.

    Returns
    -------
    xr.DataArray
        float32 ``(component, y, x)`` or ``(time, component, y, x)`` named ``"pca"``,
        same grid and CRS as ``emb``, NaN where ``emb`` is NaN; lazy (chunk-wise) if
        ``emb`` is dask-backed. ``attrs["explained_variance_ratio"]`` lists the shares.
    """
    proj = fitted or fit_pca(emb, n_components, sample=sample, whiten=whiten, random_state=random_state)
    return proj.transform(emb)


def pca_rgb(
    emb: xr.DataArray,
    *,
    sample: int = 20_000,
    percentiles: tuple[float, float] = (2, 98),
    dtype: str = "float32",
    fitted: Projection | None = None,
    random_state: int = 0,
) -> xr.DataArray:
    """False-colour image of the first three principal components.

    Returns
    -------
    xr.DataArray
        ``(band, y, x)`` (``band`` = 1, 2, 3 → R, G, B), or ``(time, band, y, x)``.
        ``dtype="float32"``: values in ``[0, 1]``, NaN where ``emb`` is NaN;
        ``dtype="uint8"``: 1..255 with 0 = nodata (``rio.nodata``). Each component is
        stretched from its sample 2nd→98th percentile (``percentiles``). Same grid and
        CRS as ``emb``; lazy if ``emb`` is dask-backed. Ready for ``.plot.imshow()``
        (float) or ``rio.to_raster`` (uint8).
    """
    proj = fitted or fit_pca(emb, 3, sample=sample, percentiles=percentiles, random_state=random_state)
    return proj.rgb(emb, dtype=dtype)


def fit_umap(
    emb: xr.DataArray,
    n_components: int = 2,
    *,
    sample: int = 5_000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    percentiles: tuple[float, float] = (2, 98),
    random_state: int = 0,
    **kwargs: Any,
) -> Projection:
    """Fit UMAP (umap-learn, ``viz`` extra) on a random sample of valid patch vectors."""
    umap_mod = require("umap", "viz", "UMAP projection")
    v = sample_vectors(emb, sample, random_state=random_state)
    if len(v) <= n_neighbors:
        raise ParameterError(
            f"UMAP with n_neighbors={n_neighbors} needs more than {n_neighbors} valid patches; "
            f"the sample has {len(v)}."
        )
    if random_state is not None:  # a seeded UMAP runs on one thread anyway; say so instead of letting umap warn
        kwargs.setdefault("n_jobs", 1)
    reducer = umap_mod.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist,
                            metric=metric, random_state=random_state, **kwargs)
    proj = reducer.fit_transform(v).astype(np.float32)

    def func(x: np.ndarray) -> np.ndarray:
        return reducer.transform(x).astype(np.float32)

    low, high = _stretch(proj, percentiles)
    return Projection("umap", n_components, v.shape[1], func, low, high,
                      {"n_neighbors": n_neighbors, "min_dist": min_dist, "n_sample": int(len(v))})


def umap(
    emb: xr.DataArray,
    n_components: int = 2,
    *,
    sample: int = 5_000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    fitted: Projection | None = None,
    random_state: int = 0,
    **kwargs: Any,
) -> xr.DataArray:
    """UMAP embedding of an embedding cube (fit on a sample, ``transform`` chunk-wise).

    Returns
    -------
    xr.DataArray
        float32 ``(component, y, x)`` or ``(time, component, y, x)`` named ``"umap"``,
        same grid and CRS as ``emb``, NaN where ``emb`` is NaN; lazy if ``emb`` is
        dask-backed. UMAP's ``transform`` is much slower than PCA (≈ ms per 100
        patches); use it on modest cubes or a coarsened view.

    Raises
    ------
    MissingOptionalDependency
        umap-learn not installed (``pip install 'eoembed[viz]'``).
    """
    proj = fitted or fit_umap(emb, n_components, sample=sample, n_neighbors=n_neighbors, min_dist=min_dist,
                              metric=metric, random_state=random_state, **kwargs)
    return proj.transform(emb)
