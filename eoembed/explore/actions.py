"""What the explorer's public methods do: search, polygon queries, labels, training,
threshold and export, split map, hit gallery, sessions.

Every user action in the widget calls one of these methods, so notebooks and tests
drive exactly what a click, a drawn polygon or a slider does. Called directly they
raise typed errors; from a widget callback the error is shown in the panel instead.
"""

from __future__ import annotations

import json
import math
import os
import time as _time
import warnings
from html import escape as _esc
from typing import Any

import numpy as np
import xarray as xr

from eoembed.cube import to_crs_geom, to_crs_xy
from eoembed.exceptions import LabelError, ParameterError, QueryError

SESSION_VERSION = 1


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


class ActionsMixin:
    """The public methods of :class:`~eoembed.explore.Explorer` (mixed into it)."""

    # ---- search ----------------------------------------------------------------------------------
    #: Dask cubes with more patches than this get an out-of-core index
    #: (:func:`eoembed.index.ooc.build_index_ooc`) instead of one built in memory.
    OOC_PATCHES = 2_000_000

    @property
    def index(self):
        """The :class:`~eoembed.index.EmbeddingIndex` (built on first use, then reused).

        Dask cubes of more than :attr:`OOC_PATCHES` patches are indexed out of core
        (IVF trained on a sample, filled chunk by chunk); ``index_kwargs=`` goes to the
        builder used.
        """
        if self._index is None:
            from eoembed.index import build_index
            from eoembed.index.ooc import build_index_ooc

            t0 = _time.perf_counter()
            n = int(np.prod([self.emb.sizes[d] for d in self.emb.dims if d != "embedding"]))
            big = self.emb.chunks is not None and n > self.OOC_PATCHES
            self._index = (build_index_ooc if big else build_index)(self.emb, **self._index_kwargs)
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
            the same query (at the timestep shown, ``ex.time``, when one is chosen).
            Updates the similarity layer, its colour bar, the hit and query markers and
            the highlighted point in the scatter; on a cube with time it also plots the
            clicked place's trajectory (:meth:`trajectory_at`).
        """
        px, py = self._to_emb_crs(x, y, crs)
        self._check_inside(px, py, QueryError, "search")
        if negative:
            if not self._positives:
                raise QueryError("A negative example refines a query; click a positive location first.")
            self._negatives.append((px, py))
        elif refine and self._positives:
            self._positives.append((px, py))
        else:
            self._positives, self._negatives, self._polygon = [(px, py)], [], None
        if self._polygon is not None:
            query: dict[str, Any] = {"positives": [self._polygon, *self._positives[1:]],
                                     "negatives": list(self._negatives)}
        elif len(self._positives) == 1 and not self._negatives:
            query = {"point": self._positives[0]}
        else:
            query = {"positives": list(self._positives), "negatives": list(self._negatives)}
        hits = self._run_query(query)
        if self._times is not None:  # a cube with time: the clicked place's trajectory in the panel
            self.trajectory_at(px, py)
        return hits

    def query_polygon(self, polygon: Any, crs: Any = None):
        """Search with the mean vector of the patches inside a polygon — what drawing one does.

        Parameters
        ----------
        polygon:
            A shapely Polygon/MultiPolygon, a GeoJSON geometry or Feature dict, or WKT.
        crs:
            Its CRS (default the embedding cube's; ``"EPSG:4326"`` for what the draw
            control sends).

        Returns
        -------
        geopandas.GeoDataFrame
            The top-``k`` hits, equal to ``ex.index.search(polygon=..., k=k)``.
        """
        import shapely
        from shapely.geometry import shape

        if isinstance(polygon, dict):
            polygon = shape(polygon.get("geometry", polygon))
        elif isinstance(polygon, str):
            polygon = shapely.from_wkt(polygon)
        if not isinstance(polygon, (shapely.Polygon, shapely.MultiPolygon)):
            raise QueryError(f"A polygon query needs a Polygon or MultiPolygon, got {type(polygon).__name__}.")
        g = to_crs_geom(polygon, crs, self.crs) if crs is not None else polygon
        ex0, ey0, ex1, ey1 = self._extent()
        if not g.intersects(shapely.box(ex0, ey0, ex1, ey1)):
            raise QueryError(f"The polygon (bounds {tuple(round(b, 1) for b in g.bounds)}) does not overlap the "
                             f"embedding cube (x {ex0:.0f}…{ex1:.0f}, y {ey0:.0f}…{ey1:.0f} in "
                             f"{self.crs.to_string()}); draw it on the coloured layers or pass its crs=.")
        c = g.representative_point()
        self._polygon, self._positives, self._negatives = g, [(c.x, c.y)], []
        return self._run_query({"polygon": g})

    def _run_query(self, query: dict):
        t0 = _time.perf_counter()
        query.pop("time", None)
        if self._time is not None:
            query["time"] = self._time
        idx = self.index
        t1 = _time.perf_counter()
        hits = idx.search(k=self.k, **query)
        ov_sim = idx.similarity_map(self._ov, **query)
        self.timings["click_search"] = _time.perf_counter() - t1
        self._query = query
        self._similarity = ov_sim if self._stride == 1 else None
        self._ov_similarity = self._display_2d(ov_sim)
        self.hits = hits
        self._show_similarity(self._ov_similarity)
        self._show_hits()
        self._highlight_query_in_scatter()
        if self.threshold is not None:
            self.set_threshold(self.threshold)
        if "PCA-RGB detail" in self.layers:
            self.refine_view(self._view_bounds)  # the zoomed-in view gets the new similarity too
        if self._gallery_on:
            self.gallery()
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
        """Forget the query: remove the similarity and matches layers, hits, query markers, gallery."""
        from eoembed.explore.layers import set_control

        self._positives, self._negatives, self._polygon = [], [], None
        self._query, self._similarity, self._ov_similarity, self.hits = None, None, None, None
        self._remove_layer("similarity")
        self._remove_layer("similarity detail")
        self._remove_layer("matches")
        self._colorbar = set_control(self.map, self._colorbar, None)
        self._hits_group.data = _fc([])
        self._hits_w.value = ""
        self._matches_w.value = ""
        self._gallery_box.children = ()
        if self.scatter is not None:
            self._sc_query.x, self._sc_query.y = [], []
        self._status("Cleared.")

    # ---- threshold and export ---------------------------------------------------------------------
    def set_threshold(self, value: float | None):
        """Mark the patches whose similarity to the current query is at least ``value``.

        Draws them as the ``"matches"`` layer (orange) and sets the slider. ``None``
        removes the layer. Returns the number of matching patches on the full grid.
        """
        if value is None:
            self.threshold = None
            self._remove_layer("matches")
            self._matches_w.value = ""
            return 0
        value = float(value)
        if not -1.0 <= value <= 1.0:
            raise ParameterError(f"The threshold is a cosine similarity in [-1, 1], got {value}.")
        self.threshold = value
        if self._threshold_w.value != value:
            with self._quiet(self._threshold_w):
                self._threshold_w.value = value
        if self._query is None:
            return 0
        from eoembed.viz import rgb_to_rgba

        s = self._ov_similarity.values
        hit = np.isfinite(s) & (s >= value)
        one = np.where(hit, 1.0, np.nan).astype(np.float32)
        rgb = np.stack([one, one * 0.55, np.where(hit, 0.0, np.nan)])
        self._put_raster("matches", self._ov_similarity.where(hit), rgb_to_rgba(rgb))
        n = int(self._match_mask().sum()) if self._stride == 1 else None
        shown = int(hit.sum())
        self._matches_w.value = (f"<div style='font-size:12px'>{shown if n is None else n} patches ≥ {value:.3f}"
                                 f"{' (overview)' if n is None else ''}</div>")
        return shown if n is None else n

    def _match_mask(self) -> xr.DataArray:
        if self._query is None:
            raise QueryError("No query yet: click the map or draw a polygon, then set the threshold.")
        if self.threshold is None:
            raise ParameterError("No threshold set: move the slider or call ex.set_threshold(0.8).")
        sim = self._display_2d(self.similarity)
        return (sim >= self.threshold).compute()

    @property
    def matches(self):
        """GeoDataFrame of the patches at or above the threshold: ``row, col, x, y, score`` and the
        patch square as geometry (embedding CRS). Computed on the full grid."""
        import geopandas as gpd
        import shapely

        mask = self._match_mask()
        rows, cols = np.nonzero(mask.values)
        sim = np.asarray(self._display_2d(self.similarity).values)
        a, _, c, _, e, f = self._transform
        x0, y0 = c + a * cols, f + e * rows
        geom = shapely.box(np.minimum(x0, x0 + a), np.minimum(y0, y0 + e), np.maximum(x0, x0 + a),
                           np.maximum(y0, y0 + e))
        order = np.argsort(-sim[rows, cols], kind="stable")
        return gpd.GeoDataFrame({"row": rows[order], "col": cols[order],
                                 "x": self.emb["x"].values[cols[order]], "y": self.emb["y"].values[rows[order]],
                                 "score": sim[rows, cols][order].astype(np.float32)},
                                geometry=np.asarray(geom)[order], crs=self.crs)

    def export_matches(self, path: str | os.PathLike) -> str:
        """Write :attr:`matches` to ``path``: GeoJSON (``.geojson``/``.json``, lon/lat as the
        format requires) or GeoParquet (``.parquet``, embedding CRS). Returns the path."""
        path = os.fspath(path)
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".geojson", ".json", ".parquet", ".geoparquet"):
            raise ParameterError(f"Cannot export matches to {path!r}: use a .geojson, .json or .parquet path.")
        gdf = self.matches
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        if ext in (".parquet", ".geoparquet"):
            gdf.to_parquet(tmp)
        else:
            gdf.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON")
        os.replace(tmp, path)
        self._status(f"Exported {len(gdf)} matches to {path}.")
        return path

    # ---- labels and training -------------------------------------------------------------------------
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
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
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
        from eoembed.explore.layers import legend_control, set_control
        from eoembed.viz import categorical_indexed, colormap_indexed

        if len(self._labels) == 0:
            raise LabelError("No labels yet: switch to Label mode and click examples of two or more classes.")
        clf = fewshot(self.emb, self._labels, class_column="class", **self._fewshot_kwargs)
        self.classifier = clf
        pm = clf.predict_map(self._ov)
        names = [str(c) for c in clf.classes_]
        codes = [int(v) for v in pm["class"].attrs["flag_values"]]
        colors = [self._class_color(n) for n in names]
        cls2d = self._display_2d(pm["class"]).compute()
        conf = pm["probability"].max("label").compute()
        conf.name = "confidence"
        self._put_raster("probability", conf, *colormap_indexed(self._display_2d(conf).values, 0.0, 1.0, "magma"))
        self._put_raster("class", cls2d, *categorical_indexed(cls2d.values, codes, colors))  # on top
        legend = dict(zip(names, colors))
        if self._legend is None:
            self._legend = set_control(self.map, None, legend_control(names, colors, "class"))
        else:
            self._legend.legend = legend
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

    # ---- map tools -----------------------------------------------------------------------------------
    def set_basemap(self, basemap: Any) -> None:
        """Show a basemap under the layers: ``None`` (blank, offline), ``"osm"``, ``"esri"``,
        an xyzservices provider name (``"OpenTopoMap"``), a provider or a ``TileLayer``."""
        from eoembed.explore.layers import basemap_layer

        layer = basemap_layer(basemap)
        if self._basemap is not None and self._basemap in self.map.layers:
            self.map.remove(self._basemap)
        self._basemap = layer
        if layer is not None:
            self.map.add(layer, index=0)
        name = basemap if isinstance(basemap, str) or basemap is None else getattr(basemap, "name", "custom")
        self._basemap_name = "none" if name is None else str(name)

    def split(self, left: str, right: str) -> None:
        """Show two layers side by side with a draggable divider (ipyleaflet ``SplitMapControl``).

        ``left``/``right`` are names in ``ex.layers`` (e.g. ``"true colour"`` and
        ``"similarity"``, or two dates with :meth:`split_dates`). Each side is labelled on
        the map with its layer's name (which carries the date for time layers).
        """
        import ipyleaflet

        for side in (left, right):
            if side not in self.layers:
                raise ParameterError(f"No layer named {side!r}; layers are {list(self.layers)}.")
        self.unsplit()
        self._split = ipyleaflet.SplitMapControl(left_layer=self.layers[left], right_layer=self.layers[right])
        self._split_names = (left, right)
        self.map.add(self._split)
        self._draw_split_labels()

    def _draw_split_labels(self) -> None:
        import ipyleaflet
        import ipywidgets as w

        for ctl in self._split_labels:
            if ctl in self.map.controls:
                self.map.remove(ctl)
        self._split_labels = []
        if not self._split_names:
            return
        style = "background:rgba(255,255,255,0.85);padding:2px 6px;font-size:12px;border-radius:3px"
        for side, name, text in zip(("bottomleft", "bottomright"), self._split_names, ("◀ {}", "{} ▶")):
            label = w.HTML(f"<div class='eoembed-split-{side[6:]}' style='{style}'>"
                           f"{_esc(text.format(self.layers[name].name))}</div>")
            ctl = ipyleaflet.WidgetControl(widget=label, position=side)
            self.map.add(ctl)
            self._split_labels.append(ctl)

    def unsplit(self) -> None:
        """Remove the split-map divider and its side labels (both layers stay on the map)."""
        if self._split is not None and self._split in self.map.controls:
            self.map.remove(self._split)
        self._split, self._split_names, self._split_dates = None, None, None
        self._draw_split_labels()

    def gallery(self, k: int | None = None, size: int | None = None):
        """True-colour chips of the top-``k`` hits cut from the input cube (``cube=``).

        Parameters
        ----------
        k:
            Number of hits shown (at most ``ex.k``; default the last one asked, first 8).
        size:
            Chip side in input-cube pixels (default the last one asked, first three
            patches and at least 32).

        Returns
        -------
        ipywidgets.Box
            The gallery (also shown in the panel and refreshed after every query):
            one ``ipywidgets.Image`` (PNG) per hit, captioned with rank and score.
        """
        import io

        import ipywidgets as w
        from PIL import Image

        from eoembed.explore.layers import true_colour_bands
        from eoembed.viz import rgb_to_rgba, robust_stretch

        if self._cube is None:
            raise ParameterError("The hit gallery cuts chips from the input cube: explore(emb, cube=...).")
        if self.hits is None:
            raise QueryError("No hits yet: click the map or draw a polygon first.")
        cube = self._cube
        tr = cube.rio.transform()
        k = int(self._gallery_k if k is None else k)
        size = self._gallery_size if size is None else int(size)
        if size is None:
            size = max(32, int(round(3 * abs(self._transform[0]) / abs(tr.a))))
        if size < 4 or k < 1:
            raise ParameterError(f"The gallery needs k >= 1 and size >= 4 pixels, got k={k}, size={size}.")
        self._gallery_k, self._gallery_size = k, size
        hits = self.hits.head(k)
        hx, hy = to_crs_xy(hits["x"].to_numpy(), hits["y"].to_numpy(), self.crs, cube.rio.crs)
        ny, nx = cube.sizes["y"], cube.sizes["x"]
        rgb = cube.sel(band=true_colour_bands(cube))
        chips = []
        for x, y in zip(hx, hy):
            col, row = ~tr @ (x, y)
            r0 = int(np.clip(np.floor(row) - size // 2, 0, max(ny - size, 0)))
            c0 = int(np.clip(np.floor(col) - size // 2, 0, max(nx - size, 0)))
            chip = rgb.isel(y=slice(r0, r0 + size), x=slice(c0, c0 + size))
            if "time" in chip.dims:
                chip = chip.median("time", skipna=True)
            chips.append(np.asarray(chip.transpose("band", "y", "x").values, dtype=np.float32))
        # one stretch for all chips, so their brightness compares
        stack = robust_stretch(np.concatenate([c.reshape(3, -1) for c in chips], axis=1)[:, None, :], (2, 98))[:, 0]
        widgets, at = [], 0
        for (r, hit), chip in zip(hits.iterrows(), chips):
            n = chip.shape[1] * chip.shape[2]
            img = rgb_to_rgba(stack[:, at:at + n].reshape(chip.shape))
            at += n
            buf = io.BytesIO()
            Image.fromarray(img, mode="RGBA").save(buf, format="PNG")
            widgets.append(w.VBox([w.Image(value=buf.getvalue(), format="png", width=96, height=96),
                                   w.HTML(f"<div style='font-size:11px'>#{hit['rank']} · {hit['score']:.3f}</div>")]))
        self._gallery_box.children = tuple(widgets)
        self._gallery_on = True
        return self._gallery_box

    # ---- zoomed-in detail -------------------------------------------------------------------------
    def refine_view(self, bounds=None) -> str | None:
        """Draw the map's current view (or ``bounds``) at the finest resolution that fits.

        The overview layers show the whole cube at ``max_pixels``; when the view covers
        less, the ``"PCA-RGB detail"`` layer (and ``"similarity detail"`` when a query is
        active) is drawn over it from the finest source that keeps the view within
        ``max_pixels`` — the full-resolution cube, or a level of ``pyramid=`` — reading
        only that window. A map pan/zoom calls this (cubes larger than ``max_pixels``).

        Parameters
        ----------
        bounds:
            ``[[south, west], [north, east]]`` in degrees (default ``ex.map.bounds``).

        Returns
        -------
        str or None
            ``"1/<factor>"`` of the source drawn, or None when the overview is already the
            finest that fits (the detail layers are then removed).
        """
        from eoembed.explore.layers import pca_rgb_2d, similarity_range, warp_for
        from eoembed.viz import colormap_indexed, rgb_to_rgba

        t0 = _time.perf_counter()
        bounds = bounds if bounds is not None else self.map.bounds
        if not bounds or len(bounds) != 2:
            return None
        (south, west), (north, east) = bounds
        self._view_bounds = bounds
        if not (south < north and west < east):
            raise ParameterError(f"bounds must be [[south, west], [north, east]] with south < north and west < east, "
                                 f"got {bounds}.")
        lon = np.array([west, east, east, west, (west + east) / 2, (west + east) / 2, west, east])
        lat = np.array([south, south, north, north, south, north, (south + north) / 2, (south + north) / 2])
        xs, ys = to_crs_xy(lon, lat, "EPSG:4326", self.crs)
        a, _, c, _, e, f = self._transform
        ny, nx = self._shape
        c0, c1 = int(np.clip(np.floor((np.min(xs) - c) / a), 0, nx)), int(np.clip(np.ceil((np.max(xs) - c) / a), 0, nx))
        r0, r1 = sorted((int(np.clip(np.floor((np.max(ys) - f) / e), 0, ny)),
                         int(np.clip(np.ceil((np.min(ys) - f) / e), 0, ny))))
        if r1 - r0 < 1 or c1 - c0 < 1:
            return None
        side = max(r1 - r0, c1 - c0)
        for factor, src in self._levels:  # finest first
            step = max(1, int(np.ceil(side / factor / self._side)))
            if factor * step < self._stride:
                break
        else:
            factor = None
        if factor is None:
            for name in ("PCA-RGB detail", "similarity detail"):
                self._remove_layer(name)
            return None
        if self._pca_cog is not None and self._query is None:  # the PCA tiles hold the detail; nothing to draw
            self._remove_layer("similarity detail")
            return None
        win = src.isel(y=slice(r0 // factor, -(-r1 // factor), step), x=slice(c0 // factor, -(-c1 // factor), step))
        if step > 1:
            from affine import Affine

            ta, tb, tc, td, te, tf = tuple(win.rio.transform())[:6]
            win = win.rio.write_transform(Affine(ta * step, tb, tc, td, te * step, tf))
        win = win.copy(data=np.asarray(win.data)) if not isinstance(win.data, np.ndarray) else win
        warp = warp_for(win, self.max_pixels)
        if self._pca_cog is None:  # with the pyramid's COG, the PCA-RGB tiles already have this detail
            rgb = pca_rgb_2d(self._proj, self._display_2d(win))
            self._put_raster("PCA-RGB detail", rgb, rgb_to_rgba(rgb.values), warp=warp)
        if self._query is not None:
            sim = self._display_2d(self.index.similarity_map(win, **self._query))
            vmin, vmax = similarity_range(self._ov_similarity.values)  # the overview's colour bar holds
            self._put_raster("similarity detail", sim, *colormap_indexed(sim.values, vmin, vmax, self.cmap), warp=warp)
        else:
            self._remove_layer("similarity detail")
        self.timings["refine_view"] = _time.perf_counter() - t0
        return f"1/{factor * step}"

    # ---- sessions -----------------------------------------------------------------------------------------
    def save_session(self, path: str | os.PathLike) -> str:
        """Write labels, the query (points, negatives, polygon), threshold, layer opacity/visibility,
        basemap, split, the timestep shown and whether a classifier was trained to a JSON file.

        ``explore(emb, cube, session=path)`` or :meth:`load_session` restores it on the
        same embedding cube. Returns the path.
        """
        import shapely

        path = os.fspath(path)
        labels = json.loads(self._labels.to_crs("EPSG:4326").to_json()) if len(self._labels) else _fc([])
        state = {
            "eoembed_session": SESSION_VERSION,
            "crs": self.crs.to_wkt(),
            "shape": list(self._shape),
            "mode": self.mode,
            "labels": labels,
            "query": None if self._query is None else {
                "positives": [list(p) for p in self._positives],
                "negatives": [list(p) for p in self._negatives],
                "polygon": None if self._polygon is None else shapely.to_wkt(self._polygon),
            },
            "threshold": self.threshold,
            "trained": self.classifier is not None,
            "layers": {n: {"opacity": float(lyr.opacity), "visible": bool(getattr(lyr, "visible", True))}
                       for n, lyr in self.layers.items()},
            "basemap": self._basemap_name,
            "split": list(self._split_names) if self._split_names and not self._split_dates else None,
            "split_dates": [str(t) for t in self._split_dates] if self._split_dates else None,
            "time": None if self._time is None else str(self._time),
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(state, fh, indent=1)
        os.replace(tmp, path)
        self._status(f"Session saved to {path}.")
        return path

    def _session_time(self, text: str | None):
        """The cube's time label whose ``str`` was saved (None stays None)."""
        if text is None:
            return None
        for t in self._times:
            if str(t) == text:
                return t
        raise ParameterError(f"The session's time {text!r} is not one of this cube's times; open it on the cube "
                             "it was saved from.")

    def load_session(self, path: str | os.PathLike) -> None:
        """Restore a session written by :meth:`save_session` (replaces labels and query)."""
        import geopandas as gpd
        from pyproj import CRS

        path = os.fspath(path)
        try:
            with open(path) as fh:
                state = json.load(fh)
        except FileNotFoundError:
            raise ParameterError(f"No session file at {path!r}; write one with ex.save_session(path).") from None
        except json.JSONDecodeError as err:
            raise ParameterError(f"{path!r} is not a session file (invalid JSON: {err}).") from None
        if not isinstance(state, dict) or state.get("eoembed_session") != SESSION_VERSION:
            raise ParameterError(f"{path!r} is not an eoembed session (version {SESSION_VERSION}); "
                                 "write one with ex.save_session(path).")
        if not CRS.from_wkt(state["crs"]).equals(self.crs) or list(state["shape"]) != list(self._shape):
            raise ParameterError(f"The session {path!r} was saved on another embedding grid "
                                 f"({state['shape']} patches); open it on the cube it was saved from.")
        feats = state["labels"]["features"]
        if feats:
            self._set_labels(gpd.GeoDataFrame.from_features(feats, crs="EPSG:4326"))
        else:
            self._labels = self._empty_labels()
            self._draw_labels()
        self.set_basemap(state.get("basemap") or None)
        if self._times is not None:
            self.set_time(self._session_time(state.get("time")))
        q = state.get("query")
        self.clear()
        if q:
            if q.get("polygon"):
                self.query_polygon(q["polygon"])
                rest = q["positives"][1:]
            else:
                rest = q["positives"]
            for i, p in enumerate(rest):
                self.click(*p, refine=bool(i) or bool(q.get("polygon")))
            for p in q["negatives"]:
                self.click(*p, negative=True)
        if state.get("trained") and len(self._labels):
            self.train()
        self.set_threshold(state.get("threshold"))
        for name, props in state.get("layers", {}).items():
            lyr = self.layers.get(name)
            if lyr is not None:
                lyr.opacity = props.get("opacity", 1.0)
                lyr.visible = props.get("visible", True)
        if state.get("split"):
            self.split(*state["split"])
        elif state.get("split_dates"):
            self.split_dates(*(self._session_time(t) for t in state["split_dates"]))
        self.set_mode(state.get("mode", "search"))
        self._status(f"Session restored from {path}.")

    # ---- analyses on the map (eoembed.analysis) ---------------------------------------
    def show_clusters(self, k: int | None = None, **cluster_kwargs: Any):
        """Cluster the embeddings (:func:`eoembed.cluster`) and add a ``"clusters"`` layer with a legend.

        ``k=None`` lets the silhouette choose (see the returned map's attrs). The map is
        kept as ``ex.clusters``; :meth:`label_cluster` turns a cluster into labels. On a
        cube with time, the timestep clustered is ``time=`` if given, else the one shown
        (``ex.time``), else — in the mean view — each patch's mean vector over time; the
        layer's name says which.
        """
        from eoembed.analysis import cluster
        from eoembed.explore.layers import legend_control, set_control
        from eoembed.explore.timeline import time_label
        from eoembed.viz import categorical_indexed, class_color

        emb = self.emb
        if "time" in emb.dims and cluster_kwargs.get("time") is None:
            if self._time is not None:  # the date shown on the map
                cluster_kwargs["time"] = self._time
            else:  # the mean view: cluster what the map shows, the mean vector of each patch over time
                cluster_kwargs.pop("time", None)
                emb = emb.mean("time", keep_attrs=True)
        cm = cluster(emb, k=k, **cluster_kwargs)
        self.clusters = cm
        ov = cm.sel(y=self._ov["y"], x=self._ov["x"]).compute()
        ids = list(range(int(cm.attrs["eoembed:cluster_k"])))  # labels 0..k-1 (no need to read the whole map)
        names = [f"cluster {i}" for i in ids]
        colors = [class_color(i) for i in ids]
        when = cluster_kwargs.get("time")
        title = "clusters" + (self._time_suffix() if when is None else f" {time_label(self._resolve_time(when)[0])}")
        self._put_raster("clusters", ov, *categorical_indexed(ov.values, ids, colors), title=title)
        self._cluster_legend = set_control(self.map, getattr(self, "_cluster_legend", None),
                                           legend_control(names, colors, "clusters", position="topright"))
        self._status(f"{len(ids)} clusters (k by {cm.attrs.get('eoembed:cluster_criterion', 'the caller')}); "
                     "label_cluster(i, name) turns one into labels.")
        return cm

    def label_cluster(self, cluster_id: int, cls: str, *, max_patches: int = 50, seed: int = 0):
        """Label up to ``max_patches`` patches of cluster ``cluster_id`` (from :meth:`show_clusters`) as ``cls``.

        The patches are drawn at random (fixed ``seed``) so they spread over the cluster;
        they become ordinary labels for :meth:`train`. Returns ``ex.labels``.
        """
        import geopandas as gpd
        import pandas as pd
        from shapely.geometry import Point

        cm = getattr(self, "clusters", None)
        if cm is None:
            raise LabelError("No clusters yet: run ex.show_clusters() first.")
        cls = str(cls).strip()
        if not cls:
            raise LabelError("The class name is empty; pass cls='water' (for example).")
        rows, cols = np.nonzero(np.asarray(cm.values) == int(cluster_id))
        if rows.size == 0:
            ids = sorted(int(v) for v in np.unique(cm.values) if v >= 0)
            raise LabelError(f"Cluster {cluster_id} has no patches; the clusters are {ids}.")
        if int(max_patches) < 1:
            raise ParameterError(f"max_patches must be >= 1, got {max_patches}.")
        pick = np.random.default_rng(seed).permutation(rows.size)[: int(max_patches)]
        xs, ys = cm["x"].values[cols[pick]], cm["y"].values[rows[pick]]
        new = gpd.GeoDataFrame({"class": [cls] * len(pick)},
                               geometry=[Point(float(a), float(b)) for a, b in zip(xs, ys)], crs=self.crs)
        self._labels = gpd.GeoDataFrame(pd.concat([self._labels, new], ignore_index=True), crs=self.crs)
        self._draw_labels()
        if self.labels_path:
            self.save_labels(self.labels_path)
        self._status(f"Cluster {cluster_id}: {len(pick)} of its {rows.size} patches labelled {cls!r}.")
        return self.labels

    def show_change(self, other: Any = None, *, time: Any = None, threshold: Any = "otsu"):
        """Cosine distance between this cube and ``other`` (or two of its timesteps) as a ``"change"`` layer.

        Calls :func:`eoembed.change` (same model and grid required) and adds the distance
        map with a colour bar; the result (threshold, most-changed patches) is kept as
        ``ex.change_result`` and returned.
        """
        from eoembed.analysis import change
        from eoembed.explore.layers import colorbar_control, set_control
        from eoembed.viz import colormap_indexed

        res = change(self.emb, other, time=time, threshold=threshold)
        self.change_result = res
        dist = res.distance.sel(y=self._ov["y"], x=self._ov["x"]).compute()
        v = dist.values
        # colour bar top rounded up to 3 decimals, so that its end label is short (as for similarity)
        vmax = math.ceil(float(np.nanmax(v)) * 1000) / 1000 if np.isfinite(v).any() else 1.0
        self._put_raster("change", dist, *colormap_indexed(v, 0.0, max(vmax, 1e-6), "inferno"))
        self._change_bar = set_control(self.map, getattr(self, "_change_bar", None),
                                       colorbar_control(0.0, max(vmax, 1e-6), "inferno", "cosine distance (change)",
                                                        position="topright"))
        self._status(f"Change: threshold {res.threshold:.3f} ({res.rule}); "
                     f"{int(res.changed.sum())} patches above it.")
        return res

    # ---- regression --------------------------------------------------------------------------------------
    def regress(self, targets: Any, *, value: str = "value", estimator: Any = "ridge", **kwargs: Any):
        """Fit :func:`eoembed.regress` on this cube and show its prediction (and uncertainty) on the map.

        Parameters
        ----------
        targets, value, estimator, **kwargs:
            As :func:`eoembed.regress` (points with a ``value`` column, or a raster;
            spatial-block CV against predict-the-mean and, with ``baseline_cube=``, the
            spectral baseline). On a cube with ``time``, the date shown (:meth:`set_time`)
            is used unless ``time=`` is given.

        Returns
        -------
        eoembed.analysis.RegressionResult
            Also kept as ``ex.regression``. The ``"regression"`` layer (colour bar
            ``predicted <value>``, 2nd–98th percentile of the targets) and, for estimators
            that give one (``"knn"``, ``"gp"``), the ``"uncertainty"`` layer (colour bar at
            the top right) are drawn on the display grid; the CV summary (R², RMSE against
            the baselines) goes to the panel's report.
        """
        import html

        from eoembed.analysis import regress
        from eoembed.explore.layers import colorbar_control, set_control
        from eoembed.viz import colormap_indexed

        if "time" in self.emb.dims and "time" not in kwargs and self._time is not None:
            kwargs["time"] = self._time
        res = regress(self.emb, targets, value=value, estimator=estimator, **kwargs)
        self.regression = res
        pm = res.predict_map(self._ov).compute()
        pred = pm["prediction"]
        lo, hi = float(pred.attrs["vmin"]), float(pred.attrs["vmax"])
        hi = hi if hi > lo else lo + 1e-6
        units = f" ({res.units})" if res.units else ""
        self._put_raster("regression", pred, *colormap_indexed(pred.values, lo, hi, "viridis"),
                         title=f"regression: {value}")
        self._regression_bar = set_control(self.map, getattr(self, "_regression_bar", None),
                                           colorbar_control(lo, hi, "viridis", f"predicted {value}{units}"))
        if "uncertainty" in pm:
            unc = pm["uncertainty"]
            v = unc.values[np.isfinite(unc.values)]
            top = float(np.percentile(v, 98)) if v.size else 1.0
            top = top if top > 0 else 1e-6
            self._put_raster("uncertainty", unc, *colormap_indexed(unc.values, 0.0, top, "magma"),
                             title=f"uncertainty: {value}")
            self._uncertainty_bar = set_control(
                self.map, getattr(self, "_uncertainty_bar", None),
                colorbar_control(0.0, top, "magma", f"uncertainty of {value}{units}", position="topright"))
        else:
            self._remove_layer("uncertainty")
            self._uncertainty_bar = set_control(self.map, getattr(self, "_uncertainty_bar", None), None)
        self._report_w.value = f"<pre style='font-size:11px;line-height:1.3'>{html.escape(str(res))}</pre>"
        s = res.summary()
        self._status(f"Regression of {value} on {len(res.y)} patches: R² {s.loc['model', 'r2_mean']:+.3f} "
                     f"(predict-the-mean {s.loc['mean baseline', 'r2_mean']:+.3f}), spatial-block CV.")
        return res
