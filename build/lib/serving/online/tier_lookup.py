"""`GET /products/{id}/tier`: a tier run's `tiers.parquet` held as columns, looked up by ID.

Kept as plain arrays sorted by product_id (about 40 bytes a product: 0.4 GB at `full`);
the dimension contributions sum, with the model's base, to the score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.errors import HaowuError
from features.indicators import DIMENSIONS
from models.artifacts import open_tier_run

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("top_for", "top_against", "reason")


@dataclass(frozen=True)
class TierRow:
    product_id: int
    tier: int
    score: float
    contributions: dict[str, float]  # dimension -> contribution to the score
    top_for: str | None
    top_against: str | None
    reason: str
    has_sales_history: bool | None


def _text(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, labels): a text column as int32 codes into its distinct values (-1 = none)."""
    cat = values.astype("category")
    return cat.cat.codes.to_numpy(np.int32), np.asarray(cat.cat.categories, dtype=object)


class TierTable:
    """Every scored product's tier, score and per-dimension contributions."""

    def __init__(self, frame: pd.DataFrame) -> None:
        frame = frame.sort_values("product_id", ignore_index=True)
        self.product_ids = frame["product_id"].to_numpy(np.int64)
        self.tier = frame["tier"].to_numpy(np.int8)
        self.score = frame["score"].to_numpy(np.float32)
        self.dimensions = [d for d in DIMENSIONS if f"contrib_{d}" in frame.columns]
        self.contrib = (
            np.column_stack([frame[f"contrib_{d}"].to_numpy(np.float32) for d in self.dimensions])
            if self.dimensions
            else np.zeros((len(frame), 0), np.float32)
        )  # (n, 5)
        self.text = {c: _text(frame[c]) for c in TEXT_COLUMNS if c in frame.columns}
        self.history = (
            frame["has_sales_history"].to_numpy(bool) if "has_sales_history" in frame else None
        )

    def __len__(self) -> int:
        return len(self.product_ids)

    @property
    def nbytes(self) -> int:
        arrays = [self.product_ids, self.tier, self.score, self.contrib]
        arrays += [codes for codes, _ in self.text.values()]
        return int(sum(a.nbytes for a in arrays))

    def get(self, product_id: int) -> TierRow | None:
        at = int(np.searchsorted(self.product_ids, product_id))
        if at >= len(self) or self.product_ids[at] != product_id:
            return None

        def text(column: str) -> str | None:
            if column not in self.text:
                return None
            codes, labels = self.text[column]
            return str(labels[codes[at]]) if codes[at] >= 0 else None

        return TierRow(
            product_id=int(product_id),
            tier=int(self.tier[at]),
            score=float(self.score[at]),
            contributions={d: float(self.contrib[at, j]) for j, d in enumerate(self.dimensions)},
            top_for=text("top_for"),
            top_against=text("top_against"),
            reason=text("reason") or "",
            has_sales_history=None if self.history is None else bool(self.history[at]),
        )

    @classmethod
    def load(cls, tier_run: Path | str) -> TierTable:
        path = open_tier_run(tier_run).tiers
        present = set(pq.read_schema(path).names)
        if not {"product_id", "tier", "score"} <= present:
            raise HaowuError(f"{path}: needs product_id, tier and score columns")
        wanted = ["product_id", "tier", "score", *[f"contrib_{d}" for d in DIMENSIONS]]
        wanted += [*TEXT_COLUMNS, "has_sales_history"]
        table = cls(pd.read_parquet(path, columns=[c for c in wanted if c in present]))
        log.info("tiers %s: %d products, %.1f MiB", path, len(table), table.nbytes / 2**20)
        return table
