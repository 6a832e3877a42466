"""Model registry and loading: ``list_models``, ``get_model_spec``, ``load_model``."""

from __future__ import annotations

from eoembed.models import galileo as _galileo  # noqa: F401  (registers the family)
from eoembed.models import olmoearth as _olmoearth  # noqa: F401  (registers the family)
from eoembed.models import prithvi as _prithvi  # noqa: F401
from eoembed.models import spectral as _spectral  # noqa: F401
from eoembed.models import vitmae as _vitmae  # noqa: F401
from eoembed.models.registry import ModelSpec, get_loader, get_model_spec, list_models, register_model


def load_model(name: str | ModelSpec, *, weights=None, device: str | None = "auto"):
    """Load an encoder by name.

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

    Returns
    -------
    Encoder
        An object following :class:`eoembed.encode.Encoder`.
    """
    spec = get_model_spec(name)
    return get_loader(spec)(spec, weights=weights, device=device)


__all__ = ["ModelSpec", "get_model_spec", "list_models", "load_model", "register_model"]
