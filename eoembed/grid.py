"""The global patch grid and the windows that cover it: the one owner of tiling.

Output patches sit on the cube's own grid: patch ``(i, j)`` covers pixels
``[i*P, (i+1)*P) × [j*P, (j+1)*P)``. Encoder *windows* sit on a grid anchored in the
CRS, not at the cube's corner: window ``k`` has its *core* at global pixel rows
``[k*S, (k+1)*S)`` (``S = tile_size - 2*halo``, the stride), global pixel row ``G`` being
``y / pixel_height`` of the pixel's edge (the CRS origin is global pixel 0). A cube whose
first row is global pixel ``G0`` therefore has its window cores at cube rows
``k*S - offset`` with ``offset = G0 mod S``: two cubes of one place (an AOI and a larger
one, two dates, two users) share windows, so their patches get the same vectors whatever
either cube's extent. Windows that cross the cube's edge see masked (missing) tokens,
never invented pixels. A cube whose origin is not on the global ``P``-pixel patch grid
gets its windows snapped to its own nearest patch boundary, with a warning
(:class:`GridAlignmentWarning`).

Each window sees ``halo`` more pixels on each side of its core (``tile_size`` in all).
Two ways to turn window outputs into one vector per patch:

* ``blend=False`` (hard tiling): each patch takes the output of the one window whose
  core holds it; the halo is context only.
* ``blend=True``: each patch is the weighted mean of every window that contains it,
  with weights that ramp down linearly over the ``2*halo`` pixels where windows
  overlap (a linear cross-fade), so tile borders fade instead of jumping. Same windows,
  same encoder cost as hard tiling.

Both rules are global, so results never depend on how the work is chunked or where the
cube starts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

import numpy as np
from affine import Affine
from rioxarray.rioxarray import affine_to_coords

from eoembed.exceptions import ParameterError, TooSmallError, user_stacklevel


#: Version of the attrs :meth:`GridSpec.to_attrs` writes: 2 = every length in pixels, input shape and transform
#: recorded. Attrs without ``eoembed:grid_version`` (version 1) held ``eoembed:window_offset`` in patches.
GRID_ATTRS_VERSION = 2


class GridAlignmentWarning(UserWarning):
    """The cube's origin is not on the global patch grid; windows were snapped to its own patches."""


@dataclass(frozen=True)
class Tiling:
    """A family's default window layout, in patches (tokens per side), so it holds at any patch size.

    Only a default: :func:`default_tiling` turns it into pixels for the patch size at hand, and
    every grid built from it (:class:`GridSpec`, the attrs, :class:`eoembed.encode.TileBatch`)
    counts pixels.
    """

    window: int  # window side, halo included
    halo: int  # patches of context on each side of the core (the cross-fade when blending)
    blend: bool = False


#: Default tiling per model family, chosen by ``benchmarks/bench_tiling_sweep.py``
#: (docs/tiling-and-position.md, "Choosing the default"): window in {4, 6, 8, 12, 16} patches x
#: halo in {0, 1, 2} x blend at p = 4, ranked by encoder GMACs per km^2; the default is the
#: cheapest neutral-position tiling whose seams are not visible against a null lattice, whose
#: same-position hits stay <= 2x chance and (real weights) whose few-shot balanced accuracy is
#: not worse than the best by ``eoembed.stats.compare``. Galileo-Nano (real weights): 6-patch
#: windows, 1-patch blended halo (108 GMAC/km^2; the former 12-patch default 202). OlmoEarth
#: v1.1 Nano (published layout): 8-patch windows, 1-patch blended halo (8.1 vs 9.2). OlmoEarth
#: v1.2 (relative positions, its own run): 6-patch windows, 1-patch blended halo (8.6; its 8-patch
#: blend put same-position hits at 2.2x chance). Hard windows show their borders in all three.
#: Keys are a family, or ``family-version`` where a version differs (:func:`tiling_key`). Presto
#: is per pixel (no spatial context); unlisted families get non-overlapping 16-patch windows.
DEFAULT_TILING: dict[str, Tiling] = {
    "default": Tiling(window=16, halo=0, blend=False),
    "galileo": Tiling(window=6, halo=1, blend=True),
    "olmoearth": Tiling(window=8, halo=1, blend=True),
    "olmoearth-v1.2": Tiling(window=6, halo=1, blend=True),
    "presto": Tiling(window=16, halo=0, blend=False),
    "spectral": Tiling(window=16, halo=0, blend=False),
}


def tiling_key(spec) -> str:
    """The :data:`DEFAULT_TILING` key of a model spec: ``family-version`` when the table has one, else the family."""
    versioned = f"{spec.family}-{getattr(spec, 'version', '')}"
    return versioned if versioned in DEFAULT_TILING else spec.family


def default_tiling(family, patch_size: int, *, tile_size: int | None = None, halo: int | None = None,
                   blend: bool | None = None) -> tuple[int, int, bool]:
    """``(tile_size, halo, blend)`` in pixels for ``family`` (a :data:`DEFAULT_TILING` key, or a model spec)
    at ``patch_size``.

    Values the caller gave win; the family default fills the rest. When only ``halo`` is
    given, the default stride (core) is kept and the window grows by the halo; when only
    ``tile_size`` is given, the default halo is kept.
    """
    if not isinstance(family, str):
        family = tiling_key(family)
    d = DEFAULT_TILING.get(family, DEFAULT_TILING["default"])
    p = int(patch_size)
    h = d.halo * p if halo is None else int(halo)
    if tile_size is None:
        tile_size = (d.window - 2 * d.halo) * p + 2 * h
    elif halo is None and int(tile_size) - 2 * h < p:
        h = 0  # a window too small for the default halo: no halo
    return int(tile_size), int(h), d.blend if blend is None else bool(blend)


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
        Window side in pixels, halo included (multiple of P).
    halo:
        Context pixels on each side of a window's core (multiple of P, < tile_size / 2).
    blend:
        Blend overlapping windows (see the module docstring) instead of keeping cores only.
    offset_y, offset_x:
        Window phase: the first window core starts ``offset`` pixels before the cube's
        first row/column (``0 <= offset < core``, a multiple of P). :func:`grid_from_cube`
        sets it from the cube's position in the CRS.
    """

    transform: Affine
    height: int
    width: int
    patch_size: int
    tile_size: int
    halo: int
    blend: bool = False
    offset_y: int = 0
    offset_x: int = 0

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
        for name, off in (("offset_y", self.offset_y), ("offset_x", self.offset_x)):
            if off % p or not 0 <= off < t - 2 * h:
                raise ParameterError(f"{name}={off} must be a multiple of patch_size={p} in [0, core={t - 2 * h})")
        if self.height < p or self.width < p:
            raise TooSmallError(
                f"the cube is {self.height}×{self.width} pixels, smaller than one "
                f"{p}×{p} patch. Use a larger area or a smaller patch_size."
            )

    # -- sizes ------------------------------------------------------------------------
    @property
    def core(self) -> int:
        """Core side of a window in pixels = the stride between windows."""
        return self.tile_size - 2 * self.halo

    @property
    def patches_y(self) -> int:
        """Output rows: every pixel row belongs to a patch (the last may be partial)."""
        return math.ceil(self.height / self.patch_size)

    @property
    def patches_x(self) -> int:
        return math.ceil(self.width / self.patch_size)

    def _span(self, axis: int) -> int:
        """Patch-rounded pixel extent of the output along ``axis``."""
        return (self.patches_y if axis == 0 else self.patches_x) * self.patch_size

    def window_range(self, lo: int, hi: int, axis: int) -> range:
        """Windows ``k`` that contribute to cube pixels ``[lo, hi)`` along ``axis``.

        A window contributes where its weight is positive — its core for hard tiling, its
        whole footprint when blending — and only if its core overlaps the cube: a window
        that would reach the cube with its halo alone sees almost nothing but missing
        pixels, so it is not run (the cube's edge patches take their inner windows only),
        which keeps the window count, and the cost, that of hard tiling.
        """
        s, h, t = self.core, self.halo, self.tile_size
        off = self.offset_y if axis == 0 else self.offset_x
        a, b = (-h, t - h) if self.blend and h else (0, s)  # contributing pixels relative to the core start

        def ks(lo_, hi_, a_, b_):  # core start k*s - off: k*s - off + a_ < hi_ and k*s - off + b_ > lo_
            return (lo_ + off - b_) // s + 1, -((a_ - hi_ - off) // s)  # ceil((hi_ + off - a_) / s)

        k0, k1 = ks(lo, hi, a, b)
        c0, c1 = ks(0, self._span(axis), 0, s)
        return range(max(k0, c0), min(k1, c1))

    @property
    def tiles_y(self) -> int:
        """Windows along y that contribute to the cube."""
        return len(self.window_range(0, self._span(0), 0))

    @property
    def tiles_x(self) -> int:
        return len(self.window_range(0, self._span(1), 1))

    @property
    def n_tiles(self) -> int:
        return self.tiles_y * self.tiles_x

    @property
    def depth(self) -> int:
        """Context pixels a block needs on each side to run every window reaching its patches.

        A window whose weighted part touches a block's first patch may start up to
        ``tile_size - P`` (blending) or ``core + halo - P`` (hard tiling) pixels before it.
        """
        p = self.patch_size
        return self.tile_size - p if self.blend and self.halo else self.core + self.halo - p

    @property
    def seam_spread(self) -> int:
        """Neighbour pairs on each side of a core border a blend spreads the change over."""
        return self.halo // self.patch_size if self.blend else 0

    @property
    def overhead(self) -> float:
        """Encoder tokens per output patch, relative to non-overlapping windows."""
        return (self.tile_size / self.core) ** 2

    def patch_period(self) -> dict:
        """The window grid in output-array units, for diagnostics on ``(..., y, x)`` patch arrays.

        ``{"period": core / P, "offset": (offset_y / P, offset_x / P)}``: patches ``period``
        apart share an in-window position, and the first window core starts ``offset``
        patches before the array's first patch. Pass it on as
        ``position_stats(values, **grid.patch_period())``. The grid itself stays in pixels.
        """
        p = self.patch_size
        return {"period": self.core // p, "offset": (self.offset_y // p, self.offset_x // p)}

    # -- attrs --------------------------------------------------------------------------
    def to_attrs(self) -> dict:
        """The grid as serialisable ``eoembed:`` attrs, every length in pixels (:meth:`from_attrs` reads them back)."""
        return {
            "eoembed:grid_version": GRID_ATTRS_VERSION,
            "eoembed:patch_size": int(self.patch_size),
            "eoembed:tile_size": int(self.tile_size),
            "eoembed:halo": int(self.halo),
            "eoembed:blend": int(bool(self.blend)),
            "eoembed:window_offset": [int(self.offset_y), int(self.offset_x)],
            "eoembed:input_shape": [int(self.height), int(self.width)],
            "eoembed:input_transform": [float(v) for v in tuple(self.transform)[:6]],
        }

    @classmethod
    def from_attrs(cls, attrs, *, patches: tuple[int, int] | None = None,
                   out_transform: Affine | None = None) -> GridSpec:
        """The :class:`GridSpec` an embedding cube's attrs describe (the inverse of :meth:`to_attrs`).

        Attrs written before ``eoembed:grid_version`` 2 (stores from older eoembed) held
        ``eoembed:window_offset`` in patches and no input shape or transform: they are
        read as such, the shape taken from ``patches`` (the cube's ``(y, x)`` sizes) and
        the transform from ``out_transform`` (the embedding grid's; identity when not given).

        Raises
        ------
        GridAttrsError
            A tiling key is missing, a value is not a whole number, or the attrs come from
            a newer eoembed (a grid version this one does not know).
        """
        from eoembed.exceptions import GridAttrsError

        attrs = dict(attrs)
        try:
            version = int(attrs.get("eoembed:grid_version", 1))
            p, t, h = (int(attrs[f"eoembed:{k}"]) for k in ("patch_size", "tile_size", "halo"))
            off = [int(v) for v in attrs.get("eoembed:window_offset", (0, 0))]
        except KeyError as err:
            raise GridAttrsError(
                f"the attrs lack {err.args[0]!r}, so they do not describe an eoembed patch grid; "
                "pass a cube made by eoembed.embed (or opened with eoembed.io.open_embeddings)."
            ) from None
        except (TypeError, ValueError) as err:
            raise GridAttrsError(f"the grid attrs hold a value that is not a whole number: {err}") from None
        if version > GRID_ATTRS_VERSION:
            raise GridAttrsError(
                f"the attrs have eoembed:grid_version={version}, newer than this eoembed reads "
                f"({GRID_ATTRS_VERSION}); upgrade eoembed to open this cube."
            )
        if version < 2:  # window_offset counted patches; no input shape or transform recorded
            off = [v * p for v in off]
        if "eoembed:input_shape" in attrs:
            height, width = (int(v) for v in attrs["eoembed:input_shape"])
        elif patches is not None:
            height, width = (int(v) * p for v in patches)
        else:
            raise GridAttrsError("the attrs hold no eoembed:input_shape (written by an older eoembed); "
                                 "pass patches=(cube.sizes['y'], cube.sizes['x']), or use eoembed.grid.grid_of(cube).")
        if "eoembed:input_transform" in attrs:
            transform = Affine(*(float(v) for v in attrs["eoembed:input_transform"]))
        elif out_transform is not None:
            transform = Affine(*tuple(out_transform)[:6]) @ Affine.scale(1 / p)
        else:
            transform = Affine.identity()
        try:
            return cls(transform=transform, height=height, width=width, patch_size=p, tile_size=t, halo=h,
                       blend=bool(int(attrs.get("eoembed:blend", 0))), offset_y=off[0], offset_x=off[1])
        except ParameterError as err:
            raise GridAttrsError(f"the grid attrs are inconsistent: {err}") from None

    # -- windows ------------------------------------------------------------------------
    def window_weights(self) -> np.ndarray:
        """``(tile_size/P,)`` weight of each patch row/column of a window (2-D = outer product).

        Hard tiling: 1 on the core, 0 on the halo. Blending: a trapezoid that ramps
        linearly over the ``2*halo`` pixels windows share (at most half the window), so
        neighbouring windows' weights sum to 1 across an overlap.
        """
        n, hp, cp = self.tile_size // self.patch_size, self.halo // self.patch_size, self.core // self.patch_size
        u = np.arange(n) + 0.5
        if not self.blend or hp == 0:
            w = np.zeros(n)
            w[hp : hp + cp] = 1.0
            return w
        ramp = min(2 * hp, n / 2)
        return np.clip(np.minimum(u, n - u) / ramp, 0.0, 1.0)

    def block_windows(self, origin: int, core_px: int, axis: int) -> list[tuple[int, int]]:
        """Windows that contribute to a block along one axis.

        ``origin`` is the block's first output pixel in the cube (a multiple of P, any
        phase against the windows) and ``core_px`` its length; the block's pixels start
        ``depth`` before ``origin``. Returns ``(window index, pixel start within the block)``.
        """
        off = self.offset_y if axis == 0 else self.offset_x
        first = origin - self.depth
        out = []
        for k in self.window_range(origin, origin + core_px, axis):
            start = k * self.core - off - self.halo - first
            if start < 0 or start + self.tile_size > core_px + 2 * self.depth:  # never: depth covers it
                raise AssertionError(f"window {k} does not fit the block at {origin} (+{core_px})")
            out.append((k, start))
        return out

    def core_slices(self) -> tuple[slice, slice]:
        """Patch slices of a window's core within the window's own output."""
        hp, cp = self.halo // self.patch_size, self.core // self.patch_size
        return slice(hp, hp + cp), slice(hp, hp + cp)

    # -- georeferencing -----------------------------------------------------------------
    @cached_property
    def out_transform(self) -> Affine:
        """Transform of the embedding grid: one cell per patch."""
        return self.transform @ Affine.scale(self.patch_size)

    def patch_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of patch centres in the source CRS (1-D, along x and y)."""
        c = affine_to_coords(self.out_transform, self.patches_x, self.patches_y)
        return c["x"], c["y"]


def window_offsets(transform: Affine, patch_size: int, core: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Window phase of a cube on the CRS-anchored grid, and how far its origin is off the patch grid.

    Returns ``((offset_y, offset_x), (misalign_y, misalign_x))`` in pixels: windows start
    ``offset`` before the cube's first pixel; ``misalign`` is the cube origin's distance
    (0 … P−1 pixels) from the global patch grid (0 when aligned).
    """
    p = int(patch_size)
    offs, mis = [], []
    # global pixel index of the cube's first row / column: edge coordinate over pixel size
    for edge, size in ((transform.f, transform.e), (transform.c, transform.a)):
        g0 = int(math.floor(edge / size + 0.5)) if size else 0  # sub-pixel phases are shared by a source's cubes
        m = g0 % p
        mis.append(m)
        g0 = g0 - m if m * 2 < p else g0 - m + p  # the nearest patch boundary
        offs.append(g0 % core)
    return (offs[0], offs[1]), (mis[0], mis[1])


def grid_from_cube(cube, *, patch_size: int, tile_size: int, halo: int, blend: bool = False) -> GridSpec:
    """Build the :class:`GridSpec` for a cube with ``x``/``y`` dims and a rioxarray transform.

    Windows are anchored in the CRS (see the module docstring). A cube whose origin is
    not a whole number of patches from the CRS origin gets its windows snapped to its
    own nearest patch boundary and a :class:`GridAlignmentWarning` saying how to align it.
    """
    transform = cube.rio.transform(recalc=True)
    p = int(patch_size)
    core = int(tile_size) - 2 * int(halo)
    (oy, ox), (my, mx) = window_offsets(transform, p, core) if core >= p else ((0, 0), (0, 0))
    if my or mx:
        fix_y, fix_x = (p - my) % p, (p - mx) % p
        warnings.warn(
            f"the cube's origin is {my} px (y) / {mx} px (x) off the global {p}-px patch grid anchored at the "
            f"CRS origin; windows were snapped to the cube's own patches, so its vectors match only cubes with "
            f"the same alignment. To align it, crop: cube.isel(y=slice({fix_y}, None), x=slice({fix_x}, None)) "
            f"(or build the cube on a grid whose origin is a multiple of {p} pixels).",
            GridAlignmentWarning,
            stacklevel=user_stacklevel(),
        )
    return GridSpec(
        transform=transform,
        height=int(cube.sizes["y"]),
        width=int(cube.sizes["x"]),
        patch_size=p,
        tile_size=int(tile_size),
        halo=int(halo),
        blend=bool(blend),
        offset_y=oy,
        offset_x=ox,
    )


def seam_stats(values, core_patches: int, spread: int = 0, offset: tuple[int, int] = (0, 0)) -> dict | None:
    """How visible window borders are in an embedding array (numpy or dask).

    ``values`` is ``(..., y, x)`` with every leading dim part of the vector. Cosine
    distances between horizontal and vertical neighbours are grouped by their phase
    along the window period (``core_patches``); phase 0 is a pair that straddles a core
    border. ``ratio`` is the mean distance of the pairs within ``spread`` phases of a
    border (where a blend spreads the change: ``halo / patch_size``; 0 for hard tiling)
    over the mean of all other pairs: ≈1 means borders are invisible. ``ratio_null`` is the
    same ratio on the lattice shifted half a window (no borders there): read ``ratio``
    against it, not against 1 (neighbour distances vary with the land itself).
    ``cross_over_in`` is phase 0 over the rest. None when the array is too small to hold
    both kinds of pairs. ``offset`` is the window phase in patches (rows, cols): the first
    core starts that many patches before the array. One pass over the data.
    """
    if core_patches < 2 or 2 * spread + 1 >= core_patches:
        return None
    xp_dask = hasattr(values, "dask")
    if xp_dask:
        import dask.array as xp
    else:
        xp = np
    v = values.reshape((-1, *values.shape[-2:])).astype("float32")
    v = v / xp.where((n := xp.sqrt((v * v).sum(axis=0, keepdims=True))) > 0, n, np.nan)  # zero vector: NaN, no 0/0
    d_y = 1.0 - (v[:, :-1, :] * v[:, 1:, :]).sum(axis=0)  # pairs (i, i+1) along y
    d_x = 1.0 - (v[:, :, :-1] * v[:, :, 1:]).sum(axis=0)
    parts = [xp.nansum(d_y, axis=1), xp.isfinite(d_y).sum(axis=1), xp.nansum(d_x, axis=0), xp.isfinite(d_x).sum(axis=0)]
    if xp_dask:
        import dask

        parts = dask.compute(*parts)
    sy, ny, sx, nx = (np.asarray(a, dtype="float64") for a in parts)
    sums, counts = np.zeros(core_patches), np.zeros(core_patches)
    for s, n, off in ((sy, ny, offset[0]), (sx, nx, offset[1])):
        phase = (np.arange(s.size) + 1 + off) % core_patches
        np.add.at(sums, phase, s)
        np.add.at(counts, phase, n)
    zone = np.zeros(core_patches, bool)
    zone[[k % core_patches for k in range(-spread, spread + 1)]] = True
    if counts[zone].sum() == 0 or counts[~zone].sum() == 0 or counts[1:].sum() == 0:
        return None
    rest = sums[~zone].sum() / counts[~zone].sum()
    in_tile = sums[1:].sum() / counts[1:].sum()
    # the null: the same statistic on a lattice of the same period shifted half a window, where there is
    # no border; a model without windows (or with invisible borders) scores the same on both
    nzone = np.roll(zone, core_patches // 2)
    with np.errstate(invalid="ignore", divide="ignore"):  # an array too small for the shifted lattice: NaN
        null = (sums[nzone].sum() / counts[nzone].sum()) / (sums[~nzone].sum() / counts[~nzone].sum())
    return {
        "ratio": float(sums[zone].sum() / counts[zone].sum() / rest),
        "ratio_null": float(null),
        "cross_tile": float(sums[0] / max(counts[0], 1)),
        "in_tile": float(in_tile),
        "cross_over_in": float(sums[0] / max(counts[0], 1) / in_tile),
        "pairs": [int(counts[zone].sum()), int(counts[~zone].sum())],
    }


def grid_of(emb) -> GridSpec:
    """The :class:`GridSpec` of an embedding cube (a DataArray from :func:`eoembed.embed` or a store).

    Reads its attrs with :meth:`GridSpec.from_attrs` (a cube written by an older eoembed
    takes its shape and transform from the cube itself), then places the grid on *this*
    cube: a crop (``emb.isel(y=..., x=...)``) keeps its parent's attrs, so its shape,
    transform and window phase are taken from its own coordinates.
    """
    ny, nx = int(emb.sizes["y"]), int(emb.sizes["x"])
    try:
        out_t = emb.rio.transform(recalc=True)
    except Exception:  # noqa: BLE001  (not georeferenced, or one patch wide: the recorded grid)
        out_t = None
    g = GridSpec.from_attrs(emb.attrs, patches=(ny, nx), out_transform=out_t)
    if out_t is None:
        return g
    p, s = g.patch_size, g.core
    t = Affine(*tuple(out_t)[:6]) @ Affine.scale(1 / p)
    dy = round((t.f - g.transform.f) / g.transform.e) if g.transform.e else 0  # pixels from the recorded origin
    dx = round((t.c - g.transform.c) / g.transform.a) if g.transform.a else 0
    if (dy, dx) == (0, 0) and (g.patches_y, g.patches_x) == (ny, nx):
        return g
    return replace(g, transform=t, height=min(g.height - dy, ny * p) if dy >= 0 else ny * p,
                   width=min(g.width - dx, nx * p) if dx >= 0 else nx * p,
                   offset_y=(g.offset_y + dy) % s, offset_x=(g.offset_x + dx) % s)


def diagnostics(values, grid: GridSpec) -> dict:
    """Seam and position diagnostics of an embedding array as ``eoembed:`` attrs: the one place they are computed.

    ``values`` is the ``(..., y, x)`` result (numpy, or dask: a store read back) of a run on
    ``grid``. Seams (:func:`seam_stats`: ``eoembed:seam_ratio``, ``eoembed:seam_cross_over_in``)
    are measured over the whole array in one pass; the position bias
    (:func:`eoembed.position.position_attrs`) on a crop of at most
    :data:`eoembed.position.ATTRS_MAX_PATCHES` ² patches at its centre. Both ``embed`` (numpy
    results) and ``eoembed.io.to_zarr`` (stores) call this, so a cube and its store carry
    the same figures.
    """
    from eoembed.position import position_attrs

    ph = grid.patch_period()
    out = {}
    with _one_blas_thread():
        stats = seam_stats(values, ph["period"], grid.seam_spread, ph["offset"])
        if stats is not None:
            out["eoembed:seam_ratio"] = round(stats["ratio"], 4)
            if np.isfinite(stats["ratio_null"]):
                out["eoembed:seam_ratio_null"] = round(stats["ratio_null"], 4)
            out["eoembed:seam_cross_over_in"] = round(stats["cross_over_in"], 4)
        out.update(position_attrs(values, ph["period"], ph["offset"]))
    return out


def _one_blas_thread():
    """BLAS/LAPACK on one thread for the small diagnostic products (threadpoolctl when installed).

    Measured here: a 128 × 128 ``eigh`` took 15 ms on one thread and 0.4–0.7 s with OpenBLAS's
    threads spinning against torch's and other processes' on a loaded 2-core machine.
    """
    ctl = _blas_controller()
    if ctl is None:  # an optional speed-up: without threadpoolctl the products run as configured
        from contextlib import nullcontext

        return nullcontext()
    return ctl.limit(limits=1, user_api="blas")


@lru_cache(maxsize=1)
def _blas_controller():
    """One threadpoolctl controller per process (finding the loaded libraries costs ~5 ms a call)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()
