"""The 11 indicators of DESIGN §2, oriented so that higher is better, and the five
dimension sub-scores built from them.

`indicator_frame` is a function over one chunk of the products table plus lookups of
merchants and product_stats keyed by their IDs, so scoring 10M products streams the
products table while the (smaller or keyed) lookups stay in memory. Missing values stay
missing: a new product has no sales history (NaN), not zero sales, and every consumer
(the tier model, the dimension sub-scores) handles NaN explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import DIMENSIONS, HISTORY, INDICATORS
from features.errors import ContractError
from features.io import has_table, iter_table, read_table, table_columns

DIMENSION_OF: dict[str, str] = {ind: dim for dim, inds in DIMENSIONS.items() for ind in inds}
# +1: higher raw value is better; -1: lower is better. Oriented value = raw * direction.
DIRECTION: dict[str, int] = {name: 1 for name in INDICATORS} | {
    "price_index": -1,
    "price_vs_platform_low": -1,
    "refund_rate": -1,
}
# Which contract table carries each indicator (for error messages and loading).
SOURCE_TABLE: dict[str, str] = {name: "product_stats" for name in INDICATORS} | {
    "brand_awareness": "merchants",
    "is_official_brand": "merchants",
    "commission_rate": "products",
}
MERCHANT_COLUMNS = ("brand_awareness", "is_official_brand", "flagged_low_quality")
STATS_COLUMNS = tuple(name for name in INDICATORS if SOURCE_TABLE[name] == "product_stats")
PRODUCT_COLUMNS = ("product_id", "merchant_id", "commission_rate")


@dataclass(frozen=True)
class Lookups:
    """Merchants and product_stats keyed by their IDs (either may be absent)."""

    merchants: pd.DataFrame | None  # index merchant_id
    stats: pd.DataFrame | None  # index product_id


def _present(root: Path, table: str, wanted: tuple[str, ...]) -> list[str]:
    return [c for c in wanted if c in table_columns(root, table)] if has_table(root, table) else []


def load_lookups(data_dir: Path) -> Lookups:
    """Read the keyed side tables once; their absent columns become missing indicators."""
    merchants = stats = None
    cols = _present(data_dir, "merchants", MERCHANT_COLUMNS)
    if cols and "merchant_id" in table_columns(data_dir, "merchants"):
        merchants = read_table(data_dir, "merchants", ["merchant_id", *cols])
        merchants = merchants.drop_duplicates("merchant_id").set_index("merchant_id")
    cols = _present(data_dir, "product_stats", STATS_COLUMNS)
    if cols and "product_id" in table_columns(data_dir, "product_stats"):
        stats = read_table(data_dir, "product_stats", ["product_id", *cols])
        stats = stats.drop_duplicates("product_id").set_index("product_id")
    return Lookups(merchants, stats)


def _column(frame: pd.DataFrame | None, name: str, n: int, keys: pd.Series | None) -> np.ndarray:
    """`frame[name]` aligned to `keys` (NaN where the key or the column is absent)."""
    if frame is None or name not in frame.columns or keys is None:
        return np.full(n, np.nan)
    values = frame[name].reindex(keys.to_numpy())
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def indicator_frame(products: pd.DataFrame, lookups: Lookups) -> pd.DataFrame:
    """One row per product of the chunk: `product_id`, the 11 oriented indicators (contract
    names, NaN kept), `flagged_low_quality` (bool) and `has_sales_history` (bool)."""
    n = len(products)
    merchant_keys = products["merchant_id"] if "merchant_id" in products.columns else None
    if merchant_keys is not None and merchant_keys.isna().any():
        merchant_keys = merchant_keys.astype("Int64")
    product_keys = products["product_id"]
    raw: dict[str, np.ndarray] = {}
    for name in INDICATORS:
        table = SOURCE_TABLE[name]
        if table == "merchants":
            raw[name] = _column(lookups.merchants, name, n, merchant_keys)
        elif table == "product_stats":
            raw[name] = _column(lookups.stats, name, n, product_keys)
        elif name in products.columns:
            raw[name] = products[name].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            raw[name] = np.full(n, np.nan)
    out = pd.DataFrame(
        {"product_id": product_keys.to_numpy(dtype=np.int64)}
        | {name: raw[name] * DIRECTION[name] for name in INDICATORS}
    )
    flagged = _column(lookups.merchants, "flagged_low_quality", n, merchant_keys)
    out["flagged_low_quality"] = np.nan_to_num(flagged, nan=0.0) > 0
    out["has_sales_history"] = ~np.isnan(out[list(HISTORY)].to_numpy()).all(axis=1)
    return out


def iter_indicator_chunks(
    data_dir: Path, chunk_rows: int, lookups: Lookups | None = None
) -> Iterator[pd.DataFrame]:
    """Indicators of every product, streamed in chunks of the products table."""
    lookups = lookups or load_lookups(data_dir)
    columns = ["product_id", *_present(data_dir, "products", PRODUCT_COLUMNS[1:])]
    for chunk in iter_table(data_dir, "products", columns=columns, batch_rows=chunk_rows):
        yield indicator_frame(chunk, lookups)


def indicators_for(data_dir: Path, product_ids: np.ndarray, lookups: Lookups) -> pd.DataFrame:
    """Indicators of a few products (e.g. the labelled ones), in the order of `product_ids`."""
    columns = ["product_id", *_present(data_dir, "products", PRODUCT_COLUMNS[1:])]
    products = read_table(data_dir, "products", columns=columns)
    products = products[products["product_id"].isin(product_ids)].drop_duplicates("product_id")
    frame = indicator_frame(products, lookups).set_index("product_id")
    unknown = ~pd.Index(product_ids).isin(frame.index)
    if unknown.any():
        raise ContractError(
            "tier_labels",
            "labelled product(s) not in table 'products'",
            column="product_id",
            rows=[{"product_id": int(p)} for p in np.asarray(product_ids)[unknown][:5]],
            total=int(unknown.sum()),
        )
    return frame.loc[product_ids].reset_index()


class DimensionScaler:
    """Five dimension sub-scores in [0, 1]: each indicator mapped to its mid-rank percentile
    in a reference sample, then averaged over the dimension's indicators that are present.
    A dimension with all its indicators missing stays NaN (not 0)."""

    def __init__(self, grids: dict[str, np.ndarray]) -> None:
        self.grids = grids  # indicator -> sorted reference quantiles

    @classmethod
    def fit(cls, indicators: pd.DataFrame, grid_points: int) -> DimensionScaler:
        levels = np.linspace(0.0, 1.0, grid_points)
        grids = {}
        for name in INDICATORS:
            values = indicators[name].to_numpy(dtype=np.float64)
            values = values[~np.isnan(values)]
            grids[name] = np.quantile(values, levels) if len(values) else np.zeros(1)
        return cls(grids)

    def percentile(self, name: str, values: np.ndarray) -> np.ndarray:
        """Mid-rank percentile: ties (e.g. a 0/1 flag) land in the middle of their mass."""
        grid = self.grids[name]
        below = np.searchsorted(grid, values, side="left")
        upto = np.searchsorted(grid, values, side="right")
        pct = (below + upto) / (2.0 * len(grid))
        return np.where(np.isnan(values), np.nan, pct)

    def transform(self, indicators: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for dim, names in DIMENSIONS.items():
            stacked = np.column_stack(
                [self.percentile(n, indicators[n].to_numpy(dtype=np.float64)) for n in names]
            )  # (rows, indicators of dim)
            present = ~np.isnan(stacked)
            total = np.where(present, stacked, 0.0).sum(axis=1)
            count = present.sum(axis=1)
            out[dim] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return pd.DataFrame(out, index=indicators.index)

    def to_dict(self) -> dict[str, list[float]]:
        return {name: grid.tolist() for name, grid in self.grids.items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> DimensionScaler:
        return cls({name: np.asarray(grid, dtype=np.float64) for name, grid in data.items()})
