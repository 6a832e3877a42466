"""Georeferenced similarity search over embedding cubes (FAISS).

Every valid patch vector of an embedding cube becomes one entry of a FAISS index;
the index remembers where each entry came from (source cube, time, row/col, patch
centre x/y in the index CRS), the CRS and the model, so that a query can be a map
point, a patch, a polygon, a raw vector or a set of positive/negative examples and
the answer is a table of georeferenced hits or a similarity map on the cube grid.

Vectors are L2-normalised and compared with inner product, i.e. cosine similarity
(``metric="cosine"``, default). The index type is chosen by :func:`choose_index_key`:
exact ``Flat`` for small collections, HNSW or IVF above a size threshold, with the
search parameters (``efSearch``/``nprobe``) tuned at build time to reach a target
recall@10 against exact search (0.95 by default), measured on a sample of queries.

Installing FAISS
----------------
The ``search`` extra installs the CPU build: ``pip install 'eoembed[search]'``
(``faiss-cpu`` from PyPI). For NVIDIA GPUs install a GPU build instead of
``faiss-cpu`` — ``conda install -c pytorch -c nvidia faiss-gpu`` (or the
``faiss-gpu-cu12`` wheel) — and do not install both in one environment. When
``faiss.get_num_gpus() > 0`` and ``device`` is ``"auto"`` or ``"cuda"``, Flat and
IVF indexes are copied to all GPUs with ``faiss.index_cpu_to_all_gpus`` for search;
HNSW has no GPU implementation and stays on the CPU. A CPU copy is always kept
(for saving, appending and looking up stored vectors).

Saving
------
``idx.save(dir)`` writes ``dir/index.faiss`` (the CPU index), ``dir/meta.json``
(key, metric, search parameters, CRS WKT, model identity and cube attrs, sources)
and ``dir/entries.npz`` (per-entry source/time/row/col/x/y and per-source times).
:meth:`EmbeddingIndex.load` restores all of it.
"""

from __future__ import annotations

import json
import math
import os
import time as _time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import xarray as xr

from eoembed.cube import (
    CubeInfo,
    apply_embedding,
    canonical,
    check_same_space,
    cube_info,
    normalize,
    spatial_coords,
    to_crs_geom,
    to_crs_xy,
    valid_mask,
    write_georef,
    xy_to_rowcol,
)
from eoembed.exceptions import (
    EmptyDataError,
    IndexMismatchError,
    ParameterError,
    QueryError,
    require,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "EmbeddingIndex",
    "build_index",
    "choose_index_key",
    "nb_clusters",
    "similarity_map",
    "recall_at_k",
]

_FORMAT_VERSION = 1
_TUNE_QUERIES = 500
_DEFAULT_MEMORY = 8 * 1024**3


def _faiss():
    return require("faiss", "search", "Similarity search (eoembed.index)")


# ---------------------------------------------------------------------------------
# index choice (pure)
# ---------------------------------------------------------------------------------
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


def _parse_memory(mem: int | float | str | None) -> int:
    if mem is None:
        return _DEFAULT_MEMORY
    if isinstance(mem, (int, float)):
        return int(mem)
    s = str(mem).strip().upper().removesuffix("B")
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    try:
        if s and s[-1] in units:
            return int(float(s[:-1]) * units[s[-1]])
        return int(float(s))
    except ValueError:
        raise ParameterError(
            f"Cannot read memory budget {mem!r}; use bytes (int) or a string like '4G', '512M'."
        ) from None


def choose_index_key(
    n: int,
    d: int,
    *,
    max_memory: int | str | None = "8G",
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
       ``n·m`` bytes fit (recall of PQ codes is lower than 0.95; see :meth:`EmbeddingIndex.recall`).

    Parameters
    ----------
    n, d:
        Number and dimension of the vectors.
    max_memory:
        Budget for the index in bytes or as ``"8G"``/``"512M"``.
    flat_threshold, hnsw_threshold, hnsw_m:
        Thresholds of rules 1 and 2 and the HNSW graph degree.

    Returns
    -------
    str
        A key for ``faiss.index_factory``.
    """
    if n < 0 or d < 1:
        raise ParameterError(f"choose_index_key needs n >= 0 and d >= 1, got n={n}, d={d}.")
    mem = _parse_memory(max_memory)
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
    """Mean fraction of the exact top-``k`` found in the approximate top-``k``."""
    a = np.asarray(approx_ids)[:, :k]
    e = np.asarray(exact_ids)[:, :k]
    hits = [len(np.intersect1d(a[i][a[i] >= 0], e[i][e[i] >= 0])) for i in range(len(e))]
    denom = np.minimum((e >= 0).sum(axis=1), k).clip(min=1)
    return float(np.mean(np.asarray(hits) / denom))


# ---------------------------------------------------------------------------------
# similarity maps (no FAISS needed)
# ---------------------------------------------------------------------------------
def _cosine(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cosine of every vector (last axis) with the unit vector ``q``; NaN stays NaN."""
    dots = vectors @ q.astype(vectors.dtype, copy=False)
    sq = np.einsum("...i,...i->...", vectors, vectors)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dots / np.sqrt(sq)
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)  # rounding


def similarity_map(emb: xr.DataArray, vector: Any, *, name: str = "similarity") -> xr.DataArray:
    """Cosine similarity of every patch of ``emb`` with one query vector.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)``, numpy- or dask-backed.
    vector:
        Query vector of length ``embedding`` (any norm; it is normalised).
    name:
        Name of the returned DataArray.

    Returns
    -------
    xr.DataArray
        float32 ``(y, x)`` or ``(time, y, x)`` on exactly ``emb``'s grid, CRS written,
        NaN where the patch vector is NaN (or all zero). Lazy when ``emb`` is
        dask-backed: computed chunk by chunk (:func:`eoembed.cube.apply_embedding`; one
        chunk of ``emb`` in memory per task, the ``embedding`` axis merged into one chunk).
    """
    emb = canonical(emb)
    q = np.asarray(vector, dtype=np.float64).reshape(-1)
    if q.shape[0] != emb.sizes["embedding"]:
        raise IndexMismatchError(
            f"Query vector has {q.shape[0]} values but the cube's embedding dimension is "
            f"{emb.sizes['embedding']}."
        )
    nrm = np.linalg.norm(q)
    if not np.isfinite(nrm) or nrm == 0:
        raise QueryError("Query vector is all zero or not finite; nothing to compare against.")
    q = (q / nrm).astype(np.float32)
    res = apply_embedding(_cosine, emb, kwargs={"q": q}).rename(name)
    res = res.assign_coords(spatial_coords(emb))
    res.attrs = {k: v for k, v in emb.attrs.items() if k.startswith("eoembed:")}
    res.attrs["long_name"] = "cosine similarity"
    return write_georef(res, emb)


# ---------------------------------------------------------------------------------
# the index
# ---------------------------------------------------------------------------------
@dataclass
class _Source:
    id: str
    transform: tuple[float, ...]
    shape: tuple[int, int]
    times: np.ndarray | None
    attrs: dict[str, Any] = field(default_factory=dict)
    lookup: np.ndarray | None = None  # (T, ny, nx) int64 entry id or -1

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "transform": list(self.transform), "shape": list(self.shape),
                "has_time": self.times is not None, "attrs": self.attrs}


def _iter_cube_vectors(emb: xr.DataArray, rows_per_block: int | None = None):
    """Yield ``(t, row0, block)`` with ``block`` numpy ``(embedding, h, nx)``.

    Dask cubes are computed one row of chunks at a time (bounded memory); numpy
    cubes are sliced without copying.
    """
    ts = range(emb.sizes["time"]) if "time" in emb.dims else [None]
    ny = emb.sizes["y"]
    if rows_per_block is None:
        if emb.chunks is not None:
            rows_per_block = int(emb.data.chunks[emb.dims.index("y")][0])
        else:
            rows_per_block = ny
    for t in ts:
        sub = emb if t is None else emb.isel(time=t)
        for r0 in range(0, ny, rows_per_block):
            blk = sub.isel(y=slice(r0, r0 + rows_per_block)).values
            yield (0 if t is None else t), r0, blk


class EmbeddingIndex:
    """A FAISS index over embedding-cube patches that knows where each patch is.

    Build with :func:`build_index` (or ``emb.eo.index()``), grow with :meth:`add`,
    query with :meth:`search` / :meth:`similarity_map`, persist with :meth:`save` /
    :meth:`load`.

    Attributes
    ----------
    key: FAISS factory string (see :func:`choose_index_key`).
    metric: ``"cosine"`` or ``"ip"``.
    params: search parameters (``{"nprobe": 32}``, ``{"efSearch": 64}`` or ``{}``).
    crs: the index CRS (``pyproj.CRS``); hits are reported in it.
    dim: embedding dimension. model: model id from the cube attrs.
    """

    def __init__(
        self,
        cpu_index: Any,
        *,
        key: str,
        metric: str,
        params: dict[str, Any],
        crs_wkt: str,
        dim: int,
        attrs: dict[str, Any],
        device: str = "auto",
    ) -> None:
        self._cpu = cpu_index
        self.key = key
        self.metric = metric
        self.params = dict(params)
        self.crs_wkt = crs_wkt
        self.dim = int(dim)
        self.attrs = dict(attrs)
        self.tuning: dict[str, Any] = {}
        self.sources: list[_Source] = []
        self._cubes: dict[str, xr.DataArray] = {}
        self._src = np.zeros(0, np.int32)
        self._t = np.zeros(0, np.int32)
        self._row = np.zeros(0, np.int32)
        self._col = np.zeros(0, np.int32)
        self._x = np.zeros(0, np.float64)
        self._y = np.zeros(0, np.float64)
        self.device = "cpu"
        self._gpu = None
        self._set_device(device)

    # ---- properties -----------------------------------------------------------
    @property
    def model(self) -> str:
        """Model name from the cube attrs (``"unknown"`` for hand-made cubes)."""
        return str(self.attrs.get("eoembed:model", "unknown"))

    @property
    def crs(self):
        """Index CRS as ``pyproj.CRS``."""
        from pyproj import CRS

        return CRS.from_wkt(self.crs_wkt)

    @property
    def ntotal(self) -> int:
        """Number of indexed patch vectors."""
        return int(self._cpu.ntotal)

    @property
    def has_time(self) -> bool:
        """Whether any source cube has a ``time`` dimension."""
        return any(s.times is not None for s in self.sources)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"<EmbeddingIndex {self.key!r} ({self.metric}{', ' + p if p else ''}) on {self.device}: "
            f"{self.ntotal} patches × {self.dim} from {len(self.sources)} source(s), "
            f"model={self.model!r}, crs={self.crs.to_string()}>"
        )

    # ---- device ---------------------------------------------------------------
    def _set_device(self, device: str) -> None:
        faiss = _faiss()
        if device not in ("auto", "cpu", "cuda", "gpu"):
            raise ParameterError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
        ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if device in ("cuda", "gpu") and ngpu == 0:
            raise ParameterError(
                "device='cuda' but FAISS sees no GPU (faiss-cpu installed, or no CUDA device). "
                "Install faiss-gpu (see eoembed.index docs) or use device='auto'/'cpu'."
            )
        self._gpu = None
        self.device = "cpu"
        if device != "cpu" and ngpu > 0 and not self.key.startswith("HNSW"):
            self._gpu = faiss.index_cpu_to_all_gpus(self._cpu)  # pragma: no cover - needs GPU
            self.device = f"cuda×{ngpu}"  # pragma: no cover
            self._apply_params()  # pragma: no cover

    @property
    def _search_index(self):
        return self._gpu if self._gpu is not None else self._cpu

    def _apply_params(self) -> None:
        faiss = _faiss()
        for name, value in self.params.items():
            if self._gpu is not None:  # pragma: no cover - needs GPU
                faiss.GpuParameterSpace().set_index_parameter(self._gpu, name, value)
            faiss.ParameterSpace().set_index_parameter(self._cpu, name, value)

    def set_params(self, **params: Any) -> "EmbeddingIndex":
        """Set search parameters (``nprobe=`` for IVF, ``efSearch=`` for HNSW)."""
        self.params.update(params)
        self._apply_params()
        return self

    # ---- adding cubes -------------------------------------------------------
    def _check_cube(self, info: CubeInfo, what: str) -> None:
        check_same_space(self.attrs, info.attrs, expected_dim=self.dim, got_dim=info.dim, what=what)
        from pyproj import CRS

        if CRS.from_wkt(info.crs_wkt) != self.crs:
            raise IndexMismatchError(
                f"{what} is in {CRS.from_wkt(info.crs_wkt).to_string()} but the index is in "
                f"{self.crs.to_string()}. Hits are reported in one CRS; reproject the embedding cube "
                "first (emb.rio.reproject(idx.crs, resampling=Resampling.nearest)) or build a "
                "separate index per CRS."
            )

    def _prepare(self, emb: xr.DataArray, source: str | None, what: str):
        emb = canonical(emb)
        info = cube_info(emb)
        if self.sources or self.ntotal:
            self._check_cube(info, what)
        sid = str(source) if source is not None else f"cube{len(self.sources)}"
        if any(s.id == sid for s in self.sources):
            raise ParameterError(f"A source named {sid!r} is already in the index; pass another source=.")
        times = np.asarray(emb["time"].values) if info.has_time else None
        if times is not None and times.dtype == object:
            times = times.astype(str)
        src = _Source(id=sid, transform=info.transform, shape=info.shape, times=times,
                      attrs={k: v for k, v in info.attrs.items()})
        return emb, info, src

    def _collect(self, emb: xr.DataArray, src_no: int):
        """All valid vectors of a cube and their entry metadata (NaN patches dropped)."""
        ny, nx = emb.sizes["y"], emb.sizes["x"]
        xs = np.asarray(emb["x"].values, dtype=np.float64)
        ys = np.asarray(emb["y"].values, dtype=np.float64)
        vecs, meta = [], []
        for t, r0, blk in _iter_cube_vectors(emb):
            d, h, w = blk.shape
            flat = np.ascontiguousarray(blk.reshape(d, h * w).T, dtype=np.float32)
            ok = valid_mask(flat)
            if not ok.any():
                continue
            idx = np.flatnonzero(ok)
            rows = r0 + idx // w
            cols = idx % w
            vecs.append(flat[ok])
            meta.append((np.full(len(idx), t, np.int32), rows.astype(np.int32), cols.astype(np.int32)))
        if not vecs:
            return np.zeros((0, emb.sizes["embedding"]), np.float32), None
        v = np.concatenate(vecs)
        t = np.concatenate([m[0] for m in meta])
        r = np.concatenate([m[1] for m in meta])
        c = np.concatenate([m[2] for m in meta])
        del ny, nx
        return v, (np.full(len(v), src_no, np.int32), t, r, c, xs[c], ys[r])

    def _prep_vectors(self, v: np.ndarray) -> np.ndarray:
        return normalize(v) if self.metric == "cosine" else np.ascontiguousarray(v, np.float32)

    def _append(self, src: _Source, vectors: np.ndarray, meta) -> None:
        start = self.ntotal
        if len(vectors):
            self._cpu.add(vectors)
            if self._gpu is not None:  # pragma: no cover - needs GPU
                self._gpu.add(vectors)
            s, t, r, c, x, y = meta
            self._src = np.concatenate([self._src, s])
            self._t = np.concatenate([self._t, t])
            self._row = np.concatenate([self._row, r])
            self._col = np.concatenate([self._col, c])
            self._x = np.concatenate([self._x, x])
            self._y = np.concatenate([self._y, y])
        self.sources.append(src)
        self._build_lookup(len(self.sources) - 1, start)

    def _build_lookup(self, src_no: int, start: int = 0) -> None:
        src = self.sources[src_no]
        nt = 1 if src.times is None else len(src.times)
        lut = np.full((nt, *src.shape), -1, dtype=np.int64)
        sel = np.flatnonzero(self._src[start:] == src_no) + start
        lut[self._t[sel], self._row[sel], self._col[sel]] = sel
        src.lookup = lut

    def add(self, emb: xr.DataArray, *, source: str | None = None) -> "EmbeddingIndex":
        """Append another cube (more tiles, more times) to the index.

        Parameters
        ----------
        emb:
            Embedding cube from the same model (same ``eoembed:model``,
            ``eoembed:model_version`` and dimension) in the same CRS.
        source:
            Id reported in the ``source`` column of hits (default ``"cube<N>"``).

        Returns
        -------
        EmbeddingIndex
            ``self`` (the index is modified in place). All-NaN patches are skipped.
            The index type is not revisited; call :func:`build_index` again after
            large additions to a ``Flat`` index if search gets slow.

        Raises
        ------
        IndexMismatchError
            Different model, version, dimension or CRS.
        """
        emb, info, src = self._prepare(emb, source, "The cube to add")
        vecs, meta = self._collect(emb, len(self.sources))
        self._append(src, self._prep_vectors(vecs), meta)
        self._cubes[src.id] = emb
        return self

    # ---- vector access --------------------------------------------------------
    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored (normalised) vectors of entry ``ids`` as ``(len(ids), dim)`` float32.

        Exact for Flat/HNSW/IVF-Flat; approximate for SQ8/PQ codes.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._cpu.reconstruct_batch(ids), dtype=np.float32)

    def entries(self, ids: Sequence[int] | np.ndarray | None = None) -> "pd.DataFrame":
        """Entry metadata (id, source, time, row, col, x, y) as a pandas DataFrame."""
        import pandas as pd

        ids = np.arange(self.ntotal) if ids is None else np.asarray(ids, dtype=np.int64)
        df = pd.DataFrame({
            "id": ids,
            "x": self._x[ids],
            "y": self._y[ids],
            "source": [self.sources[s].id for s in self._src[ids]],
            "row": self._row[ids],
            "col": self._col[ids],
        })
        if self.has_time:
            df.insert(3, "time", [self._time_value(s, t) for s, t in zip(self._src[ids], self._t[ids])])
        return df

    def _time_value(self, s: int, t: int):
        times = self.sources[s].times
        return None if times is None else times[t]

    # ---- query resolution -----------------------------------------------------
    def _source_numbers(self, source: str | int | None) -> list[int]:
        if source is None:
            return list(range(len(self.sources)))
        if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
            if not 0 <= int(source) < len(self.sources):
                raise QueryError(f"source={source} out of range; the index has {len(self.sources)} source(s).")
            return [int(source)]
        for i, s in enumerate(self.sources):
            if s.id == str(source):
                return [i]
        raise QueryError(
            f"No source {source!r} in the index; known sources: {[s.id for s in self.sources]}."
        )

    def _time_numbers(self, src: _Source, time: Any) -> np.ndarray:
        nt = 1 if src.times is None else len(src.times)
        if time is None or src.times is None:
            return np.arange(nt)
        if isinstance(time, (int, np.integer)) and not np.issubdtype(src.times.dtype, np.integer):
            return np.array([int(time)])
        want = np.asarray(time).astype(src.times.dtype) if np.issubdtype(src.times.dtype, np.datetime64) else np.asarray(time)
        hit = np.flatnonzero(src.times == want)
        if len(hit) == 0:
            raise QueryError(f"time={time!r} is not in source {src.id!r}; its times are {list(src.times)}.")
        return hit

    def _ids_at_points(self, x: np.ndarray, y: np.ndarray, source, time) -> np.ndarray:
        ids = []
        for s in self._source_numbers(source):
            src = self.sources[s]
            row, col = xy_to_rowcol(src.transform, x, y)
            ok = (row >= 0) & (row < src.shape[0]) & (col >= 0) & (col < src.shape[1])
            if not ok.any():
                continue
            for t in self._time_numbers(src, time):
                got = src.lookup[t, row[ok], col[ok]]
                ids.append(got[got >= 0])
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)

    def _resolve_point(self, xy, crs, source, time):
        try:
            x, y = (float(v) for v in xy)
        except (TypeError, ValueError):
            raise QueryError(f"point= must be an (x, y) pair, got {xy!r}.") from None
        qx, qy = to_crs_xy([x], [y], crs or self.crs_wkt, self.crs_wkt)
        ids = self._ids_at_points(qx, qy, source, time)
        if len(ids) == 0:
            raise QueryError(
                f"No indexed patch at point ({x}, {y}) (in index CRS: ({qx[0]:.1f}, {qy[0]:.1f})). "
                f"It is outside every source cube or on a masked (NaN) patch. Index bounds: {self.bounds()}; "
                "check the point's CRS (pass crs='EPSG:4326' for lon/lat)."
            )
        import shapely

        return self.vectors(ids), shapely.Point(qx[0], qy[0])

    def _resolve_patch(self, patch, source, time):
        try:
            r, c = (int(v) for v in patch)
        except (TypeError, ValueError):
            raise QueryError(f"patch= must be a (row, col) pair, got {patch!r}.") from None
        srcs = self._source_numbers(source)
        if source is None and len(srcs) > 1:
            srcs = srcs[:1]
        src = self.sources[srcs[0]]
        if not (0 <= r < src.shape[0] and 0 <= c < src.shape[1]):
            raise QueryError(f"patch=({r}, {c}) is outside source {src.id!r} of shape {src.shape}.")
        ids = src.lookup[self._time_numbers(src, time), r, c]
        ids = ids[ids >= 0]
        if len(ids) == 0:
            raise QueryError(f"Patch ({r}, {c}) of source {src.id!r} has no valid embedding (masked/NaN).")
        import shapely

        return self.vectors(ids), shapely.Point(self._x[ids[0]], self._y[ids[0]])

    def _resolve_polygon(self, geom, crs, source, time):
        import shapely

        if not isinstance(geom, shapely.Geometry):
            raise QueryError(f"polygon= must be a shapely geometry, got {type(geom).__name__}.")
        g = to_crs_geom(geom, crs or self.crs_wkt, self.crs_wkt)
        x0, y0, x1, y1 = g.bounds
        cand = np.flatnonzero((self._x >= x0) & (self._x <= x1) & (self._y >= y0) & (self._y <= y1))
        if source is not None:
            cand = cand[np.isin(self._src[cand], self._source_numbers(source))]
        if time is not None:
            keep = np.zeros(len(cand), bool)
            for s in np.unique(self._src[cand]):
                ts = self._time_numbers(self.sources[s], time)
                keep |= (self._src[cand] == s) & np.isin(self._t[cand], ts)
            cand = cand[keep]
        ids = cand[shapely.contains_xy(g, self._x[cand], self._y[cand])] if len(cand) else cand
        if len(ids) == 0:
            rp = g.representative_point()
            try:
                return self._resolve_point((rp.x, rp.y), None, source, time)[0], g
            except QueryError:
                raise QueryError(
                    f"The polygon (bounds {tuple(round(b, 1) for b in g.bounds)} in index CRS) contains no "
                    f"indexed patch centre. Index bounds: {self.bounds()}; check the polygon's crs=."
                ) from None
        return self.vectors(ids), g

    def _resolve_vector(self, vector):
        if isinstance(vector, xr.DataArray):
            check_same_space(self.attrs, dict(vector.attrs), expected_dim=self.dim,
                             got_dim=int(vector.size if "embedding" not in vector.dims else vector.sizes["embedding"]),
                             what="The query vector")
            if "embedding" in vector.dims and vector.ndim > 1:
                vector = vector.transpose(..., "embedding").values.reshape(-1, vector.sizes["embedding"])
            else:
                vector = vector.values
        v = np.asarray(vector, dtype=np.float32)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise IndexMismatchError(
                f"Query vector has shape {np.asarray(vector).shape} but the index holds {self.dim}-d vectors "
                f"(model {self.model!r}); a vector from another model or a wrong axis cannot be searched."
            )
        ok = valid_mask(v)
        if not ok.any():
            raise QueryError("Query vector is NaN or all zero (a masked patch?); pick a valid patch.")
        return self._prep_vectors(v[ok]), None

    def _resolve_item(self, item, crs, source, time):
        """One positive/negative example → (vectors, anchor geometry or None)."""
        import shapely

        if isinstance(item, shapely.Point):
            return self._resolve_point((item.x, item.y), crs, source, time)
        if isinstance(item, shapely.Geometry):
            return self._resolve_polygon(item, crs, source, time)
        if isinstance(item, dict) and "patch" in item:
            return self._resolve_patch(item["patch"], item.get("source", source), time)
        if isinstance(item, (tuple, list)) and len(item) == 2 and all(np.isscalar(v) for v in item):
            return self._resolve_point(item, crs, source, time)
        return self._resolve_vector(item)

    def query_vector(
        self,
        *,
        point: tuple[float, float] | None = None,
        patch: tuple[int, int] | None = None,
        polygon: Any = None,
        vector: Any = None,
        positives: Iterable[Any] | None = None,
        negatives: Iterable[Any] | None = None,
        method: str = "mean",
        background: int = 256,
        crs: Any = None,
        source: str | int | None = None,
        time: Any = None,
    ) -> tuple[np.ndarray, list[Any]]:
        """Resolve a query to one unit vector (see :meth:`search` for the arguments).

        Returns
        -------
        (numpy.ndarray, list)
            The ``(dim,)`` float32 query vector (unit length for ``metric="cosine"``)
            and the query's anchor geometries in the index CRS (used by
            ``exclude_radius``; empty for raw vectors).
        """
        given = [n for n, v in dict(point=point, patch=patch, polygon=polygon, vector=vector,
                                    positives=positives).items() if v is not None]
        if len(given) != 1:
            raise QueryError(
                "Give exactly one of point=, patch=, polygon=, vector= or positives= "
                f"(got {given or 'none'}); negatives= goes with positives=."
            )
        if negatives is not None and positives is None:
            raise QueryError("negatives= needs positives= as well.")
        if crs is not None and not (point is not None or polygon is not None or positives is not None):
            raise QueryError("crs= applies to point=, polygon= and positives=/negatives= locations only.")
        anchors: list[Any] = []
        if positives is not None:
            pos = list(positives)
            neg = list(negatives or [])
            if not pos:
                raise QueryError("positives= is empty; give at least one example (point, polygon, patch or vector).")
            pv, nv = [], []
            for it in pos:
                v, a = self._resolve_item(it, crs, source, time)
                pv.append(v)
                anchors.append(a)
            for it in neg:
                v, a = self._resolve_item(it, crs, source, time)
                nv.append(v)
                anchors.append(a)
            if method == "mean":
                p = np.mean([v.mean(axis=0) for v in pv], axis=0)
                q = 2 * p - np.mean([v.mean(axis=0) for v in nv], axis=0) if nv else p
            elif method == "linear":
                q = self._linear_direction(pv, nv, background)
            else:
                raise ParameterError(f"method must be 'mean' or 'linear', got {method!r}.")
        else:
            if point is not None:
                v, a = self._resolve_point(point, crs, source, time)
            elif patch is not None:
                v, a = self._resolve_patch(patch, source, time)
            elif polygon is not None:
                v, a = self._resolve_polygon(polygon, crs, source, time)
            else:
                v, a = self._resolve_vector(vector)
            anchors.append(a)
            q = v.mean(axis=0)
        q = np.asarray(q, dtype=np.float64)
        n = np.linalg.norm(q)
        if not np.isfinite(n) or n == 0:
            raise QueryError(
                "The query resolves to a zero vector (e.g. identical positives and negatives); "
                "use different examples."
            )
        if self.metric == "cosine":
            q = q / n
        return q.astype(np.float32), [a for a in anchors if a is not None]

    def _linear_direction(self, pv: list[np.ndarray], nv: list[np.ndarray], background: int,
                          seed: int = 0) -> np.ndarray:
        """Weight vector of a logistic regression: positives vs negatives + background.

        Explicit negatives alone only teach what separates positives *from them*; a
        direction trained that way can rank unrelated land cover highest. A random
        sample of ``background`` stored vectors joins the negatives with a total weight
        equal to the explicit negatives' (or the positives' when there are none).
        """
        require("sklearn", "search", "method='linear' query refinement")
        from sklearn.linear_model import LogisticRegression

        nb = min(int(background), self.ntotal)
        if not nv and nb == 0:
            raise QueryError(
                "method='linear' needs negatives= (or background > 0) to train a direction."
            )
        npos = sum(len(v) for v in pv)
        nneg = sum(len(v) for v in nv)
        bg = np.zeros((0, self.dim), np.float32)
        if nb:
            rng = np.random.default_rng(seed)
            bg = self.vectors(np.sort(rng.choice(self.ntotal, size=nb, replace=False)))
        X = np.concatenate(pv + nv + [bg])
        y = np.r_[np.ones(npos), np.zeros(nneg + nb)]
        w = np.r_[np.ones(npos + nneg), np.full(nb, (nneg or npos) / max(nb, 1))]
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        clf.fit(X, y, sample_weight=w)
        return clf.coef_[0]

    # ---- search -------------------------------------------------------------
    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Raw batched search: ``(scores, ids)`` arrays of shape ``(m, k)`` (id −1 = none).

        ``vectors`` are used as given (normalise them yourself for ``metric="cosine"``).
        """
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if self.ntotal == 0:
            return np.full((len(v), k), np.nan, np.float32), np.full((len(v), k), -1, np.int64)
        if self._gpu is None and self.key == "Flat" and self.numpy_flat:
            return _numpy_topk(_flat_view(self._cpu), v, int(k))
        return self._search_index.search(v, int(k))

    #: Exact ``Flat`` search on the CPU runs as a blocked numpy matmul + argpartition over
    #: FAISS's own vector store (zero-copy): same results, measured 2-3x faster than
    #: ``IndexFlatIP.search`` for k=100 on 2 cores (benchmarks/bench_search.py). Set to
    #: False to use FAISS.
    numpy_flat: bool = True

    def _excluded(self, anchors: list[Any], radius: float) -> np.ndarray:
        import shapely

        if not anchors or radius <= 0:
            return np.zeros(0, np.int64)
        if all(isinstance(a, shapely.Point) for a in anchors):
            mask = np.zeros(self.ntotal, bool)
            for a in anchors:
                mask |= (self._x - a.x) ** 2 + (self._y - a.y) ** 2 < radius**2
            return np.flatnonzero(mask)
        zone = shapely.union_all(anchors).buffer(radius, quad_segs=32)
        x0, y0, x1, y1 = zone.bounds
        cand = np.flatnonzero((self._x >= x0) & (self._x <= x1) & (self._y >= y0) & (self._y <= y1))
        return cand[shapely.contains_xy(zone, self._x[cand], self._y[cand])]

    def search(
        self,
        *,
        point: tuple[float, float] | None = None,
        patch: tuple[int, int] | None = None,
        polygon: Any = None,
        vector: Any = None,
        positives: Iterable[Any] | None = None,
        negatives: Iterable[Any] | None = None,
        method: str = "mean",
        background: int = 256,
        k: int = 10,
        crs: Any = None,
        exclude_radius: float | None = None,
        source: str | int | None = None,
        time: Any = None,
    ):
        """Top-``k`` patches most similar to a query.

        Parameters
        ----------
        point:
            ``(x, y)`` map coordinate (in ``crs``; default the index CRS). The patch(es)
            containing it are the query (mean over times/sources unless ``time=``/``source=``).
        patch:
            ``(row, col)`` of a patch of ``source`` (default the first source).
        polygon:
            shapely geometry (in ``crs``); the query is the mean of the patches whose
            centres fall inside (or the patch under its representative point if none).
        vector:
            A raw ``(dim,)`` vector, or a DataArray with ``embedding`` dim (its
            ``eoembed:model`` attrs are checked).
        positives, negatives:
            Lists of examples, each a ``(x, y)`` pair, shapely Point/Polygon,
            ``{"patch": (row, col)}`` or a vector. ``method="mean"`` uses
            ``2·mean(pos) − mean(neg)`` (``mean(pos)`` without negatives);
            ``method="linear"`` trains a logistic regression on the positive patch
            vectors vs the negatives plus ``background`` random stored vectors (weak
            negatives) and searches along its weight vector.
        background:
            Number of random stored vectors used as extra negatives by ``method="linear"``.
        k:
            Number of hits.
        crs:
            CRS of ``point``/``polygon``/example coordinates (anything pyproj reads).
        exclude_radius:
            Drop hits whose centre lies closer than this (index CRS units, metres)
            to the query location(s), e.g. to skip the clicked field itself.
        source, time:
            Restrict point/patch/polygon look-ups to one source id and/or one time
            (label or position). Hits always come from the whole index.

        Returns
        -------
        geopandas.GeoDataFrame
            One row per hit, best first: ``rank`` (1…k), ``score`` (cosine similarity
            for ``metric="cosine"``), ``x``, ``y`` (patch centre, index CRS), ``time``
            (if any source has time), ``source``, ``row``, ``col``, ``id`` and
            ``geometry`` (patch centre Point, index CRS). A pandas DataFrame without
            ``geometry`` if geopandas is not installed. Fewer than ``k`` rows when the
            index has fewer entries. Scores are re-computed from the stored vectors
            (float64, reported as float32), so identical vectors score identically;
            equal scores are ordered deterministically: lower source order first (the
            order cubes were added), then row-major ``(row, col)``, then time — on any
            machine, for any FAISS index type, also across the ``k``-th place.

        Raises
        ------
        QueryError
            Bad or empty query, point outside the index or on a masked patch.
        IndexMismatchError
            Query vector of another model or dimension.
        """
        if k < 1:
            raise ParameterError(f"k must be >= 1, got {k}.")
        q, anchors = self.query_vector(point=point, patch=patch, polygon=polygon, vector=vector,
                                       positives=positives, negatives=negatives, method=method,
                                       background=background, crs=crs, source=source, time=time)
        excluded = np.zeros(0, np.int64)
        if exclude_radius:
            if not anchors:
                raise QueryError("exclude_radius= needs a located query (point, patch, polygon or examples).")
            excluded = self._excluded(anchors, float(exclude_radius))
        scores, ids = self._top_k(q, int(k), excluded)
        return self._hits_frame(ids, scores)

    def _top_k(self, q: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` entries for one query, ties broken deterministically.

        Candidates from the index are re-scored in float64 from their stored vectors
        (identical vectors get bit-identical scores, whatever the FAISS/BLAS kernel or
        the entry's position did) and rounded to float32; equal scores are ordered by
        source order, then row, then column, then time. The candidate list grows until
        the ``k``-th score is strictly above the worst candidate (or holds every entry),
        so a tie that straddles the ``k`` boundary is resolved by the same rule.
        """
        n = self.ntotal
        kk = min(n, k + len(excluded) + 16)
        while True:
            _, ids = self.search_vectors(q[None, :], max(kk, 1))
            ids = ids[0]
            ids = ids[ids >= 0]
            if len(excluded):
                ids = ids[~np.isin(ids, excluded)]
            ids = np.unique(ids)
            scores = (self.vectors(ids).astype(np.float64) * q.astype(np.float64)).sum(axis=1)
            scores = scores.astype(np.float32)
            order = np.lexsort((self._t[ids], self._col[ids], self._row[ids], self._src[ids], -scores))
            scores, ids = scores[order], ids[order]
            if kk >= n or len(ids) <= k or scores[k - 1] > scores[-1]:
                return scores[:k], ids[:k]
            kk = min(n, 2 * kk)

    def _hits_frame(self, ids: np.ndarray, scores: np.ndarray):
        df = self.entries(ids)
        df.insert(0, "score", np.asarray(scores, dtype=np.float64))
        df.insert(0, "rank", np.arange(1, len(ids) + 1))
        cols = ["rank", "score", "x", "y"] + (["time"] if self.has_time else []) + ["source", "row", "col", "id"]
        df = df[cols]
        try:
            import geopandas as gpd
        except ImportError:  # pragma: no cover - geopandas is in the same extra
            return df
        return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["x"], df["y"]), crs=self.crs_wkt)

    # ---- similarity maps ------------------------------------------------------
    def similarity_map(self, emb: xr.DataArray | None = None, *, source: str | int | None = None,
                       **query: Any) -> xr.DataArray:
        """Cosine similarity of a query with every patch of a cube.

        Parameters
        ----------
        emb:
            Cube to score (same model/dimension as the index). Default: the cube the
            index was built from (``source``, default the first source); for an index
            loaded from disk the stored vectors are used instead (eager, approximate for
            SQ8/PQ indexes).
        source:
            Which source cube to map when ``emb`` is not given; also restricts
            point/patch/polygon look-ups like in :meth:`search`.
        **query:
            The query, as for :meth:`search`: ``point=``, ``patch=``, ``polygon=``,
            ``vector=``, ``positives=``/``negatives=``, ``method=``, ``crs=``, ``time=``.

        Returns
        -------
        xr.DataArray
            float32 ``(y, x)`` or ``(time, y, x)`` on exactly the cube's grid, CRS
            written, NaN where the cube is NaN. Lazy (chunk-wise) when the cube is
            dask-backed; computed without FAISS.
        """
        q, _ = self.query_vector(source=source, **query)
        if emb is not None:
            info = cube_info(emb, require_crs=False)
            check_same_space(self.attrs, info.attrs, expected_dim=self.dim, got_dim=info.dim,
                             what="The cube to map")
            return similarity_map(emb, q)
        s = self._source_numbers(source)[0]
        src = self.sources[s]
        if src.id in self._cubes:
            return similarity_map(self._cubes[src.id], q)
        return self._similarity_from_store(s, q)

    def _similarity_from_store(self, s: int, q: np.ndarray) -> xr.DataArray:
        src = self.sources[s]
        nt = 1 if src.times is None else len(src.times)
        out = np.full((nt, *src.shape), np.nan, np.float32)
        sel = np.flatnonzero(self._src == s)
        for i in range(0, len(sel), 200_000):
            ids = sel[i:i + 200_000]
            v = self.vectors(ids)
            with np.errstate(invalid="ignore", divide="ignore"):
                sc = (v @ q) / np.linalg.norm(v, axis=1) / np.linalg.norm(q)
            out[self._t[ids], self._row[ids], self._col[ids]] = sc
        a, _, c, _, e, f = src.transform[:6]
        xs = c + a * (np.arange(src.shape[1]) + 0.5)
        ys = f + e * (np.arange(src.shape[0]) + 0.5)
        if src.times is None:
            da_ = xr.DataArray(out[0], dims=("y", "x"), coords={"y": ys, "x": xs}, name="similarity")
        else:
            da_ = xr.DataArray(out, dims=("time", "y", "x"), coords={"time": src.times, "y": ys, "x": xs},
                               name="similarity")
        da_.attrs = {k: v for k, v in src.attrs.items() if k.startswith("eoembed:")}
        da_.attrs["long_name"] = "cosine similarity"
        from affine import Affine

        return da_.rio.write_crs(self.crs_wkt).rio.write_transform(Affine(*src.transform[:6]))

    # ---- evaluation -----------------------------------------------------------
    def recall(self, *, k: int = 10, n_queries: int = 200, seed: int = 0) -> float:
        """Measured recall@``k`` against exact search (stored vectors as queries, self excluded)."""
        rng = np.random.default_rng(seed)
        n = self.ntotal
        qids = rng.choice(n, size=min(n_queries, n), replace=False)
        allv = self.vectors(np.arange(n))
        q = allv[qids]
        _, exact = _numpy_topk(allv, q, k + 1)
        _, approx = self.search_vectors(q, k + 1)
        return recall_at_k(_drop_self(approx, qids, k), _drop_self(exact, qids, k), k)

    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the indexed patch centres (index CRS)."""
        if self.ntotal == 0:
            return (np.nan,) * 4  # type: ignore[return-value]
        return (float(self._x.min()), float(self._y.min()), float(self._x.max()), float(self._y.max()))

    # ---- persistence ----------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write the index to directory ``path`` (created; files overwritten).

        Returns
        -------
        str
            The directory path. Contents: ``index.faiss``, ``meta.json``, ``entries.npz``.
        """
        faiss = _faiss()
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        faiss.write_index(self._cpu, os.path.join(path, "index.faiss"))
        meta = {
            "format": "eoembed-index",
            "format_version": _FORMAT_VERSION,
            "key": self.key,
            "metric": self.metric,
            "params": self.params,
            "tuning": self.tuning,
            "crs_wkt": self.crs_wkt,
            "dim": self.dim,
            "model": self.model,
            "attrs": self.attrs,
            "ntotal": self.ntotal,
            "sources": [s.to_json() for s in self.sources],
        }
        with open(os.path.join(path, "meta.json"), "w") as fh:
            json.dump(meta, fh, indent=1, default=str)
        arrays = dict(source=self._src, t=self._t, row=self._row, col=self._col, x=self._x, y=self._y)
        for i, s in enumerate(self.sources):
            if s.times is not None:
                arrays[f"times_{i}"] = s.times
        np.savez(os.path.join(path, "entries.npz"), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto") -> "EmbeddingIndex":
        """Read an index written by :meth:`save`.

        Returns
        -------
        EmbeddingIndex
            With its coordinates, CRS, model identity, attrs and search parameters.
            The source cubes themselves are not stored: :meth:`similarity_map` without
            ``emb=`` uses the stored vectors.
        """
        faiss = _faiss()
        path = os.fspath(path)
        try:
            with open(os.path.join(path, "meta.json")) as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path!r} is not a saved eoembed index (no meta.json).") from None
        if meta.get("format") != "eoembed-index" or meta.get("format_version", 0) > _FORMAT_VERSION:
            raise IndexMismatchError(f"{path!r} holds an unsupported index format {meta.get('format_version')}.")
        cpu = faiss.read_index(os.path.join(path, "index.faiss"))
        self = cls(cpu, key=meta["key"], metric=meta["metric"], params=meta["params"],
                   crs_wkt=meta["crs_wkt"], dim=meta["dim"], attrs=meta["attrs"], device="cpu")
        self.tuning = meta.get("tuning", {})
        with np.load(os.path.join(path, "entries.npz"), allow_pickle=False) as z:
            self._src, self._t, self._row, self._col = z["source"], z["t"], z["row"], z["col"]
            self._x, self._y = z["x"], z["y"]
            for i, s in enumerate(meta["sources"]):
                times = z[f"times_{i}"] if s["has_time"] else None
                self.sources.append(_Source(id=s["id"], transform=tuple(s["transform"]),
                                            shape=tuple(s["shape"]), times=times, attrs=s["attrs"]))
        for i in range(len(self.sources)):
            self._build_lookup(i)
        _enable_reconstruct(self._cpu)
        self._apply_params()
        self._set_device(device)
        return self


# ---------------------------------------------------------------------------------
# exact search without FAISS' heap (faster for batched/large-k queries on CPU)
# ---------------------------------------------------------------------------------
def _flat_view(index: Any) -> np.ndarray:
    """Zero-copy ``(ntotal, d)`` view of an ``IndexFlat``'s vectors."""
    faiss = _faiss()
    n, d = index.ntotal, index.d
    return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)


def _numpy_topk(X: np.ndarray, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of ``Q`` against ``X`` (rows), best first; pads with -1/-inf."""
    n = len(X)
    kk = min(k, n)
    bs = max(4096, (1 << 24) // max(len(Q), 1))  # ≤ 64 MB of scores per block
    S, I = [], []
    for i in range(0, n, bs):
        s = Q @ X[i:i + bs].T
        kb = min(kk, s.shape[1])
        p = np.argpartition(-s, kb - 1, axis=1)[:, :kb] if kb < s.shape[1] else np.broadcast_to(
            np.arange(s.shape[1]), s.shape)
        S.append(np.take_along_axis(s, p, axis=1))
        I.append(p + i)
    S, I = np.concatenate(S, axis=1), np.concatenate(I, axis=1)
    if S.shape[1] > kk:
        p = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        S, I = np.take_along_axis(S, p, axis=1), np.take_along_axis(I, p, axis=1)
    o = np.argsort(-S, axis=1, kind="stable")
    S, I = np.take_along_axis(S, o, axis=1), np.take_along_axis(I, o, axis=1).astype(np.int64)
    if kk < k:
        S = np.pad(S, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        I = np.pad(I, ((0, 0), (0, k - kk)), constant_values=-1)
    return S.astype(np.float32), I


# ---------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------
def _enable_reconstruct(index: Any) -> None:
    faiss = _faiss()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.make_direct_map()


def _drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(ids), k), -1, np.int64)
    for i, (row, me) in enumerate(zip(ids, self_ids)):
        row = row[row != me][:k]
        out[i, : len(row)] = row
    return out


def _tune(index: Any, key: str, data: np.ndarray, *, target: float, k: int, seed: int) -> tuple[dict, dict]:
    """Smallest nprobe/efSearch reaching ``target`` recall@k on sampled stored vectors."""
    faiss = _faiss()
    if key == "Flat":
        return {}, {"recall@10": 1.0}
    rng = np.random.default_rng(seed)
    qids = rng.choice(len(data), size=min(_TUNE_QUERIES, len(data)), replace=False)
    # Stored vectors make easy queries (graph/list members, own entry a free hit). The
    # tuning queries are stored vectors moved by Gaussian noise as large as the typical
    # distance to their nearest other neighbour, i.e. "new" vectors as far from the data
    # as the data are from each other; their own entry is also excluded from both lists.
    q0 = data[qids]
    s0, i0 = _numpy_topk(data, q0, 2)
    nn = np.where(i0[:, 0] == qids, s0[:, 1], s0[:, 0])
    norm = float(np.median(np.linalg.norm(q0, axis=1)))
    scale = norm * float(np.median(np.sqrt(np.clip(2 - 2 * nn / norm**2, 0, None))))
    q = q0 + rng.standard_normal(q0.shape).astype(np.float32) * (scale / np.sqrt(q0.shape[1]))
    q = np.ascontiguousarray(q, dtype=np.float32)
    _, exact = _numpy_topk(data, q, k + 1)
    exact = _drop_self(exact, qids, k)
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
        rec = recall_at_k(_drop_self(approx, qids, k), exact, k)
        if rec >= goal:
            chosen = v
            break
    ps.set_index_parameter(index, name, chosen)
    return {name: int(chosen)}, {f"recall@{k}": round(rec, 4), "n_queries": int(len(q)), "target": target}


def build_index(
    emb: xr.DataArray,
    *,
    kind: str = "auto",
    metric: str = "cosine",
    device: str = "auto",
    source: str | None = None,
    max_memory: int | str | None = "8G",
    target_recall: float = 0.95,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> EmbeddingIndex:
    """Build a georeferenced FAISS index over the valid patches of an embedding cube.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` from :func:`eoembed.embed` (numpy or
        dask; dask cubes are computed one row of chunks at a time). All-NaN (masked)
        patches are not indexed and can never be hits.
    kind:
        ``"auto"`` (:func:`choose_index_key` on the number of valid patches), ``"flat"``
        (exact), ``"hnsw"``, ``"ivf"``, or any FAISS factory string (``"IVF1024,Flat"``).
    metric:
        ``"cosine"`` (vectors L2-normalised, inner product; default) or ``"ip"`` (raw
        inner product).
    device:
        ``"auto"`` (GPU when ``faiss.get_num_gpus() > 0``, else CPU), ``"cpu"`` or
        ``"cuda"`` (error without GPU).
    source:
        Id of this cube in hits' ``source`` column (default ``"cube0"``).
    max_memory:
        Index memory budget for :func:`choose_index_key`.
    target_recall:
        For approximate indexes, ``nprobe``/``efSearch`` are raised until recall@10
        against exact search reaches this (+0.01 margin), measured with up to 500
        sampled stored vectors perturbed by noise of their nearest-neighbour distance
        (stand-ins for new queries; own entry excluded); the measured value is in
        ``idx.tuning``.
    params:
        Explicit search parameters (skips tuning), e.g. ``{"nprobe": 64}``.
    seed:
        Seed for training/tuning samples.

    Returns
    -------
    EmbeddingIndex
        In memory (eager); keeps a reference to ``emb`` for :meth:`EmbeddingIndex.similarity_map`.

    Raises
    ------
    EmptyDataError
        The cube has no valid patch.
    MissingCRSError, DimensionError
        The cube is not a georeferenced embedding cube.
    MissingOptionalDependency
        faiss is not installed (``pip install 'eoembed[search]'``).
    """
    faiss = _faiss()
    if metric not in ("cosine", "ip"):
        raise ParameterError(f"metric must be 'cosine' or 'ip', got {metric!r}.")
    emb = canonical(emb)
    info = cube_info(emb)
    stub = EmbeddingIndex(faiss.IndexFlatIP(info.dim), key="Flat", metric=metric, params={},
                          crs_wkt=info.crs_wkt, dim=info.dim, attrs=info.attrs, device="cpu")
    emb, info, src = stub._prepare(emb, source if source is not None else "cube0", "cube")
    raw, meta = stub._collect(emb, 0)
    if len(raw) == 0:
        raise EmptyDataError(
            "The embedding cube has no valid patch (all NaN); nothing to index. Check the input "
            "cube's validity mask / cloud masking."
        )
    data = stub._prep_vectors(raw)
    del raw
    n, d = data.shape
    kind_l = kind.lower()
    if kind_l == "auto":
        key = choose_index_key(n, d, max_memory=max_memory)
    elif kind_l in ("flat", "exact"):
        key = "Flat"
    elif kind_l == "hnsw":
        key = "HNSW32"
    elif kind_l == "ivf":
        key = f"IVF{nb_clusters(n)},Flat"
    else:
        key = kind
    index = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        nlist = faiss.extract_index_ivf(index).nlist if "IVF" in key else 256
        ntrain = min(n, max(64 * nlist, 10_000))
        train = data[np.sort(rng.choice(n, size=ntrain, replace=False))] if ntrain < n else data
        if nlist > n:
            raise ParameterError(f"Index {key!r} needs at least {nlist} vectors to train; the cube has {n}.")
        try:
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.niter = 10
            ivf.cp.max_points_per_centroid = 64
        except RuntimeError:
            pass
        index.train(train)
    if "IVF" in key:
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.Array)
    t0 = _time.perf_counter()
    index.add(data)
    if params:
        tuned, tuning = dict(params), {"explicit": True}
        ps = faiss.ParameterSpace()
        for name, value in tuned.items():
            ps.set_index_parameter(index, name, value)
    else:
        tuned, tuning = _tune(index, key, data, target=target_recall, k=10, seed=seed)
    del data
    idx = EmbeddingIndex(index, key=key, metric=metric, params=tuned, crs_wkt=info.crs_wkt, dim=d,
                         attrs=info.attrs, device="cpu")
    idx.tuning = {**tuning, "add_seconds": round(_time.perf_counter() - t0, 3)}
    idx._src, idx._t, idx._row, idx._col, idx._x, idx._y = meta
    idx.sources.append(src)
    idx._build_lookup(0)
    idx._cubes[src.id] = emb
    idx._set_device(device)
    return idx
