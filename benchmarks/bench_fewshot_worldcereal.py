"""Few-shot crop-type mapping on the real labelled WorldCereal sample, honestly validated.

The cube is built from the raw extraction files the way a user would
(:func:`eoembed.data.training_cube`: 20 m → 10 m nearest, SCL cloud mask, monthly
medians, S1 in dB) and the crop-type codes come from the 2019 Flanders parcel
register (:func:`eoembed.data.training_labels`). Every model is scored with the same
estimator (eoembed's default standardised logistic regression, untuned), the same
labelled patches and the same spatial-block folds (``eoembed.classify``:
``StratifiedGroupKFold`` over square blocks plus a buffer). Rows:

* ``majority`` — always predicts the training fold's most frequent class;
* ``spectral`` — per-patch band means/stds per month (no weights);
* ``galileo-nano`` — time-pooled vector and the per-timestep vectors stacked;
* ``presto`` — per-pixel encoder, mean over the patch's pixels.

Fixed choices, made before looking at scores: 4-px (40 m) patches, each model's default
tiling and positions (what a user gets: Galileo's blended 12-patch windows on the CRS-anchored
window grid with neutral in-window positions; the 640 m footprint spans several windows), 160 m
blocks (a 640 m footprint gives a handful of blocks per fold), 5 folds, classes with fewer
labelled patches than folds dropped (they cannot be cross-validated). Models that are
not registered (their branch has not landed) or whose weights are missing are listed
as skipped, not silently left out.

    python benchmarks/bench_fewshot_worldcereal.py [--quick] [--json out.json] [--weights-dir DIR]

``--quick`` (CI smoke): seasonal instead of monthly composites, 3 folds.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "worldcereal-training"
WEIGHTS = ROOT.parent / "shared" / "weights"
PATCH = 4
BLOCK_M = 160.0


def stacked_features(pooled: xr.DataArray, per_time: xr.DataArray) -> xr.DataArray:
    """One ``(embedding, y, x)`` cube: the time-pooled vector followed by every timestep's vector."""
    from eoembed.cube import write_georef

    pt = per_time.transpose("time", "embedding", "y", "x")
    data = np.concatenate([pooled.transpose("embedding", "y", "x").values,
                           pt.values.reshape(-1, pt.sizes["y"], pt.sizes["x"])], axis=0)
    out = xr.DataArray(data, dims=("embedding", "y", "x"), name=pooled.name or "embeddings",
                       coords={"embedding": np.arange(data.shape[0]), "y": pooled["y"], "x": pooled["x"]},
                       attrs={**pooled.attrs, "eoembed:embedding_dim": int(data.shape[0]),
                              "eoembed:features": "time-pooled + per-timestep stacked"})
    return write_georef(out, pooled)


def drop_rare(labels: xr.DataArray, emb: xr.DataArray, min_patches: int) -> tuple[xr.DataArray, dict, dict]:
    """Set classes with fewer than ``min_patches`` labelled patches to nodata (0)."""
    from eoembed.classify import sample_labels

    counts = sample_labels(emb, labels)["label"].value_counts()
    keep = sorted(int(c) for c, n in counts.items() if n >= min_patches)
    dropped = {int(c): int(n) for c, n in counts.items() if n < min_patches}
    out = labels.where(labels.isin(keep), 0).astype("int32").rio.write_nodata(0)
    return out, {int(c): int(counts[c]) for c in keep}, dropped


def embed_model(cube, name: str, weights_dir: Path):
    """Feature cube for ``name`` and the seconds embedding took."""
    import eoembed

    kw = dict(patch_size=PATCH, progress=False)  # default tiling and positions
    if name != "spectral":
        kw["weights"] = str(weights_dir / name)
    t0 = time.perf_counter()
    if name == "galileo-nano":
        pooled = eoembed.embed(cube, name, **kw)
        per_time = eoembed.embed(cube, name, pool_time=False, **kw)
        emb = stacked_features(pooled, per_time)
        features = "time-pooled + per-timestep stacked"
    else:
        emb = eoembed.embed(cube, name, **kw)
        features = "band mean/std per timestep, stacked" if name == "spectral" else "time-pooled"
    return emb, features, time.perf_counter() - t0


def available(name: str, weights_dir: Path) -> str | None:
    """None if ``name`` can run here, else why not."""
    from eoembed.models import list_models

    if name not in list_models():
        return "not registered in eoembed.models"
    if name != "spectral" and not (weights_dir / name).exists():
        return f"no weights at {weights_dir / name}"
    return None


def score(emb, labels, estimator, n_splits: int) -> dict:
    from eoembed.classify import fewshot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fewshot(emb, labels, estimator=estimator, block_size=BLOCK_M, n_splits=n_splits)
        sp, rnd = clf.cv_report(spatial=True), clf.cv_report(spatial=False)
    return {"balanced_accuracy": sp.balanced_accuracy, "accuracy": sp.accuracy,
            "balanced_accuracy_random_cv": rnd.balanced_accuracy, "n_samples": sp.n_samples,
            "n_blocks": sp.n_blocks, "n_splits": sp.n_splits, "per_class_recall": sp.per_class["recall"].to_dict(),
            "fold_balanced_accuracy": [float(v) for v in sp.fold_balanced_accuracy],
            "fold_balanced_accuracy_random_cv": [float(v) for v in rnd.fold_balanced_accuracy],
            "report": sp}


def run(quick: bool = False, weights_dir: Path = WEIGHTS, models=("spectral", "galileo-nano", "presto")) -> dict:
    from sklearn.dummy import DummyClassifier

    from eoembed.data import training_cube, training_labels

    n_splits = 3 if quick else 5
    t0 = time.perf_counter()
    cube = training_cube(DATA, composite="seasonal" if quick else "monthly")
    labels = training_labels(DATA)
    build_s = time.perf_counter() - t0
    rows, skipped = [], {}
    base_emb, _, _ = embed_model(cube, "spectral", weights_dir)
    labels, kept, dropped = drop_rare(labels, base_emb, n_splits)
    maj = score(base_emb, labels, DummyClassifier(strategy="most_frequent"), n_splits)
    rows.append({"model": "majority", "features": "most frequent class", "dim": 0, "embed_s": 0.0,
                 **{k: v for k, v in maj.items() if k != "report"}})
    for name in models:
        why = available(name, weights_dir)
        if why:
            skipped[name] = why
            continue
        emb, features, secs = embed_model(cube, name, weights_dir)
        res = score(emb, labels, "logistic", n_splits)
        rows.append({"model": name, "features": features, "dim": int(emb.sizes["embedding"]),
                     "embed_s": secs, **{k: v for k, v in res.items() if k != "report"}})
    spec = next((r for r in rows if r["model"] == "spectral"), None)
    for r in rows:  # paired per-fold differences against the spectral baseline (same folds, same labels)
        if spec is not None and r["model"] != "spectral":
            d = np.subtract(r["fold_balanced_accuracy"], spec["fold_balanced_accuracy"])
            r["vs_spectral_fold_diff"] = [float(v) for v in d]
            r["vs_spectral_diff_mean"] = float(d.mean())
            r["vs_spectral_diff_std"] = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"quick": quick, "cube": {k: int(v) for k, v in cube.sizes.items()}, "build_cube_s": build_s,
            "patch_size": PATCH, "block_size_m": BLOCK_M, "n_splits": n_splits, "classes": kept,
            "dropped_classes": dropped, "rows": rows, "skipped": skipped}


def table(result: dict) -> str:
    maj = next(r for r in result["rows"] if r["model"] == "majority")
    spec = next((r for r in result["rows"] if r["model"] == "spectral"), None)
    head = (f"{'model':<14}{'features':<38}{'dim':>6}{'bal.acc spatial':>17}{'bal.acc random':>16}"
            f"{'accuracy':>10}{'majority':>10}{'spectral':>10}{'embed s':>9}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['model']:<14}{r['features']:<38}{r['dim']:>6}{r['balanced_accuracy']:>17.3f}"
                     f"{r['balanced_accuracy_random_cv']:>16.3f}{r['accuracy']:>10.3f}{maj['balanced_accuracy']:>10.3f}"
                     f"{(spec['balanced_accuracy'] if spec else float('nan')):>10.3f}{r['embed_s']:>9.1f}")
    lines.append(f"majority and spectral columns: their balanced accuracy under the same spatial folds; "
                 f"majority-class rate (accuracy of always guessing the most frequent class) {maj['accuracy']:.3f}")
    for name, why in result["skipped"].items():
        lines.append(f"{name:<14}skipped: {why}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seasonal composites, 3 folds (CI smoke run)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--weights-dir", default=str(WEIGHTS), help="folder holding <model>/ weight folders")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"labelled sample not found at {DATA}")
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _meta

    started = _meta.machine()
    res = run(args.quick, Path(args.weights_dir))
    print(f"cube {res['cube']} built in {res['build_cube_s']:.1f} s; {args.quick and 'seasonal' or 'monthly'} "
          f"composites; {PATCH}-px patches; spatial-block CV: {res['n_splits']} folds, {BLOCK_M:g} m blocks")
    print(f"classes (labelled patches): {res['classes']}; dropped (fewer patches than folds): "
          f"{res['dropped_classes']}")
    print(table(res))
    if args.json:
        _meta.write(args.json, _meta.stamp(res, started=started,
                                           note="quick settings (CI smoke)" if args.quick else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
