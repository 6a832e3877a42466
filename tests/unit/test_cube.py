"""eoembed.cube: the embedding-cube format and apply_embedding (numpy and dask alike)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402
from eoembed.cube import apply_embedding, canonical, cube_info  # noqa: E402


def test_apply_embedding_same_numbers_numpy_and_dask_lazy():
    emb, _ = make_emb(12, 15, 8, times=2, nan_frac=0.2, seed=3)
    lazy = emb.chunk({"y": 5, "x": 4, "embedding": 3})  # split embedding: merged for the function

    def norms(v):
        return np.linalg.norm(v, axis=-1, keepdims=True).repeat(2, axis=-1).astype(np.float32)

    a = apply_embedding(norms, emb, output_dim="k", output_size=2)
    b = apply_embedding(norms, lazy, output_dim="k", output_size=2)
    assert a.dims == ("time", "y", "x", "k") and b.chunks is not None
    assert b.chunks[1] == (5, 5, 2)  # spatial chunks kept: one task per chunk
    np.testing.assert_allclose(b.values, a.values, equal_nan=True)
    # several core dims, no output dim
    with warnings.catch_warnings():  # numpy's note on the masked (all-NaN) patches, whose mean is NaN: checked below
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        c = apply_embedding(lambda v: np.nanmean(v, axis=(-2, -1)), lazy, core_dims=("time", "embedding"))
        assert c.dims == ("y", "x")
        want = np.nanmean(emb.values, axis=(0, 1))
        np.testing.assert_allclose(c.values, want, rtol=1e-5, equal_nan=True)
    assert np.isnan(want).any() and np.isfinite(want).any()


class _TaskCounter:
    """Counts dask tasks run (a dask callback)."""

    def __enter__(self):
        from dask.callbacks import Callback

        self.n = 0

        def start(key, dask, state):
            self.n += 1

        self._cb = Callback(pretask=start)
        self._cb.__enter__()
        return self

    def __exit__(self, *exc):
        self._cb.__exit__(*exc)


def test_consumers_stay_lazy_chunk_by_chunk_and_match_numpy():
    """Similarity maps, few-shot class maps and PCA of a dask cube: nothing computed while the graph is
    built, the spatial chunking of the input kept (one task per chunk), same numbers as the numpy cube."""
    pytest.importorskip("sklearn")
    gpd = pytest.importorskip("geopandas")
    from eoembed.classify import fewshot
    from eoembed.index import similarity_map
    from eoembed.reduce import pca

    emb, truth = make_emb(20, 24, 8, times=2, nan_frac=0.1, seed=4)
    lazy = emb.chunk({"y": 7, "x": 9, "embedding": 3})
    r, c = np.nonzero(truth.values >= 0)
    pick = np.random.default_rng(0).choice(len(r), 60, replace=False)
    labels = gpd.GeoDataFrame({"class": truth.values[r[pick], c[pick]]},
                              geometry=gpd.points_from_xy(emb.x.values[c[pick]], emb.y.values[r[pick]]),
                              crs=emb.rio.crs)
    clf = fewshot(emb, labels)
    q = np.nanmean(emb.values, axis=(0, 2, 3))
    consumers = {
        "similarity": lambda e: similarity_map(e, q),
        "class map": lambda e: clf.predict_map(e)["probability"],
        "pca": lambda e: pca(e, 2, sample=200, random_state=0),
    }
    for name, run in consumers.items():
        with _TaskCounter() as built:
            out = run(lazy)
        assert out.chunks is not None, name
        assert built.n == 0 or name == "pca", f"{name}: {built.n} tasks computed while building the graph"
        ys = out.chunks[out.dims.index("y")]
        assert ys == (7, 7, 6), (name, ys)  # the input's spatial chunks, not one big block
        np.testing.assert_allclose(out.values, run(emb).values, rtol=1e-5, atol=1e-6, equal_nan=True,
                                   err_msg=name)


# ---- the patch locator -------------------------------------------------------------------------------
def test_locate_points_polygons_and_fallback():
    import shapely

    from eoembed.cube import PatchGrid, locate_patches

    emb, _ = make_emb(6, 7, 4, seed=1)  # 80 m patches
    x, y = float(emb.x[3]), float(emb.y[2])
    got = locate_patches(emb, [(x + 39, y - 39), shapely.box(x - 100, y - 100, x + 100, y + 100),
                               shapely.Point(x + 20, y).buffer(5), shapely.MultiPoint([(x, y), (x + 80, y)])])
    rows = {o: sorted(zip(got.row[got.origin == o].tolist(), got.col[got.origin == o].tolist())) for o in range(4)}
    assert rows[0] == [(2, 3)]  # the patch containing the point
    assert rows[1] == [(r, c) for r in (1, 2, 3) for c in (2, 3, 4)]  # every centre inside the polygon
    assert rows[2] == [(2, 3)]  # smaller than a patch: the patch under it
    assert rows[3] == [(2, 3), (2, 4)]
    assert got.inside.all() and list(got.origin) == sorted(got.origin)
    # a grid without a cube: same answer from the transform alone
    grid = PatchGrid.of(emb)
    assert grid == PatchGrid(tuple(emb.rio.transform())[:6], (6, 7), emb.rio.crs.to_wkt())
    np.testing.assert_allclose(grid.centres(np.arange(6), np.zeros(6))[1], emb.y.values)  # centres = coords
    np.testing.assert_allclose(grid.centres(np.zeros(7), np.arange(7))[0], emb.x.values)
    same = locate_patches(grid, (x + 39, y - 39))
    assert (same.row[0], same.col[0]) == (2, 3)
    # many points as an (n, 2) array (the numpy-only path): the same patches as the geometries
    xy = np.array([[x + 39, y - 39], [float(emb.x[0]), float(emb.y[5])], [0.0, 0.0], [np.nan, 1.0]])
    arr, geo = locate_patches(emb, xy), locate_patches(emb, [tuple(p) for p in xy])
    for k in ("row", "col", "origin", "inside"):
        assert getattr(arr, k).tolist() == getattr(geo, k).tolist(), k
    assert arr.inside.tolist() == [True, True, False, False] and (arr.row[0], arr.col[0]) == (2, 3)


def test_locate_transforms_the_query_crs():
    from pyproj import Transformer

    from eoembed.cube import locate_patches

    emb, _ = make_emb(6, 7, 4, seed=1)
    x, y = float(emb.x[5]), float(emb.y[4])
    lon, lat = Transformer.from_crs(emb.rio.crs, "EPSG:4326", always_xy=True).transform(x, y)
    got = locate_patches(emb, (lon, lat), crs="EPSG:4326")
    assert (got.row[0], got.col[0]) == (4, 5)
    assert abs(got.geoms[0].x - x) < 1e-3 and abs(got.geoms[0].y - y) < 1e-3  # reported in the cube CRS
    arr = locate_patches(emb, np.array([[lon, lat]]), crs="EPSG:4326")
    assert (arr.row[0], arr.col[0]) == (4, 5) and np.allclose(arr.geoms[0], [x, y], atol=1e-3)
    gs = __import__("geopandas").GeoSeries.from_xy([lon], [lat], crs="EPSG:4326")  # a GeoSeries states its CRS
    assert (locate_patches(emb, gs).row[0], locate_patches(emb, gs).col[0]) == (4, 5)


def test_locate_bad_input_raises_typed_actionable_errors():
    from eoembed.cube import locate_patches
    from eoembed.exceptions import DimensionError, MissingCRSError, OutsideCubeError, QueryError

    emb, _ = make_emb(6, 7, 4, seed=1)
    with pytest.raises(OutsideCubeError, match=r"outside the embedding cube.*crs='EPSG:4326'"):
        locate_patches(emb, (0.0, 0.0), outside="raise")
    with pytest.raises(OutsideCubeError, match="given in EPSG:4326"):
        locate_patches(emb, (120.0, -40.0), crs="EPSG:4326", outside="raise")
    with pytest.raises(OutsideCubeError, match=r"1 of 2 location\(s\)"):
        locate_patches(emb, np.array([[float(emb.x[0]), float(emb.y[0])], [0.0, 0.0]]), outside="raise")
    off = locate_patches(emb, [(0.0, 0.0), (float(emb.x[0]), float(emb.y[0]))])
    assert off.inside.tolist() == [False, True] and len(off.kept()) == 1
    assert len(locate_patches(emb, [(0.0, 0.0)], outside="drop")) == 0
    nan = locate_patches(emb, [(np.nan, np.nan), None])  # one off-grid row each: points stay aligned
    assert nan.inside.tolist() == [False, False] and nan.origin.tolist() == [0, 1]
    with pytest.raises(MissingCRSError, match="write_crs"):
        locate_patches(emb.drop_vars("spatial_ref"), (1.0, 2.0), crs="EPSG:4326")
    with pytest.raises(DimensionError):
        locate_patches(emb.rename(embedding="band"), (1.0, 2.0))
    with pytest.raises(QueryError, match="shapely geometry"):
        locate_patches(emb, "here")


def test_cube_info_reads_grid_and_identity():
    emb, _ = make_emb(6, 7, 4, seed=1)
    info = cube_info(emb)
    assert info.shape == (6, 7) and info.dim == 4 and info.model == "synthetic" and not info.has_time
    with pytest.raises(eoembed.exceptions.DimensionError):
        canonical(emb.rename(embedding="band"))


def test_raster_on_patches_nearest_and_area_mean():
    """The one raster-to-patch-grid sampler of labels (nearest pixel at each patch centre) and regression targets
    (area mean of the pixels a patch covers), nodata and off-raster patches left out."""
    import xarray as xr

    from eoembed.cube import raster_on_patches
    from eoembed.exceptions import LabelError

    emb, _ = make_emb(4, 5, 3, seed=1)
    t = emb.rio.transform()
    pitch = t.a
    # a raster 4x finer, on the same origin: each patch covers a 4x4 block of pixels
    fine = np.arange(16 * 20, dtype=np.float64).reshape(16, 20)
    fine[0:4, 0:4] = -9  # patch (0, 0) is all nodata
    ys = t.f + (np.arange(16) + 0.5) * t.e / 4
    xs = t.c + (np.arange(20) + 0.5) * pitch / 4
    ras = xr.DataArray(fine, dims=("y", "x"), coords={"y": ys, "x": xs}).rio.write_crs(emb.rio.crs)
    ras = ras.rio.write_transform(type(t)(pitch / 4, 0, t.c, 0, t.e / 4, t.f)).rio.write_nodata(-9)
    r, c, v = raster_on_patches(emb, ras, resampling="average")
    assert (0, 0) not in set(zip(r.tolist(), c.tolist())) and len(v) == 4 * 5 - 1
    for i, j, val in zip(r, c, v):
        assert val == pytest.approx(fine[4 * i:4 * i + 4, 4 * j:4 * j + 4].mean())
    r, c, v = raster_on_patches(emb, ras.astype(np.int64).rio.write_nodata(-9), resampling="nearest")
    assert len(v) == 4 * 5 - 1 and v.dtype.kind == "i"  # codes keep their dtype
    for i, j, val in zip(r, c, v):
        assert val == fine[4 * i + 2, 4 * j + 2]  # the pixel under the patch centre
    # a raster covering only the left half: the right patches get nothing
    r, c, _ = raster_on_patches(emb, ras.isel(x=slice(0, 8)), resampling="nearest")
    assert set(c.tolist()) == {0, 1}
    for bad, match in ((ras.expand_dims(band=[1, 2]), "2 bands"), (ras.expand_dims(time=[0]), "dims"),
                       (ras.drop_vars("spatial_ref"), "no CRS")):
        with pytest.raises(LabelError, match=match):
            raster_on_patches(emb, bad)
    with pytest.raises(LabelError, match="resampling"):
        raster_on_patches(emb, ras, resampling="bilinear")
