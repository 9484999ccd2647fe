"""Evaluation splits over unique (creator, product) pairs.

(a) `random_split`: per creator, a random 80/10/10 of its pairs (the protocol papers
    report). Creators with fewer than `min_pairs` pairs cannot be split: they stay
    wholly in training and are not evaluated (documented fallback, logged).
(b) `time_split`: one global cut; the last `test_days` are the test, the `val_days`
    before them the validation, everything earlier the training (the production
    question: trained on the past, does it predict what comes next?). A pair belongs to
    the period of its *first* interaction, so test pairs are new pairs.
(c) `cold_products`: products first seen in the test period of (b), never in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from features.errors import HaowuError
from features.matching_data import Interactions

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 10**9


class SplitError(HaowuError):
    """The data cannot be split as asked (too few pairs, no time column, an empty part)."""


@dataclass
class Split:
    """Boolean masks over the pairs of an `Interactions`."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def summary(self) -> dict[str, int]:
        return {
            f"{self.name}_{p}_pairs": int(getattr(self, p).sum()) for p in ("train", "val", "test")
        }


def random_split(
    inter: Interactions,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    min_pairs: int = 2,
) -> Split:
    """Per-creator random split; each splittable creator keeps >= 1 training pair and
    gets >= 1 test pair. Shares are rounded stochastically so small creators still add
    up to the asked fractions on average."""
    if val_fraction + test_fraction >= 1:
        raise SplitError(f"val ({val_fraction}) + test ({test_fraction}) fractions must be < 1")
    rng = np.random.default_rng(seed)
    n_creators = len(inter.creators)
    order = np.lexsort((rng.random(inter.n_pairs), inter.creator))
    counts = np.bincount(inter.creator, minlength=n_creators)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(inter.n_pairs, dtype=np.int64)
    rank[order] = np.arange(inter.n_pairs) - start[inter.creator[order]]

    splittable = counts >= max(min_pairs, 2)
    n_test = np.floor(test_fraction * counts + rng.random(n_creators)).astype(np.int64)
    n_test = np.clip(n_test, 1, np.maximum(counts - 1, 1))
    n_val = np.floor(val_fraction * counts + rng.random(n_creators)).astype(np.int64)
    n_val = np.clip(n_val, 0, np.maximum(counts - n_test - 1, 0))
    n_test[~splittable], n_val[~splittable] = 0, 0

    c = inter.creator
    test = rank < n_test[c]
    val = ~test & (rank < n_test[c] + n_val[c])
    skipped = int(((counts > 0) & ~splittable).sum())
    if skipped:
        log.info(
            "random split: %d creator(s) with < %d pairs stay in training only", skipped, min_pairs
        )
    split = Split("random", ~(test | val), val, test)
    _check_nonempty(split, f"no creator has >= {max(min_pairs, 2)} distinct products to split")
    return split


def latest_split(inter: Interactions, min_pairs: int = 2) -> Split:
    """Each creator's latest pair (by first-seen time, then position) for validation, as
    a leave-one-out test holds its next good; creators with fewer than `min_pairs` pairs
    stay in training. The test part is empty: the log brings its own."""
    if inter.first_ts is None:
        raise SplitError("a latest-good split needs the pairs' times")
    order = np.lexsort((np.arange(inter.n_pairs), inter.first_ts, inter.creator))
    creator = inter.creator[order]
    last = np.ones(len(order), bool)
    last[:-1] = creator[1:] != creator[:-1]
    counts = np.bincount(inter.creator, minlength=len(inter.creators))
    val = np.zeros(inter.n_pairs, bool)
    val[order[last]] = counts[creator[last]] >= max(min_pairs, 2)
    split = Split("latest", ~val, val, np.zeros(inter.n_pairs, bool))
    if not val.any():
        raise SplitError(f"no creator has >= {max(min_pairs, 2)} distinct products to split")
    return split


def time_split(inter: Interactions, test_days: float, val_days: float = 0.0) -> Split:
    """Global time cut at `max(ts) - test_days` (validation: the `val_days` before)."""
    if inter.first_ts is None:
        raise SplitError("the time split needs a `ts` column in interactions")
    end = int(inter.first_ts.max())
    test_start = end - int(test_days * NS_PER_DAY)
    val_start = test_start - int(val_days * NS_PER_DAY)
    ts = inter.first_ts
    test = ts > test_start
    val = (ts > val_start) & ~test
    split = Split("time", ts <= val_start, val, test)
    _check_nonempty(
        split,
        f"the log spans {(end - int(ts.min())) / NS_PER_DAY:.1f} days; "
        f"test_days={test_days} + val_days={val_days} leave a part empty",
    )
    return split


def cold_products(inter: Interactions, split: Split) -> np.ndarray:
    """Positions of products with test pairs and no training or validation pair."""
    seen = np.zeros(len(inter.products), dtype=bool)
    seen[inter.product[split.train | split.val]] = True
    in_test = np.zeros(len(inter.products), dtype=bool)
    in_test[inter.product[split.test]] = True
    return np.flatnonzero(in_test & ~seen)


def _check_nonempty(split: Split, why: str) -> None:
    for part in ("train", "test"):
        if not getattr(split, part).any():
            raise SplitError(f"{split.name} split: empty {part} set ({why})")
    if not split.val.any():
        log.warning("%s split: empty validation set; early stopping is off", split.name)
