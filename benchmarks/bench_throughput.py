"""Throughput per model and patch size: images/s and km²/s through ``embed()``, v1 vs v1.1.

One "image" is one 128 × 128-px, T=1 window (the unit of the public OlmoEarth GPU record:
~29,000 / 10,900 / 1,840 img/s for Nano / Tiny / Base on one H100, bf16 + compile). The cube
is a gap-free synthetic tile mosaic of ``--images`` such windows at 10 m; ``embed()`` runs with
``tile_size=128, halo=0`` so each window is exactly one image and nothing is thrown away.
Every row is timed best-of-``--repeat`` after one warm-up call (the model load is excluded:
``load_model`` caches it). Reported per row: img/s, km²/s, patches/s and the ratio to the
v1.1 row of the same size and patch size (how much cheaper one token per patch makes it).

OlmoEarth runs on random weights in the published layout (same architecture, same cost as the
real ones); Galileo-Nano on the real weights when ``../shared/weights/galileo-nano`` is there.

    python benchmarks/bench_throughput.py [--quick] [--images 16] [--device auto] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import sys
import time
import warnings
from pathlib import Path

import eoembed
from eoembed.testing import synthetic_cube, window_aligned_origin

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _meta  # noqa: E402  (run stamps; the weights of each model: _meta.weights_for)

WINDOW = 128


def run(models, patch_sizes, images: int, repeat: int, device: str, compile: bool) -> list[dict]:
    side = int(round(images ** 0.5))
    # on the CRS-anchored window grid: exactly side x side windows, no partial ones at the edges
    cube = synthetic_cube(height=side * WINDOW, width=side * WINDOW, times=1, seed=3,
                          origin=window_aligned_origin(WINDOW))
    n_img = side * side
    km2 = n_img * (WINDOW * 10 / 1000) ** 2
    root = Path(tempfile.mkdtemp())
    rows = []
    for name in models:
        w = _meta.weights_for(name, root)
        if w is None:
            rows.append({"model": name, "skipped": "no weights here"})
            continue
        for p in patch_sizes:
            kw = dict(weights=w, patch_size=p, tile_size=WINDOW, halo=0, blend=False, device=device,
                      progress=False)
            if compile:
                kw["compile"] = True
            eoembed.embed(cube, name, **kw)  # warm-up: loads (and compiles) the model once
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                eoembed.embed(cube, name, **kw)
                best = min(best, time.perf_counter() - t0)
            rows.append({"model": name, "patch_size": p, "images": n_img, "seconds": best,
                         "img_per_s": n_img / best, "km2_per_s": km2 / best,
                         "patches_per_s": n_img * (WINDOW // p) ** 2 / best})
    for r in rows:  # v1 vs v1.1 of the same size: how much the single S2 token per patch buys
        if "skipped" in r or not r["model"].startswith("olmoearth-v1-"):
            continue
        twin = next((q for q in rows if q.get("patch_size") == r["patch_size"]
                     and q["model"] == r["model"].replace("olmoearth-v1-", "olmoearth-v1.1-")), None)
        if twin:
            r["v1.1_speedup"] = twin["img_per_s"] / r["img_per_s"]
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Nano only, 4 images, patch 8 (CI smoke run)")
    ap.add_argument("--models", default="olmoearth-v1-nano,olmoearth-v1.1-nano,olmoearth-v1-tiny,"
                    "olmoearth-v1.1-tiny,olmoearth-v1.1-base,galileo-nano")
    ap.add_argument("--patch-sizes", default="8,4")
    ap.add_argument("--images", type=int, default=16, help="windows of 128 x 128 px (rounded to a square)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    ap.add_argument("--json", default=None, help="write the results (with run date, machine, command) here")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _meta

    started = _meta.machine()
    if args.quick:
        models, patch_sizes, images, repeat = ["olmoearth-v1-nano", "olmoearth-v1.1-nano"], [8], 4, 1
    else:
        models = args.models.split(",")
        patch_sizes = [int(p) for p in args.patch_sizes.split(",")]
        images, repeat = args.images, args.repeat
    rows = run(models, patch_sizes, images, repeat, args.device, args.compile)
    print(f"{'model':22s} {'p':>2s} {'img/s':>9s} {'km2/s':>8s} {'patches/s':>10s} {'v1.1 x':>7s}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:22s} skipped: {r['skipped']}")
            continue
        sp = f"{r['v1.1_speedup']:.2f}" if "v1.1_speedup" in r else ""
        print(f"{r['model']:22s} {r['patch_size']:2d} {r['img_per_s']:9.1f} {r['km2_per_s']:8.2f} "
              f"{r['patches_per_s']:10.0f} {sp:>7s}")
    out = {"window_px": WINDOW, "timesteps": 1, "device": args.device, "compile": args.compile, "images": images,
           "repeat": repeat, "quick": args.quick, "rows": rows}
    print(json.dumps(out, indent=1))
    if args.json:
        _meta.write(args.json, _meta.stamp(out, started=started,
                                           note="quick settings (Nano only, 4 images, p = 8)" if args.quick else None))
    return out


if __name__ == "__main__":
    main()
