"""Offline STAC fixtures: small Sentinel-2-like COGs and a real HTTP server on 127.0.0.1.

Plain module (no pytest imports) used by ``tests/integration/test_data_stac.py``.

The server is one ``ThreadingHTTPServer`` that plays four roles:

* a minimal STAC API: ``/`` (landing page), ``/collections``, ``/collections/{id}``,
  ``/search`` (GET and POST, ``query`` extension, paging with a ``next`` link);
* a static file host with HTTP Range support (single ranges -> 206, several ranges
  -> ``multipart/byteranges``), as GDAL's ``/vsicurl`` needs;
* a fake Azure Blob Storage: requests for ``http://<account>.blob.core.windows.net/...``
  arrive in proxy form (``GDAL_HTTP_PROXY`` points at the server) and need a SAS
  ``sig`` the server issued and has not expired;
* the Planetary Computer SAS token endpoint ``/api/sas/v1/token/{account}/{container}``.

Faults are injected per request: ``429``, ``500``, ``drop`` (close the connection
without answering) and ``403`` (expired signature), each a limited number of times.
Every request is logged, so tests can count retries.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

BLOB_DOMAIN = ".blob.core.windows.net"
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
S2_60M = ("B01", "B09")
S2_ALL = S2_10M + S2_20M + S2_60M
_SCL_P = [0.03, 0.02, 0.05, 0.07, 0.25, 0.15, 0.08, 0.05, 0.08, 0.07, 0.05, 0.10]
S2_RES = {**{b: 10 for b in S2_10M}, **{b: 20 for b in S2_20M}, **{b: 60 for b in S2_60M}, "SCL": 20}


# =====================================================================================
# data
# =====================================================================================
def write_tif(path: Path, array: np.ndarray, *, x0: float, y0: float, res: float, epsg: int, nodata=0) -> None:
    """Write a single-band tiled GeoTIFF (COG layout) with rasterio."""
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        tiled=True,
        blockxsize=32,
        blockysize=32,
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype,
        crs=f"EPSG:{epsg}",
        transform=from_origin(x0, y0, res, res),
        nodata=nodata,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


@dataclasses.dataclass
class Scene:
    """One synthetic Sentinel-2 L2A item: its grid and the arrays written to disk."""

    id: str
    datetime: str
    epsg: int
    x0: float  # west edge (UTM metres)
    y0: float  # north edge
    size_m: float
    baseline: str | None
    cloud: float
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def lonlat_bbox(self) -> list[float]:
        from pyproj import Transformer

        tr = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        return list(tr.transform_bounds(self.x0, self.y0 - self.size_m, self.x0 + self.size_m, self.y0, densify_pts=21))

    def value_at(self, band: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Stored value at UTM points in this scene's CRS (nearest pixel), NaN outside/nodata."""
        res = S2_RES[band]
        arr = self.arrays[band]
        col = np.floor((x - self.x0) / res).astype(int)
        row = np.floor((self.y0 - y) / res).astype(int)
        inside = (col >= 0) & (row >= 0) & (col < arr.shape[1]) & (row < arr.shape[0])
        out = np.full(np.broadcast(x, y).shape, np.nan, dtype=np.float64)
        vals = arr[np.clip(row, 0, arr.shape[0] - 1), np.clip(col, 0, arr.shape[1] - 1)].astype(np.float64)
        out[inside] = vals[inside]
        out[out == 0] = np.nan  # nodata
        return out


def utm_point(lon: float, lat: float, epsg: int) -> tuple[float, float]:
    from pyproj import Transformer

    return Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)


def make_s2_scenes(
    rng: np.random.Generator,
    *,
    center=(11.997, 45.5),
    with_other_zone: bool = True,
) -> tuple[list[Scene], tuple[float, float, float, float]]:
    """Synthetic scenes around ``center`` (just west of the UTM 32/33 boundary at 12 E).

    Returns the scenes and a query bbox (lon/lat) that all scenes cover:

    * ``S2A_20240105`` (zone 32, baseline 05.10) and ``S2B_20240115`` (zone 32,
      baseline 03.01, so not offset): random DN, random SCL.
    * ``S2A_20240125_Z33`` (zone 33, baseline 05.10): constant DN per band, SCL 4
      everywhere; reprojected into zone 32 by stackstac.
    * ``S2B_20240210`` (zone 32, baseline 05.11): random DN and SCL.
    * nothing in March, so a Jan-Mar monthly composite has an all-NaN last step.
    """
    e32, n32 = utm_point(*center, 32632)
    e0, n0 = round(e32 / 60) * 60, round(n32 / 60) * 60
    half = 600
    scenes = [
        Scene("S2A_20240105", "2024-01-05T10:30:00Z", 32632, e0 - half, n0 + half, 2 * half, "05.10", 12.0),
        Scene("S2B_20240115", "2024-01-15T10:30:00Z", 32632, e0 - half, n0 + half, 2 * half, "03.01", 20.0),
        Scene("S2B_20240210", "2024-02-10T10:30:00Z", 32632, e0 - half, n0 + half, 2 * half, "05.11", 5.0),
    ]
    if with_other_zone:
        e33, n33 = utm_point(*center, 32633)
        e1, n1 = round(e33 / 60) * 60, round(n33 / 60) * 60
        scenes.insert(
            2, Scene("S2A_20240125_Z33", "2024-01-25T10:30:00Z", 32633, e1 - 1200, n1 + 1200, 2400, "05.10", 30.0)
        )
    for sc in scenes:
        for band in S2_ALL + ("SCL",):
            n = int(sc.size_m // S2_RES[band])
            if sc.id.endswith("Z33"):
                arr = np.full((n, n), 2000 + 100 * S2_ALL.index(band) if band != "SCL" else 4, np.uint16)
            elif band == "SCL":
                arr = rng.choice(np.arange(12), size=(n, n), p=_SCL_P).astype(np.uint8)
            else:
                arr = rng.integers(1500, 6000, size=(n, n)).astype(np.uint16)
            sc.arrays[band] = arr
    # query box: 480 m square centred on the scenes, in lon/lat
    from pyproj import Transformer

    tr = Transformer.from_crs(32632, 4326, always_xy=True)
    lon0, lat0 = tr.transform(e0 - 240, n0 - 240)
    lon1, lat1 = tr.transform(e0 + 240, n0 + 240)
    bbox = (min(lon0, lon1), min(lat0, lat1), max(lon0, lon1), max(lat0, lat1))
    return scenes, bbox


#: Item shapes of the providers eoembed.data reads (see :func:`write_s2_catalog`).
FLAVOURS = ("planetary-computer", "earth-search", "cdse")


def scene_offset(sc: Scene, flavour: str) -> float:
    """DN offset still in the stored arrays of ``sc`` for items of ``flavour``."""
    carries = sc.baseline is not None and float(sc.baseline) >= 4
    if flavour == "earth-search":
        return 0.0  # Earth Search removed it from baseline >= 04.00 COGs (boa_offset_applied)
    return 1000.0 if carries else 0.0


def write_s2_catalog(
    scenes: list[Scene], root: Path, *, asset_base: str, container: str, collection: str = "sentinel-2-l2a",
    flavour: str = "planetary-computer",
) -> list[dict]:
    """Write the scenes' COGs under ``root/blob/<container>/`` and return STAC item dicts.

    ``asset_base`` is the URL prefix the items advertise (``http://127.0.0.1:PORT/blob``
    for plain HTTP, ``http://<account>.blob.core.windows.net`` for signed reads).

    ``flavour`` shapes the items like a provider's (the arrays are the same; what the
    metadata says about the +1000 offset differs, see :func:`scene_offset`):

    * ``"planetary-computer"``: ``proj:epsg``, ``s2:processing_baseline``; nothing else.
    * ``"earth-search"`` (v1 ``sentinel-2-l2a``): ``earthsearch:boa_offset_applied``
      (true for baseline >= 04.00: the COGs no longer carry the offset) and, as the
      real catalogue does, ``raster:bands`` ``offset: -0.1`` on every asset whatever
      was applied — the flag is the truth.
    * ``"cdse"`` (Copernicus Data Space): projection extension v2 ``proj:code``
      instead of ``proj:epsg``, ``processing:version`` instead of
      ``s2:processing_baseline``, ``raster:bands`` scale 1e-4 and offset -0.1 (0 for
      baselines before 04.00).
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}")
    items = []
    for sc in scenes:
        assets = {}
        for band, arr in sc.arrays.items():
            res = S2_RES[band]
            rel = f"{container}/{sc.id}/{band}.tif"
            write_tif(root / "blob" / rel, arr, x0=sc.x0, y0=sc.y0, res=res, epsg=sc.epsg)
            assets[band] = {
                "href": f"{asset_base}/{rel}",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "proj:shape": list(arr.shape),
                "proj:transform": [res, 0.0, sc.x0, 0.0, -res, sc.y0],
                "gsd": res,
            }
            if band != "SCL" and flavour != "planetary-computer":
                carries = sc.baseline is not None and float(sc.baseline) >= 4
                off = -0.1 if (flavour == "earth-search" or carries) else 0.0
                assets[band]["raster:bands"] = [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": off}]
            if flavour == "cdse":
                assets[band]["proj:code"] = f"EPSG:{sc.epsg}"
        w, s, e, n = sc.lonlat_bbox()
        props = {
            "datetime": sc.datetime,
            "platform": "Sentinel-2A" if sc.id.startswith("S2A") else "Sentinel-2B",
            "eo:cloud_cover": sc.cloud,
        }
        if flavour == "cdse":
            props["proj:code"] = f"EPSG:{sc.epsg}"
            if sc.baseline is not None:
                props["processing:version"] = sc.baseline
        else:
            props["proj:epsg"] = sc.epsg
            if sc.baseline is not None:
                props["s2:processing_baseline"] = sc.baseline
        if flavour == "earth-search":
            props["earthsearch:boa_offset_applied"] = sc.baseline is not None and float(sc.baseline) >= 4
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "stac_extensions": [
                    "https://stac-extensions.github.io/projection/"
                    + ("v2.0.0" if flavour == "cdse" else "v1.1.0") + "/schema.json",
                    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                ],
                "id": sc.id,
                "collection": collection,
                "bbox": [w, s, e, n],
                "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                "properties": props,
                "assets": assets,
                "links": [],
            }
        )
    return items


def collection_dict(cid: str, base: str) -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "description": f"test collection {cid}",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2015-01-01T00:00:00Z", None]]},
        },
        "links": [
            {"rel": "self", "href": f"{base}/collections/{cid}"},
            {"rel": "root", "href": f"{base}/"},
            {"rel": "items", "href": f"{base}/collections/{cid}/items"},
        ],
    }


# =====================================================================================
# server
# =====================================================================================
@dataclasses.dataclass
class Fault:
    """Answer requests whose path contains ``match`` with ``kind``, ``times`` times."""

    match: str
    kind: str  # "429" | "500" | "503" | "drop" | "403"
    times: int = 1
    method: str | None = None


def _parse_dt(text: str | None):
    if text in (None, "", ".."):
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class _ServerState:
    """The server itself, run inside the child process (see :class:`StacServer`)."""

    def __init__(self, root: Path, *, require_sas: bool = True) -> None:
        self.root = Path(root)
        self.items: list[dict] = []
        self.collections: set[str] = set()
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []
        self.require_sas = require_sas
        self.issued: set[str] = set()
        self.expired: set[str] = set()
        self.token_requests = 0
        self.page_size = 2
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> _ServerState:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxy(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- content ---------------------------------------------------------------------
    def add_items(self, items: list[dict]) -> None:
        self.items.extend(items)
        self.collections.update(it["collection"] for it in items if it.get("collection"))

    def add_fault(self, match: str, kind: str, times: int = 1, method: str | None = None) -> Fault:
        f = Fault(match, kind, times, method)
        with self._lock:
            self.faults.append(f)
        return f

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 403 (as an expired SAS would)."""
        with self._lock:
            self.expired |= self.issued

    def hits(self, contains: str, method: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for m, p, s in self.log
                if contains in p and (method is None or m == method) and (status is None or s == status)
            )

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times > 0 and f.match in path and (f.method is None or f.method == method):
                    f.times -= 1
                    return f
        return None

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.log.append((method, path, status))

    def issue_token(self) -> str:
        with self._lock:
            self.token_requests += 1
            sig = f"testsig{self.token_requests}"
            self.issued.add(sig)
        return sig

    # -- search ----------------------------------------------------------------------
    def search(self, params: dict[str, Any]) -> list[dict]:
        cols = params.get("collections")
        if isinstance(cols, str):
            cols = cols.split(",")
        bbox = params.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        query = params.get("query") or {}
        if isinstance(query, str):
            query = json.loads(query)
        t0 = t1 = None
        if params.get("datetime"):
            parts = str(params["datetime"]).split("/")
            t0, t1 = _parse_dt(parts[0]), _parse_dt(parts[-1])
        out = []
        for it in self.items:
            if cols and it.get("collection") not in cols:
                continue
            if bbox:
                w, s, e, n = it["bbox"]
                if w > bbox[2] or e < bbox[0] or s > bbox[3] or n < bbox[1]:
                    continue
            t = _parse_dt(it["properties"]["datetime"])
            if (t0 and t < t0) or (t1 and t > t1):
                continue
            ok = True
            for key, cond in query.items():
                v = it["properties"].get(key)
                for op, ref in cond.items():
                    if v is None:
                        ok = False
                    elif op == "lt":
                        ok &= v < ref
                    elif op == "lte":
                        ok &= v <= ref
                    elif op == "gt":
                        ok &= v > ref
                    elif op == "gte":
                        ok &= v >= ref
                    elif op == "eq":
                        ok &= v == ref
                    elif op == "in":
                        ok &= v in ref
            if ok:
                out.append(it)
        return out


class _Handler(BaseHTTPRequestHandler):
    server_state: _ServerState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # -- plumbing ----------------------------------------------------------------------
    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        """(host, path, query) for both origin-form and proxy (absolute-form) requests."""
        parts = urlsplit(self.path)
        host = parts.netloc or self.headers.get("Host", "")
        return host, parts.path, parse_qs(parts.query)

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json", headers=None, record=True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if not record:
            return
        host, path, _ = self._target()
        self.server_state.record(self.command, (host if BLOB_DOMAIN in host else "") + path, status)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _fault(self) -> bool:
        host, path, _ = self._target()
        f = self.server_state.take_fault(self.command, (host if BLOB_DOMAIN in host else "") + path)
        if f is None:
            return False
        if f.kind == "drop":
            self.server_state.record(self.command, (host if BLOB_DOMAIN in host else "") + path, 0)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if f.kind == "403":
            self._send(403, _AUTH_FAILED, "application/xml")
            return True
        self._send(int(f.kind), b'{"code": "injected fault"}', headers={"Retry-After": "0"})
        return True

    # -- verbs -----------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self.path == "/_ctl/state":
            return self._control("state", None)
        if self._fault():
            return
        host, path, qs = self._target()
        st = self.server_state
        base = st.url
        if BLOB_DOMAIN in host:
            return self._blob(host, path, qs)
        if path in ("", "/"):
            return self._json(_landing(base))
        if path == "/collections":
            return self._json({"collections": [collection_dict(c, base) for c in sorted(st.collections)], "links": []})
        m = re.fullmatch(r"/collections/([^/]+)", path)
        if m:
            if m.group(1) in st.collections:
                return self._json(collection_dict(m.group(1), base))
            return self._json({"code": "NotFound", "description": f"collection {m.group(1)} not found"}, 404)
        if path == "/search":
            params = {k: v[0] for k, v in qs.items()}
            return self._search(params, method="GET")
        m = re.fullmatch(r"/api/sas/v1/token/([^/]+)/([^/]+)", path)
        if m:
            sig = st.issue_token()
            expiry = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            token = f"st=2024-01-01T00%3A00%3A00Z&se={expiry.replace(':', '%3A')}&sp=rl&sv=2021-06-08&sr=c&sig={sig}"
            return self._json({"msft:expiry": expiry, "token": token})
        if path.startswith("/blob/"):
            return self._file(st.root / path.lstrip("/"))
        if path.startswith("/static/"):
            return self._file(st.root / path.lstrip("/"))
        self._json({"code": "NotFound"}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/_ctl/"):
            return self._control(self.path[6:], json.loads(body or b"null"))
        if self._fault():
            return
        _, path, _ = self._target()
        if path == "/search":
            params = json.loads(body or b"{}")
            return self._search(params, method="POST")
        self._json({"code": "NotFound"}, 404)

    # -- endpoints ---------------------------------------------------------------------
    def _control(self, what: str, payload: Any) -> None:
        st = self.server_state
        if what == "items":
            st.add_items(payload)
        elif what == "fault":
            st.add_fault(**payload)
        elif what == "expire":
            st.expire_tokens()
        elif what == "config":
            for k, v in payload.items():
                setattr(st, k, v)
        elif what == "reset":
            with st._lock:
                st.items.clear()
                st.collections.clear()
                st.faults.clear()
                st.log.clear()
                st.page_size = 2
                st.require_sas = True
        elif what != "state":
            return self._send(404, b"{}", record=False)
        with st._lock:
            state = {"log": list(st.log), "token_requests": st.token_requests}
        self._send(200, json.dumps(state).encode(), record=False)

    def _search(self, params: dict[str, Any], method: str) -> None:
        st = self.server_state
        matched = st.search(params)
        token = int(params.get("token") or 0)
        limit = int(params.get("limit") or st.page_size)
        limit = min(limit, st.page_size)
        page = matched[token : token + limit]
        links = []
        if token + limit < len(matched):
            nxt = dict(params, token=str(token + limit))
            if method == "POST":
                links.append({"rel": "next", "href": f"{st.url}/search", "method": "POST", "body": nxt, "merge": False})
            else:
                from urllib.parse import urlencode

                q = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in nxt.items()}
                links.append({"rel": "next", "href": f"{st.url}/search?{urlencode(q)}", "method": "GET"})
        self._json({"type": "FeatureCollection", "features": page, "links": links, "numberMatched": len(matched)})

    def _blob(self, host: str, path: str, qs: dict[str, list[str]]) -> None:
        st = self.server_state
        if st.require_sas:
            sig = (qs.get("sig") or [None])[0]
            if sig is None or sig not in st.issued or sig in st.expired:
                return self._send(403, _AUTH_FAILED, "application/xml")
        self._file(st.root / "blob" / path.lstrip("/"))

    def _file(self, fpath: Path) -> None:
        if not fpath.is_file():
            return self._json({"code": "NotFound"}, 404)
        data = fpath.read_bytes()
        size = len(data)
        rng = self.headers.get("Range")
        if not rng or not rng.startswith("bytes="):
            return self._send(200, data, "image/tiff", {"Accept-Ranges": "bytes"})
        spans = []
        for part in rng[6:].split(","):
            a, _, b = part.strip().partition("-")
            if a == "":
                start, end = max(size - int(b), 0), size - 1
            else:
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            if start >= size:
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            spans.append((start, end))
        if len(spans) == 1:
            s, e = spans[0]
            return self._send(
                206, data[s : e + 1], "image/tiff", {"Content-Range": f"bytes {s}-{e}/{size}", "Accept-Ranges": "bytes"}
            )
        boundary = "eoembedtestboundary"
        chunks = []
        for s, e in spans:
            chunks.append(
                f"--{boundary}\r\nContent-Type: image/tiff\r\nContent-Range: bytes {s}-{e}/{size}\r\n\r\n".encode()
                + data[s : e + 1]
                + b"\r\n"
            )
        chunks.append(f"--{boundary}--\r\n".encode())
        self._send(206, b"".join(chunks), f"multipart/byteranges; boundary={boundary}")


_AUTH_FAILED = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to '
    b"authenticate the request. Signed expiry time [2024-01-01T00:00:00Z] has to be after signed start time"
    b"</Message></Error>"
)


def _landing(base: str) -> dict:
    return {
        "type": "Catalog",
        "id": "eoembed-test",
        "stac_version": "1.0.0",
        "description": "offline test STAC API",
        "conformsTo": [
            "https://api.stacspec.org/v1.0.0/core",
            "https://api.stacspec.org/v1.0.0/item-search",
            "https://api.stacspec.org/v1.0.0/item-search#query",
            "https://api.stacspec.org/v1.0.0/collections",
            "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
        ],
        "links": [
            {"rel": "self", "href": f"{base}/", "type": "application/json"},
            {"rel": "root", "href": f"{base}/", "type": "application/json"},
            {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
            {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "GET"},
            {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "POST"},
        ],
    }


def hit_counter(log: list[tuple[str, str, int]]) -> collections.Counter:
    return collections.Counter(p for _, p, _ in log)


# =====================================================================================
# the server runs in a child process
# =====================================================================================
class StacServer:
    """Client for the test server, which runs in a child process.

    Why a process: some rasterio calls hold the GIL while GDAL waits for the network;
    a server thread in the same interpreter could then never answer (deadlock).
    State (items, faults, request log, tokens) is driven through ``/_ctl/`` endpoints.
    """

    def __init__(self, root: Path, *, require_sas: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._require_sas = require_sas
        self._proc = None
        self.port = 0

    def __enter__(self) -> StacServer:
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(self.root)],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self._proc.kill()
            raise RuntimeError(f"test STAC server did not start: {line!r}")
        self.port = int(line)
        self.require_sas = self._require_sas
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except Exception:
                self._proc.kill()
            self._proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxy(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ctl(self, what: str, payload: Any = None) -> dict:
        import urllib.request

        if what == "state":
            req = urllib.request.Request(f"{self.url}/_ctl/state")
        else:
            req = urllib.request.Request(f"{self.url}/_ctl/{what}", data=json.dumps(payload).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def add_items(self, items: list[dict]) -> None:
        self._ctl("items", items)

    def add_fault(self, match: str, kind: str, times: int = 1, method: str | None = None) -> None:
        self._ctl("fault", {"match": match, "kind": kind, "times": times, "method": method})

    def expire_tokens(self) -> None:
        self._ctl("expire", {})

    def reset(self) -> None:
        self._ctl("reset", {})

    @property
    def log(self) -> list[tuple[str, str, int]]:
        return [tuple(x) for x in self._ctl("state")["log"]]

    @property
    def token_requests(self) -> int:
        return self._ctl("state")["token_requests"]

    @property
    def page_size(self) -> int:  # pragma: no cover - write-only in tests
        raise AttributeError("page_size is write-only")

    @page_size.setter
    def page_size(self, value: int) -> None:
        self._ctl("config", {"page_size": int(value)})

    @property
    def require_sas(self) -> bool:  # pragma: no cover
        return self._require_sas

    @require_sas.setter
    def require_sas(self, value: bool) -> None:
        self._require_sas = bool(value)
        self._ctl("config", {"require_sas": bool(value)})

    def hits(self, contains: str, method: str | None = None, status: int | None = None) -> int:
        return sum(
            1
            for m, p, s in self.log
            if contains in p and (method is None or m == method) and (status is None or s == status)
        )


def _serve(root: str) -> None:
    import sys

    with _ServerState(Path(root)) as state:
        print(state.port, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    import sys

    _serve(sys.argv[1])


def write_simple_item(
    root: Path,
    *,
    item_id: str,
    datetime: str,
    epsg: int,
    x0: float,
    y0: float,
    res: float,
    assets: dict[str, tuple[np.ndarray, Any]],
    properties: dict[str, Any],
    asset_base: str,
    container: str,
    collection: str,
) -> dict:
    """Write one COG per asset (``name -> (array, nodata)``) and return the item dict."""
    from pyproj import Transformer

    out_assets = {}
    shape = None
    for name, (arr, nodata) in assets.items():
        rel = f"{container}/{item_id}/{name}.tif"
        write_tif(root / "blob" / rel, arr, x0=x0, y0=y0, res=res, epsg=epsg, nodata=nodata)
        shape = arr.shape
        out_assets[name] = {
            "href": f"{asset_base}/{rel}",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
        }
    assert shape is not None
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    w, s, e, n = tr.transform_bounds(x0, y0 - shape[0] * res, x0 + shape[1] * res, y0, densify_pts=21)
    props = {
        "datetime": datetime,
        "proj:epsg": epsg,
        "proj:shape": list(shape),
        "proj:transform": [res, 0.0, x0, 0.0, -res, y0],
        **properties,
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
        "id": item_id,
        "collection": collection,
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": props,
        "assets": out_assets,
        "links": [],
    }
