"""The sample registry: pinned upstream files fetched with pooch from a local 127.0.0.1 server that serves
them under their upstream paths; typed errors that leave nothing half-written; mirrors that need no network."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from eoembed import exceptions as E
from eoembed.cli import main
from eoembed.data import registry as R

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PAYLOAD = bytes(range(256)) * 512  # 128 KiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Upstream:
    """A raw.githubusercontent.com stand-in on 127.0.0.1: serves ``files`` (URL path → bytes), logs every
    request; ``short`` paths announce the full length and send half, ``wrong`` ones send other bytes."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.wrong: set[str] = set()
        self.log: list[str] = []
        up = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                up.log.append(self.path)
                body = up.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if self.path in up.wrong:
                    body = body[::-1]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in up.short else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, entry: R.RegistryFile, body: bytes) -> str:
        path = f"/{entry.repo}/{entry.commit}/{entry.path}"
        self.files[path] = body
        return path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream(monkeypatch, tmp_path):
    """The server, with downloads routed to it, no mirror, and empty data and weight caches under tmp_path."""
    up = Upstream()
    monkeypatch.setenv("EOEMBED_DATA_URL", up.url)
    monkeypatch.setenv("EOEMBED_DATA_MIRROR", "")
    monkeypatch.setenv("EOEMBED_DATA_DIR", str(tmp_path / "data-cache"))
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path / "weights-cache"))
    monkeypatch.delenv("EOEMBED_OFFLINE", raising=False)
    yield up
    up.close()


@pytest.fixture
def toy(monkeypatch):
    """A registered group ``toy`` of two small synthetic files (so error cases need no real data)."""
    group = R.Group("toy", "data/toy", "test files")
    a = R.RegistryFile("toy", "a.bin", "owner/repo", "c0ffee" * 6 + "abcd", "data/a.bin", SHA, len(PAYLOAD), "MIT")
    b = replace(a, filename="b.bin", path="data/sub/b.bin", sha256=hashlib.sha256(b"bee").hexdigest(), size=3)
    monkeypatch.setitem(R.GROUPS, "toy", group)
    monkeypatch.setitem(R.REGISTRY, a.name, a)
    monkeypatch.setitem(R.REGISTRY, b.name, b)
    monkeypatch.setattr(R, "_ENTRIES", (*R._ENTRIES, a, b))
    return a, b


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the registry itself ----------------------------------------------------------------------------------------
def test_every_entry_is_pinned_hashed_and_licensed():
    for e in R.REGISTRY.values():
        assert len(e.commit) == 40 and int(e.commit, 16) >= 0, e.name
        assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0, e.name
        assert e.url == f"https://raw.githubusercontent.com/{e.repo}/{e.commit}/{e.path}"
        assert e.licence.startswith("MIT") and e.size > 0
        assert e.group in R.GROUPS
    for g in R.GROUPS.values():  # every folder keeps its upstream licence file
        assert f"{g.name}/LICENSE" in R.REGISTRY
    demo = R.REGISTRY[R.SAMPLE_CUBE]
    assert demo.repo == "WorldCereal/worldcereal-classification" and demo.size < 2_000_000


def test_weight_entries_agree_with_the_model_specs():
    """The registry points at the same weights the models verify: same file names, same SHA-256, and
    the folder resolve_weights reads (EOEMBED_WEIGHTS_DIR/<model>)."""
    from eoembed.models import get_model_spec

    for name in ("galileo-nano", "presto"):
        spec = get_model_spec(name)
        assert R.GROUPS[name].weights and spec.cache_dirname == name
        ours = {e.filename: e for e in R.files_of(name)}
        for wf in spec.weight_files:
            assert wf.name in ours, (name, wf.name)
            if wf.sha256:
                assert ours[wf.name].sha256 == wf.sha256, (name, wf.name)
            if wf.url and wf.role == "weights":  # same upstream file (the spec may pin an older commit)
                assert wf.url.endswith(ours[wf.name].path) and ours[wf.name].repo in wf.url


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared beside the repository")
def test_the_shared_folder_is_a_complete_mirror(monkeypatch):
    """../shared holds every registered file with the registered SHA-256 (cross-checks the READMEs' hashes)."""
    monkeypatch.delenv("EOEMBED_DATA_MIRROR", raising=False)
    assert R.mirrors() == [SHARED.resolve()] or R.mirrors() == [SHARED]
    for e in R.REGISTRY.values():
        p = SHARED / R.GROUPS[e.group].mirror_dir / e.filename
        assert p.stat().st_size == e.size, e.name
        assert hashlib.sha256(p.read_bytes()).hexdigest() == e.sha256, e.name
    got = R.fetch(download=False)
    assert got["worldcereal"] == SHARED / "data" / "worldcereal"
    assert got["galileo-nano"] == SHARED / "weights" / "galileo-nano"
    readme = (SHARED / "data" / "worldcereal-training" / "README.md").read_text()
    for e in R.files_of("worldcereal-training"):
        if e.filename.endswith(".nc"):
            assert f"`{e.filename}` {e.sha256}" in readme


def test_unknown_name_suggests_close_ones():
    with pytest.raises(E.UnknownSampleError, match="galileo-nano") as err:
        R.sample("galileo")
    assert isinstance(err.value, KeyError) and "eoembed fetch --list" in str(err.value)


# ---- downloads ----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared to serve as upstream bytes")
def test_fetch_downloads_the_pinned_files_once(upstream, tmp_path):
    for e in R.files_of("worldcereal") + R.files_of("galileo-nano"):
        upstream.serve(e, (SHARED / R.GROUPS[e.group].mirror_dir / e.filename).read_bytes())
    got = R.fetch(["worldcereal", "galileo-nano"])
    assert got["worldcereal"] == tmp_path / "data-cache" / "worldcereal"
    assert got["galileo-nano"] == tmp_path / "weights-cache" / "galileo-nano"  # the models' weights cache
    assert f"/WorldCereal/worldcereal-classification/{R.WORLDCEREAL_COMMIT}/tests/worldcerealtests/testresources/" \
           "worldcereal_preprocessed_inputs.nc" in upstream.log
    assert _leftovers(got["worldcereal"]) == sorted(e.filename for e in R.files_of("worldcereal"))
    n = len(upstream.log)
    assert R.sample(R.SAMPLE_CUBE) == got["worldcereal"] / "worldcereal_preprocessed_inputs.nc"
    assert len(upstream.log) == n  # cache hit: no request

    from eoembed.models import get_model_spec
    from eoembed.models.weights import resolve_weights

    src = resolve_weights(get_model_spec("galileo-nano"))  # the models find what fetch put there
    assert src.origin == "cache" and src.verified and src.weights.parent == got["galileo-nano"]


def test_a_file_in_a_subfolder_is_fetched_and_verified(upstream, toy, tmp_path):
    a, b = toy
    upstream.serve(a, PAYLOAD)
    upstream.serve(b, b"bee")
    folder = R.sample("toy", progressbar=False)
    assert folder == tmp_path / "data-cache" / "toy"
    assert (folder / "a.bin").read_bytes() == PAYLOAD and (folder / "b.bin").read_bytes() == b"bee"
    assert _leftovers(folder) == ["a.bin", "b.bin"]
    (folder / "a.bin").write_bytes(PAYLOAD[:-1])  # a damaged cache copy is replaced by a fresh download
    assert R.sample("toy/a.bin").read_bytes() == PAYLOAD


def test_wrong_hash_is_refused_and_nothing_kept(upstream, toy, tmp_path):
    a, _ = toy
    path = upstream.serve(a, PAYLOAD)
    upstream.wrong.add(path)
    with pytest.raises(E.DownloadHashMismatchError) as err:
        R.sample("toy/a.bin")
    msg = str(err.value)
    assert SHA in msg and a.url in msg and "eoembed fetch toy" in msg and "nothing was kept" in msg
    assert isinstance(err.value, E.DataSourceError)
    assert _leftovers(tmp_path / "data-cache") == ["toy"]  # the folder, no file, no temporary


def test_truncated_download_is_refused_and_nothing_kept(upstream, toy, tmp_path):
    a, _ = toy
    upstream.short.add(upstream.serve(a, PAYLOAD))
    with pytest.raises(E.DownloadIncompleteError) as err:  # broke off (or, if the client missed it, wrong hash)
        R.sample("toy/a.bin")
    assert "nothing was kept" in str(err.value) and "Run again" in str(err.value)
    assert _leftovers(tmp_path / "data-cache") == ["toy"]


def test_404_names_the_url_and_the_fix(upstream, toy, tmp_path):
    a, _ = toy  # not served
    with pytest.raises(E.DownloadNotFoundError, match="HTTP 404") as err:
        R.sample("toy/a.bin")
    assert isinstance(err.value, FileNotFoundError)
    assert a.url in str(err.value) and "EOEMBED_DATA_MIRROR" in str(err.value)
    assert _leftovers(tmp_path / "data-cache") == ["toy"]


def test_unreachable_host_is_a_typed_error(upstream, toy, monkeypatch, tmp_path):
    monkeypatch.setenv("EOEMBED_DATA_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(E.DownloadUnreachableError, match="Cannot reach") as err:
        R.sample("toy")
    assert isinstance(err.value, ConnectionError) and "internet" in str(err.value)
    assert _leftovers(tmp_path / "data-cache") == ["toy"]


def test_offline_never_requests(upstream, toy, monkeypatch):
    a, _ = toy
    upstream.serve(a, PAYLOAD)
    monkeypatch.setenv("EOEMBED_OFFLINE", "1")
    with pytest.raises(E.DownloadUnreachableError, match="downloads are off"):
        R.sample("toy/a.bin")
    with pytest.raises(E.DownloadUnreachableError, match="download=False"):
        R.sample("toy/a.bin", download=False)
    assert upstream.log == []


# ---- mirrors ------------------------------------------------------------------------------------------------------
def test_mirror_hit_needs_no_network(upstream, toy, monkeypatch, tmp_path):
    a, b = toy
    mirror = tmp_path / "mirror"
    (mirror / "data" / "toy").mkdir(parents=True)
    (mirror / "data" / "toy" / "a.bin").write_bytes(PAYLOAD)
    (mirror / "data" / "toy" / "b.bin").write_bytes(b"bee")
    monkeypatch.setenv("EOEMBED_DATA_MIRROR", os.pathsep.join([str(tmp_path / "nothing-here"), str(mirror)]))
    monkeypatch.setenv("EOEMBED_DATA_URL", f"http://127.0.0.1:{_closed_port()}")  # any request would fail
    assert R.sample("toy") == mirror / "data" / "toy"  # used in place
    assert R.sample("toy/b.bin") == mirror / "data" / "toy" / "b.bin"
    assert not (tmp_path / "data-cache").exists()  # nothing copied, nothing downloaded
    assert main(["fetch", "toy", "--json"]) == 0


def test_a_mirror_file_with_the_wrong_hash_is_refused(upstream, toy, monkeypatch, tmp_path):
    a, _ = toy
    upstream.serve(a, PAYLOAD)
    bad = tmp_path / "mirror" / "data" / "toy" / "a.bin"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the published file")
    monkeypatch.setenv("EOEMBED_DATA_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(E.DownloadHashMismatchError, match="mirror copy") as err:
        R.sample("toy/a.bin")
    assert str(bad) in str(err.value) and SHA in str(err.value)
    assert upstream.log == []


def test_default_mirror_is_shared_beside_the_checkout(monkeypatch):
    monkeypatch.delenv("EOEMBED_DATA_MIRROR", raising=False)
    root = Path(R.__file__).resolve().parents[2]
    assert R.mirrors() == ([root.parent / "shared"] if (root.parent / "shared").is_dir() else [])
    monkeypatch.setenv("EOEMBED_DATA_MIRROR", "")
    assert R.mirrors() == []


# ---- command line -------------------------------------------------------------------------------------------------
def test_fetch_command(upstream, toy, capsys, tmp_path):
    a, b = toy
    upstream.serve(a, PAYLOAD)
    upstream.serve(b, b"bee")
    assert main(["fetch"]) == 2 and "--all" in capsys.readouterr().err
    assert main(["fetch", "toy/b.bin", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"toy/b.bin": str(tmp_path / "data-cache" / "toy" / "b.bin")}
    assert main(["fetch", "--list"]) == 0
    out = capsys.readouterr().out
    assert "toy/a.bin" in out and a.url in out and R.SAMPLE_CUBE in out
    assert main(["fetch", "no-such-thing"]) == 2
    assert "UnknownSampleError" in capsys.readouterr().err
    upstream.files.clear()
    assert main(["fetch", "toy/a.bin"]) == 2
    assert "DownloadNotFoundError" in capsys.readouterr().err


def test_docs_list_every_registered_file_with_its_source_and_hash():
    text = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    for e in R.REGISTRY.values():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{e.name}` |")), None)
        assert row is not None, e.name
        assert f"`{e.sha256}`" in row and f"https://github.com/{e.repo}/blob/{e.commit}/{e.path}" in row, e.name


def test_no_module_of_eoembed_data_imports_its_own_package():
    """eoembed.data/__init__ imports its modules; none of them imports the package back (no import circle):
    they name the submodule they need (``from eoembed.data.stac import sentinel2``)."""
    import ast

    for f in sorted((Path(R.__file__).parent).glob("*.py")):
        if f.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("eoembed.data", "eoembed") and not node.level:
                assert node.module != "eoembed.data" and "data" not in [a.name for a in node.names], (f.name, ast.dump(node))
            if isinstance(node, ast.Import):
                assert "eoembed.data" not in [a.name for a in node.names], f.name
