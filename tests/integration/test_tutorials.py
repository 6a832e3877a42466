"""Execute every tutorial notebook end to end (offline) and check its key outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb")) + sorted((TUTORIALS.parent / "notebooks").glob("*.ipynb"))
SAMPLE = TUTORIALS.parent.parent / "shared" / "data" / "worldcereal" / "worldcereal_preprocessed_inputs.nc"


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A 'python3' kernelspec in a tmp dir that runs *this* interpreter (the venv's), first on JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (eoembed venv)",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # keep the inline backend: figures must come back as PNG
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path / "no-weights"))  # the offline (random-weight) path
    return "python3"


def _outputs(nb, kind):
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if kind == "stdout" and out.get("output_type") == "stream" and out.get("name") == "stdout":
                yield out["text"]
            elif kind != "stdout" and kind in out.get("data", {}):
                yield out["data"][kind]


def _clean(nb) -> bool:
    return all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_tutorials_found_and_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS][:2] == ["01_tokens_cost_embeddings.ipynb", "02_similarity_search_fewshot.ipynb"]
    for p in NOTEBOOKS:
        assert _clean(nbformat.read(p, as_version=4)), f"{p.name} was saved with outputs; clear them"


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE.exists(), reason=f"sample cube not found at {SAMPLE}")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs(path, venv_kernel):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=venv_kernel,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    stdout = "".join(_outputs(nb, "stdout"))
    images = list(_outputs(nb, "image/png"))
    if path.name.startswith("01_"):
        assert len(images) >= 2, "expected the true-colour and PCA-RGB figures"
        assert "OlmoEarth Artifact License" in stdout
        assert "EPSG:32631" in stdout
        assert "RANDOM-WEIGHT" in stdout  # no weights in EOEMBED_WEIGHTS_DIR in the test: it must say so
    if path.name == "quickstart.ipynb":
        assert images and "EPSG:32631" in stdout and "rank" in stdout
    if path.name.startswith("02_"):
        assert images, "expected similarity and class maps"
        assert "accuracy" in stdout and "spatial-block CV" in stdout
        assert "agreement with WorldCereal pseudo-labels" in stdout
