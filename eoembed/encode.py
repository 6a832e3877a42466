"""From a block of raw pixels to per-patch vectors: numpy in, numpy out.

This is the per-chunk function of the embedding graph. It applies the scale and
harmonization decided up front, finds which patch-timesteps hold data, fills small
gaps inside valid patches, normalizes the model's way, cuts the block into tiles
(core + halo), runs the encoder in batches and keeps the core patches.

Batches are grouped by the number of visible tokens (:meth:`Encoder.group_key`).
The OlmoEarth encoder drops missing tokens per sample and pads to the longest sample
in the batch; with equal counts there is no padding, so a sample's embedding never
depends on which other samples share its batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from eoembed.models.registry import ModelSpec


@dataclass
class TileBatch:
    """A batch of tiles ready for an encoder.

    Attributes
    ----------
    data:
        modality → ``(B, H, W, T, C)`` float32, normalized, the model's band order.
    visible:
        modality → ``(B, H/P, W/P, T)`` bool: the patch-timestep holds data.
    timestamps:
        ``(B, T, 3)`` int64 (day, month 0–11, year).
    patch_size, input_res:
        Pixels per patch and metres per pixel.
    present:
        modality → ``(C,)`` bool: the cube has this band (absent ones were filled).
    lonlat:
        ``(lon, lat)`` in degrees of the cube's centre, for models with location
        encodings (None when unknown).
    """

    data: dict[str, np.ndarray]
    visible: dict[str, np.ndarray]
    timestamps: np.ndarray
    patch_size: int
    input_res: float
    present: dict[str, np.ndarray]
    lonlat: tuple[float, float] | None = None


@runtime_checkable
class Encoder(Protocol):
    """What :func:`embed_block` needs from a model."""

    spec: ModelSpec

    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        """``(..., C)`` values in model units (NaN = missing) → encoder input."""

    def group_key(self, visible: dict[str, np.ndarray]) -> object:
        """Tiles with equal keys may share a batch without changing each other."""

    def encode(self, batch: TileBatch, *, pool_time: bool) -> np.ndarray:
        """``(B, h, w, D)`` (or ``(B, h, w, T, D)``), NaN where nothing was visible."""

    def output_dim(self, plan_bands: dict[str, list[int]], ntime: int, pool_time: bool) -> int:
        """Embedding length for this input."""

    def provenance(self) -> dict:
        """Serialisable attrs describing the model and its weights."""


@dataclass(frozen=True)
class BlockPlan:
    """Everything the per-block function needs besides the pixels (all picklable)."""

    modality_sources: dict[str, list[int]]  # modality → cube band index per model band (-1: absent)
    scale_factor: float  # S2 values × factor = DN
    s2_offsets: tuple[float, ...]  # per-timestep DN offset to subtract (harmonization)
    s1_linear: bool  # S1 given as linear power → convert to dB
    timestamps: tuple[tuple[int, int, int], ...]
    patch_size: int
    tile_size: int
    halo: int
    height: int  # full cube size in pixels (to tell padding from missing data)
    width: int
    min_valid: float
    batch_size: int
    pool_time: bool
    input_res: float
    lonlat: tuple[float, float] | None = None  # cube centre (degrees), for location encodings


def _modality_values(block: np.ndarray, plan: BlockPlan, modality: str) -> np.ndarray:
    """``(T, C, Y, X)`` float32 in model units for one modality; absent bands are NaN."""
    sources = plan.modality_sources[modality]
    t, _, y, x = block.shape
    out = np.full((t, len(sources), y, x), np.nan, dtype="float32")
    for i, s in enumerate(sources):
        if s >= 0:
            out[:, i] = block[:, s]
    if modality == "sentinel2_l2a":
        out *= np.float32(plan.scale_factor)
        offs = np.asarray(plan.s2_offsets, dtype="float32")[:, None, None, None]
        if offs.any():
            out = np.where(np.isfinite(out), np.maximum(out - offs, 0.0), out)
    elif modality == "sentinel1" and plan.s1_linear:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(out > 0, 10.0 * np.log10(out), np.nan).astype("float32")
    return out


def _patch_visibility(
    vals: np.ndarray, present: np.ndarray, inside: np.ndarray, p: int, min_valid: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel validity → patch-timestep visibility, and gap-filled values.

    ``vals`` is ``(T, C, Y, X)`` with Y, X multiples of ``p``; ``present`` flags the
    bands the cube has; ``inside`` is ``(Y, X)``: pixel lies within the cube.
    """
    t, c, y, x = vals.shape
    hp, wp = y // p, x // p
    pix_valid = np.isfinite(vals[:, present]).all(axis=1) if present.any() else np.zeros((t, y, x), bool)
    pv = pix_valid.reshape(t, hp, p, wp, p)
    n_valid = pv.sum(axis=(2, 4))
    n_inside = inside.reshape(hp, p, wp, p).sum(axis=(1, 3))
    visible = (n_valid > 0) & (n_valid >= min_valid * np.maximum(n_inside, 1)[None])
    # fill invalid pixels of visible patches with the patch's per-band mean of valid pixels
    v6 = vals.reshape(t, c, hp, p, wp, p)
    m6 = pv[:, None]  # (t,1,hp,p,wp,p)
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = np.where(m6, v6, 0.0).sum(axis=(3, 5), dtype="float64")
        means = (sums / np.maximum(n_valid[:, None], 1)).astype("float32")
    filled = np.where(m6, v6, means[:, :, :, None, :, None])
    filled = np.where(visible[:, None, :, None, :, None], filled, np.nan)
    filled[:, ~present] = np.nan  # absent bands stay missing for the model's own fill
    return visible, filled.reshape(t, c, y, x)


def embed_block(block: np.ndarray, encoder: Encoder, plan: BlockPlan, origin: tuple[int, int],
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Embed every core tile of one block.

    Parameters
    ----------
    block:
        ``(T, C_cube, Y, X)`` raw cube values; Y and X are whole cores plus the halo
        on each side (out-of-cube pixels are NaN).
    encoder:
        The model.
    plan:
        Scale, harmonization, band and tiling decisions.
    origin:
        Pixel ``(row, col)`` of the block's first *core* pixel in the cube.
    progress:
        Called with the number of tiles finished.

    Returns
    -------
    numpy.ndarray
        ``(D, Y_core/P, X_core/P)`` float32, or ``(T, D, …)`` with ``pool_time=False``.
    """
    p, h, tile = plan.patch_size, plan.halo, plan.tile_size
    core = tile - 2 * h
    ntime, _, by, bx = block.shape
    ys = np.arange(by) + origin[0] - h
    xs = np.arange(bx) + origin[1] - h
    inside = ((ys >= 0) & (ys < plan.height))[:, None] & ((xs >= 0) & (xs < plan.width))[None, :]

    data, vis = {}, {}
    for m in plan.modality_sources:
        vals = _modality_values(block, plan, m)
        present = np.array([s >= 0 for s in plan.modality_sources[m]])
        visible, filled = _patch_visibility(vals, present, inside, p, plan.min_valid)
        # (T, C, Y, X) → (Y, X, T, C) for the normalizer and the encoder
        data[m] = encoder.normalize(m, np.ascontiguousarray(filled.transpose(2, 3, 0, 1)))
        vis[m] = visible.transpose(1, 2, 0)  # (Yp, Xp, T)

    ty, tx = (by - 2 * h) // core, (bx - 2 * h) // core
    cp, hp_, tp = core // p, h // p, tile // p
    ts = np.asarray(plan.timestamps, dtype="int64")
    groups: dict[object, list[tuple[int, int]]] = defaultdict(list)
    for i in range(ty):
        for j in range(tx):
            tv = {m: vis[m][i * cp : i * cp + tp, j * cp : j * cp + tp] for m in vis}
            if not any(v[hp_ : hp_ + cp, hp_ : hp_ + cp].any() for v in tv.values()):
                continue  # nothing to embed in this core
            groups[encoder.group_key(tv)].append((i, j))

    dim = None
    results: dict[tuple[int, int], np.ndarray] = {}
    done = 0
    for key in sorted(groups, key=repr):
        members = groups[key]
        for start in range(0, len(members), plan.batch_size):
            chunk = members[start : start + plan.batch_size]
            batch = TileBatch(
                data={m: np.stack([data[m][i * core : i * core + tile, j * core : j * core + tile] for i, j in chunk])
                      for m in data},
                visible={m: np.stack([vis[m][i * cp : i * cp + tp, j * cp : j * cp + tp] for i, j in chunk])
                         for m in vis},
                timestamps=np.broadcast_to(ts, (len(chunk), *ts.shape)).copy(),
                patch_size=p,
                input_res=plan.input_res,
                present={m: np.array([s >= 0 for s in plan.modality_sources[m]]) for m in data},
                lonlat=plan.lonlat,
            )
            out = encoder.encode(batch, pool_time=plan.pool_time)
            for k, ij in enumerate(chunk):
                results[ij] = out[k, hp_ : hp_ + cp, hp_ : hp_ + cp]
            dim = out.shape[-1]
            done += len(chunk)
            if progress is not None:
                progress(len(chunk))
    skipped = ty * tx - done
    if progress is not None and skipped:
        progress(skipped)

    if dim is None:
        dim = encoder.output_dim(plan.modality_sources, ntime, plan.pool_time)
    shape = (ty * cp, tx * cp, ntime, dim) if not plan.pool_time else (ty * cp, tx * cp, dim)
    out = np.full(shape, np.nan, dtype="float32")
    for (i, j), r in results.items():
        out[i * cp : (i + 1) * cp, j * cp : (j + 1) * cp] = r
    if plan.pool_time:
        return np.ascontiguousarray(out.transpose(2, 0, 1))  # (D, y, x)
    return np.ascontiguousarray(out.transpose(2, 3, 0, 1))  # (T, D, y, x)
