"""Seams and window-position bias against cost for each tiling, and embed() against the bare encoder, in one run.

For every tiling (window size, halo, blending) on one cube and model, with ``--position``
(default ``auto``: neutral in-window positions for ViT families):

1. **Seams**: :func:`eoembed.grid.seam_stats` on the result — neighbour cosine distances
   grouped by phase along the window period; ``ratio`` = worst phase / the rest (≈1: window
   borders invisible), ``cross_over_in`` = pairs straddling a core border / the rest.
   **Position bias**: :func:`eoembed.position.position_stats` — top-10 hits at the query's
   in-window position over chance, PC1 variance explained by the position (and its noise level).
2. **Cost**: encoder tokens per output patch relative to non-overlapping windows
   (``GridSpec.overhead``, the same number ``embed_cost`` reports as ``halo_overhead``).
3. **Throughput**: embed() time (band resolution, masks, normalization, tiling, stitching)
   over a bare loop feeding the same pre-normalized windows to the encoder with the same
   batch size. ``embed_over_bare`` = 1.0 means no overhead. Best of ``--repeat`` runs,
   interleaved, so load from other processes hits both sides alike.

Runs on the shared real sample when present, else on a synthetic cube; uses a random-weight
checkpoint in the published layout unless ``--weights`` is given (seams of real weights are
the number that matters: pass them when you have them).

    python benchmarks/bench_tiling.py [--quick] [--model nano] [--weights DIR] [--size 128] [--position raw]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import eoembed
from eoembed.grid import grid_of, seam_stats
from eoembed.position import position_stats
from eoembed.testing import make_checkpoint, synthetic_cube

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/worldcereal/worldcereal_preprocessed_inputs.nc"

#: (label, tile_size px, halo px, blend) at patch size 4; scaled with --patch-size.
TILINGS = [
    ("w64-h0", 64, 0, False),
    ("w32-h0", 32, 0, False),
    ("w64-h16 (old default)", 64, 16, False),
    ("w64-h4-blend", 64, 4, True),
    ("w56-h4-blend", 56, 4, True),
    ("w48-h4-blend", 48, 4, True),
    ("w40-h4-blend", 40, 4, True),
    ("w64-h8-blend", 64, 8, True),
    ("w48-h8-blend", 48, 8, True),
    ("w64-h16-blend", 64, 16, True),
]


def _windows(cube, enc, tile: int, halo: int):
    """Pre-normalized ``(H, W, T, C)`` windows of the cube, as embed() cuts them."""
    order = list(enc.spec.modalities["sentinel2_l2a"])
    s2 = cube.sel(band=[b for b in order if b in cube.band.values])
    x = np.full((*s2.shape[2:], s2.sizes["time"], len(order)), np.nan, dtype="float32")
    for b in s2.band.values:
        x[..., order.index(b)] = s2.sel(band=b).values.transpose(1, 2, 0)
    x = np.nan_to_num(enc.normalize("sentinel2_l2a", x))
    core = tile - 2 * halo
    ny, nx = -(-x.shape[0] // core), -(-x.shape[1] // core)
    pad = np.zeros((ny * core + 2 * halo, nx * core + 2 * halo, *x.shape[2:]), dtype="float32")
    pad[halo : halo + x.shape[0], halo : halo + x.shape[1]] = x
    tiles = [pad[i * core : i * core + tile, j * core : j * core + tile] for i in range(ny) for j in range(nx)]
    t = s2.time.to_index()
    ts = np.array([[d.day, d.month - 1, d.year] for d in t])
    return tiles, ts


def bare_loop(cube, enc, patch_size: int, tile: int, halo: int, batch: int) -> float:
    """The floor: pre-normalized windows straight into the encoder, nothing else.

    OlmoEarth: its torch module with an all-visible mask (``fast_pass``, as rslearn runs
    it). Other families: the encoder object's own ``encode`` on ready-made batches.
    """
    tiles, ts = _windows(cube, enc, tile, halo)
    if enc.spec.family == "olmoearth":
        import torch
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample

        groups = enc.spec.token_groups["sentinel2_l2a"]
        t0 = time.perf_counter()
        for s in range(0, len(tiles), batch):
            xb = torch.from_numpy(np.stack(tiles[s : s + batch]))
            mask = torch.zeros((*xb.shape[:4], groups), dtype=torch.long)
            sample = MaskedOlmoEarthSample(
                timestamps=torch.from_numpy(np.broadcast_to(ts, (len(xb), *ts.shape)).copy()),
                sentinel2_l2a=xb, sentinel2_l2a_mask=mask)
            with torch.inference_mode():
                enc.module(sample, patch_size=patch_size, input_res=10, fast_pass=True)
        return time.perf_counter() - t0
    from eoembed.encode import TileBatch

    hp = tile // patch_size
    c = tiles[0].shape[-1]
    t0 = time.perf_counter()
    for s in range(0, len(tiles), batch):
        xb = np.stack(tiles[s : s + batch])
        n = len(xb)
        enc.encode(TileBatch(data={"sentinel2_l2a": xb},
                             visible={"sentinel2_l2a": np.ones((n, hp, hp, len(ts)), bool)},
                             timestamps=np.broadcast_to(ts, (n, *ts.shape)).copy(), patch_size=patch_size,
                             input_res=10.0, present={"sentinel2_l2a": np.ones(c, bool)}), pool_time=True)
    return time.perf_counter() - t0


def load_cubes(quick: bool, size: int):
    """The seam cube (real sample when present) and the timing cube (full, gap-free, ``size`` px).

    Timing needs a cube whose side is a multiple of every window and has no gaps, so
    embed() and the bare loop run exactly the same windows and tokens.
    """
    n = 64 if quick else size
    timing = synthetic_cube(height=n, width=n, times=3 if quick else 6, seed=1)
    if SAMPLE.exists():
        from eoembed.data import open_cube

        cube = open_cube(SAMPLE).sel(band=["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"])
        cube = cube.isel(time=[3, 5, 7] if quick else [3, 4, 5, 6, 7, 8])
        return cube, "shared WorldCereal sample (S2 only)", timing
    return synthetic_cube(height=n, width=n, times=3), "synthetic", timing


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, three tilings (CI smoke runs)")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="side of the (synthetic) timing cube in pixels")
    ap.add_argument("--batch-size", type=int, default=None, help="default: embed()'s device default")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--tilings", default=None, help="comma-separated labels from TILINGS (default all)")
    ap.add_argument("--no-timing", action="store_true", help="seams only")
    ap.add_argument("--position", default="auto", choices=["auto", "neutral", "raw"])
    ap.add_argument("--offsets", default="0", help="comma-separated pixel shifts of the seam cube (crop from the "
                    "top-left) so window borders fall on different ground; ratios are averaged")
    ap.add_argument("--json", default=None, help="write the results (with run date, machine, command) here")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _meta

    started = _meta.machine()

    cube, source, tcube = load_cubes(args.quick, args.size)
    spec = eoembed.get_model_spec(args.model)
    weights = args.weights
    if weights is None:
        weights = make_checkpoint(Path(tempfile.mkdtemp()) / "ck", spec.version, spec.size)
    p = args.patch_size
    scale = p / 4
    tilings = TILINGS[:1] + TILINGS[2:4] if args.quick else TILINGS
    if args.tilings:
        tilings = [t for t in TILINGS if t[0] in args.tilings.split(",")]
    kw = dict(weights=weights, patch_size=p, progress=False, position=args.position)
    enc = eoembed.load_model(args.model, weights=weights)
    from eoembed.encode import auto_batch_size

    default = eoembed.embed(cube, args.model, **kw)  # loads the model; its attrs give the family default
    batch = args.batch_size or auto_batch_size(enc, None, cube.sizes["time"])
    rows = []
    for label, tile, halo, blend in tilings:
        tile, halo = int(round(tile * scale / p)) * p, int(round(halo * scale / p)) * p
        per_offset, pos = [], []
        for off in (int(o) for o in args.offsets.split(",")):
            part = cube.isel(y=slice(off, None), x=slice(off, None))
            emb = eoembed.embed(part, args.model, tile_size=tile, halo=halo, blend=blend, batch_size=batch, **kw)
            woff = grid_of(emb).patch_period()["offset"]  # the window phase in patches (the attrs hold pixels)
            per_offset.append(seam_stats(emb.values, (tile - 2 * halo) // p, halo // p if blend else 0, woff))
            pos.append(position_stats(emb.values, period=(tile - 2 * halo) // p, offset=woff))
        per_offset = [st for st in per_offset if st]
        stats = None
        if per_offset:
            stats = {"ratio": float(np.mean([st["ratio"] for st in per_offset])),
                     "cross_over_in": float(np.mean([st["cross_over_in"] for st in per_offset])),
                     "pairs": np.sum([st["pairs"] for st in per_offset], axis=0).tolist(),
                     "ratio_per_offset": [round(st["ratio"], 3) for st in per_offset]}
        cost = eoembed.embed_cost(cube, args.model, patch_size=p, tile_size=tile, halo=halo, blend=blend)
        row = {"tiling": label, "tile_size": tile, "halo": halo, "blend": blend,
               "tokens_per_patch_rel": round(cost["halo_overhead"], 3),
               "seam_ratio": round(stats["ratio"], 3) if stats else float("nan"),
               "cross_over_in": round(stats["cross_over_in"], 3) if stats else float("nan"),
               "pairs": stats["pairs"] if stats else [0, 0],
               "ratio_per_offset": stats["ratio_per_offset"] if stats else []}
        pos = [s for s in pos if s]
        for key in ("same_position_over_chance", "pc1_position_share", "pc1_position_share_null"):
            row[key] = round(float(np.mean([s[key] for s in pos])), 3) if pos else float("nan")
        if not args.no_timing:
            t_embed, t_bare = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                eoembed.embed(tcube, args.model, tile_size=tile, halo=halo, blend=blend, batch_size=batch, **kw)
                t_embed.append(time.perf_counter() - t0)
                t_bare.append(bare_loop(tcube, enc, p, tile, halo, batch))
            row.update(embed_s=round(min(t_embed), 3), bare_s=round(min(t_bare), 3),
                       embed_over_bare=round(min(t_embed) / min(t_bare), 3))
        rows.append(row)
    if not args.no_timing:
        floor = rows[0]["bare_s"]
        for r in rows:
            r["time_per_patch_rel"] = round(r["embed_s"] / floor, 3)
    result = {"position": default.attrs["eoembed:position"], "input": source, "cube": dict(cube.sizes), "timing_cube": dict(tcube.sizes), "model": default.attrs["eoembed:model"],
              "weights": "given" if args.weights else "random (published layout)", "patch_size": p,
              "batch_size": batch, "default_tiling": [default.attrs["eoembed:tile_size"],
                                                      default.attrs["eoembed:halo"], default.attrs["eoembed:blend"]],
              "default_seam_ratio": default.attrs.get("eoembed:seam_ratio"), "tilings": rows}
    print(json.dumps(result, indent=1))
    print(f"\n{result['model']} ({result['weights']} weights); seams: {source} {dict(cube.sizes)}; "
          f"timing: synthetic {dict(tcube.sizes)}, batch {batch}")
    print(f"positions: {result['position']}")
    print(f"{'tiling':24} {'tokens/patch':>12} {'seam ratio':>10} {'cross/in':>9} {'hits/chance':>11} "
          f"{'PC1 pos':>8} {'(noise)':>8} {'embed/bare':>10} {'time/patch':>10}")
    for r in rows:
        print(f"{r['tiling']:24} {r['tokens_per_patch_rel']:12.2f} {r['seam_ratio']:10.2f} {r['cross_over_in']:9.2f} "
              f"{r['same_position_over_chance']:11.2f} {r['pc1_position_share']:8.3f} {r['pc1_position_share_null']:8.3f} "
              f"{r.get('embed_over_bare', float('nan')):10.2f} {r.get('time_per_patch_rel', float('nan')):10.2f}")
    if args.json:
        _meta.write(args.json, _meta.stamp(result, started=started, note="quick settings" if args.quick else None))
    return result


if __name__ == "__main__":
    main()
