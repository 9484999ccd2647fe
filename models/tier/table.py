"""Rows of `tiers.parquet`: one product's tier, score, dimension contributions and reason.

Shared by train-tier (training/tier/scoring.py scores every product) and `haowu refresh`
(serving/refresh/tiering.py scores only new and changed products with the saved model),
so both write the same columns and types.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from models.tier.explain import CONTRIBUTION_COLUMNS
from models.tier.model import FEATURES, TierModel, assign_tiers

TIER_COLUMNS = (
    "product_id",
    "tier",
    "score",
    *CONTRIBUTION_COLUMNS,
    "top_for",
    "top_against",
    "reason",
    "has_sales_history",
)


def _names(codes: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=list(FEATURES))


def tier_table(model: TierModel, indicators: pd.DataFrame) -> pd.DataFrame:
    """One row per product: tier (rules applied), score, the five dimension contributions
    (score = base + their sum), the top indicator for and against, the reason."""
    explanation = model.explain(indicators)
    tier, reason = assign_tiers(explanation.tier, indicators["flagged_low_quality"].to_numpy())
    table = {
        "product_id": indicators["product_id"].to_numpy(dtype=np.int64),
        "tier": tier,
        "score": explanation.score,
    }
    for j, column in enumerate(CONTRIBUTION_COLUMNS):
        table[column] = explanation.dimensions[:, j].astype(np.float32)
    table["top_for"] = _names(explanation.top_for)
    table["top_against"] = _names(explanation.top_against)
    table["reason"] = pd.Categorical(reason)
    table["has_sales_history"] = indicators["has_sales_history"].to_numpy(dtype=bool)
    return pd.DataFrame(table)


def tier_schema() -> pa.Schema:
    dictionary = pa.dictionary(pa.int8(), pa.string())
    fields = [
        pa.field("product_id", pa.int64()),
        pa.field("tier", pa.int64()),
        pa.field("score", pa.float64()),
        *[pa.field(c, pa.float32()) for c in CONTRIBUTION_COLUMNS],
        pa.field("top_for", dictionary),
        pa.field("top_against", dictionary),
        pa.field("reason", dictionary),
        pa.field("has_sales_history", pa.bool_()),
    ]
    return pa.schema(fields)
