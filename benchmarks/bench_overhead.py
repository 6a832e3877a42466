"""Pipeline overhead: ``embed(halo=0)`` against a bare encoder loop on the same windows.

The bare loop is the least any caller must do to get the same vectors: from the cube's
pixels already in the model's band order and layout (prepared once, untimed), cut the
windows, normalize them, stack them into batches of the same size and call the same encoder
(``encoder.encode``) with the same weights, threads and position mode. ``embed()`` adds validation, band and scale decisions,
harmonization, visibility masks, the block graph and its synchronous run, the stitching
and the attrs (seam and position diagnostics included). Both run in this process, one
after the other, best of ``--repeat`` interleaved runs after a warm-up, and the vectors are
checked equal (so both did the same work). Wall seconds and process CPU seconds are both
reported: on a shared, loaded machine the CPU ratio is the steadier of the two.

``ratio = bare seconds / embed seconds``: 1.0 = no overhead; the target is ≥ 0.95.

Models: Galileo-Nano on the real weights (``../shared/weights/galileo-nano``) and OlmoEarth
v1.1 Nano on a checkpoint built by :func:`eoembed.testing.make_checkpoint` in the published
layout (same architecture and cost as the real weights).

    python benchmarks/bench_overhead.py [--quick] [--windows 36] [--window 48] [--sizes 25x48,64x64]
                                        [--patch-size 4] [--times 2] [--repeat 3] [--profile] [--json out.json]

``--sizes`` runs several sizes in one call, which tells a fixed cost per call (input checks, band and
scale decisions, the graph, the attrs and their diagnostics) from a cost per window (data preparation):
a fixed cost shows as a ratio that rises with the run's size, a per-window one as the same ratio at
every size.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import eoembed
from eoembed.encode import CPU_BATCH_SIZE, TileBatch
from eoembed.testing import synthetic_cube, window_aligned_origin

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _meta  # noqa: E402  (run stamps; the weights of each model: _meta.weights_for)

MODELS = ("galileo-nano", "olmoearth-v1.1-nano")


def bare_input(enc, cube) -> dict:
    """What the bare loop starts from (prepared once, outside the timing): pixels ``(H, W, T, C)`` in the
    model's band order, dates, transform and CRS."""
    order = list(enc.spec.modalities["sentinel2_l2a"])
    x = cube.sel(band=order).values.astype("float32")  # (T, C, H, W) DN, the model's band order
    times = cube.time.to_index()
    return {"x": np.ascontiguousarray(x.transpose(2, 3, 0, 1)),
            "ts": np.array([[d.day, d.month - 1, d.year] for d in times], dtype="int64"),
            "transform": tuple(cube.rio.transform())[:6], "crs": cube.rio.crs.to_wkt(), "bands": len(order)}


def bare_loop(enc, inp: dict, *, window: int, patch_size: int, batch_size: int, position: str) -> np.ndarray:
    """The windows of the cube through ``enc.encode`` directly: ``(D, y, x)`` like ``embed(halo=0)``."""
    x, ts, tr, crs = inp["x"], inp["ts"], inp["transform"], inp["crs"]
    h, w, t, _ = x.shape
    wins = [(r, c) for r in range(0, h, window) for c in range(0, w, window)]
    tp = window // patch_size
    vis = np.ones((tp, tp, t), bool)
    outs = []
    for s in range(0, len(wins), batch_size):
        chunk = wins[s : s + batch_size]
        data = np.stack([x[r : r + window, c : c + window] for r, c in chunk])
        batch = TileBatch(
            data={"sentinel2_l2a": enc.normalize("sentinel2_l2a", data)},
            visible={"sentinel2_l2a": np.broadcast_to(vis, (len(chunk), *vis.shape))},
            timestamps=np.broadcast_to(ts, (len(chunk), *ts.shape)).copy(),
            patch_size=patch_size, input_res=10.0, present={"sentinel2_l2a": np.ones(inp["bands"], bool)},
            lonlat=None, halo=0, origins=np.array(chunk), transform=tr, crs=crs, position=position,
        )
        outs.extend(enc.encode(batch, pool_time=True))
    side = w // window
    grid = np.stack(outs).reshape(h // window, side, tp, tp, -1)  # (wy, wx, py, px, D)
    return grid.transpose(4, 0, 2, 1, 3).reshape(grid.shape[-1], h // patch_size, w // patch_size)


def run(models, *, windows: int, window: int, patch_size: int, times: int, repeat: int,
        profile: bool) -> list[dict]:
    import torch

    side = int(round(windows ** 0.5))
    cube = synthetic_cube(height=side * window, width=side * window, times=times, seed=3,
                          origin=window_aligned_origin(window))
    root = Path(tempfile.mkdtemp())
    rows = []
    for name in models:
        w = _meta.weights_for(name, root)
        if w is None:
            rows.append({"model": name, "skipped": "no weights here"})
            continue
        spec = eoembed.get_model_spec(name)
        position = "neutral" if spec.window_positions else "raw"
        enc = eoembed.load_model(name, weights=w, device="cpu")
        kw = dict(weights=w, device="cpu", patch_size=patch_size, tile_size=window, halo=0, blend=False,
                  batch_size=CPU_BATCH_SIZE, modalities=("sentinel2_l2a",), progress=False, position=position)
        ref = eoembed.embed(cube, name, **kw)  # warm-up (and the model in the cache)
        inp = bare_input(enc, cube)
        bkw = dict(window=window, patch_size=patch_size, batch_size=CPU_BATCH_SIZE, position=position)
        direct = bare_loop(enc, inp, **bkw)
        diff = float(np.nanmax(np.abs(ref.values - direct)))
        t_bare, t_embed, c_bare, c_embed = [], [], [], []
        for i in range(repeat):  # interleaved, each going first in turn: a load spike or a warm cache hits both
            for which in (("bare", "embed") if i % 2 == 0 else ("embed", "bare")):
                t0, c0 = time.perf_counter(), time.process_time()
                if which == "bare":
                    bare_loop(enc, inp, **bkw)
                else:
                    eoembed.embed(cube, name, **kw)
                (t_bare if which == "bare" else t_embed).append(time.perf_counter() - t0)
                (c_bare if which == "bare" else c_embed).append(time.process_time() - c0)
        row = {"model": name, "windows": side * side, "window_px": window, "patch_size": patch_size,
               "timesteps": times, "batch_size": CPU_BATCH_SIZE, "torch_threads": torch.get_num_threads(),
               "bare_s": min(t_bare), "embed_s": min(t_embed), "ratio": min(t_bare) / min(t_embed),
               "cpu_ratio": min(c_bare) / min(c_embed), "bare_all_s": t_bare, "embed_all_s": t_embed,
               "bare_cpu_s": c_bare, "embed_cpu_s": c_embed, "max_abs_diff": diff}
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            eoembed.embed(cube, name, **kw)
            prof.disable()
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            total = st.total_tt
            st.sort_stats("tottime").print_stats(25)
            row["profile_total_s"] = total
            row["outside_encoder_share"] = 1 - _share(st, "encode", total, "eoembed/models")
            row["profile"] = buf.getvalue()
            row["diagnostics_share"] = _share(st, "diagnostics", total)
        rows.append(row)
    return rows


def _share(st: pstats.Stats, func: str, total: float, where: str = "eoembed") -> float:
    """Cumulative time of the functions named ``func`` (in files under ``where``) over the profiled total."""
    cum = sum(v[3] for k, v in st.stats.items() if k[2] == func and where in k[0])
    return cum / total if total else float("nan")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="OlmoEarth v1.1 Nano only, 9 windows, 1 repeat")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--windows", type=int, default=36, help="windows (rounded to a square)")
    ap.add_argument("--window", type=int, default=48, help="window side in pixels (halo 0)")
    ap.add_argument("--sizes", default=None, metavar="NxW[,NxW...]",
                    help="several run sizes in one call: N windows of W px each (overrides --windows/--window), "
                         "to separate embed()'s fixed cost per call from its cost per window")
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--times", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one more embed() call per model")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _meta

    started = _meta.machine()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = args.models.split(",")
    windows, repeat = args.windows, args.repeat
    if args.quick:
        models, windows, repeat = ["olmoearth-v1.1-nano"], 9, 1
    sizes = [(windows, args.window)]
    if args.sizes and not args.quick:
        sizes = [tuple(int(v) for v in sz.lower().split("x")) for sz in args.sizes.split(",")]
    rows = []
    for n, win in sizes:
        rows += run(models, windows=n, window=win, patch_size=args.patch_size, times=args.times,
                    repeat=repeat, profile=args.profile)
    print(f"{'model':22s} {'bare s':>8s} {'embed s':>8s} {'ratio':>6s} {'cpu ratio':>9s} {'diag %':>7s} "
          f"{'outside enc %':>13s} {'max|diff|':>10s}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:22s} skipped: {r['skipped']}")
            continue
        diag = f"{100 * r['diagnostics_share']:.2f}" if "diagnostics_share" in r else ""
        outside = f"{100 * r['outside_encoder_share']:.2f}" if "outside_encoder_share" in r else ""
        print(f"{r['model']:22s} {r['bare_s']:8.3f} {r['embed_s']:8.3f} {r['ratio']:6.3f} {r['cpu_ratio']:9.3f} "
              f"{diag:>7s} {outside:>13s} {r['max_abs_diff']:10.2e}")
    for r in rows:
        if "profile" in r:
            print(f"--- cProfile of embed(), {r['model']} ---\n{r.pop('profile')}")
    out = {"rows": rows, "quick": args.quick}
    print(json.dumps(out, indent=1))
    if args.json:
        _meta.write(args.json, _meta.stamp(out, started=started, note="quick settings" if args.quick else None))
    return out


if __name__ == "__main__":
    main()
