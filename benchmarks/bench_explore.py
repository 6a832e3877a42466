"""Benchmark the map explorer: opening a large cube and the latency of a map click.

Run::

    python benchmarks/bench_explore.py --large 3163   # 1,000² open/click + 10⁷-patch any-scale (~15 min on 2 cores)
    python benchmarks/bench_explore.py                # the same with the issue's 10⁸-patch cube (hours on 2 cores)
    python benchmarks/bench_explore.py --quick        # CI smoke sizes (about 20 s)
    python benchmarks/bench_explore.py --only-large --large 2000 --json out.json
    python benchmarks/bench_explore.py --reopen 1000  # a stored cube explored twice: saved index reopened
                                                      # (runs gathered in results/bench_explore_reopen.json)

Results: ``benchmarks/results/bench_explore.json``, rendered in docs/performance.md (run
``python scripts/render_docs.py`` after re-measuring). From an earlier run not in that file
(16-d, 10⁷ patches): out-of-core IVF8192,Flat built in 723 s, recall@10 0.988 at nprobe 32,
click → similarity layer 60 ms median; 4·10⁶ patches with IVF4096,SQ8 codes reached recall@10
0.94 even at nprobe = nlist (why Flat codes are the default when they fit the memory budget).

1. open  — ``emb.eo.explore()`` on an S × S-patch cube (1,000 × 1,000 full, 32 dims,
   numpy): overview, Mercator warp, PCA-RGB layer, embedding scatter. The index is not
   built on open (it is built on the first click, once).
2. click — ``Explorer.click`` on an S × S-patch cube (500 × 500 = 250k patches full)
   with an exact (Flat) index built beforehand: search + similarity layer (colour map,
   warp, PNG data URL) + hit markers + scatter highlight. Reference, same run, same
   points: the bare ``idx.search(point=…, k=…)`` + ``idx.similarity_map(point=…)`` that
   the click wraps. Reported as medians and their ratio; the top-k of both must agree.

3. large — the any-scale path on a lazy S × S-patch dask cube (``--large S``; the issue's
   target is S = 10,000, i.e. 10⁸ patches): ``write_pyramid`` (one-off, streamed), then
   ``explore(emb, pyramid=…)`` open time and peak RSS (target < 5 s, bounded memory);
   the latency of warm XYZ tiles of the pyramid's PCA-RGB COG served by localtileserver
   (three zooms; reference: re-rendering the whole overview image, warp + PNG); the out-of-core
   index build (``build_index_ooc``) with its measured recall@10 against exact search;
   and click → similarity layer latency on it (target < 300 ms at 10⁷ with
   recall@10 ≥ 0.95).

Data: each patch is one of 50 random unit prototypes + noise, arranged in blocks
(something like fields), so search results and PCA colours have structure. The large
cube is generated chunk by chunk (deterministic per chunk), never held in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _meta

import xarray as xr  # noqa: E402

import eoembed  # noqa: E402,F401  (registers .eo)


def synthetic(n: int, d: int = 32, seed: int = 0) -> xr.DataArray:
    from affine import Affine

    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((50, d)).astype(np.float32)
    blocks = rng.integers(0, 50, (n // 20 + 1, n // 20 + 1))
    cls = np.kron(blocks, np.ones((20, 20), np.int64))[:n, :n]
    arr = np.empty((d, n, n), np.float32)
    for r0 in range(0, n, 250):  # bounded temporaries
        sl = slice(r0, min(n, r0 + 250))
        v = protos[cls[sl]] + 0.6 * rng.standard_normal((cls[sl].shape + (d,)), dtype=np.float32)
        arr[:, sl] = np.moveaxis(v, -1, 0)
    pitch, x0, y0 = 40.0, 600_000.0, 5_600_000.0
    emb = xr.DataArray(arr, dims=("embedding", "y", "x"),
                       coords={"y": y0 - pitch * (np.arange(n) + 0.5), "x": x0 + pitch * (np.arange(n) + 0.5)},
                       attrs={"eoembed:model": "bench", "eoembed:embedding_dim": d})
    return emb.rio.write_crs("EPSG:32631").rio.write_transform(Affine(pitch, 0, x0, 0, -pitch, y0))


def bench_open(n: int) -> dict:
    emb = synthetic(n)
    t0 = time.perf_counter()
    ex = emb.eo.explore(index_kwargs={"kind": "flat"})
    sec = time.perf_counter() - t0
    res = {"patches": n * n, "shape": [n, n], "seconds": round(sec, 3),
           "breakdown": {k: round(v, 3) for k, v in ex.timings.items()},
           "overview_shape": list(ex._ov.shape[-2:]), "mercator_shape": list(ex._warp.shape)}
    print(f"[open]  {n}×{n} patches ({n * n / 1e6:.2f} M, 32-d): {sec:.2f} s "
          f"(overview {res['overview_shape']}, layer image {res['mercator_shape']})")
    return res


def bench_click(n: int, k: int = 20, repeat: int = 10) -> dict:
    emb = synthetic(n, seed=1)
    ex = emb.eo.explore(k=k, index_kwargs={"kind": "flat"})
    t0 = time.perf_counter()
    idx = ex.index
    build = time.perf_counter() - t0
    rng = np.random.default_rng(2)
    pts = [(float(emb.x[c]), float(emb.y[r])) for r, c in rng.integers(0, n, (repeat + 1, 2))]
    ex.click(*pts[0])  # warm-up (first PNG encoder / widget creation)
    idx.search(point=pts[0], k=k)
    clicks, bare, equal = [], [], True
    for p in pts[1:]:
        t = time.perf_counter()
        hits = ex.click(*p)
        clicks.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = idx.search(point=p, k=k)
        sim = idx.similarity_map(point=p)
        bare.append(time.perf_counter() - t)
        equal &= list(hits["id"]) == list(ref["id"])
        del sim
    c, b = float(np.median(clicks)), float(np.median(bare))
    res = {"patches": n * n, "shape": [n, n], "k": k, "index": idx.key, "index_build_s": round(build, 3),
           "click_ms": round(1000 * c, 1), "bare_ms": round(1000 * b, 1), "ratio": round(c / b, 2),
           "click_max_ms": round(1000 * max(clicks), 1), "topk_equal": bool(equal), "repeats": repeat}
    print(f"[click] {n}×{n} patches ({idx.key} index, built once in {build:.2f} s): click {res['click_ms']} ms "
          f"(max {res['click_max_ms']}) vs bare search+similarity_map {res['bare_ms']} ms → ratio {res['ratio']}; "
          f"top-{k} equal: {equal}")
    return res


def lazy_synthetic(n: int, d: int = 16, chunk: int = 1000, seed: int = 0) -> xr.DataArray:
    """An n × n-patch dask cube generated per chunk (block structure as :func:`synthetic`)."""
    import dask.array as da
    from affine import Affine

    protos = np.random.default_rng(seed).standard_normal((50, d)).astype(np.float32)

    def block(block_info=None):
        (_, _), (r0, r1), (c0, c1) = block_info[None]["array-location"]
        rng = np.random.default_rng([seed, r0, c0])
        rr, cc = np.arange(r0, r1) // 20, np.arange(c0, c1) // 20
        cls = (rr[:, None] * 7919 + cc[None, :] * 104729) % 50
        v = protos[cls] + 0.6 * rng.standard_normal(cls.shape + (d,), dtype=np.float32)
        return np.moveaxis(v, -1, 0)

    arr = da.map_blocks(block, dtype=np.float32, chunks=((d,), *(((chunk,) * (n // chunk) + ((n % chunk,) if n % chunk else ())),) * 2))
    pitch, x0, y0 = 40.0, 600_000.0, 5_600_000.0
    emb = xr.DataArray(arr, dims=("embedding", "y", "x"),
                       coords={"y": y0 - pitch * (np.arange(n) + 0.5), "x": x0 + pitch * (np.arange(n) + 0.5)},
                       attrs={"eoembed:model": "bench", "eoembed:embedding_dim": d}, name="embeddings")
    return emb.rio.write_crs("EPSG:32631").rio.write_transform(Affine(pitch, 0, x0, 0, -pitch, y0))


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_tiles(cog: str, per_zoom: int = 12) -> dict:
    """Latency of XYZ tiles of the PCA-RGB COG served by localtileserver over HTTP (warm file).

    For three zooms (the cube's fit zoom, +2, +4): ``per_zoom`` random tiles inside the
    cube, each fetched once (a tile is rendered, not cached); one tile fetched first to
    warm the server. Reports median and max ms per zoom.
    """
    import morecantile
    import requests

    from eoembed.explore.tiles import tile_layer

    import rasterio
    from pyproj import Transformer

    layer = tile_layer(cog, name="PCA-RGB")
    url = layer.url
    with rasterio.open(cog) as ds:
        left, bottom, right, top = ds.bounds
        to_ll = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
    tms = morecantile.tms.get("WebMercatorQuad")
    rng = np.random.default_rng(0)
    # points inside the cube (its own CRS), so every tile holds data
    lon, lat = to_ll.transform(rng.uniform(left, right, 3 * per_zoom + 1), rng.uniform(bottom, top, 3 * per_zoom + 1))
    w, e = to_ll.transform([left, right], [(bottom + top) / 2] * 2)[0]
    z_fit = max(1, int(np.floor(np.log2(360.0 / max(e - w, 1e-9)))) + 1)
    t = tms.tile(lon[-1], lat[-1], z_fit)
    requests.get(url.format(z=t.z, x=t.x, y=t.y), timeout=60)  # warm the server (first request opens the file)
    out = {}
    for i, z in enumerate((z_fit, z_fit + 2, z_fit + 4)):
        lat_ms = []
        for lo, la in zip(lon[i * per_zoom:(i + 1) * per_zoom], lat[i * per_zoom:(i + 1) * per_zoom]):
            t = tms.tile(lo, la, z)
            t0 = time.perf_counter()
            r = requests.get(url.format(z=t.z, x=t.x, y=t.y), timeout=60)
            lat_ms.append(1000 * (time.perf_counter() - t0))
            assert r.status_code == 200, r.text[:200]
        out[f"z{z}"] = {"median_ms": round(float(np.median(lat_ms)), 1), "max_ms": round(max(lat_ms), 1)}
    out["cog_mb"] = round(os.path.getsize(cog) / 2**20, 1)
    return out


def bench_large(n: int, workdir: str, chunk: int = 1000, clicks: int = 5, index: bool = True,
                dim: int = 16) -> dict:
    import tempfile

    from eoembed.explore.pyramid import write_pyramid
    from eoembed.index.ooc import build_index_ooc
    from eoembed.viz import png_data_url

    t = time.perf_counter()
    import leafmap  # noqa: F401  (imported once per kernel; reported apart from the open time)

    emb = lazy_synthetic(n, d=dim, chunk=min(chunk, n))
    res: dict = {"patches": n * n, "shape": [n, n], "dim": emb.sizes["embedding"], "rss_start_mb": round(_rss_mb()),
                 "leafmap_import_s": round(time.perf_counter() - t, 2)}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t = time.perf_counter()
        levels = write_pyramid(emb, os.path.join(tmp, "pyr"), min_side=256 if n > 256 else 64)
        res["pyramid_write_s"] = round(time.perf_counter() - t, 2)
        res["pyramid_levels"] = len(levels)
        res["rss_after_pyramid_mb"] = round(_rss_mb())
        t = time.perf_counter()
        ex = emb.eo.explore(scatter=None, pyramid=os.path.join(tmp, "pyr"))
        res["open_s"] = round(time.perf_counter() - t, 3)
        res["overview_shape"] = list(ex._ov.shape[-2:])
        res["rss_after_open_mb"] = round(_rss_mb())
        img = np.asarray(ex.layer_data["PCA-RGB"].values)
        from eoembed.viz import rgb_to_rgba

        rgba = rgb_to_rgba(img)
        png_data_url(ex._warp.apply(rgba))
        t = time.perf_counter()
        for _ in range(3):
            png_data_url(ex._warp.apply(rgba))
        res["layer_render_ms"] = round(1000 * (time.perf_counter() - t) / 3, 1)
        res["tiles"] = bench_tiles(os.path.join(tmp, "pyr", "pca.tif"))
        if not index:
            res["rss_peak_mb"] = round(_rss_mb())
            print(f"[large] {n}×{n} patches ({n * n / 1e6:.1f} M, {res['dim']}-d, dask): pyramid + PCA COG "
                  f"{res['pyramid_write_s']} s ({res['pyramid_levels']} levels); open {res['open_s']} s; tiles "
                  f"{res['tiles']}; overview redraw {res['layer_render_ms']} ms; peak RSS {res['rss_peak_mb']} MB")
            return res
        t = time.perf_counter()
        idx = build_index_ooc(emb, seed=0)
        res["ooc_index"] = {"key": idx.key, "build_s": round(time.perf_counter() - t, 1), **idx.tuning}
        res["rss_after_index_mb"] = round(_rss_mb())
        ex._index = idx
        rng = np.random.default_rng(3)
        pts = [(float(emb.x[c]), float(emb.y[r])) for r, c in rng.integers(0, n, (clicks + 1, 2))]
        ex.click(*pts[0])
        lat = []
        for p in pts[1:]:
            t = time.perf_counter()
            ex.click(*p)
            lat.append(time.perf_counter() - t)
        res["click_ms"] = round(1000 * float(np.median(lat)), 1)
        res["click_max_ms"] = round(1000 * max(lat), 1)
        res["rss_peak_mb"] = round(_rss_mb())
    print(f"[large] {n}×{n} patches ({n * n / 1e6:.1f} M, {res['dim']}-d, dask): pyramid {res['pyramid_write_s']} s "
          f"({res['pyramid_levels']} levels); open {res['open_s']} s (overview {res['overview_shape']}); layer render "
          f"{res['layer_render_ms']} ms; ooc index {res['ooc_index']['key']} in {res['ooc_index']['build_s']} s, "
          f"recall@10 {res['ooc_index']['recall@10']} (nprobe {res['ooc_index']['nprobe']}); click "
          f"{res['click_ms']} ms (max {res['click_max_ms']}); peak RSS {res['rss_peak_mb']} MB")
    return res


def bench_reopen(n: int, workdir: str | None, *, dim: int = 16, clicks: int = 10, chunk: int = 500,
                 kind: str = "auto", via: str = "explorer") -> dict:
    """A stored cube's explorer, opened twice: the first session builds and saves the index, the second reopens it.

    An S × S-patch lazy cube is written with ``to_zarr(..., pyramid=True)`` (untimed). Session 1:
    ``ExplorerState(open_embeddings(store))`` (open), its first click (builds the index with progress
    and saves it as ``<store>.index``). Session 2 (new state, same process: the files are in the page
    cache, as on a machine that just wrote them): open (the saved index is fingerprint-checked and
    loaded on open), the first click, and the median of ``clicks`` later clicks — all through
    ``ExplorerState.click`` (what ``Explorer.click`` and a map click call), each a full click: search,
    similarity layer, markers. ``via="explorer"`` (default): the widget, :class:`eoembed.explore.Explorer`,
    whose ``click`` also redraws the map's layers (the similarity PNG overlay, markers, panel); ``"state"``: the
    widget-free :class:`~eoembed.explore.state.ExplorerState` alone.
    """
    import tempfile

    from eoembed.explore.state import ExplorerState
    from eoembed.io import open_embeddings, to_zarr

    if via == "explorer":
        from eoembed.explore.explorer import Explorer

        def make(emb, **kw):
            ex = Explorer(emb, scatter=None, **kw)
            return ex, ex.state
    else:
        def make(emb, **kw):
            st = ExplorerState(emb, scatter=None, **kw)
            return st, st
    res: dict = {"patches": n * n, "shape": [n, n], "dim": dim, "index_kind": kind, "via": via}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = os.path.join(tmp, "cube.zarr")
        t = time.perf_counter()
        to_zarr(lazy_synthetic(n, d=dim, chunk=min(chunk, n)), store, progress=False, pyramid=n > 256)
        res["write_s"] = round(time.perf_counter() - t, 2)
        kw = {} if kind == "auto" else {"index_kwargs": {"kind": kind}}
        rng = np.random.default_rng(5)
        emb0 = open_embeddings(store)
        pts = [(float(emb0.x[c]), float(emb0.y[r])) for r, c in rng.integers(0, n, (clicks + 2, 2))]
        for session in ("first", "reopen"):
            t = time.perf_counter()
            ui, st = make(open_embeddings(store), **kw)
            row = {"open_s": round(time.perf_counter() - t, 3), "note": st.notes.status}
            if "index_load" in st.timings:
                row["index_load_s"] = round(st.timings["index_load"], 3)
            t = time.perf_counter()
            ui.click(*pts[0])
            row["first_click_s"] = round(time.perf_counter() - t, 3)
            if "index_build" in st.timings:
                row["index_build_s"] = round(st.timings["index_build"], 2)
            lat = []
            for p in pts[1:]:
                t = time.perf_counter()
                ui.click(*p)
                lat.append(time.perf_counter() - t)
            row["click_median_ms"] = round(1000 * float(np.median(lat)), 1)
            row["click_max_ms"] = round(1000 * max(lat), 1)
            row["index"] = st.index.key
            res[session] = row
        files = [f for f in Path(f"{store}.index").rglob("*") if f.is_file()]
        res["index_mb"] = round(sum(f.stat().st_size for f in files) / 2**20, 1)
    r = res["reopen"]
    print(f"[reopen] {n}×{n} patches ({n * n / 1e6:.2f} M, {dim}-d, {r['index']}): first session open "
          f"{res['first']['open_s']} s, first click (builds + saves the index) {res['first']['first_click_s']} s; "
          f"reopened: open {r['open_s']} s (index load {r.get('index_load_s')} s), first click "
          f"{r['first_click_s'] * 1000:.0f} ms, later clicks median {r['click_median_ms']} ms "
          f"(max {r['click_max_ms']})")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a CI smoke run")
    ap.add_argument("--json", help="write results to this file")
    ap.add_argument("--large", type=int, default=None,
                    help="side S of the lazy S×S-patch cube for the any-scale section (default 10000; quick 300)")
    ap.add_argument("--only-large", action="store_true", help="run only the any-scale section")
    ap.add_argument("--workdir", default=None, help="where the pyramid is written (default: the temp dir)")
    ap.add_argument("--dim", type=int, default=16, help="embedding dimension of the large cube (default 16)")
    ap.add_argument("--no-index", action="store_true",
                    help="large section without the out-of-core index and clicks (pyramid, COG, open, tiles only)")
    ap.add_argument("--no-large", action="store_true", help="run only the open and click sections")
    ap.add_argument("--reopen", type=int, default=None, metavar="S",
                    help="only the stored-cube section: an S×S-patch store explored twice (index built and saved, "
                         "then reopened): open, first click, later clicks")
    ap.add_argument("--index-kind", default="auto", help="--reopen: the explorer's index kind (default auto)")
    ap.add_argument("--via", choices=["explorer", "state"], default="explorer",
                    help="--reopen: click through the Explorer widget (layers redrawn; default) or ExplorerState")
    a = ap.parse_args(argv)
    import _meta

    started = _meta.machine()
    res: dict = {"quick": a.quick}
    if a.reopen:
        res["reopen"] = bench_reopen(a.reopen, a.workdir, dim=a.dim, clicks=3 if a.quick else 10, kind=a.index_kind,
                                     via=a.via)
        if a.json:
            _meta.write(a.json, _meta.stamp(res, started=started))
        return 0
    if not a.only_large:
        res["open"] = bench_open(200 if a.quick else 1000)
        res["click"] = bench_click(150 if a.quick else 500, repeat=3 if a.quick else 10)
    if not a.no_large:
        res["large"] = bench_large(a.large or (300 if a.quick else 10_000), a.workdir,
                                   chunk=100 if a.quick else 1000, clicks=2 if a.quick else 5, index=not a.no_index,
                                   dim=a.dim)
    if a.json:
        _meta.write(a.json, _meta.stamp(res, started=started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
