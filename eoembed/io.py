"""Saving and reopening embedding cubes without losing georeferencing or provenance."""

from __future__ import annotations

import logging
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
    from eoembed.export import cf_coords  # CF attributes on x/y (standard_name, units m)
    emb = cf_coords(emb)
    if path.suffix in (".nc", ".nc4"):
        emb.to_netcdf(tmp)
    else:
        emb.to_dataset().to_zarr(tmp, mode="w", consolidated=True)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)
    logging.getLogger("eoembed.io").info("wrote %s", path)
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


# --- streaming, resumable writes -----------------------------------------------------
#: Region side (in patches) used to cut a numpy-backed cube for streaming.
REGION_PATCHES = 256
_DONE_DIR = ".eoembed-done"  # one empty marker file per finished region, inside the store
_RUN_ATTR = "eoembed:run"
_COMPLETE_ATTR = "eoembed:complete"


def _regions(emb: xr.DataArray) -> list[dict[str, slice]]:
    """One region per dask chunk along ``y``/``x`` (the store's chunks)."""
    out, ys, xs = [], [0], [0]
    for c in emb.chunksizes["y"]:
        ys.append(ys[-1] + c)
    for c in emb.chunksizes["x"]:
        xs.append(xs[-1] + c)
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            out.append({"y": slice(ys[i], ys[i + 1]), "x": slice(xs[j], xs[j + 1])})
    return out


def _run_id(emb: xr.DataArray) -> str:
    """What identifies a run: shape, chunks, grid and provenance (not timings or seams)."""
    import hashlib
    import json

    attrs = {k: v for k, v in emb.attrs.items() if not k.startswith("eoembed:seam")}
    key = json.dumps([dict(emb.sizes), {k: list(v) for k, v in emb.chunksizes.items()}, list(emb.rio.transform()),
                      str(emb.rio.crs), attrs], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _mark_done(_written, marker: Path) -> str:
    """Write a region's marker after its data (the dependency makes the order certain)."""
    tmp = marker.with_suffix(".tmp")
    tmp.write_text("")
    tmp.rename(marker)
    return marker.name


def _parallelism() -> int:
    try:
        from distributed import get_client

        return max(1, sum(get_client().nthreads().values()))
    except (ImportError, ValueError):
        import os

        return max(1, os.cpu_count() or 1)


def to_zarr(emb: xr.DataArray, path, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
            region_patches: int = REGION_PATCHES) -> dict:
    """Write an embedding cube to a Zarr store region by region, resumably.

    The store is created first with every coordinate, the CRS and the attrs, so it is a
    valid (partly empty) cube from the start. Each region (one dask chunk of ``y``×``x``)
    is then computed and written, and only after its data is written an empty marker
    ``<store>/.eoembed-done/<region>`` is created: a region killed half-way has no marker
    and is written again. With ``resume=True`` an existing store from the same run
    (same grid, model and settings) keeps its finished regions and only the rest is
    computed; memory stays bounded by a few regions at a time. At the end the seam metric
    (``eoembed:seam_ratio``) is added to the attrs and the store is marked complete.

    Parameters
    ----------
    emb:
        The result of :func:`eoembed.embed` (lazy or not).
    path:
        Store folder (``.zarr``).
    resume:
        Continue an interrupted write of the same run.
    overwrite:
        Replace an existing store (without ``resume``).
    progress:
        Show a progress bar over regions.
    region_patches:
        Region side when ``emb`` is not dask-backed.

    Returns
    -------
    dict
        ``path``, ``regions``, ``written`` and ``skipped`` region counts.
    """
    import dask
    import zarr

    path = Path(path)
    if emb.chunks is None:
        emb = emb.chunk({"y": region_patches, "x": region_patches})
    emb = emb.chunk({d: -1 for d in emb.dims if d not in ("y", "x")})
    run = _run_id(emb)
    done_dir = path / _DONE_DIR
    if path.exists():
        if resume:
            try:
                attrs = dict(zarr.open_array(str(path), path=emb.name or "embeddings", mode="r").attrs)
            except Exception as err:  # noqa: BLE001  (any unreadable store: say what to do)
                raise InputError(f"{path} is not an eoembed Zarr store ({type(err).__name__}); "
                                 "remove it or pick another output to start afresh.") from err
            if attrs.get(_RUN_ATTR) != run:
                raise InputError(
                    f"{path} was written by a different run (other cube, model, tiling or chunks: run "
                    f"{attrs.get(_RUN_ATTR)} vs {run}); resume needs the same inputs. Use another output "
                    "path, or overwrite=True (--overwrite) to start again."
                )
        elif overwrite:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            raise EOEmbedError(f"{path} exists; pass overwrite=True (--overwrite) to replace it or resume=True "
                               "(--resume) to continue it. Nothing was changed.")
    if not path.exists():
        ds = emb.to_dataset()
        ds[emb.name].attrs[_RUN_ATTR] = run
        ds.to_zarr(path, mode="w", compute=False, consolidated=False)
        done_dir.mkdir()
    done_dir.mkdir(exist_ok=True)
    regions = _regions(emb)
    todo = []
    for r in regions:
        marker = done_dir / f"y{r['y'].start}-x{r['x'].start}"
        if not marker.exists():
            todo.append((r, marker))
    from tqdm.auto import tqdm

    logging.getLogger("eoembed.io").info("%s: %d of %d regions finished earlier, skipped", path, len(regions) - len(todo), len(regions))  # noqa: E501
    step = _parallelism()
    with tqdm(total=len(regions), initial=len(regions) - len(todo), desc=f"write {path.name}", unit="region",
              disable=not progress) as bar:
        for start in range(0, len(todo), step):
            tasks = []
            for r, marker in todo[start : start + step]:
                part = emb.isel(r).to_dataset().drop_vars([c for c in emb.coords if not set(emb[c].dims) & {"y", "x"}])
                write = part.to_zarr(path, region=r, compute=False, consolidated=False)
                tasks.append(dask.delayed(_mark_done)(write, marker))
            dask.compute(*tasks)
            bar.update(len(tasks))
    _finish(path, emb)
    return {"path": path, "regions": len(regions), "written": len(todo), "skipped": len(regions) - len(todo)}


def _finish(path: Path, emb: xr.DataArray) -> None:
    """Seam metric from the written store (lazily, one pass) and the complete flag."""
    import zarr

    from eoembed.grid import GridSpec, seam_attrs

    back = open_embeddings(path, chunks={})
    arr = zarr.open_array(str(path), path=back.name, mode="r+")
    if "eoembed:seam_ratio" not in arr.attrs and "eoembed:tile_size" in emb.attrs:
        from affine import Affine

        grid = GridSpec(transform=Affine.identity(), height=emb.sizes["y"], width=emb.sizes["x"], patch_size=1,
                        tile_size=int(emb.attrs["eoembed:tile_size"]) // int(emb.attrs["eoembed:patch_size"]),
                        halo=int(emb.attrs["eoembed:halo"]) // int(emb.attrs["eoembed:patch_size"]),
                        blend=bool(emb.attrs.get("eoembed:blend", 0)),
                        **dict(zip(("offset_y", "offset_x"), map(int, emb.attrs.get("eoembed:window_offset", (0, 0))))))
        arr.attrs.update(seam_attrs(back.data, grid))
    if "eoembed:position_hit_rate" not in arr.attrs and "eoembed:tile_size" in emb.attrs:
        from eoembed.position import position_attrs

        p = int(emb.attrs["eoembed:patch_size"])
        period = (int(emb.attrs["eoembed:tile_size"]) - 2 * int(emb.attrs["eoembed:halo"])) // p
        arr.attrs.update(position_attrs(back.data, period, tuple(emb.attrs.get("eoembed:window_offset", (0, 0)))))
    arr.attrs[_COMPLETE_ATTR] = 1
