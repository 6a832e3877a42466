"""scripts/execute_notebooks.py: the stored-output rules and the fresh-vs-stored comparison, on small synthetic
notebooks (no kernel, except one slow test that executes a tiny notebook twice)."""

from __future__ import annotations

import base64
import copy
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
xn = sys.modules.setdefault("execute_notebooks", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(xn)


def _png(colours: int = 3, size: int = 24) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    if colours <= 256:
        pal = rng.integers(0, 255, (colours, 3), dtype=np.uint8)
        arr = pal[rng.integers(0, colours, (size, size))]
    else:
        arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    rgba = np.dstack([arr, np.full((size, size), 255, np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(png: str | None = None):
    return new_output("display_data", data={"image/png": png or _png(), "text/plain": "<Figure size 600x400 with 1 Axes>"})


def _executed(stdout: str = "balanced accuracy 0.747 on 24 blocks\n", figures: int = 1, result: str = "1,728"):
    """A small notebook as normalise() stores it: two code cells, one printing, one drawing."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_markdown_cell("# t"),
                new_code_cell("print(summary)", execution_count=1, outputs=[new_output("stream", name="stdout",
                                                                                      text=stdout)]),
                new_code_cell("draw(); tokens", execution_count=2,
                              outputs=[_figure() for _ in range(figures)]
                              + [new_output("execute_result", data={"text/plain": result}, execution_count=2)])]
    nb.metadata["eoembed"] = {"executed_by": "scripts/execute_notebooks.py", "code_sha256": xn.code_digest(nb)}
    return nb


# ---------------------------------------------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("a, b", [("0.747", "0.748"), ("0.747", "0.746"), ("0.7470", "0.7471"), ("24", "24"),
                                  ("1,728", "1728"), ("nan", "nan"), ("3.1e-05", "3.2e-05"), ("-0.000", "0.000"),
                                  ("12.5", "12.5"), ("0.00e+00", "0.0"), ("1.0e+05", "1.0e+05")])
def test_numbers_within_the_printed_precision_match(a, b):
    assert xn.numbers_match(a, b)


@pytest.mark.parametrize("a, b", [("0.747", "0.750"), ("0.747", "0.7"), ("24", "25"), ("1,728", "1,729"),
                                  ("nan", "0.5"), ("0.5", "nan"), ("inf", "-inf"), ("3.1e-05", "4.1e-05"),
                                  ("0.991", "0.981"), ("256", "255"), ("100000", "100001")])
def test_numbers_outside_the_tolerance_differ(a, b):
    assert not xn.numbers_match(a, b)


def test_split_numbers_leaves_names_and_codes_as_words():
    words, nums = xn.split_numbers("EPSG:32631 B04 S2 galileo-nano p=4: 1,728 tokens in 3.2 s, ratio nan")
    assert [n for n, _ in nums] == ["32631", "4", "1,728", "3.2", "nan"]  # an EPSG code: an integer, exact
    assert [d for _, d in nums] == [False, False, False, True, False]
    assert words[1] == "B04 S2 galileo-nano p="


# ---------------------------------------------------------------------------------------------------------------
# comparison of a fresh run with the stored outputs


def test_identical_runs_match_and_rounding_in_the_last_digit_is_tolerated():
    assert xn.compare_notebooks(_executed(), _executed()) == []
    assert xn.compare_notebooks(_executed(), _executed("balanced accuracy 0.748 on 24 blocks\n")) == []
    # column widths of a printed table may change with a value: whitespace is not compared
    assert xn.compare_notebooks(_executed("a  0.5\n"), _executed("a     0.5\n")) == []


def test_a_changed_number_is_caught():
    diffs = xn.compare_notebooks(_executed(), _executed("balanced accuracy 0.701 on 24 blocks\n"))
    assert len(diffs) == 1 and "0.747 (stored) vs 0.701 (fresh)" in diffs[0] and "code cell 0 stdout" in diffs[0]
    assert xn.compare_notebooks(_executed(), _executed("balanced accuracy 0.747 on 23 blocks\n"))
    assert xn.compare_notebooks(_executed(), _executed(result="1,729"))  # an execute_result's text/plain
    assert xn.compare_notebooks(_executed("ratio 3.12\n"), _executed("ratio nan\n"))


def test_a_missing_or_extra_figure_is_caught():
    diffs = xn.compare_notebooks(_executed(figures=2), _executed(figures=1))
    assert len(diffs) == 1 and "2 figures" in diffs[0] and "1 figures" in diffs[0] and "code cell 1" in diffs[0]
    assert xn.compare_notebooks(_executed(figures=1), _executed(figures=2))
    assert xn.compare_notebooks(_executed(figures=1), _executed(figures=0))


def test_pixels_are_not_compared():
    other = _executed()
    other.cells[2].outputs[0].data["image/png"] = _png(colours=7)
    assert xn.compare_notebooks(_executed(), other) == []


def test_other_words_a_fresh_error_and_other_code_are_caught():
    assert "text differs" in xn.compare_notebooks(_executed(), _executed("accuracy 0.747 on 24 blocks\n"))[0]
    failed = _executed()
    failed.cells[1].outputs.append(new_output("error", ename="ValueError", evalue="boom", traceback=[]))
    assert "fresh run failed (ValueError: boom)" in xn.compare_notebooks(_executed(), failed)[0]
    edited = _executed()
    edited.cells[1].source = "print(other)"
    assert "code differs" in xn.compare_notebooks(_executed(), edited)[0]


def test_durations_and_cells_tagged_numbers_vary_are_exempt():
    assert xn.compare_notebooks(_executed("embedded in 3.2 s (410 patches/s)\n"),
                                _executed("embedded in 9.9 s (130 patches/s)\n")) == []
    stored, fresh = _executed("embed seconds 31.0\n"), _executed("embed seconds 12.4\n")
    assert xn.compare_notebooks(stored, fresh)  # a bare number in a timing column is compared...
    stored.cells[1].metadata["tags"] = [xn.VARY_TAG]
    assert xn.compare_notebooks(stored, fresh) == []  # ...unless the cell says its numbers vary
    assert xn.compare_notebooks(stored, _executed("embed minutes 12.4\n"))  # the words still must match


def test_table_columns_of_durations_and_machine_sizes_are_exempt():
    table = ("              features   dim  balanced acc  embed s\n"
             "model                                             \n"
             "spectral  band stats     384         0.747      {t}\n"
             "galileo   pooled        2176         0.773    109.1\n"
             "galileo vs spectral: +0.025\n")
    assert xn.compare_notebooks(_executed(table.format(t="1.7")), _executed(table.format(t="0.4"))) == []
    # the other columns of the same rows are still compared
    changed = table.format(t="1.7").replace("0.747 ", "0.701 ")
    assert "0.747 (stored) vs 0.701 (fresh)" in xn.compare_notebooks(_executed(table.format(t="1.7")),
                                                                     _executed(changed))[0]
    client = "<Client: 'tcp://127.0.0.1:<port>' processes=2 threads={n}, memory={m} GiB>\n"
    assert xn.compare_notebooks(_executed(client.format(n=2, m=23.54)), _executed(client.format(n=16, m=125.7))) == []


def test_command_line_compare(tmp_path, capsys):
    a, b = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    nbformat.write(_executed(), a)
    nbformat.write(_executed("balanced accuracy 0.701 on 24 blocks\n"), b)
    assert xn.main(["--compare", str(a), str(a)]) == 0
    assert xn.main(["--compare", str(a), str(b)]) == 1
    assert "0.747 (stored) vs 0.701 (fresh)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# rules for a stored notebook


def test_check_executed_accepts_a_clean_executed_notebook():
    assert xn.check_executed(_executed(), "t.ipynb", size=10_000) == []


def test_check_executed_refuses_what_a_reader_must_not_see():
    plain = _executed()
    del plain.metadata["eoembed"]
    assert "not executed by scripts/execute_notebooks.py" in xn.check_executed(plain, "t.ipynb")[0]
    skipped = _executed()
    skipped.cells[2].execution_count = None
    assert "execution count None, expected 2" in " ".join(xn.check_executed(skipped, "t.ipynb"))
    error = _executed()
    error.cells[2].outputs.append(new_output("error", ename="KeyError", evalue="'x'", traceback=["..."]))
    assert "stores an error (KeyError" in " ".join(xn.check_executed(error, "t.ipynb"))
    trace = _executed()
    trace.cells[1].outputs.append(new_output("stream", name="stderr",
                                             text="Traceback (most recent call last):\n  ...\nValueError\n"))
    assert "prints a traceback" in " ".join(xn.check_executed(trace, "t.ipynb"))
    stale = _executed()
    stale.cells[2].source = "draw(); tokens + 1"
    msg = " ".join(xn.check_executed(stale, "t.ipynb"))
    assert "code cell(s) [1] changed after the outputs were stored" in msg
    assert "python scripts/execute_notebooks.py t.ipynb" in msg
    added = _executed()
    added.cells.append(new_code_cell("more()", execution_count=3))
    assert "cells added or removed" in " ".join(xn.check_executed(added, "t.ipynb"))
    widget = _executed()
    widget.cells[2].outputs[0].data[xn.WIDGET_VIEW] = {"model_id": "abc"}
    assert "widget view" in " ".join(xn.check_executed(widget, "t.ipynb"))


def test_check_executed_enforces_the_size_limits():
    assert "400 kB on disk (limit 300 kB)" in " ".join(xn.check_executed(_executed(), "t.ipynb", size=400_000))
    big = _executed()
    big.cells[2].outputs[0].data["image/png"] = _png(colours=1000, size=220)  # noise: ~145 kB as PNG
    assert "kB PNG (limit 120 kB)" in " ".join(xn.check_executed(big, "t.ipynb"))


def test_command_line_lint(tmp_path, capsys):
    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    nbformat.write(_executed(), good)
    raw = _executed()
    raw.cells[1].outputs, raw.cells[1].execution_count = [], None
    nbformat.write(raw, bad)
    assert xn.main(["--lint", str(good)]) == 0
    assert xn.main(["--lint", str(good), str(bad)]) == 1
    assert "bad.ipynb: code cell 0 has execution count None" in capsys.readouterr().out


def test_missing_shared_data_fails_clearly_and_writes_nothing(tmp_path, monkeypatch, capsys):
    nb = tmp_path / "t.ipynb"
    nbformat.write(_executed(), nb)
    before = nb.read_bytes()
    monkeypatch.setenv("EOEMBED_SHARED", str(tmp_path / "no-shared"))
    assert xn.main([str(nb)]) == 2
    err = capsys.readouterr().err
    assert "shared data/weights not found" in err and "worldcereal_preprocessed_inputs.nc" in err
    assert "EOEMBED_SHARED" in err and nb.read_bytes() == before


# ---------------------------------------------------------------------------------------------------------------
# deterministic storage


def _raw_run(uuid: str, seconds: str, tmpname: str):
    """What nbclient hands back: timing metadata, kernel counts, split streams, random ids, widget views."""
    import tempfile

    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    html = f"<div class='xr-wrap'><input id='attrs-{uuid}'></div>"
    nb.cells = [
        new_code_cell("", execution_count=None),
        new_code_cell("x", execution_count=7, metadata={"execution": {"iopub.execute_input": seconds}}, outputs=[
            new_output("stream", name="stdout", text=f"a 1 <Client: 'tcp://127.0.0.1:{int(uuid[:4], 16)}'>\n"),
            new_output("stream", name="stdout", text=f"b 2 at 0x7f3a{uuid[:6]} in {tempfile.gettempdir()}/{tmpname}/x\n"),
            new_output("stream", name="stderr", text="10%\r50%\r100%\n"),
            new_output("stream", name="stderr", text=f"/tmp/ipykernel_{int(uuid[:2], 16)}/98{int(uuid[2:4], 16)}.py:3: "
                       "UserWarning: w\n/opt/venv-x/lib/python3.11/site-packages/zarr/api.py:247: ZarrUserWarning\n"),
            new_output("execute_result", execution_count=7, data={"text/plain": "<xarray.DataArray>", "text/html": html}),
            new_output("display_data", data={xn.WIDGET_VIEW: {"model_id": uuid}, "text/plain": "Explorer()"}),
            new_output("display_data", data={"text/html": f"<table id='T_{uuid}'></table>", "text/plain": "df"}),
            _figure(_png(colours=1000, size=64))])]
    for i, cell in enumerate(nb.cells):  # ids come from the committed file: the same in every run
        cell.id = f"cell{i}"
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    return nb


def test_normalise_is_deterministic_and_strips_run_specific_details():
    src = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    a = xn.normalise(_raw_run("12345678-aaaa-4bbb-8ccc-0123456789ab", "t1", "tmpab12"), src)
    b = xn.normalise(_raw_run("87654321-dddd-4eee-8fff-ba9876543210", "t2", "tmpzz99"), src)
    assert nbformat.writes(a) == nbformat.writes(b)
    cell = a.cells[1]
    assert cell.execution_count == 1 and "execution" not in cell.metadata
    assert a.cells[0].execution_count is None
    outs = cell.outputs
    assert [o.output_type for o in outs] == ["stream", "stream", "execute_result", "display_data", "display_data",
                                             "display_data"]
    assert outs[0].text.startswith("a 1 <Client: 'tcp://127.0.0.1:<port>'>\nb 2 at 0x… in ") and outs[0].text.endswith("/tmpdir1/x\n")
    assert outs[1].text == "100%\n<cell>:3: UserWarning: w\nsite-packages/zarr/api.py:247: ZarrUserWarning\n"
    assert outs[2].execution_count == 1 and set(outs[2].data) == {"text/plain"}  # xarray's HTML dropped
    assert set(outs[3].data) == {"text/plain"}  # widget view dropped, text kept
    assert "T_00000000-0000-4000-8000-000000000001" in outs[4].data["text/html"]  # other HTML kept, ids stable
    assert a.metadata["eoembed"]["code_sha256"] == xn.code_digest(a) and "widgets" not in a.metadata
    assert "language_info" not in a.metadata  # the committed metadata, not the kernel's version
    assert xn.check_executed(a, "t") == []


def test_normalise_orders_stdout_before_stderr_between_rich_outputs():
    """The kernel's stdout and stderr race; their stored order must not depend on who won."""
    def run(first):
        nb = new_notebook()
        streams = [new_output("stream", name="stdout", text="table 1\n"),
                   new_output("stream", name="stderr", text="Warning: w\n")]
        nb.cells = [new_code_cell("x", execution_count=3, outputs=(streams if first == "stdout" else streams[::-1])
                                  + [_figure(_png()), new_output("stream", name="stdout", text="after\n")])]
        nb.cells[0].id = "c0"
        return xn.normalise(nb)

    a, b = run("stdout"), run("stderr")
    assert nbformat.writes(a) == nbformat.writes(b)
    assert [(o.output_type, o.get("name")) for o in a.cells[0].outputs] == [
        ("stream", "stdout"), ("stream", "stderr"), ("display_data", None), ("stream", "stdout")]


def test_normalise_shrinks_true_colour_pngs_and_keeps_them_valid():
    from PIL import Image

    raw = _png(colours=100_000, size=200)
    small = xn._small_png(raw)
    assert len(small) < len(raw)
    with Image.open(io.BytesIO(base64.b64decode(small))) as im:
        assert im.size == (200, 200) and im.mode == "P"
    few = _png(colours=5, size=64)  # few colours: lossless, not quantised
    with Image.open(io.BytesIO(base64.b64decode(xn._small_png(few)))) as im, \
            Image.open(io.BytesIO(base64.b64decode(few))) as orig:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(orig.convert("RGB")))


@pytest.mark.slow
def test_executing_twice_stores_the_same_file(tmp_path):
    """A real kernel: a notebook with printed floats and a figure, executed twice → identical bytes, matching."""
    pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_code_cell("import numpy as np, matplotlib.pyplot as plt\nx = np.linspace(0, 1, 50)\n"
                              "print(f'mean {x.mean():.4f}')"),
                new_code_cell("fig, ax = plt.subplots(figsize=(3, 2)); ax.plot(x, x ** 2); x.sum()")]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    texts = []
    with xn.notebook_kernel() as kernel:
        for _ in range(2):
            xn.write(xn.normalise(xn.execute(path, kernel, timeout=120), nb), path)
            texts.append(path.read_text())
    assert texts[0] == texts[1]
    stored = nbformat.reads(texts[1], as_version=4)
    assert xn.check_executed(stored, "tiny", size=len(texts[1])) == []
    assert "mean 0.5000" in stored.cells[0].outputs[0].text
    assert [o.output_type for o in stored.cells[1].outputs] == ["execute_result", "display_data"]  # the figure is drawn after the cell
    changed = copy.deepcopy(stored)
    changed.cells[0].outputs[0].text = "mean 0.5100\n"
    assert xn.compare_notebooks(stored, changed) and xn.compare_notebooks(stored, stored) == []
    assert json.loads(texts[1])["metadata"]["eoembed"]["code_sha256"] == xn.code_digest(nb)


def test_a_checkout_under_the_temp_folder_is_written_relative_not_as_a_temp_dir(monkeypatch):
    """CI clones under /tmp: its paths must read as '.' and '../shared', as in the stored outputs."""
    import tempfile

    base = Path(tempfile.gettempdir()) / "ci-clone-x"
    monkeypatch.setattr(xn, "ROOT", base / "repo")
    monkeypatch.setenv("EOEMBED_SHARED", str(base / "shared"))
    text = f"source: {base}/shared/data/cube.nc; notebook {base}/repo/tutorials/a.ipynb; scratch {base}-tmp/x"
    got = xn._stable_text(text, {}, {})
    assert got.startswith("source: ../shared/data/cube.nc; notebook ./tutorials/a.ipynb; scratch ")
    assert "ci-clone-x" not in got  # a real temporary folder still gets a stable name


def test_store_run_fingerprints_are_stable_but_content_hashes_are_kept():
    got = xn._stable_text("run 15083b0791ff7d71 vs d436579c4da1e8b0; weights SHA-256: eab6acacf527886a ...", {}, {})
    assert got == "run <fingerprint> vs <fingerprint>; weights SHA-256: eab6acacf527886a ..."


# ---------------------------------------------------------------------------------------------------------------
# no warning that eoembed raises about itself in a stored output

import re  # noqa: E402

#: a warning line attributed to one of eoembed's own modules, as a notebook shows it on stderr (checkout-relative,
#: ``site-packages/eoembed/...`` or an absolute path): ``eoembed/analysis/cluster.py:194: UserWarning: ...``
LIBRARY_WARNING = re.compile(r"(?<![\w.-])eoembed[/\\](?:[\w.-]+[/\\])*[\w.-]+\.py:\d+: \w*Warning\b[^\n]*")
STORED = sorted((ROOT / "tutorials").glob("*.ipynb")) + sorted((ROOT / "notebooks").glob("*.ipynb"))


def eoembed_warnings(nb) -> list[str]:
    """``"cell N: <warning line>"`` for every eoembed warning in the code cells' outputs (streams, rich text)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] if out.get("output_type") == "stream" else []
            texts += [out.get("data", {}).get("text/plain", "")] + list(out.get("traceback", []))
            for t in texts:
                t = "".join(t) if isinstance(t, list) else t
                found += [f"cell {i}: {m.group(0)[:200]}" for m in LIBRARY_WARNING.finditer(t)]
    return found


def test_the_eoembed_warning_detector():
    def nb_with(stderr: str):
        nb = _executed()
        nb.cells[1].outputs.append(new_output("stream", name="stderr", text=stderr))
        return nb
    for line in ("eoembed/analysis/cluster.py:194: UserWarning: k=7 clusters have a mean silhouette of 0.21\n",
                 "site-packages/eoembed/analysis/regress.py:563: UserWarning: only 4 blocks\n",
                 "/work/x/eoembed/data/training.py:12: RuntimeWarning: Mean of empty slice\n"):
        assert eoembed_warnings(nb_with(line)) == [f"cell 1: {line[line.index('eoembed/'):].strip()}"], line
    for line in ("site-packages/zarr/api/asynchronous.py:247: ZarrUserWarning: Consolidated metadata ...\n",
                 "<cell>:3: UserWarning: a warning of the notebook's own code\n",
                 "site-packages/not_eoembed/x.py:1: UserWarning: another package\n",
                 "eoembed/analysis/cluster.py:194: the source line of a traceback, no warning\n"):
        assert eoembed_warnings(nb_with(line)) == [], line


@pytest.mark.parametrize("path", STORED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_stored_outputs_hold_no_eoembed_warning(path):
    """A reader must not see the library warn about itself in a committed notebook: handle the cause, or catch the
    warning and print what it says as a sentence (e.g. a cluster map's ``eoembed:cluster_structure``)."""
    found = eoembed_warnings(nbformat.read(path, as_version=4))
    assert not found, (f"{path.relative_to(ROOT)} stores warnings raised by eoembed's own modules "
                       f"(rerun: python scripts/execute_notebooks.py {path.relative_to(ROOT)}):\n" + "\n".join(found))
