"""Side files of `haowu import` (`--creators`, `--products`): the user's own table of
creators or products, narrowed to the contract's columns.

Columns named like a contract column are carried in the contract's type; others are
dropped (and logged). String categories (category_l1..l3, region, category_pref,
merchant_id) become int codes whose maps are kept as `id_maps/<table>.<column>.parquet`;
creators' `category_pref` and products' `category_l3` share one map, since both are
leaf categories and must compare equal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from features.columns import contract_column, id_column, offending_rows, unify_id_types
from features.contract import TABLES, TableSpec
from features.idmap import IdMap
from features.import_files import Source, read_source, source_columns
from features.validate import check_schema

log = logging.getLogger(__name__)

CATEGORICAL = {
    "creators": ("category_pref", "region"),
    "products": ("category_l1", "category_l2", "category_l3", "merchant_id"),
}
# Columns that name the same kind of thing share one code map.
SHARED_CODES = {("creators", "category_pref"): "leaf", ("products", "category_l3"): "leaf"}


@dataclass
class SideTable:
    """A side file's IDs (the user's, not yet mapped) and its contract columns."""

    src: Source
    id_col: str
    ids: pa.Array
    values: dict[str, pd.Series] = field(default_factory=dict)
    categories: dict[str, pa.Array] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def _refuse_duplicate_ids(side: SideTable) -> None:
    dup = side.ids.to_pandas().duplicated(keep=False).to_numpy()
    if dup.any():
        raise side.src.error(
            "duplicate IDs",
            column=side.id_col,
            rows=offending_rows(side.ids, dup, side.id_col),
            total=int(dup.sum()),
        )


def read_side(src: Source, id_col: str, ts_unit: str) -> SideTable:
    """Read the ID column and every contract column of `src.role`'s table."""
    spec = TABLES[src.role]
    have = source_columns(src)
    carried = [c for c in have if c in spec.columns and c not in spec.key and c != id_col]
    dropped = [c for c in have if c != id_col and c not in carried]
    if dropped:
        log.info("%s: dropping columns that are not in the contract: %s", src.path, dropped)
    categorical = [c for c in carried if c in CATEGORICAL[src.role]]
    table = read_source(src, [id_col, *carried], string_columns=(id_col, *categorical))
    side = SideTable(src, id_col, id_column(table, src, id_col), dropped=dropped)
    _refuse_duplicate_ids(side)
    for column in carried:
        if column in categorical:
            side.categories[column] = id_column(table, src, column, "category column")
        else:
            dtype = spec.dtypes[column]
            side.values[column] = contract_column(table, src, column, dtype, ts_unit)
    return side


def _category_groups(sides: dict[str, SideTable]) -> list[list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = {}
    for role, side in sides.items():
        for column in side.categories:
            key = SHARED_CODES.get((role, column), f"{role}.{column}")
            groups.setdefault(key, []).append((role, column))
    return list(groups.values())


def encode_categories(sides: dict[str, SideTable]) -> dict[str, IdMap]:
    """Move categories into `values`: int ones as they are, string ones as codes 0..n-1.
    Returns the code maps to keep, by name (`<table>.<column>`)."""
    maps: dict[str, IdMap] = {}
    for members in _category_groups(sides):
        arrays = unify_id_types([sides[role].categories[column] for role, column in members])
        if not pa.types.is_string(arrays[0].type):
            for (role, column), arr in zip(members, arrays, strict=True):
                sides[role].values[column] = pd.Series(arr.to_numpy(), name=column)
            continue
        name = "/".join(f"{role}.{column}" for role, column in members)
        codes = IdMap.fit(pa.concat_arrays(arrays), name=name)
        for (role, column), arr in zip(members, arrays, strict=True):
            sides[role].values[column] = pd.Series(codes.to_internal(arr), name=column)
            maps[f"{role}.{column}"] = codes
        log.info("%s: %d string categories coded as ints", name, len(codes))
    return maps


def check_side(side: SideTable) -> None:
    """Contract rules (ranges, nulls) on the side file, reported with the user's IDs."""
    spec = TABLES[side.src.role]
    columns = {c: col for c, col in spec.columns.items() if c not in spec.key}
    frame = pd.DataFrame({side.id_col: side.ids.to_pandas(), **side.values})
    check_schema(frame, TableSpec(spec.name, spec.key, columns), side.src.path)


def entity_table(
    role: str, n: int, side: SideTable | None, internal: np.ndarray | None
) -> pd.DataFrame:
    """Every known ID 0..n-1, with the side file's contract columns when there is one."""
    spec = TABLES[role]
    key = spec.key[0]
    if side is None or internal is None:
        return pd.DataFrame({key: np.arange(n, dtype=np.int64)})
    order = np.argsort(internal, kind="stable")
    frame = pd.DataFrame({key: internal, **side.values}).iloc[order].reset_index(drop=True)
    return frame[[c for c in spec.columns if c in frame.columns]]
