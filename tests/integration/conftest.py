"""Fixtures for the offline STAC tests (eoembed.data): a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for stac_server
import stac_server as ss  # noqa: E402


@pytest.fixture(scope="session")
def s2_scenes():
    """Synthetic Sentinel-2 scenes (arrays in memory) and the query bbox; built once."""
    return ss.make_s2_scenes(np.random.default_rng(42))


@pytest.fixture(scope="session")
def _stac_server_process(tmp_path_factory):
    with ss.StacServer(tmp_path_factory.mktemp("stac-srv")) as srv:
        yield srv


@pytest.fixture
def stac_server(_stac_server_process):
    """The test STAC server (one child process per session), emptied for each test."""
    _stac_server_process.reset()
    return _stac_server_process


@pytest.fixture
def pc_endpoint(stac_server, monkeypatch):
    """Point planetary-computer's SAS token endpoint at the test server; empty token cache."""
    from planetary_computer import sas
    from planetary_computer.settings import Settings

    monkeypatch.setattr(Settings.get(), "sas_url", f"{stac_server.url}/api/sas/v1/token")
    monkeypatch.setattr(sas, "TOKEN_CACHE", {})
    return stac_server


@dataclasses.dataclass
class S2Env:
    server: ss.StacServer
    scenes: list
    bbox: tuple
    container: str
    signed: bool
    items: list

    @property
    def catalog(self) -> str:
        return self.server.url

    def options(self, **overrides: Any) -> dict:
        from eoembed.data._retry import RetryPolicy

        opts: dict[str, Any] = dict(
            catalog=self.server.url,
            sign="planetary-computer" if self.signed else None,
            gdal_env={"GDAL_HTTP_PROXY": self.server.proxy} if self.signed else {},
            retry=RetryPolicy(max_attempts=3, backoff=0.01, max_backoff=0.05, timeout=10),
        )
        opts.update(overrides)
        return opts

    def load(self, start="2024-01-01", end="2024-03-31", **overrides):
        from eoembed.data.stac import sentinel2

        return sentinel2(self.bbox, start, end, **self.options(**overrides))

    def asset(self, item_id: str, band: str) -> str:
        return f"{self.container}/{item_id}/{band}.tif"


def _make_env(server, scenes_bbox, tmp_path, *, signed: bool) -> S2Env:
    scenes, bbox = scenes_bbox
    container = "c" + uuid.uuid4().hex[:10]  # unique URLs: GDAL caches per URL across tests
    base = "http://pcacct.blob.core.windows.net" if signed else f"{server.url}/blob"
    server.require_sas = signed
    items = ss.write_s2_catalog(scenes, server.root, asset_base=base, container=container)
    server.add_items(items)
    return S2Env(server, scenes, bbox, container, signed, items)


@pytest.fixture
def s2(pc_endpoint, s2_scenes, tmp_path) -> S2Env:
    """Sentinel-2 items in fake Azure storage (SAS required), searched through the test STAC API."""
    return _make_env(pc_endpoint, s2_scenes, tmp_path, signed=True)


@pytest.fixture
def s2_plain(stac_server, s2_scenes, tmp_path) -> S2Env:
    """The same items on plain HTTP (no signing)."""
    return _make_env(stac_server, s2_scenes, tmp_path, signed=False)
