"""Regression tests for the fixes found by benchmarks/hostile_surfaces.py (issue 27).

One test per fix: each was an untyped crash or a wrong-silent answer before. The door
checks live in eoembed/validate.py (stats keeps its own argument checks: it is the
ground layer).
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402
import eoembed.export  # noqa: E402,F401
from eoembed import io  # noqa: E402
from eoembed.exceptions import (  # noqa: E402
    EmptyDataError,
    GridMismatchError,
    IndexMismatchError,
    InputError,
    MissingCRSError,
    ParameterError,
    ProductFormatError,
    QueryError,
    StoreError,
    StoreIntegrityError,
    StoreMismatchError,
)

X0, Y0 = 500_000.0, 5_700_000.0


def _emb(ny=24, nx=24, d=16, **kw):
    return make_emb(ny, nx, d, block=8, noise=0.3, **kw)[0]


def _map(e):
    v = e.isel(y=3, x=3)
    m = ((e * v).sum("embedding") / np.sqrt((e * e).sum("embedding")) / float(np.sqrt((v * v).sum())))
    return m.astype("float32").rio.write_crs(e.rio.crs).rio.write_transform(e.rio.transform())


# --- products ------------------------------------------------------------------------------------
def _tessera(root, scales_shape):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    q = np.random.default_rng(5).integers(-127, 128, size=(8, 6, 128)).astype(np.int8)
    d = root / "2024"
    d.mkdir(parents=True)
    np.save(d / "grid_0.15_52.05.npy", q)
    np.save(d / "grid_0.15_52.05_scales.npy", np.full(scales_shape, 0.05, np.float32))
    lm = root / "landmask.tif"
    with rasterio.open(lm, "w", driver="GTiff", width=6, height=8, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(X0, Y0, 10, 10)) as ds:
        ds.write(np.ones((1, 8, 6), np.uint8))
    return d / "grid_0.15_52.05.npy", lm


def test_tessera_scales_with_another_channel_count_are_refused(tmp_path):
    npy, lm = _tessera(tmp_path, (8, 6, 64))  # was: numpy broadcast ValueError
    with pytest.raises(ProductFormatError, match=r"scales are \(8, 6, 64\).*\(8, 6, 128\)"):
        eoembed.open_embeddings(npy, format="tessera", georef=lm)


def test_a_column_of_strings_says_it_is_not_numeric(tmp_path):
    gpd = pytest.importorskip("geopandas")
    e = _emb(4, 5, 4)
    yy, xx = np.meshgrid(e.y.values, e.x.values, indexing="ij")
    pts = gpd.points_from_xy(xx.ravel(), yy.ravel())
    p = tmp_path / "s.parquet"
    gpd.GeoDataFrame({"embedding": [f"v{i}" for i in range(20)]}, geometry=pts, crs=32631).to_parquet(p)
    with pytest.raises(InputError, match="not numeric"):
        eoembed.open_embeddings(p)
    gpd.GeoDataFrame({"embedding": [["a", "b"]] * 20}, geometry=pts, crs=32631).to_parquet(p)
    with pytest.raises(InputError, match="not numeric"):  # was: ValueError from a float cast
        eoembed.open_embeddings(p)


def test_point_search_refuses_nan_query_zero_k_and_wrong_dimension():
    gpd = pytest.importorskip("geopandas")
    from eoembed.products import PointEmbeddings

    rng = np.random.default_rng(0)
    V = rng.normal(size=(10, 8)).astype(np.float32)
    pts = PointEmbeddings(V, gpd.GeoDataFrame(geometry=gpd.points_from_xy(rng.uniform(0, 1e3, 10),
                                                                          rng.uniform(0, 1e3, 10)), crs=32631),
                          attrs={})
    with pytest.raises(QueryError, match="NaN or all zeros"):
        pts.search(np.full(8, np.nan), k=3)  # was: hits with NaN scores
    with pytest.raises(ParameterError, match="positive integer"):
        pts.search(2, k=0)  # was: an empty table
    with pytest.raises(IndexMismatchError, match="8-d"):
        pts.search(np.ones(5), k=3)
    assert pts.search(V[2], k=1).iloc[0]["score"] == pytest.approx(1.0, abs=1e-5)


# --- export --------------------------------------------------------------------------------------
def test_probability_map_written_as_class_map_is_refused(tmp_path):
    prob = ((_map(_emb()) + 1) / 2).clip(0, 1)
    with pytest.raises(ParameterError, match="whole class codes.*kind='continuous'"):
        eoembed.export.to_cog(prob, tmp_path / "p.tif", kind="class")  # was: rounded to a 0/1 "class map"
    assert not (tmp_path / "p.tif").exists()
    cls = (prob > 0.5).astype("float32")  # whole codes as floats are fine
    assert eoembed.export.to_cog(cls, tmp_path / "c.tif", kind="class").exists()


def test_int8_cog_of_a_cube_without_any_vector_is_refused(tmp_path):
    e = _emb() * np.nan
    with pytest.raises(EmptyDataError, match="no valid vector"):
        eoembed.export.embeddings_to_cog(e, tmp_path / "x.tif")  # was: a nodata-only COG
    assert not (tmp_path / "x.tif").exists()


# --- analyses and stats --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_cluster_recovers_three_separated_groups_whatever_the_seed(seed):
    """Single-start k-means merged two of three well-separated groups at seeds 0 and 1 (wrong-silent)."""
    from eoembed.analysis import cluster

    rng = np.random.default_rng(0)
    proto = rng.standard_normal((3, 16))
    proto /= np.linalg.norm(proto, axis=1, keepdims=True)
    rows, cols = np.mgrid[0:24, 0:24]
    cls = ((rows // 8) + (cols // 8)) % 3
    vec = proto[cls] + 0.2 * rng.standard_normal((24, 24, 16)) / 4 * 2
    e = _emb().copy(data=np.moveaxis(vec, -1, 0).astype(np.float32))
    lab = cluster(e, 3, seed=seed).values
    assert len(np.unique(lab)) == 3
    for c in range(3):
        assert len(np.unique(lab[cls == c])) == 1


def test_cubes_of_different_dimension_are_not_called_different_models():
    from eoembed.analysis import change

    e = _emb()
    with pytest.raises(IndexMismatchError, match="embedding dimensions differ") as err:
        change(e, e.isel(embedding=slice(0, 8)).assign_attrs({"eoembed:embedding_dim": 8}))
    assert "come from different models" not in str(err.value)


def test_compare_refuses_text_scores_and_area_report_a_probability_map():
    from eoembed import stats

    with pytest.raises(ParameterError, match="not numeric"):
        stats.compare(["good", "bad", "good"], ["bad", "bad", "good"])  # was: ValueError
    assert "over 2 folds" in str(stats.compare([0.8, np.nan, 0.9], [0.6, 0.5, 0.7]))
    with pytest.raises(ParameterError, match="whole class codes"):
        stats.area_report((_map(_emb()) + 1) / 2, [0, 1], [0, 1])  # was: every fraction a "class"


# --- explorer sessions ---------------------------------------------------------------------------
def _state(e, **kw):
    from eoembed.explore.state import ExplorerState

    return ExplorerState(e, scatter=None, max_pixels=64, **kw)


@pytest.fixture
def session_file(tmp_path):
    e = _emb()
    s = _state(e)
    s.label(float(e.x[2]), float(e.y[2]), "water")
    s.click(float(e.x[5]), float(e.y[5]))
    return e, Path(s.save_session(tmp_path / "s.json"))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("labels"), "key 'labels' is missing"),
    (lambda d: d.update(threshold="high"), "'threshold' is str"),
    (lambda d: d.update(labels=[1, 2]), "'labels' is list"),
    (lambda d: d.update(crs="not a crs"), "'crs' is not a WKT CRS"),
    (lambda d: d.update(shape="24x24"), "'shape' is str"),
    (lambda d: d.update(mode="paint"), "'mode' is 'paint'"),
    (lambda d: d["query"].update(positives=[[1.0]]), "query 'positives'"),
    (lambda d: d["labels"]["features"][0]["properties"].pop("class"), "'class' property"),
])
def test_hand_edited_session_is_a_typed_error(session_file, edit, match):
    e, p = session_file
    d = json.loads(p.read_text())
    edit(d)
    p.write_text(json.dumps(d))
    s = _state(e)
    with pytest.raises(ParameterError, match=match):  # were KeyError, ValueError, TypeError, CRSError
        s.load_session(p)
    assert len(s.labels_.gdf) == 0  # nothing restored from a refused file


def test_session_from_another_cube_of_the_same_grid_size_drops_its_labels_with_a_warning(tmp_path):
    far = _emb(x0=X0 + 30 * 80)
    s = _state(far)
    s.label(float(far.x[2]), float(far.y[2]), "water")
    p = s.save_session(tmp_path / "far.json")
    here = _state(_emb())
    with pytest.warns(UserWarning, match="1 of the 1 labels .* lie outside this cube"):
        here.load_session(p)  # was: a label restored outside the cube, silently
    assert len(here.labels_.gdf) == 0


# --- pyramids ------------------------------------------------------------------------------------
def _big(**kw):
    return make_emb(40, 40, 8, block=8, **kw)[0]


def _pyr(e, path):
    io.write_pyramid(e, path, min_side=16, pca=False)
    return path


def test_pyramid_is_tied_to_its_cube_by_extent_and_run(tmp_path):
    e = _big()
    ok = _pyr(e, tmp_path / "ok")
    assert _state(e, pyramid=ok).grid.levels[-1][0] == 4
    store = io.save_embeddings(e.rename("embeddings"), tmp_path / "e.zarr")
    assert _state(io.open_store(store), pyramid=ok).grid.levels[-1][0] == 4  # a store round trip of the cube
    other_place = _pyr(_big(x0=X0 + 40 * 80, seed=1), tmp_path / "place")  # same CRS and pitch
    with pytest.raises(GridMismatchError, match="covers another extent"):
        _state(e, pyramid=other_place)
    other_run = _pyr(_big(seed=7), tmp_path / "run")  # same grid, other vectors
    with pytest.raises(StoreMismatchError, match="another run"):
        _state(e, pyramid=other_run)


def test_pyramid_manifest_is_schema_checked(tmp_path):
    p = _pyr(_big(), tmp_path / "p")
    m = p / "pyramid.json"
    good = m.read_text()
    m.write_text(good[:25])
    with pytest.raises(StoreIntegrityError, match="damaged"):  # was: JSONDecodeError
        io.open_pyramid(p)
    d = json.loads(good)
    del d["levels"]
    m.write_text(json.dumps(d))
    with pytest.raises(StoreIntegrityError, match="no 'levels' list"):  # was: KeyError
        io.open_pyramid(p)
    d = json.loads(good)
    d["levels"][0]["path"] = "../elsewhere"
    m.write_text(json.dumps(d))
    with pytest.raises(StoreIntegrityError, match="outside the pyramid folder"):
        io.open_pyramid(p)
    m.write_text(good)
    shutil.rmtree(p / "1.zarr")
    with pytest.raises(StoreIntegrityError, match="store 1.zarr is missing"):
        io.open_pyramid(p)


def test_pyramid_of_a_cube_without_crs_and_verify_of_a_pyramid(tmp_path):
    with pytest.raises(MissingCRSError, match="no CRS"):  # was: rioxarray's MissingCRS
        io.write_pyramid(_big().drop_vars("spatial_ref"), tmp_path / "n", min_side=16, pca=False)
    p = _pyr(_big(), tmp_path / "p")
    with pytest.raises(StoreError, match="pyramid folder"):
        io.verify(p)


def test_add_layers_on_a_cube_without_crs(tmp_path):
    ipyleaflet = pytest.importorskip("ipyleaflet")
    from eoembed.explore.layers import add_layers

    with pytest.raises(MissingCRSError, match="no CRS"):  # was: pyproj CRSError
        add_layers(ipyleaflet.Map(), _emb().drop_vars("spatial_ref"))


# --- indexes -------------------------------------------------------------------------------------
def test_index_queries_of_the_wrong_dimension_and_keys_faiss_rejects():
    pytest.importorskip("faiss")
    from eoembed.index import build_index
    from eoembed.index.ooc import build_index_ooc

    e = _emb(48, 48).chunk({"y": 16})
    idx = build_index_ooc(e, key="IVF4,Flat", train_size=400, n_queries=20)
    with pytest.raises(IndexMismatchError, match="16-d"):  # was: numpy reshape ValueError
        idx.search_vectors(np.ones((1, 8), np.float32), k=3)
    with pytest.raises(ParameterError, match="FAISS cannot build an index from key='IVF4,Blah'"):
        build_index_ooc(e, key="IVF4,Blah")  # was: FAISS RuntimeError with a C++ trace
    with pytest.raises(ParameterError, match="FAISS cannot build"):
        build_index(_emb(), kind="IVF4,Nonsense")
    with pytest.raises(IndexMismatchError):
        build_index(_emb()).search_vectors(np.ones((2, 3), np.float32), k=2)


def test_an_all_zero_cube_is_not_called_all_nan():
    pytest.importorskip("faiss")
    from eoembed.index.ooc import build_index_ooc

    with pytest.raises(EmptyDataError, match="NaN or all zeros"):
        build_index_ooc((_emb(16, 16, 8) * 0).chunk({"y": 8}), key="IVF2,Flat")


def test_legitimate_inputs_still_work(tmp_path):
    """Whole class codes as floats, a session on its own cube, a query vector as a list."""
    e = _emb()
    s = _state(e)
    s.label(float(e.x[2]), float(e.y[2]), "water")
    p = s.save_session(tmp_path / "own.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        s2 = _state(e)
        s2.load_session(p)
    assert list(s2.labels_.gdf["class"]) == ["water"]
    assert isinstance(e, xr.DataArray)


def test_an_older_session_file_without_the_optional_keys_still_loads(session_file):
    """Version-1 files written before basemap/split/time/layers existed: the loader's defaults apply."""
    e, p = session_file
    d = json.loads(p.read_text())
    for key in ("mode", "trained", "layers", "basemap", "split", "split_dates", "time", "threshold"):
        d.pop(key)
    d["query"].pop("polygon")
    p.write_text(json.dumps(d))
    s = _state(e)
    s.load_session(p)
    assert list(s.labels_.gdf["class"]) == ["water"] and len(s.search.positives) == 1


def test_a_session_whose_query_lies_outside_is_refused_before_any_change(tmp_path):
    far = _emb(x0=X0 + 30 * 80)
    s = _state(far)
    s.label(float(far.x[2]), float(far.y[2]), "water")
    s.click(float(far.x[4]), float(far.y[4]))
    p = s.save_session(tmp_path / "far.json")
    e = _emb()
    here = _state(e)
    here.label(float(e.x[1]), float(e.y[1]), "mine")
    with pytest.raises(ParameterError, match="query point.*outside this cube.*Nothing was changed"):
        here.load_session(p)  # was: labels replaced, then a QueryError half-way through
    assert list(here.labels_.gdf["class"]) == ["mine"]
