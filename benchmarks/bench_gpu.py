"""GPU readiness: every family at its defaults through ``embed()`` on one NVIDIA GPU, against a bare encoder loop.

One command on a machine with a GPU::

    python benchmarks/bench_gpu.py --json benchmarks/results/bench_gpu.json

For each model: ``embed()`` on a synthetic, window-aligned cube (``--windows`` windows of
``--window`` px, ``--times`` timesteps; halo 0, no blending, the family's position mode and
batch size), after a warm-up, best of ``--repeat``; printed and written: images (windows)/s,
km²/s, peak GPU memory (``torch.cuda.max_memory_allocated``, reset per model), the autocast
dtype the family ran under (bf16 on CUDA; Presto stays fp32, see
``eoembed.models._torchcommon.FP32_FAMILIES``; ``--precision fp16`` forces fp16 autocast
instead), and the ratio to the bare encoder loop on the same windows (``bare_loop`` of
``benchmarks/bench_overhead.py``, imported: the same encoder called directly; 1.0 = no
overhead) with the largest difference between the two; and ``embed()`` with the family's
default tiling (``eoembed.grid.DEFAULT_TILING``: window, halo, blend) on the same cube, the km²/s
a user gets. The three are interleaved, each going first in turn.

Weights: Galileo-Nano and Presto real weights (``eoembed.data.sample``: the mirror, the
cache, else skipped: nothing is downloaded unless ``--download``); OlmoEarth v1.1
Nano/Tiny and v1.2 Nano/Tiny from :func:`eoembed.testing.make_checkpoint` (the published
layout and architecture, random weights: same cost as the real ones). Prithvi-EO and
ViT-MAE need local checkpoints (``--weights NAME=PATH``), else they are skipped.

Without a GPU: ``--dry-run`` prints the plan (models, weights, settings) in about a
second, and ``--device cpu --quick`` runs one small model end to end on the CPU in
seconds (the unit smoke test ``tests/unit/test_benchmarks_smoke.py`` does both); the
GPU-only figures are then None.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import eoembed  # noqa: E402
from bench_overhead import bare_input, bare_loop  # noqa: E402  (the one bare loop; not copied)

MODELS = ("galileo-nano", "presto", "olmoearth-v1.1-nano", "olmoearth-v1.1-tiny", "olmoearth-v1.2-nano",
          "olmoearth-v1.2-tiny", "prithvi-eo-2.0-300m-tl", "vitmae-rs-base")
#: Windows per encoder call on CUDA (``--batch-size`` changes it; CPU: eoembed.encode.CPU_BATCH_SIZE).
GPU_BATCH = 64
SAMPLES = {"galileo-nano": "galileo-nano", "presto": "presto"}


def weights_for(name: str, root: Path, extra: dict, *, download: bool, make: bool = True):
    """``(weights or None, where from)`` for ``name``."""
    if name in extra:
        return Path(extra[name]), "given"
    spec = eoembed.get_model_spec(name)
    if spec.family == "olmoearth":
        if not make:
            return root / name, "make_checkpoint (random weights, published layout)"
        from eoembed.testing import make_checkpoint

        how = "make_checkpoint (random weights, published layout)"
        return make_checkpoint(root / name, spec.version, spec.size), how
    if name in SAMPLES:
        from eoembed.data import sample

        try:
            return sample(SAMPLES[name], download=download), "eoembed.data.sample (real weights)"
        except Exception as err:  # noqa: BLE001  (not mirrored, not cached, no download allowed)
            return None, f"not here ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    return None, "no local checkpoint (pass --weights NAME=PATH)"


@contextlib.contextmanager
def _precision(mode: str):
    """``fp16``: every family's CUDA autocast in float16 (default: the families' own, bf16 / fp32)."""
    if mode != "fp16":
        yield
        return
    from eoembed.models import _torchcommon as tc

    original = tc.autocast_dtype
    tc.autocast_dtype = lambda device, family: "float16" if str(device).startswith("cuda") else None
    try:
        yield
    finally:
        tc.autocast_dtype = original


def run_one(name: str, w, *, device: str, windows: int, window: int, times: int, repeat: int,
            batch_size: int | None, bare: bool = True) -> dict:
    import torch

    from eoembed.models._torchcommon import autocast_dtype
    from eoembed.testing import synthetic_cube, window_aligned_origin

    spec = eoembed.get_model_spec(name)
    from eoembed.encode import CPU_BATCH_SIZE

    p = spec.default_patch_size
    side = max(1, int(round(windows ** 0.5)))
    cube = synthetic_cube(height=side * window, width=side * window, times=times, seed=3,
                          origin=window_aligned_origin(window))
    position = "neutral" if spec.window_positions else "raw"
    cuda = device.startswith("cuda")
    enc = eoembed.load_model(name, weights=w, device=device)
    bs = batch_size or (GPU_BATCH if cuda else CPU_BATCH_SIZE)  # the same batches for embed() and the bare loop
    kw = dict(weights=w, device=device, tile_size=window, halo=0, blend=False, modalities=("sentinel2_l2a",),
              progress=False, position=position, batch_size=bs, patch_size=p)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    ref = eoembed.embed(cube, name, **kw)  # warm-up: weights on the device, kernels chosen
    # the family's default tiling (window, halo, blend) on the same cube: what a user's embed() costs
    kw_def = {k: v for k, v in kw.items() if k not in ("tile_size", "halo", "blend")}
    dflt = eoembed.embed(cube, name, **kw_def)
    tiling = f"w{dflt.attrs['eoembed:tile_size'] // p}-h{dflt.attrs['eoembed:halo'] // p}" + (
        "-blend" if dflt.attrs.get("eoembed:blend") else "")
    inp = direct = None
    if bare:
        try:
            inp = bare_input(enc, cube)
            bkw = dict(window=window, patch_size=p, batch_size=bs, position=position)
            direct = bare_loop(enc, inp, **bkw)
        except Exception as err:  # noqa: BLE001  (a family the S2-only bare loop does not cover)
            bare_error = f"{type(err).__name__}: {str(err)[:160]}"
            inp = None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = {"embed": lambda: eoembed.embed(cube, name, **kw), "default": lambda: eoembed.embed(cube, name, **kw_def)}
    if inp is not None:
        runs["bare"] = lambda: bare_loop(enc, inp, **bkw)
    times_s = {k: [] for k in runs}
    order = list(runs)
    for i in range(repeat):  # interleaved, each going first in turn: a load spike hits every kind alike
        for k in order[i % len(order):] + order[: i % len(order)]:
            sync()
            t0 = time.perf_counter()
            runs[k]()
            sync()
            times_s[k].append(time.perf_counter() - t0)
    t_embed = times_s["embed"]
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    n_img = side * side
    km2 = (side * window * 10) ** 2 / 1e6
    row = {"model": name, "family": spec.family, "device": device, "windows": n_img, "window_px": window,
           "timesteps": times, "patch_size": p, "batch_size": bs,
           "autocast": autocast_dtype(device, spec.family), "embed_s": min(t_embed),
           "images_per_s": n_img / min(t_embed), "km2_per_s": km2 / min(t_embed),
           "patches_per_s": n_img * (window // p) ** 2 / min(t_embed),
           "default_tiling": tiling, "default_s": min(times_s["default"]),
           "default_km2_per_s": km2 / min(times_s["default"]),
           "peak_gpu_mib": None if peak is None else round(peak, 1)}
    if bare:
        if inp is None:
            row.update(bare_s=None, ratio=None, bare_error=bare_error)
        else:
            t_bare = times_s["bare"]
            row.update(bare_s=min(t_bare), ratio=min(t_bare) / min(t_embed),
                       max_abs_diff=float(np.nanmax(np.abs(ref.values - direct))))
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when there is one) | cuda | cpu")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--windows", type=int, default=256, help="windows per run (rounded to a square)")
    ap.add_argument("--window", type=int, default=64, help="window side in pixels")
    ap.add_argument("--times", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"windows per encoder call, embed() and bare loop alike (default {GPU_BATCH} on CUDA, "
                         "eoembed.encode.CPU_BATCH_SIZE on CPU)")
    ap.add_argument("--precision", choices=["auto", "fp16"], default="auto",
                    help="auto: the families' own autocast (bf16 on CUDA, Presto fp32); fp16: float16 autocast")
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=PATH", help="a local checkpoint")
    ap.add_argument("--download", action="store_true", help="let eoembed.data.sample download missing weights")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare-loop reference")
    ap.add_argument("--quick", action="store_true", help="OlmoEarth v1.1 Nano only, 4 windows of 32 px, T=1")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    import _meta
    import torch

    started = _meta.machine()
    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU; run with --device cpu --quick or --dry-run.")
    models, windows, window, times, repeat = a.models.split(","), a.windows, a.window, a.times, a.repeat
    if a.quick:
        models, windows, window, times, repeat = ["olmoearth-v1.1-nano"], 4, 32, 1, 1
    extra = dict(kv.split("=", 1) for kv in a.weights)
    root = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    settings = {"device": device, "windows": windows, "window_px": window, "timesteps": times, "repeat": repeat,
                "precision": a.precision, "batch_size": a.batch_size,
                "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}
    rows = []
    for name in models:
        w, src = weights_for(name, root, extra, download=a.download, make=not a.dry_run)
        if a.dry_run or w is None:
            rows.append({"model": name, "weights": src, **({"skipped": src} if w is None and not a.dry_run
                                                           else {"planned": True})})
            continue
        with _precision(a.precision):
            try:
                row = run_one(name, w, device=device, windows=windows, window=window, times=times, repeat=repeat,
                              batch_size=a.batch_size, bare=not a.no_bare)
            except Exception as err:  # noqa: BLE001  (one family failing does not hide the others)
                row = {"model": name, "error": f"{type(err).__name__}: {str(err)[:200]}"}
        row["weights"] = src
        rows.append(row)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(f"{'model':24s} {'img/s':>9s} {'km²/s':>9s} {'peak MiB':>9s} {'autocast':>9s} {'ratio':>6s}  weights")
    for r in rows:
        if "images_per_s" not in r:
            print(f"{r['model']:24s} {r.get('skipped') or r.get('error') or 'planned'}")
            continue
        peak = "-" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.3f}"
        print(f"{r['model']:24s} {r['images_per_s']:9.1f} {r['km2_per_s']:9.2f} {peak:>9s} "
              f"{str(r['autocast']):>9s} {ratio:>6s}  {r['weights']}")
    out = {"settings": settings, "rows": rows, "quick": a.quick, "dry_run": a.dry_run}
    if a.json:
        _meta.write(a.json, _meta.stamp(out, started=started, note="dry run" if a.dry_run else None))
    else:
        print(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
