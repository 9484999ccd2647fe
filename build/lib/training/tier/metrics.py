"""Tier metrics as free functions over (true tiers, predicted tiers).

Every function takes an optional `sample_weight`, so the same code scores a labelled test
split (weights of 1) and a 6 x 6 confusion matrix accumulated over 10M products
(one pair per cell, weighted by its count). Undefined values (no L5 predicted, one class
only) are reported as 0.0, never NaN, so metrics.json stays valid JSON.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, f1_score

TIERS = np.arange(6)
TOP = 5


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0


def _weights(y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
    return np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)


def qwk(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Quadratic weighted kappa: ordinal agreement, 1 perfect, 0 chance."""
    if len(y_true) == 0:
        return 0.0
    with warnings.catch_warnings():  # one class only (a small slice): kappa is 0 by definition
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        value = cohen_kappa_score(
            y_true,
            y_pred,
            labels=TIERS,
            weights="quadratic",
            sample_weight=sample_weight,
            replace_undefined_by=0.0,
        )
    return _finite(value)


def macro_f1(
    y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """F1 averaged over the tiers present in truth or prediction, each tier counting equally."""
    if len(y_true) == 0:
        return 0.0
    present = np.union1d(np.unique(y_true), np.unique(y_pred))
    return _finite(
        f1_score(
            y_true,
            y_pred,
            labels=present,
            average="macro",
            sample_weight=sample_weight,
            zero_division=0,
        )
    )


def accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    w = _weights(y_true, sample_weight)
    return _share(w * (np.asarray(y_true) == np.asarray(y_pred)), w)


def within_one(
    y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """Share of products at most one tier off."""
    w = _weights(y_true, sample_weight)
    near = np.abs(np.asarray(y_true) - np.asarray(y_pred)) <= 1
    return _share(w * near, w)


def _share(numerator: np.ndarray, denominator: np.ndarray) -> float:
    total = denominator.sum()
    return _finite(numerator.sum() / total) if total > 0 else 0.0


def l5_precision(
    y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """Of the goods badged Selected Goods (L5), the share that truly are L5."""
    w = _weights(y_true, sample_weight)
    badged = w * (np.asarray(y_pred) == TOP)
    return _share(badged * (np.asarray(y_true) == TOP), badged)


def l5_recall(
    y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """Of the true L5 goods, the share badged."""
    w = _weights(y_true, sample_weight)
    top = w * (np.asarray(y_true) == TOP)
    return _share(top * (np.asarray(y_pred) == TOP), top)


METRICS = {
    "qwk": qwk,
    "macro_f1": macro_f1,
    "accuracy": accuracy,
    "within_one": within_one,
    "l5_precision": l5_precision,
    "l5_recall": l5_recall,
}


def tier_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    prefix: str = "",
    sample_weight: np.ndarray | None = None,
) -> dict[str, float]:
    """Every tier metric, named `{prefix}{metric}` (DESIGN §6: qwk, macro_f1, ...)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return {f"{prefix}{name}": fn(y_true, y_pred, sample_weight) for name, fn in METRICS.items()}


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(6, 6) counts, rows = true tier, columns = predicted tier."""
    index = np.asarray(y_true, dtype=np.int64) * len(TIERS) + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(index, minlength=len(TIERS) ** 2).reshape(len(TIERS), len(TIERS))


def confusion_metrics(counts: np.ndarray, prefix: str = "") -> dict[str, float]:
    """`tier_metrics` of everything a confusion matrix counts (one weighted pair per cell)."""
    true, pred = np.divmod(np.arange(counts.size), len(TIERS))
    weight = counts.reshape(-1).astype(np.float64)
    keep = weight > 0
    if not keep.any():
        return {f"{prefix}{name}": 0.0 for name in METRICS}
    return tier_metrics(true[keep], pred[keep], prefix, sample_weight=weight[keep])
