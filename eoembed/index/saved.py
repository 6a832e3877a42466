"""The index of a store, built once, saved beside it, reopened in seconds.

:func:`store_index` is what ``emb.eo.index()``, ``explore(store)`` and the command
``eoembed index STORE`` use. For a cube opened from a store
(:func:`eoembed.io.open_embeddings`; the store is remembered in ``emb.encoding``) the
index lives in the folder **``<store>.index/``** beside the store (as ``<store>.pyramid``
and ``<store>.lock`` do; the store itself stays exactly what :func:`eoembed.io.to_zarr`
wrote and :func:`eoembed.io.verify` checks). That folder is an
:meth:`EmbeddingIndex.save` folder plus ``store.json``: the store's fingerprint
(:func:`eoembed.io.store_fingerprint`: its run fingerprint and region checksums, or its
files' sizes and times), the build options and the build time.

Reopening checks the fingerprint and options first (no data read): equal → the saved
index is loaded; different → a warning says what changed and the index is rebuilt and
saved again. A build logs its time (logger ``eoembed.index``) and shows a progress bar
over the blocks it reads.
"""

from __future__ import annotations

import json
import logging
import os
import time as _time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import InputError, user_stacklevel

__all__ = ["OOC_PATCHES", "build_seconds", "index_path", "reopen", "saved_index", "store_index"]

_LOG = logging.getLogger("eoembed.index")
_RECORD = "store.json"
#: Dask cubes with more patches than this are indexed out of core (:func:`~eoembed.index.ooc.build_index_ooc`).
OOC_PATCHES = 2_000_000
#: Seconds per 16-d patch of a build on 2 CPU cores, measured (benchmarks/bench_explore.py): an exact
#: (Flat) index; the auto-chosen one with recall tuning (10⁶ patches → IVF2048,Flat in 105 s, machine
#: loaded at ~8 on 2 cores: an estimate that errs long); out of core (10⁷ patches, IVF8192,Flat, both
#: passes and the exact ground truth, 723 s). Scaled linearly with the embedding dimension.
_SECONDS_PER_PATCH = {"flat": 1e-6, "auto": 1e-4, "ooc": 7.2e-5}


def index_path(store) -> Path:
    """``<store>.index``: where the index of ``store`` is saved."""
    store = Path(store)
    return store.with_name(store.name.rstrip("/") + ".index")


def _patches(emb: xr.DataArray) -> int:
    return int(np.prod([emb.sizes[d] for d in emb.dims if d != "embedding"]))


def _ooc(emb: xr.DataArray, kwargs: dict, ooc_patches: int) -> bool:
    return emb.chunks is not None and _patches(emb) > ooc_patches and kwargs.get("kind", "auto") == "auto"


def build_seconds(emb: xr.DataArray, *, ooc_patches: int = OOC_PATCHES, **kwargs: Any) -> float:
    """A rough estimate of the build time of ``emb``'s index (2-core figures; a GPU or more cores is faster)."""
    kind = str(kwargs.get("kind", "auto")).lower()
    exact = kind in ("flat", "exact") or (kind == "auto" and _patches(emb) < 100_000)  # choose_index_key's Flat
    rate = "ooc" if _ooc(emb, kwargs, ooc_patches) else "flat" if exact else "auto"
    return _patches(emb) * max(1.0, emb.sizes["embedding"] / 16) * _SECONDS_PER_PATCH[rate]


def _fmt(sec: float) -> str:
    return f"{sec:.0f} s" if sec < 90 else f"{sec / 60:.0f} min" if sec < 5400 else f"{sec / 3600:.1f} h"


def _options(kwargs: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in sorted(kwargs.items()) if k != "device"}, default=str))


def saved_index(store, *, device: str = "auto", **kwargs: Any):
    """``(index or None, why)``: the saved index of ``store`` when it is still valid, else None and the reason."""
    from eoembed.index.core import EmbeddingIndex
    from eoembed.io import store_fingerprint

    folder = index_path(store)
    if not (folder / _RECORD).is_file():
        return None, f"no saved index ({folder} does not exist)"
    try:
        record = json.loads((folder / _RECORD).read_text())
        old, old_opts = record["fingerprint"], record["options"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"the saved index's {_RECORD} is unreadable ({type(err).__name__})"
    new = store_fingerprint(store)
    if old.get("sha256") != new["sha256"]:
        what = (f"run {old.get('run')} → {new['run']}" if old.get("run") != new["run"]
                else f"{new['kind']} fingerprint {str(old.get('sha256'))[:12]} → {new['sha256'][:12]}")
        return None, f"the store changed since its index was built ({what})"
    if old_opts != _options(kwargs):
        return None, f"the index was built with other options ({old_opts} ≠ {_options(kwargs)})"
    from eoembed.exceptions import EOEmbedError

    try:
        return EmbeddingIndex.load(folder, device=device), "saved"
    except (EOEmbedError, OSError) as err:
        return None, f"the saved index cannot be read ({str(err).splitlines()[0][:160]})"


def reopen(emb: xr.DataArray, store, *, ooc_patches: int = OOC_PATCHES, **kwargs: Any):
    """``(index or None, note)``: the valid saved index of ``store`` (bound to ``emb``), else None and a
    note on what building it will cost (empty when it is quick) — what the explorer says on opening."""
    if store is not None:
        idx, _ = saved_index(store, **kwargs)
        if idx is not None:
            if len(idx.sources) == 1:
                idx._cubes[idx.sources[0].id] = emb
            return idx, f" Search index loaded from {index_path(store).name}."
    est = build_seconds(emb, ooc_patches=ooc_patches, **kwargs)
    if est < 2:
        return None, ""
    ahead = f" (`eoembed index {store}` builds it ahead)" if store is not None else ""
    return None, f" The first click builds the search index (about {_fmt(est)}, once){ahead}."


def store_index(emb: xr.DataArray, *, store: str | os.PathLike | None = None, rebuild: bool = False,
                save: bool = True, ooc_patches: int = OOC_PATCHES, say=None, **kwargs: Any):
    """The search index of ``emb``: reopened from beside its store when saved and still valid, else built.

    Parameters
    ----------
    emb:
        Embedding cube. Opened from a store (:func:`eoembed.io.open_embeddings`), its
        index is looked for in ``<store>.index/`` (:func:`index_path`), checked against
        the store's fingerprint and the build options, and loaded; otherwise it is built
        (progress bar; dask cubes of more than ``ooc_patches`` patches out of core) and
        saved there. A cube not from a store is built each time, as
        :func:`~eoembed.index.build_index` does.
    store:
        The store (default: the one ``emb`` was opened from).
    rebuild:
        Build and save even when a valid saved index exists.
    save:
        Save a new build beside the store (a read-only place only warns).
    say:
        Called with one line before a build (what and about how long) and after it
        (the time it took) — the explorer puts these in its notes.
    **kwargs:
        Passed to :func:`~eoembed.index.build_index` (``kind``, ``metric``, ``device``…) or,
        out of core, :func:`~eoembed.index.ooc.build_index_ooc`.

    Returns
    -------
    EmbeddingIndex
        ``idx.tuning["build"]`` is ``"loaded"`` (with ``load_seconds``) or ``"built"``
        (with ``build_seconds``).
    """
    import eoembed.index as index_mod  # looked up at call time (tests count builds by patching it)
    from eoembed.index import ooc
    from eoembed.io import store_fingerprint, store_of

    store = Path(store) if store is not None else store_of(emb)
    say = say or (lambda line: None)
    why = "the cube is not from a store (nothing to save it beside)"
    if store is not None:
        if not store.exists():
            raise InputError(f"{store} does not exist; pass the store the cube was opened from (store=).")
        if not rebuild:
            t0 = _time.perf_counter()
            idx, why = saved_index(store, device=kwargs.get("device", "auto"), **kwargs)
            if idx is not None:
                idx.tuning = {**idx.tuning, "build": "loaded", "load_seconds": round(_time.perf_counter() - t0, 3)}
                if len(idx.sources) == 1:  # similarity maps read the (lazy) store, as after a build
                    idx._cubes[idx.sources[0].id] = emb
                _LOG.info("index of %s loaded from %s in %.2f s", store, index_path(store), idx.tuning["load_seconds"])
                return idx
            if why.startswith(("the store changed", "the index was built", "the saved index")):
                warnings.warn(f"{index_path(store)}: {why}; rebuilding it.", UserWarning, stacklevel=user_stacklevel())
        else:
            why = "rebuild=True"
    is_ooc = _ooc(emb, kwargs, ooc_patches)
    est = build_seconds(emb, ooc_patches=ooc_patches, **kwargs)
    where = f"; saved to {index_path(store)} for next time" if store is not None and save else ""
    line = (f"Building the search index of {_patches(emb):,} patches{' out of core' if is_ooc else ''} "
            f"(once; about {_fmt(est)} on 2 cores{where}): {why}.")
    _LOG.info(line)
    say(line)
    t0 = _time.perf_counter()
    idx = (ooc.build_index_ooc if is_ooc else index_mod.build_index)(emb, **kwargs)
    sec = _time.perf_counter() - t0
    idx.tuning = {**idx.tuning, "build": "built", "build_seconds": round(sec, 2)}
    _LOG.info("index of %s patches built in %.1f s (%s)", f"{_patches(emb):,}", sec, idx.key)
    if store is not None and save:
        fingerprint = store_fingerprint(store)  # before writing: the store must not change under the build
        folder = index_path(store)
        try:
            tmp = folder.with_name(folder.name + ".partial")
            idx.save(tmp)
            (tmp / _RECORD).write_text(json.dumps({"fingerprint": fingerprint, "options": _options(kwargs),
                                                   "build_seconds": round(sec, 2), "patches": _patches(emb)}))
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            tmp.rename(folder)
        except OSError as err:
            warnings.warn(f"could not save the index beside {store} ({err}); it is kept in memory only. Run "
                          f"`eoembed index {store}` where the folder is writable.", UserWarning,
                          stacklevel=user_stacklevel())
    say(f"Search index built in {_fmt(sec)} ({idx.key}){'; saved to ' + str(index_path(store)) if where else ''}.")
    return idx
