"""The embedding-cube format: read it, check it, apply functions over its vectors.

An *embedding cube* is the ``xr.DataArray`` that :func:`eoembed.embed` returns:
dims ``("embedding", "y", "x")`` or ``("time", "embedding", "y", "x")``, float32,
``x``/``y`` = patch centres in a projected CRS (``spatial_ref`` coord written by
rioxarray) and provenance attrs under the ``eoembed:`` prefix.

This module owns the format on the reading side: :func:`canonical` (validate and
order dims), :func:`cube_info` (grid and model identity, derived once),
:func:`check_same_space` (refuse mixing models), and :func:`apply_embedding`, the one
way consumers (index, classify, reduce) run a function over the ``embedding`` dim of a
numpy- or dask-backed cube. The writing side (coords + provenance attrs) is
``eoembed.embed._wrap``, which needs the grid, model and band decisions of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import DimensionError, IndexMismatchError, InputError, MissingCRSError

__all__ = [
    "CubeInfo", "IDENTITY_ATTRS", "apply_embedding", "canonical", "check_same_space", "cube_info",
    "normalize", "patch_pitch", "spatial_coords", "to_crs_geom", "to_crs_xy", "valid_mask",
    "write_georef", "xy_to_rowcol",
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


def to_crs_xy(x, y, src_crs, dst_crs) -> tuple[np.ndarray, np.ndarray]:
    """Reproject coordinate arrays with pyproj (always x/y order)."""
    from pyproj import CRS, Transformer

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if src == dst:
        return x, y
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return tuple(np.asarray(v, dtype=float) for v in tr.transform(x, y))  # type: ignore[return-value]


def to_crs_geom(geom, src_crs, dst_crs):
    """Reproject a shapely geometry with pyproj."""
    import shapely
    from pyproj import CRS, Transformer

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return geom
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


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
