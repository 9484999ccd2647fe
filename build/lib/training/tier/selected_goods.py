"""`haowu selected-goods`: the campaign pool (e.g. a Double-12 subsidy) drawn from L5.

Every L5 product of a tier run is Selected Goods (精选好物); the pool keeps those with a
commission at or above a floor and, optionally, at most a quota per category (the best
scores first), and says for each why it is in: its score against the L5 cut and the
dimensions that carried it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.errors import ContractError, HaowuError
from features.io import atomic_output_dir, read_table, table_columns, write_json, write_table
from features.settings import SelectedGoodsParams
from models.artifacts import SUMMARY, open_tier_run
from models.tier.cuts import TOP_TIER
from models.tier.explain import CONTRIBUTION_COLUMNS
from models.tier.model import META_FILE

POOL = "selected_goods"


def read_selected(tier_ref: Path | str) -> tuple[pd.DataFrame, float]:
    """The L5 rows of a tier run's tiers.parquet (a folder or models:/haowu-tier@ALIAS)
    and the L5 cut of the run's model."""
    tier_run = open_tier_run(tier_ref)
    path, meta = tier_run.tiers, tier_run.model / META_FILE
    if not meta.is_file():
        raise HaowuError(f"{tier_run} is not a tier run folder (needs tiers.parquet and model/)")
    tiers = pq.read_table(path, filters=[("tier", "=", TOP_TIER)]).to_pandas()
    cut = float(json.loads(meta.read_text())["cuts"][-1])
    return tiers, cut


def _reasons(pool: pd.DataFrame, cut: float, category: str) -> pd.Series:
    dims = pool[list(CONTRIBUTION_COLUMNS)].to_numpy()
    names = np.asarray([c.removeprefix("contrib_") for c in CONTRIBUTION_COLUMNS])
    strongest, weakest = dims.argmax(axis=1), dims.argmin(axis=1)
    rows = np.arange(len(pool))
    text = [
        f"L5 Selected Goods: score {s:.2f} >= L5 cut {cut:.2f}; strongest {names[hi]} "
        f"{dims[r, hi]:+.2f}, weakest {names[lo]} {dims[r, lo]:+.2f}; "
        f"rank {k} in {category} {c}; commission {m:.0%}"
        for r, s, hi, lo, k, c, m in zip(
            rows,
            pool["score"],
            strongest,
            weakest,
            pool["rank_in_category"],
            pool[category],
            pool["commission_rate"],
            strict=True,
        )
    ]
    return pd.Series(text, index=pool.index, dtype="string")


def build_pool(
    selected: pd.DataFrame, products: pd.DataFrame, cut: float, cfg: SelectedGoodsParams
) -> pd.DataFrame:
    """L5 goods -> the campaign pool: commission floor, per-category quota, reasons."""
    category = cfg.category_column
    pool = selected.merge(products, on="product_id", how="left", validate="one_to_one")
    pool = pool[pool["commission_rate"].fillna(0.0) >= cfg.min_commission]
    pool = pool.sort_values(["score", "product_id"], ascending=[False, True], kind="stable")
    pool["rank_in_category"] = pool.groupby(category, dropna=False).cumcount() + 1
    if cfg.quota_per_category:
        pool = pool[pool["rank_in_category"] <= cfg.quota_per_category]
    pool = pool.reset_index(drop=True)
    pool["reason"] = _reasons(pool, cut, category)
    keep = [
        "product_id",
        category,
        "rank_in_category",
        "score",
        "commission_rate",
        *CONTRIBUTION_COLUMNS,
        "top_for",
        "reason",
    ]
    return pool[keep]


def run(
    cfg: SelectedGoodsParams, tier_run: Path, data_dir: Path, out: Path, overwrite: bool = False
) -> dict[str, float]:
    """Write OUT/selected_goods.parquet and OUT/summary.json; returns the counts."""
    category = cfg.category_column
    columns = table_columns(data_dir, "products")
    for needed in (category, "commission_rate"):
        if needed not in columns:
            raise ContractError(
                "products", f"column {needed!r} is needed for the pool", column=needed
            )
    selected, cut = read_selected(tier_run)
    products = read_table(data_dir, "products", columns=["product_id", category, "commission_rate"])
    products = products[products["product_id"].isin(selected["product_id"])]
    pool = build_pool(selected, products, cut, cfg)
    summary = {
        "selected_goods": float(len(selected)),
        "pool": float(len(pool)),
        "categories": float(pool[category].nunique()),
        "l5_cut": cut,
        "min_commission": cfg.min_commission,
        "quota_per_category": float(cfg.quota_per_category),
    }
    with atomic_output_dir(out, overwrite) as stage:
        write_table(pool, stage, POOL)
        per_category = pool[category].value_counts().sort_index()
        write_json(
            summary | {"per_category": {str(k): int(v) for k, v in per_category.items()}},
            stage / SUMMARY,
        )
    return summary
