"""Queries: what the user points at (a map point, a patch, a polygon, a vector, examples)
and how it becomes one query vector.

:class:`Query` holds the arguments that :meth:`EmbeddingIndex.search`,
:meth:`~EmbeddingIndex.similarity_map` and :meth:`~EmbeddingIndex.query_vector` share
(they accept them as keywords and build a ``Query``); :func:`resolve` turns it into a
vector with the index's entries and stored vectors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import numpy as np
import xarray as xr

from eoembed.cube import check_same_space, valid_mask
from eoembed.exceptions import IndexMismatchError, ParameterError, QueryError
from eoembed.index.entries import EntryTable

__all__ = ["IndexView", "Query", "resolve"]


@dataclass(frozen=True)
class Query:
    """One similarity query. Give exactly one of ``point``, ``patch``, ``polygon``,
    ``vector`` or ``positives``.

    Parameters
    ----------
    point:
        ``(x, y)`` map coordinate or shapely Point (in ``crs``; default the index CRS). The patch(es)
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
        ``method="linear"`` searches along the weight vector of a logistic regression
        of the positive vectors against the negatives plus ``background`` random stored
        vectors (:func:`eoembed.classify.linear_direction`).
    method, background:
        See ``positives``.
    crs:
        CRS of ``point``/``polygon``/example coordinates (anything pyproj reads).
    source, time:
        Restrict point/patch/polygon look-ups to one source id and/or one time
        (label or position). Hits always come from the whole index.
    """

    point: tuple[float, float] | None = None
    patch: tuple[int, int] | None = None
    polygon: Any = None
    vector: Any = None
    positives: Iterable[Any] | None = None
    negatives: Iterable[Any] | None = None
    method: str = "mean"
    background: int = 256
    crs: Any = None
    source: str | int | None = None
    time: Any = None

    def __post_init__(self) -> None:
        given = [f for f in ("point", "patch", "polygon", "vector", "positives") if getattr(self, f) is not None]
        if len(given) != 1:
            raise QueryError(
                "Give exactly one of point=, patch=, polygon=, vector= or positives= "
                f"(got {given or 'none'}); negatives= goes with positives=."
            )
        if self.negatives is not None and self.positives is None:
            raise QueryError("negatives= needs positives= as well.")
        if self.crs is not None and not (self.point is not None or self.polygon is not None
                                         or self.positives is not None):
            raise QueryError("crs= applies to point=, polygon= and positives=/negatives= locations only.")
        if self.method not in ("mean", "linear"):
            raise ParameterError(f"method must be 'mean' or 'linear', got {self.method!r}.")

    @classmethod
    def build(cls, query: "Query | None" = None, **kwargs: Any) -> "Query":
        """``query`` updated with ``kwargs`` (or a new Query from them), unknown names refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ParameterError(f"Unknown query argument(s) {unknown}; a query takes {sorted(names)}.")
        if query is None:
            return cls(**kwargs)
        if not isinstance(query, Query):
            raise ParameterError(f"query must be an eoembed.index.Query, got {type(query).__name__}.")
        return dataclasses.replace(query, **kwargs) if kwargs else query


# ---- resolution ------------------------------------------------------------------------
class IndexView(Protocol):
    """What query resolution reads from an index (:class:`~eoembed.index.EmbeddingIndex` is one).

    Declared here so that resolution never imports :mod:`eoembed.index.core` (which imports it).
    """

    entries_table: EntryTable
    crs_wkt: str
    dim: int
    attrs: dict[str, Any]
    metric: str
    model: str
    ntotal: int

    def vectors(self, ids: Any) -> np.ndarray: ...  # noqa: E704
    def prep_vectors(self, v: np.ndarray) -> np.ndarray: ...  # noqa: E704
    def bounds(self) -> tuple[float, float, float, float]: ...  # noqa: E704


def _point(idx: IndexView, xy, crs, source, time):
    if getattr(xy, "geom_type", None) == "Point":  # a shapely Point
        xy = (xy.x, xy.y)
    try:
        x, y = (float(v) for v in xy)
    except (TypeError, ValueError):
        raise QueryError(f"point= must be an (x, y) pair, got {xy!r}.") from None
    ids, geoms = idx.entries_table.ids_at((x, y), crs, idx.crs_wkt, source, time)
    if len(ids) == 0:
        p = geoms[0]
        raise QueryError(
            f"No indexed patch at point ({x}, {y}) (in index CRS: ({p.x:.1f}, {p.y:.1f})). "
            f"It is outside every source cube or on a masked (NaN) patch. Index bounds: {idx.bounds()}; "
            "check the point's CRS (pass crs='EPSG:4326' for lon/lat)."
        )
    return idx.vectors(ids), geoms[0]


def _patch(idx: IndexView, patch, source, time):
    try:
        r, c = (int(v) for v in patch)
    except (TypeError, ValueError):
        raise QueryError(f"patch= must be a (row, col) pair, got {patch!r}.") from None
    table = idx.entries_table
    src = table.sources[table.source_numbers(source)[0]]
    if not (0 <= r < src.shape[0] and 0 <= c < src.shape[1]):
        raise QueryError(f"patch=({r}, {c}) is outside source {src.id!r} of shape {src.shape}.")
    ids = src.lookup[table.time_numbers(src, time), r, c]
    ids = ids[ids >= 0]
    if len(ids) == 0:
        raise QueryError(f"Patch ({r}, {c}) of source {src.id!r} has no valid embedding (masked/NaN).")
    import shapely

    return idx.vectors(ids), shapely.Point(table.x[ids[0]], table.y[ids[0]])


def _polygon(idx: IndexView, geom, crs, source, time):
    import shapely

    if not isinstance(geom, shapely.Geometry):
        raise QueryError(f"polygon= must be a shapely geometry, got {type(geom).__name__}.")
    ids, geoms = idx.entries_table.ids_at(geom, crs, idx.crs_wkt, source, time)
    if len(ids) == 0:
        g = geoms[0]
        raise QueryError(
            f"The polygon (bounds {tuple(round(b, 1) for b in g.bounds)} in index CRS) contains no indexed patch "
            f"centre, and the patch under it is off every source or masked (NaN). Index bounds: {idx.bounds()}; "
            "check the polygon's crs=."
        )
    return idx.vectors(ids), geoms[0]


def _vector(idx: IndexView, vector):
    if isinstance(vector, xr.DataArray):
        check_same_space(idx.attrs, dict(vector.attrs), expected_dim=idx.dim,
                         got_dim=int(vector.size if "embedding" not in vector.dims else vector.sizes["embedding"]),
                         what="The query vector")
        if "embedding" in vector.dims and vector.ndim > 1:
            vector = vector.transpose(..., "embedding").values.reshape(-1, vector.sizes["embedding"])
        else:
            vector = vector.values
    v = np.asarray(vector, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != idx.dim:
        raise IndexMismatchError(
            f"Query vector has shape {np.asarray(vector).shape} but the index holds {idx.dim}-d vectors "
            f"(model {idx.model!r}); a vector from another model or a wrong axis cannot be searched."
        )
    ok = valid_mask(v)
    if not ok.any():
        raise QueryError("Query vector is NaN or all zero (a masked patch?); pick a valid patch.")
    return idx.prep_vectors(v[ok]), None


def _example(idx: IndexView, item, crs, source, time):
    """One positive/negative example → (vectors, anchor geometry or None)."""
    import shapely

    if isinstance(item, shapely.Point):
        return _point(idx, (item.x, item.y), crs, source, time)
    if isinstance(item, shapely.Geometry):
        return _polygon(idx, item, crs, source, time)
    if isinstance(item, dict) and "patch" in item:
        return _patch(idx, item["patch"], item.get("source", source), time)
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(np.isscalar(v) for v in item):
        return _point(idx, item, crs, source, time)
    return _vector(idx, item)


def resolve(query: Query, idx: IndexView, *, seed: int = 0) -> tuple[np.ndarray, list[Any]]:
    """The query's ``(dim,)`` float32 vector (unit length for ``metric="cosine"``) and its
    anchor geometries in the index CRS (for ``exclude_radius``; empty for raw vectors)."""
    q_, crs, source, time = query, query.crs, query.source, query.time
    anchors: list[Any] = []
    if q_.positives is not None:
        pos, neg = list(q_.positives), list(q_.negatives or [])
        if not pos:
            raise QueryError("positives= is empty; give at least one example (point, polygon, patch or vector).")
        pv, nv = [], []
        for it in pos:
            v, a = _example(idx, it, crs, source, time)
            pv.append(v)
            anchors.append(a)
        for j, it in enumerate(neg):
            v, a = _example(idx, it, crs, source, time)
            for i, w in enumerate(pv):
                if v.shape == w.shape and np.array_equal(v, w):
                    raise QueryError(
                        f"negatives[{j}] is the same example as positives[{i}] (identical vectors): it would "
                        "cancel itself out of the query. Identical positives and negatives are refused; drop it "
                        "from one of the lists."
                    )
            nv.append(v)
            anchors.append(a)
        if q_.method == "mean":
            p = np.mean([v.mean(axis=0) for v in pv], axis=0)
            q = 2 * p - np.mean([v.mean(axis=0) for v in nv], axis=0) if nv else p
        else:
            from eoembed.classify import linear_direction

            nb = min(int(q_.background), idx.ntotal)
            bg = np.zeros((0, idx.dim), np.float32)
            if nb:
                rng = np.random.default_rng(seed)
                bg = idx.vectors(np.sort(rng.choice(idx.ntotal, size=nb, replace=False)))
            q = linear_direction(pv, nv, bg)
    else:
        if q_.point is not None:
            v, a = _point(idx, q_.point, crs, source, time)
        elif q_.patch is not None:
            v, a = _patch(idx, q_.patch, source, time)
        elif q_.polygon is not None:
            v, a = _polygon(idx, q_.polygon, crs, source, time)
        else:
            v, a = _vector(idx, q_.vector)
        anchors.append(a)
        q = v.mean(axis=0)
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n == 0:
        raise QueryError(
            "The query resolves to a zero vector (e.g. identical positives and negatives); "
            "use different examples."
        )
    if idx.metric == "cosine":
        q = q / n
    return q.astype(np.float32), [a for a in anchors if a is not None]
