"""Submodules never import the top-level package (no eoembed/__init__ ↔ submodule circle)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "eoembed"
#: Modules the package's __init__ imports (directly or through them) at import time.
CORE = ["bands.py", "embed.py", "validate.py", "encode.py", "grid.py", "position.py", "accessor.py"]


def _package_imports(path: Path) -> list[str]:
    """``import eoembed`` / ``from eoembed import x`` statements anywhere in a module (function-local too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name == "eoembed" and not a.asname]
            found += [f"line {node.lineno}: import eoembed as {a.asname}" for a in node.names
                      if a.name == "eoembed" and a.asname]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "eoembed":
            found.append(f"line {node.lineno}: from eoembed import {', '.join(a.name for a in node.names)}")
    return found


@pytest.mark.parametrize("name", CORE)
def test_core_submodules_do_not_import_the_package(name):
    assert _package_imports(PKG / name) == []


def test_a_submodule_imports_first_without_a_partial_package():
    """Importing a submodule first (as dask workers unpickling a graph do) never meets a half-initialised package."""
    code = ("import importlib; m = importlib.import_module('eoembed.embed'); import eoembed.bands, eoembed.validate, "
            "eoembed; assert m.__version__ == eoembed.__version__ and eoembed.embed is m.embed")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent, timeout=120)
