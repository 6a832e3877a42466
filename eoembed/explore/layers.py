"""Map layers of an embedding cube and where their pixels come from.

One job per function: the *overview* (the display grid read from the cube), the
Web Mercator warp of that grid, the images of each layer kind (PCA-RGB, similarity,
class, probability, true colour), the ipyleaflet overlay that shows an image, and the
map controls (colour bar, legend, basemap). :func:`add_layers` puts any of them on a
``leafmap.Map`` or plain ``ipyleaflet.Map`` of the user's own.

Kept hand-written helpers (measured against the library alternatives)
---------------------------------------------------------------------
* :class:`eoembed.viz.MercatorWarp` rather than ``rioxarray``'s ``rio.reproject`` per
  layer: one nearest-neighbour index table per source grid, reused by every layer; on a
  1000×1000 3-band grid ``apply`` takes 28 ms against 50 ms for ``rio.reproject``
  (nearest) to the same 3857 grid (2 cores, median of 5 after a warm-up), and a click
  re-draws the similarity layer on every query. odc-geo's ``add_to(map)`` does the same warp plus
  a PNG but is not installed with the ``viz`` extra.
* :func:`eoembed.viz.png_data_url`: ipyleaflet's ``ImageOverlay`` takes a URL; a data
  URL needs no tile server or file, so the explorer works offline and in remote
  JupyterLab without a proxy. leafmap's ``add_raster`` needs localtileserver.
* Tiles: the static PCA-RGB view of a large cube (a ``pyramid=`` written with
  :func:`~eoembed.explore.pyramid.write_pyramid`) is a COG served as XYZ tiles by
  localtileserver (:mod:`eoembed.explore.tiles`): 16–50 ms per warm tile against 0.6–1.6 s
  for rio-tiler's ``XarrayReader`` on the lazy embedding levels. Per-query layers
  (similarity, matches) stay overview images of the finest level that fits the view:
  a full-resolution COG per click would read the whole cube each time.
* ``Map.fit_bounds`` is asynchronous: it waits for the browser to report the map's
  bounds, so on a map not yet displayed (and in a kernel without a front end) the zoom
  stays at its default (measured: zoom 2 after ``fit_bounds`` on an undisplayed map).
  :func:`fit_zoom` sets the first view synchronously; ``fit_bounds`` is called as well
  so that a displayed map refines it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import ParameterError

__all__ = ["add_layers", "basemap_layer", "basemap_provider", "BASEMAP_CHOICES"]

#: Short names accepted for ``basemap=`` beside any xyzservices provider name.
_BASEMAP_ALIASES = {"osm": "OpenStreetMap.Mapnik", "esri": "Esri.WorldImagery"}
#: What the basemap picker offers (xyzservices names; "none" keeps the map blank and offline).
BASEMAP_CHOICES = ("none", "OpenStreetMap.Mapnik", "Esri.WorldImagery", "Esri.WorldGrayCanvas", "OpenTopoMap")


def basemap_provider(basemap: Any):
    """``None``/"none"/"blank" → None; a name → its xyzservices provider (checked); a provider or
    ``TileLayer`` → itself. Widget-free: the explorer's state keeps what this returns.

    Names are ``"osm"``, ``"esri"`` or any xyzservices provider name
    (``"Esri.WorldGrayCanvas"``, ``"OpenTopoMap"``, …). Providers that need an API key are
    refused with the name of the key.
    """
    if basemap is None or (isinstance(basemap, str) and basemap.lower() in ("none", "blank", "")):
        return None
    if not isinstance(basemap, str):
        return basemap
    import xyzservices

    name = _BASEMAP_ALIASES.get(basemap.lower(), basemap)
    try:
        provider = xyzservices.providers.query_name(name)
    except ValueError:
        raise ParameterError(
            f"basemap={basemap!r} is not known; use None (blank, offline), 'osm', 'esri', an xyzservices "
            "provider name such as 'Esri.WorldGrayCanvas' or 'OpenTopoMap', or an ipyleaflet TileLayer."
        ) from None
    if provider.requires_token():
        raise ParameterError(f"basemap={basemap!r} needs an API key; pick a provider without one "
                             f"(e.g. {', '.join(BASEMAP_CHOICES[1:])}).")
    return provider


def basemap_layer(basemap: Any):
    """``None``/"none"/"blank" → no tile layer; a name, provider or ``TileLayer`` → a base ``TileLayer``
    (see :func:`basemap_provider`)."""
    import ipyleaflet

    basemap = basemap_provider(basemap)
    if basemap is None:
        return None
    if isinstance(basemap, ipyleaflet.TileLayer):
        return basemap
    layer = ipyleaflet.basemap_to_tiles(basemap)
    layer.base = True
    return layer


# ---- the display grid ----------------------------------------------------------------------
def vector_side(emb: xr.DataArray, max_pixels: int, max_bytes: float | None) -> int:
    """Longest side (patches) of a display grid of ``emb`` that keeps within ``max_pixels`` and, when
    given, ``max_bytes`` of float32 vectors (every dim but y/x counts: embedding, time)."""
    if max_bytes is None:
        return int(max_pixels)
    per = 4 * int(np.prod([n for d, n in emb.sizes.items() if d not in ("y", "x")]))
    return int(max(16, min(int(max_pixels), math.isqrt(int(max_bytes) // max(per, 1)))))


def overview(emb: xr.DataArray, max_pixels: int) -> tuple[xr.DataArray, int]:
    """Every ``s``-th patch of ``emb`` so that the long side is at most ``max_pixels``, in memory.

    Returns ``(overview, s)``; the overview's transform is written (``s`` × the cube's).
    """
    ny, nx = emb.sizes["y"], emb.sizes["x"]
    s = max(1, int(np.ceil(max(ny, nx) / int(max_pixels))))
    ov = emb.isel(y=slice(None, None, s), x=slice(None, None, s))
    if s > 1:
        from affine import Affine

        a, b, c, d, e, f = tuple(emb.rio.transform())[:6]
        ov = ov.rio.write_transform(Affine(a * s, b, c, d, e * s, f))
    if not isinstance(ov.data, np.ndarray):
        ov = ov.copy(data=np.asarray(ov.data))
    return ov, s


def warp_for(da: xr.DataArray, max_pixels: int):
    """The :class:`~eoembed.viz.MercatorWarp` of a georeferenced DataArray's grid."""
    from eoembed.viz import MercatorWarp

    return MercatorWarp.from_grid(da.rio.crs, da.rio.transform(), da.shape[-2:], max_pixels=max_pixels)


def fit_zoom(warp) -> int:
    """Largest Leaflet zoom at which the warp's footprint fits a ~600 px map (see module notes)."""
    x0, y0, x1, y1 = warp.mercator_bounds
    span = max(x1 - x0, y1 - y0, 1.0)
    return int(max(1, min(18, math.floor(math.log2(40_075_016.7 * 2.4 / span)))))


def display_2d(da: xr.DataArray, time: Any = None) -> xr.DataArray:
    """A ``(…, y, x)`` view without ``time``: the mean, one position (int) or one label."""
    if "time" in da.dims:
        if time is None:
            return da.mean("time")
        if isinstance(time, (int, np.integer)):  # a position, as in index.search(time=)
            return da.isel(time=int(time))
        return da.sel(time=time)
    return da


# ---- layer images ----------------------------------------------------------------------------
def pca_rgb_2d(proj, ov: xr.DataArray) -> xr.DataArray:
    """``proj.rgb(ov)`` for a 2-D in-memory overview, in one BLAS pass over the vectors.

    A fitted PCA is affine, ``func(v) = v @ W + b``; ``W`` and ``b`` are read off
    ``func`` itself and applied as ``W.T @ X`` on the ``(embedding, y·x)`` layout, with
    the same 2–98 % stretch (``proj.low``/``proj.high``) and the same validity rule
    (finite, not all zero) as :meth:`eoembed.reduce.Projection.rgb`, which is used as is
    for other reducers.
    """
    if proj.kind != "pca":
        return proj.rgb(ov).transpose("band", "y", "x")
    d, ny, nx = ov.shape
    X = np.asarray(ov.values, dtype=np.float32).reshape(d, ny * nx)
    b = proj.func(np.zeros((1, d), np.float32))[0, :3]
    W = proj.func(np.eye(d, dtype=np.float32))[:, :3] - b
    comp = W.T @ X + b[:, None]
    with np.errstate(invalid="ignore"):
        sq = np.einsum("dn,dn->n", X, X)
        ok = np.isfinite(sq) & (sq > 0)
    lo, hi = proj.low[:3, None], proj.high[:3, None]
    out = np.clip((comp - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1).astype(np.float32)
    out[:, ~ok] = np.nan
    return xr.DataArray(out.reshape(3, ny, nx), dims=("band", "y", "x"),
                        coords={"band": [1, 2, 3], "y": ov["y"], "x": ov["x"]}, name="rgb")


def similarity_range(values: np.ndarray) -> tuple[float, float]:
    """Colour range of a similarity map: 2nd percentile → max (on ≤ 100k samples), widened to
    3 decimals (floor/ceil) so that the colour bar's end labels are short and exact."""
    v = np.asarray(values)
    s = v.ravel()[:: max(1, v.size // 100_000)]
    s = s[np.isfinite(s)]
    if not len(s):
        return 0.0, 1.0
    lo, hi = math.floor(float(np.percentile(s, 2)) * 1000) / 1000, math.ceil(float(s.max()) * 1000) / 1000
    return lo, max(hi, lo + 0.001)


def true_colour_bands(cube: xr.DataArray) -> list:
    """The cube's red, green and blue band labels (B04/B03/B02, red/green/blue or B4/B3/B2)."""
    names = [str(b) for b in cube["band"].values] if "band" in cube.dims else []
    for want in (("B04", "B03", "B02"), ("red", "green", "blue"), ("B4", "B3", "B2")):
        found = [next((b for b in cube["band"].values if str(b).lower() == w.lower()), None) for w in want]
        if all(f is not None for f in found):
            return found
    raise ParameterError(
        f"The cube has no red/green/blue bands for a true-colour layer (bands {names}); "
        "expected B04/B03/B02 or red/green/blue band names. Pass cube=None to skip that layer."
    )


def check_input_cube(cube: Any) -> None:
    """The input cube given for true colour / chips must be a georeferenced band cube."""
    if not isinstance(cube, xr.DataArray) or "band" not in cube.dims:
        raise ParameterError("cube= must be the input DataArray with a 'band' dimension (or None).")
    if cube.rio.crs is None:
        raise ParameterError("cube= has no CRS; write one with cube.rio.write_crs(...).")


def true_colour(cube: xr.DataArray, max_pixels: int) -> tuple[xr.DataArray, np.ndarray, Any]:
    """``(overview (band, y, x), rgba image, warp)`` of the input cube's true colour.

    Every ``s``-th pixel, median over time (the cube's own times need not match the
    embedding's), 2–98 % per-band stretch.
    """
    from affine import Affine

    from eoembed.viz import MercatorWarp, rgb_to_rgba, robust_stretch

    check_input_cube(cube)
    bands = true_colour_bands(cube)
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    s = max(1, int(np.ceil(max(ny, nx) / max_pixels)))
    sub = cube.sel(band=bands).isel(y=slice(None, None, s), x=slice(None, None, s))
    if "time" in sub.dims:
        sub = sub.median("time", skipna=True)
    sub = sub.transpose("band", "y", "x").astype("float32").compute()
    tr = cube.rio.transform()
    tr_ov = Affine(tr.a * s, tr.b, tr.c, tr.d, tr.e * s, tr.f)
    warp = MercatorWarp.from_grid(cube.rio.crs, tr_ov, sub.shape[-2:], max_pixels=max_pixels)
    return sub, rgb_to_rgba(robust_stretch(sub.values, (2, 98))), warp


# ---- overlays and controls ------------------------------------------------------------------------
def overlay(m, layer, name: str, image: np.ndarray, palette: np.ndarray | None, warp, *,
            below: tuple = (), opacity: float = 1.0):
    """Show ``image`` (on ``warp``'s source grid) as the ``ImageOverlay`` ``name`` on ``m``.

    Updates ``layer`` in place when given (same URL slot, no new layer); otherwise adds a
    new overlay below the layers in ``below`` (marker groups stay on top). Returns the layer.
    """
    import ipyleaflet

    from eoembed.viz import png_data_url

    url = png_data_url(warp.apply(image), palette)
    if layer is not None:
        layer.url = url
        return layer
    layer = ipyleaflet.ImageOverlay(url=url, bounds=[list(warp.bounds[0]), list(warp.bounds[1])], name=name,
                                    opacity=opacity)
    # insert under the marker groups (leafmap's Map.remove closes a widget, so no remove/re-add)
    at = [i for i, lyr in enumerate(m.layers) if any(lyr is g for g in below)]
    m.add(layer, index=min(at)) if at else m.add(layer)
    return layer


def colorbar_control(vmin: float, vmax: float, cmap: str = "viridis", caption: str = "",
                     position: str = "bottomright", width: int = 240):
    """An ipyleaflet ``ColormapControl`` for a matplotlib colormap, drawn as a compact SVG bar.

    The control (its ``caption``, ``value_min``/``value_max`` and branca ``colormap``) is
    ipyleaflet's; only the picture is drawn here: branca's own rounds every inner tick to
    one decimal (a 0–0.262 range reads ``0.0 0.0 0.1 0.1 0.2 0.2 0.262``) and is 450 px
    wide, so three bars cover most of a 600 px map. Ticks are matplotlib's
    ``MaxNLocator`` values inside the range, printed with the decimals their step needs.
    """
    import uuid

    import ipyleaflet
    import ipywidgets as w
    from branca.colormap import LinearColormap
    from matplotlib.ticker import MaxNLocator

    from eoembed.viz import _lut

    vmin, vmax = float(vmin), float(vmax)
    colors = [tuple(int(v) for v in c[:3]) for c in _lut(cmap, 11)]
    cm = LinearColormap(colors, vmin=vmin, vmax=vmax, caption=caption)
    lut = _lut(cmap, 32)
    gid = f"eoembed-cb-{uuid.uuid4().hex[:8]}"
    stops = "".join(f'<stop offset="{i / (len(lut) - 1):.3f}" stop-color="#{r:02x}{g:02x}{b:02x}"/>'
                    for i, (r, g, b, _) in enumerate(lut))
    span = vmax - vmin if vmax > vmin else 1.0
    ticks = [t for t in MaxNLocator(5).tick_values(vmin, vmax) if vmin - 1e-9 * span <= t <= vmax + 1e-9 * span]
    pad = 14
    # as many decimals as the ticks need to be printed exactly (a 0.015 step needs 3: 0.945, not 0.94)
    dec = next((d for d in range(7) if all(abs(round(t, d) - t) <= 1e-9 * span for t in ticks)), 6)
    marks = "".join(
        f'<line x1="{pad + (t - vmin) / span * width:.1f}" y1="30" x2="{pad + (t - vmin) / span * width:.1f}" '
        f'y2="34" stroke="#333"/><text x="{pad + (t - vmin) / span * width:.1f}" y="45" font-size="10" '
        f'text-anchor="middle" fill="#222">{t:.{dec}f}</text>' for t in ticks)
    from html import escape

    svg = (f'<svg width="{width + 2 * pad}" height="50" xmlns="http://www.w3.org/2000/svg" '
           f'style="background:rgba(255,255,255,0.85);border-radius:4px">'
           f'<defs><linearGradient id="{gid}">{stops}</linearGradient></defs>'
           f'<text x="{pad}" y="12" font-size="11" fill="#222">{escape(caption)}</text>'
           f'<rect x="{pad}" y="16" width="{width}" height="14" fill="url(#{gid})"/>{marks}</svg>')
    widget = w.HTML(svg, layout=w.Layout(width=f"{width + 2 * pad + 4}px", height="54px"))
    return ipyleaflet.ColormapControl(colormap=cm, value_min=vmin, value_max=vmax, caption=caption,
                                      position=position, widget=widget)


def legend_control(names: list[str], colors: list[str], title: str = "class", position: str = "bottomright"):
    """An ipyleaflet ``LegendControl`` of class names and colours."""
    import ipyleaflet

    return ipyleaflet.LegendControl(dict(zip(names, colors)), title=title, position=position)


def set_control(m, old, new):
    """Replace control ``old`` (may be None) by ``new`` (may be None) on ``m``; returns ``new``."""
    if old is not None and old in m.controls:
        m.remove(old)
    if new is not None:
        m.add(new)
    return new


_KINDS = ("pca", "similarity", "class", "probability")


def add_layers(m, emb: xr.DataArray, kind: str = "pca", *, query: Any = None, index: Any = None,
               classifier: Any = None, cmap: str | None = None, name: str | None = None,
               max_pixels: int = 1024, opacity: float = 1.0, time: Any = None, controls: bool = True,
               **query_kwargs: Any):
    """Put an eoembed layer of ``emb`` on any leafmap or ipyleaflet map, with its colour bar or legend.

    Parameters
    ----------
    m:
        A ``leafmap.Map`` or ``ipyleaflet.Map`` (the user's own; basemap and other layers
        are left as they are).
    emb:
        Embedding cube ``(time?, embedding, y, x)`` with a CRS (numpy or dask; only an
        overview of at most ``max_pixels`` per side is read).
    kind:
        ``"pca"`` (first three principal components as RGB), ``"similarity"`` (cosine
        similarity of a query: give ``query=`` or its fields, e.g. ``point=(x, y)``,
        ``polygon=``, ``crs=``), ``"class"`` or ``"probability"`` (of a fitted
        :class:`~eoembed.classify.FewShotClassifier` given as ``classifier=``).
    index:
        For ``"similarity"``: the :class:`~eoembed.index.EmbeddingIndex` that resolves
        the query (default: built from ``emb``).
    cmap:
        Matplotlib colormap (default ``"viridis"`` for similarity, ``"magma"`` for
        probability).
    name:
        Layer name in the map's layer control (default ``"eoembed <kind>"``).
    controls:
        Add a ``ColormapControl`` (similarity, probability) or ``LegendControl`` (class).

    Returns
    -------
    ipyleaflet.ImageOverlay
        The layer added; its ``eoembed_control`` attribute holds the colour bar or legend
        control (None for PCA or ``controls=False``).

    Raises
    ------
    ParameterError
        Unknown ``kind``, a missing ``classifier=`` or query, or a map that is not an
        ipyleaflet/leafmap map.
    """
    import ipyleaflet

    from eoembed.cube import canonical
    from eoembed.validate import check_embedding_grid, check_has_crs
    from eoembed.viz import categorical_indexed, class_color, colormap_indexed, rgb_to_rgba

    if not isinstance(m, ipyleaflet.Map):
        raise ParameterError(f"m must be a leafmap.Map or ipyleaflet.Map, got {type(m).__name__}; "
                             "create one with leafmap.Map().")
    if kind not in _KINDS:
        raise ParameterError(f"kind must be one of {_KINDS}, got {kind!r}.")
    emb = canonical(emb)
    check_has_crs(emb)
    check_embedding_grid(emb)
    ov, _ = overview(emb, max_pixels)
    warp = warp_for(ov, max_pixels)
    control = None
    if kind == "pca":
        from eoembed.reduce import fit_pca

        img = rgb_to_rgba(pca_rgb_2d(fit_pca(ov, 3, sample=20_000), display_2d(ov, time)).values)
        palette = None
    elif kind == "similarity":
        if query is None and not query_kwargs:
            raise ParameterError("kind='similarity' needs a query: query=Query(...) or point=(x, y), polygon=, "
                                 "vector=, positives=/negatives= (with crs=).")
        if index is None:
            from eoembed.index import build_index

            index = build_index(emb)
        if time is not None:
            query_kwargs.setdefault("time", time)
        sim = display_2d(index.similarity_map(ov, query=query, **query_kwargs), time).values
        vmin, vmax = similarity_range(sim)
        cmap = cmap or "viridis"
        img, palette = colormap_indexed(sim, vmin, vmax, cmap)
        control = colorbar_control(vmin, vmax, cmap, "cosine similarity") if controls else None
    else:
        if classifier is None or not hasattr(classifier, "predict_map"):
            raise ParameterError(f"kind={kind!r} needs classifier= (a fitted eoembed.classify.FewShotClassifier, "
                                 "e.g. from eoembed.classify.fewshot(emb, labels) or ex.classifier).")
        pm = classifier.predict_map(ov)
        if kind == "class":
            names = [str(c) for c in classifier.classes_]
            codes = [int(v) for v in pm["class"].attrs["flag_values"]]
            colors = [class_color(i) for i in range(len(names))]
            img, palette = categorical_indexed(display_2d(pm["class"], time).compute().values, codes, colors)
            control = legend_control(names, colors) if controls else None
        else:
            conf = display_2d(pm["probability"].max("label"), time).compute().values
            cmap = cmap or "magma"
            img, palette = colormap_indexed(conf, 0.0, 1.0, cmap)
            control = colorbar_control(0.0, 1.0, cmap, "class probability") if controls else None
    layer = overlay(m, None, name or f"eoembed {kind}", img, palette, warp, opacity=opacity)
    if control is not None:
        m.add(control)
    layer.eoembed_control = control
    return layer
