"""How every torch family runs on its device: torch import, device choice, autocast, compile.

The bottom of the model stack: it imports no other ``eoembed.models`` module (the
weights module reads :func:`autocast_dtype` from here for its provenance attrs; the
encoder adapter, :mod:`eoembed.models._encoder`, builds on both). Torch is imported
at call time, never when this module is imported.
"""

from __future__ import annotations

import numpy as np

from eoembed.exceptions import MissingOptionalDependency, ParameterError


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
