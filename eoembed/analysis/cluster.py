"""Unsupervised clusters of an embedding cube: a map of "kinds of place".

Spherical k-means (FAISS ``faiss.Kmeans`` on L2-normalised vectors, i.e. cosine
k-means) is fitted on a random sample of valid patch vectors; every patch is then
assigned to its nearest centroid chunk by chunk, so a dask-backed cube stays lazy and
is never loaded whole. When ``k`` is not given it is chosen over ``k_range`` by the
**mean silhouette coefficient** (cosine distance, scikit-learn
``silhouette_score``) on a subsample of the fitted vectors: the ``k`` with the highest
score wins (ties → the smaller ``k``); every candidate's score is stored in the
output's attrs. Labels are stable for a fixed ``seed``: clusters are numbered by size
in the sample, largest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from eoembed.analysis._common import as_cube, check_int, provenance, select_time
from eoembed.cube import apply_embedding, normalize, spatial_coords, valid_mask, write_georef
from eoembed.exceptions import EmptyDataError, IndexMismatchError, ParameterError, require

__all__ = ["ClusterModel", "cluster", "fit_clusters"]

NODATA = -1
#: vectors used to compute each candidate's silhouette (the score is O(n²))
SILHOUETTE_SAMPLE = 4000
CRITERION = "silhouette"
#: Kaufman & Rousseeuw's reading of the mean silhouette: below 0.25 "no substantial structure",
#: 0.25-0.50 "weak", 0.50-0.70 "reasonable", above "strong".
STRUCTURE = ((0.25, "none"), (0.50, "weak"), (0.70, "reasonable"), (np.inf, "strong"))


def structure_of(silhouette: float) -> str:
    """Kaufman & Rousseeuw's verdict on a mean silhouette."""
    return next(name for cut, name in STRUCTURE if silhouette < cut)


@dataclass
class ClusterModel:
    """Centroids fitted by :func:`fit_clusters`; apply with :meth:`predict_map`.

    Attributes
    ----------
    centroids: ``(k, dim)`` float32 unit vectors, row ``i`` = cluster ``i`` (largest first).
    k: number of clusters. seed: k-means seed. n_sample: vectors fitted on.
    criterion: how ``k`` was chosen (``"given"`` or ``"silhouette"``).
    scores: ``{k: mean silhouette}`` of every candidate (empty when ``k`` was given).
    sizes: share of the sampled vectors in each cluster.
    attrs: provenance (``eoembed:`` attrs) of the fitted cube.
    silhouette: mean silhouette of the fitted ``k`` (on the silhouette subsample);
    structure: its reading (``"none"`` below 0.25: the data do not support ``k`` groups, the
    map is a partition of a continuum, not kinds of place; ``"weak"``, ``"reasonable"``,
    ``"strong"``).
    """

    centroids: np.ndarray
    k: int
    seed: int
    n_sample: int
    criterion: str
    scores: dict[int, float] = field(default_factory=dict)
    sizes: list[float] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    silhouette: float = float("nan")
    structure: str = ""

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """Nearest centroid (cosine) of ``(..., dim)`` vectors → ``(...)`` int32, -1 where invalid."""
        shape = vectors.shape[:-1]
        flat = vectors.reshape(-1, vectors.shape[-1])
        out = np.full(len(flat), NODATA, np.int32)
        ok = valid_mask(flat)
        if ok.any():
            sims = normalize(flat[ok]) @ self.centroids.T
            out[ok] = np.argmax(sims, axis=1)
        return out.reshape(shape)

    def predict_map(self, emb: xr.DataArray, *, time: Any = None) -> xr.DataArray:
        """Cluster map of ``emb`` (any cube of the same model): see :func:`cluster`."""
        emb = select_time(as_cube(emb), time)
        if emb.sizes["embedding"] != self.centroids.shape[1]:
            raise IndexMismatchError(
                f"The clusters were fitted on {self.centroids.shape[1]}-d vectors but the cube has "
                f"{emb.sizes['embedding']}-d ones; fit on a cube of the same model.")
        m = self.attrs.get("eoembed:model")
        if m is not None and emb.attrs.get("eoembed:model") not in (None, m):
            raise IndexMismatchError(
                f"The clusters were fitted on model {m!r} but the cube comes from "
                f"{emb.attrs['eoembed:model']!r}; fit_clusters on this cube instead.")
        out = apply_embedding(self.assign, emb, output_dtype=np.int32)
        out = out.assign_coords(spatial_coords(emb)).rename("cluster")
        out.attrs = {
            **provenance(emb),
            "long_name": "cluster",
            "flag_values": list(range(self.k)),
            "flag_meanings": " ".join(f"cluster_{i}" for i in range(self.k)),
            "eoembed:cluster_k": self.k,
            "eoembed:cluster_method": "spherical k-means (faiss.Kmeans on L2-normalised vectors)",
            "eoembed:cluster_criterion": self.criterion,
            "eoembed:cluster_k_candidates": sorted(self.scores),
            "eoembed:cluster_scores": [round(self.scores[k], 6) for k in sorted(self.scores)],
            "eoembed:cluster_seed": self.seed,
            "eoembed:cluster_n_sample": self.n_sample,
            "eoembed:cluster_sizes": [round(s, 6) for s in self.sizes],
            "eoembed:cluster_silhouette": round(self.silhouette, 6),
            "eoembed:cluster_structure": self.structure,
        }
        out = write_georef(out, emb)
        return out.rio.write_nodata(NODATA)


#: k-means restarts per fit (the best objective is kept).
KMEANS_RESTARTS = 4


def _kmeans(x: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    import faiss

    # nredo: single-start k-means merges two well-separated groups and splits a third on easy data (issue 27's
    # battery, cluster_recovers_three_kinds_of_place); FAISS keeps the restart with the best objective.
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1, nredo=KMEANS_RESTARTS,
                      max_points_per_centroid=max(256, -(-len(x) // k)))
    km.train(x)
    return np.asarray(km.centroids, np.float32)


def _order(centroids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids renumbered by sample share (largest first; ties by centroid values) and shares."""
    lab = np.argmax(x @ centroids.T, axis=1)
    counts = np.bincount(lab, minlength=len(centroids))
    order = np.lexsort(tuple(-centroids.T[::-1]) + (-counts,))
    return np.ascontiguousarray(centroids[order]), counts[order] / max(len(x), 1)


def fit_clusters(
    emb: xr.DataArray,
    k: int | None = None,
    *,
    k_range: tuple[int, int] = (2, 12),
    sample: int = 20_000,
    seed: int = 0,
    time: Any = None,
    niter: int = 25,
) -> ClusterModel:
    """Fit cluster centroids on a sample of ``emb``'s vectors (see :func:`cluster`)."""
    require("faiss", "search", "Clustering")
    emb = select_time(as_cube(emb), time)
    if k is not None:
        k = check_int(k, "k", low=2)
    lo_hi = k_range
    if (not isinstance(lo_hi, (tuple, list)) or len(lo_hi) != 2):
        raise ParameterError(f"k_range must be a (min, max) pair of integers, got {k_range!r}.")
    lo = check_int(lo_hi[0], "k_range[0]", low=2)
    hi = check_int(lo_hi[1], "k_range[1]", low=lo + 1 if k is None else lo)
    sample = check_int(sample, "sample", low=10)
    seed = check_int(seed, "seed", low=0)
    niter = check_int(niter, "niter", low=1)
    from eoembed.reduce import sample_vectors

    x = normalize(sample_vectors(emb, sample, random_state=seed))
    need = k if k is not None else hi
    if len(x) < need:
        raise EmptyDataError(
            f"Only {len(x)} valid patch vectors were sampled, fewer than the {need} clusters asked for. "
            "Pass a smaller k (or k_range), a larger sample=, or a cube with more valid patches.")
    distinct = len(np.unique(np.round(x, 5), axis=0))
    if distinct < need:
        raise EmptyDataError(
            f"The sampled vectors hold only {distinct} distinct direction(s), fewer than the {need} clusters asked "
            "for: the data cannot support that many groups. Pass a smaller k (or k_range), or check the cube "
            "(constant or duplicated vectors).")
    scores: dict[int, float] = {}
    require("sklearn", "search", "Scoring clusters by silhouette")
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    sub = rng.choice(len(x), size=min(SILHOUETTE_SAMPLE, len(x)), replace=False)
    if k is None:
        best = None
        for kk in range(lo, hi + 1):
            c = _kmeans(x, kk, seed, niter)
            lab = np.argmax(x[sub] @ c.T, axis=1)
            s = float(silhouette_score(x[sub], lab, metric="cosine")) if len(np.unique(lab)) > 1 else -1.0
            scores[kk] = s
            if best is None or s > scores[best] + 1e-12:
                best, cents = kk, c
        k, criterion = best, CRITERION
    else:
        cents, criterion = _kmeans(x, k, seed, niter), "given"
    lab = np.argmax(x[sub] @ cents.T, axis=1)
    sil = float(silhouette_score(x[sub], lab, metric="cosine")) if len(np.unique(lab)) > 1 else -1.0
    structure = structure_of(sil)
    if structure == "none":
        import warnings

        warnings.warn(
            f"k={k} clusters have a mean silhouette of {sil:.2f} (< 0.25: no substantial cluster structure, "
            "Kaufman & Rousseeuw): the map partitions a continuum rather than finding kinds of place. Read it as "
            "a colouring, restrict the cube to a domain first (e.g. cropland) or use fewer clusters.",
            UserWarning, stacklevel=3)
    cents, sizes = _order(cents, x)
    return ClusterModel(cents, int(k), seed, int(len(x)), criterion, scores, [float(s) for s in sizes],
                        provenance(emb), sil, structure)


def cluster(
    emb: xr.DataArray,
    k: int | None = None,
    *,
    k_range: tuple[int, int] = (2, 12),
    sample: int = 20_000,
    seed: int = 0,
    time: Any = None,
) -> xr.DataArray:
    """Cluster map of an embedding cube ("kinds of place").

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)``, numpy- or dask-backed.
    k:
        Number of clusters (>= 2), or ``None`` to choose it over ``k_range`` by the
        mean silhouette coefficient (cosine) of each candidate's k-means fit on up to
        4000 sampled vectors; the highest score wins.
    k_range:
        ``(min, max)`` candidates (inclusive) when ``k`` is None.
    sample:
        Random valid patch vectors the k-means is fitted on (drawing them reads the
        chunks that hold them; NaN patches are skipped).
    seed:
        Seed of the sample and of k-means: a fixed seed gives the same labels.
    time:
        For ``pool_time=False`` cubes: one timestep (label, date string or position);
        ``None`` clusters every timestep with one shared set of centroids and returns
        ``(time, y, x)``.

    Returns
    -------
    xr.DataArray
        int32 ``(y, x)`` (or ``(time, y, x)``) named ``"cluster"`` on ``emb``'s grid
        (CRS and transform written), values ``0..k-1`` numbered by cluster size in the
        sample (0 = largest), ``-1`` (``rio.nodata``) where the patch vector is NaN.
        Lazy (chunk-wise) when ``emb`` is dask-backed. attrs: provenance of ``emb``,
        ``eoembed:cluster_k``, ``eoembed:cluster_criterion``
        (``"silhouette"`` or ``"given"``), ``eoembed:cluster_k_candidates`` and
        ``eoembed:cluster_scores`` (silhouette per candidate), ``eoembed:cluster_sizes``,
        ``eoembed:cluster_seed``.

    Raises
    ------
    ParameterError
        ``k``, ``k_range``, ``sample`` or ``seed`` out of range.
    DimensionError, ParameterError
        ``time`` given for a time-pooled cube, or not one of its timesteps.
    EmptyDataError
        Fewer valid vectors than clusters.
    """
    model = fit_clusters(emb, k, k_range=k_range, sample=sample, seed=seed, time=time)
    return model.predict_map(emb, time=time)
