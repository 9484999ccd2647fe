"""The labelled products the tier model learns from: loaded, checked and split.

Every check raises a `ContractError` naming the table, the column and the cause before
anything is written: no labels, tiers outside 0..5, a tier with (almost) no labelled
products, an indicator missing for every labelled product.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.contract import INDICATORS
from features.errors import ContractError
from features.indicators import SOURCE_TABLE, Lookups, indicators_for
from features.io import has_table, read_table, table_columns, table_path
from features.settings import TierConfig
from models.tier.cuts import N_TIERS

log = logging.getLogger(__name__)

LABELS = "tier_labels"


@dataclass(frozen=True)
class LabelledSplit:
    """Indicators of the labelled products (with `tier`), split three ways."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, float]:
        return {
            "labelled_train": float(len(self.train)),
            "labelled_valid": float(len(self.valid)),
            "labelled_test": float(len(self.test)),
        }


def read_labels(data_dir: Path, min_per_tier: int) -> pd.DataFrame:
    """`tier_labels` as (product_id, tier int64), checked."""
    path = table_path(data_dir, LABELS)
    where = str(path or Path(data_dir) / f"{LABELS}.parquet")
    if not has_table(data_dir, LABELS):
        raise ContractError(
            LABELS, "no labelled products: the tier model learns from them", path=where
        )
    missing = [c for c in ("product_id", "tier") if c not in table_columns(data_dir, LABELS)]
    if missing:
        raise ContractError(LABELS, f"missing column(s) {missing}", column=missing[0], path=where)
    labels = read_table(data_dir, LABELS, columns=["product_id", "tier"])
    if labels.empty:
        raise ContractError(LABELS, "no labelled products: the table is empty", path=where)
    tier = pd.to_numeric(labels["tier"], errors="coerce")
    bad = tier.isna() | (tier != tier.round()) | (tier < 0) | (tier > N_TIERS - 1)
    if bad.any():
        raise ContractError(
            LABELS,
            f"tier outside 0..{N_TIERS - 1}",
            column="tier",
            rows=labels[bad.to_numpy()].head().to_dict("records"),
            path=where,
            total=int(bad.sum()),
        )
    labels = labels.assign(tier=tier.astype(np.int64))
    duplicated = labels["product_id"].duplicated(keep=False)
    if duplicated.any():
        raise ContractError(
            LABELS,
            "a product is labelled more than once",
            column="product_id",
            rows=labels[duplicated.to_numpy()].head().to_dict("records"),
            path=where,
            total=int(duplicated.sum()),
        )
    counts = np.bincount(labels["tier"].to_numpy(), minlength=N_TIERS)
    short = [f"L{t} ({int(counts[t])})" for t in range(N_TIERS) if counts[t] < min_per_tier]
    if short:
        raise ContractError(
            LABELS,
            f"every tier needs at least {min_per_tier} labelled products to train and evaluate; "
            f"too few in {', '.join(short)}",
            column="tier",
            path=where,
        )
    return labels


def check_indicators(labelled: pd.DataFrame) -> None:
    """An indicator no labelled product has cannot be learnt: name it and its table."""
    for name in INDICATORS:
        if labelled[name].isna().all():
            raise ContractError(
                SOURCE_TABLE[name],
                f"indicator {name!r} is missing for every labelled product "
                "(absent column or all values empty)",
                column=name,
            )


def load_labelled(data_dir: Path, lookups: Lookups, cfg: TierConfig) -> pd.DataFrame:
    """Indicators of every labelled product plus its `tier`, checked."""
    labels = read_labels(data_dir, cfg.min_labels_per_tier)
    labelled = indicators_for(data_dir, labels["product_id"].to_numpy(), lookups)
    labelled["tier"] = labels["tier"].to_numpy()
    check_indicators(labelled)
    return labelled


def split_labelled(labelled: pd.DataFrame, cfg: TierConfig) -> LabelledSplit:
    """Stratified by tier: test first, then validation out of the rest."""
    rest, test = train_test_split(
        labelled, test_size=cfg.test_fraction, stratify=labelled["tier"], random_state=cfg.seed
    )
    valid_share = cfg.valid_fraction / (1.0 - cfg.test_fraction)
    train, valid = train_test_split(
        rest, test_size=valid_share, stratify=rest["tier"], random_state=cfg.seed
    )
    log.info("labelled products: %d train, %d valid, %d test", len(train), len(valid), len(test))
    return LabelledSplit(
        train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True)
    )
