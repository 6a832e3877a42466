"""Run facts stamped on every committed benchmark result (``benchmarks/results/<bench>.json``).

``scripts/render_docs.py`` fills the numbers in ``docs/*.md`` from those files, so each
result carries what a reader needs to judge it: when it ran, on what machine (cores, load
average at start and end, memory, torch version) and the exact command.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    """Cores, memory, load average, accelerator, library versions of this process's machine."""
    facts: dict = {"cores": os.cpu_count(), "memory_gib": _mem_gib(), "platform": platform.platform(),
                   "python": platform.python_version()}
    try:
        facts["load_avg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        facts["load_avg_1_5_15"] = None
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_threads"] = torch.get_num_threads()
        facts["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        facts["torch"] = None
    return facts


def command(argv: list[str] | None = None) -> str:
    """The command line that ran this benchmark, with the script path relative to the repository."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else None
    if script is not None and script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return "python " + " ".join(shlex.quote(a) for a in argv)


def stamp(result: dict, *, started: dict, note: str | None = None) -> dict:
    """``result`` with a ``run`` block: date (UTC), machine facts at start, load at the end, command, note."""
    end = machine()
    run = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"), "command": command(),
           "machine": started, "load_avg_at_end": end.get("load_avg_1_5_15")}
    if note:
        run["note"] = note
    return {"run": run, **result}


def write(path: str | os.PathLike, result: dict) -> None:
    """Write ``result`` as indented JSON (numpy scalars and other objects as ``str``)."""
    Path(path).write_text(json.dumps(result, indent=1, default=_default) + "\n")


def _default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def weights_for(name: str, root: Path) -> Path | None:
    """The weights a benchmark times ``name`` with, from the one source of weights: the data registry
    (:func:`eoembed.data.sample`, never downloading: a mirror such as ``../shared`` or the cache) for models
    whose weights it lists (Galileo-Nano, Presto), a checkpoint in the published layout with random values
    (:func:`eoembed.testing.make_checkpoint`, written under ``root``; same cost as the real weights) for
    OlmoEarth, and ``None`` (the benchmark skips the model) otherwise or when the registry's files are not here.
    """
    import eoembed
    from eoembed.data import registry
    from eoembed.exceptions import DownloadError
    from eoembed.testing import make_checkpoint

    spec = eoembed.get_model_spec(name)
    if spec.family == "olmoearth":
        return make_checkpoint(root / name, spec.version, spec.size)
    group = registry.GROUPS.get(name)
    if group is None or not group.weights:
        return None
    try:
        return registry.sample(name, download=False)
    except DownloadError:  # not in a mirror nor the cache: this machine cannot time it
        return None
