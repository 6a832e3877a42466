"""Take the explorer screenshot of the docs (docs/explorer.png) and write its caption from the same run.

    python scripts/screenshot_explorer.py            # writes docs/explorer.png and the caption in docs/explorer.md
    python scripts/screenshot_explorer.py --notebook notebooks/explore.ipynb   # the stored notebook's map picture

With ``--notebook``, the notebook itself is run in JupyterLab (Run All), the output that holds its first map
(``--map``: which one) is saved as a PNG, and a markdown cell with that PNG (a cell attachment, so the stored
notebook shows a map wherever it is read: its widgets only draw in a live kernel) and its caption
(:data:`NOTEBOOK_CAPTIONS`) is put right after the map's cell, replacing the one of an earlier run.

What it shows is real and reproducible: the WorldCereal training sample of ``../shared`` (640 m × 640 m in
Flanders, monthly composites built by :func:`eoembed.data.training_cube`), embedded with the real Galileo-Nano
weights (``../shared/weights/galileo-nano``); a few labelled patches per crop type, drawn at random (fixed seed)
from the real 2019 parcel-register labels (:func:`eoembed.data.training_labels`, WorldCereal crop-type codes);
one search click; Train. Everything is done through the explorer's public methods (what the mouse does), then
JupyterLab renders the widget in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``) and the widget's
output area is saved as a 256-colour PNG.

The caption between the ``<!-- explorer-screenshot -->`` markers of docs/explorer.md is rewritten with the
numbers of this run (labels per class, the panel's spatial-CV balanced accuracy, chance level, and how the class
map agrees with every other labelled patch), so image and text cannot disagree.

Needs the ``viz``, ``search``, ``models`` and ``notebook`` extras, playwright and chromium; nothing is
downloaded. Exit status 2 when the shared data, the weights or chromium are missing.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import execute_notebooks as xn  # noqa: E402  (scripts/: the kernel set-up the notebooks use)

from eoembed.testing import dismiss_popups, jupyterlab, write_notebook  # noqa: E402

ROOT = xn.ROOT
CHROMIUM = Path("/usr/bin/chromium")
MARK_BEGIN, MARK_END = "<!-- explorer-screenshot -->", "<!-- /explorer-screenshot -->"

BUILD = """\
import json, warnings
import numpy as np
import eoembed
from eoembed.classify import sample_labels
from eoembed.data import crop_type_names, training_cube, training_labels

FOLDER, WEIGHTS = {folder!r}, {weights!r}
PER_CLASS, SEED, BLOCK = {per_class}, {seed}, 160.0   # BLOCK: the spatial-CV block of tutorial 04
cube = training_cube(FOLDER, composite="monthly")
truth = training_labels(FOLDER)
emb = cube.eo.embed(model="galileo-nano", weights=WEIGHTS, patch_size=4, progress=False)
patches = sample_labels(emb, truth)                  # every labelled patch (label under the patch centre)
counts = patches["label"].value_counts()
classes = sorted(int(c) for c, n in counts.items() if n >= 2 * PER_CLASS)  # enough left to check the map
rng = np.random.default_rng(SEED)
NAMES = crop_type_names(classes)                     # WorldCereal legend: code -> crop name
picked = patches.iloc[np.concatenate([np.sort(rng.choice(np.flatnonzero(patches["label"].to_numpy() == c),
                                                          PER_CLASS, replace=False)) for c in classes])]
ex = emb.eo.explore(cube, k=10, fewshot_kwargs={{"block_size": BLOCK}})
query = picked.iloc[0]
ex.click(float(query.x), float(query.y))            # a search click on a labelled patch
ex.set_mode("label")
for r in picked.itertuples():
    ex.label(float(r.x), float(r.y), NAMES[int(r.label)])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ex.train()
ex"""

STATE = """\
rep = ex.cv_report
names = [str(c) for c in ex.classifier.classes_]
codes = ex.classifier.predict_map()["class"].values  # string classes: codes 0..K-1 into names, nodata < 0
others = patches[patches["label"].isin(classes)].merge(picked[["row", "col"]], how="left", on=["row", "col"],
                                                       indicator=True)
others = others[others["_merge"] == "left_only"]          # the labelled patches not used for training
got = np.array([names[v] if 0 <= v < len(names) else "nodata" for v in codes[others["row"], others["col"]]])
want = np.array([NAMES[int(c)] for c in others["label"]])
recalls = [float((got[want == w] == w).mean()) for w in np.unique(want)]
print("STATE", json.dumps({{
    "patch_grid": [int(emb.sizes["y"]), int(emb.sizes["x"])], "patch_m": float(abs(emb.rio.resolution()[0])),
    "months": int(cube.sizes["time"]), "time": [str(cube.time.values[0])[:7], str(cube.time.values[-1])[:7]],
    "model": emb.attrs["eoembed:model"], "position": emb.attrs.get("eoembed:position"),
    "classes": names, "codes": {{n: int(c) for c, n in NAMES.items()}}, "per_class": {per_class},
    "n_labels": int(len(ex.labels)), "query": [int(query.row), int(query.col), NAMES[int(query.label)]], "top_hit_scores": [round(float(s), 3) for s in
                                                                                    ex.hits["score"].head(10)],
    "cv": None if rep is None else {{"balanced_accuracy": round(float(rep.balanced_accuracy), 3),
                                    "accuracy": round(float(rep.accuracy), 3), "n_splits": int(rep.n_splits),
                                    "n_blocks": int(rep.n_blocks), "block_m": float(rep.block_size),
                                    "n_samples": int(rep.n_samples), "spatial": bool(rep.spatial),
                                    "recall": {{str(c): round(float(r), 2) for c, r in rep.per_class["recall"].items()}}}},
    "heldout": {{"n": int(len(others)), "balanced_accuracy": round(float(np.mean(recalls)), 3),
                "accuracy": round(float((got == want).mean()), 3)}},
    "all_classes": {{int(c): int(n) for c, n in counts.items()}},
    "error": None if ex.last_error is None else repr(ex.last_error)}}))"""


def _shoot(url: str, out_png: Path, width: int, timeout_s: float) -> dict:
    """Open the notebook, run all, wait for the explorer and the STATE line; save the widget as PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": width, "height": 1900})
        try:
            page.goto(f"{url}/lab/tree/explorer.ipynb", wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            dismiss_popups(page)
            try:  # fold the file browser away: the notebook (and the map) get the width
                page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click(timeout=5000)
            except Exception:  # no open left sidebar
                pass
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            cells = page.locator(".jp-Notebook .jp-Cell")
            state_out = cells.nth(1).locator(".jp-OutputArea-output", has_text="STATE")
            state_out.first.wait_for(timeout=timeout_s * 1000)
            state = json.loads(re.search(r"STATE (.*)", state_out.first.inner_text()).group(1))
            # the explorer's output area (its colour bar is an Output widget with an output area of its own)
            widget = cells.nth(0).locator(".jp-OutputArea-output", has=page.locator(".leaflet-container")).first
            widget.locator(".leaflet-container img.leaflet-image-layer").nth(2).wait_for(state="attached",
                                                                                        timeout=60_000)
            widget.locator(".bqplot.figure").first.wait_for(timeout=60_000)
            widget.locator(".leaflet-control", has_text="class").first.wait_for(timeout=60_000)  # the class legend
            widget.scroll_into_view_if_needed()
            time.sleep(2.0)  # let leaflet finish fading the overlays in
            widget.screenshot(path=str(out_png))
        except Exception:
            failure = Path(tempfile.gettempdir()) / "explorer-screenshot-failure.png"
            page.screenshot(path=str(failure))
            print(f"failed; the page as it was: {failure}", file=sys.stderr)
            raise
        finally:
            browser.close()
    return state


#: What each notebook's map shows when all its cells have run (``--notebook``): the caption under the picture.
NOTEBOOK_CAPTIONS = {
    "explore.ipynb": (
        "The explorer above as it looks once every cell of this notebook has run (its widget only draws in a "
        "live kernel, so this stored notebook carries a screenshot): `spectral` embeddings of the shared "
        "WorldCereal sample (25 × 25 patches of 40 m), no basemap. On the map: the class map that **Train** drew "
        "from the 8 labelled patches (white rings; classes *similar* and *different* in the legend) over the "
        "similarity layer of the last search, whose colour bar is shown; magenta circles mark that search's hits. "
        "Beside it: the modes and layer controls, the embedding view (PCA of the 625 patches, the query as a "
        "diamond), the spatial-CV report of the training and the table of hits."),
    "leafmap_layers.ipynb": (
        "The leafmap map `m` above as it looks once its cells have run (widgets only draw in a live kernel, so "
        "this stored notebook carries a screenshot; offline, no basemap tiles load). Layers stack in the order "
        "they were added: on top is the few-shot classifier's probability layer (each patch's highest class "
        "probability in magma: pale yellow near 1, red and purple lower), over the class, similarity and PCA-RGB "
        "layers of the `spectral` embeddings of the shared WorldCereal sample; the two parcels are outlined, "
        "with the similarity colour bar and the class legend. The class map's COG tile layer (localtileserver, "
        "named in the attribution) drew no tiles in this headless capture."),
}
#: Marks the markdown cell this script writes (replaced, never duplicated, by the next run).
SHOT_TAG = "map-screenshot"


def _shoot_notebook(url: str, name: str, out_png: Path, which: int, width: int, timeout_s: float) -> None:
    """Open ``name``, run all, wait for the last code cell's output, save the ``which``-th map's output area."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": width, "height": 1400})
        try:
            page.goto(f"{url}/lab/tree/{name}", wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            dismiss_popups(page)
            try:
                page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click(timeout=5000)
            except Exception:  # no open left sidebar
                pass
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            last = page.locator(".jp-Notebook .jp-CodeCell").last
            last.locator(".jp-OutputArea-output").first.wait_for(timeout=timeout_s * 1000)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
                timeout=timeout_s * 1000)
            widget = page.locator(".jp-OutputArea-output", has=page.locator(".leaflet-container")).nth(which)
            widget.locator(".leaflet-container img.leaflet-image-layer, .leaflet-container img.leaflet-tile-loaded"
                           ).first.wait_for(state="attached", timeout=60_000)
            widget.scroll_into_view_if_needed()
            time.sleep(8.0)  # let leaflet fade the overlays in and the tiles arrive
            widget.screenshot(path=str(out_png))
        except Exception:
            failure = Path(tempfile.gettempdir()) / "notebook-screenshot-failure.png"
            page.screenshot(path=str(failure))
            print(f"failed; the page as it was: {failure}", file=sys.stderr)
            raise
        finally:
            browser.close()


def _is_map(output: dict) -> bool:
    """A stored output of a map widget: its widget view, or (widget state not stored) its ``Map(``/``Explorer(`` repr."""
    data = output.get("data", {})
    text = "".join(data.get("text/plain", ""))
    return "application/vnd.jupyter.widget-view+json" in data or bool(re.match(r"\W*(Explorer|Map)\(", text))


def put_picture(nb_path: Path, png: bytes, caption_text: str, which: int = 0) -> None:
    """Put a markdown cell with ``png`` (as a cell attachment) and its caption after the cell of map ``which``.

    The map cells are the code cells whose stored output is a widget (the explorer or a leafmap map); an
    earlier picture cell (tagged :data:`SHOT_TAG`) is removed first. Code cells are untouched, so the
    notebook's stored outputs stay current (the staleness check hashes code cells only).
    """
    import base64

    nb = json.loads(nb_path.read_text())
    cells = [c for c in nb["cells"] if SHOT_TAG not in c.get("metadata", {}).get("tags", [])]
    maps = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and any(_is_map(o) for o in c.get("outputs", []))]
    if len(maps) <= which:
        raise SystemExit(f"{nb_path}: {len(maps)} cell(s) with a widget output; no map number {which}")
    name = nb_path.stem.replace("_", "-") + "-map.png"
    text = f"![Screenshot of the map of {nb_path.name} after all its cells ran](attachment:{name})\n\n*{caption_text}*"
    cell = {"cell_type": "markdown", "id": f"shot{which}", "metadata": {"tags": [SHOT_TAG]},
            "attachments": {name: {"image/png": base64.b64encode(png).decode()}},
            "source": text.splitlines(keepends=True)}
    cells.insert(maps[which] + 1, cell)
    nb["cells"] = cells
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def notebook_picture(nb_path: Path, which: int, width: int, timeout_s: float, out: Path | None = None,
                     view: int | None = None) -> int:
    """``--notebook``: run ``nb_path`` in JupyterLab, screenshot map view ``view`` (default ``which``), put it
    in the notebook after the cell of map ``which``."""
    caption_text = NOTEBOOK_CAPTIONS.get(nb_path.name)
    if caption_text is None:
        raise SystemExit(f"no caption for {nb_path.name}: add what its map shows to NOTEBOOK_CAPTIONS")
    shared = xn.shared_dir()
    with tempfile.TemporaryDirectory(prefix="eoembed-shot-") as tmp, xn.notebook_kernel(shared):
        work = Path(tmp) / "work"
        work.mkdir()
        (work / nb_path.name).write_text(nb_path.read_text())
        png = out or Path(tmp) / "map.png"
        with jupyterlab(tmp, kernel="python3") as url:
            _shoot_notebook(url, nb_path.name, png, which if view is None else view, width, timeout_s)
        size = _small(png)
        data = png.read_bytes()
    day = date.today().isoformat()
    rel = nb_path.relative_to(ROOT) if nb_path.is_relative_to(ROOT) else nb_path
    opts = (f" --map {which}" if which else "") + (f" --view {view}" if view is not None and view != which else "")
    put_picture(nb_path, data, f"{caption_text} Screenshot of {day}: `python scripts/screenshot_explorer.py "
                               f"--notebook {rel}{opts}`.", which)
    print(f"put a {size / 1e3:.0f} kB map picture in {nb_path}")
    return 0


def _small(png: Path) -> int:
    """256-colour palette PNG (the widget has a few hundred colours; true colour is dithered)."""
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        q = im if im.getcolors(256) else im.quantize(256, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        q.save(buf, format="PNG", optimize=True)
    png.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def caption(state: dict, day: str) -> str:
    """The honest caption of the screenshot, from the numbers of the run that took it."""
    cv, held, k = state["cv"], state["heldout"], state["per_class"]
    n_cls = len(state["classes"])
    codes = ", ".join(f"{c} ({state['codes'][c]})" for c in state["classes"])
    if cv is None:
        cv_text = "The panel says why no spatial CV was possible on these labels."
    else:
        lo = min(cv["recall"], key=cv["recall"].get)
        hi = max(cv["recall"], key=cv["recall"].get)
        cv_text = (f"The panel reports spatial-block CV balanced accuracy **{cv['balanced_accuracy']:.3f}** on those "
                   f"{cv['n_samples']} patches ({cv['n_splits']} folds over {cv['n_blocks']} blocks of "
                   f"{cv['block_m']:g} m; guessing among {n_cls} classes scores {1 / n_cls:.3f}); per-class recall "
                   f"runs from {cv['recall'][lo]:.2f} ({lo}) to {cv['recall'][hi]:.2f} ({hi}), and each labelled "
                   f"patch is worth {1 / (k * n_cls):.2f} of that balanced accuracy, so it is a rough estimate.")
    return (
        f"*The explorer in JupyterLab ({day}; `python scripts/screenshot_explorer.py`). Real Galileo-Nano "
        f"embeddings ({state['position']} positions) of the WorldCereal training sample in Flanders: "
        f"{state['patch_grid'][0]} × {state['patch_grid'][1]} patches of {state['patch_m']:g} m, "
        f"{state['months']} monthly composites {state['time'][0]} … {state['time'][1]}. {k} patches per crop type "
        f"were labelled, drawn at random from the 2019 parcel register ({codes}, named from the WorldCereal legend: the classes with "
        f"at least {2 * k} labelled patches; points in their class colour with a white ring), and **Train** drew "
        f"the class map (legend). {cv_text} Checked against the register's other {held['n']} labelled patches of "
        f"these classes, the class map scores balanced accuracy {held['balanced_accuracy']:.3f} (accuracy "
        f"{held['accuracy']:.3f}). Magenta circles: the top-10 hits of one search click on a {state['query'][2]} "
        f"patch (the patch itself first; cosine {state['top_hit_scores'][-1]:.3f}–{state['top_hit_scores'][0]:.3f}); "
        f"its similarity layer lies under the class map, its colour bar is shown. The embedding view (PCA of all "
        f"{state['patch_grid'][0] * state['patch_grid'][1]} patches) marks the clicked patch.*")


def write_caption(doc: Path, text: str) -> None:
    """Put the image and its caption between the markers of ``doc`` (replacing the earlier ones)."""
    block = (f"{MARK_BEGIN}\n![The explorer in JupyterLab: crop-type class map after training on a few labels, "
             f"spatial-CV report, embedding view](explorer.png)\n\n{text}\n{MARK_END}")
    src = doc.read_text()
    if MARK_BEGIN in src:
        src = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: block, src, flags=re.S)
    else:
        raise SystemExit(f"{doc}: no {MARK_BEGIN} … {MARK_END} markers where the screenshot goes")
    doc.write_text(src)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "explorer.png")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "explorer.md",
                   help="markdown page whose marked block gets the image and caption")
    p.add_argument("--per-class", type=int, default=5, help="labelled patches per crop type (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=1400, help="browser viewport width in px (default 1400)")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the notebook (default 900)")
    p.add_argument("--notebook", type=Path, default=None,
                   help="instead: run this notebook and put a picture of its map in it (after the map's cell)")
    p.add_argument("--map", type=int, default=0, help="with --notebook: after which of its map outputs the picture "
                   "goes (default 0, the first)")
    p.add_argument("--view", type=int, default=None, help="with --notebook: which map output on the page to "
                   "photograph (default: --map; an earlier view of the same map widget draws the same layers)")
    args = p.parse_args(argv)
    if args.notebook is not None:
        if not CHROMIUM.exists():
            print(f"cannot take the screenshot, not found: {CHROMIUM}", file=sys.stderr)
            return 2
        out = None if args.out == ROOT / "docs" / "explorer.png" else args.out
        return notebook_picture(args.notebook.resolve(), args.map, args.width, args.timeout, out, args.view)
    shared = xn.shared_dir()
    folder, weights = shared / "data" / "worldcereal-training", shared / "weights" / "galileo-nano"
    missing = [str(x) for x in (folder, weights, CHROMIUM) if not x.exists()]
    if missing:
        print("cannot take the screenshot, not found: " + ", ".join(missing) + "\n(the shared folder beside the "
              "repository or $EOEMBED_SHARED; Debian's chromium: apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="eoembed-shot-") as tmp, xn.notebook_kernel(shared):
        work = Path(tmp) / "work"
        work.mkdir()
        write_notebook(work / "explorer.ipynb", [
            BUILD.format(folder=str(folder), weights=str(weights), per_class=args.per_class, seed=args.seed),
            STATE.format(per_class=args.per_class)], kernel="python3")
        with jupyterlab(tmp) as url:
            t0 = time.perf_counter()
            state = _shoot(url, args.out, args.width, args.timeout)
    if state.get("error"):
        print(f"the explorer reported an error: {state['error']}", file=sys.stderr)
        return 1
    size = _small(args.out)
    text = caption(state, date.today().isoformat())
    write_caption(args.doc, text)
    print(json.dumps(state, indent=1))
    print(f"wrote {args.out} ({size / 1e3:.0f} kB) in {time.perf_counter() - t0:.0f} s and the caption in {args.doc}:")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
