"""The explorer's view: a leafmap map and a side panel that render an :class:`ExplorerState`.

:meth:`ExplorerView.sync` draws what changed in the state's scene (compared by object
identity with what it drew last): raster layers as PNG ``ImageOverlay`` s on the Web
Mercator grid, the pyramid's PCA-RGB COG as tiles, colour bars and legends, marker
groups, basemap, split map, then the panel. Map events (click, drawn polygon, pan/zoom,
a layer's opacity changed on the map) call the host explorer's public methods — the
same methods a notebook calls.
"""

from __future__ import annotations

import logging
import warnings
from html import escape as _esc
from typing import Any, Callable

import ipyleaflet
import ipywidgets as w

from eoembed.explore.model import ColorBar, Legend, Raster, feature_collection
from eoembed.explore.panel import Panel

log = logging.getLogger("eoembed.explore")

__all__ = ["ExplorerView", "new_map"]


def new_map(warp, height: str):
    """A ``leafmap.Map`` framed on the layers, with no basemap and no tools that go online."""
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


def _control(ctl):
    from eoembed.explore.layers import colorbar_control, legend_control

    if isinstance(ctl, ColorBar):
        return colorbar_control(ctl.vmin, ctl.vmax, ctl.cmap, ctl.caption, position=ctl.position)
    return legend_control(list(ctl.names), list(ctl.colors), ctl.title, position=ctl.position)


class ExplorerView:
    """Map (``map``), side panel (``panel``, its widgets in ``widgets``), figures, and what is drawn.

    Attributes
    ----------
    layers: name → ipyleaflet layer. controls: slot → ipyleaflet control (``"similarity"``,
    ``"class"``, ``"clusters"``, ``"change"``, ``"regression"``, ``"uncertainty"``).
    split: the ``SplitMapControl`` (None). split_labels: its side labels. draw_control:
    the polygon tool. last_error: the last exception raised in a callback.
    """

    def __init__(self, host: Any, state, *, m: Any = None, height: str = "560px") -> None:
        self._host, self._state = host, state
        self.last_error: BaseException | None = None
        self.map = new_map(state.grid.warp, height) if m is None else m
        self.map.layout.flex = "1 1 60%"
        if m is not None:
            (south, west), (north, east) = state.grid.warp.bounds
            self.map.fit_bounds([[south, west], [north, east]])
        marker = {"radius": 6, "color": "#000000", "weight": 1, "fillOpacity": 0.95}
        self.labels_group = ipyleaflet.GeoJSON(data=feature_collection([]), point_style=marker, name="labels")
        self.hits_group = ipyleaflet.GeoJSON(data=feature_collection([]), point_style=marker, name="query & hits",
                                             style={"color": "#ff00ff", "fillOpacity": 0.05, "weight": 2})
        self.layers: dict[str, Any] = {}
        self.controls: dict[str, Any] = {}
        self._drawn: dict[str, Any] = {}  # name -> the Raster/Tiles drawn; slot -> the ColorBar/Legend drawn
        self._markers: dict[str, Any] = {}
        self._basemap_src, self._basemap = None, None
        self.split, self.split_labels, self._split_drawn = None, [], None
        self.widgets = Panel(host, state, self.guard)
        state.notes.listen(self.widgets.status)  # a long action's note shows before it runs
        self.map.on_interaction(self.guard(self._on_map_interaction))
        self.draw_control = ipyleaflet.DrawControl(
            polygon={"shapeOptions": {"color": "#ff00ff", "fillOpacity": 0.1}},
            rectangle={"shapeOptions": {"color": "#ff00ff", "fillOpacity": 0.1}},
            polyline={}, circlemarker={}, marker={}, circle={}, edit=False, remove=False, position="topleft")
        self.draw_control.on_draw(self.guard(self._on_draw))
        self.map.add(self.draw_control)
        self.scatter = None
        if state.scatter is not None:
            from eoembed.explore.plots import ScatterPlot

            self.scatter = ScatterPlot(state.scatter, host.select, self.guard)
        from eoembed.explore.plots import TrajectoryPlot

        self.trajectory = TrajectoryPlot()
        self.sync()
        for g in (self.hits_group, self.labels_group):
            self.map.add(g)
        self.panel = w.VBox(self.widgets.children(None if self.scatter is None else self.scatter.box,
                                                  self.trajectory.box),
                            layout=w.Layout(width="460px", min_width="460px"))
        if state.grid.stride > 1:  # zooming in draws the view from a finer level
            self.map.observe(self.guard(lambda ch: host.refine_view(ch["new"])), "bounds")

    # ---- callbacks --------------------------------------------------------------------------------
    def guard(self, fn: Callable) -> Callable:
        """``fn`` with its errors logged, shown in red in the panel and kept in ``last_error``."""
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # shown and logged, never silent, widget survives
                self.last_error = err
                log.exception("eoembed explorer: %s failed", getattr(fn, "__name__", "callback"))
                self._state.notes.say(f"{type(err).__name__}: {err}", error=True)
                self.widgets.status(self._state.notes.status, error=True)
                return None

        return run

    def _on_map_interaction(self, **event) -> None:
        if event.get("type") != "click":
            return
        lat, lon = event["coordinates"][:2]
        if self._state.mode == "label":
            self._host.label(lon, lat, self.widgets.class_w.value, crs="EPSG:4326")
        else:
            how = self.widgets.query_w.value
            self._host.click(lon, lat, crs="EPSG:4326", negative=how == "negative", refine=how == "positive")

    def _on_draw(self, target, action, geo_json) -> None:
        if action != "created":
            return
        try:
            if geo_json.get("geometry", {}).get("type") in ("Polygon", "MultiPolygon"):
                self._host.query_polygon(geo_json, crs="EPSG:4326")
        finally:
            self.draw_control.clear()  # the query outline is drawn with the hits instead

    def _on_style(self, name: str, attr: str) -> Callable:
        def changed(change):
            st = self._state.scene.styles.get(name)
            if st is not None and st[attr] != change["new"]:
                self._state.set_layer_style(name, **{attr: change["new"]})

        return self.guard(changed)

    # ---- rendering --------------------------------------------------------------------------------
    def sync(self) -> None:
        """Draw what changed in the state."""
        renamed = self._sync_layers()
        self._sync_controls()
        for name, group in (("hits", self.hits_group), ("labels", self.labels_group)):
            fc = self._state.scene.markers[name]
            if self._markers.get(name) is not fc:
                group.data, self._markers[name] = fc, fc
        self._sync_basemap()
        self._sync_split(renamed)
        if renamed:
            self._rebuild_layer_control()
        self.widgets.sync({n: lyr.name for n, lyr in self.layers.items()})
        if self.scatter is not None:
            self.scatter.sync(self._state.scatter)
        self.trajectory.sync(self._state.trajectory_data, self._state.time.pos, self._state.grid.crs.to_string())

    def _sync_layers(self) -> bool:
        from eoembed.viz import png_data_url

        scene, renamed = self._state.scene, False
        for name in [n for n in self.layers if n not in scene.layers]:
            layer = self.layers.pop(name)
            self._drawn.pop(name, None)
            if layer in self.map.layers:
                self.map.remove(layer)
        for name, item in scene.layers.items():
            old, layer = self._drawn.get(name), self.layers.get(name)
            if layer is None or type(old) is not type(item):
                if layer is not None and layer in self.map.layers:
                    self.map.remove(layer)
                layer = self._new_layer(item)
                for attr in ("opacity", "visible"):
                    layer.observe(self._on_style(name, attr), attr)
                self.layers[name] = layer
            elif isinstance(item, Raster) and (item.image is not old.image or item.palette is not old.palette
                                                or item.warp is not old.warp):
                layer.url = png_data_url(item.warp.apply(item.image), item.palette)
                if item.warp is not old.warp:
                    layer.bounds = [list(item.warp.bounds[0]), list(item.warp.bounds[1])]
            if layer.name != item.title:
                layer.name, renamed = item.title, True
            st = scene.styles.get(name, {})
            for attr in ("opacity", "visible"):
                if attr in st and getattr(layer, attr, None) != st[attr]:
                    setattr(layer, attr, st[attr])
            self._drawn[name] = item
        return renamed

    def _new_layer(self, item):
        from eoembed.viz import png_data_url

        if isinstance(item, Raster):
            layer = ipyleaflet.ImageOverlay(url=png_data_url(item.warp.apply(item.image), item.palette),
                                            bounds=[list(item.warp.bounds[0]), list(item.warp.bounds[1])],
                                            name=item.title)
        else:
            from eoembed.explore.tiles import tile_layer

            layer = tile_layer(item.path, name=item.title)
        # under the marker groups (leafmap's Map.remove closes a widget, so no remove/re-add of those)
        at = [i for i, lyr in enumerate(self.map.layers) if lyr is self.hits_group or lyr is self.labels_group]
        self.map.add(layer, index=min(at)) if at else self.map.add(layer)
        return layer

    def _sync_controls(self) -> None:
        from eoembed.explore.layers import set_control

        want = self._state.scene.controls
        for slot in [s for s in self.controls if s not in want]:
            set_control(self.map, self.controls.pop(slot), None)
            self._drawn.pop(("control", slot), None)
        for slot, ctl in want.items():
            if self._drawn.get(("control", slot)) is ctl:
                continue
            have = self.controls.get(slot)
            if isinstance(ctl, Legend) and isinstance(have, ipyleaflet.LegendControl) and have.position == ctl.position:
                have.title, have.legend = ctl.title, ctl.items  # updated in place
            else:
                self.controls[slot] = set_control(self.map, have, _control(ctl))
            self._drawn[("control", slot)] = ctl

    def _sync_basemap(self) -> None:
        from eoembed.explore.layers import basemap_layer

        src = self._state.basemap
        if src is self._basemap_src:
            return
        if self._basemap is not None and self._basemap in self.map.layers:
            self.map.remove(self._basemap)
        self._basemap_src, self._basemap = src, basemap_layer(src)
        if self._basemap is not None:
            self.map.add(self._basemap, index=0)

    def _sync_split(self, renamed: bool) -> None:
        names = self._state.split_names
        drawn = None if not names else (names, self.layers[names[0]], self.layers[names[1]])
        if drawn == self._split_drawn and not renamed:
            return
        if drawn != self._split_drawn:
            if self.split is not None and self.split in self.map.controls:
                self.map.remove(self.split)
            self.split, self._split_drawn = None, drawn
            if drawn is not None:
                self.split = ipyleaflet.SplitMapControl(left_layer=drawn[1], right_layer=drawn[2])
                self.map.add(self.split)
        for ctl in self.split_labels:
            if ctl in self.map.controls:
                self.map.remove(ctl)
        self.split_labels = []
        if not names:
            return
        style = "background:rgba(255,255,255,0.85);padding:2px 6px;font-size:12px;border-radius:3px"
        for side, name, text in zip(("bottomleft", "bottomright"), names, ("◀ {}", "{} ▶")):
            label = w.HTML(f"<div class='eoembed-split-{side[6:]}' style='{style}'>"
                           f"{_esc(text.format(self.layers[name].name))}</div>")
            ctl = ipyleaflet.WidgetControl(widget=label, position=side)
            self.map.add(ctl)
            self.split_labels.append(ctl)

    def _rebuild_layer_control(self) -> None:
        """Leaflet's layer control reads names only when it is built: rebuild it (the layers stay)."""
        ctl = [c for c in self.map.controls if isinstance(c, ipyleaflet.LayersControl)]
        if ctl:
            keep = self.map.controls
            self.map.controls = tuple(c for c in keep if all(c is not k for k in ctl))  # trait set, no close()
            self.map.controls = keep
