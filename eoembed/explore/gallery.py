"""The hit gallery as data: true-colour PNG chips of the top hits, cut from the input cube."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from eoembed.cube import to_crs_xy
from eoembed.exceptions import ParameterError, QueryError

if TYPE_CHECKING:  # pragma: no cover
    from eoembed.explore.state import ExplorerState

__all__ = ["Chip", "Gallery"]


@dataclass(frozen=True)
class Chip:
    """One hit's chip: PNG bytes, its rank and score."""

    png: bytes
    rank: int
    score: float


class Gallery:
    """Chips of the last query's top ``k`` hits (``size`` input pixels a side); ``on`` once shown,
    after which every query refreshes them."""

    def __init__(self, state: "ExplorerState", cube=None) -> None:
        self._s = state
        self.cube = cube
        self.k, self.size = 8, None
        self.on = False
        self.chips: tuple[Chip, ...] = ()

    def clear(self) -> None:
        self.chips = ()

    def show(self, k: int | None = None, size: int | None = None) -> tuple[Chip, ...]:
        import io

        from PIL import Image

        from eoembed.explore.layers import true_colour_bands
        from eoembed.viz import rgb_to_rgba, robust_stretch

        hits = self._s.search.hits
        if self.cube is None:
            raise ParameterError("The hit gallery cuts chips from the input cube: explore(emb, cube=...).")
        if hits is None:
            raise QueryError("No hits yet: click the map or draw a polygon first.")
        cube = self.cube
        tr = cube.rio.transform()
        k = int(self.k if k is None else k)
        size = self.size if size is None else int(size)
        if size is None:
            size = max(32, int(round(3 * abs(self._s.grid.transform[0]) / abs(tr.a))))
        if size < 4 or k < 1:
            raise ParameterError(f"The gallery needs k >= 1 and size >= 4 pixels, got k={k}, size={size}.")
        self.k, self.size = k, size
        hits = hits.head(k)
        hx, hy = to_crs_xy(hits["x"].to_numpy(), hits["y"].to_numpy(), self._s.grid.crs, cube.rio.crs)
        ny, nx = cube.sizes["y"], cube.sizes["x"]
        rgb = cube.sel(band=true_colour_bands(cube))
        arrays = []
        for x, y in zip(hx, hy):
            col, row = ~tr @ (x, y)
            r0 = int(np.clip(np.floor(row) - size // 2, 0, max(ny - size, 0)))
            c0 = int(np.clip(np.floor(col) - size // 2, 0, max(nx - size, 0)))
            chip = rgb.isel(y=slice(r0, r0 + size), x=slice(c0, c0 + size))
            if "time" in chip.dims:
                chip = chip.median("time", skipna=True)
            arrays.append(np.asarray(chip.transpose("band", "y", "x").values, dtype=np.float32))
        # one stretch for all chips, so their brightness compares
        stack = robust_stretch(np.concatenate([c.reshape(3, -1) for c in arrays], axis=1)[:, None, :], (2, 98))[:, 0]
        chips, at = [], 0
        for (_, hit), arr in zip(hits.iterrows(), arrays):
            n = arr.shape[1] * arr.shape[2]
            img = rgb_to_rgba(stack[:, at:at + n].reshape(arr.shape))
            at += n
            buf = io.BytesIO()
            Image.fromarray(img, mode="RGBA").save(buf, format="PNG")
            chips.append(Chip(buf.getvalue(), int(hit["rank"]), float(hit["score"])))
        self.chips = tuple(chips)
        self.on = True
        return self.chips
