"""The install story stays consistent: pyproject, environment.yml, README and CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_names() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra, items in meta["optional-dependencies"].items():
        reqs += [r for r in items if not r.startswith("eoembed")]
    return {"dask" if _name(r) == "dask" else _name(r) for r in reqs}


def _environment_names() -> set[str]:
    names = set()
    text = (ROOT / "environment.yml").read_text()
    deps = text[text.index("dependencies:"):]
    for line in deps.splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)\s*([<>=!~].*)?$", line)
        if m and m.group(1) not in ("pip", "-e"):
            names.add(_name(m.group(1)))
    return names - {"python"}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert _pyproject_names() == _environment_names()


def test_all_extra_covers_every_extra_but_test():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = re.search(r"\[(.*)\]", meta["all"][0]).group(1).split(",")
    assert set(listed) == set(meta) - {"all", "test"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    commands = [b.strip() for b in blocks if b.strip() and not b.strip().startswith("#")]
    setup, test = commands[0], commands[1]
    assert "scripts/setup.sh" in setup and "eoembed demo" in setup
    assert test in ci and "scripts/setup.sh" in ci
    assert "torch==2.13.0" in (ROOT / "scripts" / "setup.sh").read_text()
