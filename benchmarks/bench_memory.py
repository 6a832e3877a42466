"""Peak memory of a lazy embedding run does not grow with the area.

Embeds a lazy (dask) cube of side N and of side 2N (4× the area) and streams each to a
Zarr store with :func:`eoembed.io.to_zarr`, each size in its own subprocess, and reports
peak RSS (``ru_maxrss``) and its ratio. The input is generated block by block (never held
whole), as a real lazy read from COGs or Zarr would be. Also reports the RSS before the
run starts (Python, torch, the model), so the growth itself is visible.

    python benchmarks/bench_memory.py [--size 256] [--model nano] [--weights DIR] [--times 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, tempfile, warnings
warnings.simplefilter("ignore")
import numpy as np, dask, dask.array as da, xarray as xr, pandas as pd
from affine import Affine
from rioxarray.rioxarray import affine_to_coords
import eoembed
from eoembed.io import to_zarr
from eoembed.sensors import S2_L2A_BANDS as S2_ALL

size, times, model, weights, out, chunk = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
weights = None if weights == "-" else weights
arr = da.random.default_rng(0).uniform(300, 4000, size=(times, len(S2_ALL), size, size),
                                       chunks=(times, len(S2_ALL), chunk, chunk)).astype("float32")
t = Affine(10, 0, 600000, 0, -10, 5600000)
c = affine_to_coords(t, size, size)
cube = xr.DataArray(arr, dims=("time", "band", "y", "x"),
                    coords={"time": pd.date_range("2021-04-01", periods=times, freq="MS"), "band": list(S2_ALL), **c})
cube = cube.rio.write_crs("EPSG:32631").rio.write_transform(t)
eoembed.load_model(model, weights=weights)  # the fixed part: interpreter, torch, the model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
emb = eoembed.embed(cube, model, weights=weights, tile_size=64, halo=0)
info = to_zarr(emb, out, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "regions": info["regions"], "rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024}))
"""


def run(size: int, times: int, model: str, weights: str | None, chunk: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "emb.zarr"
    res = subprocess.run([sys.executable, "-c", CHILD, str(size), str(times), model, weights or "-", str(out),
                          str(chunk)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="side of the small cube in pixels (the large is 2×)")
    ap.add_argument("--times", type=int, default=2)
    ap.add_argument("--model", default="nano")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--chunk", type=int, default=128, help="input chunk side in pixels")
    ap.add_argument("--json", default=None, help="write the results (with run date, machine, command) here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _meta

    started = _meta.machine()
    weights = args.weights
    if weights is None and eoembed_needs_weights(args.model):
        from eoembed.testing import make_checkpoint
        import eoembed

        spec = eoembed.get_model_spec(args.model)
        weights = str(make_checkpoint(Path(tempfile.mkdtemp()) / "ck", spec.version, spec.size))
    small = run(args.size, args.times, args.model, weights, args.chunk)
    large = run(2 * args.size, args.times, args.model, weights, args.chunk)
    result = {"model": args.model, "weights": "given" if args.weights else "random (published layout)",
              "size_px": args.size, "times": args.times, "chunk": args.chunk, "small": small, "large": large,
              "peak_rss_ratio_4x_area": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
              "growth_ratio_4x_area": round((large["peak_rss_mib"] - large["rss_before_mib"])
                                            / max(small["peak_rss_mib"] - small["rss_before_mib"], 1e-9), 3)}
    print(json.dumps(result, indent=1))
    print(f"peak RSS: {small['peak_rss_mib']:.0f} MiB at {args.size}² px, {large['peak_rss_mib']:.0f} MiB at "
          f"{2 * args.size}² px (4× area): ratio {result['peak_rss_ratio_4x_area']:.2f} "
          f"(growth above the loaded model: {result['growth_ratio_4x_area']:.2f}×)")
    if args.json:
        _meta.write(args.json, _meta.stamp(result, started=started))
    return result


def eoembed_needs_weights(model: str) -> bool:
    import eoembed

    return eoembed.get_model_spec(model).needs_weights


if __name__ == "__main__":
    main()
