"""The embedding view: a bqplot scatter of sampled patches, linked both ways with the map.

Why bqplot: every bqplot mark is an ipywidget, so the brush/lasso selection
(``Scatter.selected``) and the highlighted point sync both ways as widget traits with no
extra server; it ships a prebuilt JupyterLab 4 extension, renders offline, and has brush
and lasso selectors built in (ipympl would round-trip rendered pixels through the kernel
on every interaction; plotly's FigureWidget needs its own JS bundle for a similar result).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import ParameterError


class ScatterMixin:
    """Builds ``ex.scatter`` and keeps it linked with the map (mixed into :class:`Explorer`)."""

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

    def _build_scatter(self, kind: str, n: int) -> None:
        import bqplot as bq
        import ipywidgets as w

        ov = self._display_2d(self._ov)
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
        v = None
        if self._query is not None and "point" not in self._query:
            v = self.index.query_vector(**self._query)[0]
        if v is None:
            px, py = self._positives[0]
            a, _, c, _, e, f = self._transform
            r, col = int((py - f) // e), int((px - c) // a)
            sub = self.emb.isel(y=r, x=col)
            if "time" in sub.dims:
                sub = sub.mean("time")
            v = np.asarray(sub.values, dtype=np.float32)
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        if np.isfinite(v).all():
            xy = self._scatter_proj.func(v[None, :])[0]
            self._sc_query.x, self._sc_query.y = [float(xy[0])], [float(xy[1])]
