"""scripts/screenshot_explorer.py without a browser: the caption says the numbers of the run, and it replaces only
the marked block of the docs page."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
_spec = importlib.util.spec_from_file_location("screenshot_explorer", ROOT / "scripts" / "screenshot_explorer.py")
se = sys.modules.setdefault("screenshot_explorer", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(se)

STATE = {"patch_grid": [16, 16], "patch_m": 40.0, "months": 16, "time": ["2018-08", "2019-11"],
         "model": "galileo-nano", "position": "neutral", "classes": ["Winter wheat", "Maize", "Sugar beet"],
         "codes": {"Winter wheat": 1110, "Maize": 1200, "Sugar beet": 8100},
         "per_class": 5, "n_labels": 15, "query": [3, 8, "Winter wheat"], "top_hit_scores": [1.0, 0.999, 0.995],
         "cv": {"balanced_accuracy": 0.52, "accuracy": 0.533, "n_splits": 5, "n_blocks": 14, "block_m": 160.0,
                "n_samples": 15, "spatial": True, "recall": {"Winter wheat": 1.0, "Maize": 0.4, "Sugar beet": 0.0}},
         "heldout": {"n": 120, "balanced_accuracy": 0.749, "accuracy": 0.642}, "error": None}


def test_caption_states_the_numbers_of_the_run():
    text = se.caption(STATE, "2026-12-04")
    for part in ("**0.520** on those 15 patches", "guessing among 3 classes scores 0.333", "0.00 (Sugar beet)",
                 "1.00 (Winter wheat)", "worth 0.07 of that balanced accuracy", "other 120 labelled patches",
                 "balanced accuracy 0.749 (accuracy 0.642)", "16 × 16 patches of 40 m", "2018-08 … 2019-11",
                 "Winter wheat (1110), Maize (1200), Sugar beet (8100)", "click on a Winter wheat patch", "cosine 0.995–1.000", "2026-12-04"):
        assert part in text, part
    assert "no spatial CV" in se.caption({**STATE, "cv": None}, "d")


def test_write_caption_replaces_only_the_marked_block(tmp_path):
    doc = tmp_path / "explorer.md"
    doc.write_text(f"# Explorer\n\nbefore\n{se.MARK_BEGIN}\nold caption\n{se.MARK_END}\n\nafter\n")
    se.write_caption(doc, "new caption")
    src = doc.read_text()
    assert "old caption" not in src and "new caption" in src and "(explorer.png)" in src
    assert src.startswith("# Explorer\n\nbefore\n") and src.endswith("\n\nafter\n")
    se.write_caption(doc, "newer caption")  # again: still one block
    assert doc.read_text().count(se.MARK_BEGIN) == 1 and "newer caption" in doc.read_text()
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        se.write_caption(bare, "x")


def test_missing_inputs_fail_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EOEMBED_SHARED", str(tmp_path / "none"))
    out = tmp_path / "shot.png"
    assert se.main(["--out", str(out), "--doc", str(tmp_path / "doc.md")]) == 2
    assert "worldcereal-training" in capsys.readouterr().err and not out.exists()


MAP_NOTEBOOKS = ("notebooks/explore.ipynb", "notebooks/leafmap_layers.ipynb")


@pytest.mark.parametrize("rel", MAP_NOTEBOOKS)
def test_stored_map_notebooks_show_a_map_picture(rel):
    """Widgets only draw in a live kernel: each map notebook stores a PNG of its map, after a map cell, captioned."""
    import base64
    import io
    import json

    from PIL import Image

    nb = json.loads((ROOT / rel).read_text())
    shots = [i for i, c in enumerate(nb["cells"]) if se.SHOT_TAG in c.get("metadata", {}).get("tags", [])]
    assert len(shots) == 1, f"{rel}: {len(shots)} map pictures (run scripts/screenshot_explorer.py --notebook {rel})"
    cell = nb["cells"][shots[0]]
    prev = nb["cells"][shots[0] - 1]
    assert prev["cell_type"] == "code" and any(se._is_map(o) for o in prev["outputs"]), "not right after a map"
    (name, att), = cell["attachments"].items()
    src = "".join(cell["source"])
    assert f"(attachment:{name})" in src and src.count("*") >= 2 and "screenshot_explorer.py --notebook" in src
    assert se.NOTEBOOK_CAPTIONS[Path(rel).name] in src
    png = base64.b64decode(att["image/png"])
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.width >= 600 and im.height >= 400
        colours = im.convert("RGB").getcolors(100_000)
        assert colours is not None and len(colours) > 20  # a drawn map, not a blank output area


def test_put_picture_replaces_the_earlier_one(tmp_path):
    import json

    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# t"]},
                    {"cell_type": "code", "metadata": {}, "source": ["m"], "execution_count": 1,
                     "outputs": [{"output_type": "execute_result", "metadata": {}, "execution_count": 1,
                                  "data": {"text/plain": ["Map(center=[0, 0])"]}}]},
                    {"cell_type": "code", "metadata": {}, "source": ["print(1)"], "execution_count": 2,
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "explore.ipynb"
    p.write_text(json.dumps(nb))
    se.put_picture(p, b"\x89PNG first", "first caption")
    se.put_picture(p, b"\x89PNG second", "second caption")
    cells = json.loads(p.read_text())["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "markdown", "code"]
    assert "second caption" in "".join(cells[2]["source"]) and "first" not in "".join(cells[2]["source"])
    with pytest.raises(SystemExit, match="no map number 1"):
        se.put_picture(p, b"x", "c", which=1)
