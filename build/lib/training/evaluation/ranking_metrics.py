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


def hits(recommended: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(n, K) bool: is recommended[i, r] in creator i's truth (-1 = no product there)."""
    recommended = np.asarray(recommended, dtype=np.int64)
    n, width = recommended.shape
    if truth.shape[0] != n:
        raise ValueError(f"truth has {truth.shape[0]} rows, recommended has {n}")
    truth = truth.tocsr()
    n_products = truth.shape[1]
    truth_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(truth.indptr))
    truth_keys = truth_rows * n_products + truth.indices.astype(np.int64)
    rec_keys = np.arange(n, dtype=np.int64)[:, None] * n_products + recommended  # (n, K)
    return np.isin(rec_keys, truth_keys).reshape(n, width) & (recommended >= 0)


def truth_counts(truth: sp.csr_matrix) -> np.ndarray:
    return np.diff(truth.tocsr().indptr)


def recall_at_k(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    h = hits(recommended[:, :k], truth).sum(axis=1)
    return h / np.maximum(truth_counts(truth), 1)


def ndcg_at_k(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    h = hits(recommended[:, :k], truth)
    discounts = 1.0 / np.log2(np.arange(2, h.shape[1] + 2))  # rank 1 -> 1/log2(2)
    dcg = (h * discounts).sum(axis=1)
    ideal_n = np.minimum(truth_counts(truth), k)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])[ideal_n]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)


def hit_rate_at_k(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    return hits(recommended[:, :k], truth).any(axis=1).astype(np.float64)


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
