"""``embed()``: a (time, band, y, x) cube in, a georeferenced embedding cube out.

An orchestrator (like ``stackstac.stack``): validate the cube → decide bands, scale,
harmonization → plan the patch grid and tiles → run :func:`eoembed.encode.embed_block`
eagerly (numpy) or as a dask graph (dask) → wrap the result with coordinates, CRS and
provenance.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from uuid import uuid4

import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

import eoembed.bands as _bands
import eoembed.validate as _validate
from eoembed._version import __version__
from eoembed.encode import BlockPlan, auto_batch_size, embed_block
from eoembed.exceptions import ParameterError, TooManyTimestepsError
from eoembed.grid import GridSpec, default_tiling, diagnostics, grid_from_cube
from eoembed.models import get_model_spec, load_model, with_loader
from eoembed.models.registry import ModelSpec
from eoembed.position import POSITION_METHODS, resolve_position
from eoembed.validate import check_options as _check_options

#: Largest spatial dask chunk of the work graph, in pixels.
WORK_CHUNK_PX_MAX = 1024
#: Smallest work block, in window cores, when blending (edge windows are computed by both blocks).
BLEND_MIN_CORES = 8


# --- input checks -------------------------------------------------------------------
def as_cube(obj, *, values: bool | str = "eager") -> xr.DataArray:
    """Return ``obj`` as a checked DataArray with dims ``(time, band, y, x)``.

    A Dataset with one variable per band is stacked along ``band``; a missing ``time``
    dim becomes a single timestep. Structure, grid spacing, dates, dtype and (for
    in-memory cubes, or ``values=True``) band values are checked by
    :func:`eoembed.validate.as_cube`, the one place every entry point uses.
    """
    return _validate.as_cube(obj, values=values)


def check_crs(cube: xr.DataArray, spec: ModelSpec) -> tuple[xr.DataArray, float]:
    """CRS present, projected and in metres, pixels square; returns the cube and ground pixel size in metres.

    See :func:`eoembed.validate.check_crs` (scale distortion of the CRS included).
    """
    return _validate.check_crs(cube, spec)


def _grid(cube: xr.DataArray, spec: ModelSpec, patch_size, tile_size, halo, blend=None) -> GridSpec:
    """The patch grid and tiling for ``cube``, with the model family's defaults filled in."""
    p = spec.default_patch_size if patch_size is None else int(patch_size)
    if p not in spec.patch_sizes:
        raise ParameterError(
            f"patch_size={patch_size} is not supported by {spec.name}; choose one of "
            f"{list(spec.patch_sizes)} (default {spec.default_patch_size})."
        )
    tile_size, halo, blend = default_tiling(spec, p, tile_size=tile_size, halo=halo, blend=blend)
    return grid_from_cube(cube, patch_size=p, tile_size=tile_size, halo=halo, blend=blend)


# --- cost -----------------------------------------------------------------------------
def embed_cost(cube, model: str | ModelSpec = "tiny", *, patch_size: int | None = None,
               tile_size: int | None = None, halo: int | None = None, blend: bool | None = None,
               bands=None, modalities="auto") -> dict:
    """What :func:`embed` will cost, before running it.

    Returns
    -------
    dict
        ``tiles``, ``tokens`` (encoder tokens over all tiles, halo included),
        ``tokens_per_tile``, ``patches`` (output vectors), ``halo_overhead`` (encoder
        tokens per output token: 1.0 for non-overlapping windows), ``tile_size``,
        ``halo``, ``blend``, ``gmacs`` (estimated multiply-accumulates ×10⁹: QKV/out
        projections, MLP and attention per layer), ``area_km2``, ``timesteps``,
        ``tokens_per_patch_timestep``.
    """
    spec = get_model_spec(model)
    _check_options(tile_size=tile_size, halo=halo, patch_size=patch_size)
    cube = as_cube(cube)
    cube, res = check_crs(cube, spec)
    grid = _grid(cube, spec, patch_size, tile_size, halo, blend)
    p, tile = grid.patch_size, grid.tile_size
    plan = _bands.resolve_bands(cube, spec, bands=bands, modalities=modalities, extra_bands="ignore")
    t = cube.sizes["time"]
    groups = sum(spec.token_groups.get(m, 1) for m in plan.modalities)
    per_tile = (tile // p) ** 2 * t * groups
    tokens = per_tile * grid.n_tiles
    d, depth, r = spec.embedding_dim or 0, spec.depth, spec.mlp_ratio
    span = per_tile if spec.attends_across_time else per_tile // t  # tokens one token attends to
    macs_tile = depth * (4 * per_tile * d * d + 2 * r * per_tile * d * d + 2 * per_tile * span * d)
    if spec.macs_per_pixel:  # convolutional encoder: cost scales with pixels, not tokens
        macs_tile = spec.macs_per_pixel * tile * tile * t
    gmacs = macs_tile * grid.n_tiles / 1e9
    if spec.pixel_series:  # one sample per pixel of the cube: T x groups tokens + a location token
        per_sample = t * groups + 1
        per_tile = per_sample * grid.core ** 2
        tokens = per_sample * grid.height * grid.width  # out-of-cube padding is never encoded
        gmacs = grid.height * grid.width * depth * (4 * per_sample * d * d + 2 * r * per_sample * d * d
                                                    + 2 * per_sample * per_sample * d) / 1e9
    return {
        "model": spec.name,
        "tiles": grid.n_tiles,
        "tokens_per_tile": per_tile,
        "tokens": tokens,
        "tokens_per_patch_timestep": groups,
        "patches": grid.patches_y * grid.patches_x,
        "timesteps": t,
        "halo_overhead": grid.overhead,
        "tile_size": tile,
        "halo": grid.halo,
        "blend": grid.blend,
        "gmacs": gmacs,
        "area_km2": grid.height * grid.width * res * res / 1e6,
    }


# --- embed ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _EncoderRef:
    """Picklable handle in the dask graph: the frozen spec itself (its weights record and
    loader included, never just its name), the weights path, device and ``compile``.

    Each worker process loads (and caches, keyed on the spec's token) its own encoder, so
    a ``dataclasses.replace`` of a registered spec, or an unregistered one, runs on a
    worker exactly as in the client.
    """

    spec: ModelSpec
    weights: str | None
    device: str | None
    compile: bool = False

    def get(self):
        return load_model(self.spec, weights=self.weights, device=self.device, compile=self.compile)


def _block_fn(block, *, ref: _EncoderRef, plan: BlockPlan, offsets_y, offsets_x, block_info=None):
    iy, ix = block_info[0]["chunk-location"][2:]
    return embed_block(block, ref.get(), plan, (offsets_y[iy], offsets_x[ix]), progress=_PROGRESS.get())


def embed(
    cube,
    model: str | ModelSpec = "tiny",
    *,
    weights=None,
    device: str | None = "auto",
    patch_size: int | None = None,
    tile_size: int | None = None,
    halo: int | None = None,
    blend: bool | None = None,
    batch_size: int | None = None,
    pool_time: bool = True,
    bands: dict[str, str] | None = None,
    modalities="auto",
    scale: float | str = "auto",
    harmonize: bool | str = "auto",
    min_valid: float = 0.5,
    max_missing_bands: int | None = None,
    extra_bands: str = "raise",
    progress: bool = True,
    compile: bool = False,
    position: str = "auto",
) -> xr.DataArray:
    """Embed a datacube: one vector per patch, on the cube's own grid.

    Parameters
    ----------
    cube:
        DataArray ``(time, band, y, x)`` (or a Dataset with one variable per band),
        projected CRS via rioxarray (or stackstac's ``epsg`` coord), numpy or dask.
        Bands are matched by name (``B02``, ``blue``, ``S2-L2A-B02``, ``vv``…), never
        by position. NaN (or the declared nodata) marks missing pixels.
    model:
        ``"tiny"`` (= OlmoEarth v1.1 Tiny), any name from :func:`eoembed.list_models`,
        or ``"spectral"`` (a weight-free baseline).
    weights:
        Folder or ``.pth`` file with the checkpoint (see :func:`eoembed.load_model`).
    device:
        ``"auto"`` (CUDA with bf16 autocast when available, else CPU), ``"cpu"``, ``"cuda"``.
    patch_size:
        Pixels per patch side (default 4: one 40 m vector per 4×4 pixels at 10 m).
    tile_size, halo:
        Encoder context in pixels: a tile is a core plus ``halo`` on each side; only
        core patches are kept. Multiples of ``patch_size``. Defaults per model family
        (:data:`eoembed.grid.DEFAULT_TILING`, chosen by benchmark; see docs/tiling-and-position.md).
    blend:
        True: each patch is the weighted mean of every window containing it, weights
        ramping down over the overlap (a cross-fade: borders fade instead of jumping,
        same cost as the halo). False: core patches only. Default per model family.
    batch_size:
        Tiles per encoder call; default by device (16 on CPU, from free memory on a GPU;
        an out-of-memory batch is halved and retried). Tiles are grouped by
        missing-data pattern so a batch never changes a tile's result.
    pool_time:
        True: one vector per patch (mean over timesteps and band groups); False: one
        per patch and timestep, with a ``time`` dim.
    bands:
        ``{cube label: model band}`` for labels eoembed does not recognise.
    modalities:
        ``"auto"`` (Sentinel-2, plus Sentinel-1 when vv and vh are present) or a tuple.
    scale:
        ``"auto"`` or the factor such that values = reflectance × scale (10000 for L2A
        digital numbers, 1 for 0–1 reflectance).
    harmonize:
        ``"auto"``: remove the +1000 DN offset of processing baseline ≥ 04.00 (from
        ``s2:processing_baseline`` or acquisition date ≥ 2022-01-25); True/False force.
    min_valid:
        Fraction of a patch's pixels that must hold data for the patch-timestep to be
        seen by the encoder; smaller gaps are filled with the patch mean.
    max_missing_bands:
        Sentinel-2 bands that may be absent (default a third; B02/B03/B04/B08 never).
    extra_bands:
        ``"raise"`` or ``"ignore"`` labels that are not bands of the model.
    progress:
        Show a progress bar (eager runs).
    compile:
        ``torch.compile`` the encoder (see :func:`eoembed.load_model`): worth it on a
        GPU for large runs; each new tile shape compiles once per process.
    position:
        ``"auto"`` (default): ``"neutral"`` for models with absolute in-window positions
        (Galileo, OlmoEarth, Prithvi-EO, ViT-MAE), ``"raw"`` for the others. ``"neutral"``
        encodes every token at in-window position (0, 0), so a patch's vector depends on
        the ground and its context, not on where the encoder window fell (measured: the
        raw Galileo-Nano vectors' first principal component is ~99 % window position).
        ``"raw"``: the model's own positions. Stamped in ``attrs["eoembed:position"]``.

    Returns
    -------
    xarray.DataArray
        Named ``"embeddings"`` (its vector dim is ``"embedding"``), float32, dims ``("embedding", "y", "x")`` or
        ``("time", "embedding", "y", "x")`` with ``pool_time=False``. ``x``/``y`` are
        patch centres in the cube's CRS, written with rioxarray (``.rio.crs``,
        ``.rio.transform()`` = input transform × patch size). Lazy (dask, chunked on
        y/x) when the input is dask, numpy otherwise. Patches without data are NaN.
        ``attrs`` hold the model, weight revision and hash, licence, patch size, bands
        used, harmonization and eoembed version.
    """
    spec = get_model_spec(model)
    _check_options(tile_size=tile_size, halo=halo, patch_size=patch_size, batch_size=batch_size)
    cube = as_cube(cube, values=True)
    cube, res = check_crs(cube, spec)
    ntime = cube.sizes["time"]
    if ntime > spec.max_timesteps:
        raise TooManyTimestepsError(
            f"the cube has {ntime} timesteps; {spec.name} accepts at most {spec.max_timesteps}. "
            "Composite them first (e.g. eoembed.data.sentinel2(..., composite='monthly') or "
            "cube.resample(time='1MS').median()), or select a subset with cube.isel(time=...)."
        )
    if batch_size is not None and batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1 (or None for the device default), got {batch_size}")
    if not 0 < min_valid <= 1:
        raise ParameterError(f"min_valid must be in (0, 1], got {min_valid}")
    grid = _grid(cube, spec, patch_size, tile_size, halo, blend)
    position = resolve_position(position, spec)
    prep = _bands.prepare(
        cube, spec, bands=bands, modalities=modalities, extra_bands=extra_bands, max_missing=max_missing_bands,
        scale=scale, harmonize=harmonize,
    )
    used = prep.band_index
    sub = prep.select(cube)

    encoder = load_model(spec, weights=weights, device=device, compile=compile)
    bplan = BlockPlan(
        modality_sources=prep.sources,
        scale_factor=prep.scale_factor,
        s2_offsets=prep.offsets,
        s1_linear=prep.s1_linear,
        timestamps=prep.timestamps,
        grid=grid,
        min_valid=float(min_valid),
        batch_size=int(batch_size) if batch_size else auto_batch_size(encoder, grid, ntime),
        pool_time=bool(pool_time),
        input_res=float(res),
        lonlat=_center_lonlat(cube),
        transform=tuple(grid.transform)[:6],
        crs=cube.rio.crs.to_wkt(),
        position=position,
    )
    eager = sub.chunks is None
    data = _graph(sub, encoder, bplan, grid, weights, device, compile, eager=eager)
    if eager:  # the same block graph, run here and now (stackstac's way): one path for numpy and dask
        data = _run_sync(data, grid.n_tiles, f"embed {spec.name}", progress)
    return _wrap(data, cube, grid, spec, encoder, prep.plan, bplan, prep.scale_how, prep.harmonization_how, pool_time)


def _center_lonlat(cube: xr.DataArray) -> tuple[float, float]:
    """``(lon, lat)`` of the cube's centre in degrees (for models with location encodings)."""
    from eoembed.cube import transformer

    left, bottom, right, top = cube.rio.bounds(recalc=True)
    tr = transformer(cube.rio.crs, "EPSG:4326")
    lon, lat = tr.transform((left + right) / 2, (bottom + top) / 2)
    return float(lon), float(lat)


class _Loaded:
    """The encoder this process already holds, for a graph run here and now (by :func:`_run_sync`).

    A graph computed by another scheduler gets an :class:`_EncoderRef` instead, which each
    worker resolves through the model cache. Tokenizes as the ref, so the graph's names do
    not depend on which of the two it holds.
    """

    def __init__(self, encoder, ref: _EncoderRef):
        self.encoder, self.ref = encoder, ref

    def get(self):
        return self.encoder

    def __dask_tokenize__(self):
        from dask.base import tokenize

        return tokenize(self.ref)

    def __reduce__(self):  # a graph sent elsewhere loads the model there
        return (_EncoderRef, (self.ref.name, self.ref.weights, self.ref.device, self.ref.compile))


def _run_sync(data, n_tiles: int, desc: str, progress: bool) -> np.ndarray:
    """Compute an embedding graph in this thread (dask's synchronous scheduler), with a progress bar.

    Synchronous: the encoder's own threads (torch intra-op) get the cores, instead of
    dask's thread pool competing with them.
    """
    from tqdm.auto import tqdm

    with tqdm(total=n_tiles, desc=desc, unit="tile", disable=not progress) as bar:
        token = _PROGRESS.set(bar.update)
        try:
            return np.asarray(data.compute(scheduler="synchronous"))
        finally:
            _PROGRESS.reset(token)


#: Progress callback of the synchronous run in this thread (windows done), read by the block function.
_PROGRESS: ContextVar = ContextVar("eoembed_embed_progress", default=None)


def _graph(sub: xr.DataArray, encoder, plan: BlockPlan, grid: GridSpec, weights, device, compile: bool = False,
           *, eager: bool = False):
    """The dask graph: rechunk to whole tile cores, add context, embed block by block.

    ``eager``: ``sub`` holds numpy; the graph is one block over the whole cube (as many
    windows as the cube needs, none run twice) holding this process's encoder, for
    :func:`_run_sync`. Otherwise ``sub`` is dask and its chunking sets the blocks.
    """
    import dask.array as da

    h, core, p = grid.depth, grid.core, grid.patch_size
    py, px = grid.patches_y * p, grid.patches_x * p
    if eager:  # one block: the whole cube, with its context (NaN: outside the cube) added by one task
        src = da.from_array(np.asarray(sub.values, dtype="float32"), chunks=-1, name=False)
        t, c = src.shape[:2]
        ctx = src.map_blocks(_with_context, depth=h, shape=(py, px), chunks=((t,), (c,), (py + 2 * h,), (px + 2 * h,)),
                             dtype="float32", meta=np.array((), dtype="float32"), name=f"eoembed-context-{uuid4().hex}")
        return _blocks(ctx, sub, encoder, plan, grid, weights, device, compile, eager=True)
    # work chunks: the input's chunking rounded to whole tile cores (it sets parallelism only;
    # results do not depend on it: windows sit on the global grid whatever the block), capped so
    # one block stays a few hundred MB at most. Windows that straddle a block border (blocks
    # start on the cube's patches, windows on the CRS grid) are run by both blocks.
    first = max(sub.chunks[2][0], sub.chunks[3][0])
    step = min(max(1, round(first / core)), max(1, WORK_CHUNK_PX_MAX // core)) * core
    step = max(step, -(-h // core) * core)  # every chunk at least as deep as the context
    if grid.blend and grid.halo:  # blending: a block also runs its neighbours' edge windows, so
        # keep blocks >= 8 cores wide: at most (8+2)/8 the windows per axis (1024 px: ~1.1)
        step = max(step, min(BLEND_MIN_CORES, max(1, WORK_CHUNK_PX_MAX // core)) * core)
    arr = sub.data.astype("float32")
    # pad to whole work chunks: every block is alike (windows past the last tile are skipped),
    # and the output has the regular chunks a Zarr store needs
    ty, tx = -(-py // step) * step, -(-px // step) * step
    arr = da.pad(arr, ((0, 0), (0, 0), (0, ty - grid.height), (0, tx - grid.width)), constant_values=np.nan)
    arr = arr.rechunk({0: -1, 1: -1, 2: step, 3: step})
    return _blocks(arr, sub, encoder, plan, grid, weights, device, compile)


def _with_context(block: np.ndarray, *, depth: int, shape: tuple[int, int]) -> np.ndarray:
    """``block`` padded with NaN to ``shape`` (whole patches) and by ``depth`` context pixels on each side."""
    t, c, y, x = block.shape
    out = np.full((t, c, shape[0] + 2 * depth, shape[1] + 2 * depth), np.nan, dtype="float32")
    out[:, :, depth : depth + y, depth : depth + x] = block
    return out


def _blocks(arr, sub: xr.DataArray, encoder, plan: BlockPlan, grid: GridSpec, weights, device, compile: bool,
            eager: bool = False):
    """Context around each block of ``arr`` (whole patches, padded to its chunks), then one embed call per block.

    ``eager``: ``arr`` is one block that already holds its context (:func:`_with_context`).
    """
    import dask.array as da

    h, p = grid.depth, grid.patch_size
    if eager:
        cy, cx = (arr.shape[2] - 2 * h,), (arr.shape[3] - 2 * h,)
    else:
        cy, cx = arr.chunks[2], arr.chunks[3]
        arr = da.overlap.overlap(arr, depth={0: 0, 1: 0, 2: h, 3: h},
                                 boundary={0: "none", 1: "none", 2: np.nan, 3: np.nan})
    # the client's resolved device ("cuda", not "cuda:N"): each worker then takes its own GPU
    ref = _EncoderRef(with_loader(encoder.spec), None if weights is None else str(weights),
                      getattr(encoder, "device", device), bool(compile))
    if eager:
        ref = _Loaded(encoder, ref)
    dim = encoder.output_dim(plan.modality_sources, sub.sizes["time"], plan.pool_time)
    out_y = tuple(c // p for c in cy)
    out_x = tuple(c // p for c in cx)
    off_y = tuple(int(v) for v in np.cumsum((0,) + cy[:-1]))
    off_x = tuple(int(v) for v in np.cumsum((0,) + cx[:-1]))
    kw = dict(ref=ref, plan=plan, offsets_y=off_y, offsets_x=off_x, dtype="float32", meta=np.array((), dtype="float32"))
    if eager:  # run once, here: no need for a deterministic name (tokenizing the plan)
        kw["name"] = f"eoembed-{uuid4().hex}"
    if plan.pool_time:
        out = da.map_blocks(_block_fn, arr, drop_axis=[0], chunks=((dim,), out_y, out_x), **kw)
    else:
        out = da.map_blocks(_block_fn, arr, chunks=((sub.sizes["time"],), (dim,), out_y, out_x), **kw)
    return out[..., : grid.patches_y, : grid.patches_x]


def _wrap(data, cube, grid: GridSpec, spec, encoder, plan, bplan: BlockPlan, scale_how, harm_how, pool_time):
    x, y = grid.patch_centers()
    dim = data.shape[-3]
    coords = {"y": y, "x": x}  # no coord on "embedding": the DataArray carries that name
    dims = ("embedding", "y", "x")
    if not pool_time:
        coords["time"] = cube["time"].values
        dims = ("time",) + dims
    attrs = dict(encoder.provenance())
    missing = plan.missing.get("sentinel2_l2a", [])
    attrs.update({
        "eoembed:embedding_dim": int(dim),
        **grid.to_attrs(),  # the geometry, every length in pixels (GridSpec.from_attrs reads it back)
        "eoembed:patch_size_m": float(grid.patch_size * abs(grid.transform.a)),
        "eoembed:window_grid": "CRS-anchored: window cores at multiples of the stride from the CRS origin",
        "eoembed:position": bplan.position,
        "eoembed:position_method": POSITION_METHODS[bplan.position],
        "eoembed:input_res": float(bplan.input_res),
        "eoembed:bands": plan.used_bands,
        "eoembed:bands_filled": missing,
        "eoembed:harmonization": f"{harm_how}; offsets {sorted(set(bplan.s2_offsets))}",
        "eoembed:scale": scale_how,
        "eoembed:pool_time": int(bool(pool_time)),
        "eoembed:min_valid": float(bplan.min_valid),
        "eoembed:timesteps": int(cube.sizes["time"]),
        "eoembed:version": __version__,
    })
    if "time" in cube.coords and np.issubdtype(cube["time"].dtype, np.datetime64):
        t = cube["time"].values
        attrs["eoembed:time_range"] = [str(np.datetime_as_string(t.min(), unit="D")),
                                       str(np.datetime_as_string(t.max(), unit="D"))]
    if isinstance(data, np.ndarray):  # lazy cubes get it when written (eoembed.io.to_zarr)
        attrs.update(diagnostics(data, grid))
    if pool_time and "time" in cube.coords and np.issubdtype(cube["time"].dtype, np.datetime64):
        # the span the pooled vectors summarise, as coordinates (CF-style bounds of the pooled time axis)
        t = cube["time"].values
        coords["time_start"] = ((), t.min(), {"long_name": "first acquisition pooled into the vectors"})
        coords["time_end"] = ((), t.max(), {"long_name": "last acquisition pooled into the vectors"})
    out = xr.DataArray(data, coords=coords, dims=dims, name="embeddings", attrs=attrs)
    # in place: the array was made here, so rioxarray's defensive copies (~3 ms a call) buy nothing
    out.rio.write_crs(cube.rio.crs, inplace=True).rio.write_transform(grid.out_transform, inplace=True)
    out.encoding.pop("_FillValue", None)
    return out
