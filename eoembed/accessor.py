"""The ``.eo`` accessor on DataArray and Dataset: a thin facade over pure functions.

Every method delegates to a module-level function with the cube as its first
argument; nothing is computed here. Each method carries the target's real signature
(minus the cube) and its docstring, so Shift-Tab in Jupyter, ``help(emb.eo.fewshot)``
and ``inspect.signature`` show them. They are read from the target module's source
(``ast``), without importing it: the targets' optional dependencies (scikit-learn,
ipywidgets, FAISS…) load only when a method is called. When a default value is not a
literal the module is imported to read the signature (only cheap core modules).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

import xarray as xr

__all__ = ["EOAccessor", "EODatasetAccessor", "DELEGATES"]

#: accessor method name -> (module, function); the function takes the cube first.
DELEGATES: dict[str, tuple[str, str]] = {
    "embed": ("eoembed.embed", "embed"),
    "embed_cost": ("eoembed.embed", "embed_cost"),
    "index": ("eoembed.index.saved", "store_index"),
    "similarity": ("eoembed.index", "similarity_map"),
    "fewshot": ("eoembed.classify", "fewshot"),
    "pca": ("eoembed.reduce", "pca"),
    "pca_rgb": ("eoembed.reduce", "pca_rgb"),
    "umap": ("eoembed.reduce", "umap"),
    "to_zarr": ("eoembed.io", "to_zarr"),
    "save": ("eoembed.io", "save_embeddings"),
    "to_cog": ("eoembed.export", "to_cog"),
    "embeddings_to_cog": ("eoembed.export", "embeddings_to_cog"),
    "explore": ("eoembed.explore", "explore"),
    "cluster": ("eoembed.analysis.cluster", "cluster"),
    "change": ("eoembed.analysis.change", "change"),
    "regress": ("eoembed.analysis.regress", "regress"),
    "trajectory": ("eoembed.analysis.time", "trajectory"),
}
_DATASET = ("embed", "embed_cost", "to_cog")


def _source_file(module: str) -> Path | None:
    """The ``.py`` file of ``module``, found without importing it or its parent packages
    (``importlib.util.find_spec`` of ``a.b.c`` imports ``a.b``, whose ``__init__`` may load
    scikit-learn, as ``eoembed.classify``'s does)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    for part in rest:
        if path.name != "__init__.py":
            return None
        if (path.parent / part / "__init__.py").is_file():
            path = path.parent / part / "__init__.py"
        elif (path.parent / f"{part}.py").is_file():
            path = path.parent / f"{part}.py"
        else:
            return None
    return path


def _function_node(module: str, func: str) -> ast.FunctionDef | None:
    """The ``def`` of ``module.func`` (following ``from x import func`` re-exports), parsed not imported."""
    origin = _source_file(module)
    if origin is None:
        return None
    tree = ast.parse(origin.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            return node
    for node in tree.body:  # a package re-exporting the function: eoembed.index -> eoembed.index.similarity
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == func for a in node.names):
            base = module if origin.name == "__init__.py" else module.rsplit(".", 1)[0]
            target = node.module if not node.level else ".".join(
                base.split(".")[: len(base.split(".")) - node.level + 1] + ([node.module] if node.module else []))
            name = next(a.name for a in node.names if (a.asname or a.name) == func)
            return _function_node(target, name)
    return None


def _static_signature(node: ast.FunctionDef) -> inspect.Signature:
    """The signature of a parsed ``def`` (defaults must be literals; annotations kept as strings)."""
    a = node.args
    params = []
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    ann = (lambda x: ast.unparse(x.annotation) if x.annotation is not None else inspect.Parameter.empty)
    lit = (lambda d: inspect.Parameter.empty if d is None else ast.literal_eval(d))
    for i, (arg, d) in enumerate(zip(pos, defaults)):
        kind = inspect.Parameter.POSITIONAL_ONLY if i < len(a.posonlyargs) else inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append(inspect.Parameter(arg.arg, kind, default=lit(d), annotation=ann(arg)))
    if a.vararg:
        params.append(inspect.Parameter(a.vararg.arg, inspect.Parameter.VAR_POSITIONAL, annotation=ann(a.vararg)))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        params.append(inspect.Parameter(arg.arg, inspect.Parameter.KEYWORD_ONLY, default=lit(d), annotation=ann(arg)))
    if a.kwarg:
        params.append(inspect.Parameter(a.kwarg.arg, inspect.Parameter.VAR_KEYWORD, annotation=ann(a.kwarg)))
    ret = ast.unparse(node.returns) if node.returns is not None else inspect.Signature.empty
    return inspect.Signature(params, return_annotation=ret)


def _target_signature_and_doc(module: str, func: str) -> tuple[inspect.Signature, str]:
    node = _function_node(module, func)
    if node is not None:
        try:
            return _static_signature(node), ast.get_docstring(node) or ""
        except ValueError:  # a non-literal default: read it from the (cheap) module itself
            pass
    target = getattr(importlib.import_module(module), func)
    return inspect.signature(target), inspect.getdoc(target) or ""


def _delegate(name: str, module: str, func: str):
    """``module.func(cube, ...)`` as the accessor method ``name`` with its signature and docstring."""

    def method(self, *args, **kwargs):
        return getattr(importlib.import_module(module), func)(self._obj, *args, **kwargs)

    sig, doc = _target_signature_and_doc(module, func)
    params = list(sig.parameters.values())
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(parameters=[self_param, *params[1:]])  # the cube is the accessor's object
    method.__name__ = name
    method.__qualname__ = f"EOAccessor.{name}"
    method.__module__ = __name__
    first = params[0].name if params else "obj"
    method.__doc__ = (f"``{module}.{func}`` with this object as ``{first}``.\n\n{doc}")
    return method


class _EOBase:
    def __init__(self, obj):
        self._obj = obj


@xr.register_dataarray_accessor("eo")
class EOAccessor(_EOBase):
    """``cube.eo.embed(...)``, ``emb.eo.index()``, ``emb.eo.fewshot(labels)``, ``emb.eo.pca_rgb()``…

    Each method is the function named in :data:`DELEGATES` with the DataArray as its
    first argument (same parameters, same docstring).
    """


@xr.register_dataset_accessor("eo")
class EODatasetAccessor(_EOBase):
    """``ds.eo.embed(...)`` for a Dataset with one variable per band; ``pm.eo.to_cog(path)`` for a class map."""


for _name, (_module, _func) in DELEGATES.items():
    _m = _delegate(_name, _module, _func)
    setattr(EOAccessor, _name, _m)
    if _name in _DATASET:
        setattr(EODatasetAccessor, _name, _m)
del _name, _module, _func, _m
