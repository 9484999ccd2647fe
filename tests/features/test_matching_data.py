from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import ContractError
from features.matching_data import IdIndex, creator_frame, load_interactions, product_frame

C0, P0 = 1_000_000_000, 5_000_000_000


def _write(root: Path, interactions: pd.DataFrame, products: pd.DataFrame | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    interactions.to_parquet(root / "interactions.parquet")
    if products is not None:
        products.to_parquet(root / "products.parquet")
    return root


def test_non_dense_ids_repeats_and_cold_products(tmp_path: Path) -> None:
    ts = pd.to_datetime(["2024-01-05", "2024-01-02", "2024-01-03", "2024-01-04"])
    inter = pd.DataFrame(
        {
            "creator_id": [C0 + 7, C0 + 7, C0 + 3, C0 + 7],
            "product_id": [P0 + 9, P0 + 9, P0 + 1, P0 + 1],
            "ts": ts,
        }
    )
    products = pd.DataFrame({"product_id": [P0 + 1, P0 + 9, P0 + 42], "category_l3": [1, 2, 3]})
    data = _write(tmp_path / "d", inter, products)
    got = load_interactions(data, batch_rows=2)  # several batches
    assert got.creators.ids.tolist() == [C0 + 3, C0 + 7]
    assert got.products.ids.tolist() == [P0 + 1, P0 + 9, P0 + 42]  # the cold good has a position
    assert got.n_pairs == 3 and got.n_rows == 4
    pairs = sorted(
        zip(got.creator.tolist(), got.product.tolist(), got.first_ts.tolist(), strict=True)
    )
    assert pairs[2] == (1, 1, pd.Timestamp("2024-01-02").value)  # the earliest repeat
    # looked up by (creator, product) position, in any order
    when = got.first_ts_of(np.array([1, 0]), np.array([1, 0]))
    assert when.tolist() == [pd.Timestamp(d).value for d in ("2024-01-02", "2024-01-03")]
    with pytest.raises(KeyError, match="1 pair"):
        got.first_ts_of(np.array([0]), np.array([2]))  # never interacted
    assert got.csr().shape == (2, 3)
    frame = product_frame(data, got.products)
    assert frame["category_l3"].tolist() == [1, 2, 3]
    assert len(creator_frame(data, got.creators)) == 2  # no creators table: empty columns


def test_wrong_id_type_is_a_contract_error(tmp_path: Path) -> None:
    inter = pd.DataFrame(
        {
            "creator_id": ["a", "b"],
            "product_id": [1, 2],
            "ts": pd.to_datetime(["2024-01-01", "2024-01-02"]),
        }
    )
    with pytest.raises(ContractError, match="creator_id"):
        load_interactions(_write(tmp_path / "d", inter))


def test_float_ids_with_nan_are_a_contract_error(tmp_path: Path) -> None:
    inter = pd.DataFrame({"creator_id": [1, 2], "product_id": [1.0, np.nan]})
    with pytest.raises(ContractError, match="product_id"):
        load_interactions(_write(tmp_path / "d", inter))


def test_without_ts_pairs_still_load(tmp_path: Path) -> None:
    inter = pd.DataFrame({"creator_id": [1, 2, 2], "product_id": [5, 5, 6]})
    got = load_interactions(_write(tmp_path / "d", inter))
    assert got.first_ts is None and got.n_pairs == 3
    with pytest.raises(ValueError, match="no times"):
        got.first_ts_of(np.array([0]), np.array([0]))


def test_id_index_positions() -> None:
    index = IdIndex(np.array([10, 20, 30]))
    assert index.positions(np.array([30, 10])).tolist() == [2, 0]
    assert index.positions(np.array([15, 40]), strict=False).tolist() == [-1, -1]
    with pytest.raises(KeyError):
        index.positions(np.array([15]))
