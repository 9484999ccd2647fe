"""What the batch job's lists look like: coverage, category mix, Selected Goods share.

Free functions over a lists folder (`OUT/part-*.parquet`, DESIGN §6) and the data folder
they were made from; the pipeline summary, the report and `notebooks/03_lists` use them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.io import read_table

SELECTED_GOODS_TIER = 5
RANK_BUCKETS = (1, 5, 10, 20, 50, 100, 200)


def read_lists(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Every row of a lists folder (only `columns` when given)."""
    parts = sorted(Path(folder).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{folder} holds no part-*.parquet lists")
    return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)


def catalog(data_dir: Path, tiers_path: Path | None = None) -> pd.DataFrame:
    """product_id, category_l1, category_l3 and (when a tier run is given) tier."""
    products = read_table(
        data_dir, "products", columns=["product_id", "category_l1", "category_l3"]
    )
    if tiers_path is not None and Path(tiers_path).is_file():
        tiers = pd.read_parquet(tiers_path, columns=["product_id", "tier"])
        products = products.merge(tiers, on="product_id", how="left")
    return products


def creator_list_stats(lists: pd.DataFrame, products: pd.DataFrame) -> dict[str, float]:
    """Counts, catalog and leaf-category coverage, categories per list, Selected Goods share
    of list slots against their share of the catalog."""
    leaf = products.set_index("product_id")["category_l3"]
    list_leaf = leaf.reindex(lists["product_id"].to_numpy()).to_numpy()
    per_list = categories_per_list(lists, products)
    stats = {
        "rows": float(len(lists)),
        "creators": float(lists["creator_id"].nunique()),
        "k": float(lists["rank"].max()) if len(lists) else 0.0,
        "distinct_goods": float(lists["product_id"].nunique()),
        "catalog_coverage": lists["product_id"].nunique() / max(len(products), 1),
        "category_coverage": pd.Series(list_leaf).nunique()
        / max(products["category_l3"].nunique(), 1),
        "categories_per_list": float(per_list.mean()) if len(per_list) else 0.0,
    }
    if "tier" in lists.columns and "tier" in products.columns:
        stats["selected_goods_share"] = float((lists["tier"] == SELECTED_GOODS_TIER).mean())
        stats["catalog_selected_goods_share"] = float(
            (products["tier"] == SELECTED_GOODS_TIER).mean()
        )
    return stats


def product_list_stats(lists: pd.DataFrame, n_creators: int | None = None) -> dict[str, float]:
    """Counts and creator coverage of the product direction's lists (top creators per good)."""
    stats = {
        "rows": float(len(lists)),
        "products": float(lists["product_id"].nunique()),
        "k": float(lists["rank"].max()) if len(lists) else 0.0,
        "distinct_creators": float(lists["creator_id"].nunique()),
    }
    if n_creators:
        stats["creator_coverage"] = lists["creator_id"].nunique() / n_creators
    return stats


def category_mix(lists: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Share of list slots and of the catalog per top-level category (category_l1)."""
    in_lists = lists["category_l1"].value_counts(normalize=True)
    in_catalog = products["category_l1"].value_counts(normalize=True)
    mix = pd.DataFrame({"lists": in_lists, "catalog": in_catalog}).fillna(0.0)
    mix.index.name = "category_l1"
    return mix.sort_index()


def tier_mix(lists: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Share of list slots and of the catalog per tier (L0..L5)."""
    tiers = range(SELECTED_GOODS_TIER + 1)
    in_lists = lists["tier"].value_counts(normalize=True).reindex(tiers, fill_value=0.0)
    in_catalog = products["tier"].value_counts(normalize=True).reindex(tiers, fill_value=0.0)
    mix = pd.DataFrame({"lists": in_lists, "catalog": in_catalog})
    mix.index = [f"L{t}" for t in tiers]
    mix.index.name = "tier"
    return mix


def selected_goods_by_rank(lists: pd.DataFrame) -> pd.Series:
    """Selected Goods share of the slots up to each rank cut-off (top 1, top 5, ...)."""
    k = int(lists["rank"].max())
    cuts = [c for c in RANK_BUCKETS if c < k] + [k]
    rank = lists["rank"].to_numpy()
    l5 = (lists["tier"] == SELECTED_GOODS_TIER).to_numpy()
    shares = {f"top {c}": float(l5[rank <= c].mean()) for c in cuts}
    return pd.Series(shares, name="selected_goods_share")


def categories_per_list(lists: pd.DataFrame, products: pd.DataFrame) -> pd.Series:
    """Distinct leaf categories in each creator's list."""
    leaf = products.set_index("product_id")["category_l3"]
    frame = pd.DataFrame(
        {
            "creator_id": lists["creator_id"].to_numpy(),
            "leaf": leaf.reindex(lists["product_id"].to_numpy()).to_numpy(np.float64),
        }
    )
    return frame.groupby("creator_id")["leaf"].nunique().rename("categories_per_list")
