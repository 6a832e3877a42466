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
            "04_fewshot_crop_mapping", "05_models_compared", "06_scaling_out", "07_clusters_and_change"]


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


def check_clusters_and_change(stdout: str) -> None:
    """What notebook 7's prose relies on: k chosen by the best silhouette, the ARI comparison's verdict matching its
    sign, Otsu thresholds and change counts in range, both models reported, a refused comparison explained."""
    ks = re.findall(r"(\S+): k chosen by silhouette = (\d+) \(silhouette (-?[0-9.]+); next best k = \d+ at "
                    r"(-?[0-9.]+)\)", stdout)
    assert {m[0] for m in ks} == {"galileo-nano", "spectral"}, ks
    for _, k, best, nxt in ks:
        assert 2 <= int(k) <= 12 and float(best) >= float(nxt)
    m = re.search(r"galileo-nano vs spectral baseline, ARI at k = \d+: ([+-][0-9.]+) -> (.*)", stdout)
    assert m, "the ARI comparison with the spectral baseline must be printed"
    assert (float(m.group(1)) > 0) == ("agrees more" in m.group(2)), m.group(0)
    otsu = re.findall(r"(\S+): Otsu threshold ([0-9.]+); changed patches: (\d+) of (\d+)", stdout)
    assert {o[0] for o in otsu} == {"galileo-nano", "spectral"}, otsu
    for _, thr, n, valid in otsu:
        assert 0 < float(thr) < 2 and 0 < int(n) < int(valid)
    assert "IndexMismatchError - " in stdout and "lowest similarity to its first month" in stdout


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


def test_no_xarray_plot_calls():
    """xarray's .plot() titles maps with leftover coords ('spatial_ref = 0') and labels axes 'x'/'y' without units;
    the notebooks draw with matplotlib axes and tutorials/_shared.py, which label title, metres and CRS."""
    for p in NOTEBOOKS:
        src = "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
        for m in re.finditer(r"([\w\]\[\)]+)\.plot(\.\w+)?\(", src):
            owner = m.group(1)
            assert re.fullmatch(r"ax|plt|axes\[\d\]", owner), f"{p.name}: {m.group(0)!r} (use ax.imshow + labels)"


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
        assert len(images) >= 2
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
        seams = dict(re.findall(r"^(blended|hard) .*?seam ratio ([0-9.]+)", stdout, flags=re.M))
        assert float(seams["blended"]) < float(seams["hard"]), seams
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
        assert "random minus spatial" in stdout and len(images) >= 4
    if name.startswith("05_"):
        assert images and "vs spectral" in stdout
    if name.startswith("06_"):
        assert "after resume: {'regions': 4, 'written': 2, 'skipped': 2, 'repaired': 0}" in stdout
        assert "max |streamed − in-memory| = 0.00e+00" in stdout
    if name.startswith("07_"):
        check_clusters_and_change(stdout)
        assert len(images) >= 4
    if name == "quickstart":
        assert images and "EPSG:32631" in stdout and "rank" in stdout
    if name == "products":  # an AlphaEarth-layout COG and GeoParquet rows searched, classified, exported
        assert images and "layout COG" in stdout and "same top-5 as the float cube: True" in stdout
        assert "int8 round trip: mean cosine 0.99" in stdout and "colour table: {" in stdout
        assert "spatial-block CV" in stdout
    # last, so that a broken statement above is reported as such: the stored outputs match the fresh run
    diffs = xn.compare_notebooks(stored, nb, name=str(path.relative_to(ROOT)))
    assert not diffs, ("the fresh run differs from the stored outputs (re-run scripts/execute_notebooks.py on it if "
                       "the change is intended):\n" + "\n".join(diffs))
