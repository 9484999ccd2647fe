import json

import numpy as np
import pandas as pd

from features.encoders import (
    CategoricalEncoder,
    IdEncoder,
    NumericEncoder,
    SideEncoder,
    TowerEncoders,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "category_l3": [3, 7, 7, np.nan, 9],
            "region": ["n", "s", "s", "e", None],
            "is_official_brand": [True, False, True, False, True],
            "price": [1.0, 10.0, 100.0, 1000.0, np.nan],
            "commission_rate": [0.1, 0.2, np.nan, 0.3, 0.4],
        }
    )


def test_id_encoder_has_an_oov_bucket() -> None:
    enc = IdEncoder.fit(5, np.array([0, 0, 2, 4, 4, 4]), min_count=2)
    assert enc.rows.tolist() == [1, 0, 0, 0, 2]  # positions 1, 2, 3 -> OOV row 0
    assert enc.vocab_size == 3
    assert (
        IdEncoder.from_dict(json.loads(json.dumps(enc.to_dict()))).rows.tolist()
        == enc.rows.tolist()
    )


def test_categorical_unseen_and_missing_are_zero() -> None:
    enc = CategoricalEncoder.fit(pd.Series([3, 7, 7]))
    assert enc.transform(pd.Series([7.0, 3.0, 11.0, np.nan])).tolist() == [2, 1, 0, 0]
    assert enc.cardinality == 3


def test_numeric_standardised_missing_to_mean_and_clipped() -> None:
    enc = NumericEncoder.fit(pd.Series([1.0, 2.0, 3.0]))
    z = enc.transform(pd.Series([2.0, np.nan, 1e9]))
    assert z[0] == 0.0 and z[1] == 0.0 and z[2] == 5.0
    assert NumericEncoder.fit(pd.Series([1.0, 5.0, 10_000.0, 2.0])).log  # heavy tail -> log1p


def test_side_encoder_round_trip_and_optional_columns() -> None:
    frame = _frame()
    enc = SideEncoder.fit(
        frame,
        np.arange(4),
        ["category_l3", "region", "is_official_brand", "price_band", "merchant_id"],
        ["price", "commission_rate", "tier_score"],
    )
    assert list(enc.categorical) == ["category_l3", "region", "is_official_brand", "price_band"]
    assert list(enc.numeric) == ["price", "commission_rate"]  # tier_score absent: skipped
    before = enc.transform(frame)
    again = SideEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    after = again.transform(frame)
    np.testing.assert_array_equal(before.categorical, after.categorical)
    np.testing.assert_allclose(before.numeric, after.numeric)
    # fitted on rows 0-3: 9 (row 4) is unseen and NaN (row 3) is missing: both the 0 row
    assert before.categorical[:, 0].tolist() == [1, 2, 2, 0, 0]
    assert np.isfinite(before.numeric).all()


def test_ids_only_data_encodes_to_empty_side_features() -> None:
    frame = pd.DataFrame(index=range(3))
    enc = SideEncoder.fit(frame, np.arange(3), ["category_l3"], ["price"])
    side = enc.transform(frame)
    assert side.categorical.shape == (3, 0) and side.numeric.shape == (3, 0)


def test_tower_encoders_round_trip() -> None:
    frame = _frame()
    side = SideEncoder.fit(frame, np.arange(5), ["category_l3"], ["price"])
    encs = TowerEncoders(
        IdEncoder.fit(5, np.array([1, 2])), IdEncoder.fit(3, np.array([0])), side, side
    )
    back = TowerEncoders.from_dict(json.loads(json.dumps(encs.to_dict())))
    assert back.product_ids.rows.tolist() == [1, 0, 0]
    np.testing.assert_array_equal(
        back.creator_side.transform(frame).categorical, side.transform(frame).categorical
    )


def test_id_rows_out_of_position_order_round_trip() -> None:
    """A warm start (training/matching/warm_start.py) gives new IDs rows past the old
    table, wherever their positions fall: the saved encoder must keep them."""
    enc = IdEncoder(np.array([2, 0, 4, 1, 3]))
    doc = json.loads(json.dumps(enc.to_dict()))
    assert IdEncoder.from_dict(doc).rows.tolist() == [2, 0, 4, 1, 3]
    plain = IdEncoder.fit(4, np.array([0, 2, 3]))
    assert "rows" not in plain.to_dict()  # the usual case stays as compact as before
