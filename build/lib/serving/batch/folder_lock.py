"""One batch job at a time per output folder: an exclusive, non-blocking lock file.

`output_lock(OUT)` takes `fcntl.flock` on `OUT/_lock` for the whole run and writes the
holder into it (pid, host, start time). A second run into the same folder fails at once
with a `FolderLockedError` naming the holder, before it touches anything. The kernel
releases a flock when its process dies, so a held flock is the truth: a lock file left
by a killed run (its pid recorded, its flock gone) is taken over, with a note in the log.
A clean exit removes the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from features.errors import HaowuError
from models.artifacts import BATCH_LOCK
from serving.batch.parts import OutputWriteError

log = logging.getLogger(__name__)


class FolderLockedError(HaowuError):
    """Another run holds the output folder."""


def _holder(text: str) -> str:
    try:
        doc = json.loads(text)
        return f"pid {doc['pid']} on {doc['host']}, started {doc['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "a process that recorded nothing"


@contextlib.contextmanager
def output_lock(out: Path, job: str = "batch job") -> Iterator[Path]:
    """Hold OUT's lock file for the duration of the block; see the module doc."""
    out = Path(out)
    path = out / BATCH_LOCK
    while True:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputWriteError(
                f"cannot use output folder {out}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise FolderLockedError(
                f"output folder {out} is in use by another {job} ({_holder(text)}); "
                f"wait for it to finish, or stop it (its lock file: {path})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # the file may have been removed (a clean exit) between open and flock: retry
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        left = os.pread(fd, 4096, 0).decode(errors="replace")
        if left.strip():
            log.warning("taking over %s: left by %s, which no longer holds it", path, _holder(left))
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "job": job,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still held: a waiting opener sees another inode
        os.close(fd)  # releases the flock
