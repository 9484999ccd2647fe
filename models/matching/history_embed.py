"""Known creators embedded again from an updated history, with the served creator tower.

A two-tower creator tower that reads the creator's history (the mean embedding of its
goods, models/matching/two_tower.py) places a creator from its side features, its ID row
and that history. After new interactions the history has grown, so the creator's vector
can move without retraining: the same tower, the same weights, the longer bag. This is
what `haowu refresh` does for creators with new interactions; a tower without a history
table returns None (nothing would move).

The bag keeps the `history_max_items` most recent goods (training kept a random sample
of that many, or the latest with pair times); goods the model never saw read the OOV
row, as in training. With a `history_half_life` the goods weigh as when the model
embedded its creators: the latest 1, each older one by recency.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.matching.creator_history import recency_weights
from models.matching.two_tower import HistoryBatch

EMBED_BATCH = 4096


def history_batch(rows: list[np.ndarray], half_life: float = 0.0) -> HistoryBatch:
    """Bags of history-table rows, one per creator, each oldest first."""
    lengths = np.array([len(r) for r in rows], np.int64)
    items = np.concatenate(rows).astype(np.int64) if rows else np.empty(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    bag = np.repeat(np.arange(len(rows)), lengths)  # (N,) bag of each entry
    weights = np.ones(len(items), np.float32)
    if half_life > 0:
        newer = (offsets + lengths)[bag] - 1 - np.arange(len(items))  # goods after each one
        weights = recency_weights(newer, half_life)
    counts = np.bincount(bag, weights, len(rows))
    return HistoryBatch(
        torch.from_numpy(items),
        torch.from_numpy(offsets),
        torch.from_numpy(weights),
        torch.from_numpy(counts.astype(np.float32)),
    )


@torch.no_grad()
def embed_with_history(
    recommender: object,
    creator_positions: np.ndarray,
    frame: pd.DataFrame,
    histories: list[np.ndarray],
) -> np.ndarray | None:
    """(n, d) query vectors (scaled by 1 / temperature, like the exported ones) of the
    model's creators at `creator_positions`, side features `frame` (one row each) and
    `histories` (each: the model's product positions, oldest first, -1 = unknown good).
    None when the recommender has no creator tower reading a history."""
    model = getattr(recommender, "model", None)
    encoders = getattr(recommender, "encoders", None)
    cfg = getattr(recommender, "cfg", None)
    if model is None or encoders is None or model.creator_tower.history is None:
        return None
    model.eval()
    keep = int(getattr(cfg, "history_max_items", 0) or 0)
    product_rows = encoders.product_ids.rows
    bags = []
    for goods in histories:
        goods = np.asarray(goods, np.int64)
        if keep > 0:
            goods = goods[-keep:]
        bags.append(np.where(goods >= 0, product_rows[np.maximum(goods, 0)], 0))
    side = encoders.creator_side.transform(frame)
    ids = encoders.creator_ids.rows[np.asarray(creator_positions, np.int64)]
    out = np.empty((len(ids), model.cfg.embedding_dim), np.float32)
    for lo in range(0, len(ids), EMBED_BATCH):
        hi = lo + EMBED_BATCH
        vectors = model.creator_tower(
            torch.from_numpy(ids[lo:hi]),
            torch.from_numpy(side.categorical[lo:hi]),
            torch.from_numpy(side.numeric[lo:hi]),
            history_batch(bags[lo:hi], float(getattr(cfg, "history_half_life", 0.0) or 0.0)),
        )  # (b, d), unit length
        out[lo:hi] = vectors.numpy()
    return out / float(model.temperature)
