"""Model registry and loading: ``list_models``, ``get_model_spec``, ``load_model``."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from eoembed.exceptions import ParameterError
from eoembed.models import galileo as _galileo  # noqa: F401  (registers the family)
from eoembed.models import olmoearth as _olmoearth  # noqa: F401  (registers the family)
from eoembed.models import phileo as _phileo  # noqa: F401
from eoembed.models import presto as _presto  # noqa: F401
from eoembed.models import prithvi as _prithvi  # noqa: F401
from eoembed.models import spectral as _spectral  # noqa: F401
from eoembed.models import vitmae as _vitmae  # noqa: F401
from eoembed.models.registry import ModelSpec, get_loader, get_model_spec, list_models, register_model

#: Encoders kept per process (each dask worker process has its own cache).
MODEL_CACHE_SIZE = 4
_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _weights_identity(weights) -> tuple:
    """What makes two ``weights=`` arguments the same checkpoint: path, sizes and mtimes."""
    if weights is None:  # resolved from the cache dir / Hugging Face: key on where they would come from
        return ("default", *(os.environ.get(v, "") for v in
                             ("EOEMBED_WEIGHTS_DIR", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE")))
    path = Path(weights).expanduser().resolve()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    stats = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
    return (str(path), stats)


def load_model(name: str | ModelSpec, *, weights=None, device: str | None = "auto", compile: bool = False):
    """Load an encoder by name, once per process.

    Parameters
    ----------
    name:
        ``"tiny"``, ``"olmoearth-v1.2-small"``, ``"spectral"``… (see :func:`list_models`).
    weights:
        A folder with ``config.json`` + ``weights.pth`` or a ``.pth`` file. When None,
        the local cache (``$EOEMBED_WEIGHTS_DIR``) and then Hugging Face (pinned
        revision) are tried.
    device:
        ``"auto"`` (CUDA when available, with bf16 autocast), ``"cpu"`` or ``"cuda"``.
        On a dask worker with several GPUs, ``"cuda"`` is the worker's own GPU
        (``cuda:{worker % n_gpus}``; see docs/scaling-and-gpu.md).
    compile:
        ``torch.compile`` the encoder (default False). Faster on a GPU after a
        compilation of tens of seconds per new input shape; needs a C++ compiler on CPU.

    Returns
    -------
    Encoder
        An object following :class:`eoembed.encode.Encoder`. The same object is
        returned again for the same model, weights (path, file sizes and times) and
        device, so repeated :func:`eoembed.embed` calls and dask tasks on one worker
        do not reload it (:func:`clear_model_cache` empties the cache).
    """
    spec = get_model_spec(name)
    key = (spec.name, _weights_identity(weights), str(device), bool(compile))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    enc = get_loader(spec)(spec, weights=weights, device=device)
    if compile:
        if getattr(enc, "module", None) is None:
            raise ParameterError(f"{spec.name} has no torch module to compile; use compile=False")
        from eoembed.models._torchcommon import compile_encoder

        enc = compile_encoder(enc)
    with _CACHE_LOCK:
        _CACHE[key] = enc
        while len(_CACHE) > MODEL_CACHE_SIZE:
            _CACHE.popitem(last=False)
    return enc


def clear_model_cache() -> None:
    """Forget every loaded encoder (the next :func:`load_model` reads the weights again)."""
    with _CACHE_LOCK:
        _CACHE.clear()


__all__ = ["ModelSpec", "clear_model_cache", "get_model_spec", "list_models", "load_model", "register_model"]
