"""The one verdict rule and the stratified area estimator (eoembed.stats)."""

import numpy as np
import pytest

from eoembed.exceptions import ParameterError
from eoembed.stats import area_estimate, block_bootstrap, compare, interval


def test_area_estimate_matches_hand_computation_on_2x2():
    # rows = map class, cols = reference class; mapped areas 30 and 70 (ha)
    r = area_estimate([[8, 2], [1, 9]], [30.0, 70.0], classes=["crop", "other"], unit="ha")
    t = r.table
    # proportions p_ij = W_i n_ij / n_i.: [[.24, .06], [.07, .63]] → reference totals .31 / .69 of 100 ha
    assert t.loc["crop", "area"] == pytest.approx(31.0)
    assert t.loc["other", "area"] == pytest.approx(69.0)
    se = np.sqrt(0.3 ** 2 * 0.8 * 0.2 / 9 + 0.7 ** 2 * 0.1 * 0.9 / 9)  # Olofsson eq. 10
    assert t.loc["crop", "area_ci"] == pytest.approx(1.959964 * se * 100, rel=1e-5)
    assert t.loc["crop", "users"] == pytest.approx(0.8)
    assert t.loc["crop", "producers"] == pytest.approx(0.24 / 0.31)
    assert r.overall == pytest.approx(0.87)
    assert r.overall_ci == pytest.approx(1.959964 * se, rel=1e-5)  # same variance terms for K = 2
    assert "area" in str(r) and "±" in str(r)


def test_area_estimate_reproduces_olofsson_2014_example():
    # Olofsson et al. (2014), RSE 148:42-57, section 5: 30 m pixels, areas in ha
    m = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
    pix = np.array([200_000, 150_000, 3_200_000, 6_450_000]) * 0.09
    t = area_estimate(m, pix, classes=["deforestation", "gain", "forest", "non-forest"], unit="ha").table
    published = {"deforestation": (21_158, 6_158), "gain": (11_686, 3_756), "forest": (285_770, 15_510),
                 "non-forest": (581_386, 16_282)}
    for name, (area, ci) in published.items():
        assert t.loc[name, "area"] == pytest.approx(area, abs=1.0)
        assert t.loc[name, "area_ci"] == pytest.approx(ci, abs=1.0)
    assert t.loc["deforestation", "users"] == pytest.approx(0.88)


@pytest.mark.parametrize("matrix, areas", [
    ([[1, 0], [0, 5]], [1, 1]),   # one sample in a stratum: no variance
    ([[3, 1, 0], [1, 3, 0]], [1, 1]),  # not square
    ([[3, -1], [1, 3]], [1, 1]),  # negative count
    ([[3, 1], [1, 3]], [1, 1, 1]),  # areas do not match classes
])
def test_area_estimate_refuses_bad_input(matrix, areas):
    with pytest.raises(ParameterError, match="area_estimate|map_areas"):
        area_estimate(matrix, areas)


def test_compare_verdicts_follow_the_interval():
    a = [0.80, 0.82, 0.79, 0.85, 0.81]
    better = compare(a, [0.70, 0.75, 0.72, 0.74, 0.69], names=("galileo", "spectral"), metric="balanced accuracy")
    assert better.verdict == "A better"
    assert better.difference.low > 0
    assert "galileo better than spectral" in str(better) and "t-interval" in str(better)
    noisy = compare(a, [0.90, 0.70, 0.85, 0.75, 0.80])
    assert noisy.verdict == "no difference detectable"
    assert noisy.difference.low < 0 < noisy.difference.high
    # errors: lower is better
    rmse = compare([1.5, 1.6, 1.4], [2.0, 2.1, 2.2], names=("model", "mean"), higher_is_better=False)
    assert rmse.verdict == "A better"
    assert compare([0.5], [0.4]).verdict == "not estimable"
    assert compare([0.5, np.nan], [0.4, 0.3]).verdict == "not estimable"
    with pytest.raises(ParameterError, match="paired"):
        compare([1, 2, 3], [1, 2])


def test_interval_is_the_t_interval():
    v = np.array([0.1, 0.3, 0.2, 0.4])
    iv = interval(v)
    from scipy import stats as sst
    half = sst.t.ppf(0.975, 3) * v.std(ddof=1) / 2
    assert (iv.low, iv.high) == pytest.approx((v.mean() - half, v.mean() + half))
    assert np.isnan(interval([0.5]).low)  # one value: no interval, never zero width
    assert "t-interval over folds" in str(iv)
    assert "t-interval over seeds" in str(interval(v, over="seeds"))


def test_interval_from_summary_is_interval_of_the_values():
    from eoembed.stats import interval_from_summary

    for v in ([0.1, 0.3, 0.2, 0.4], [0.05, -0.02, 0.08, 0.01, 0.03], [1.0, 1.0, 1.2]):
        v = np.asarray(v)
        a, b = interval(v, level=0.9, over="seeds"), interval_from_summary(v.mean(), v.std(ddof=1), len(v), level=0.9,
                                                                            over="seeds")
        assert (b.estimate, b.low, b.high) == pytest.approx((a.estimate, a.low, a.high), rel=1e-12)
        assert (b.level, b.n, b.rule) == (a.level, a.n, a.rule) == (0.9, len(v), "t-interval over seeds")
    assert np.isnan(interval_from_summary(0.1, 0.05, 1).low) and np.isnan(interval_from_summary(0.1, np.nan, 5).high)
    for bad in (dict(mean="x", sd=0.1, n=3), dict(mean=0.1, sd=-1.0, n=3), dict(mean=0.1, sd=0.1, n=-2)):
        with pytest.raises(ParameterError):
            interval_from_summary(**bad)
    with pytest.raises(ParameterError, match="level"):
        interval_from_summary(0.1, 0.1, 3, level=1.5)


def test_compare_names_its_pairs():
    """Pairs are folds by default; k-means seeds (tutorials 07, 10) say "seeds", never "folds"."""
    a, b = [0.30, 0.31, 0.29, 0.32], [0.20, 0.22, 0.19, 0.21]
    assert "paired differences over 4 folds" in str(compare(a, b))
    seeds = compare(a, b, names=("galileo", "spectral"), over="seeds")
    assert "paired differences over 4 seeds" in str(seeds) and "folds" not in str(seeds)
    assert seeds.to_dict()["over"] == "seeds" and "over 4 seeds" in seeds.to_dict()["text"]
    assert seeds.verdict == compare(a, b).verdict and seeds.difference == compare(a, b).difference
    for bad in ("", "  ", None, 3):
        with pytest.raises(ParameterError, match="over="):
            compare(a, b, over=bad)
    with pytest.raises(ParameterError, match="same seeds"):
        compare(a, b[:3], over="seeds")


def test_block_bootstrap_keeps_blocks_together():
    rng = np.random.default_rng(0)
    blocks = np.repeat(np.arange(20), 10)
    # block-level effects: the block bootstrap interval is wider than an iid bootstrap would be
    x = np.repeat(rng.normal(size=20), 10) + 0.01 * rng.normal(size=200)
    iv = block_bootstrap(np.mean, blocks, x, n_boot=400)
    assert iv.low < x.mean() < iv.high
    iid = block_bootstrap(np.mean, np.arange(200), x, n_boot=400)
    assert (iv.high - iv.low) > 2 * (iid.high - iid.low)
    with pytest.raises(ParameterError, match="one row per block"):
        block_bootstrap(np.mean, blocks, x[:5])


def test_area_report_from_a_class_map_and_a_stratified_sample():
    import rioxarray  # noqa: F401
    import xarray as xr
    from affine import Affine

    from eoembed.stats import area_report, stratified_sample

    truth = np.zeros((40, 50), np.int16)
    truth[:, :20] = 1                      # 800 patches of class 1 (true)
    mapped = truth.copy()
    mapped[:, 20:25] = 1                   # the map over-states class 1 by 200 patches
    cmap = xr.DataArray(mapped, dims=("y", "x"), coords={"y": 5e6 - 10 * (np.arange(40) + 0.5),
                                                         "x": 6e5 + 10 * (np.arange(50) + 0.5)})
    cmap = cmap.rio.write_crs("EPSG:32631").rio.write_transform(Affine(10, 0, 6e5, 0, -10, 5e6))
    sample = stratified_sample(cmap, 200, seed=1)
    assert sorted(np.unique(sample["map_class"], return_counts=True)[1]) == [200, 200]
    ref = truth[sample["row"], sample["col"]]
    rep = area_report(cmap, sample["map_class"], ref)
    assert rep.unit == "ha"
    # mapped: 1000 patches of 0.01 ha = 10 ha; the estimate recovers the true 8 ha within its interval
    assert rep.table.loc[1, "map_area"] == pytest.approx(10.0)
    est, ci = rep.table.loc[1, "area"], rep.table.loc[1, "area_ci"]
    assert abs(est - 8.0) <= ci and ci < 1.0
    with pytest.raises(ParameterError, match="do not occur"):
        area_report(cmap, [0, 1, 7], [0, 1, 1])
