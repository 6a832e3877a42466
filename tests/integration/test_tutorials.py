"""Execute every tutorial and notebook end to end (offline, real weights from ../shared) and check what they teach.

The notebooks are committed executed, with their outputs, so a reader sees them: ``scripts/execute_notebooks.py``
writes them (after any change to a notebook: ``python scripts/execute_notebooks.py tutorials/NN_name.ipynb``).
The fast test checks the stored files (every code cell executed, no errors, not edited since, small); the slow
one executes a fresh copy, compares it with the stored outputs where they must match (printed numbers within a
tolerance, the same figures per cell: ``execute_notebooks.compare_notebooks``) and checks what the prose relies on.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
xn = sys.modules.setdefault("execute_notebooks", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(xn)

TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = xn.notebook_paths(ROOT)
NEEDS = xn.required_inputs(ROOT.parent / "shared")
EXPECTED = ["01_tokens_and_cost", "02_what_an_embedding_is", "03_similarity_search_map",
            "04_fewshot_crop_mapping", "05_models_compared", "06_scaling_out", "07_clusters",
            "08_change_and_time", "09_regression", "10_numbers_you_can_report"]
NUM = r"[+-]?\d+\.\d+"


def _outputs(nb, kind):
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if kind == "stdout" and out.get("output_type") == "stream" and out.get("name") == "stdout":
                yield out["text"]
            elif kind != "stdout" and kind in out.get("data", {}):
                yield out["data"][kind]


def check_fewshot_summary(stdout: str) -> dict:
    """The few-shot tutorial's summary: each model's score printed next to the majority rate and spectral baseline.

    Returns ``{model: spatial-CV balanced accuracy}``; raises AssertionError when a model row lacks the
    majority-class rate or the spectral baseline as printed earlier in the notebook.
    """
    maj = re.search(r"majority-class rate \(accuracy of always guessing the most frequent class\): ([0-9.]+)", stdout)
    spec = re.search(r"spectral, spatial-block CV: balanced accuracy ([0-9.]+)", stdout)
    assert maj and spec, "the notebook must print the majority-class rate and the spectral baseline"
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if "majority-class rate" in ln and "spectral baseline" in ln
                and "balanced acc (spatial CV)" in ln)
    cols = re.split(r"\s{2,}", lines[head].strip())
    scores = {}
    for ln in lines[head + 2:]:
        if not ln.strip() or not re.match(r"^[a-z][\w.-]*\s", ln):
            break
        name = ln.split()[0]
        nums = re.findall(r"(?<![\w.])-?\d+\.\d+|\bnan\b", ln)
        if len(nums) < 5:  # the table ended (the next printed line is prose)
            break
        row = dict(zip(cols[-len(nums):], nums))
        assert row.get("majority-class rate") == f"{float(maj.group(1)):.3f}", (name, row)
        assert row.get("spectral baseline") == f"{float(spec.group(1)):.3f}", (name, row)
        scores[name] = float(row["balanced acc (spatial CV)"])
    assert {"majority", "spectral"} <= set(scores), scores
    return scores


def _verdict_ok(d: float, spread: float, verdict: str, better: str, worse: str, tol: float = 0.0015) -> bool:
    """The printed verdict matches the rule 'better/worse only when |d| exceeds the spread' (rounding-tolerant)."""
    if abs(abs(d) - spread) <= tol:
        return True  # too close to the cut to tell from rounded numbers
    if d > spread and d > 0:
        return better in verdict
    if d < -spread and d < 0:
        return worse in verdict
    return "no clear difference" in verdict


def _ari_verdicts(stdout: str) -> dict:
    """Each ARI comparison of notebook 7 (crop types, land cover): the paired-over-seeds interval, the block-bootstrap
    interval and the verdict, checked against each other. Returns ``{what: (difference, verdict)}``."""
    out = {}
    for m in re.finditer(
            rf"ARI with (?P<what>crop types|land cover) \(k = (?P<k>\d+)\), over (?P<n>\d+) k-means seeds: "
            rf"(?P<head>[^—\n]+) — galileo-nano − spectral = (?P<d>{NUM}) \[(?P<lo>{NUM}), (?P<hi>{NUM})\] "
            rf"\(paired differences over (?P=n) seeds, 95% t-interval\)\n"
            rf"patches \((?P<np>\d+) labelled, \d+ blocks of 160 m, \d+ block-bootstrap resamples\): galileo-nano − "
            rf"spectral = (?P<bd>{NUM}) \[(?P<blo>{NUM}), (?P<bhi>{NUM})\] \(95% percentile interval\)\n"
            rf"galileo-nano vs spectral baseline, ARI with (?P=what) at k = (?P=k): (?P<vd>{NUM}) -> (?P<verdict>.*)",
            stdout):
        d, lo, hi = float(m["d"]), float(m["lo"]), float(m["hi"])
        bd, blo, bhi = float(m["bd"]), float(m["blo"]), float(m["bhi"])
        assert int(m["n"]) >= 10 and lo <= d <= hi and blo <= bhi, m.group(0)
        assert abs(d - bd) <= 0.0015 and abs(d - float(m["vd"])) <= 0.0015, m.group(0)
        seed_head = ("galileo-nano better" if lo > 0 else "spectral better" if hi < 0 else "no difference detectable")
        assert m["head"].startswith(seed_head), m.group(0)
        want = ("galileo-nano agrees more" if lo > 0 and blo > 0 else
                "the spectral baseline agrees more" if hi < 0 and bhi < 0 else "no difference detectable")
        assert m["verdict"].startswith(want), m.group(0)
        out[m["what"]] = (d, m["verdict"])
    return out


def check_clusters(stdout: str) -> None:
    """What notebook 7's prose relies on: k chosen by the best silhouette for both feature sets, the ARI table, and
    the verdicts of the ARI comparisons (crop types, land cover) consistent with their intervals over seeds and over
    resampled patches (eoembed.stats)."""
    ks = {m[0]: (int(m[1]), float(m[2]), float(m[4])) for m in re.findall(
        r"(\S+): k chosen by silhouette = (\d+) \(silhouette (-?[0-9.]+); next best k = (\d+) at (-?[0-9.]+)\)",
        stdout)}
    assert set(ks) == {"galileo-nano", "spectral"}, ks
    for k, best, nxt in ks.values():
        assert 2 <= k <= 12 and best >= nxt
    rows = {m[0]: (int(m[1]), *map(float, m[2:])) for m in re.findall(
        rf"^(galileo-nano|spectral)\s+(\d+)\s+({NUM})\s+({NUM})\s+({NUM})\s+({NUM})\s*$", stdout, flags=re.M)}
    assert set(rows) == {"galileo-nano", "spectral"}, rows
    assert all(rows[n][0] == ks[n][0] for n in rows), (rows, ks)
    assert all(r[3] <= r[2] <= r[4] for r in rows.values()), rows      # mean of seeds inside its interval
    verdicts = _ari_verdicts(stdout)
    assert set(verdicts) == {"crop types", "land cover"}, verdicts
    assert abs(verdicts["crop types"][0] - (rows["galileo-nano"][2] - rows["spectral"][2])) <= 0.0015, (verdicts, rows)
    assert len(re.findall(r"^\S+: silhouette at k = \d+ \(seed 0\) [0-9.]+ -> \w+", stdout, flags=re.M)) == 4
    wide = dict(re.findall(r"(\S+): k chosen over 2\.\.20 = \d+ \(over 2\.\.12: (\d+)\)", stdout))
    assert {n: int(k) for n, k in wide.items()} == {n: v[0] for n, v in ks.items()}, wide
    assert len(re.findall(r"ARI between seed 0 and seed 1", stdout)) == 2
    assert len(re.findall(r"ARI with land cover \(\d+ classes, \d+ patches\) at k = \d+: mean of", stdout)) == 2


def check_change_and_time(stdout: str) -> None:
    """Notebook 8: Otsu thresholds and change counts in range for both feature sets (two months, two halves, the
    12-month sample), a refused comparison, per-crop peaks drawn from the stated steps, trajectories of both."""
    for what in (r"\d{4}-\d\d -> \d{4}-\d\d", r"halves .*?", r"12-month sample 2021-06 -> 2021-08"):
        otsu = re.findall(rf"^(\S+): {what} Otsu threshold ([0-9.]+); changed patches: (\d+) of (\d+)", stdout,
                          flags=re.M)
        assert sorted(o[0] for o in otsu) == ["galileo-nano", "spectral"], (what, otsu)
        for _, thr, n, valid in otsu:
            assert 0 < float(thr) < 2 and 0 < int(n) < int(valid), (what, otsu)
    assert "IndexMismatchError - " in stdout
    used = re.search(r"steps used for the peaks \((\d+) of (\d+)\): (.*)", stdout)
    assert used and int(used.group(1)) == len(used.group(3).split(", ")), used
    peaks = {}
    for name, c, _, step, top, med in re.findall(
            rf"^(\S+): crop (\d+) \((\d+) patches\) changes most, relative to all labelled patches, in (\S+) "
            rf"\(({NUM}) above their mean distance; median step ({NUM})\)", stdout, flags=re.M):
        assert step in used.group(3).split(", ") and float(top) >= float(med), (name, c, step)
        peaks[name, c] = step
    crops = {c for _, c in peaks}
    assert crops and set(peaks) == {(n, c) for n in ("galileo-nano", "spectral") for c in crops}, peaks
    same = re.search(r"peak step is the same for galileo-nano and the spectral baseline: (\d+) of (\d+)", stdout)
    assert same and int(same.group(1)) == sum(peaks["galileo-nano", c] == peaks["spectral", c] for c in crops)
    assert int(same.group(2)) == len(crops)
    assert len(re.findall(r"lowest similarity to its first month", stdout)) == 4
    assert len(re.findall(r"most-changed crop code", stdout)) == 2
    assert len(re.findall(r"July 2019 only, k chosen by silhouette = \d+", stdout)) == 2
    # the library's verdict on the May -> August histogram and the stable pair beside the threshold
    hist = dict(re.findall(r"^(\S+): \d{4}-\d\d -> \d{4}-\d\d Otsu threshold .*\n   histogram: (unimodal|bimodal)", stdout,
                           flags=re.M))
    assert set(hist) == {"galileo-nano", "spectral"}, hist
    verdicts = dict(re.findall(r"^(\S+): \d{4}-\d\d -> \d{4}-\d\d Otsu(?:.*\n   ){4}verdict: (.*)$", stdout, flags=re.M))
    assert set(verdicts) == set(hist), verdicts
    for name, shape in hist.items():
        assert ("histogram is unimodal" in verdicts[name]) == (shape == "unimodal"), (name, verdicts[name])
        assert "of the stable pair's patches exceed the threshold" in verdicts[name]
    assert hist["galileo-nano"] == "unimodal"        # the prose: season, not a change boundary
    assert re.search(r"^   smallest .*every patch moved further than 99 % of the stable pair's: True", stdout.split(
        "spectral: ")[0], flags=re.M), "the prose says every Galileo patch moved further than the stable pair's 99 %"
    # per-crop verdicts only with at least MIN_SAMPLES (10) labelled patches
    counts = {int(c): int(n) for c, n in re.findall(r"^(\d{4})\s+(?:\S+\s+){6}(\d+)\s*$", stdout, flags=re.M)}
    few = re.search(r"fewer than 10 labelled patches, no per-class verdict: (.*)", stdout)
    assert counts and few, counts
    assert {int(c) for c in re.findall(r"(\d{4}) \(\d+ patches\)", few.group(1))} == {
        c for c, n in counts.items() if n < 10}, (few.group(0), counts)
    for code in re.findall(r"most-changed crop code (\d+) among crops with ≥ 10 patches", stdout):
        assert counts[int(code)] >= 10, (code, counts)


def _regression_blocks(stdout: str) -> dict:
    """``{(target, estimator): {"model"|"mean baseline"|"spectral baseline": (r2, low, high, rmse, skill)}}`` of each
    printed regression result (the first one printed per target and estimator): pooled out-of-fold R² with its
    block-bootstrap interval, RMSE and skill vs predict-the-mean."""
    out = {}
    for m in re.finditer(r"Regression of '([^']+)' \((\w+)\) with (\w+) on (\d+) patches; spatial-block CV: (\d+) "
                         r"folds[^\n]*\npooled out-of-fold scores[^\n]*\n((?:  \S[^\n]*\n)+)", stdout):
        rows = {r[0]: tuple(float(x) for x in r[1:]) for r in re.findall(
            rf"^  (model|mean baseline|spectral baseline)\s+R² ({NUM}) \[({NUM}), ({NUM})\]\s+RMSE ([0-9.e+-]+)\s+"
            rf"skill vs mean ({NUM})", m.group(6), flags=re.M)}
        out.setdefault((m.group(1), m.group(3)), rows)
    return out


def _rule_head(a: str, b: str, low: float, high: float) -> str:
    """What eoembed.stats.compare says for an RMSE difference a − b with this interval (lower RMSE is better)."""
    return (f"{b} better than {a}" if low > 0 else f"{a} better than {b}" if high < 0 else
            f"no difference detectable between {a} and {b}")


def check_regression(stdout: str) -> None:
    """Notebook 9: every target scored with pooled out-of-fold R² (interval), RMSE and skill against the mean and
    spectral baselines; each verdict follows the rule (paired per-fold RMSE, t-interval); the surface-temperature
    sentence and the Landsat-8 line are true of the numbers; the uncertainty check's words follow its interval."""
    blocks = _regression_blocks(stdout)
    targets = ("surface temperature", "S1 VV", "S1 VH")
    for t in targets:
        rows = blocks.get((t, "RidgeCV"))
        assert rows and set(rows) == {"model", "mean baseline", "spectral baseline"}, (t, blocks)
        for who, (r2, lo, hi, rmse, skill) in rows.items():
            assert lo <= hi and abs(skill - (1 - rmse / rows["mean baseline"][3])) <= 0.002, (t, who, rows[who])
    assert set(blocks.get(("S1 VH", "KNeighborsRegressor"), {})) == {"model", "mean baseline", "spectral baseline"}
    paired = re.findall(rf"^(.+?): (galileo-nano|spectral) vs (mean|spectral) — RMSE \(\w+\): (.+?) — (.+?) − (.+?) = "
                        rf"({NUM}) \[({NUM}), ({NUM})\] \(paired differences over (\d+) folds, 95% t-interval\)$",
                        stdout, flags=re.M)
    assert {(p[0], p[1], p[2]) for p in paired} == {(t, a, b) for t in targets for a, b in (
        ("galileo-nano", "mean"), ("galileo-nano", "spectral"), ("spectral", "mean"))}, paired
    better = {}
    for t, a, b, head, na, nb_, d, lo, hi, n in paired:
        assert float(lo) <= float(d) <= float(hi) and int(n) >= 2, (t, a, b)
        assert head == _rule_head(na, nb_, float(lo), float(hi)), (t, a, b, head)
        if b == "mean" and float(hi) < 0:
            better.setdefault(t, []).append(a)
    m = re.search(r"surface temperature: feature sets with a lower RMSE than predict-the-mean by the paired rule: "
                  r"(.*)", stdout)
    assert m, "the notebook must say which feature sets beat predict-the-mean on surface temperature"
    said = [] if m.group(1).startswith("none") else m.group(1).split(", ")
    assert said == better.get("surface temperature", []), (m.group(0), better)
    st = blocks["surface temperature", "RidgeCV"]
    for label, who in (("galileo-nano", "model"), ("spectral", "spectral baseline")):
        ls = re.search(rf"Landsat-8 surface temperature, {label}: pooled out-of-fold R² ({NUM}) \[({NUM}), ({NUM})\] "
                       rf"\(95% spatial-block bootstrap\); skill vs predict-the-mean ({NUM})", stdout)
        assert ls, f"the Landsat-8 target's pooled R² and skill must be printed for {label}"
        assert [float(x) for x in ls.groups()] == [st[who][0], st[who][1], st[who][2], st[who][4]], (ls.group(0), st)
    assert re.search(r"uncertainty of S1 VH .*: median [0-9.]+ dB", stdout)
    u = re.search(rf"S1 VH: Spearman ρ of out-of-fold uncertainty with \|out-of-fold error\| ({NUM}) \[({NUM}), ({NUM})\]"
                  rf" \(95% spatial-block bootstrap\) -> the uncertainty map (.*)", stdout)
    assert u, "the uncertainty map must be checked against the out-of-fold error"
    lo, hi = float(u.group(2)), float(u.group(3))
    assert u.group(4) == ("tracks the error" if lo > 0 else "runs against the error" if hi < 0 else
                          "shows no detectable relation to the error"), u.group(0)
    r = re.search(rf"random CV ({NUM}), spatial CV ({NUM}) \(random minus spatial ({NUM})\)", stdout)
    assert r and abs(float(r.group(1)) - float(r.group(2)) - float(r.group(3))) <= 0.0015
    assert abs(float(r.group(2)) - blocks["S1 VH", "RidgeCV"]["model"][0]) <= 0.0005
    assert "WITH Sentinel-1 in the cube: pooled R²" in stdout and ("ST all year", "RidgeCV") in blocks


def check_paired_verdicts(stdout: str, pattern: str, words: dict) -> list:
    """Every printed ``mean ± sd -> verdict`` line matching ``pattern`` (groups: mean, sd, verdict) has the verdict
    its numbers call for: ``words["ahead"]`` when mean - sd > 0, ``words["behind"]`` when mean + sd < 0, else
    ``words["tie"]``. Returns the parsed ``(mean, sd, verdict)`` tuples."""
    found = []
    for m in re.finditer(pattern, stdout):
        mean, sd, verdict = float(m.group("mean")), float(m.group("sd")), m.group("verdict").strip()
        assert sd == sd and sd >= 0, m.group(0)  # NaN spread (a single fold) is not a spread
        want = words["ahead"] if mean - sd > 0 else words["behind"] if mean + sd < 0 else words["tie"]
        assert verdict.startswith(want), (m.group(0), want)
        found.append((mean, sd, verdict))
    return found


#: a verdict printed by ``eoembed.stats.compare`` / ``CVReport.compare`` (the one rule), e.g. "balanced accuracy: no
#: difference detectable between galileo-nano and spectral — galileo-nano − spectral = +0.025 [-0.030, +0.080]
#: (paired differences over 5 folds, 95% t-interval)"; pairs are folds, or seeds where k-means seeds are paired
COMPARE = re.compile(r"(?P<head>[^:\n]+?) — (?P<a>[^\n]+?) − (?P<b>[^\n]+?) = (?P<est>[+-]\d+\.\d+) \[(?P<lo>[+-]\d+\.\d+), "
                     r"(?P<hi>[+-]\d+\.\d+)\] \(paired differences over (?P<n>\d+) (?P<over>folds|seeds), "
                     r"95% t-interval\)")


def check_compare_verdicts(stdout: str) -> list:
    """Every printed one-rule verdict names its interval and says what the interval says: "A better than B" only
    when the whole 95 % interval of A − B is above zero, "B better than A" when below, else "no difference
    detectable". Returns ``[(a, b, estimate, low, high, head)]``."""
    found = []
    for m in COMPARE.finditer(stdout):
        a, b, head = m.group("a"), m.group("b"), m.group("head").strip()
        est, lo, hi = float(m.group("est")), float(m.group("lo")), float(m.group("hi"))
        assert lo <= est <= hi and int(m.group("n")) >= 2, m.group(0)
        want = (f"{a} better than {b}" if lo > 0 else f"{b} better than {a}" if hi < 0
                else f"no difference detectable between {a} and {b}")
        assert head == want, (m.group(0), want)
        found.append((a, b, est, lo, hi, head))
    return found


def check_numbers_you_can_report(stdout: str) -> None:
    """Notebook 10: one-rule verdicts (CV and clustering); per-class area lines whose verdict follows from the
    estimate, its CI, the register's area and the sample size (none below 10); an object count equal to the rows
    printed and to the GeoParquet round trip; precision/recall arithmetic; silhouette readings as eoembed's cuts."""
    verdicts = check_compare_verdicts(stdout)
    assert {(v[0], v[1]) for v in verdicts} >= {("galileo-nano", "spectral"), ("cropland only", "whole footprint")}
    areas = re.findall(r"register\s+([0-9.]+) ha \| estimate\s+([0-9.]+) ± ([0-9.]+) ha \(n=(\d+)\) \| mapped\s+[0-9.]+ ha "
                       r"-> (.*)", stdout)
    assert len(areas) >= 3, areas
    for reg, est, ci, n, verdict in areas:
        reg, est, ci, n = float(reg), float(est), float(ci), int(n)
        if n < 10:
            assert verdict.startswith("no verdict"), (reg, est, ci, n, verdict)
        elif abs(abs(est - reg) - ci) > 0.01:  # not too close to the cut to tell from rounded numbers
            assert verdict == ("the 95 % CI covers the register" if abs(est - reg) <= ci else
                               "the 95 % CI misses the register"), (reg, est, ci, n, verdict)
    assert re.search(r"overall accuracy [0-9.]+ ± [0-9.]+", stdout)
    m = re.search(r"objects in the east: (\d+), rule 'score > [0-9.]+', 8-connected\n(.*?)\nregister:", stdout, re.S)
    assert m and int(m.group(1)) == len(m.group(2).strip().splitlines()) - 1, "count = rows of the object table"
    rt = re.search(r"GeoParquet round trip: (\d+) objects, CRS EPSG:32631", stdout)
    assert rt and rt.group(1) == m.group(1)
    p = re.search(r"above the threshold: (\d+), of which wheat in the register (\d+) \(precision ([0-9.]+)\); register "
                  r"wheat patches found (\d+) of (\d+) \(recall ([0-9.]+)\)", stdout)
    assert p and p.group(2) == p.group(4)
    assert abs(int(p.group(2)) / int(p.group(1)) - float(p.group(3))) < 0.006
    assert abs(int(p.group(4)) / int(p.group(5)) - float(p.group(6))) < 0.006
    sil = re.findall(r"k = \d+ \(silhouette (-?[0-9.]+): (\w+) structure\)", stdout)
    assert len(sil) == 2, sil
    for value, reading in sil:
        v = float(value)
        assert reading == ("none" if v < 0.25 else "weak" if v < 0.5 else "reasonable" if v < 0.7 else "strong"), sil


def check_tokens_and_cost(stdout: str) -> None:
    """Notebook 1: windows fixed in patches (same tokens per window at every patch size, tokens and GMACs in
    proportion to the windows, less than x4 on this small cube), blending costs what hard tiling with the same halo
    costs, the halo's price in tokens and GMACs, and the exercise's 'cheaper' verdicts."""
    ratios = re.findall(r"patch (\d) -> (\d) px: patches x([0-9.]+), windows x([0-9.]+), tokens per window "
                        r"x([0-9.]+), tokens x([0-9.]+), GMACs x([0-9.]+)", stdout)
    assert len(ratios) == 2, ratios
    for _, _, patches, windows, per_window, tokens, gmacs in ratios:
        assert float(per_window) == 1.0 and float(tokens) == float(windows) == float(gmacs), ratios
        assert 1 < float(tokens) < 4 <= float(patches) + 0.35, ratios  # "grow less" than the patches here
    m = re.search(r"halo overhead ([0-9.]+)\s+\(\((\d+)/(\d+)\)\^2\); blend=True", stdout)
    assert m and abs(float(m.group(1)) - (int(m.group(2)) / int(m.group(3))) ** 2) < 0.005, "default: blended"
    halo_ratio = (int(m.group(2)) / int(m.group(3))) ** 2   # OlmoEarth's default: (8/6)^2 = 1.78
    m = re.search(r"blending vs hard tiling with the same halo: tokens x([0-9.]+), GMACs x([0-9.]+)", stdout)
    assert m and float(m.group(1)) == float(m.group(2)) == 1.0, "blending must cost what the halo costs"
    m = re.search(r"1-patch halo vs no overlap: tokens x([0-9.]+), GMACs x([0-9.]+)", stdout)
    assert m and abs(float(m.group(1)) - halo_ratio) < 0.005 and float(m.group(2)) > float(m.group(1)), \
        "the halo costs (window/core)^2 in tokens (the prose: (8/6)^2 = 1.78), attention grows more"
    w = {k: (int(n), float(err)) for k, n, err in re.findall(
        r"(blended|hard): patches weighted by both windows: (\d+), weights sum to 1 within ([0-9.e+-]+)", stdout)}
    assert w["blended"][0] > 0 == w["hard"][0] and max(w["blended"][1], w["hard"][1]) < 1e-9, w
    ex = dict((lab, (int(t), float(g))) for lab, t, g in re.findall(
        r"(p=\d, T=\d+): \d+ windows x \d+ tokens = (\d+) tokens, ([0-9.]+) GMACs", stdout))
    m = re.search(r"cheaper in tokens: (p=\d, T=\d+) \| cheaper in compute: (p=\d, T=\d+)", stdout)
    assert len(ex) == 2 and m, ex
    assert m.group(1) == min(ex, key=lambda k: ex[k][0]) and m.group(2) == min(ex, key=lambda k: ex[k][1])


def check_fewshot_details(stdout: str) -> None:
    """Notebook 4 beyond the summary table: the sample size its prose describes, crop names, paired verdicts with
    their spread, per-fold ranges, confusion matrices that add up, and the labels-count curve."""
    m = re.search(r"labelled patches: (\d+); per class:", stdout)
    assert m and 100 <= int(m.group(1)) < 400, "section 0 says 'a couple of hundred' labelled patches"
    assert re.search(r"crop types here: \{1110: '1110 Winter wheat', .*9120: '9120 Permanent grass crops'\}", stdout)
    m = re.search(r"(\d+) labelled patches in (\d+) blocks of 160 m, (\d+) spatial folds", stdout)
    assert m, "the sample size must be printed next to the uncertainty prose"
    n_samples, n_folds = int(m.group(1)), int(m.group(3))
    verdicts = check_compare_verdicts(stdout)  # the one rule: paired differences, 95 % t-interval
    assert sum(v[1] == "spectral" for v in verdicts) >= 1 + 5, "a paired verdict per learned model and label count"
    spread = {name: (float(lo), float(hi)) for name, lo, hi in re.findall(
        r"^(\S+)\s+per-fold balanced accuracy: [0-9., ]+\(range ([0-9.]+)–([0-9.]+)\); mean [0-9.]+, 95 % t-interval",
        stdout, flags=re.M)}
    assert spread["spectral"][1] - spread["spectral"][0] > 0.1, spread  # "the folds disagree a lot"
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if "balanced acc (spatial CV)" in ln and "accuracy (spatial CV)" in ln)
    cols = re.split(r"\s{2,}", lines[head].strip())
    table = {}
    for ln in lines[head + 2:]:
        nums = re.findall(r"(?<![\w.])-?\d+\.\d+|\bnan\b", ln)
        if len(nums) < 5:
            break
        table[ln.split()[0]] = dict(zip(cols[-len(nums):], map(float, nums)))
    cms = re.findall(r"^(\S+): confusion total (\d+) patches, diagonal (\d+) \(accuracy ([0-9.]+)\)", stdout,
                     flags=re.M)
    assert {"spectral", "galileo-nano"} <= {c[0] for c in cms}, cms
    for name, total, diag, acc in cms:
        assert int(total) == n_samples and abs(int(diag) / int(total) - float(acc)) < 5e-4, (name, total, diag, acc)
        assert abs(table[name]["accuracy (spatial CV)"] - float(acc)) < 5e-4, (name, acc, table[name])
    curve = re.findall(r"^labels per class\s+\S+: galileo-nano [0-9.]+ \[[0-9.]+, [0-9.]+\] \| spectral [0-9.]+ "
                       r"\[[0-9.]+, [0-9.]+\] \| balanced accuracy: (?:no difference detectable|\S+ better than)", stdout,
                       flags=re.M)
    assert len(curve) == 5, curve
    assert len(re.findall(r"labels per class\s+(?:2|5|10|20|all):", stdout)) == 5
    assert n_folds >= 3


def check_models_compared(stdout: str) -> None:
    """Notebook 5: paired verdicts vs the spectral baseline, and the patch-size experiment (same classes at every
    size, fewer labelled patches and fewer tokens as patches grow, paired verdict per size)."""
    assert re.search(r"\d+ labelled patches in \d+ blocks of 160 m, \d+ spatial folds", stdout)
    verdicts = check_compare_verdicts(stdout)
    assert sum(v[1] == "spectral" for v in verdicts) >= 1 + 3, verdicts  # every model, and one per patch size
    assert len(re.findall(r"^patch \d px: balanced accuracy: ", stdout, flags=re.M)) == 3
    m = re.search(r"classes kept at every patch size: \[(.*)\]", stdout)
    assert m and "'Winter wheat'" in m.group(1), "the patch-size experiment names its classes"
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if "labelled patches" in ln and "galileo-nano tokens" in ln)
    cols = re.split(r"\s{2,}", lines[head].strip())
    rows = [ln.split() for ln in lines[head + 2: head + 5]]
    table = {int(r[0]): dict(zip(cols, map(float, r[1:]))) for r in rows}
    assert sorted(table) == [4, 6, 8], table
    col = lambda name: [table[q][name] for q in (4, 6, 8)]  # noqa: E731
    n, tok = col("labelled patches"), col("galileo-nano tokens")
    assert n[0] > n[1] > n[2] and tok[0] > tok[1] > tok[2], (n, tok)  # fewer patches, fewer tokens
    for m in ("galileo-nano", "spectral"):  # the 8-px mean below the whole 4-px interval; widest interval at 8 px
        acc, ci = col(f"{m} bal. acc"), col(f"{m} ± 95% CI")
        assert acc[0] - acc[2] > ci[0] and ci[2] == max(ci), (m, acc, ci)
        # the prose: "the spectral baseline's 4-px and 8-px intervals still overlap, Galileo-Nano's do not"
        assert (acc[2] + ci[2] > acc[0] - ci[0]) == (m == "spectral"), (m, acc, ci)
    m = re.search(r"patch 2 px would need (\d+) galileo-nano tokens .*\(x([0-9.]+) the tokens at 4 px\)", stdout)
    assert m and float(m.group(2)) > 1


def test_tutorials_found_and_committed_with_outputs():
    """Each notebook carries the outputs of its current code, executed in order, without errors, and small."""
    assert [p.stem for p in NOTEBOOKS][: len(EXPECTED)] == EXPECTED
    assert (ROOT / "notebooks" / "quickstart.ipynb") in NOTEBOOKS
    problems = []
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{p.name} has no python3 kernelspec"
        problems += xn.check_executed(nb, str(p.relative_to(ROOT)), size=p.stat().st_size)
    assert not problems, "\n".join(problems)


def test_fewshot_summary_check_catches_a_missing_baseline():
    ok = ("majority-class rate (accuracy of always guessing the most frequent class): 0.384\n"
          "spectral, spatial-block CV: balanced accuracy 0.747  (24 blocks of 160 m, buffer 60 m)\n"
          "                features  dim  balanced acc (spatial CV)  balanced acc (random CV)  accuracy (spatial CV)"
          "  majority-class rate  majority balanced acc  spectral baseline  embed s\n"
          "model\n"
          "majority   most frequent class    0   0.199   0.200   0.384   0.384   0.199   0.747   0.0\n"
          "spectral  band stats per month  384   0.747   0.855   0.825   0.384   0.199   0.747   0.4\n"
          "galileo-nano  time-pooled + per-timestep  2176   0.701   0.880   0.790   0.384   0.199   0.747   31.0\n"
          "galileo-nano vs spectral baseline: -0.046 balanced accuracy -> does not beat the baseline on this sample\n")
    assert check_fewshot_summary(ok) == {"majority": 0.199, "spectral": 0.747, "galileo-nano": 0.701}
    with pytest.raises(AssertionError):
        check_fewshot_summary(ok.replace("0.790   0.384", "0.790   0.400"))  # a row with another majority rate
    with pytest.raises(AssertionError):
        check_fewshot_summary(ok.replace("spectral, spatial-block CV", "spectral CV"))


def test_paired_verdict_check_catches_a_wrong_verdict_and_nan():
    pat = (r"\S+ vs spectral baseline: (?P<mean>[+-][0-9.]+) ± (?P<sd>[0-9.na]+) balanced accuracy \(paired over "
           r"\d+ folds\) -> (?P<verdict>[^\n]+)")
    words = {"ahead": "beats", "behind": "is worse than", "tie": "is within"}
    ok = ("galileo-nano vs spectral baseline: +0.025 ± 0.044 balanced accuracy (paired over 5 folds) -> is within the "
          "fold spread of the baseline on this sample\n"
          "presto vs spectral baseline: -0.109 ± 0.093 balanced accuracy (paired over 5 folds) -> is worse than the "
          "baseline on this sample\n")
    assert len(check_paired_verdicts(ok, pat, words)) == 2
    with pytest.raises(AssertionError):  # a lead smaller than its spread called a win
        check_paired_verdicts(ok.replace("-> is within the fold spread of", "-> beats"), pat, words)
    with pytest.raises(AssertionError):  # a spread that is NaN (one fold) is no spread
        check_paired_verdicts(ok.replace("± 0.044", "± nan"), pat, words)


def test_compare_verdict_check_catches_a_verdict_the_interval_does_not_support():
    ok = ("balanced accuracy: no difference detectable between galileo-nano and spectral — galileo-nano − spectral = "
          "+0.025 [-0.030, +0.080] (paired differences over 5 folds, 95% t-interval)\n"
          "patch 4 px: balanced accuracy: spectral better than presto — presto − spectral = -0.109 [-0.190, -0.028] "
          "(paired differences over 5 folds, 95% t-interval)\n")
    assert [v[:2] for v in check_compare_verdicts(ok)] == [("galileo-nano", "spectral"), ("presto", "spectral")]
    with pytest.raises(AssertionError):  # a lead whose interval straddles zero called a win
        check_compare_verdicts(ok.replace("no difference detectable between galileo-nano and spectral",
                                          "galileo-nano better than spectral"))
    with pytest.raises(AssertionError):  # an estimate outside its own interval
        check_compare_verdicts(ok.replace("-0.109 [", "-0.300 ["))


def test_numbers_you_can_report_check_catches_untrue_sentences():
    """Notebook 10's check passes on its stored outputs and fails when a sentence no longer follows from them."""
    out = "".join(_outputs(nbformat.read(TUTORIALS / "10_numbers_you_can_report.ipynb", as_version=4), "stdout"))
    check_numbers_you_can_report(out)
    with pytest.raises(AssertionError):  # an interval that covers the register reported as missing it
        check_numbers_you_can_report(out.replace("the 95 % CI covers the register", "the 95 % CI misses the register",
                                                 1))
    with pytest.raises(AssertionError):  # a verdict for a class sampled fewer than 10 times
        check_numbers_you_can_report(out.replace("no verdict (fewer than 10 samples)", "the 95 % CI covers the register",
                                                 1))
    with pytest.raises(AssertionError):  # a count that is not the number of objects listed
        check_numbers_you_can_report(re.sub(r"objects in the east: (\d+)", lambda m: f"objects in the east: "
                                            f"{int(m.group(1)) + 1}", out))


CLUSTERS_OUT = """galileo-nano: k chosen by silhouette = 3 (silhouette 0.349; next best k = 2 at 0.275)
spectral: k chosen by silhouette = 5 (silhouette 0.448; next best k = 7 at 0.414)
              k chosen  ARI (chosen k, seed 0)  ARI (k = 7), mean of 10 seeds  95% low  95% high
galileo-nano         3                   0.277                           0.23    0.190     0.324
spectral             5                   0.505                           0.40    0.305     0.547
galileo-nano: silhouette at k = 7 (seed 0) 0.261 -> weak
spectral: silhouette at k = 7 (seed 0) 0.414 -> weak
ARI with crop types (k = 7), over 10 k-means seeds: spectral better than galileo-nano — galileo-nano − spectral = -0.170 [-0.197, -0.143] (paired differences over 10 seeds, 95% t-interval)
patches (234 labelled, 16 blocks of 160 m, 400 block-bootstrap resamples): galileo-nano − spectral = -0.170 [-0.241, -0.092] (95% percentile interval)
galileo-nano vs spectral baseline, ARI with crop types at k = 7: -0.170 -> the spectral baseline agrees more
galileo-nano: k chosen over 2..20 = 3 (over 2..12: 3)
spectral: k chosen over 2..20 = 5 (over 2..12: 5)
galileo-nano: ARI between seed 0 and seed 1 at k = 7: 0.592
spectral: ARI between seed 0 and seed 1 at k = 7: 0.793
galileo-nano: ARI with land cover (3 classes, 256 patches) at k = 3: mean of 10 seeds 0.304 [0.235, 0.385]; seed 0 alone 0.310
spectral: ARI with land cover (3 classes, 256 patches) at k = 3: mean of 10 seeds 0.237 [0.139, 0.363]; seed 0 alone 0.124
galileo-nano: silhouette at k = 3 (seed 0) 0.349 -> weak
spectral: silhouette at k = 3 (seed 0) 0.348 -> weak
ARI with land cover (k = 3), over 10 k-means seeds: galileo-nano better than spectral — galileo-nano − spectral = +0.067 [+0.011, +0.124] (paired differences over 10 seeds, 95% t-interval)
patches (256 labelled, 16 blocks of 160 m, 400 block-bootstrap resamples): galileo-nano − spectral = +0.067 [-0.072, +0.166] (95% percentile interval)
galileo-nano vs spectral baseline, ARI with land cover at k = 3: +0.067 -> no difference detectable over seeds and resampled patches
"""

def _reg_block(t, u, e, m2, mrm):
    return (f"Regression of '{t}' ({u}) with {e} on 256 patches; spatial-block CV: 5 folds, 160 m blocks, buffer 60 m\n"
            "pooled out-of-fold scores (95% interval: spatial-block bootstrap):\n"
            f"  model              R² {m2:+.3f} [-0.500, +0.500]   RMSE {mrm}   skill vs mean {1 - mrm / 1.5:+.3f}\n"
            "  mean baseline      R² -0.120 [-0.436, -0.027]   RMSE 1.5   skill vs mean +0.000\n"
            "  spectral baseline  R² +0.016 [-0.946, +0.349]   RMSE 1.2   skill vs mean +0.200\n"
            "verdicts (paired per-fold RMSE):\n  RMSE: ...\n\n")


REGRESSION_OUT = "".join(_reg_block(*a) for a in [
    ("surface temperature", "K", "RidgeCV", 0.190, 1.0), ("S1 VV", "dB", "RidgeCV", 0.258, 1.1),
    ("S1 VH", "dB", "RidgeCV", 0.594, 0.9), ("S1 VH", "dB", "KNeighborsRegressor", 0.302, 1.3),
    ("ST all year", "K", "RidgeCV", -0.787, 1.8)]) + "".join(
    f"{t}: {a} vs {b} — RMSE (K): {head} — {na} − {nb} = {d} (paired differences over 5 folds, 95% t-interval)\n"
    for t, a, b, head, na, nb, d in [
        ("surface temperature", "galileo-nano", "mean", "no difference detectable between model and mean baseline",
         "model", "mean baseline", "-0.108 [-0.381, +0.165]"),
        ("surface temperature", "galileo-nano", "spectral", "no difference detectable between model and spectral "
         "baseline", "model", "spectral baseline", "-0.065 [-0.272, +0.142]"),
        ("surface temperature", "spectral", "mean", "no difference detectable between spectral baseline and mean "
         "baseline", "spectral baseline", "mean baseline", "-0.044 [-0.271, +0.184]"),
        ("S1 VV", "galileo-nano", "mean", "no difference detectable between model and mean baseline", "model",
         "mean baseline", "-0.368 [-0.940, +0.203]"),
        ("S1 VV", "galileo-nano", "spectral", "no difference detectable between model and spectral baseline", "model",
         "spectral baseline", "+0.073 [-0.305, +0.450]"),
        ("S1 VV", "spectral", "mean", "no difference detectable between spectral baseline and mean baseline",
         "spectral baseline", "mean baseline", "-0.441 [-1.153, +0.271]"),
        ("S1 VH", "galileo-nano", "mean", "model better than mean baseline", "model", "mean baseline",
         "-0.692 [-1.292, -0.091]"),
        ("S1 VH", "galileo-nano", "spectral", "no difference detectable between model and spectral baseline", "model",
         "spectral baseline", "+0.025 [-0.088, +0.139]"),
        ("S1 VH", "spectral", "mean", "spectral baseline better than mean baseline", "spectral baseline",
         "mean baseline", "-0.717 [-1.317, -0.117]")]) + (
    "surface temperature: feature sets with a lower RMSE than predict-the-mean by the paired rule: none — no "
    "difference from the training mean is detectable over these folds\n"
    "Landsat-8 surface temperature, galileo-nano: pooled out-of-fold R² +0.190 [-0.500, +0.500] (95% spatial-block "
    "bootstrap); skill vs predict-the-mean +0.333\n"
    "Landsat-8 surface temperature, spectral: pooled out-of-fold R² +0.016 [-0.946, +0.349] (95% spatial-block "
    "bootstrap); skill vs predict-the-mean +0.200\n"
    "S1 VH: prediction map {'y': 16, 'x': 16}, uncertainty of S1 VH (standard deviation of the neighbours' target "
    "values): median 0.80 dB; in-sample |prediction − measured| median 0.47 dB\n"
    "S1 VH: Spearman ρ of out-of-fold uncertainty with |out-of-fold error| +0.378 [+0.244, +0.511] (95% spatial-block "
    "bootstrap) -> the uncertainty map tracks the error\n"
    "S1 VH, galileo-nano pooled out-of-fold R²: random CV +0.783, spatial CV +0.594 (random minus spatial +0.189)\n"
    "S1 VV from spectral features WITH Sentinel-1 in the cube: pooled R² +0.760 (optical only: +0.240)\n")


def test_cluster_and_regression_checks_catch_untrue_sentences():
    """The notebook checks fail when a printed verdict or statement does not follow from the printed numbers."""
    check_clusters(CLUSTERS_OUT)
    with pytest.raises(AssertionError):  # verdict contradicting two intervals below zero
        check_clusters(CLUSTERS_OUT.replace("the spectral baseline agrees more", "no difference detectable"))
    with pytest.raises(AssertionError):  # one seed's win called a win when the patches' interval straddles zero
        check_clusters(CLUSTERS_OUT.replace("+0.067 -> no difference detectable over seeds and resampled patches",
                                            "+0.067 -> galileo-nano agrees more"))
    with pytest.raises(AssertionError):  # difference not equal to the table's
        check_clusters(CLUSTERS_OUT.replace("k = 7: -0.170", "k = 7: -0.100"))
    with pytest.raises(AssertionError):  # chosen k that is not the best silhouette
        check_clusters(CLUSTERS_OUT.replace("(silhouette 0.349;", "(silhouette 0.249;"))
    check_regression(REGRESSION_OUT)
    with pytest.raises(AssertionError):  # "better" with an interval that straddles zero
        check_regression(REGRESSION_OUT.replace(
            "galileo-nano vs mean — RMSE (K): no difference detectable between model and mean baseline — model − mean "
            "baseline = -0.368", "galileo-nano vs mean — RMSE (K): model better than mean baseline — model − mean "
            "baseline = -0.368"))
    with pytest.raises(AssertionError):  # the old contradiction: "none beats the mean" while the rule says one does
        check_regression(REGRESSION_OUT.replace(
            "no difference detectable between model and mean baseline — model − mean baseline = -0.108 [-0.381, +0.165]",
            "model better than mean baseline — model − mean baseline = -0.108 [-0.181, -0.035]"))
    with pytest.raises(AssertionError):  # the Landsat-8 line not equal to the summary's pooled R²
        check_regression(REGRESSION_OUT.replace("galileo-nano: pooled out-of-fold R² +0.190", "galileo-nano: pooled "
                                                "out-of-fold R² +0.290"))
    with pytest.raises(AssertionError):  # an uncertainty check whose words do not follow its interval
        check_regression(REGRESSION_OUT.replace("+0.378 [+0.244, +0.511]", "+0.078 [-0.044, +0.211]"))
    with pytest.raises(AssertionError):  # a target without its spectral baseline
        check_regression(REGRESSION_OUT.replace(
            "  spectral baseline  R² +0.016 [-0.946, +0.349]   RMSE 1.2   skill vs mean +0.200\n", "", 1))


def test_no_xarray_plot_calls():
    """xarray's .plot() titles maps with leftover coords ('spatial_ref = 0') and labels axes 'x'/'y' without units;
    the notebooks draw with matplotlib axes and tutorials/_shared.py, which label title, metres and CRS."""
    for p in NOTEBOOKS:
        src = "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
        for m in re.finditer(r"([\w\]\[\)]+)\.plot(\.\w+)?\(", src):
            owner = m.group(1)
            # knn.plot(): RegressionResult.plot (tutorial 9), which titles and labels its axes with units itself
            assert re.fullmatch(r"ax|plt|axes\[\d\]|knn", owner), f"{p.name}: {m.group(0)!r} (use ax.imshow + labels)"


@pytest.mark.slow
@pytest.mark.skipif(not all(p.exists() for p in NEEDS), reason=f"shared data/weights not found: {NEEDS}")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs(path):
    stored = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    with xn.notebook_kernel(ROOT.parent / "shared") as kernel:
        nb = xn.normalise(xn.execute(path, kernel, timeout=600), stored)  # CellExecutionError on a failing cell
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    stdout = "".join(_outputs(nb, "stdout"))
    images = list(_outputs(nb, "image/png"))
    name = path.stem
    if name.startswith("01_"):
        check_tokens_and_cost(stdout)
        assert len(images) >= 3
        assert re.search(r"= embed_cost tokens (\d+)", stdout), "the token count must be explained exactly"
        m = re.search(r"(\d+) x [0-9.]+ x [0-9.]+ = (\d+) = embed_cost tokens (\d+)", stdout)
        assert m and m.group(2) == m.group(3)
        assert "attention part" in stdout and "EPSG:32631" in stdout
    if name.startswith("02_"):
        assert len(images) >= 4
        assert "galileo-nano" in stdout and "MIT" in stdout and "cos(A" in stdout
        assert "RANDOM-weight" in stdout and "ratio" in stdout
        # window position: raw positions dominate, neutral ones sit at chance and at the PC1 noise level
        pos = {m: (float(r), float(p1), float(null)) for m, r, p1, null in re.findall(
            r"position=(raw|neutral)\s+hits at the query's position .*?ratio ([0-9.]+)x\) \| PC1 share ([0-9.]+) "
            r"\(noise level ([0-9.]+)\)", stdout)}
        assert pos["raw"][0] > 10 and pos["raw"][1] > 0.8, pos
        assert pos["neutral"][0] <= 2 and pos["neutral"][1] <= pos["neutral"][2] + 0.05, pos
        m = re.search(r"interior \((\d+) patches\) mean ([0-9.]+), max \|difference\| ([0-9.e+-]+)", stdout)
        assert m and int(m.group(1)) > 0 and float(m.group(2)) >= 0.99999 and float(m.group(3)) <= 1e-5
        rnd = dict(re.findall(r"RANDOM-weight OlmoEarth v1.1 Nano, position=(raw|neutral)\s+hits/chance ([0-9.]+)x",
                              stdout))
        assert float(rnd["raw"]) > 5 and float(rnd["neutral"]) <= 2, rnd
        seams = {k: (float(r), float(n)) for k, r, n in
                 re.findall(r"^(blended|hard) .*?seam ratio ([0-9.]+) \(null ([0-9.]+)\)", stdout, flags=re.M)}
        assert seams["blended"][0] < seams["hard"][0], seams
        # the prose reads each ratio against its null: hard windows' borders show beyond it, blended ones less
        assert seams["hard"][0] - seams["hard"][1] > seams["blended"][0] - seams["blended"][1], seams
    if name.startswith("03_"):
        assert len(images) >= 3 and "top-10 hits" in stdout and "same hits as in map coordinates: True" in stdout
        rates = {m: (float(r), float(c)) for m, r, c in re.findall(
            r"position=(neutral|raw)\s+top-10 hits at the query's in-window position: ([0-9.]+)% \(chance ([0-9.]+)%\)",
            stdout)}
        assert rates["neutral"][0] <= 2 * rates["neutral"][1] < rates["raw"][0], rates
        m = re.search(r"explorer \(neutral positions, stride \d+\): the first click's top-10 hits at its own "
                      r"in-window position: (\d+) of 10", stdout)
        assert m and int(m.group(1)) <= 2
    if name.startswith("04_"):
        scores = check_fewshot_summary(stdout)
        assert "galileo-nano" in scores or "galileo-nano: skipped" in stdout
        assert "presto" in scores or "presto: skipped" in stdout
        assert "random minus spatial" in stdout and len(images) >= 6
        check_fewshot_details(stdout)
    if name.startswith("05_"):
        assert len(images) >= 2
        check_models_compared(stdout)
    if name.startswith("06_"):
        assert "after resume: {'regions': 4, 'written': 2, 'skipped': 2, 'repaired': 0," in stdout
        assert "max |streamed − in-memory| = 0.00e+00" in stdout
    if name.startswith("07_"):
        check_clusters(stdout)
        assert len(images) >= 2
    if name.startswith("08_"):
        check_change_and_time(stdout)
        assert len(images) >= 6
    if name.startswith("09_"):
        check_regression(stdout)
        assert len(images) >= 3
    if name.startswith("10_"):
        check_numbers_you_can_report(stdout)
        assert len(images) >= 4
    if name == "quickstart":
        assert images and "EPSG:32631" in stdout and "rank" in stdout
    if name == "products":  # an AlphaEarth-layout COG and GeoParquet rows searched, classified, exported
        assert images and "layout COG" in stdout and "same top-5 as the float cube: True" in stdout
        assert "int8 round trip: mean cosine 0.99" in stdout and "colour table: {" in stdout
        assert "spatial-block CV" in stdout
    if name == "leafmap_layers":  # eoembed layers, a COG's tiles and the explorer on a plain leafmap.Map
        assert "colour bar: cosine similarity" in stdout and "class map (COG tiles) | classes.tif" in stdout
    # last, so that a broken statement above is reported as such: the stored outputs match the fresh run
    diffs = xn.compare_notebooks(stored, nb, name=str(path.relative_to(ROOT)))
    assert not diffs, ("the fresh run differs from the stored outputs (re-run scripts/execute_notebooks.py on it if "
                       "the change is intended):\n" + "\n".join(diffs))
