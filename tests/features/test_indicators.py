"""The 11 oriented indicators and the five dimension sub-scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import INDICATORS
from features.indicators import (
    DIMENSIONS,
    DIRECTION,
    HISTORY,
    DimensionScaler,
    Lookups,
    indicator_frame,
    iter_indicator_chunks,
    load_lookups,
)
from features.io import count_rows, read_table

BASE = 5_000_000_000  # generated IDs are not dense: never positions


def _tables() -> tuple[pd.DataFrame, Lookups]:
    products = pd.DataFrame(
        {
            "product_id": [BASE + 30, BASE + 10, BASE + 20],
            "merchant_id": [700, 900, 800],  # 800 is unknown
            "commission_rate": [0.2, 0.1, 0.3],
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": [900, 700],
            "brand_awareness": [50.0, 400.0],
            "is_official_brand": [False, True],
            "flagged_low_quality": [True, False],
        }
    ).set_index("merchant_id")
    stats = pd.DataFrame(  # in another order than products; BASE + 20 has no row: a new product
        {
            "product_id": [BASE + 10, BASE + 30],
            "price_index": [0.8, 1.5],
            "price_vs_platform_low": [1.0, 1.2],
            "active_promoters_30d": [3.0, 0.0],
            "positive_review_rate": [0.9, 0.7],
            "refund_rate": [0.05, 0.2],
            "ship_48h_rate": [0.95, 0.5],
            "gmv_30d": [1234.0, 0.0],
            "conversion_rate": [0.03, 0.01],
        }
    ).set_index("product_id")
    return products, Lookups(merchants, stats)


def test_indicators_are_oriented_and_joined_by_key() -> None:
    products, lookups = _tables()
    frame = indicator_frame(products, lookups).set_index("product_id")
    assert list(frame.columns[: len(INDICATORS)]) == list(INDICATORS)
    row = frame.loc[BASE + 10]  # merchant 900, stats row 1
    assert row["brand_awareness"] == 50.0 and row["is_official_brand"] == 0.0
    assert row["price_index"] == -0.8 and row["price_vs_platform_low"] == -1.0
    assert row["refund_rate"] == -0.05 and row["gmv_30d"] == 1234.0
    assert row["commission_rate"] == 0.1
    assert frame.loc[BASE + 30, "is_official_brand"] == 1.0
    assert frame.loc[BASE + 30, "brand_awareness"] == 400.0
    assert {name for name, sign in DIRECTION.items() if sign < 0} == {
        "price_index",
        "price_vs_platform_low",
        "refund_rate",
    }


def test_missing_stays_missing_not_zero() -> None:
    products, lookups = _tables()
    frame = indicator_frame(products, lookups).set_index("product_id")
    new = frame.loc[BASE + 20]  # no stats row, unknown merchant
    assert new[list(HISTORY)].isna().all()
    assert np.isnan(new["brand_awareness"]) and np.isnan(new["price_index"])
    assert not new["has_sales_history"] and not new["flagged_low_quality"]
    # a real zero is kept as zero and still counts as history
    assert frame.loc[BASE + 30, "gmv_30d"] == 0.0 and frame.loc[BASE + 30, "has_sales_history"]


def test_flagged_merchant_is_carried() -> None:
    products, lookups = _tables()
    flagged = indicator_frame(products, lookups).set_index("product_id")["flagged_low_quality"]
    assert flagged.to_dict() == {BASE + 30: False, BASE + 10: True, BASE + 20: False}


def test_absent_side_tables_give_missing_indicators() -> None:
    products, _ = _tables()
    frame = indicator_frame(products.drop(columns=["merchant_id"]), Lookups(None, None))
    assert frame[[c for c in INDICATORS if c != "commission_rate"]].isna().all().all()
    assert frame["commission_rate"].notna().all()


def _random_indicators(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((n, len(INDICATORS))), columns=list(INDICATORS))
    frame["is_official_brand"] = (frame["is_official_brand"] > 0).astype(float)
    frame[list(HISTORY)] = frame[list(HISTORY)].mask(rng.random((n, len(HISTORY))) < 0.2)
    return frame


def test_dimension_scores_range_missing_and_monotone() -> None:
    frame = _random_indicators(2000, 0)
    scaler = DimensionScaler.fit(frame, grid_points=101)
    dims = scaler.transform(frame)
    assert list(dims.columns) == list(DIMENSIONS)
    values = dims.to_numpy()
    assert np.nanmin(values) >= 0.0 and np.nanmax(values) <= 1.0
    all_missing = frame[list(DIMENSIONS["sales"])].isna().all(axis=1)
    assert dims["sales"].isna().equals(all_missing)  # NaN only when nothing is known
    for name in INDICATORS:
        raised = frame.copy()
        raised[name] = raised[name] + 0.5
        assert (scaler.transform(raised).fillna(0) >= dims.fillna(0) - 1e-12).all().all(), name


def test_binary_indicator_ties_land_mid_mass() -> None:
    frame = pd.DataFrame({name: np.zeros(100) for name in INDICATORS})
    frame.loc[:24, "is_official_brand"] = 1.0  # 25% official
    scaler = DimensionScaler.fit(frame, grid_points=1001)
    pct = scaler.percentile("is_official_brand", np.array([0.0, 1.0]))
    assert pct[0] == pytest.approx(0.375, abs=0.01) and pct[1] == pytest.approx(0.875, abs=0.01)
    again = DimensionScaler.from_dict(scaler.to_dict())
    assert np.array_equal(again.percentile("is_official_brand", np.array([1.0])), pct[1:])


def test_chunks_cover_every_product_on_tiny(tiny_data: Path) -> None:
    chunks = list(
        iter_indicator_chunks(tiny_data, chunk_rows=1700, lookups=load_lookups(tiny_data))
    )
    frame = pd.concat(chunks, ignore_index=True)
    products = read_table(tiny_data, "products", ["product_id"])
    assert len(chunks) > 1 and len(frame) == count_rows(tiny_data, "products")
    assert set(frame["product_id"]) == set(products["product_id"])
    assert frame["product_id"].min() >= BASE
    cold = ~frame["has_sales_history"]
    assert 0 < cold.sum() < len(frame)
    assert frame.loc[cold, list(HISTORY)].isna().all().all()
    assert frame.loc[~cold, "gmv_30d"].notna().mean() > 0.9
