"""A large cube in a real JupyterLab: zoom-dependent tiles appear as the map is zoomed and panned.

Writes a 2048 × 2048-patch (4·10⁶) lazy cube's pyramid (with its PCA-RGB COG) in the test
process, opens a notebook that calls ``emb.eo.explore(pyramid=…)`` in JupyterLab driven by
headless Chromium, and follows the browser's tile requests to localtileserver: tiles at
the first zoom, then at two deeper zooms after two presses of the zoom control, then at
new x/y after a drag — each answered 200 and drawn (``img.leaflet-tile-loaded``) — and the
kernel's ``ex.map.zoom`` agrees.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from eoembed.testing import dismiss_popups

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
N = 2048

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs /usr/bin/chromium (apt-get install -y chromium; .ci/run does)"),
]

SETUP = f"""\
import sys, json
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import eoembed
from bench_explore import lazy_synthetic
emb = lazy_synthetic({N}, chunk=512)
ex = emb.eo.explore(scatter=None, pyramid="pyr")
print("READY", json.dumps({{"layer": type(ex.layers["PCA-RGB"]).__name__, "zoom": ex.map.zoom}}))
ex"""

STATE = """\
print("STATE", json.dumps({"zoom": ex.map.zoom, "error": None if ex.last_error is None else repr(ex.last_error)}))"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_explore import lazy_synthetic

    from eoembed.explore.pyramid import write_pyramid
    from eoembed.testing import jupyterlab, write_notebook

    root = tmp_path_factory.mktemp("tiles-lab")
    work = root / "work"
    work.mkdir()
    write_pyramid(lazy_synthetic(N, chunk=512), work / "pyr")
    write_notebook(work / "tiles.ipynb", (SETUP, STATE))
    try:
        with jupyterlab(root, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}) as url:
            yield url
    except RuntimeError as err:
        pytest.fail(str(err))


def _output_json(page, cell: int, tag: str, timeout: float = 180_000, before: str | None = None) -> dict:
    loc = page.locator(".jp-Notebook .jp-Cell").nth(cell).locator(".jp-OutputArea-output", has_text=tag)
    deadline = time.time() + timeout / 1000
    while time.time() < deadline:
        if loc.count() and loc.first.inner_text() != before:
            break
        time.sleep(0.3)
    return json.loads(re.search(rf"{tag} (.*)", loc.first.inner_text()).group(1))


def _rerun(page, cell: int, tag: str) -> dict:
    c = page.locator(".jp-Notebook .jp-Cell").nth(cell)
    old = c.locator(".jp-OutputArea-output", has_text=tag)
    before = old.first.inner_text() if old.count() else None
    c.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return _output_json(page, cell, tag, timeout=60_000, before=before)


_TILE = re.compile(r"api/tiles/(\d+)/(\d+)/(\d+)\.png")


def _wait_tiles(page, seen: dict, pred, timeout: float = 120.0) -> set:
    """Tiles answered 200 that satisfy ``pred``; waits with Playwright (which dispatches the response events)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = {k for k, status in seen.items() if status == 200 and pred(k)}
        if got:
            return got
        page.wait_for_timeout(300)
    return set()


def test_zoom_and_pan_fetch_new_tiles_of_a_large_cube(lab):
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    seen: dict[tuple[int, int, int], int] = {}

    def on_response(resp):
        m = _TILE.search(resp.url)
        if m:
            seen[tuple(int(v) for v in m.groups())] = resp.status

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.on("response", on_response)
        try:
            page.goto(f"{lab}/lab/tree/tiles.ipynb", wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            dismiss_popups(page)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            ready = _output_json(page, 0, "READY")
            assert ready["layer"] == "BoundTileLayer", ready  # served by localtileserver, not an image overlay
            state = _output_json(page, 1, "STATE")
            z0 = state["zoom"]
            page.locator(".leaflet-container").first.scroll_into_view_if_needed()
            first = _wait_tiles(page, seen, lambda k: True)
            assert first, "no tile of the PCA-RGB layer was served"
            zs = {k[0] for k in first}
            page.locator("img.leaflet-tile-loaded[src*='api/tiles']").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "tiles-open.png"))

            # ---- zoom in two levels with the map's own control: tiles of each deeper level are fetched
            zoom_in = page.locator(".leaflet-control-zoom-in").first
            for step in (1, 2):
                zoom_in.click()
                want = max(zs) + step
                got = _wait_tiles(page, seen, lambda k, w=want: k[0] == w)
                assert got, f"no tile at zoom {want} after zooming in ({sorted(seen.items())[-10:]} …)"
                page.locator(f"img.leaflet-tile-loaded[src*='api/tiles/{want}/']").first.wait_for(timeout=30_000)
                page.wait_for_timeout(800)
            state = _rerun(page, 1, "STATE")
            assert state["zoom"] == z0 + 2 and state["error"] is None, (state, z0)
            page.screenshot(path=str(ARTIFACTS / "tiles-zoomed.png"))

            # ---- pan: drag the map; tiles at new x/y of the same zoom are fetched
            before = {k for k in seen if k[0] == max(zs) + 2}
            box = page.locator(".leaflet-container").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx - 0.45 * box["width"], cy - 0.3 * box["height"], steps=12)
            page.mouse.up()
            new = _wait_tiles(page, seen, lambda k: k[0] == max(zs) + 2 and k not in before)
            assert new, "panning fetched no new tile"
            assert all(status == 200 for status in seen.values()), seen
            page.screenshot(path=str(ARTIFACTS / "tiles-panned.png"))
        finally:
            browser.close()
