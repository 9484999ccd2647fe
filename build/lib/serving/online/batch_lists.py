"""The batch job's lists held in memory for the service: one query's rows in O(log n).

A lists folder (`OUT/part-*.parquet` + `OUT/_SUCCESS`, DESIGN §6) is read once and
kept by model *position*, not ID: the query and item IDs (the user's own) are mapped to
the served model's positions at load, so a lookup is a binary search plus a slice, and a
row costs 8-10 bytes (int32 item position, float32 score, the slot flags when present)
instead of carrying IDs, tier and category that the catalog already holds by position.
Rows whose query the model does not know are dropped (counted); items it does not know
keep position -1 and are skipped when served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import HaowuError
from models.artifacts import SUCCESS

log = logging.getLogger(__name__)

FLAGS = ("diversity_slot", "selected_slot")  # policy columns the batch job may write
DIRECTIONS = {"creator": ("creator_id", "product_id"), "product": ("product_id", "creator_id")}

ToPositions = Callable[[np.ndarray], np.ndarray]  # IDs -> model positions, -1 = unknown


@dataclass
class ListRows:
    """One query's stored list, best first (views into the store's arrays)."""

    positions: np.ndarray  # (n,) int32 item positions, -1 = unknown to the model
    scores: np.ndarray  # (n,) float32
    flags: dict[str, np.ndarray]  # FLAGS present in the lists


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def read_manifest(folder: Path) -> dict[str, Any]:
    """A lists folder's `_SUCCESS` manifest (the batch job's identity, `model_digest`
    included); empty when the folder holds no complete lists or it cannot be read."""
    try:
        doc = json.loads((Path(folder) / SUCCESS).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class ListStore:
    """Every query's top-K list of one direction, keyed by query position."""

    def __init__(
        self,
        queries: np.ndarray,
        items: np.ndarray,
        scores: np.ndarray,
        flags: dict[str, np.ndarray],
        manifest: dict[str, Any],
    ) -> None:
        """Rows must be sorted by (query position, rank)."""
        starts = np.flatnonzero(np.r_[True, queries[1:] != queries[:-1]]) if len(queries) else []
        self.keys = queries[starts].astype(np.int32) if len(queries) else queries.astype(np.int32)
        self.offsets = np.r_[np.asarray(starts, np.int64), len(queries)]
        self.items, self.scores, self.flags = items, scores, flags
        self.manifest = manifest
        longest = int(np.diff(self.offsets).max()) if len(self.keys) else 0
        self.depth = int(manifest.get("k") or longest)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        arrays = [self.keys, self.offsets, self.items, self.scores, *self.flags.values()]
        return int(sum(a.nbytes for a in arrays))

    def get(self, query: int) -> ListRows | None:
        """The stored list of the query at this model position, or None."""
        at = int(np.searchsorted(self.keys, query))
        if at >= len(self.keys) or self.keys[at] != query:
            return None
        lo, hi = self.offsets[at], self.offsets[at + 1]
        flags = {name: values[lo:hi] for name, values in self.flags.items()}
        return ListRows(self.items[lo:hi], self.scores[lo:hi], flags)

    @classmethod
    def load(
        cls,
        folder: Path,
        query_positions: ToPositions,
        item_positions: ToPositions,
        direction: str = "creator",
    ) -> ListStore:
        """Read a complete lists folder of `direction` (creator -> goods or product -> creators)."""
        folder = Path(folder)
        if not (folder / SUCCESS).is_file():
            raise HaowuError(f"{folder} holds no complete batch lists ({SUCCESS} missing)")
        manifest = read_manifest(folder)
        if manifest.get("direction", direction) != direction:
            raise HaowuError(f"{folder} holds {manifest['direction']} lists, not {direction}")
        query_col, item_col = DIRECTIONS[direction]
        parts = sorted(folder.glob("part-*.parquet"))
        if not parts:
            raise HaowuError(f"{folder}: no part-*.parquet files")
        chunks: dict[str, list[np.ndarray]] = {}
        for part in parts:
            present = set(pq.read_schema(part).names)
            missing = [c for c in (query_col, "rank", item_col, "score") if c not in present]
            if missing:
                raise HaowuError(f"{part}: lists need column(s) {missing}")
            flags = [f for f in FLAGS if f in present]
            table = pq.read_table(part, columns=[query_col, "rank", item_col, "score", *flags])
            query = query_positions(_column(table, query_col))
            keep = query >= 0
            if not keep.all():
                log.warning("%s: %d rows for queries the model does not know", part, (~keep).sum())
            arrays = {
                "query": query,
                "rank": _column(table, "rank").astype(np.int32),
                "item": item_positions(_column(table, item_col)).astype(np.int32),
                "score": _column(table, "score").astype(np.float32),
                **{f: _column(table, f).astype(bool) for f in flags},
            }
            for name, values in arrays.items():
                chunks.setdefault(name, []).append(values[keep])
        columns = {name: np.concatenate(values) for name, values in chunks.items()}
        query, rank = columns["query"], columns["rank"]
        # the batch job writes queries in order and ranks 1..k: sort only when it did not
        step = np.diff(query)
        if len(query) > 1 and not ((step >= 0).all() and ((step > 0) | (np.diff(rank) > 0)).all()):
            order = np.lexsort((rank, query))
            columns = {name: values[order] for name, values in columns.items()}
        store = cls(
            columns["query"],
            columns["item"],
            columns["score"],
            {f: columns[f] for f in FLAGS if f in columns},
            manifest,
        )
        log.info(
            "batch lists %s: %d %ss, depth %d, %.1f MiB",
            folder,
            len(store),
            direction,
            store.depth,
            store.nbytes / 2**20,
        )
        return store
