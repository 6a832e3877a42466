"""The install story stays consistent: pyproject, environment.yml, README and CI."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_names() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra, items in meta["optional-dependencies"].items():
        if extra == "gpu":  # environment.yml is the CPU environment; its header names the swap
            continue
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
    assert set(listed) == set(meta) - {"all", "test", "gpu"}  # gpu conflicts with faiss-cpu


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    commands = [b.strip() for b in blocks if b.strip() and not b.strip().startswith("#")]
    setup, test = commands[0], commands[1]
    assert "scripts/setup.sh" in setup and "eoembed demo" in setup
    assert test in ci and "scripts/setup.sh" in ci
    assert "torch==2.13.0" in (ROOT / "scripts" / "setup.sh").read_text()


# ---- runtime dependencies are complete without the test extra ----------------------
# xarray picks these I/O engines by what is installed, so eoembed needs them at run time
# without importing them itself.
_IO_BACKENDS = {"netcdf4", "h5py", "h5netcdf", "scipy", "zarr", "pyarrow"}


def _eoembed_imports() -> set[str]:
    import ast

    mods = set()
    for f in (ROOT / "eoembed").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                mods.add(str(node.args[0].value).split(".")[0])  # eoembed.exceptions.require("faiss", ...)
    return mods - {"eoembed"}


def test_test_extra_holds_no_runtime_library():
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    runtime = {_name(d) for m in _eoembed_imports() for d in dists.get(m, [m])} | _IO_BACKENDS
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    test_extra = {_name(r) for r in meta["test"]}
    assert not test_extra & runtime, (
        f"{sorted(test_extra & runtime)} are runtime libraries; move them to a runtime extra "
        "(or the core dependencies) so `pip install 'eoembed[all]'` works without the test extra."
    )
    assert {"h5py", "h5netcdf"} <= {_name(r) for r in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert "pyarrow" in {_name(r) for r in meta["search"]}  # GeoParquet labels


def test_open_cube_reads_the_shared_netcdf_without_netcdf4():
    """The shared sample opens with the core dependencies only (h5netcdf + h5py)."""
    import os
    import subprocess
    import sys

    import pytest

    nc = ROOT.parent / "shared" / "data" / "worldcereal" / "worldcereal_preprocessed_inputs.nc"
    if not nc.exists():
        pytest.skip(f"shared sample not found at {nc}")
    code = (
        "import sys; sys.modules['netCDF4'] = None\n"  # as if only eoembed[all] were installed
        "import eoembed.data as d\n"
        f"c = d.open_cube({str(nc)!r})\n"
        "assert c.dims == ('time', 'band', 'y', 'x'), c.dims\n"
        "assert float(c.isel(time=0, band=0).count()) > 0\n"
        "print('ok', dict(c.sizes))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_docs_and_tutorials_name_only_environment_variables_the_library_reads():
    """One documented name per setting: every EOEMBED_* the user is told about is read by eoembed."""
    read = set()
    for f in (ROOT / "eoembed").rglob("*.py"):
        read |= set(re.findall(r"\bEOEMBED_[A-Z_]+\b", f.read_text()))
    read |= set(re.findall(r"\bEOEMBED_[A-Z_]+\b", (ROOT / "scripts" / "setup.sh").read_text()))  # EOEMBED_TORCH_INDEX
    read |= {"EOEMBED_SAMPLE", "EOEMBED_SHARED"}  # the tutorials' own settings (sample cube, shared data folder), documented there
    told = {}
    files = [ROOT / "README.md", *(ROOT / "tutorials").glob("*"), *(ROOT / "notebooks").glob("*"),
             *(ROOT / "tests").rglob("*.py")]
    for f in files:
        if f.is_file() and f.suffix in (".md", ".ipynb", ".py"):
            for name in re.findall(r"\bEOEMBED_[A-Z_]+\b", f.read_text()):
                told.setdefault(name, f.relative_to(ROOT).as_posix())
    unknown = {n: f for n, f in told.items() if n not in read}
    assert not unknown, f"environment variables eoembed does not read: {unknown}"
    assert "EOEMBED_WEIGHTS_DIR" in read


# ---- the declared requirements are what the code imports (issue 20) -----------------
#: import name -> distribution name where they differ (normalised: lower case, '-').
_DIST_OF_IMPORT = {
    "PIL": "pillow", "sklearn": "scikit-learn", "faiss": "faiss-cpu", "umap": "umap-learn",
    "yaml": "pyyaml", "dask": "dask", "distributed": "distributed",
}
#: declared without being imported: xarray's I/O engines, the notebook front end, the GPU build of faiss.
_DECLARED_NOT_IMPORTED = {"h5py", "h5netcdf", "jupyterlab", "faiss-gpu-cu12"}


def _dist(import_name: str) -> str:
    return _DIST_OF_IMPORT.get(import_name, import_name.lower().replace("_", "-"))


def _declared() -> dict[str, set[str]]:
    """``{"core": {...}, "<extra>": {...}}`` of normalised distribution names."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {"core": {_name(r) for r in meta["dependencies"]}}
    for extra, items in meta["optional-dependencies"].items():
        out[extra] = {_name(r) for r in items if not r.startswith("eoembed")}
    return out


def _third_party_imports() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Every third-party top-level import in eoembed/ (import name -> files) and the
    ``require("module", "extra", ...)`` calls as ``(module, extra, file)``."""
    import ast
    import sys

    found: dict[str, set[str]] = {}
    requires = []
    for f in sorted((ROOT / "eoembed").rglob("*.py")):
        rel = f.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module.split(".")[0]]
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require"
                  and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2])):
                mod, extra = str(node.args[0].value), str(node.args[1].value)
                requires.append((mod.split(".")[0], extra, rel))
                names = [mod.split(".")[0]]
            for n in names:
                if n != "eoembed" and n not in sys.stdlib_module_names and n != "__future__":
                    found.setdefault(n, set()).add(rel)
    return found, requires


def test_every_import_is_a_declared_requirement():
    declared = set().union(*[v for k, v in _declared().items() if k != "test"])
    imports, _ = _third_party_imports()
    undeclared = {m: sorted(files)[:3] for m, files in imports.items() if _dist(m) not in declared}
    assert not undeclared, (
        f"eoembed imports {undeclared} but pyproject.toml declares no such distribution; add it to the "
        "core dependencies or the extra of the feature that needs it (and to environment.yml)."
    )


def test_every_declared_requirement_is_imported():
    imports, _ = _third_party_imports()
    used = {_dist(m) for m in imports}
    for extra, dists in _declared().items():
        if extra in ("test", "all"):
            continue
        unused = dists - used - _DECLARED_NOT_IMPORTED
        assert not unused, f"[{extra}] declares {sorted(unused)} but no eoembed module imports it; remove it."


def test_require_calls_name_the_extra_that_declares_the_package():
    _, requires = _third_party_imports()
    declared = _declared()
    assert requires
    for mod, extra, where in requires:
        assert extra in declared, f"{where}: require({mod!r}, {extra!r}) names an extra pyproject does not define"
        assert _dist(mod) in declared[extra] | declared["core"], (
            f"{where}: require({mod!r}, {extra!r}) but [{extra}] does not declare {_dist(mod)!r}")


def test_core_modules_import_with_core_dependencies_only():
    """``pip install eoembed`` (no extras) can open and write cubes and products: every
    optional distribution's import names are blocked and the core modules still import."""
    import os
    import subprocess
    import sys
    from importlib.metadata import packages_distributions

    declared = _declared()
    core = declared["core"] | {"dask"}
    optional = set().union(*[v for k, v in declared.items() if k not in ("core", "test", "all")]) - core
    blocked = sorted({m for m, dists in packages_distributions().items()
                      if {_name(d) for d in dists} & optional and m.isidentifier()}
                     | {m for m, d in _DIST_OF_IMPORT.items() if d in optional})
    code = (
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        "import eoembed, eoembed.io, eoembed.cube, eoembed.grid, eoembed.bands, eoembed.products, eoembed.export\n"
        "import numpy as np, rasterio, tempfile, os\n"  # an AlphaEarth-layout COG opens with the core only
        "p = os.path.join(tempfile.mkdtemp(), 'a.tif')\n"
        "with rasterio.open(p, 'w', driver='GTiff', width=2, height=2, count=64, dtype='int8', crs='EPSG:32631',\n"
        "                   transform=rasterio.Affine(10, 0, 0, 0, -10, 0), nodata=-128) as ds:\n"
        "    ds.write(np.ones((64, 2, 2), 'i1'))\n"
        "e = eoembed.open_embeddings(p)\n"        "import eoembed.classify\n"  # imports without scikit-learn; using it names the extra
        "from eoembed.exceptions import MissingOptionalDependency\n"
        "try: eoembed.classify.fewshot(e, None)\n"
        "except MissingOptionalDependency as err: assert \"eoembed[search]\" in str(err)\n"
        "else: raise AssertionError('fewshot ran without scikit-learn')\n"
        "assert e.attrs['eoembed:model'] == 'alphaearth' and abs(float((e ** 2).sum('embedding')[0, 0]) - 1) < 1e-5\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
    assert "torch" in blocked and "sklearn" in blocked and "faiss" in blocked


# ---- the wheel (issue 29) -----------------------------------------------------------------------------------------
_NOT_SHIPPED = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", "eoembed-demo",
                "test-artifacts", "embeddings", ".ipynb_checkpoints"}


def _copy_checkout(dest):
    """The checkout's files without caches, venvs and build outputs (a build must not write into the checkout)."""
    import shutil

    def ignore(folder, names):
        return {n for n in names if n in _NOT_SHIPPED or n.endswith((".egg-info", ".pyc"))}

    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def test_sdist_and_wheel_metadata_is_complete():
    """pyproject's metadata and the files it names (LICENSE: the full Apache-2.0 text; CITATION.cff)."""
    import yaml

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.strip().startswith("Apache License") and "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text and len(text) > 11000
    assert meta["keywords"] and meta["urls"] and any("Typing :: Typed" == c for c in meta["classifiers"])
    assert not any(c.startswith("License ::") for c in meta["classifiers"])  # the SPDX expression says it
    assert {"pooch", "requests"} <= {_name(r) for r in meta["dependencies"]}
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == meta["version"] and cff["license"] == meta["license"]
    assert {r["repository-code"] for r in cff["references"]} >= {
        "https://github.com/nasaharvest/galileo", "https://github.com/nasaharvest/presto"}


@pytest.mark.slow
def test_wheel_installs_and_runs_without_the_checkout(tmp_path):
    """``python -m build`` gives an sdist and a wheel (from the sdist) holding every file the package reads;
    installed non-editable (--no-deps) into a fresh venv that sees this environment's dependencies but not the
    checkout, ``eoembed --help``, ``eoembed fetch`` and ``eoembed demo`` run from it and ``pip check`` finds
    nothing missing for eoembed."""
    import os
    import subprocess
    import sys
    import sysconfig
    import zipfile

    src = _copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    wheel = next(dist.glob("eoembed-*-py3-none-any.whl"))
    assert next(dist.glob("eoembed-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "eoembed").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped <= names, f"not in the wheel: {sorted(shipped - names)} (add them to package-data)"
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Dist: pooch" in metadata

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # this environment's packages (a plain path entry: its .pth hooks, e.g. an editable eoembed, do not run)
    (Path(site) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EOEMBED_DATA_MIRROR")}
    env.update({"HOME": str(tmp_path), "EOEMBED_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"})
    pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
    r = subprocess.run([*pip, "install", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    exe = venv / "bin" / "eoembed"

    def run(*args, **kw):
        out = subprocess.run([str(exe), *args], capture_output=True, text=True, env={**env, **kw}, cwd=tmp_path,
                             timeout=300)
        assert out.returncode == 0, (args, out.stderr[-3000:])
        return out.stdout

    where = subprocess.run([str(py), "-c", "import eoembed; print(eoembed.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(site), where  # the installed wheel, not the checkout
    assert "fetch" in run("--help") and "demo" in run("--help")
    shared = ROOT.parent / "shared"
    if not shared.is_dir():
        pytest.skip("no ../shared to serve as the data mirror of the installed demo")
    # installed, eoembed knows no checkout: ../shared is a mirror only when named
    assert run("fetch", "galileo-nano", EOEMBED_DATA_MIRROR=str(shared)).strip().endswith(
        str(shared / "weights" / "galileo-nano"))
    out = tmp_path / "demo"
    run("demo", "--model", "spectral", "--out", str(out), EOEMBED_DATA_MIRROR=str(shared))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"].startswith("WorldCereal sample") and (out / "demo.png").stat().st_size > 10_000
    r = subprocess.run([*pip, "check"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    # eoembed's own requirements are met; other lines are the environment's (setup.sh installs the parity
    # oracles timm and terratorch with --no-deps, so pip check lists their missing extras)
    about_eoembed = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.lower().startswith("eoembed ")]
    assert not about_eoembed, about_eoembed
    assert r.returncode == 0 or "terratorch" in r.stdout or "timm" in r.stdout, r.stdout + r.stderr


def test_pytest_warning_filters_are_narrow_and_never_hide_eoembed():
    """Each ignored warning names its category, a message and the third-party module it arises in, with a comment
    giving the reason; none ignores eoembed's own warnings (tests assert those with pytest.warns)."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "pyproject.toml").read_text()
    filters = tomllib.loads(text)["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert filters
    lines = text.splitlines()
    for f in filters:
        action, message, category, module = (f.split(":") + ["", "", "", ""])[:4]
        assert action in ("ignore", "default", "error", "always", "once", "module"), f
        if action != "ignore":
            continue
        assert category and module, f"{f}: name the category and the module it arises in"
        assert not re.match(module, "eoembed") and not re.match(module, "eoembed.grid"), f"{f} would hide eoembed's"
        assert message or module == "pkg_resources", f"{f}: give the message, not a whole category"
        if message:
            re.compile(message)
        import builtins

        cls = getattr(builtins, category, None)
        assert "." in category or (cls is not None and issubclass(cls, Warning)), f
        i = next(n for n, line in enumerate(lines) if f in line.replace('\\\\', '\\'))
        while lines[i - 1].strip().startswith('"'):  # entries sharing one reason sit under one comment
            i -= 1
        assert lines[i - 1].strip().startswith("#"), f"{f}: say why it is harmless in a comment above it"
