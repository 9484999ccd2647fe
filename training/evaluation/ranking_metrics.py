"""Ranking metrics as free functions over (recommended positions, truth).

`recommended` is (n, K) product positions, best first, one row per evaluated creator;
`truth` is a CSR matrix with the same rows (the held-out products of each creator).
Per-creator functions return (n,) arrays; the caller averages over creators with a
non-empty truth. Definitions (binary relevance):

- recall@k   = |top-k ∩ truth| / |truth|
- ndcg@k     = sum_{hits at rank r} 1/log2(r+1) / sum_{r<=min(k,|truth|)} 1/log2(r+1)
- hit_rate@k = 1 if top-k ∩ truth is non-empty
- coverage@k = distinct products in all top-k lists / catalog size
- category_coverage@k = distinct leaf categories in all top-k lists / leaf categories
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.matching.recommender import in_rows


def hits(recommended: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(n, K) bool: is recommended[i, r] in creator i's truth (-1 = no product there)."""
    recommended = np.asarray(recommended, dtype=np.int64)
    if truth.shape[0] != len(recommended):
        raise ValueError(f"truth has {truth.shape[0]} rows, recommended has {len(recommended)}")
    return in_rows(truth, recommended)


def truth_counts(truth: sp.csr_matrix) -> np.ndarray:
    return np.diff(truth.tocsr().indptr)


# Each metric of a (n, k) hit matrix: evaluation finds the hits once for the largest k and
# slices them for the others.


def recall_of_hits(h: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return h.sum(axis=1) / np.maximum(counts, 1)


def ndcg_of_hits(h: np.ndarray, counts: np.ndarray) -> np.ndarray:
    k = h.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # rank 1 -> 1/log2(2)
    dcg = (h * discounts).sum(axis=1)
    ideal_n = np.minimum(counts, k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_n]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)


def hit_rate_of_hits(h: np.ndarray) -> np.ndarray:
    return h.any(axis=1).astype(np.float64)


def recall_at_k(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    return recall_of_hits(hits(recommended[:, :k], truth), truth_counts(truth))


def ndcg_at_k(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    return ndcg_of_hits(hits(recommended[:, :k], truth), truth_counts(truth))


def hit_rate_at_k(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    return hit_rate_of_hits(hits(recommended[:, :k], truth))


def item_coverage_at_k(recommended: np.ndarray, k: int, n_products: int) -> float:
    distinct = np.unique(recommended[:, :k])
    return int((distinct >= 0).sum()) / max(n_products, 1)


def category_coverage_at_k(
    recommended: np.ndarray, k: int, categories: np.ndarray, n_categories: int | None = None
) -> float:
    """`categories[position]` = leaf category of each product (-1 = unknown, not counted)."""
    distinct = np.unique(recommended[:, :k])
    cats = categories[distinct[distinct >= 0]]
    known = np.unique(cats[cats >= 0])
    total = (
        n_categories if n_categories is not None else len(np.unique(categories[categories >= 0]))
    )
    return len(known) / max(total, 1)
