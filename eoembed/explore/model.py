"""What the explorer shows, as data: layers, colour bars, legends, markers, panel notes.

The widget-free state (:mod:`eoembed.explore.state`) fills a :class:`Scene`; the view
(:mod:`eoembed.explore.view`) renders it. Each change puts a *new* object in the scene
(a layer is never edited in place), so the view redraws exactly what is not the object
it drew last time (compared by identity) — no change flags to keep in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["ColorBar", "Legend", "Notes", "Raster", "Scene", "Tiles"]


@dataclass(frozen=True, eq=False)
class Raster:
    """An image on a source grid and the Web Mercator warp that places it on the map.

    ``image`` is RGBA ``(y, x, 4)`` uint8, or palette indices ``(y, x)`` with ``palette``
    ``(256, 4)``; ``data`` is what it was drawn from (``ex.layer_data[name]``); ``title``
    the name shown on the map (time layers carry the date shown).
    """

    name: str
    title: str
    data: xr.DataArray
    image: np.ndarray
    palette: np.ndarray | None
    warp: Any  # eoembed.viz.MercatorWarp

    @property
    def bounds(self) -> tuple:
        """``((south, west), (north, east))`` in degrees."""
        return self.warp.bounds


@dataclass(frozen=True, eq=False)
class Tiles:
    """A Cloud-Optimized GeoTIFF served as zoom-dependent tiles (:mod:`eoembed.explore.tiles`)."""

    name: str
    title: str
    data: xr.DataArray
    path: Any


@dataclass(frozen=True)
class ColorBar:
    vmin: float
    vmax: float
    cmap: str
    caption: str
    position: str = "bottomright"


@dataclass(frozen=True)
class Legend:
    names: tuple
    colors: tuple
    title: str
    position: str = "bottomright"

    @property
    def items(self) -> dict:
        return dict(zip(self.names, self.colors))


def point_feature(lon: float, lat: float, style: dict, props: dict | None = None) -> dict:
    """A GeoJSON point Feature with a Leaflet circle style."""
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]},
            "properties": {**(props or {}), "style": style}}


def feature_collection(features: list) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


@dataclass
class Notes:
    """The panel's texts: status line, report (CV, regression), matches count."""

    status: str = ""
    error: bool = False
    report: str = ""
    matches: str = ""
    #: Called with ``(status, error)`` on every :meth:`say` (the view shows it at once, even in the
    #: middle of a long action such as the first click's index build).
    listener: Any = field(default=None, repr=False, compare=False)

    def say(self, text: str, *, error: bool = False) -> None:
        self.status, self.error = text, error
        if self.listener is not None:
            self.listener(text, error)

    def listen(self, listener) -> None:
        """Call ``listener(status, error)`` on every :meth:`say` from now on (None: stop)."""
        self.listener = listener

    def set_report(self, html: str) -> None:
        self.report = html

    def set_matches(self, html: str) -> None:
        self.matches = html


@dataclass
class Scene:
    """Everything drawn: raster/tile layers in drawing order, their opacity and visibility,
    map controls (colour bars, legends) by slot, marker collections (GeoJSON, lon/lat)."""

    layers: dict = field(default_factory=dict)  # name -> Raster | Tiles
    styles: dict = field(default_factory=dict)  # name -> {"opacity": float, "visible": bool}
    controls: dict = field(default_factory=dict)  # slot -> ColorBar | Legend
    markers: dict = field(default_factory=lambda: {"hits": feature_collection([]),
                                                   "labels": feature_collection([])})

    def put(self, layer: Raster | Tiles) -> None:
        self.layers[layer.name] = layer
        self.styles.setdefault(layer.name, {"opacity": 1.0, "visible": True})

    def remove(self, name: str) -> bool:
        self.styles.pop(name, None)
        return self.layers.pop(name, None) is not None

    def retitle(self, name: str, title: str) -> None:
        from dataclasses import replace

        lyr = self.layers.get(name)
        if lyr is not None and lyr.title != title:
            self.layers[name] = replace(lyr, title=title)

    def style(self, name: str, *, opacity: float | None = None, visible: bool | None = None) -> None:
        st = self.styles.setdefault(name, {"opacity": 1.0, "visible": True})
        if opacity is not None:
            st["opacity"] = float(opacity)
        if visible is not None:
            st["visible"] = bool(visible)

    def control(self, slot: str, ctl: ColorBar | Legend | None) -> None:
        if ctl is None:
            self.controls.pop(slot, None)
        else:
            self.controls[slot] = ctl

    def set_markers(self, group: str, features: list) -> None:
        self.markers[group] = feature_collection(features)
