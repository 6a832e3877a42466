"""docs/*.md numbers are generated from benchmarks/results/*.json (scripts/render_docs.py) and cannot drift."""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts" / "render_docs.py")
render_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_docs)


@pytest.fixture
def repo(tmp_path):
    """A copy of the docs and committed results to edit."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    return tmp_path


def test_committed_docs_match_their_results(capsys):
    rc = render_docs.main(["--check"])
    out = capsys.readouterr()
    assert rc == 0, f"docs differ from benchmarks/results (run python scripts/render_docs.py):\n{out.out}{out.err}"
    # every committed result is rendered somewhere, and blocks exist for the pages the issue names
    docs, _ = render_docs.render_all(ROOT)
    text = "".join(old for old, _ in docs.values())
    for p in (ROOT / "benchmarks" / "results").glob("bench_*.json"):
        assert f"<!-- bench:{p.stem.removeprefix('bench_')}" in text, f"{p.name} is not rendered in any doc"


def test_check_catches_an_edited_number_in_a_doc(repo, capsys):
    doc = repo / "docs" / "performance.md"
    text = doc.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `spectral`"))
    num = row.split(" | ")[1]  # the pooled spatial-CV balanced accuracy
    doc.write_text(text.replace(row, row.replace(num, "0.999", 1)))
    assert render_docs.main(["--check", "--root", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "-" + row.replace(num, "0.999", 1) in out and "+" + row in out
    # rendering restores it
    assert render_docs.main(["--root", str(repo)]) == 0
    assert doc.read_text() == text


def test_check_catches_a_changed_result(repo, capsys):
    p = repo / "benchmarks" / "results" / "bench_analyses.json"
    res = json.loads(p.read_text())
    res["real"]["rows"][0]["ari_chosen_k"] = 0.123
    p.write_text(json.dumps(res))
    assert render_docs.main(["--check", "--root", str(repo)]) == 1
    assert "| 0.123 |" in capsys.readouterr().out


def test_block_without_result_is_left_and_listed_then_strict_once_it_exists(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    body = "Hand-typed until the result lands: 88 ms.\n"
    doc = tmp_path / "docs" / "x.md"
    doc.write_text(f"# X\n<!-- bench:newthing -->\n{body}<!-- /bench -->\nafter\n")
    assert render_docs.main(["--check", "--root", str(tmp_path)]) == 0
    assert "pending: docs/x.md: <!-- bench:newthing -->" in capsys.readouterr().out
    # the result lands but nobody wrote a renderer for its summary: an error, not a silent pass
    (tmp_path / "benchmarks" / "results" / "bench_newthing.json").write_text(json.dumps({"run": {}}))
    assert render_docs.main(["--check", "--root", str(tmp_path)]) == 2
    assert "no renderer for <!-- bench:newthing -->" in capsys.readouterr().err


def test_run_line_and_malformed_input_are_reported(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    res_dir = tmp_path / "benchmarks" / "results"
    res_dir.mkdir(parents=True)
    run = {"date": "2026-12-04T07:55Z", "command": "python benchmarks/bench_x.py --json x.json",
           "machine": {"cores": 2, "memory_gib": 23.5, "torch": "2.13.0+cpu", "gpu": None,
                       "load_avg_1_5_15": [4.4, 6.1, 6.3]}, "load_avg_at_end": [6.7, 6.5, 6.4]}
    (res_dir / "bench_x.json").write_text(json.dumps({"run": run}))
    doc = tmp_path / "docs" / "x.md"
    doc.write_text("<!-- bench:x:run -->\nold\n<!-- /bench -->\n")
    assert render_docs.main(["--root", str(tmp_path)]) == 0
    assert "Measured 2026-12-04T07:55Z on 2 CPU cores, 23.5 GiB RAM, no GPU, torch 2.13.0+cpu, load average 4.4" \
        in doc.read_text()
    assert "`python benchmarks/bench_x.py --json x.json`" in doc.read_text()
    doc.write_text("<!-- bench:x:run -->\nno closing marker\n")
    assert render_docs.main(["--check", "--root", str(tmp_path)]) == 2
    assert "has no closing <!-- /bench -->" in capsys.readouterr().err
    (res_dir / "bench_x.json").write_text("{not json")
    assert render_docs.main(["--check", "--root", str(tmp_path)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_verdict_wording_is_the_one_rule():
    """render_docs' verdicts equal eoembed.stats.compare on the same per-fold differences."""
    import numpy as np

    from eoembed.stats import compare

    for diffs in ([0.05, -0.02, 0.08, 0.01, 0.03], [-0.2, -0.15, -0.05, -0.12, -0.09], [0.3, 0.25, 0.1, 0.2, 0.22]):
        d = np.array(diffs)
        text = render_docs.versus(float(d.mean()), float(d.std(ddof=1)), len(d))
        c = compare(d, np.zeros(len(d)))
        assert f"[{render_docs.signed(c.difference.low)}, {render_docs.signed(c.difference.high)}]" in text
        want = {"A better": "better", "B better": "worse", "no difference detectable": "no difference detectable"}
        assert text.endswith(": " + want[c.verdict])
    assert render_docs.versus(0.1, float("nan"), 5) == "not estimable"
    assert render_docs.versus(0.1, 0.05, 1) == "not estimable"


def test_results_are_stamped_with_date_machine_and_command(tmp_path):
    spec = importlib.util.spec_from_file_location("_meta", ROOT / "benchmarks" / "_meta.py")
    meta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(meta)
    assert meta.command([str(ROOT / "benchmarks" / "bench_x.py"), "--json", "a b.json"]) == \
        "python benchmarks/bench_x.py --json 'a b.json'"
    started = meta.machine()
    assert started["cores"] >= 1 and "torch" in started and "load_avg_1_5_15" in started
    out = meta.stamp({"rows": [1]}, started=started, note="quick settings")
    assert list(out) == ["run", "rows"] and out["run"]["note"] == "quick settings"
    assert out["run"]["date"].endswith("Z") and out["run"]["machine"] is started
    meta.write(tmp_path / "r.json", {**out, "x": __import__("numpy").float32(0.5)})
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["x"] == 0.5 and back["run"]["command"] == out["run"]["command"]
    # a stamped result renders a run line; an unstamped one is an error, not a silent blank
    assert render_docs.run_line(back).startswith(f"Measured {out['run']['date']} on {started['cores']} CPU cores")
    with pytest.raises(render_docs.RenderError, match="no 'run' block"):
        render_docs.run_line({"rows": []})


def test_docs_index_lists_every_page_and_the_readme_links_it():
    index = (ROOT / "docs" / "README.md").read_text()
    for p in sorted((ROOT / "docs").glob("*.md")):
        if p.name != "README.md":
            assert f"]({p.name})" in index, f"docs/README.md does not list {p.name}"
    assert "](docs/README.md)" in (ROOT / "README.md").read_text()


def test_no_page_promises_a_benchmark_result_that_is_not_committed():
    """A page that names a benchmark script either has its committed result or says it has none."""
    results = {p.stem for p in (ROOT / "benchmarks" / "results").glob("bench_*.json")}
    import re

    for doc in sorted((ROOT / "docs").glob("*.md")):
        for para in doc.read_text().split("\n\n"):
            for name in set(re.findall(r"benchmarks/(bench_\w+)\.py", para)):
                if not any(r == name or r.startswith(name + "_") for r in results):
                    assert "no committed result" in para, (f"{doc.name} names {name}.py, which has no committed "
                                                           f"result in benchmarks/results/, without saying so:\n{para}")


def test_analyses_doc_and_tutorial_7_agree_on_the_same_clustering():
    """bench_analyses embeds with the defaults of tutorials 7-9, so the silhouette-chosen k and its ARI (seed 0) in
    docs/analyses.md are the ones tutorial 7 prints."""
    import re

    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(ROOT / "tutorials" / "07_clusters.ipynb", as_version=4)
    stdout = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("name") == "stdout")
    tut = {m[0]: (int(m[1]), float(m[2])) for m in re.findall(
        r"^(galileo-nano|spectral)\s+(\d+)\s+(\d\.\d+)\s+\d\.\d+\s+\d\.\d+\s+\d\.\d+\s*$", stdout, flags=re.M)}
    rows = {r["model"]: r for r in json.loads((ROOT / "benchmarks" / "results" / "bench_analyses.json").read_text())
            ["real"]["rows"]}
    assert set(tut) == {"galileo-nano", "spectral"}, stdout[:500]
    for name, (k, ari) in tut.items():
        assert rows[name]["k_chosen"] == k and abs(rows[name]["ari_chosen_k"] - ari) <= 0.0015, (name, k, ari)


def test_rendering_into_a_copy_reproduces_every_committed_page(tmp_path):
    """Every page render_docs produces, rendered afresh in a copy of the tree, equals the committed page."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png", "*.gif", "*.jpg"))
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    results = {p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks" / "results").glob("bench_*.json")}

    def blank(m):  # a block with a result: all its text must come back from the result
        return m.group(0) if m.group(2) not in results else f"{m.group(1)}\n{m.group(3)}"

    for p in (tmp_path / "docs").glob("*.md"):
        text = p.read_text()
        p.write_text(re.sub(r"(<!-- bench:([A-Za-z0-9_.-]+)(?::[A-Za-z0-9_-]+)? -->).*?(<!-- /bench -->)", blank,
                            text, flags=re.S))
    assert render_docs.main(["--root", str(tmp_path)]) == 0
    docs, pending = render_docs.render_all(ROOT)
    assert docs, "no docs/*.md has a bench block"
    for page in docs:
        fresh = (tmp_path / "docs" / page.name).read_text()
        committed = page.read_text()
        if fresh != committed:
            diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True), "committed",
                                                "rendered", n=0))
            pytest.fail(f"docs/{page.name} differs from its results rendered afresh:\n{diff[:3000]}")
    for line in pending:  # a block left as typed is one whose result file does not exist yet, nothing else
        name = re.search(r"<!-- bench:([A-Za-z0-9_.-]+)", line).group(1)
        assert name not in results, line


def _perturbed(obj, k=[0]):
    """Every float leaf moved (ints, bools and strings kept, so the structure still renders)."""
    if isinstance(obj, dict):
        return {key: (val if key in ("run",) else _perturbed(val)) for key, val in obj.items()}
    if isinstance(obj, list):
        return [_perturbed(v) for v in obj]
    if isinstance(obj, float) and math.isfinite(obj):
        k[0] += 1
        return obj * 1.37 + 0.0113 * (1 + k[0] % 3)
    return obj


def test_every_rendered_block_follows_its_result():
    """A block whose numbers did not move when its result's numbers move would be typed, not rendered."""
    results = render_docs.load_results(ROOT)
    docs, _ = render_docs.render_all(ROOT)
    checked = 0
    for page, (text, _) in docs.items():
        for m in render_docs.OPEN.finditer(text):
            name, part = m.group("name"), m.group("part") or "summary"
            if name not in results or part == "run":
                continue
            fn = render_docs.RENDERERS[(name, part)]
            before = fn(results[name])
            if not re.search(r"(?<![A-Za-z.\d])\d+\.\d", before):  # no decimals (a "v1.1" is a name): nothing measured
                continue
            after = fn(_perturbed(results[name]))
            assert after != before, f"docs/{page.name} {m.group(0)} does not change when {name}'s numbers change"
            checked += 1
    assert checked >= 10, checked
