"""Spatial cross-validation: blocks, the one split function, the splitter and the report.

Neighbouring patches are strongly correlated (overlapping context, same field), so random
K-fold cross-validation overstates accuracy. Samples are grouped into square spatial blocks
of ``block_size`` metres (:func:`spatial_blocks`); whole blocks go to one side of every split
and training samples closer than ``buffer`` to any test sample are dropped
(:func:`spatial_splits`), so that patches adjacent across a block border are never split
between train and test. :func:`plan_folds` is the one place that decides how many folds a
label set allows and builds them — used by :class:`SpatialBlockKFold`,
:class:`~eoembed.classify.FewShotClassifier`, :func:`eoembed.analysis.regress` and
:func:`eoembed.evaluate.score_features`. :func:`classification_report` turns out-of-fold
predictions into a :class:`CVReport`.

Needs scikit-learn only when folds are built (imported there).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from eoembed.exceptions import LabelError, ParameterError, TooFewLabelsError
from eoembed.stats import MIN_SAMPLES

__all__ = ["CVReport", "Folds", "SpatialBlockKFold", "classification_report", "plan_folds", "spatial_blocks",
           "spatial_splits"]


def spatial_blocks(x: np.ndarray, y: np.ndarray, block_size: float) -> np.ndarray:
    """Integer id of the ``block_size``-metre square (anchored at 0, 0) holding each point."""
    if not block_size > 0:
        raise ParameterError(f"block_size must be > 0 metres, got {block_size!r}.")
    bx = np.floor(np.asarray(x, float) / block_size).astype(np.int64)
    by = np.floor(np.asarray(y, float) / block_size).astype(np.int64)
    _, ids = np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)
    return ids.ravel()


def spatial_splits(xy: np.ndarray, groups: np.ndarray, n_splits: int, *, y: np.ndarray | None = None,
                   buffer: float = 0.0, random_state: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Spatial-block ``(train, test)`` index pairs with a buffer.

    Whole blocks (``groups``, from :func:`spatial_blocks`) go to one side of every split:
    ``StratifiedGroupKFold`` when class labels ``y`` are given (classification),
    ``GroupKFold`` with shuffled block order otherwise (continuous targets). Training
    samples closer than ``buffer`` (CRS units) to any test sample are then dropped.
    ``n_splits`` must not exceed the number of blocks (:func:`plan_folds` caps it and says so).
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    xy = np.asarray(xy, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" notices
        if y is not None:
            splits = list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
                          .split(xy, y, groups))
        else:
            try:  # block order shuffled (scikit-learn >= 1.6)
                kf = GroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
            except TypeError:  # pragma: no cover - older scikit-learn: size-balanced, deterministic
                kf = GroupKFold(n_splits=n_splits)
            splits = list(kf.split(xy, None, groups))
    if buffer > 0:
        from scipy.spatial import cKDTree

        splits = [(tr[cKDTree(xy[te]).query(xy[tr], k=1)[0] >= buffer], te) for tr, te in splits]
    return splits


@dataclass
class Folds:
    """What :func:`plan_folds` decided: the ``(train, test)`` pairs, the fold count used, the
    spatial blocks (``None`` for random folds) and notes (e.g. fewer folds than asked)."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    n_splits: int
    blocks: np.ndarray | None
    notes: list[str] = field(default_factory=list)


def plan_folds(n: int, *, xy: np.ndarray | None = None, y: np.ndarray | None = None, spatial: bool = True,
               block_size: float | None = None, buffer: float = 0.0, n_splits: int = 5, random_state: int = 0,
               what: str = "labelled patches", count_splits_only: bool = False) -> Folds:
    """The one split function: how many folds ``n`` samples allow, and the folds.

    Parameters
    ----------
    n:
        Number of samples.
    xy:
        ``(n, 2)`` sample coordinates (CRS units); required for ``spatial=True``.
    y:
        Class labels: folds are stratified and capped by the rarest class (a class with
        fewer than 2 samples raises). ``None``: continuous targets, plain (group) K-fold.
    spatial:
        ``True``: whole ``block_size`` blocks on one side of every split, training samples
        within ``buffer`` of a test sample dropped (:func:`spatial_splits`); the fold count is
        capped by the number of blocks. ``False``: shuffled (stratified) K-fold.
    n_splits, random_state:
        Folds asked for; seed of the shuffles.
    what:
        How the samples are named in messages (``"target patches"``, ``"tiles"``).
    count_splits_only:
        Return the planned count (``splits`` empty) without building folds.

    Returns
    -------
    Folds
        ``notes`` say why fewer folds than asked were used; callers warn with them.

    Raises
    ------
    TooFewLabelsError
        A class has fewer than 2 samples.
    LabelError
        All samples in one block (spatial).
    """
    k, notes = int(n_splits), []
    if y is not None:
        y = np.asarray(y)
        classes, counts = np.unique(y, return_counts=True)
        rare = classes[np.argmin(counts)]
        if counts.min() < 2:
            raise TooFewLabelsError(
                f"Class {str(rare)!r} has {counts.min()} {what}; cross-validation needs >= 2 {what} per class "
                f"(label counts: {', '.join(f'{c}: {m}' for c, m in zip(classes, counts))}). "
                f"Add more labels of {str(rare)!r}, or drop that class."
            )
        if counts.min() < k:
            k = int(counts.min())
            notes = [f"class {str(rare)!r} has only {k} {what}"]
    blocks = None
    if spatial:
        if xy is None:
            raise ParameterError("Spatial folds need the (n, 2) sample coordinates xy=.")
        xy = np.asarray(xy, float)
        blocks = spatial_blocks(xy[:, 0], xy[:, 1], block_size)
        nb = len(np.unique(blocks))
        if nb < 2:
            raise LabelError(
                f"All {n} {what} fall in one {block_size:g} m block, so no spatially honest split exists. "
                "Spread the labels wider, or pass a smaller block_size=."
            )
        if nb < k:
            k, notes = nb, [f"the {what} fall in only {nb} blocks of {block_size:g} m"]
    if k < n_splits:
        notes = [f"Using n_splits={k} instead of {n_splits}: {notes[0]}. Add {what} for more folds."]
    if count_splits_only:
        return Folds([], k, blocks, notes)
    if spatial:
        splits = spatial_splits(xy, blocks, k, y=y, buffer=buffer, random_state=random_state)
    else:
        from sklearn.model_selection import KFold, StratifiedKFold

        kf = (StratifiedKFold if y is not None else KFold)(n_splits=k, shuffle=True, random_state=random_state)
        splits = list(kf.split(np.zeros((n, 1)), y))
    return Folds(splits, k, blocks, notes)


class SpatialBlockKFold:
    """Spatial-block cross-validation splitter (scikit-learn's splitter protocol).

    Samples are grouped into square blocks of ``block_size`` (CRS units, metres for
    projected CRSs, anchored at 0, 0); whole blocks go to one side of every split
    (``StratifiedGroupKFold``) and training samples closer than ``buffer`` to any test
    sample are dropped. Usable wherever scikit-learn takes ``cv=``::

        cv = clf.spatial_cv()                     # bound to the labelled patches
        cross_val_score(FewShotClassifier(), clf.X, clf.y, cv=cv)

    ``n_splits`` is reduced, with a ``UserWarning``, to the label count of the rarest
    class and to the number of blocks (:func:`plan_folds`).

    Parameters
    ----------
    xy:
        ``(n, 2)`` sample coordinates, in the order of the ``X`` rows passed to
        :meth:`split`. ``None``: pass them as ``groups`` to :meth:`split`.
    block_size, buffer:
        Block side and train/test buffer (CRS units).
    n_splits, random_state:
        Requested folds; seed of the fold shuffle.
    """

    def __init__(self, xy: np.ndarray | None = None, *, block_size: float, buffer: float = 0.0,
                 n_splits: int = 5, random_state: int | None = 0):
        self.xy = None if xy is None else np.asarray(xy, dtype=float)
        self.block_size = float(block_size)
        self.buffer = float(buffer)
        self.n_splits = int(n_splits)
        self.random_state = random_state
        if not self.block_size > 0:
            raise ParameterError(f"block_size must be > 0, got {block_size!r}.")

    def __repr__(self) -> str:
        return (f"SpatialBlockKFold(n_splits={self.n_splits}, block_size={self.block_size:g}, "
                f"buffer={self.buffer:g})")

    def _xy(self, n: int, groups) -> np.ndarray:
        xy = self.xy if groups is None else np.asarray(groups, dtype=float)
        if xy is None or xy.ndim != 2 or xy.shape != (n, 2):
            raise ParameterError(
                f"SpatialBlockKFold needs the (n, 2) sample coordinates for the {n} rows: give them as xy= "
                f"or as groups= in split()/cross_val_score (got {None if xy is None else xy.shape})."
            )
        return xy

    def _plan(self, y, groups, *, count_only: bool = False) -> Folds:
        y = np.asarray(y)
        return plan_folds(len(y), xy=self._xy(len(y), groups), y=y, spatial=True, block_size=self.block_size,
                          buffer=self.buffer, n_splits=self.n_splits,
                          random_state=0 if self.random_state is None else self.random_state,
                          count_splits_only=count_only)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """Folds :meth:`split` yields (the requested number unless ``X`` and ``y`` are given)."""
        if X is None or y is None:
            return self.n_splits
        return self._plan(y, groups, count_only=True).n_splits

    def split(self, X, y, groups=None):
        """Yield ``(train, test)`` index arrays: blocks disjoint, training buffered from the test samples."""
        folds = self._plan(y, groups)
        for note in folds.notes:
            warnings.warn(note, UserWarning, stacklevel=2)
        yield from folds.splits


@dataclass
class CVReport:
    """Cross-validated accuracy of a few-shot classifier (out-of-fold predictions pooled).

    Attributes
    ----------
    accuracy, balanced_accuracy: pooled over all test folds.
    per_class: DataFrame indexed by class: precision, recall, f1, support.
    confusion: DataFrame, rows = true class, columns = predicted class.
    fold_accuracy, fold_balanced_accuracy: accuracy and balanced accuracy of each evaluated fold
    (in fold order: pair them across feature sets of one cube to compare models). n_samples, n_blocks, n_splits, block_size,
    buffer, spatial: how the split was made. dropped_by_buffer: training samples
    removed (summed over folds) because they were within ``buffer`` of a test sample.
    untested: classes never in a test fold. Their recall cannot be measured, so
    ``balanced_accuracy`` is NaN ("not estimable") rather than the mean over the classes
    that happened to be tested; their per-class recall/F1 are NaN.

    :meth:`interval` gives the per-fold mean with its t-interval and :meth:`compare` the
    paired verdict against another report on the same folds (:mod:`eoembed.stats`).
    """

    accuracy: float
    balanced_accuracy: float
    per_class: Any
    confusion: Any
    fold_accuracy: list[float]
    n_samples: int
    n_blocks: int
    n_splits: int
    block_size: float
    buffer: float
    spatial: bool
    dropped_by_buffer: int = 0
    notes: list[str] = field(default_factory=list)
    fold_balanced_accuracy: list[float] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)

    def interval(self, metric: str = "balanced_accuracy", *, level: float = 0.95):
        """Mean of the per-fold ``metric`` (``"balanced_accuracy"`` or ``"accuracy"``) with its t-interval."""
        from eoembed.stats import interval

        return interval(self._folds(metric), level=level)

    def _folds(self, metric: str) -> list[float]:
        if metric not in ("balanced_accuracy", "accuracy"):
            raise ParameterError(f"metric must be 'balanced_accuracy' or 'accuracy', got {metric!r}.")
        return self.fold_balanced_accuracy if metric == "balanced_accuracy" else self.fold_accuracy

    def compare(self, other: "CVReport", *, names: tuple[str, str] = ("this", "other"),
                metric: str = "balanced_accuracy", level: float = 0.95):
        """The paired verdict (:func:`eoembed.stats.compare`) against ``other``, scored on the same folds.

        Raises :class:`ParameterError` when the two reports were not made on the same
        samples and folds (different sample or fold counts, or a fold skipped in one).
        """
        from eoembed.stats import compare

        a, b = self._folds(metric), other._folds(metric)
        if (self.n_samples, self.n_splits, self.spatial) != (other.n_samples, other.n_splits, other.spatial) \
                or len(a) != len(b):
            raise ParameterError(
                f"compare() needs two reports on the same samples and folds; got {self.n_samples} samples/"
                f"{len(a)} scored folds ({'spatial' if self.spatial else 'random'}) vs {other.n_samples}/{len(b)} "
                f"({'spatial' if other.spatial else 'random'}). Fit both on the same labels and cube grid with the "
                "same block_size, n_splits and buffer.")
        return compare(a, b, names=names, metric=metric.replace("_", " "), level=level)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (JSON-friendly)."""
        return {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "fold_accuracy": self.fold_accuracy,
            "fold_balanced_accuracy": self.fold_balanced_accuracy,
            "per_class": self.per_class.to_dict(orient="index"),
            "confusion": self.confusion.to_dict(orient="index"),
            "n_samples": self.n_samples,
            "n_blocks": self.n_blocks,
            "n_splits": self.n_splits,
            "block_size": self.block_size,
            "buffer": self.buffer,
            "spatial": self.spatial,
            "dropped_by_buffer": self.dropped_by_buffer,
            "notes": self.notes,
            "untested": self.untested,
        }

    def __str__(self) -> str:
        how = (f"spatial-block CV: {self.n_splits} folds over {self.n_blocks} blocks of {self.block_size:g} m, "
               f"buffer {self.buffer:g} m" if self.spatial else f"random {self.n_splits}-fold CV (optimistic)")
        bacc = ("not estimable (class(es) " + ", ".join(self.untested) + " never tested)" if self.untested
                else f"{self.balanced_accuracy:.3f}")
        iv = self.interval()
        lines = [
            f"Few-shot classifier, {self.n_samples} labelled patches; {how}",
            f"pooled out-of-fold: accuracy {self.accuracy:.3f}  balanced accuracy {bacc}",
            f"per-fold balanced accuracy: {', '.join(f'{a:.2f}' for a in self.fold_balanced_accuracy)}; "
            f"mean {iv}",
            f"per-fold accuracy: {', '.join(f'{a:.2f}' for a in self.fold_accuracy)}",
            "",
            self.per_class.round(3).to_string(),
            "",
            "confusion (rows true, columns predicted):",
            self.confusion.to_string(),
        ]
        few = [str(c) for c, n in self.per_class["support"].items() if 0 < n < MIN_SAMPLES]
        if few:
            lines.append(f"note: class(es) {', '.join(few)} tested on fewer than {MIN_SAMPLES} patches: their "
                         "per-class scores are anecdotes, not estimates")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    _repr_pretty_ = lambda self, p, cycle: p.text(str(self))  # noqa: E731


def classification_report(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], y: np.ndarray,
                          classes: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], *,
                          notes: list[str], **how: Any) -> CVReport:
    """Pool out-of-fold predictions into a :class:`CVReport`.

    ``fit_predict(train, test)`` fits on the ``train`` rows and predicts the ``test`` rows;
    a fold whose training part has a single class is skipped (and noted). ``how`` gives
    the report's ``n_blocks``, ``block_size``, ``buffer`` and ``spatial``.
    """
    import pandas as pd
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    notes = list(notes)
    pred = np.empty(len(y), dtype=y.dtype)
    tested = np.zeros(len(y), bool)
    fold_acc, fold_bacc, dropped = [], [], 0
    for i, (tr, te) in enumerate(splits):
        dropped += int(len(y) - len(te) - len(tr))
        if len(np.unique(y[tr])) < 2:
            notes.append(f"fold {i} skipped: its training part has a single class")
            continue
        missing = set(classes) - set(np.unique(y[tr]))
        if missing:
            notes.append(f"fold {i}: class(es) {sorted(map(str, missing))} absent from training")
        pred[te] = fit_predict(tr, te)
        tested[te] = True
        fold_acc.append(float(accuracy_score(y[te], pred[te])))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class absent from a test fold
            fold_bacc.append(float(balanced_accuracy_score(y[te], pred[te])))
    if not tested.any():
        raise LabelError("No fold could be evaluated (every training part had one class); add labels.")
    yt, yp = y[tested], pred[tested]
    p, r, f, s = precision_recall_fscore_support(yt, yp, labels=classes, zero_division=0)
    names = [str(c) for c in classes]
    per_class = pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}, index=names)
    per_class.index.name = "class"
    untested = [n for n, k in zip(names, s) if k == 0]
    per_class.loc[untested, ["recall", "f1"]] = np.nan  # never tested: unmeasured, not 0
    cm = pd.DataFrame(confusion_matrix(yt, yp, labels=classes), index=names, columns=names)
    cm.index.name, cm.columns.name = "true", "predicted"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bacc = float(balanced_accuracy_score(yt, yp)) if not untested else float("nan")
    return CVReport(accuracy=float(accuracy_score(yt, yp)), balanced_accuracy=bacc, per_class=per_class,
                    confusion=cm, fold_accuracy=fold_acc, fold_balanced_accuracy=fold_bacc,
                    n_samples=int(len(y)), n_splits=len(splits), dropped_by_buffer=dropped, notes=notes, untested=untested, **how)
