"""The main job, end to end: a small real cube → embeddings → a picture.

``eoembed demo`` embeds a small Sentinel-2 (+ Sentinel-1) cube with a real pretrained
encoder — Galileo-Nano by default (MIT) — and writes, in ``--out``:

* ``embedding.zarr`` — the georeferenced embedding cube (with provenance attrs);
* ``demo.png`` — true colour beside a PCA-RGB of the embeddings (similar colours =
  similar embeddings);
* ``summary.json`` — model, weight SHA-256 and origin, timing, cost.

The cube comes from ``--sample PATH`` (any file :func:`eoembed.data.open_cube` reads), or else
it is the registered WorldCereal sample (:data:`eoembed.data.SAMPLE_CUBE`, 1.2 MB, Belgium,
12 months): from a local mirror (``../shared`` beside the checkout, ``$EOEMBED_DATA_MIRROR``),
the cache, or downloaded once from its pinned GitHub commit (:mod:`eoembed.data.registry`).

Weights: ``--weights PATH``; else, for a model whose weights are registered (``galileo-nano``,
``presto``), the registry's verified copy (mirror, cache or pinned download, 4.2 MB for
Galileo-Nano); else the model's own resolution (:mod:`eoembed.models.weights`: cache, Hugging Face).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from eoembed.exceptions import DataSourceError, EOEmbedError

def _load_cube(sample: str | None):
    from eoembed.data import open_cube
    from eoembed.data.registry import REGISTRY, SAMPLE_CUBE
    from eoembed.data.registry import sample as registered

    if sample is not None:
        return open_cube(sample), f"sample {sample}"
    try:
        path = registered(SAMPLE_CUBE, progressbar=True)
    except DataSourceError as err:  # same type, with the offline way out added
        raise type(err)(f"{err} Or run the demo on a cube you have: eoembed demo --sample PATH") from err
    entry = REGISTRY[SAMPLE_CUBE]
    return open_cube(path), f"WorldCereal sample ({entry.repo}@{entry.commit[:8]}, {entry.filename})"


def find_local_weights(model: str, sample: str | None = None, *, download: bool = False) -> Path | None:
    """The registered weights folder of ``model`` (:func:`eoembed.data.sample`), or None.

    Only models whose weights the registry lists (``galileo-nano``, ``presto``) have one. With
    ``download=False`` (default) a mirror or cached copy only; with ``True`` a missing one is
    downloaded (unless ``EOEMBED_OFFLINE=1``). ``sample`` is accepted for compatibility and unused.
    """
    from eoembed.data.registry import GROUPS
    from eoembed.data.registry import sample as registered
    from eoembed.exceptions import DownloadUnreachableError
    from eoembed.models import get_model_spec

    spec = get_model_spec(model)
    if not spec.needs_weights or spec.name not in GROUPS or not GROUPS[spec.name].weights:
        return None
    try:
        return registered(spec.name, download=None if download else False, progressbar=download)
    except DownloadUnreachableError:
        if download:
            raise
        return None


def true_colour(cube) -> np.ndarray:
    """``(y, x, 3)`` in [0, 1] from B04/B03/B02: median over time, 2–98 % stretch."""
    rgb = cube.sel(band=["B04", "B03", "B02"]).median("time", skipna=True).values.astype("float64")
    finite = rgb[np.isfinite(rgb)]
    if finite.size == 0:
        return np.zeros(rgb.shape[1:] + (3,))
    lo, hi = np.percentile(finite, [2, 98])
    out = np.clip((rgb - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.nan_to_num(out.transpose(1, 2, 0))


def run_demo(
    *,
    sample: str | None = None,
    weights: str | None = None,
    model: str = "galileo-nano",
    out: str | Path = "eoembed-demo",
    patch_size: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> dict:
    """Run the demo; returns a summary dict (also written to ``out/summary.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import eoembed
    from eoembed.io import save_embeddings
    from eoembed.reduce import pca_rgb

    out = Path(out)
    zarr_path = out / "embedding.zarr"
    if zarr_path.exists() and not overwrite:
        raise EOEmbedError(f"{zarr_path} exists; pass --overwrite or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cube, origin = _load_cube(sample)
    if weights is None:
        weights = find_local_weights(model, download=True)
    cost = eoembed.embed_cost(cube, model, patch_size=patch_size)
    t0 = time.perf_counter()
    emb = eoembed.embed(cube, model, weights=weights, patch_size=patch_size, device=device)
    seconds = time.perf_counter() - t0

    save_embeddings(emb, zarr_path, overwrite=overwrite)

    rgb = pca_rgb(emb)  # the saved vectors as they are: position-neutral by default, no picture-only correction
    img = np.asarray(rgb.transpose("y", "x", ...).values, dtype="float64")
    if img.max() > 1.0:
        img = img / 255.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    tc = true_colour(cube)
    b = cube.rio.bounds()
    extent = (b[0], b[2], b[1], b[3])
    crs = cube.rio.crs.to_string()
    attrs = emb.attrs
    axes[0].imshow(tc, extent=extent)
    axes[0].set_title("Sentinel-2 true colour (B04/B03/B02, median over time)", fontsize=9)
    axes[1].imshow(np.nan_to_num(img), extent=extent, interpolation="nearest")
    axes[1].set_title(f"{attrs['eoembed:model']} embeddings ({emb.sizes['embedding']}-d, "
                      f"{attrs['eoembed:patch_size_m']:g} m patches): PCA → RGB\n"
                      f"in-window positions: {attrs.get('eoembed:position', 'raw')}", fontsize=9)
    for ax in axes:
        ax.set_xlabel(f"x ({crs}) [m]")
        ax.set_ylabel(f"y ({crs}) [m]")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=7)
    sha = str(attrs.get("eoembed:weights_sha256", "none"))
    fig.suptitle(f"eoembed demo — {origin}\nweights {attrs.get('eoembed:weights_repo', '')} "
                 f"sha256 {sha[:12]}… ({attrs['eoembed:license']})", fontsize=8)
    png = out / "demo.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    summary = {
        "input": origin,
        "cube": {k: int(v) for k, v in cube.sizes.items()},
        "model": attrs["eoembed:model"],
        "license": attrs["eoembed:license"],
        "weights": {k.split(":", 1)[1]: attrs[k] for k in attrs if k.startswith("eoembed:weights_")},
        "weights_path": None if weights is None else str(weights),
        "device": attrs.get("eoembed:device"),
        "embedding": {k: int(v) for k, v in emb.sizes.items()},
        "position": attrs.get("eoembed:position"),
        "position_bias": {k.split(":", 1)[1]: attrs[k] for k in attrs if k.startswith("eoembed:position_")
                          and k != "eoembed:position_method"},
        "seconds": round(seconds, 2),
        "patches_per_second": round(emb.sizes["y"] * emb.sizes["x"] / max(seconds, 1e-9), 1),
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "cost": cost,
        "zarr": str(zarr_path),
        "picture": str(png),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
