"""Saving and reopening embedding cubes without losing georeferencing or provenance (the stores layer).

* :func:`open_embeddings` — **the** reader of eoembed (``eoembed.open_embeddings``,
  ``eoembed.products.open_embeddings`` are this function): eoembed's own stores
  (Zarr, NetCDF) here, published products (AlphaEarth, TESSERA, GeoParquet, any
  raster or Zarr of vectors) through the reader that :mod:`eoembed.products` registers
  with :func:`register_reader` (the package root wires it; this module never imports
  the layers above it).
* :func:`save_embeddings` (atomic), :func:`to_zarr` (resumable, checksummed regions,
  one writer per store), :func:`verify`.
* Pyramids: :func:`write_pyramid`, :func:`open_pyramid`, :func:`coarsen_embeddings`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed.exceptions import EOEmbedError, InputError, MissingCRSError, ParameterError, user_stacklevel

__all__ = [
    "PCA_COG", "cf_coords", "coarsen_embeddings", "open_embeddings", "open_pyramid", "open_store", "pyramid_pca_cog",
    "pyramid_source", "read_pyramid_manifest",
    "register_reader", "register_view", "save_embeddings", "store_fingerprint", "store_of", "to_zarr", "verify",
    "write_pyramid",
]  # fmt: skip


def cf_coords(da):
    """``da`` with CF attributes on ``x``/``y`` (``standard_name``, ``long_name``, ``axis``, ``units``).

    ``projection_x_coordinate``/``projection_y_coordinate`` in ``m`` for projected
    CRSs (``longitude``/``latitude`` in degrees for geographic ones), from the CRS via
    rioxarray; nothing changes without a CRS.
    """
    if da.rio.crs is None:
        return da
    out = da.rio.write_coordinate_system()
    for c in ("x", "y"):
        if c in out.coords and out[c].attrs.get("units") in ("metre", "meter", "metres", "meters"):
            out[c].attrs["units"] = "m"
    return out


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
    emb = cf_coords(emb)  # CF attributes on x/y (standard_name, units m)
    if path.suffix in (".nc", ".nc4"):
        emb.to_netcdf(tmp)
    else:
        with warnings.catch_warnings():
            # zarr 3 notes on every consolidated write that consolidated metadata is not (yet) in the v3 spec;
            # the store keeps it on purpose (one read of the metadata for remote/cloud readers): not a problem
            # of this store, so not the user's concern
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            emb.to_dataset().to_zarr(tmp, mode="w", consolidated=True)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)
    logging.getLogger("eoembed.io").info("wrote %s", path)
    return path


def open_store(path, *, chunks="auto") -> xr.DataArray:
    """Reopen a cube written by :func:`save_embeddings` or :func:`to_zarr` (lazily), CRS and attrs intact.

    The store-only reader under :func:`open_embeddings` (which also opens published
    products); raises :class:`~eoembed.exceptions.InputError` when ``path`` is not
    such a store.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.suffix in (".nc", ".nc4"):
        ds = xr.open_dataset(path, decode_coords="all", chunks=chunks)
    else:
        with warnings.catch_warnings():  # our done-markers folder is not a Zarr node; zarr says so
            warnings.filterwarnings("ignore", message="Object at .eoembed-done")
            ds = xr.open_zarr(path, decode_coords="all", chunks=chunks, consolidated=False)
    names = [n for n, v in ds.data_vars.items() if "embedding" in v.dims]
    if len(names) != 1:
        raise InputError(f"{path} holds no single embedding cube (variables: {list(ds.data_vars)}); eoembed stores "
                         "hold one variable with an 'embedding' dim. For another product pass format= to "
                         "eoembed.open_embeddings.")
    out = ds[names[0]]
    out.encoding[STORE_ENCODING] = str(path.resolve())  # where it came from: the saved index sits beside it
    return out


#: ``emb.encoding`` key holding the store an opened cube was read from (set by :func:`open_store`).
STORE_ENCODING = "eoembed:store"


def store_of(emb: xr.DataArray) -> Path | None:
    """The store ``emb`` was opened from by :func:`open_store` / :func:`open_embeddings` (None otherwise).

    Read from ``emb.encoding``, which xarray keeps through transposes and renames but not
    through computations: a sliced or computed cube is no longer "the store".
    """
    src = getattr(emb, "encoding", {}).get(STORE_ENCODING)
    return Path(src) if src else None


def store_fingerprint(path) -> dict:
    """What identifies the vectors of a store, cheaply (no data read): ``{"kind", "sha256", "run"}``.

    * A complete store written by :func:`to_zarr` (``kind="checksums"``): SHA-256 over its
      run fingerprint (``eoembed:run``), coordinate and metadata checksums and every
      region's recorded data checksum. Content-based: a copied store keeps it, a
      re-written one (other data, grid or model) changes it. (Data changed behind the
      markers' back is what :func:`verify` finds.)
    * Any other store (:func:`save_embeddings`, NetCDF, an interrupted write)
      (``kind="files"``): SHA-256 over every file's relative path, size and modification
      time, so any write changes it (a copy without preserved times does too).
    """
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    run = None
    done = path / _DONE_DIR
    attrs = {}
    if path.is_dir() and done.is_dir():
        try:
            import zarr

            with warnings.catch_warnings():  # our done-markers folder is not a Zarr node; zarr says so
                warnings.simplefilter("ignore")
                group = zarr.open_group(str(path), mode="r")
                arrays = [n for n, a in group.arrays() if a.ndim >= 3]
            attrs = dict(group[arrays[0]].attrs) if len(arrays) == 1 else {}
        except Exception:  # noqa: BLE001  (unreadable layout: fall back to the files)
            attrs = {}
    if attrs.get(_COMPLETE_ATTR) and attrs.get(_RUN_ATTR):
        run = attrs[_RUN_ATTR]
        h.update(json.dumps([run, attrs.get(_COORDS_ATTR), attrs.get(_META_ATTR)], default=str).encode())
        for marker in sorted(done.iterdir()):
            h.update(marker.name.encode() + b"=" + marker.read_bytes())
        return {"kind": "checksums", "sha256": h.hexdigest(), "run": run}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return {"kind": "files", "sha256": h.hexdigest(), "run": attrs.get(_RUN_ATTR)}


def is_store(src: str) -> bool:
    """True when ``src`` is an eoembed store: a NetCDF file, or a Zarr store with one variable over ``embedding``."""
    low = str(src).lower().rstrip("/")
    if low.endswith((".nc", ".nc4")):
        return True
    if "://" in low or not Path(src).is_dir():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not consolidated", our done-markers folder: fine for a probe
            ds = xr.open_zarr(src, consolidated=None)
    except Exception:  # noqa: BLE001  (not a store xarray can open at its root: not ours)
        return False
    return any("embedding" in v.dims for v in ds.data_vars.values())


#: The product reader registered by :mod:`eoembed.products` (``reader(src, format, **options)``).
_READER: Callable | None = None


def register_reader(reader: Callable) -> None:
    """Register the reader of published products, called as ``reader(src, format, chunks=..., **options)``.

    :mod:`eoembed.products` registers itself (the package root imports it), so this
    stores module reads every format without importing the layer above it.
    """
    global _READER
    _READER = reader


def open_embeddings(
    path_or_url: str | os.PathLike,
    format: str = "auto",
    *,
    chunks: Any = "auto",
    year: int | None = None,
    zone: int | str | None = None,
    georef: str | os.PathLike | None = None,
    crs: Any = None,
    transform: Any = None,
    scales: str | os.PathLike | None = None,
    column: str = "embedding",
    time_column: str | None = None,
    model: str | None = None,
):
    """Open an embedding cube: eoembed's own store or a published embedding product.

    The one reader of eoembed (also ``eoembed.open_embeddings`` and
    ``eoembed.products.open_embeddings``). Formats and what each returns are described in
    :mod:`eoembed.products` and ``docs/products-and-export.md``.

    Parameters
    ----------
    path_or_url:
        File, folder or URL (GeoTIFFs over HTTP(S)/S3/GCS are read by GDAL, lazily).
    format:
        One of ``eoembed.products.FORMATS``: ``"auto"`` (from the extension and
        content), ``"eoembed"``, ``"alphaearth"``, ``"tessera"``, ``"geoparquet"``,
        ``"geotiff"``, ``"zarr"``.
    chunks:
        Dask chunks (``"auto"``, a dict, or ``None`` to read eagerly into memory).
    year:
        Year of an annual product (AlphaEarth/TESSERA); picks the year of a TESSERA Zarr
        store. Default: a 2010–2039 year in the file name or its folders.
    zone:
        TESSERA Zarr store: the UTM zone group to read (``31`` or ``"utm31"``); default
        the only one.
    georef:
        TESSERA ``.npy`` tiles: a GeoTIFF on the same grid (the tile's landmask).
    crs, transform:
        TESSERA ``.npy`` tiles without ``georef``: the CRS and the affine transform (an
        ``affine.Affine``, or its six numbers ``(a, b, c, d, e, f)`` in rasterio/affine
        order, *not* GDAL's geotransform order).
    scales:
        TESSERA: the scales file (default ``<name>_scales.npy``/``_scales.tif`` next to it).
    column, time_column:
        GeoParquet embedding column, and the time column (default the first of
        ``timestamp``, ``datetime``, ``date``).
    model:
        Name to record as ``eoembed:model`` for generic GeoTIFF/Zarr/GeoParquet inputs.

    Returns
    -------
    xr.DataArray or eoembed.products.PointEmbeddings
        ``("time"?, "embedding", "y", "x")`` float32, lazy (dask) where the format
        allows, CRS written; or scattered GeoParquet rows as ``PointEmbeddings``.

    Raises
    ------
    InputError
        The path does not exist, or its content does not match ``format``.
    ParameterError
        Unknown ``format``, a bad ``transform``, or an int8 raster whose quantization
        cannot be told.
    MissingCRSError
        No CRS could be found (pass ``crs=``/``georef=``).
    """
    from eoembed.validate import check_open_options

    src = os.fspath(path_or_url)
    check_open_options(src, format=format, transform=transform)
    options = dict(year=year, zone=zone, georef=georef, crs=crs, transform=transform, scales=scales,
                   column=column, time_column=time_column, model=model)
    if format == "eoembed" or (format == "auto" and is_store(src)):
        logging.getLogger("eoembed.io").info("opening %s as eoembed", src)
        return open_store(src, chunks=chunks if chunks is not None else "auto")
    if _READER is None:  # only when eoembed/__init__ did not run its wiring (never in normal use)
        raise ParameterError(f"{src} is not an eoembed store and no product reader is registered; import eoembed "
                             "(it registers eoembed.products) or pass format='eoembed'.")
    return _READER(src, format, chunks=chunks, **options)


# --- streaming, resumable writes that prove themselves -------------------------------
#: Region side (in patches) used to cut a numpy-backed cube for streaming.
REGION_PATCHES = 256
_DONE_DIR = ".eoembed-done"  # one marker per finished region (JSON: run, bounds, sha256), inside the store
_RUN_ATTR = "eoembed:run"
_COORDS_ATTR = "eoembed:coords_sha256"
_COMPLETE_ATTR = "eoembed:complete"
_META_ATTR = "eoembed:meta_sha256"  # [crs, transform, attrs]: SHA-256s of the metadata as laid out
_META_PARTS = ("crs", "transform", "attrs")
#: Attrs left out of the metadata checksum: bookkeeping, and diagnostics added when the store is finished.
_UNCHECKED = (_RUN_ATTR, _COORDS_ATTR, _COMPLETE_ATTR, _META_ATTR)
_UNCHECKED_PREFIXES = ("eoembed:seam", "eoembed:position", "_")
_CREATING = ".creating"  # suffix of a store being created (renamed into place when its layout is written)


def _regular(emb: xr.DataArray) -> xr.DataArray:
    """Uniform ``y``/``x`` chunks (the last may be smaller), as a Zarr store needs; others one chunk."""
    emb = emb.chunk({d: -1 for d in emb.dims if d not in ("y", "x")})
    fix = {}
    for d in ("y", "x"):
        c = emb.chunksizes[d]
        if len(c) > 1 and (len(set(c[:-1])) > 1 or c[-1] > c[0]):
            fix[d] = max(c)
    return emb.chunk(fix) if fix else emb


def _regions(emb: xr.DataArray) -> list[dict[str, slice]]:
    """One region per dask chunk along ``y``/``x`` (the store's chunks)."""
    return _grid_regions(emb.chunksizes["y"], emb.chunksizes["x"])


def _grid_regions(cy, cx) -> list[dict[str, slice]]:
    out, ys, xs = [], [0], [0]
    for c in cy:
        ys.append(ys[-1] + int(c))
    for c in cx:
        xs.append(xs[-1] + int(c))
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            out.append({"y": slice(ys[i], ys[i + 1]), "x": slice(xs[j], xs[j + 1])})
    return out


def _marker_name(r: dict[str, slice]) -> str:
    return f"y{r['y'].start}-x{r['x'].start}"


def _run_id(emb: xr.DataArray) -> str:
    """What identifies a run: shape, chunks, grid, provenance, and the input data.

    The data part is dask's deterministic token of the cube's graph, which folds in the
    token of every input: in-memory arrays by content, files opened with xarray by path
    and modification time. A re-processed input (another cloud mask, other scenes) on the
    same grid is therefore another run. Timings and seam metrics are left out.
    """
    import hashlib
    import json

    from dask.base import tokenize

    attrs = {k: v for k, v in emb.attrs.items() if not k.startswith("eoembed:seam")}
    key = json.dumps([dict(emb.sizes), {k: list(v) for k, v in emb.chunksizes.items()}, list(emb.rio.transform()),
                      str(emb.rio.crs), attrs, tokenize(emb.data)], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _digest(values: np.ndarray) -> str:
    """SHA-256 of a region's float32 values (C order, little-endian)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def _coords_digest(y, x) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(y, "<f8").tobytes() + b"|" + np.asarray(x, "<f8").tobytes()).hexdigest()


def _index(ndim: int, r: dict[str, slice]) -> tuple:
    return (slice(None),) * (ndim - 2) + (r["y"], r["x"])


def _mark_done(record: dict, marker: Path) -> str:
    """Write a region's marker (its checksum) after its data; atomic (written aside, then renamed)."""
    import json

    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(marker)
    return marker.name


def _write_region(block, path: str, name: str, r: dict[str, slice], marker: Path, run: str) -> str:
    """Write one region, read it back, check it, then mark it done with its checksum."""
    import zarr

    arr = zarr.open_array(path, path=name, mode="r+")
    idx = _index(arr.ndim, r)
    block = np.ascontiguousarray(block, dtype="float32")
    arr[idx] = block
    digest = _digest(block)
    if _digest(arr[idx]) != digest:
        from eoembed.exceptions import StoreIntegrityError

        raise StoreIntegrityError(f"region {marker.name} of {path} reads back different from what was written "
                                  "(a failing disk or a concurrent writer?). Check the storage and run again with "
                                  "resume=True (--resume).")
    record = {"run": run, "y": [r["y"].start, r["y"].stop], "x": [r["x"].start, r["x"].stop], "sha256": digest}
    return _mark_done(record, marker)


def _check_region(arr, r: dict[str, slice], marker: Path, run: str | None) -> str | None:
    """Why a region marked done cannot be trusted (None when its data matches its checksum)."""
    import json

    try:
        rec = json.loads(marker.read_text())
    except (OSError, ValueError):
        return "marker unreadable"
    if not isinstance(rec, dict) or "sha256" not in rec:
        return "marker without a checksum"
    if run is not None and rec.get("run") != run:
        return "marker from another run"
    if rec.get("y") != [r["y"].start, r["y"].stop] or rec.get("x") != [r["x"].start, r["x"].stop]:
        return "marker for other bounds"
    try:
        got = _digest(arr[_index(arr.ndim, r)])
    except Exception as err:  # noqa: BLE001  (a truncated or corrupt chunk: any codec error)
        return f"data unreadable ({type(err).__name__})"
    return None if got == rec["sha256"] else "data differs from its checksum (missing or changed chunk)"


def _parallelism() -> int:
    try:
        from distributed import get_client

        return max(1, sum(get_client().nthreads().values()))
    except (ImportError, ValueError):
        import os

        return max(1, os.cpu_count() or 1)


def _lock(path: Path):
    """The store's write lock (``<store>.lock`` beside it), taken without waiting."""
    from filelock import FileLock, Timeout

    from eoembed.exceptions import StoreError, StoreLockedError

    lock = FileLock(str(path) + ".lock")
    try:
        with open(str(path) + ".lock", "a"):  # filelock would report an unwritable folder as "locked"
            pass
        lock.acquire(timeout=0)
    except Timeout:
        raise StoreLockedError(
            f"{path} is being written by another process (it holds {path}.lock). Two writers would mix their "
            "regions; wait for it to finish (then resume=True / --resume completes or checks the store), or "
            "write to another path."
        ) from None
    except OSError as err:
        raise StoreError(f"cannot create the lock file {path}.lock ({err.strerror or err}): the folder "
                         f"{path.parent} is not writable. Choose a writable output path.") from err
    return lock


def _open_store_array(path: Path, name: str):
    import zarr

    from eoembed.exceptions import StoreError

    try:
        return zarr.open_array(str(path), path=name, mode="r")
    except Exception as err:  # noqa: BLE001  (any unreadable store: say what to do)
        raise StoreError(
            f"{path} is not a readable eoembed Zarr store (no array {name!r}: {type(err).__name__}: {err}); "
            "its layout is missing or damaged, so no region in it can be trusted. Remove it or pass "
            "overwrite=True (--overwrite) to start afresh."
        ) from err


def to_zarr(emb: xr.DataArray, path, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
            region_patches: int = REGION_PATCHES, pyramid: bool = False) -> dict:
    """Write an embedding cube to a Zarr store region by region, resumably and verifiably.

    The store is laid out first (every coordinate, the CRS, the attrs, the run
    fingerprint) under ``<path>.creating`` and renamed into place, so ``path`` is a
    valid (partly empty) cube from the start. Each region (one dask chunk of ``y``×``x``)
    is then computed, written, read back and checked, and only then its marker
    ``<store>/.eoembed-done/<region>`` is written, holding the region's bounds, the run
    fingerprint and the SHA-256 of its values. A region killed half-way has no marker
    and is written again.

    With ``resume=True`` an existing store of the *same run* — same grid, model,
    settings and input data (see the fingerprint below) — is continued: every marked
    region is read back and its checksum verified; a region whose data went missing,
    was changed or truncated is written again (a warning names it), the rest is skipped.
    A store of another run, or one whose layout is damaged, is refused with the fix
    (another path, or ``overwrite=True``). A resumed store is bit-identical to an
    uninterrupted run. At the end the seam metric is added to the attrs and the store is
    marked complete (``eoembed:complete``); :func:`verify` checks a store at any time.

    **Run fingerprint** (``eoembed:run``): sizes, chunks, transform, CRS, provenance
    attrs and dask's deterministic token of the cube's graph, which covers the input
    data: in-memory inputs by content, files opened through xarray by path and
    modification time. (An input Zarr store re-written in place, region by region, keeps
    its folder's modification time: write re-processed inputs to a new path.)

    **One writer per store**: a lock file ``<path>.lock`` beside the store is taken
    (without waiting) with the ``filelock`` library; a second writer gets
    :class:`~eoembed.exceptions.StoreLockedError`. The lock uses ``fcntl.flock`` on
    POSIX: it holds across processes on one machine and on file systems that implement
    ``flock`` across clients (local disks, NFSv4 on Linux, Lustre with ``flock``
    mounted); on file systems that do not (some NFSv3/SMB mounts) two machines could
    both take it. Object stores (``s3://``…) are not written by this function: write
    locally, then copy.

    Parameters
    ----------
    emb:
        The result of :func:`eoembed.embed` (lazy or not).
    path:
        Store folder (``.zarr``), local or on a mounted file system.
    resume:
        Continue (and verify) an interrupted or damaged write of the same run.
    overwrite:
        Replace an existing store (without ``resume``).
    progress:
        Show a progress bar over regions.
    region_patches:
        Region side when ``emb`` is not dask-backed.
    pyramid:
        Once the store is complete, also write its multiscale pyramid (2×2 means
        renormalised to unit length per level, and the PCA-RGB COG served as map tiles)
        to ``<path>.pyramid`` with :func:`write_pyramid`, read from
        the verified store; open the map with ``explore(emb, pyramid="<path>.pyramid")``.
        Skipped (``"pyramid": None``) when the cube's long side is at most 256 patches.

    Returns
    -------
    dict
        ``path``, ``regions``, ``written`` and ``skipped`` region counts, ``repaired``
        (regions marked done whose data failed verification and were written again),
        ``pyramid`` (its folder, or None).

    Raises
    ------
    StoreLockedError
        Another process is writing ``path``.
    StoreError
        ``path`` exists (neither ``resume`` nor ``overwrite``), belongs to another run,
        is damaged beyond region repair, or cannot be written (read-only, disk full):
        the message says what to do; regions finished before the failure are kept.
    """
    import dask

    from eoembed.exceptions import StoreError, StoreMismatchError

    if "://" in str(path):
        raise StoreError(f"to_zarr writes local or mounted folders, not {path!r}. Write locally, then copy "
                         "the folder to the object store.")
    path = Path(path)
    if emb.chunks is None:
        emb = emb.chunk({"y": region_patches, "x": region_patches})
    emb = _regular(emb.transpose(..., "y", "x"))
    name = emb.name if emb.name and emb.name not in emb.coords else "embeddings"  # a variable needs its own name
    emb = emb.rename(name)
    run = _run_id(emb)
    done_dir = path / _DONE_DIR
    lock = _lock(path)
    try:
        repaired: list[str] = []
        if path.exists():
            if resume:
                arr = _open_store_array(path, name)
                attrs = dict(arr.attrs)
                if attrs.get(_RUN_ATTR) != run:
                    raise StoreMismatchError(
                        f"{path} was written by a different run (other input data, cube, model, tiling or "
                        f"chunks: run {attrs.get(_RUN_ATTR)} vs {run}); resuming would mix two runs. Use another "
                        "output path, or overwrite=True (--overwrite) to start again."
                    )
                if tuple(arr.shape) != tuple(emb.shape):
                    raise StoreMismatchError(f"{path} holds an array of shape {arr.shape}, the cube is "
                                             f"{emb.shape}; use another path or overwrite=True (--overwrite).")
            elif overwrite:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            else:
                raise StoreError(f"{path} exists; pass overwrite=True (--overwrite) to replace it or resume=True "
                                 "(--resume) to continue it. Nothing was changed.")
        try:
            if not path.exists():
                _create(emb, path, run)
            done_dir.mkdir(exist_ok=True)
            regions = _regions(emb)
            arr = _open_store_array(path, name)
            if _repair_coords(path, emb):
                repaired.append("x/y coordinates (changed since written)")
            todo = []
            for r in regions:
                marker = done_dir / _marker_name(r)
                if marker.exists():
                    why = _check_region(arr, r, marker, run)
                    if why is None:
                        continue
                    repaired.append(f"{marker.name} ({why})")
                    marker.unlink()
                todo.append((r, marker))
            if todo:
                _set_attrs(path, name, {_COMPLETE_ATTR: None})
            if repaired:
                warnings.warn(f"{path}: {len(repaired)} region(s) marked done failed verification and are written "
                              f"again: {', '.join(repaired[:5])}{' …' if len(repaired) > 5 else ''}.", UserWarning,
                              stacklevel=user_stacklevel())
            from tqdm.auto import tqdm

            logging.getLogger("eoembed.io").info("%s: %d of %d regions finished earlier, skipped", path,
                                                  len(regions) - len(todo), len(regions))
            step = _parallelism()
            with tqdm(total=len(regions), initial=len(regions) - len(todo), desc=f"write {path.name}",
                      unit="region", disable=not progress) as bar:
                for start in range(0, len(todo), step):
                    tasks = [dask.delayed(_write_region)(emb.data[_index(emb.ndim, r)], str(path), name, r, marker,
                                                         run)
                             for r, marker in todo[start : start + step]]
                    dask.compute(*tasks)
                    bar.update(len(tasks))
            _finish(path, emb)
            pyr = None
            if pyramid and max(emb.sizes["y"], emb.sizes["x"]) > 256:
                pyr = Path(f"{path}.pyramid")
                write_pyramid(open_store(path, chunks={}), pyr, overwrite=True)
        except OSError as err:
            raise StoreError(
                f"writing {path} failed: {err.strerror or err} ({type(err).__name__}, errno {err.errno}). Regions "
                "finished so far are kept and verified: fix the cause (free disk space, a writable path) and run "
                "again with resume=True (--resume)."
            ) from err
    finally:
        lock.release()
    return {"path": path, "regions": len(regions), "written": len(todo), "skipped": len(regions) - len(todo),
            "repaired": len(repaired), "pyramid": pyr}


def _create(emb: xr.DataArray, path: Path, run: str) -> None:
    """Lay the store out aside (coords, CRS, attrs, fingerprint; no data) and rename it into place."""
    tmp = path.with_name(path.name + _CREATING)
    if tmp.exists():  # a creation killed half-way: ours by name, nothing in it was finished
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    ds = emb.to_dataset()
    ds[emb.name].attrs[_RUN_ATTR] = run
    ds[emb.name].attrs[_COORDS_ATTR] = _coords_digest(emb["y"].values, emb["x"].values)
    ds.to_zarr(tmp, mode="w", compute=False, consolidated=False)
    meta = _meta_digests(tmp, emb.name)  # of the metadata as written; a list: attrs stay str/num/list
    _set_attrs(tmp, emb.name, {_META_ATTR: [meta[k] for k in _META_PARTS]})
    (tmp / _DONE_DIR).mkdir()
    tmp.rename(path)


def _meta_digests(path: Path, name: str) -> dict[str, str]:
    """SHA-256 of what georeferences and describes the vectors, as stored: the CRS (``spatial_ref``'s attrs),
    the transform (its ``GeoTransform``) and the array's attrs (model, patch size, bands…; not bookkeeping)."""
    import hashlib

    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs = {k: v for k, v in group[name].attrs.items()
             if k not in _UNCHECKED and not k.startswith(_UNCHECKED_PREFIXES)}
    ref = dict(group["spatial_ref"].attrs) if "spatial_ref" in group else {}
    ref = {k: v for k, v in ref.items() if not k.startswith("_")}
    transform = ref.pop("GeoTransform", None)

    def sha(obj) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()

    return {"crs": sha(ref), "transform": sha(transform), "attrs": sha(attrs)}


def _repair_coords(path: Path, emb: xr.DataArray) -> bool:
    """Rewrite the store's x/y when they differ from the run's (True when they did)."""
    import zarr

    want = _coords_digest(emb["y"].values, emb["x"].values)
    try:
        group = zarr.open_group(str(path), mode="r")
        have = _coords_digest(np.asarray(group["y"][:]), np.asarray(group["x"][:]))
    except Exception:  # noqa: BLE001  (missing or unreadable coordinate arrays)
        have = None
    if have == want:
        return False
    from eoembed.exceptions import StoreIntegrityError

    try:
        group = zarr.open_group(str(path), mode="r+")
        for d in ("y", "x"):
            group[d][:] = emb[d].values
    except Exception as err:  # noqa: BLE001
        raise StoreIntegrityError(f"{path}: its x/y coordinates are damaged and cannot be rewritten "
                                  f"({type(err).__name__}); remove it and write it again (overwrite=True / "
                                  "--overwrite).") from err
    return True


def _set_attrs(path: Path, name: str, values: dict) -> None:
    """Update (None: delete) attrs of the store's array (zarr writes metadata atomically)."""
    import zarr

    arr = zarr.open_array(str(path), path=name, mode="r+")
    for key, value in values.items():
        if value is None:
            if key in arr.attrs:
                del arr.attrs[key]
        elif arr.attrs.get(key) != value:
            arr.attrs[key] = value


def _finish(path: Path, emb: xr.DataArray) -> None:
    """Seam metric from the written store (lazily, one pass) and the complete flag."""
    import zarr

    from eoembed.grid import diagnostics, grid_of

    back = open_embeddings(path, chunks={})
    arr = zarr.open_array(str(path), path=back.name, mode="r+")
    todo = "eoembed:seam_ratio" not in arr.attrs or "eoembed:position_hit_rate" not in arr.attrs
    if todo and "eoembed:tile_size" in emb.attrs:
        found = diagnostics(back.data, grid_of(emb))
        arr.attrs.update({k: v for k, v in found.items() if k not in arr.attrs})
    arr.attrs[_COMPLETE_ATTR] = 1


def verify(path) -> dict:
    """Check a store written by :func:`to_zarr` against what its run recorded.

    Reads every region back and compares its SHA-256 with the one in its done-marker,
    checks the coordinates, the CRS (``spatial_ref``), the transform (``GeoTransform``)
    and the attrs that describe the vectors against their recorded checksums, and the
    complete flag.

    Returns
    -------
    dict
        ``ok`` (True only when complete and every region verifies), ``complete``,
        ``regions``, ``verified``, ``missing`` (regions without a marker: never
        finished), ``bad`` (``"region: why"`` for regions whose data does not match),
        ``run`` (the fingerprint), ``message`` (one line: the verdict and what to do).

    Raises
    ------
    StoreError
        ``path`` is not an eoembed store, or its layout is unreadable.
    """
    import zarr

    from eoembed.exceptions import StoreError

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} does not exist.")
    if not path.is_dir():
        raise StoreError(f"{path} is a file, not a Zarr store written by eoembed.io.to_zarr (e.g. eoembed embed "
                         "--lazy/--resume); only such stores record checksums to verify. Nothing was checked or "
                         "changed; open the file with eoembed.open_embeddings to use it.")
    if (path / _META).is_file():
        raise StoreError(f"{path} is a pyramid folder (written by write_pyramid), not a store written by "
                         "eoembed.io.to_zarr; pyramids hold no checksums. Verify the store it was written from, and "
                         "if in doubt write the pyramid again from it (write_pyramid(emb, path, overwrite=True)). "
                         "Nothing was checked or changed.")
    try:
        group = zarr.open_group(str(path), mode="r")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Object at .eoembed-done")
            names = [n for n, a in group.arrays() if _RUN_ATTR in a.attrs]
    except Exception as err:  # noqa: BLE001
        raise StoreError(f"{path} is not a readable Zarr store ({type(err).__name__}: {err}), so there is nothing "
                         "to verify. If it is an output of eoembed.io.to_zarr that got damaged, write it again "
                         "(overwrite=True / --overwrite); an input folder needs no verifying.") from err
    if len(names) != 1:
        raise StoreError(f"{path} holds no store written by eoembed.io.to_zarr (no array with {_RUN_ATTR!r}); "
                         "only such stores record checksums to verify.")
    name = names[0]
    arr = _open_store_array(path, name)
    attrs = dict(arr.attrs)
    run = attrs.get(_RUN_ATTR)
    cy = _chunk_sizes(arr.shape[-2], arr.chunks[-2])
    cx = _chunk_sizes(arr.shape[-1], arr.chunks[-1])
    missing, bad, verified = [], [], 0
    for r in _grid_regions(cy, cx):
        marker = path / _DONE_DIR / _marker_name(r)
        if not marker.exists():
            missing.append(marker.name)
            continue
        why = _check_region(arr, r, marker, run)
        if why is None:
            verified += 1
        else:
            bad.append(f"{marker.name}: {why}")
    try:
        y = np.asarray(group["y"][:])
        x = np.asarray(group["x"][:])
        if attrs.get(_COORDS_ATTR) not in (None, _coords_digest(y, x)):
            bad.append("coordinates: x/y differ from their recorded checksum")
    except Exception as err:  # noqa: BLE001
        bad.append(f"coordinates: unreadable ({type(err).__name__})")
    recorded = attrs.get(_META_ATTR)
    if isinstance(recorded, list) and len(recorded) == len(_META_PARTS):  # older stores have none
        recorded = dict(zip(_META_PARTS, recorded))
        try:
            now = _meta_digests(path, name)
            what = {"crs": "CRS (spatial_ref)", "transform": "transform (GeoTransform)",
                    "attrs": "attrs that describe the vectors"}
            for key, label in what.items():
                if recorded.get(key) != now[key]:
                    bad.append(f"metadata: the {label} differ from their recorded checksum")
        except Exception as err:  # noqa: BLE001
            bad.append(f"metadata: unreadable ({type(err).__name__})")
    complete = bool(attrs.get(_COMPLETE_ATTR))
    n = len(cy) * len(cx)
    ok = complete and not missing and not bad
    if ok:
        msg = f"{path}: complete, {verified}/{n} regions verified (run {run})."
    else:
        parts = []
        if bad:
            parts.append(f"{len(bad)} region(s) damaged ({'; '.join(bad[:3])}{' …' if len(bad) > 3 else ''})")
        if missing:
            parts.append(f"{len(missing)} region(s) never finished")
        if not complete and not parts:
            parts.append("not marked complete")
        coords_bad = any(b.startswith(("coordinates", "metadata")) for b in bad)
        fix = ("write it again (overwrite=True / --overwrite): its coordinates or metadata (CRS, transform, attrs) "
               "changed after writing and resume cannot repair them"
               if coords_bad else "run the same embedding again with resume=True (eoembed embed ... --resume): "
               "damaged and missing regions are rewritten, verified ones kept")
        msg = f"{path}: {', '.join(parts)}; {verified}/{n} regions verified. To fix it, {fix}."
    return {"path": path, "ok": ok, "complete": complete, "regions": n, "verified": verified, "missing": missing,
            "bad": bad, "run": run, "message": msg}


def _chunk_sizes(size: int, chunk: int) -> list[int]:
    return [min(chunk, size - s) for s in range(0, size, chunk)] or [0]


# --- pyramids: multiscale levels for display -------------------------------------------
# Level ``l`` has ``2^l``-patch cells: each vector is the mean of the valid (finite, not
# all-zero) vectors of a 2x2 block of level ``l-1``, renormalised to unit length, as the
# published embedding products do for their coarser levels. Each level is computed lazily
# from the level written just before it and streamed to its own Zarr store, so memory stays
# bounded whatever the cube size. ``pyramid.json`` (the manifest) lists the levels and the
# views written beside them (the PCA-RGB COG). The explorer reads pyramids
# (``explore(emb, pyramid=path)``); ``eoembed.explore.pyramid`` re-exports these functions.
# Rendering a view (PCA, colours) is not store work: the package root registers the
# explorer's PCA-RGB writer with :func:`register_view`.
_META = "pyramid.json"
#: File name of the PCA-RGB view written beside the levels.
PCA_COG = "pca.tif"
#: Views rendered beside the levels: name -> ``render(emb, path, sample_from)``. The stores layer
#: cannot render (PCA, colours); the package root registers the explorer's PCA-RGB COG writer here.
_VIEWS: dict[str, Callable] = {}


def register_view(name: str, render: Callable) -> None:
    """Register ``render(emb, path, *, sample_from)``, which writes the view ``name`` (a file name) of a pyramid.

    :func:`write_pyramid` calls it with ``pca=True`` for :data:`PCA_COG`; ``eoembed/__init__``
    registers the explorer's writer (:func:`eoembed.explore.tiles.write_pca_cog`).
    """
    _VIEWS[str(name)] = render


def coarsen_embeddings(emb: xr.DataArray, factor: int = 2) -> xr.DataArray:
    """Mean of the valid vectors of each ``factor``×``factor`` block, renormalised to unit length.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` with a CRS (numpy or dask).
    factor:
        Block side in patches (edges padded: a partial block averages what it has).

    Returns
    -------
    xr.DataArray
        float32, same dims and attrs, ``ceil(ny/factor)×ceil(nx/factor)`` patches, x/y at the
        block centres, transform scaled by ``factor``; NaN where a block holds no valid
        vector. Lazy when ``emb`` is dask-backed.
    """
    from affine import Affine

    if int(factor) < 2:
        raise ParameterError(f"factor must be >= 2, got {factor}.")
    f = int(factor)
    v = emb.astype("float32")
    valid = np.isfinite(v).all("embedding") & (np.abs(v).sum("embedding") > 0)
    v = v.where(valid)
    m = v.coarsen(y=f, x=f, boundary="pad").mean()  # NaN-skipping for floats
    norm = np.sqrt((m * m).sum("embedding", skipna=False))
    out = (m / norm.where(norm > 0)).astype("float32")
    a, b, c, d, e, ff = tuple(emb.rio.transform())[:6]
    tr = Affine(a * f, b, c, d, e * f, ff)
    ny, nx = out.sizes["y"], out.sizes["x"]
    out = out.assign_coords(x=c + tr.a * (np.arange(nx) + 0.5), y=ff + tr.e * (np.arange(ny) + 0.5))
    out.attrs = dict(emb.attrs)
    out.name = emb.name
    out = out.rio.write_crs(emb.rio.crs).rio.write_transform(tr)
    return out.transpose(*emb.dims)


def write_pyramid(emb: xr.DataArray, path, *, min_side: int = 256, overwrite: bool = False,
                  chunks: int = 512, pca: bool = True) -> list[Path]:
    """Write levels 1, 2, … of ``emb``'s pyramid under ``path`` until the long side is ≤ ``min_side``.

    Parameters
    ----------
    emb:
        The full-resolution cube (level 0 is not copied: keep your own store of it).
    path:
        Directory; level ``l`` goes to ``path/l.zarr`` and ``path/pyramid.json`` lists them.
    min_side:
        Stop at the first level whose long side is at most this (>= 16).
    overwrite:
        Replace an existing pyramid at ``path``.
    chunks:
        Spatial chunk side of each written level (patches).
    pca:
        Also render the full-resolution PCA-RGB view as a Cloud-Optimized GeoTIFF
        ``path/pca.tif`` (the view registered for :data:`PCA_COG`:
        :func:`eoembed.explore.tiles.write_pca_cog`, PCA fitted on the coarsest level),
        which the explorer serves as zoom-dependent tiles. Skipped for a cube with ``time``
        (its view depends on the date shown).

    Returns
    -------
    list of pathlib.Path
        The level stores, finest first.
    """
    from eoembed.cube import canonical

    if int(min_side) < 16:
        raise ParameterError(f"min_side must be >= 16, got {min_side}.")
    root = Path(path)
    if (root / _META).exists() and not overwrite:
        raise InputError(f"A pyramid exists at {root}; pass overwrite=True to replace it.")
    root.mkdir(parents=True, exist_ok=True)
    cur = canonical(emb)
    if max(cur.sizes["y"], cur.sizes["x"]) <= min_side:
        raise ParameterError(f"The cube ({cur.sizes['y']}×{cur.sizes['x']} patches) is already at most "
                             f"min_side={min_side}; the explorer reads it directly, no pyramid needed.")
    if cur.rio.crs is None:
        raise MissingCRSError("The cube has no CRS, so its pyramid could not be tied to its grid; write one with "
                              "emb.rio.write_crs(...) (eoembed.embed keeps the input's CRS).")
    source = pyramid_source(cur)
    levels, meta = [], []
    lvl = 0
    while max(cur.sizes["y"], cur.sizes["x"]) > min_side:
        lvl += 1
        nxt = coarsen_embeddings(cur, 2)
        spatial = {"y": min(chunks, nxt.sizes["y"]), "x": min(chunks, nxt.sizes["x"])}
        nxt = nxt.chunk({**{d: -1 for d in nxt.dims if d not in ("y", "x")}, **spatial})
        for var in ("x", "y"):
            nxt[var].encoding.pop("chunks", None)
        nxt.encoding = {}
        if nxt.name is None or nxt.name in nxt.coords:  # a Zarr variable needs its own name
            nxt.name = "embeddings"
        out = root / f"{lvl}.zarr"
        save_embeddings(nxt, out, overwrite=True)
        cur = canonical(open_store(out, chunks={}))
        levels.append(out)
        meta.append({"level": lvl, "factor": 2 ** lvl, "path": out.name, "shape": [cur.sizes["y"], cur.sizes["x"]]})
    doc = {"eoembed_pyramid": 1, "levels": meta, "source": source}
    if pca and "time" not in emb.dims:
        render = _VIEWS.get(PCA_COG)
        if render is None:
            raise ParameterError(f"No writer is registered for the pyramid's {PCA_COG} view (import eoembed registers "
                                 "it); pass pca=False to write the levels only.")
        render(emb, root / PCA_COG, sample_from=cur)
        doc["pca_cog"] = PCA_COG
    (root / _META).write_text(json.dumps(doc, indent=1))
    return levels


def open_pyramid(path) -> list[xr.DataArray]:
    """The levels written by :func:`write_pyramid`, finest first, lazily (dask)."""
    from eoembed.cube import canonical

    meta = read_pyramid_manifest(path)
    root = Path(path)
    return [canonical(open_store(root / m["path"], chunks={})) for m in meta["levels"]]


def read_pyramid_manifest(path) -> dict:
    """``pyramid.json`` of the pyramid at ``path``, schema-checked (:func:`eoembed.validate.check_pyramid_manifest`)."""
    from eoembed.exceptions import StoreIntegrityError
    from eoembed.validate import check_pyramid_manifest

    root = Path(path)
    try:
        doc = json.loads((root / _META).read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"No pyramid at {root} ({_META} missing); write one with write_pyramid(emb, path).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreIntegrityError(f"The pyramid manifest {root / _META} is damaged (truncated or not JSON: {err}). "
                                  f"Write the pyramid again with write_pyramid(emb, {str(root)!r}, overwrite=True)."
                                  ) from None
    return check_pyramid_manifest(doc, root)


#: Patches sampled (a lattice) and dims kept per patch for a pyramid's run fingerprint.
_FP_SIDE, _FP_DIMS, _FP_WINDOW = 4, 16, 64


def pyramid_source(emb: xr.DataArray) -> dict:
    """What ties a pyramid to the cube it was written from: CRS, transform, shape and a value fingerprint.

    The fingerprint is the first ``_FP_DIMS`` values of the vectors at a ``_FP_SIDE``² lattice of patches
    (first timestep), rounded to 1e-3: another run on the same grid (another date, model or mask) differs
    there, while a store round trip of the same cube does not. The lattice spans the central
    ``_FP_WINDOW``² patches (less often masked than a corner), so a chunked store reads at most four
    chunks, whatever its size.
    """
    ny, nx = emb.sizes["y"], emb.sizes["x"]

    def lattice(n):
        lo = max(0, n // 2 - _FP_WINDOW // 2)
        return np.unique(np.linspace(lo, min(n, lo + _FP_WINDOW) - 1, _FP_SIDE).round().astype(int))

    iy, ix = lattice(ny), lattice(nx)
    v = emb.isel(time=0) if "time" in emb.dims else emb
    v = v.isel(embedding=slice(0, _FP_DIMS), y=iy, x=ix).transpose("embedding", "y", "x")
    vals = np.asarray(v.values, np.float64).round(3)
    return {"crs": emb.rio.crs.to_wkt(), "transform": [float(t) for t in tuple(emb.rio.transform())[:6]],
            "shape": [int(ny), int(nx)], "fingerprint": [[None if not np.isfinite(a) else float(a) for a in row]
                                                        for row in vals.reshape(vals.shape[0], -1).T]}


def pyramid_pca_cog(path) -> Path | None:
    """The PCA-RGB COG written beside the levels by :func:`write_pyramid` (None if there is none)."""
    root = Path(path)
    try:
        name = json.loads((root / _META).read_text()).get("pca_cog")
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, AttributeError):
        return None
    return root / name if name and (root / name).exists() else None
