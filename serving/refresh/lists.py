"""Batch lists rewritten only where their inputs changed; every other row kept as it was.

Creator lists (goods per creator) are recomputed, with the batch job's own row function
(models/retrieval/list_rows.py) over the refreshed data, tiers and indexes, for:

- `new_interactions`: creators with new interactions (their promoted goods, which the
  policy leaves out, changed);
- `new_good_enters`: creators for whom a good added to the index scores above the lowest
  score in their current list;
- `held_removed_good`: creators whose list holds a good that left the candidate set (or
  whose tier moved: the list's tier, boost and share slots depend on it);
- `new_creator`: creators with no list yet (new creators, embedded from their features);
- `new_good_slot`: creators whose list gives a last place to a new good no other list
  took (models/retrieval/exposure.py), so every new good is in some list the day it is
  listed.

Product lists (creators per good) are written for the goods added to the index, and
written again where a new creator scores above the list's lowest score
(`new_creator_enters`); the lists of goods that left the index are dropped. A creator
re-embedded from its new history keeps its place and score in the product lists until
the next batch job: with a day's thousands of busy creators nearly every product list
holds one. Writing those again on a `small` day (14,669 creators with new interactions)
rewrote 197,826 product lists and took the refresh from 12.9 s to 65.5 s.

A part file none of whose queries changed is not rewritten, so other lists stay byte for
byte what they were; a rewritten part keeps the other queries' rows as read, in their
order, and new queries go to a new part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.io import write_part
from models.retrieval import exposure
from models.retrieval.list_rows import creator_rows, goods_rows, rows_in_chunks
from models.retrieval.run import RetrievalRun, Side
from serving.batch.parts import splice

PART_GLOB = "part-*.parquet"
SCORE_CHUNK = 4096  # creators scored against the added goods at a time


@dataclass
class Rewrite:
    """Which queries of one lists folder were rewritten, and why (counts per reason)."""

    direction: str
    reasons: dict[str, int] = field(default_factory=dict)
    queries: int = 0  # lists written
    dropped: int = 0  # lists removed
    parts_rewritten: int = 0
    parts_added: int = 0
    parts_kept: int = 0
    rows: int = 0  # rows in the folder after

    def describe(self) -> dict[str, int | dict[str, int]]:
        return {
            "lists_rewritten": self.queries,
            "lists_dropped": self.dropped,
            "reasons": self.reasons,
            "parts_rewritten": self.parts_rewritten,
            "parts_added": self.parts_added,
            "parts_kept": self.parts_kept,
            "rows": self.rows,
        }


def _internal(run: RetrievalRun, side: str, ids: np.ndarray) -> np.ndarray:
    """The user's IDs as the lists hold them -> internal IDs."""
    id_map = run.maps.get(side)
    if id_map is None:
        return np.asarray(ids, np.int64)
    return np.asarray(id_map.to_internal(ids, missing="minus_one"), np.int64)


def _read(folder: Path, columns: list[str]) -> tuple[list[Path], pd.DataFrame]:
    parts = sorted(folder.glob(PART_GLOB))
    frames = [pd.read_parquet(p, columns=columns).assign(_part=i) for i, p in enumerate(parts)]
    return parts, pd.concat(frames, ignore_index=True)


def _entering(
    vectors: np.ndarray, queries: np.ndarray, lowest: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """(n,) bool: one of `items` (vectors) scores above the lowest listed score of the
    query at `queries` (positions into `vectors`)."""
    out = np.zeros(len(queries), bool)
    if not len(items) or not len(queries):
        return out
    items = np.asarray(items, np.float32)
    for lo in range(0, len(queries), SCORE_CHUNK):
        chunk = np.asarray(vectors[queries[lo : lo + SCORE_CHUNK]], np.float32)  # (b, d)
        out[lo : lo + SCORE_CHUNK] = (chunk @ items.T).max(axis=1) > lowest[lo : lo + SCORE_CHUNK]
    return out


def _vectors(side: Side, ids: np.ndarray) -> np.ndarray:
    return side.vectors[side.ids.positions(np.asarray(ids, np.int64))]


def _write(
    out: Path,
    parts: list[Path],
    query_col: str,
    edits: dict[int, tuple[set, pd.DataFrame | None]],
    fresh: pd.DataFrame | None,
    result: Rewrite,
    stage_remove: Callable[[Path], None],
) -> None:
    """Rewrite the parts with edits (queries to take out, rows to put in their place),
    keep the others untouched, and add a part for new queries (all into `out`)."""
    numbers = [int(p.stem.split("-")[1]) for p in parts]
    for i, part in enumerate(parts):
        if i not in edits:
            result.parts_kept += 1
            result.rows += pq.read_metadata(part).num_rows
            continue
        frame = splice(pd.read_parquet(part), query_col, *edits[i])
        if len(frame):
            write_part(frame, out, numbers[i])
            result.parts_rewritten += 1
            result.rows += len(frame)
        else:
            stage_remove(part)
    if fresh is not None and len(fresh):
        write_part(fresh, out, max(numbers, default=-1) + 1)
        result.parts_added += 1
        result.rows += len(fresh)


def rewrite_creator_lists(
    run: RetrievalRun,
    folder: Path,
    out: Path,
    k: int,
    interaction_creators: np.ndarray,
    added_goods: np.ndarray,
    removed_goods: np.ndarray,
    stage_remove: Callable[[Path], None],
    exposure_slots: tuple[int, int] | None = None,
) -> Rewrite:
    """Recompute the creator lists whose inputs changed (module doc) into `out`;
    `exposure_slots` = (creators per new good, slots per list) gives each new good no
    rewritten list took its exposure slots (models/retrieval/exposure.py)."""
    result = Rewrite("creator")
    parts, held = _read(folder, ["creator_id", "product_id", "score"])
    held["creator"] = _internal(run, "creator", held["creator_id"].to_numpy())
    held["product"] = _internal(run, "product", held["product_id"].to_numpy())
    per = held.groupby("creator", sort=True).agg(
        lowest=("score", "min"), part=("_part", "first"), external=("creator_id", "first")
    )
    creators = per.index.to_numpy(np.int64)
    pos = run.creators.ids.positions(creators, strict=False)
    known = pos >= 0
    holding = held.loc[held["product"].isin(removed_goods), "creator"].unique()
    reasons = {
        "new_interactions": np.isin(creators, interaction_creators),
        "new_good_enters": np.zeros(len(creators), bool),
        "held_removed_good": np.isin(creators, holding),
    }
    reasons["new_good_enters"][known] = _entering(
        run.creators.vectors,
        pos[known],
        per["lowest"].to_numpy()[known],
        _vectors(run.products, added_goods),
    )
    affected = known & np.logical_or.reduce(list(reasons.values()))
    listed = run.creators.queries
    new_creators = listed[~np.isin(run.creators.ids.ids[listed], creators)]
    result.reasons = {name: int((mask & known).sum()) for name, mask in reasons.items()}
    result.reasons["new_creator"] = len(new_creators)
    rows = _goods(run, pos[affected], k)
    fresh = _goods(run, new_creators, k)
    if exposure_slots is not None and len(added_goods):
        rows, fresh, slotted = _expose(run, per, rows, fresh, added_goods, k, exposure_slots)
        reasons["new_good_slot"] = np.isin(per["external"].to_numpy(), slotted) & ~affected
        result.reasons["new_good_slot"] = int(reasons["new_good_slot"].sum())
        affected |= reasons["new_good_slot"]
    edits: dict[int, tuple[set, pd.DataFrame | None]] = {}
    for part, group in per[affected].groupby("part"):
        taken = set(group["external"].tolist())
        mine = rows[rows["creator_id"].isin(taken)] if len(rows) else None
        edits[int(part)] = (taken, mine)
    result.queries = int(affected.sum()) + len(new_creators)
    _write(out, parts, "creator_id", edits, fresh, result, stage_remove)
    return result


def _expose(
    run: RetrievalRun,
    per: pd.DataFrame,
    rows: pd.DataFrame,
    fresh: pd.DataFrame,
    added_goods: np.ndarray,
    k: int,
    slots: tuple[int, int],
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The new goods no rewritten list took, each given its exposure slots
    (models/retrieval/exposure.py); returns the rewritten and new creators' rows with
    their slots, and the creators (user IDs) whose unchanged lists now take one."""
    listed = np.concatenate(
        [frame["product_id"].to_numpy(np.int64) for frame in (rows, fresh) if len(frame)]
        or [np.empty(0, np.int64)]
    )
    missing = added_goods[~np.isin(run.external("product", added_goods), listed)]
    per_good, per_list = slots
    chosen = exposure.assign(exposure.candidates(run, missing, per_good), per_good, per_list)
    if chosen.empty:
        return rows, fresh, np.empty(0, np.int64)
    slot = exposure.slot_rows(run, chosen)
    done = np.concatenate([
        frame["creator_id"].unique() for frame in (rows, fresh) if len(frame)
    ] or [np.empty(0, np.int64)])  # fmt: skip
    others = np.setdiff1d(slot["creator_id"].unique(), done)
    held = per.index.to_numpy(np.int64)[np.isin(per["external"].to_numpy(), others)]
    extra = _goods(run, run.creators.ids.positions(held), k)
    rows = pd.concat([frame for frame in (rows, extra) if len(frame)] or [rows])
    in_fresh = slot["creator_id"].isin(fresh["creator_id"] if len(fresh) else [])
    rows = exposure.place(rows, slot[~in_fresh], k) if len(rows) else rows
    if len(fresh):
        fresh = exposure.place(fresh, slot[in_fresh], k)
    return rows, fresh, others


def rewrite_product_lists(
    run: RetrievalRun,
    folder: Path,
    out: Path,
    k: int,
    added_goods: np.ndarray,
    removed_goods: np.ndarray,
    stage_remove: Callable[[Path], None],
    new_creators: np.ndarray | None = None,
) -> Rewrite:
    """Lists for the goods added to the index; the lists of goods that left it dropped;
    written again, the lists a new creator scores above their lowest score."""
    result = Rewrite("product")
    parts, held = _read(folder, ["product_id", "score"])
    held["product"] = _internal(run, "product", held["product_id"].to_numpy())
    per = held.groupby("product", sort=True).agg(
        lowest=("score", "min"), part=("_part", "first"), external=("product_id", "first")
    )
    products = per.index.to_numpy(np.int64)
    gone = np.isin(products, removed_goods)
    pos = run.products.ids.positions(products, strict=False)
    live = (pos >= 0) & ~gone
    k = min(k, len(run.index("creators")))
    enters = np.zeros(len(products), bool)
    if new_creators is not None and len(new_creators):
        enters[live] = _entering(
            run.products.vectors,
            pos[live],
            per["lowest"].to_numpy()[live],
            _vectors(run.creators, new_creators),
        )
    rows = rows_in_chunks(creator_rows, run, pos[enters], k)
    edits: dict[int, tuple[set, pd.DataFrame | None]] = {}
    for part, group in per[gone | enters].groupby("part"):
        taken = set(group["external"].tolist())
        mine = rows[rows["product_id"].isin(taken)] if len(rows) else None
        edits[int(part)] = (taken, mine)
    result.dropped = int(gone.sum())
    todo = np.setdiff1d(added_goods, products)
    fresh = rows_in_chunks(creator_rows, run, run.products.ids.positions(todo), k)
    result.reasons = {
        "new_good": len(todo),
        "left_candidate_set": result.dropped,
        "new_creator_enters": int(enters.sum()),
    }
    result.queries = len(todo) + int(enters.sum())
    _write(out, parts, "product_id", edits, fresh, result, stage_remove)
    return result


def _goods(run: RetrievalRun, positions: np.ndarray, k: int) -> pd.DataFrame:
    return rows_in_chunks(goods_rows, run, positions, k)
