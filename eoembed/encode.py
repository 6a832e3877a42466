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

from eoembed.grid import GridSpec
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
    halo:
        Context pixels on each side of a tile (a multiple of ``patch_size``; only the core
        is kept), like every length of the grid (:class:`eoembed.grid.GridSpec`).
    origins:
        ``(B, 2)`` cube pixel ``(row, col)`` of each tile's first pixel (may be < 0).
    transform, crs:
        The cube's pixel transform (6 affine coefficients) and CRS (WKT), for
        encoders that need each pixel's location (e.g. Presto's lat/lon).
    position:
        ``"raw"``: tokens get the model's absolute in-window positions; ``"neutral"``:
        every token is encoded at in-window position (0, 0), so a patch's vector does not
        depend on where the window fell (models with ``spec.window_positions``).
    """

    data: dict[str, np.ndarray]
    visible: dict[str, np.ndarray]
    timestamps: np.ndarray
    patch_size: int
    input_res: float
    present: dict[str, np.ndarray]
    lonlat: tuple[float, float] | None = None
    halo: int = 0
    origins: np.ndarray | None = None
    transform: tuple[float, ...] | None = None
    crs: str | None = None
    position: str = "raw"


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
    grid: GridSpec  # patch grid, windows and how they are combined
    min_valid: float
    batch_size: int
    pool_time: bool
    input_res: float
    lonlat: tuple[float, float] | None = None  # cube centre (degrees), for location encodings
    transform: tuple[float, ...] | None = None  # cube pixel transform (a, b, c, d, e, f)
    crs: str | None = None  # cube CRS as WKT
    position: str = "raw"  # "raw" or "neutral" in-window positions (TileBatch.position)

    @property
    def patch_size(self) -> int:
        return self.grid.patch_size


def _modality_values(block: np.ndarray, plan: BlockPlan, modality: str) -> np.ndarray:
    """``(T, C, Y, X)`` float32 in model units for one modality (a new array); absent bands are NaN."""
    sources = plan.modality_sources[modality]
    t, _, y, x = block.shape
    if all(s >= 0 for s in sources):  # every band there: one gather (a new array) instead of fill + copies
        out = block[:, list(sources)].astype("float32", copy=False)
    else:
        out = np.full((t, len(sources), y, x), np.nan, dtype="float32")
        for i, s in enumerate(sources):
            if s >= 0:
                out[:, i] = block[:, s]
    if modality == "sentinel2_l2a":
        if plan.scale_factor != 1.0:
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
    if pix_valid.all():  # nothing to fill (the common case for a clean block): skip the patch means
        vals[:, ~present] = np.nan  # vals is this call's own array (_modality_values)
        return visible, vals
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


#: Windows per encoder call on a CPU. Measured here (2 threads, v1.1, 64-px windows,
#: 256x256 px, T=4, best of 2-3 interleaved runs): batch 16 took 0.58-0.80x the time of
#: batch 4 for Nano and 0.74x for Tiny, batch 8 no better than 4; so 16 stays the default.
CPU_BATCH_SIZE = 16
#: Share of free accelerator memory a batch may take; the OOM retry covers a wrong guess.
GPU_MEMORY_FRACTION = 0.5
GPU_BATCH_MAX = 1024


def auto_batch_size(encoder: Encoder, grid: GridSpec | None, ntime: int) -> int:
    """Tiles per batch for ``encoder``'s device: fixed on CPU, sized to free memory on CUDA."""
    device = str(getattr(encoder, "device", "cpu"))
    if not device.startswith("cuda"):
        return CPU_BATCH_SIZE
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    spec = encoder.spec
    groups = max(spec.token_groups.values(), default=1)
    tokens = (grid.tile_size // grid.patch_size) ** 2 * ntime * groups
    return gpu_batch_size(free, tokens, spec.embedding_dim or 768, spec.mlp_ratio)


def gpu_batch_size(free_bytes: int, tokens: int, dim: int, mlp_ratio: float = 4.0) -> int:
    """Largest batch whose activations fit :data:`GPU_MEMORY_FRACTION` of ``free_bytes``.

    Per tile at bf16: the residual stream, QKV, MLP hidden and output copies of the
    tokens (``tokens × dim × (6 + 2·mlp_ratio) × 2`` bytes) plus one attention matrix
    per head in fp32 in case the kernel materialises it (``tokens² × dim/64 × 4``).
    """
    per_tile = tokens * dim * (6 + 2 * mlp_ratio) * 2 + tokens * tokens * max(1, dim // 64) * 4
    return int(max(1, min(GPU_BATCH_MAX, GPU_MEMORY_FRACTION * free_bytes // per_tile)))


def is_out_of_memory(err: BaseException) -> bool:
    """True for an accelerator out-of-memory error (torch's, or a message saying so)."""
    return type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower()


def encode_with_retry(encoder: Encoder, make_batch: Callable[[list], TileBatch], members: list, batch_size: int,
                      pool_time: bool, on_oom: Callable[[int], None] | None = None,
                      prefetch: bool = False) -> list[np.ndarray]:
    """Encode ``members`` in batches of ``batch_size``; on out-of-memory halve the batch and retry.

    Returns one output per member, in order. A batch of one that still runs out of
    memory re-raises the error. ``on_oom(new_size)`` is told each time the size drops.
    With ``prefetch`` the next batch is cut and stacked in a thread while the encoder
    runs (worth it when the encoder runs on an accelerator and releases the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    outs: list[np.ndarray] = []
    start = 0
    pool = ThreadPoolExecutor(1) if prefetch else None
    ahead = None  # (start, size, future) of the batch being prepared
    try:
        while start < len(members):
            chunk = members[start : start + batch_size]
            if ahead is not None and ahead[:2] == (start, len(chunk)):
                batch = ahead[2].result()
            else:
                batch = make_batch(chunk)
            ahead = None
            nxt = members[start + len(chunk) : start + len(chunk) + batch_size]
            if pool is not None and nxt:
                ahead = (start + len(chunk), len(nxt), pool.submit(make_batch, nxt))
            try:
                out = encoder.encode(batch, pool_time=pool_time)
            except Exception as err:  # noqa: BLE001  (only OOM is handled; the rest re-raised)
                if not is_out_of_memory(err) or batch_size == 1:
                    raise
                batch_size = max(1, batch_size // 2)
                ahead = None
                _empty_accelerator_cache()
                if on_oom is not None:
                    on_oom(batch_size)
                continue
            outs.extend(out[k] for k in range(len(chunk)))
            start += len(chunk)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return outs


def _empty_accelerator_cache() -> None:
    import sys

    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def embed_block(block: np.ndarray, encoder: Encoder, plan: BlockPlan, origin: tuple[int, int],
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Embed every core patch of one block.

    Parameters
    ----------
    block:
        ``(T, C_cube, Y, X)`` raw cube values; Y and X are whole patches plus
        ``plan.grid.depth`` context pixels on each side (out-of-cube pixels are NaN).
    encoder:
        The model.
    plan:
        Scale, harmonization, band and tiling decisions.
    origin:
        Pixel ``(row, col)`` of the block's first output pixel in the cube (a multiple of
        the patch size; windows are placed on the grid's global window grid).
    progress:
        Called with the number of windows finished.

    Returns
    -------
    numpy.ndarray
        ``(D, Y_core/P, X_core/P)`` float32, or ``(T, D, …)`` with ``pool_time=False``.
    """
    grid = plan.grid
    p, tile, depth = grid.patch_size, grid.tile_size, grid.depth
    ntime, _, by, bx = block.shape
    core_y, core_x = by - 2 * depth, bx - 2 * depth
    wins_y = grid.block_windows(origin[0], core_y, 0)
    wins_x = grid.block_windows(origin[1], core_x, 1)
    # only the pixels some window reads are prepared: the block's context (sized for the worst window
    # phase) and its padding past the cube are mostly never read (whole patches: window starts are)
    y_lo, y_hi = (min(y0 for _, y0 in wins_y), max(y0 for _, y0 in wins_y) + tile) if wins_y else (0, 0)
    x_lo, x_hi = (min(x0 for _, x0 in wins_x), max(x0 for _, x0 in wins_x) + tile) if wins_x else (0, 0)
    ys = np.arange(y_lo, y_hi) + origin[0] - depth
    xs = np.arange(x_lo, x_hi) + origin[1] - depth
    inside = ((ys >= 0) & (ys < grid.height))[:, None] & ((xs >= 0) & (xs < grid.width))[None, :]
    part = block[:, :, y_lo:y_hi, x_lo:x_hi]

    data, vis = {}, {}
    for m in plan.modality_sources:
        vals = _modality_values(part, plan, m)
        present = np.array([s >= 0 for s in plan.modality_sources[m]])
        visible, filled = _patch_visibility(vals, present, inside, p, plan.min_valid)
        # (T, C, Y, X) → (Y, X, T, C) for the normalizer and the encoder
        data[m] = encoder.normalize(m, np.ascontiguousarray(filled.transpose(2, 3, 0, 1)))
        vis[m] = visible.transpose(1, 2, 0)  # (Yp, Xp, T), from (y_lo, x_lo)

    tp, dp = tile // p, depth // p
    py0, px0 = y_lo // p, x_lo // p  # first patch of the prepared part within the block
    w1 = grid.window_weights()
    # patches of the block's core a window may write to (weight > 0 and inside the core)
    own_y = np.zeros(by // p, bool)
    own_y[dp : dp + core_y // p] = True
    own_x = np.zeros(bx // p, bool)
    own_x[dp : dp + core_x // p] = True
    ts = np.asarray(plan.timestamps, dtype="int64")
    groups: dict[object, list[tuple[int, int]]] = defaultdict(list)
    for _, y0 in wins_y:
        for _, x0 in wins_x:
            tv = {m: vis[m][y0 // p - py0 : y0 // p - py0 + tp, x0 // p - px0 : x0 // p - px0 + tp] for m in vis}
            ry = (w1 > 0) & own_y[y0 // p : y0 // p + tp]
            rx = (w1 > 0) & own_x[x0 // p : x0 // p + tp]
            if not any(v[ry][:, rx].any() for v in tv.values()):
                continue  # nothing this window would contribute
            groups[encoder.group_key(tv)].append((y0, x0))

    present = {m: np.array([s >= 0 for s in plan.modality_sources[m]]) for m in data}

    def make_batch(chunk):
        return TileBatch(
            data={m: np.stack([data[m][y0 - y_lo : y0 - y_lo + tile, x0 - x_lo : x0 - x_lo + tile]
                               for y0, x0 in chunk]) for m in data},
            visible={m: np.stack([vis[m][y0 // p - py0 : y0 // p - py0 + tp, x0 // p - px0 : x0 // p - px0 + tp]
                                  for y0, x0 in chunk]) for m in vis},
            timestamps=np.broadcast_to(ts, (len(chunk), *ts.shape)).copy(),
            patch_size=p,
            input_res=plan.input_res,
            present=present,
            lonlat=plan.lonlat,
            halo=grid.halo,
            origins=np.array([(origin[0] - depth + y0, origin[1] - depth + x0) for y0, x0 in chunk]),
            transform=plan.transform,
            crs=plan.crs,
            position=plan.position,
        )

    results: dict[tuple[int, int], np.ndarray] = {}
    done = 0
    for key in sorted(groups, key=repr):
        members = groups[key]
        outs = encode_with_retry(encoder, make_batch, members, plan.batch_size, plan.pool_time,
                                 prefetch=str(getattr(encoder, "device", "cpu")).startswith("cuda"))
        results.update(zip(members, outs))
        done += len(members)
        if progress is not None:
            progress(len(members))
    skipped = len(wins_y) * len(wins_x) - done
    if progress is not None and skipped:
        progress(skipped)

    dim = next(iter(results.values())).shape[-1] if results else encoder.output_dim(
        plan.modality_sources, ntime, plan.pool_time)
    tail = (dim,) if plan.pool_time else (ntime, dim)
    ny, nx = by // p, bx // p
    if not grid.blend:  # hard tiling: each core patch comes from exactly one window
        out = np.full((ny, nx, *tail), np.nan, dtype="float32")
        cy, cx = grid.core_slices()
        for (y0, x0), r in results.items():
            out[y0 // p + cy.start : y0 // p + cy.stop, x0 // p + cx.start : x0 // p + cx.stop] = r[cy, cx]
    else:
        total = np.zeros((ny, nx, *tail), dtype="float32")
        wsum = np.zeros((ny, nx, *tail), dtype="float32")
        w2 = np.outer(w1, w1).astype("float32").reshape(tp, tp, *(1,) * len(tail))
        for y0, x0 in sorted(results):  # a fixed order: sums do not depend on batching or chunking
            r = results[(y0, x0)]
            ok = np.isfinite(r)
            sl = (slice(y0 // p, y0 // p + tp), slice(x0 // p, x0 // p + tp))
            total[sl] += np.where(ok, r, 0.0) * w2
            wsum[sl] += ok * w2
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(wsum > 0, total / wsum, np.nan).astype("float32")
    out = out[dp : dp + core_y // p, dp : dp + core_x // p]
    if plan.pool_time:
        return np.ascontiguousarray(np.moveaxis(out, -1, 0))  # (D, y, x)
    return np.ascontiguousarray(out.transpose(2, 3, 0, 1))  # (T, D, y, x)
