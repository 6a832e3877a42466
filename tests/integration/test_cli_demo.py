"""The command line and the demo on the real shared sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eoembed.cli import main
from eoembed.io import open_embeddings


def test_open_cube_reads_the_openeo_sample(sample_cube):
    c = sample_cube
    assert c.dims == ("time", "band", "y", "x") and c.sizes["time"] == 12 and c.sizes["x"] == 100
    assert list(c.band.values) == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12", "vh", "vv"]
    assert c.rio.crs.to_epsg() == 32631
    assert float(c.x[0]) == 664005 and float(c.y[0]) == 5612115
    s2 = c.sel(band="B02").values
    assert np.isnan(s2[1:3]).all() and np.isfinite(s2[0]).all()  # Dec 2020 / Jan 2021 are nodata
    vv = c.sel(band="vv").values
    assert -30 < np.nanmin(vv) and np.nanmax(vv) < 10  # dB, not scaled integers


def test_models_command(capsys):
    assert main(["models", "--json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)]
    assert "olmoearth-v1.2-small" in names and "spectral" in names


def test_embed_command_writes_a_georeferenced_zarr(tmp_path, sample_path, checkpoints):
    out = tmp_path / "emb.zarr"
    from eoembed.grid import GridAlignmentWarning

    # the shared sample is 4 px off the 8-px global grid and has no B8A/B01/B09: the CLI passes both notes on
    with pytest.warns(GridAlignmentWarning, match="off the global 8-px"), pytest.warns(UserWarning, match="B8A"):
        rc = main(["embed", str(sample_path), "-o", str(out), "--model", "nano",
                   "--weights", str(checkpoints["v1.1"]), "--patch-size", "8", "--lazy"])
    assert rc == 0
    emb = open_embeddings(out)
    assert emb.sizes["embedding"] == 128 and emb.sizes["y"] == 13
    assert emb.rio.crs.to_epsg() == 32631
    assert emb.attrs["eoembed:license"] == "OlmoEarth Artifact License"
    assert np.isfinite(emb.values).all()


def test_cost_command(sample_path, capsys):
    assert main(["cost", str(sample_path), "--model", "tiny"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["area_km2"] == pytest.approx(1.0) and cost["timesteps"] == 12


GALILEO = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "galileo-nano"


def test_models_command_lists_galileo_with_its_source(capsys):
    assert main(["models", "galileo*"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("galileo-nano"))
    assert " 128 " in line and "MIT" in line and "github:nasaharvest/galileo@d0482291" in line and "S2(10)" in line


def test_demo_finds_the_shared_weights_beside_the_sample(sample_path):
    from eoembed.demo import find_local_weights

    if not (GALILEO / "encoder.pt").is_file():
        pytest.skip(f"real Galileo weights not found at {GALILEO}")
    assert find_local_weights("galileo-nano", str(sample_path)).resolve() == GALILEO.resolve()
    assert find_local_weights("spectral", str(sample_path)) is None


@pytest.mark.slow
def test_demo_command_runs_offline_on_real_weights(tmp_path, sample_path):
    if not (GALILEO / "encoder.pt").is_file():
        pytest.skip(f"real Galileo weights not found at {GALILEO}")
    out = tmp_path / "demo"
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(  # no --sample, --model, --weights: the README's command, on a machine without network
        [sys.executable, "-m", "eoembed.cli", "demo", "--patch-size", "8", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "EOEMBED_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "PYTHONPATH": str(root), "OMP_NUM_THREADS": "2"},
    )
    assert run.returncode == 0, run.stderr
    png = out / "demo.png"
    assert png.stat().st_size > 20_000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img[..., :3].std() > 0.05  # a real picture, not a blank canvas
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"].startswith("WorldCereal sample (WorldCereal/worldcereal-classification@477ceb7d")
    assert summary["weights_path"] == str(GALILEO)  # the registry's mirror (../shared), used in place
    assert summary["model"] == "galileo-nano" and summary["embedding"]["embedding"] == 128
    assert summary["license"] == "MIT" and summary["seconds"] > 0
    assert summary["weights"]["weights_sha256"] == (
        "eab6acacf527886a508a555bc24efe4b4a2cf91b162e84cd1c4a1807e942180c")
    assert summary["weights"]["weights_verified"] == 1
    emb = open_embeddings(out / "embedding.zarr")
    assert emb.rio.crs.to_epsg() == 32631 and np.isfinite(emb.values).all()


def test_demo_without_sample_or_network_names_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("EOEMBED_OFFLINE", "1")
    monkeypatch.setenv("EOEMBED_DATA_MIRROR", "")  # as on a machine without ../shared
    monkeypatch.setenv("EOEMBED_DATA_DIR", str(tmp_path / "empty-cache"))
    run = subprocess.run([sys.executable, "-m", "eoembed.cli", "demo", "--out", str(tmp_path / "d"), "--model",
                          "spectral"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "DownloadUnreachableError" in run.stderr and "--sample" in run.stderr
    assert "eoembed fetch worldcereal" in run.stderr and "raw.githubusercontent.com/WorldCereal" in run.stderr
