"""eoembed: Earth-observation datacubes to georeferenced embedding cubes.

>>> import eoembed                       # registers the ``.eo`` accessor
>>> emb = cube.eo.embed(model="tiny")    # doctest: +SKIP
"""

from __future__ import annotations

from eoembed._version import __version__  # noqa: E402  (one place; submodules import it from there)

import rioxarray as _rioxarray  # noqa: F401,E402  (registers .rio, used throughout)

from eoembed import accessor as _accessor  # noqa: F401,E402  (registers .eo)
from eoembed.embed import embed, embed_cost  # noqa: E402
from eoembed.exceptions import EOEmbedError  # noqa: E402
from eoembed.models import ModelSpec, get_model_spec, list_models, load_model  # noqa: E402

__all__ = [
    "EOEmbedError",
    "ModelSpec",
    "__version__",
    "embed",
    "embed_cost",
    "get_model_spec",
    "list_models",
    "load_model",
]

# --- wiring: the stores layer (eoembed.io) reads products and renders pyramid views through the layers above it,
# which it never imports; the package root connects them (imported lazily, on first use).
def _read_product(src, format, **options):
    from eoembed.products import _open_product

    return _open_product(src, format, **options)


def _render_pca_view(emb, path, *, sample_from):
    from eoembed.explore.tiles import write_pca_cog

    return write_pca_cog(emb, path, sample_from=sample_from, overwrite=True)


from eoembed import io as _io  # noqa: E402

_io.register_reader(_read_product)
_io.register_view(_io.PCA_COG, _render_pca_view)

_SUBMODULES = {"data", "index", "classify", "reduce", "evaluate", "io", "testing", "bands", "grid", "models", "cli",
               "products", "export",
               "explore", "viz", "analysis"}


_LAZY = {"build_index": "index", "EmbeddingIndex": "index", "fewshot": "classify", "pca_rgb": "reduce",
         "open_cube": "data", "open_embeddings": "io", "save_embeddings": "io",
         "Explorer": "explore", "cluster": "analysis", "change": "analysis", "regress": "analysis",
         "trajectory": "analysis"}


def __getattr__(name: str):
    """``eoembed.reduce``, ``eoembed.build_index``… are imported on first use (optional deps)."""
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"eoembed.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"eoembed.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'eoembed' has no attribute {name!r}")
