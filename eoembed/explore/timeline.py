"""Time in the explorer: the time slider, a place's trajectory and two-date comparison.

For embedding cubes with a ``time`` dim (``embed(..., pool_time=False)``) the panel gets
a time slider (``"mean"`` — the default view, every timestep averaged — then one stop
per date). Moving it calls :meth:`TimeMixin.set_time`, which redraws the PCA-RGB layer
and, when a query is active, re-runs it for that timestep (similarity layer, hits,
matches). The time-dependent layers carry the date in their name (map layer control,
panel layer list), e.g. ``"PCA-RGB 2024-03-15"``.

A search click on such a cube also plots the place's trajectory through the season in
the panel (:meth:`TimeMixin.trajectory_at`, from :func:`eoembed.trajectory`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import DimensionError, ParameterError, QueryError

#: Layers whose image follows the time slider (their titles carry the date shown).
TIME_LAYERS = ("PCA-RGB", "PCA-RGB detail", "similarity", "similarity detail", "matches")


def time_label(t: Any) -> str:
    """A short label of a time coordinate value: ``2024-03-15`` (``2024-03-15 10:30`` with a time of day)."""
    import datetime

    if isinstance(t, (np.datetime64, datetime.datetime)):  # pandas Timestamps are datetimes
        import pandas as pd

        ts = pd.Timestamp(t)
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")
    return str(t)


def _no_time(what: str) -> DimensionError:
    return DimensionError(f"{what} embedding cube has no 'time' dimension (it was embedded time-pooled). "
                          "Embed with eoembed.embed(cube, ..., pool_time=False) for per-timestep vectors.")


class TimeMixin:
    """Time slider, trajectories and two-date split of :class:`~eoembed.explore.Explorer` (mixed into it)."""

    # ---- which timestep is shown -------------------------------------------------------------
    def _resolve_time(self, time: Any) -> tuple[Any, int | None]:
        """``time`` (None, a position, a label or date string) → ``(label, position)``; typed errors."""
        from eoembed.analysis._common import select_time

        if time is None:
            return None, None
        if self._times is None:
            raise _no_time(f"time={time!r} was given but the")
        positions = xr.DataArray(np.arange(len(self._times)), dims="time", coords={"time": self._times})
        pos = int(select_time(positions, time, what="time").values)
        return self._times[pos], pos

    @property
    def time(self) -> Any:
        """The timestep shown and searched (a label of the cube's ``time``), or None for the mean of all."""
        return self._time

    def _time_suffix(self) -> str:
        if self._times is None:
            return ""
        if self._time is None:
            return f" (mean of {len(self._times)} dates)"
        return f" {time_label(self._time)}"

    def set_time(self, time: Any) -> Any:
        """Show and search one timestep of a ``pool_time=False`` cube — what the time slider does.

        Parameters
        ----------
        time:
            A label of the cube's ``time`` coordinate, a date string naming one of them
            (``"2024-03-15"``; ``"2024-03"`` if it matches exactly one), an integer
            position, or None for the mean of all timesteps (the default view).

        Returns
        -------
        object
            The label of the timestep now shown (``ex.time``; None for the mean).

        Redraws the PCA-RGB layer (same projection, so colours compare between dates)
        and, when a query is active, re-runs it for this timestep (similarity layer,
        hits, matches); the layers' names carry the date. The clusters, change, class
        and probability layers stay as they were computed.

        Raises
        ------
        DimensionError
            The cube has no ``time`` dim.
        ParameterError
            ``time`` is not one of the cube's timesteps (the message lists them).
        """
        from eoembed.explore.layers import pca_rgb_2d
        from eoembed.viz import rgb_to_rgba

        if self._times is None:
            raise _no_time("There is no timestep to choose: the")
        label, pos = self._resolve_time(time)
        self._time, self._time_pos = label, pos
        if self._time_w is not None:
            with self._quiet(self._time_w):
                self._time_w.value = -1 if pos is None else pos
        rgb = pca_rgb_2d(self._proj, self._display_2d(self._ov))
        self._put_raster("PCA-RGB", rgb, rgb_to_rgba(rgb.values))
        if self._query is not None:
            self._run_query({k: v for k, v in self._query.items() if k != "time"})  # also redraws the detail
        elif "PCA-RGB detail" in self.layers:
            self.refine_view(self._view_bounds)
        self._name_time_layers()
        self._mark_trajectory_time()
        shown = "the mean of all dates" if pos is None else f"{time_label(label)} ({pos + 1} of {len(self._times)})"
        self._status(f"Showing {shown}.")
        return label

    def _name_time_layers(self) -> None:
        """Put the date shown into the time-dependent layers' names (layer control and panel list)."""
        renamed = False
        for key in TIME_LAYERS:
            layer = self.layers.get(key)
            if layer is not None and layer.name != key + self._time_suffix():
                layer.name = key + self._time_suffix()
                renamed = True
        if renamed:
            self._layers_renamed()

    def _layers_renamed(self) -> None:
        """Show new layer names: panel list, the map's layer control and the split labels."""
        import ipyleaflet

        self._refresh_layer_list()
        if self._split_names:
            self._draw_split_labels()
        # Leaflet's layer control reads names only when it is built: rebuild it (the layers stay)
        ctl = [c for c in self.map.controls if isinstance(c, ipyleaflet.LayersControl)]
        if ctl:
            keep = self.map.controls
            self.map.controls = tuple(c for c in keep if all(c is not k for k in ctl))  # trait set, no close()
            self.map.controls = keep

    def _build_time_widgets(self) -> None:
        import ipywidgets as w

        self._time_w = None
        self._traj_box = w.VBox([])
        self._traj_fig = None
        self.trajectory_data = None
        if self._times is None:
            return
        options = [("mean", -1)] + [(time_label(t), i) for i, t in enumerate(self._times)]
        self._time_w = w.SelectionSlider(options=options, value=-1 if self._time_pos is None else self._time_pos,
                                         description="Time", continuous_update=False,
                                         layout=w.Layout(width="440px"))
        self._time_w.observe(self._guarded(self._on_time), "value")

    def _on_time(self, change) -> None:
        if id(self._time_w) not in self._muted:
            v = change["new"]
            self.set_time(None if v < 0 else self._times[v])

    # ---- a place through the season ---------------------------------------------------------------
    def trajectory_at(self, x: float, y: float, crs: Any = None):
        """A place's path through the season, plotted in the panel — what a search click shows.

        Parameters
        ----------
        x, y:
            Location in ``crs`` (default the embedding cube's CRS; ``"EPSG:4326"`` for
            lon/lat). The patch containing it is used.

        Returns
        -------
        pandas.DataFrame
            :func:`eoembed.trajectory` of that patch (also ``ex.trajectory_data``):
            indexed by ``time``, ``similarity_to_first`` (cosine similarity of each
            timestep's vector to the patch's first valid one — the plotted line),
            ``pca1`` (the first component of the explorer's PCA, the red of the PCA-RGB
            layer before its stretch) and ``valid``; ``attrs`` hold row, col, x, y.

        Raises
        ------
        DimensionError
            The cube has no ``time`` dim.
        QueryError
            The location is outside the cube.
        EmptyDataError
            The patch has no valid vector at any timestep.
        """
        from eoembed.analysis.time import trajectory

        if self._times is None:
            raise _no_time("A trajectory needs per-timestep vectors; the")
        px, py = self._to_emb_crs(x, y, crs)
        self._check_inside(px, py, QueryError, "show a trajectory")
        df = trajectory(self.emb, (px, py), fitted=self._proj)
        self.trajectory_data = df
        self._plot_trajectory(df)
        return df

    def _plot_trajectory(self, df) -> None:
        import bqplot as bq
        import ipywidgets as w

        dated = np.issubdtype(np.asarray(df.index.values).dtype, np.datetime64)
        xv = np.asarray(df.index.values) if dated else np.arange(len(df), dtype=float)
        yv = df["similarity_to_first"].to_numpy(dtype=float)
        title = (f"Trajectory at ({df.attrs['x']:.0f}, {df.attrs['y']:.0f}) {self.crs.to_string()} "
                 f"(row {df.attrs['row']}, col {df.attrs['col']})")
        if self._traj_fig is None:
            xs = bq.DateScale() if dated else bq.LinearScale()
            ys = bq.LinearScale(max=1.0)
            self._traj_line = bq.Lines(x=xv, y=yv, scales={"x": xs, "y": ys}, marker="circle", marker_size=24,
                                       colors=["#1f77b4"])
            self._traj_now = bq.Scatter(x=[], y=[], scales={"x": xs, "y": ys}, colors=["#ff00ff"],
                                        default_size=90, stroke="black")
            axes = [bq.Axis(scale=xs, label="date" if dated else "time step", tick_format="%b %Y" if dated else None),
                    bq.Axis(scale=ys, side="left", label="cosine similarity to first date",
                            tick_format=".2f")]
            self._traj_fig = bq.Figure(marks=[self._traj_line, self._traj_now], axes=axes, title=title,
                                       layout=w.Layout(width="440px", height="260px"),
                                       fig_margin={"top": 40, "bottom": 45, "left": 60, "right": 35},
                                       title_style={"font-size": "12px"})
            self._traj_box.children = (self._traj_fig,)
        else:
            self._traj_line.x, self._traj_line.y = xv, yv
            self._traj_fig.title = title
        self._traj_xv, self._traj_yv = xv, yv
        self._mark_trajectory_time()

    def _mark_trajectory_time(self) -> None:
        """The plotted point of the timestep shown (none for the mean view)."""
        if getattr(self, "_traj_fig", None) is None:
            return
        pos = self._time_pos
        if pos is None or not np.isfinite(self._traj_yv[pos]):
            self._traj_now.x, self._traj_now.y = self._traj_xv[:0], []
        else:
            self._traj_now.x, self._traj_now.y = self._traj_xv[pos:pos + 1], [float(self._traj_yv[pos])]

    # ---- two dates side by side ---------------------------------------------------------------
    def add_time_layer(self, time: Any) -> str:
        """Add a PCA-RGB layer of one timestep (label, date string or position) of a cube with time,
        coloured with the same projection as ``"PCA-RGB"`` so two dates compare in a split map.
        Returns the layer name (``"PCA-RGB <date>"``)."""
        from eoembed.explore.layers import display_2d, pca_rgb_2d
        from eoembed.viz import rgb_to_rgba

        if self._times is None:
            raise ParameterError("This embedding cube has no time dimension; split two layers instead.")
        label, pos = self._resolve_time(time)
        name = f"PCA-RGB {time_label(label)}"
        rgb = pca_rgb_2d(self._proj, display_2d(self._ov, pos))
        self._put_raster(name, rgb, rgb_to_rgba(rgb.values))
        return name

    def split_dates(self, time_a: Any, time_b: Any) -> tuple[str, str]:
        """Compare two timesteps side by side: their PCA-RGB layers in a split map, each side labelled.

        Parameters
        ----------
        time_a, time_b:
            The left and right timesteps (labels, date strings or positions).

        Returns
        -------
        tuple of str
            The two layer names, ``("PCA-RGB <date a>", "PCA-RGB <date b>")``; the map's
            side labels show the same. Both use the projection of ``"PCA-RGB"``, so the
            colours compare; :meth:`unsplit` removes the divider and labels.

        Raises
        ------
        ParameterError
            No time dim, a date not in the cube, or the same timestep twice.
        """
        a, b = self.add_time_layer(time_a), self.add_time_layer(time_b)
        if a == b:
            raise ParameterError(f"time_a and time_b are the same timestep ({a[len('PCA-RGB '):]}); "
                                 "pick two different dates.")
        self.split(a, b)
        self._split_dates = (self._resolve_time(time_a)[0], self._resolve_time(time_b)[0])
        return a, b
