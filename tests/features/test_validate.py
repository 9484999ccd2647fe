"""`validate_dir`: every contract violation names the table, the column and a bad row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.errors import ContractError, HaowuError
from features.io import write_part, write_table
from features.validate import validate_dir


def _tables() -> dict[str, pd.DataFrame]:
    return {
        "creators": pd.DataFrame({"creator_id": [1, 2, 3], "followers": [10, 20, 30]}),
        "products": pd.DataFrame(
            {"product_id": [10, 11], "price": [1.5, 2.0], "category_l3": [4, 5]}
        ),
        "product_stats": pd.DataFrame({"product_id": [10, 11], "refund_rate": [0.1, 0.2]}),
        "interactions": pd.DataFrame(
            {
                "creator_id": [1, 2],
                "product_id": [10, 11],
                "ts": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                "orders": [1, 2],
                "gmv": [1.0, 2.0],
            }
        ),
    }


@pytest.fixture
def data(tmp_path: Path) -> Path:
    for name, frame in _tables().items():
        write_table(frame, tmp_path, name)
    return tmp_path


def _replace(root: Path, name: str, **columns: list) -> None:
    """Rewrite table `name` with some columns changed (or added)."""
    frame = _tables()[name]
    write_table(frame.assign(**columns), root, name)


def _fails(root: Path, table: str, column: str | None, rule: str) -> ContractError:
    with pytest.raises(ContractError) as info:
        validate_dir(root)
    err = info.value
    message = str(err)
    assert err.table == table and f"table '{table}'" in message
    assert f"/{table}.parquet" in message or message.startswith(f"table '{table}' ({root}/{table})")
    if column is not None:
        assert err.column == column and f"column '{column}'" in message
    assert rule in message
    return err


def test_a_valid_folder_passes(data: Path) -> None:
    reports = validate_dir(data)
    assert list(reports) == ["creators", "products", "product_stats", "interactions"]
    assert reports["interactions"].rows == 2


def test_missing_required_column(data: Path) -> None:
    frame = _tables()["interactions"].drop(columns="ts")
    write_table(frame, data, "interactions")
    err = _fails(data, "interactions", "ts", "missing required column")
    assert "found ['creator_id', 'product_id', 'orders', 'gmv']" in str(err)


def test_string_in_price_is_a_wrong_type(data: Path) -> None:
    _replace(data, "products", price=["cheap", "2.0"])
    err = _fails(data, "products", "price", "float64")
    assert any(row.get("price") == "cheap" for row in err.rows)
    assert "cheap" in str(err)


def test_rate_outside_zero_one(data: Path) -> None:
    _replace(data, "product_stats", refund_rate=[0.1, 1.5])
    err = _fails(data, "product_stats", "refund_rate", "in_range")
    assert err.rows == [{"product_id": 11, "refund_rate": 1.5}]
    assert "1.5" in str(err)


def test_negative_price(data: Path) -> None:
    _replace(data, "products", price=[-1.0, 2.0])
    err = _fails(data, "products", "price", "greater_than(0)")
    assert err.rows[0]["price"] == -1.0 and err.total == 1


def test_duplicate_key(data: Path) -> None:
    _replace(data, "creators", creator_id=[1, 2, 2])
    err = _fails(data, "creators", "creator_id", "duplicate key")
    assert [row["creator_id"] for row in err.rows] == [2, 2]


def test_duplicate_key_across_parts(data: Path) -> None:
    (data / "creators.parquet").unlink()
    frame = _tables()["creators"]
    write_part(frame, data / "creators", 0)
    write_part(frame.iloc[:1], data / "creators", 1)
    err = _fails(data, "creators", "creator_id", "across parts")
    assert err.rows == [{"creator_id": 1, "followers": 10}] * 2


def test_duplicate_composite_key_across_parts(data: Path) -> None:
    (data / "interactions.parquet").unlink()
    frame = _tables()["interactions"]
    write_part(frame, data / "interactions", 0)
    write_part(frame.iloc[1:].assign(orders=5), data / "interactions", 1)
    err = _fails(data, "interactions", "creator_id", "across parts")
    assert [row["orders"] for row in err.rows] == [2, 5]


def test_interaction_with_unknown_creator(data: Path) -> None:
    _replace(data, "interactions", creator_id=[1, 99])
    err = _fails(data, "interactions", "creator_id", "not in table 'creators'")
    assert err.rows[0]["creator_id"] == 99 and "99" in str(err)


def test_interaction_with_unknown_product(data: Path) -> None:
    _replace(data, "interactions", product_id=[10, 77])
    err = _fails(data, "interactions", "product_id", "not in table 'products'")
    assert err.rows[0]["product_id"] == 77


def test_empty_table(data: Path) -> None:
    write_table(_tables()["creators"].iloc[:0], data, "creators")
    _fails(data, "creators", None, "table is empty")


def test_truncated_parquet(data: Path) -> None:
    path = data / "products.parquet"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _fails(data, "products", None, "unreadable Parquet")


def test_null_in_an_id_column(data: Path) -> None:
    _replace(data, "creators", creator_id=[1.0, None, 3.0])
    err = _fails(data, "creators", "creator_id", "not_nullable")
    assert err.total == 1


def test_narrow_types_are_widened_not_refused(data: Path) -> None:
    frame = _tables()["creators"].astype({"creator_id": "int32", "followers": "uint16"})
    write_table(frame, data, "creators")
    validate_dir(data)


def test_folder_without_tables(tmp_path: Path) -> None:
    with pytest.raises(HaowuError, match="no contract tables"):
        validate_dir(tmp_path)
    with pytest.raises(HaowuError, match="not found"):
        validate_dir(tmp_path / "missing")


@pytest.mark.parametrize(
    ("table", "column", "values"),
    [
        ("products", "price", [1.5, float("inf")]),
        ("product_stats", "gmv_30d", [float("inf"), 2.0]),
        ("merchants", "brand_awareness", [0.5, float("-inf")]),
    ],
)
def test_infinite_floats_are_refused(data: Path, table: str, column: str, values: list) -> None:
    """`>= 0` and `> 0` let +inf through, and a nullable column's -inf is not a null."""
    if table == "merchants":
        write_table(pd.DataFrame({"merchant_id": [1, 2], column: values}), data, table)
    else:
        _replace(data, table, **{column: values})
    err = _fails(data, table, column, "non-finite value (inf or -inf)")
    infinite = [v for v in values if abs(v) == float("inf")]
    assert err.total == 1 and [row[column] for row in err.rows] == infinite


def test_ids_above_int64_are_refused_not_wrapped(data: Path) -> None:
    """uint64 IDs above 2^63 - 1 used to wrap to negative int64 IDs without a word."""
    frame = _tables()["creators"].astype({"creator_id": "uint64"})
    frame.loc[2, "creator_id"] = 2**64 - 1  # would become -1
    write_table(frame, data, "creators")
    err = _fails(data, "creators", "creator_id", "value above 9223372036854775807")
    assert [row["creator_id"] for row in err.rows] == [2**64 - 1] and err.total == 1
    frame.loc[2, "creator_id"] = 3  # uint64 within range: widened, accepted
    write_table(frame, data, "creators")
    validate_dir(data)


def test_string_ids_point_to_import(data: Path) -> None:
    _replace(data, "creators", creator_id=["a", "b", "c"])
    err = _fails(data, "creators", "creator_id", "map string IDs with `haowu import`")
    assert err.rows[0]["creator_id"] == "a"
