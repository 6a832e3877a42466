"""The explorer's side panel: widgets, their callbacks, and how they show the state.

Each callback only turns a widget event into a call of the explorer's public method
(``host.click``, ``host.train``, ``host.set_threshold``, …), which runs the state's
method and re-renders; :meth:`Panel.sync` copies the state's texts and values into the
widgets (without re-running their callbacks).
"""

from __future__ import annotations

import contextlib
from html import escape as _esc
from typing import Any, Callable

import ipywidgets as w

from eoembed.explore.layers import BASEMAP_CHOICES
from eoembed.explore.timeline import time_label

__all__ = ["Panel"]


def hits_html(hits) -> str:
    """The first five hits as a small table (with their date on a cube with time)."""
    if hits is None:
        return ""
    dated = "time" in hits.columns  # a cube with time: the hits span every date
    rows = "".join(f"<tr><td>{r.rank}</td><td>{r.score:.3f}</td><td>{r.x:.0f}</td><td>{r.y:.0f}</td>"
                   + (f"<td>{time_label(r.time)}</td>" if dated else "") + "</tr>"
                   for r in hits.head(5).itertuples())
    return ("<table style='font-size:11px'><tr><th>rank</th><th>score</th><th>x</th>"
            f"<th>y</th>{'<th>date</th>' if dated else ''}</tr>{rows}</table>")


class Panel:
    """The side-panel widgets (``*_w``), wired to ``host``'s public methods through ``guard``."""

    def __init__(self, host: Any, state, guard: Callable) -> None:
        self._muted: set[int] = set()
        self.mode_w = w.ToggleButtons(options=[("Search", "search"), ("Label", "label")], value="search",
                                      description="Click to", style={"button_width": "70px"})
        self.query_w = w.ToggleButtons(options=[("new", "new"), ("+ positive", "positive"),
                                                ("− negative", "negative")], value="new",
                                       description="Query", style={"button_width": "80px"})
        self.class_w = w.Combobox(value="class 1", placeholder="class name", description="Class",
                                  options=[], ensure_option=False)
        bl = w.Layout(width="auto", min_width="90px")
        self.clear_w = w.Button(description="Clear", icon="eraser", layout=bl)
        self.train_w = w.Button(description="Train", icon="graduation-cap", button_style="primary", layout=bl)
        self.save_w = w.Button(description="Save labels", icon="save", layout=bl)
        self.layer_w = w.Dropdown(description="Layer", options=[])
        self.opacity_w = w.FloatSlider(value=1.0, min=0, max=1, step=0.05, description="Opacity")
        self.basemap_w = w.Dropdown(description="Basemap", options=list(BASEMAP_CHOICES), value="none")
        self.threshold_w = w.FloatSlider(value=1.0, min=-1.0, max=1.0, step=0.005, description="Threshold",
                                         continuous_update=False, readout_format=".3f")
        self.export_path_w = w.Text(value="matches.geojson", description="Export to",
                                    placeholder="matches.geojson or .parquet")
        self.export_w = w.Button(description="Export", icon="download", layout=bl)
        self.gallery_w = w.Button(description="Chips", icon="image", layout=bl,
                                  tooltip="True-colour chips of the top hits (needs cube=)")
        self.session_path_w = w.Text(value="session.json", description="Session")
        self.session_save_w = w.Button(description="Save", icon="save", layout=bl)
        self.session_load_w = w.Button(description="Load", icon="folder-open", layout=bl)
        self.status_w, self.matches_w, self.report_w, self.hits_w = w.HTML(""), w.HTML(""), w.HTML(""), w.HTML("")
        self.gallery_box = w.HBox([], layout=w.Layout(flex_flow="row wrap"))
        self.time_w = None
        times = state.time.times
        if times is not None:
            options = [("mean", -1)] + [(time_label(t), i) for i, t in enumerate(times)]
            self.time_w = w.SelectionSlider(options=options, value=-1 if state.time.pos is None else state.time.pos,
                                            description="Time", continuous_update=False,
                                            layout=w.Layout(width="440px"))
            self.time_w.observe(guard(self._unless_muted(
                lambda v: host.set_time(None if v < 0 else times[v]))), "value")
        self.mode_w.observe(guard(self._unless_muted(host.set_mode)), "value")
        self.clear_w.on_click(guard(lambda _: host.clear()))
        self.train_w.on_click(guard(lambda _: host.train()))
        self.save_w.on_click(guard(lambda _: host.save_labels(state.labels_.path or "labels.geojson")))
        self.layer_w.observe(guard(self._unless_muted(self._on_layer_pick)), "value")
        self.opacity_w.observe(guard(self._unless_muted(
            lambda v: host.set_layer_style(self.layer_w.value, opacity=v) if self.layer_w.value else None)), "value")
        self.basemap_w.observe(guard(self._unless_muted(host.set_basemap)), "value")
        self.threshold_w.observe(guard(self._unless_muted(host.set_threshold)), "value")
        self.export_w.on_click(guard(lambda _: host.export_matches(self.export_path_w.value)))
        self.gallery_w.on_click(guard(lambda _: host.gallery()))
        self.session_save_w.on_click(guard(lambda _: host.save_session(self.session_path_w.value)))
        self.session_load_w.on_click(guard(lambda _: host.load_session(self.session_path_w.value)))
        self._state = state
        self._chips = ()

    def _unless_muted(self, fn: Callable) -> Callable:
        def on_change(change):
            if id(change["owner"]) not in self._muted:
                fn(change["new"])

        on_change.__name__ = getattr(fn, "__name__", "callback")
        return on_change

    @contextlib.contextmanager
    def quiet(self, widget):
        """Set a widget's value from code without running its callback."""
        self._muted.add(id(widget))
        try:
            yield
        finally:
            self._muted.discard(id(widget))

    def _set(self, widget, attr: str, value) -> None:
        if getattr(widget, attr) != value:
            with self.quiet(widget):
                setattr(widget, attr, value)

    def _on_layer_pick(self, name) -> None:
        st = self._state.scene.styles.get(name)
        if st is not None:
            self._set(self.opacity_w, "value", st["opacity"])

    def children(self, scatter_box, traj_box) -> list:
        row = w.Layout(flex="0 0 auto")
        return [
            self.mode_w, self.query_w, self.class_w,
            w.HBox([self.clear_w, self.train_w, self.save_w], layout=row),
            self.status_w, *([self.time_w] if self.time_w is not None else []),
            self.layer_w, self.opacity_w, self.basemap_w,
            self.threshold_w, w.HBox([self.export_path_w, self.export_w], layout=row), self.matches_w,
            traj_box, *([scatter_box] if scatter_box is not None else []),
            self.report_w, self.hits_w, self.gallery_w, self.gallery_box,
            w.HBox([self.session_path_w, self.session_save_w, self.session_load_w], layout=row),
        ]

    def status(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.status_w.value = f"<div style='color:{colour};font-size:12px'>{_esc(text)}</div>"

    def sync(self, titles: dict[str, str]) -> None:
        """Show the state: texts, mode, threshold, time, classes, layer list, chips."""
        s = self._state
        self.status(s.notes.status, s.notes.error)
        self._set(self.report_w, "value", s.notes.report)
        self._set(self.matches_w, "value", s.notes.matches)
        self._set(self.hits_w, "value", hits_html(s.search.hits))
        self._set(self.mode_w, "value", s.mode)
        if s.search.threshold is not None:
            self._set(self.threshold_w, "value", s.search.threshold)
        if self.time_w is not None:
            self._set(self.time_w, "value", -1 if s.time.pos is None else s.time.pos)
        if s.basemap_name in self.basemap_w.options:
            self._set(self.basemap_w, "value", s.basemap_name)
        classes = [c for c in s.labels_.classes if c not in self.class_w.options]
        if classes:
            self.class_w.options = [*self.class_w.options, *classes]
        options = [(titles[n], n) for n in s.scene.layers]
        if list(self.layer_w.options) != options:
            value = self.layer_w.value
            with self.quiet(self.layer_w):
                self.layer_w.options = options
                names = [n for _, n in options]
                if names:
                    self.layer_w.value = value if value in names else names[-1]
        if s.gallery_.chips is not self._chips:
            self._chips = s.gallery_.chips
            self.gallery_box.children = tuple(
                w.VBox([w.Image(value=c.png, format="png", width=96, height=96),
                        w.HTML(f"<div style='font-size:11px'>#{c.rank} · {c.score:.3f}</div>")])
                for c in self._chips)
