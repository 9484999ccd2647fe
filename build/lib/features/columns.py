"""Turning a user's columns into the contract's types for `haowu import`: IDs (int64 or
string), weights, timestamps and side-table columns.

Every failure is a `ContractError` naming the file, the column and a few offending rows
(`row` is the 0-based data row, header excluded), so the user can fix the file from the
message alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import BOOL, FLOAT, INT, NULLABLE_INT, TIME
from features.import_files import Source

MAX_SHOWN = 5
TS_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# A string ID that is a plain integer (no sign games, no leading zeros) is kept as an
# int, so "42" in a CSV and 42 in a Parquet file are the same ID; "007" stays a string.
_CLEAN_INT = r"^(0|-?[1-9][0-9]{0,17})$"


def offending_rows(
    arr: pa.Array | np.ndarray, mask: np.ndarray, column: str
) -> list[dict[str, Any]]:
    """The first few rows where `mask` holds, as {row, column: value} for the message."""
    where = np.flatnonzero(mask)[:MAX_SHOWN]
    values = (
        arr.take(pa.array(where)).to_pylist() if isinstance(arr, pa.Array) else arr[where].tolist()
    )
    return [{"row": int(i), column: v} for i, v in zip(where, values, strict=True)]


def _decoded(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous, plain (not dictionary-encoded) array: what every check expects."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _is_text(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def _is_number(arr: pa.Array) -> bool:
    kind = arr.type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _refuse_nulls(arr: pa.Array, src: Source, column: str, what: str) -> None:
    missing = arr.is_null(nan_is_null=True)
    if _is_text(arr):
        missing = pc.or_(missing, pc.equal(arr, ""))
    mask = missing.fill_null(True).to_numpy(zero_copy_only=False)
    if mask.any():
        raise src.error(
            f"{what} has empty values",
            column=column,
            rows=offending_rows(arr, mask, column),
            total=int(mask.sum()),
        )


def id_column(table: pa.Table, src: Source, column: str, what: str = "ID column") -> pa.Array:
    """An ID column as int64 (integers, integral floats, clean integer strings) or as
    string; nulls and empty strings are refused."""
    arr = _decoded(table[column])
    _refuse_nulls(arr, src, column, what)
    if pa.types.is_integer(arr.type):
        try:
            return arr.cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise src.error(f"ID does not fit in int64: {exc}", column=column) from None
    if pa.types.is_floating(arr.type):
        values = arr.to_numpy(zero_copy_only=False)
        bad = (values != np.round(values)) | (np.abs(values) >= 2**63)
        if bad.any():
            raise src.error(
                f"{what} holds non-integer numbers",
                column=column,
                rows=offending_rows(arr, bad, column),
                total=int(bad.sum()),
            )
        return pa.array(values.astype(np.int64))
    if _is_text(arr):
        return _text_ids(arr)
    raise src.error(f"{what} must hold integers or strings, got {arr.type}", column=column)


def _text_ids(arr: pa.Array) -> pa.Array:
    """Text IDs that are all plain integers become int64; the rest stay strings."""
    try:  # a failing cast is slow on millions of rows: let the first rows decide first
        arr.slice(0, 1024).cast(pa.int64())
        ints = arr.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return arr.cast(pa.string())
    # The cast accepts "007" and "+7"; only then pay for the exact (slower) check.
    odd = pc.or_(
        pc.starts_with(arr, "0"), pc.or_(pc.starts_with(arr, "-"), pc.starts_with(arr, "+"))
    )
    if pc.any(odd).as_py() and not pc.all(pc.match_substring_regex(arr, _CLEAN_INT)).as_py():
        return arr.cast(pa.string())
    return ints


def unify_id_types(arrays: list[pa.Array]) -> list[pa.Array]:
    """IDs of one entity from several files: if any file has string IDs, all are strings
    (lossless for ints, which were clean integers to begin with)."""
    if any(_is_text(a) for a in arrays):
        return [a if _is_text(a) else pc.cast(a, pa.string()) for a in arrays]
    return arrays


def numeric_column(table: pa.Table, src: Source, column: str, what: str) -> np.ndarray:
    """A column as finite float64; text that is not a number, nulls and inf are refused."""
    arr = _decoded(table[column])
    if pa.types.is_null(arr.type):  # an all-empty column
        values = np.full(len(arr), np.nan)
    elif _is_text(arr):
        values = pd.to_numeric(arr.to_pandas(), errors="coerce").to_numpy(dtype=np.float64)
    elif _is_number(arr):
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    else:
        raise src.error(f"{what} must be numeric, got {arr.type}", column=column)
    bad = ~np.isfinite(values)
    if bad.any():
        raise src.error(
            f"{what} must hold finite numbers",
            column=column,
            rows=offending_rows(arr, bad, column),
            total=int(bad.sum()),
        )
    return values


def _numeric_ts(
    values: np.ndarray, arr: pa.Array, src: Source, column: str, unit: str
) -> np.ndarray:
    factor = TS_UNITS[unit]
    limit = np.iinfo(np.int64).max // factor
    with np.errstate(invalid="ignore"):
        bad = (
            ~np.isfinite(values) | (np.abs(values) > limit)
            if values.dtype.kind == "f"
            else np.abs(values) > limit
        )
    if bad.any():
        raise src.error(
            f"timestamps out of range for --ts-unit {unit} (is the unit right?)",
            column=column,
            rows=offending_rows(arr, bad, column),
            total=int(bad.sum()),
        )
    ns = np.round(values * factor).astype(np.int64) if values.dtype.kind == "f" else values * factor
    return ns.astype(np.int64).view("datetime64[ns]")


def _text_ts(arr: pa.Array, src: Source, column: str, unit: str) -> np.ndarray:
    if pc.all(pc.match_substring_regex(arr, r"^-?[0-9]+(\.[0-9]*)?$")).as_py():
        numbers = pd.to_numeric(arr.to_pandas()).to_numpy()
        return _numeric_ts(numbers, arr, src, column, unit)
    text = arr.to_pandas()
    parsed = pd.to_datetime(text, errors="coerce", utc=True)
    failed = parsed.isna().to_numpy()
    if failed.any():  # a second, slower try for files that mix formats
        parsed[failed] = pd.to_datetime(text[failed], errors="coerce", utc=True, format="mixed")
        failed = parsed.isna().to_numpy()
    if failed.any():
        raise src.error(
            "unparseable timestamps",
            column=column,
            rows=offending_rows(arr, failed, column),
            total=int(failed.sum()),
        )
    try:  # pandas checks the ns range where numpy would silently wrap around
        return parsed.dt.tz_localize(None).astype("datetime64[ns]").to_numpy()
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError) as exc:
        raise src.error(f"timestamps out of range: {exc}", column=column) from None


def ts_column(table: pa.Table, src: Source, column: str, unit: str) -> np.ndarray:
    """Timestamps as datetime64[ns] (naive UTC): numbers are counted in `unit` since
    1970-01-01, text is parsed as a date/time, tz-aware values are converted to UTC."""
    arr = _decoded(table[column])
    _refuse_nulls(arr, src, column, "timestamp column")
    kind = arr.type
    try:
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            return arr.cast(pa.timestamp("ns")).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise src.error(f"timestamps out of range: {exc}", column=column) from None
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = arr.to_numpy(zero_copy_only=False)
        return _numeric_ts(
            values.astype(np.int64) if values.dtype.kind in "iu" else values, arr, src, column, unit
        )
    if _is_text(arr):
        return _text_ts(arr, src, column, unit)
    raise src.error(f"timestamps must be numbers, dates or text, got {kind}", column=column)


def contract_column(
    table: pa.Table, src: Source, column: str, dtype: str, ts_unit: str
) -> pd.Series:
    """A side-table column converted to its contract dtype. Range rules (rates in 0..1,
    price > 0, ...) are left to the contract schema, which names the offending rows."""
    if dtype == TIME:
        return pd.Series(ts_column(table, src, column, ts_unit), name=column)
    arr = _decoded(table[column])
    if dtype == BOOL:
        if pa.types.is_boolean(arr.type) and not arr.null_count:
            return pd.Series(arr.to_numpy(zero_copy_only=False), name=column)
        raise src.error(f"must be true/false with no empty values, got {arr.type}", column=column)
    values = _numbers(arr, src, column, dtype).rename(column)
    if dtype == FLOAT:
        return values.astype("float64")
    return _integral(values, arr, src, column, dtype)


def _numbers(arr: pa.Array, src: Source, column: str, dtype: str) -> pd.Series:
    """Numbers of a numeric or text column; empty stays NaN (nullability is the schema's)."""
    if pa.types.is_null(arr.type):  # an all-empty column
        return pd.Series(np.full(len(arr), np.nan))
    if _is_number(arr):
        return arr.to_pandas()
    if not _is_text(arr):
        raise src.error(f"expected {dtype}, got {arr.type}", column=column)
    values = pd.to_numeric(arr.to_pandas(), errors="coerce")
    bad = (values.isna() & arr.is_valid().to_pandas()).to_numpy()
    if bad.any():
        raise src.error(
            f"not a number (expected {dtype})",
            column=column,
            rows=offending_rows(arr, bad, column),
            total=int(bad.sum()),
        )
    return values


def _integral(values: pd.Series, arr: pa.Array, src: Source, column: str, dtype: str) -> pd.Series:
    """Whole numbers as int64 (no empties) or nullable Int64."""
    if pa.types.is_integer(arr.type) and not arr.null_count:
        return values.astype(NULLABLE_INT if dtype == NULLABLE_INT else "int64")
    floats = values.astype("float64")
    nulls = floats.isna().to_numpy()
    if dtype == INT and nulls.any():
        raise src.error(
            "has empty values",
            column=column,
            rows=offending_rows(arr, nulls, column),
            total=int(nulls.sum()),
        )
    bad = (~nulls) & (floats.to_numpy() != np.round(floats.to_numpy()))
    if bad.any():
        raise src.error(
            "expected whole numbers",
            column=column,
            rows=offending_rows(arr, bad, column),
            total=int(bad.sum()),
        )
    return values.astype(NULLABLE_INT if dtype == NULLABLE_INT else "int64")
