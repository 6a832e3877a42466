"""Seams and overhead of embed(), measured against references in the same run.

1. **Seams**: mean cosine distance between neighbouring patches that sit in different tile
   cores ("cross") vs in the same core ("in"), for halo 0 and the default halo. A ratio
   cross/in near 1 means tile borders are invisible in the embedding cube.
2. **Throughput**: embed() (band resolution, masks, normalization, tiling, stitching) vs a
   bare loop calling the encoder on the same pre-normalized tiles. Ratio = bare time /
   embed time (1.0 = no overhead).

Runs on the shared real sample when present, else on a synthetic cube; uses a random-weight
checkpoint in the published layout unless ``--weights`` is given (seams of real weights are
the number that matters: pass them when you have them).

    python benchmarks/bench_seams.py [--quick] [--model nano] [--weights DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import eoembed
from eoembed.testing import make_checkpoint, synthetic_cube

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/worldcereal/worldcereal_preprocessed_inputs.nc"


def seam_stats(emb, core_patches: int) -> dict:
    """Cosine distances of horizontal and vertical neighbours, split by tile-core borders."""
    v = np.moveaxis(emb.values, 0, -1).astype("float64")  # (y, x, D)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    cross, inside = [], []
    for axis in (0, 1):
        a = v[:-1] if axis == 0 else v[:, :-1]
        b = v[1:] if axis == 0 else v[:, 1:]
        d = 1 - (a * b).sum(-1)
        idx = np.arange(d.shape[axis])
        border = (idx + 1) % core_patches == 0  # pair (i, i+1) straddles a core border
        sel = np.expand_dims(border, 1 - axis)
        sel = np.broadcast_to(sel, d.shape)
        cross.append(d[sel & np.isfinite(d)])
        inside.append(d[~sel & np.isfinite(d)])
    c, i = np.concatenate(cross), np.concatenate(inside)
    return {"cross_tile": float(c.mean()), "in_tile": float(i.mean()), "ratio": float(c.mean() / i.mean()),
            "pairs": [int(c.size), int(i.size)]}


def bare_loop(cube, enc, patch_size: int, tile: int, halo: int, batch: int) -> float:
    """The reference: normalized tiles straight into the encoder, nothing else."""
    import torch
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample

    s2 = cube.sel(band=[b for b in enc.spec.modalities["sentinel2_l2a"] if b in cube.band.values])
    x = np.full((*s2.shape[2:], s2.sizes["time"], 12), np.nan, dtype="float32")
    order = list(enc.spec.modalities["sentinel2_l2a"])
    for k, b in enumerate(s2.band.values):
        x[..., order.index(b)] = s2.sel(band=b).values.transpose(1, 2, 0)
    x = np.nan_to_num(enc.normalize("sentinel2_l2a", x))
    core = tile - 2 * halo
    ny, nx = -(-x.shape[0] // core), -(-x.shape[1] // core)
    pad = np.zeros((ny * core + 2 * halo, nx * core + 2 * halo, *x.shape[2:]), dtype="float32")
    pad[halo : halo + x.shape[0], halo : halo + x.shape[1]] = x
    tiles = [pad[i * core : i * core + tile, j * core : j * core + tile] for i in range(ny) for j in range(nx)]
    t = s2.time.to_index()
    ts = np.array([[d.day, d.month - 1, d.year] for d in t])
    groups = enc.spec.token_groups["sentinel2_l2a"]
    t0 = time.perf_counter()
    for s in range(0, len(tiles), batch):
        xb = torch.from_numpy(np.stack(tiles[s : s + batch]))
        mask = torch.zeros((*xb.shape[:4], groups), dtype=torch.long)
        sample = MaskedOlmoEarthSample(timestamps=torch.from_numpy(np.broadcast_to(ts, (len(xb), *ts.shape)).copy()),
                                       sentinel2_l2a=xb, sentinel2_l2a_mask=mask)
        with torch.inference_mode():
            enc.module(sample, patch_size=patch_size, input_res=10, fast_pass=True)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for CI smoke runs")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--patch-size", type=int, default=4)
    args = ap.parse_args(argv)

    if SAMPLE.exists():
        from eoembed.data import open_cube

        cube = open_cube(SAMPLE).sel(band=["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"])
        cube = cube.isel(time=[3, 5, 7] if args.quick else [3, 4, 5, 6, 7, 8])
        if args.quick:
            cube = cube.isel(y=slice(0, 64), x=slice(0, 64))
        source = "shared WorldCereal sample (S2 only)"
    else:
        n = 64 if args.quick else 128
        cube = synthetic_cube(height=n, width=n, times=3)
        source = "synthetic"
    weights = args.weights
    if weights is None:
        spec = eoembed.get_model_spec(args.model)
        weights = make_checkpoint(Path(tempfile.mkdtemp()) / "ck", spec.version, spec.size)
    p = args.patch_size
    kw = dict(weights=weights, patch_size=p, progress=False)
    import warnings

    warnings.simplefilter("ignore", UserWarning)
    default = eoembed.embed(cube, args.model, **kw)
    tile, halo = default.attrs["eoembed:tile_size"], default.attrs["eoembed:halo"]
    core = tile - 2 * halo
    no_halo = eoembed.embed(cube, args.model, tile_size=core, halo=0, **kw)
    result = {
        "input": source, "cube": dict(cube.sizes), "model": default.attrs["eoembed:model"],
        "weights": "given" if args.weights else "random (published layout)",
        "patch_size": p, "tile_size": tile, "halo": halo,
        "seams_halo0": seam_stats(no_halo, core // p),
        "seams_default": seam_stats(default, core // p),
    }
    enc = eoembed.load_model(args.model, weights=weights)
    t0 = time.perf_counter()
    eoembed.embed(cube, args.model, **kw)
    t_embed = time.perf_counter() - t0
    t_bare = bare_loop(cube, enc, p, tile, halo, 16)
    result["throughput"] = {"embed_s": round(t_embed, 3), "bare_encoder_s": round(t_bare, 3),
                            "ratio_bare_over_embed": round(t_bare / t_embed, 3)}
    print(json.dumps(result, indent=1))
    print(f"seam ratio (cross/in-tile distance): halo 0 = {result['seams_halo0']['ratio']:.3f}, "
          f"halo {halo}px = {result['seams_default']['ratio']:.3f}")
    print(f"throughput: embed() runs at {result['throughput']['ratio_bare_over_embed']:.2f}x the bare encoder loop")
    return result


if __name__ == "__main__":
    main()
