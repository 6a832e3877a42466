"""Explorer sessions: the state's labels, query, threshold, layer styles, basemap, split and date as JSON.

A session is replayed through the state's public methods (labels, clicks, polygon,
train, threshold, split), so a restored explorer is what the same clicks would give.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from eoembed.exceptions import ParameterError
from eoembed.explore.model import feature_collection
from eoembed.validate import check_session

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.state import ExplorerState

__all__ = ["SESSION_VERSION", "load_session", "save_session"]

SESSION_VERSION = 1


def session_dict(s: "ExplorerState") -> dict:
    """The session of state ``s`` as a JSON-ready dict."""
    import shapely

    lab = s.labels_.gdf
    q = s.search
    return {
        "eoembed_session": SESSION_VERSION,
        "crs": s.grid.crs.to_wkt(),
        "shape": list(s.grid.shape),
        "mode": s.mode,
        "labels": json.loads(lab.to_crs("EPSG:4326").to_json()) if len(lab) else feature_collection([]),
        "query": None if q.query is None else {
            "positives": [list(p) for p in q.positives],
            "negatives": [list(p) for p in q.negatives],
            "polygon": None if q.polygon is None else shapely.to_wkt(q.polygon),
        },
        "threshold": q.threshold,
        "trained": s.classifier is not None,
        "layers": {n: dict(st) for n, st in s.scene.styles.items()},
        "basemap": s.basemap_name,
        "split": list(s.split_names) if s.split_names and not s.split_dates_ else None,
        "split_dates": [str(t) for t in s.split_dates_] if s.split_dates_ else None,
        "time": None if s.time.label is None else str(s.time.label),
    }


def save_session(s: "ExplorerState", path: str | os.PathLike) -> str:
    path = os.fspath(path)
    state = session_dict(s)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1)
    os.replace(tmp, path)
    s.notes.say(f"Session saved to {path}.")
    return path


def read_session(s: "ExplorerState", path: str | os.PathLike) -> dict:
    """The session file's dict, checked to belong to this cube's grid."""
    from pyproj import CRS

    path = os.fspath(path)
    try:
        with open(path) as fh:
            state = json.load(fh)
    except FileNotFoundError:
        raise ParameterError(f"No session file at {path!r}; write one with ex.save_session(path).") from None
    except json.JSONDecodeError as err:
        raise ParameterError(f"{path!r} is not a session file (invalid JSON: {err}).") from None
    state = check_session(state, path, version=SESSION_VERSION)
    if not CRS.from_wkt(state["crs"]).equals(s.grid.crs) or list(state["shape"]) != list(s.grid.shape):
        raise ParameterError(f"The session {path!r} was saved on another embedding grid "
                             f"({state['shape']} patches); open it on the cube it was saved from.")
    return state


def load_session(s: "ExplorerState", path: str | os.PathLike) -> None:
    import geopandas as gpd

    state = read_session(s, path)
    _check_query_inside(s, state.get("query"), path)  # before anything in the explorer changes
    feats = state["labels"]["features"]
    if feats:
        gdf = _inside(s, gpd.GeoDataFrame.from_features(feats, crs="EPSG:4326"), path)
        s.labels_.replace(gdf) if len(gdf) else s.labels_.clear()
    else:
        s.labels_.clear()
    s.set_basemap(state.get("basemap") or None)
    if s.time.times is not None:
        s.set_time(s.time.from_text(state.get("time")))
    q = state.get("query")
    s.clear()
    if q:
        if q.get("polygon"):
            s.query_polygon(q["polygon"])
            rest = q["positives"][1:]
        else:
            rest = q["positives"]
        for i, p in enumerate(rest):
            s.click(*p, refine=bool(i) or bool(q.get("polygon")))
        for p in q["negatives"]:
            s.click(*p, negative=True)
    if state.get("trained") and len(s.labels_.gdf):
        s.train()
    s.set_threshold(state.get("threshold"))
    for name, props in state.get("layers", {}).items():
        if name in s.scene.layers:
            s.set_layer_style(name, opacity=props.get("opacity", 1.0), visible=props.get("visible", True))
    if state.get("split"):
        s.split(*state["split"])
    elif state.get("split_dates"):
        s.split_dates(*(s.time.from_text(t) for t in state["split_dates"]))
    s.set_mode(state.get("mode", "search"))
    s.notes.say(f"Session restored from {path}.")


def _inside(s: "ExplorerState", gdf, path):
    """The labels of ``gdf`` that lie on this cube; the others are dropped with a warning naming how many."""
    import warnings

    from eoembed.exceptions import user_stacklevel

    g = gdf.to_crs(s.grid.crs)
    x0, y0, x1, y1 = s.grid.extent()
    pt = g.geometry.representative_point()
    ok = ((pt.x >= x0) & (pt.x < x1) & (pt.y > y0) & (pt.y <= y1)).to_numpy()
    if not ok.all():
        msg = (f"{int((~ok).sum())} of the {len(ok)} labels in the session {os.fspath(path)!r} lie outside this "
               f"cube (x {x0:.0f}…{x1:.0f}, y {y0:.0f}…{y1:.0f}) and were dropped: the session was saved on "
               "another cube of the same grid size. Open it on the cube it was saved from to keep them.")
        warnings.warn(msg, UserWarning, stacklevel=user_stacklevel())
        s.notes.say(msg)
    return gdf[ok].reset_index(drop=True)


def _check_query_inside(s: "ExplorerState", q: dict | None, path) -> None:
    """A session whose query points lie outside this cube is refused whole (labels are dropped one by one)."""
    if not q:
        return
    x0, y0, x1, y1 = s.grid.extent()
    pts = list(q.get("positives") or []) + list(q.get("negatives") or [])
    out = [p for p in pts if not (x0 <= p[0] < x1 and y0 < p[1] <= y1)]
    if out:
        raise ParameterError(
            f"The session {os.fspath(path)!r} holds {len(out)} query point(s) outside this cube, e.g. "
            f"({out[0][0]:.1f}, {out[0][1]:.1f}); the cube covers x {x0:.0f}…{x1:.0f}, y {y0:.0f}…{y1:.0f}. It was "
            "saved on another cube of the same grid size: open it on that cube. Nothing was changed.")
