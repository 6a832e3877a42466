"""The embedding view as data: a sample of patches projected to 2-D, the selection, the query point.

The view draws it as a bqplot scatter (:mod:`eoembed.explore.plots`; why bqplot: every
mark is an ipywidget, so brush/lasso selections and the highlighted point sync both ways
as widget traits, offline, with brush and lasso selectors built in).

Points are the projection of the patches' *unit* vectors — the space the index searches
(cosine similarity) — so the query vector the index resolves for a click lands on the
clicked patch's point, with no second read of the cube.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from eoembed.cube import normalize
from eoembed.exceptions import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.state import ExplorerState

__all__ = ["ScatterData"]


class ScatterData:
    """Sampled patches (``rows``, ``cols`` on the full grid), their 2-D positions ``xy`` and
    ``colors`` (the PCA-RGB layer's), the ``selected`` positions and the query's ``query_xy``."""

    def __init__(self, state: "ExplorerState", kind: str, n: int) -> None:
        self._s = state
        if kind not in ("pca", "umap"):
            raise ParameterError(f"scatter must be 'pca', 'umap' or None, got {kind!r}.")
        self.kind = kind
        g = state.grid
        arr = np.asarray(state.time.flat(g.ov).values)  # (embedding, y, x), in memory already
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
            self.proj = g.proj
        else:
            from eoembed.reduce import fit_umap

            self.proj = fit_umap(g.ov, 2, sample=n)
        self.xy = self.proj.func(normalize(v))[:, :2]
        self.rows, self.cols = rr * g.stride, cc * g.stride
        rgb = state.time.flat(state.layer_data["PCA-RGB"]).transpose("y", "x", "band").values[rr, cc]
        self.colors = ["#%02x%02x%02x" % tuple((np.nan_to_num(c) * 255).astype(int)) for c in rgb]
        self.selected = np.zeros(0, int)
        self.query_xy: tuple[float, float] | None = None

    def highlight(self, vector: np.ndarray | None) -> None:
        """Place the query point: the projection of the query's unit vector (None: no query)."""
        self.query_xy = None
        if vector is None:
            return
        v = normalize(np.asarray(vector, np.float32).reshape(1, -1))
        if np.isfinite(v).all():
            xy = self.proj.func(v)[0]
            self.query_xy = (float(xy[0]), float(xy[1]))

    def select(self, indices) -> xr.DataArray | None:
        """Select points by position; returns the selection mask on the display grid (None: empty)."""
        sel = np.asarray([] if indices is None else indices, dtype=int).reshape(-1)
        if len(sel) and (sel.min() < 0 or sel.max() >= len(self.rows)):
            raise ParameterError(f"Scatter positions run from 0 to {len(self.rows) - 1}, got {sel.tolist()}.")
        self.selected = sel
        if not len(sel):
            return None
        g = self._s.grid
        mask = np.full(g.ov.shape[-2:], np.nan, np.float32)
        mask[self.rows[sel] // g.stride, self.cols[sel] // g.stride] = 1.0
        return xr.DataArray(mask, dims=("y", "x"), coords={"y": g.ov["y"], "x": g.ov["x"]}, name="selection")

    @property
    def selected_patches(self):
        """GeoDataFrame (row, col, x, y, geometry) of the selected patches."""
        import geopandas as gpd

        g = self._s.grid
        r, c = self.rows[self.selected], self.cols[self.selected]
        x, y = g.emb["x"].values[c], g.emb["y"].values[r]
        return gpd.GeoDataFrame({"row": r, "col": c, "x": x, "y": y}, geometry=gpd.points_from_xy(x, y), crs=g.crs)
