"""The global patch grid and the tiles that cover it.

Patches sit on one grid anchored at the cube's top-left corner: patch ``(i, j)``
covers pixels ``[i*P, (i+1)*P) × [j*P, (j+1)*P)``. Tiles are ``core`` patches plus a
``halo`` of context on each side (both multiples of P); only core patches are kept,
so every patch is embedded exactly once and always with the same context, whatever
the dask chunking. Pixels outside the cube are missing (masked), never invented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine

from eoembed.exceptions import ParameterError, TooSmallError


@dataclass(frozen=True)
class GridSpec:
    """Patch grid and tiling plan for one cube.

    Parameters
    ----------
    transform:
        Pixel transform of the input cube (top-left corner convention).
    height, width:
        Input size in pixels.
    patch_size:
        Pixels per patch side (P).
    tile_size:
        Full tile side in pixels, halo included (multiple of P).
    halo:
        Context pixels on each side of a tile's core (multiple of P, < tile_size / 2).
    """

    transform: Affine
    height: int
    width: int
    patch_size: int
    tile_size: int
    halo: int

    def __post_init__(self) -> None:
        p, t, h = self.patch_size, self.tile_size, self.halo
        if p < 1:
            raise ParameterError(f"patch_size must be >= 1, got {p}")
        if t % p or h % p:
            raise ParameterError(
                f"tile_size ({t}) and halo ({h}) must be multiples of patch_size ({p}); "
                f"try tile_size={max(p, round(t / p) * p)}, halo={round(h / p) * p}"
            )
        if h < 0 or t - 2 * h < p:
            raise ParameterError(
                f"tile_size={t} with halo={h} leaves no core (tile_size - 2*halo must be >= "
                f"patch_size={p}); use a larger tile_size or a smaller halo"
            )
        if self.height < p or self.width < p:
            raise TooSmallError(
                f"the cube is {self.height}×{self.width} pixels, smaller than one "
                f"{p}×{p} patch. Use a larger area or a smaller patch_size."
            )

    @property
    def core(self) -> int:
        """Core side of a tile in pixels."""
        return self.tile_size - 2 * self.halo

    @property
    def patches_y(self) -> int:
        """Output rows: every pixel row belongs to a patch (the last may be partial)."""
        return math.ceil(self.height / self.patch_size)

    @property
    def patches_x(self) -> int:
        return math.ceil(self.width / self.patch_size)

    @property
    def tiles_y(self) -> int:
        return math.ceil(self.height / self.core)

    @property
    def tiles_x(self) -> int:
        return math.ceil(self.width / self.core)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Input size rounded up to whole cores (before adding the halo)."""
        return self.tiles_y * self.core, self.tiles_x * self.core

    @cached_property
    def out_transform(self) -> Affine:
        """Transform of the embedding grid: one cell per patch."""
        return self.transform @ Affine.scale(self.patch_size)

    def patch_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of patch centres in the source CRS (1-D, along x and y)."""
        cols = np.arange(self.patches_x) + 0.5
        rows = np.arange(self.patches_y) + 0.5
        t = self.out_transform
        x = t.c + cols * t.a
        y = t.f + rows * t.e
        return x, y

    @property
    def n_tiles(self) -> int:
        return self.tiles_y * self.tiles_x


def grid_from_cube(cube, *, patch_size: int, tile_size: int, halo: int) -> GridSpec:
    """Build the :class:`GridSpec` for a cube with ``x``/``y`` dims and a rioxarray transform."""
    transform = cube.rio.transform(recalc=True)
    return GridSpec(
        transform=transform,
        height=int(cube.sizes["y"]),
        width=int(cube.sizes["x"]),
        patch_size=int(patch_size),
        tile_size=int(tile_size),
        halo=int(halo),
    )
