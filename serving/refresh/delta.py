"""A refresh's input: DELTA_DIR's contract tables, read and checked all at once.

A delta holds what changed since the pipeline folder's data was written: new or changed
`products`, `merchants`, `creators` and `product_stats` rows (keyed upserts), and new
`interactions` (appended). Everything is checked before anything is written, and the
first problem is one `ContractError` naming the file, the column and a few rows:

- the contract (features/validate.py): required columns, types, ranges, duplicate keys;
- a schema change: a delta table whose columns are not those of DIR/data's table, or a
  table DIR/data does not hold (its readers would not know the new column);
- unknown IDs: an interaction naming a creator or product (a product naming a merchant,
  stats naming a product) in neither DIR/data nor the delta;
- a stale delta: interactions older than the last event DIR/data already holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import TABLES, normalise_dtypes
from features.errors import ContractError, HaowuError
from features.io import files_digest, has_table, iter_table, read_table, table_columns, table_files
from features.validate import MAX_ROWS_SHOWN, validate_table

# what a delta may hold, in the order references need them
DELTA_TABLES = ("merchants", "creators", "products", "product_stats", "interactions")
UPSERTED = ("merchants", "creators", "products", "product_stats")
EVENT_TIME = "ts"  # interactions: when it happened


class DeltaError(HaowuError):
    """A delta folder that cannot be applied as a whole (not a folder, nothing in it)."""


@dataclass(frozen=True)
class Delta:
    """The checked delta: one frame per table present, and its content digest."""

    root: Path
    tables: dict[str, pd.DataFrame]
    digest: str  # sha256 of the delta's table files: the same delta twice is one refresh

    def ids(self, table: str) -> np.ndarray:
        """The key values the delta holds for an upserted table (empty when absent)."""
        frame = self.tables.get(table)
        if frame is None:
            return np.empty(0, np.int64)
        return frame[TABLES[table].key[0]].to_numpy(np.int64)


def _key_values(data_dir: Path, table: str) -> np.ndarray:
    key = TABLES[table].key[0]
    if not has_table(data_dir, table) or key not in table_columns(data_dir, table):
        return np.empty(0, np.int64)
    return np.unique(read_table(data_dir, table, columns=[key])[key].to_numpy(np.int64))


def _present(root: Path) -> list[str]:
    """Delta tables found; anything else in the folder is refused by name."""
    if not root.is_dir():
        raise DeltaError(f"--delta {root}: not a folder")
    found = [name for name in DELTA_TABLES if has_table(root, name)]
    names = {f"{name}.parquet" for name in found} | set(found)
    strays = sorted(
        p.name for p in root.iterdir() if p.name not in names and not p.name.startswith(".")
    )
    if strays:
        raise DeltaError(
            f"--delta {root}: {strays[0]} is not a table a refresh takes "
            f"(one of {', '.join(DELTA_TABLES)}, as NAME.parquet or NAME/part-*.parquet)"
        )
    if not found:
        raise DeltaError(
            f"--delta {root}: no delta tables; expected some of {', '.join(DELTA_TABLES)}"
        )
    return found


def _same_schema(delta_dir: Path, data_dir: Path, table: str) -> None:
    path = str(table_files(delta_dir, table)[0])
    if not has_table(data_dir, table):
        raise ContractError(
            table, f"schema change: {data_dir} holds no '{table}' table to refresh", path=path
        )
    theirs, ours = table_columns(data_dir, table), table_columns(delta_dir, table)
    extra = [c for c in ours if c not in theirs]
    missing = [c for c in theirs if c not in ours]
    if extra or missing:
        column = (extra or missing)[0]
        what = (
            f"column(s) {extra} that {data_dir}/{table} does not have"
            if extra
            else f"missing column(s) {missing} that {data_dir}/{table} has"
        )
        raise ContractError(table, f"schema change: {what}", column=column, path=path)


def _check_known(
    frame: pd.DataFrame, table: str, column: str, known: np.ndarray, path: str, where: str
) -> None:
    values = frame[column]
    present = values.notna().to_numpy()
    bad = present.copy()
    bad[present] = ~np.isin(values[present].to_numpy(np.int64), known)
    if bad.any():
        raise ContractError(
            table,
            f"unknown {column}: in neither {where} nor the delta",
            column=column,
            rows=frame.loc[bad].head(MAX_ROWS_SHOWN).to_dict("records"),
            path=path,
            total=int(bad.sum()),
        )


def _last_event(data_dir: Path) -> pd.Timestamp | None:
    if not has_table(data_dir, "interactions"):
        return None
    if EVENT_TIME not in table_columns(data_dir, "interactions"):
        return None
    last = None
    for batch in iter_table(data_dir, "interactions", columns=[EVENT_TIME]):
        top = batch[EVENT_TIME].max()
        last = top if last is None or top > last else last
    return last


def _check_fresh(frame: pd.DataFrame, data_dir: Path, path: str) -> None:
    last = _last_event(data_dir)
    if last is None:
        return
    stale = (frame[EVENT_TIME] < last).to_numpy()
    if stale.any():
        rows = frame.loc[stale].sort_values(EVENT_TIME).head(MAX_ROWS_SHOWN)
        raise ContractError(
            "interactions",
            f"delta older than the run it refreshes: events before {data_dir}'s last event "
            f"({last})",
            column=EVENT_TIME,
            rows=rows.to_dict("records"),
            path=path,
            total=int(stale.sum()),
        )


def read_delta(delta_dir: Path, data_dir: Path) -> Delta:
    """Read and check DELTA_DIR against DATA (see the module doc); nothing is written."""
    delta_dir, data_dir = Path(delta_dir), Path(data_dir)
    names = _present(delta_dir)
    tables: dict[str, pd.DataFrame] = {}
    for name in names:
        validate_table(delta_dir, TABLES[name], keys={})
        _same_schema(delta_dir, data_dir, name)
        tables[name] = normalise_dtypes(read_table(delta_dir, name), TABLES[name])
    known = {
        table: np.union1d(_key_values(data_dir, table), Delta(delta_dir, tables, "").ids(table))
        for table in ("merchants", "creators", "products")
    }
    for name, frame in tables.items():
        path = str(table_files(delta_dir, name)[0])
        for column, (ref_table, _) in TABLES[name].references.items():
            if column in frame.columns and ref_table in known:
                _check_known(frame, name, column, known[ref_table], path, str(data_dir))
        if name == "interactions":
            _check_fresh(frame, data_dir, path)
    files = [(f"{n}/{p.name}", p) for n in names for p in table_files(delta_dir, n)]
    return Delta(delta_dir, tables, files_digest(files))


def new_products(delta_dir: Path, known: np.ndarray) -> np.ndarray:
    """The delta's products that `known` (a model's product IDs) lacks: its new goods."""
    if not has_table(Path(delta_dir), "products"):
        return np.empty(0, np.int64)
    ids = read_table(Path(delta_dir), "products", columns=["product_id"])["product_id"]
    return np.setdiff1d(ids.to_numpy(np.int64), np.asarray(known, np.int64))
