"""Pure functions of eoembed.data: masks, harmonization, dB, composite periods and medians."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from eoembed.data._composite import (
    Period,
    baseline_needs_offset,
    composite_median,
    composite_periods,
    harmonize_s2,
    qa_pixel_valid,
    scl_valid,
    to_db,
)
from eoembed.exceptions import ParameterError


def cube(values, times, lazy=True):
    arr = da.from_array(values, chunks=(1, 1, 4, 4)) if lazy else values
    return xr.DataArray(
        arr,
        dims=("time", "band", "y", "x"),
        coords={"time": pd.to_datetime(times), "band": [f"b{i}" for i in range(values.shape[1])]},
    )


def test_scl_valid_masks_default_classes_and_nan():
    scl = xr.DataArray(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, np.nan]), dims="x")
    got = scl_valid(scl).values
    assert got.tolist() == [False, False, True, False, True, True, True, True, False, False, False, True, False]
    assert scl_valid(scl, [9]).values.tolist()[:4] == [True, True, True, True]
    assert scl_valid(scl, []).values.tolist()[-1] is False  # NaN is never valid


def test_qa_pixel_bits():
    clear, cloud, shadow, snow, fill = 21824, 21824 | 8, 21824 | 16, 21824 | 32, 1
    qa = xr.DataArray(np.array([clear, cloud, shadow, snow, fill, np.nan], dtype=np.float32), dims="x")
    assert qa_pixel_valid(qa).values.tolist() == [True, False, False, True, False, False]
    assert qa_pixel_valid(qa, [5]).values.tolist() == [True, True, True, False, False, False]
    with pytest.raises(ParameterError):
        qa_pixel_valid(qa, [16])


def test_baseline_needs_offset_uses_baseline_then_date():
    times = ["2021-06-01", "2023-06-01", "2022-02-01", "2022-01-24", "2024-01-01"]
    baselines = ["03.01", "05.10", None, None, "04.00"]
    assert baseline_needs_offset(baselines, times).tolist() == [False, True, True, False, True]
    # the baseline wins over the date
    assert baseline_needs_offset(["02.14"], ["2024-01-01"]).tolist() == [False]


def test_harmonize_subtracts_only_flagged_scenes_and_clips_at_zero():
    vals = np.array([[[[500.0, 1500.0], [np.nan, 3000.0]]], [[[500.0, 1500.0], [np.nan, 3000.0]]]], np.float32)
    c = cube(vals, ["2021-01-01", "2023-01-01"], lazy=True)
    out = harmonize_s2(c, np.array([False, True]))
    assert isinstance(out.data, da.Array) and out.dtype == np.float32 and out.dims == c.dims
    got = out.values
    np.testing.assert_array_equal(got[0], vals[0])
    np.testing.assert_array_equal(got[1], [[[0.0, 500.0], [np.nan, 2000.0]]])


def test_to_db():
    x = xr.DataArray(np.array([1.0, 0.1, 0.0, -1.0, np.nan], np.float32), dims="x")
    got = to_db(x).values
    np.testing.assert_allclose(got[:2], [0.0, -10.0], atol=1e-6)
    assert np.isnan(got[2:]).all() and got.dtype == np.float32


def test_periods_monthly_seasonal_and_offsets():
    m = composite_periods("monthly", pd.Timestamp("2024-01-15"), pd.Timestamp("2024-03-10"))
    assert [p.start for p in m] == [pd.Timestamp("2024-01-15"), pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01")]
    assert m[-1].end == pd.Timestamp("2024-03-10")
    s = composite_periods("seasonal", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-31 23:59"))
    assert [p.start.month for p in s] == [1, 3, 6, 9, 12]  # DJF (clipped), MAM, JJA, SON, DJF
    d = composite_periods("16D", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-15"))
    assert [p.start for p in d] == list(pd.date_range("2024-01-01", periods=3, freq="16D"))
    assert Period(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-31 23:59")).label == pd.Timestamp("2024-01-16")
    with pytest.raises(ParameterError, match="Unknown composite"):
        composite_periods("fortnightly-ish", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01"))


def test_composite_median_empty_period_is_nan_and_coords():
    vals = np.arange(3 * 2 * 4 * 4, dtype=np.float32).reshape(3, 2, 4, 4)
    vals[1, :, 0, 0] = np.nan
    c = cube(vals, ["2024-01-03", "2024-01-20", "2024-02-05"])
    periods = composite_periods("monthly", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-03-31"))
    out = composite_median(c, periods, baselines=["05.10", "04.00", None])
    assert out.dims == ("time", "band", "y", "x") and isinstance(out.data, da.Array)
    assert out["eoembed:n_scenes"].values.tolist() == [2, 1, 0]
    assert out["s2:processing_baseline"].values.tolist() == ["05.10", "", ""]
    got = out.values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(got[0], np.nanmedian(vals[:2], axis=0))
    np.testing.assert_array_equal(got[1], vals[2])
    assert np.isnan(got[2]).all()
    assert list(out["band"].values) == ["b0", "b1"]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=89), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_composite_median_equals_numpy_per_period(days, seed):
    """Property: every composite equals np.nanmedian over the scenes of its month."""
    rng = np.random.default_rng(seed)
    days = sorted(days)
    times = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")
    vals = rng.integers(0, 10000, size=(len(days), 1, 4, 4)).astype(np.float32)
    vals[rng.random(vals.shape) < 0.3] = np.nan
    c = cube(vals, times)
    periods = composite_periods("monthly", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-03-30"))
    got = composite_median(c, periods).values
    for k, p in enumerate(periods):
        idx = [i for i, t in enumerate(times) if p.start <= t <= p.end]
        if not idx:
            assert np.isnan(got[k]).all()
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            exp = np.nanmedian(vals[idx], axis=0)
        np.testing.assert_allclose(got[k], exp, rtol=0, atol=1e-3)
