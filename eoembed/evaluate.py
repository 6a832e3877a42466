"""Evaluation harness: kNN and linear-probe accuracy of embedding models on labelled tiles.

A labelled patch set is a folder in the EuroSAT layout::

    root/<class_name>/*.tif      small multispectral GeoTIFF tiles, one class per folder

(or arrays, see :func:`evaluate`). Every tile is embedded with
:func:`eoembed.embed` (``model=...``, ``patch_size=...``) and mean-pooled over its
patches to one vector; then a k-nearest-neighbour classifier and a linear probe
(standardised logistic regression) are scored with stratified K-fold
cross-validation, or in a few-shot regime (``shots`` labelled tiles per class,
repeated random draws). Each model is reported against the weight-free ``spectral``
baseline (always included), so the table answers "what does the encoder add?".

Tiles are embedded in one call as a mosaic with ``tile_size`` = tile side and
``halo=0``, so the encoder sees exactly one tile per window (no context leaks from
neighbouring tiles) while batching stays efficient. Tiles in EuroSAT are independent
scenes; for tiles cut from one area, neighbouring tiles can leak across folds — use
:func:`eoembed.classify.fewshot` with spatial blocks for that case.

Command line::

    python -m eoembed.evaluate ROOT --models spectral,tiny --patch-size 4 [--shots 10]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from eoembed.exceptions import InputError, LabelError, ParameterError, require
from eoembed.sensors import S2_ALL_BANDS

__all__ = ["EUROSAT_BANDS", "evaluate", "load_tile_folder", "embed_tiles", "score_features", "main"]

#: Band order of the EuroSAT multispectral GeoTIFFs (13 bands; B8A stored last).
EUROSAT_BANDS = tuple(b for b in S2_ALL_BANDS if b != "B8A") + ("B8A",)

_FAKE_CRS = "EPSG:32631"


def load_tile_folder(
    root: str | os.PathLike,
    *,
    bands: Sequence[str] | None = None,
    max_per_class: int | None = None,
    pattern: str = "*.tif",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an EuroSAT-style folder ``root/<class>/*.tif``.

    Parameters
    ----------
    root:
        Folder with one sub-folder per class.
    bands:
        Band names in file order. Default: the GeoTIFF band descriptions if every
        band has one, else :data:`EUROSAT_BANDS` for 13-band files.
    max_per_class:
        Randomly keep at most this many tiles per class.
    pattern:
        File glob inside each class folder (also ``*.tiff``).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, list of str)
        Tiles ``(N, band, H, W)`` float32 (all tiles must share a shape), labels
        ``(N,)`` (class-folder names) and the band names.

    Raises
    ------
    FileNotFoundError, LabelError, InputError
    """
    import rasterio

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"No such folder {root!r}; expected root/<class_name>/*.tif.")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    rng = np.random.default_rng(seed)
    files, labels = [], []
    for c in classes:
        fs = sorted(glob.glob(os.path.join(root, c, pattern)) + glob.glob(os.path.join(root, c, "*.tiff")))
        if max_per_class is not None and len(fs) > max_per_class:
            fs = [fs[i] for i in np.sort(rng.choice(len(fs), max_per_class, replace=False))]
        files += fs
        labels += [c] * len(fs)
    if len(set(labels)) < 2:
        raise LabelError(
            f"{root!r} holds {len(set(labels))} class folder(s) with {pattern} tiles; the layout is "
            "root/<class_name>/*.tif with at least two classes."
        )
    arrays, names = [], None
    for f in files:
        with rasterio.open(f) as src:
            arrays.append(src.read().astype(np.float32))
            if names is None:
                names = list(src.descriptions) if all(src.descriptions) else None
                nodata = src.nodata
        if nodata is not None:
            arrays[-1][arrays[-1] == nodata] = np.nan
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"Tiles have different shapes {sorted(shapes)[:4]}; crop/resize them to one size first.")
    X = np.stack(arrays)
    if bands is None:
        if names is not None:
            bands = names
        elif X.shape[1] == len(EUROSAT_BANDS):
            bands = list(EUROSAT_BANDS)
        else:
            raise InputError(
                f"The tiles have {X.shape[1]} bands without descriptions; pass bands=[...] (names in file order)."
            )
    if len(bands) != X.shape[1]:
        raise InputError(f"bands= names {len(bands)} bands but the tiles have {X.shape[1]}.")
    return X, np.asarray(labels), list(bands)


def _mosaic(tiles: np.ndarray, bands: Sequence[str], res: float = 10.0) -> tuple[xr.DataArray, int]:
    """Lay ``(N, [T,] band, H, W)`` tiles side by side on a fake 10 m UTM grid."""
    import rioxarray  # noqa: F401
    from affine import Affine
    from rioxarray.rioxarray import affine_to_coords

    n = len(tiles)
    h, w = tiles.shape[-2:]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    lead = tiles.shape[1:-2]
    canvas = np.full(lead + (rows * h, cols * w), np.nan, np.float32)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[..., r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    # origin on the CRS-anchored window grid (eoembed.grid): with tile_size = the chip side, each chip
    # is exactly one encoder window and never shares one with its neighbour
    step_y, step_x = h * res, w * res
    x0, y0 = (500_000.0 // step_x) * step_x, (5_000_000.0 // step_y) * step_y
    transform = Affine(res, 0, x0, 0, -res, y0)
    centres = affine_to_coords(transform, cols * w, rows * h)
    xs, ys = centres["x"], centres["y"]
    if len(lead) == 2:
        dims = ("time", "band", "y", "x")
        coords = {"time": (np.datetime64("2021-06", "M") + np.arange(lead[0])).astype("datetime64[ns]"),
                  "band": list(bands), "y": ys, "x": xs}
    else:
        dims = ("band", "y", "x")
        coords = {"band": list(bands), "y": ys, "x": xs}
    cube = xr.DataArray(canvas, dims=dims, coords=coords, name="reflectance")
    cube = cube.rio.write_crs(_FAKE_CRS).rio.write_transform(transform)
    return cube, cols


def embed_tiles(
    tiles: np.ndarray,
    bands: Sequence[str],
    model: str | Callable[[xr.DataArray], xr.DataArray] = "spectral",
    *,
    patch_size: int | None = None,
    **embed_kwargs: Any,
) -> np.ndarray:
    """Embed tiles and mean-pool each to one vector.

    Parameters
    ----------
    tiles:
        ``(N, band, H, W)`` or ``(N, time, band, H, W)`` reflectance (DN or 0–1).
    bands:
        Band names in order.
    model:
        Model name for :func:`eoembed.embed`, or a callable ``cube → embedding cube``
        (for custom encoders; it receives the mosaic and must keep the grid).
    patch_size, **embed_kwargs:
        Passed to :func:`eoembed.embed` (``tile_size``/``halo`` are fixed to one tile
        per window, no halo).

    Returns
    -------
    numpy.ndarray
        ``(N, D)`` float32 pooled vectors (NaN rows for tiles without valid patches).
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    if tiles.ndim not in (4, 5):
        raise InputError(f"tiles must be (N, band, H, W) or (N, time, band, H, W); got shape {tiles.shape}.")
    h, w = tiles.shape[-2:]
    cube, cols = _mosaic(tiles, bands)
    if callable(model):
        emb = model(cube)
        p = cube.sizes["y"] // emb.sizes["y"]
    else:
        from eoembed.embed import embed

        if h != w:
            raise InputError(f"Tiles must be square for eoembed.embed tiling (got {h}×{w}).")
        kw = dict(patch_size=patch_size, tile_size=h, halo=0, progress=False, extra_bands="ignore")
        kw.update(embed_kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*harmonization.*")
            emb = embed(cube, model=model, **kw)
        p = int(emb.attrs.get("eoembed:patch_size", patch_size or 1))
    if h % p or w % p:
        raise ParameterError(f"Tile size {h}×{w} is not a multiple of patch_size={p}.")
    emb = emb.transpose(..., "embedding", "y", "x")
    if "time" in emb.dims:
        emb = emb.mean("time", skipna=True)
    arr = np.asarray(emb.values, dtype=np.float32)  # (D, Y, X)
    d = arr.shape[0]
    ph, pw = h // p, w // p
    rows = arr.shape[1] // ph
    grid = arr[:, : rows * ph, : cols * pw].reshape(d, rows, ph, cols, pw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pooled = np.nanmean(grid, axis=(2, 4))  # (D, rows, cols)
    pooled = pooled.reshape(d, rows * cols).T[: len(tiles)]
    return np.ascontiguousarray(pooled, dtype=np.float32)


def score_features(
    X: np.ndarray,
    y: np.ndarray,
    *,
    k: int = 5,
    n_splits: int = 5,
    shots: int | None = None,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """kNN and linear-probe accuracy of pooled features.

    With ``shots=None``: stratified ``n_splits``-fold CV. With ``shots=n``: ``repeats``
    random draws of ``n`` training tiles per class, tested on all other tiles.
    Features are standardised (fit on the training part) for both classifiers; kNN uses
    cosine distance and at most ``shots`` neighbours in the few-shot regime.

    Returns
    -------
    dict
        ``knn``, ``knn_std``, ``linear``, ``linear_std`` (accuracy, mean and std over
        folds/repeats) and ``n`` (tiles scored).
    """
    require("sklearn", "search", "The evaluation harness")
    from eoembed.classify import fit_estimator, make_estimator, plan_folds

    ok = np.isfinite(X).all(axis=1)
    X, y = X[ok], np.asarray(y)[ok]
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise LabelError("Scoring needs at least two classes with valid embeddings.")
    rng = np.random.default_rng(seed)
    if shots is None:  # stratified K-fold, capped by the smallest class (the classify split function)
        splits = plan_folds(len(y), y=y, spatial=False, n_splits=n_splits, random_state=seed, what="tiles").splits
    else:
        if counts.min() <= shots:
            raise LabelError(f"shots={shots} needs more than {shots} tiles per class; smallest class has {counts.min()}.")
        splits = []
        for _ in range(repeats):
            tr = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in classes])
            splits.append((tr, np.setdiff1d(np.arange(len(y)), tr)))
    acc: dict[str, list[float]] = {"knn": [], "linear": []}
    for tr, te in splits:
        kk = min(k, len(tr) if shots is None else shots)  # never vote with more neighbours than shots
        # the classify factory, with this harness's fixed protocol: standardised features for both,
        # uniform kNN votes, unweighted logistic regression
        knn = make_estimator("knn", standardize=True, n_neighbors=kk, weights="uniform")
        lin = make_estimator("logistic", class_weight=None)
        for name, est in (("knn", knn), ("linear", lin)):
            fitted = fit_estimator(est, X[tr], y[tr])
            acc[name].append(float((fitted.predict(X[te]) == y[te]).mean()))
    return {"knn": float(np.mean(acc["knn"])), "knn_std": float(np.std(acc["knn"])),
            "linear": float(np.mean(acc["linear"])), "linear_std": float(np.std(acc["linear"])),
            "n": int(len(y))}


def evaluate(
    data: str | os.PathLike | tuple[np.ndarray, np.ndarray],
    models: Sequence[str | Callable] = ("spectral",),
    *,
    bands: Sequence[str] | None = None,
    patch_size: int | None = None,
    k: int = 5,
    n_splits: int = 5,
    shots: int | None = None,
    repeats: int = 5,
    max_per_class: int | None = None,
    seed: int = 0,
    embed_kwargs: dict[str, Any] | None = None,
):
    """Compare embedding models on a labelled tile set (kNN and linear probe).

    Parameters
    ----------
    data:
        A EuroSAT-style folder ``root/<class>/*.tif``, or ``(tiles, labels)`` with
        ``tiles`` ``(N, band, H, W)`` / ``(N, time, band, H, W)`` and ``bands=`` given.
    models:
        Model names for :func:`eoembed.embed` and/or callables ``cube → embedding
        cube``. ``"spectral"`` is added first if missing (the baseline).
    bands:
        Band names (default from the files, see :func:`load_tile_folder`).
    patch_size:
        Patch size passed to :func:`eoembed.embed` (model default if None).
    k, n_splits, shots, repeats:
        See :func:`score_features`.
    max_per_class:
        Subsample large folders.
    embed_kwargs:
        Extra arguments for :func:`eoembed.embed` (``device=``, ``weights=``…).

    Returns
    -------
    pandas.DataFrame
        One row per model (index ``model``): ``dim``, ``n_tiles``, ``embed_s``,
        ``knn``, ``knn_std``, ``linear``, ``linear_std`` (accuracies 0–1) and
        ``knn_vs_spectral``, ``linear_vs_spectral`` (accuracy difference to the
        baseline, in points of accuracy 0–1). ``df.attrs`` records the protocol.
    """
    import pandas as pd

    if isinstance(data, (str, os.PathLike)):
        tiles, labels, band_names = load_tile_folder(data, bands=bands, max_per_class=max_per_class, seed=seed)
    else:
        try:
            tiles, labels = data
        except (TypeError, ValueError):
            raise InputError("data must be a folder path or a (tiles, labels) pair.") from None
        tiles, labels = np.asarray(tiles, np.float32), np.asarray(labels)
        if bands is None:
            raise InputError("With array input, pass bands=[...] naming the band axis (e.g. EUROSAT_BANDS).")
        band_names = list(bands)
        if len(tiles) != len(labels):
            raise InputError(f"{len(tiles)} tiles but {len(labels)} labels.")
    models = list(models)
    if "spectral" not in models:
        models.insert(0, "spectral")
    rows = []
    for m in models:
        name = m if isinstance(m, str) else getattr(m, "__name__", repr(m))
        t0 = time.perf_counter()
        X = embed_tiles(tiles, band_names, m, patch_size=patch_size, **(embed_kwargs or {}))
        dt = time.perf_counter() - t0
        sc = score_features(X, labels, k=k, n_splits=n_splits, shots=shots, repeats=repeats, seed=seed)
        rows.append({"model": name, "dim": X.shape[1], "n_tiles": sc.pop("n"), "embed_s": round(dt, 3), **sc})
    df = pd.DataFrame(rows).set_index("model")
    base = df.loc["spectral"]
    df["knn_vs_spectral"] = df["knn"] - base["knn"]
    df["linear_vs_spectral"] = df["linear"] - base["linear"]
    df.attrs = {"protocol": (f"{shots}-shot x{repeats}" if shots else f"stratified {n_splits}-fold CV"),
                "k": k, "patch_size": patch_size, "classes": sorted(map(str, set(labels.tolist())))}
    return df


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eoembed.evaluate ROOT --models spectral,tiny``; prints the table."""
    ap = argparse.ArgumentParser(prog="python -m eoembed.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="folder root/<class_name>/*.tif")
    ap.add_argument("--models", default="spectral", help="comma-separated model names (spectral always added)")
    ap.add_argument("--patch-size", type=int, default=None)
    ap.add_argument("--bands", default=None, help="comma-separated band names in file order")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--shots", type=int, default=None, help="labelled tiles per class (few-shot regime)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-per-class", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    a = ap.parse_args(argv)
    kw = {"device": a.device} if a.device else {}
    df = evaluate(a.root, [m.strip() for m in a.models.split(",") if m.strip()],
                  bands=a.bands.split(",") if a.bands else None, patch_size=a.patch_size, k=a.k,
                  n_splits=a.folds, shots=a.shots, repeats=a.repeats, max_per_class=a.max_per_class,
                  embed_kwargs=kw)
    print(f"# {df.attrs['protocol']}, k={a.k}, classes: {', '.join(df.attrs['classes'])}")
    print(df.to_string(float_format=lambda v: f"{v:.3f}"))
    if a.json:
        df.reset_index().to_json(a.json, orient="records", indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
