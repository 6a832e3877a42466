"""Stores that prove themselves: checksums, repair, fingerprints of the input, one writer (issue 17).

Real Zarr stores and real subprocesses (SIGKILL at random points, two writers).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import eoembed
from eoembed import io
from eoembed.exceptions import StoreError, StoreIntegrityError, StoreLockedError, StoreMismatchError
from eoembed.io import open_embeddings, to_zarr, verify
from eoembed.testing import synthetic_cube

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time, warnings
warnings.simplefilter("ignore")
import dask
dask.config.set(scheduler="synchronous")
import eoembed
from eoembed import io
from eoembed.testing import synthetic_cube
cube = synthetic_cube(height=48, width=48, times=2, seed=int(sys.argv[3])).chunk({"y": 16, "x": 16})
emb = eoembed.embed(cube, "spectral", tile_size=16, halo=0)
real = io._write_region
def slow(*args):
    time.sleep(float(sys.argv[2]))
    return real(*args)
io._write_region = slow
try:
    io.to_zarr(emb, sys.argv[1], resume=True, progress=False)
except Exception as err:
    print(type(err).__name__, err, file=sys.stderr)
    sys.exit(3)
"""


def _emb(seed=5, size=48, chunk=16):
    cube = synthetic_cube(height=size, width=size, times=2, seed=seed).chunk({"y": chunk, "x": chunk})
    return eoembed.embed(cube, "spectral", tile_size=16, halo=0)


def _child(store, delay=0.0, seed=5):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(delay), str(seed)], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    to_zarr(_emb(), path, progress=False)
    return open_embeddings(path).values


def _chunk_files(store: Path) -> list[Path]:
    return sorted(p for p in (store / "embeddings").rglob("*") if p.is_file() and "c" in p.relative_to(store).parts)


def test_finished_store_verifies_and_records_checksums(tmp_path, reference):
    store = tmp_path / "s.zarr"
    info = to_zarr(_emb(), store, progress=False)
    rep = verify(store)
    assert rep["ok"] and rep["verified"] == info["regions"] == 9 and not rep["bad"]
    rec = json.loads((store / ".eoembed-done" / "y0-x0").read_text())
    assert len(rec["sha256"]) == 64 and rec["y"] == [0, 4]
    np.testing.assert_array_equal(open_embeddings(store).values, reference)


def test_deleted_chunk_is_found_by_verify_and_repaired_by_resume(tmp_path, reference):
    store = tmp_path / "s.zarr"
    to_zarr(_emb(), store, progress=False)
    chunks = _chunk_files(store)
    chunks[4].unlink()  # the case: a finished store loses one data chunk
    rep = verify(store)
    assert not rep["ok"] and len(rep["bad"]) == 1 and "resume=True" in rep["message"]
    with pytest.warns(UserWarning, match="failed verification"):
        info = to_zarr(_emb(), store, resume=True, progress=False)
    assert info["repaired"] == 1 and info["written"] == 1 and info["skipped"] == 8
    np.testing.assert_array_equal(open_embeddings(store).values, reference)
    assert verify(store)["ok"]


def test_truncated_and_tampered_chunks_and_markers_are_repaired(tmp_path, reference):
    store = tmp_path / "s.zarr"
    to_zarr(_emb(), store, progress=False)
    chunks = _chunk_files(store)
    data = chunks[0].read_bytes()
    chunks[0].write_bytes(data[: len(data) // 2])  # truncated
    chunks[1].write_bytes(bytes(len(chunks[1].read_bytes())))  # zeroed
    marker = store / ".eoembed-done" / "y4-x8"
    rec = json.loads(marker.read_text())
    marker.write_text(json.dumps({**rec, "sha256": "0" * 64}))  # tampered checksum
    (store / ".eoembed-done" / "y8-x8").write_text("{not json")
    assert len(verify(store)["bad"]) == 4
    with pytest.warns(UserWarning, match="4 region"):
        info = to_zarr(_emb(), store, resume=True, progress=False)
    assert info["repaired"] == 4
    np.testing.assert_array_equal(open_embeddings(store).values, reference)
    assert verify(store)["ok"]


def test_resume_with_reprocessed_input_on_the_same_grid_is_refused(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    real = io._mark_done
    calls = []

    def crash_after_three(record, marker):
        calls.append(marker)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(record, marker)

    monkeypatch.setattr(io, "_mark_done", crash_after_three)
    monkeypatch.setattr(io, "_parallelism", lambda: 1)
    with pytest.raises(KeyboardInterrupt):
        to_zarr(_emb(seed=5), store, progress=False)
    monkeypatch.setattr(io, "_mark_done", real)
    cube = synthetic_cube(height=48, width=48, times=2, seed=5)
    remasked = cube.where(cube.x < cube.x[30]).chunk({"y": 16, "x": 16})  # another cloud mask, same grid
    other = eoembed.embed(remasked, "spectral", tile_size=16, halo=0)
    with pytest.raises(StoreMismatchError, match="different run") as info:
        to_zarr(other, store, resume=True, progress=False)
    assert "overwrite=True" in str(info.value)


def test_input_file_rewritten_on_disk_is_another_run(tmp_path):
    from eoembed.data import open_cube

    src = tmp_path / "cube.nc"
    cube = synthetic_cube(height=32, width=32, times=2, seed=1)
    cube.to_dataset(dim="band").to_netcdf(src)
    first = eoembed.embed(open_cube(src, chunks={}), "spectral", tile_size=16, halo=0)
    again = eoembed.embed(open_cube(src, chunks={}), "spectral", tile_size=16, halo=0)
    assert io._run_id(io._regular(first.chunk())) == io._run_id(io._regular(again.chunk()))
    time.sleep(0.01)
    (cube * 1.1).to_dataset(dim="band").to_netcdf(tmp_path / "new.nc")
    os.replace(tmp_path / "new.nc", src)  # re-processed, same path
    changed = eoembed.embed(open_cube(src, chunks={}), "spectral", tile_size=16, halo=0)
    assert io._run_id(io._regular(first)) != io._run_id(io._regular(changed))


def test_disk_full_is_a_typed_error_and_the_run_resumes_identically(tmp_path, monkeypatch, reference):
    store = tmp_path / "s.zarr"
    real = io._write_region
    calls = []

    def disk_full(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(io, "_write_region", disk_full)
    monkeypatch.setattr(io, "_parallelism", lambda: 1)
    with pytest.raises(StoreError, match="No space left.*resume=True"):
        to_zarr(_emb(), store, progress=False)
    monkeypatch.setattr(io, "_write_region", real)
    assert not verify(store)["ok"]
    info = to_zarr(_emb(), store, resume=True, progress=False)
    assert info["skipped"] == 2 and info["written"] == 7
    np.testing.assert_array_equal(open_embeddings(store).values, reference)


def test_read_only_folder_is_a_typed_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    target = ro if os.geteuid() != 0 else Path("/proc")  # root ignores permissions; /proc takes no files
    try:
        with pytest.raises(StoreError, match="writable"):
            to_zarr(_emb(), target / "s.zarr", progress=False)
    finally:
        ro.chmod(0o700)


def test_read_back_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_digest", lambda v, _n=iter(range(10**6)): str(next(_n)))  # never reads back equal
    with pytest.raises(StoreIntegrityError, match="reads back different"):
        to_zarr(_emb(), tmp_path / "s.zarr", progress=False)


def test_not_a_store_and_object_store_urls_are_refused(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(StoreError, match="overwrite=True"):
        to_zarr(_emb(), tmp_path / "empty.zarr", resume=True, progress=False)
    with pytest.raises(StoreError, match="write it again"):
        verify(tmp_path / "empty.zarr")
    with pytest.raises(StoreError, match="copy"):
        to_zarr(_emb(), "s3://bucket/emb.zarr", progress=False)


def test_irregular_first_chunk_is_written_on_regular_store_chunks(tmp_path):
    emb = _emb()
    ragged = emb.chunk({"y": (2, 4, 4, 2), "x": (4, 4, 4)})
    to_zarr(ragged, tmp_path / "s.zarr", progress=False)
    np.testing.assert_array_equal(open_embeddings(tmp_path / "s.zarr").values, emb.values)
    assert verify(tmp_path / "s.zarr")["ok"]


def test_verify_cli_one_line_and_exit_codes(tmp_path, capsys):
    from eoembed.cli import main

    store = tmp_path / "s.zarr"
    to_zarr(_emb(), store, progress=False)
    assert main(["verify", str(store)]) == 0
    assert "9/9 regions verified" in capsys.readouterr().out
    _chunk_files(store)[2].unlink()
    assert main(["verify", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resume" in err
    assert main(["verify", str(tmp_path / "nothing.zarr")]) == 2


# --- real processes ----------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path, reference):
    rng = random.Random(17)
    for trial in range(4):
        store = tmp_path / f"k{trial}.zarr"
        child = _child(store, delay=0.15)
        time.sleep(rng.uniform(0.0, 2.5))  # anywhere: import, creation, regions, finish
        child.send_signal(signal.SIGKILL)
        child.wait()
        to_zarr(_emb(), store, resume=True, progress=False)
        np.testing.assert_array_equal(open_embeddings(store).values, reference)
        assert verify(store)["ok"], trial


@pytest.mark.slow
def test_two_writers_cannot_both_succeed(tmp_path, reference):
    store = tmp_path / "s.zarr"
    a, b = _child(store, delay=0.2), _child(store, delay=0.2)  # started together, racing for the same path
    rcs = sorted([a.wait(timeout=120), b.wait(timeout=120)])
    errs = a.stderr.read() + b.stderr.read()
    assert rcs == [0, 3] and "StoreLockedError" in errs, errs
    np.testing.assert_array_equal(open_embeddings(store).values, reference)
    assert verify(store)["ok"]


# ---- the stores layer sits below everything that reads it (issue 25 item 7) ---------------


def test_one_public_open_embeddings_and_the_pyramid_writer_in_the_stores():
    import eoembed.explore.pyramid as explore_pyramid
    import eoembed.products as products

    assert eoembed.open_embeddings is io.open_embeddings is products.open_embeddings
    assert explore_pyramid.write_pyramid is io.write_pyramid  # the notebooks' import path still works
    assert products.dequantize_alphaearth.__module__ == "eoembed.codecs"  # one codecs module, re-exported


def test_verify_covers_crs_transform_and_attrs(tmp_path):
    """A store whose CRS, transform or describing attrs were edited after writing no longer verifies."""
    import zarr

    emb = _emb(size=32)
    for what, edit in [
        ("CRS", lambda g, n: g["spatial_ref"].attrs.update(crs_wkt=g["spatial_ref"].attrs["crs_wkt"].replace(
            "WGS 84", "WGS 72"))),
        ("transform", lambda g, n: g["spatial_ref"].attrs.update(GeoTransform="0 10 0 0 0 -10")),
        ("attrs that describe", lambda g, n: g[n].attrs.update({"eoembed:model": "another-model"})),
    ]:
        store = tmp_path / f"{what.split()[0]}.zarr"
        to_zarr(emb, store, progress=False)
        assert verify(store)["ok"]
        if what == "CRS":  # the recorded checksums are plain attrs: a reopened cube still saves anywhere
            io.save_embeddings(open_embeddings(store), tmp_path / "again.nc")
        g = zarr.open_group(str(store), mode="r+")
        edit(g, "embeddings")
        rep = verify(store)
        assert not rep["ok"] and any(what in b for b in rep["bad"]), rep["bad"]
        assert "overwrite=True" in rep["message"]


def test_verify_on_an_input_netcdf_does_not_advise_removing_it(tmp_path, capsys):
    from eoembed.testing import synthetic_cube

    nc = tmp_path / "input.nc"
    synthetic_cube(height=8, width=8, times=1).to_dataset(name="reflectance").to_netcdf(nc)
    with pytest.raises(StoreError) as err:
        verify(nc)
    assert "remove" not in str(err.value).lower() and "eoembed.io.to_zarr" in str(err.value)
    from eoembed.cli import main

    assert main(["verify", str(nc)]) == 2
    assert "remove" not in capsys.readouterr().err.lower()
    assert nc.exists()
    folder = tmp_path / "scenes"
    folder.mkdir()
    with pytest.raises(StoreError) as err:
        verify(folder)
    assert "remove" not in str(err.value).lower()
