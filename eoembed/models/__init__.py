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
from eoembed.models.registry import (
    ModelSpec,
    PretrainedWeights,
    WeightFile,
    get_loader,
    get_model_spec,
    list_models,
    register_model,
    with_loader,
)

#: Encoders kept per process (each dask worker process has its own cache).
MODEL_CACHE_SIZE = 4
_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_STATS = {"hits": 0, "loads": 0}


def spec_token(spec: ModelSpec) -> str:
    """A deterministic token of every field of ``spec`` (weights record and loader included).

    Two specs share a token only when they are equal, whatever their names: the model
    cache is keyed on it, so ``dataclasses.replace(spec, ...)`` never reuses the encoder
    built for ``spec``.
    """
    from dask.base import tokenize

    # Not dask.config.set({"tokenize.ensure-deterministic": True}): that config is process-global, and
    # two dask worker threads loading at once could leave it switched on for everything after them.
    # An object dask cannot tokenize deterministically gets a random token: two calls then differ.
    token = tokenize(spec)
    if tokenize(spec) != token:
        raise ParameterError(
            f"the spec of {spec.name!r} cannot be tokenized deterministically, so its encoder could not be "
            "cached. Use plain values and a module-level loader function in ModelSpec.")
    return token


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
        ``"tiny"``, ``"olmoearth-v1.2-small"``, ``"spectral"``… (see :func:`list_models`), or a
        :class:`ModelSpec` (registered or not; its loader is found by :func:`get_loader`).
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
        returned again for the same spec (every field: :func:`spec_token`), weights
        (path, file sizes and times), device and ``compile``, so repeated
        :func:`eoembed.embed` calls and dask tasks on one worker do not reload it
        (:func:`clear_model_cache` empties the cache, :func:`model_cache_info` counts).
        A spec that differs from the registered one in any field (``dataclasses.replace``)
        is a different model, built from its own fields by its own loader.
    """
    spec = with_loader(get_model_spec(name))
    key = (spec_token(spec), _weights_identity(weights), str(device), bool(compile))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            _STATS["hits"] += 1
            return _CACHE[key]
    enc = spec.loader(spec, weights=weights, device=device)
    if compile:
        if getattr(enc, "module", None) is None:
            raise ParameterError(f"{spec.name} has no torch module to compile; use compile=False")
        from eoembed.models._torchcommon import compile_encoder

        enc = compile_encoder(enc)
    with _CACHE_LOCK:
        _STATS["loads"] += 1
        _CACHE[key] = enc
        while len(_CACHE) > MODEL_CACHE_SIZE:
            _CACHE.popitem(last=False)
    return enc


def clear_model_cache() -> None:
    """Forget every loaded encoder (the next :func:`load_model` reads the weights again)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def model_cache_info() -> dict:
    """This process's model cache: ``loads`` (encoders built), ``hits`` (reused), ``size``, ``maxsize``.

    On a cluster, ``client.run(eoembed.models.model_cache_info)`` gives each worker's.
    Counts are never reset (:func:`clear_model_cache` empties the cache only).
    """
    with _CACHE_LOCK:
        return {**_STATS, "size": len(_CACHE), "maxsize": MODEL_CACHE_SIZE}


__all__ = ["ModelSpec", "PretrainedWeights", "WeightFile", "clear_model_cache", "get_loader", "get_model_spec",
           "list_models", "load_model", "model_cache_info", "register_model", "spec_token", "with_loader"]
