"""eoembed.export: every output opens in rasterio/geopandas with its CRS, transform, nodata, colours."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import label_points, make_emb  # noqa: E402

gpd = pytest.importorskip("geopandas")
pytest.importorskip("sklearn")

from eoembed import export  # noqa: E402
from eoembed.classify import fewshot  # noqa: E402
from eoembed.exceptions import DimensionError, EOEmbedError, MissingCRSError, ParameterError  # noqa: E402
from eoembed.index import similarity_map  # noqa: E402
from eoembed.products import open_embeddings  # noqa: E402

NAMES = np.array(["crop", "forest", "water"])


@pytest.fixture(scope="module")
def cube():
    emb, truth = make_emb(24, 30, 16, nan_frac=0.05, seed=7)
    return emb.rename("embeddings"), truth


@pytest.fixture(scope="module")
def pmap(cube):
    emb, truth = cube
    labels = label_points(emb, truth, 200, names=NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fewshot(emb, labels).predict_map()


def _is_cog(ds) -> bool:
    return ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_class_map_cog_has_colours_nodata_and_georef(cube, pmap, tmp_path):
    emb, _ = cube
    p = export.to_cog(pmap, tmp_path / "class.tif", colors={"water": "#0000ff"})
    with rasterio.open(p) as ds:
        assert _is_cog(ds) and ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.count == 1
        assert ds.crs.to_epsg() == 32631 and tuple(ds.transform)[:6] == tuple(emb.rio.transform())[:6]
        cmap = ds.colormap(1)
        a = ds.read(1)
        tags = ds.tags()
    cls = pmap["class"].values
    masked = cls == pmap["class"].attrs["nodata"]
    assert masked.any() and (a[masked] == 255).all() and (a[~masked] == cls[~masked]).all()
    codes = dict(zip(NAMES, pmap["class"].attrs["flag_values"]))
    assert cmap[codes["water"]] == (0, 0, 255, 255)  # the colour asked for
    assert cmap[codes["crop"]] == export._rgb(export.PALETTE[0]) and cmap[255][3] == 0
    assert json.loads(tags["eoembed_classes"])[str(codes["forest"])] == "forest"
    assert tags["eoembed_model"] == emb.attrs["eoembed:model"]
    with pytest.raises(EOEmbedError, match="exists"):
        export.to_cog(pmap, p)
    with pytest.raises(ParameterError, match="not a class"):
        export.to_cog(pmap, tmp_path / "c2.tif", colors={"desert": "#ffffff"})


def test_probability_and_similarity_cogs(cube, pmap, tmp_path):
    emb, _ = cube
    p = export.to_cog(pmap["probability"], tmp_path / "prob.tif")
    with rasterio.open(p) as ds:
        assert _is_cog(ds) and ds.count == 3 and ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.descriptions == tuple(NAMES) and tuple(ds.transform)[:6] == tuple(emb.rio.transform())[:6]
        np.testing.assert_allclose(ds.read(), pmap["probability"].values, equal_nan=True)
    sim = similarity_map(emb, emb.values[:, 3, 3])
    p = export.to_cog(sim, tmp_path / "sim.tif")
    with rasterio.open(p) as ds:
        assert _is_cog(ds) and ds.count == 1 and ds.crs.to_epsg() == 32631
        np.testing.assert_allclose(ds.read(1), sim.values, equal_nan=True)
        assert ds.tags()["eoembed_model"] == emb.attrs["eoembed:model"]
    with pytest.raises(MissingCRSError):
        export.to_cog(xr.DataArray(np.zeros((3, 3)), dims=("y", "x")), tmp_path / "nocrs.tif")
    with pytest.raises(DimensionError):
        export.to_cog(xr.concat([sim, sim], "a").expand_dims(b=1), tmp_path / "4d.tif")
    # class codes above 254 (WorldCereal crop codes) keep their values in a uint16 class map
    codes = xr.where(sim > 0, 1100, 2000).astype(np.int32).rename("class").rio.write_crs(32631)
    codes = codes.rio.write_transform(emb.rio.transform())
    p = export.to_cog(codes, tmp_path / "codes.tif")
    with rasterio.open(p) as ds:
        assert ds.dtypes[0] == "uint16" and ds.nodata == 65535 and set(ds.colormap(1)) >= {1100, 2000}
        assert set(np.unique(ds.read(1))) == {1100, 2000}
    with pytest.raises(ParameterError, match="0-65534"):
        export.to_cog((codes * 100).rename("class"), tmp_path / "big.tif")


def test_hits_and_labels_as_geoparquet_and_geojson(cube, tmp_path):
    pytest.importorskip("faiss")
    from eoembed.index import build_index

    emb, _ = cube
    hits = build_index(emb).search(patch=(2, 2), k=5)
    p = export.to_geoparquet(hits, tmp_path / "hits.parquet", attrs=emb.attrs)
    back = gpd.read_parquet(p)
    assert back.crs.to_epsg() == 32631 and len(back) == 5
    np.testing.assert_allclose(back.geometry.x, hits["x"])
    import pyarrow.parquet as pq

    meta = pq.read_schema(p).metadata
    assert meta[b"eoembed_model"].decode() == emb.attrs["eoembed:model"]
    g = export.to_geojson(hits, tmp_path / "hits.geojson")
    gj = gpd.read_file(g)
    assert gj.crs.to_epsg() == 4326 and len(gj) == 5
    np.testing.assert_allclose(gj.to_crs(32631).geometry.x, hits["x"], atol=1e-3)
    # a plain DataFrame of x/y needs a CRS
    with pytest.raises(MissingCRSError):
        export.to_geoparquet(hits.drop(columns="geometry").pipe(lambda d: __import__("pandas").DataFrame(d)),
                             tmp_path / "x.parquet")


@pytest.mark.parametrize("quantize", ["int8", None])
def test_embedding_cube_cog_round_trip(cube, tmp_path, quantize):
    emb, _ = cube
    p = export.embeddings_to_cog(emb, tmp_path / f"emb_{quantize}.tif", quantize=quantize)
    with rasterio.open(p) as ds:
        assert _is_cog(ds) and ds.count == 16 and ds.crs.to_epsg() == 32631
        assert tuple(ds.transform)[:6] == tuple(emb.rio.transform())[:6]
        if quantize:
            assert ds.dtypes[0] == "int8" and ds.nodata == -128 and ds.descriptions[:2] == ("A00", "A01")
        else:
            assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.tags()["eoembed_model"] == emb.attrs["eoembed:model"]
    back = open_embeddings(p)
    assert back.attrs["eoembed:model"] == emb.attrs["eoembed:model"]
    a, b = emb.values, back.values
    nan = np.isnan(a).any(axis=0)
    assert (np.isnan(b).all(axis=0) == nan).all()
    if quantize:
        an = a[:, ~nan] / np.linalg.norm(a[:, ~nan], axis=0)
        cos = (an * b[:, ~nan]).sum(axis=0)
        assert cos.mean() > 0.999 and cos.min() > 0.995
    else:
        np.testing.assert_allclose(b, a, equal_nan=True)
    with pytest.raises(DimensionError, match="timesteps"):
        export.embeddings_to_cog(emb.expand_dims(time=2), tmp_path / "t.tif")


def test_cog_into_a_read_only_folder_says_so(cube, tmp_path, monkeypatch):
    """Writing into a folder the user cannot write: a StoreError naming the folder and the fix, before GDAL fails
    half-way (root ignores permission bits, so the read-only folder is simulated where the check asks)."""
    import os

    from eoembed.exceptions import StoreError

    emb, _ = cube
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))
    with pytest.raises(StoreError, match=r"folder .*ro is read-only.*writable output path"):
        export.embeddings_to_cog(emb, ro / "emb.tif")
    assert not (ro / "emb.tif").exists()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        export.to_cog(emb.isel(embedding=0), blocker / "sub" / "map.tif")
