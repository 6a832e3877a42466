"""The map explorer: click a map to search, click to label, train, and see the embedding space.

``emb.eo.explore(cube)`` returns an :class:`Explorer`, an ipywidgets ``HBox`` holding an
ipyleaflet map and a side panel (mode, class, buttons, colour bar / legend, CV report,
hits, and a linked bqplot scatter of the embeddings). Every user action is a public
method that the widget callbacks call — :meth:`Explorer.click`,
:meth:`Explorer.label`, :meth:`Explorer.train`, :meth:`Explorer.clear`,
:meth:`Explorer.select` — so notebooks and tests drive exactly what a click does.

Design notes
------------
* **Screen resolution.** Layers are drawn from an *overview* of the embedding cube
  (every ``s``-th patch so that the long side is at most ``max_pixels``); a dask-backed
  cube is computed for the overview only. Each raster is resampled (nearest neighbour)
  onto a Web Mercator grid once per source grid (:class:`eoembed.viz.MercatorWarp`) and
  sent as a PNG data URL ``ImageOverlay``, so nothing needs a tile server or network.
* **No basemap by default** (works offline, no API keys); ``basemap="osm"`` or
  ``"esri"`` or any ipyleaflet/xyzservices provider adds one.
* **One index.** The :class:`~eoembed.index.EmbeddingIndex` is built on first use
  (first click) with :func:`eoembed.index.build_index` — or pass ``index=`` — and
  reused for every query.
* **Errors** raised inside widget callbacks are logged (``logging.getLogger(
  "eoembed.explore")``), shown in red in the panel and kept in ``ex.last_error``;
  the widget stays usable. Called directly, the public methods raise.
* **Why bqplot** for the embedding scatter: every bqplot mark is an ipywidget, so the
  brush/lasso selection (``Scatter.selected``) and the highlighted point sync both ways
  as widget traits with no extra server; it ships a prebuilt JupyterLab 4 extension,
  renders offline, and has brush and lasso selectors built in (ipympl would round-trip
  rendered pixels through the kernel on every interaction; plotly's FigureWidget needs
  its own JS bundle for a similar result).
"""

from __future__ import annotations

import warnings

import logging
import os
from html import escape as _esc
import time as _time
from typing import Any

import numpy as np
import xarray as xr

from eoembed.cube import canonical, cube_info, to_crs_xy
from eoembed.exceptions import LabelError, MissingOptionalDependency, ParameterError, QueryError, user_stacklevel

__all__ = ["Explorer", "explore"]

log = logging.getLogger("eoembed.explore")

_VIZ_MODULES = (("ipywidgets", "ipywidgets"), ("ipyleaflet", "ipyleaflet"), ("bqplot", "bqplot"),
                ("matplotlib", "matplotlib"), ("PIL", "pillow"))


def _require_viz() -> None:
    import importlib

    missing = []
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


_BASEMAPS = {"osm": ("OpenStreetMap", "Mapnik"), "esri": ("Esri", "WorldImagery")}


def _basemap_layer(basemap):
    """``None``/"none"/"blank" → no tile layer; "osm"/"esri" or a provider/TileLayer → one."""
    import ipyleaflet

    if basemap is None or (isinstance(basemap, str) and basemap.lower() in ("none", "blank", "")):
        return None
    if isinstance(basemap, ipyleaflet.TileLayer):
        return basemap
    if isinstance(basemap, str):
        key = basemap.lower()
        if key not in _BASEMAPS:
            raise ParameterError(
                f"basemap={basemap!r} is not known; use None (blank, offline), 'osm', 'esri', or an "
                "ipyleaflet TileLayer / xyzservices TileProvider (e.g. ipyleaflet.basemaps.OpenTopoMap)."
            )
        group, name = _BASEMAPS[key]
        basemap = ipyleaflet.basemaps[group][name]
    layer = ipyleaflet.basemap_to_tiles(basemap)
    layer.base = True
    return layer


def _true_colour_bands(cube: xr.DataArray) -> list:
    names = [str(b) for b in cube["band"].values] if "band" in cube.dims else []
    for want in (("B04", "B03", "B02"), ("red", "green", "blue"), ("B4", "B3", "B2")):
        found = [next((b for b in cube["band"].values if str(b).lower() == w.lower()), None) for w in want]
        if all(f is not None for f in found):
            return found
    raise ParameterError(
        f"The cube has no red/green/blue bands for a true-colour layer (bands {names}); "
        "expected B04/B03/B02 or red/green/blue band names. Pass cube=None to skip that layer."
    )


class Explorer(_HBox):
    """An interactive map of an embedding cube: search by clicking, label, train, inspect.

    Create with :func:`explore` (``emb.eo.explore(cube)``); display it as the last
    expression of a cell or with ``display(ex)``.

    Attributes
    ----------
    emb: the embedding cube. map: the ``ipyleaflet.Map``. panel: the side panel.
    scatter: the bqplot ``Figure`` of the embedding view (None with ``scatter=None``).
    mode: ``"search"`` or ``"label"`` (what a map click does).
    hits: GeoDataFrame of the last search (rank, score, x, y, …, geometry; emb CRS).
    labels: GeoDataFrame of labelled points (``class``, geometry; emb CRS).
    classifier: the last :class:`~eoembed.classify.FewShotClassifier` (after :meth:`train`).
    cv_report: its spatial cross-validation report (None when CV was not possible).
    layers: dict name → ipyleaflet layer. layer_data: dict name → the overview
    DataArray each raster layer was drawn from. last_error: last callback exception.
    """

    def __init__(self, emb: xr.DataArray, cube: xr.DataArray | None = None, *, basemap: Any = None,
                 k: int = 20, labels: Any = None, index: Any = None, index_kwargs: dict | None = None,
                 fewshot_kwargs: dict | None = None, max_pixels: int = 1024, scatter: str | None = "pca",
                 scatter_sample: int = 2000, cmap: str = "viridis", time: Any = None,
                 height: str = "560px") -> None:
        _require_viz()
        import ipyleaflet
        import ipywidgets as w

        t0 = _time.perf_counter()
        self.emb = canonical(emb)
        from eoembed.validate import check_embedding_grid

        check_embedding_grid(self.emb)
        info = cube_info(self.emb)
        from pyproj import CRS

        self.crs = CRS.from_wkt(info.crs_wkt)
        if int(k) < 1:
            raise ParameterError(f"k must be >= 1, got {k}.")
        if int(max_pixels) < 16:
            raise ParameterError(f"max_pixels must be >= 16, got {max_pixels}.")
        self.k = int(k)
        self.cmap = cmap
        self.max_pixels = int(max_pixels)
        self._transform = info.transform
        self._shape = info.shape
        self._index = index
        self._index_kwargs = dict(index_kwargs or {})
        self._fewshot_kwargs = dict(fewshot_kwargs or {})
        self._time = time
        self.mode = "search"
        self.hits = None
        self.classifier = None
        self.cv_report = None
        self.last_error: BaseException | None = None
        self.layers: dict[str, Any] = {}
        self.layer_data: dict[str, xr.DataArray] = {}
        self.timings: dict[str, float] = {}
        self._positives: list[tuple[float, float]] = []
        self._negatives: list[tuple[float, float]] = []
        self._query: dict[str, Any] | None = None
        self._similarity: xr.DataArray | None = None
        self._class_codes: dict[str, int] = {}

        # ---- overview of the embedding cube (the only part read for display) -------
        ny, nx = self._shape
        self._stride = max(1, int(np.ceil(max(ny, nx) / self.max_pixels)))
        s = self._stride
        ov = self.emb.isel(y=slice(None, None, s), x=slice(None, None, s))
        if s > 1:
            a, b, c, d, e, f = self._transform
            from affine import Affine

            ov = ov.rio.write_transform(Affine(a * s, b, c, d, e * s, f))
        self._ov = ov.copy(data=np.asarray(ov.data)) if not isinstance(ov.data, np.ndarray) else ov
        self.timings["overview"] = _time.perf_counter() - t0

        from eoembed.viz import MercatorWarp

        self._warp = MercatorWarp.from_grid(self.crs, self._ov.rio.transform(), self._ov.shape[-2:],
                                            max_pixels=self.max_pixels)
        self.timings["warp"] = _time.perf_counter() - t0

        # ---- map ----------------------------------------------------------------------
        base = _basemap_layer(basemap)
        (south, west), (north, east) = self._warp.bounds
        self.map = ipyleaflet.Map(layers=(base,) if base is not None else (), center=((south + north) / 2,
                                  (west + east) / 2), zoom=self._fit_zoom(), scroll_wheel_zoom=True,
                                  interpolation="nearest", layout=w.Layout(height=height, flex="1 1 60%"))
        self.map.add(ipyleaflet.LayersControl(position="topright"))
        self.map.add(ipyleaflet.ScaleControl(position="bottomleft"))
        marker = {"radius": 6, "color": "#000000", "weight": 1, "fillOpacity": 0.95}
        self._labels_group = ipyleaflet.GeoJSON(data=_fc([]), point_style=marker, name="labels")
        self._hits_group = ipyleaflet.GeoJSON(data=_fc([]), point_style=marker, name="query & hits")
        self._legend = None

        # ---- panel ----------------------------------------------------------------------
        self._mode_w = w.ToggleButtons(options=[("Search", "search"), ("Label", "label")], value="search",
                                       description="Click to", style={"button_width": "70px"})
        self._query_w = w.ToggleButtons(options=[("new", "new"), ("+ positive", "positive"),
                                                 ("− negative", "negative")], value="new",
                                        description="Query", style={"button_width": "80px"})
        self._class_w = w.Combobox(value="class 1", placeholder="class name", description="Class",
                                   options=[], ensure_option=False)
        bl = w.Layout(width="auto", min_width="90px")
        self._clear_w = w.Button(description="Clear", icon="eraser", layout=bl)
        self._train_w = w.Button(description="Train", icon="graduation-cap", button_style="primary", layout=bl)
        self._save_w = w.Button(description="Save labels", icon="save", layout=bl)
        self._layer_w = w.Dropdown(description="Layer", options=[])
        self._opacity_w = w.FloatSlider(value=1.0, min=0, max=1, step=0.05, description="Opacity")
        self._status_w = w.HTML("")
        self._colorbar_w = w.HTML("")
        self._legend_w = w.HTML("")
        self._report_w = w.HTML("")
        self._hits_w = w.HTML("")
        self._mode_w.observe(self._guarded(self._on_mode), "value")
        self._clear_w.on_click(self._guarded(lambda _: self.clear()))
        self._train_w.on_click(self._guarded(lambda _: self.train()))
        self._save_w.on_click(self._guarded(lambda _: self._save_clicked()))
        self._layer_w.observe(self._guarded(self._on_layer_pick), "value")
        self._opacity_w.observe(self._guarded(self._on_opacity), "value")
        self.map.on_interaction(self._guarded(self._on_map_interaction))

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

        self.panel = w.VBox([
            self._mode_w, self._query_w, self._class_w,
            w.HBox([self._clear_w, self._train_w, self._save_w], layout=w.Layout(flex="0 0 auto")),
            self._status_w, self._layer_w, self._opacity_w, self._colorbar_w, self._legend_w,
            *([self.scatter_box] if self.scatter is not None else []),
            self._report_w, self._hits_w,
        ], layout=w.Layout(width="460px", min_width="460px"))
        super().__init__([self.map, self.panel])
        self._refresh_layer_list()
        self._status(f"{ny}×{nx} patches ({self.crs.to_string()}); overview 1/{s}. Click the map to search.")
        self.timings["open"] = _time.perf_counter() - t0

    # ------------------------------------------------------------------------------------
    # public API (the callbacks call these)
    # ------------------------------------------------------------------------------------
    @property
    def index(self):
        """The :class:`~eoembed.index.EmbeddingIndex` (built on first use, then reused)."""
        if self._index is None:
            from eoembed.index import build_index

            t0 = _time.perf_counter()
            self._index = build_index(self.emb, **self._index_kwargs)
            self.timings["index_build"] = _time.perf_counter() - t0
        return self._index

    def set_mode(self, mode: str) -> None:
        """What a map click does: ``"search"`` or ``"label"`` (same as the panel toggle)."""
        if mode not in ("search", "label"):
            raise ParameterError(f"mode must be 'search' or 'label', got {mode!r}.")
        self._mode_w.value = mode  # observer sets self.mode

    def click(self, x: float, y: float, crs: Any = None, negative: bool = False, refine: bool = False):
        """Search from a map location — what a click does in search mode.

        Parameters
        ----------
        x, y:
            Location in ``crs`` (default the embedding cube's CRS; ``"EPSG:4326"`` for
            lon/lat).
        negative:
            Add the location as a negative example to the current query (refinement;
            needs a positive first).
        refine:
            Add the location as another positive example instead of starting a new query.

        Returns
        -------
        geopandas.GeoDataFrame
            The top-``k`` hits (also ``ex.hits``), equal to ``ex.index.search(...)`` for
            the same query. Updates the similarity layer, its colour bar, the hit and
            query markers and the highlighted point in the scatter.
        """
        t0 = _time.perf_counter()
        px, py = self._to_emb_crs(x, y, crs)
        self._check_inside(px, py, QueryError, "search")
        if negative:
            if not self._positives:
                raise QueryError("A negative example refines a query; click a positive location first.")
            self._negatives.append((px, py))
        elif refine and self._positives:
            self._positives.append((px, py))
        else:
            self._positives, self._negatives = [(px, py)], []
        if len(self._positives) == 1 and not self._negatives:
            query: dict[str, Any] = {"point": self._positives[0]}
        else:
            query = {"positives": list(self._positives), "negatives": list(self._negatives)}
        if self._time is not None:
            query["time"] = self._time
        idx = self.index
        t1 = _time.perf_counter()
        hits = idx.search(k=self.k, **query)
        ov_sim = idx.similarity_map(self._ov, **query)
        self.timings["click_search"] = _time.perf_counter() - t1
        self._query = query
        self._similarity = ov_sim if self._stride == 1 else None
        self.hits = hits
        self._show_similarity(self._display_2d(ov_sim))
        self._show_hits()
        self._highlight_query_in_scatter()
        self._status(f"Top {len(hits)} of {idx.ntotal} patches; best score {float(hits['score'].iloc[0]):.3f}.")
        self.timings["click"] = _time.perf_counter() - t0
        return hits

    @property
    def similarity(self) -> xr.DataArray | None:
        """Cosine similarity of the current query on the embedding grid (lazy for dask cubes)."""
        if self._query is None:
            return None
        if self._similarity is None:
            self._similarity = self.index.similarity_map(**self._query)
        return self._similarity

    def clear(self) -> None:
        """Forget the query: remove the similarity layer, hits and query markers."""
        self._positives, self._negatives = [], []
        self._query, self._similarity, self.hits = None, None, None
        self._remove_layer("similarity")
        self._hits_group.data = _fc([])
        self._colorbar_w.value = ""
        self._hits_w.value = ""
        if self.scatter is not None:
            self._sc_query.x, self._sc_query.y = [], []
        self._status("Cleared.")

    @property
    def labels(self):
        """Labelled points as a GeoDataFrame (``class``, geometry in the embedding CRS)."""
        return self._labels.copy()

    def label(self, x: float, y: float, cls: str, crs: Any = None):
        """Label the patch at a location with a class — what a click does in label mode.

        Autosaves to the ``labels=`` path if one was given. Returns ``ex.labels``.
        """
        import geopandas as gpd
        import pandas as pd
        from shapely.geometry import Point

        cls = str(cls).strip()
        if not cls:
            raise LabelError("The class name is empty; type a class name in the panel (or pass cls='water').")
        px, py = self._to_emb_crs(x, y, crs)
        self._check_inside(px, py, LabelError, "label")
        row = gpd.GeoDataFrame({"class": [cls]}, geometry=[Point(px, py)], crs=self.crs)
        self._labels = gpd.GeoDataFrame(pd.concat([self._labels, row], ignore_index=True), crs=self.crs)
        self._draw_labels()
        if self.labels_path:
            self.save_labels(self.labels_path)
        counts = self._labels["class"].value_counts()
        self._status("Labels: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        return self.labels

    def clear_labels(self) -> None:
        """Remove every label (and the autosave file's content, if a path was given)."""
        self._labels = self._empty_labels()
        self._draw_labels()
        if self.labels_path:
            self.save_labels(self.labels_path)

    def save_labels(self, path: str | os.PathLike) -> str:
        """Write the labels as GeoJSON (lon/lat); ``explore(..., labels=path)`` reads them back."""
        path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        tmp = path + ".tmp"
        self._labels.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON")
        os.replace(tmp, path)
        return path

    def train(self):
        """Fit a few-shot classifier on the labels, add class and probability layers, show spatial CV.

        Returns the :class:`~eoembed.classify.FewShotClassifier` (also ``ex.classifier``).
        When spatial cross-validation is impossible (e.g. all labels in one block) the
        classifier and layers are still produced and the panel says why CV is missing.
        """
        from eoembed.classify import fewshot

        if len(self._labels) == 0:
            raise LabelError("No labels yet: switch to Label mode and click examples of two or more classes.")
        clf = fewshot(self.emb, self._labels, class_column="class", **self._fewshot_kwargs)
        self.classifier = clf
        pm = clf.predict_map(self._ov)
        names = [str(c) for c in clf.classes_]
        codes = [int(v) for v in pm["class"].attrs["flag_values"]]
        colors = [self._class_color(n) for n in names]
        cls2d = self._display_2d(pm["class"]).compute()
        from eoembed.viz import categorical_indexed, colormap_indexed

        conf = pm["probability"].max("label").compute()
        conf.name = "confidence"
        self._put_raster("probability", conf, *colormap_indexed(conf.values, 0.0, 1.0, "magma"))
        self._put_raster("class", cls2d, *categorical_indexed(cls2d.values, codes, colors))  # on top
        self._set_legend(names, colors)
        try:
            with warnings.catch_warnings():  # fewer folds than asked: the report's notes say so, in the panel
                warnings.simplefilter("ignore", UserWarning)
                self.cv_report = clf.cv_report()
            self._report_w.value = _report_html(self.cv_report)
            self._status(f"Trained on {len(clf.y)} patches; spatial-CV balanced accuracy "
                         f"{self.cv_report.balanced_accuracy:.3f}.")
        except LabelError as err:
            self.cv_report = None
            self._report_w.value = f"<b>No spatial CV</b>: {_esc(str(err))}"
            self._status(f"Trained on {len(clf.y)} patches (no spatial CV: {err})")
        return clf

    def select(self, indices) -> Any:
        """Select scatter points by position (what a brush/lasso does) and highlight their patches.

        Returns the selected patches (``ex.selected``).
        """
        if self.scatter is None:
            raise ParameterError("This explorer has no embedding scatter (scatter=None).")
        self._sc.selected = np.asarray(indices, dtype=int) if len(indices) else None
        return self.selected

    @property
    def selected(self):
        """GeoDataFrame (row, col, x, y, geometry) of the patches selected in the scatter."""
        import geopandas as gpd

        sel = [] if self.scatter is None or self._sc.selected is None else list(self._sc.selected)
        r = self._sc_rows[sel] if sel else np.zeros(0, int)
        c = self._sc_cols[sel] if sel else np.zeros(0, int)
        x = self.emb["x"].values[c]
        y = self.emb["y"].values[r]
        return gpd.GeoDataFrame({"row": r, "col": c, "x": x, "y": y},
                                geometry=gpd.points_from_xy(x, y), crs=self.crs)

    # ------------------------------------------------------------------------------------
    # callbacks
    # ------------------------------------------------------------------------------------
    def _guarded(self, fn):
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # shown and logged, never silent, widget survives
                self.last_error = err
                log.exception("eoembed explorer: %s failed", getattr(fn, "__name__", "callback"))
                self._status(f"{type(err).__name__}: {err}", error=True)
                return None

        return run

    def _on_map_interaction(self, **event) -> None:
        if event.get("type") != "click":
            return
        lat, lon = event["coordinates"][:2]
        if self.mode == "label":
            self.label(lon, lat, self._class_w.value, crs="EPSG:4326")
        else:
            how = self._query_w.value
            self.click(lon, lat, crs="EPSG:4326", negative=how == "negative", refine=how == "positive")

    def _on_mode(self, change) -> None:
        self.mode = change["new"]
        self._status("Click the map to " + ("label the patch with the class below." if self.mode == "label"
                                            else "search for similar patches."))

    def _on_layer_pick(self, change) -> None:
        layer = self.layers.get(change["new"])
        if layer is not None:
            self._opacity_w.value = layer.opacity

    def _on_opacity(self, change) -> None:
        layer = self.layers.get(self._layer_w.value)
        if layer is not None:
            layer.opacity = float(change["new"])

    def _save_clicked(self) -> None:
        path = self.labels_path or "labels.geojson"
        self.save_labels(path)
        self._status(f"Saved {len(self._labels)} labels to {path}.")

    # ------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------
    def _status(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self._status_w.value = f"<div style='color:{colour};font-size:12px'>{_esc(text)}</div>"

    def _fit_zoom(self) -> int:
        x0, y0, x1, y1 = self._warp.mercator_bounds
        span = max(x1 - x0, y1 - y0, 1.0)
        return int(max(1, min(18, np.floor(np.log2(40_075_016.7 * 2.4 / span)))))

    def _to_emb_crs(self, x, y, crs) -> tuple[float, float]:
        if crs is None:
            return float(x), float(y)
        xx, yy = to_crs_xy([x], [y], crs, self.crs)
        return float(xx[0]), float(yy[0])

    def _check_inside(self, x: float, y: float, err, what: str) -> None:
        a, _, c, _, e, f = self._transform
        ny, nx = self._shape
        col, row = (x - c) / a, (y - f) / e
        if not (0 <= col < nx and 0 <= row < ny):
            x0, x1 = sorted((c, c + a * nx))
            y0, y1 = sorted((f, f + e * ny))
            raise err(f"Cannot {what} at ({x:.1f}, {y:.1f}): outside the embedding cube "
                      f"(x {x0:.0f}…{x1:.0f}, y {y0:.0f}…{y1:.0f} in {self.crs.to_string()}). "
                      "Click inside the coloured layers.")

    def _display_2d(self, da: xr.DataArray) -> xr.DataArray:
        if "time" in da.dims:
            if self._time is None:
                return da.mean("time")
            if isinstance(self._time, (int, np.integer)):  # a position, as in index.search(time=)
                return da.isel(time=int(self._time))
            return da.sel(time=self._time)
        return da

    def _put_raster(self, name: str, data: xr.DataArray, image: np.ndarray, palette: np.ndarray | None = None,
                    warp=None) -> None:
        """Warp an image on a source grid to Mercator and add/update the ``name`` overlay.

        ``image`` is RGBA ``(y, x, 4)`` or palette indices ``(y, x)`` with ``palette``.
        """
        import ipyleaflet

        from eoembed.viz import png_data_url

        warp = warp or self._warp
        url = png_data_url(warp.apply(image), palette)
        self.layer_data[name] = data
        layer = self.layers.get(name)
        if layer is None:
            layer = ipyleaflet.ImageOverlay(url=url, bounds=[list(warp.bounds[0]), list(warp.bounds[1])],
                                            name=name)
            self.layers[name] = layer
            # rasters go below the marker groups
            groups = [g for g in (self._hits_group, self._labels_group) if g in self.map.layers]
            for g in groups:
                self.map.remove(g)
            self.map.add(layer)
            for g in groups:
                self.map.add(g)
            self._refresh_layer_list()
        else:
            layer.url = url

    def _remove_layer(self, name: str) -> None:
        layer = self.layers.pop(name, None)
        self.layer_data.pop(name, None)
        if layer is not None and layer in self.map.layers:
            self.map.remove(layer)
            self._refresh_layer_list()

    def _refresh_layer_list(self) -> None:
        if hasattr(self, "_layer_w"):
            names = list(self.layers)
            self._layer_w.options = names
            if names and self._layer_w.value not in names:
                self._layer_w.value = names[-1]

    def _add_true_colour(self, cube: xr.DataArray) -> None:
        from eoembed.viz import MercatorWarp, rgb_to_rgba, robust_stretch

        if not isinstance(cube, xr.DataArray) or "band" not in cube.dims:
            raise ParameterError("cube= must be the input DataArray with a 'band' dimension (or None).")
        if cube.rio.crs is None:
            raise ParameterError("cube= has no CRS; write one with cube.rio.write_crs(...).")
        from eoembed.validate import check_spacing

        check_spacing(cube)  # the same grid rule as embed(): a stitched cube would be drawn misplaced
        self._warn_if_apart(cube)
        bands = _true_colour_bands(cube)
        ny, nx = cube.sizes["y"], cube.sizes["x"]
        s = max(1, int(np.ceil(max(ny, nx) / self.max_pixels)))
        sub = cube.sel(band=bands).isel(y=slice(None, None, s), x=slice(None, None, s))
        if "time" in sub.dims:
            sub = sub.median("time", skipna=True)  # the cube's own times need not match the embedding's
        sub = sub.transpose("band", "y", "x").astype("float32").compute()
        tr = cube.rio.transform()
        from affine import Affine

        tr_ov = Affine(tr.a * s, tr.b, tr.c, tr.d, tr.e * s, tr.f)
        warp = MercatorWarp.from_grid(cube.rio.crs, tr_ov, sub.shape[-2:], max_pixels=self.max_pixels)
        rgb = robust_stretch(sub.values, (2, 98))
        self._put_raster("true colour", sub, rgb_to_rgba(rgb), warp=warp)

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
        from eoembed.reduce import fit_pca
        from eoembed.viz import rgb_to_rgba

        self._proj = fit_pca(self._ov, 3, sample=20_000)
        ov = self._display_2d(self._ov) if "time" in self._ov.dims else self._ov
        rgb = _pca_rgb_2d(self._proj, ov)
        self._put_raster("PCA-RGB", rgb, rgb_to_rgba(rgb.values))

    def _show_similarity(self, sim2d: xr.DataArray) -> None:
        from eoembed.viz import colorbar_html, colormap_indexed

        v = sim2d.values
        step = max(1, v.size // 100_000)
        s = v.ravel()[::step]
        s = s[np.isfinite(s)]
        vmin, vmax = (float(np.percentile(s, 2)), float(s.max())) if len(s) else (0.0, 1.0)
        self._put_raster("similarity", sim2d, *colormap_indexed(v, vmin, vmax, self.cmap))
        self._colorbar_w.value = colorbar_html(vmin, vmax, self.cmap, "cosine similarity")

    def _show_hits(self) -> None:
        feats = []
        pts = [(x, y, "#ff00ff", 7 if i == 0 else 5) for i, (x, y) in
               enumerate(zip(self.hits["x"].to_numpy(), self.hits["y"].to_numpy()))]
        pts += [(x, y, "#00c853", 9) for x, y in self._positives] + [(x, y, "#d50000", 9) for x, y in self._negatives]
        if pts:
            lon, lat = to_crs_xy([p[0] for p in pts], [p[1] for p in pts], self.crs, "EPSG:4326")
            for (_, _, col, rad), lo, la in zip(pts, lon, lat):
                feats.append(_point(lo, la, {"fillColor": col, "radius": rad,
                                             "color": "#000000" if rad == 9 else "#ffffff"}))
        self._hits_group.data = _fc(feats)
        rows = "".join(f"<tr><td>{r.rank}</td><td>{r.score:.3f}</td><td>{r.x:.0f}</td><td>{r.y:.0f}</td></tr>"
                       for r in self.hits.head(5).itertuples())
        self._hits_w.value = ("<table style='font-size:11px'><tr><th>rank</th><th>score</th><th>x</th>"
                              f"<th>y</th></tr>{rows}</table>")

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

    def _set_legend(self, names: list[str], colors: list[str]) -> None:
        import ipyleaflet

        from eoembed.viz import legend_html

        self._legend_w.value = legend_html(names, colors, "class map")
        legend = dict(zip(names, colors))
        if self._legend is None:
            self._legend = ipyleaflet.LegendControl(legend, title="class", position="bottomright")
            self.map.add(self._legend)
        else:
            self._legend.legend = legend

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

    # ---- embedding scatter ------------------------------------------------------------------
    def _build_scatter(self, kind: str, n: int) -> None:
        import bqplot as bq
        import ipywidgets as w

        ov = self._display_2d(self._ov) if "time" in self._ov.dims else self._ov
        arr = np.asarray(ov.values)  # (embedding, y, x), in memory already
        ny, nx = arr.shape[1:]
        rng = np.random.default_rng(0)
        # draw candidates, keep valid ones (finite, not all-zero): no pass over the whole cube
        cand = np.unique(rng.choice(ny * nx, size=min(ny * nx, 3 * n), replace=False))
        rr, cc = np.divmod(cand, nx)
        v = arr[:, rr, cc].T.astype(np.float32)
        ok = np.isfinite(v).all(axis=1) & (np.abs(np.nan_to_num(v)).sum(axis=1) > 0)
        keep = np.sort(rng.permutation(np.flatnonzero(ok))[:n])
        rr, cc, v = rr[keep], cc[keep], v[keep]
        if kind == "pca":
            self._scatter_proj = self._proj
        elif kind == "umap":
            from eoembed.reduce import fit_umap

            self._scatter_proj = fit_umap(self._ov, 2, sample=n)
        else:
            raise ParameterError(f"scatter must be 'pca', 'umap' or None, got {kind!r}.")
        xy = self._scatter_proj.func(v)[:, :2]
        self._sc_rows, self._sc_cols = rr * self._stride, cc * self._stride
        rgb = self._display_2d(self.layer_data["PCA-RGB"]).transpose("y", "x", "band").values[rr, cc]
        colors = ["#%02x%02x%02x" % tuple((np.nan_to_num(c) * 255).astype(int)) for c in rgb]
        xs, ys = bq.LinearScale(), bq.LinearScale()
        self._sc = bq.Scatter(x=xy[:, 0], y=xy[:, 1], scales={"x": xs, "y": ys}, colors=colors,
                              default_size=12, stroke=None, unselected_style={"opacity": 0.25},
                              selected_style={"stroke": "black", "stroke-width": 1})
        self._sc_query = bq.Scatter(x=[], y=[], scales={"x": xs, "y": ys}, colors=["#ff00ff"], marker="diamond",
                                    default_size=120, stroke="black")
        self._brush = bq.interacts.BrushSelector(x_scale=xs, y_scale=ys, marks=[self._sc], color="orange")
        self._lasso = bq.interacts.LassoSelector(marks=[self._sc])
        ax = [bq.Axis(scale=xs, label=f"{kind.upper()} 1"), bq.Axis(scale=ys, side="left",
                                                                     label=f"{kind.upper()} 2")]
        self.scatter = bq.Figure(marks=[self._sc, self._sc_query], axes=ax, interaction=self._brush,
                                 layout=w.Layout(width="440px", height="300px"),
                                 fig_margin={"top": 10, "bottom": 40, "left": 50, "right": 10})
        tool = w.ToggleButtons(options=["brush", "lasso"], value="brush", description="Select",
                               style={"button_width": "60px"})
        tool.observe(self._guarded(lambda ch: setattr(
            self.scatter, "interaction", self._brush if ch["new"] == "brush" else self._lasso)), "value")
        self._sc.observe(self._guarded(self._on_scatter_select), "selected")
        self.scatter_box = w.VBox([w.HTML(f"<b>Embedding view</b> ({kind.upper()}, {len(rr)} patches)"),
                                   tool, self.scatter])

    def _on_scatter_select(self, change) -> None:
        from eoembed.viz import rgb_to_rgba

        sel = change["new"]
        if sel is None or len(sel) == 0:
            self._remove_layer("selection")
            return
        mask = np.full(self._ov.shape[-2:], np.nan, np.float32)
        mask[self._sc_rows[sel] // self._stride, self._sc_cols[sel] // self._stride] = 1.0
        rgb = np.stack([mask, mask, np.where(np.isfinite(mask), 0.0, np.nan)])
        data = xr.DataArray(mask, dims=("y", "x"), coords={"y": self._ov["y"], "x": self._ov["x"]}, name="selection")
        self._put_raster("selection", data, rgb_to_rgba(rgb))
        self._status(f"{len(sel)} patches selected in the embedding view (yellow on the map).")

    def _highlight_query_in_scatter(self) -> None:
        if self.scatter is None:
            return
        v = self.index.query_vector(**self._query)[0] if "positives" in (self._query or {}) else None
        if v is None:
            px, py = self._positives[0]
            a, _, c, _, e, f = self._transform
            r, col = int((py - f) // e), int((px - c) // a)
            sub = self.emb.isel(y=r, x=col)
            if "time" in sub.dims:
                sub = sub.mean("time")
            v = np.asarray(sub.values, dtype=np.float32)
        if np.isfinite(v).all():
            xy = self._scatter_proj.func(v[None, :].astype(np.float32))[0]
            self._sc_query.x, self._sc_query.y = [float(xy[0])], [float(xy[1])]


def _pca_rgb_2d(proj, ov: xr.DataArray) -> xr.DataArray:
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


def _fc(features: list) -> dict:
    return {"type": "FeatureCollection", "features": features}


def _point(lon: float, lat: float, style: dict, props: dict | None = None) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]},
            "properties": {**(props or {}), "style": style}}


def _report_html(rep) -> str:
    pc = rep.per_class
    rows = "".join(f"<tr><td>{_esc(str(c))}</td><td>{r.precision:.2f}</td><td>{r.recall:.2f}</td>"
                   f"<td>{r.f1:.2f}</td><td>{int(r.support)}</td></tr>" for c, r in pc.iterrows())
    how = (f"spatial-block CV, {rep.n_splits} folds over {rep.n_blocks} blocks of {rep.block_size:g} m"
           if rep.spatial else f"random {rep.n_splits}-fold CV")
    notes = "".join(f"<div style='color:#666'>note: {_esc(n)}</div>" for n in rep.notes)
    return (f"<div style='font-size:12px'><b>balanced accuracy {rep.balanced_accuracy:.3f}</b> "
            f"(accuracy {rep.accuracy:.3f}; {rep.n_samples} patches; {how})"
            "<table><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th><th>support</th></tr>"
            f"{rows}</table>{notes}</div>")


def explore(emb: xr.DataArray, cube: xr.DataArray | None = None, *, basemap: Any = None, k: int = 20,
            labels: Any = None, **kwargs: Any) -> Explorer:
    """Open the interactive map explorer on an embedding cube.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` (numpy or dask; only an overview of
        at most ``max_pixels`` per side is read for display).
    cube:
        The input cube (``band`` dim with B04/B03/B02 or red/green/blue); adds a
        true-colour layer (2–98 % per-band stretch; median over time).
    basemap:
        ``None`` (default: blank, offline, no API key), ``"osm"``, ``"esri"``, an
        xyzservices ``TileProvider`` or an ``ipyleaflet.TileLayer``.
    k:
        Number of hits per search.
    labels:
        A GeoDataFrame with a ``class`` column, or a path (GeoJSON): loaded if it
        exists, and every new label is autosaved there.
    **kwargs:
        ``index=`` (a prebuilt :class:`~eoembed.index.EmbeddingIndex`),
        ``index_kwargs=`` (for :func:`~eoembed.index.build_index`), ``fewshot_kwargs=``
        (for :func:`~eoembed.classify.fewshot`), ``max_pixels=1024``,
        ``scatter="pca" | "umap" | None``, ``scatter_sample=2000``, ``cmap="viridis"``,
        ``time=`` (timestep shown and searched for cubes with time), ``height="560px"``.

    Returns
    -------
    Explorer
        An ipywidgets widget; display it, then click. Its methods ``click``, ``label``,
        ``train``, ``clear`` and ``select`` do what the clicks do.

    Raises
    ------
    MissingOptionalDependency
        The ``viz`` extra is not installed (``pip install 'eoembed[viz]'``).
    """
    _require_viz()
    return Explorer(emb, cube, basemap=basemap, k=k, labels=labels, **kwargs)
