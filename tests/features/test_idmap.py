"""IdMap: deterministic dense IDs, vectorised lookups both ways, Parquet round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.errors import HaowuError
from features.idmap import IdMap, UnknownIdError, id_map_path, load_id_maps


def test_fit_sorts_unique_string_ids() -> None:
    idmap = IdMap.fit(["b", "a", "c", "a"], name="creator")
    assert idmap.kind == "str"
    assert list(idmap.external_ids) == ["a", "b", "c"]
    np.testing.assert_array_equal(idmap.to_internal(["c", "a", "b"]), [2, 0, 1])
    assert list(idmap.to_external(np.array([2, 0]))) == ["c", "a"]


def test_fit_is_deterministic_whatever_the_input_order() -> None:
    ids = [f"u{i}" for i in range(50)]
    rng = np.random.default_rng(0)
    shuffled = list(rng.permutation(ids))
    assert list(IdMap.fit(ids).external_ids) == list(IdMap.fit(shuffled).external_ids)


def test_int_ids_keep_int_type_and_numeric_order() -> None:
    idmap = IdMap.fit(np.array([30, 2, 100, 2]), name="product")
    assert idmap.kind == "int"
    assert idmap.external_ids.dtype == np.int64
    assert idmap.external_ids.tolist() == [2, 30, 100]
    out = idmap.to_internal(pd.Series([100, 2]))
    assert out.dtype == np.int64 and out.tolist() == [2, 0]


def test_int_map_accepts_ids_written_as_text() -> None:
    """The HTTP service gets path parameters as strings."""
    idmap = IdMap.fit([5, 7])
    assert idmap.to_internal(["7"]).tolist() == [1]
    assert idmap.to_internal(["x", "5"], missing="minus_one").tolist() == [-1, 0]


def test_unknown_ids_raise_naming_them_or_become_minus_one() -> None:
    idmap = IdMap.fit(["a", "b"], name="creator")
    with pytest.raises(UnknownIdError, match=r"2 unknown creator ID\(s\).*'zz'.*'yy'"):
        idmap.to_internal(["zz", "a", "yy"])
    assert idmap.to_internal(["zz", "b", None], missing="minus_one").tolist() == [-1, 1, -1]


def test_to_external_refuses_out_of_range_internal_ids() -> None:
    idmap = IdMap.fit(["a", "b"])
    with pytest.raises(UnknownIdError, match="outside 0..1"):
        idmap.to_external([0, 2])
    with pytest.raises(UnknownIdError):
        idmap.to_external([-1])


def test_large_batches_match_single_lookups() -> None:
    """Long batches take the pyarrow path, short ones the cached pandas index."""
    rng = np.random.default_rng(1)
    values = np.array([f"p{i}" for i in rng.integers(0, 5_000, 150_000)], dtype=object)
    idmap = IdMap.fit(values)
    batch = idmap.to_internal(values)
    one_by_one = np.concatenate([idmap.to_internal(values[i : i + 1]) for i in range(0, 2_000)])
    np.testing.assert_array_equal(batch[:2_000], one_by_one)
    np.testing.assert_array_equal(idmap.to_external(batch), values)


def test_fit_refuses_nulls_and_floats() -> None:
    with pytest.raises(HaowuError, match="null"):
        IdMap.fit(["a", None])
    with pytest.raises(HaowuError, match="integers or strings"):
        IdMap.fit([1.5, 2.0])


@pytest.mark.parametrize("values", [["b", "a"], [20, 10]])
def test_save_load_round_trip(tmp_path: Path, values: list) -> None:
    idmap = IdMap.fit(values, name="product")
    path = idmap.save(tmp_path / "product.parquet")
    table = pq.read_table(path)
    assert table.schema.field("internal_id").type == pa.int64()
    expected = pa.int64() if isinstance(values[0], int) else pa.string()
    assert table.schema.field("external_id").type == expected
    loaded = IdMap.load(path)
    assert loaded.name == "product" and loaded.kind == idmap.kind
    assert list(loaded.external_ids) == list(idmap.external_ids)


def test_load_refuses_a_map_that_is_not_dense(tmp_path: Path) -> None:
    path = tmp_path / "creator.parquet"
    pq.write_table(pa.table({"internal_id": [0, 2], "external_id": ["a", "b"]}), path)
    with pytest.raises(HaowuError, match="0..n-1"):
        IdMap.load(path)


def test_load_id_maps_reads_what_is_there(tmp_path: Path) -> None:
    assert load_id_maps(tmp_path) == {}  # generated data: IDs are already the user's
    IdMap.fit(["x", "y"], name="creator").save(id_map_path(tmp_path, "creator"))
    maps = load_id_maps(tmp_path)
    assert set(maps) == {"creator"}
    assert maps["creator"].to_external([1]).tolist() == ["y"]


def test_string_ids_follow_the_one_id_rule() -> None:
    """What import accepts the service's paths accept: e-mail-like and long IDs pass;
    whitespace, '/', '?' and over 256 characters are refused with examples."""
    fitted = IdMap.fit(["ana@example.com", "日本語", "x" * 256, "user:42"], name="creator")
    assert len(fitted) == 4
    for bad in ("a b", "a/b", "x?y", "x" * 257, "tab\there"):
        with pytest.raises(HaowuError, match="break the ID rule"):
            IdMap.fit(["fine", bad], name="creator")
