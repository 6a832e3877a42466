"""Per-sensor recipes (eoembed.data._recipes): band checks and asset resolution, without a server."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from eoembed import sensors
from eoembed.data._recipes import LANDSAT, SENTINEL1, SENTINEL2, resolve_assets, select_bands
from eoembed.exceptions import DataSourceError, ParameterError


def _items(*keys):
    return [SimpleNamespace(assets={k: None for k in keys})]


def test_band_checks_name_the_valid_bands():
    assert SENTINEL2.check_bands(None) == list(sensors.S2_BANDS)
    assert SENTINEL1.check_bands(["VV"]) == ["vv"]
    with pytest.raises(ParameterError, match=r"Unknown Sentinel-2 band\(s\) \['B13'\].*'B8A'"):
        SENTINEL2.check_bands(["B02", "B13"])
    with pytest.raises(ParameterError, match=r"Unknown Sentinel-1 polarisation\(s\) \['xx'\]"):
        SENTINEL1.check_bands(["xx"])
    with pytest.raises(ParameterError, match=r"Unknown Landsat band\(s\) \['B12'\]"):
        LANDSAT.check_bands(["B12"])


def test_landsat_assets_are_found_by_common_name_and_absent_bands_dropped():
    items = _items("blue", "red", "lwir11", "qa_pixel")
    names, band_asset, qa = resolve_assets(LANDSAT, items, list(sensors.LANDSAT_BANDS), explicit=False,
                                           masked=True, collection="landsat-c2-l2")
    assert names == ["B2", "B4", "B10"] and band_asset == {"B2": "blue", "B4": "red", "B10": "lwir11"}
    assert qa == "qa_pixel"
    with pytest.raises(DataSourceError, match=r"no asset for band\(s\) \['B8'\]"):
        resolve_assets(LANDSAT, items, ["B2", "B8"], explicit=True, masked=False, collection="c")
    with pytest.raises(DataSourceError, match="none of the Landsat bands"):
        resolve_assets(LANDSAT, _items("qa_pixel"), ["B2"], explicit=False, masked=False, collection="c")
    with pytest.raises(DataSourceError, match="mask_bits=None"):
        resolve_assets(LANDSAT, _items("blue"), ["B2"], explicit=False, masked=True, collection="c")


def test_sentinel2_absent_bands_become_nan_and_scl_masks():
    items = _items("B02", "B03", "SCL")
    names, band_asset, scl = resolve_assets(SENTINEL2, items, ["B02", "B03", "B04"], explicit=True, masked=True,
                                            collection="sentinel-2-l2a")
    assert names == ["B02", "B03", "B04"] and scl == "SCL" and "B04" not in band_asset
    with pytest.raises(DataSourceError, match="no 'SCL' asset.*mask_classes=None"):
        resolve_assets(SENTINEL2, _items("B02"), ["B02"], explicit=True, masked=True, collection="c")
    raw = xr.DataArray(np.stack([np.full((1, 2, 2), 500.0), np.full((1, 2, 2), 600.0),
                                 np.array([[[4, 9], [4, 4]]], float)], axis=1),
                       dims=("time", "band", "y", "x"), coords={"band": ["B02", "B03", "SCL"]})
    data = select_bands(SENTINEL2, raw, names, band_asset, scl, (9,))
    assert list(data["band"].values) == ["B02", "B03", "B04"]
    assert np.isnan(data.sel(band="B04")).all()  # absent band: all NaN
    assert np.isnan(data.values[0, :2, 0, 1]).all() and (data.values[0, 0, [0, 1], 0] == 500).all()  # SCL 9 masked
