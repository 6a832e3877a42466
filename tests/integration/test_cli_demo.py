"""The command line and the demo on the real shared sample."""

from __future__ import annotations

import json
import subprocess
import sys

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


@pytest.mark.slow
def test_demo_command_on_the_shared_sample(tmp_path, sample_path, checkpoints):
    out = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "eoembed.cli", "demo", "--sample", str(sample_path), "--model", "nano",
         "--weights", str(checkpoints["v1.1"]), "--patch-size", "8", "--out", str(out)],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    png = out / "demo.png"
    assert png.stat().st_size > 20_000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img[..., :3].std() > 0.05  # a real picture, not a blank canvas
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "olmoearth-v1.1-nano" and summary["embedding"]["embedding"] == 128
    assert open_embeddings(out / "embedding.zarr").rio.crs.to_epsg() == 32631


def test_demo_without_sample_or_network_names_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("EOEMBED_OFFLINE", "1")
    run = subprocess.run([sys.executable, "-m", "eoembed.cli", "demo", "--out", str(tmp_path / "d"), "--model",
                          "spectral"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "--sample" in run.stderr
