"""The ``.eo`` accessor shows its targets' real signatures and docstrings (Shift-Tab, help())."""

from __future__ import annotations

import importlib
import inspect
import pydoc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import eoembed  # noqa: F401  (registers .eo)
from eoembed.accessor import DELEGATES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emb():
    return xr.DataArray(np.zeros((3, 2, 2), np.float32), dims=("embedding", "y", "x"), name="embeddings")


@pytest.mark.parametrize("name", sorted(DELEGATES))
def test_every_method_has_the_targets_signature_and_doc(emb, name):
    module, func = DELEGATES[name]
    target = getattr(importlib.import_module(module), func)
    full = inspect.signature(target)
    expected = full.replace(parameters=list(full.parameters.values())[1:])
    got = inspect.signature(getattr(emb.eo, name))
    assert str(got) == str(expected)
    assert "*args" not in str(got)
    doc = inspect.getdoc(getattr(emb.eo, name))
    assert inspect.getdoc(target) in doc and f"{module}.{func}" in doc
    text = pydoc.render_doc(getattr(emb.eo, name), renderer=pydoc.plaintext)
    assert str(got).split(" ->")[0].replace("'", "")[:40] in text.replace("'", "")
    assert inspect.getdoc(target).splitlines()[0] in text


def test_dataset_accessor_methods(emb):
    ds = emb.to_dataset()
    assert str(inspect.signature(ds.eo.embed)).startswith("(model")
    assert "to_cog" in dir(ds.eo) and "fewshot" not in dir(ds.eo)


def test_methods_delegate_with_the_cube_first(emb):
    emb = emb.copy(data=np.arange(12, dtype=np.float32).reshape(3, 2, 2) + 1)
    emb = emb.assign_coords(x=[0.5, 1.5], y=[1.5, 0.5]).rio.write_crs(32631)
    sim = emb.eo.similarity(emb.values[:, 0, 0])
    assert sim.dims == ("y", "x") and float(sim[0, 0]) == pytest.approx(1)


def test_signatures_do_not_import_optional_dependencies():
    """``import eoembed`` reads the signatures from source: scikit-learn, ipywidgets, FAISS stay unloaded."""
    code = ("import sys, inspect, eoembed, xarray as xr\n"
            "s = inspect.signature(xr.DataArray([1]).eo.fewshot)\n"
            "assert 'labels' in str(s), s\n"
            "print(sorted(m for m in ('sklearn', 'ipywidgets', 'faiss', 'ipyleaflet') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_similarity_by_point_needs_no_faiss():
    """emb.eo.similarity(point=..., crs=...) works where FAISS is not installed, and is the map of that patch."""
    code = (
        "import sys; sys.modules['faiss'] = None\n"
        "sys.path.insert(0, 'tests')\n"
        "import numpy as np, eoembed\n"
        "from pyproj import Transformer\n"
        "from _embfixtures import make_emb\n"
        "emb, _ = make_emb(8, 9, 6, seed=3)\n"
        "x, y = float(emb.x[2]), float(emb.y[5])\n"
        "lon, lat = Transformer.from_crs(emb.rio.crs, 'EPSG:4326', always_xy=True).transform(x, y)\n"
        "s = emb.eo.similarity(point=(lon, lat), crs='EPSG:4326')\n"
        "v = emb.values[:, 5, 2]\n"
        "np.testing.assert_allclose(s.values, emb.eo.similarity(v).values, atol=1e-6)\n"
        "assert abs(float(s[5, 2]) - 1) < 1e-6\n"
        "print('faiss' in sys.modules and sys.modules['faiss'] is not None)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


def test_similarity_signature_offers_point_polygon_vector(emb):
    params = inspect.signature(emb.eo.similarity).parameters
    assert {"vector", "point", "polygon", "crs", "time"} <= set(params)
    assert params["vector"].default is None
