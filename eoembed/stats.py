"""The one verdict rule, intervals and area estimates: numbers a user can report.

Every comparison eoembed prints ("model A beats the spectral baseline", "this crop covers
N ± M ha") goes through this module, so a verdict always names its rule and interval:

* :func:`compare` — **paired differences over the same folds** (or the same bootstrap
  resamples): the mean difference with a two-sided Student-t interval at ``level`` (ddof=1,
  ``k - 1`` degrees of freedom). The verdict says "A better than B" only when the whole
  interval lies on one side of zero; otherwise "no difference detectable", and "not
  estimable" when fewer than two finite pairs exist.
* :func:`interval` — the same t-interval for one series (e.g. per-fold scores);
  :func:`interval_from_summary` gives it from a stored mean, SD and count.

What the pairs (or values) are — folds by default, k-means seeds, bootstrap resamples — is
named by ``over=``, so the printed rule says "over 10 seeds" when the pairs are seeds.
* :func:`block_bootstrap` — a statistic with a percentile interval from resampling
  *spatial blocks* (whole blocks, with replacement), for pooled statistics such as the
  out-of-fold R² that have no per-fold pairs.
* :func:`area_estimate` — the good-practice stratified estimator of area and accuracy
  (Olofsson et al. 2014, *Remote Sensing of Environment* 148:42-57): map classes are the
  strata, the validation sample gives the error matrix; areas, user's, producer's and
  overall accuracy come with 95 % confidence intervals.

Below :data:`MIN_SAMPLES` test samples of a class no per-class verdict is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from eoembed.exceptions import ParameterError

__all__ = [
    "MIN_SAMPLES", "Comparison", "Interval", "compare", "interval", "interval_from_summary", "block_bootstrap",
    "AreaReport",
    "area_estimate", "area_report", "stratified_sample",
]

#: Fewest test samples of a class for a per-class verdict.
MIN_SAMPLES = 10


def _t_quantile(level: float, df: int) -> float:
    from scipy import stats as sst

    return float(sst.t.ppf(0.5 + level / 2.0, df))


def _z_quantile(level: float) -> float:
    from scipy import stats as sst

    return float(sst.norm.ppf(0.5 + level / 2.0))


def _check_level(level: float) -> float:
    try:
        lv = float(level)
    except (TypeError, ValueError):
        lv = float("nan")
    if not 0.0 < lv < 1.0:
        raise ParameterError(f"level={level!r} must be a probability in (0, 1), e.g. 0.95 for a 95 % interval.")
    return lv


@dataclass(frozen=True)
class Interval:
    """A mean (or statistic) with a two-sided interval: ``estimate [low, high]`` at ``level``."""

    estimate: float
    low: float
    high: float
    level: float
    n: int
    rule: str

    def __str__(self) -> str:
        if not np.isfinite(self.estimate):
            return f"not estimable ({self.rule}, n={self.n})"
        return (f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}] "
                f"({self.level:.0%} {self.rule}, n={self.n})")

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level, "n": self.n,
                "rule": self.rule}


def _check_over(over: Any) -> str:
    if not isinstance(over, str) or not over.strip():
        raise ParameterError(f"over={over!r} must name what the values are, as a plural noun: e.g. over='folds' "
                             "or over='seeds'.")
    return over.strip()


def interval(values: Sequence[float], *, level: float = 0.95, over: str = "folds") -> Interval:
    """Mean of the finite ``values`` with a Student-t interval (ddof=1, ``n - 1`` df).

    Fewer than two finite values give a "not estimable" interval (NaN bounds), never a
    zero-width one. ``over`` names what the values are (``"folds"``, ``"seeds"``, ...) for the
    interval's rule text ("t-interval over seeds").
    """
    lv = _check_level(level)
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    rule = f"t-interval over {_check_over(over)}"
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), lv, 0, rule)
    return _t_interval(float(v.mean()), float(v.std(ddof=1)) if n > 1 else float("nan"), n, lv, rule)


def _t_interval(mean: float, sd: float, n: int, level: float, rule: str) -> Interval:
    """The one t-interval: ``mean ± t(level, n-1) · sd / √n``; not estimable (NaN bounds) below 2 values."""
    if n < 2 or not (np.isfinite(mean) and np.isfinite(sd)):
        return Interval(mean, float("nan"), float("nan"), level, n, rule)
    half = _t_quantile(level, n - 1) * sd / np.sqrt(n)
    return Interval(mean, mean - half, mean + half, level, n, rule)


def interval_from_summary(mean: float, sd: float, n: int, *, level: float = 0.95, over: str = "folds") -> Interval:
    """:func:`interval` from a series' summary instead of its values: its ``mean``, standard deviation ``sd``
    (ddof=1) and count ``n`` — for numbers stored as a summary (a benchmark result's per-fold mean and SD).

    The same Student-t interval as ``interval(values)`` of any ``n`` values with that mean and SD; fewer than two
    values or a non-finite mean/SD give a "not estimable" interval (NaN bounds).
    """
    lv = _check_level(level)
    try:
        n = int(n)
        mean, sd = float(mean), float(sd)
    except (TypeError, ValueError):
        raise ParameterError(f"interval_from_summary needs numbers: mean={mean!r}, sd={sd!r}, n={n!r}.") from None
    if n < 0 or sd < 0:
        raise ParameterError(f"n={n} and sd={sd} must not be negative.")
    return _t_interval(mean, sd, n, lv, f"t-interval over {_check_over(over)}")


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two scorers on the same folds (or seeds...), with its verdict.

    ``difference`` is ``a - b`` (so positive means A scored higher); ``verdict`` is one of
    ``"A better"``, ``"B better"``, ``"no difference detectable"``, ``"not estimable"``
    where ``higher_is_better``; for errors (RMSE) "better" means lower. ``over`` names the
    pairs ("folds", "seeds") in the text.
    """

    a: str
    b: str
    metric: str
    difference: Interval
    diffs: tuple[float, ...]
    higher_is_better: bool = True
    verdict: str = field(default="")
    over: str = "folds"

    def __str__(self) -> str:
        d = self.difference
        rule = f"paired differences over {d.n} {self.over}, {d.level:.0%} t-interval"
        if self.verdict == "not estimable":
            return f"{self.metric}: {self.a} vs {self.b}: not estimable ({d.n} finite pair(s); {rule})"
        head = {"A better": f"{self.a} better than {self.b}", "B better": f"{self.b} better than {self.a}",
                "no difference detectable": f"no difference detectable between {self.a} and {self.b}"}[self.verdict]
        return (f"{self.metric}: {head} — {self.a} − {self.b} = {d.estimate:+.3f} "
                f"[{d.low:+.3f}, {d.high:+.3f}] ({rule})")

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "metric": self.metric, "verdict": self.verdict, "over": self.over,
                "difference": self.difference.to_dict(), "diffs": list(self.diffs), "text": str(self)}


def compare(scores_a: Sequence[float], scores_b: Sequence[float], *, names: tuple[str, str] = ("A", "B"),
            metric: str = "score", higher_is_better: bool = True, level: float = 0.95,
            over: str = "folds") -> Comparison:
    """The one verdict rule: paired differences ``a - b`` over the same folds (or seeds...).

    Parameters
    ----------
    scores_a, scores_b:
        One score per fold (or per bootstrap resample), for the *same* folds in the same
        order. Pairs where either is NaN are left out (and counted in ``n``).
    names, metric:
        What is compared, for the verdict text.
    higher_is_better:
        False for errors (RMSE): then a negative difference means A is better.
    level:
        Confidence level of the t-interval (default 0.95).
    over:
        What the pairs are, as a plural noun for the text: ``"folds"`` (default), ``"seeds"``
        when each pair is one k-means seed, ``"resamples"`` for bootstrap resamples.

    Raises
    ------
    ParameterError
        The two score lists have different lengths (they are not paired), or ``over`` is not
        a non-empty string.
    """
    over = _check_over(over)
    a = _scores(scores_a, f"scores of {names[0]}")
    b = _scores(scores_b, f"scores of {names[1]}")
    if a.shape != b.shape:
        raise ParameterError(
            f"compare() needs paired scores (one per item of the same {over} for both), got {a.size} and {b.size}. "
            f"Score both on the same {over} (e.g. the folds of one SpatialBlockKFold).")
    d = a - b
    iv = interval(d[np.isfinite(d)], level=level)
    if iv.n < 2 or not np.isfinite(iv.low):
        verdict = "not estimable"
    elif iv.low > 0:
        verdict = "A better" if higher_is_better else "B better"
    elif iv.high < 0:
        verdict = "B better" if higher_is_better else "A better"
    else:
        verdict = "no difference detectable"
    iv = Interval(iv.estimate, iv.low, iv.high, iv.level, iv.n, "paired t-interval")
    return Comparison(str(names[0]), str(names[1]), metric, iv, tuple(float(v) for v in d), bool(higher_is_better),
                      verdict, over)


def block_bootstrap(statistic: Callable[..., float], blocks: np.ndarray, *arrays: np.ndarray, n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> Interval:
    """``statistic(*arrays)`` with a percentile interval from resampling spatial blocks.

    Whole blocks (``blocks``: one block id per row) are drawn with replacement, ``n_boot``
    times; rows of a block stay together, so spatially autocorrelated neighbours are not
    counted as independent evidence.
    """
    lv = _check_level(level)
    blocks = np.asarray(blocks).ravel()
    arrays = tuple(np.asarray(a) for a in arrays)
    if any(len(a) != len(blocks) for a in arrays):
        raise ParameterError("block_bootstrap: every array needs one row per block id "
                             f"({len(blocks)}), got {[len(a) for a in arrays]}.")
    est = float(statistic(*arrays))
    ids, inv = np.unique(blocks, return_inverse=True)
    rule = f"block bootstrap over {len(ids)} blocks"
    if len(ids) < 2:
        return Interval(est, float("nan"), float("nan"), lv, len(blocks), rule)
    rows = [np.flatnonzero(inv == k) for k in range(len(ids))]
    rng = np.random.default_rng(seed)
    vals = np.empty(int(n_boot))
    for i in range(int(n_boot)):
        pick = np.concatenate([rows[k] for k in rng.integers(0, len(ids), len(ids))])
        vals[i] = statistic(*(a[pick] for a in arrays))
    vals = vals[np.isfinite(vals)]
    if vals.size < 2:
        return Interval(est, float("nan"), float("nan"), lv, len(blocks), rule)
    lo, hi = np.quantile(vals, [0.5 - lv / 2, 0.5 + lv / 2])
    return Interval(est, float(lo), float(hi), lv, len(blocks), rule)


@dataclass(frozen=True)
class AreaReport:
    """Stratified area and accuracy estimates (Olofsson et al. 2014).

    ``table``: one row per class with ``map_area`` (mapped area), ``area`` (estimated area),
    ``area_ci`` (half-width of its confidence interval), ``users``/``users_ci``,
    ``producers``/``producers_ci``, ``n_samples`` (validation samples mapped as the class).
    ``overall``/``overall_ci``: overall accuracy. Areas are in ``unit``.
    """

    table: Any
    overall: float
    overall_ci: float
    level: float
    unit: str
    matrix: np.ndarray

    def __str__(self) -> str:
        lines = [f"Stratified area estimate (Olofsson et al. 2014), ±{self.level:.0%} CI; areas in {self.unit}:"]
        for name, r in self.table.iterrows():
            few = "  (fewer than %d samples: no verdict)" % MIN_SAMPLES if r.n_samples < MIN_SAMPLES else ""
            lines.append(f"  {str(name):<16} area {r.area:,.4g} ± {r.area_ci:,.3g} (mapped {r.map_area:,.4g})  "
                         f"user's {r.users:.2f} ± {r.users_ci:.2f}  producer's {r.producers:.2f} ± "
                         f"{r.producers_ci:.2f}{few}")
        lines.append(f"  overall accuracy {self.overall:.3f} ± {self.overall_ci:.3f}")
        return "\n".join(lines)


def area_estimate(matrix: Any, map_areas: Sequence[float], *, classes: Sequence[Any] | None = None,
                  level: float = 0.95, unit: str = "map units") -> AreaReport:
    """Good-practice area and accuracy estimates from an error matrix of sample counts.

    Parameters
    ----------
    matrix:
        ``(K, K)`` counts of validation samples, rows = **map** class, columns = reference
        class (stratified by map class: each row is a simple random sample of that stratum).
    map_areas:
        Mapped area of each class (pixels, ha, m² …), in row order.
    classes:
        Class names (default ``0..K-1``).
    level:
        Confidence level (normal quantile; Olofsson et al. use 1.96 for 95 %).

    Raises
    ------
    ParameterError
        The matrix is not square, has negative counts, a mapped class has fewer than two
        samples (no variance can be estimated), or the areas do not match the classes.
    """
    import pandas as pd

    lv = _check_level(level)
    n = np.asarray(matrix, np.float64)
    if n.ndim != 2 or n.shape[0] != n.shape[1] or n.shape[0] < 2:
        raise ParameterError(f"area_estimate needs a square (K, K) error matrix with K ≥ 2, got shape {n.shape}.")
    if (n < 0).any() or not np.isfinite(n).all():
        raise ParameterError("area_estimate: the error matrix holds sample counts: no negative or non-finite values.")
    k = n.shape[0]
    A = np.asarray(map_areas, np.float64).ravel()
    if A.size != k or (A < 0).any() or not np.isfinite(A).all() or A.sum() <= 0:
        raise ParameterError(f"map_areas needs {k} non-negative mapped areas (one per row of the matrix), got {A}.")
    ni = n.sum(axis=1)
    if (ni < 2).any():
        bad = [i for i in range(k) if ni[i] < 2]
        names = list(classes) if classes is not None else list(range(k))
        raise ParameterError(
            f"area_estimate: map class(es) {[names[i] for i in bad]} have fewer than 2 validation samples; "
            "their variance cannot be estimated. Sample at least 2 (good practice: ≥ 50) patches per mapped class.")
    z = _z_quantile(lv)
    total = A.sum()
    W = A / total
    q = n / ni[:, None]  # n_ij / n_i.
    p = W[:, None] * q  # estimated area proportions p_ij
    pj = p.sum(axis=0)
    # Eq. 10-11: SE of the estimated proportion of reference class j
    se_pj = np.sqrt(((W[:, None] ** 2) * q * (1 - q) / (ni[:, None] - 1)).sum(axis=0))
    users = np.diag(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        producers = np.diag(p) / pj
    overall = float(np.trace(p))
    v_users = users * (1 - users) / (ni - 1)
    v_overall = float((W ** 2 * users * (1 - users) / (ni - 1)).sum())
    # Eq. 7 (producer's accuracy), N_i. = map area, N_.j estimated reference total
    Nj = (A[:, None] / ni[:, None] * n).sum(axis=0)
    v_prod = np.empty(k)
    for j in range(k):
        others = [i for i in range(k) if i != j]
        term1 = A[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (ni[j] - 1)
        term2 = producers[j] ** 2 * sum(A[i] ** 2 * q[i, j] * (1 - q[i, j]) / (ni[i] - 1) for i in others)
        v_prod[j] = (term1 + term2) / Nj[j] ** 2 if Nj[j] > 0 else np.nan
    names = list(classes) if classes is not None else list(range(k))
    table = pd.DataFrame({
        "map_area": A, "area": pj * total, "area_ci": z * se_pj * total, "users": users,
        "users_ci": z * np.sqrt(v_users), "producers": producers, "producers_ci": z * np.sqrt(v_prod),
        "n_samples": ni.astype(int)}, index=pd.Index(names, name="class"))
    return AreaReport(table, overall, z * np.sqrt(v_overall), lv, unit, n.astype(int))


def _scores(values: Any, what: str) -> np.ndarray:
    """Per-fold scores as float64 (NaN allowed: a fold without a score); text is refused, not cast.

    (stats is the ground layer and cannot import :mod:`eoembed.validate`; this is its own argument check.)
    """
    a = np.asarray(values)
    if a.dtype.kind not in "biuf":
        try:
            a = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterError(f"The {what} are not numeric ({a.dtype}: {list(a.ravel()[:3])!r}…); expected one "
                                 "number per fold, e.g. a CVReport's fold scores or a list of floats.") from None
    return a.astype(np.float64).ravel()


def _class_codes(v: np.ndarray) -> None:
    """A class map holds whole class codes: a probability or similarity map (fractions) is refused."""
    if v.dtype.kind == "f" and v.size and not np.allclose(v, np.round(v)):
        raise ParameterError(
            f"class_map needs whole class codes, but it holds fractions ({float(v.min()):.3g}…{float(v.max()):.3g}), "
            "like a probability or similarity map: its 'classes' would be every distinct value. Pass the class map "
            "(predict_map(...)['class']) or threshold it first, e.g. (prob > 0.5).astype('uint8').")


def _class_areas(class_map: Any, nodata: Any) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Classes present in a ``(y, x)`` class map, their patch counts, the patch area and its unit."""
    import xarray as xr

    if not isinstance(class_map, xr.DataArray) or set(class_map.dims) != {"y", "x"}:
        raise ParameterError(f"class_map must be a (y, x) DataArray of class values (e.g. clf.predict_map()['class']), "
                             f"got {type(class_map).__name__} with dims {getattr(class_map, 'dims', None)}.")
    v = np.asarray(class_map.values).ravel()
    if nodata is None:
        nodata = class_map.attrs.get("nodata", class_map.attrs.get("_FillValue"))
        if nodata is None and class_map.rio.nodata is not None:
            nodata = class_map.rio.nodata
    valid = np.ones(v.shape, bool)
    if v.dtype.kind == "f":
        valid &= np.isfinite(v)
    if nodata is not None:
        valid &= v != nodata
    _class_codes(v[valid])
    classes, counts = np.unique(v[valid], return_counts=True)
    unit, pix = "patches", 1.0
    crs = class_map.rio.crs
    if crs is not None and crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m"):
        t = class_map.rio.transform()
        pix, unit = abs(t.a * t.e - t.b * t.d) / 1e4, "ha"
    return classes, counts, pix, unit


def area_report(class_map: Any, map_classes: Sequence[Any], reference_classes: Sequence[Any], *,
                nodata: Any = None, level: float = 0.95) -> AreaReport:
    """Areas with confidence intervals from a class map and its validation sample.

    Parameters
    ----------
    class_map:
        ``(y, x)`` map of class values with a projected CRS (areas in ha; otherwise in
        patches). Its per-class patch counts are the mapped areas (the strata).
    map_classes, reference_classes:
        For each validation sample: the class the map gives there, and the class a person
        (or a trusted reference) gives. The sample should be a stratified random sample of
        the map (:func:`stratified_sample`); labels collected for training are not one.
    nodata:
        The map's no-data value (default: from its attrs).

    Returns
    -------
    AreaReport
        See :func:`area_estimate`.
    """
    classes, counts, pix, unit = _class_areas(class_map, nodata)
    m = np.asarray(map_classes).ravel()
    r = np.asarray(reference_classes).ravel()
    if m.shape != r.shape or m.size == 0:
        raise ParameterError(f"map_classes and reference_classes need one value per validation sample each, got "
                             f"{m.size} and {r.size}.")
    known = set(classes.tolist())
    stray = sorted({str(c) for c in np.r_[m, r] if c not in known})
    if stray:
        raise ParameterError(f"Validation classes {stray} do not occur in the class map (its classes: "
                             f"{classes.tolist()}). Use the map's class values for both columns.")
    pos = {c: i for i, c in enumerate(classes.tolist())}
    mat = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(mat, ([pos[c] for c in m.tolist()], [pos[c] for c in r.tolist()]), 1)
    return area_estimate(mat, counts * pix, classes=classes.tolist(), level=level, unit=unit)


def stratified_sample(class_map: Any, n_per_class: int = 50, *, nodata: Any = None, seed: int = 0) -> Any:
    """Random patches of each mapped class to label for :func:`area_report`.

    Returns a GeoDataFrame (``row``, ``col``, ``x``, ``y``, ``map_class``, point geometry
    at the patch centre in the map's CRS); classes with fewer patches than
    ``n_per_class`` are sampled whole.
    """
    import geopandas as gpd

    if isinstance(n_per_class, (bool, np.bool_)) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 2:
        raise ParameterError(f"n_per_class must be an integer ≥ 2 (good practice: ≥ 50), got {n_per_class!r}.")
    classes, _, _, _ = _class_areas(class_map, nodata)
    cm = class_map.transpose("y", "x")
    v = np.asarray(cm.values)
    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    for c in classes:
        idx = np.flatnonzero(v.ravel() == c)
        pick = rng.choice(idx, min(int(n_per_class), len(idx)), replace=False)
        r, k = np.divmod(np.sort(pick), v.shape[1])
        rows.append(r), cols.append(k), vals.append(np.full(len(r), c))
    r, k, c = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    xs, ys = cm["x"].values[k], cm["y"].values[r]
    return gpd.GeoDataFrame({"row": r, "col": k, "x": xs, "y": ys, "map_class": c},
                            geometry=gpd.points_from_xy(xs, ys), crs=cm.rio.crs)
