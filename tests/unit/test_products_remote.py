"""eoembed.products.alphaearth / tessera: tiles found in the producer's index, streamed over HTTP, mosaicked.

A real HTTP server (``ThreadingHTTPServer`` on 127.0.0.1, with byte-range support, which GDAL's
``/vsicurl/`` needs and ``SimpleHTTPRequestHandler`` lacks) serves files this module writes in the
producers' published layouts:

* AlphaEarth (https://developers.google.com/earth-engine/guides/aef_on_gcs_readme, https://source.coop/tge-labs/aef):
  ``<root>/aef_index.parquet`` (columns ``path``, ``year``, ``crs``, ``utm_zone``, ``utm_*``, ``wgs84_*``,
  ``geometry``; ``path`` holds the bucket URI) and ``<root>/<year>/<zone>/<file>.tiff`` COGs of 64 int8 bands,
  nodata -128; one tile "bottom-up" as the Source Cooperative copies are.
* TESSERA (ucam-eo/geotessera ``geotessera/registry.py``): ``npy/v1/manifest.parquet`` (``year``, ``lon``,
  ``lat``, ``grid_size``, ``scales_size``), ``npy/v1/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>.npy`` int8
  (H, W, 128) with ``..._scales.npy`` float32 (H, W), ``landmasks/v1/grid_<lon>_<lat>.tiff`` for the grid.

The expected values are computed here from the written integers with the published rules, written
out (not imported from eoembed), so a wrong rule, a shifted window or a flipped tile fails.
"""

from __future__ import annotations

import http.server
import math
import re
import threading
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

import eoembed
from eoembed.exceptions import (
    BBoxError,
    DownloadNotFoundError,
    DownloadUnreachableError,
    MissingTileError,
    ProductIndexError,
    QueryError,
)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

UTM31 = "EPSG:32631"
UTM32 = "EPSG:32632"
X0, Y0 = 500_000.0, 5_700_000.0  # top-left of tile A (UTM 31N, ~lon 3.0, lat 51.45)
BIG_X0 = 520_000.0  # the big COG (for the bytes-read check)
BIG = 768  # its side: 768 x 768 x 64 int8 in 128-px blocks of 1 MiB, with overviews: 51.7 MB
YEAR = 2024


# ---- the server ------------------------------------------------------------------------------------------
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under ``root`` with HEAD, single and multiple byte ranges; records every body sent."""

    root: Path
    sent: list  # (relative path, status, bytes of body)

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool):
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = self.root / rel
        if not path.is_file():
            self.sent.append((rel, 404, 0))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size

        def data(start, stop):
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(stop - start)
        spec = self.headers.get("Range")
        if not spec or head:
            self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if not head:
                self.wfile.write(data(0, size))
                self.sent.append((rel, 200, size))
            return
        ranges = []
        for part in spec.split("=", 1)[1].split(","):
            a, _, b = part.strip().partition("-")
            start = int(a) if a else max(size - int(b), 0)
            stop = min(int(b) + 1, size) if (a and b) else size
            if start >= size:
                continue
            ranges.append((start, stop))
        if not ranges:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if len(ranges) == 1:
            start, stop = ranges[0]
            body = data(start, stop)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.sent.append((rel, 206, len(body)))
            return
        boundary = "eoembedtestboundary"
        chunks = []
        for start, stop in ranges:
            chunks.append(f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                          f"Content-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n".encode())
            chunks.append(data(start, stop) + b"\r\n")
        chunks.append(f"--{boundary}--\r\n".encode())
        body = b"".join(chunks)
        self.send_response(206)
        self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.sent.append((rel, 206, sum(b - a for a, b in ranges)))


class _Server:
    def __init__(self, root: Path):
        handler = type("Handler", (_RangeHandler,), {"root": root, "sent": []})
        self.sent = handler.sent
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def bytes_of(self, rel: str) -> int:
        return sum(n for p, _, n in self.sent if p == rel)

    def gets_of(self, rel: str) -> int:
        return sum(1 for p, _, _ in self.sent if p == rel)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- the published layouts --------------------------------------------------------------------------------
def _deq_aef(q):
    """AlphaEarth's published rule: sign(q) * (|q| / 127.5) ** 2, -128 masked, then unit length."""
    qf = q.astype(np.float64)
    v = np.sign(qf) * (np.abs(qf) / 127.5) ** 2
    v = v / np.linalg.norm(v, axis=0, keepdims=True)
    v[:, (q == -128).any(axis=0)] = np.nan
    return v


def _aef_ints(rng, h, w):
    return rng.integers(-127, 128, size=(64, h, w), dtype=np.int16).astype(np.int8)


def _write_aef_tile(path: Path, q, transform, *, crs=UTM31, driver="COG", **opts):
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver=driver, width=q.shape[2], height=q.shape[1], count=64, dtype="int8", crs=crs,
                   transform=transform, nodata=-128, **opts)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(q)
        dst.descriptions = tuple(f"A{i:02d}" for i in range(64))


def _ll_box(crs, left, bottom, right, top):
    return transform_bounds(crs, "EPSG:4326", left, bottom, right, top, densify_pts=21)


def _aef_row(rel: str, year: int, crs: str, zone: str, utm):
    from shapely.geometry import box

    ll = _ll_box(crs, *utm)
    return dict(fid=0, path=f"s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/{rel}", year=year, crs=crs,
                utm_zone=zone, utm_west=utm[0], utm_south=utm[1], utm_east=utm[2], utm_north=utm[3],
                wgs84_west=ll[0], wgs84_south=ll[1], wgs84_east=ll[2], wgs84_north=ll[3], geometry=box(*ll).wkb)


def _write_parquet(rows: list[dict], path: Path, geo: bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    table = pa.table(cols)
    if geo:
        meta = {b"geo": b'{"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": '
                        b'{"encoding": "WKB", "geometry_types": ["Polygon"]}}}'}
        table = table.replace_schema_metadata(meta)
    pq.write_table(table, path)


@pytest.fixture(scope="module")
def aef(tmp_path_factory):
    """An AlphaEarth copy: tiles A (COG, north-up, with nodata), B (east of A, bottom-up as the Source
    Cooperative copies), a big COG (768x768, 128-px blocks), D (listed in the index, absent: 404),
    and a 2023 tile elsewhere."""
    root = tmp_path_factory.mktemp("aef") / "tge-labs" / "aef" / "v1" / "annual"
    rng = np.random.default_rng(0)
    qa, qb = _aef_ints(rng, 64, 64), _aef_ints(rng, 64, 64)
    qa[:, 10, 20] = -128  # a masked pixel: -128 in every band, as published
    qa[:, 11, 20:23] = -128
    ta, tb = from_origin(X0, Y0, 10, 10), from_origin(X0 + 640, Y0, 10, 10)
    _write_aef_tile(root / f"{YEAR}/31N/xa.tiff", qa, ta)
    # bottom-up: origin at the bottom-left, positive y resolution, rows stored south to north
    tb_up = rasterio.Affine(10, 0, X0 + 640, 0, 10, Y0 - 640)
    _write_aef_tile(root / f"{YEAR}/31N/xb.tiff", qb[:, ::-1], tb_up, driver="GTiff", tiled=True, blockxsize=32,
                    blockysize=32)
    big = _aef_ints(rng, BIG, BIG)
    tbig = from_origin(BIG_X0, Y0, 10, 10)
    _write_aef_tile(root / f"{YEAR}/31N/xbig.tiff", big, tbig, blocksize=128)
    q23 = _aef_ints(rng, 32, 32)
    _write_aef_tile(root / "2023/31N/x23.tiff", q23, from_origin(X0 + 40_000, Y0, 10, 10))
    rows = [
        _aef_row(f"{YEAR}/31N/xa.tiff", YEAR, UTM31, "31N", (X0, Y0 - 640, X0 + 640, Y0)),
        _aef_row(f"{YEAR}/31N/xb.tiff", YEAR, UTM31, "31N", (X0 + 640, Y0 - 640, X0 + 1280, Y0)),
        _aef_row(f"{YEAR}/31N/xbig.tiff", YEAR, UTM31, "31N", (BIG_X0, Y0 - BIG * 10, BIG_X0 + BIG * 10, Y0)),
        _aef_row(f"{YEAR}/31N/xd.tiff", YEAR, UTM31, "31N", (X0, Y0 - 1280, X0 + 640, Y0 - 640)),  # not served
        _aef_row("2023/31N/x23.tiff", 2023, UTM31, "31N", (X0 + 40_000, Y0 - 320, X0 + 40_320, Y0)),
    ]
    # either side of the 6°E boundary of UTM zones 31 and 32 (lat ~51.45): W in 31N, E in 32N, 64 x 64 each
    xw = math.floor(min(warp_transform("EPSG:4326", UTM31, [5.999, 5.999], [51.44, 51.46])[0]) / 10) * 10
    xe = math.ceil(max(warp_transform("EPSG:4326", UTM32, [6.001, 6.001], [51.44, 51.46])[0]) / 10) * 10
    yw = round(warp_transform("EPSG:4326", UTM31, [5.99], [51.455])[1][0] / 10) * 10
    ye = round(warp_transform("EPSG:4326", UTM32, [6.01], [51.455])[1][0] / 10) * 10
    zones = {"w": (_aef_ints(rng, 64, 64), from_origin(xw - 640, yw, 10, 10), UTM31, "31N"),
             "e": (_aef_ints(rng, 64, 64), from_origin(xe, ye, 10, 10), UTM32, "32N")}
    for key, (q, t, crs, zone) in zones.items():
        _write_aef_tile(root / f"{YEAR}/{zone}/z{key}.tiff", q, t, crs=crs)
        rows.append(_aef_row(f"{YEAR}/{zone}/z{key}.tiff", YEAR, crs, zone, (t.c, t.f - 640, t.c + 640, t.f)))
    _write_parquet(rows, root / "aef_index.parquet", geo=True)
    server = _Server(root.parents[3])
    yield dict(server=server, source=f"{server.url}/tge-labs/aef/v1/annual", qa=qa, qb=qb, big=big, ta=ta, tb=tb,
               tbig=tbig, rel="tge-labs/aef/v1/annual", zones=zones)
    server.close()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOEMBED_DATA_DIR", str(tmp_path / "cache"))


def _utm_bbox(left, bottom, right, top, crs=UTM31):
    """A lon/lat bbox strictly inside the UTM rectangle (so the mosaic's grid stays within it)."""
    w, s, e, n = _ll_box(crs, left, bottom, right, top)
    # the lon/lat box of a UTM rectangle overhangs it; shrink to the inscribed part by transforming corners
    xs, ys = warp_transform(crs, "EPSG:4326", [left, right, left, right], [bottom, bottom, top, top])
    return max(xs[0], xs[2]), max(ys[0], ys[1]), min(xs[1], xs[3]), min(ys[2], ys[3])


def _value_at(emb, x, y):
    return emb.sel(x=x, y=y, method="nearest", tolerance=1e-6).values


# ---- AlphaEarth ------------------------------------------------------------------------------------------
def test_aef_bbox_spanning_two_tiles_equals_the_source_pixels(aef):
    bbox = _utm_bbox(X0 + 405, Y0 - 395, X0 + 905, Y0 - 55)  # across the A|B seam at x = X0 + 640
    emb = eoembed.products.alphaearth(bbox, YEAR, source=aef["source"])
    assert emb.dims == ("embedding", "y", "x") and emb.sizes["embedding"] == 64 and emb.dtype == np.float32
    assert emb.chunks is not None  # lazy
    assert emb.rio.crs.to_epsg() == 32631  # the UTM zone of the bbox centre
    assert emb.attrs["eoembed:model"] == "alphaearth" and emb.attrs["eoembed:license"] == "CC-BY-4.0"
    assert sorted(Path(u).name for u in emb.attrs["eoembed:tiles"]) == ["xa.tiff", "xb.tiff"]
    assert emb.attrs["eoembed:time_range"] == [f"{YEAR}-01-01", f"{YEAR}-12-31"]
    assert "copied pixel for pixel" in emb.attrs["eoembed:mosaic"]
    v = emb.values
    assert not np.isnan(v).any()  # inside both tiles, no masked pixel there
    da, db = _deq_aef(aef["qa"]), _deq_aef(aef["qb"])
    # the pixels either side of the seam (A's last column, B's first) and one deep in each
    for x, y, want in [
        (X0 + 635, Y0 - 105, da[:, 10, 63]),
        (X0 + 645, Y0 - 105, db[:, 10, 0]),
        (X0 + 415, Y0 - 385, da[:, 38, 41]),
        (X0 + 895, Y0 - 65, db[:, 6, 25]),  # B is stored bottom-up: row 6 from the top is file row 57
    ]:
        np.testing.assert_allclose(_value_at(emb, x, y), want, atol=1e-6)
    # the whole grid: every pixel equals its source pixel
    xs, ys = emb.x.values, emb.y.values
    for j in (0, len(ys) // 2, len(ys) - 1):
        row = int((Y0 - ys[j]) // 10)
        for i in range(len(xs)):
            col = int((xs[i] - X0) // 10)
            want = da[:, row, col] if col < 64 else db[:, row, col - 64]
            np.testing.assert_allclose(v[:, j, i], want, atol=1e-6)


def test_aef_streamed_cube_is_the_local_files_cube(aef):
    """The same tile, opened from its local file and streamed from the server for a bbox inside it: the
    same dims, dtype, CRS, attrs (plus the remote ones) and values; and search works on it."""
    root = aef["server"].httpd.RequestHandlerClass.root
    local = eoembed.open_embeddings(str(root / aef["rel"] / f"{YEAR}/31N/xa.tiff"), format="alphaearth")
    emb = eoembed.products.alphaearth(_utm_bbox(X0 + 105, Y0 - 395, X0 + 395, Y0 - 105), YEAR,
                                      source=aef["source"])
    assert emb.dims == local.dims and emb.dtype == local.dtype and emb.name == local.name
    assert emb.rio.crs == local.rio.crs and emb.rio.resolution() == local.rio.resolution()
    same = {k for k in local.attrs if k not in ("eoembed:source",)}
    assert same <= set(emb.attrs) and all(emb.attrs[k] == local.attrs[k] for k in same)
    part = local.sel(x=emb.x, y=emb.y)
    np.testing.assert_array_equal(emb.values, part.values)
    index = eoembed.build_index(emb)
    hits = index.search(point=(float(emb.x[5]), float(emb.y[5])), k=1)
    assert float(hits["x"].iloc[0]) == float(emb.x[5]) and float(hits["y"].iloc[0]) == float(emb.y[5])


def test_aef_nodata_becomes_nan_in_every_band(aef):
    bbox = _utm_bbox(X0 + 105, Y0 - 195, X0 + 295, Y0 - 5)
    emb = eoembed.products.alphaearth(bbox, YEAR, source=aef["source"], chunks=None)
    assert isinstance(emb.data, np.ndarray)  # chunks=None: read now
    assert np.isnan(_value_at(emb, X0 + 205, Y0 - 105)).all()  # row 10, col 20
    assert np.isnan(_value_at(emb, X0 + 225, Y0 - 115)).all()  # row 11, col 22
    ok = _value_at(emb, X0 + 235, Y0 - 115)  # row 11, col 23: valid
    np.testing.assert_allclose(ok, _deq_aef(aef["qa"])[:, 11, 23], atol=1e-6)
    assert int(np.isnan(emb.values[0]).sum()) == 4


def test_aef_reads_only_the_needed_bytes_of_a_big_cog(aef):
    srv, rel = aef["server"], f"{aef['rel']}/{YEAR}/31N/xbig.tiff"
    size = (srv.httpd.RequestHandlerClass.root / rel).stat().st_size
    before = srv.bytes_of(rel)
    bbox = _utm_bbox(BIG_X0 + 2005, Y0 - 2095, BIG_X0 + 2095, Y0 - 2005)  # 9x9 px in a 768x768x64 COG
    emb = eoembed.products.alphaearth(bbox, YEAR, source=aef["source"])
    got = emb.values
    read = srv.bytes_of(rel) - before
    assert size > 32 * 2**20
    assert 0 < read < size / 10, f"read {read} of {size} bytes for a 9x9-pixel window"
    np.testing.assert_allclose(got[:, 0, 0], _deq_aef(aef["big"][:, 200:201, 200:201])[:, 0, 0], atol=1e-6)


def test_aef_index_is_fetched_once_and_cached(aef):
    srv, rel = aef["server"], f"{aef['rel']}/aef_index.parquet"
    before = srv.gets_of(rel)
    bbox = _utm_bbox(X0 + 105, Y0 - 195, X0 + 295, Y0 - 5)
    eoembed.products.alphaearth(bbox, YEAR, source=aef["source"])
    eoembed.products.alphaearth(bbox, YEAR, source=aef["source"])
    assert srv.gets_of(rel) - before == 1
    eoembed.products.alphaearth(bbox, YEAR, source=aef["source"], refresh_index=True)
    assert srv.gets_of(rel) - before == 2


def test_aef_other_crs_reprojects_to_source_pixels(aef):
    bbox = _utm_bbox(X0 + 105, Y0 - 395, X0 + 395, Y0 - 105)
    emb = eoembed.products.alphaearth(bbox, YEAR, source=aef["source"], crs="EPSG:32632", chunks=None)
    assert emb.rio.crs.to_epsg() == 32632 and "reprojected, nearest" in emb.attrs["eoembed:mosaic"]
    v = emb.values
    da = _deq_aef(aef["qa"])
    jj, ii = np.meshgrid(np.arange(emb.sizes["y"]), np.arange(emb.sizes["x"]), indexing="ij")
    xs, ys = warp_transform("EPSG:32632", UTM31, emb.x.values[ii].ravel(), emb.y.values[jj].ravel())
    col, row = ((np.array(xs) - X0) // 10).astype(int), ((Y0 - np.array(ys)) // 10).astype(int)
    inside = (col >= 11) & (col <= 38) & (row >= 11) & (row <= 38) & ~np.isnan(v[0].ravel())
    assert inside.sum() > 400  # most of the box
    # nearest neighbour: each output vector is the source vector under its centre
    got = v.reshape(64, -1)[:, inside]
    want = da[:, row[inside], col[inside]]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_aef_tiles_in_two_utm_zones_mosaic_onto_the_centre_zone(aef):
    (qw, tw, _, _), (qe, te, _, _) = aef["zones"]["w"], aef["zones"]["e"]
    w = warp_transform(UTM31, "EPSG:4326", [tw.c + 200], [tw.f - 200])[0][0]
    e = warp_transform(UTM32, "EPSG:4326", [te.c + 200], [te.f - 200])[0][0]
    bbox = (w, 51.4505, e, 51.4535)  # across 6°E, the boundary of zones 31 and 32
    emb = eoembed.products.alphaearth(bbox, YEAR, source=aef["source"], chunks=None)
    assert emb.rio.crs.to_epsg() == (32631 if (w + e) / 2 < 6 else 32632)  # the zone of the bbox centre
    assert sorted(Path(u).name for u in emb.attrs["eoembed:tiles"]) == ["ze.tiff", "zw.tiff"]
    assert "reprojected, nearest" in emb.attrs["eoembed:mosaic"] and "UTM zone of the bbox centre" in \
        emb.attrs["eoembed:mosaic"]
    v = emb.values.reshape(64, -1)
    jj, ii = np.meshgrid(np.arange(emb.sizes["y"]), np.arange(emb.sizes["x"]), indexing="ij")
    xd, yd = emb.x.values[ii].ravel(), emb.y.values[jj].ravel()
    x31, y31 = (np.asarray(a) for a in warp_transform(emb.rio.crs, UTM31, xd, yd))
    x32, y32 = (np.asarray(a) for a in warp_transform(emb.rio.crs, UTM32, xd, yd))
    counted = 0
    for q, t, xs, ys in ((qw, tw, x31, y31), (qe, te, x32, y32)):
        col, row = (xs - t.c) / 10, (t.f - ys) / 10
        deep = (col > 1) & (col < 63) & (row > 1) & (row < 63)  # a pixel from the tile's edge: no rounding doubt
        want = _deq_aef(q)[:, row[deep].astype(int), col[deep].astype(int)]
        np.testing.assert_allclose(v[:, deep], want, atol=1e-6)  # the source vector under each centre
        counted += int(deep.sum())
    assert counted > 0.5 * v.shape[1]
    # between the tiles (neither covers it) the mosaic is NaN, not a neighbour's value
    cw = (x31 - tw.c) / 10
    ce = (x32 - te.c) / 10
    gap = (cw > 64.5) & (ce < -0.5)
    assert gap.any() and np.isnan(v[:, gap]).all()


def test_aef_missing_tile_on_the_server(aef):
    bbox = _utm_bbox(X0 + 105, Y0 - 905, X0 + 395, Y0 - 405)  # across A and D; D is listed but not served
    with pytest.raises(MissingTileError, match=r"xd\.tiff \(HTTP 404\).*missing='nan'"):
        eoembed.products.alphaearth(bbox, YEAR, source=aef["source"])
    with pytest.warns(UserWarning, match="missing on the server"):
        emb = eoembed.products.alphaearth(bbox, YEAR, source=aef["source"], missing="nan", chunks=None)
    assert [Path(u).name for u in emb.attrs["eoembed:missing_tiles"]] == ["xd.tiff"]
    assert np.isnan(_value_at(emb, X0 + 205, Y0 - 805)).all()  # D's area
    np.testing.assert_allclose(_value_at(emb, X0 + 205, Y0 - 505), _deq_aef(aef["qa"])[:, 50, 20], atol=1e-6)


def test_aef_bbox_without_tiles_names_years_and_nearest(aef):
    with pytest.raises(MissingTileError, match=r"No AlphaEarth tile of 2024.*years 2023, 2024.*nearest 2024 tile"):
        eoembed.products.alphaearth((10.0, 45.0, 10.01, 45.01), YEAR, source=aef["source"])
    bbox = _utm_bbox(X0 + 105, Y0 - 195, X0 + 295, Y0 - 5)
    with pytest.raises(MissingTileError, match=r"tile of 2019.*years 2023, 2024"):
        eoembed.products.alphaearth(bbox, 2019, source=aef["source"])


@pytest.mark.parametrize("bbox, match", [
    ((35.6, 139.6, 35.7, 139.8), r"looks like \(south, west, north, east\)"),
    ((3.02, 51.4, 3.01, 51.41), r"west \(3.02\) is not < east"),
    ((3.0, 51.41, 3.01, 51.40), r"south .* is not < north"),
    ((190.0, 10.0, 191.0, 11.0), "outside lon"),
    ((3.0, 51.4, 3.01), "four finite numbers"),
    ((3.0, float("nan"), 3.01, 51.41), "four finite numbers"),
])
def test_invalid_bbox_is_refused(aef, bbox, match):
    with pytest.raises(BBoxError, match=match) as info:
        eoembed.products.alphaearth(bbox, YEAR, source=aef["source"])
    assert isinstance(info.value, QueryError)


def test_bad_crs_arguments_are_parameter_errors(aef):
    with pytest.raises(eoembed.exceptions.ParameterError, match="bbox_crs='EPSG:nope' is not a CRS"):
        eoembed.products.alphaearth((3.0, 51.4, 3.01, 51.41), YEAR, source=aef["source"], bbox_crs="EPSG:nope")
    with pytest.raises(eoembed.exceptions.ParameterError, match="crs='EPSG:4326' is geographic"):
        eoembed.products.alphaearth(_utm_bbox(X0 + 105, Y0 - 195, X0 + 295, Y0 - 5), YEAR, source=aef["source"],
                                    crs="EPSG:4326")


def test_bbox_in_another_crs(aef):
    emb = eoembed.products.alphaearth((X0 + 100, Y0 - 200, X0 + 300, Y0), YEAR, source=aef["source"],
                                      bbox_crs=UTM31, chunks=None)
    np.testing.assert_allclose(_value_at(emb, X0 + 155, Y0 - 35), _deq_aef(aef["qa"])[:, 3, 15], atol=1e-6)


def test_unreachable_host_and_bad_index(aef, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(DownloadUnreachableError, match="Cannot reach"):
        eoembed.products.alphaearth((3.0, 51.4, 3.01, 51.41), YEAR, source=f"http://127.0.0.1:{port}/aef")
    root = aef["server"].httpd.RequestHandlerClass.root
    (root / "bad").mkdir(exist_ok=True)
    (root / "bad" / "aef_index.parquet").write_bytes(b"<html>not parquet</html>")
    with pytest.raises(ProductIndexError, match="not a readable Parquet"):
        eoembed.products.alphaearth((3.0, 51.4, 3.01, 51.41), YEAR, source=f"{aef['server'].url}/bad")
    (root / "cols").mkdir(exist_ok=True)
    pq.write_table(pa.table({"path": ["x.tiff"], "year": [2024]}), root / "cols" / "aef_index.parquet")
    with pytest.raises(ProductIndexError, match=r"lacks the column\(s\) \['crs', 'wgs84_west'"):
        eoembed.products.alphaearth((3.0, 51.4, 3.01, 51.41), YEAR, source=f"{aef['server'].url}/cols")
    with pytest.raises(DownloadNotFoundError, match=r"the tile index from .*/nothing/aef_index.parquet failed: HTTP 404"):
        eoembed.products.alphaearth((3.0, 51.4, 3.01, 51.41), YEAR, source=f"{aef['server'].url}/nothing")


# ---- TESSERA ---------------------------------------------------------------------------------------------
TS_H = TS_W = 200  # pixels per test tile (real tiles are ~1100 px; the layout is the same)


@pytest.fixture(scope="module")
def tes(tmp_path_factory):
    """A TESSERA repository: tiles grid_3.05_51.05 and grid_3.15_51.05 on one UTM 31N lattice, meeting at
    the 3.1° line; grid_3.05_50.95 listed in the manifest without files (404)."""
    root = tmp_path_factory.mktemp("tessera") / "tessera" / "tessera"
    rng = np.random.default_rng(1)
    xs, ys = warp_transform("EPSG:4326", UTM31, [3.1], [51.05])
    xm, ym = round(xs[0] / 10) * 10, round(ys[0] / 10) * 10 + 1000
    tiles = {}
    rows = []
    for name, left in (("grid_3.05_51.05", xm - TS_W * 10), ("grid_3.15_51.05", xm)):
        q = rng.integers(-127, 128, size=(TS_H, TS_W, 128), dtype=np.int16).astype(np.int8)
        s = rng.uniform(0.01, 0.1, size=(TS_H, TS_W)).astype(np.float32)
        tiles[name] = (q, s, from_origin(left, ym, 10, 10))
    q, s, _ = tiles["grid_3.05_51.05"]
    s[5, 7] = np.finfo(np.float32).max  # geotessera's "no data" marker
    s[6, 7] = np.nan
    s[7, 7] = 0.0
    for name, (q, s, t) in tiles.items():
        d = root / "npy" / "v1" / str(YEAR) / name
        d.mkdir(parents=True)
        np.save(d / f"{name}.npy", q)
        np.save(d / f"{name}_scales.npy", s)
        lm = root / "landmasks" / "v1" / f"{name}.tiff"
        lm.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(lm, "w", driver="GTiff", width=TS_W, height=TS_H, count=1, dtype="uint8", crs=UTM31,
                           transform=t) as dst:
            dst.write(np.ones((1, TS_H, TS_W), np.uint8))
        lon, lat = (float(v) for v in re.findall(r"-?\d+\.\d+", name))
        rows.append(dict(year=YEAR, lon=lon, lat=lat, grid_size=(d / f"{name}.npy").stat().st_size,
                         scales_size=(d / f"{name}_scales.npy").stat().st_size))
    rows.append(dict(year=YEAR, lon=3.05, lat=50.95, grid_size=1000, scales_size=100))  # not served
    rows.append(dict(year=2023, lon=5.05, lat=50.05, grid_size=1000, scales_size=100))
    _write_parquet(rows, root / "npy" / "v1" / "manifest.parquet", geo=False)
    server = _Server(root.parents[1])
    yield dict(server=server, source=f"{server.url}/tessera/tessera", tiles=tiles, xm=xm, ym=ym)
    server.close()


def _deq_tes(q, s):
    """geotessera: q * scale; a scale that is not finite, <= 0 or >= 1e30 marks no data."""
    v = np.moveaxis(q.astype(np.float64) * s[..., None], -1, 0)
    bad = ~np.isfinite(s) | (s <= 0) | (s >= 1e30)
    v[:, bad] = np.nan
    return v


def test_tessera_bbox_spanning_two_tiles_equals_the_source_pixels(tes):
    xm, ym = tes["xm"], tes["ym"]
    bbox = _utm_bbox(xm - 295, ym - 395, xm + 295, ym - 5)
    emb = eoembed.products.tessera(bbox, YEAR, source=tes["source"])
    assert emb.sizes["embedding"] == 128 and emb.attrs["eoembed:model"] == "tessera"
    assert sorted(Path(u).name for u in emb.attrs["eoembed:tiles"]) == ["grid_3.05_51.05.npy", "grid_3.15_51.05.npy"]
    assert emb.attrs["eoembed:index"].endswith("/npy/v1/manifest.parquet")
    (qa, sa, _), (qb, sb, _) = tes["tiles"]["grid_3.05_51.05"], tes["tiles"]["grid_3.15_51.05"]
    da, db = _deq_tes(qa, sa), _deq_tes(qb, sb)
    for x, y, want in [
        (xm - 5, ym - 15, da[:, 1, TS_W - 1]),  # west tile's last column
        (xm + 5, ym - 15, db[:, 1, 0]),  # east tile's first column
        (xm - 285, ym - 385, da[:, 38, TS_W - 29]),
        (xm + 285, ym - 25, db[:, 2, 28]),
    ]:
        np.testing.assert_allclose(_value_at(emb, x, y), want, rtol=1e-6)
    v = emb.values
    j = emb.sizes["y"] // 2
    row = int((ym - emb.y.values[j]) // 10)
    want = np.concatenate([da[:, row, :], db[:, row, :]], axis=1)
    cols = ((emb.x.values - (xm - TS_W * 10)) // 10).astype(int)
    np.testing.assert_allclose(v[:, j, :], want[:, cols], rtol=1e-6)


def test_tessera_nodata_scales_become_nan(tes):
    xm, ym = tes["xm"], tes["ym"]
    x0 = xm - TS_W * 10
    emb = eoembed.products.tessera(_utm_bbox(x0 + 5, ym - 145, x0 + 145, ym - 5), YEAR, source=tes["source"],
                                   chunks=None)
    for row in (5, 6, 7):  # max-float, NaN and zero scales at column 7
        assert np.isnan(_value_at(emb, x0 + 75, ym - 10 * row - 5)).all()
    q, s, _ = tes["tiles"]["grid_3.05_51.05"]
    np.testing.assert_allclose(_value_at(emb, x0 + 75, ym - 85), _deq_tes(q, s)[:, 8, 7], rtol=1e-6)


def test_tessera_reads_row_ranges_not_whole_tiles(tes):
    srv = tes["server"]
    rel = f"tessera/tessera/npy/v1/{YEAR}/grid_3.15_51.05/grid_3.15_51.05.npy"
    before = srv.bytes_of(rel)
    xm, ym = tes["xm"], tes["ym"]
    eoembed.products.tessera(_utm_bbox(xm + 505, ym - 595, xm + 595, ym - 505), YEAR, source=tes["source"]).values
    read = srv.bytes_of(rel) - before
    size = TS_H * TS_W * 128
    assert 0 < read <= 12 * TS_W * 128 + 4096, f"read {read} of {size} bytes for 9 rows"


def test_tessera_missing_tile_and_no_tile(tes):
    xm, ym = tes["xm"], tes["ym"]
    bbox = (3.02, 50.99, 3.04, 51.01)  # across grid_3.05_51.05 and grid_3.05_50.95 (listed, not served)
    with pytest.raises(MissingTileError, match=r"grid_3\.05_50\.95\.npy \(HTTP 404\)"):
        eoembed.products.tessera(bbox, YEAR, source=tes["source"])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        emb = eoembed.products.tessera(_utm_bbox(xm - 195, ym - 195, xm - 5, ym - 5), YEAR, source=tes["source"])
    assert not rec and "eoembed:missing_tiles" not in emb.attrs
    with pytest.raises(MissingTileError, match=r"No TESSERA tile of 2024.*years 2023, 2024.*grid_3\.05_51\.05"):
        eoembed.products.tessera((2.5, 51.02, 2.51, 51.03), YEAR, source=tes["source"])


def test_tessera_manifest_size_disagreeing_with_the_file_is_refused(tes, tmp_path):
    root = tes["server"].httpd.RequestHandlerClass.root
    df = pq.read_table(root / "tessera/tessera/npy/v1/manifest.parquet").to_pandas()
    df.loc[0, "grid_size"] = 12345
    (root / "tessera/tessera/npy/stale").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df), root / "tessera/tessera/npy/stale/manifest.parquet")
    xm, ym = tes["xm"], tes["ym"]
    with pytest.raises(ProductIndexError, match="manifest says 12345.*refresh_index=True"):
        eoembed.products.tessera(_utm_bbox(xm - 195, ym - 195, xm - 5, ym - 5), YEAR, source=tes["source"],
                                 index=f"{tes['source']}/npy/stale/manifest.parquet")
