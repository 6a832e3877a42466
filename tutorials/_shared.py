"""Small helpers shared by the tutorials: embeddings with the registered weights, and labelled map plots.

The sample data and weights come from :func:`eoembed.data.sample` (``../shared`` beside the repository
when it is there, else downloaded once from their pinned upstream commits and SHA-256-checked).

Kept here (not in eoembed) because they only exist to keep the notebooks short; every
figure gets a title, axes in metres with the CRS, and a legend or colour bar.
"""

from __future__ import annotations

import numpy as np


def registered_weights(name: str, *, download: bool | None = None):
    """The registered weights folder of model ``name`` (:func:`eoembed.data.sample`), or None when the
    registry has none for it (or, with ``download=False``, no local copy)."""
    from eoembed.data import registry
    from eoembed.exceptions import DownloadUnreachableError

    group = registry.GROUPS.get(name)
    if group is None or not group.weights:
        return None
    try:
        return registry.sample(name, download=download)
    except DownloadUnreachableError:
        if download is False:
            return None
        raise


def crs_name(da) -> str:
    """``"EPSG:32631"`` style name of a DataArray's CRS."""
    crs = da.rio.crs
    epsg = crs.to_epsg() if crs is not None else None
    return f"EPSG:{epsg}" if epsg else str(crs)


def map_axes(ax, da, title: str) -> None:
    """Title, x/y labels in metres with the CRS, equal aspect."""
    name = crs_name(da)
    ax.set_title(title)
    ax.set_xlabel(f"x [m] ({name})")
    ax.set_ylabel(f"y [m] ({name})")
    ax.set_aspect("equal")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.tick_params(axis="x", labelrotation=30)


def extent(da) -> list[float]:
    """imshow extent (left, right, bottom, top) of a north-up DataArray on its y/x grid."""
    x0, y0, x1, y1 = (float(v) for v in da.rio.bounds())
    return [x0, x1, y0, y1]


def true_colour(cube, *, time=None, white: float = 2000.0):
    """RGB (y, x, 3) in 0–1 from B04/B03/B02 DN: median over time (or one ``time`` label)."""
    rgb = cube.sel(band=["B04", "B03", "B02"])
    rgb = rgb.sel(time=time, method="nearest") if time is not None else rgb.median("time", skipna=True)
    return np.clip(rgb.transpose("y", "x", "band").values / white, 0, 1)


def show_rgb(ax, rgb, da, title: str) -> None:
    """An (y, x, 3) picture on ``da``'s grid, labelled."""
    ax.imshow(np.nan_to_num(rgb), extent=extent(da), interpolation="nearest")
    map_axes(ax, da, title)


def show_classes(ax, classes, names: dict, title: str, *, cmap: str = "tab10", nodata=None, palette=None):
    """A categorical (y, x) DataArray with a legend (one entry per class in ``names``).

    ``palette`` (class → colour) keeps colours the same across figures.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    keys = list(names)
    colours = [palette[k] if palette else __import__("matplotlib").colormaps[cmap](i % 10)
               for i, k in enumerate(keys)]
    index = np.full(classes.shape, np.nan)
    vals = classes.values
    for i, k in enumerate(keys):
        index[vals == k] = i
    ax.imshow(index, extent=extent(classes), cmap=ListedColormap(colours), vmin=-0.5, vmax=len(keys) - 0.5,
              interpolation="nearest")
    handles = [Patch(color=c, label=str(names[k])) for k, c in zip(keys, colours)]
    if nodata is not None:
        handles.append(Patch(facecolor="white", edgecolor="grey", label=str(nodata)))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    map_axes(ax, classes, title)


def show_values(ax, da, title: str, label: str, **kw):
    """A continuous (y, x) DataArray with a labelled colour bar."""
    im = ax.imshow(da.values, extent=extent(da), interpolation="nearest", **kw)
    ax.figure.colorbar(im, ax=ax, label=label, shrink=0.85)
    map_axes(ax, da, title)
    return im


def stacked(pooled, per_time):
    """``(embedding, y, x)``: the time-pooled vector followed by every timestep's vector."""
    import xarray as xr

    pt = per_time.transpose("time", "embedding", "y", "x")
    data = np.concatenate([pooled.transpose("embedding", "y", "x").values,
                           pt.values.reshape(-1, pt.sizes["y"], pt.sizes["x"])])
    out = xr.DataArray(data, dims=("embedding", "y", "x"), name=pooled.name or "embeddings",
                       coords={"embedding": np.arange(len(data)), "y": pooled.y, "x": pooled.x},
                       attrs={**pooled.attrs, "eoembed:embedding_dim": int(len(data))})
    return out.rio.write_crs(pooled.rio.crs).rio.write_transform(pooled.rio.transform())


def embeddings(cube, name: str, *, pool_time: bool = True, patch_size: int = 4, cache=None):
    """``eoembed.embed(cube, name)`` with the model's defaults, real weights from the registry.

    Each model's default tiling and positions (Galileo: blended 6-patch windows on the
    CRS-anchored grid, neutral in-window positions). With ``cache`` (a folder), the cube
    is saved there with ``eoembed.save_embeddings`` under a name made of the model, patch
    size, default tiling (px), pooling, time range and bands, and reopened next time (notebooks 4, 5 and 7–9
    share them); the seconds the embedding took are in ``attrs["tutorial:embed_seconds"]``.
    """
    import time
    import warnings

    import pandas as pd

    import eoembed

    path = None
    if cache is not None:
        from pathlib import Path

        from eoembed.grid import default_tiling
        from eoembed.models.registry import get_model_spec

        t = pd.to_datetime(cube["time"].values)
        tag = f"{t.min():%Y%m}-{t.max():%Y%m}_T{len(t)}_{'-'.join(map(str, cube['band'].values))}"
        tile, halo, blend = default_tiling(get_model_spec(name), patch_size)  # a new default: a new file
        tiling = f"w{tile}-h{halo}{'-blend' if blend else ''}"
        path = Path(cache) / f"{name}_p{patch_size}_{tiling}_{'pooled' if pool_time else 'per-time'}_{tag}.zarr"
        if path.exists():
            return eoembed.open_embeddings(path).load()
    kw = dict(patch_size=patch_size, progress=False, pool_time=pool_time)
    if name != "spectral":
        kw["weights"] = registered_weights(name)  # None: the model's own resolution (cache, Hugging Face)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bands the model wants but the cube lacks: listed in attrs
        emb = eoembed.embed(cube, name, **kw).compute()
    emb.attrs["tutorial:embed_seconds"] = round(time.perf_counter() - t0, 2)
    if path is not None:
        eoembed.save_embeddings(emb, path, overwrite=True)
    return emb


def fewshot_features(cube, name: str, *, patch_size: int = 4, cache=None, pooled_only: bool = False):
    """Feature cube for few-shot on the labelled sample, as in notebook 4 and the benchmark.

    ``galileo-nano``: time-pooled + per-timestep vectors stacked (``pooled_only``: the
    time-pooled vectors alone, one forward pass instead of two); other models: their
    default (time-pooled) vectors, from :func:`embeddings` (cached in ``cache``). The
    seconds the embedding took are in ``attrs["tutorial:embed_seconds"]``.
    """
    if name == "galileo-nano" and not pooled_only:
        pooled = embeddings(cube, name, patch_size=patch_size, cache=cache)
        per_time = embeddings(cube, name, pool_time=False, patch_size=patch_size, cache=cache)
        emb = stacked(pooled, per_time)
        emb.attrs["tutorial:features"] = "time-pooled + per-timestep"
        emb.attrs["tutorial:embed_seconds"] = round(pooled.attrs["tutorial:embed_seconds"]
                                                    + per_time.attrs["tutorial:embed_seconds"], 2)
        return emb
    emb = embeddings(cube, name, patch_size=patch_size, cache=cache)
    emb.attrs["tutorial:features"] = "band stats per month" if name == "spectral" else "time-pooled"
    return emb


def available(name: str) -> str | None:
    """None if ``name`` runs here (registered, and its weights at hand if it needs any: registered weights
    from ../shared, the cache or a download through :func:`eoembed.data.sample`), else why not."""
    import eoembed

    if name not in eoembed.list_models():
        return "not provided by this eoembed installation"
    if eoembed.get_model_spec(name).needs_weights:
        from eoembed.exceptions import DownloadError

        try:
            if registered_weights(name) is None:  # registered weights: ../shared, the cache, or a download
                return "no local weights in shared/weights (download needs internet)"
        except DownloadError as err:
            return f"its registered weights could not be fetched ({type(err).__name__})"
    return None
