"""The :class:`EmbeddingIndex` (entries + vectors + queries) and :func:`build_index`."""

from __future__ import annotations

import json
import os
import zipfile
import time as _time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import xarray as xr

from eoembed.cube import CubeInfo, check_same_space, cube_info, normalize
from eoembed.exceptions import EmptyDataError, IndexMismatchError, ParameterError, QueryError
from eoembed.index.backend import VectorStore, faiss_module, numpy_topk, train_index
from eoembed.index.choice import choose_index_key, drop_self, nb_clusters, recall_at_k, tune
from eoembed.index.entries import EntryTable, Source, collect, prepare_source
from eoembed.index.query import Query, resolve
from eoembed.index.similarity import similarity_from_store, similarity_map

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["EmbeddingIndex", "build_index"]

_FORMAT_VERSION = 1


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
    sources: the indexed cubes (id, grid, times, attrs), in the order they were added.
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
        entries: EntryTable | None = None,
    ) -> None:
        self._store = cpu_index if isinstance(cpu_index, VectorStore) else VectorStore(
            cpu_index, key=key, params=params, device=device)
        self.metric = metric
        self.crs_wkt = crs_wkt
        self.dim = int(dim)
        self.attrs = dict(attrs)
        self.tuning: dict[str, Any] = {}
        self.entries_table = entries if entries is not None else EntryTable()
        self._cubes: dict[str, xr.DataArray] = {}

    # ---- properties -----------------------------------------------------------
    key = property(lambda self: self._store.key, doc="FAISS factory string.")
    params = property(lambda self: self._store.params, doc="Search parameters.")
    device = property(lambda self: self._store.device, doc='``"cpu"`` or ``"cuda×N"``.')
    sources = property(lambda self: self.entries_table.sources, doc="The indexed cubes, in order.")
    _cpu = property(lambda self: self._store.cpu)

    @property
    def numpy_flat(self) -> bool:
        """Exact CPU search as numpy matmul + argpartition (see :class:`eoembed.index.backend.VectorStore`)."""
        return self._store.numpy_flat

    @numpy_flat.setter
    def numpy_flat(self, value: bool) -> None:
        self._store.numpy_flat = bool(value)

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
        return self._store.ntotal

    @property
    def has_time(self) -> bool:
        """Whether any source cube has a ``time`` dimension."""
        return self.entries_table.has_time

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"<EmbeddingIndex {self.key!r} ({self.metric}{', ' + p if p else ''}) on {self.device}: "
            f"{self.ntotal} patches × {self.dim} from {len(self.sources)} source(s), "
            f"model={self.model!r}, crs={self.crs.to_string()}>"
        )

    def set_params(self, **params: Any) -> "EmbeddingIndex":
        """Set search parameters (``nprobe=`` for IVF, ``efSearch=`` for HNSW)."""
        self._store.params.update(params)
        self._store.apply_params()
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

    def prep_vectors(self, v: np.ndarray) -> np.ndarray:
        """Vectors as stored: L2-normalised for ``metric="cosine"``, float32 contiguous."""
        return normalize(v) if self.metric == "cosine" else np.ascontiguousarray(v, np.float32)

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
        emb, info, src = prepare_source(emb, source, self.sources)
        if self.sources or self.ntotal:
            self._check_cube(info, "The cube to add")
        vecs, columns = collect(emb, len(self.sources))
        self._store.add(self.prep_vectors(vecs))
        self.entries_table.append(src, columns)
        self._cubes[src.id] = emb
        return self

    # ---- vector access --------------------------------------------------------
    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored (normalised) vectors of entry ``ids`` as ``(len(ids), dim)`` float32.

        Exact for Flat/HNSW/IVF-Flat; approximate for SQ8/PQ codes.
        """
        return self._store.reconstruct(np.asarray(ids))

    def entries(self, ids: Sequence[int] | np.ndarray | None = None) -> "pd.DataFrame":
        """Entry metadata (id, source, time, row, col, x, y) as a pandas DataFrame."""
        return self.entries_table.frame(None if ids is None else np.asarray(ids, dtype=np.int64))

    # ---- queries ------------------------------------------------------------------
    def query_vector(self, query: Query | None = None, **kwargs: Any) -> tuple[np.ndarray, list[Any]]:
        """Resolve a query to one vector: a :class:`~eoembed.index.Query`, or its fields as
        keywords (``point=``, ``patch=``, ``polygon=``, ``vector=``, ``positives=``/
        ``negatives=``, ``method=``, ``background=``, ``crs=``, ``source=``, ``time=``).

        Returns
        -------
        (numpy.ndarray, list)
            The ``(dim,)`` float32 query vector (unit length for ``metric="cosine"``)
            and the query's anchor geometries in the index CRS (used by
            ``exclude_radius``; empty for raw vectors).
        """
        return resolve(Query.build(query, **kwargs), self)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Raw batched search: ``(scores, ids)`` arrays of shape ``(m, k)`` (id −1 = none).

        ``vectors`` are used as given (normalise them yourself for ``metric="cosine"``).
        Ties come in the backend's order; :meth:`search` orders them deterministically.
        """
        from eoembed.validate import check_query_vectors, check_top_k

        vectors = check_query_vectors(vectors, self.dim)
        return self._store.search(np.ascontiguousarray(vectors, np.float32), check_top_k(k))

    def _excluded(self, anchors: list[Any], radius: float) -> np.ndarray:
        import shapely

        t = self.entries_table
        if not anchors or radius <= 0:
            return np.zeros(0, np.int64)
        if all(isinstance(a, shapely.Point) for a in anchors):
            mask = np.zeros(self.ntotal, bool)
            for a in anchors:
                mask |= (t.x - a.x) ** 2 + (t.y - a.y) ** 2 < radius**2
            return np.flatnonzero(mask)
        zone = shapely.union_all(anchors).buffer(radius, quad_segs=32)
        x0, y0, x1, y1 = zone.bounds
        cand = np.flatnonzero((t.x >= x0) & (t.x <= x1) & (t.y >= y0) & (t.y <= y1))
        return cand[shapely.contains_xy(zone, t.x[cand], t.y[cand])]

    def search(self, query: Query | None = None, *, k: int = 10, exclude_radius: float | None = None,
               **kwargs: Any):
        """Top-``k`` patches most similar to a query.

        Parameters
        ----------
        query:
            A :class:`~eoembed.index.Query`, or give its fields as keywords: ``point=``,
            ``patch=``, ``polygon=``, ``vector=``, ``positives=``/``negatives=`` (with
            ``method=``, ``background=``), ``crs=``, ``source=``, ``time=`` — see
            :class:`~eoembed.index.Query` for what each means.
        k:
            Number of hits.
        exclude_radius:
            Drop hits whose centre lies closer than this (index CRS units, metres)
            to the query location(s), e.g. to skip the clicked field itself.

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
        q, anchors = self.query_vector(query, **kwargs)
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
        t = self.entries_table
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
            order = np.lexsort((t.t[ids], t.col[ids], t.row[ids], t.src[ids], -scores))
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
    def similarity_map(self, emb: xr.DataArray | None = None, *, query: Query | None = None,
                       **kwargs: Any) -> xr.DataArray:
        """Cosine similarity of a query with every patch of a cube.

        Parameters
        ----------
        emb:
            Cube to score (same model/dimension as the index). Default: the cube the
            index was built from (``source``, default the first source); for an index
            loaded from disk the stored vectors are used instead (eager, approximate for
            SQ8/PQ indexes).
        query, **kwargs:
            The query, as for :meth:`search` (a :class:`~eoembed.index.Query` or its
            fields as keywords). ``source=`` also picks which source cube to map when
            ``emb`` is not given.

        Returns
        -------
        xr.DataArray
            float32 ``(y, x)`` or ``(time, y, x)`` on exactly the cube's grid, CRS
            written, NaN where the cube is NaN. Lazy (chunk-wise) when the cube is
            dask-backed; computed without FAISS.
        """
        query = Query.build(query, **kwargs)
        q, _ = resolve(query, self)
        if emb is not None:
            info = cube_info(emb, require_crs=False)
            check_same_space(self.attrs, info.attrs, expected_dim=self.dim, got_dim=info.dim,
                             what="The cube to map")
            return similarity_map(emb, q)
        s = self.entries_table.source_numbers(query.source)[0]
        src = self.sources[s]
        if src.id in self._cubes:
            return similarity_map(self._cubes[src.id], q)
        return similarity_from_store(self.entries_table, self.vectors, self.crs_wkt, s, q)

    # ---- evaluation -----------------------------------------------------------
    def recall(self, *, k: int = 10, n_queries: int = 200, seed: int = 0) -> float:
        """Measured recall@``k`` against exact search (stored vectors as queries, self excluded)."""
        rng = np.random.default_rng(seed)
        n = self.ntotal
        qids = rng.choice(n, size=min(n_queries, n), replace=False)
        allv = self.vectors(np.arange(n))
        q = allv[qids]
        _, exact = numpy_topk(allv, q, k + 1)
        _, approx = self.search_vectors(q, k + 1)
        return recall_at_k(drop_self(approx, qids, k), drop_self(exact, qids, k), k)

    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the indexed patch centres (index CRS)."""
        return self.entries_table.bounds()

    # ---- persistence ----------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write the index to directory ``path`` (created; files overwritten).

        Returns
        -------
        str
            The directory path. Contents: ``index.faiss`` (the CPU index),
            ``meta.json`` (key, metric, search parameters, CRS WKT, model identity and
            cube attrs, sources) and ``entries.npz`` (per-entry source/time/row/col/x/y
            and per-source times).
        """
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self._store.write(path)
        sources = self.entries_table.save(path)
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
            "sources": sources,
        }
        with open(os.path.join(path, "meta.json"), "w") as fh:
            json.dump(meta, fh, indent=1, default=str)
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
        path = os.fspath(path)
        rebuild = "Rebuild it: eoembed.build_index(emb).save(path) (or restore the folder from a backup)."
        try:
            with open(os.path.join(path, "meta.json")) as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path!r} is not a saved eoembed index (no meta.json).") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise IndexMismatchError(f"{path!r}: meta.json is damaged (not JSON: {err}). {rebuild}") from None
        if not isinstance(meta, dict):
            raise IndexMismatchError(f"{path!r}: meta.json holds no index description. {rebuild}")
        if meta.get("format") != "eoembed-index" or meta.get("format_version", 0) > _FORMAT_VERSION:
            raise IndexMismatchError(f"{path!r} holds an unsupported index format {meta.get('format_version')}.")
        try:
            store = VectorStore.read(path, key=meta["key"], params=meta["params"], device=device)
            self = cls(store, key=meta["key"], metric=meta["metric"], params=meta["params"],
                       crs_wkt=meta["crs_wkt"], dim=meta["dim"], attrs=meta["attrs"],
                       entries=EntryTable.load(path, meta["sources"]))
        except KeyError as err:
            raise IndexMismatchError(f"{path!r}: meta.json lacks {err}. {rebuild}") from None
        except (OSError, RuntimeError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, (IndexMismatchError, FileNotFoundError)):
                raise
            raise IndexMismatchError(f"{path!r}: the index files are damaged or truncated "
                                     f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}). "
                                     f"{rebuild}") from err
        self.tuning = meta.get("tuning", {})
        return self


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
        Index memory budget for :func:`choose_index_key` (bytes, or ``"8G"`` = 8·10⁹).
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
    faiss = faiss_module()
    if metric not in ("cosine", "ip"):
        raise ParameterError(f"metric must be 'cosine' or 'ip', got {metric!r}.")
    emb, info, src = prepare_source(emb, source if source is not None else "cube0", [])
    raw, columns = collect(emb, 0)
    if len(raw) == 0:
        raise EmptyDataError(
            "The embedding cube has no valid patch (every vector NaN or all zeros); nothing to index. Check the "
            "input cube's validity mask / cloud masking, or the product's nodata (a zero vector marks no data)."
        )
    data = normalize(raw) if metric == "cosine" else np.ascontiguousarray(raw, np.float32)
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
    index = train_index(key, data, seed=seed)
    t0 = _time.perf_counter()
    index.add(data)
    if params:
        tuned, tuning = dict(params), {"explicit": True}
        ps = faiss.ParameterSpace()
        for name, value in tuned.items():
            ps.set_index_parameter(index, name, value)
    else:
        tuned, tuning = tune(index, key, data, target=target_recall, k=10, seed=seed)
    del data
    entries = EntryTable()
    entries.append(src, columns)
    idx = EmbeddingIndex(VectorStore(index, key=key, params=tuned, device=device), key=key, metric=metric,
                         params=tuned, crs_wkt=info.crs_wkt, dim=d, attrs=info.attrs, entries=entries)
    idx.tuning = {**tuning, "add_seconds": round(_time.perf_counter() - t0, 3)}
    idx._cubes[src.id] = emb
    return idx
