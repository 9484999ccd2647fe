"""The platform's recommendation policy over a batch of over-fetched candidate lists.

Order of the rules (each vectorised over the whole batch):

1. drop what may never be shown: unknown goods, L0, goods of flagged merchants, the
   request's filters (category, minimum tier, price band, minimum commission);
2. drop goods the creator already promoted (`exclude_seen`, on by default);
3. Selected Goods boost: an L5 good's ranking score gains `selected_boost` standard
   deviations of the row's candidate scores (scale-free across creators);
4. category diversity re-ranking (`models.retrieval.diversity`), one knob;
5. Selected Goods share: when the candidates hold L5 goods, at least
   `ceil(min_selected_share * k)` of them take the last places that would have gone
   to other goods;
6. keep k. Each kept good says why it is there (score, tier, Selected Goods, whether it
   holds a diversity slot or a Selected Goods slot). A row shorter than k carries a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.settings import PolicyConfig
from models.retrieval.catalog import CATEGORY_LEVELS, ProductCatalog, RequestFilters
from models.retrieval.diversity import cap_for, cap_rerank, mmr_rerank, sorted_mmr_rerank, take_rows
from models.retrieval.index import RetrievalError

__all__ = ["Policy", "ProductCatalog", "RankedLists", "RequestFilters"]


@dataclass
class RankedLists:
    """k goods per query row, best first; -1 pads a row that has fewer (see `reasons`)."""

    product_ids: np.ndarray  # (n, k) int64
    scores: np.ndarray  # (n, k) float32: the model's score
    ranking_scores: np.ndarray  # (n, k) float32: after the Selected Goods boost
    tier: np.ndarray  # (n, k) int8
    category_l1: np.ndarray  # (n, k) int32
    selected_goods: np.ndarray  # (n, k) bool: L5
    diversity_slot: np.ndarray  # (n, k) bool: in the list only thanks to the re-ranking
    selected_slot: np.ndarray  # (n, k) bool: in the list only thanks to the L5 share
    lengths: np.ndarray  # (n,) int
    reasons: list[str | None]  # why a row is shorter than k

    @property
    def k(self) -> int:
        return self.product_ids.shape[1]

    @classmethod
    def empty(cls, n: int, k: int, reason: str) -> RankedLists:
        full = lambda value, dtype: np.full((n, k), value, dtype)  # noqa: E731
        return cls(
            full(-1, np.int64),
            full(-np.inf, np.float32),
            full(-np.inf, np.float32),
            full(-1, np.int8),
            full(-1, np.int32),
            full(False, bool),
            full(False, bool),
            full(False, bool),
            np.zeros(n, np.int64),
            [reason] * n,
        )

    def why(self, row: int, rank: int) -> str:
        """One line a service can show next to the good."""
        parts = [f"score {self.scores[row, rank]:.4f}"]
        tier = int(self.tier[row, rank])
        parts.append(f"tier L{tier}" if tier >= 0 else "tier unknown")
        if self.selected_goods[row, rank]:
            parts.append("Selected Goods (boosted)")
        if self.selected_slot[row, rank]:
            parts.append("Selected Goods slot")
        if self.diversity_slot[row, rank]:
            parts.append("diversity slot")
        return "; ".join(parts)

    def to_frame(
        self, query_ids: np.ndarray, query_col: str = "creator_id", with_why: bool = False
    ) -> pd.DataFrame:
        """Long form, one row per (query, rank), empty slots dropped (the batch job's format)."""
        n, k = self.product_ids.shape
        keep = (self.product_ids >= 0).ravel()
        frame = pd.DataFrame(
            {
                query_col: np.repeat(np.asarray(query_ids), k)[keep],
                "rank": np.tile(np.arange(1, k + 1), n)[keep],
                "product_id": self.product_ids.ravel()[keep],
                "score": self.scores.ravel()[keep],
                "tier": self.tier.ravel()[keep],
                "category_l1": self.category_l1.ravel()[keep],
                "selected_goods": self.selected_goods.ravel()[keep],
                "diversity_slot": self.diversity_slot.ravel()[keep],
                "selected_slot": self.selected_slot.ravel()[keep],
            }
        )
        if with_why:
            rows, ranks = np.divmod(np.flatnonzero(keep), k)
            frame["why"] = [self.why(r, c) for r, c in zip(rows, ranks, strict=True)]
        return frame


def _first_k(chosen: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, filled), both (n, k): the chosen columns of each row, left to right."""
    # a stable sort on a 0/1 int8 key is numpy's radix sort: linear, and keeps column order
    keep = np.argsort((~chosen).view(np.int8), axis=1, kind="stable")[:, :k]
    return keep, take_rows(chosen, keep)


def seen_mask(positions: np.ndarray, found: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """(n, m) bool: candidate (row i, catalog position) is in row i of `seen`."""
    n, m = positions.shape
    if seen.shape[0] != n:
        raise ValueError(f"seen has {seen.shape[0]} rows for {n} query rows")
    seen = seen.tocsr()
    width = np.int64(seen.shape[1])
    if not seen.nnz:
        return np.zeros((n, m), bool)
    seen_keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(seen.indptr)) * width + seen.indices
    keys = np.arange(n, dtype=np.int64)[:, None] * width + positions  # (n, m)
    hit = pd.Series(keys.ravel(), copy=False).isin(seen_keys).to_numpy()  # hash set, O(n m)
    return hit.reshape(n, m) & found


class Policy:
    """Filters, Selected Goods boost, diversity and the L5 share; see the module doc."""

    def __init__(self, cfg: PolicyConfig) -> None:
        self.cfg = cfg

    def eligible(self, catalog: ProductCatalog, filters: RequestFilters | None) -> np.ndarray:
        return catalog.eligible(filters, tuple(self.cfg.exclude_tiers), self.cfg.exclude_flagged)

    def apply(
        self,
        candidate_ids: np.ndarray,
        scores: np.ndarray,
        catalog: ProductCatalog,
        seen: sp.csr_matrix | None,
        filters: RequestFilters | None,
        k: int,
    ) -> RankedLists:
        """Rank (n, m) candidates (any order; -1 = empty) into lists of k with reasons.

        `seen` has one row per query row and one column per catalog position.
        """
        cfg = self.cfg
        candidate_ids = np.asarray(candidate_ids, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        if candidate_ids.ndim != 2 or scores.shape != candidate_ids.shape:
            raise ValueError(
                f"candidate_ids {candidate_ids.shape} and scores {scores.shape} "
                "must be the same (n, m)"
            )
        if k < 1:
            raise RetrievalError(f"k must be a positive integer, got {k}")
        if candidate_ids.shape[1] < k:  # fewer candidates than places: pad with empty ones
            pad = ((0, 0), (0, k - candidate_ids.shape[1]))
            candidate_ids = np.pad(candidate_ids, pad, constant_values=-1)
            scores = np.pad(scores, pad, constant_values=-np.inf)
        n, m = candidate_ids.shape
        if seen is not None and seen.shape[1] != len(catalog):
            raise ValueError(f"seen has {seen.shape[1]} columns, the catalog {len(catalog)} goods")
        pos, found = catalog.positions(candidate_ids)  # (n, m)
        ok = found & (candidate_ids >= 0) & np.isfinite(scores)
        ok &= self.eligible(catalog, filters)[pos]
        n_eligible = ok.sum(axis=1)
        if cfg.exclude_seen and seen is not None:
            ok &= ~seen_mask(pos, found, seen)
        selected = ok & (catalog.tier[pos] == cfg.selected_tier)
        ranking = self._boosted(scores, ok, selected)

        # Work on column permutations and gather the outputs once at the end.
        order = np.argsort(np.where(ok, -ranking, np.inf), axis=1)  # relevance, invalid last
        ok_o = take_rows(ok, order)
        selected_o = take_rows(selected, order)
        relevance_rank: np.ndarray = np.broadcast_to(np.arange(m), (n, m))
        rerank = self._diversify(
            catalog,
            take_rows(pos, order),
            ok_o,
            take_rows(ranking, order),
            k,
        )
        if rerank is not None:
            order = take_rows(order, rerank)
            ok_o = take_rows(ok_o, rerank)
            selected_o = take_rows(selected_o, rerank)
            relevance_rank = rerank
        # slot = place in the list before the L5 share, which may hand the last slots to L5
        slot = np.where(ok_o, np.cumsum(ok_o, axis=1) - 1, m + 1)
        chosen, forced = self._with_selected_share(slot, selected_o, ok_o, k)
        keep, kept = _first_k(chosen, k)  # (n, k) columns of `order`, chosen ones in order
        lengths = kept.sum(axis=1)
        cols = take_rows(order, keep)  # (n, k) columns of the input
        flat = (np.arange(n)[:, None] * m + cols).ravel()
        pos_k = pos.ravel()[flat].reshape(n, k)

        def out(values: np.ndarray, empty: object) -> np.ndarray:
            return np.where(kept, values.ravel()[flat].reshape(n, k), empty)

        lists = RankedLists(
            product_ids=out(candidate_ids, -1),
            scores=out(scores, -np.inf).astype(np.float32),
            ranking_scores=out(ranking, -np.inf).astype(np.float32),
            tier=np.where(kept, catalog.tier[pos_k], -1).astype(np.int8),
            category_l1=np.where(kept, catalog.category_l1[pos_k], -1).astype(np.int32),
            selected_goods=out(selected, False),
            diversity_slot=kept & (take_rows(relevance_rank, keep) >= k) & ~take_rows(forced, keep),
            selected_slot=kept & take_rows(forced, keep),
            lengths=lengths,
            reasons=[None] * n,
        )
        short = np.flatnonzero(lengths < k)
        for i in short:
            lists.reasons[i] = (
                f"only {lengths[i]} of the {m} retrieved goods pass the policy "
                f"({n_eligible[i]} eligible before removing goods already promoted)"
            )
        return lists

    def _boosted(self, scores: np.ndarray, ok: np.ndarray, selected: np.ndarray) -> np.ndarray:
        """Ranking scores: L5 gains `selected_boost` std of the row's eligible scores."""
        boost = self.cfg.selected_boost
        if boost <= 0 or not selected.any():
            return scores
        count = np.maximum(ok.sum(axis=1, keepdims=True), 1)  # (n, 1)
        mean = np.where(ok, scores, np.float32(0)).sum(axis=1, keepdims=True) / count
        centred = np.where(ok, scores - mean, np.float32(0))
        spread = np.sqrt(np.einsum("ij,ij->i", centred, centred)[:, None] / count)
        return np.where(selected, scores + np.float32(boost) * spread, scores).astype(np.float32)

    def _diversify(
        self, catalog: ProductCatalog, pos: np.ndarray, ok: np.ndarray, ranking: np.ndarray, k: int
    ) -> np.ndarray | None:
        cfg = self.cfg
        if cfg.diversity_method == "none" or ok.shape[1] <= 1:
            return None
        if cfg.diversity_method == "cap":
            cap = cap_for(cfg.category_cap_share, k)
            if cap >= k:
                return None
            return cap_rerank(catalog.level(cfg.diversity_level)[pos], ok, cap)
        if cfg.diversity_method == "mmr_sort":
            coded = [catalog.codes(name) for name in CATEGORY_LEVELS]
            levels = [codes[pos] for codes, _ in coded]
            return sorted_mmr_rerank(ranking, levels, ok, cfg.mmr_lambda, [n for _, n in coded])
        levels = [catalog.category_l1[pos], catalog.category_l2[pos], catalog.category_l3[pos]]
        return mmr_rerank(ranking, levels, ok, cfg.mmr_lambda, k)

    def _with_selected_share(
        self, slot: np.ndarray, selected: np.ndarray, ok: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chosen, forced): the k goods kept, and the L5 goods kept only by the share rule."""
        natural = ok & (slot < k)
        need = math.ceil(self.cfg.min_selected_share * k)
        if need == 0 or not selected.any():
            return natural, np.zeros_like(natural)
        l5_rank = np.where(selected, np.cumsum(selected, axis=1) - 1, slot.shape[1])
        want = np.minimum(need, selected.sum(axis=1))[:, None]  # (n, 1)
        have = (natural & selected).sum(axis=1, keepdims=True)
        forced = selected & (l5_rank < want) & ~natural & (have < want)
        n_forced = forced.sum(axis=1, keepdims=True)
        # the last n_forced natural non-L5 goods give up their places
        others = natural & ~selected
        from_end = np.where(
            others, others.sum(axis=1, keepdims=True) - np.cumsum(others, axis=1), slot.shape[1]
        )
        dropped = others & (from_end < n_forced)
        return (natural & ~dropped) | forced, forced
