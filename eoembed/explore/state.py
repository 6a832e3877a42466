"""The explorer's state, without widgets: query, labels, classifier, time, threshold, layers as data.

:class:`ExplorerState` is what ``emb.eo.explore(cube)`` computes; the view
(:mod:`eoembed.explore.view`) only renders it, and its callbacks call the same public
methods — :meth:`~ExplorerState.click`, :meth:`~ExplorerState.label`,
:meth:`~ExplorerState.train`, :meth:`~ExplorerState.set_threshold`,
:meth:`~ExplorerState.clear`, :meth:`~ExplorerState.save_session`, … — that return data
(GeoDataFrames, DataArrays, the classifier). Layers are :mod:`eoembed.explore.model`
objects (image + Web Mercator warp + colour bar / legend) in :attr:`~ExplorerState.scene`.
This module and the parts it composes import no widget library, so the state runs (and
is tested) in a plain Python process.

Parts, one job each: :class:`~eoembed.explore.display.DisplayGrid` (cube, overview,
warp, PCA), :class:`~eoembed.explore.timeline.TimeAxis`, :class:`~eoembed.explore.search.Search`,
:class:`~eoembed.explore.labelling.Labels`, :class:`~eoembed.explore.analyses.Analyses`,
:class:`~eoembed.explore.gallery.Gallery`, :class:`~eoembed.explore.scatter.ScatterData`,
sessions in :mod:`eoembed.explore.session`.
"""

from __future__ import annotations

import os
import time as _time
from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import ParameterError, QueryError
from eoembed.explore.analyses import Analyses
from eoembed.explore.display import DisplayGrid, pyramid_beside_or_warn
from eoembed.explore.gallery import Gallery
from eoembed.explore.labelling import Labels
from eoembed.explore.model import Notes, Raster, Scene, Tiles
from eoembed.explore.search import Search
from eoembed.explore.timeline import TIME_LAYERS, TimeAxis, no_time, time_label

__all__ = ["ExplorerState"]


class ExplorerState:
    """Everything the map explorer knows and does, as data (see the module notes).

    Parameters are those of :func:`eoembed.explore.explore` that are not about widgets.

    Attributes
    ----------
    grid: the :class:`~eoembed.explore.display.DisplayGrid`. time: the
    :class:`~eoembed.explore.timeline.TimeAxis`. search, labels_, analyses, gallery_,
    scatter: the parts. scene: the layers, controls and markers drawn. notes: the panel's
    texts. mode: what a map click does. basemap, basemap_name: the basemap.
    split_names, split_dates: the split map. view_bounds: the last zoomed-in view.
    trajectory_data: the last trajectory. timings: seconds per step.
    """

    #: Upper bound on the float32 vectors of the display grid (overview and zoomed-in windows): a
    #: 1024² grid of 128-d vectors is 512 MB, of 768-d ones 3 GB; the grid gets coarser instead.
    OVERVIEW_BYTES = 160 * 2**20
    #: Dask cubes with more patches than this get an out-of-core index
    #: (:func:`eoembed.index.ooc.build_index_ooc`) instead of one built in memory.
    OOC_PATCHES = 2_000_000
    #: A direct overview of a dask cube reads every chunk: above this many seconds at READ_BYTES_PER_S
    #: (2 cores, local disk; rough) the explorer says so and points at the pyramid.
    DIRECT_OVERVIEW_SECONDS, READ_BYTES_PER_S = 10.0, 150e6

    def __init__(self, emb: xr.DataArray, cube: xr.DataArray | None = None, *, k: int = 20, labels: Any = None,
                 index: Any = None, index_kwargs: dict | None = None, fewshot_kwargs: dict | None = None,
                 max_pixels: int = 1024, scatter: str | None = "pca", scatter_sample: int = 2000,
                 cmap: str = "viridis", time: Any = None, pyramid: Any = None, basemap: Any = None) -> None:
        from eoembed.explore.layers import basemap_provider, check_input_cube

        t0 = _time.perf_counter()
        if int(k) < 1:
            raise ParameterError(f"k must be >= 1, got {k}.")
        if int(max_pixels) < 16:
            raise ParameterError(f"max_pixels must be >= 16, got {max_pixels}.")
        if cube is not None:
            check_input_cube(cube)
        self.k, self.cmap = int(k), cmap
        self.timings: dict[str, float] = {}
        self._index = index
        self._index_kwargs = dict(index_kwargs or {})
        self.scene, self.notes = Scene(), Notes()
        from eoembed.io import store_of

        self.store = store_of(emb)  # the store it was opened from: the index is saved beside it
        pyramid, big_note = pyramid_beside_or_warn(emb, self.store, pyramid, read_bytes_per_s=self.READ_BYTES_PER_S,
                                                   max_seconds=self.DIRECT_OVERVIEW_SECONDS)
        self.grid = DisplayGrid(emb, max_pixels=max_pixels, max_bytes=self.OVERVIEW_BYTES, pyramid=pyramid)
        self.timings["overview"] = _time.perf_counter() - t0
        self.time = TimeAxis(self.grid.emb, time)
        self.mode = "search"
        self.basemap = basemap_provider(basemap)
        self.basemap_name = self._basemap_name(basemap)
        self.split_names: tuple[str, str] | None = None
        self.split_dates_: tuple | None = None
        self.view_bounds = None
        self.trajectory_data = None
        self.search, self.analyses, self.gallery_ = Search(self), Analyses(self), Gallery(self, cube)
        self.labels_ = Labels(self, labels, fewshot_kwargs)
        if cube is not None:
            self._draw_true_colour(cube)
        self._draw_pca()
        self.timings["layers"] = _time.perf_counter() - t0
        self.scatter = None
        if scatter:
            from eoembed.explore.scatter import ScatterData

            self.scatter = ScatterData(self, scatter, int(scatter_sample))
        self.timings["scatter"] = _time.perf_counter() - t0
        ny, nx = self.grid.shape
        self.notes.say(f"{ny}×{nx} patches ({self.grid.crs.to_string()}); overview 1/{self.grid.stride}. "
                       "Click the map to search, or draw a polygon." + big_note + self._reopen_index())

    def _reopen_index(self) -> str:
        """Load the index saved beside the store now (seconds) when valid; else what the first click costs."""
        from eoembed.index.saved import reopen

        if self._index is not None:
            return ""
        t = _time.perf_counter()
        self._index, note = reopen(self.grid.emb, self.store, ooc_patches=self.OOC_PATCHES, **self._index_kwargs)
        if self._index is not None:
            self.timings["index_load"] = _time.perf_counter() - t
        return note

    # ---- the index and the layers ------------------------------------------------------------
    @property
    def index(self):
        """The :class:`~eoembed.index.EmbeddingIndex` (built on first use, then reused; it holds the vectors).

        Dask cubes of more than :attr:`OOC_PATCHES` patches out of core; a store's is saved beside it and
        reloaded (:func:`eoembed.index.saved.store_index`); a note says what a build costs before it runs.
        """
        if self._index is None:
            from eoembed.index.saved import store_index

            t0 = _time.perf_counter()
            self._index = store_index(self.grid.emb, store=self.store, ooc_patches=self.OOC_PATCHES,
                                      say=self.notes.say, **self._index_kwargs)
            self.timings["index_build"] = _time.perf_counter() - t0
        return self._index

    def use_index(self, index) -> None:
        """Search with ``index`` (an :class:`~eoembed.index.EmbeddingIndex` of this cube) from now on."""
        self._index = index

    @property
    def layer_data(self) -> dict[str, xr.DataArray]:
        """Name → the (display-grid) DataArray each layer was drawn from."""
        return {name: lyr.data for name, lyr in self.scene.layers.items()}

    def draw(self, name: str, data: xr.DataArray, image: np.ndarray, palette: np.ndarray | None = None,
             warp=None, title: str | None = None) -> Raster:
        """Put the layer ``name`` in the scene (replacing it); time layers' titles carry the date shown."""
        if title is None:
            title = name + self.time.suffix() if name in TIME_LAYERS else name
        layer = Raster(name, title, data, image, palette, warp or self.grid.warp)
        self.scene.put(layer)
        return layer

    def remove_layer(self, name: str) -> None:
        if self.scene.remove(name) and self.split_names and name in self.split_names:
            self.unsplit()

    def _draw_true_colour(self, cube: xr.DataArray) -> None:
        from eoembed.explore.layers import true_colour
        from eoembed.validate import check_spacing

        check_spacing(cube)  # the same grid rule as embed(): a stitched cube would be drawn misplaced
        self.grid.warn_if_apart(cube)
        sub, rgba, warp = true_colour(cube, self.grid.max_pixels)
        self.draw("true colour", sub, rgba, warp=warp)

    def _draw_pca(self) -> None:
        from eoembed.explore.layers import pca_rgb_2d
        from eoembed.viz import rgb_to_rgba

        g = self.grid
        if g.pca_cog is not None:  # zoom-dependent tiles of the full-resolution view
            self.scene.put(Tiles("PCA-RGB", "PCA-RGB", pca_rgb_2d(g.proj, g.ov), g.pca_cog))
            return
        rgb = pca_rgb_2d(g.proj, self.time.flat(g.ov))
        self.draw("PCA-RGB", rgb, rgb_to_rgba(rgb.values))

    # ---- search ---------------------------------------------------------------------------------
    def click(self, x: float, y: float, crs: Any = None, negative: bool = False, refine: bool = False):
        """Search from a map location — what a click does in search mode.

        ``x, y`` in ``crs`` (default the cube's CRS; ``"EPSG:4326"`` for lon/lat);
        ``negative=True`` adds a negative example to the current query, ``refine=True``
        another positive. The location is resolved once by the index (point → patch →
        stored vector); returns the top-``k`` hits (GeoDataFrame, also ``hits``), equal to
        ``index.search(...)`` of the same query (at the timestep shown). On a cube with
        time it also computes the place's trajectory (:meth:`trajectory_at`).
        """
        hits = self.search.click(x, y, crs, negative=negative, refine=refine)
        self._after_query()
        if self.time.times is not None:  # a cube with time: the clicked place's trajectory
            self.trajectory_at(*self.search.positives[-1] if not negative else self.search.negatives[-1])
        return hits

    def query_polygon(self, polygon: Any, crs: Any = None):
        """Search with the mean vector of the patches inside a polygon — what drawing one does.

        ``polygon``: shapely (Multi)Polygon, GeoJSON geometry/Feature dict or WKT, in ``crs``
        (default the cube's). Returns the top-``k`` hits, equal to ``index.search(polygon=...)``.
        """
        hits = self.search.query_polygon(polygon, crs)
        self._after_query()
        return hits

    def _after_query(self) -> None:
        if self.scatter is not None:
            self.scatter.highlight(self.search.vector)
        if "PCA-RGB detail" in self.scene.layers or "similarity detail" in self.scene.layers:
            self.refine_view(self.view_bounds)  # the zoomed-in view gets the new similarity too
        if self.gallery_.on and self.search.hits is not None:
            self.gallery_.show()

    hits = property(lambda self: self.search.hits, doc="GeoDataFrame of the last search's hits (None before).")
    similarity = property(lambda self: self.search.similarity,
                          doc="Cosine similarity of the query on the full grid (lazy for dask cubes; None before).")
    threshold = property(lambda self: self.search.threshold, doc="The matches' similarity threshold (None: unset).")
    matches = property(lambda self: self.search.matches,
                       doc="GeoDataFrame of the patches at or above the threshold (full grid, patch squares).")

    def clear(self) -> None:
        """Forget the query: its layers, colour bar, hits, markers, highlighted point and chips."""
        self.search.clear()
        self.gallery_.clear()
        if self.scatter is not None:
            self.scatter.highlight(None)
        self.notes.say("Cleared.")

    def set_threshold(self, value: float | None) -> int:
        """Mark the patches whose similarity to the query is at least ``value`` (the ``"matches"``
        layer); ``None`` removes it. Returns the number of matching patches on the full grid."""
        return self.search.set_threshold(value)

    def export_matches(self, path: str | os.PathLike) -> str:
        """Write :attr:`matches` to ``path``: GeoJSON (``.geojson``/``.json``, lon/lat) or GeoParquet
        (``.parquet``, cube CRS). Returns the path."""
        return self.search.export_matches(path)

    # ---- labels and training --------------------------------------------------------------------
    labels = property(lambda self: self.labels_.gdf.copy(),
                      doc="Labelled points as a GeoDataFrame (``class``, geometry in the cube CRS).")
    classifier = property(lambda self: self.labels_.classifier, doc="The last trained few-shot classifier.")
    cv_report = property(lambda self: self.labels_.cv_report, doc="Its spatial-CV report (None when impossible).")

    def label(self, x: float, y: float, cls: str, crs: Any = None):
        """Label the patch at a location with class ``cls`` — what a click does in label mode.
        Autosaves to the ``labels=`` path if one was given. Returns :attr:`labels`."""
        return self.labels_.label(x, y, cls, crs)

    def clear_labels(self) -> None:
        """Remove every label (and the autosave file's content, if a path was given)."""
        self.labels_.clear()

    def save_labels(self, path: str | os.PathLike) -> str:
        """Write the labels as GeoJSON (lon/lat); ``explore(..., labels=path)`` reads them back."""
        return self.labels_.save(path)

    def train(self):
        """Fit a few-shot classifier on the labels; add class and probability layers and the CV report.

        Returns the :class:`~eoembed.classify.FewShotClassifier`. When spatial CV is impossible
        the classifier and layers are still produced and the report says why.
        """
        return self.labels_.train()

    # ---- map settings ------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """What a map click does: ``"search"`` or ``"label"``."""
        if mode not in ("search", "label"):
            raise ParameterError(f"mode must be 'search' or 'label', got {mode!r}.")
        self.mode = mode
        self.notes.say("Click the map to " + ("label the patch with the class below." if mode == "label"
                                              else "search for similar patches."))

    @staticmethod
    def _basemap_name(basemap: Any) -> str:
        name = basemap if isinstance(basemap, str) or basemap is None else getattr(basemap, "name", "custom")
        return "none" if name is None else str(name)

    def set_basemap(self, basemap: Any) -> None:
        """Show a basemap under the layers: ``None`` (blank, offline), ``"osm"``, ``"esri"``, an
        xyzservices provider name (``"OpenTopoMap"``), a provider or a ``TileLayer``."""
        from eoembed.explore.layers import basemap_provider

        self.basemap = basemap_provider(basemap)
        self.basemap_name = self._basemap_name(basemap)

    def set_layer_style(self, name: str, *, opacity: float | None = None, visible: bool | None = None) -> None:
        """Opacity (0–1) and visibility of layer ``name``."""
        if name not in self.scene.layers:
            raise ParameterError(f"No layer named {name!r}; layers are {list(self.scene.layers)}.")
        self.scene.style(name, opacity=opacity, visible=visible)

    def split(self, left: str, right: str) -> None:
        """Show two layers side by side with a draggable divider, each side labelled with its layer's name."""
        for side in (left, right):
            if side not in self.scene.layers:
                raise ParameterError(f"No layer named {side!r}; layers are {list(self.scene.layers)}.")
        self.split_names, self.split_dates_ = (left, right), None

    def unsplit(self) -> None:
        """Remove the split-map divider and its side labels (both layers stay on the map)."""
        self.split_names, self.split_dates_ = None, None

    # ---- embedding view, gallery, zoomed-in detail --------------------------------------------------
    def select(self, indices):
        """Select embedding-view points by position (what a brush/lasso does); their patches light up
        as the ``"selection"`` layer. Returns the selected patches (GeoDataFrame)."""
        from eoembed.viz import rgb_to_rgba

        if self.scatter is None:
            raise ParameterError("This explorer has no embedding scatter (scatter=None).")
        mask = self.scatter.select(indices)
        if mask is None:
            self.remove_layer("selection")
        else:
            m = mask.values
            self.draw("selection", mask, rgb_to_rgba(np.stack([m, m, np.where(np.isfinite(m), 0.0, np.nan)])))
            self.notes.say(f"{len(self.scatter.selected)} patches selected in the embedding view (yellow on the map).")
        return self.scatter.selected_patches

    def gallery(self, k: int | None = None, size: int | None = None):
        """True-colour chips (:class:`~eoembed.explore.gallery.Chip`) of the top-``k`` hits cut from the
        input cube (``cube=``), ``size`` input pixels a side; refreshed after every later query."""
        return self.gallery_.show(k, size)

    def refine_view(self, bounds=None) -> str | None:
        """Draw the view ``[[south, west], [north, east]]`` (degrees) at the finest resolution that fits.

        Adds ``"PCA-RGB detail"`` (and ``"similarity detail"`` with a query) from the finest
        source — the cube or a pyramid level — reading only that window. Returns
        ``"1/<factor>"`` of the source drawn, or None when the overview is already the finest
        that fits (the detail layers are then removed).
        """
        from eoembed.explore.detail import refine

        if bounds and len(bounds) == 2:
            self.view_bounds = bounds
        return refine(self, bounds)

    # ---- time -------------------------------------------------------------------------------------
    def set_time(self, time: Any) -> Any:
        """Show and search one timestep of a ``pool_time=False`` cube (label, date string, position;
        None: the mean of all) — what the time slider does. Redraws PCA-RGB (same projection) and
        re-runs an active query at that date. Returns the label shown (None for the mean)."""
        if self.time.times is None:
            raise no_time("There is no timestep to choose: the")
        self.time.show(time)
        self._draw_pca()
        if self.search.query is not None:
            self.search.rerun()
            self._after_query()
        elif "PCA-RGB detail" in self.scene.layers:
            self.refine_view(self.view_bounds)
        for key in TIME_LAYERS:
            self.scene.retitle(key, key + self.time.suffix())
        pos, n = self.time.pos, len(self.time.times)
        shown = "the mean of all dates" if pos is None else f"{time_label(self.time.label)} ({pos + 1} of {n})"
        self.notes.say(f"Showing {shown}.")
        return self.time.label

    def trajectory_at(self, x: float, y: float, crs: Any = None):
        """A place's path through the season (:func:`eoembed.trajectory` with the explorer's PCA):
        ``similarity_to_first``, ``pca1``, ``valid`` by time; also :attr:`trajectory_data`."""
        from eoembed.analysis.time import trajectory

        if self.time.times is None:
            raise no_time("A trajectory needs per-timestep vectors; the")
        px, py = self.grid.to_emb_crs(x, y, crs)
        self.grid.check_inside(px, py, QueryError, "show a trajectory")
        self.trajectory_data = trajectory(self.grid.emb, (px, py), fitted=self.grid.proj)
        return self.trajectory_data

    def add_time_layer(self, time: Any) -> str:
        """Add the PCA-RGB layer of one timestep (same projection as ``"PCA-RGB"``); returns its name."""
        from eoembed.explore.layers import pca_rgb_2d
        from eoembed.viz import rgb_to_rgba

        if self.time.times is None:
            raise ParameterError("This embedding cube has no time dimension; split two layers instead.")
        label, pos = self.time.resolve(time)
        name = f"PCA-RGB {time_label(label)}"
        rgb = pca_rgb_2d(self.grid.proj, self.time.flat(self.grid.ov, pos))
        self.draw(name, rgb, rgb_to_rgba(rgb.values))
        return name

    def split_dates(self, time_a: Any, time_b: Any) -> tuple[str, str]:
        """Two timesteps' PCA-RGB layers side by side (split map); returns their layer names."""
        a, b = self.add_time_layer(time_a), self.add_time_layer(time_b)
        if a == b:
            raise ParameterError(f"time_a and time_b are the same timestep ({a[len('PCA-RGB '):]}); "
                                 "pick two different dates.")
        self.split(a, b)
        self.split_dates_ = (self.time.resolve(time_a)[0], self.time.resolve(time_b)[0])
        return a, b

    # ---- sessions and analyses --------------------------------------------------------------------
    def save_session(self, path: str | os.PathLike) -> str:
        """Write labels, query, threshold, layer styles, basemap, split, date shown and whether a
        classifier was trained to JSON; :meth:`load_session` restores it on the same cube."""
        from eoembed.explore.session import save_session

        return save_session(self, path)

    def load_session(self, path: str | os.PathLike) -> None:
        """Restore a session written by :meth:`save_session` (replaces labels and query)."""
        from eoembed.explore.session import load_session

        load_session(self, path)

    def show_clusters(self, k: int | None = None, **cluster_kwargs: Any):
        """Cluster the embeddings (:func:`eoembed.cluster`; the date shown or the mean view) and add a
        ``"clusters"`` layer with a legend. Returns (and keeps as ``clusters``) the cluster map."""
        return self.analyses.show_clusters(k, **cluster_kwargs)

    def label_cluster(self, cluster_id: int, cls: str, *, max_patches: int = 50, seed: int = 0):
        """Label up to ``max_patches`` random patches of cluster ``cluster_id`` as ``cls``; returns :attr:`labels`."""
        return self.labels_.label_cluster(self.analyses.clusters, cluster_id, cls, max_patches=max_patches,
                                          seed=seed)

    def show_change(self, other: Any = None, *, time: Any = None, threshold: Any = "otsu"):
        """Cosine distance to ``other`` (or between two timesteps) as a ``"change"`` layer (:func:`eoembed.change`)."""
        return self.analyses.show_change(other, time=time, threshold=threshold)

    def regress(self, targets: Any, *, value: str = "value", estimator: Any = "ridge", **kwargs: Any):
        """Fit :func:`eoembed.regress` (the date shown unless ``time=``) and draw its prediction and,
        for kNN/GP, uncertainty; the CV summary goes to the report. Returns the result."""
        return self.analyses.regress(targets, value=value, estimator=estimator, **kwargs)

    clusters = property(lambda self: self.analyses.clusters, doc="The last :meth:`show_clusters` map.")
    change_result = property(lambda self: self.analyses.change_result, doc="The last :meth:`show_change` result.")
    regression = property(lambda self: self.analyses.regression, doc="The last :meth:`regress` result.")
