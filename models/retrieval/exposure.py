"""New goods' exposure slot: a good listed today is in some creator's list today.

A refresh rewrites the lists a new good scores into (lists.py), but a good placed from
its features alone seldom beats a list's last good, so most new goods would wait for
interactions that no list invites. The exposure slot, used by platforms to start a new
listing, gives each new good that no rewritten list took a slot in the lists of its
`new_good_creators` best creators (by the creators index, as its product list ranks
them). Each list gives at most `new_good_slots_per_list` of its last places to such goods,
so a list stays what the model ranked. The slot rows say so in `reason`.

Assignment is greedy by score, in rounds over each good's candidates (best first), all
vectorised: a round gives each still-unplaced good its next candidate creator, and a
creator that would take more goods than its free slots keeps the best-scoring ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.retrieval.list_rows import creator_rows, rows_in_chunks
from models.retrieval.run import RetrievalRun

# creators asked per wanted slot: a few "hub" creators are the best match of many new goods
# and fill up, so a good needs candidates past them. On small, day 1 of `bench refresh`
# (370 eligible new goods): 4 candidates listed 82% of them, 64 listed all (+0.6 s)
CANDIDATES_PER_SLOT = 64
SLOT_REASON = "new good exposure slot; new product, embedded from its features"


def candidates(run: RetrievalRun, goods: np.ndarray, wanted: int) -> pd.DataFrame:
    """(product_id, creator_id, score, rank) of each good's best creators, user IDs."""
    positions = run.products.ids.positions(goods)
    k = min(wanted * CANDIDATES_PER_SLOT, len(run.index("creators")))
    columns = ["product_id", "creator_id", "score", "rank"]
    if not len(positions):
        return pd.DataFrame(columns=columns)
    return rows_in_chunks(creator_rows, run, positions, k)[columns]


def assign(options: pd.DataFrame, per_good: int, per_list: int) -> pd.DataFrame:
    """Greedy by score: each good up to `per_good` creators, each creator up to `per_list`
    goods; returns the chosen (product_id, creator_id, score) rows."""
    chosen = options.iloc[:0]
    left = options.sort_values(["rank", "score"], ascending=[True, False])
    while len(left):
        placed = chosen.groupby("product_id").size()
        full = chosen.groupby("creator_id").size()
        room = left[
            left["product_id"].map(placed).fillna(0).lt(per_good)
            & left["creator_id"].map(full).fillna(0).lt(per_list)
        ]
        if room.empty:
            break
        # this round: each good's best remaining candidate ...
        best = room.drop_duplicates("product_id")
        # ... and each creator keeps the goods that score best, up to its free slots
        best = best.sort_values("score", ascending=False)
        free = per_list - best["creator_id"].map(full).fillna(0)
        take = best[best.groupby("creator_id").cumcount() < free]
        if take.empty:
            break
        chosen = pd.concat([chosen, take])
        left = room.drop(take.index)
    return chosen[["product_id", "creator_id", "score"]].reset_index(drop=True)


def slot_rows(run: RetrievalRun, chosen: pd.DataFrame) -> pd.DataFrame:
    """The chosen (good, creator) pairs as goods-list rows (rank filled in by `place`)."""
    ids = chosen["product_id"].to_numpy()
    if "product" in run.maps:  # imported data: the lists hold the user's IDs
        ids = run.maps["product"].to_internal(ids)
    pos = run.products.ids.positions(np.asarray(ids, np.int64))
    tier = run.catalog.tier[pos]
    frame = pd.DataFrame(
        {
            "creator_id": chosen["creator_id"].to_numpy(),
            "rank": 0,
            "product_id": chosen["product_id"].to_numpy(),
            "score": chosen["score"].to_numpy(np.float32),
            "tier": pd.array(np.where(tier < 0, None, tier), dtype="Int8"),
            "category_l1": pd.array(
                np.where(run.catalog.category_l1[pos] < 0, None, run.catalog.category_l1[pos]),
                dtype="Int32",
            ),
            "selected_goods": tier == 5,
            "diversity_slot": False,
            "selected_slot": False,
            "reason": SLOT_REASON,
        }
    )
    return frame


def place(lists: pd.DataFrame, slots: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each creator's list with its slot goods in its last places (still k rows): the
    list's top k - s rows, then its s slot goods by score."""
    if slots.empty:
        return lists
    slots = slots.sort_values(["creator_id", "score"], ascending=[True, False])
    taken = slots.groupby("creator_id").size()
    keep = lists["rank"] <= k - lists["creator_id"].map(taken).fillna(0)
    kept = lists[keep]
    start = kept.groupby("creator_id")["rank"].max().reindex(taken.index).fillna(0)
    slots = slots.assign(
        rank=slots["creator_id"].map(start).to_numpy(np.int64)
        + slots.groupby("creator_id").cumcount().to_numpy()
        + 1
    )
    out = pd.concat([kept, slots[lists.columns]], ignore_index=True)
    return out.sort_values(["creator_id", "rank"], kind="stable").reset_index(drop=True)
