"""Index choice, search-parameter tuning and recall (pure functions; autofaiss's split).

:func:`choose_index_key` picks a FAISS factory string from the collection size and a
memory budget, :func:`tune` raises ``nprobe``/``efSearch`` until a target recall is
measured, :func:`recall_at_k` is the measure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from eoembed.exceptions import ParameterError
from eoembed.index.backend import faiss_module, numpy_topk

__all__ = ["choose_index_key", "nb_clusters", "parse_memory", "recall_at_k", "tune"]

#: Stored vectors used as tuning queries.
TUNE_QUERIES = 500
DEFAULT_MEMORY = "8G"


def nb_clusters(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ``4·√n`` rounded *down* to a power of two.

    The FAISS wiki ("Guidelines to choose an index") recommends between ``4·√n``
    and ``16·√n`` lists; we take the low end (rounded down) because k-means training
    cost grows with the list count and builds must stay practical on a laptop.
    At least 16, and never more lists than ``n / 39`` (FAISS warns below 39 training
    points per centroid).
    """
    if n < 1:
        raise ParameterError(f"nb_clusters needs n >= 1, got {n}.")
    k = 2 ** int(math.floor(math.log2(max(4 * math.sqrt(n), 1))))
    k = min(k, 2 ** int(math.floor(math.log2(max(n // 39, 1)))))
    return int(max(16, k)) if n >= 16 * 39 else int(max(1, k))


def parse_memory(mem: int | float | str | None) -> int:
    """A memory budget in bytes: an int, or a string read by ``dask.utils.parse_bytes``
    (``"8G"`` = 8·10⁹ bytes, ``"8GiB"`` = 8·2³⁰; None = ``"8G"``)."""
    from dask.utils import parse_bytes

    try:
        return int(parse_bytes(DEFAULT_MEMORY if mem is None else mem))
    except (ValueError, TypeError):
        raise ParameterError(
            f"Cannot read memory budget {mem!r}; use bytes (int) or a string like '4G', '512MB', '8GiB'."
        ) from None


def choose_index_key(
    n: int,
    d: int,
    *,
    max_memory: int | str | None = DEFAULT_MEMORY,
    flat_threshold: int = 100_000,
    hnsw_threshold: int = 1_000_000,
    hnsw_m: int = 32,
) -> str:
    """Choose a FAISS factory string for ``n`` vectors of dimension ``d``.

    The rules follow autofaiss' ``get_optimal_index_keys_v2`` in spirit, with a much
    larger exact-search threshold: in eoembed queries are interactive (one click, a
    few hundred ms budget), exact inner-product search over 100k × 192 vectors takes
    a few milliseconds, and exact results are worth more than build speed.

    1. ``n < flat_threshold`` → ``"Flat"`` (exact).
    2. ``n < hnsw_threshold`` and the graph fits ``max_memory``
       (``n·(4d + 8M)`` bytes) → ``f"HNSW{hnsw_m}"``.
    3. IVF with :func:`nb_clusters` lists: ``"IVF{k},Flat"`` if ``n·4d`` bytes fit,
       else ``"IVF{k},SQ8"`` (1 byte/dim) if ``n·d`` fits, else
       ``"IVF{k},PQ{m}"`` with the largest ``m ≤ d/2`` that divides ``d`` and whose
       ``n·m`` bytes fit (recall of PQ codes is lower than 0.95; see
       :meth:`~eoembed.EmbeddingIndex.recall`).

    Parameters
    ----------
    n, d:
        Number and dimension of the vectors.
    max_memory:
        Budget for the index in bytes or as ``"8G"``/``"512M"`` (:func:`parse_memory`).
    flat_threshold, hnsw_threshold, hnsw_m:
        Thresholds of rules 1 and 2 and the HNSW graph degree.

    Returns
    -------
    str
        A key for ``faiss.index_factory``.
    """
    if n < 0 or d < 1:
        raise ParameterError(f"choose_index_key needs n >= 0 and d >= 1, got n={n}, d={d}.")
    mem = parse_memory(max_memory)
    if n < flat_threshold:
        return "Flat"
    if n < hnsw_threshold and n * (4 * d + 8 * hnsw_m) <= mem:
        return f"HNSW{hnsw_m}"
    k = nb_clusters(n)
    if n * 4 * d + k * 4 * d <= mem:
        return f"IVF{k},Flat"
    if n * d + k * 4 * d <= mem:
        return f"IVF{k},SQ8"
    for m in range(d // 2, 0, -1):
        if d % m == 0 and n * m <= mem:
            return f"IVF{k},PQ{m}"
    raise ParameterError(
        f"{n} vectors of dimension {d} do not fit in max_memory={max_memory!r} even with "
        "1-byte PQ codes; raise max_memory or index fewer patches (e.g. coarser cube, fewer times)."
    )


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-``k`` found in the approximate top-``k``.

    Hand-written rather than ``faiss.contrib.evaluation.knn_intersection_measure``
    (checked in faiss 1.x): that one counts ``-1`` padding present in both rows as a hit
    and divides by ``k`` for every query, while here queries may have fewer than ``k``
    exact neighbours (tiny indexes, the query's own entry dropped) and are divided by
    what exists; on full rows both give the same value.
    """
    a = np.asarray(approx_ids)[:, :k]
    e = np.asarray(exact_ids)[:, :k]
    hits = [len(np.intersect1d(a[i][a[i] >= 0], e[i][e[i] >= 0])) for i in range(len(e))]
    denom = np.minimum((e >= 0).sum(axis=1), k).clip(min=1)
    return float(np.mean(np.asarray(hits) / denom))


def drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row without the query's own id (``-1`` padded)."""
    out = np.full((len(ids), k), -1, np.int64)
    for i, (row, me) in enumerate(zip(ids, self_ids)):
        row = row[row != me][:k]
        out[i, : len(row)] = row
    return out


def tune(index: Any, key: str, data: np.ndarray, *, target: float, k: int, seed: int) -> tuple[dict, dict]:
    """Smallest nprobe/efSearch reaching ``target`` recall@k on sampled stored vectors."""
    faiss = faiss_module()
    if key == "Flat":
        return {}, {"recall@10": 1.0}
    rng = np.random.default_rng(seed)
    qids = rng.choice(len(data), size=min(TUNE_QUERIES, len(data)), replace=False)
    # Stored vectors make easy queries (graph/list members, own entry a free hit). The
    # tuning queries are stored vectors moved by Gaussian noise as large as the typical
    # distance to their nearest other neighbour, i.e. "new" vectors as far from the data
    # as the data are from each other; their own entry is also excluded from both lists.
    q0 = data[qids]
    s0, i0 = numpy_topk(data, q0, 2)
    nn = np.where(i0[:, 0] == qids, s0[:, 1], s0[:, 0])
    norm = float(np.median(np.linalg.norm(q0, axis=1)))
    scale = norm * float(np.median(np.sqrt(np.clip(2 - 2 * nn / norm**2, 0, None))))
    q = q0 + rng.standard_normal(q0.shape).astype(np.float32) * (scale / np.sqrt(q0.shape[1]))
    q = np.ascontiguousarray(q, dtype=np.float32)
    _, exact = numpy_topk(data, q, k + 1)
    exact = drop_self(exact, qids, k)
    ps = faiss.ParameterSpace()
    if key.startswith("HNSW"):
        name, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024, 2048]
    else:
        name = "nprobe"
        nlist = faiss.extract_index_ivf(index).nlist
        values = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if v < nlist] + [nlist]
    # a small margin over the target: the tuning queries are a sample
    goal = min(1.0, target + 0.01)
    chosen, rec = values[-1], 0.0
    for v in values:
        ps.set_index_parameter(index, name, v)
        _, approx = index.search(q, k + 1)
        rec = recall_at_k(drop_self(approx, qids, k), exact, k)
        if rec >= goal:
            chosen = v
            break
    ps.set_index_parameter(index, name, chosen)
    return {name: int(chosen)}, {f"recall@{k}": round(rec, 4), "n_queries": int(len(q)), "target": target}
