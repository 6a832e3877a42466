"""Tests for eoembed.index: index choice, georeferenced search, refinement, persistence."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

faiss = pytest.importorskip("faiss")
shapely = pytest.importorskip("shapely")

from eoembed.exceptions import (  # noqa: E402
    EmptyDataError,
    IndexMismatchError,
    MissingCRSError,
    ParameterError,
    QueryError,
)
from eoembed.index import (  # noqa: E402
    EmbeddingIndex,
    build_index,
    choose_index_key,
    nb_clusters,
    recall_at_k,
    similarity_map,
)


@pytest.fixture(scope="module")
def cube():
    return make_emb(40, 50, 16, nan_frac=0.1, noise=0.25, seed=1)


@pytest.fixture(scope="module")
def idx(cube):
    return build_index(cube[0])


def centre(emb, row, col):
    return float(emb.x[col]), float(emb.y[row])


# ---- choose_index_key (pure) ------------------------------------------------------
@pytest.mark.parametrize(
    "n, d, mem, expected",
    [
        (0, 192, "8G", "Flat"),
        (5_000, 192, "8G", "Flat"),
        (99_999, 768, "8G", "Flat"),
        (100_000, 192, "8G", "HNSW32"),
        (999_999, 192, "8G", "HNSW32"),
        (500_000, 192, "100M", "IVF2048,SQ8"),  # graph + floats don't fit, 1 byte/dim does
        (1_000_000, 192, "8G", "IVF2048,Flat"),
        (4_000_000, 192, "8G", "IVF4096,Flat"),
        (20_000_000, 192, "8G", "IVF16384,SQ8"),
        (100_000_000, 192, "8G", "IVF32768,PQ64"),
    ],
)
def test_choose_index_key_rules(n, d, mem, expected):
    assert choose_index_key(n, d, max_memory=mem) == expected


def test_choose_index_key_thresholds_and_errors():
    assert choose_index_key(5_000, 16, flat_threshold=1_000) == "HNSW32"
    assert choose_index_key(5_000, 16, flat_threshold=1_000, hnsw_threshold=2_000).startswith("IVF")
    assert choose_index_key(200_000, 64, hnsw_m=16) == "HNSW16"
    with pytest.raises(ParameterError, match="max_memory"):
        choose_index_key(10**9, 192, max_memory="1M")
    with pytest.raises(ParameterError, match="memory budget"):
        choose_index_key(10**6, 192, max_memory="lots")


def test_nb_clusters_power_of_two_and_trainable():
    for n in (10_000, 100_000, 1_000_000, 10_000_000):
        k = nb_clusters(n)
        assert k & (k - 1) == 0
        assert 2 * np.sqrt(n) <= k <= 4 * np.sqrt(n)
        assert n / k >= 39
    assert nb_clusters(1_000_000) == 2048


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(exact, exact, 3) == 1.0
    assert recall_at_k(np.array([[1, 9, 3], [6, 8, 7]]), exact, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)


# ---- building, NaN exclusion -----------------------------------------------------
def test_nan_patches_are_not_indexed(cube, idx):
    emb, truth = cube
    assert idx.ntotal == int((truth.values >= 0).sum()) < truth.size
    assert idx.key == "Flat" and idx.dim == 16 and idx.model == "synthetic"
    hits = idx.search(patch=(0, 0) if truth.values[0, 0] >= 0 else (0, 1), k=idx.ntotal + 50)
    assert len(hits) == idx.ntotal
    assert (truth.values[hits["row"], hits["col"]] >= 0).all()
    r, c = np.argwhere(truth.values < 0)[0]
    with pytest.raises(QueryError, match="masked"):
        idx.search(point=centre(emb, r, c))
    with pytest.raises(QueryError, match="no valid embedding"):
        idx.search(patch=(r, c))


def test_all_nan_cube_refused():
    emb, _ = make_emb(5, 5, 4)
    with pytest.raises(EmptyDataError, match="no valid patch"):
        build_index(emb * np.nan)


def test_missing_crs_refused():
    emb, _ = make_emb(5, 5, 4)
    emb = emb.drop_vars("spatial_ref")
    with pytest.raises(MissingCRSError, match="write_crs"):
        build_index(emb)


# ---- search on planted structure --------------------------------------------------
def test_search_finds_planted_class(cube, idx):
    emb, truth = cube
    r, c = np.argwhere(truth.values == 2)[5]
    hits = idx.search(point=centre(emb, r, c), k=50)
    assert list(hits.columns) == ["rank", "score", "x", "y", "source", "row", "col", "id", "geometry"]
    assert hits["rank"].tolist() == list(range(1, 51))
    assert np.all(np.diff(hits["score"]) <= 1e-6)
    assert hits.iloc[0][["row", "col"]].tolist() == [r, c]
    assert hits.iloc[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert (truth.values[hits["row"], hits["col"]] == 2).all()
    # georeferencing: x/y are the patch centres, geometry matches, CRS is the cube's
    assert np.allclose(hits["x"], emb.x.values[hits["col"]])
    assert np.allclose(hits["y"], emb.y.values[hits["row"]])
    assert hits.crs.to_epsg() == 32631
    assert np.allclose(hits.geometry.x, hits["x"])
    assert (hits["source"] == "cube0").all()


def test_point_query_in_other_crs_is_reprojected(cube, idx):
    from pyproj import Transformer

    emb, truth = cube
    r, c = np.argwhere(truth.values == 1)[3]
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(*centre(emb, r, c))
    h1 = idx.search(point=(lon, lat), crs="EPSG:4326", k=5)
    h2 = idx.search(point=centre(emb, r, c), k=5)
    assert h1.iloc[0][["row", "col"]].tolist() == [r, c]
    assert h1["id"].tolist() == h2["id"].tolist()
    with pytest.raises(QueryError, match="crs="):
        idx.search(point=(lon, lat), k=5)  # lon/lat read as UTM metres: outside


def test_patch_and_vector_queries_agree(cube, idx):
    emb, truth = cube
    r, c = np.argwhere(truth.values == 0)[7]
    v = emb.isel(y=r, x=c)
    h1 = idx.search(patch=(r, c), k=10)
    h2 = idx.search(vector=v, k=10)  # DataArray with attrs: checked
    h3 = idx.search(vector=v.values * 3.0, k=10)  # raw, any norm
    assert h1["id"].tolist() == h2["id"].tolist() == h3["id"].tolist()


def test_polygon_query_is_mean_of_patches_inside(cube, idx):
    emb, truth = cube
    x0, y0 = centre(emb, 12, 2)
    x1, y1 = centre(emb, 16, 6)
    poly = shapely.box(x0 - 1, y1 - 1, x1 + 1, y0 + 1)  # 5x5 patch centres
    q, anchors = idx.query_vector(polygon=poly)
    block = emb.isel(y=slice(12, 17), x=slice(2, 7)).values.reshape(16, -1).T
    block = block[np.isfinite(block).all(1)]
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    want = block.mean(0)
    assert np.allclose(q, want / np.linalg.norm(want), atol=1e-5)
    assert anchors[0].equals(poly)
    # the same polygon given in lon/lat
    from eoembed.cube import to_crs_geom

    q2, _ = idx.query_vector(polygon=to_crs_geom(poly, "EPSG:32631", "EPSG:4326"), crs="EPSG:4326")
    assert np.allclose(q, q2, atol=1e-4)
    # a polygon smaller than a patch falls back to the patch under it
    tiny = shapely.Point(*centre(emb, 12, 2)).buffer(5)
    q3, _ = idx.query_vector(polygon=tiny)
    assert np.allclose(q3, idx.query_vector(patch=(12, 2))[0], atol=1e-6)
    with pytest.raises(QueryError, match="contains no indexed patch"):
        idx.search(polygon=shapely.box(0, 0, 10, 10))


def test_positive_negative_refinement(cube, idx):
    emb, truth = cube
    p1, p2 = np.argwhere(truth.values == 1)[[0, 40]]
    n1 = np.argwhere(truth.values == 0)[10]
    pts = [centre(emb, *p1), centre(emb, *p2)]
    neg = [centre(emb, *n1)]
    q, anchors = idx.query_vector(positives=pts, negatives=neg)
    vp = [idx.query_vector(point=p)[0] for p in pts]
    vn = idx.query_vector(point=neg[0])[0]
    want = 2 * np.mean(vp, axis=0) - vn
    assert np.allclose(q, want / np.linalg.norm(want), atol=1e-5)
    assert len(anchors) == 3
    for method in ("mean", "linear"):
        hits = idx.search(positives=pts + [shapely.Point(*centre(emb, *np.argwhere(truth.values == 1)[80]))],
                          negatives=neg + [{"patch": tuple(np.argwhere(truth.values == 2)[3])}],
                          method=method, k=40)
        assert (truth.values[hits["row"], hits["col"]] == 1).mean() >= 0.95, method
    with pytest.raises(QueryError, match="negatives"):
        idx.search(positives=pts, method="linear", background=0)
    h = idx.search(positives=pts, method="linear", k=20)  # positives vs background only
    assert (truth.values[h["row"], h["col"]] == 1).mean() >= 0.9
    with pytest.raises(QueryError, match="empty"):
        idx.search(positives=[])
    with pytest.raises(QueryError, match="needs positives"):
        idx.search(point=pts[0], negatives=neg)
    with pytest.raises(ParameterError, match="method"):
        idx.search(positives=pts, method="svm-magic")


def test_linear_refinement_beats_mean_on_a_nuisance_direction():
    # positives and negatives share a strong common component (e.g. season); only a
    # weak direction separates them. The trained direction should isolate it.
    rng = np.random.default_rng(3)
    d = 16
    common = np.eye(d)[0] * 3
    signal = np.eye(d)[1]
    protos = np.stack([common + 0.6 * signal, common - 0.6 * signal, -common])
    emb, truth = make_emb(30, 30, d, n_classes=3, block=6, noise=0.5, prototypes=protos, seed=4)
    idx = build_index(emb)
    pos = [tuple(p) for p in np.argwhere(truth.values == 0)[rng.choice(300, 8, replace=False)]]
    neg = [tuple(p) for p in np.argwhere(truth.values == 1)[rng.choice(300, 8, replace=False)]]
    prec = {}
    for method in ("mean", "linear"):
        h = idx.search(positives=[{"patch": p} for p in pos], negatives=[{"patch": p} for p in neg],
                       method=method, k=100)
        prec[method] = (truth.values[h["row"], h["col"]] == 0).mean()
    assert prec["linear"] >= 0.9
    assert prec["linear"] >= prec["mean"] - 0.02


def test_exclude_radius(cube, idx):
    emb, truth = cube
    r, c = np.argwhere(truth.values == 2)[60]
    x, y = centre(emb, r, c)
    hits = idx.search(point=(x, y), k=30, exclude_radius=500)
    assert len(hits) == 30
    assert (np.hypot(hits["x"] - x, hits["y"] - y) >= 500).all()
    full = idx.search(point=(x, y), k=200)
    far = full[np.hypot(full["x"] - x, full["y"] - y) >= 500]
    assert hits["id"].tolist() == far["id"].tolist()[:30]
    # polygon anchors: distance to the polygon
    poly = shapely.Point(x, y).buffer(200)
    hp = idx.search(polygon=poly, k=10, exclude_radius=300)
    assert (shapely.distance(poly, shapely.points(hp["x"], hp["y"])) >= 300 - 1e-6).all()
    with pytest.raises(QueryError, match="located query"):
        idx.search(vector=np.ones(16), exclude_radius=100)


def test_query_argument_errors(idx):
    with pytest.raises(QueryError, match="exactly one"):
        idx.search(point=(0, 0), patch=(0, 0))
    with pytest.raises(QueryError, match="exactly one"):
        idx.search()
    with pytest.raises(ParameterError, match="k must"):
        idx.search(patch=(1, 1), k=0)
    with pytest.raises(QueryError, match="outside"):
        idx.search(patch=(999, 0))
    with pytest.raises(QueryError, match=r"\(x, y\)"):
        idx.search(point="here")
    with pytest.raises(QueryError, match="zero"):
        idx.search(vector=np.zeros(16))


# ---- mismatches ---------------------------------------------------------------------
def test_mismatched_model_dim_crs_refused(cube, idx):
    other, _ = make_emb(10, 10, 16, model="other-model")
    with pytest.raises(IndexMismatchError, match="other-model"):
        idx.add(other)
    with pytest.raises(IndexMismatchError, match="model"):
        idx.search(vector=other.isel(x=0, y=0))
    newer, _ = make_emb(10, 10, 16, model_version="2")
    with pytest.raises(IndexMismatchError, match="version"):
        idx.add(newer)
    wide, _ = make_emb(10, 10, 32)
    with pytest.raises(IndexMismatchError, match="dimension 32"):
        idx.add(wide)
    with pytest.raises(IndexMismatchError, match="16-d"):
        idx.search(vector=np.ones(32))
    with pytest.raises(IndexMismatchError, match="cube to map"):
        idx.similarity_map(wide, patch=(0, 1))
    utm32, _ = make_emb(10, 10, 16, crs="EPSG:32632")
    with pytest.raises(IndexMismatchError, match="reproject"):
        idx.add(utm32)
    assert len(idx.sources) == 1  # nothing half-added


# ---- many cubes / times -------------------------------------------------------------
def test_add_cubes_and_times():
    a, ta = make_emb(20, 20, 8, times=2, seed=5, block=5)
    b, tb = make_emb(20, 20, 8, times=3, seed=5, block=5, x0=600_000.0)  # same prototypes (seed)
    idx = build_index(a, source="tile-a")
    idx.add(b, source="tile-b")
    assert idx.ntotal == 20 * 20 * 5
    with pytest.raises(ParameterError, match="already"):
        idx.add(b, source="tile-b")
    h = idx.search(point=centre(b, 2, 2), time=b.time.values[1], k=200)
    assert {"time", "source"} <= set(h.columns)
    assert set(h["source"]) == {"tile-a", "tile-b"}
    assert set(h["time"]) <= set(a.time.values) | set(b.time.values)
    # a's times 0-1 and b's times 0-1 hold identical vectors (same seed): the top two hits
    # are the query patch and its exact twin in tile-a, in either order (ties: see test below)
    top2 = {(s, r, c, t) for s, r, c, t in zip(h["source"][:2], h["row"][:2], h["col"][:2], h["time"][:2])}
    assert top2 == {("tile-a", 2, 2, a.time.values[1]), ("tile-b", 2, 2, b.time.values[1])}
    assert (h["score"][:2] > 0.999).all()
    truth = {"tile-a": ta.values, "tile-b": tb.values}
    assert all(truth[s][r, c] == tb.values[2, 2] for s, r, c in zip(h["source"], h["row"], h["col"]))
    with pytest.raises(QueryError, match="not in source"):
        idx.search(point=centre(b, 2, 2), time=np.datetime64("2030-01-01"), source="tile-b")
    sm = idx.similarity_map(patch=(2, 2), source="tile-b", time=1)
    assert sm.dims == ("time", "y", "x") and sm.sizes["time"] == 3
    assert np.allclose(sm.x, b.x) and float(sm.isel(time=1, y=2, x=2)) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_ties_are_deterministic(kind):
    """Equal scores: lower source order first, then row-major (row, col), then time."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal(8).astype(np.float32)
    other = rng.standard_normal((4, 8)).astype(np.float32)

    def cube(x0, slots):
        e, _ = make_emb(3, 3, 8, times=2, seed=1, x0=x0)
        data = other[np.arange(2 * 9) % 4].reshape(2, 3, 3, 8).transpose(0, 3, 1, 2).copy()
        for t, r, c in slots:
            data[t, :, r, c] = v
        return e.copy(data=data)

    # twins of v: cube "b" (added first) at (t=1, 0, 2) and (t=0, 2, 0), cube "a" at (0, 1, 1)
    b = cube(500_000.0, [(1, 0, 2), (0, 2, 0)])
    a = cube(600_000.0, [(0, 1, 1), (1, 1, 1)])
    idx = build_index(b, source="b", kind=kind, params={"efSearch": 256} if kind == "hnsw" else None)
    idx.add(a, source="a")
    want = [("b", 0, 2, 1), ("b", 2, 0, 0), ("a", 1, 1, 0), ("a", 1, 1, 1)]
    for k in (1, 2, 3, 4):  # the tie also straddles the k-th place
        h = idx.search(vector=v, k=k)
        got = [(s, r, c, int(np.flatnonzero(b.time.values == t)[0]))
               for s, r, c, t in zip(h["source"], h["row"], h["col"], h["time"])]
        assert got == want[:k]
        assert h["score"].nunique() == 1 and h["score"].iloc[0] == pytest.approx(1.0, abs=1e-6)


# ---- persistence ------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    a, _ = make_emb(20, 25, 8, times=2, nan_frac=0.1, seed=6)
    b, _ = make_emb(10, 10, 8, seed=6, x0=510_000.0)
    idx = build_index(a, source="a")
    idx.add(b, source="b")
    path = idx.save(tmp_path / "ix")
    assert {p.name for p in Path(path).iterdir()} == {"index.faiss", "meta.json", "entries.npz"}
    back = EmbeddingIndex.load(path)
    assert back.ntotal == idx.ntotal and back.key == idx.key and back.dim == 8
    assert back.crs == idx.crs and back.attrs == idx.attrs and back.model == "synthetic"
    assert [s.id for s in back.sources] == ["a", "b"]
    np.testing.assert_array_equal(back.sources[0].times, a.time.values)
    assert back.sources[1].times is None
    q = dict(point=centre(a, 3, 4), time=0, source="a", k=20)
    h1, h2 = idx.search(**q), back.search(**q)
    assert h1.drop(columns="geometry").equals(h2.drop(columns="geometry"))
    # similarity map without the cube: rebuilt from stored vectors, same grid and values
    s1 = idx.similarity_map(patch=(3, 4), source="a")
    s2 = back.similarity_map(patch=(3, 4), source="a")
    xr.testing.assert_allclose(s1.drop_vars("spatial_ref"), s2.drop_vars("spatial_ref"), atol=1e-5)
    assert s2.rio.transform() == a.rio.transform() and s2.rio.crs == a.rio.crs
    # the loaded index keeps refusing other models and accepts more cubes
    other, _ = make_emb(5, 5, 8, model="other")
    with pytest.raises(IndexMismatchError):
        back.add(other)
    back.add(make_emb(5, 5, 8, seed=6, x0=520_000.0)[0], source="c")
    assert back.ntotal == idx.ntotal + 25
    with pytest.raises(FileNotFoundError, match="not a saved eoembed index"):
        EmbeddingIndex.load(tmp_path)


def test_save_load_ivf_keeps_params(tmp_path):
    emb, _ = make_emb(60, 60, 8, seed=7)
    idx = build_index(emb, kind="IVF16,Flat", params={"nprobe": 3})
    back = EmbeddingIndex.load(idx.save(tmp_path / "ivf"))
    assert back.params == {"nprobe": 3}
    assert faiss.extract_index_ivf(back._cpu).nprobe == 3
    np.testing.assert_allclose(back.vectors([0, 5]), idx.vectors([0, 5]))


# ---- similarity maps ----------------------------------------------------------------
def test_similarity_map_grid_nan_and_values(cube, idx):
    emb, truth = cube
    r, c = np.argwhere(truth.values == 0)[0]
    sim = idx.similarity_map(point=centre(emb, r, c))
    assert sim.dims == ("y", "x") and sim.dtype == np.float32
    np.testing.assert_array_equal(sim.x, emb.x)
    np.testing.assert_array_equal(sim.y, emb.y)
    assert sim.rio.crs == emb.rio.crs and sim.rio.transform() == emb.rio.transform()
    assert np.array_equal(np.isnan(sim.values), truth.values < 0)
    # equals cosine computed by hand and the FAISS scores
    v = emb.values.reshape(16, -1).T
    q = v[r * emb.sizes["x"] + c]
    with np.errstate(invalid="ignore"):
        want = (v @ q) / np.linalg.norm(v, axis=1) / np.linalg.norm(q)
    np.testing.assert_allclose(sim.values.ravel(), want, atol=1e-5)
    hits = idx.search(point=centre(emb, r, c), k=20)
    np.testing.assert_allclose(sim.values[hits["row"], hits["col"]], hits["score"], atol=1e-5)
    # planted structure: same-class patches are more similar
    s = sim.values
    assert np.nanmean(s[truth.values == 0]) > np.nanmean(s[truth.values == 1]) + 0.3


def test_similarity_map_lazy_equals_eager():
    emb, truth = make_emb(64, 48, 16, nan_frac=0.05, seed=8, times=2)
    lazy = emb.chunk({"time": 1, "embedding": 8, "y": 16, "x": 24})  # embedding split on purpose
    q = np.random.default_rng(0).standard_normal(16)
    s_lazy = similarity_map(lazy, q)
    s_eager = similarity_map(emb, q)
    assert s_lazy.chunks is not None and s_eager.chunks is None
    assert s_lazy.dims == ("time", "y", "x")
    assert s_lazy.data.npartitions == 2 * 4 * 2  # one task per spatial chunk
    xr.testing.assert_allclose(s_lazy.compute(), s_eager, atol=1e-6)
    assert s_lazy.rio.crs == emb.rio.crs
    # the index path stays lazy too
    idx = build_index(lazy)
    assert idx.ntotal == int((truth.values >= 0).sum()) * 2
    sm = idx.similarity_map(vector=q)
    assert sm.chunks is not None
    xr.testing.assert_allclose(sm.compute(), s_eager, atol=1e-6)


# ---- approximate indexes: recall measured ------------------------------------------
def _clustered(n, d, seed, centres=None):
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = rng.standard_normal((200, d))
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, d))
    return x.astype(np.float32), centres


def _cube_from_vectors(v, d):
    import rioxarray  # noqa: F401
    from affine import Affine

    ny = len(v) // 100
    arr = v[: ny * 100].T.reshape(d, ny, 100)
    emb = xr.DataArray(arr, dims=("embedding", "y", "x"),
                       coords={"y": 5_700_000 - 10 * (np.arange(ny) + 0.5), "x": 10 * (np.arange(100) + 0.5)},
                       attrs={"eoembed:model": "synthetic", "eoembed:embedding_dim": d})
    return emb.rio.write_crs("EPSG:32631").rio.write_transform(Affine(10, 0, 0, 0, -10, 5_700_000))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_reaches_recall(kind):
    d = 32
    data, centres = _clustered(30_000, d, seed=10)
    idx = build_index(_cube_from_vectors(data, d), kind=kind)
    assert idx.key.startswith("IVF" if kind == "ivf" else "HNSW")
    assert idx.params and idx.tuning["recall@10"] >= 0.95
    # held-out queries from the same distribution, compared with exact search
    queries, _ = _clustered(300, d, seed=11, centres=centres)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(d)
    flat.add(idx.vectors(np.arange(idx.ntotal)))
    _, exact = flat.search(qn, 10)
    _, approx = idx.search_vectors(qn, 10)
    assert recall_at_k(approx, exact, 10) >= 0.95
    assert idx.recall(k=10) >= 0.95


def test_numpy_flat_path_equals_faiss():
    emb, _ = make_emb(30, 30, 16, seed=14)
    idx = build_index(emb)
    q = idx.vectors(np.arange(0, 900, 37))
    s1, i1 = idx.search_vectors(q, 25)
    idx.numpy_flat = False
    s2, i2 = idx.search_vectors(q, 25)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert (i1 == i2).mean() > 0.99  # ties may swap
    idx.numpy_flat = True
    s3, i3 = idx.search_vectors(q[:2], 2000)  # k > ntotal: padded like FAISS
    assert (i3[:, 900:] == -1).all() and sorted(i3[0, :900]) == list(range(900))


def test_auto_kind_uses_choose_index_key():
    d = 8
    data, _ = _clustered(3_000, d, seed=12)
    emb = _cube_from_vectors(data, d)
    assert build_index(emb).key == "Flat"
    assert build_index(emb, kind="flat").key == "Flat"
    with pytest.raises(ParameterError, match="metric"):
        build_index(emb, metric="hamming")
    with pytest.raises(ParameterError, match="device"):
        build_index(emb, device="tpu")


def test_cuda_without_gpu_is_a_clear_error():
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    emb, _ = make_emb(5, 5, 4)
    with pytest.raises(ParameterError, match="faiss-gpu"):
        build_index(emb, device="cuda")


@pytest.mark.gpu
def test_gpu_index_matches_cpu():
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        pytest.skip("FAISS sees no GPU (faiss-cpu or no CUDA device)")
    emb, _ = make_emb(40, 40, 16, seed=13)
    gpu = build_index(emb, device="cuda")
    cpu = build_index(emb, device="cpu")
    assert gpu.device.startswith("cuda")
    h1, h2 = gpu.search(patch=(3, 3), k=20), cpu.search(patch=(3, 3), k=20)
    assert h1["id"].tolist() == h2["id"].tolist()


# ---- the index package: one Query object, no throwaway index (issue 8, B4) ----------
def test_query_object_is_the_one_set_of_query_arguments(idx, cube):
    from eoembed.index import Query

    emb, truth = cube
    r, c = (int(v[0]) for v in np.nonzero(truth.values >= 0))  # a valid patch
    q = Query(point=centre(emb, r, c))
    a, b = idx.search(q, k=7), idx.search(point=centre(emb, r, c), k=7)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    np.testing.assert_array_equal(idx.query_vector(q)[0], idx.query_vector(point=centre(emb, r, c))[0])
    sm = idx.similarity_map(query=Query(patch=(r, c)))
    assert float(sm.isel(y=r, x=c)) == pytest.approx(1, abs=1e-5)
    with pytest.raises(QueryError, match="exactly one"):
        Query(point=(0, 0), patch=(1, 1))
    with pytest.raises(QueryError, match="negatives= needs positives="):
        Query(vector=np.ones(16), negatives=[(0, 0)])
    with pytest.raises(ParameterError, match="method"):
        Query(positives=[(0, 0)], method="median")
    with pytest.raises(ParameterError, match=r"Unknown query argument\(s\) \['pointt'\]"):
        idx.search(pointt=(0, 0))


def test_build_index_creates_exactly_one_faiss_index(monkeypatch, cube):
    made = []
    real = faiss.index_factory

    def counting(*a, **kw):
        made.append(a[1])
        return real(*a, **kw)

    monkeypatch.setattr(faiss, "index_factory", counting)
    monkeypatch.setattr(faiss, "IndexFlatIP", lambda *a: pytest.fail("throwaway IndexFlatIP built"))
    idx = build_index(cube[0])
    assert made == ["Flat"] and idx.ntotal > 0


def test_linear_direction_lives_in_classify(idx, cube):
    from eoembed.classify import linear_direction

    emb, truth = cube
    pos = [centre(emb, r, c) for r, c in zip(*np.nonzero(truth.values == 1))][:5]
    h = idx.search(positives=pos, method="linear", k=20)
    t = truth.values
    assert np.mean([t[r, c] == 1 for r, c in zip(h["row"], h["col"])]) > 0.8
    w = linear_direction([np.ones((2, 3))], [], np.zeros((4, 3)) - 1)
    assert w.shape == (3,) and (w > 0).all()
    with pytest.raises(QueryError, match="needs negatives"):
        linear_direction([np.ones((2, 3))], [], np.zeros((0, 3)))


# ---- similarity by point / polygon on the cube itself (one locator) -------------------------------
def _to_lonlat(geom, emb):
    from pyproj import Transformer

    tr = Transformer.from_crs(emb.rio.crs, "EPSG:4326", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def test_cube_similarity_by_point_polygon_vector_equals_the_index_map():
    """emb.eo.similarity(point=/polygon=/vector=) gives the map the index gives for the same query:
    same located patches (times averaged, masked ones skipped), same normalisation, query CRS transformed."""
    from pyproj import Transformer

    emb, truth = make_emb(30, 36, 16, times=3, nan_frac=0.1, noise=0.3, seed=12)
    clean, _ = make_emb(30, 36, 16, times=3, nan_frac=0.0, noise=0.3, seed=12)
    for r, c in ((4, 5), (9, 20)):  # queried patches valid (others stay masked at random)
        emb.values[:, :, r, c] = clean.values[:, :, r, c]
    emb.values[1, :, 4, 5] = np.nan  # one timestep of the queried patch masked
    idx = build_index(emb)
    x, y = centre(emb, 4, 5)
    lon, lat = Transformer.from_crs(emb.rio.crs, "EPSG:4326", always_xy=True).transform(x + 30, y - 30)
    field_poly = shapely.box(x - 100, y - 180, x + 260, y + 20)  # several patch centres
    tiny = shapely.Point(float(emb.x[20]) + 12, float(emb.y[9]) - 7).buffer(6)  # inside one patch
    queries = [dict(point=(x, y)), dict(point=(lon, lat), crs="EPSG:4326"), dict(point=shapely.Point(x, y)),
               dict(polygon=field_poly), dict(polygon=tiny), dict(polygon=_to_lonlat(field_poly, emb), crs=4326)]
    for q in queries:
        by_cube = emb.eo.similarity(**q)
        by_index = idx.similarity_map(**q)
        assert by_cube.dims == ("time", "y", "x") and by_cube.rio.crs == emb.rio.crs, q
        xr.testing.assert_allclose(by_cube, by_index, atol=1e-5)
    vec = emb.isel(time=0, y=4, x=5)  # a DataArray vector keeps its model attrs and is checked
    xr.testing.assert_allclose(emb.eo.similarity(vec), idx.similarity_map(vector=vec.values), atol=1e-5)
    xr.testing.assert_allclose(emb.eo.similarity(vector=vec.values), emb.eo.similarity(vec))
    # the tiny polygon is the patch under it
    xr.testing.assert_allclose(emb.eo.similarity(polygon=tiny),
                               emb.eo.similarity(point=(float(emb.x[20]), float(emb.y[9]))))
    # one timestep: map of that time, queried from that time
    one = emb.eo.similarity(point=(x, y), time=2)
    assert one.dims == ("y", "x")
    np.testing.assert_allclose(one.values, similarity_map(emb.isel(time=2), emb.values[2, :, 4, 5]).values,
                               atol=1e-6)
    # lazy cube: same map, still lazy
    lazy = emb.chunk({"y": 10, "x": 12})
    s = lazy.eo.similarity(point=(x, y))
    assert s.chunks is not None
    xr.testing.assert_allclose(s.compute(), idx.similarity_map(point=(x, y)), atol=1e-5)


def test_cube_similarity_bad_queries_raise_typed_errors():
    from eoembed.exceptions import DimensionError, OutsideCubeError

    emb, truth = make_emb(10, 12, 8, nan_frac=0.0, seed=2)
    with pytest.raises(OutsideCubeError, match="crs='EPSG:4326'"):
        emb.eo.similarity(point=(11.5, 48.1))  # lon/lat without crs=
    with pytest.raises(OutsideCubeError):
        emb.eo.similarity(point=(11.5, 48.1), crs="EPSG:32633")
    with pytest.raises(MissingCRSError, match="write_crs"):
        emb.drop_vars("spatial_ref").eo.similarity(point=(11.5, 48.1), crs="EPSG:4326")
    with pytest.raises(DimensionError, match="embedding"):
        similarity_map(emb.rename(embedding="band"), point=centre(emb, 1, 1))
    with pytest.raises(QueryError, match="exactly one"):
        emb.eo.similarity()
    with pytest.raises(QueryError, match="exactly one"):
        emb.eo.similarity(emb.values[:, 0, 0], point=centre(emb, 1, 1))
    with pytest.raises(QueryError, match="Point"):
        emb.eo.similarity(point=shapely.box(0, 0, 1, 1))
    with pytest.raises(QueryError, match="crs= applies"):
        emb.eo.similarity(emb.values[:, 0, 0], crs="EPSG:4326")
    masked = emb.copy(data=emb.values.copy())
    masked.values[:, 3, 3] = np.nan
    with pytest.raises(QueryError, match="masked"):
        masked.eo.similarity(point=centre(emb, 3, 3))
    with pytest.raises(IndexMismatchError, match="different spaces|model"):
        emb.eo.similarity(emb.isel(y=0, x=0).assign_attrs({"eoembed:model": "other"}))


