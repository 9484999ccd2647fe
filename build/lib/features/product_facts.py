"""One join for what is known of each product: products ⋈ merchants on merchant_id.

The matching job (side features), the batch job's catalog (policy facts) and the broker
job (expected value, exclusions) all need a product's own columns beside its merchant's
(the flagged-merchant rule above all), so they share this join: one row per product_id
(the first row of a duplicated key), unknown merchants left as missing values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from features.io import has_table, read_table, table_columns

MERCHANT_FLAG = "flagged_low_quality"


def _present(data_dir: Path, table: str, wanted: Sequence[str] | None) -> list[str] | None:
    """The wanted columns the table has (None: all of them)."""
    columns = table_columns(data_dir, table)
    return list(columns) if wanted is None else [c for c in wanted if c in columns]


def product_facts(
    data_dir: Path,
    product_columns: Sequence[str] | None = None,
    merchant_columns: Sequence[str] | None = (MERCHANT_FLAG,),
) -> pd.DataFrame | None:
    """`product_id`, `merchant_id` and the products' columns (None: all), joined with
    their merchants' columns (None: all); one row per product. None when DATA has no
    products table with a product_id column."""
    data_dir = Path(data_dir)
    if not has_table(data_dir, "products"):
        return None
    own = _present(data_dir, "products", product_columns)
    if "product_id" not in own and "product_id" not in table_columns(data_dir, "products"):
        return None
    keys = [c for c in ("product_id", "merchant_id") if c in table_columns(data_dir, "products")]
    columns = list(dict.fromkeys([*keys, *own]))
    frame = read_table(data_dir, "products", columns=columns).drop_duplicates("product_id")
    if "merchant_id" not in frame.columns or not has_table(data_dir, "merchants"):
        return frame.reset_index(drop=True)
    if "merchant_id" not in table_columns(data_dir, "merchants"):
        return frame.reset_index(drop=True)
    theirs = [
        c for c in _present(data_dir, "merchants", merchant_columns) if c not in frame.columns
    ]
    if theirs:
        merchants = read_table(data_dir, "merchants", columns=["merchant_id", *theirs])
        frame = frame.merge(merchants.drop_duplicates("merchant_id"), on="merchant_id", how="left")
    return frame.reset_index(drop=True)
