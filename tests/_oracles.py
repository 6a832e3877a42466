"""Independent reference implementations for parity tests (test-only).

``timm`` and ``terratorch`` are installed with ``--no-deps`` (scripts/setup.sh): their
dependencies would replace the CPU build of torch. timm imports torchvision at import
time for its data transforms and FrozenBatchNorm2d, which a ViT forward never uses;
the only torchvision wheels on PyPI are CUDA builds that cannot load next to
torch+cpu. When torchvision is not importable, :func:`import_timm` installs an inert
stand-in module so that timm's *model* code (the oracle) can be imported. A real
torchvision, where it works, is always preferred.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import pytest


class _Anything(type):
    """A class whose every attribute is another such class (enum members, functions…)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (), {})

    def __call__(cls, *a, **k):
        raise RuntimeError("torchvision stand-in: not usable (only timm's model code is tested here)")


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = _StubModule(spec.name)
        mod.__path__ = []
        mod.__version__ = "0.0+eoembed-test-stub"
        return mod

    def exec_module(self, module):
        pass


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        return False
    return True


def import_timm():
    """``timm.models.vision_transformer`` (skip with the install line when timm is absent)."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed: pip install --no-deps timm==1.0.31 (see scripts/setup.sh)")
    if "timm" in sys.modules or _torchvision_works():
        from timm.models import vision_transformer

        return vision_transformer
    finder = _StubFinder()
    sys.meta_path.insert(0, finder)
    try:
        from timm.models import vision_transformer
    finally:  # the stand-in serves timm's import only: later imports see no torchvision
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
    return vision_transformer


def import_terratorch_prithvi():
    """terratorch's ``prithvi_mae`` module, loaded by path (its package __init__ needs
    lightning and much more; this file needs only torch, numpy, einops and timm)."""
    spec = importlib.util.find_spec("terratorch")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("terratorch is not installed: pip install --no-deps terratorch==1.2.13 (see scripts/setup.sh)")
    import_timm()
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "backbones" / "prithvi_mae.py"
    if "_oracle_prithvi_mae" in sys.modules:
        return sys.modules["_oracle_prithvi_mae"]
    mspec = importlib.util.spec_from_file_location("_oracle_prithvi_mae", path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules["_oracle_prithvi_mae"] = mod
    mspec.loader.exec_module(mod)
    return mod
