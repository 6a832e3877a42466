"""The ``.eo`` accessor on DataArray and Dataset: a thin facade over pure functions.

Every method delegates to a module-level function (and keeps its docstring); nothing
is computed here.
"""

from __future__ import annotations

import functools
import importlib

import xarray as xr


def _wrap(module: str, func: str):
    """Turn ``module.func(obj, ...)`` into an accessor method, importing lazily."""

    def method(self, *args, **kwargs):
        return getattr(importlib.import_module(module), func)(self._obj, *args, **kwargs)

    method.__name__ = func
    method.__qualname__ = f"EOAccessor.{func}"
    method.__doc__ = f"See :func:`{module}.{func}` (the cube is passed as the first argument)."
    return method


class _EOBase:
    def __init__(self, obj):
        self._obj = obj

    embed = _wrap("eoembed.embed", "embed")
    embed_cost = _wrap("eoembed.embed", "embed_cost")


@xr.register_dataarray_accessor("eo")
class EOAccessor(_EOBase):
    """``cube.eo.embed(...)``, ``emb.eo.index()``, ``emb.eo.fewshot(labels)``, ``emb.eo.pca_rgb()``…"""

    index = _wrap("eoembed.index", "build_index")
    similarity = _wrap("eoembed.index", "similarity_map")
    fewshot = _wrap("eoembed.classify", "fewshot")
    pca = _wrap("eoembed.reduce", "pca")
    pca_rgb = _wrap("eoembed.reduce", "pca_rgb")
    umap = _wrap("eoembed.reduce", "umap")
    to_zarr = _wrap("eoembed.io", "to_zarr")
    explore = _wrap("eoembed.explore", "explore")
    cluster = _wrap("eoembed.analysis", "cluster")
    change = _wrap("eoembed.analysis", "change")
    regress = _wrap("eoembed.analysis", "regress")
    trajectory = _wrap("eoembed.analysis", "trajectory")


@xr.register_dataset_accessor("eo")
class EODatasetAccessor(_EOBase):
    """``ds.eo.embed(...)`` for a Dataset with one variable per band."""


# keep real docstrings where the target module is cheap to import
for _cls in (EOAccessor, EODatasetAccessor):
    for _name in ("embed", "embed_cost"):
        functools.update_wrapper(getattr(_cls, _name), getattr(importlib.import_module("eoembed.embed"), _name),
                                 assigned=("__doc__",), updated=())
