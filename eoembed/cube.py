"""The embedding-cube format: read it, check it, apply functions over its vectors.

An *embedding cube* is the ``xr.DataArray`` that :func:`eoembed.embed` returns:
dims ``("embedding", "y", "x")`` or ``("time", "embedding", "y", "x")``, float32,
``x``/``y`` = patch centres in a projected CRS (``spatial_ref`` coord written by
rioxarray) and provenance attrs under the ``eoembed:`` prefix.

This module owns the format on the reading side: :func:`canonical` (validate and
order dims), :func:`cube_info` (grid and model identity, derived once),
:func:`check_same_space` (refuse mixing models), :func:`locate_patches` (the one patch locator: points and
polygons in any CRS → the patches under them), and :func:`apply_embedding`, the one
way consumers (index, classify, reduce) run a function over the ``embedding`` dim of a
numpy- or dask-backed cube. The writing side (coords + provenance attrs) is
``eoembed.embed._wrap``, which needs the grid, model and band decisions of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import functools
import threading

import numpy as np
import xarray as xr

from eoembed.exceptions import (
    DimensionError,
    IndexMismatchError,
    InputError,
    LabelError,
    MissingCRSError,
    OutsideCubeError,
    QueryError,
)

__all__ = [
    "CubeInfo", "IDENTITY_ATTRS", "Located", "PatchGrid", "apply_embedding", "canonical", "check_same_space",
    "cube_info", "locate_patches", "normalize", "patch_pitch", "raster_on_patches", "spatial_coords",
    "to_crs_geom", "to_crs_xy", "valid_mask", "write_georef", "xy_to_rowcol",
]  # fmt: skip

#: Attributes that identify the embedding space; two cubes are comparable only if
#: these agree (when both sides state them).
IDENTITY_ATTRS = ("eoembed:model", "eoembed:model_version", "eoembed:embedding_dim")

_ALLOWED_DIMS = {"time", "embedding", "y", "x"}


@dataclass(frozen=True)
class CubeInfo:
    """What consumers need to know about an embedding cube (derived once)."""

    dim: int
    has_time: bool
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    shape: tuple[int, int]  # (ny, nx)
    model: str
    model_version: str
    attrs: dict[str, Any]

    @property
    def model_id(self) -> str:
        """``model@version`` (``"unknown"`` when the cube states no model)."""
        if self.model_version:
            return f"{self.model}@{self.model_version}"
        return self.model


def canonical(emb: xr.DataArray) -> xr.DataArray:
    """Validate an embedding cube and transpose it to ``(time?, embedding, y, x)``.

    Raises
    ------
    InputError
        ``emb`` is not a DataArray.
    DimensionError
        Missing ``embedding``/``y``/``x`` dims or extra dims.
    """
    if isinstance(emb, xr.Dataset):
        raise InputError(
            "Expected the embedding cube as an xr.DataArray, got a Dataset; "
            "select the variable first, e.g. ds['embedding']."
        )
    if not isinstance(emb, xr.DataArray):
        raise InputError(
            f"Expected an embedding cube (xr.DataArray from eoembed.embed), got {type(emb).__name__}."
        )
    missing = {"embedding", "y", "x"} - set(emb.dims)
    if missing:
        raise DimensionError(
            f"Embedding cube is missing dimension(s) {sorted(missing)}; it has {tuple(emb.dims)}. "
            "Expected ('embedding', 'y', 'x') or ('time', 'embedding', 'y', 'x') as returned by "
            "eoembed.embed; rename with emb.rename({...}) if your dims are named differently."
        )
    extra = set(emb.dims) - _ALLOWED_DIMS
    if extra:
        raise DimensionError(
            f"Embedding cube has unexpected dimension(s) {sorted(extra)}; select or reduce them first "
            f"(e.g. emb.isel({sorted(extra)[0]}=0))."
        )
    order = [d for d in ("time", "embedding", "y", "x") if d in emb.dims]
    if tuple(emb.dims) != tuple(order):
        emb = emb.transpose(*order)
    return emb


def cube_info(emb: xr.DataArray, *, require_crs: bool = True) -> CubeInfo:
    """Validate ``emb`` (see :func:`canonical`) and collect its grid and identity."""
    emb = canonical(emb)
    crs = emb.rio.crs
    if crs is None and require_crs:
        raise MissingCRSError(
            "The embedding cube has no CRS. eoembed.embed writes one; for a hand-made cube call "
            "emb = emb.rio.write_crs('EPSG:32631') (your CRS) and emb.rio.write_transform(...)."
        )
    transform = tuple(emb.rio.transform())[:6]
    attrs = {k: _jsonable(v) for k, v in emb.attrs.items()}
    dim_attr = attrs.get("eoembed:embedding_dim")
    dim = int(emb.sizes["embedding"])
    if dim_attr is not None and int(dim_attr) != dim:
        raise DimensionError(
            f"Cube attr eoembed:embedding_dim={dim_attr} disagrees with its 'embedding' size {dim}."
        )
    return CubeInfo(
        dim=dim,
        has_time="time" in emb.dims,
        crs_wkt=crs.to_wkt() if crs is not None else "",
        transform=tuple(float(v) for v in transform),  # type: ignore[arg-type]
        shape=(int(emb.sizes["y"]), int(emb.sizes["x"])),
        model=str(attrs.get("eoembed:model", "unknown")),
        model_version=str(attrs.get("eoembed:model_version", "")),
        attrs=attrs,
    )


def check_same_space(
    expected: dict[str, Any], got: dict[str, Any], *, expected_dim: int, got_dim: int, what: str
) -> None:
    """Refuse mixing vectors from different models/versions/dimensions.

    ``expected``/``got`` are attr dicts. A side that does not state an attribute is
    not compared on it (hand-made cubes), except the dimension which is always known.

    Raises
    ------
    IndexMismatchError
    """
    if expected_dim != got_dim:
        raise IndexMismatchError(
            f"{what} has embedding dimension {got_dim} but the index holds {expected_dim}-d vectors "
            f"(model {expected.get('eoembed:model', 'unknown')!r}). Vectors from different models "
            "cannot be compared; embed with the same model or build a separate index."
        )
    for key in IDENTITY_ATTRS[:2]:
        a, b = expected.get(key), got.get(key)
        if a is not None and b is not None and str(a) != str(b):
            raise IndexMismatchError(
                f"{what} comes from {key.split(':')[1]}={b!r} but the index was built from {a!r}. "
                "Embeddings of different models (or model versions) live in different spaces and "
                "cannot be searched together; embed the cube with the index's model "
                f"(eoembed.embed(cube, model={expected.get('eoembed:model')!r})) or build a new index."
            )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def valid_mask(vectors: np.ndarray) -> np.ndarray:
    """Rows (``(n, d)``) that are finite everywhere and not all-zero."""
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(vectors).all(axis=1)
        nonzero = np.abs(np.where(np.isfinite(vectors), vectors, 0)).sum(axis=1) > 0
    return finite & nonzero


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows of a float array (returns float32, contiguous)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = v / norms
    return np.ascontiguousarray(out, dtype=np.float32)


def spatial_coords(emb: xr.DataArray, drop: str | tuple[str, ...] = "embedding") -> dict[str, Any]:
    """Coords of ``emb`` that do not involve the ``drop`` dim(s) (keeps ``spatial_ref``)."""
    drop = (drop,) if isinstance(drop, str) else drop
    return {k: v for k, v in emb.coords.items() if not (set(v.dims) & set(drop))}


def write_georef(out: xr.DataArray | xr.Dataset, emb: xr.DataArray) -> Any:
    """Write ``emb``'s CRS and transform onto ``out`` (same y/x grid)."""
    crs = emb.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
        out = out.rio.write_transform(emb.rio.transform())
    return out


def patch_pitch(info: CubeInfo) -> float:
    """Patch spacing in CRS units (metres for projected CRSs)."""
    a, _, _, _, e, _ = info.transform
    return float(max(abs(a), abs(e)))


def xy_to_rowcol(
    transform: tuple[float, ...], x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Patch row/col containing map coordinates (affine ``a, b, c, d, e, f``, no rotation)."""
    a, b, c, d, e, f = transform[:6]
    if b != 0 or d != 0:
        raise InputError("Rotated grids are not supported; reproject the cube to a north-up grid.")
    col = np.floor((np.asarray(x, dtype=float) - c) / a).astype(np.int64)
    row = np.floor((np.asarray(y, dtype=float) - f) / e).astype(np.int64)
    return row, col


def transformer(src_crs, dst_crs):
    """A pyproj ``Transformer`` (x/y order) from ``src_crs`` to ``dst_crs``, made once per thread.

    Building one costs milliseconds (a PROJ database lookup) and ``embed()`` needs a few per
    call; pyproj transformers must not be shared between threads, so the cache is per thread.
    """
    from pyproj import CRS

    def key(c):
        return c if isinstance(c, (str, int)) else CRS.from_user_input(c).to_wkt()

    return _transformer(key(src_crs), key(dst_crs), threading.get_ident())


@functools.lru_cache(maxsize=64)
def _transformer(src, dst, _thread: int):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def to_crs_xy(x, y, src_crs, dst_crs) -> tuple[np.ndarray, np.ndarray]:
    """Reproject coordinate arrays with pyproj (always x/y order)."""
    from pyproj import CRS

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if src == dst:
        return x, y
    tr = transformer(src, dst)
    return tuple(np.asarray(v, dtype=float) for v in tr.transform(x, y))  # type: ignore[return-value]


def to_crs_geom(geom, src_crs, dst_crs):
    """Reproject a shapely geometry with pyproj."""
    import shapely
    from pyproj import CRS

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return geom
    tr = transformer(src, dst)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


# ---------------------------------------------------------------------------------
# the patch locator: points / polygons → patches
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchGrid:
    """A patch grid: affine ``transform`` (``a, b, c, d, e, f``, north-up), ``shape`` ``(ny, nx)``
    and ``crs`` (anything pyproj reads; ``None`` when unknown). Patch centres sit at half-pixel offsets."""

    transform: tuple[float, ...]
    shape: tuple[int, int]
    crs: Any = None

    @classmethod
    def of(cls, emb: xr.DataArray) -> "PatchGrid":
        """The grid of an embedding cube (dims checked by :func:`canonical`; CRS may be missing)."""
        emb = canonical(emb)
        crs = emb.rio.crs
        return cls(tuple(float(v) for v in tuple(emb.rio.transform())[:6]),
                   (int(emb.sizes["y"]), int(emb.sizes["x"])), crs.to_wkt() if crs is not None else None)

    def centres(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of the centres of patches ``(rows, cols)``."""
        a, _, c, _, e, f = self.transform[:6]
        return c + (np.asarray(cols) + 0.5) * a, f + (np.asarray(rows) + 0.5) * e

    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the grid's outer edges."""
        a, _, c, _, e, f = self.transform[:6]
        xs, ys = (c, c + self.shape[1] * a), (f, f + self.shape[0] * e)
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class Located:
    """Patches found by :func:`locate_patches`, one row per (geometry, patch).

    ``row``/``col``: int64 patch indices (meaningful where ``inside``); ``origin``: position
    of the geometry in the input; ``inside``: the patch lies on the grid; ``geoms``: the
    input geometries in the grid CRS (shapely array, one per input) — for an ``(n, 2)``
    coordinate array input, the ``(n, 2)`` coordinates in the grid CRS.
    """

    row: np.ndarray
    col: np.ndarray
    origin: np.ndarray
    inside: np.ndarray
    geoms: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def kept(self) -> "Located":
        """Only the rows inside the grid."""
        k = self.inside
        return Located(self.row[k], self.col[k], self.origin[k], k[k], self.geoms)


def _as_geometries(where: Any) -> tuple[np.ndarray, Any]:
    """``where`` → (1-d shapely array, CRS it states or None)."""
    import shapely

    crs = None
    if hasattr(where, "geometry") and hasattr(where, "crs"):  # GeoDataFrame / GeoSeries
        crs = where.crs
        where = np.asarray(where.geometry.values, dtype=object)
    if isinstance(where, shapely.Geometry):
        return np.array([where], dtype=object), crs
    if isinstance(where, (tuple, list)) and len(where) == 2 and all(
            np.isscalar(v) and not isinstance(v, (str, bytes)) for v in where):
        where = [where]  # one (x, y) pair
    try:
        arr = np.asarray(where, dtype=object) if not isinstance(where, np.ndarray) else where
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.dtype != object and arr.ndim == 2 and arr.shape[1] == 2:
        return shapely.points(np.asarray(arr, dtype=float)), crs
    items = list(where) if isinstance(where, (list, tuple, np.ndarray)) else None
    if items is None:
        raise QueryError(
            f"Expected a point (x, y), a shapely geometry, a list of them or a GeoDataFrame/GeoSeries; "
            f"got {type(where).__name__}."
        )
    out = np.empty(len(items), dtype=object)
    for i, it in enumerate(items):
        if isinstance(it, shapely.Geometry) or it is None:
            out[i] = it
            continue
        try:
            x, y = (float(v) for v in it)
        except (TypeError, ValueError):
            raise QueryError(f"Item {i} is neither an (x, y) pair nor a shapely geometry: {it!r}.") from None
        out[i] = shapely.Point(x, y)
    return out, crs


def _locate_xy(g: PatchGrid, xy: np.ndarray, src_crs: Any, outside: str) -> Located:
    x, y = (xy[:, 0], xy[:, 1]) if src_crs is None else to_crs_xy(xy[:, 0], xy[:, 1], src_crs, g.crs)
    a, _, c, _, e, f = g.transform[:6]
    with np.errstate(invalid="ignore"):
        r, cl = np.floor((y - f) / e), np.floor((x - c) / a)
    finite = np.isfinite(r) & np.isfinite(cl)
    r = np.where(finite, r, -1).astype(np.int64)
    cl = np.where(finite, cl, -1).astype(np.int64)
    inside = finite & (r >= 0) & (r < g.shape[0]) & (cl >= 0) & (cl < g.shape[1])
    out = Located(r, cl, np.arange(len(r), dtype=np.int64), inside, np.column_stack([x, y]))
    if outside == "raise" and not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        _raise_outside(g, int((~inside).sum()), len(r), f"({x[i]:.1f}, {y[i]:.1f})", src_crs)
    return out.kept() if outside == "drop" else out


def _raise_outside(g: PatchGrid, n_out: int, n: int, where_s: str, src_crs: Any) -> None:
    x0, y0, x1, y1 = g.bounds()
    hint = ("check its CRS (pass crs='EPSG:4326' for lon/lat)" if src_crs is None else
            f"it was given in {src_crs}; check that CRS")
    raise OutsideCubeError(
        f"{n_out} of {n} location(s) fall outside the embedding cube; the first, {where_s} in the cube CRS, "
        f"is off the patch grid (bounds {x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}). Pick a location inside the "
        f"cube, or {hint}."
    )


def locate_patches(grid: "PatchGrid | xr.DataArray", where: Any, *, crs: Any = None,
                   outside: str = "keep") -> Located:
    """The patches under points and polygons: the one patch locator of eoembed.

    Parameters
    ----------
    grid:
        An embedding cube or a :class:`PatchGrid`.
    where:
        An ``(x, y)`` pair, a shapely geometry, a list of pairs/geometries, an ``(n, 2)``
        array or a GeoDataFrame/GeoSeries. A point (or each point of a MultiPoint) gives
        the patch containing it; any other geometry gives every patch whose *centre* it
        contains, or — when it contains none (smaller than a patch, or a line) — the patch
        under its representative point. A missing or empty geometry (or a point with NaN
        coordinates) gives one row with ``inside=False``.
    crs:
        CRS of ``where`` (anything pyproj reads). Default: the GeoDataFrame's CRS, else
        the grid's (no transform).
    outside:
        ``"keep"`` (rows off the grid are returned with ``inside=False``), ``"drop"`` or
        ``"raise"`` (:class:`~eoembed.exceptions.OutsideCubeError` if any geometry has no
        patch on the grid).

    Returns
    -------
    Located
        ``row``, ``col``, ``origin``, ``inside`` arrays, ordered by ``origin``, and the
        geometries in the grid CRS.

    Raises
    ------
    MissingCRSError
        ``crs`` is given but the grid has none.
    DimensionError
        ``grid`` is not an embedding cube.
    OutsideCubeError, QueryError
        Off-grid geometry with ``outside="raise"``; unreadable ``where``.
    """
    import shapely

    if outside not in ("keep", "drop", "raise"):
        raise InputError(f"outside must be 'keep', 'drop' or 'raise', got {outside!r}.")
    g = grid if isinstance(grid, PatchGrid) else PatchGrid.of(grid)
    coords = isinstance(where, np.ndarray) and where.dtype.kind in "fiu" and where.ndim == 2 and where.shape[1] == 2
    geoms, stated = (where, None) if coords else _as_geometries(where)
    src_crs = crs if crs is not None else stated
    if src_crs is not None and g.crs is None:
        raise MissingCRSError(
            f"The coordinates are in {src_crs} but the embedding cube has no CRS to transform them to. "
            "Write the cube's CRS first: emb = emb.rio.write_crs('EPSG:32631') (your CRS)."
        )
    if coords:  # many points as numbers (e.g. every patch centre of a cube): numpy only, no shapely objects
        return _locate_xy(g, np.asarray(where, float), src_crs, outside)
    if src_crs is not None:
        ok = ~shapely.is_missing(geoms)
        if ok.any():
            geoms = geoms.copy()
            geoms[ok] = to_crs_geom(geoms[ok], src_crs, g.crs)
    ny, nx = g.shape
    a, _, c, _, e, f = g.transform[:6]
    rows, cols, origins = [], [], []
    valid = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    types = np.full(len(geoms), -1)
    if valid.any():
        types[valid] = shapely.get_type_id(geoms[valid].astype(object))
    pts = np.flatnonzero(types == 0)
    if len(pts):  # points: vectorised
        px, py = shapely.get_x(geoms[pts].astype(object)), shapely.get_y(geoms[pts].astype(object))
        rows.append(np.floor((py - f) / e))
        cols.append(np.floor((px - c) / a))
        origins.append(pts)
    cx = cy = None
    for i in np.flatnonzero(valid & (types != 0)):
        geom = geoms[i]
        if types[i] == 4:  # MultiPoint
            xy = shapely.get_coordinates(geom)
            rows.append(np.floor((xy[:, 1] - f) / e))
            cols.append(np.floor((xy[:, 0] - c) / a))
            origins.append(np.full(len(xy), i))
            continue
        if cx is None:
            cx, _ = g.centres(np.zeros(nx), np.arange(nx))
            _, cy = g.centres(np.arange(ny), np.zeros(ny))
        x0, y0, x1, y1 = geom.bounds
        ci = np.flatnonzero((cx >= x0) & (cx <= x1))
        ri = np.flatnonzero((cy >= y0) & (cy <= y1))
        rr, cc = np.meshgrid(ri, ci, indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        hit = shapely.contains_xy(geom, cx[cc], cy[rr]) if len(rr) else np.zeros(0, bool)
        if hit.any():
            rows.append(rr[hit].astype(float))
            cols.append(cc[hit].astype(float))
            origins.append(np.full(int(hit.sum()), i))
        else:  # smaller than a patch (or a line): the patch under it
            p = geom.representative_point()
            rows.append(np.array([np.floor((p.y - f) / e)]))
            cols.append(np.array([np.floor((p.x - c) / a)]))
            origins.append(np.array([i]))
    bad = np.flatnonzero(~valid)
    if len(bad):  # missing/empty geometry: one row off the grid, so points stay one row each
        rows.append(np.full(len(bad), np.nan))
        cols.append(np.full(len(bad), np.nan))
        origins.append(bad)
    if rows:
        r, cl, o = np.concatenate(rows), np.concatenate(cols), np.concatenate(origins).astype(np.int64)
        order = np.argsort(o, kind="stable")
        r, cl, o = r[order], cl[order], o[order]
    else:
        r = cl = np.zeros(0)
        o = np.zeros(0, np.int64)
    finite = np.isfinite(r) & np.isfinite(cl)
    r = np.where(finite, r, -1).astype(np.int64)
    cl = np.where(finite, cl, -1).astype(np.int64)
    inside = finite & (r >= 0) & (r < ny) & (cl >= 0) & (cl < nx)
    out = Located(r, cl, o, inside, geoms)
    if outside == "raise":
        missing = sorted(set(range(len(geoms))) - set(o[inside].tolist()))
        if missing:
            gm = geoms[missing[0]]
            where_s = "an empty geometry" if gm is None or shapely.is_empty(gm) else (
                f"({gm.x:.1f}, {gm.y:.1f})" if types[missing[0]] == 0 else
                f"a geometry with bounds {tuple(round(b, 1) for b in gm.bounds)}")
            _raise_outside(g, len(missing), len(geoms), where_s, src_crs)
    return out.kept() if outside == "drop" else out


def raster_on_patches(emb: xr.DataArray, raster: xr.DataArray, *, resampling: str = "nearest", nodata: Any = None,
                      what: str = "label") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A one-band raster on any grid/CRS sampled onto ``emb``'s patch grid: ``(rows, cols, values)`` of the
    patches that get a value (the one raster-to-patches scaffold of labels and regression targets).

    ``resampling="nearest"``: the raster pixel under each patch centre (values keep their dtype: class codes stay
    codes). ``"average"``: the area mean of the pixels each patch covers (float64; rasterio's ``average``
    reprojection onto the patch grid). Pixels equal to ``nodata`` (default: the raster's ``rio.nodata``, else its
    encoded nodata) and NaN give no value; patches off the raster are left out. ``what`` names the raster in
    errors (``"label"``, ``"target"``).

    Raises
    ------
    LabelError
        More than one band, other dims than ``(y, x)``, no CRS, or an unknown ``resampling``.
    """
    if resampling not in ("nearest", "average"):
        raise LabelError(f"resampling must be 'nearest' or 'average', got {resampling!r}.")
    if "band" in raster.dims:
        if raster.sizes["band"] != 1:
            raise LabelError(f"The {what} raster has {raster.sizes['band']} bands; pass one band "
                             "(raster.isel(band=0)).")
        raster = raster.isel(band=0)
    if set(raster.dims) != {"y", "x"}:
        raise LabelError(f"The {what} raster must have dims ('y', 'x'), got {raster.dims}; select or reduce the "
                         "others (e.g. raster.mean('time')).")
    raster = raster.transpose("y", "x")
    rcrs = raster.rio.crs
    if rcrs is None:
        raise LabelError(f"The {what} raster has no CRS; write one with raster.rio.write_crs(...) so it can be "
                         "matched to the embedding grid.")
    nd = nodata if nodata is not None else raster.rio.nodata
    if nd is None:
        nd = raster.rio.encoded_nodata
    has_nd = nd is not None and not (isinstance(nd, float) and np.isnan(nd))
    ny, nx = emb.sizes["y"], emb.sizes["x"]
    if resampling == "nearest":
        rr, cc = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        centres = np.column_stack([emb["x"].values[cc], emb["y"].values[rr]])
        pixels = PatchGrid(tuple(raster.rio.transform())[:6], (raster.sizes["y"], raster.sizes["x"]), rcrs.to_wkt())
        loc = locate_patches(pixels, centres, crs=emb.rio.crs)  # the raster pixel under each patch centre
        vals = np.asarray(raster.values)[loc.row[loc.inside], loc.col[loc.inside]]
        ok = np.ones(len(vals), bool)
        if np.issubdtype(vals.dtype, np.floating):
            ok &= np.isfinite(vals)
        if has_nd:
            ok &= vals != nd
        return rr[loc.inside][ok], cc[loc.inside][ok], vals[ok]
    from rasterio.enums import Resampling

    r = raster.astype(np.float64)
    if has_nd:
        r = r.where(raster != nd)
    r = r.rio.write_nodata(np.nan, encoded=False)
    tmpl = xr.DataArray(np.zeros((ny, nx), np.float32), dims=("y", "x"),
                        coords={"y": emb["y"].values, "x": emb["x"].values})
    tmpl = tmpl.rio.write_crs(emb.rio.crs).rio.write_transform(emb.rio.transform())
    onto = r.rio.reproject_match(tmpl, resampling=Resampling.average).values
    rr, cc = np.nonzero(np.isfinite(onto))
    return rr, cc, onto[rr, cc]


def apply_embedding(
    func: Callable[..., np.ndarray],
    emb: xr.DataArray,
    *,
    core_dims: Sequence[str] = ("embedding",),
    output_dim: str | None = None,
    output_size: int | None = None,
    output_dtype: Any = np.float32,
    kwargs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Apply ``func`` over the vector dim(s) of an embedding cube, for numpy and dask alike.

    A thin wrapper of ``xr.apply_ufunc(..., dask="parallelized")``: ``func`` gets a numpy
    array whose *last* axes are ``core_dims`` (in that order; e.g. ``(y, x, embedding)``)
    and returns the leading axes followed by one ``output_dim`` axis of
    ``output_size`` (or no new axis when ``output_dim`` is None). Dask cubes stay lazy,
    one task per spatial chunk (``core_dims`` are merged into one chunk first).

    Returns
    -------
    xr.DataArray
        Dims: ``emb``'s dims without ``core_dims``, then ``output_dim``; coords of the
        remaining dims, no attrs. Transpose as needed.
    """
    core = list(core_dims)
    if emb.chunks is not None and any(len(emb.chunks[emb.dims.index(d)]) > 1 for d in core):
        emb = emb.chunk({d: -1 for d in core})
    out_core = [[output_dim]] if output_dim is not None else [[]]
    gufunc = {"output_sizes": {output_dim: int(output_size)}} if output_dim is not None else {}
    return xr.apply_ufunc(
        func,
        emb,
        input_core_dims=[core],
        output_core_dims=out_core,
        dask="parallelized",
        output_dtypes=[output_dtype],
        dask_gufunc_kwargs=gufunc,
        kwargs=kwargs or {},
        keep_attrs=False,
    )
