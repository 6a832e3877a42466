"""Zoomed-in detail: the map's view drawn from the finest source that fits the display grid.

The overview layers show the whole cube at ``max_pixels``; when the view covers less,
``"PCA-RGB detail"`` (and ``"similarity detail"`` with a query, from the query's vector)
is drawn over it from the cube or a pyramid level, reading only that window
(:meth:`eoembed.explore.display.DisplayGrid.window`).
"""

from __future__ import annotations

import time as _time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.state import ExplorerState

__all__ = ["refine"]


def refine(s: "ExplorerState", bounds) -> str | None:
    """See :meth:`eoembed.explore.state.ExplorerState.refine_view`."""
    from eoembed.explore.layers import pca_rgb_2d, similarity_range, warp_for
    from eoembed.index.similarity import similarity_map
    from eoembed.viz import colormap_indexed, rgb_to_rgba

    t0 = _time.perf_counter()
    if not bounds or len(bounds) != 2:
        return None
    g, q = s.grid, s.search.vector
    factor, win = g.window(bounds)
    if win is None or (g.pca_cog is not None and q is None):  # nothing finer (or the PCA tiles hold it)
        for name in ("PCA-RGB detail", "similarity detail") if win is None else ("similarity detail",):
            s.remove_layer(name)
        return None
    warp = warp_for(win, g.max_pixels)
    if g.pca_cog is None:
        rgb = pca_rgb_2d(g.proj, s.time.flat(win))
        s.draw("PCA-RGB detail", rgb, rgb_to_rgba(rgb.values), warp=warp)
    if q is not None:
        sim = s.time.flat(similarity_map(win, q))
        vmin, vmax = similarity_range(s.search.ov_similarity.values)  # the overview's colour bar holds
        s.draw("similarity detail", sim, *colormap_indexed(sim.values, vmin, vmax, s.cmap), warp=warp)
    else:
        s.remove_layer("similarity detail")
    s.timings["refine_view"] = _time.perf_counter() - t0
    return f"1/{factor}"
