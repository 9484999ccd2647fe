"""Random streams and the vectorised sampling tricks the generator is built from."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """One independent random stream per concern; append new ones, never reorder."""

    CATEGORIES = 0
    MERCHANTS = 1
    PRODUCT_ASSIGNMENT = 2
    PRODUCTS = 3
    INDICATORS = 4
    LABELS = 5
    BROKERS = 6
    CREATORS = 7
    INTERACTIONS = 8
    EVENT_COUNTS = 9


def stream(seed: int, concern: Stream, *index: int) -> np.random.Generator:
    """The generator of one concern (and chunk): a pure function of (seed, concern, index),
    so output never depends on the order in which chunks are produced."""
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(int(concern), *map(int, index)))
    return np.random.default_rng(seq)


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like weights over `n` items in a random order (so rank never follows id); sums to 1."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    weights = weights[rng.permutation(n)]
    return weights / weights.sum()


def grouped_cdf(group: np.ndarray, weights: np.ndarray, n_groups: int) -> np.ndarray:
    """Cumulative weights of items sorted by `group`, normalised inside each group and shifted
    by the group id: group g spans (g, g + 1]. Drawing from group g is then
    `searchsorted(cdf, g + u, side="right")` for u ~ U[0, 1), for any mix of groups at once.
    Groups with zero total weight must never be drawn from."""
    if len(group) and np.any(np.diff(group) < 0):
        raise ValueError("grouped_cdf needs items sorted by group")
    cum = np.cumsum(weights, dtype=np.float64)
    starts = np.searchsorted(group, np.arange(n_groups), side="left")
    ends = np.searchsorted(group, np.arange(n_groups), side="right")
    before = np.concatenate(([0.0], cum))[starts]
    total = np.concatenate(([0.0], cum))[ends] - before
    item_total = total[group]
    within = np.divide(cum - before[group], item_total, out=np.ones_like(cum), where=item_total > 0)
    cdf = group + np.minimum(within, 1.0)
    # the last item of each group closes it exactly, whatever the rounding
    nonempty = ends > starts
    cdf[ends[nonempty] - 1] = np.arange(n_groups)[nonempty] + 1.0
    return cdf


def draw_grouped(cdf: np.ndarray, group: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Positions (into the group-sorted items behind `cdf`) drawn from each row's group."""
    return np.searchsorted(cdf, group + u, side="right")


def draw_categorical(
    weights: np.ndarray, size: int | tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Indices drawn with probability proportional to `weights` (inverse CDF, vectorised)."""
    cum = np.cumsum(weights, dtype=np.float64)
    idx = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
    return np.minimum(idx, len(weights) - 1)


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Per row of `log_weights` (rows, items), `k` distinct items drawn without replacement."""
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    return np.argsort(-keys, axis=1)[:, :k]


def correlated(z: np.ndarray, corr: float, rng: np.random.Generator) -> np.ndarray:
    """A standard normal with correlation `corr` to the standard normal `z`."""
    return corr * z + np.sqrt(1.0 - corr**2) * rng.standard_normal(z.shape)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def seconds_to_timestamps(seconds: np.ndarray) -> np.ndarray:
    """Unix seconds (int64) as datetime64[ns], the contract's timestamp type."""
    return np.asarray(seconds, dtype=np.int64).astype("datetime64[s]").astype("datetime64[ns]")
