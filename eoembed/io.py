"""Saving and reopening embedding cubes without losing georeferencing or provenance."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from eoembed.exceptions import EOEmbedError, InputError, user_stacklevel


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
        with warnings.catch_warnings():  # our done-markers folder is not a Zarr node; zarr says so
            warnings.filterwarnings("ignore", message="Object at .eoembed-done")
            ds = xr.open_zarr(path, decode_coords="all", chunks=chunks, consolidated=False)
    names = [n for n, v in ds.data_vars.items() if "embedding" in v.dims]
    if len(names) != 1:
        raise InputError(f"{path} holds no single embedding cube (variables: {list(ds.data_vars)})")
    return ds[names[0]]


# --- streaming, resumable writes that prove themselves -------------------------------
#: Region side (in patches) used to cut a numpy-backed cube for streaming.
REGION_PATCHES = 256
_DONE_DIR = ".eoembed-done"  # one marker per finished region (JSON: run, bounds, sha256), inside the store
_RUN_ATTR = "eoembed:run"
_COORDS_ATTR = "eoembed:coords_sha256"
_COMPLETE_ATTR = "eoembed:complete"
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
        to ``<path>.pyramid`` with :func:`eoembed.explore.pyramid.write_pyramid`, read from
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
                from eoembed.explore.pyramid import write_pyramid

                pyr = Path(f"{path}.pyramid")
                write_pyramid(open_embeddings(path, chunks={}), pyr, overwrite=True)
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
    (tmp / _DONE_DIR).mkdir()
    tmp.rename(path)


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
    checks the coordinates against their recorded checksum and the complete flag.

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
    try:
        group = zarr.open_group(str(path), mode="r")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Object at .eoembed-done")
            names = [n for n, a in group.arrays() if _RUN_ATTR in a.attrs]
    except Exception as err:  # noqa: BLE001
        raise StoreError(f"{path} is not a readable Zarr store ({type(err).__name__}: {err}); remove it and write "
                         "it again (overwrite=True / --overwrite).") from err
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
        coords_bad = any(b.startswith("coordinates") for b in bad)
        fix = ("remove it and write it again (overwrite=True / --overwrite): its coordinates cannot be repaired"
               if coords_bad else "run the same embedding again with resume=True (eoembed embed ... --resume): "
               "damaged and missing regions are rewritten, verified ones kept")
        msg = f"{path}: {', '.join(parts)}; {verified}/{n} regions verified. To fix it, {fix}."
    return {"path": path, "ok": ok, "complete": complete, "regions": n, "verified": verified, "missing": missing,
            "bad": bad, "run": run, "message": msg}


def _chunk_sizes(size: int, chunk: int) -> list[int]:
    return [min(chunk, size - s) for s in range(0, size, chunk)] or [0]
