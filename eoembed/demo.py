"""The main job, end to end: a small real cube → embeddings → a picture.

``eoembed demo`` embeds a small Sentinel-2 cube and writes, in ``--out``:

* ``embedding.zarr`` — the georeferenced embedding cube (with provenance attrs);
* ``demo.png`` — true colour beside a PCA-RGB of the embeddings (similar colours =
  similar embeddings).

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
    model: str = "tiny",
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
    cube, origin = _load_cube(sample, out / "cache")
    cost = eoembed.embed_cost(cube, model, patch_size=patch_size)
    t0 = time.perf_counter()
    emb = eoembed.embed(cube, model, weights=weights, patch_size=patch_size, device=device)
    seconds = time.perf_counter() - t0

    save_embeddings(emb, zarr_path, overwrite=overwrite)

    rgb = pca_rgb(emb)
    img = np.asarray(rgb.transpose("y", "x", ...).values, dtype="float64")
    if img.max() > 1.0:
        img = img / 255.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    tc = true_colour(cube)
    b = cube.rio.bounds()
    extent = (b[0], b[2], b[1], b[3])
    axes[0].imshow(tc, extent=extent)
    axes[0].set_title("Sentinel-2 true colour (median over time)")
    axes[1].imshow(np.nan_to_num(img), extent=extent, interpolation="nearest")
    axes[1].set_title(f"{emb.attrs['eoembed:model']} embeddings, PCA → RGB")
    for ax in axes:
        ax.set_xlabel(f"x ({cube.rio.crs.to_string()})")
    axes[0].set_ylabel("y")
    fig.suptitle(f"eoembed demo — {origin}", fontsize=9)
    png = out / "demo.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    summary = {
        "input": origin,
        "cube": {k: int(v) for k, v in cube.sizes.items()},
        "model": emb.attrs["eoembed:model"],
        "license": emb.attrs["eoembed:license"],
        "embedding": {k: int(v) for k, v in emb.sizes.items()},
        "seconds": round(seconds, 2),
        "cost": cost,
        "zarr": str(zarr_path),
        "picture": str(png),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
