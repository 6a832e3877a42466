"""Clusters, change, regression and trajectories: memory at scale and figures on the real sample.

Two parts.

**Scale** (``[scale]``): each analysis (``cluster``, ``change``, ``regress`` +
``predict_map``, ``trajectory``) runs in its own subprocess on a dask-backed synthetic
embedding cube generated block by block (never held whole), and reports the cube's
size and the process's peak RSS (``ru_maxrss``) next to the RSS after imports. Two
sizes: 4× the area of the shared 1 km² sample (``data/worldcereal``, 100 × 100 px at
10 m) at one 128-d vector per 10 m pixel — 200 × 200 vectors — and a large cube
(``--large`` patches a side, 64-d, about 1 GiB per cube) to show that peak memory
follows the chunk size, not the cube.

**Real** (``[real]``): the labelled WorldCereal extraction (``data/worldcereal-training``,
640 m × 640 m, monthly composites built by :func:`eoembed.data.training_cube`) embedded
by each model (``spectral``, ``galileo-nano``, ``presto``; real weights from
``shared/weights``), 4-px (40 m) patches, each model's default tiling and positions (as
tutorials 7-9 embed it, so the clustering numbers are theirs), the time-pooled vector. Reported per model:

* clustering: ``k`` chosen by silhouette over 2..12 (every score), and the adjusted Rand
  index between clusters and the 2019 crop-type labels on labelled patches, both for the
  chosen ``k`` and for ``k`` = number of crop classes (same for every model);
* regression of Landsat 8 surface temperature (``L8_L2-ST_*.nc``, kelvin): per-pixel
  mean of the clear observations (QA_PIXEL bit 6 "clear" set, bits 0–5 fill/dilated
  cloud/cirrus/cloud/shadow/snow unset, ST ≠ 0) from 2019-04-01 to 2019-09-30, pixels
  with at least 3 clear observations, area-mean on the patch grid; ridge (default
  ``regress`` estimator), spatial-block CV with 160 m blocks and 5 folds; R² and RMSE
  mean ± std over folds for the model, the predict-the-mean baseline and the spectral
  baseline (same estimator, same folds).

    python benchmarks/bench_analyses.py [--quick] [--json out.json] [--skip-real] [--skip-scale]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "worldcereal-training"
WEIGHTS = ROOT.parent / "shared" / "weights"
PATCH, BLOCK_M = 4, 160.0
ST_SEASON = ("2019-04-01", "2019-09-30")
sys.path.insert(0, str(ROOT))  # this checkout's eoembed, whatever is installed

CHILD = r"""
import json, resource, sys, warnings
warnings.simplefilter("ignore")
import numpy as np, dask.array as da, xarray as xr, pandas as pd
from affine import Affine
import eoembed
from eoembed.analysis import change, cluster, regress, trajectory

what, side, d, chunk, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
protos = np.random.default_rng(0).standard_normal((4, d)).astype("float32")

def block(seed_off, t, y0, x0, ny, nx):
    rng = np.random.default_rng([seed_off, t, y0, x0])
    cls = ((np.arange(y0, y0 + ny)[:, None] // 37) + (np.arange(x0, x0 + nx)[None] // 41)) % 4
    v = protos[cls] + 0.4 * rng.standard_normal((ny, nx, d)).astype("float32")
    return np.moveaxis(v, -1, 0)

def make(seed_off, nt=None):
    def fn(block_info=None):
        loc = block_info[None]["array-location"]
        if nt:
            (t0, t1), _, (y0, y1), (x0, x1) = loc
            return np.stack([block(seed_off, t, y0, x0, y1 - y0, x1 - x0) for t in range(t0, t1)])
        _, (y0, y1), (x0, x1) = loc
        return block(seed_off, 0, y0, x0, y1 - y0, x1 - x0)
    shape = ((nt,) if nt else ()) + (d, side, side)
    chunks = ((1,) if nt else ()) + (d, chunk, chunk)
    arr = da.map_blocks(fn, dtype="float32", chunks=da.core.normalize_chunks(chunks, shape))
    t = Affine(10, 0, 600000, 0, -10, 5600000)
    coords = {"embedding": np.arange(d), "y": 5600000 - 10 * (np.arange(side) + 0.5),
              "x": 600000 + 10 * (np.arange(side) + 0.5)}
    dims = ("embedding", "y", "x")
    if nt:
        coords["time"] = pd.date_range("2021-01-01", periods=nt, freq="MS")
        dims = ("time",) + dims
    emb = xr.DataArray(arr, dims=dims, coords=coords, name="embeddings",
                       attrs={"eoembed:model": "synthetic", "eoembed:embedding_dim": d, "eoembed:patch_size": 1})
    return emb.rio.write_crs("EPSG:32631").rio.write_transform(t)

emb = make(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
if what == "cluster":
    cm = cluster(emb, k_range=(2, 8), sample=20000)
    out = {"k": int(cm.attrs["eoembed:cluster_k"]), "lazy": cm.chunks is not None,
           "counts": np.bincount(cm.data.ravel().compute() + 1).tolist()[:10]}
elif what == "change":
    res = change(emb, make(2))
    out = {"threshold": res.threshold, "changed": int(res.changed.sum())}
elif what == "regress":
    rng = np.random.default_rng(3)
    r, c = rng.integers(0, side, 3000), rng.integers(0, side, 3000)
    w = rng.standard_normal(d)
    vec = emb.isel(y=xr.DataArray(r, dims="s"), x=xr.DataArray(c, dims="s")).values
    pts = pd.DataFrame({"x": emb.x.values[c], "y": emb.y.values[r], "value": vec.T @ w})
    res = regress(emb, pts, block_size=side * 10 / 6)
    pm = res.predict_map()["prediction"]
    out = {"r2": float(res.folds["r2"].mean()), "lazy": pm.chunks is not None,
           "map_mean": float(pm.mean().compute())}
elif what == "trajectory":
    e = make(4, nt=times)
    df = trajectory(e, (600000 + 10 * side / 2, 5600000 - 10 * side / 3))
    out = {"timesteps": len(df), "min_similarity": float(df["similarity_to_first"].min())}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
nt = times if what == "trajectory" else 1
ncubes = 2 if what == "change" else 1
print(json.dumps({"analysis": what, "side": side, "dim": d, "chunk": chunk,
                  "cube_mib": ncubes * nt * d * side * side * 4 / 2**20, "rss_after_import_mib": before / 1024,
                  "peak_rss_mib": peak / 1024, **out}))
"""


def scale_part(sizes: list[tuple[str, int, int, int]], times: int) -> list[dict]:
    rows = []
    for label, side, d, chunk in sizes:
        for what in ("cluster", "change", "regress", "trajectory"):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", CHILD, what, str(side), str(d), str(chunk), str(times)],
                                 capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                raise RuntimeError(f"{what} {label} failed:\n{res.stderr[-3000:]}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row.update(size=label, seconds=time.perf_counter() - t0)
            rows.append(row)
            print(f"[scale] {label:<10} {what:<11} cube {row['cube_mib']:8.1f} MiB  peak RSS {row['peak_rss_mib']:7.1f} "
                  f"MiB (after imports {row['rss_after_import_mib']:6.1f})  {row['seconds']:6.1f} s", flush=True)
    return rows


# ----------------------------------------------------------------------------- real sample
def st_target(folder: Path):
    """Mean clear-sky Landsat 8 surface temperature (K) over the 2019 season, >= 3 clear observations
    (:func:`eoembed.data.training_surface_temperature`), and a summary of it."""
    from eoembed.data import training_surface_temperature

    target = training_surface_temperature(folder, start=ST_SEASON[0], end=ST_SEASON[1], min_clear=3)
    info = {"file": Path(target.attrs["source"]).name, "acquisitions_in_season": target.attrs["eoembed:acquisitions"],
            "clear_obs_per_pixel_median": target.attrs["eoembed:clear_obs_median"],
            "pixels_valid": int(target.notnull().sum()), "mean_K": float(target.mean()), "std_K": float(target.std())}
    return target, info


def real_part(quick: bool, models=("spectral", "galileo-nano", "presto")) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from eoembed.analysis import cluster, regress
    from eoembed.classify import sample_labels
    from eoembed.data import training_cube, training_labels

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_fewshot_worldcereal import available

    import eoembed

    cube = training_cube(DATA, composite="seasonal" if quick else "monthly")
    labels = training_labels(DATA)
    target, tinfo = st_target(DATA)
    print(f"[real] cube {dict(cube.sizes)}; target {tinfo}", flush=True)
    kw = dict(patch_size=PATCH, progress=False)   # each model's default tiling and positions, as in tutorials 7-9
    embs, skipped = {}, {}
    for name in models:
        why = available(name, WEIGHTS)
        if why:
            skipped[name] = why
            continue
        t0 = time.perf_counter()
        embs[name] = eoembed.embed(cube, name, **({} if name == "spectral" else {"weights": str(WEIGHTS / name)}),
                                   **kw).compute()
        print(f"[real] embedded {name} in {time.perf_counter() - t0:.1f} s: {dict(embs[name].sizes)}", flush=True)
    lab = sample_labels(embs["spectral"], labels)
    n_classes = int(lab["label"].nunique())
    rows = []
    for name, emb in embs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm = cluster(emb, k_range=(2, 12), seed=0)
            cm_fixed = cluster(emb, n_classes, seed=0)
            reg = regress(emb, target, estimator="ridge", block_size=BLOCK_M, n_splits=3 if quick else 5,
                          baseline_cube=embs["spectral"], units="K")
        c = cm.values[lab["row"], lab["col"]]
        cf = cm_fixed.values[lab["row"], lab["col"]]
        ok = c >= 0
        s = reg.summary()
        row = {
            "model": name, "dim": int(emb.sizes["embedding"]),
            "k_chosen": int(cm.attrs["eoembed:cluster_k"]),
            "silhouette": dict(zip(cm.attrs["eoembed:cluster_k_candidates"], cm.attrs["eoembed:cluster_scores"])),
            "ari_chosen_k": float(adjusted_rand_score(lab["label"].astype(str)[ok], c[ok])),
            "ari_k_classes": float(adjusted_rand_score(lab["label"].astype(str)[cf >= 0], cf[cf >= 0])),
            "n_regression_patches": int(len(reg.y)), "n_folds": int(len(reg.folds)),
            **{f"{col}_{who.split()[0]}": float(s.loc[who, col]) for who in s.index for col in s.columns},
        }
        rows.append(row)
        print(f"[real] {name}: k={row['k_chosen']} ARI {row['ari_chosen_k']:.3f} (k={n_classes}: "
              f"{row['ari_k_classes']:.3f}); ST pooled out-of-fold R² {row['r2_model']:+.3f} "
              f"[{row['r2_low_model']:+.3f}, {row['r2_high_model']:+.3f}] RMSE {row['rmse_model']:.3f} K | "
              f"mean RMSE {row['rmse_mean']:.3f} | spectral R² {row['r2_spectral']:+.3f} RMSE "
              f"{row['rmse_spectral']:.3f} | {reg.compare('mean')}", flush=True)
        row["verdict_vs_mean"] = reg.compare("mean").to_dict()
        row["verdict_vs_spectral"] = reg.compare("spectral").to_dict()
    return {"cube": {k: int(v) for k, v in cube.sizes.items()}, "target": tinfo, "n_crop_classes": n_classes,
            "n_labelled_patches": int(len(lab)), "rows": rows, "skipped": skipped}


def _r2(r: dict, who: str) -> str:
    """Pooled out-of-fold R² with its block-bootstrap interval (results before it: per-fold mean ± SD, marked)."""
    if f"r2_{who}" in r:
        return f"{r[f'r2_{who}']:+.3f} [{r[f'r2_low_{who}']:+.3f}, {r[f'r2_high_{who}']:+.3f}]"
    return f"{r[f'r2_mean_{who}']:+.3f}±{r[f'r2_std_{who}']:.3f} (per-fold)"


def table(real: dict) -> str:
    head = (f"{'model':<14}{'k':>3}{'ARI k*':>8}{'ARI k=cls':>10}  {'R² model':<22}{'RMSE K':>8}  {'R² mean':<22}"
            f"{'RMSE mean':>10}  {'R² spectral':<22}{'RMSE spec':>10}")
    lines = [head, "-" * len(head)]
    for r in real["rows"]:
        rm = {w: r.get(f"rmse_{w}", r.get(f"rmse_mean_{w}")) for w in ("model", "mean", "spectral")}
        lines.append(f"{r['model']:<14}{r['k_chosen']:>3}{r['ari_chosen_k']:>8.3f}{r['ari_k_classes']:>10.3f}  "
                     f"{_r2(r, 'model'):<22}{rm['model']:>8.3f}  {_r2(r, 'mean'):<22}{rm['mean']:>10.3f}  "
                     f"{_r2(r, 'spectral'):<22}{rm['spectral']:>10.3f}")
    for name, why in real["skipped"].items():
        lines.append(f"{name:<14}skipped: {why}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small large-cube, seasonal composites, 3 folds")
    ap.add_argument("--large", type=int, default=2048, help="side (patches) of the large 64-d scale cube")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _meta

    started = _meta.machine()
    result = {"quick": args.quick}
    if not args.skip_scale:
        large = 512 if args.quick else args.large
        result["scale"] = scale_part([("4x-sample", 200, 128, 100), ("large", large, 64, 256)], times=12)
    if not args.skip_real:
        if not DATA.exists():
            print(f"labelled sample not found at {DATA}; [real] skipped")
        else:
            result["real"] = real_part(args.quick)
            print(table(result["real"]))
    if args.json:
        _meta.write(args.json, _meta.stamp(result, started=started, note="quick settings" if args.quick else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
