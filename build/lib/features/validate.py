"""Validate a folder of contract tables: types, ranges, nulls, unique keys, references.

Tables are streamed in batches, so validation of the `full` preset stays in bounded
memory. The first violation raises a `ContractError` naming the table, file, column,
rule and up to five offending rows.

Before the schema, two checks on the values as stored: a float column holding inf or
-inf (a range check lets +inf through `>= 0`), and an integer column stored as uint64
with values above 2^63 - 1 (they would wrap to negative int64 IDs). The training jobs
run the same checks on the tables they read (`validate_tables`) before writing anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.errors as pae
from tqdm import tqdm

from features.contract import (
    FLOAT,
    INT,
    NULLABLE_INT,
    TABLES,
    VALIDATION_ORDER,
    TableSpec,
    normalise_dtypes,
)
from features.errors import ContractError, HaowuError
from features.io import count_rows, iter_table, table_columns, table_path

log = logging.getLogger(__name__)

MAX_ROWS_SHOWN = 5


@dataclass(frozen=True)
class TableReport:
    name: str
    path: str
    rows: int
    columns: list[str]


def _records(df: pd.DataFrame, mask: np.ndarray | pd.Series) -> list[dict]:
    return df.loc[np.asarray(mask)].head(MAX_ROWS_SHOWN).to_dict("records")


def _schema_error(
    spec: TableSpec, path: Path, batch: pd.DataFrame, exc: pae.SchemaErrors
) -> ContractError:
    cases = exc.failure_cases
    first = cases.iloc[0]
    column = first["column"] if isinstance(first["column"], str) else None
    check = str(first["check"])
    hint = ""
    if check.startswith("dtype") and column in batch.columns and _is_id(spec, column):
        if batch[column].dtype.kind in "OSU" or str(batch[column].dtype) == "string":
            hint = " (IDs are integers: map string IDs with `haowu import`)"
    same = cases[(cases["column"] == first["column"]) & (cases["check"] == first["check"])]
    index = same["index"].dropna()
    if len(index):
        rows = (
            batch.loc[batch.index.isin(index.astype("int64"))]
            .head(MAX_ROWS_SHOWN)
            .to_dict("records")
        )
        return ContractError(
            spec.name,
            f"rule {check} violated{hint}",
            column=column,
            rows=rows,
            path=str(path),
            total=len(same),
        )
    if check.startswith("dtype"):
        got = batch[column].dtype if column in batch.columns else "missing"
        rule = f"wrong type: expected {spec.dtypes.get(column)}, got {got}{hint}"
        sample = batch[[column]].head(MAX_ROWS_SHOWN).to_dict("records") if column in batch else []
        return ContractError(spec.name, rule, column=column, rows=sample, path=str(path))
    return ContractError(
        spec.name, f"rule {check} violated: {first['failure_case']}", column=column, path=str(path)
    )


def _is_id(spec: TableSpec, column: str) -> bool:
    return spec.dtypes.get(column) in (INT, NULLABLE_INT) and (
        column in spec.key or column in spec.references or column.endswith("_id")
    )


def check_schema(df: pd.DataFrame, spec: TableSpec, path: Path | str) -> None:
    """Check a frame against `spec`'s schema (types, ranges, nulls); the first rule
    broken raises a `ContractError` naming `path`, the column and offending rows."""
    try:
        spec.schema.validate(df, lazy=True)
    except pae.SchemaErrors as exc:
        raise _schema_error(spec, Path(path), df, exc) from None


INT64_MAX = np.iinfo(np.int64).max


def check_values(batch: pd.DataFrame, spec: TableSpec, path: Path | str) -> None:
    """Values the schema's types and ranges would let through or silently change:
    +-inf in a float column, integers above int64 in an int64 column stored as uint64."""
    for name, want in spec.dtypes.items():
        if name not in batch.columns:
            continue
        col = batch[name]
        if want == FLOAT and col.dtype.kind == "f":
            bad = np.isinf(col.to_numpy())
            rule = "non-finite value (inf or -inf); a missing value is null, a number is finite"
        elif want in (INT, NULLABLE_INT) and str(col.dtype) in ("uint64", "UInt64"):
            values = col.to_numpy(dtype=np.uint64, na_value=0)
            bad = values > np.uint64(INT64_MAX)
            rule = f"value above {INT64_MAX} (2^63 - 1): IDs and counts must fit int64"
        else:
            continue
        if bad.any():
            raise ContractError(
                spec.name, rule, column=name, rows=_records(batch, bad), path=str(path),
                total=int(bad.sum()),
            )  # fmt: skip


def _key_hash(batch: pd.DataFrame, key: tuple[str, ...]) -> np.ndarray:
    if len(key) == 1:
        return batch[key[0]].to_numpy(dtype=np.int64)
    return pd.util.hash_pandas_object(batch[list(key)], index=False).to_numpy()


def _check_batch_duplicates(spec: TableSpec, path: Path, batch: pd.DataFrame) -> None:
    dup = batch.duplicated(list(spec.key), keep=False)
    if dup.any():
        raise ContractError(
            spec.name,
            f"duplicate key {spec.key}",
            column=spec.key[0] if len(spec.key) == 1 else ",".join(spec.key),
            rows=_records(batch, dup),
            path=str(path),
            total=int(dup.sum()),
        )


def _check_references(
    spec: TableSpec, path: Path, batch: pd.DataFrame, keys: dict[str, np.ndarray]
) -> None:
    for column, (ref_table, ref_key) in spec.references.items():
        if column not in batch.columns or ref_table not in keys:
            continue
        values = batch[column]
        present = values.notna().to_numpy()
        known = np.zeros(len(batch), dtype=bool)
        known[present] = np.isin(values[present].to_numpy(dtype=np.int64), keys[ref_table])
        bad = present & ~known
        if bad.any():
            raise ContractError(
                spec.name,
                f"unknown {ref_key}: not in table '{ref_table}'",
                column=column,
                rows=_records(batch, bad),
                path=str(path),
                total=int(bad.sum()),
            )


def _rows_with_keys(
    root: Path, spec: TableSpec, key_hashes: np.ndarray, batch_rows: int
) -> list[dict]:
    """A second pass, only on failure: the rows whose key hash is one of `key_hashes`."""
    found: list[dict] = []
    for batch in iter_table(root, spec.name, batch_rows=batch_rows):
        batch = normalise_dtypes(batch, spec)
        found += _records(batch, np.isin(_key_hash(batch, spec.key), key_hashes))
        if len(found) >= MAX_ROWS_SHOWN:
            break
    return found[:MAX_ROWS_SHOWN]


def validate_table(
    root: Path, spec: TableSpec, keys: dict[str, np.ndarray], batch_rows: int = 2_000_000
) -> tuple[TableReport, np.ndarray]:
    """Validate one table; returns its report and its sorted unique key values."""
    path = table_path(root, spec.name)
    assert path is not None
    columns = table_columns(root, spec.name)
    missing = [c for c in spec.required if c not in columns]
    if missing:
        raise ContractError(
            spec.name,
            f"missing required column(s) {missing}; found {columns}",
            column=missing[0],
            path=str(path),
        )
    total = count_rows(root, spec.name)
    if total == 0:
        raise ContractError(spec.name, "table is empty", path=str(path))
    hashes: list[np.ndarray] = []
    bar = tqdm(
        total=total,
        desc=f"validate {spec.name}",
        unit="row",
        unit_scale=True,
        leave=False,
        disable=total < 5 * batch_rows,
    )
    for batch in iter_table(root, spec.name, batch_rows=batch_rows):
        check_values(batch, spec, path)
        batch = normalise_dtypes(batch, spec)
        check_schema(batch, spec, path)
        if spec.unique_key:
            _check_batch_duplicates(spec, path, batch)
            hashes.append(_key_hash(batch, spec.key))
        _check_references(spec, path, batch, keys)
        bar.update(len(batch))
    bar.close()
    unique = np.empty(0, dtype=np.int64)
    if hashes:
        all_keys = np.sort(np.concatenate(hashes))
        repeats = int((all_keys[1:] == all_keys[:-1]).sum())
        if repeats:
            dup = all_keys[1:][all_keys[1:] == all_keys[:-1]]
            raise ContractError(
                spec.name,
                f"duplicate key {spec.key} across parts",
                column=spec.key[0],
                path=str(path),
                total=repeats,
                rows=_rows_with_keys(root, spec, dup[:MAX_ROWS_SHOWN], batch_rows),
            )
        unique = all_keys if len(spec.key) == 1 else unique
    return TableReport(spec.name, str(path), total, columns), unique


def validate_dir(root: Path, batch_rows: int = 2_000_000) -> dict[str, TableReport]:
    """Validate every contract table present under `root`; raise on the first violation."""
    root = Path(root)
    if not root.is_dir():
        raise HaowuError(f"data folder not found: {root}")
    present = [name for name in VALIDATION_ORDER if table_path(root, name) is not None]
    if not present:
        raise HaowuError(
            f"no contract tables in {root}; expected some of "
            f"{', '.join(VALIDATION_ORDER)} (.parquet)"
        )
    return validate_tables(root, present, batch_rows)


def validate_tables(
    root: Path, names: tuple[str, ...] | list[str], batch_rows: int = 2_000_000
) -> dict[str, TableReport]:
    """Validate the named tables present under `root` (a job's inputs), streamed, in
    dependency order: references between them are checked (e.g. interactions ->
    products), references to tables not named are not. Raises on the first violation."""
    root = Path(root)
    present = [n for n in VALIDATION_ORDER if n in names and table_path(root, n) is not None]
    keys: dict[str, np.ndarray] = {}
    reports: dict[str, TableReport] = {}
    for name in present:
        report, unique = validate_table(root, TABLES[name], keys, batch_rows)
        reports[name] = report
        if len(TABLES[name].key) == 1:
            keys[name] = unique
        log.info("%s: %d rows ok", name, report.rows)
    return reports
