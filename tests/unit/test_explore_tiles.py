"""Zoom-dependent tiles (eoembed.explore.tiles): the PCA-RGB COG and its localtileserver tiles, for real."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("localtileserver")
pytest.importorskip("leafmap")
rasterio = pytest.importorskip("rasterio")
requests = pytest.importorskip("requests")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402
from eoembed.exceptions import InputError, ParameterError  # noqa: E402
from eoembed.explore.layers import pca_rgb_2d  # noqa: E402
from eoembed.explore.tiles import tile_layer, write_pca_cog  # noqa: E402
from eoembed.reduce import fit_pca  # noqa: E402
from eoembed.viz import rgb_to_rgba  # noqa: E402


@pytest.fixture(scope="module")
def emb():
    e, _ = make_emb(60, 70, 16, seed=3, nan_frac=0.05, chunks={"y": 16, "x": 16})
    return e


def test_pca_cog_is_the_pca_view_at_full_resolution_with_overviews(emb, tmp_path):
    proj = fit_pca(emb, 3, sample=20_000)
    p = write_pca_cog(emb, tmp_path / "pca.tif", proj=proj, max_block_mb=1)
    ref = rgb_to_rgba(pca_rgb_2d(proj, emb.compute()).values)  # the explorer's own colouring, computed directly
    with rasterio.open(p) as ds:
        assert (ds.count, ds.height, ds.width) == (4, 60, 70) and ds.dtypes[0] == "uint8"
        assert ds.crs == emb.rio.crs and ds.transform == emb.rio.transform()
        got = np.moveaxis(ds.read(), 0, -1)
        assert ds.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    assert np.array_equal(got, ref)  # same bytes, NaN patches transparent
    assert (got[..., 3] == 0).sum() == int((~np.isfinite(emb.values).all(0)).sum()) > 0


def test_pca_cog_is_streamed_in_bounded_blocks_with_the_same_result(tmp_path):
    e, _ = make_emb(300, 260, 16, seed=4, chunks={"y": 64, "x": 64})
    proj = fit_pca(e, 3, sample=20_000)
    one = write_pca_cog(e, tmp_path / "one.tif", proj=proj, max_block_mb=512)
    many = write_pca_cog(e, tmp_path / "many.tif", proj=proj, max_block_mb=1)  # 128-patch blocks (1 MB of vectors): 3 × 3
    with rasterio.open(one) as a, rasterio.open(many) as b:
        assert np.array_equal(a.read(), b.read())
        assert len(b.overviews(1)) >= 1  # a COG: zoomed-out tiles read an overview, not the full image
    from eoembed.explore.tiles import _block_side

    assert _block_side(300, 260, 16, 64, 1) == 128 and _block_side(300, 260, 16, 100, 0.5) == 100 and _block_side(300, 260, 16, 64, 512) == 300


def test_pca_cog_refusals_leave_existing_output_alone(emb, tmp_path):
    p = write_pca_cog(emb, tmp_path / "pca.tif")
    before = p.read_bytes()
    with pytest.raises(InputError, match="overwrite=True"):
        write_pca_cog(emb, p)
    other, _ = make_emb(20, 20, 8, seed=1)
    with pytest.raises(ParameterError, match="16-d"):
        write_pca_cog(emb, tmp_path / "x.tif", proj=fit_pca(other, 3))
    with pytest.raises(ParameterError, match="max_block_mb"):
        write_pca_cog(emb, tmp_path / "x.tif", max_block_mb=0)
    assert p.read_bytes() == before and not (tmp_path / "x.tif").exists()
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def _get_tile(layer, z, x, y):
    url = layer.url.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text[:300]
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))


def _pixel(tms, t, lon, lat, img):
    """(row, col) of (lon, lat) in the image of tile ``t``."""
    from pyproj import Transformer

    b = tms.xy_bounds(t)
    mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    return (int((b.top - my) / (b.top - b.bottom) * img.shape[0]),
            int((mx - b.left) / (b.right - b.left) * img.shape[1]))


def test_tiles_are_served_for_real_and_show_the_cog_colours(emb, tmp_path):
    import morecantile
    from pyproj import Transformer

    proj = fit_pca(emb, 3, sample=20_000)
    p = write_pca_cog(emb, tmp_path / "pca.tif", proj=proj)
    layer = tile_layer(p, name="PCA-RGB")
    assert layer.name == "PCA-RGB" and layer.url.startswith("http://127.0.0.1:")
    # the patch at row 30, col 35: its tile at zoom 16 holds its colour (40 m patches ≈ 16 px there)
    x, y = float(emb.x[35]), float(emb.y[30])
    lon, lat = Transformer.from_crs(emb.rio.crs, "EPSG:4326", always_xy=True).transform(x, y)
    tms = morecantile.tms.get("WebMercatorQuad")
    t = tms.tile(lon, lat, 16)
    img = _get_tile(layer, t.z, t.x, t.y)
    row, col = _pixel(tms, t, lon, lat, img)
    want = rgb_to_rgba(pca_rgb_2d(proj, emb.isel(y=[30], x=[35]).compute()).values)[0, 0]
    if want[3]:
        assert np.abs(img[row, col, :3].astype(int) - want[:3].astype(int)).max() <= 3
    # a zoomed-out tile (overview) of the whole cube is not empty
    t0 = tms.tile(lon, lat, 11)
    assert (_get_tile(layer, t0.z, t0.x, t0.y)[..., 3] > 0).any()


def test_tile_layer_refuses_what_it_cannot_place(tmp_path):
    with pytest.raises(InputError, match="No raster"):
        tile_layer(tmp_path / "missing.tif", name="x")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    with pytest.raises(InputError, match="not a raster"):
        tile_layer(bad, name="x")
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
                       transform=rasterio.transform.from_origin(0, 40, 10, 10)) as ds:  # placed, but in no CRS
        ds.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(InputError, match="no CRS"):
        tile_layer(nocrs, name="x")
    from eoembed.explore.tiles import add_cog

    with pytest.raises(ParameterError, match="leafmap.Map"):
        add_cog(object(), nocrs)


def test_explorer_on_a_pyramid_serves_the_pca_view_as_tiles(tmp_path):
    import ipyleaflet

    from eoembed.explore.pyramid import open_pyramid, pyramid_pca_cog, write_pyramid

    e, _ = make_emb(80, 90, 16, seed=6, chunks={"y": 32, "x": 32})
    write_pyramid(e, tmp_path / "pyr", min_side=24)
    cog = pyramid_pca_cog(tmp_path / "pyr")
    assert cog is not None and cog.name == "pca.tif"
    ex = eoembed.explore.explore(e, scatter=None, max_pixels=30, pyramid=tmp_path / "pyr")
    layer = ex.layers["PCA-RGB"]
    assert isinstance(layer, ipyleaflet.TileLayer) and layer in ex.map.layers
    assert ex.map.layers.index(layer) < ex.map.layers.index(ex.view.labels_group)  # markers stay on top
    # the overview data the scatter/inspect read uses the COG's projection (fitted on the coarsest level)
    coarsest = open_pyramid(tmp_path / "pyr")[-1]
    ref = fit_pca(coarsest, 3, sample=20_000)
    with rasterio.open(cog) as ds:
        px = ds.read(window=((10, 11), (20, 21)))[:, 0, 0]
    want = rgb_to_rgba(pca_rgb_2d(ref, e.isel(y=[10], x=[20]).compute()).values)[0, 0]
    assert np.array_equal(px, want)
    np.testing.assert_allclose(ex.layer_data["PCA-RGB"].values, pca_rgb_2d(ref, ex.state.grid.ov).values, atol=1e-6)
    # zooming in draws no PCA detail image (the tiles have it) but still the similarity detail
    ex.click(float(e.x[40]), float(e.y[40]))
    from pyproj import Transformer

    tr = Transformer.from_crs(e.rio.crs, "EPSG:4326", always_xy=True)
    (w, s), (east, n) = tr.transform(float(e.x[30]), float(e.y[45])), tr.transform(float(e.x[45]), float(e.y[30]))
    assert ex.refine_view([[s, w], [n, east]]) == "1/1"
    assert "PCA-RGB detail" not in ex.layers and "similarity detail" in ex.layers


def test_to_zarr_writes_the_pyramid_beside_the_verified_store(tmp_path):
    from eoembed.explore.pyramid import open_pyramid, pyramid_pca_cog
    from eoembed.io import to_zarr

    e, _ = make_emb(300, 40, 8, seed=2, chunks={"y": 100, "x": 40})
    info = to_zarr(e, tmp_path / "emb.zarr", pyramid=True, progress=False)
    assert info["pyramid"] == tmp_path / "emb.zarr.pyramid"
    levels = open_pyramid(info["pyramid"])
    assert levels[0].shape[-2:] == (150, 20) and pyramid_pca_cog(info["pyramid"]) is not None
    small, _ = make_emb(30, 40, 8, seed=2)
    assert to_zarr(small, tmp_path / "small.zarr", pyramid=True, progress=False)["pyramid"] is None


def test_a_class_map_written_by_to_cog_is_served_in_its_own_colours(tmp_path):
    """Static results (class, cluster, change maps) leave the notebook as COGs and come back as tiles."""
    import leafmap
    import morecantile
    from pyproj import Transformer

    from eoembed.explore.tiles import add_cog
    from eoembed.export import to_cog

    e, truth = make_emb(60, 70, 16, seed=3)
    cls = truth.astype("uint8").rename("class").rio.write_crs(e.rio.crs).rio.write_transform(e.rio.transform())
    cls.attrs.update(flag_values=[0, 1, 2], flag_meanings="a b c")
    p = to_cog(cls, tmp_path / "cls.tif", colors={0: "#ff0000", 1: "#00ff00", 2: "#0000ff"})
    m = leafmap.Map()
    layer = add_cog(m, p, name="classes")
    assert layer in m.layers and layer.name == "classes"
    want = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}
    to_ll = Transformer.from_crs(e.rio.crs, "EPSG:4326", always_xy=True)
    tms = morecantile.tms.get("WebMercatorQuad")
    for r, c in [(5, 5), (30, 35), (55, 60)]:
        lon, lat = to_ll.transform(float(e.x[c]), float(e.y[r]))
        t = tms.tile(lon, lat, 17)
        img = _get_tile(layer, t.z, t.x, t.y)
        assert tuple(img[_pixel(tms, t, lon, lat, img)][:3]) == want[int(truth.values[r, c])]
