"""Reading and writing contract tables as Parquet, and writing outputs atomically.

A table lives at `ROOT/NAME.parquet` (one file) or `ROOT/NAME/part-*.parquet` (a folder
of parts, for tables too large to hold at once). Readers accept both. Writers never
leave a half-written file: they write to a temporary name and rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from features.errors import ContractError, OutputExistsError


def table_path(root: Path, name: str) -> Path | None:
    """Where table `name` lives under `root`, or None when it is absent."""
    root = Path(root)
    for candidate in (root / f"{name}.parquet", root / name):
        if candidate.is_file() or (candidate.is_dir() and any(candidate.glob("*.parquet"))):
            return candidate
    return None


def _dataset(root: Path, name: str) -> tuple[ds.Dataset, Path]:
    path = table_path(root, name)
    if path is None:
        raise ContractError(name, "table not found", path=str(Path(root) / f"{name}.parquet"))
    try:
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        return ds.dataset([str(f) for f in files], format="parquet"), path
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(name, f"unreadable Parquet: {exc}", path=str(path)) from None


def has_table(root: Path, name: str) -> bool:
    return table_path(root, name) is not None


def table_columns(root: Path, name: str) -> list[str]:
    dataset, _ = _dataset(root, name)
    return list(dataset.schema.names)


def count_rows(root: Path, name: str) -> int:
    dataset, path = _dataset(root, name)
    try:
        return dataset.count_rows()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(name, f"unreadable Parquet: {exc}", path=str(path)) from None


def _check_columns(name: str, path: Path, schema: pa.Schema, columns: list[str] | None) -> None:
    if columns is None:
        return
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ContractError(
            name,
            f"missing column(s) {missing}; has {schema.names}",
            column=missing[0],
            path=str(path),
        )


def read_table(root: Path, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Load a whole table (only for tables that fit in memory)."""
    dataset, path = _dataset(root, name)
    _check_columns(name, path, dataset.schema, columns)
    try:
        return dataset.to_table(columns=columns).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(name, f"unreadable Parquet: {exc}", path=str(path)) from None


def iter_table(
    root: Path, name: str, columns: list[str] | None = None, batch_rows: int = 2_000_000
) -> Iterator[pd.DataFrame]:
    """Stream a table in batches of at most `batch_rows`, so memory stays bounded."""
    dataset, path = _dataset(root, name)
    _check_columns(name, path, dataset.schema, columns)
    try:
        for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
            if batch.num_rows:
                yield batch.to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(name, f"unreadable Parquet: {exc}", path=str(path)) from None


def _default_mode(base: int) -> int:
    """`base` under the process umask: what open()/mkdir() would give. mkstemp/mkdtemp
    create 0600/0700, which would hide outputs from the service's or a colleague's user."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def _atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _default_mode(0o666))
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_table(df: pd.DataFrame, root: Path, name: str) -> Path:
    """Write a whole table as `ROOT/NAME.parquet`, atomically."""
    path = Path(root) / f"{name}.parquet"
    _atomic_write_parquet(df, path)
    return path


def write_part(df: pd.DataFrame, folder: Path, index: int) -> Path:
    """Write one part `FOLDER/part-NNNNN.parquet` atomically (temp + rename)."""
    path = Path(folder) / f"part-{index:05d}.parquet"
    _atomic_write_parquet(df, path)
    return path


def write_json(obj: Any, path: Path) -> Path:
    """Write JSON atomically and durably (`write_text`); used for manifests and metrics."""
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def write_text(text: str, path: Path) -> Path:
    """Write a text file atomically and durably.

    The text goes to a temporary file of a unique name in the same folder (two writers
    of one path never share a temporary file), is flushed to disk (fsync) and only then
    renamed over `path`: a crash leaves the old file or the new one, never a torn or
    empty one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode(0o666))
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


DIGEST_CHUNK = 1 << 20  # files are hashed in 1 MiB reads: memory stays flat
_DIGESTS: dict[tuple, str] = {}  # (paths, sizes, mtimes, inodes) -> digest, per process


def files_digest(files: Iterable[tuple[str, Path]]) -> str:
    """sha256 over named files' contents (name, size, then the bytes, streamed in 1 MiB
    reads). The same unchanged files (path, size, mtime, inode) are hashed once per
    process: a reload or a second job over the same folder does not read them again."""
    files = sorted((str(name), Path(path)) for name, path in files)
    stats = [(name, os.stat(path)) for name, path in files]
    key = tuple(
        (name, str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        for (name, path), (_, st) in zip(files, stats, strict=True)
    )
    if key in _DIGESTS:
        return _DIGESTS[key]
    digest = hashlib.sha256()
    buffer = bytearray(DIGEST_CHUNK)
    view = memoryview(buffer)
    for (name, path), (_, st) in zip(files, stats, strict=True):
        digest.update(f"{name}\0{st.st_size}\0".encode())
        with open(path, "rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                digest.update(view[:n])
    _DIGESTS[key] = value = digest.hexdigest()
    return value


def table_files(root: Path, name: str) -> list[Path]:
    """The Parquet file(s) holding table `name` under `root` (none when absent)."""
    path = table_path(root, name)
    if path is None:
        return []
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def ensure_empty_output(path: Path, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless `overwrite` is set."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"output folder {path} exists and is not empty; pass --overwrite to replace it"
        )


@contextlib.contextmanager
def atomic_output_dir(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build an output folder beside its final place and move it in only on success.

    A failure (bad input, Ctrl-C, a crash) leaves no output folder behind; an existing
    one is replaced only when `overwrite` is set, and only once the new one is complete.
    """
    path = Path(path)
    ensure_empty_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    staging.chmod(_default_mode(0o777))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        trash = path.with_name(f".{path.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(path, trash)
        os.replace(staging, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, path)
