"""What the plain-PyTorch families (Prithvi, ViT-MAE, PhilEO) share.

These families need only ``torch``: no upstream package. Each publishes one
state-dict file (``spec.weight_files``, found by :func:`eoembed.models.weights.resolve_weights`);
checking its keys against the architecture, the per-band mean/std normalizer,
pooling per-timestep outputs and the provenance attrs live here once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from eoembed.exceptions import CorruptWeightsError, MissingOptionalDependency, ParameterError
from eoembed.models.registry import ModelSpec
from eoembed.models.weights import WeightsSource, load_state_dict, provenance_attrs, resolve_weights


def require_torch(who: str = "this model"):
    """Import torch or say how to install it (``who`` names the family in the message)."""
    try:
        import torch
    except ImportError as err:
        raise MissingOptionalDependency(
            f"{who} needs torch. On a CPU machine: pip install torch==2.13.0 && "
            "pip install 'eoembed[models]'"
        ) from err
    return torch


def resolve_device(device: str | None) -> str:
    """The torch device string for every model family's ``device=`` argument.

    ``"auto"``/None → ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` and ``"mps"`` pass through. CUDA asked for but not visible,
    or any other value, raises :class:`~eoembed.exceptions.ParameterError`. Torch is
    imported here, at call time, never when this module is imported.
    """
    torch = require_torch()
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r} but torch sees no CUDA device; use device='cpu'")
    if not (str(device) == "cpu" or str(device).startswith("cuda") or str(device) == "mps"):
        raise ParameterError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if str(device) == "cuda":
        return cuda_for_worker(torch.cuda.device_count(), dask_worker_rank())
    return str(device)


def cuda_for_worker(device_count: int, rank: int | None) -> str:
    """The GPU a plain ``device="cuda"`` means in this process.

    Several GPUs are used through one dask worker per GPU (see docs/scaling-and-gpu.md): on the worker numbered ``rank`` it is ``cuda:{rank % device_count}``. Outside
    a worker, or with one GPU, it stays ``"cuda"`` (torch's current device).
    """
    if rank is None or device_count <= 1:
        return "cuda"
    return f"cuda:{rank % device_count}"


def dask_worker_rank() -> int | None:
    """This dask worker's number (a ``LocalCluster`` names its workers 0, 1, …), else None.

    Never imports ``distributed``: a process that has not loaded it is no worker.
    """
    import sys

    dist = sys.modules.get("distributed")
    if dist is None:
        return None
    try:
        name = dist.get_worker().name
    except ValueError:  # not running inside a worker
        return None
    try:
        return int(name)
    except (TypeError, ValueError):  # a named worker: a stable number from its name
        import zlib

        return zlib.crc32(str(name).encode())


# --- how the encoder runs on its device -----------------------------------------------
#: Families kept in fp32 on CUDA, and why. Presto is a ~0.4 M-parameter encoder run on
#: single-pixel time series: bf16 buys it nothing measurable and rounds its per-pixel
#: vectors (averaged over 16-64 pixels per patch) to 3 significant digits.
FP32_FAMILIES = {"presto": "tiny per-pixel encoder: bf16 gains nothing, costs precision"}


def autocast_dtype(device: str, family: str) -> str | None:
    """``"bfloat16"`` for ``family`` on a CUDA device, None (plain fp32) elsewhere.

    CPU and MPS run fp32 (CPU bf16 autocast is slower than fp32 on most CPUs, and the
    CPU path is the reference the GPU results are compared with); families in
    :data:`FP32_FAMILIES` stay fp32 on CUDA too.
    """
    if not str(device).startswith("cuda") or family in FP32_FAMILIES:
        return None
    return "bfloat16"


def inference(device: str, family: str):
    """The context every family's forward pass runs in: ``inference_mode`` plus bf16
    autocast where :func:`autocast_dtype` says so."""
    import contextlib

    torch = require_torch()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    dtype = autocast_dtype(device, family)
    if dtype is not None:
        stack.enter_context(torch.autocast("cuda", dtype=getattr(torch, dtype)))
    return stack


def to_device(array, device: str, dtype=None):
    """numpy → tensor on ``device``. On CUDA through pinned host memory with a
    non-blocking copy (the host thread goes on preparing the next batch while the copy
    and the kernels queued after it run); elsewhere ``torch.as_tensor`` as before."""
    torch = require_torch()
    t = torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
    if not str(device).startswith("cuda"):
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def compile_targets(encoder) -> list:
    """The torch modules of ``encoder`` that ``compile=True`` compiles: its own
    ``compile_targets()`` where a family calls parts of its module, else ``[encoder.module]``."""
    own = getattr(encoder, "compile_targets", None)
    return list(own()) if own is not None else [encoder.module]


def compile_encoder(encoder):
    """A copy of ``encoder`` whose modules run through ``torch.compile``.

    The module is copied first (the eager encoder may sit in a model cache and stay in
    use), then its :func:`compile_targets` are compiled in place (``Module.compile``:
    attribute access is unchanged, calls go through the compiled graph). The first call
    of each new input shape pays the compilation.
    """
    import copy

    require_torch()
    compiled = copy.copy(encoder)
    compiled.module = copy.deepcopy(encoder.module)
    for module in compile_targets(compiled):
        module.compile()
    compiled.compiled = True
    compiled.provenance = lambda: {**encoder.provenance(), "eoembed:compiled": 1}
    return compiled


def _short(keys, n: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_into(module, state: dict, path: Path, spec: ModelSpec, *, optional: tuple[str, ...] = (),
              unused: tuple[str, ...] = (), hint: str = "") -> None:
    """``module.load_state_dict(state)`` with a typed error naming what does not fit.

    ``optional`` lists key prefixes the checkpoint may lack (the module keeps its value);
    ``unused`` lists prefixes of checkpoint keys the encoder does not use (ignored);
    ``hint`` replaces the generic last sentence of the error.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in own and not k.startswith(unused)]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        if shapes:
            parts.append(f"wrong shapes: {_short(shapes, 3)}")
        raise CorruptWeightsError(
            f"{path} does not fit {spec.name} ({'; '.join(parts)}). " + (hint or (
                f"Check that the file is the published {spec.family} checkpoint for this model size, "
                "complete and not truncated."))
        )
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def read_checkpoint(path: Path) -> dict:
    """``weights.load_state_dict`` plus unwrapping of ``{"model": state_dict}`` (MAE/DeiT style)."""
    state = load_state_dict(path)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    elif "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    bad = [k for k, v in state.items() if not hasattr(v, "shape")]
    if bad:
        raise CorruptWeightsError(f"{path} holds non-tensor entries {_short(bad)}; expected a tensor state dict.")
    return state


# --- the encoder object -------------------------------------------------------------
def build_encoder(spec: ModelSpec, weights, device, build: Callable):
    """Resolve the weights for ``spec`` and ``build(spec, source, device)`` the encoder.

    Caching across calls is :func:`eoembed.models.load_model`'s job (one cache per process).
    """
    return build(spec, resolve_weights(spec, weights), resolve_device(device))


#: Sentinel-2 central wavelengths (nm), to fill a band the cube lacks from its nearest neighbour.
S2_WAVELENGTH = {"B01": 443, "B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740, "B07": 783,
                 "B08": 842, "B8A": 865, "B09": 945, "B11": 1610, "B12": 2190}


def fill_nearest_band(data: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """Copy a missing band value (NaN while other bands hold data) from the nearest band in
    wavelength that has one, e.g. B8A from B08 when the cube has no B8A."""
    data = np.array(data, dtype="float32", copy=True)
    finite = np.isfinite(data)
    if finite.all() or not finite.any():
        return data
    for i, b in enumerate(bands):
        hole = ~finite[..., i] & finite.any(axis=-1)
        if not hole.any():
            continue
        for j in sorted((j for j in range(len(bands)) if j != i),
                        key=lambda j: abs(S2_WAVELENGTH[bands[j]] - S2_WAVELENGTH[b])):
            take = hole & finite[..., j]
            data[..., i] = np.where(take, data[..., j], data[..., i])
            hole &= ~take
            if not hole.any():
                break
    return data


class TorchEncoder:
    """Shared parts of :class:`eoembed.encode.Encoder` for the plain-PyTorch families.

    Subclasses set ``mean``/``std`` (per band, model units) and implement ``encode``.
    """

    mean: np.ndarray
    std: np.ndarray
    #: Fill a band the cube lacks from the nearest model band in wavelength (only where the
    #: model reads close neighbours, e.g. PhilEO's B08/B8A); otherwise it becomes the band mean.
    fill_from_nearest_band: bool = False

    def __init__(self, spec: ModelSpec, module, device: str, source: WeightsSource, extra: dict | None = None):
        self.spec = spec
        self.module = module
        self.device = device
        self.source = source
        self.extra = dict(extra or {})

    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` per band; what is still missing becomes 0 (the band mean;
        pixels without any data are masked anyway)."""
        data = np.asarray(data, dtype="float32")
        if self.fill_from_nearest_band:
            data = fill_nearest_band(data, self.spec.modalities[modality])
        out = (data - self.mean.astype("float32")) / self.std.astype("float32")
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype("float32")

    def output_dim(self, plan_bands, ntime, pool_time) -> int:
        return int(self.spec.embedding_dim)

    def provenance(self) -> dict:
        return {**provenance_attrs(self.spec, self.source, self.device),
                "eoembed:weights_file": os.path.basename(str(self.source.weights)), **self.extra}


def pool_tokens(tok, seen, pool_time: bool):
    """``(B, h, w, T, D)`` tokens and ``(B, h, w, T)`` visibility → embeddings.

    Pooled: mean over the visible timesteps (``(B, h, w, D)``); else per timestep.
    NaN where nothing was visible.
    """
    torch = require_torch()
    seen = seen.to(tok.dtype)
    if pool_time:
        cnt = seen.sum(dim=3)
        emb = (tok * seen[..., None]).sum(dim=3) / cnt.clamp(min=1)[..., None]
        return torch.where(cnt[..., None] > 0, emb, torch.full_like(emb, float("nan")))
    return torch.where(seen[..., None] > 0, tok, torch.full_like(tok, float("nan")))
