"""Analyses on the explorer's map (:mod:`eoembed.analysis`): clusters, change, regression.

Each runs the library function on the cube, keeps its result, and draws it on the
display grid with its legend or colour bar.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from eoembed.explore.model import ColorBar, Legend

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.state import ExplorerState

__all__ = ["Analyses"]


class Analyses:
    """Results of :meth:`show_clusters`, :meth:`show_change` and :meth:`regress` (None until run)."""

    def __init__(self, state: "ExplorerState") -> None:
        self._s = state
        self.clusters = None
        self.change_result = None
        self.regression = None

    def show_clusters(self, k: int | None = None, **cluster_kwargs: Any):
        from eoembed.analysis import cluster
        from eoembed.explore.timeline import time_label
        from eoembed.viz import categorical_indexed, class_color

        s = self._s
        emb = s.grid.emb
        if "time" in emb.dims and cluster_kwargs.get("time") is None:
            if s.time.label is not None:  # the date shown on the map
                cluster_kwargs["time"] = s.time.label
            else:  # the mean view: cluster what the map shows, the mean vector of each patch over time
                cluster_kwargs.pop("time", None)
                emb = emb.mean("time", keep_attrs=True)
        cm = cluster(emb, k=k, **cluster_kwargs)
        self.clusters = cm
        ov = cm.sel(y=s.grid.ov["y"], x=s.grid.ov["x"]).compute()
        ids = list(range(int(cm.attrs["eoembed:cluster_k"])))  # labels 0..k-1 (no need to read the whole map)
        names = [f"cluster {i}" for i in ids]
        colors = [class_color(i) for i in ids]
        when = cluster_kwargs.get("time")
        title = "clusters" + (s.time.suffix() if when is None else f" {time_label(s.time.resolve(when)[0])}")
        s.draw("clusters", ov, *categorical_indexed(ov.values, ids, colors), title=title)
        s.scene.control("clusters", Legend(tuple(names), tuple(colors), "clusters", position="topright"))
        s.notes.say(f"{len(ids)} clusters (k by {cm.attrs.get('eoembed:cluster_criterion', 'the caller')}); "
                    "label_cluster(i, name) turns one into labels.")
        return cm

    def show_change(self, other: Any = None, *, time: Any = None, threshold: Any = "otsu"):
        from eoembed.analysis import change
        from eoembed.viz import colormap_indexed

        s = self._s
        res = change(s.grid.emb, other, time=time, threshold=threshold)
        self.change_result = res
        dist = res.distance.sel(y=s.grid.ov["y"], x=s.grid.ov["x"]).compute()
        v = dist.values
        # colour bar top rounded up to 3 decimals, so that its end label is short (as for similarity)
        vmax = math.ceil(float(np.nanmax(v)) * 1000) / 1000 if np.isfinite(v).any() else 1.0
        top = max(vmax, 1e-6)
        s.draw("change", dist, *colormap_indexed(v, 0.0, top, "inferno"))
        s.scene.control("change", ColorBar(0.0, top, "inferno", "cosine distance (change)", position="topright"))
        s.notes.say(f"Change: threshold {res.threshold:.3f} ({res.rule}); {int(res.changed.sum())} patches above it.")
        return res

    def regress(self, targets: Any, *, value: str = "value", estimator: Any = "ridge", **kwargs: Any):
        import html

        from eoembed.analysis import regress
        from eoembed.viz import colormap_indexed

        s = self._s
        if "time" in s.grid.emb.dims and "time" not in kwargs and s.time.label is not None:
            kwargs["time"] = s.time.label
        res = regress(s.grid.emb, targets, value=value, estimator=estimator, **kwargs)
        self.regression = res
        pm = res.predict_map(s.grid.ov).compute()
        pred = pm["prediction"]
        lo, hi = float(pred.attrs["vmin"]), float(pred.attrs["vmax"])
        hi = hi if hi > lo else lo + 1e-6
        units = f" ({res.units})" if res.units else ""
        s.draw("regression", pred, *colormap_indexed(pred.values, lo, hi, "viridis"), title=f"regression: {value}")
        s.scene.control("regression", ColorBar(lo, hi, "viridis", f"predicted {value}{units}"))
        if "uncertainty" in pm:
            unc = pm["uncertainty"]
            v = unc.values[np.isfinite(unc.values)]
            top = float(np.percentile(v, 98)) if v.size else 1.0
            top = top if top > 0 else 1e-6
            s.draw("uncertainty", unc, *colormap_indexed(unc.values, 0.0, top, "magma"), title=f"uncertainty: {value}")
            s.scene.control("uncertainty", ColorBar(0.0, top, "magma", f"uncertainty of {value}{units}",
                                                    position="topright"))
        else:
            s.remove_layer("uncertainty")
            s.scene.control("uncertainty", None)
        s.notes.set_report(f"<pre style='font-size:11px;line-height:1.3'>{html.escape(str(res))}</pre>")
        sm = res.summary()
        s.notes.say(f"Regression of {value} on {len(res.y)} patches: R² {sm.loc['model', 'r2']:+.3f} (pooled out-of-fold) "
                    f"(predict-the-mean {sm.loc['mean baseline', 'r2']:+.3f}), spatial-block CV.")
        return res
