"""Both directions of retrieval: goods for creators (with the policy) and creators for goods.

`GoodsRetriever.recommend` over-fetches from the ANN index, applies the policy, and for
the rows the rules thinned below k fetches again, deeper (x4 each time, up to
`max_ann_fetch`); rows still short fall back to exact search restricted to the eligible
goods, so a list has k goods whenever k eligible, unseen goods exist. Narrow filters
(few eligible goods) go straight to the restricted exact search. Query vectors come from
the model (a known creator's embedding, or a new one embedded from its features).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp

from features.settings import PolicyConfig
from models.retrieval.catalog import IdLookup, ProductCatalog, RequestFilters
from models.retrieval.index import EmbeddingIndex, RetrievalError
from models.retrieval.policy import Policy, RankedLists, seen_mask

logger = logging.getLogger(__name__)


def _check_k(k: int, catalog_size: int, what: str) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise RetrievalError(f"k must be a positive integer, got {k!r}")
    if k > catalog_size:
        raise RetrievalError(f"k={k} exceeds the {catalog_size} {what} in the catalog")


def _describe(filters: RequestFilters | None) -> str:
    return filters.describe() if filters is not None else "no filters"


def _merge(into: RankedLists, rows: np.ndarray, part: RankedLists) -> None:
    for name in (
        "product_ids",
        "scores",
        "ranking_scores",
        "tier",
        "category_l1",
        "selected_goods",
        "diversity_slot",
        "selected_slot",
    ):
        getattr(into, name)[rows] = getattr(part, name)
    into.lengths[rows] = part.lengths
    for i, row in enumerate(rows):
        into.reasons[row] = part.reasons[i]


class GoodsRetriever:
    """Top-k goods for creators: product index + catalog + policy."""

    def __init__(self, index: EmbeddingIndex, catalog: ProductCatalog, cfg: PolicyConfig) -> None:
        self.index, self.catalog, self.cfg = index, catalog, cfg
        self.policy = Policy(cfg)

    def recommend(
        self,
        creator_vectors: np.ndarray,
        k: int,
        seen: sp.csr_matrix | None = None,
        filters: RequestFilters | None = None,
    ) -> RankedLists:
        """(n, k) lists for n creators; `seen`: one row per creator, one column per catalog good."""
        _check_k(k, len(self.catalog), "goods")
        queries = np.asarray(creator_vectors, dtype=np.float32)
        if queries.ndim != 2:
            raise RetrievalError(f"creator vectors must be (n, dim), got shape {queries.shape}")
        n = len(queries)
        if seen is not None and seen.shape[0] != n:
            raise RetrievalError(f"seen has {seen.shape[0]} rows for {n} creators")
        seen = seen if self.cfg.exclude_seen else None
        eligible = self.policy.eligible(self.catalog, filters)
        eligible_ids = self.catalog.product_ids[eligible]
        if len(eligible_ids) == 0:
            return RankedLists.empty(n, k, f"no goods match the request ({_describe(filters)})")
        share = len(eligible_ids) / len(self.catalog)
        fetch = min(len(self.index), math.ceil(k * self.cfg.overfetch / share))
        out = RankedLists.empty(n, k, "")
        todo = np.arange(n)
        while len(todo) and fetch <= self.cfg.max_ann_fetch:
            ids, scores = self.index.search(queries[todo], fetch)
            part = self.policy.apply(ids, scores, self.catalog, self._rows(seen, todo), filters, k)
            _merge(out, todo, part)
            todo = todo[part.lengths < k]
            if fetch >= len(self.index):
                break
            fetch = min(len(self.index), fetch * 4)
        if len(todo):
            self._exact_fallback(out, todo, queries, eligible_ids, seen, filters, k)
        return out

    @staticmethod
    def _rows(seen: sp.csr_matrix | None, rows: np.ndarray) -> sp.csr_matrix | None:
        return None if seen is None else seen[rows]

    def _exact_fallback(
        self,
        out: RankedLists,
        rows: np.ndarray,
        queries: np.ndarray,
        eligible_ids: np.ndarray,
        seen: sp.csr_matrix | None,
        filters: RequestFilters | None,
        k: int,
    ) -> None:
        """Exact search over the eligible goods only, deep enough to survive the seen rule."""
        logger.debug(
            "exact fallback for %d creator(s) over %d eligible goods", len(rows), len(eligible_ids)
        )
        block = self._rows(seen, rows)
        extra = int(np.diff(block.indptr).max()) if block is not None and block.nnz else 0
        depth = min(len(eligible_ids), math.ceil(k * self.cfg.overfetch) + extra)
        try:
            ids, scores = self.index.exact(queries[rows], depth, allowed_ids=eligible_ids)
        except RetrievalError as exc:  # no eligible good is in the index
            _merge(out, rows, RankedLists.empty(len(rows), k, str(exc)))
            return
        part = self.policy.apply(ids, scores, self.catalog, block, filters, k)
        for i in np.flatnonzero(part.lengths < k):
            part.reasons[i] = (
                f"only {part.lengths[i]} goods match the request and were not promoted "
                f"before ({_describe(filters)})"
            )
        _merge(out, rows, part)


def creators_for_products(
    index: EmbeddingIndex,
    product_vectors: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    creator_ids: np.ndarray | None = None,
    overfetch: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k creators for each product (the creator plaza): (creator ids, scores), (n, k).

    Works for a new product never seen in training: pass its vector embedded from its
    features. `exclude` (rows = products, columns = positions in `creator_ids`) drops
    creators that already promote the product; -1 pads when fewer than k remain.
    """
    _check_k(k, len(index), "creators")
    queries = np.asarray(product_vectors, dtype=np.float32)
    if exclude is None or exclude.nnz == 0:
        return index.search(queries, k)
    if creator_ids is None or exclude.shape[1] != len(creator_ids):
        raise RetrievalError("exclude needs creator_ids, one per column")
    exclude = exclude.tocsr()
    lookup = IdLookup(np.asarray(creator_ids))
    base = math.ceil(k * overfetch)
    depth = np.minimum(len(index), base + np.diff(exclude.indptr))  # k left after exclusions
    # goods fetched together at a depth rounded up to base x a power of two: the few goods
    # with thousands of promoters no longer make every good of the part fetch that deep
    # (a FAISS heap of k + thousands per query; small's product lists: 33 s -> 4 s)
    group = np.ceil(np.log2(depth / base)).clip(min=0)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        ids, scores = index.search(queries[rows], int(depth[rows].max()))
        pos, found = lookup(ids)
        drop = seen_mask(pos, found, exclude[rows]) | (ids < 0)
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]
        kept = ~np.take_along_axis(drop, order, axis=1)
        width = order.shape[1]
        out_ids[rows, :width] = np.where(kept, np.take_along_axis(ids, order, axis=1), -1)
        out_scores[rows, :width] = np.where(
            kept, np.take_along_axis(scores, order, axis=1), -np.inf
        )
    return out_ids, out_scores
