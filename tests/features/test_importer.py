"""`haowu import`: a user's own files into contract tables, with ID maps kept."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.errors import ConfigError, ContractError, OutputExistsError
from features.idmap import IdMap, load_id_maps
from features.importer import ImportOptions, import_interactions
from features.io import read_table
from features.validate import validate_dir

EVENTS = pd.DataFrame(
    {
        "user": ["u1", "u2", "u1", "u1", "u3", "u2"],
        "item": ["a", "b", "a", "c", "b", "c"],
        "t": [100, 200, 100, 300, 400, 500],
        "rating": [5.0, 3.0, 4.0, 1.0, 4.5, 2.0],
    }
)
PRODUCTS = pd.DataFrame(
    {
        "item": ["a", "b", "c", "d"],
        "price": [10.0, 20.0, 30.0, 40.0],
        "category_l1": ["food", "toys", "food", "home"],
        "category_l3": ["snack", "lego", "snack", "lamp"],
        "title": ["t1", "t2", "t3", "t4"],
    }
)
CREATORS = pd.DataFrame(
    {"user": ["u1", "u2", "u3", "u4"], "followers": [10, 20, 30, 40], "category_pref": ["lego"] * 4}
)


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "events.csv", **kw: Any) -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False, **kw)
    return path


def _options(tmp_path: Path, interactions: Path, **kw: Any) -> ImportOptions:
    base: dict[str, Any] = {
        "interactions": interactions,
        "creator_col": "user",
        "product_col": "item",
        "out": tmp_path / "out",
    }
    return ImportOptions(**{**base, **kw})


def _external_pairs(out: Path) -> set[tuple[Any, Any]]:
    maps = load_id_maps(out)
    inter = read_table(out, "interactions")
    creators = maps["creator"].to_external(inter["creator_id"].to_numpy())
    products = maps["product"].to_external(inter["product_id"].to_numpy())
    return set(zip(creators.tolist(), products.tolist(), strict=True))


# ----- happy paths ------------------------------------------------------------------------
def test_string_ids_round_trip(tmp_path: Path) -> None:
    opts = _options(tmp_path, _csv(tmp_path, EVENTS), ts_col="t", weight_col="rating")
    summary = import_interactions(opts)
    out = opts.out
    assert _external_pairs(out) == set(zip(EVENTS["user"], EVENTS["item"], strict=True))
    assert summary["id_types"] == {"creator": "str", "product": "str"}
    assert json.loads((out / "_import.json").read_text())["counts"] == summary["counts"]
    assert set(validate_dir(out)) == {"creators", "products", "interactions"}
    inter = read_table(out, "interactions")
    assert inter.dtypes.astype(str).to_dict() == {
        "creator_id": "int64",
        "product_id": "int64",
        "ts": "datetime64[ns]",
        "orders": "int64",
        "gmv": "float64",
    }
    assert sorted(read_table(out, "creators")["creator_id"]) == [0, 1, 2]


def test_int_ids_stay_ints(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user": [7, 9, 7], "item": [300, 100, 100]}).to_parquet(path)
    summary = import_interactions(_options(tmp_path, path))
    assert summary["id_types"] == {"creator": "int", "product": "int"}
    maps = load_id_maps(tmp_path / "out")
    assert maps["product"].external_ids.tolist() == [100, 300]
    assert _external_pairs(tmp_path / "out") == {(7, 300), (9, 100), (7, 100)}


def test_zero_padded_ids_keep_their_spelling(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user,item\n007,1\n7,2\n")
    import_interactions(_options(tmp_path, path))
    assert _external_pairs(tmp_path / "out") == {("007", 1), ("7", 2)}


def test_duplicate_events_are_aggregated(tmp_path: Path) -> None:
    opts = _options(tmp_path, _csv(tmp_path, EVENTS), ts_col="t", weight_col="rating")
    summary = import_interactions(opts)
    inter = read_table(opts.out, "interactions")
    maps = load_id_maps(opts.out)
    u1 = maps["creator"].to_internal(["u1"])[0]
    a = maps["product"].to_internal(["a"])[0]
    row = inter[(inter["creator_id"] == u1) & (inter["product_id"] == a)]
    assert len(row) == 1
    assert row["orders"].item() == 2 and row["gmv"].item() == pytest.approx(9.0)
    assert row["ts"].item() == pd.Timestamp(100, unit="s")
    assert summary["counts"]["raw_events"] == 6
    assert summary["counts"]["interactions"] == 5
    assert summary["counts"]["merged_duplicate_events"] == 1


def test_min_weight_keeps_only_strong_events(tmp_path: Path) -> None:
    opts = _options(tmp_path, _csv(tmp_path, EVENTS), ts_col="t", weight_col="rating", min_weight=4)
    summary = import_interactions(opts)
    assert _external_pairs(opts.out) == {("u1", "a"), ("u3", "b")}
    assert summary["counts"]["kept_events"] == 3
    assert summary["counts"]["dropped_by_min_weight"] == 3


def test_negative_weights_below_min_weight_are_dropped_not_refused(tmp_path: Path) -> None:
    events = EVENTS.assign(rating=[5.0, -1.0, 4.0, -1.0, 4.5, -1.0])
    opts = _options(tmp_path, _csv(tmp_path, events), weight_col="rating", min_weight=0)
    assert import_interactions(opts)["counts"]["kept_events"] == 3


def test_without_ts_every_event_is_at_the_epoch(tmp_path: Path) -> None:
    opts = _options(tmp_path, _csv(tmp_path, EVENTS))
    summary = import_interactions(opts)
    inter = read_table(opts.out, "interactions")
    assert (inter["ts"] == pd.Timestamp("1970-01-01")).all()
    assert (inter["gmv"] == 0.0).all()
    assert summary["counts"]["interactions"] == 5  # (u1, a) twice -> one row
    assert summary["options"]["fixed_ts"].startswith("1970-01-01")


def test_timestamp_units_and_text(tmp_path: Path) -> None:
    ms = _csv(tmp_path, EVENTS.assign(t=EVENTS["t"] * 1000), "ms.csv")
    import_interactions(_options(tmp_path, ms, ts_col="t", ts_unit="ms"))
    assert read_table(tmp_path / "out", "interactions")["ts"].min() == pd.Timestamp(100, unit="s")
    text = _csv(tmp_path, EVENTS.assign(t="2024-05-01T08:00:00+08:00"), "text.csv")
    import_interactions(_options(tmp_path, text, ts_col="t", out=tmp_path / "out2"))
    ts = read_table(tmp_path / "out2", "interactions")["ts"]
    assert (ts == pd.Timestamp("2024-05-01 00:00:00")).all()  # converted to UTC


def test_side_tables_keep_cold_products_and_code_categories(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    opts = _options(
        tmp_path,
        _csv(tmp_path, EVENTS),
        products=_csv(tmp_path, PRODUCTS, "products.csv"),
        creators=_csv(tmp_path, CREATORS, "creators.csv"),
        product_id_col="item",
    )
    with caplog.at_level(logging.INFO, logger="features"):
        summary = import_interactions(opts)
    assert "title" in caplog.text  # dropped, and said so
    products = read_table(opts.out, "products")
    maps = load_id_maps(opts.out)
    assert maps["product"].external_ids.tolist() == ["a", "b", "c", "d"]
    assert summary["counts"]["cold_products"] == 1 and summary["counts"]["cold_creators"] == 1
    assert "title" not in products.columns
    assert products["price"].tolist() == [10.0, 20.0, 30.0, 40.0]
    leaf = IdMap.load(opts.out / "id_maps" / "products.category_l3.parquet")
    assert leaf.to_external(products["category_l3"].to_numpy()).tolist() == list(
        PRODUCTS["category_l3"]
    )
    # a creator's preferred leaf and a product's leaf share one code
    creators = read_table(opts.out, "creators")
    assert set(creators["category_pref"]) == set(leaf.to_internal(["lego"]))
    l1 = IdMap.load(opts.out / "id_maps" / "products.category_l1.parquet")
    assert l1.external_ids.tolist() == ["food", "home", "toys"]
    validate_dir(opts.out)


def test_side_columns_are_converted_to_contract_types(tmp_path: Path) -> None:
    creators = tmp_path / "creators.parquet"
    pd.DataFrame(
        {
            "user": ["u1", "u2", "u3"],
            "region": pd.array([3, 1, 2], dtype="int32"),  # int codes pass through
            "price_band": [1.0, 2.0, 0.0],  # integral floats become int64
            "broker_id": [7.0, None, 8.0],  # nullable
            "fans_female_share": ["0.5", "0.25", "1"],  # numbers written as text
        }
    ).to_parquet(creators)
    opts = _options(tmp_path, _csv(tmp_path, EVENTS), creators=creators)
    summary = import_interactions(opts)
    frame = read_table(opts.out, "creators")
    assert frame.dtypes.astype(str).to_dict() == {
        "creator_id": "int64",
        "price_band": "int64",
        "fans_female_share": "float64",
        "region": "int64",
        "broker_id": "Int64",
    }
    assert frame["region"].tolist() == [3, 1, 2] and frame["broker_id"].isna().sum() == 1
    assert "creators.region" not in summary["id_maps"]


def test_int_interactions_with_string_side_ids_share_one_map(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("user,item\n1,10\n2,x7\n")
    products = tmp_path / "p.csv"
    products.write_text("item,price\n10,1.5\nx7,2.5\n")
    import_interactions(_options(tmp_path, events, products=products))
    assert _external_pairs(tmp_path / "out") == {(1, "10"), (2, "x7")}


@pytest.mark.parametrize(
    "fmt", ["tsv", "txt", "csv.gz", "parquet-dir", "double-colon", "no-header"]
)
def test_input_formats(tmp_path: Path, fmt: str) -> None:
    kw: dict[str, Any] = {}
    if fmt == "tsv":
        path = _csv(tmp_path, EVENTS, "e.tsv", sep="\t")
    elif fmt == "txt":
        path, kw = _csv(tmp_path, EVENTS, "e.txt", sep="|"), {"sep": "|"}
    elif fmt == "csv.gz":
        path = tmp_path / "e.csv.gz"
        with gzip.open(path, "wt") as fh:
            EVENTS.to_csv(fh, index=False)
    elif fmt == "parquet-dir":
        path = tmp_path / "parts"
        path.mkdir()
        EVENTS.iloc[:3].to_parquet(path / "part-0.parquet")
        EVENTS.iloc[3:].to_parquet(path / "part-1.parquet")
    elif fmt == "double-colon":  # MovieLens-1M style
        path = tmp_path / "ratings.dat"
        path.write_text("\n".join("::".join(map(str, r)) for r in EVENTS.itertuples(index=False)))
        kw = {"sep": "::", "header": False, "creator_col": "f0", "product_col": "f1"}
    else:
        path = _csv(tmp_path, EVENTS, "e.csv", header=False)
        kw = {"header": False, "creator_col": "f0", "product_col": "f1", "ts_col": "f2"}
    import_interactions(_options(tmp_path, path, **kw))
    assert _external_pairs(tmp_path / "out") == set(
        zip(EVENTS["user"], EVENTS["item"], strict=True)
    )


# ----- output folder ---------------------------------------------------------------------
def test_non_empty_out_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    opts = _options(tmp_path, _csv(tmp_path, EVENTS))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        import_interactions(opts)
    assert (out / "keep.txt").exists()
    import_interactions(opts.model_copy(update={"overwrite": True}))
    assert not (out / "keep.txt").exists() and (out / "interactions.parquet").exists()


def test_options_refuse_inconsistent_flags(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--min-weight needs --weight-col"):
        _options(tmp_path, tmp_path / "e.csv", min_weight=4)
    with pytest.raises(ConfigError, match="mapped once"):
        _options(tmp_path, tmp_path / "e.csv", product_col="user")
    with pytest.raises(ConfigError, match="--products"):
        _options(tmp_path, tmp_path / "e.csv", product_id_col="item")


# ----- bad inputs ------------------------------------------------------------------------
def _truncated_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    EVENTS.to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_gzip(tmp_path: Path) -> Path:
    path = tmp_path / "events.csv.gz"
    with gzip.open(path, "wt") as fh:
        pd.concat([EVENTS] * 2000).to_csv(fh, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_INPUTS = {
    # case: (builder(tmp_path) -> (file to name, options), column to name or None)
    "not found": (lambda p: (p / "nope.csv", {}), None),
    "empty file": (lambda p: (_write(p, "events.csv", ""), {}), None),
    "header only": (lambda p: (_write(p, "events.csv", "user,item\n"), {}), None),
    "truncated parquet": (lambda p: (_truncated_parquet(p), {}), None),
    "ragged csv": (lambda p: (_write(p, "events.csv", "user,item\nu1,a\nu2,b,x\n"), {}), None),
    "missing column": (
        lambda p: (_write(p, "events.csv", "user,product\nu1,a\n"), {}),
        "item",
    ),
    "null id": (lambda p: (_write(p, "events.csv", "user,item\nu1,a\n,b\n"), {}), "user"),
    "non-numeric weight": (
        lambda p: (
            _write(p, "events.csv", "user,item,w\nu1,a,1\nu2,b,lots\n"),
            {"weight_col": "w"},
        ),
        "w",
    ),
    "negative weight": (
        lambda p: (_write(p, "events.csv", "user,item,w\nu1,a,1\nu2,b,-2\n"), {"weight_col": "w"}),
        "w",
    ),
    "unparseable ts": (
        lambda p: (
            _write(p, "events.csv", "user,item,t\nu1,a,2024-01-01\nu2,b,soon\n"),
            {"ts_col": "t"},
        ),
        "t",
    ),
    "ts in ms read as seconds": (
        lambda p: (
            _write(p, "events.csv", "user,item,t\nu1,a,1700000000000000000\n"),
            {"ts_col": "t"},
        ),
        "t",
    ),
    "truncated gzip": (lambda p: (_truncated_gzip(p), {}), None),
    "unknown suffix": (lambda p: (_write(p, "events.dat", "user;item\nu1;a\n"), {}), None),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_interactions_file(tmp_path: Path, case: str) -> None:
    build, column = BAD_INPUTS[case]
    path, kw = build(tmp_path)
    opts = _options(tmp_path, path, **kw)
    with pytest.raises(ContractError) as info:
        import_interactions(opts)
    message = str(info.value)
    assert str(path) in message
    if column:
        assert f"column '{column}'" in message
    assert not opts.out.exists()
    assert not list(tmp_path.glob(".out*"))  # no staging left behind either


def test_missing_column_lists_the_columns_the_file_has(tmp_path: Path) -> None:
    path = _write(tmp_path, "events.csv", "user,product\nu1,a\n")
    with pytest.raises(ContractError, match=r"has \['user', 'product'\]"):
        import_interactions(_options(tmp_path, path))


def test_bad_rows_are_shown(tmp_path: Path) -> None:
    path = _write(tmp_path, "events.csv", "user,item,w\nu1,a,1\nu2,b,-2\n")
    with pytest.raises(ContractError) as info:
        import_interactions(_options(tmp_path, path, weight_col="w"))
    assert info.value.rows == [{"row": 1, "w": -2.0}]


def _side_case(tmp_path: Path, products_text: str) -> tuple[ImportOptions, Path]:
    products = _write(tmp_path, "products.csv", products_text)
    events = _csv(tmp_path, EVENTS)
    return _options(tmp_path, events, products=products), products


@pytest.mark.parametrize(
    ("products_text", "names", "column", "match"),
    [
        ("item,price\na,1\nb,2\n", "events", "item", "not in the products file"),
        ("item,price\na,1\nb,2\nc,3\na,4\n", "products", "item", "duplicate IDs"),
        ("item,price\na,1\nb,-2\nc,3\n", "products", "price", "greater_than"),
        ("item,price\na,1\nb,cheap\nc,3\n", "products", "price", "not a number"),
        ("item,category_l1\na,x\nb,\nc,y\n", "products", "category_l1", "empty"),
        ("sku,price\na,1\n", "products", "item", "not found"),
    ],
)
def test_bad_side_file(
    tmp_path: Path, products_text: str, names: str, column: str, match: str
) -> None:
    opts, products = _side_case(tmp_path, products_text)
    with pytest.raises(ContractError, match=match) as info:
        import_interactions(opts)
    message = str(info.value)
    named = products if names == "products" else opts.interactions
    assert str(named) in message
    assert f"column '{column}'" in message
    assert not opts.out.exists()


def test_unknown_product_error_shows_the_users_ids(tmp_path: Path) -> None:
    opts, _ = _side_case(tmp_path, "item,price\na,1\nb,2\n")
    with pytest.raises(ContractError) as info:
        import_interactions(opts)
    assert info.value.total == 2
    assert info.value.rows == [{"row": 3, "item": "c"}, {"row": 5, "item": "c"}]
