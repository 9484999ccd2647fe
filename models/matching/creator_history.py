"""Each creator's training goods as the creator tower's embedding-bag input.

Built once from the training matrix; a batch is gathered with index arithmetic, not a
Python loop. Histories longer than `max_items` keep a random sample of that many goods,
so one very active creator cannot make a batch arbitrarily large. With IDF pooling a
good's weight in the bag is its rarity, so a niche good says more about a creator than a
bestseller every creator promotes.

With the pairs' times and a half-life the history is read in time order. A creator
embedded for ranking weighs each good 0.5 ** (goods taken since / half-life), its latest
good 1; a training pair's bag holds only the goods the creator took before the target,
weighted the same way from the target back. The tower so learns what a creator takes
next from what it took last, and is asked exactly that when it ranks. A longer history
keeps its latest `max_items` goods.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from models.matching.two_tower import HistoryBatch


class CreatorHistory:
    def __init__(
        self,
        train: sp.csr_matrix,
        product_rows: np.ndarray,
        max_items: int,
        rng: np.random.Generator,
        pooling: str = "mean",
        times: np.ndarray | None = None,
        half_life: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        """`train`: (n_creators, n_products) training pairs; `product_rows`: product
        position -> row of the history table (0 = OOV, as for the product IDs);
        `pooling`: "mean" or "idf" (each good weighted by log((1 + n) / (1 + df)) + 1);
        `times`: when each of `train.tocoo()`'s pairs was first seen, for `half_life`;
        `dropout`: share of a training bag's goods left out at random, each batch."""
        coo = train.tocoo()
        self.item_weight = (
            idf_weights(train) if pooling == "idf" else np.ones(train.shape[1], np.float32)
        )
        recency = times is not None and half_life > 0
        # newest first (or a random order) within each creator, then keep the first `max_items`
        ahead = -np.asarray(times) if recency else rng.random(coo.nnz)
        order = np.lexsort((ahead, coo.row))
        creator, product = coo.row[order], coo.col[order].astype(np.int64)
        counts = np.bincount(creator, minlength=train.shape[0])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(creator)) - np.repeat(starts, counts)
        keep = rank < max_items if max_items > 0 else np.ones(len(creator), dtype=bool)
        self.lengths = np.bincount(creator[keep], minlength=train.shape[0]).astype(np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(self.lengths)])
        self.products = product[keep]  # (nnz_kept,) positions, to find a left-out target
        self.rows = product_rows[self.products]  # (nnz_kept,) history-table rows
        # (nnz_kept,) goods the creator took after each one (with times), and the weight
        # of each good when its creator is embedded for ranking
        self.newer = rank[keep] if recency else None
        self.recency = recency_weights(rank[keep], half_life) if recency else None
        self.half_life = half_life
        self.dropout, self._rng = dropout, rng

    def batch(self, creators: np.ndarray, leave_out: np.ndarray | None = None) -> HistoryBatch:
        """Bags of `creators` (B,); `leave_out` (B,) product positions weighted 0 in their
        own row's bag (the training target; with times, so is every good taken after it).
        Without it the bags are for ranking, weighted by recency when there are times."""
        lengths = self.lengths[creators]  # (B,)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        bag = np.repeat(np.arange(len(creators)), lengths)  # (N,) bag of each entry
        # (N,) positions in self.rows: each bag's start in the table plus the rank within it
        flat = np.arange(len(bag)) - offsets[bag] + self.indptr[creators][bag]
        weights = self.item_weight[self.products[flat]]  # a fresh array: safe to edit
        if self.newer is None:
            if leave_out is not None:
                weights[self.products[flat] == leave_out[bag]] = 0.0
        elif leave_out is None:
            weights *= self.recency[flat]
        else:  # the goods taken before the target, weighted back from it
            target = self.products[flat] == leave_out[bag]
            # a target older than every kept good (a capped history) has none before it
            target_newer = self.lengths[creators]  # (B,), a copy
            target_newer[bag[target]] = self.newer[flat[target]]
            since = self.newer[flat] - target_newer[bag] - 1  # goods between it and the target
            weights *= np.where(
                since >= 0, recency_weights(np.maximum(since, 0), self.half_life), 0
            )
        if leave_out is not None and self.dropout > 0:
            weights[self._rng.random(len(weights)) < self.dropout] = 0.0
        counts = np.bincount(bag, weights=weights, minlength=len(creators)).astype(np.float32)
        return HistoryBatch(
            torch.from_numpy(self.rows[flat]),
            torch.from_numpy(offsets),
            torch.from_numpy(weights),
            torch.from_numpy(counts),
        )


def idf_weights(train: sp.csr_matrix) -> np.ndarray:
    """Smoothed inverse document frequency of each product over creators (float32)."""
    n_creators = train.shape[0]
    df = np.bincount(train.indices, minlength=train.shape[1])
    return (np.log((1.0 + n_creators) / (1.0 + df)) + 1.0).astype(np.float32)


def recency_weights(newer: np.ndarray, half_life: float) -> np.ndarray:
    """0.5 ** (newer / half_life) (float32): `newer` counts the goods a creator took after
    this one, so its latest good weighs 1 and one `half_life` goods older weighs 0.5."""
    return np.exp2(-np.asarray(newer, np.float64) / half_life).astype(np.float32)
