"""The panel's bqplot figures: the embedding view (scatter) and a place's trajectory.

They draw :class:`~eoembed.explore.scatter.ScatterData` and the state's
``trajectory_data``; a brush or lasso selection calls the explorer's ``select``.
"""

from __future__ import annotations

from typing import Any, Callable

import bqplot as bq
import ipywidgets as w
import numpy as np

__all__ = ["ScatterPlot", "TrajectoryPlot"]


class ScatterPlot:
    """``figure`` (bqplot) of the sampled patches, the query point and a brush/lasso selector."""

    def __init__(self, data, on_select: Callable[[Any], None], guard: Callable) -> None:
        xs, ys = bq.LinearScale(), bq.LinearScale()
        self.points = bq.Scatter(x=data.xy[:, 0], y=data.xy[:, 1], scales={"x": xs, "y": ys}, colors=data.colors,
                                 default_size=12, stroke=None, unselected_style={"opacity": 0.25},
                                 selected_style={"stroke": "black", "stroke-width": 1})
        self.query = bq.Scatter(x=[], y=[], scales={"x": xs, "y": ys}, colors=["#ff00ff"], marker="diamond",
                                default_size=120, stroke="black")
        self.brush = bq.interacts.BrushSelector(x_scale=xs, y_scale=ys, marks=[self.points], color="orange")
        self.lasso = bq.interacts.LassoSelector(marks=[self.points])
        kind = data.kind.upper()
        ax = [bq.Axis(scale=xs, label=f"{kind} 1"), bq.Axis(scale=ys, side="left", label=f"{kind} 2")]
        self.figure = bq.Figure(marks=[self.points, self.query], axes=ax, interaction=self.brush,
                                layout=w.Layout(width="440px", height="300px"),
                                fig_margin={"top": 10, "bottom": 40, "left": 50, "right": 10})
        tool = w.ToggleButtons(options=["brush", "lasso"], value="brush", description="Select",
                               style={"button_width": "60px"})
        tool.observe(guard(lambda ch: setattr(self.figure, "interaction",
                                              self.brush if ch["new"] == "brush" else self.lasso)), "value")
        self._syncing = False
        self.points.observe(guard(lambda ch: None if self._syncing else on_select(
            [] if ch["new"] is None else list(ch["new"]))), "selected")
        self.box = w.VBox([w.HTML(f"<b>Embedding view</b> ({kind}, {len(data.rows)} patches)"), tool, self.figure])

    def sync(self, data) -> None:
        want = None if not len(data.selected) else np.asarray(data.selected, dtype=int)
        have = self.points.selected
        if (want is None) != (have is None) or (want is not None and not np.array_equal(want, have)):
            self._syncing = True
            try:
                self.points.selected = want
            finally:
                self._syncing = False
        xy = data.query_xy
        self.query.x, self.query.y = ([xy[0]], [xy[1]]) if xy is not None else ([], [])


class TrajectoryPlot:
    """A place's cosine similarity to its first date, through time, with the date shown marked."""

    def __init__(self) -> None:
        self.box = w.VBox([])
        self.figure = None
        self.line = self.now = None
        self._data = None
        self._xv = self._yv = None

    def sync(self, df, pos: int | None, crs_name: str) -> None:
        if df is None:
            return
        if df is not self._data:
            self._draw(df, crs_name)
        if pos is None or not np.isfinite(self._yv[pos]):
            self.now.x, self.now.y = self._xv[:0], []
        else:
            self.now.x, self.now.y = self._xv[pos:pos + 1], [float(self._yv[pos])]

    def _draw(self, df, crs_name: str) -> None:
        self._data = df
        dated = np.issubdtype(np.asarray(df.index.values).dtype, np.datetime64)
        xv = np.asarray(df.index.values) if dated else np.arange(len(df), dtype=float)
        yv = df["similarity_to_first"].to_numpy(dtype=float)
        title = (f"Trajectory at ({df.attrs['x']:.0f}, {df.attrs['y']:.0f}) {crs_name} "
                 f"(row {df.attrs['row']}, col {df.attrs['col']})")
        if self.figure is None:
            xs = bq.DateScale() if dated else bq.LinearScale()
            ys = bq.LinearScale(max=1.0)
            self.line = bq.Lines(x=xv, y=yv, scales={"x": xs, "y": ys}, marker="circle", marker_size=24,
                                 colors=["#1f77b4"])
            self.now = bq.Scatter(x=[], y=[], scales={"x": xs, "y": ys}, colors=["#ff00ff"], default_size=90,
                                  stroke="black")
            axes = [bq.Axis(scale=xs, label="date" if dated else "time step", tick_format="%b %Y" if dated else None),
                    bq.Axis(scale=ys, side="left", label="cosine similarity to first date", tick_format=".2f")]
            self.figure = bq.Figure(marks=[self.line, self.now], axes=axes, title=title,
                                    layout=w.Layout(width="440px", height="260px"),
                                    fig_margin={"top": 40, "bottom": 45, "left": 60, "right": 35},
                                    title_style={"font-size": "12px"})
            self.box.children = (self.figure,)
        else:
            self.line.x, self.line.y = xv, yv
            self.figure.title = title
        self._xv, self._yv = xv, yv
