"""The map explorer: click or draw on a map to search, label, train, and see the embedding space.

``emb.eo.explore(cube)`` returns an :class:`Explorer`, an ipywidgets ``HBox`` holding a
``leafmap.Map`` (or the map you pass as ``m=``) and a side panel (mode, class, buttons,
basemap picker, threshold slider and export, CV report, hits, hit gallery, session
save/load and a linked bqplot scatter of the embeddings). Every user action is a public
method that the widget callbacks call — :meth:`~Explorer.click`,
:meth:`~Explorer.query_polygon`, :meth:`~Explorer.label`, :meth:`~Explorer.train`,
:meth:`~Explorer.clear`, :meth:`~Explorer.select`, :meth:`~Explorer.set_threshold`,
:meth:`~Explorer.export_matches`, :meth:`~Explorer.split`, :meth:`~Explorer.gallery`,
:meth:`~Explorer.save_session`, and on cubes with time (``pool_time=False``) the time
slider's :meth:`~Explorer.set_time` and the trajectory plot's
:meth:`~Explorer.trajectory_at` — so notebooks and tests drive exactly what a click does.
:func:`add_layers` puts the same layers on any leafmap/ipyleaflet map.

Where things are
----------------
* :mod:`eoembed.explore.layers` — the display grid (overview + Web Mercator warp), the
  image of each layer kind, overlays, colour bars/legends/basemaps, :func:`add_layers`.
* :mod:`eoembed.explore.actions` — the public methods' logic.
* :mod:`eoembed.explore.panel` — the side-panel widgets and callbacks, the draw control.
* :mod:`eoembed.explore.scatter` — the embedding view.
* :mod:`eoembed.explore.timeline` — time slider, trajectory plot, two dates side by side.

Design notes
------------
* **Screen resolution.** Layers are drawn from an *overview* of the embedding cube
  (every ``s``-th patch so that the long side is at most ``max_pixels``); a dask-backed
  cube is computed for the overview only, and sent as a PNG data URL ``ImageOverlay``
  (no tile server or network; see :mod:`eoembed.explore.layers` for why).
* **No basemap by default** (works offline, no API keys); ``basemap="osm"``, ``"esri"``
  or any xyzservices provider name adds one, as does the panel's basemap picker.
* **One index.** The :class:`~eoembed.index.EmbeddingIndex` is built on first use
  (first click) with :func:`eoembed.index.build_index` — or pass ``index=`` — and
  reused for every query.
* **Errors** raised inside widget callbacks are logged (``logging.getLogger(
  "eoembed.explore")``), shown in red in the panel and kept in ``ex.last_error``;
  the widget stays usable. Called directly, the public methods raise.
"""

from __future__ import annotations

import os
import warnings
import time as _time
from typing import Any

import numpy as np
import xarray as xr

from eoembed.cube import canonical, cube_info, to_crs_xy
from eoembed.exceptions import LabelError, MissingOptionalDependency, ParameterError, user_stacklevel
from eoembed.explore.actions import ActionsMixin, _fc, _point
from eoembed.explore.layers import add_layers
from eoembed.explore.panel import PanelMixin
from eoembed.explore.scatter import ScatterMixin
from eoembed.explore.timeline import TIME_LAYERS, TimeMixin

__all__ = ["Explorer", "add_layers", "explore"]

_VIZ_MODULES = (("ipywidgets", "ipywidgets"), ("ipyleaflet", "ipyleaflet"), ("leafmap", "leafmap"),
                ("bqplot", "bqplot"), ("matplotlib", "matplotlib"), ("PIL", "pillow"))


def _require_viz() -> None:
    import importlib

    missing = []
    with warnings.catch_warnings():  # importing leafmap adds a global "ignore all warnings" filter: keep it local
        for mod, dist in _VIZ_MODULES:
            try:
                importlib.import_module(mod)
            except ImportError:
                missing.append(dist)
    if missing:
        raise MissingOptionalDependency(
            f"The map explorer needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed. Install the viz extra: pip install 'eoembed[viz]' (and 'eoembed[search]' for "
            "search and few-shot), then restart the kernel."
        )


try:  # the widget base class; without ipywidgets, Explorer() raises the typed error
    import ipywidgets as _widgets

    _HBox = _widgets.HBox
except ImportError:  # pragma: no cover - exercised by the no-viz test via explore()
    _widgets = None

    class _HBox:  # type: ignore[no-redef]
        def __init__(self, *args, **kwargs):
            _require_viz()


def _new_map(warp, height: str):
    """A ``leafmap.Map`` framed on the layers, with no basemap and no tools that go online."""
    import ipyleaflet

    from eoembed.explore.layers import fit_zoom

    (south, west), (north, east) = warp.bounds
    # leafmap calls warnings.filterwarnings("ignore") in places (import, Map set-up), which would silence
    # every later warning of the user's session, eoembed's included: keep its filter changes local
    with warnings.catch_warnings():
        import leafmap

        m = leafmap.Map(center=((south + north) / 2, (west + east) / 2), zoom=fit_zoom(warp), height=height,
                        draw_control=False, toolbar_control=False, search_control=False, layers_control=True,
                        scale_control=True, interpolation="nearest")
    for layer in [lyr for lyr in m.layers if isinstance(lyr, ipyleaflet.TileLayer)]:
        m.remove(layer)  # leafmap's default OpenStreetMap: offline by default
    return m


class Explorer(ActionsMixin, TimeMixin, ScatterMixin, PanelMixin, _HBox):
    #: Upper bound on the float32 vectors of the display grid (overview and zoomed-in windows): a
    #: 1024² grid of 128-d vectors is 512 MB, of 768-d ones 3 GB; the grid gets coarser instead.
    OVERVIEW_BYTES = 160 * 2**20

    """An interactive map of an embedding cube: search by clicking or drawing, label, train, inspect.

    Create with :func:`explore` (``emb.eo.explore(cube)``); display it as the last
    expression of a cell or with ``display(ex)``.

    Attributes
    ----------
    emb: the embedding cube. map: the ``leafmap.Map`` (or the ``m=`` given). panel: the
    side panel. scatter: the bqplot ``Figure`` of the embedding view (None with
    ``scatter=None``). mode: ``"search"`` or ``"label"`` (what a map click does).
    hits: GeoDataFrame of the last search (rank, score, x, y, …, geometry; emb CRS).
    labels: GeoDataFrame of labelled points (``class``, geometry; emb CRS).
    classifier: the last :class:`~eoembed.classify.FewShotClassifier` (after :meth:`train`).
    cv_report: its spatial cross-validation report (None when CV was not possible).
    threshold: the similarity threshold of :attr:`matches` (None until set).
    layers: dict name → ipyleaflet layer (the map shows the layers that follow the time
    slider with the date, e.g. ``"PCA-RGB 2024-03-15"``; the keys stay ``"PCA-RGB"``…).
    layer_data: dict name → the overview DataArray each raster layer was drawn from.
    draw_control: the polygon query tool. time: the timestep shown and searched (None:
    the mean of all; cubes with time only). trajectory_data: the last trajectory plotted
    (:meth:`trajectory_at`). last_error: last callback exception.
    """

    def __init__(self, emb: xr.DataArray, cube: xr.DataArray | None = None, *, basemap: Any = None,
                 k: int = 20, labels: Any = None, index: Any = None, index_kwargs: dict | None = None,
                 fewshot_kwargs: dict | None = None, max_pixels: int = 1024, scatter: str | None = "pca",
                 scatter_sample: int = 2000, cmap: str = "viridis", time: Any = None,
                 height: str = "560px", m: Any = None, session: Any = None, pyramid: Any = None) -> None:
        _require_viz()
        import ipyleaflet
        import ipywidgets as w
        from pyproj import CRS

        from eoembed.explore.layers import check_input_cube, warp_for

        t0 = _time.perf_counter()
        self.emb = canonical(emb)
        from eoembed.validate import check_embedding_grid

        check_embedding_grid(self.emb)
        info = cube_info(self.emb)
        self.crs = CRS.from_wkt(info.crs_wkt)
        if int(k) < 1:
            raise ParameterError(f"k must be >= 1, got {k}.")
        if int(max_pixels) < 16:
            raise ParameterError(f"max_pixels must be >= 16, got {max_pixels}.")
        if m is not None and not isinstance(m, ipyleaflet.Map):
            raise ParameterError(f"m= must be a leafmap.Map or ipyleaflet.Map, got {type(m).__name__}.")
        if cube is not None:
            check_input_cube(cube)
        self.k = int(k)
        self.cmap = cmap
        self.max_pixels = int(max_pixels)
        self._transform = info.transform
        self._shape = info.shape
        self._index = index
        self._index_kwargs = dict(index_kwargs or {})
        self._fewshot_kwargs = dict(fewshot_kwargs or {})
        self._times = self.emb["time"].values if "time" in self.emb.dims else None
        self._time, self._time_pos = self._resolve_time(time)  # (label, position); None: mean of all
        self._cube = cube
        self.mode = "search"
        self.hits = None
        self.classifier = None
        self.cv_report = None
        self.threshold: float | None = None
        self.last_error: BaseException | None = None
        self.layers: dict[str, Any] = {}
        self.layer_data: dict[str, xr.DataArray] = {}
        self.timings: dict[str, float] = {}
        self._positives: list[tuple[float, float]] = []
        self._negatives: list[tuple[float, float]] = []
        self._polygon = None
        self._query: dict[str, Any] | None = None
        self._similarity: xr.DataArray | None = None
        self._ov_similarity: xr.DataArray | None = None
        self._class_codes: dict[str, int] = {}
        self._colorbar = None
        self._legend = None
        self._basemap = None
        self._basemap_name = "none"
        self._split = None
        self._split_names = None
        self._split_dates = None
        self._split_labels: list = []
        self._gallery_on = False
        self._gallery_k, self._gallery_size = 8, None
        self._view_bounds = None
        self._muted: set[int] = set()

        # ---- overview of the embedding cube (the only part read for display) -------
        from eoembed.explore.layers import vector_side

        # the display grid's side: max_pixels, or less where its vectors would exceed OVERVIEW_BYTES
        self._side = vector_side(self.emb, self.max_pixels, self.OVERVIEW_BYTES)
        self._ov, self._stride = self._overview(pyramid)
        self.timings["overview"] = _time.perf_counter() - t0
        self._warp = warp_for(self._ov, self.max_pixels)
        self.timings["warp"] = _time.perf_counter() - t0

        # ---- map ----------------------------------------------------------------------
        self.map = _new_map(self._warp, height) if m is None else m
        self.map.layout.flex = "1 1 60%"
        if m is not None:
            (south, west), (north, east) = self._warp.bounds
            self.map.fit_bounds([[south, west], [north, east]])
        marker = {"radius": 6, "color": "#000000", "weight": 1, "fillOpacity": 0.95}
        self._labels_group = ipyleaflet.GeoJSON(data=_fc([]), point_style=marker, name="labels")
        self._hits_group = ipyleaflet.GeoJSON(data=_fc([]), point_style=marker, name="query & hits",
                                              style={"color": "#ff00ff", "fillOpacity": 0.05, "weight": 2})
        self._build_panel_widgets()
        self.set_basemap(basemap)
        if isinstance(basemap, str) and basemap in self._basemap_w.options:
            with self._quiet(self._basemap_w):
                self._basemap_w.value = basemap

        # ---- labels -----------------------------------------------------------------------
        self.labels_path = None
        self._labels = self._empty_labels()
        if labels is not None:
            if isinstance(labels, (str, os.PathLike)):
                self.labels_path = os.fspath(labels)
                if os.path.exists(self.labels_path):
                    self._set_labels(self._read_labels(self.labels_path))
            else:
                self._set_labels(labels)

        # ---- layers --------------------------------------------------------------------------
        if cube is not None:
            self._add_true_colour(cube)
        self._add_pca_layer()
        self.timings["layers"] = _time.perf_counter() - t0
        for g in (self._hits_group, self._labels_group):
            self.map.add(g)
        self.scatter = None
        if scatter:
            self._build_scatter(scatter, int(scatter_sample))
        self.timings["scatter"] = _time.perf_counter() - t0

        self.panel = w.VBox(self._panel_children(), layout=w.Layout(width="460px", min_width="460px"))
        super().__init__([self.map, self.panel])
        self._refresh_layer_list()
        ny, nx = self._shape
        self._status(f"{ny}×{nx} patches ({self.crs.to_string()}); overview 1/{self._stride}. "
                     "Click the map to search, or draw a polygon.")
        if self._stride > 1:  # zooming in draws the view from a finer level
            self.map.observe(self._guarded(lambda ch: self.refine_view(ch["new"])), "bounds")
        if session is not None:
            self.load_session(session)
        self.timings["open"] = _time.perf_counter() - t0

    # ---- helpers ---------------------------------------------------------------------------------
    def _overview(self, pyramid) -> tuple[xr.DataArray, int]:
        """The display grid: a strided read of the cube, or the finest pyramid level that fits."""
        from eoembed.explore.layers import overview

        self._levels = [(1, self.emb)]  # (factor, cube) sources for zoomed-in detail, finest first
        self._pca_cog = None  # the pyramid's PCA-RGB COG, served as tiles (see eoembed.explore.tiles)
        if pyramid is None:
            return overview(self.emb, self._side)
        from eoembed.explore.pyramid import open_pyramid, pyramid_pca_cog

        if isinstance(pyramid, (str, os.PathLike)) and "time" not in self.emb.dims:
            self._pca_cog = pyramid_pca_cog(pyramid)

        levels = open_pyramid(pyramid) if isinstance(pyramid, (str, os.PathLike)) else [canonical(p) for p in pyramid]
        if not levels:
            raise ParameterError("pyramid= holds no level; write one with eoembed.explore.pyramid.write_pyramid.")
        a = self._transform[0]
        for lvl in levels:
            f = lvl.rio.transform().a / a
            if round(f) != f or f < 2 or lvl.rio.crs != self.emb.rio.crs:
                raise ParameterError(f"pyramid level of {lvl.sizes['y']}×{lvl.sizes['x']} patches is not a coarser "
                                     "level of this cube (same CRS, patch pitch a power-of-two multiple); write the "
                                     "pyramid from this cube with write_pyramid(emb, path).")
        self._levels += [(int(round(lvl.rio.transform().a / a)), lvl) for lvl in levels]
        fit = [lvl for lvl in levels if max(lvl.sizes["y"], lvl.sizes["x"]) <= self._side]
        lvl = fit[0] if fit else levels[-1]
        ov, s = overview(lvl, self._side)
        return ov, s * int(round(lvl.rio.transform().a / a))

    def _to_emb_crs(self, x, y, crs) -> tuple[float, float]:
        if crs is None:
            return float(x), float(y)
        xx, yy = to_crs_xy([x], [y], crs, self.crs)
        return float(xx[0]), float(yy[0])

    def _extent(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self._transform
        ny, nx = self._shape
        x0, x1 = sorted((c, c + a * nx))
        y0, y1 = sorted((f, f + e * ny))
        return x0, y0, x1, y1

    def _check_inside(self, x: float, y: float, err, what: str) -> None:
        a, _, c, _, e, f = self._transform
        ny, nx = self._shape
        col, row = (x - c) / a, (y - f) / e
        if not (0 <= col < nx and 0 <= row < ny):
            x0, y0, x1, y1 = self._extent()
            raise err(f"Cannot {what} at ({x:.1f}, {y:.1f}): outside the embedding cube "
                      f"(x {x0:.0f}…{x1:.0f}, y {y0:.0f}…{y1:.0f} in {self.crs.to_string()}). "
                      "Click inside the coloured layers.")

    def _display_2d(self, da: xr.DataArray) -> xr.DataArray:
        from eoembed.explore.layers import display_2d

        return display_2d(da, self._time_pos)

    def _put_raster(self, name: str, data: xr.DataArray, image: np.ndarray, palette: np.ndarray | None = None,
                    warp=None, title: str | None = None) -> None:
        """Warp an image on a source grid to Mercator and add/update the ``name`` overlay.

        ``image`` is RGBA ``(y, x, 4)`` or palette indices ``(y, x)`` with ``palette``.
        ``title`` is the name shown on the map (default ``name``, plus the date shown for
        the layers that follow the time slider); ``ex.layers`` keys stay ``name``.
        """
        from eoembed.explore.layers import overlay

        if title is None:
            title = name + self._time_suffix() if name in TIME_LAYERS else name
        self.layer_data[name] = data
        new = name not in self.layers
        self.layers[name] = overlay(self.map, self.layers.get(name), title, image, palette, warp or self._warp,
                                    below=(self._hits_group, self._labels_group))
        if new:
            self._refresh_layer_list()
        elif self.layers[name].name != title:
            self.layers[name].name = title
            self._layers_renamed()

    def _remove_layer(self, name: str) -> None:
        layer = self.layers.pop(name, None)
        self.layer_data.pop(name, None)
        if self._split_names and name in self._split_names:
            self.unsplit()
        if layer is not None and layer in self.map.layers:
            self.map.remove(layer)
            self._refresh_layer_list()

    def _add_true_colour(self, cube: xr.DataArray) -> None:
        from eoembed.explore.layers import true_colour
        from eoembed.validate import check_spacing

        check_spacing(cube)  # the same grid rule as embed(): a stitched cube would be drawn misplaced
        self._warn_if_apart(cube)
        sub, rgba, warp = true_colour(cube, self.max_pixels)
        self._put_raster("true colour", sub, rgba, warp=warp)

    def _warn_if_apart(self, cube: xr.DataArray) -> None:
        """Warn when ``cube`` does not overlap the embedding cube (it is drawn where it is)."""
        from affine import Affine

        left, bottom, right, top = cube.rio.bounds(recalc=cube.sizes["x"] > 1 and cube.sizes["y"] > 1)
        xs = np.array([left, right, right, left, (left + right) / 2])
        ys = np.array([bottom, bottom, top, top, (bottom + top) / 2])
        cx, cy = to_crs_xy(np.concatenate([xs, np.linspace(left, right, 9)]),
                           np.concatenate([ys, np.linspace(bottom, top, 9)]), cube.rio.crs, self.crs)
        t = Affine(*self._transform)
        ny, nx = self._shape
        ex = sorted([t.c, t.c + t.a * nx])
        ey = sorted([t.f, t.f + t.e * ny])
        if cx.max() < ex[0] or cx.min() > ex[1] or cy.max() < ey[0] or cy.min() > ey[1]:
            gap = max(ex[0] - cx.max(), cx.min() - ex[1], ey[0] - cy.max(), cy.min() - ey[1], 0.0)
            warnings.warn(
                f"cube= does not overlap the embedding cube (it lies {gap / 1000:.3g} km away): its true-colour "
                "layer is drawn where the cube is, apart from the embeddings. Pass the cube the embeddings were "
                "computed from (or cube=None).",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def _add_pca_layer(self) -> None:
        from eoembed.explore.layers import pca_rgb_2d
        from eoembed.reduce import fit_pca
        from eoembed.viz import rgb_to_rgba

        if self._pca_cog is not None:  # zoom-dependent tiles of the full-resolution view
            from eoembed.explore.tiles import tile_layer

            # the projection the COG was coloured with (write_pyramid: fitted on the coarsest level)
            self._proj = fit_pca(self._levels[-1][1], 3, sample=20_000)
            self.layer_data["PCA-RGB"] = pca_rgb_2d(self._proj, self._ov)
            self.layers["PCA-RGB"] = layer = tile_layer(self._pca_cog, name="PCA-RGB")
            at = [i for i, lyr in enumerate(self.map.layers) if lyr is self._hits_group or lyr is self._labels_group]
            self.map.add(layer, index=min(at)) if at else self.map.add(layer)
            self._refresh_layer_list()
            return
        self._proj = fit_pca(self._ov, 3, sample=20_000)
        rgb = pca_rgb_2d(self._proj, self._display_2d(self._ov))
        self._put_raster("PCA-RGB", rgb, rgb_to_rgba(rgb.values))

    def _show_similarity(self, sim2d: xr.DataArray) -> None:
        from eoembed.explore.layers import colorbar_control, set_control, similarity_range
        from eoembed.viz import colormap_indexed

        v = sim2d.values
        vmin, vmax = similarity_range(v)
        self._put_raster("similarity", sim2d, *colormap_indexed(v, vmin, vmax, self.cmap))
        self._colorbar = set_control(self.map, self._colorbar,
                                     colorbar_control(vmin, vmax, self.cmap, "cosine similarity"))

    def _show_hits(self) -> None:
        import shapely

        feats = []
        pts = [(x, y, "#ff00ff", 7 if i == 0 else 5) for i, (x, y) in
               enumerate(zip(self.hits["x"].to_numpy(), self.hits["y"].to_numpy()))]
        pos = self._positives[1:] if self._polygon is not None else self._positives
        pts += [(x, y, "#00c853", 9) for x, y in pos] + [(x, y, "#d50000", 9) for x, y in self._negatives]
        if pts:
            lon, lat = to_crs_xy([p[0] for p in pts], [p[1] for p in pts], self.crs, "EPSG:4326")
            for (_, _, col, rad), lo, la in zip(pts, lon, lat):
                feats.append(_point(lo, la, {"fillColor": col, "radius": rad,
                                             "color": "#000000" if rad == 9 else "#ffffff"}))
        if self._polygon is not None:
            from eoembed.cube import to_crs_geom

            g = to_crs_geom(self._polygon, self.crs, "EPSG:4326")
            feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(g),
                          "properties": {"query": "polygon"}})
        self._hits_group.data = _fc(feats)
        from eoembed.explore.timeline import time_label

        dated = "time" in self.hits.columns  # a cube with time: the hits span every date
        rows = "".join(f"<tr><td>{r.rank}</td><td>{r.score:.3f}</td><td>{r.x:.0f}</td><td>{r.y:.0f}</td>"
                       + (f"<td>{time_label(r.time)}</td>" if dated else "") + "</tr>"
                       for r in self.hits.head(5).itertuples())
        self._hits_w.value = ("<table style='font-size:11px'><tr><th>rank</th><th>score</th><th>x</th>"
                              f"<th>y</th>{'<th>date</th>' if dated else ''}</tr>{rows}</table>")

    def _class_color(self, name: str) -> str:
        from eoembed.viz import class_color

        if name not in self._class_codes:
            self._class_codes[name] = len(self._class_codes)
        return class_color(self._class_codes[name])

    def _draw_labels(self) -> None:
        feats = []
        if len(self._labels):
            g = self._labels.geometry
            lon, lat = to_crs_xy(g.x.to_numpy(), g.y.to_numpy(), self.crs, "EPSG:4326")
            for lo, la, cls in zip(lon, lat, self._labels["class"]):
                # white ring: visible on top of a class map drawn in the same colour
                feats.append(_point(lo, la, {"fillColor": self._class_color(cls), "color": "#ffffff", "weight": 2},
                                    {"class": cls}))
                if cls not in self._class_w.options:
                    self._class_w.options = [*self._class_w.options, cls]
        self._labels_group.data = _fc(feats)

    def _empty_labels(self):
        import geopandas as gpd

        return gpd.GeoDataFrame({"class": np.array([], dtype=object)}, geometry=[], crs=self.crs)

    def _read_labels(self, path: str):
        import geopandas as gpd

        return gpd.read_file(path)

    def _set_labels(self, gdf) -> None:
        import geopandas as gpd

        if not isinstance(gdf, gpd.GeoDataFrame) or "class" not in gdf.columns:
            raise LabelError("labels= must be a path or a GeoDataFrame with a 'class' column and a CRS.")
        if gdf.crs is None:
            raise LabelError("The labels have no CRS; set one with labels.set_crs('EPSG:4326').")
        gdf = gdf[["class", "geometry"]].to_crs(self.crs)
        gdf = gdf.assign(geometry=gdf.geometry.representative_point(), **{"class": gdf["class"].astype(str)})
        self._labels = gpd.GeoDataFrame(gdf.reset_index(drop=True), crs=self.crs)
        self._draw_labels()


def explore(emb: xr.DataArray, cube: xr.DataArray | None = None, *, basemap: Any = None, k: int = 20,
            labels: Any = None, m: Any = None, session: Any = None, pyramid: Any = None,
            **kwargs: Any) -> Explorer:
    """Open the interactive map explorer on an embedding cube.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` (numpy or dask; only an overview of
        at most ``max_pixels`` per side is read for display).
    cube:
        The input cube (``band`` dim with B04/B03/B02 or red/green/blue); adds a
        true-colour layer (2–98 % per-band stretch; median over time) and enables the
        hit gallery (:meth:`Explorer.gallery`).
    basemap:
        ``None`` (default: blank, offline, no API key), ``"osm"``, ``"esri"``, an
        xyzservices provider name (``"OpenTopoMap"``), a ``TileProvider`` or an
        ``ipyleaflet.TileLayer``. The panel's picker changes it later.
    k:
        Number of hits per search.
    labels:
        A GeoDataFrame with a ``class`` column, or a path (GeoJSON): loaded if it
        exists, and every new label is autosaved there.
    m:
        A ``leafmap.Map`` (or ``ipyleaflet.Map``) of your own to put the explorer's
        layers and tools on; default a new ``leafmap.Map`` without basemap.
    session:
        A session file written by :meth:`Explorer.save_session` to restore.
    pyramid:
        A pyramid written by :func:`eoembed.explore.pyramid.write_pyramid` (its path or
        levels): the layers are drawn from its finest level that fits ``max_pixels``
        instead of a strided read of the full cube (for large dask/Zarr cubes).
    **kwargs:
        ``index=`` (a prebuilt :class:`~eoembed.index.EmbeddingIndex`),
        ``index_kwargs=`` (for :func:`~eoembed.index.build_index`), ``fewshot_kwargs=``
        (for :func:`~eoembed.classify.fewshot`), ``max_pixels=1024``,
        ``scatter="pca" | "umap" | None``, ``scatter_sample=2000``, ``cmap="viridis"``,
        ``time=`` (timestep shown and searched for cubes with time — a label, date string or
        position; default the mean of all; the panel's time slider and
        :meth:`Explorer.set_time` change it), ``height="560px"``.

    Returns
    -------
    Explorer
        An ipywidgets widget; display it, then click. Its methods ``click``,
        ``query_polygon``, ``label``, ``train``, ``clear``, ``select``,
        ``set_threshold``, ``export_matches``, ``split``, ``gallery``,
        ``save_session`` and, for cubes with time, ``set_time``, ``trajectory_at`` and
        ``split_dates`` do what the widgets do.

    Raises
    ------
    MissingOptionalDependency
        The ``viz`` extra is not installed (``pip install 'eoembed[viz]'``).
    DimensionError
        ``time=`` given for a cube without a ``time`` dim.
    ParameterError
        ``time=`` not one of the cube's timesteps, or another bad option.
    """
    _require_viz()
    return Explorer(emb, cube, basemap=basemap, k=k, labels=labels, m=m, session=session, pyramid=pyramid,
                    **kwargs)
