"""The delta merged into DIR/data: keyed upserts and appended interactions, staged.

`products`, `merchants`, `creators` and `product_stats` rows of the delta replace the rows
of the same key (in place) or are appended; `interactions` are appended (a new part when
the table is a folder of parts, so the old parts stay as they are). Tables the delta
does not touch are not rewritten. `Changes` says what is new and what changed, for the
steps after: which goods to tier, embed and index, whose lists to rewrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import TABLES
from features.io import read_table, table_files, table_path, write_part, write_table
from features.product_facts import MERCHANT_FLAG
from models.artifacts import PipelineLayout
from serving.refresh.delta import UPSERTED, Delta, read_delta
from serving.refresh.staging import Staging

DATA = "data"  # DIR/data, as PipelineLayout names it
_PART = re.compile(r"part-(\d+)\.parquet")


@dataclass
class Changes:
    """What the delta adds and changes, by internal ID."""

    new: dict[str, np.ndarray] = field(default_factory=dict)  # table -> keys not in DIR/data
    changed: dict[str, np.ndarray] = field(default_factory=dict)  # table -> keys replaced
    newly_flagged_merchants: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    interactions: pd.DataFrame | None = None  # the appended rows

    def of(self, kind: str, table: str) -> np.ndarray:
        return getattr(self, kind).get(table, np.empty(0, np.int64))

    @property
    def interaction_creators(self) -> np.ndarray:
        if self.interactions is None:
            return np.empty(0, np.int64)
        return np.unique(self.interactions["creator_id"].to_numpy(np.int64))

    def counts(self) -> dict[str, int]:
        out = {f"new_{t}": len(v) for t, v in self.new.items()}
        out |= {f"changed_{t}": len(v) for t, v in self.changed.items()}
        out["newly_flagged_merchants"] = len(self.newly_flagged_merchants)
        if self.interactions is not None:
            out["new_interactions"] = len(self.interactions)
            out["creators_with_new_interactions"] = len(self.interaction_creators)
        return out


def _upsert(base: pd.DataFrame, rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """`base` without the rows of `rows`' keys, then `rows` (the new version of each)."""
    rows = rows[list(base.columns)].astype(base.dtypes.to_dict())
    kept = base[~base[key].isin(rows[key])]
    return pd.concat([kept, rows], ignore_index=True)


def _stage_table(staging: Staging, data_dir: Path, name: str, frame: pd.DataFrame) -> None:
    """Stage the whole table `name`, in the form DIR/data holds it (one file or parts)."""
    path = table_path(data_dir, name)
    assert path is not None
    if path.is_file():
        write_table(frame, staging.path(Path(DATA) / path.name).parent, name)
        return
    folder = Path(DATA) / path.name
    parts = table_files(data_dir, name)
    for part in parts[1:]:
        staging.remove(folder / part.name)
    write_part(frame, staging.path(folder / parts[0].name).parent, _part_number(parts[0]))


def _part_number(path: Path) -> int:
    match = _PART.fullmatch(path.name)
    return int(match.group(1)) if match else 0


def _append_interactions(staging: Staging, data_dir: Path, rows: pd.DataFrame) -> None:
    path = table_path(data_dir, "interactions")
    assert path is not None
    if path.is_file():
        base = read_table(data_dir, "interactions")
        rows = rows[list(base.columns)].astype(base.dtypes.to_dict())
        _stage_table(staging, data_dir, "interactions", pd.concat([base, rows], ignore_index=True))
        return
    parts = table_files(data_dir, "interactions")
    following = max((_part_number(p) for p in parts), default=-1) + 1
    first = pd.read_parquet(parts[0])
    rows = rows[list(first.columns)].astype(first.dtypes.to_dict())
    folder = staging.path(Path(DATA) / path.name / "x").parent
    write_part(rows, folder, following)


def stage_data(staging: Staging, data_dir: Path, delta: Delta) -> Changes:
    """Stage the changed tables of DIR/data; return what is new and what changed."""
    changes = Changes()
    for name in UPSERTED:
        rows = delta.tables.get(name)
        if rows is None:
            continue
        key = TABLES[name].key[0]
        base = read_table(data_dir, name)
        known = base[key].isin(rows[key])
        keys = rows[key].to_numpy(np.int64)
        existing = np.isin(keys, base[key].to_numpy(np.int64))
        changes.new[name] = np.sort(keys[~existing])
        changes.changed[name] = np.sort(keys[existing])
        if name == "merchants" and MERCHANT_FLAG in rows.columns:
            before = base.loc[known].set_index(key)[MERCHANT_FLAG].reindex(keys)
            flagged = rows[MERCHANT_FLAG].to_numpy(bool) & ~before.fillna(False).to_numpy(bool)
            changes.newly_flagged_merchants = np.sort(keys[flagged])
        _stage_table(staging, data_dir, name, _upsert(base, rows, key))
    if "interactions" in delta.tables:
        changes.interactions = delta.tables["interactions"]
        _append_interactions(staging, data_dir, changes.interactions)
    return changes


def merge_delta(layout: PipelineLayout, delta_dir: Path) -> Changes:
    """The refresh's data step alone: DELTA_DIR checked and merged into DIR/data, all or
    nothing (what a daily retrain applies before it trains again)."""
    delta = read_delta(Path(delta_dir), layout.data)
    staging = Staging(layout)
    staging.recover()
    try:
        changes = stage_data(staging, layout.data, delta)
    except BaseException:
        staging.discard()
        raise
    staging.commit({"delta_digest": delta.digest, "delta": str(Path(delta_dir).resolve())})
    return changes
