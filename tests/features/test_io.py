"""Atomic outputs: complete or absent, readable like any other file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from features.errors import OutputExistsError
from features.io import atomic_output_dir, write_json, write_part, write_table


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


def test_write_json_fsyncs_a_uniquely_named_temp_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the rename must not leave an empty manifest (fsync first), and two
    writers of one path must not share a temporary file (a fixed name did)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "_SUCCESS"
    write_json({"a": 1}, target)
    write_json({"a": 2}, target)
    assert [kind for kind, _ in events] == ["fsync", "replace"] * 2
    assert events[0][1] == events[1][1]  # the file fsynced is the file renamed
    assert events[1][1] != events[3][1]  # a fresh temporary name each time
    assert target.read_text() == '{\n  "a": 2\n}\n'
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [p.name for p in tmp_path.iterdir()] == ["_SUCCESS"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
