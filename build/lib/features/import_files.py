"""Reading a user's own files for `haowu import`: CSV/TSV/delimited text (optionally
compressed) or Parquet (a file or a folder of parts), only the columns asked for.

Every failure is a `ContractError` that names the role of the file (`interactions`,
`creators`, `products`), the file and, where there is one, the column.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from features.errors import ContractError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t"}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")


@dataclass(frozen=True)
class Source:
    """One input file (or folder of Parquet parts) and the role it plays."""

    role: str
    path: Path
    sep: str | None = None
    header: bool = True

    def error(
        self,
        rule: str,
        column: str | None = None,
        rows: list[Any] | None = None,
        total: int | None = None,
    ) -> ContractError:
        return ContractError(
            self.role, rule, column=column, rows=rows, path=str(self.path), total=total
        )


def _text_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _format(src: Source) -> tuple[str, str | None]:
    """('parquet', None) or ('text', separator), from the suffix and `--sep`."""
    if src.path.is_dir() or src.path.suffix.lower() in PARQUET_SUFFIXES:
        return "parquet", None
    suffix = _text_suffix(src.path)
    sep = src.sep or TEXT_SEPARATORS.get(suffix)
    if sep is None:
        raise src.error(
            f"cannot tell the format of '{src.path.name}': use .csv, .tsv, .parquet or a folder "
            "of .parquet parts, or pass --sep for other delimited text (e.g. .txt)"
        )
    return "text", sep


def _check_exists(src: Source) -> None:
    if not src.path.exists():
        raise src.error("file not found")
    if src.path.is_dir() and not any(src.path.glob("*.parquet")):
        raise src.error("folder holds no .parquet parts")
    if src.path.is_file() and src.path.stat().st_size == 0:
        raise src.error("file is empty (no rows)")


def _unreadable(src: Source, exc: Exception) -> ContractError:
    if "Empty CSV file" in str(exc):
        return src.error("file is empty (no rows)")
    return src.error(f"unreadable or truncated file: {exc}")


def _parquet(src: Source) -> ds.Dataset:
    files = sorted(src.path.glob("*.parquet")) if src.path.is_dir() else [src.path]
    return ds.dataset([str(f) for f in files], format="parquet")


def _csv_options(src: Source, sep: str) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions]:
    return (
        pacsv.ReadOptions(autogenerate_column_names=not src.header),
        pacsv.ParseOptions(delimiter=sep),
    )


def _pandas_text(src: Source, sep: str, **kwargs: Any) -> pd.DataFrame:
    # pyarrow only splits on one character; MovieLens-style '::' needs pandas' parser.
    frame = pd.read_csv(
        src.path, sep=re.escape(sep), engine="python", header=0 if src.header else None, **kwargs
    )
    if not src.header:
        frame.columns = [f"f{i}" for i in range(frame.shape[1])]
    return frame


def source_columns(src: Source) -> list[str]:
    """The column names the file has (CSV without header: f0, f1, ...)."""
    _check_exists(src)
    kind, sep = _format(src)
    try:
        if kind == "parquet":
            return list(_parquet(src).schema.names)
        assert sep is not None
        if len(sep) > 1:
            return list(_pandas_text(src, sep, nrows=1).columns)
        with pacsv.open_csv(src.path, *_csv_options(src, sep)) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, OSError, ValueError, pd.errors.ParserError) as exc:
        raise _unreadable(src, exc) from None


def read_source(src: Source, columns: list[str], string_columns: tuple[str, ...] = ()) -> pa.Table:
    """Read only `columns` (which must exist) from the file; `string_columns` are read
    as text so that IDs keep their exact spelling. Refuses a file with no rows."""
    have = source_columns(src)
    for column in columns:
        if column not in have:
            raise src.error(f"column '{column}' not found; the file has {have}", column=column)
    kind, sep = _format(src)
    try:
        if kind == "parquet":
            table = _parquet(src).to_table(columns=columns)
        elif sep is not None and len(sep) > 1:
            frame = _pandas_text(src, sep, dtype={c: str for c in string_columns})
            table = pa.Table.from_pandas(frame[columns], preserve_index=False)
        else:
            convert = pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in string_columns},
                strings_can_be_null=True,
            )
            table = pacsv.read_csv(src.path, *_csv_options(src, sep), convert_options=convert)
    except (pa.ArrowInvalid, OSError, ValueError, pd.errors.ParserError) as exc:
        raise _unreadable(src, exc) from None
    if table.num_rows == 0:
        raise src.error("file has a header but no rows")
    log.info("read %s: %s rows from %s", src.role, f"{table.num_rows:,}", src.path)
    return table
