"""Pinned-URL downloads with SHA-256 checks, on local files and a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from eoembed import exceptions as E
from eoembed.models import get_model_spec
from eoembed.models.registry import WeightFile
from eoembed.models.weights import download_pinned, resolve_weights, sha256_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path):
    """A 127.0.0.1 server: /good (the payload), /short (announces it, sends half), /missing (404)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/missing":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD if self.path == "/good" else PAYLOAD[: len(PAYLOAD) // 2])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_checks_the_hash_and_keeps_the_file(server, tmp_path):
    dest = download_pinned(f"{server}/good", tmp_path / "w.pt", sha256=SHA)
    assert dest.read_bytes() == PAYLOAD and list(tmp_path.iterdir()) == [dest]


def test_truncated_download_is_refused_and_not_kept(server, tmp_path):
    with pytest.raises(E.CorruptWeightsError, match="broke off|announced"):
        download_pinned(f"{server}/short", tmp_path / "w.pt", sha256=SHA)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_url_fails_the_hash(tmp_path):
    src = tmp_path / "src.pt"
    src.write_bytes(PAYLOAD[:1000])
    (tmp_path / "cache").mkdir()
    with pytest.raises(E.WeightsHashMismatchError) as err:
        download_pinned(src.as_uri(), tmp_path / "cache" / "w.pt", sha256=SHA)
    assert SHA in str(err.value) and hashlib.sha256(PAYLOAD[:1000]).hexdigest() in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_http_error_and_closed_port(server, tmp_path):
    with pytest.raises(E.WeightsNotFoundError, match="HTTP 404"):
        download_pinned(f"{server}/missing", tmp_path / "w.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(E.NetworkUnavailableError, match="Cannot reach"):
        download_pinned(f"http://127.0.0.1:{port}/x", tmp_path / "w.pt", timeout=2)


def _galileo_from(folder: Path):
    """galileo-nano whose pinned URLs point at local copies (file://)."""
    spec = get_model_spec("galileo-nano")
    return replace(spec, weights=replace(spec.weights, files=tuple(
        WeightFile(f.name, f.role, f.sha256 if f.role != "weights" else sha256_file(folder / f.name),
                   (folder / f.name).as_uri(), f.required) for f in spec.weight_files)))


def test_pinned_download_then_cache_hit_then_tampering(tmp_path, monkeypatch):
    src = tmp_path / "upstream"
    src.mkdir()
    (src / "encoder.pt").write_bytes(PAYLOAD)
    (src / "config.json").write_text("{}")
    (src / "normalization.json").write_text("{}")
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = _galileo_from(src)
    first = resolve_weights(spec)
    assert first.origin == "download" and first.verified and first.sha256() == SHA
    assert first.weights == tmp_path / "cache" / "galileo-nano" / "encoder.pt"
    assert first.revision == spec.source_revision
    (src / "encoder.pt").unlink()  # the cache answers now, the URL is not read again
    again = resolve_weights(spec)
    assert again.origin == "cache" and again.verified
    first.weights.write_bytes(PAYLOAD[:-1])  # a damaged cached file is refused
    with pytest.raises(E.WeightsHashMismatchError, match="Delete"):
        resolve_weights(spec)


def test_offline_without_local_weights_names_the_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("EOEMBED_OFFLINE", "1")
    with pytest.raises(E.WeightsNotFoundError, match="raw.githubusercontent.com/nasaharvest/galileo/d0482291"):
        resolve_weights(get_model_spec("galileo-nano"))


def test_hashes_are_remembered_until_the_file_changes(tmp_path):
    import os

    f = tmp_path / "w.pt"
    f.write_bytes(PAYLOAD)
    assert sha256_file(f) == SHA
    os.utime(f, ns=(1, 1))
    f.write_bytes(PAYLOAD[:10])  # new size and mtime: hashed again
    assert sha256_file(f) == hashlib.sha256(PAYLOAD[:10]).hexdigest()
