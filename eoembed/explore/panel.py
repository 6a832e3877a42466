"""The explorer's side panel and map wiring: widgets, their callbacks, status line.

Each callback only translates a widget event into a public method call
(:mod:`eoembed.explore.actions`); errors raised there are logged, shown in red and kept
in ``ex.last_error`` so the widget survives.
"""

from __future__ import annotations

import contextlib
import logging
from html import escape as _esc

from eoembed.explore.layers import BASEMAP_CHOICES

log = logging.getLogger("eoembed.explore")


class PanelMixin:
    """Side-panel widgets and callbacks of :class:`~eoembed.explore.Explorer` (mixed into it)."""

    def _build_panel_widgets(self) -> None:
        import ipyleaflet
        import ipywidgets as w

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
        self._basemap_w = w.Dropdown(description="Basemap", options=list(BASEMAP_CHOICES), value="none")
        self._threshold_w = w.FloatSlider(value=1.0, min=-1.0, max=1.0, step=0.005, description="Threshold",
                                          continuous_update=False, readout_format=".3f")
        self._export_path_w = w.Text(value="matches.geojson", description="Export to",
                                     placeholder="matches.geojson or .parquet")
        self._export_w = w.Button(description="Export", icon="download", layout=bl)
        self._gallery_w = w.Button(description="Chips", icon="image", layout=bl,
                                   tooltip="True-colour chips of the top hits (needs cube=)")
        self._session_path_w = w.Text(value="session.json", description="Session")
        self._session_save_w = w.Button(description="Save", icon="save", layout=bl)
        self._session_load_w = w.Button(description="Load", icon="folder-open", layout=bl)
        self._status_w = w.HTML("")
        self._matches_w = w.HTML("")
        self._report_w = w.HTML("")
        self._hits_w = w.HTML("")
        self._gallery_box = w.HBox([], layout=w.Layout(flex_flow="row wrap"))
        self._mode_w.observe(self._guarded(self._on_mode), "value")
        self._clear_w.on_click(self._guarded(lambda _: self.clear()))
        self._train_w.on_click(self._guarded(lambda _: self.train()))
        self._save_w.on_click(self._guarded(lambda _: self._save_clicked()))
        self._layer_w.observe(self._guarded(self._on_layer_pick), "value")
        self._opacity_w.observe(self._guarded(self._on_opacity), "value")
        self._basemap_w.observe(self._guarded(lambda ch: self.set_basemap(ch["new"])), "value")
        self._threshold_w.observe(self._guarded(self._on_threshold), "value")
        self._export_w.on_click(self._guarded(lambda _: self.export_matches(self._export_path_w.value)))
        self._gallery_w.on_click(self._guarded(lambda _: self.gallery()))
        self._session_save_w.on_click(self._guarded(lambda _: self.save_session(self._session_path_w.value)))
        self._session_load_w.on_click(self._guarded(lambda _: self.load_session(self._session_path_w.value)))
        self.map.on_interaction(self._guarded(self._on_map_interaction))
        # polygon/rectangle queries drawn on the map
        self.draw_control = ipyleaflet.DrawControl(
            polygon={"shapeOptions": {"color": "#ff00ff", "fillOpacity": 0.1}},
            rectangle={"shapeOptions": {"color": "#ff00ff", "fillOpacity": 0.1}},
            polyline={}, circlemarker={}, marker={}, circle={}, edit=False, remove=False, position="topleft")
        self.draw_control.on_draw(self._guarded(self._on_draw))
        self.map.add(self.draw_control)
        self._build_time_widgets()

    def _panel_children(self) -> list:
        import ipywidgets as w

        row = w.Layout(flex="0 0 auto")
        return [
            self._mode_w, self._query_w, self._class_w,
            w.HBox([self._clear_w, self._train_w, self._save_w], layout=row),
            self._status_w, *([self._time_w] if self._time_w is not None else []),
            self._layer_w, self._opacity_w, self._basemap_w,
            self._threshold_w, w.HBox([self._export_path_w, self._export_w], layout=row), self._matches_w,
            self._traj_box,
            *([self.scatter_box] if self.scatter is not None else []),
            self._report_w, self._hits_w, self._gallery_w, self._gallery_box,
            w.HBox([self._session_path_w, self._session_save_w, self._session_load_w], layout=row),
        ]

    # ---- callbacks ----------------------------------------------------------------------------
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

    @contextlib.contextmanager
    def _quiet(self, widget):
        """Set a widget's value from code without running its callback."""
        self._muted.add(id(widget))
        try:
            yield
        finally:
            self._muted.discard(id(widget))

    def _on_map_interaction(self, **event) -> None:
        if event.get("type") != "click":
            return
        lat, lon = event["coordinates"][:2]
        if self.mode == "label":
            self.label(lon, lat, self._class_w.value, crs="EPSG:4326")
        else:
            how = self._query_w.value
            self.click(lon, lat, crs="EPSG:4326", negative=how == "negative", refine=how == "positive")

    def _on_draw(self, target, action, geo_json) -> None:
        if action != "created":
            return
        try:
            if geo_json.get("geometry", {}).get("type") in ("Polygon", "MultiPolygon"):
                self.query_polygon(geo_json, crs="EPSG:4326")
        finally:
            self.draw_control.clear()  # the query outline is drawn with the hits instead

    def _on_mode(self, change) -> None:
        self.mode = change["new"]
        self._status("Click the map to " + ("label the patch with the class below." if self.mode == "label"
                                            else "search for similar patches."))

    def _on_threshold(self, change) -> None:
        if id(self._threshold_w) not in self._muted:
            self.set_threshold(change["new"])

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

    def _status(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self._status_w.value = f"<div style='color:{colour};font-size:12px'>{_esc(text)}</div>"

    def _refresh_layer_list(self) -> None:
        if hasattr(self, "_layer_w"):
            names = list(self.layers)
            value = self._layer_w.value
            # shown by their map names (with the date for time layers); the value is the ex.layers key
            self._layer_w.options = [(self.layers[n].name, n) for n in names]
            if names:
                self._layer_w.value = value if value in names else names[-1]
