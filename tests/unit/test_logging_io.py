"""Logging under the ``eoembed`` logger; consolidated Zarr stores with CF attributes on x/y."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

from eoembed.io import open_embeddings, save_embeddings, to_zarr  # noqa: E402


@pytest.fixture
def emb():
    e, _ = make_emb(6, 8, 4, seed=3)
    return e.rename("embeddings").drop_vars("embedding", errors="ignore")


def test_save_embeddings_is_consolidated_with_cf_coords(emb, tmp_path):
    import zarr

    p = save_embeddings(emb, tmp_path / "e.zarr")
    g = zarr.open_consolidated(str(p), mode="r")  # raises without consolidated metadata
    assert "embeddings" in g
    ds = xr.open_zarr(p, consolidated=True)
    assert ds.x.attrs["standard_name"] == "projection_x_coordinate" and ds.x.attrs["units"] == "m"
    assert ds.y.attrs["standard_name"] == "projection_y_coordinate" and ds.y.attrs["axis"] == "Y"
    back = open_embeddings(p)
    np.testing.assert_allclose(back.values, emb.values)
    assert back.rio.crs == emb.rio.crs and back.attrs["eoembed:model"] == emb.attrs["eoembed:model"]
    nc = save_embeddings(emb, tmp_path / "e.nc")
    assert xr.open_dataset(nc).x.attrs["units"] == "m"


def test_resumed_write_logs_the_skipped_regions(emb, tmp_path, caplog):
    p = tmp_path / "r.zarr"
    to_zarr(emb.chunk({"y": 3, "x": 4}), p, progress=False)
    with caplog.at_level(logging.INFO, logger="eoembed"):
        to_zarr(emb.chunk({"y": 3, "x": 4}), p, resume=True, progress=False)
    rec = [r for r in caplog.records if r.name == "eoembed.io"]
    assert any("4 of 4 regions finished earlier, skipped" in r.getMessage() for r in rec)


def test_downloads_and_cache_hits_are_logged(tmp_path, caplog):
    from eoembed.models.weights import download_pinned

    src = tmp_path / "w.bin"
    src.write_bytes(b"x" * 1000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    with caplog.at_level(logging.INFO, logger="eoembed"):
        download_pinned(src.as_uri(), tmp_path / "cache" / "w.bin", sha256=sha, what="test weights")
    msgs = [r.getMessage() for r in caplog.records if r.name == "eoembed.weights"]
    assert any(m.startswith("downloading test weights") for m in msgs)
    assert any("downloaded test weights: 1000 bytes" in m for m in msgs)


def test_network_errors_are_logged_with_the_decision(caplog):
    from eoembed.data._retry import classify_error

    with caplog.at_level(logging.INFO, logger="eoembed"):
        assert classify_error(OSError("HTTP response code: 503")) == "transient"
        assert classify_error(OSError("HTTP response code: 404")) == "fatal"
    rec = [r for r in caplog.records if r.name == "eoembed.data.retry"]
    assert [r.levelno for r in rec] == [logging.INFO, logging.WARNING]
    assert "transient, HTTP 503" in rec[0].getMessage() and "fatal, HTTP 404" in rec[1].getMessage()
