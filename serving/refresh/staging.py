"""All-or-nothing output of a refresh: stage every file, commit with one journal, move.

A refresh writes each output file under `DIR/.refresh/staging/`, at the path it will have
under DIR (`data/products.parquet`, `lists/creator/part-00000.parquet`, ...). Only when
every step has succeeded is the plan written (`staging/_plan.json`, atomically): that is
the commit. The files are then moved into place, each with an atomic rename on the same
file system, and the staging folder removed.

A refresh that dies before the plan leaves DIR as it was (the next one discards the
staging folder); one that dies after it is rolled forward by the next run, which
finishes the moves before doing anything else. Files a refresh drops (a lists part whose
rows all left) are listed in the plan and removed after the moves.

`Staging.folder(rel)` is a complete view of a folder being changed, for the steps that
read what they write (the data folder the index and lists are computed from): unchanged
files are hard links to DIR's (copies where links are refused), changed ones staged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from features.io import write_json
from models.artifacts import REFRESH_APPLIED, REFRESH_PLAN, REFRESH_STAGING, PipelineLayout

log = logging.getLogger(__name__)

VIEWS = ".views"  # staging/.views/REL: complete read views, never moved


def _link_tree(source: Path, target: Path, copy: bool) -> None:
    """`target` as a tree of hard links to `source`'s files (copies where refused, or
    all copies with `copy`: for a view whose readers may write in place)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if copy:
                raise OSError("copy asked")
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)


class Staging:
    """DIR's staging folder for one refresh; see the module doc."""

    def __init__(self, layout: PipelineLayout) -> None:
        self.layout = layout
        self.root = layout.refresh / REFRESH_STAGING
        self.removed: list[str] = []

    # ------------------------------------------------------------------ writing
    def path(self, rel: str | Path) -> Path:
        """Where to write the file that will be DIR/REL."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, rel: str | Path) -> None:
        """DIR/REL goes away at commit."""
        self.removed.append(str(rel))

    def folder(self, rel: str | Path, copy: bool = False) -> Path:
        """A complete view of DIR/REL with the files staged so far in place (links to
        DIR's for the others: read-only; `copy`: copies, for readers that write into
        it). Built on each call: stage first, then view."""
        view = self.root / VIEWS / rel
        shutil.rmtree(view, ignore_errors=True)
        _link_tree(self.layout.root / rel, view, copy)
        staged = self.root / rel
        if staged.is_dir():
            for path in sorted(staged.rglob("*")):
                if path.is_file():
                    dest = view / path.relative_to(staged)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.unlink(missing_ok=True)
                    os.link(path, dest)
        for rel_removed in self.removed:
            inside = Path(rel_removed)
            if inside.is_relative_to(rel):
                (self.root / VIEWS / inside).unlink(missing_ok=True)
        return view

    def staged_files(self) -> list[str]:
        """Every staged file, as its path under DIR (views and the plan left out)."""
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root)
            if path.is_file() and rel.parts[0] != VIEWS and rel != Path(REFRESH_PLAN):
                out.append(str(rel))
        return out

    # ------------------------------------------------------------------- commit
    def commit(self, record: dict[str, Any]) -> None:
        """Write the plan (the commit point), then move every file into place."""
        plan = {"moves": self.staged_files(), "removed": self.removed, "record": record}
        write_json(plan, self.root / REFRESH_PLAN)
        self.finish()

    def finish(self) -> None:
        """Carry out a written plan (again: every step may already be done), record the
        delta as applied, and drop the staging folder."""
        plan = json.loads((self.root / REFRESH_PLAN).read_text())
        root = self.layout.root
        for rel in plan["moves"]:
            source, target = self.root / rel, root / rel
            if source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
        for rel in plan["removed"]:
            (root / rel).unlink(missing_ok=True)
        applied = read_applied(self.layout)
        record = plan["record"]
        if record.get("delta_digest") not in {a.get("delta_digest") for a in applied}:
            write_json([*applied, record], self.layout.refresh / REFRESH_APPLIED)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def recover(self) -> str | None:
        """Before a refresh: finish a committed one, or discard an uncommitted one.
        Returns what was done (None: nothing was left)."""
        if (self.root / REFRESH_PLAN).is_file():
            log.warning("finishing the refresh committed in %s before this one", self.root)
            self.finish()
            return "rolled forward"
        if self.root.exists():
            log.warning("discarding an unfinished refresh's staging folder %s", self.root)
            self.discard()
            return "discarded"
        return None


def read_applied(layout: PipelineLayout) -> list[dict[str, Any]]:
    """The refreshes applied to DIR, oldest first (each: delta digest, time, counts)."""
    path = layout.refresh / REFRESH_APPLIED
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    return doc if isinstance(doc, list) else []
