"""The entry table: where every indexed vector came from, and its persistence.

One row per indexed patch vector (same order as the FAISS ids): source cube number,
time position, patch row/col and patch-centre x/y in the index CRS. Per source: its
id, grid (transform, shape), times, attrs and a ``(T, ny, nx)`` lookup of entry ids.
Needs no FAISS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eoembed.cube import PatchGrid, canonical, cube_info, locate_patches, valid_mask
from eoembed.exceptions import ParameterError, QueryError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from eoembed.cube import CubeInfo

__all__ = ["EntryTable", "Source", "collect", "prepare_source"]

_COLUMNS = ("src", "t", "row", "col", "x", "y")
_DTYPES = (np.int32, np.int32, np.int32, np.int32, np.float64, np.float64)


@dataclass
class Source:
    """One cube in the index: its id, grid, times and attrs."""

    id: str
    transform: tuple[float, ...]
    shape: tuple[int, int]
    times: np.ndarray | None
    attrs: dict[str, Any] = field(default_factory=dict)
    lookup: np.ndarray | None = None  # (T, ny, nx) int64 entry id or -1

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "transform": list(self.transform), "shape": list(self.shape),
                "has_time": self.times is not None, "attrs": self.attrs}


def prepare_source(emb: xr.DataArray, source: str | None, existing: list[Source]) -> tuple[xr.DataArray, "CubeInfo", Source]:
    """Validate ``emb`` and describe it as the next :class:`Source` (id unique)."""
    emb = canonical(emb)
    info = cube_info(emb)
    sid = str(source) if source is not None else f"cube{len(existing)}"
    if any(s.id == sid for s in existing):
        raise ParameterError(f"A source named {sid!r} is already in the index; pass another source=.")
    times = np.asarray(emb["time"].values) if info.has_time else None
    if times is not None and times.dtype == object:
        times = times.astype(str)
    return emb, info, Source(id=sid, transform=info.transform, shape=info.shape, times=times, attrs=dict(info.attrs))


def _iter_cube_vectors(emb: xr.DataArray, rows_per_block: int | None = None):
    """Yield ``(t, row0, block)`` with ``block`` numpy ``(embedding, h, nx)``.

    Dask cubes are computed one row of chunks at a time (bounded memory); numpy
    cubes are sliced without copying.
    """
    ts = range(emb.sizes["time"]) if "time" in emb.dims else [None]
    ny = emb.sizes["y"]
    if rows_per_block is None:
        rows_per_block = int(emb.chunks[emb.dims.index("y")][0]) if emb.chunks is not None else ny
    for t in ts:
        sub = emb if t is None else emb.isel(time=t)
        for r0 in range(0, ny, rows_per_block):
            yield (0 if t is None else t), r0, sub.isel(y=slice(r0, r0 + rows_per_block)).values


def collect(emb: xr.DataArray, src_no: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """All valid vectors of a cube and their entry columns (NaN patches dropped).

    Returns ``(vectors (n, d) float32, (src, t, row, col, x, y))``.
    """
    xs = np.asarray(emb["x"].values, dtype=np.float64)
    ys = np.asarray(emb["y"].values, dtype=np.float64)
    vecs, ts, rs, cs = [], [], [], []
    from tqdm.auto import tqdm

    rows = int(emb.chunks[emb.dims.index("y")][0]) if emb.chunks is not None else emb.sizes["y"]
    n_blocks = -(-emb.sizes["y"] // rows) * (emb.sizes["time"] if "time" in emb.dims else 1)
    blocks = tqdm(_iter_cube_vectors(emb), total=n_blocks, desc="index: read vectors", unit="block",
                  disable=n_blocks < 4)  # a bar only when the cube is read in several (dask) blocks
    for t, r0, blk in blocks:
        d, h, w = blk.shape
        flat = np.ascontiguousarray(blk.reshape(d, h * w).T, dtype=np.float32)
        ok = valid_mask(flat)
        if not ok.any():
            continue
        idx = np.flatnonzero(ok)
        vecs.append(flat[ok])
        ts.append(np.full(len(idx), t, np.int32))
        rs.append((r0 + idx // w).astype(np.int32))
        cs.append((idx % w).astype(np.int32))
    if not vecs:
        empty = tuple(np.zeros(0, dt) for dt in _DTYPES)
        return np.zeros((0, emb.sizes["embedding"]), np.float32), empty
    v, t, r, c = np.concatenate(vecs), np.concatenate(ts), np.concatenate(rs), np.concatenate(cs)
    return v, (np.full(len(v), src_no, np.int32), t, r, c, xs[c], ys[r])


class EntryTable:
    """Per-entry metadata and per-source grids of an index (arrays, look-ups, save/load)."""

    def __init__(self) -> None:
        self.sources: list[Source] = []
        self.src, self.t, self.row, self.col = (np.zeros(0, np.int32) for _ in range(4))
        self.x, self.y = np.zeros(0, np.float64), np.zeros(0, np.float64)

    def __len__(self) -> int:
        return len(self.src)

    @property
    def has_time(self) -> bool:
        """Whether any source cube has a ``time`` dimension."""
        return any(s.times is not None for s in self.sources)

    # ---- growing ------------------------------------------------------------------
    def append(self, src: Source, columns: tuple[np.ndarray, ...]) -> None:
        """Add a source and its entries (``columns`` from :func:`collect`)."""
        start = len(self)
        for name, col in zip(_COLUMNS, columns):
            setattr(self, name, np.concatenate([getattr(self, name), col]))
        self.sources.append(src)
        self._build_lookup(len(self.sources) - 1, start)

    def _build_lookup(self, src_no: int, start: int = 0) -> None:
        src = self.sources[src_no]
        nt = 1 if src.times is None else len(src.times)
        lut = np.full((nt, *src.shape), -1, dtype=np.int64)
        sel = np.flatnonzero(self.src[start:] == src_no) + start
        lut[self.t[sel], self.row[sel], self.col[sel]] = sel
        src.lookup = lut

    # ---- reading -------------------------------------------------------------------
    def frame(self, ids: np.ndarray | None = None) -> "pd.DataFrame":
        """Entry metadata (id, x, y, time?, source, row, col) as a pandas DataFrame."""
        import pandas as pd

        ids = np.arange(len(self)) if ids is None else np.asarray(ids, dtype=np.int64)
        df = pd.DataFrame({
            "id": ids,
            "x": self.x[ids],
            "y": self.y[ids],
            "source": [self.sources[s].id for s in self.src[ids]],
            "row": self.row[ids],
            "col": self.col[ids],
        })
        if self.has_time:
            df.insert(3, "time", [self.time_value(s, t) for s, t in zip(self.src[ids], self.t[ids])])
        return df

    def time_value(self, s: int, t: int):
        times = self.sources[s].times
        return None if times is None else times[t]

    def source_numbers(self, source: str | int | None) -> list[int]:
        """Source positions for ``source`` (id or position; None = all)."""
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

    def time_numbers(self, src: Source, time: Any) -> np.ndarray:
        """Time positions of ``src`` matching ``time`` (label or position; None = all)."""
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

    def ids_at(self, where: Any, crs: Any, index_crs: str, source, time) -> tuple[np.ndarray, np.ndarray]:
        """Entry ids of the patches under ``where`` (a point or geometry in ``crs``, default
        ``index_crs``) found by :func:`eoembed.cube.locate_patches` on each source grid, and
        the geometries in the index CRS."""
        ids, geoms = [], None
        for s in self.source_numbers(source):
            src = self.sources[s]
            loc = locate_patches(PatchGrid(src.transform, src.shape, index_crs), where, crs=crs, outside="drop")
            geoms = loc.geoms
            for t in self.time_numbers(src, time):
                got = src.lookup[t, loc.row, loc.col]
                ids.append(got[got >= 0])
        if geoms is None:  # no source: still report the location in the index CRS
            geoms = locate_patches(PatchGrid((1.0, 0.0, 0.0, 0.0, -1.0, 0.0), (0, 0), index_crs), where,
                                   crs=crs).geoms
        return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), geoms

    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the entries' patch centres."""
        if len(self) == 0:
            return (np.nan,) * 4  # type: ignore[return-value]
        return (float(self.x.min()), float(self.y.min()), float(self.x.max()), float(self.y.max()))

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: str) -> list[dict[str, Any]]:
        """Write ``path/entries.npz``; returns the sources' JSON for ``meta.json``."""
        arrays = dict(source=self.src, t=self.t, row=self.row, col=self.col, x=self.x, y=self.y)
        for i, s in enumerate(self.sources):
            if s.times is not None:
                arrays[f"times_{i}"] = s.times
        np.savez(os.path.join(path, "entries.npz"), **arrays)
        return [s.to_json() for s in self.sources]

    @classmethod
    def load(cls, path: str, sources: list[dict[str, Any]]) -> "EntryTable":
        """Read ``path/entries.npz`` written by :meth:`save` (``sources`` from ``meta.json``)."""
        self = cls()
        with np.load(os.path.join(path, "entries.npz"), allow_pickle=False) as z:
            self.src, self.t, self.row, self.col = z["source"], z["t"], z["row"], z["col"]
            self.x, self.y = z["x"], z["y"]
            for i, s in enumerate(sources):
                times = z[f"times_{i}"] if s["has_time"] else None
                self.sources.append(Source(id=s["id"], transform=tuple(s["transform"]),
                                           shape=tuple(s["shape"]), times=times, attrs=s["attrs"]))
        for i in range(len(self.sources)):
            self._build_lookup(i)
        return self
