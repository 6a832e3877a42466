"""Fill the benchmark figures in ``docs/*.md`` from the committed results in ``benchmarks/results/``.

A doc marks a generated block with an opening and a closing comment::

    <!-- bench:fewshot_worldcereal:table -->
    ...generated text, never edited by hand...
    <!-- /bench -->

``fewshot_worldcereal`` names ``benchmarks/results/bench_fewshot_worldcereal.json`` and
``table`` the renderer (a function in :data:`RENDERERS`) that turns that JSON into the block's
text (``<!-- bench:NAME -->`` without a part means ``summary``); every result file also has a
``run`` part (date, machine, load, command). So each
measured number is typed once, by the benchmark, and a doc cannot disagree with its result.

    python scripts/render_docs.py            # rewrite the blocks in place
    python scripts/render_docs.py --check    # exit 1 if a doc differs from what its JSON renders

Strict where a result exists: an unknown part, an unclosed block or a block that differs
(``--check``) is an error. A block whose JSON is not committed yet is left as it is and listed
as *pending* (it becomes strict the moment its JSON lands).

Standard library only, but for the verdicts' t-interval, which comes from :mod:`eoembed.stats` (the one
implementation), so the unit test that runs ``--check`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPEN = re.compile(r"<!-- bench:(?P<name>[A-Za-z0-9_.-]+)(?::(?P<part>[A-Za-z0-9_-]+))? -->")
CLOSE = "<!-- /bench -->"

#: ``(name, part) -> render(result) -> markdown``; ``name`` is the JSON's stem without ``bench_``.
RENDERERS: dict[tuple[str, str], Callable[[dict], str]] = {}


class RenderError(Exception):
    """A doc's markers or a result file cannot be rendered (what is wrong, where, how to fix)."""


def renderer(name: str, part: str) -> Callable:
    """Register ``fn`` as the renderer of ``<!-- bench:name:part -->`` blocks."""

    def deco(fn):
        RENDERERS[(name, part)] = fn
        return fn

    return deco


# ---------------------------------------------------------------- wording helpers

def f3(v: float, nd: int = 3) -> str:
    """``nd`` decimals with a real minus sign."""
    return f"{v:.{nd}f}".replace("-", "−")


def signed(v: float, nd: int = 3) -> str:
    return ("+" if v >= 0 else "−") + f"{abs(v):.{nd}f}"


def versus(mean: float, std: float, n: int) -> str:
    """The one verdict rule (eoembed.stats.compare) from a paired difference's mean, SD (ddof=1) and fold count:
    its 95 % t-interval and, only when the interval excludes 0, a direction."""
    if str(ROOT) not in sys.path:  # this checkout's eoembed: the docs it renders are this checkout's
        sys.path.insert(0, str(ROOT))
    from eoembed.stats import interval_from_summary  # the one t-interval (eoembed.stats.interval's)

    iv = interval_from_summary(mean, std, n, level=0.95)
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return "not estimable"
    lo, hi = iv.low, iv.high
    what = "better" if lo > 0 else "worse" if hi < 0 else "no difference detectable"
    return f"95 % t-interval [{signed(lo)}, {signed(hi)}] over {n} paired folds: {what}"


def run_line(res: dict) -> str:
    """One sentence: when, where and how a result was measured."""
    run = res.get("run")
    if not run:
        raise RenderError("result has no 'run' block (date, machine, command); rerun the benchmark with --json")
    m = run.get("machine", {})
    bits = [f"{m['cores']} CPU cores" if m.get("cores") else None,
            f"{m['memory_gib']:g} GiB RAM" if m.get("memory_gib") else None,
            f"GPU {m['gpu']}" if m.get("gpu") else "no GPU",
            f"torch {m['torch']}" if m.get("torch") else None]
    load = m.get("load_avg_1_5_15")
    end = run.get("load_avg_at_end")
    if load:
        bits.append(f"load average {load[0]:.1f} at the start" + (f", {end[0]:.1f} at the end" if end else "")
                    + " (shared machine: times are pessimistic)")
    text = f"Measured {run['date']} on {', '.join(b for b in bits if b)}: `{run['command']}`."
    if run.get("note"):
        text += f" {run['note']}"
    return text


def table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _mean_std(vals: list[float]) -> tuple[float, float]:
    n = len(vals)
    m = sum(vals) / n
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    return m, s


# ---------------------------------------------------------------- few-shot crop types

FEWSHOT_LABEL = {"majority": "majority class", "spectral": "`spectral` (band mean/std per month)",
                 "galileo-nano": "`galileo-nano` (time-pooled + per-timestep, stacked)", "presto": "`presto`"}


@renderer("fewshot_worldcereal", "table")
def fewshot_table(res: dict) -> str:
    rows = []
    for r in res["rows"]:
        folds = r.get("fold_balanced_accuracy") or []
        spread = f"{f3(min(folds))}–{f3(max(folds))}" if folds else "–"
        diff = (f"{signed(r['vs_spectral_diff_mean'])} ± {r['vs_spectral_diff_std']:.3f}"
                if "vs_spectral_diff_mean" in r else "–")
        rows.append([FEWSHOT_LABEL.get(r["model"], f"`{r['model']}`"), f3(r["balanced_accuracy"]), spread, diff,
                     f3(r["balanced_accuracy_random_cv"]),
                     "–" if r["model"] == "majority" else f"{r['embed_s']:.1f} s"])
    for name, why in res.get("skipped", {}).items():
        rows.append([f"`{name}`", f"skipped: {why}", "", "", "", ""])
    return table(["model", "spatial-block CV (pooled)", "per fold", "− spectral, paired per fold (mean ± std)",
                  "random CV", "embed time"], rows)


@renderer("fewshot_worldcereal", "setup")
def fewshot_setup(res: dict) -> str:
    c = res["cube"]
    n = sum(res["classes"].values())
    dropped = res.get("dropped_classes") or {}
    drop = (f"; classes with fewer labelled patches than folds dropped ({len(dropped)} classes, "
            f"{sum(dropped.values())} patches)" if dropped else "")
    comp = "seasonal" if res.get("quick") else "monthly"
    return (f"Real labels in `../shared/data/worldcereal-training/` (2019 Flanders parcel register), "
            f"{c['time']} {comp} composites of S2 + S1, {res['patch_size'] * 10} m patches; {n} labelled patches "
            f"in {len(res['classes'])} classes{drop}; each model's default tiling and positions; untuned "
            f"logistic regression; balanced accuracy over {res['n_splits']} spatial-block folds "
            f"({res['block_size_m']:g} m blocks), per fold and pooled.")


@renderer("fewshot_worldcereal", "summary")
def fewshot_summary(res: dict) -> str:
    rows = {r["model"]: r for r in res["rows"]}
    spec = rows.get("spectral")
    parts = []
    n = int(res["n_splits"])
    verdicts = {}
    for name, r in rows.items():
        if name in ("spectral", "majority") or "vs_spectral_diff_mean" not in r:
            continue
        k = len(r.get("vs_spectral_fold_diff") or []) or n
        verdicts[name] = versus(r["vs_spectral_diff_mean"], r["vs_spectral_diff_std"], k)
        parts.append(f"`{name}` {signed(r['vs_spectral_diff_mean'])} ({verdicts[name]})")
    beats = [name for name, v in verdicts.items() if v.endswith(": better")]
    head = ("**No pretrained model beats the spectral baseline here** (the one verdict rule, `eoembed.stats.compare`). "
            if not beats else f"**{', '.join(f'`{b}`' for b in beats)} beat the spectral baseline** (the one "
                              f"verdict rule, `eoembed.stats.compare`). ")
    text = head + ("Paired per-fold differences in balanced accuracy against `spectral` (mean of the per-fold "
                   "differences, same folds, with its 95 % t-interval): " + "; ".join(parts) + ".")
    if spec and spec.get("fold_balanced_accuracy"):
        fb = spec["fold_balanced_accuracy"]
        text += (f" The folds disagree a lot (`spectral` per fold {f3(min(fb))}–{f3(max(fb))}), so one split's "
                 f"ranking means little.")
    gaps = [(n, r["balanced_accuracy_random_cv"] - r["balanced_accuracy"]) for n, r in rows.items()
            if n != "majority"]
    if gaps:
        n, g = max(gaps, key=lambda t: t[1])
        text += (f" Random CV is optimistic (up to {signed(g)} for `{n}`): neighbouring patches of one field "
                 f"leak across its folds.")
    return text


# ---------------------------------------------------------------- position (tiling-and-position.md)

def _pos_rows(res: dict) -> list[dict]:
    return [r for r in res["rows"] if "skipped" not in r]


def _seam(r: dict) -> str:
    """The seam ratio beside its null (the same ratio on the lattice shifted half a window)."""
    if r.get("seam_ratio_null") is None:
        raise RenderError(f"bench_position result lacks seam_ratio_null for {r['model']} {r['position']} (recorded "
                          "since the null existed): rerun benchmarks/bench_position.py")
    return f"{r['seam_ratio']:.2f} ({r['seam_ratio_null']:.2f})"


def _vs_null(r: dict) -> str:
    """How a seam ratio reads against its null: the same ratio on the lattice shifted half a window (no seams)."""
    what = "above" if r["seam_ratio"] > r["seam_ratio_null"] else "not above"
    return f"{what} its null of {r['seam_ratio_null']:.2f} (the same ratio on the lattice shifted half a window)"


@renderer("position", "table")
def position_table(res: dict) -> str:
    label = {("galileo-nano", "raw"): "raw", ("galileo-nano", "neutral"): "neutral (default)",
             ("presto", "raw"): "raw (per pixel)", ("spectral", "raw"): "raw (no weights)"}
    rows = []
    for r in _pos_rows(res):
        c = r["crop"]
        interior = ("–" if c["interior_mean_cosine"] is None
                    else f"{c['interior_mean_cosine']:.6f} ({c['interior_max_abs_diff']:g})")
        rows.append([f"`{r['model']}`", label.get((r["model"], r["position"]), r["position"]),
                     f"{r['same_position_over_chance']:.2f}×",
                     f"{r['pc1_position_share']:.3f} ({r['pc1_position_share_null']:.3f})",
                     _seam(r), interior, f"{c['all_overlap_mean_cosine']:.4f}",
                     f"{r['cost']['tokens_ratio']:.2f}",
                     f"{r['fewshot_balanced_accuracy']:.3f} ± {r['fewshot_fold_std']:.3f}"])
    return table(["model", "positions", "top-10 hits at own position / chance",
                  "PC1 share explained by position (noise level)", "seam ratio (null: lattice shifted half a window)",
                  "crop: interior cosine (max abs diff)", "crop: all overlapping patches", "tokens / halo-0",
                  "few-shot balanced accuracy (mean ± fold std)"], rows)


@renderer("position", "summary")
def position_summary(res: dict) -> str:
    rows = {(r["model"], r["position"]): r for r in _pos_rows(res)}
    raw, neu = rows.get(("galileo-nano", "raw")), rows.get(("galileo-nano", "neutral"))
    if raw is None or neu is None:
        raise RenderError("bench_position result lacks galileo-nano raw and neutral rows; rerun it with the weights")
    nr_m, nr_s = neu["fewshot_neutral_minus_raw_mean"], neu["fewshot_neutral_minus_raw_std"]
    ns_m, ns_s = neu["fewshot_minus_spectral_mean"], neu["fewshot_minus_spectral_std"]
    c = neu["cost"]
    k = len(neu["fewshot_balanced_accuracy_folds"])
    win, halo = c["default_tiling"][0], c["default_tiling"][1]
    core, p = win - 2 * halo, res.get("patch_size", 4)
    return (
        f"With neutral positions Galileo-Nano's top-10 neighbours sit at the query's in-window position "
        f"{neu['same_position_over_chance']:.2f}× as often as chance (raw: {raw['same_position_over_chance']:.2f}×), "
        f"position explains {neu['pc1_position_share']:.3f} of PC1 against a noise level of "
        f"{neu['pc1_position_share_null']:.3f} (raw: {raw['pc1_position_share']:.3f}) on this "
        f"{int(math.isqrt(neu['patches']))} × {int(math.isqrt(neu['patches']))}-patch grid, and the default "
        f"tiling's seam ratio is {neu['seam_ratio']:.2f}, {_vs_null(neu)} (raw positions: {raw['seam_ratio']:.2f}, "
        f"{_vs_null(raw)}). "
        f"Neutral positions change Galileo-Nano's few-shot balanced accuracy over raw positions by "
        f"{signed(nr_m)} (mean of the {k} paired per-fold differences; {versus(nr_m, nr_s, k)}); against the "
        f"spectral baseline the difference is {signed(ns_m)} ({versus(ns_m, ns_s, k)}). "
        f"The default blended tiling runs {c['tokens_ratio']:.2f}× the encoder tokens of the halo-0 run of the "
        f"same stride; its measured time was {c['time_ratio']:.2f}× (best of the runs on a loaded machine; "
        f"Galileo's attention is quadratic in a window's tokens, so the time lies between the token ratio for "
        f"linear layers and ({win // p}/{core // p})⁴ ≈ {(win / core) ** 4:.1f} for attention-bound windows)."
    )


# ---------------------------------------------------------------- tiling, memory, throughput (performance.md)

@renderer("overhead", "table")
def overhead_table(res: dict) -> str:
    rows = []
    for r in res["rows"]:
        if "skipped" in r:
            continue
        rows.append([f"`{r['model']}`", f"{r['windows']} × {r['window_px']} px, T={r['timesteps']}, p={r['patch_size']}",
                     f"{r['bare_s']:.3f}", f"{r['embed_s']:.3f}", f"**{r['ratio']:.2f}**", f"{r['cpu_ratio']:.2f}",
                     f"{100 * r['diagnostics_share']:.1f} %" if "diagnostics_share" in r else "–",
                     f"{r['max_abs_diff']:g}"])
    if not rows:
        raise RenderError("bench_overhead result has no measured rows; rerun it where the weights are")
    return table(["model", "windows", "bare loop s", "embed s", "bare / embed", "CPU-time ratio",
                  "diagnostics (cProfile share)", "max abs diff"], rows)


@renderer("memory", "summary")
def memory_summary(res: dict) -> str:
    s, lg = res["small"], res["large"]
    return (f"Embedding a lazy `{res['model']}` run ({res['weights']} weights, T={res['times']}, "
            f"{res['chunk']}-px input chunks) streamed to Zarr: peak RSS {s['peak_rss_mib']:.0f} MiB at "
            f"{s['size']}² px and {lg['peak_rss_mib']:.0f} MiB at {lg['size']}² px (4× the area): "
            f"**{res['peak_rss_ratio_4x_area']:.2f}×** (memory proportional to the area would be 4×); growth above "
            f"the RSS of the loaded model {res['growth_ratio_4x_area']:.2f}×.")


THROUGHPUT_NAMES = {"olmoearth-v1-nano": "OlmoEarth v1 Nano", "olmoearth-v1.1-nano": "OlmoEarth v1.1 Nano",
                    "olmoearth-v1-tiny": "OlmoEarth v1 Tiny", "olmoearth-v1.1-tiny": "OlmoEarth v1.1 Tiny",
                    "olmoearth-v1.1-base": "OlmoEarth v1.1 Base", "galileo-nano": "Galileo-Nano"}


def _g(v: float) -> str:
    return f"{v:.2g}" if v < 10 else f"{v:.0f}"


@renderer("throughput", "table")
def throughput_table(res: dict) -> str:
    ps = sorted({r["patch_size"] for r in res["rows"] if "patch_size" in r}, reverse=True)
    cells: dict[str, dict[int, str]] = {}
    for r in res["rows"]:
        d = cells.setdefault(r["model"], {})
        if "skipped" in r:
            continue
        v = f"{_g(r['img_per_s'])} · {_g(r['km2_per_s'])}"
        if "v1.1_speedup" in r:
            v += f" (v1.1: {r['v1.1_speedup']:.1f}×)"
        d[r["patch_size"]] = v
    rows = [[THROUGHPUT_NAMES.get(m, m)] + [d.get(p, "skipped" if not d else "") for p in ps]
            for m, d in cells.items()]
    return table(["model"] + [f"p = {p}" for p in ps], rows)


@renderer("throughput", "setup")
def throughput_setup(res: dict) -> str:
    return (f"{res['images']} images of {res['window_px']} × {res['window_px']} px, T={res['timesteps']}, "
            f"device `{res['device']}`{', compiled' if res.get('compile') else ''}, best of {res['repeat']} after a "
            f"warm-up; cells: img/s · km²/s, and for v1 rows how many times faster v1.1 of the same size is. "
            f"OlmoEarth on random weights in the published layout (same cost as the real ones).")


@renderer("throughput", "caveat")
def throughput_caveat(res: dict) -> str:
    m = res["run"]["machine"]
    loads = [v[0] for v in (m.get("load_avg_1_5_15"), res["run"].get("load_avg_at_end")) if v]
    text = ""
    if loads and m.get("cores") and max(loads) > m["cores"]:
        text += (f"The load average was {min(loads):.1f}–{max(loads):.1f} on {m['cores']} cores during this run, so "
                 f"each model got a fraction of the CPU that varied from row to row: read rows measured minutes apart "
                 f"as ± a factor of 2. ")
    slow = [r for r in res["rows"] if r.get("v1.1_speedup", 2.0) < 1.0]
    if slow:
        text += ("Where v1.1 comes out slower than v1 (" + ", ".join(
            f"{THROUGHPUT_NAMES.get(r['model'], r['model']).removeprefix('OlmoEarth v1 ')} at p = {r['patch_size']}: "
            f"{r['v1.1_speedup']:.1f}×" for r in slow) + ") that is load, not the model: v1.1 runs fewer tokens per "
                 "patch per timestep (one S2 token instead of three band-group tokens) on the same architecture. ")
    return text or "The machine was not overloaded during this run (load average at most its core count)."


# ---------------------------------------------------------------- analyses (analyses.md)

def _pooled(r: dict, who: str) -> str:
    """Pooled out-of-fold R² with its spatial-block bootstrap interval."""
    return f"{signed(r[f'r2_{who}'], 2)} [{signed(r[f'r2_low_{who}'], 2)}, {signed(r[f'r2_high_{who}'], 2)}]"


def _verdict(v: dict) -> str:
    """A stats.compare verdict of the model's per-fold RMSE against a baseline, in words with its interval."""
    d = v["difference"]
    word = {"A better": "lower", "B better": "higher", "no difference detectable": "no difference detectable",
            "not estimable": "not estimable"}[v["verdict"]]
    return f"{word} ({signed(d['estimate'])} K [{signed(d['low'])}, {signed(d['high'])}])"


@renderer("analyses", "table")
def analyses_table(res: dict) -> str:
    real = res["real"]
    rows = []
    for r in real["rows"]:
        rows.append([f"`{r['model']}`", str(r["k_chosen"]), f"{r['ari_chosen_k']:.3f}", f"{r['ari_k_classes']:.3f}",
                     _pooled(r, "model"), f"{r['rmse_model']:.3f} K", signed(r["skill_model"]),
                     _verdict(r["verdict_vs_mean"])])
    r0 = real["rows"][0]
    rows.append(["predict the mean", "–", "–", "–", _pooled(r0, "mean"), f"{r0['rmse_mean']:.3f} K", "0", "–"])
    return table(["model", "k by silhouette", "ARI at that k (seed 0)", f"ARI at k = {real['n_crop_classes']} (seed 0)",
                  "pooled out-of-fold R² [95 % block bootstrap]", "RMSE", "skill vs mean",
                  "RMSE vs predict-the-mean (paired per-fold, 95 % t)"], rows)


@renderer("analyses", "setup")
def analyses_setup(res: dict) -> str:
    real = res["real"]
    c, t = real["cube"], real["target"]
    n = real["rows"][0]
    return (f"Each model's default tiling and positions, as in tutorials 7–9; {c['time']} monthly composites, 40 m "
            f"patches, {real['n_labelled_patches']} labelled patches, {real['n_crop_classes']} crop classes; "
            f"k-means seed 0 (tutorial 7 compares the feature sets over 10 seeds and resampled patches). Regression: "
            f"clear-sky Apr–Sep 2019 mean Landsat 8 surface temperature from the cube with its Sentinel-1 bands (tutorial 9 "
            f"embeds the optical bands only, so its R² differ; {t['acquisitions_in_season']} acquisitions, "
            f"median {t['clear_obs_per_pixel_median']:g} clear per pixel; std {t['std_K']:.2f} K over the footprint), "
            f"{n['n_regression_patches']} patches, {n['n_folds']} spatial-block folds; R² pooled over the out-of-fold "
            f"predictions with a 95 % spatial-block bootstrap interval, skill = 1 − RMSE / RMSE of predict-the-mean, "
            f"verdicts by `eoembed.stats.compare` on the paired per-fold RMSE.")


@renderer("analyses", "summary")
def analyses_summary(res: dict) -> str:
    real = res["real"]
    rows = real["rows"]
    best = max(rows, key=lambda r: r["ari_chosen_k"])
    text = (f"The clusters closest to the crop types are `{best['model']}`'s (ARI {best['ari_chosen_k']:.3f} at its "
            f"silhouette-chosen k = {best['k_chosen']}, seed 0). ")
    better = [r["model"] for r in rows if r["verdict_vs_mean"]["verdict"] == "A better"]
    worse = [r["model"] for r in rows if r["verdict_vs_mean"]["verdict"] == "B better"]
    top = max(rows, key=lambda r: r["r2_model"])
    text += (f"Surface temperature: the highest pooled out-of-fold R² is `{top['model']}`'s, {_pooled(top, 'model')} "
             f"(skill vs mean {signed(top['skill_model'])}); ")
    if better:
        text += f"by the paired rule {', '.join(f'`{m}`' for m in better)} predict(s) it better than the mean. "
    else:
        text += ("by the paired rule no model's RMSE differs detectably from predicting the mean over "
                 f"{rows[0]['n_folds']} folds")
        text += (f" ({', '.join(f'`{m}`' for m in worse)} worse). " if worse else ". ")
    text += (f"The target varies by only {real['target']['std_K']:.2f} K over the footprint and its native resolution "
             "is ~100 m.")
    return text


# ---------------------------------------------------------------- machinery

def load_results(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted((root / "benchmarks" / "results").glob("bench_*.json")):
        try:
            out[p.stem.removeprefix("bench_")] = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise RenderError(f"{p} is not valid JSON ({e}); rerun the benchmark with --json {p}") from e
    return out


@renderer("analyses_scale", "table")
def analyses_scale_table(res: dict) -> str:
    rows = res["scale"]
    out = table(["cube", "analysis", "patches", "dim", "chunk", "cube size", "peak RSS", "after imports", "time"],
                [[r["size"], r["analysis"], f"{r['side']:,}²", str(r["dim"]), f"{r['chunk']}²",
                  f"{r['cube_mib']:,.0f} MiB", f"{r['peak_rss_mib']:,.0f} MiB", f"{r['rss_after_import_mib']:,.0f} MiB",
                  f"{r['seconds']:.1f} s"] for r in rows])
    big = [r for r in rows if r["size"] == "large"]
    if big:
        worst = max(big, key=lambda r: r["peak_rss_mib"])
        out += (f"\n\nOn the large cubes the highest peak RSS is {worst['peak_rss_mib']:,.0f} MiB ({worst['analysis']}, "
                f"a {worst['cube_mib']:,.0f} MiB input): no analysis loads its cube whole; peak memory follows the "
                "chunks, not the cube.")
    return out


# ---------------------------------------------------------------- explorer (performance.md)

@renderer("explore", "summary")
def explore_summary(res: dict) -> str:
    o, c = res["open"], res["click"]
    lines = [f"Opening the explorer on a {o['shape'][0]:,} × {o['shape'][1]:,}-patch numpy cube took "
             f"{o['seconds']:.1f} s ({o['breakdown']['open']:.2f} s building the widget, the rest first-time "
             f"imports); a click on a {c['patches']:,}-patch cube ({c['index']} index) took {c['click_ms']:.0f} ms "
             f"median, {c['ratio']:.1f}× the bare `index.search` + `similarity_map` it wraps ({c['bare_ms']:.0f} ms; "
             "the difference is drawing the layer)."]
    rows = []
    for r in res["large_runs"]:
        lg = r["large"]
        tiles = lg.get("tiles", {})
        zs = [k for k in tiles if k.startswith("z")]
        tile_txt = " / ".join(f"{tiles[z]['median_ms']:.0f}" for z in zs) + f" ms ({', '.join(zs)}; max " + \
            f"{max(tiles[z]['max_ms'] for z in zs):.0f})" if zs else "–"
        idx = lg.get("ooc_index")
        rows.append([f"{lg['shape'][0]:,}² ({lg['patches'] / 1e6:,.0f} M)", f"{lg['dim']}",
                     f"{lg['pyramid_write_s']:.0f} s ({lg['pyramid_levels']} levels)", f"{lg['open_s']:.2f} s",
                     tile_txt, f"{lg['layer_render_ms']:.0f} ms",
                     f"{idx['key']} in {idx['build_s']:.0f} s, recall@10 {idx['recall@10']:.3f} (nprobe "
                     f"{idx['nprobe']})" if idx else "not built", f"{lg['click_ms']:.0f} ms" if idx else "–",
                     f"{lg['rss_peak_mb'] / 1024:.1f} GB", r["run"]["date"]])
    lines.append("")
    lines.append(table(["patches", "dim", "pyramid + PCA COG", "open", "warm tile (median)", "overview redraw",
                        "out-of-core index", "click", "peak RSS", "run"], rows))
    notes = [f"Row {i}: {r['run']['note']}" for i, r in enumerate(res["large_runs"], 1) if r["run"].get("note")]
    if notes:
        lines += [""] + [" ".join(notes)]
    lines.append("")
    lines.append("Targets: open < 5 s, a warm tile < 200 ms, click → similarity layer < 300 ms at 10⁷ patches with "
                 "recall@10 ≥ 0.95. Synthetic lazy dask cubes (50 prototypes + noise in blocks); each large row "
                 "is its own run (command in the result file).")
    return "\n".join(lines)


@renderer("family_cpu", "table")
def family_cpu_table(res: dict) -> str:
    st = res["settings"]
    rows = []
    for r in res["rows"]:
        if "images_per_s" not in r:
            rows.append([r["model"], "–", "–", "–", "–", "–", "–", r.get("skipped") or r.get("error", "")])
            continue
        bare = "–" if r.get("ratio") is None else f"{r['bare_s']:.2f} s"
        ratio = "–" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        default = (f"{r['default_tiling']}: {r['default_km2_per_s']:.2f}" if "default_tiling" in r
                   else "– (not measured in this run)")
        rows.append([r["model"], f"p = {r['patch_size']}", f"{r['patches_per_s']:,.0f}", f"{r['km2_per_s']:.2f}",
                     f"{r['embed_s']:.2f} s", f"{bare} → {ratio}", default, r["weights"]])
    load = res["run"]["machine"]["load_avg_1_5_15"]
    head = ["model", "patch (default)", "patches/s", "km²/s", "embed()", "bare loop → ratio",
            "default tiling: km²/s", "weights"]
    return (table(head, rows)
            + f"\n\n{st['windows']} windows of {st['window_px']} px (halo 0, no blending), T={st['timesteps']}, "
            f"best of {st['repeat']} interleaved runs after a warm-up, on {st['device']} (2 shared cores, load "
            f"{load[0] if load else '?'} at the start, {res['run']['load_avg_at_end'][0]} at the end). Ratio = bare "
            "encoder loop seconds / `embed()` seconds on the same windows and batches (1.0 = no overhead; "
            "`benchmarks/bench_overhead.py`'s loop, which covers Sentinel-2-only input; the vectors of both agree "
            f"to {max(r.get('max_abs_diff') or 0 for r in res['rows']):.1e}). Wall-clock ratios on this shared "
            "machine move by tens of per cent between runs (one repeat can fall in a load spike: a ratio above 1 "
            "means the bare loop was slowed, not that `embed()` beats it); `bench_overhead.py` with more repeats "
            "and CPU-time ratios is the overhead measurement. The default-tiling column is `embed()` with the "
            "family's own window, halo and blending (`eoembed.grid.DEFAULT_TILING`) on the same cube: what a "
            "user's call costs.")


@renderer("explore_reopen", "table")
def explore_reopen_table(res: dict) -> str:
    rows = []
    for r in res["runs"]:
        x, a, b = r["reopen"], r["reopen"]["first"], r["reopen"]["reopen"]
        load = r["run"]["machine"]["load_avg_1_5_15"]
        via = "`Explorer.click`" if x.get("via") == "explorer" else "`ExplorerState.click`"
        rows.append([f"{x['shape'][0]:,}² ({x['patches'] / 1e6:.2f} M)", str(x["dim"]), b["index"], via,
                     f"{a['index_build_s']:.1f} s", f"{x['index_mb']:,.0f} MB", f"{b['open_s']:.2f} s",
                     f"{b['index_load_s']:.2f} s", f"{1000 * b['first_click_s']:.0f} ms",
                     f"{b['click_median_ms']:.0f} ms",
                     f"{b['click_max_ms']:.0f} ms", f"{load[0]:.1f}" if load else "?", r["run"]["date"]])
    return (table(["patches", "dim", "index", "clicked through", "first session: build on 1st click", "saved index",
                   "reopen: open",
                   "of which index load", "first click", "later clicks (median)", "max", "load (1 min)", "run"], rows)
            + "\n\nA stored cube (`to_zarr(..., pyramid=True)`) explored twice in one process, clicked through "
            "the `Explorer` widget (its `click` is what a map click calls: search, then the similarity layer's PNG, "
            "markers and panel redrawn) or its widget-free `ExplorerState` (search and layer data, no drawing): "
            "the first session builds the index "
            "on its first click and saves it beside the store; the second reopens it on opening (fingerprint check "
            "+ load) and its first click is an ordinary click. Files in the page cache (a cold disk adds the read "
            "of the saved index). 2 shared cores; the load column is the 1-minute load average at the start."
            + "".join(f" Row {i}: {r['run']['note']}." for i, r in enumerate(res["runs"], 1) if r["run"].get("note")))


@renderer("tiling_sweep", "table")
@renderer("tiling_sweep_v12", "table")  # the same sweep for OlmoEarth v1.2 (relative positions), its own run
def tiling_sweep_table(res: dict) -> str:
    """One table per model: every tiling's cost and quality, the chosen row in bold."""
    parts = []
    for m in res["models"]:
        chosen = (m.get("choice") or {}).get("label")
        rows = []
        for r in m["rows"]:
            v = r["vs_best"]
            name = f"**{r['label']}** (chosen)" if r["label"] == chosen else r["label"]
            diff = "best" if r["label"] == v["best"] else f"{signed(v['mean'])} [{signed(v['low'])}, {signed(v['high'])}]"
            seam = f"{r['seam_ratio']:.2f} / {r['seam_null_max']:.2f}" if math.isfinite(r["seam_ratio"]) else "–"
            rows.append([name, f"{r['tokens_per_patch_rel']:.2f}", f"{r['gmacs_per_km2']:,.0f}",
                         f"{r['over_hard_gmacs']:.2f}", f"{r['s_per_km2']:.2f}", seam + (" visible" if r["seams_visible"] else ""),
                         f"{r.get('same_position_over_chance', float('nan')):.2f}",
                         f"{r.get('pc1_position_share', float('nan')):.2f} / "
                         f"{r.get('pc1_position_share_null', float('nan')):.2f}",
                         f"{r['balanced_accuracy']:.3f}", diff])
        used = "" if m["quality_used_in_choice"] else (" Random weights: balanced accuracy is printed, not used "
                                                       "in the choice.")
        parts.append(f"**{m['model']}** ({m['weights']} weights; chosen: {chosen or 'none passes'}).{used}\n\n"
                     + table(["tiling", "tokens / patch", "GMAC / km²", "GMAC × hard windows of its stride",
                              "s / km² (one run)",
                              "seam ratio / null max", "hits / chance", "PC1 position share / noise",
                              "balanced acc.", "vs best: paired diff. [95 % t-interval, 5 folds]"], rows))
    return "\n\n".join(parts)


@renderer("tiling_sweep", "summary")
@renderer("tiling_sweep_v12", "summary")
def tiling_sweep_summary(res: dict) -> str:
    lines = []
    for m in res["models"]:
        rows = {r["label"]: r for r in m["rows"]}
        c = rows.get((m.get("choice") or {}).get("label"))
        best = rows[m["best_balanced_accuracy"]]
        if c is None:
            lines.append(f"* {m['model']}: no tiling passed every check.")
            continue
        hard = min((r for r in m["rows"] if r["halo"] == 0 and not r["label"].startswith("raw ")),
                   key=lambda r: r["gmacs_per_km2"])
        acc = ("the best" if c is best else f"best {best['label']} {best['balanced_accuracy']:.3f}: "
               f"{c['vs_best']['verdict']}")
        if not m["quality_used_in_choice"]:
            acc += "; random weights, not used"
        lines.append(
            f"* {m['model']}: **{c['label']}** — {c['gmacs_per_km2']:,.1f} GMAC/km² "
            f"({c['tokens_per_patch_rel']:.2f}× the tokens and {c['over_hard_gmacs']:.2f}× the GMACs of hard windows "
            f"of its stride), {c['s_per_km2']:.2f} s/km² in one run; seams {c['seam_ratio']:.2f} against a null up "
            f"to {c['seam_null_max']:.2f}; same-position hits {c['same_position_over_chance']:.2f}× chance; "
            f"balanced accuracy {c['balanced_accuracy']:.3f} ({acc}). The cheapest hard tiling, {hard['label']} "
            f"({hard['gmacs_per_km2']:,.1f} GMAC/km²), " + ("shows its window borders." if hard["seams_visible"]
                                                          else "hides its borders."))
    return "\n".join(lines)


def render_text(text: str, results: dict[str, dict], where: str, pending: list[str]) -> str:
    """``text`` with every block whose result exists re-rendered; blocks without one appended to ``pending``."""
    out, pos = [], 0
    for m in OPEN.finditer(text):
        if m.start() < pos:
            continue
        end = text.find(CLOSE, m.end())
        nxt = OPEN.search(text, m.end())
        if end < 0 or (nxt is not None and nxt.start() < end):
            line = text.count("\n", 0, m.start()) + 1
            raise RenderError(f"{where}:{line}: block {m.group(0)} has no closing {CLOSE} before the next block; "
                              f"add it after the block's text")
        name, part = m.group("name"), m.group("part") or "summary"
        out.append(text[pos : m.end()])
        if name not in results:
            pending.append(f"{where}: {m.group(0)} (no benchmarks/results/bench_{name}.json yet; left as is)")
            out.append(text[m.end() : end])
        else:
            fn = RENDERERS.get((name, part)) or (run_line if part == "run" else None)
            if fn is None:
                known = sorted(p for n, p in RENDERERS if n == name) + ["run"]
                raise RenderError(f"{where}: no renderer for {m.group(0)}; parts of '{name}': {', '.join(known)}")
            try:
                body = fn(results[name])
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                raise RenderError(f"{where}: {m.group(0)}: bench_{name}.json lacks what the block needs "
                                  f"({type(e).__name__}: {e}); rerun the benchmark with --json") from e
            out.append("\n" + body.strip() + "\n")
        out.append(CLOSE)
        pos = end + len(CLOSE)
    out.append(text[pos:])
    return "".join(out)


def render_all(root: Path = ROOT) -> tuple[dict[Path, tuple[str, str]], list[str]]:
    """``{doc: (current, rendered)}`` for every ``docs/*.md`` with blocks, and the pending blocks."""
    results = load_results(root)
    docs, pending = {}, []
    for p in sorted((root / "docs").glob("*.md")):
        text = p.read_text()
        if OPEN.search(text):
            docs[p] = (text, render_text(text, results, str(p.relative_to(root)), pending))
    return docs, pending


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if a doc differs from its results")
    ap.add_argument("--root", default=str(ROOT), help="repository root (default: this checkout)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    try:
        docs, pending = render_all(root)
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    changed = [p for p, (old, new) in docs.items() if old != new]
    for p in changed:
        rel = str(p.relative_to(root))
        if args.check:
            old, new = docs[p]
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       f"{rel} (committed)", f"{rel} (rendered from results)"))
        else:
            p.write_text(docs[p][1])
            print(f"rendered {rel}")
    for line in pending:
        print(f"pending: {line}")
    if args.check and changed:
        print(f"{len(changed)} doc(s) differ from benchmarks/results/: run python scripts/render_docs.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
