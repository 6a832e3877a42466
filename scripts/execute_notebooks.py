"""Execute the tutorials and notebooks in place, so that a reader sees their outputs, and check them.

Usage (from the repository root, with the environment that has eoembed[all] and jupyter)::

    python scripts/execute_notebooks.py                      # every tutorials/*.ipynb and notebooks/*.ipynb
    python scripts/execute_notebooks.py tutorials/01_tokens_and_cost.ipynb   # one (or a few) notebooks
    python scripts/execute_notebooks.py --check              # run fresh copies, compare with the stored outputs,
                                                             # write nothing (what the tutorial test does)
    python scripts/execute_notebooks.py --lint               # stored notebooks only: executed, no errors, not stale
    python scripts/execute_notebooks.py --compare A.ipynb B.ipynb   # compare two executed copies

Each notebook runs with nbclient in a fresh kernel of *this* interpreter (a temporary ``python3`` kernelspec),
with this checkout first on ``PYTHONPATH``, ``HF_HUB_OFFLINE=1`` and the shared data of ``../shared``
(``$EOEMBED_SHARED`` overrides). The outputs are stored so that running twice gives the same file:

- execution counts 1, 2, 3… in cell order; no timing metadata; the notebook metadata kept as committed;
- figures as PNG at :data:`FIGURE_DPI` dpi; those with more than 256 colours (true-colour images) as
  256-colour palette PNGs, about a quarter of the size (:func:`_small_png`);
- no widget views (their state is not stored, a reader would only see "model not found") and no HTML repr of
  xarray objects (~29 kB each of CSS and icons, stripped by GitHub): their text form stays;
- random ids (the UUIDs of xarray's HTML repr), memory addresses, local ports and temporary directories replaced by
  stable placeholders; absolute paths of this checkout and of ``../shared`` written relative, the library
  folder as ``site-packages/`` and a warning's cell file as ``<cell>``;
- ``metadata.eoembed.code_sha256``: a digest of each code cell's source, so a cell edited after the run is
  reported as stale (``--lint`` and the fast tutorial test).

:func:`compare_notebooks` is the comparison the tutorial test uses between a fresh run and the stored file:
cell by cell, the printed numbers agree within a tolerance (:func:`numbers_match`; durations such as
``3.2 s`` and cells tagged ``numbers-vary`` are exempt), the words around them are the same, and each cell
shows the same number and kinds of figures and rich outputs. Images are not compared pixel by pixel.
Tag a cell ``numbers-vary`` (cell metadata ``tags``) when its numbers legitimately change from run to run.

Exit status: 0 done / all match, 1 a notebook failed, differs or is not clean, 2 the shared data or weights
are missing (nothing is written).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("tutorials", "notebooks")
#: matplotlib dpi of the stored figures (the inline backend's default is 100); modest, to keep files small
FIGURE_DPI = 72
#: size limits of a committed notebook (checked by :func:`check_executed`)
MAX_NOTEBOOK_BYTES = 300_000
MAX_IMAGE_BYTES = 120_000
#: a cell whose printed numbers are allowed to change from run to run (timings, throughput)
VARY_TAG = "numbers-vary"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
RERUN = "python scripts/execute_notebooks.py {path}"


def shared_dir() -> Path:
    """The shared data folder: ``$EOEMBED_SHARED`` or ``../shared`` beside the repository."""
    env = os.environ.get("EOEMBED_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


def required_inputs(shared: Path | None = None) -> list[Path]:
    """The shared files every notebook run needs (sample cube, crop labels, Galileo-Nano weights)."""
    s = shared or shared_dir()
    return [s / "data" / "worldcereal" / "worldcereal_preprocessed_inputs.nc",
            s / "data" / "worldcereal-training", s / "weights" / "galileo-nano"]


def notebook_paths(root: Path = ROOT) -> list[Path]:
    """Every notebook that is committed executed: ``tutorials/*.ipynb`` then ``notebooks/*.ipynb``, sorted."""
    return [p for d in NOTEBOOK_DIRS for p in sorted((root / d).glob("*.ipynb"))]


# ---------------------------------------------------------------------------------------------------------------
# execution


@contextlib.contextmanager
def notebook_kernel(shared: Path | None = None):
    """Environment for executing the notebooks: a ``python3`` kernelspec that runs this interpreter.

    Sets (and restores on exit) ``JUPYTER_PATH`` (the kernelspec first), ``IPYTHONDIR`` (a profile whose inline
    backend stores PNGs at :data:`FIGURE_DPI` dpi; no user start-up files), ``PYTHONPATH`` (this checkout first,
    so the kernel imports the eoembed beside the notebooks), ``HF_HUB_OFFLINE=1``, ``EOEMBED_SHARED`` (and
    ``EOEMBED_DATA_MIRROR``, the folder :func:`eoembed.data.sample` reads) and
    ``PYTHONHASHSEED=0``; removes ``MPLBACKEND`` (figures must come back inline). Yields the kernel name.
    """
    with tempfile.TemporaryDirectory(prefix="eoembed-nbkernel-") as tmp:
        spec = Path(tmp) / "jupyter" / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (eoembed venv)", "language": "python"}))
        profile = Path(tmp) / "ipython" / "profile_default"
        profile.mkdir(parents=True)
        (profile / "ipython_kernel_config.py").write_text(
            "c.InlineBackend.figure_formats = {'png'}\n"
            f"c.InlineBackend.print_figure_kwargs = {{'bbox_inches': 'tight', 'dpi': {FIGURE_DPI}}}\n")
        env = {"JUPYTER_PATH": os.pathsep.join([str(Path(tmp) / "jupyter"), os.environ.get("JUPYTER_PATH", "")]),
               "IPYTHONDIR": str(Path(tmp) / "ipython"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "HF_HUB_OFFLINE": "1", "EOEMBED_SHARED": str(shared or shared_dir()), "PYTHONHASHSEED": "0",
               "EOEMBED_DATA_MIRROR": str(shared or shared_dir())}  # the notebooks read it through eoembed.data.sample
        saved = {k: os.environ.get(k) for k in [*env, "MPLBACKEND"]}
        os.environ.update({k: v.rstrip(os.pathsep) for k, v in env.items()})
        os.environ.pop("MPLBACKEND", None)
        try:
            yield "python3"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def execute(path: Path, kernel_name: str = "python3", *, timeout: int = 900):
    """Execute a copy of the notebook at ``path`` in its own folder; returns the executed, unnormalised copy.

    Raises ``nbclient.exceptions.CellExecutionError`` (with the cell and its traceback) when a cell fails.
    Call inside :func:`notebook_kernel`.
    """
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
                                     resources={"metadata": {"path": str(Path(path).resolve().parent)}})
    client.execute()
    return nb


def code_digest(nb) -> list[str]:
    """Short sha256 of each code cell's source (the staleness check of :func:`check_executed`)."""
    return [hashlib.sha256(c.source.encode()).hexdigest()[:12] for c in nb.cells if c.cell_type == "code"]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
#: store run fingerprints in messages (``run 15083b0791ff7d71``, eoembed.io): they cover input paths and
#: modification times, so they differ on every machine (content hashes such as a weight SHA-256 do not)
_RUN_ID = re.compile(r"\brun [0-9a-f]{16}( vs [0-9a-f]{16})?\b")
_TMPDIR = re.compile(re.escape(tempfile.gettempdir()) + r"/[\w.-]+")
#: a local server's port (a dask client, a tile server) is picked at random: ``tcp://127.0.0.1:44397``
_LOCAL_PORT = re.compile(r"((?:tcp|https?|inproc)://(?:127\.0\.0\.1|localhost)):\d+")
#: where a warning raised in a cell points: ``/tmp/ipykernel_4242/1234567.py:3`` → ``<cell>:3``
_CELL_FILE = re.compile(r"(?:/[\w.-]+)*/ipykernel_\d+/\d+\.py")
#: the interpreter's library folders, different on every machine: ``…/site-packages/zarr/x.py`` → ``site-packages/…``
_SITE = re.compile(r"(?<![\w/])(?:/[\w.+-]+)+/(site-packages|dist-packages|lib/python\d\.\d+)/")


def _stable_text(text: str, ids: dict[str, str], tmpdirs: dict[str, str]) -> str:
    def uid(m):
        return ids.setdefault(m.group(0), f"00000000-0000-4000-8000-{len(ids) + 1:012x}")

    def tmp(m):
        return tmpdirs.setdefault(m.group(0), f"{tempfile.gettempdir()}/tmpdir{len(tmpdirs) + 1}")

    text = _UUID.sub(uid, text)
    text = _ADDRESS.sub("0x…", text)
    text = _RUN_ID.sub(lambda m: "run <fingerprint>" + (" vs <fingerprint>" if m.group(1) else ""), text)
    text = _CELL_FILE.sub("<cell>", text)
    text = _SITE.sub(lambda m: m.group(1) + "/", text)
    # the checkout and ../shared first: a clone under /tmp (as in CI) must not read as a temporary folder
    for root, rel in ((shared_dir().resolve(), "../shared"), (ROOT, ".")):
        text = text.replace(str(root) + os.sep, rel + os.sep).replace(str(root), rel)
    text = _TMPDIR.sub(tmp, text)
    text = _LOCAL_PORT.sub(r"\1:<port>", text)
    return text


def _last_of_carriage_returns(text: str) -> str:
    """What a terminal shows of text with ``\\r`` (progress bars): the last segment of each line."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _small_png(b64: str) -> str:
    """The PNG made small: opaque RGBA → RGB; more than 256 colours (a true-colour image, a smooth colour
    map) → a 256-colour palette (Pillow's fast octree, Floyd–Steinberg dithered: the one lossy step, not
    visible at this size); written with ``optimize``. Kept as it was when that is not smaller."""
    try:
        from PIL import Image
    except ImportError:  # pillow is in the viz extra; without it the figure stays as matplotlib wrote it
        return b64
    raw = base64.b64decode(b64)
    out = io.BytesIO()
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        if im.mode == "RGBA" and im.getextrema()[3][0] == 255:
            im = im.convert("RGB")
        if im.mode in ("RGB", "RGBA") and im.getcolors(256) is None:
            im = im.quantize(256, method=Image.Quantize.FASTOCTREE)
        im.save(out, format="PNG", optimize=True)
    new = out.getvalue()
    return base64.b64encode(new).decode() + "\n" if len(new) < len(raw) else b64


def _is_xarray_html(html: str) -> bool:
    """xarray's HTML repr: ~29 kB per object, mostly inline CSS and SVG icons (which GitHub strips)."""
    return "xr-wrap" in html[:4000] or "xr-header" in html[:8000]


def normalise(executed, source=None):
    """Store an executed notebook deterministically (see the module docstring); returns a new notebook.

    ``source`` is the notebook as committed (its metadata is kept); defaults to ``executed``'s own.
    """
    import nbformat

    nb = copy.deepcopy(executed)
    nb.metadata = copy.deepcopy((source or executed).metadata)
    nb.metadata.pop("widgets", None)
    nb.metadata["eoembed"] = {"executed_by": "scripts/execute_notebooks.py", "code_sha256": code_digest(nb)}
    ids: dict[str, str] = {}
    tmpdirs: dict[str, str] = {}
    count = 0
    for i, cell in enumerate(nb.cells):
        if nb.nbformat_minor >= 5 and "id" not in cell:  # deterministic instead of nbformat's random ids
            cell["id"] = hashlib.sha1(f"{i}:{cell.cell_type}:{cell.source}".encode()).hexdigest()[:8]
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        if cell.execution_count is None:
            continue
        count += 1
        cell.execution_count = count
        outputs, streams = [], {}
        for out in [*cell.outputs, None]:
            if out is not None and out.output_type == "stream":
                streams[out.name] = streams.get(out.name, "") + out.text
                continue
            # stdout and stderr arrive in an order that changes from run to run: between two rich outputs, all
            # of stdout first, then all of stderr (a rich output flushes both streams before it is sent)
            for name in ("stdout", "stderr"):
                if streams.get(name):
                    text = _stable_text(_last_of_carriage_returns(streams[name]), ids, tmpdirs)
                    outputs.append(nbformat.v4.new_output("stream", name=name, text=text))
            streams = {}
            if out is None:
                break
            if out.output_type in ("display_data", "execute_result"):
                out.data.pop(WIDGET_VIEW, None)
                out.metadata.pop(WIDGET_VIEW, None)
                if "text/plain" in out.data and _is_xarray_html(out.data.get("text/html", "")):
                    del out.data["text/html"]
                if not out.data:
                    continue
                for mime, value in list(out.data.items()):
                    if mime == "image/png":
                        out.data[mime] = _small_png(value)
                    elif isinstance(value, str):
                        out.data[mime] = _stable_text(value, ids, tmpdirs)
                if out.output_type == "execute_result":
                    out.execution_count = count
            outputs.append(out)
        cell.outputs = outputs
    return nb


def write(nb, path: Path) -> int:
    """Write the notebook as nbformat does (1-space indent, trailing newline); returns its size in bytes."""
    import nbformat

    text = nbformat.writes(nb) + "\n"
    Path(path).write_text(text, encoding="utf-8")
    return len(text.encode())


# ---------------------------------------------------------------------------------------------------------------
# checks of a stored notebook


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _png_sizes(cell) -> list[int]:
    return [len(base64.b64decode(o.data["image/png"])) for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]


def check_executed(nb, name: str = "notebook", *, size: int | None = None,
                   max_bytes: int = MAX_NOTEBOOK_BYTES, max_image_bytes: int = MAX_IMAGE_BYTES) -> list[str]:
    """Problems of a committed notebook that should carry outputs (empty list when it is fine).

    Every code cell with source was executed in order by :func:`normalise` (counts 1, 2, 3…), none shows an
    error or a traceback, none was edited after the run (``metadata.eoembed.code_sha256``), no widget view
    without state is stored, and the file (``size`` bytes) and each PNG stay under the size limits.
    """
    fix = f"re-run {RERUN.format(path=name)}"
    problems = []
    meta = nb.metadata.get("eoembed", {})
    if "code_sha256" not in meta:
        return [f"{name}: not executed by scripts/execute_notebooks.py (no metadata.eoembed); {fix}"]
    digest = code_digest(nb)
    stale = [i for i, (a, b) in enumerate(zip(digest, meta["code_sha256"])) if a != b]
    if len(digest) != len(meta["code_sha256"]) or stale:
        where = f"code cell(s) {stale}" if stale else "cells added or removed"
        problems.append(f"{name}: {where} changed after the outputs were stored (stale outputs); {fix}")
    count = 0
    for i, cell in enumerate(_code_cells(nb)):
        if not cell.source.strip():
            continue
        count += 1
        if cell.execution_count != count:
            problems.append(f"{name}: code cell {i} has execution count {cell.execution_count}, expected {count} "
                            f"(not executed, or not in order); {fix}")
        for out in cell.outputs:
            if out.output_type == "error":
                problems.append(f"{name}: code cell {i} stores an error ({out.ename}: {out.evalue})")
            elif out.output_type == "stream" and "Traceback (most recent call last)" in out.text:
                problems.append(f"{name}: code cell {i} prints a traceback on {out.name}")
            elif WIDGET_VIEW in out.get("data", {}):
                problems.append(f"{name}: code cell {i} stores a widget view without its state; {fix}")
        for n in _png_sizes(cell):
            if n > max_image_bytes:
                problems.append(f"{name}: code cell {i} has a {n / 1e3:.0f} kB PNG (limit {max_image_bytes / 1e3:.0f} "
                                "kB): a smaller figsize, fewer panels, or a lower FIGURE_DPI")
    if size is not None and size > max_bytes:
        problems.append(f"{name}: {size / 1e3:.0f} kB on disk (limit {max_bytes / 1e3:.0f} kB)")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# comparison of two executed copies

#: a number as printed: sign, thousands separators, decimals, exponent; not inside a word ("B04", "EPSG:32631")
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.])"
                     r"|(?<![\w.])[-+]?(?:nan|inf)(?![\w.])")
#: a number followed by a unit of time or throughput is a measurement of this machine, not compared
_DURATION = re.compile(r"\s?(?:s|ms|µs|us|ns|min|sec|seconds?|minutes?|h)(?![\w/])|\s?\w*/s\b")
#: numbers that describe this machine, not the notebook: ``memory=23.54 GiB`` (a dask client), ``threads=16``
_MACHINE = re.compile(r"(?:memory|threads|workers|processes|cores)[=:]\s*$")
#: the header of a table column of durations: "embed s", "time [s]", "seconds", "wall time (min)"
_DURATION_NAME = re.compile(r"(?:^|[\s_])(?:s|ms|sec|seconds?|min|minutes?|time)$|[\[(](?:s|ms|min)[\])]$")


@dataclass(frozen=True)
class Tolerance:
    """When two printed numbers are "the same": ``|a − b| ≤ atol + rtol·max(|a|, |b|) + ulps·u``.

    ``u`` is one unit in the last printed digit (0.001 for ``0.747``, 1e-6 for ``3.1e-05``; the finer of the
    two when they are printed differently), so a value rounded to the printed precision may move by one in
    its last digit. Two integers (counts: patches, tokens, blocks) must be equal. ``nan`` and ``inf`` match only themselves.
    """

    rtol: float = 1e-3
    atol: float = 1e-6
    ulps: float = 1.0


def _parse(token: str) -> tuple[float, float]:
    """(value, one unit in the last printed digit) of a printed number; unit 0 for integers."""
    t = token.replace(",", "").replace("−", "-")
    if t.lstrip("+-") in ("nan", "inf"):
        return float(t), 0.0
    mant, _, exp = t.lower().partition("e")
    decimals = len(mant.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exp) if exp else 0)) if ("." in mant or exp) else 0.0
    return float(t), unit


def numbers_match(a: str, b: str, tol: Tolerance = Tolerance()) -> bool:
    """Whether two printed numbers agree (see :class:`Tolerance`)."""
    (x, ux), (y, uy) = _parse(a), _parse(b)
    if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
        return (math.isnan(x) and math.isnan(y)) or x == y
    if not ux and not uy:  # two integers: counts, exact
        return x == y
    unit = min((u for u in (ux, uy) if u), default=0.0)
    return abs(x - y) <= tol.atol + tol.rtol * max(abs(x), abs(y)) + tol.ulps * unit


def _duration_columns(text: str) -> set[tuple[int, int]]:
    """(line, end column) of the cells of printed tables (pandas) under a header such as ``embed s``: the
    header names are right-aligned over their values, two or more spaces apart."""
    cells, ends = set(), set()
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            ends = set()
            continue
        names = list(re.finditer(r"\S+(?: \S+)*", line))
        found = {m.end() for m in names if _DURATION_NAME.search(m.group(0)) and not _NUMBER.search(m.group(0))}
        if found:
            ends = found
        else:
            cells |= {(i, e) for e in ends}
    return cells


def split_numbers(text: str) -> tuple[list[str], list[tuple[str, bool]]]:
    """Text → (the words between numbers, whitespace-collapsed; [(number, is_duration)]).

    A duration is a number followed by a unit of time (``3.2 s``, ``410 patches/s``) or printed in a table
    column whose header ends in one (``embed s``, ``time [s]``); a number after ``memory=``, ``threads=``,
    ``workers=``, ``processes=`` or ``cores=`` describes the machine. Neither is compared.
    """
    words, numbers, pos = [], [], 0
    columns = _duration_columns(text)
    for m in _NUMBER.finditer(text):
        words.append(" ".join(text[pos:m.start()].split()))
        line = text.count("\n", 0, m.start())
        col = m.end() - (text.rfind("\n", 0, m.start()) + 1)
        machine = bool(_DURATION.match(text, m.end())) or bool(_MACHINE.search(text, max(0, m.start() - 12),
                                                                                m.start()))
        numbers.append((m.group(0), machine or (line, col) in columns))
        pos = m.end()
    words.append(" ".join(text[pos:].split()))
    return words, numbers


def compare_text(stored: str, fresh: str, tol: Tolerance = Tolerance(), *, vary: bool = False) -> list[str]:
    """Differences between two printed texts: other words, or a number outside the tolerance.

    Durations and numbers describing the machine (:func:`split_numbers`) are not compared; with ``vary`` no
    number is (only the words around them).
    """
    w1, n1 = split_numbers(stored)
    w2, n2 = split_numbers(fresh)
    if w1 != w2 or len(n1) != len(n2):
        import difflib

        diff = [ln for ln in difflib.unified_diff(stored.splitlines(), fresh.splitlines(), "stored", "fresh",
                                                  lineterm="", n=0) if not ln.startswith(("---", "+++", "@@"))]
        return ["text differs: " + " | ".join(diff[:6])]
    out = []
    for (a, dur), (b, _) in zip(n1, n2):
        if vary or dur or numbers_match(a, b, tol):
            continue
        line = next((ln for ln in fresh.splitlines() if b in ln), "")
        out.append(f"{a} (stored) vs {b} (fresh) in {line.strip()[:120]!r}")
    return out


def _rich_kinds(cell) -> list[str]:
    """The non-stream outputs of a cell as 'output_type:mime+mime' (figures counted by their mime types)."""
    kinds = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            continue
        mimes = "+".join(sorted(m for m in out.get("data", {}) if m != WIDGET_VIEW))
        kinds.append(f"{out.output_type}:{mimes}" if mimes else out.output_type)
    return kinds


def _texts(cell) -> dict[str, str]:
    """What a cell printed: stdout joined, and the text/plain of each rich output that is not a figure (in
    order; a figure's text is its size, and figures are counted by :func:`_rich_kinds`)."""
    texts = {"stdout": "".join(o.text for o in cell.get("outputs", [])
                               if o.output_type == "stream" and o.name == "stdout")}
    rich = [o for o in cell.get("outputs", []) if o.output_type in ("display_data", "execute_result")
            and not any(m.startswith("image/") for m in o.data)]
    for j, o in enumerate(rich):
        if "text/plain" in o.data:
            texts[f"text/plain #{j}"] = o.data["text/plain"]
    return texts


def compare_notebooks(stored, fresh, tol: Tolerance = Tolerance(), name: str = "notebook") -> list[str]:
    """Where a fresh run differs from the stored outputs in what must match (empty list when it matches).

    Cell by cell: the same code; the same sequence of rich outputs (figures, tables, reprs) by type and mime
    types — so a missing or extra figure is reported, pixels are not compared; no error output in the fresh
    run; stdout and each text/plain repr equal up to the numbers, which must agree within ``tol``
    (:func:`compare_text`; all numbers of a cell tagged ``numbers-vary`` are exempt). Stderr (warnings,
    progress) is not compared.
    """
    a, b = _code_cells(stored), _code_cells(fresh)
    if [c.source for c in a] != [c.source for c in b]:
        return [f"{name}: the code differs between the stored and the fresh notebook ({len(a)} vs {len(b)} code "
                f"cells); re-run {RERUN.format(path=name)}"]
    diffs = []
    for i, (s, f) in enumerate(zip(a, b)):
        where = f"{name} code cell {i}"
        errors = [o for o in f.get("outputs", []) if o.output_type == "error"]
        if errors:
            diffs.append(f"{where}: the fresh run failed ({errors[0].ename}: {errors[0].evalue})")
            continue
        ks, kf = _rich_kinds(s), _rich_kinds(f)
        if ks != kf:
            figs = sum("image/" in k for k in ks), sum("image/" in k for k in kf)
            diffs.append(f"{where}: outputs differ: stored {ks} ({figs[0]} figures), fresh {kf} ({figs[1]} figures)")
        ts, tf = _texts(s), _texts(f)
        vary = VARY_TAG in s.metadata.get("tags", [])
        for key in ts.keys() | tf.keys():
            for d in compare_text(ts.get(key, ""), tf.get(key, ""), tol, vary=vary):
                diffs.append(f"{where} {key}: {d}")
    return diffs


# ---------------------------------------------------------------------------------------------------------------
# command line


@dataclass
class Report:
    path: Path
    seconds: float = 0.0
    size: int = 0
    images: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _rel(path: Path) -> Path:
    """``path`` relative to the repository root when it is inside it (for messages)."""
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def run_one(path: Path, kernel: str, *, check: bool, timeout: int) -> Report:
    import nbformat
    from nbclient.exceptions import CellExecutionError

    rel = _rel(path)
    rep = Report(rel)
    stored = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    try:
        fresh = normalise(execute(path, kernel, timeout=timeout), stored)
    except CellExecutionError as e:
        rep.seconds = time.perf_counter() - t0
        rep.problems.append(f"{rel}: a cell failed; nothing written\n{e}")
        return rep
    rep.seconds = time.perf_counter() - t0
    rep.images = [n for c in _code_cells(fresh) for n in _png_sizes(c)]
    if check:
        rep.size = path.stat().st_size
        rep.problems = check_executed(stored, str(rel), size=rep.size) + compare_notebooks(stored, fresh,
                                                                                            name=str(rel))
    else:
        rep.size = write(fresh, path)
        rep.problems = check_executed(fresh, str(rel), size=rep.size)
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", type=Path,
                   help="notebooks to run (default: every tutorials/*.ipynb and notebooks/*.ipynb)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="execute fresh copies and compare them with the stored outputs; write nothing")
    mode.add_argument("--lint", action="store_true",
                      help="check the stored notebooks only (executed, no errors, not stale, sizes); no kernel")
    mode.add_argument("--compare", nargs=2, type=Path, metavar=("STORED", "FRESH"),
                      help="compare two executed copies of a notebook")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = p.parse_args(argv)
    import nbformat

    if args.compare:
        a, b = (nbformat.read(x, as_version=4) for x in args.compare)
        diffs = compare_notebooks(a, b, name=str(args.compare[0]))
        print("\n".join(diffs) or "the outputs match")
        return 1 if diffs else 0
    paths = args.notebooks or notebook_paths()
    missing = [str(x) for x in paths if not x.exists()]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)}")
    if args.lint:
        problems = [q for x in paths for q in check_executed(nbformat.read(x, as_version=4), str(_rel(x)),
                                                             size=x.stat().st_size)]
        print("\n".join(problems) or f"{len(paths)} notebooks carry clean, current outputs")
        return 1 if problems else 0
    need = [x for x in required_inputs() if not x.exists()]
    if need:
        print("cannot execute the notebooks: shared data/weights not found:\n  " + "\n  ".join(map(str, need))
              + f"\nClone or link the shared folder at {ROOT.parent / 'shared'} or set EOEMBED_SHARED; "
              "nothing was written.", file=sys.stderr)
        return 2
    failed = False
    t_all = time.perf_counter()
    with notebook_kernel() as kernel:
        for path in paths:
            rep = run_one(path, kernel, check=args.check, timeout=args.timeout)
            imgs = f"{len(rep.images)} PNG, largest {max(rep.images) / 1e3:.0f} kB" if rep.images else "no PNG"
            print(f"{'checked' if args.check else 'wrote'} {rep.path}: {rep.seconds:.0f} s, "
                  f"{rep.size / 1e3:.0f} kB, {imgs}" + ("" if not rep.problems else " -- PROBLEMS:"), flush=True)
            for q in rep.problems:
                print("  " + q, flush=True)
            failed |= bool(rep.problems)
    print(f"{len(paths)} notebooks in {time.perf_counter() - t_all:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
