"""Cut-points that turn a continuous tier score into the ordinal tiers L0..L5.

The tier model regresses the label, so its score lives on the label's own scale; five
increasing cuts `c` map a score s to tier `#{k : s >= c[k]}`. They are fitted on the
validation split: first to maximise quadratic weighted kappa (coordinate ascent from the
cuts that reproduce the label distribution), then the L5 cut alone is moved to the lowest
score whose validation precision for L5 reaches a target, because a wrong Selected Goods
badge spends subsidy money while a missed one only delays it.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

N_TIERS = 6
TOP_TIER = N_TIERS - 1


def apply_cuts(score: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Tier of each score: the number of cuts at or below it (int64, 0..5)."""
    return np.searchsorted(np.asarray(cuts), np.asarray(score), side="right").astype(np.int64)


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_TIERS) -> float:
    """Cohen's kappa with quadratic weights (equals sklearn's `cohen_kappa_score(...,
    weights="quadratic")`); a bincount version, cheap enough to call in a search loop."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    observed = np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )
    total = observed.sum()
    if total == 0:
        return 0.0
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    grid = np.arange(n_classes)
    weights = (grid[:, None] - grid[None, :]) ** 2
    denominator = (weights * expected).sum()
    return 1.0 - (weights * observed).sum() / denominator if denominator > 0 else 0.0


def distribution_cuts(score: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cuts that give `score` the same tier shares as `labels` (quantile matching)."""
    shares = np.bincount(np.asarray(labels, dtype=np.int64), minlength=N_TIERS) / len(labels)
    return np.quantile(np.asarray(score, dtype=np.float64), np.cumsum(shares)[:-1])


def fit_qwk_cuts(score: np.ndarray, labels: np.ndarray, rounds: int, candidates: int) -> np.ndarray:
    """Coordinate ascent on QWK: each cut in turn tries `candidates` score quantiles
    between its neighbours and keeps the best; `rounds` passes over the five cuts."""
    score = np.asarray(score, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    cuts = distribution_cuts(score, labels)
    best = quadratic_kappa(labels, apply_cuts(score, cuts))
    levels = np.linspace(0.0, 1.0, candidates)
    for _ in range(rounds):
        improved = False
        for k in range(N_TIERS - 1):
            lo = cuts[k - 1] if k > 0 else -np.inf
            hi = cuts[k + 1] if k < N_TIERS - 2 else np.inf
            inside = score[(score >= lo) & (score <= hi)]
            if not len(inside):
                continue
            for value in np.unique(np.quantile(inside, levels)):
                trial = cuts.copy()
                trial[k] = value
                kappa = quadratic_kappa(labels, apply_cuts(score, trial))
                if kappa > best:
                    best, cuts, improved = kappa, trial, True
        if not improved:
            break
    log.debug("QWK cuts %s (validation qwk %.4f)", np.round(cuts, 4), best)
    return cuts


def precision_cut(
    score: np.ndarray, is_top: np.ndarray, target: float, min_support: int
) -> float | None:
    """The lowest threshold t such that the products scoring >= t hold at least
    `min_support` products and a share >= `target` of them are truly top-tier; None when
    no threshold reaches the target."""
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    hits = np.cumsum(np.asarray(is_top, dtype=bool)[order])
    count = np.arange(1, len(score) + 1)
    # a threshold can only fall between distinct scores: the last of each run of ties
    boundary = np.r_[ranked[1:] < ranked[:-1], True]
    ok = (hits / count >= target) & (count >= min_support) & boundary
    if not ok.any():
        return None
    k = int(np.flatnonzero(ok)[-1])  # the most products while still precise enough
    return float(ranked[k])


def fit_cuts(
    score: np.ndarray,
    labels: np.ndarray,
    rounds: int,
    candidates: int,
    top_precision: float,
    top_min_support: int,
) -> np.ndarray:
    """QWK-optimal cuts, then the L5 cut moved to reach `top_precision` on these labels."""
    cuts = fit_qwk_cuts(score, labels, rounds, candidates)
    top = precision_cut(score, np.asarray(labels) == TOP_TIER, top_precision, top_min_support)
    if top is None:
        log.warning(
            "no L5 threshold reaches precision %.2f with >= %d products on validation; "
            "keeping the QWK cut %.4f",
            top_precision,
            top_min_support,
            cuts[-1],
        )
        return cuts
    cuts = cuts.copy()
    cuts[-1] = max(top, cuts[-2])  # never below the L4 cut: tiers stay ordered
    return cuts
