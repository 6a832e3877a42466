"""The main job, end to end: a small real cube → embeddings → a picture.

``eoembed demo`` embeds a small Sentinel-2 (+ Sentinel-1) cube with a real pretrained
encoder — Galileo-Nano by default (MIT) — and writes, in ``--out``:

* ``embedding.zarr`` — the georeferenced embedding cube (with provenance attrs);
* ``demo.png`` — true colour beside a PCA-RGB of the embeddings (similar colours =
  similar embeddings);
* ``summary.json`` — model, weight SHA-256 and origin, timing, cost.

Weights: ``--weights PATH``; else, for a model whose weights sit in a ``shared/weights/<model>``
folder beside the sample or the repository (``../shared/weights/galileo-nano``), that
folder; else the cache / pinned download (:mod:`eoembed.models.weights`).

The cube comes from ``--sample PATH`` (any file :func:`eoembed.data.open_cube` reads,
e.g. ``../shared/data/worldcereal/worldcereal_preprocessed_inputs.nc``), or else a
small area is fetched once from Planetary Computer (cached).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from eoembed.exceptions import DataSourceError, EOEmbedError

#: The default download: 2 × 2 km of farmland near Leuven (Belgium), 2021 monthly.
DEFAULT_BBOX = (4.66, 50.86, 4.69, 50.88)
DEFAULT_DATES = ("2021-03-01", "2021-10-31")


def _load_cube(sample: str | None, cache_dir: Path):
    from eoembed.data import open_cube

    if sample is not None:
        return open_cube(sample), f"sample {sample}"
    try:
        from eoembed.data import fetch_sample
    except ImportError as err:  # the data extra is not installed
        raise DataSourceError(
            "No --sample given and the download route needs the data extra "
            "(pip install 'eoembed[data]'). Or run: eoembed demo --sample PATH"
        ) from err
    cube = fetch_sample(DEFAULT_BBOX, *DEFAULT_DATES, cache_dir=cache_dir)
    return cube, f"Planetary Computer {DEFAULT_BBOX} {DEFAULT_DATES[0]}..{DEFAULT_DATES[1]}"


def find_local_weights(model: str, sample: str | None = None) -> Path | None:
    """A ``shared/weights/<model>`` folder beside the sample (or one of its parents) or the repo."""
    from eoembed.models import get_model_spec

    spec = get_model_spec(model)
    if not spec.needs_weights:
        return None
    main = next((f.name for f in spec.weight_files if f.role == "weights"), None)
    starts = [Path(sample).resolve().parent] if sample else []
    starts += [Path(__file__).resolve().parents[1], Path.cwd()]
    for start in starts:
        for folder in (start, *start.parents):
            for cand in (folder / "weights" / spec.name, folder / "shared" / "weights" / spec.name):
                if main and (cand / main).is_file():
                    return cand
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
    if weights is None:
        weights = find_local_weights(model, sample)
    cube, origin = _load_cube(sample, out / "cache")
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
