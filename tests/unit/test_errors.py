"""Bad input: a typed error whose message says what was wrong and how to fix it."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import eoembed
from eoembed import exceptions as E
from eoembed.testing import synthetic_cube


@pytest.fixture(scope="module")
def cube():
    return synthetic_cube(height=16, width=16, times=2)


def _embed(c, model="spectral", **kw):
    return eoembed.embed(c, model, progress=False, **kw)


CASES = {
    "no_crs": (lambda c: c.drop_vars("spatial_ref"), {}, E.MissingCRSError, "rio.write_crs"),
    "geographic_crs": (lambda c: c.rio.write_crs("EPSG:4326"), {}, E.GeographicCRSError, "reproject"),
    "missing_10m_band": (lambda c: c.drop_sel(band="B04"), {"model": "olmoearth-v1.1-nano"},
                         E.BandMismatchError, "B04"),
    "too_many_missing": (lambda c: c.sel(band=["B02", "B03", "B04", "B08", "B11"]), {"model": "olmoearth-v1.1-nano"},
                         E.BandMismatchError, "max_missing"),
    "duplicate_bands": (lambda c: c.assign_coords(band=["B01", "blue", *c.band.values[2:]]).sel(
        band=["B01", "blue", "B03", "B04", "B08"]).assign_coords(band=["B02", "blue", "B03", "B04", "B08"]), {},
        E.BandMismatchError, "both map to B02"),
    "unknown_band": (lambda c: c.assign_coords(band=[*c.band.values[:-1], "ndvi"]), {}, E.BandMismatchError,
                     "extra_bands='ignore'"),
    "no_s2_at_all": (lambda c: c.assign_coords(band=[f"x{i}" for i in range(c.sizes["band"])]),
                     {"extra_bands": "ignore"}, E.BandMismatchError, "needs sentinel2_l2a"),
    "too_many_timesteps": (lambda c: xr.concat([c] * 7, "time").assign_coords(
        time=pd.date_range("2021-01-01", periods=14, freq="W")), {"model": "olmoearth-v1.1-nano"},
        E.TooManyTimestepsError, "composite"),
    "smaller_than_patch": (lambda c: c.isel(y=slice(0, 3), x=slice(0, 3)), {}, E.TooSmallError, "patch"),
    "all_nan": (lambda c: c * np.nan, {}, E.EmptyDataError, "no valid"),
    "int_looks_like_0_1": (lambda c: (c / 1e4).round().astype("int16"), {}, E.ScaleError, "0–1 reflectance"),
    "ambiguous_scale": (lambda c: c / 200.0, {}, E.ScaleError, "scale=10000"),
    "wrong_dims": (lambda c: c.rename(y="lat", x="lon"), {}, E.DimensionError, "reproject"),
    "extra_dim": (lambda c: c.expand_dims(level=[1, 2]), {}, E.DimensionError, "isel(level=0)"),
    "band_dim_named_differently": (lambda c: c.rename(band="channel"), {}, E.DimensionError, "rename"),
    "numeric_time": (lambda c: c.assign_coords(time=[0, 1]), {}, E.InputError, "datetime64"),
    "non_square_pixels": (lambda c: c.assign_coords(x=c.x.values * 2).rio.write_transform(None), {}, E.InputError,
                          "square"),
    "bad_patch_size": (lambda c: c, {"model": "olmoearth-v1.1-nano", "patch_size": 9}, E.ParameterError,
                       "choose one of"),
    "tile_not_multiple": (lambda c: c, {"tile_size": 30, "halo": 4}, E.ParameterError, "multiples"),
    "halo_eats_tile": (lambda c: c, {"tile_size": 16, "halo": 8}, E.ParameterError, "no core"),
    "bad_scale_value": (lambda c: c, {"scale": "percent"}, E.ScaleError, "scale=1"),
    "numpy_not_xarray": (lambda c: c.values, {}, E.InputError, "xr.DataArray"),
    "unknown_model": (lambda c: c, {"model": "olmoearth-v1.1-tinny"}, E.UnknownModelError, "Did you mean"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_typed_actionable_error(cube, name, checkpoints):
    transform, kw, err, fragment = CASES[name]
    kw = dict(kw)
    model = kw.pop("model", "spectral")
    if model.startswith("olmoearth"):
        kw["weights"] = checkpoints["v1.1"]
    with pytest.raises(err) as info:
        _embed(transform(cube), model, **kw)
    assert isinstance(info.value, E.EOEmbedError)
    assert fragment in str(info.value), str(info.value)


# --- weights --------------------------------------------------------------------------
def test_weights_missing_says_what_to_download(cube):
    with pytest.raises(E.WeightsNotFoundError) as info:
        _embed(cube, "tiny")
    msg = str(info.value)
    assert "allenai/OlmoEarth-v1_1-Tiny/resolve/74fab5714f763d6b94f8b1536bdd3300d77f45e8/weights.pth" in msg
    assert "EOEMBED_WEIGHTS_DIR" in msg and "weights=" in msg


def test_weights_path_that_does_not_exist(cube, tmp_path):
    with pytest.raises(E.WeightsNotFoundError, match="does not exist"):
        _embed(cube, "nano", weights=tmp_path / "nope")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(E.WeightsNotFoundError, match="without weights.pth"):
        _embed(cube, "nano", weights=tmp_path / "emptydir")


def test_corrupt_and_truncated_weights(cube, tmp_path, checkpoints):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(E.CorruptWeightsError, match="download it again"):
        _embed(cube, "nano", weights=bad)
    data = (checkpoints["v1.1"] / "weights.pth").read_bytes()
    cut = tmp_path / "cut" / "weights.pth"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(E.CorruptWeightsError):
        _embed(cube, "nano", weights=cut)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(E.CorruptWeightsError, match="empty"):
        _embed(cube, "nano", weights=empty)


class Payload:  # any non-tensor object makes the file a pickle weights_only refuses
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(cube, tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"encoder.x": Payload()}, evil)
    with pytest.raises(E.UnsafeWeightsError, match="weights_only"):
        _embed(cube, "nano", weights=evil)
    plain = tmp_path / "plain.pth"
    with open(plain, "wb") as f:
        pickle.dump({"a": 1}, f, protocol=2)  # torch.load's own protocol: the refusal, not a protocol note
    with pytest.raises((E.UnsafeWeightsError, E.CorruptWeightsError)):
        _embed(cube, "nano", weights=plain)


def test_weights_for_another_size_are_refused(cube, checkpoints):
    with pytest.raises(E.CorruptWeightsError, match="128-d encoder"):
        _embed(cube, "tiny", weights=checkpoints["v1.1"])
    with pytest.raises(E.CorruptWeightsError, match="OlmoEarth v1 model"):
        _embed(cube, "olmoearth-v1.2-nano", weights=checkpoints["v1"])


def test_bare_weights_file_of_another_version_does_not_fit(cube, checkpoints, tmp_path):
    bare = tmp_path / "v1-weights.pth"  # no config.json beside it: built from the registry spec
    bare.write_bytes((checkpoints["v1"] / "weights.pth").read_bytes())
    with pytest.raises(E.CorruptWeightsError, match="does not fit"):
        _embed(cube, "olmoearth-v1.1-nano", weights=bare)
    ok = tmp_path / "v11-weights.pth"
    ok.write_bytes((checkpoints["v1.1"] / "weights.pth").read_bytes())
    a = _embed(cube, "nano", weights=ok)
    b = _embed(cube, "nano", weights=checkpoints["v1.1"])
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)


def test_existing_output_is_never_overwritten_or_corrupted(tmp_path, sample_path):
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    run = subprocess.run([sys.executable, "-m", "eoembed.cli", "embed", str(sample_path), "-o", str(out),
                          "--model", "spectral"], capture_output=True, text=True)
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    # a failing run (bad model) leaves neither a partial nor a final store behind
    new = tmp_path / "new.zarr"
    run = subprocess.run([sys.executable, "-m", "eoembed.cli", "embed", str(sample_path), "-o", str(new),
                          "--model", "tiny"], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1",
                          "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 2 and "WeightsNotFoundError" in run.stderr
    assert not new.exists() and not (tmp_path / "new.zarr.partial").exists()
