"""Labels and few-shot training in the explorer: labelled points, autosave, classifier, CV report."""

from __future__ import annotations

import os
import warnings
from html import escape as _esc
from typing import TYPE_CHECKING, Any

import numpy as np

from eoembed.cube import to_crs_xy
from eoembed.exceptions import LabelError, ParameterError
from eoembed.explore.model import Legend, point_feature

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.state import ExplorerState

__all__ = ["Labels", "report_html"]


def report_html(rep) -> str:
    """The spatial-CV report as a small HTML table (balanced accuracy, per-class rows, notes)."""
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


class Labels:
    """Labelled points (GeoDataFrame ``class``, geometry in the cube CRS), their autosave path,
    class colours, and the classifier trained on them with its CV report."""

    def __init__(self, state: "ExplorerState", labels: Any = None, fewshot_kwargs: dict | None = None) -> None:
        self._s = state
        self.fewshot_kwargs = dict(fewshot_kwargs or {})
        self.path: str | None = None
        self.codes: dict[str, int] = {}
        self.classifier = None
        self.cv_report = None
        self.gdf = self._empty()
        if labels is not None:
            if isinstance(labels, (str, os.PathLike)):
                self.path = os.fspath(labels)
                if os.path.exists(self.path):
                    import geopandas as gpd

                    self.replace(gpd.read_file(self.path))
            else:
                self.replace(labels)

    def _empty(self):
        import geopandas as gpd

        return gpd.GeoDataFrame({"class": np.array([], dtype=object)}, geometry=[], crs=self._s.grid.crs)

    def color(self, name: str) -> str:
        """The class's colour (its first appearance fixes it)."""
        from eoembed.viz import class_color

        if name not in self.codes:
            self.codes[name] = len(self.codes)
        return class_color(self.codes[name])

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in dict.fromkeys(self.gdf["class"])]

    def replace(self, gdf) -> None:
        """Make ``gdf`` (``class`` column, any CRS, any geometry) the labels: points in the cube CRS."""
        import geopandas as gpd

        if not isinstance(gdf, gpd.GeoDataFrame) or "class" not in gdf.columns:
            raise LabelError("labels= must be a path or a GeoDataFrame with a 'class' column and a CRS.")
        if gdf.crs is None:
            raise LabelError("The labels have no CRS; set one with labels.set_crs('EPSG:4326').")
        crs = self._s.grid.crs
        gdf = gdf[["class", "geometry"]].to_crs(crs)
        gdf = gdf.assign(geometry=gdf.geometry.representative_point(), **{"class": gdf["class"].astype(str)})
        self._set(gpd.GeoDataFrame(gdf.reset_index(drop=True), crs=crs), save=False)

    def _set(self, gdf, *, save: bool = True) -> None:
        self.gdf = gdf
        feats = []
        if len(gdf):
            lon, lat = to_crs_xy(gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy(), self._s.grid.crs, "EPSG:4326")
            for lo, la, cls in zip(lon, lat, gdf["class"]):
                # white ring: visible on top of a class map drawn in the same colour
                feats.append(point_feature(lo, la, {"fillColor": self.color(cls), "color": "#ffffff", "weight": 2},
                                           {"class": cls}))
        self._s.scene.set_markers("labels", feats)
        if save and self.path:
            self.save(self.path)

    def add(self, xs, ys, cls: str) -> None:
        import geopandas as gpd
        import pandas as pd

        crs = self._s.grid.crs
        new = gpd.GeoDataFrame({"class": [cls] * len(xs)}, geometry=gpd.points_from_xy(xs, ys), crs=crs)
        self._set(gpd.GeoDataFrame(pd.concat([self.gdf, new], ignore_index=True), crs=crs))

    def label(self, x: float, y: float, cls: str, crs: Any = None):
        cls = str(cls).strip()
        if not cls:
            raise LabelError("The class name is empty; type a class name in the panel (or pass cls='water').")
        g = self._s.grid
        px, py = g.to_emb_crs(x, y, crs)
        g.check_inside(px, py, LabelError, "label")
        self.add([px], [py], cls)
        counts = self.gdf["class"].value_counts()
        self._s.notes.say("Labels: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        return self.gdf.copy()

    def label_cluster(self, clusters, cluster_id: int, cls: str, *, max_patches: int = 50, seed: int = 0):
        if clusters is None:
            raise LabelError("No clusters yet: run ex.show_clusters() first.")
        cls = str(cls).strip()
        if not cls:
            raise LabelError("The class name is empty; pass cls='water' (for example).")
        rows, cols = np.nonzero(np.asarray(clusters.values) == int(cluster_id))
        if rows.size == 0:
            ids = sorted(int(v) for v in np.unique(clusters.values) if v >= 0)
            raise LabelError(f"Cluster {cluster_id} has no patches; the clusters are {ids}.")
        if int(max_patches) < 1:
            raise ParameterError(f"max_patches must be >= 1, got {max_patches}.")
        pick = np.random.default_rng(seed).permutation(rows.size)[: int(max_patches)]
        xs, ys = clusters["x"].values[cols[pick]], clusters["y"].values[rows[pick]]
        self.add(np.asarray(xs, float), np.asarray(ys, float), cls)
        self._s.notes.say(f"Cluster {cluster_id}: {len(pick)} of its {rows.size} patches labelled {cls!r}.")
        return self.gdf.copy()

    def clear(self) -> None:
        self._set(self._empty())

    def save(self, path: str | os.PathLike) -> str:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        self.gdf.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON")
        os.replace(tmp, path)
        self._s.notes.say(f"Saved {len(self.gdf)} labels to {path}.")
        return path

    # ---- training ---------------------------------------------------------------------------------
    def train(self):
        from eoembed.classify import fewshot
        from eoembed.viz import categorical_indexed, colormap_indexed

        s = self._s
        if len(self.gdf) == 0:
            raise LabelError("No labels yet: switch to Label mode and click examples of two or more classes.")
        clf = fewshot(s.grid.emb, self.gdf, class_column="class", **self.fewshot_kwargs)
        self.classifier = clf
        pm = clf.predict_map(s.grid.ov)
        names = [str(c) for c in clf.classes_]
        codes = [int(v) for v in pm["class"].attrs["flag_values"]]
        colors = [self.color(n) for n in names]
        cls2d = s.time.flat(pm["class"]).compute()
        conf = pm["probability"].max("label").compute()
        conf.name = "confidence"
        s.draw("probability", conf, *colormap_indexed(s.time.flat(conf).values, 0.0, 1.0, "magma"))
        s.draw("class", cls2d, *categorical_indexed(cls2d.values, codes, colors))  # on top
        s.scene.control("class", Legend(tuple(names), tuple(colors), "class"))
        try:
            with warnings.catch_warnings():  # fewer folds than asked: the report's notes say so, in the panel
                warnings.simplefilter("ignore", UserWarning)
                self.cv_report = clf.cv_report()
            s.notes.set_report(report_html(self.cv_report))
            s.notes.say(f"Trained on {len(clf.y)} patches; spatial-CV balanced accuracy "
                        f"{self.cv_report.balanced_accuracy:.3f}.")
        except LabelError as err:
            self.cv_report = None
            s.notes.set_report(f"<b>No spatial CV</b>: {_esc(str(err))}")
            s.notes.say(f"Trained on {len(clf.y)} patches (no spatial CV: {err})")
        return clf

