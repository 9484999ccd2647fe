"""A ledger of finished steps, so a multi-step job resumes where it stopped.

Each finished step leaves `FOLDER/.steps/NAME.json` (its summary and duration). A rerun
skips steps with a record unless forced; a step that failed leaves no record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.io import write_json

LEDGER_VERSION = 1


class StepLedger:
    def __init__(self, folder: Path, force: bool = False) -> None:
        self.folder = Path(folder) / ".steps"
        self.force = force

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
        start = time.perf_counter()
        summary = step() or {}
        seconds = time.perf_counter() - start
        write_json(
            {"version": LEDGER_VERSION, "summary": summary, "seconds": round(seconds, 2)},
            self._path(name),
        )
        return summary, False

    def seconds(self, name: str) -> float | None:
        path = self._path(name)
        return json.loads(path.read_text()).get("seconds") if path.is_file() else None
