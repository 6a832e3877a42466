"""Position neutrality and extent independence, per model family, on real weights and real data.

For each model whose weights are here (Galileo-Nano, Presto; the weight-free ``spectral``
baseline beside them) and each ``position`` mode it supports (``raw``; ``neutral`` for models
with absolute in-window positions), at the family's default tiling, p = 4:

1. **Position bias** on the shared 1 km² sample (12 months, S2 + S1):
   :func:`eoembed.position.position_stats` — the share of the top-10 cosine neighbours at the
   query's in-window position against chance, and the share of PC1's (and of all) variance
   explained by the in-window position, with its noise-only expectation (G−1)/(N−1).
   Targets: hits ≤ 2× chance; PC1 share ≤ 0.10 above its noise level. The default tiling's
   seam ratio (``eoembed:seam_ratio``) is recorded beside its null (``eoembed:seam_ratio_null``:
   the same ratio on the lattice shifted half a window, where there are no seams).
2. **Extent independence**: the sample cropped by every multiple of the patch size up to one
   window (``--quick``: three crops); mean cosine of the same places' vectors on interior
   patches (all windows inside both cubes; target ≥ 0.99, identical by construction) and on
   every overlapping patch (edge windows see fewer pixels: the honest whole-cube figure). At
   p = 4 the 25 × 25-patch sample has little or no interior for windows of 12 patches or more, so
   this runs at p = 2 (50 × 50 patches) on four months (``CROP_TIMES``) to keep the cost of the
   crop runs (one per patch of a window, twice per model) bounded.
3. **Cost**: encoder tokens of the default tiling over the halo-0 tiling of the same stride
   (target ≤ 1.5), and measured embed() seconds of both (best of ``--repeat``).
4. **Few-shot** on the real labelled WorldCereal sample: balanced accuracy per spatial-block
   fold (5 folds, 160 m blocks, standardised logistic regression), raw vs neutral paired per
   fold (mean difference ± its standard deviation over folds), the spectral baseline beside.

    python benchmarks/bench_position.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE = SHARED / "data" / "worldcereal" / "worldcereal_preprocessed_inputs.nc"
TRAINING = SHARED / "data" / "worldcereal-training"
WEIGHTS = SHARED / "weights"
PATCH = 4
CROP_PATCH = 2
CROP_TIMES = [2, 5, 8, 10]
MODELS = ("galileo-nano", "presto", "spectral")


def _weights(name: str):
    return None if name == "spectral" else str(WEIGHTS / name)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=0)
    return num / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)


def crop_agreement(cube, name: str, position: str, crops: list[int], window: int) -> dict:
    """Mean cosine of the same places' vectors in the full and the cropped cube."""
    import eoembed

    cube = cube.isel(time=CROP_TIMES)
    kw = dict(weights=_weights(name), patch_size=CROP_PATCH, progress=False, position=position)
    full = eoembed.embed(cube, name, **kw).values
    interior, overlap, maxabs = [], [], 0.0
    for k in crops:
        part = eoembed.embed(cube.isel(y=slice(CROP_PATCH * k, None), x=slice(CROP_PATCH * k, None)), name,
                             **kw).values
        a, b = part, full[:, k:, k:]
        c_all = _cos(a, b)
        overlap.append(float(np.nanmean(c_all)))
        m = window  # patches whose every window lies inside both cubes
        if a.shape[1] > 2 * m and a.shape[2] > 2 * m:
            ai, bi = a[:, m:-m, m:-m], b[:, m:-m, m:-m]
            interior.append(float(np.nanmean(_cos(ai, bi))))
            maxabs = max(maxabs, float(np.nanmax(np.abs(ai - bi))))
    return {"crops_patches": crops, "interior_mean_cosine": float(np.mean(interior)) if interior else None,
            "interior_min_of_means": float(np.min(interior)) if interior else None,
            "interior_max_abs_diff": maxabs if interior else None,
            "all_overlap_mean_cosine": float(np.mean(overlap)), "per_crop_all_overlap": [round(v, 4) for v in overlap]}


def cost(cube, name: str, position: str, repeat: int) -> dict:
    """Default tiling vs halo-0 tiling of the same stride: tokens per output patch and measured time."""
    import eoembed

    kw = dict(weights=_weights(name), patch_size=PATCH, progress=False, position=position)
    d = eoembed.embed_cost(cube, name, patch_size=PATCH)
    core = d["tile_size"] - 2 * d["halo"]
    h0 = eoembed.embed_cost(cube, name, patch_size=PATCH, tile_size=core, halo=0, blend=False)
    t_def, t_h0 = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        eoembed.embed(cube, name, **kw)
        t_def.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        eoembed.embed(cube, name, tile_size=core, halo=0, blend=False, **kw)
        t_h0.append(time.perf_counter() - t0)
    return {"default_tiling": [d["tile_size"], d["halo"], d["blend"]], "tokens_default": d["tokens"],
            "tokens_halo0": h0["tokens"], "tokens_ratio": d["tokens"] / h0["tokens"],
            "tokens_per_patch_ratio_model": d["halo_overhead"],
            "seconds_default": min(t_def), "seconds_halo0": min(t_h0), "time_ratio": min(t_def) / min(t_h0)}


def fewshot_folds(emb, labels, n_splits: int = 5) -> list[float]:
    """Balanced accuracy of each spatial-block fold (same folds for every feature set of one cube)."""
    from eoembed.classify import fewshot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fewshot(emb, labels, estimator="logistic", block_size=160.0, n_splits=n_splits)
        return list(clf.cv_report(spatial=True).fold_balanced_accuracy)


def run(quick: bool = False, repeat: int = 2, models=MODELS) -> dict:
    import eoembed
    from eoembed.data import open_cube, training_cube, training_labels
    from eoembed.grid import grid_of
    from eoembed.position import position_stats

    warnings.simplefilter("ignore", UserWarning)
    sample = open_cube(SAMPLE)
    tcube = training_cube(TRAINING, composite="seasonal" if quick else "monthly")
    labels = training_labels(TRAINING)
    spectral_train = eoembed.embed(tcube, "spectral", patch_size=PATCH, progress=False)
    # classes with fewer labelled patches than folds cannot be cross-validated
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_fewshot_worldcereal import drop_rare

    labels, kept, dropped = drop_rare(labels, spectral_train, 5)
    rows = []
    base_folds = fewshot_folds(spectral_train, labels)
    for name in models:
        if name != "spectral" and not (WEIGHTS / name).exists():
            rows.append({"model": name, "skipped": f"no weights at {WEIGHTS / name}"})
            continue
        spec = eoembed.get_model_spec(name)
        modes = ["raw", "neutral"] if spec.window_positions else ["raw"]
        folds = {}
        for position in modes:
            emb = eoembed.embed(sample, name, weights=_weights(name), patch_size=PATCH, progress=False,
                                position=position)
            core = (emb.attrs["eoembed:tile_size"] - 2 * emb.attrs["eoembed:halo"]) // PATCH
            window = emb.attrs["eoembed:tile_size"] // PATCH
            st = position_stats(emb.values, period=core, offset=grid_of(emb).patch_period()["offset"])
            if st is None:  # fewer than two patches per in-window position: no statistic on this cube
                st = dict.fromkeys(("same_position_rate", "same_position_chance", "same_position_over_chance",
                                    "pc1_position_share", "pc1_position_share_null", "total_position_share"),
                                   float("nan"))
            crops = [1, 3, window - 1] if quick else list(range(1, window + 1))
            row = {"model": name, "position": position, "seam_ratio": emb.attrs.get("eoembed:seam_ratio"),
                   # the same ratio on the lattice shifted half a window (no seams there): what 'no seam' reads
                   "seam_ratio_null": emb.attrs.get("eoembed:seam_ratio_null"),
                   **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in st.items()},
                   "crop": crop_agreement(sample, name, position, crops, window),
                   "cost": cost(sample, name, position, repeat)}
            if name == "spectral":
                folds[position] = base_folds
            else:
                train_emb = eoembed.embed(tcube, name, weights=_weights(name), patch_size=PATCH, progress=False,
                                          position=position)
                folds[position] = fewshot_folds(train_emb, labels)
            f = np.asarray(folds[position])
            row["fewshot_balanced_accuracy_folds"] = [round(v, 4) for v in f]
            row["fewshot_balanced_accuracy"] = round(float(f.mean()), 4)
            row["fewshot_fold_std"] = round(float(f.std(ddof=1)), 4)
            d = f - np.asarray(base_folds)
            row["fewshot_minus_spectral_mean"] = round(float(d.mean()), 4)
            row["fewshot_minus_spectral_std"] = round(float(d.std(ddof=1)), 4)
            rows.append(row)
        if "neutral" in folds:
            d = np.asarray(folds["neutral"]) - np.asarray(folds["raw"])
            rows[-1]["fewshot_neutral_minus_raw_mean"] = round(float(d.mean()), 4)
            rows[-1]["fewshot_neutral_minus_raw_std"] = round(float(d.std(ddof=1)), 4)
    return {"quick": quick, "patch_size": PATCH, "sample": dict(sample.sizes),
            "training_cube": dict(tcube.sizes), "classes": kept, "dropped_classes": dropped,
            "spectral_fewshot_folds": [round(v, 4) for v in base_folds], "rows": rows}


def table(res: dict) -> str:
    lines = [f"{'model':14} {'position':8} {'hits/chance':>11} {'PC1 pos':>8} {'(noise)':>8} {'seam':>6} "
             f"{'(null)':>6} {'crop cos int.':>13} {'crop cos all':>12} {'tokens/h0':>9} {'time/h0':>8} {'few-shot bacc':>16}"]
    for r in res["rows"]:
        if "skipped" in r:
            lines.append(f"{r['model']:14} skipped: {r['skipped']}")
            continue
        c = r["crop"]
        ic = c["interior_mean_cosine"]
        lines.append(
            f"{r['model']:14} {r['position']:8} {r['same_position_over_chance']:11.2f} {r['pc1_position_share']:8.3f} "
            f"{r['pc1_position_share_null']:8.3f} {r['seam_ratio'] or float('nan'):6.2f} "
            f"{r.get('seam_ratio_null') or float('nan'):6.2f} "
            f"{(ic if ic is not None else float('nan')):13.5f} {c['all_overlap_mean_cosine']:12.4f} "
            f"{r['cost']['tokens_ratio']:9.2f} {r['cost']['time_ratio']:8.2f} "
            f"{r['fewshot_balanced_accuracy']:7.3f} ± {r['fewshot_fold_std']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three crops, seasonal composites (CI smoke run)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _meta

    started = _meta.machine()
    res = run(args.quick, args.repeat, tuple(args.models.split(",")))
    if args.json:
        _meta.write(args.json, _meta.stamp(res, started=started, note="quick settings" if args.quick else None))
    print(json.dumps(res, indent=1))
    print()
    print(table(res))
    return res


if __name__ == "__main__":
    main()
