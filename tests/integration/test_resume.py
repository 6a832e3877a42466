"""Streaming writes: a run killed with SIGKILL half-way resumes to exactly the same cube."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import eoembed
from eoembed.exceptions import EOEmbedError, InputError
from eoembed.io import open_embeddings, to_zarr
from eoembed.testing import synthetic_cube

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time, warnings
warnings.simplefilter("ignore")
import eoembed
from eoembed import io
from eoembed.testing import synthetic_cube
import dask
dask.config.set(scheduler="synchronous")
cube = synthetic_cube(height=64, width=64, times=2, seed=11).chunk({"y": 16, "x": 16})
emb = eoembed.embed(cube, "nano", weights=sys.argv[2], tile_size=16, halo=0)
real = io._write_region
def slow(*args):  # pace the regions so the parent can kill the child half-way (the graph stays the run's)
    time.sleep(0.3)
    return real(*args)
io._write_region = slow
io.to_zarr(emb, sys.argv[1], resume=True, progress=False)
"""


def _emb(ck):
    cube = synthetic_cube(height=64, width=64, times=2, seed=11).chunk({"y": 16, "x": 16})
    return eoembed.embed(cube, "nano", weights=ck, tile_size=16, halo=0)


@pytest.mark.slow
def test_sigkill_half_way_then_resume_gives_the_uninterrupted_cube(tmp_path, checkpoints):
    ck = checkpoints["v1.1"]
    store = tmp_path / "emb.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(ck)], env=env, cwd=ROOT)
    done = store / ".eoembed-done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if done.is_dir() and len([p for p in done.iterdir() if not p.suffix]) >= 4:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the child finished before it could be killed; slow it down"
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = {p.name for p in done.iterdir() if not p.suffix}
    assert 4 <= len(finished) < 16
    # the half-written store already opens with its CRS and attrs
    partial = open_embeddings(store)
    assert partial.rio.crs is not None and partial.attrs["eoembed:model"] == "olmoearth-v1.1-nano"
    assert "eoembed:complete" not in partial.attrs

    info = to_zarr(_emb(ck), store, resume=True, progress=False)
    assert info["skipped"] == len(finished) and info["written"] == 16 - len(finished)
    resumed = open_embeddings(store)
    reference = _emb(ck)
    to_zarr(reference, tmp_path / "ref.zarr", progress=False)
    whole = open_embeddings(tmp_path / "ref.zarr")
    np.testing.assert_array_equal(resumed.values, whole.values)
    assert resumed.attrs == whole.attrs and resumed.attrs["eoembed:complete"] == 1
    assert resumed.rio.transform() == reference.rio.transform()


def test_a_region_without_its_marker_is_written_again(tmp_path, monkeypatch):
    cube = synthetic_cube(height=40, width=40, times=2, seed=2).chunk({"y": 16, "x": 16})
    emb = eoembed.embed(cube, "spectral", tile_size=16, halo=0)
    store = tmp_path / "s.zarr"
    from eoembed import io

    real = io._mark_done
    calls = []

    def crash_after_two(written, marker):  # the third region's data is written, then the run dies
        calls.append(marker)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(written, marker)

    monkeypatch.setattr(io, "_mark_done", crash_after_two)
    monkeypatch.setattr(io, "_parallelism", lambda: 1)
    with pytest.raises(KeyboardInterrupt):
        to_zarr(emb, store, progress=False)
    # scribble over the unmarked region, as a half-written chunk would
    import zarr

    arr = zarr.open_array(str(store), path="embeddings", mode="r+")
    arr[:, :4, 8:] = 123.0
    monkeypatch.setattr(io, "_mark_done", real)
    info = to_zarr(emb, store, resume=True, progress=False)
    assert info["skipped"] == 2 and info["written"] == 7
    np.testing.assert_array_equal(open_embeddings(store).values, emb.values)


def test_resume_refuses_another_run_and_existing_stores_are_kept(tmp_path):
    cube = synthetic_cube(height=32, width=32, times=2).chunk({"y": 16, "x": 16})
    emb = eoembed.embed(cube, "spectral", tile_size=16, halo=0)
    store = tmp_path / "s.zarr"
    to_zarr(emb, store, progress=False)
    with pytest.raises(EOEmbedError, match="--resume"):
        to_zarr(emb, store, progress=False)
    other = eoembed.embed(cube, "spectral", tile_size=16, halo=0, patch_size=8)
    with pytest.raises(InputError, match="different run"):
        to_zarr(other, store, resume=True, progress=False)
    assert emb.eo.to_zarr(store, overwrite=True, progress=False)["written"] == 4


def test_cli_embed_resume(tmp_path, capsys):
    from eoembed.cli import main

    cube = synthetic_cube(height=32, width=32, times=2)
    src = tmp_path / "cube.nc"
    cube.to_dataset(dim="band").to_netcdf(src)
    out = tmp_path / "out.zarr"
    assert main(["embed", str(src), "-o", str(out), "--model", "spectral", "--lazy", "--quiet",
                 "--tile-size", "16", "--halo", "0"]) == 0
    assert main(["embed", str(src), "-o", str(out), "--model", "spectral", "--resume", "--quiet",
                 "--tile-size", "16", "--halo", "0"]) == 0
    assert "already done" in capsys.readouterr().out
    assert main(["embed", str(src), "-o", str(tmp_path / "x.nc"), "--model", "spectral", "--resume"]) == 2
