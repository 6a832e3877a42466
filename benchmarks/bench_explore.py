"""Benchmark the map explorer: opening a large cube and the latency of a map click.

Run::

    python benchmarks/bench_explore.py            # full sizes (about 1 min on 2 cores)
    python benchmarks/bench_explore.py --quick    # CI smoke sizes (a few s)
    python benchmarks/bench_explore.py --json out.json

1. open  — ``emb.eo.explore()`` on an S × S-patch cube (1,000 × 1,000 full, 32 dims,
   numpy): overview, Mercator warp, PCA-RGB layer, embedding scatter. The index is not
   built on open (it is built on the first click, once).
2. click — ``Explorer.click`` on an S × S-patch cube (500 × 500 = 250k patches full)
   with an exact (Flat) index built beforehand: search + similarity layer (colour map,
   warp, PNG data URL) + hit markers + scatter highlight. Reference, same run, same
   points: the bare ``idx.search(point=…, k=…)`` + ``idx.similarity_map(point=…)`` that
   the click wraps. Reported as medians and their ratio; the top-k of both must agree.

Data: each patch is one of 50 random unit prototypes + noise, arranged in blocks
(something like fields), so search results and PCA colours have structure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a CI smoke run")
    ap.add_argument("--json", help="write results to this file")
    a = ap.parse_args(argv)
    res = {"quick": a.quick,
           "open": bench_open(200 if a.quick else 1000),
           "click": bench_click(150 if a.quick else 500, repeat=3 if a.quick else 10)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
