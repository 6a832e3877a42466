"""Threshold → objects → count (eoembed.analysis.to_objects)."""

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from affine import Affine

from eoembed.analysis import to_objects
from eoembed.exceptions import DimensionError, MissingCRSError, ParameterError


def _map(values, pitch=40.0):
    h, w = values.shape
    da = xr.DataArray(values, dims=("y", "x"), coords={"y": 5_000_000 - pitch * (np.arange(h) + 0.5),
                                                       "x": 600_000 + pitch * (np.arange(w) + 0.5)})
    da.attrs["eoembed:model"] = "synthetic"
    return da.rio.write_crs("EPSG:32631").rio.write_transform(Affine(pitch, 0, 600_000, 0, -pitch, 5_000_000))


def test_objects_count_area_and_geometry():
    v = np.zeros((20, 30), np.float32)
    v[2:6, 3:8] = 0.9          # 20 patches
    v[10:12, 20:23] = 0.8      # 6 patches
    v[12, 23] = 0.85           # diagonal neighbour: joins with 8-connectivity only
    v[18, 0] = 0.95            # a single patch
    v[15, 15] = np.nan
    objs = to_objects(_map(v), 0.5)
    assert list(objs["n_patches"]) == [20, 7, 1]
    assert objs["area_ha"].iloc[0] == pytest.approx(20 * 40 * 40 / 1e4)
    assert objs.geometry.iloc[0].area == pytest.approx(20 * 1600)
    minx, miny, maxx, maxy = objs.geometry.iloc[0].bounds
    assert (minx, maxy) == (600_000 + 3 * 40, 5_000_000 - 2 * 40)
    assert objs["score_max"].iloc[2] == pytest.approx(0.95)
    assert objs.crs.to_epsg() == 32631 and objs.attrs["eoembed:model"] == "synthetic"
    four = to_objects(_map(v), 0.5, connectivity=4)
    assert sorted(four["n_patches"]) == [1, 1, 6, 20]
    big = to_objects(_map(v), 0.5, min_patches=2)
    assert len(big) == 2 and big.attrs["dropped"] == 1
    below = to_objects(_map(1 - v), 0.5, above=False)
    assert list(below["n_patches"]) == [20, 7, 1]
    assert len(to_objects(_map(v), 0.99)) == 0
    assert list(to_objects(_map(v > 0.5), None)["n_patches"]) == [20, 7, 1]


def test_objects_refuse_bad_input():
    m = _map(np.zeros((4, 4), np.float32))
    with pytest.raises(ParameterError, match="threshold"):
        to_objects(m)
    with pytest.raises(DimensionError, match=r"\(y, x\)"):
        to_objects(m.expand_dims(time=2), 0.5)
    with pytest.raises(MissingCRSError):
        to_objects(xr.DataArray(np.zeros((3, 3)), dims=("y", "x")), 0.5)
    with pytest.raises(ParameterError, match="connectivity"):
        to_objects(m, 0.5, connectivity=6)
    with pytest.raises(ParameterError, match="min_patches"):
        to_objects(m, 0.5, min_patches=0)
