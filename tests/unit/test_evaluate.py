"""Tests for eoembed.evaluate: EuroSAT-style folders, pooling, kNN/linear probe vs spectral."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("sklearn")
rasterio = pytest.importorskip("rasterio")

from eoembed.evaluate import (  # noqa: E402
    EUROSAT_BANDS,
    embed_tiles,
    evaluate,
    load_tile_folder,
    main,
    score_features,
)
from eoembed.exceptions import InputError, LabelError  # noqa: E402

CLASSES = ("Forest", "River", "Urban")


def synth_tiles(n_per_class=10, size=32, seed=0, nb=13):
    rng = np.random.default_rng(seed)
    spectra = rng.uniform(500, 4000, (len(CLASSES), nb))
    tiles, labels = [], []
    for k, c in enumerate(CLASSES):
        for _ in range(n_per_class):
            t = spectra[k][:, None, None] * rng.uniform(0.85, 1.15) + rng.normal(0, 250, (nb, size, size))
            tiles.append(np.clip(t, 1, 10000))
            labels.append(c)
    return np.asarray(tiles, np.float32), np.asarray(labels)


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    from rasterio.transform import from_origin

    root = tmp_path_factory.mktemp("eurosat")
    tiles, labels = synth_tiles()
    for i, (t, c) in enumerate(zip(tiles, labels)):
        (root / c).mkdir(exist_ok=True)
        with rasterio.open(root / c / f"{c}_{i}.tif", "w", driver="GTiff", height=32, width=32, count=13,
                           dtype="uint16", crs="EPSG:32633", transform=from_origin(400000 + 320 * i, 5e6, 10, 10)) as dst:
            dst.write(t.astype("uint16"))
    (root / "README.txt").write_text("not a class")
    return root, tiles, labels


def test_load_tile_folder(eurosat):
    root, tiles, labels = eurosat
    X, y, bands = load_tile_folder(root)
    assert X.shape == (30, 13, 32, 32) and bands == list(EUROSAT_BANDS)
    assert sorted(set(y)) == list(CLASSES) and (y == "River").sum() == 10
    X2, y2, _ = load_tile_folder(root, max_per_class=4)
    assert len(X2) == 12
    with pytest.raises(FileNotFoundError, match="root/<class_name>"):
        load_tile_folder(root / "nope")
    with pytest.raises(LabelError, match="at least two classes"):
        load_tile_folder(root / "Forest")
    with pytest.raises(InputError, match="13"):
        load_tile_folder(root, bands=["B02", "B03"])


def test_embed_tiles_pools_one_vector_per_tile(eurosat):
    _, tiles, _ = eurosat
    X = embed_tiles(tiles, EUROSAT_BANDS, "spectral", patch_size=8)
    assert X.shape == (30, 24)  # 12 model bands x (mean, std)
    # pooling = mean over the tile's patches; per-tile embedding gives the same vector
    import eoembed
    from eoembed.evaluate import _mosaic

    cube, _ = _mosaic(tiles[5:6], EUROSAT_BANDS)
    e = eoembed.embed(cube, model="spectral", patch_size=8, tile_size=32, halo=0, progress=False,
                      extra_bands="ignore", harmonize=False)  # EuroSAT tiles carry no dates: not harmonized either way
    np.testing.assert_allclose(X[5], e.mean(("y", "x")).values, rtol=1e-5)


def test_evaluate_folder_against_baseline(eurosat):
    root, _, _ = eurosat

    def noise_model(cube: xr.DataArray) -> xr.DataArray:
        # a "model" whose vectors carry no class information: should lose to the baseline
        rng = np.random.default_rng(0)
        ny, nx = cube.sizes["y"] // 8, cube.sizes["x"] // 8
        return xr.DataArray(rng.standard_normal((8, ny, nx)).astype("float32"), dims=("embedding", "y", "x"))

    df = evaluate(root, models=[noise_model], patch_size=8, n_splits=3)
    assert list(df.index) == ["spectral", "noise_model"]
    assert {"dim", "n_tiles", "embed_s", "knn", "knn_std", "linear", "linear_std",
            "knn_vs_spectral", "linear_vs_spectral"} <= set(df.columns)
    assert df.loc["spectral", "knn"] > 0.9 and df.loc["spectral", "linear"] > 0.9
    assert df.loc["spectral", "knn_vs_spectral"] == 0
    assert df.loc["noise_model", "linear_vs_spectral"] < -0.3
    assert df.attrs["protocol"] == "stratified 3-fold CV"


def test_evaluate_arrays_and_few_shot():
    tiles, labels = synth_tiles(n_per_class=8, size=16, seed=1)
    df = evaluate((tiles, labels), bands=EUROSAT_BANDS, patch_size=4, shots=2, repeats=3)
    assert df.attrs["protocol"] == "2-shot x3" and df.loc["spectral", "n_tiles"] == 24
    assert df.loc["spectral", "knn"] > 0.8
    with pytest.raises(InputError, match="bands="):
        evaluate((tiles, labels))
    with pytest.raises(LabelError, match="shots=8"):
        evaluate((tiles, labels), bands=EUROSAT_BANDS, patch_size=4, shots=8)


def test_score_features_errors():
    with pytest.raises(LabelError, match="two classes"):
        score_features(np.ones((5, 3)), np.zeros(5))
    X = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(LabelError, match=">= 2 tiles"):
        score_features(X, np.array([0, 0, 0, 0, 0, 1]))


def test_cli(eurosat, tmp_path, capsys):
    root, _, _ = eurosat
    out = tmp_path / "res.json"
    assert main([str(root), "--models", "spectral", "--patch-size", "8", "--folds", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stratified 3-fold CV" in text and "spectral" in text
    rec = json.loads(out.read_text())
    assert rec[0]["model"] == "spectral" and rec[0]["knn"] > 0.9


@pytest.mark.slow
def test_module_entry_point(eurosat):
    root, _, _ = eurosat
    r = subprocess.run([sys.executable, "-m", "eoembed.evaluate", str(root), "--patch-size", "8", "--folds", "2"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert "linear_vs_spectral" in r.stdout


def test_eurosat_band_order_comes_from_the_sensor_table():
    from eoembed.sensors import S2_ALL_BANDS, canonical_band

    # the EuroSAT GeoTIFFs store B01..B12 in number order, then B8A last
    assert EUROSAT_BANDS == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
    assert set(EUROSAT_BANDS) == set(S2_ALL_BANDS) and all(canonical_band(b) == ("sentinel2_l2a", b) for b in EUROSAT_BANDS)


def test_each_chip_is_its_own_window(checkpoints):
    """Chips laid side by side never share an encoder window: a chip's vector does not depend on its neighbours."""
    from eoembed.evaluate import embed_tiles
    from eoembed.sensors import S2_L2A_BANDS

    rng = np.random.default_rng(3)
    bands = list(S2_L2A_BANDS)
    chips = rng.uniform(200, 4000, size=(3, 1, len(bands), 32, 32)).astype("float32")  # (N, time, band, H, W)
    together = embed_tiles(chips, bands, "nano", weights=checkpoints["v1.1"])
    alone = embed_tiles(chips[1:2], bands, "nano", weights=checkpoints["v1.1"])
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)
