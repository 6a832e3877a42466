"""The :class:`Explorer` widget users get: an ``HBox`` of the view's map and panel over an
:class:`~eoembed.explore.state.ExplorerState`.

Each public method runs the state's method of the same name (docstring included) and
then re-renders the view, so ``ex.click(x, y)`` in a notebook and a click on the map run
the same code; the attributes read the state (``ex.hits``, ``ex.labels``, …) or the view
(``ex.map``, ``ex.layers``, ``ex.panel``).
"""

from __future__ import annotations

import functools
import time as _time
from typing import Any

import ipywidgets as w
import xarray as xr

from eoembed.exceptions import ParameterError
from eoembed.explore.state import ExplorerState
from eoembed.explore.view import ExplorerView

__all__ = ["Explorer"]


def _action(name: str):
    """The state's method ``name``, then a re-render of the view (errors still raise)."""
    fn = getattr(ExplorerState, name)

    @functools.wraps(fn)
    def method(self, *args: Any, **kwargs: Any):
        try:
            return getattr(self.state, name)(*args, **kwargs)
        finally:
            self.view.sync()

    return method


def _state_attr(name: str, doc: str | None = None) -> property:
    attr = getattr(ExplorerState, name, None)
    return property(lambda self: getattr(self.state, name), doc=doc or getattr(attr, "__doc__", None))


class Explorer(w.HBox):
    """An interactive map of an embedding cube: search by clicking or drawing, label, train, inspect.

    Create with :func:`~eoembed.explore.explore` (``emb.eo.explore(cube)``); display it as the
    last expression of a cell or with ``display(ex)``.

    Attributes
    ----------
    state: the widget-free :class:`~eoembed.explore.state.ExplorerState` (all data and actions).
    view: the :class:`~eoembed.explore.view.ExplorerView` that renders it. emb: the cube.
    map: the ``leafmap.Map`` (or the ``m=`` given). panel: the side panel. scatter: the
    bqplot ``Figure`` of the embedding view (None with ``scatter=None``). mode: what a map
    click does. hits, labels, classifier, cv_report, threshold, matches, similarity, time,
    trajectory_data, clusters, change_result, regression: the state's. layers: name →
    ipyleaflet layer on the map (keys stay ``"PCA-RGB"``…; the map shows time layers with
    their date). layer_data: name → the DataArray each layer was drawn from. draw_control:
    the polygon tool. last_error: the last exception raised in a widget callback.
    """

    def __init__(self, emb: xr.DataArray, cube: xr.DataArray | None = None, *, basemap: Any = None,
                 k: int = 20, labels: Any = None, index: Any = None, index_kwargs: dict | None = None,
                 fewshot_kwargs: dict | None = None, max_pixels: int = 1024, scatter: str | None = "pca",
                 scatter_sample: int = 2000, cmap: str = "viridis", time: Any = None,
                 height: str = "560px", m: Any = None, session: Any = None, pyramid: Any = None) -> None:
        import ipyleaflet

        from eoembed.explore._deps import _require_viz

        _require_viz()
        t0 = _time.perf_counter()
        if m is not None and not isinstance(m, ipyleaflet.Map):
            raise ParameterError(f"m= must be a leafmap.Map or ipyleaflet.Map, got {type(m).__name__}.")
        state = ExplorerState(emb, cube, k=k, labels=labels, index=index, index_kwargs=index_kwargs,
                              fewshot_kwargs=fewshot_kwargs, max_pixels=max_pixels, scatter=scatter,
                              scatter_sample=scatter_sample, cmap=cmap, time=time, pyramid=pyramid,
                              basemap=basemap)
        view = ExplorerView(self, state, m=m, height=height)
        super().__init__([view.map, view.panel])
        self.state, self.view = state, view
        if session is not None:
            self.load_session(session)
        state.timings["open"] = _time.perf_counter() - t0

    # ---- actions: the state's method, then the view re-rendered ---------------------------------------
    click = _action("click")
    query_polygon = _action("query_polygon")
    clear = _action("clear")
    set_threshold = _action("set_threshold")
    export_matches = _action("export_matches")
    label = _action("label")
    clear_labels = _action("clear_labels")
    save_labels = _action("save_labels")
    train = _action("train")
    set_mode = _action("set_mode")
    set_basemap = _action("set_basemap")
    set_layer_style = _action("set_layer_style")
    split = _action("split")
    unsplit = _action("unsplit")
    select = _action("select")
    refine_view = _action("refine_view")
    set_time = _action("set_time")
    trajectory_at = _action("trajectory_at")
    add_time_layer = _action("add_time_layer")
    split_dates = _action("split_dates")
    save_session = _action("save_session")
    load_session = _action("load_session")
    show_clusters = _action("show_clusters")
    label_cluster = _action("label_cluster")
    show_change = _action("show_change")
    regress = _action("regress")

    def gallery(self, k: int | None = None, size: int | None = None):
        """True-colour chips of the top-``k`` hits cut from the input cube (``cube=``), ``size`` input
        pixels a side (defaults: the last asked, first 8 hits and 3 patches, at least 32 px).

        Returns the panel's ``ipywidgets`` box of chips (one PNG ``Image`` per hit, captioned with
        rank and score), refreshed after every later query.
        """
        _action("gallery")(self, k, size)
        return self.view.widgets.gallery_box

    # ---- what the state holds ---------------------------------------------------------------------------
    hits = _state_attr("hits")
    similarity = _state_attr("similarity")
    threshold = _state_attr("threshold")
    matches = _state_attr("matches")
    labels = _state_attr("labels")
    classifier = _state_attr("classifier")
    cv_report = _state_attr("cv_report")
    index = _state_attr("index")
    mode = _state_attr("mode", "What a map click does: ``\"search\"`` or ``\"label\"``.")
    layer_data = _state_attr("layer_data")
    trajectory_data = _state_attr("trajectory_data", "The last trajectory (:meth:`trajectory_at`), or None.")
    clusters = _state_attr("clusters")
    change_result = _state_attr("change_result")
    regression = _state_attr("regression")
    timings = _state_attr("timings", "Seconds per step of opening, the last click, the index build.")
    emb = property(lambda self: self.state.grid.emb, doc="The embedding cube.")
    crs = property(lambda self: self.state.grid.crs, doc="The cube's CRS (``pyproj.CRS``).")
    k = property(lambda self: self.state.k, doc="Hits per search.")
    labels_path = property(lambda self: self.state.labels_.path, doc="Where labels are autosaved (None).")
    time = property(lambda self: self.state.time.label,
                    doc="The timestep shown and searched (a label of the cube's ``time``), None for the mean.")

    @property
    def selected(self):
        """GeoDataFrame (row, col, x, y, geometry) of the patches selected in the embedding view."""
        if self.state.scatter is None:
            import geopandas as gpd

            return gpd.GeoDataFrame({"row": [], "col": [], "x": [], "y": []}, geometry=[], crs=self.crs)
        return self.state.scatter.selected_patches

    # ---- what the view draws ------------------------------------------------------------------------------
    map = property(lambda self: self.view.map, doc="The ``leafmap.Map`` (or the ``m=`` given).")
    panel = property(lambda self: self.view.panel, doc="The side panel (``ipywidgets.VBox``).")
    layers = property(lambda self: self.view.layers, doc="Name → the ipyleaflet layer on the map.")
    draw_control = property(lambda self: self.view.draw_control, doc="The polygon query tool.")
    last_error = property(lambda self: self.view.last_error, doc="The last exception raised in a widget callback.")

    @property
    def scatter(self):
        """The bqplot ``Figure`` of the embedding view (None with ``scatter=None``)."""
        return None if self.view.scatter is None else self.view.scatter.figure

    # ---- kept for notebooks and benchmarks that read these ---------------------------------------------
    _report_w = property(lambda self: self.view.widgets.report_w)
    _ov = property(lambda self: self.state.grid.ov)
    _warp = property(lambda self: self.state.grid.warp)
    _index = property(lambda self: self.state.index, lambda self, idx: self.state.use_index(idx))
