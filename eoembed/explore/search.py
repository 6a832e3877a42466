"""Search in the explorer: the query (points, negatives, polygon), its hits, similarity and matches.

A click is resolved **once**: the index turns the location (point → patch → stored
vector, :meth:`eoembed.index.EmbeddingIndex.query_vector`) into the query vector, and
everything else is computed from that vector — the top-``k`` hits, the similarity layer
on the display grid, the full-grid similarity (lazy), the highlighted point in the
embedding view. No vector is read from the cube for a query.
"""

from __future__ import annotations

import os
import time as _time
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eoembed.cube import to_crs_geom, to_crs_xy
from eoembed.exceptions import ParameterError, QueryError
from eoembed.explore.model import ColorBar, point_feature

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.state import ExplorerState

__all__ = ["Search"]


def _similarity(emb: xr.DataArray, q: np.ndarray) -> xr.DataArray:
    from eoembed.index.similarity import similarity_map

    return similarity_map(emb, q)


class Search:
    """The current query of an :class:`~eoembed.explore.state.ExplorerState` and what it found.

    Attributes
    ----------
    positives, negatives: clicked examples ``(x, y)`` in the cube CRS. polygon: the drawn
    polygon (cube CRS) or None. query: the index query (keywords) or None. vector: its
    resolved unit vector. hits: GeoDataFrame of the top-``k``. ov_similarity: the
    similarity on the display grid (2-D, the timestep shown). threshold: of the matches.
    """

    def __init__(self, state: "ExplorerState") -> None:
        self._s = state
        self.positives: list[tuple[float, float]] = []
        self.negatives: list[tuple[float, float]] = []
        self.polygon = None
        self.query: dict[str, Any] | None = None
        self.vector: np.ndarray | None = None
        self.hits = None
        self.ov_similarity: xr.DataArray | None = None
        self.threshold: float | None = None
        self._full: xr.DataArray | None = None

    # ---- queries ------------------------------------------------------------------------------
    def click(self, x: float, y: float, crs: Any = None, negative: bool = False, refine: bool = False):
        g = self._s.grid
        px, py = g.to_emb_crs(x, y, crs)
        g.check_inside(px, py, QueryError, "search")
        if negative:
            if not self.positives:
                raise QueryError("A negative example refines a query; click a positive location first.")
            pos, neg, poly = self.positives, [*self.negatives, (px, py)], self.polygon
        elif refine and self.positives:
            pos, neg, poly = [*self.positives, (px, py)], self.negatives, self.polygon
        else:
            pos, neg, poly = [(px, py)], [], None
        if poly is not None:
            query: dict[str, Any] = {"positives": [poly, *pos[1:]], "negatives": list(neg)}
        elif len(pos) == 1 and not neg:
            query = {"point": pos[0]}
        else:
            query = {"positives": list(pos), "negatives": list(neg)}
        hits = self.run(query)  # raises before anything changes when the query cannot be resolved
        self.positives, self.negatives, self.polygon = pos, neg, poly
        self.draw_markers()
        return hits

    def query_polygon(self, polygon: Any, crs: Any = None):
        import shapely
        from shapely.geometry import shape

        if isinstance(polygon, dict):
            polygon = shape(polygon.get("geometry", polygon))
        elif isinstance(polygon, str):
            polygon = shapely.from_wkt(polygon)
        if not isinstance(polygon, (shapely.Polygon, shapely.MultiPolygon)):
            raise QueryError(f"A polygon query needs a Polygon or MultiPolygon, got {type(polygon).__name__}.")
        g = self._s.grid
        geom = to_crs_geom(polygon, crs, g.crs) if crs is not None else polygon
        ex0, ey0, ex1, ey1 = g.extent()
        if not geom.intersects(shapely.box(ex0, ey0, ex1, ey1)):
            raise QueryError(f"The polygon (bounds {tuple(round(b, 1) for b in geom.bounds)}) does not overlap the "
                             f"embedding cube (x {ex0:.0f}…{ex1:.0f}, y {ey0:.0f}…{ey1:.0f} in "
                             f"{g.crs.to_string()}); draw it on the coloured layers or pass its crs=.")
        hits = self.run({"polygon": geom})
        c = geom.representative_point()
        self.polygon, self.positives, self.negatives = geom, [(c.x, c.y)], []
        self.draw_markers()
        return hits

    def run(self, query: dict):
        """Resolve ``query`` once (at the timestep shown), search, and draw its layers."""
        s = self._s
        t0 = _time.perf_counter()
        query = {k: v for k, v in query.items() if k != "time"}
        if s.time.label is not None:
            query["time"] = s.time.label
        idx = s.index
        t1 = _time.perf_counter()
        q, _ = idx.query_vector(**query)  # point → patch → stored vector: the one resolve of this query
        hits = idx.search(vector=q, k=s.k)
        ov_sim = _similarity(s.grid.ov, q)
        s.timings["click_search"] = _time.perf_counter() - t1
        self.query, self.vector, self.hits = query, q, hits
        self._full = ov_sim if s.grid.stride == 1 else None
        self.ov_similarity = s.time.flat(ov_sim)
        self.draw_similarity()
        if self.threshold is not None:
            self.set_threshold(self.threshold)
        s.notes.say(f"Top {len(hits)} of {idx.ntotal} patches; best score {float(hits['score'].iloc[0]):.3f}.")
        s.timings["click"] = _time.perf_counter() - t0
        return hits

    def rerun(self):
        """The same query at the timestep shown now (None without a query)."""
        if self.query is None:
            return None
        hits = self.run(self.query)
        self.draw_markers()
        return hits

    @property
    def similarity(self) -> xr.DataArray | None:
        """Cosine similarity of the query on the full embedding grid (lazy for dask cubes)."""
        if self.vector is None:
            return None
        if self._full is None:
            self._full = _similarity(self._s.grid.emb, self.vector)
        return self._full

    def clear(self) -> None:
        s = self._s
        self.positives, self.negatives, self.polygon = [], [], None
        self.query, self.vector, self.hits, self.ov_similarity, self._full = None, None, None, None, None
        for name in ("similarity", "similarity detail", "matches"):
            s.remove_layer(name)
        s.scene.control("similarity", None)
        s.scene.set_markers("hits", [])
        s.notes.set_matches("")

    # ---- drawing -------------------------------------------------------------------------------
    def draw_similarity(self) -> None:
        from eoembed.explore.layers import similarity_range
        from eoembed.viz import colormap_indexed

        s = self._s
        v = self.ov_similarity.values
        vmin, vmax = similarity_range(v)
        s.draw("similarity", self.ov_similarity, *colormap_indexed(v, vmin, vmax, s.cmap))
        s.scene.control("similarity", ColorBar(vmin, vmax, s.cmap, "cosine similarity"))

    def draw_markers(self) -> None:
        """Hits (magenta, the best larger), positives (green), negatives (red) and the polygon, in lon/lat."""
        import shapely

        crs = self._s.grid.crs
        pts = [] if self.hits is None else [
            (x, y, "#ff00ff", 7 if i == 0 else 5)
            for i, (x, y) in enumerate(zip(self.hits["x"].to_numpy(), self.hits["y"].to_numpy()))]
        pos = self.positives[1:] if self.polygon is not None else self.positives
        pts += [(x, y, "#00c853", 9) for x, y in pos] + [(x, y, "#d50000", 9) for x, y in self.negatives]
        feats = []
        if pts:
            lon, lat = to_crs_xy([p[0] for p in pts], [p[1] for p in pts], crs, "EPSG:4326")
            for (_, _, col, rad), lo, la in zip(pts, lon, lat):
                feats.append(point_feature(lo, la, {"fillColor": col, "radius": rad,
                                                    "color": "#000000" if rad == 9 else "#ffffff"}))
        if self.polygon is not None:
            g = to_crs_geom(self.polygon, crs, "EPSG:4326")
            feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(g),
                          "properties": {"query": "polygon"}})
        self._s.scene.set_markers("hits", feats)

    # ---- threshold and export -------------------------------------------------------------------
    def set_threshold(self, value: float | None) -> int:
        from eoembed.viz import rgb_to_rgba

        s = self._s
        if value is None:
            self.threshold = None
            s.remove_layer("matches")
            s.notes.set_matches("")
            return 0
        value = float(value)
        if not -1.0 <= value <= 1.0:
            raise ParameterError(f"The threshold is a cosine similarity in [-1, 1], got {value}.")
        self.threshold = value
        if self.query is None:
            return 0
        sim = self.ov_similarity.values
        hit = np.isfinite(sim) & (sim >= value)
        one = np.where(hit, 1.0, np.nan).astype(np.float32)
        rgb = np.stack([one, one * 0.55, np.where(hit, 0.0, np.nan)])
        s.draw("matches", self.ov_similarity.where(hit), rgb_to_rgba(rgb))
        n = int(self.match_mask().sum()) if s.grid.stride == 1 else None
        shown = int(hit.sum())
        s.notes.set_matches(f"<div style='font-size:12px'>{shown if n is None else n} patches ≥ {value:.3f}"
                            f"{' (overview)' if n is None else ''}</div>")
        return shown if n is None else n

    def match_mask(self) -> xr.DataArray:
        if self.query is None:
            raise QueryError("No query yet: click the map or draw a polygon, then set the threshold.")
        if self.threshold is None:
            raise ParameterError("No threshold set: move the slider or call ex.set_threshold(0.8).")
        return (self._s.time.flat(self.similarity) >= self.threshold).compute()

    @property
    def matches(self):
        """GeoDataFrame of the patches at or above the threshold: ``row, col, x, y, score`` and the
        patch square as geometry (embedding CRS). Computed on the full grid."""
        import geopandas as gpd
        import shapely

        g = self._s.grid
        mask = self.match_mask()
        rows, cols = np.nonzero(mask.values)
        sim = np.asarray(self._s.time.flat(self.similarity).values)
        a, _, c, _, e, f = g.transform
        x0, y0 = c + a * cols, f + e * rows
        geom = shapely.box(np.minimum(x0, x0 + a), np.minimum(y0, y0 + e), np.maximum(x0, x0 + a),
                           np.maximum(y0, y0 + e))
        order = np.argsort(-sim[rows, cols], kind="stable")
        return gpd.GeoDataFrame({"row": rows[order], "col": cols[order],
                                 "x": g.emb["x"].values[cols[order]], "y": g.emb["y"].values[rows[order]],
                                 "score": sim[rows, cols][order].astype(np.float32)},
                                geometry=np.asarray(geom)[order], crs=g.crs)

    def export_matches(self, path: str | os.PathLike) -> str:
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
        self._s.notes.say(f"Exported {len(gdf)} matches to {path}.")
        return path
