"""A hostile new user's battery (issue 17): bad inputs and faults across the whole API.

Each case does what a user (or a failing machine) might, and is scored by outcome:

* ``typed error``   — an :class:`eoembed.exceptions.EOEmbedError` (what/expected/fix);
* ``correct``       — it worked and the result was checked right (a warning where due);
* ``wrong-silent``  — it returned a wrong result (or accepted what should be refused) without a word;
* ``untyped crash`` — any other exception.

Cases marked ``expect="ok"`` are legitimate and must come out ``correct``; the rest must
come out ``typed error`` (or ``correct`` where a warning plus a right result is the
honest answer). None of them repeats a case of the unit tests. Runs in well under a minute
on two CPU cores (spectral model, 32×32 cubes, real Zarr, real subprocesses).

Usage::

    python benchmarks/hostile_battery.py [--json OUT.json] [-v]
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import eoembed  # noqa: E402
from eoembed import exceptions as E  # noqa: E402
from eoembed import io  # noqa: E402
from eoembed.testing import synthetic_cube  # noqa: E402

#: this process's scratch folder, made on first use (so importing the harness from another battery leaves none)
TMP = Path(tempfile.gettempdir()) / f"eoembed-hostile-{os.getpid()}"
OUTCOMES = ("typed error", "correct", "wrong-silent", "untyped crash")


# --- the harness (benchmarks/hostile_surfaces.py imports it) -----------------------------------------
@dataclass
class Case:
    name: str
    area: str
    fn: Callable[[], bool]
    expect: str = "error"  # "error": refusal expected; "ok" (or "warn", checked inside the case): must be correct


def registry() -> tuple[list[Case], Callable]:
    """A new list of cases and the ``@case(area, expect)`` decorator that fills it (one pair per battery)."""
    cases: list[Case] = []

    def case(area: str, expect: str = "error"):
        def deco(fn):
            cases.append(Case(fn.__name__, area, fn, expect))
            return fn
        return deco

    return cases, case


CASES, case = registry()


def run(verbose: bool = False, cases: list[Case] | None = None, tmp: Path | None = None) -> dict:
    """Run every case, each scored by outcome (see the module docstring); removes ``tmp`` at the end."""
    import dask

    dask.config.set(scheduler="synchronous")
    rows = []
    t0 = time.perf_counter()
    for c in (CASES if cases is None else cases):
        t = time.perf_counter()
        detail = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ok = c.fn()
                outcome = "correct" if ok else "wrong-silent"
            except E.EOEmbedError as err:
                outcome, detail = "typed error", f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
            except (Exception, SystemExit) as err:  # noqa: BLE001  (argparse exits are crashes here too)
                outcome = "untyped crash"
                detail = f"{type(err).__name__}: {err}\n{traceback.format_exc()[-1500:]}" if verbose else \
                    f"{type(err).__name__}: {str(err)[:160]}"
        as_expected = outcome in (("typed error",) if c.expect == "error" else ("correct",))
        rows.append({"case": c.name, "area": c.area, "expect": c.expect, "outcome": outcome,
                     "as_expected": as_expected, "seconds": round(time.perf_counter() - t, 2), "detail": detail})
        if verbose or not as_expected:
            print(f"{'  ' if as_expected else '!!'} {c.area:8} {c.name:52} {outcome:14} {detail[:150]}")
    counts = collections.Counter(r["outcome"] for r in rows)
    shutil.rmtree(TMP if tmp is None else tmp, ignore_errors=True)
    return {"cases": len(rows), "counts": {k: counts.get(k, 0) for k in OUTCOMES},
            "not_as_expected": [r["case"] for r in rows if not r["as_expected"]],
            "seconds": round(time.perf_counter() - t0, 1), "rows": rows}


def main(argv=None, *, cases: list[Case] | None = None, tmp: Path | None = None, doc: str | None = None) -> int:
    """The command line of a battery: ``[--json OUT.json] [-v]``; exit 1 on any case not as expected."""
    ap = argparse.ArgumentParser(description=(doc or __doc__).splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.verbose, cases, tmp)
    print(f"{res['cases']} cases in {res['seconds']} s: " + ", ".join(f"{k} {v}" for k, v in res["counts"].items()))
    if res["not_as_expected"]:
        print("not as expected:", ", ".join(res["not_as_expected"]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    bad = res["counts"]["wrong-silent"] + res["counts"]["untyped crash"]
    return 1 if bad or res["not_as_expected"] else 0


# --- helpers of this battery's cases -----------------------------------------------------------------
def cube(**kw) -> xr.DataArray:
    return synthetic_cube(**{"height": 32, "width": 32, "times": 2, "seed": 3, **kw})


def emb_of(c, **kw):
    return eoembed.embed(c, "spectral", **{"tile_size": 16, "halo": 0, "progress": False, **kw})


def ref_emb():
    return emb_of(cube())


def fresh(name: str) -> Path:
    TMP.mkdir(parents=True, exist_ok=True)
    p = TMP / name
    if p.exists():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return p


def lazy_emb(seed=3):
    return emb_of(cube(seed=seed).chunk({"y": 16, "x": 16}))


def warned(fn, pattern: str) -> tuple[object, bool]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn()
    return out, any(pattern in str(x.message) for x in w)


# --- grid ------------------------------------------------------------------------------------
@case("grid")
def x_jitter_half_a_metre():
    c = cube()
    x = c.x.values.copy()
    x[7] += 0.5
    emb_of(c.assign_coords(x=x))
    return False


@case("grid")
def y_gap_of_one_pixel_lazy():
    c = cube().chunk({"y": 16})
    y = c.y.values.copy()
    y[20:] -= 10.0
    emb_of(c.assign_coords(y=y))
    return False


@case("grid")
def coordinates_as_strings():
    c = cube()
    emb_of(c.assign_coords(x=[str(v) for v in c.x.values]))
    return False


@case("grid")
def coordinate_with_nan():
    c = cube()
    x = c.x.values.copy()
    x[3] = np.nan
    emb_of(c.assign_coords(x=x))
    return False


@case("grid", "ok")
def south_up_and_descending_x_together():
    c = cube()
    flipped = emb_of(c.isel(y=slice(None, None, -1), x=slice(None, None, -1)))
    ref = ref_emb()
    return bool(np.allclose(flipped.sel(y=ref.y, x=ref.x).values, ref.values, atol=1e-6))


@case("grid", "ok")
def dask_with_ragged_chunks_equals_numpy():
    c = cube().chunk({"y": (5, 11, 16), "x": (20, 12)})
    return bool(np.allclose(emb_of(c).values, ref_emb().values, atol=1e-6))


@case("grid", "ok")
def explore_cube_partly_overlapping_is_silent():
    try:
        import ipyleaflet  # noqa: F401
    except ImportError:
        return True
    c = cube()
    emb = ref_emb()
    part = cube(origin=(600_160.0, 5_599_840.0))
    _, said = warned(lambda: eoembed.explore.explore(emb, part, scatter=None), "does not overlap")
    return not said


@case("grid")
def fewshot_on_embedding_with_unsorted_x():
    import geopandas as gpd

    emb = ref_emb()
    emb = emb.isel(x=[1, 0, *range(2, emb.sizes["x"])])
    eoembed.fewshot(emb, gpd.GeoDataFrame({"class": []}, geometry=[], crs=emb.rio.crs))
    return False


# --- time --------------------------------------------------------------------------------------
@case("time", "ok")
def python_date_objects():
    import datetime

    c = cube().assign_coords(time=np.array([datetime.date(2021, 3, 1), datetime.date(2021, 4, 1)], dtype=object))
    return emb_of(c).attrs["eoembed:time_range"] == ["2021-03-01", "2021-04-01"]


@case("time")
def all_nat():
    emb_of(cube().assign_coords(time=np.array(["NaT", "NaT"], dtype="datetime64[ns]")))
    return False


@case("time")
def float_days_as_time():
    emb_of(cube().assign_coords(time=[18687.0, 18718.0]))
    return False


@case("time", "ok")
def mixed_string_date_formats():
    c = cube().assign_coords(time=["2021-03-01", "2021/04/01"])
    return emb_of(c).attrs["eoembed:time_range"] == ["2021-03-01", "2021-04-01"]


@case("time", "ok")
def unsorted_per_timestep_output_follows_calendar():
    c = cube(times=3)
    shuffled = c.isel(time=[2, 0, 1])
    out, said = warned(lambda: emb_of(shuffled, pool_time=False), "sorted")
    ref = emb_of(c, pool_time=False)
    return said and bool((out.time.values == ref.time.values).all()) and bool(np.array_equal(out.values, ref.values,
                                                                                              equal_nan=True))


@case("time", "ok")
def utc_aware_dates():
    t = pd.date_range("2021-03-01", periods=2, freq="MS", tz="UTC")
    c = cube().assign_coords(time=np.array(list(t), dtype=object))
    return emb_of(c).attrs["eoembed:time_range"] == ["2021-03-01", "2021-04-01"]


# --- dtype and values --------------------------------------------------------------------------
@case("values")
def boolean_mask_as_cube():
    emb_of(cube() > 1000)
    return False


@case("values")
def complex_cube():
    emb_of(cube().astype("complex64"))
    return False


@case("values")
def dataset_uint16_and_float64_reflectance():
    c = cube()
    ds = c.to_dataset(dim="band")
    ds = ds.assign({b: ds[b].astype("uint16") for b in ds.data_vars})
    ds["B08"] = (ds["B08"] / 10000.0).astype("float64")
    emb_of(ds.rio.write_crs(c.rio.crs))
    return False


@case("values")
def dataset_with_undecoded_scale_factors():
    c = cube()
    ds = c.astype("uint16").to_dataset(dim="band")
    ds["B02"].attrs["scale_factor"] = 0.0001
    ds["B03"].attrs["scale_factor"] = 1.0
    emb_of(ds.rio.write_crs(c.rio.crs))
    return False


@case("values")
def dataset_uint8_band():
    c = cube()
    ds = c.to_dataset(dim="band")
    ds["B04"] = (ds["B04"] / 100).clip(0, 255).astype("uint8")
    emb_of(ds.rio.write_crs(c.rio.crs))
    return False


@case("values")
def band_all_plus_inf():
    c = cube().copy()
    c.loc[{"band": "B05"}] = np.inf
    emb_of(c)
    return False


@case("values")
def two_bands_empty_lazy():
    c = cube().copy()
    c.loc[{"band": ["B11", "B12"]}] = np.nan
    emb_of(c.chunk({"y": 16}))
    return False


@case("values")
def every_band_empty_lazy():
    emb_of((cube() * np.nan).chunk({"x": 16}))
    return False


@case("values")
def one_band_in_dn_the_rest_in_reflectance():
    c = cube() / 10000.0
    c.loc[{"band": "B8A"}] = c.sel(band="B8A") * 10000.0
    emb_of(c)
    return False


@case("values", "ok")
def band_with_data_only_in_one_pixel_is_kept():
    c = cube().copy()
    c.loc[{"band": "B01"}] = np.nan
    c.loc[{"band": "B01", "y": c.y[17], "x": c.x[9]}] = 1234.0  # the strided sample misses it
    return emb_of(c).shape == ref_emb().shape


@case("values", "ok")
def float64_cube_with_negative_inf_gaps():
    c = cube().astype("float64")
    c[1, :, 20:, 20:] = -np.inf
    ref = cube().copy()
    ref[1, :, 20:, 20:] = np.nan
    return bool(np.array_equal(emb_of(c).values, emb_of(ref).values, equal_nan=True))


# --- CRS ---------------------------------------------------------------------------------------
@case("crs", "ok")
def web_mercator_at_the_equator_is_silent():
    c = cube(crs="EPSG:3857", origin=(1_000_000.0, 10_000.0))
    out, said = warned(lambda: eoembed.embed_cost(c, "olmoearth-v1.1-nano"), "pixel size")
    return not said and abs(out["area_km2"] - 0.32 ** 2) < 1e-3


@case("crs", "ok")
def web_mercator_at_60_north_warns_and_halves_resolution():
    c = cube(crs="EPSG:3857", origin=(1_000_000.0, 8_400_000.0))
    _, said = warned(lambda: eoembed.validate.check_crs(c, eoembed.get_model_spec("olmoearth-v1.1-nano")),
                     "stretches distances")
    _, res = eoembed.validate.check_crs(c)
    return said and 4.8 < res < 5.2


@case("crs", "ok")
def laea_europe_is_silent():
    c = cube(crs="EPSG:3035", origin=(4_300_000.0, 3_200_000.0))
    _, said = warned(lambda: eoembed.validate.check_crs(c, eoembed.get_model_spec("olmoearth-v1.1-nano")),
                     "pixel")
    return not said


@case("crs")
def us_feet_state_plane():
    emb_of(cube(crs="EPSG:2263", origin=(1_000_000.0, 200_000.0), res=32.8))
    return False


# --- options -----------------------------------------------------------------------------------
@case("options")
def negative_tile_size():
    emb_of(cube(), tile_size=-16)
    return False


@case("options")
def fractional_halo():
    eoembed.embed_cost(cube(), "spectral", halo=2.5)
    return False


# --- stores ------------------------------------------------------------------------------------
def _finished(name: str) -> Path:
    p = fresh(name)
    io.to_zarr(lazy_emb(), p, progress=False)
    return p


def _same_as_reference(p: Path) -> bool:
    return bool(np.array_equal(io.open_embeddings(p).values, lazy_emb().values, equal_nan=True)) and io.verify(p)["ok"]


@case("store", "ok")
def markers_folder_deleted_then_resume():
    p = _finished("nomarkers.zarr")
    shutil.rmtree(p / ".eoembed-done")
    if io.verify(p)["ok"]:
        return False
    info = io.to_zarr(lazy_emb(), p, resume=True, progress=False)
    return info["written"] == info["regions"] and _same_as_reference(p)


@case("store")
def array_metadata_corrupt_then_resume():
    p = _finished("badmeta.zarr")
    (p / "embeddings" / "zarr.json").write_text("{oops")
    io.to_zarr(lazy_emb(), p, resume=True, progress=False)
    return False


@case("store", "ok")
def complete_flag_removed_then_verify_and_resume():
    p = _finished("noflag.zarr")
    io._set_attrs(p, "embeddings", {io._COMPLETE_ATTR: None})
    if io.verify(p)["ok"]:
        return False
    info = io.to_zarr(lazy_emb(), p, resume=True, progress=False)
    return info["written"] == 0 and _same_as_reference(p)


@case("store", "ok")
def coordinates_tampered_then_resume_repairs():
    import zarr

    p = _finished("coords.zarr")
    g = zarr.open_group(str(p), mode="r+")
    g["x"][:] = np.asarray(g["x"][:]) + 5.0
    if io.verify(p)["ok"]:
        return False
    _, said = warned(lambda: io.to_zarr(lazy_emb(), p, resume=True, progress=False), "coordinates")
    return said and _same_as_reference(p)


@case("store", "ok")
def marker_write_hits_disk_full_then_resume():
    p = fresh("enospc.zarr")
    real, n = io._mark_done, []

    def full(record, marker):
        n.append(1)
        if len(n) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(record, marker)

    io._mark_done = full
    try:
        try:
            io.to_zarr(lazy_emb(), p, progress=False)
            return False
        except E.StoreError as err:
            if "resume=True" not in str(err):
                return False
    finally:
        io._mark_done = real
    io.to_zarr(lazy_emb(), p, resume=True, progress=False)
    return _same_as_reference(p)


@case("store", "ok")
def sigkill_during_writing_then_resume():
    p = fresh("killed.zarr")
    code = ("import sys,time,warnings;warnings.simplefilter('ignore');import dask;"
            "dask.config.set(scheduler='synchronous');sys.path.insert(0,sys.argv[2]);"
            "import eoembed;from eoembed import io;from eoembed.testing import synthetic_cube;"
            "c=synthetic_cube(height=32,width=32,times=2,seed=3).chunk({'y':16,'x':16});"
            "e=eoembed.embed(c,'spectral',tile_size=16,halo=0,progress=False);r=io._write_region\n"
            "def s(*a):\n time.sleep(0.4);return r(*a)\n"
            "io._write_region=s;io.to_zarr(e,sys.argv[1],progress=False)")
    child = subprocess.Popen([sys.executable, "-c", code, str(p), str(ROOT)], env={**os.environ,
                             "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (p / ".eoembed-done" / "y0-x0").exists():
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    io.to_zarr(lazy_emb(), p, resume=True, progress=False)
    return _same_as_reference(p)


@case("store")
def second_writer_while_lock_is_held():
    p = fresh("locked.zarr")
    lock = io._lock(p)
    try:
        io.to_zarr(lazy_emb(), p, progress=False)
        return False
    finally:
        lock.release()


@case("store")
def write_into_a_read_only_file_system():
    io.to_zarr(lazy_emb(), "/proc/eoembed.zarr", progress=False)
    return False


@case("store")
def resume_with_a_larger_cube():
    p = _finished("larger.zarr")
    io.to_zarr(emb_of(cube(height=48).chunk({"y": 16, "x": 16})), p, resume=True, progress=False)
    return False


@case("store")
def verify_a_plain_xarray_zarr():
    p = fresh("plain.zarr")
    cube().to_dataset(name="r").to_zarr(p)
    io.verify(p)
    return False


@case("store")
def verify_a_missing_path():
    io.verify(TMP / "nope.zarr")
    return False


@case("store")
def cli_verify_damaged_store_one_line():
    from contextlib import redirect_stderr
    from io import StringIO

    from eoembed.cli import main

    p = _finished("clidamaged.zarr")
    next(f for f in (p / "embeddings").rglob("*") if f.is_file() and f.name != "zarr.json").unlink()
    buf = StringIO()
    with redirect_stderr(buf):
        rc = main(["verify", str(p)])
    if rc == 2 and buf.getvalue().count("\n") == 1 and "--resume" in buf.getvalue():
        raise E.StoreIntegrityError(buf.getvalue().strip())
    return False


# --- files and weights ----------------------------------------------------------------------------
@case("files")
def truncated_netcdf():
    from eoembed.data import open_cube

    src = fresh("trunc.nc")
    cube().to_dataset(dim="band").to_netcdf(src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 3])
    open_cube(src)
    return False


@case("files")
def truncated_geotiff():
    from eoembed.data import open_cube

    src = fresh("trunc.tif")
    cube().isel(time=0).rio.to_raster(src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 4])
    open_cube(src).values  # noqa: B018  (read it)
    return False


@case("files")
def zarr_folder_with_junk():
    from eoembed.data import open_cube

    p = fresh("junk.zarr")
    p.mkdir()
    (p / "readme.txt").write_text("not a store")
    open_cube(p)
    return False


@case("files")
def cli_embed_into_a_read_only_place():
    from contextlib import redirect_stderr
    from io import StringIO

    from eoembed.cli import main

    src = fresh("ro-src.nc")
    cube().to_dataset(dim="band").to_netcdf(src)
    buf = StringIO()
    with redirect_stderr(buf):
        rc = main(["embed", str(src), "-o", "/proc/eoembed-out.zarr", "--model", "spectral", "--lazy", "--quiet",
                   "--tile-size", "16", "--halo", "0"])
    if rc == 2 and buf.getvalue().count("\n") == 1:
        raise E.StoreError(buf.getvalue().strip())
    return False


@case("weights")
def truncated_weights_file():
    src = ROOT.parent / "shared" / "weights" / "galileo-nano"
    if not src.is_dir():
        raise E.WeightsNotFoundError("shared Galileo weights not present (case skipped as typed)")
    dst = fresh("galileo-trunc")
    shutil.copytree(src, dst)
    os.chmod(dst / "encoder.pt", 0o644)
    data = (dst / "encoder.pt").read_bytes()
    (dst / "encoder.pt").write_bytes(data[: len(data) // 2])
    eoembed.models.clear_model_cache() if hasattr(eoembed.models, "clear_model_cache") else None
    eoembed.load_model("galileo-nano", weights=dst, device="cpu")
    return False


@case("weights")
def weights_folder_without_files():
    dst = fresh("empty-weights")
    dst.mkdir()
    eoembed.load_model("galileo-nano", weights=dst, device="cpu")
    return False


# --- search and labels ----------------------------------------------------------------------------
@case("search")
def raw_vector_positive_equals_negative():
    emb = ref_emb()
    idx = eoembed.build_index(emb)
    v = emb.isel(y=2, x=3).values
    idx.search(positives=[v], negatives=[v.copy()], k=3)
    return False


@case("search")
def truncated_entries_npz():
    emb = ref_emb()
    d = fresh("idx")
    eoembed.build_index(emb).save(d)
    f = d / "entries.npz"
    f.write_bytes(f.read_bytes()[:100])
    eoembed.EmbeddingIndex.load(d)
    return False


@case("search")
def meta_json_is_a_list():
    emb = ref_emb()
    d = fresh("idx2")
    eoembed.build_index(emb).save(d)
    (d / "meta.json").write_text("[1, 2]")
    eoembed.EmbeddingIndex.load(d)
    return False


@case("labels")
def labels_all_na():
    import geopandas as gpd
    import shapely

    emb = ref_emb()
    pts = [shapely.Point(float(emb.x[i]), float(emb.y[i])) for i in range(4)]
    gdf = gpd.GeoDataFrame({"class": pd.array([pd.NA] * 4, dtype="string")}, geometry=pts, crs=emb.rio.crs)
    eoembed.fewshot(emb, gdf)
    return False


@case("labels", "ok")
def labels_in_nullable_int_column_with_na():
    import geopandas as gpd
    import shapely

    emb = ref_emb()
    pts, cls = [], []
    for i in range(0, 8):
        for j in range(0, 8):
            pts.append(shapely.Point(float(emb.x[j]), float(emb.y[i])))
            cls.append(1 if j < 4 else 2)
    cls = pd.array(cls, dtype="Int64")
    cls[5] = pd.NA
    gdf = gpd.GeoDataFrame({"class": cls}, geometry=pts, crs=emb.rio.crs)
    clf = eoembed.fewshot(emb, gdf, n_splits=2)
    return sorted(int(c) for c in clf.classes_) == [1, 2]


if __name__ == "__main__":
    sys.exit(main())
