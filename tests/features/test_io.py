"""Atomic outputs: complete or absent, readable like any other file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from features.errors import OutputExistsError
from features.io import atomic_output_dir, write_part, write_table


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_get_the_umask_mode_not_tempfile_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as staging:
            write_table(pd.DataFrame({"a": [1]}), staging, "t")
            write_part(pd.DataFrame({"a": [2]}), staging, 0)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert _mode(out) == 0o755
    assert _mode(out / "t.parquet") == 0o644
    assert _mode(out / "part-00000.parquet") == 0o644


def test_failure_leaves_nothing_and_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_output_dir(out) as staging:
        write_table(pd.DataFrame({"a": [1]}), staging, "old")
    with pytest.raises(RuntimeError), atomic_output_dir(out, overwrite=True) as staging:
        write_table(pd.DataFrame({"a": [2]}), staging, "new")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in out.iterdir()) == ["old.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_refuses_a_non_empty_folder_without_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_output_dir(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
