"""Exposure slots in a written lists folder: the batch job's last pass when it is given
new goods to show.

A promoted fine-tune rewrites every creator list with the batch job, and a new good
placed from its features alone seldom makes a list on its score, so the slots the
refresh gave the day's new goods would be lost. Given those goods, the job gives each
one that no list holds its exposure slots (models/retrieval/exposure.py: greedy by
score, at most `per_list` slots per list) and writes again only the parts that hold a
chosen creator, each atomically. It runs before `_SUCCESS` is written; a second run
finds every good listed and changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.io import read_table, write_part
from models.retrieval import exposure
from models.retrieval.run import RetrievalRun
from serving.batch.parts import splice

PART_GLOB = "part-*.parquet"


def listed_since(data_dir: Path, since: pd.Timestamp) -> np.ndarray:
    """Goods (internal IDs) of DIR/products listed at or after `since`: what a daily full
    run gives exposure slots to, as a refresh does for a delta's new goods. A products
    table without `listed_at` is a contract error naming the file and the column."""
    products = read_table(Path(data_dir), "products", columns=["product_id", "listed_at"])
    if since.tzinfo is not None:  # the contract's times carry no zone: compare in UTC
        since = since.tz_convert("UTC").tz_localize(None)
    listed = (products["listed_at"] >= since).to_numpy()
    return products["product_id"].to_numpy(np.int64)[listed]


def give_slots(
    run: RetrievalRun, out: Path, goods: np.ndarray, k: int, per_good: int, per_list: int
) -> dict[str, int]:
    """Slots in OUT's creator lists for the `goods` (internal IDs) that the policy may
    show (`RetrievalRun.candidate_set`: not L0, no flagged merchant) and no list holds;
    returns how many goods were eligible, listed already, given a slot, and how many
    lists changed."""
    goods = np.unique(np.asarray(goods, np.int64))
    pos = run.products.ids.positions(goods, strict=False)
    ok = pos >= 0
    ok[ok] = run.candidate_set()[pos[ok]]
    eligible = goods[ok]
    parts = sorted(Path(out).glob(PART_GLOB))
    held = [pd.read_parquet(p, columns=["product_id"])["product_id"].to_numpy() for p in parts]
    listed = np.unique(np.concatenate(held)) if held else np.empty(0, np.int64)
    missing = eligible[~np.isin(run.external("product", eligible), listed)]
    chosen = exposure.assign(exposure.candidates(run, missing, per_good), per_good, per_list)
    counts = {
        "goods": len(eligible),
        "listed_by_score": len(eligible) - len(missing),
        "slotted": int(chosen["product_id"].nunique()) if len(chosen) else 0,
        "lists_changed": int(chosen["creator_id"].nunique()) if len(chosen) else 0,
    }
    if chosen.empty:
        return counts
    slots = exposure.slot_rows(run, chosen)
    for path in parts:
        frame = pd.read_parquet(path)
        mine = slots["creator_id"].isin(frame["creator_id"])
        if not mine.any():
            continue
        taken = set(slots.loc[mine, "creator_id"].tolist())
        placed = exposure.place(frame[frame["creator_id"].isin(taken)], slots[mine], k)
        write_part(splice(frame, "creator_id", taken, placed), out, int(path.stem.split("-")[1]))
    return counts
