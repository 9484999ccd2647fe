"""A ledger of finished steps, so a multi-step job resumes where it stopped.

Each finished step leaves `FOLDER/.steps/NAME.json` (its summary and duration). A rerun
skips steps with a record unless forced; a step that failed leaves no record.

`FOLDER/.steps/_layout.json` says which layout version wrote the folder and with which
identity (e.g. preset and a hash of the resolved settings): a folder written by another
version, or with other settings, is refused with a clear error rather than half reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.errors import HaowuError
from features.io import write_json

LEDGER_VERSION = 2
LAYOUT_FILE = "_layout.json"


class StaleFolderError(HaowuError):
    """The folder was written by another layout version or with other settings."""


class StepLedger:
    def __init__(
        self,
        folder: Path,
        force: bool = False,
        layout: int | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        """`layout`: the folder layout this code writes (None: no layout check).
        `identity`: what must match for finished steps to be reused (with `force`, it is
        simply rewritten)."""
        self.root = Path(folder)
        self.folder = self.root / ".steps"
        self.force = force
        if layout is not None:
            self._check_layout(layout, dict(identity or {}))

    # -- layout --------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        path = self.folder / LAYOUT_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def set_meta(self, **values: Any) -> None:
        write_json({**self.meta, **values}, self.folder / LAYOUT_FILE)

    def _check_layout(self, layout: int, identity: dict[str, Any]) -> None:
        fresh = not self.root.exists() or not any(self.root.iterdir())
        meta = self.meta
        if not fresh and not self.folder.is_dir():
            raise StaleFolderError(
                f"{self.root} is not empty and is not a pipeline folder (no .steps/); "
                "choose an empty or new folder"
            )
        if not fresh and not self.force:
            found = meta.get("layout", 1)  # layout 1 wrote no layout file
            if found != layout:
                age = "an older" if found < layout else "a newer"
                raise StaleFolderError(
                    f"{self.root} was written by {age} haowu (folder layout {found}, this "
                    f"version writes layout {layout}); rerun with --force to rebuild it in "
                    "place, or choose another folder"
                )
            changed = sorted(k for k in identity if meta.get(k) != identity[k])
            if changed:
                was = ", ".join(f"{k}={meta.get(k)!r}" for k in changed)
                now = ", ".join(f"{k}={identity[k]!r}" for k in changed)
                raise StaleFolderError(
                    f"{self.root} was built with {was}, this run has {now}: finished steps "
                    "would not match; rerun with --force to rebuild, or choose another folder"
                )
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(
            {
                "layout": layout,
                **identity,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            self.folder / LAYOUT_FILE,
        )

    # -- steps ---------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def done(self, name: str) -> dict[str, Any] | None:
        path = self._path(name)
        if self.force or not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record if record.get("version") == LEDGER_VERSION else None

    def run(self, name: str, step: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Run `step` unless already done; returns (summary, skipped)."""
        record = self.done(name)
        if record is not None:
            return record["summary"], True
        self._path(name).unlink(missing_ok=True)  # a forced step that fails leaves no record
        start = time.perf_counter()
        summary = step() or {}
        seconds = time.perf_counter() - start
        write_json(
            {"version": LEDGER_VERSION, "summary": summary, "seconds": round(seconds, 2)},
            self._path(name),
        )
        return summary, False

    def forget(self, name: str) -> None:
        """Drop a step's record: it runs again (e.g. its input was rebuilt)."""
        self._path(name).unlink(missing_ok=True)

    def summary(self, name: str) -> dict[str, Any] | None:
        path = self._path(name)
        return json.loads(path.read_text()).get("summary") if path.is_file() else None

    def seconds(self, name: str) -> float | None:
        path = self._path(name)
        return json.loads(path.read_text()).get("seconds") if path.is_file() else None
