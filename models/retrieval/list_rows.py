"""The rows of recommendation lists (DESIGN §6), as the batch job writes them and the
registered matching model answers them, in the user's own IDs:

- goods for creators: `creator_id, rank, product_id, score, tier, category_l1,
  selected_goods, diversity_slot, selected_slot, reason`;
- creators for goods: `product_id, rank, creator_id, score, reason`.

`reason` says why the row is there: its score rank, a Selected Goods boost or share
slot, a category-diversity slot, and whether a side is new (embedded from features).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from models.retrieval.run import RetrievalRun


def _why_goods(lists_frame: pd.DataFrame, new_product: np.ndarray) -> np.ndarray:
    slot = np.where(
        lists_frame["selected_slot"],
        "Selected Goods share slot",
        np.where(lists_frame["diversity_slot"], "category diversity slot", "score rank"),
    ).astype(object)
    boosted = lists_frame["selected_goods"].to_numpy() & ~lists_frame["selected_slot"].to_numpy()
    slot[boosted] += "; Selected Goods boost"
    slot[new_product] += "; new product, embedded from its features"
    return slot


def _why_creators(new_product: np.ndarray, new_creator: np.ndarray) -> np.ndarray:
    why = np.full(len(new_product), "score rank", dtype=object)
    why[new_product] += "; new product, embedded from its features"
    why[new_creator] += "; new creator, embedded from its features"
    return why


def goods_rows(run: RetrievalRun, positions: np.ndarray, k: int) -> pd.DataFrame:
    """Top-k goods of creators (positions) under the policy, as list rows in user IDs."""
    lists = run.goods_for_creators(positions, k)
    frame = lists.to_frame(run.creators.ids.ids[positions], "creator_id")
    product_pos = run.products.ids.positions(frame["product_id"].to_numpy())
    frame["reason"] = _why_goods(frame, run.products.new[product_pos])
    for column, dtype in (("tier", "Int8"), ("category_l1", "Int32")):  # -1: unknown
        frame[column] = frame[column].astype(dtype).mask(frame[column] < 0)
    frame["creator_id"] = run.external("creator", frame["creator_id"].to_numpy())
    frame["product_id"] = run.external("product", frame["product_id"].to_numpy())
    return frame


def creator_rows(run: RetrievalRun, positions: np.ndarray, k: int) -> pd.DataFrame:
    """Top-k creators of goods (positions), as list rows in user IDs."""
    creator_ids, scores = run.creators_for_products(positions, k)
    n, k = creator_ids.shape
    keep = (creator_ids >= 0).ravel()
    product_pos = np.repeat(positions, k)[keep]
    creators = creator_ids.ravel()[keep]
    creator_pos = run.creators.ids.positions(creators)
    return pd.DataFrame(
        {
            "product_id": run.external("product", run.products.ids.ids[product_pos]),
            "rank": np.tile(np.arange(1, k + 1), n)[keep],
            "creator_id": run.external("creator", creators),
            "score": scores.ravel()[keep].astype(np.float32),
            "reason": _why_creators(run.products.new[product_pos], run.creators.new[creator_pos]),
        }
    )


ROWS_CHUNK = 4096  # queries whose rows are built at once: memory stays at chunk x k rows


def rows_in_chunks(
    rows: Callable[[RetrievalRun, np.ndarray, int], pd.DataFrame],
    run: RetrievalRun,
    positions: np.ndarray,
    k: int,
) -> pd.DataFrame:
    """`goods_rows` or `creator_rows` of many queries, `ROWS_CHUNK` at a time."""
    chunks = [
        rows(run, positions[lo : lo + ROWS_CHUNK], k) for lo in range(0, len(positions), ROWS_CHUNK)
    ]
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
