"""Scoring every product in chunks: the tier table, and the tallies evaluation needs.

`tier_table` turns one chunk of indicators into rows of `tiers.parquet`; `score_products`
streams the products table through it into one Parquet file (a row group per chunk),
keeping only small tallies in memory: tier counts, mean dimension contributions per tier
and, when the synthetic hidden truth is given, confusion matrices against it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.indicators import DIMENSIONS
from features.logs import progress_bar
from models.tier.baseline import HandWeightedBaseline
from models.tier.cuts import N_TIERS
from models.tier.explain import CONTRIBUTION_COLUMNS
from models.tier.model import TierModel, assign_tiers
from models.tier.table import tier_schema, tier_table
from training.tier.metrics import confusion

log = logging.getLogger(__name__)


@dataclass
class Tallies:
    """What evaluation keeps from a pass over every product."""

    products: int = 0
    tier_counts: np.ndarray = field(default_factory=lambda: np.zeros(N_TIERS, dtype=np.int64))
    contribution_sums: np.ndarray = field(
        default_factory=lambda: np.zeros((N_TIERS, len(DIMENSIONS)))
    )
    # confusion matrices against the hidden truth: {"": model, "baseline_": ..., "cold_": ...}
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    def add_truth(self, key: str, true_tier: np.ndarray, tier: np.ndarray) -> None:
        known = true_tier >= 0
        counts = confusion(true_tier[known], tier[known])
        self.truth[key] = self.truth.get(key, 0) + counts

    def mean_contributions(self) -> np.ndarray:
        """(6, 5): mean contribution of each dimension among the products of each tier."""
        return self.contribution_sums / np.maximum(self.tier_counts, 1)[:, None]


def score_products(
    model: TierModel,
    baseline: HandWeightedBaseline,
    chunks: Iterable[pd.DataFrame],
    path: Path,
    truth: pd.Series | None = None,
    total: int | None = None,
) -> Tallies:
    """Write `path` (tiers.parquet) from indicator chunks; tally against `truth`
    (true tier by product_id) when given."""
    tallies = Tallies()
    schema = tier_schema()
    start = time.perf_counter()
    with pq.ParquetWriter(path, schema) as writer:
        bar = progress_bar(
            chunks, total is not None, desc="score products", unit="chunk", total=total
        )
        for chunk in bar:
            table = tier_table(model, chunk)
            writer.write_table(pa.Table.from_pandas(table, schema=schema, preserve_index=False))
            tier = table["tier"].to_numpy()
            tallies.products += len(table)
            tallies.tier_counts += np.bincount(tier, minlength=N_TIERS)
            contributions = table[list(CONTRIBUTION_COLUMNS)].to_numpy(dtype=np.float64)
            for j in range(contributions.shape[1]):
                tallies.contribution_sums[:, j] += np.bincount(
                    tier, weights=contributions[:, j], minlength=N_TIERS
                )
            if truth is not None:
                true_tier = truth.reindex(table["product_id"].to_numpy()).to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
                true_tier = np.nan_to_num(true_tier, nan=-1).astype(np.int64)
                flagged = chunk["flagged_low_quality"].to_numpy()
                base, _ = assign_tiers(baseline.predict_tier(chunk), flagged)
                cold = ~table["has_sales_history"].to_numpy()
                tallies.add_truth("", true_tier, tier)
                tallies.add_truth("baseline_", true_tier, base)
                tallies.add_truth("cold_", true_tier[cold], tier[cold])
                tallies.add_truth("baseline_cold_", true_tier[cold], base[cold])
    tallies.seconds = time.perf_counter() - start
    log.info("scored %d products in %.1fs", tallies.products, tallies.seconds)
    return tallies


def read_sample(path: Path, rows: int) -> pd.DataFrame:
    """The first `rows` rows of a tiers.parquet, reading only its first row group."""
    file = pq.ParquetFile(path)
    if not file.num_row_groups:
        return file.schema_arrow.empty_table().to_pandas()
    return file.read_row_group(0).slice(0, rows).to_pandas()
