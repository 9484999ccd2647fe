"""The data contract (DESIGN §3): one `TableSpec` per table, with its pandera schema.

Key columns are required; every other column is optional (imported data rarely has
them all) but, when present, must have the contract's type, range and nullability.
Extra columns pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pandera.pandas as pa

INT = "int64"
FLOAT = "float64"
BOOL = "bool"
TIME = "datetime64[ns]"
NULLABLE_INT = "Int64"
STR = "str"


def _rate(nullable: bool = False) -> pa.Column:
    return pa.Column(FLOAT, pa.Check.in_range(0.0, 1.0), nullable=nullable, required=False)


def _nonneg(dtype: str, nullable: bool = False) -> pa.Column:
    return pa.Column(dtype, pa.Check.ge(0), nullable=nullable, required=False)


def _id(required: bool = True, nullable: bool = False) -> pa.Column:
    return pa.Column(INT, nullable=nullable, required=required)


@dataclass(frozen=True)
class TableSpec:
    """One contract table: its key, its schema and the tables its columns refer to."""

    name: str
    key: tuple[str, ...]
    columns: dict[str, pa.Column]
    references: dict[str, tuple[str, str]] = field(default_factory=dict)
    unique_key: bool = True

    @property
    def schema(self) -> pa.DataFrameSchema:
        return pa.DataFrameSchema(self.columns, name=self.name, strict=False, coerce=False)

    @property
    def dtypes(self) -> dict[str, str]:
        return {name: str(col.dtype) for name, col in self.columns.items()}

    @property
    def required(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.required]


CREATORS = TableSpec(
    "creators",
    key=("creator_id",),
    columns={
        "creator_id": _id(),
        "followers": _nonneg(INT),
        "category_pref": _id(required=False),
        "price_band": pa.Column(INT, pa.Check.in_range(0, 4), required=False),
        "fans_female_share": _rate(),
        "region": _nonneg(INT),
        "account_age_days": _nonneg(INT),
        "broker_id": pa.Column(NULLABLE_INT, nullable=True, required=False),
    },
    references={"broker_id": ("brokers", "broker_id")},
)

MERCHANTS = TableSpec(
    "merchants",
    key=("merchant_id",),
    columns={
        "merchant_id": _id(),
        "is_official_brand": pa.Column(BOOL, required=False),
        "brand_awareness": _nonneg(FLOAT),
        "store_rating": pa.Column(FLOAT, pa.Check.in_range(0.0, 5.0), required=False),
        "account_age_days": _nonneg(INT),
        "flagged_low_quality": pa.Column(BOOL, required=False),
    },
)

PRODUCTS = TableSpec(
    "products",
    key=("product_id",),
    columns={
        "product_id": _id(),
        "merchant_id": _id(required=False),
        "category_l1": _nonneg(INT),
        "category_l2": _nonneg(INT),
        "category_l3": _nonneg(INT),
        "price": pa.Column(FLOAT, pa.Check.gt(0), required=False),
        "commission_rate": pa.Column(FLOAT, pa.Check.in_range(0.0, 0.9), required=False),
        "listed_at": pa.Column(TIME, required=False),
    },
    references={"merchant_id": ("merchants", "merchant_id")},
)

PRODUCT_STATS = TableSpec(
    "product_stats",
    key=("product_id",),
    columns={
        "product_id": _id(),
        "price_index": _nonneg(FLOAT, nullable=True),
        "price_vs_platform_low": pa.Column(FLOAT, pa.Check.ge(1.0), nullable=True, required=False),
        "active_promoters_30d": _nonneg(FLOAT, nullable=True),
        "positive_review_rate": _rate(nullable=True),
        "refund_rate": _rate(nullable=True),
        "ship_48h_rate": _rate(nullable=True),
        "gmv_30d": _nonneg(FLOAT, nullable=True),
        "conversion_rate": _rate(nullable=True),
    },
    references={"product_id": ("products", "product_id")},
)

TIER_LABELS = TableSpec(
    "tier_labels",
    key=("product_id",),
    columns={
        "product_id": _id(),
        "tier": pa.Column(INT, pa.Check.in_range(0, 5)),
        "labelled_at": pa.Column(TIME, required=False),
    },
    references={"product_id": ("products", "product_id")},
)

INTERACTIONS = TableSpec(
    "interactions",
    key=("creator_id", "product_id", "ts"),
    columns={
        "creator_id": _id(),
        "product_id": _id(),
        "ts": pa.Column(TIME),
        "orders": _nonneg(INT),
        "gmv": _nonneg(FLOAT),
    },
    references={
        "creator_id": ("creators", "creator_id"),
        "product_id": ("products", "product_id"),
    },
)

BROKERS = TableSpec(
    "brokers",
    key=("broker_id",),
    columns={"broker_id": _id(), "name": pa.Column(STR, required=False)},
)

BROKER_PRODUCTS = TableSpec(
    "broker_products",
    key=("broker_id", "product_id"),
    columns={"broker_id": _id(), "product_id": _id()},
    references={
        "broker_id": ("brokers", "broker_id"),
        "product_id": ("products", "product_id"),
    },
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        CREATORS,
        MERCHANTS,
        PRODUCTS,
        PRODUCT_STATS,
        TIER_LABELS,
        INTERACTIONS,
        BROKERS,
        BROKER_PRODUCTS,
    )
}

# Tables referred to by others are checked first so their keys are known.
VALIDATION_ORDER = (
    "brokers",
    "merchants",
    "creators",
    "products",
    "product_stats",
    "tier_labels",
    "broker_products",
    "interactions",
)

INDICATORS = (
    "brand_awareness",
    "is_official_brand",
    "price_index",
    "price_vs_platform_low",
    "commission_rate",
    "active_promoters_30d",
    "positive_review_rate",
    "refund_rate",
    "ship_48h_rate",
    "gmv_30d",
    "conversion_rate",
)
# The five dimensions of DESIGN §2: dimension -> its indicators, in contract order.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "brand": ("brand_awareness", "is_official_brand"),
    "price": ("price_index", "price_vs_platform_low"),
    "distribution": ("commission_rate", "active_promoters_30d"),
    "service": ("positive_review_rate", "refund_rate", "ship_48h_rate"),
    "sales": ("gmv_30d", "conversion_rate"),
}
# Indicators that need sales: all missing means the product has no sales history yet.
HISTORY: tuple[str, ...] = (
    "active_promoters_30d",
    "positive_review_rate",
    "refund_rate",
    "ship_48h_rate",
    "gmv_30d",
    "conversion_rate",
)


def normalise_dtypes(df: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Widen numeric columns to the contract's width (int32 -> int64, float32 -> float64,
    ints into float columns) and datetimes to ns, so that only genuine type errors
    (strings in a numeric column, floats in an ID column) reach the schema."""
    out = {}
    for name, want in spec.dtypes.items():
        if name not in df.columns:
            continue
        col = df[name]
        kind = col.dtype.kind
        if want == INT and kind in "iu" and col.dtype != "int64":
            out[name] = col.astype("int64")
        elif want == INT and str(col.dtype).startswith("Int") and not col.isna().any():
            out[name] = col.astype("int64")
        elif want == FLOAT and kind in "iuf" and col.dtype != "float64":
            out[name] = col.astype("float64")
        elif want == TIME and kind == "M" and col.dtype != TIME:
            out[name] = col.dt.tz_localize(None) if col.dt.tz else col.astype(TIME)
        elif want == NULLABLE_INT and (kind in "iu" or (kind == "f" and _integral(col))):
            out[name] = col.astype(NULLABLE_INT)
        elif want == BOOL and str(col.dtype) == "boolean" and not col.isna().any():
            out[name] = col.astype("bool")
    return df.assign(**out) if out else df


def _integral(col: pd.Series) -> bool:
    values = col.dropna().to_numpy()
    return bool((values == values.round()).all())
