"""The map explorer: click or draw on a map to search, label, train, and see the embedding space.

``emb.eo.explore(cube)`` returns an :class:`Explorer`: a widget-free
:class:`~eoembed.explore.state.ExplorerState` (query, labels, classifier, time, threshold,
sessions, layers as data) rendered by an :class:`~eoembed.explore.view.ExplorerView` (a
``leafmap.Map`` — or the map you pass as ``m=`` — and a side panel: mode, class, buttons,
basemap picker, threshold slider and export, CV report, hits, hit gallery, session
save/load and a linked bqplot scatter of the embeddings). Every user action is a public
method of the state that the widget callbacks call through the explorer —
:meth:`~Explorer.click`, :meth:`~Explorer.query_polygon`, :meth:`~Explorer.label`,
:meth:`~Explorer.train`, :meth:`~Explorer.clear`, :meth:`~Explorer.select`,
:meth:`~Explorer.set_threshold`, :meth:`~Explorer.export_matches`, :meth:`~Explorer.split`,
:meth:`~Explorer.gallery`, :meth:`~Explorer.save_session`, and on cubes with time
(``pool_time=False``) :meth:`~Explorer.set_time` and :meth:`~Explorer.trajectory_at` — so
notebooks and tests drive exactly what a click does. :func:`add_layers` puts the same
layers on any leafmap/ipyleaflet map.

Where things are
----------------
State (no widget import):

* :mod:`~eoembed.explore.state` — :class:`ExplorerState`, the public actions, composing:
* :mod:`~eoembed.explore.display` — the cube, its display grid (overview, pyramid levels,
  zoomed-in windows), the Web Mercator warp, the PCA-RGB projection.
* :mod:`~eoembed.explore.search` — the query, resolved once by the index; hits, similarity,
  threshold, matches, export.
* :mod:`~eoembed.explore.labelling` — labels, autosave, few-shot training and CV report.
* :mod:`~eoembed.explore.analyses` — clusters, change, regression layers.
* :mod:`~eoembed.explore.timeline` — the timestep shown; :mod:`~eoembed.explore.scatter` —
  the embedding view's data; :mod:`~eoembed.explore.gallery` — hit chips;
  :mod:`~eoembed.explore.session` — sessions; :mod:`~eoembed.explore.model` — layers,
  colour bars, legends, markers as data.
* :mod:`~eoembed.explore.layers` — images of each layer kind, :func:`add_layers`.

View: :mod:`~eoembed.explore.view` (map, sync), :mod:`~eoembed.explore.panel` (panel widgets),
:mod:`~eoembed.explore.plots` (bqplot figures), :mod:`~eoembed.explore.explorer` (the
:class:`Explorer` widget).

Design notes
------------
* **Screen resolution.** Layers are drawn from an *overview* of the embedding cube
  (every ``s``-th patch so that the long side is at most ``max_pixels``); a dask-backed
  cube is computed for the overview only, and sent as a PNG data URL ``ImageOverlay``
  (no tile server or network; see :mod:`eoembed.explore.layers` for why).
* **No basemap by default** (works offline, no API keys); ``basemap="osm"``, ``"esri"``
  or any xyzservices provider name adds one, as does the panel's basemap picker.
* **One index, one copy of the vectors.** The :class:`~eoembed.index.EmbeddingIndex` is
  built on first use (first click) with :func:`eoembed.index.build_index` — or pass
  ``index=`` — and reused; a click is resolved once by it (point → patch → stored vector)
  and every layer of the query is computed from that vector.
* **Errors** raised inside widget callbacks are logged (``logging.getLogger(
  "eoembed.explore")``), shown in red in the panel and kept in ``ex.last_error``;
  the widget stays usable. Called directly, the public methods raise.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import xarray as xr

from eoembed.explore._deps import _require_viz
from eoembed.explore.layers import add_layers

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.explorer import Explorer
    from eoembed.explore.state import ExplorerState

__all__ = ["Explorer", "ExplorerState", "add_layers", "explore"]

def __getattr__(name: str):
    """``Explorer`` (needs the widget libraries) and ``ExplorerState`` are imported when first used."""
    if name == "Explorer":
        _require_viz()
        from eoembed.explore.explorer import Explorer

        return Explorer
    if name == "ExplorerState":
        from eoembed.explore.state import ExplorerState

        return ExplorerState
    raise AttributeError(f"module 'eoembed.explore' has no attribute {name!r}")


def explore(emb: xr.DataArray, cube: xr.DataArray | None = None, *, basemap: Any = None, k: int = 20,
            labels: Any = None, m: Any = None, session: Any = None, pyramid: Any = None,
            **kwargs: Any) -> "Explorer":
    """Open the interactive map explorer on an embedding cube.

    Parameters
    ----------
    emb:
        Embedding cube ``(time?, embedding, y, x)`` (numpy or dask; only an overview of
        at most ``max_pixels`` per side is read for display), or a store's path. A cube
        opened from a store (:func:`eoembed.io.open_embeddings`) reuses the search index
        saved beside it (``<store>.index``, see :mod:`eoembed.index.saved`; built and saved
        by the first click otherwise, or ahead by ``eoembed index STORE``) and its pyramid
        ``<store>.pyramid`` when there is one. A dask cube too large for a direct overview
        without a pyramid gets a warning with the read time and the fix.
    cube:
        The input cube (``band`` dim with B04/B03/B02 or red/green/blue); adds a
        true-colour layer (2–98 % per-band stretch; median over time) and enables the
        hit gallery (:meth:`Explorer.gallery`).
    basemap:
        ``None`` (default: blank, offline, no API key), ``"osm"``, ``"esri"``, an
        xyzservices provider name (``"OpenTopoMap"``), a ``TileProvider`` or an
        ``ipyleaflet.TileLayer``. The panel's picker changes it later.
    k:
        Number of hits per search.
    labels:
        A GeoDataFrame with a ``class`` column, or a path (GeoJSON): loaded if it
        exists, and every new label is autosaved there.
    m:
        A ``leafmap.Map`` (or ``ipyleaflet.Map``) of your own to put the explorer's
        layers and tools on; default a new ``leafmap.Map`` without basemap.
    session:
        A session file written by :meth:`Explorer.save_session` to restore.
    pyramid:
        A pyramid written by :func:`eoembed.explore.pyramid.write_pyramid` (its path or
        levels): the layers are drawn from its finest level that fits ``max_pixels``
        instead of a strided read of the full cube (for large dask/Zarr cubes).
    **kwargs:
        ``index=`` (a prebuilt :class:`~eoembed.index.EmbeddingIndex`),
        ``index_kwargs=`` (for :func:`~eoembed.index.build_index`), ``fewshot_kwargs=``
        (for :func:`~eoembed.classify.fewshot`), ``max_pixels=1024``,
        ``scatter="pca" | "umap" | None``, ``scatter_sample=2000``, ``cmap="viridis"``,
        ``time=`` (timestep shown and searched for cubes with time — a label, date string or
        position; default the mean of all; the panel's time slider and
        :meth:`Explorer.set_time` change it), ``height="560px"``.

    Returns
    -------
    Explorer
        An ipywidgets widget; display it, then click. Its methods ``click``,
        ``query_polygon``, ``label``, ``train``, ``clear``, ``select``,
        ``set_threshold``, ``export_matches``, ``split``, ``gallery``,
        ``save_session`` and, for cubes with time, ``set_time``, ``trajectory_at`` and
        ``split_dates`` do what the widgets do.

    Raises
    ------
    MissingOptionalDependency
        The ``viz`` extra is not installed (``pip install 'eoembed[viz]'``).
    DimensionError
        ``time=`` given for a cube without a ``time`` dim.
    ParameterError
        ``time=`` not one of the cube's timesteps, or another bad option.
    """
    _require_viz()
    from eoembed.explore.explorer import Explorer

    if isinstance(emb, (str, os.PathLike)):  # a store: opened lazily; its saved index and pyramid are found
        from eoembed.io import open_embeddings

        emb = open_embeddings(emb)

    return Explorer(emb, cube, basemap=basemap, k=k, labels=labels, m=m, session=session, pyramid=pyramid,
                    **kwargs)
