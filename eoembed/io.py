"""Saving and reopening embedding cubes without losing georeferencing or provenance."""

from __future__ import annotations

import shutil
from pathlib import Path

import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed.exceptions import EOEmbedError, InputError


def save_embeddings(emb: xr.DataArray, path, *, overwrite: bool = False) -> Path:
    """Write ``emb`` to a Zarr store (or ``.nc`` file) atomically.

    The result is written under ``<path>.partial`` and renamed into place only when
    complete, so ``path`` never holds a half-written cube, and an existing ``path`` is
    left untouched unless ``overwrite=True``. Dask-backed cubes stream chunk by chunk.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise EOEmbedError(f"{path} exists; pass overwrite=True (--overwrite) to replace it. Nothing was changed.")
    tmp = path.with_name(path.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    if path.suffix in (".nc", ".nc4"):
        emb.to_netcdf(tmp)
    else:
        emb.to_dataset().to_zarr(tmp, mode="w", consolidated=False)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)
    return path


def open_embeddings(path, *, chunks="auto") -> xr.DataArray:
    """Reopen a cube written by :func:`save_embeddings` (lazily), CRS and attrs intact."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.suffix in (".nc", ".nc4"):
        ds = xr.open_dataset(path, decode_coords="all", chunks=chunks)
    else:
        ds = xr.open_zarr(path, decode_coords="all", chunks=chunks, consolidated=False)
    names = [n for n, v in ds.data_vars.items() if "embedding" in v.dims]
    if len(names) != 1:
        raise InputError(f"{path} holds no single embedding cube (variables: {list(ds.data_vars)})")
    return ds[names[0]]
