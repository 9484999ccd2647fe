"""A data folder replayed as days: a start state and one delta folder per day.

`haowu bench refresh` needs the world to move: goods listed, creators joining, tastes
drifting in the interactions, a merchant flagged. The generator's own timeline gives
all but the flags, so a data folder (as `haowu generate` writes it) is cut at

    T0 = the midnight after its last event - N days

into `OUT/start/`, a full data folder of every contract table as of T0, and
`OUT/day-01 .. day-NN/`, delta folders as `haowu refresh --delta` reads them
(serving/refresh/delta.py):

- a good enters on the day it is listed (`listed_at`) or first promoted, whichever is
  first; its `product_stats` row and its `broker_products` rows go with it;
- a creator enters on the day it joined or first promoted, whichever is first; the join
  day is read from `account_age_days`, counted back from the data's end (the generator's
  `joined_at` is not a contract column);
- an interaction on the day of its `ts`; a label on the day of its `labelled_at` (or its
  good's day, when later);
- merchants and brokers are all in the start state, and on each day one merchant not
  flagged before, drawn by a seeded generator among those with goods promoted before
  T0, with odds in proportion to those promotions (so its goods are likely in lists), is
  flagged (`flagged_low_quality: true` in the day's `merchants.parquet`).

Rows of tables a delta cannot carry (`tier_labels`, `broker_products` of later goods) are
kept by day under `OUT/later/day-NN/`, so no row is lost: a daily retrain may read them.
The other columns are as the generator wrote them at the end of its window (follower
counts, 30-day stats): only which rows exist is replayed. `truth/` is not copied (the
jobs read it only to report against the hidden truth; without it train-matching skips
the oracle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import HaowuError
from features.io import atomic_output_dir, has_table, read_table, write_part, write_table
from features.product_facts import MERCHANT_FLAG

DAY = pd.Timedelta(days=1)
START = "start"
LATER = "later"
MANIFEST = "timeline.json"
START_DAY = 0  # the day index of rows in the start state


class TimelineError(HaowuError):
    """A data folder that cannot be cut into the days asked for."""


@dataclass(frozen=True)
class Timeline:
    """Where a split wrote the start state and the days, and what each day holds."""

    root: Path
    t0: pd.Timestamp
    days: int
    flagged: tuple[int, ...]  # the merchant flagged on day d is flagged[d - 1]

    @property
    def start(self) -> Path:
        return self.root / START

    def day(self, d: int) -> Path:
        """Day d's delta folder (d = 1 .. days)."""
        return self.root / f"day-{d:02d}"

    def later(self, d: int) -> Path:
        """Day d's rows a delta cannot carry (tier_labels, broker_products), if any."""
        return self.root / LATER / f"day-{d:02d}"

    def day_start(self, d: int) -> pd.Timestamp:
        return self.t0 + (d - 1) * DAY

    def day_end(self, d: int) -> pd.Timestamp:
        return self.t0 + d * DAY

    @classmethod
    def load(cls, root: Path) -> Timeline:
        doc = json.loads((Path(root) / MANIFEST).read_text())
        return cls(Path(root), pd.Timestamp(doc["t0"]), doc["days"], tuple(doc["flagged"]))


def _day_of(times: pd.Series, t0: pd.Timestamp) -> np.ndarray:
    """0 before T0, else 1 + whole days since T0."""
    delta = (times - t0).to_numpy()
    day = np.floor_divide(delta, np.timedelta64(1, "D")).astype(np.int64) + 1
    return np.maximum(day, START_DAY)


def _first_day(interactions: pd.DataFrame, key: str, ids: pd.Series) -> np.ndarray:
    """The day of each id's first interaction (a large number when it has none)."""
    first = interactions.groupby(key)["day"].min()
    return first.reindex(ids.to_numpy()).fillna(np.iinfo(np.int32).max).to_numpy(np.int64)


def _write_by_day(frame: pd.DataFrame, day: np.ndarray, name: str, folder_of) -> None:
    for d in np.unique(day[day > START_DAY]):
        write_table(frame.loc[day == d].reset_index(drop=True), folder_of(int(d)), name)


def split_timeline(
    data_dir: Path, out: Path, days: int, seed: int = 0, overwrite: bool = False
) -> Timeline:
    """Cut DATA into OUT/start and OUT/day-01 .. day-DAYS (see the module doc)."""
    data_dir, out = Path(data_dir), Path(out)
    if days < 1:
        raise TimelineError(f"--days must be >= 1, got {days}")
    for name in ("merchants", "creators", "products", "interactions"):
        if not has_table(data_dir, name):
            raise TimelineError(f"{data_dir}: no {name} table to replay")
    inter = read_table(data_dir, "interactions")
    if "ts" not in inter.columns or inter.empty:
        raise TimelineError(f"{data_dir}: interactions without times cannot be replayed")
    end = inter["ts"].max().floor("D") + DAY
    t0 = end - days * DAY
    if inter["ts"].min() >= t0:
        raise TimelineError(f"{data_dir}: no interaction before T0 = {t0} ({days} days)")
    inter["day"] = _day_of(inter["ts"], t0)

    products = read_table(data_dir, "products")
    listed = (
        _day_of(products["listed_at"], t0)
        if "listed_at" in products.columns
        else np.full(len(products), START_DAY)
    )
    product_day = np.minimum(listed, _first_day(inter, "product_id", products["product_id"]))
    creators = read_table(data_dir, "creators")
    joined = (
        np.maximum(days - creators["account_age_days"].to_numpy(np.int64), START_DAY)
        if "account_age_days" in creators.columns
        else np.full(len(creators), START_DAY)
    )
    creator_day = np.minimum(joined, _first_day(inter, "creator_id", creators["creator_id"]))
    day_of_product = pd.Series(product_day, index=products["product_id"].to_numpy())

    merchants = read_table(data_dir, "merchants")
    flagged = _draw_flags(merchants, products, inter, days, seed)

    with atomic_output_dir(out, overwrite) as stage:
        start = stage / START
        start.mkdir()

        def day_dir(d: int) -> Path:
            return stage / f"day-{d:02d}"

        def later_dir(d: int) -> Path:
            return stage / LATER / f"day-{d:02d}"

        for d in range(1, days + 1):
            day_dir(d).mkdir()
        write_table(merchants, start, "merchants")
        for name, frame, day in (
            ("products", products, product_day),
            ("creators", creators, creator_day),
        ):
            write_table(frame.loc[day == START_DAY].reset_index(drop=True), start, name)
            _write_by_day(frame, day, name, day_dir)
        keyed = {"product_stats": day_dir, "broker_products": later_dir}
        for name, folder_of in keyed.items():
            if has_table(data_dir, name):
                frame = read_table(data_dir, name)
                day = day_of_product.reindex(frame["product_id"].to_numpy()).to_numpy(np.int64)
                write_table(frame.loc[day == START_DAY].reset_index(drop=True), start, name)
                _write_by_day(frame, day, name, folder_of)
        if has_table(data_dir, "tier_labels"):
            labels = read_table(data_dir, "tier_labels")
            day = day_of_product.reindex(labels["product_id"].to_numpy()).to_numpy(np.int64)
            if "labelled_at" in labels.columns:
                day = np.maximum(day, _day_of(labels["labelled_at"], t0))
            write_table(labels.loc[day == START_DAY].reset_index(drop=True), start, "tier_labels")
            _write_by_day(labels, day, "tier_labels", later_dir)
        if has_table(data_dir, "brokers"):
            write_table(read_table(data_dir, "brokers"), start, "brokers")
        day = inter.pop("day").to_numpy()
        write_part(inter.loc[day == START_DAY].reset_index(drop=True), start / "interactions", 0)
        _write_by_day(inter, day, "interactions", day_dir)
        for d, merchant in enumerate(flagged, start=1):
            row = merchants.loc[merchants["merchant_id"] == merchant].copy()
            row[MERCHANT_FLAG] = True
            write_table(row.reset_index(drop=True), day_dir(d), "merchants")
        doc = {"t0": t0.isoformat(), "days": days, "flagged": flagged, "seed": seed,
               "source": str(data_dir.resolve())}  # fmt: skip
        (stage / MANIFEST).write_text(json.dumps(doc, indent=2) + "\n")
    return Timeline(out, t0, days, tuple(flagged))


def later_of(delta: Path) -> Path:
    """The `later` rows of the day whose delta folder (OUT/day-NN) is `delta`."""
    return Path(delta).parent / LATER / Path(delta).name


def add_later_rows(data_dir: Path, later: Path) -> dict[str, int]:
    """Append a day's `later` rows (labels, broker goods) to DATA's tables (one file each,
    as the start state holds them), as a daily retrain would find them; returns rows
    added per table."""
    added = {}
    for name in ("tier_labels", "broker_products"):
        if has_table(later, name) and has_table(data_dir, name):
            rows = read_table(later, name)
            table = pd.concat([read_table(data_dir, name), rows], ignore_index=True)
            write_table(table, data_dir, name)
            added[name] = len(rows)
    return added


def _draw_flags(
    merchants: pd.DataFrame,
    products: pd.DataFrame,
    inter: pd.DataFrame,
    days: int,
    seed: int,
) -> list[int]:
    """One merchant a day, never flagged before, with goods promoted before T0; drawn
    with odds in proportion to those promotions, so that its goods are likely in lists
    and their leaving them is measured."""
    before = inter.loc[inter["day"] == START_DAY, ["product_id"]]
    owner = before.merge(products[["product_id", "merchant_id"]], on="product_id")
    counts = owner["merchant_id"].value_counts()
    if MERCHANT_FLAG in merchants.columns:
        already = merchants.loc[merchants[MERCHANT_FLAG].to_numpy(bool), "merchant_id"]
        counts = counts.drop(already.to_numpy(np.int64), errors="ignore")
    if len(counts) < days:
        raise TimelineError(f"only {len(counts)} merchants to flag, {days} days asked")
    counts = counts.sort_index()  # the draw does not depend on value_counts' tie order
    rng = np.random.default_rng(seed)
    odds = counts.to_numpy(np.float64) / counts.sum()
    drawn = rng.choice(counts.index.to_numpy(np.int64), size=days, replace=False, p=odds)
    return [int(m) for m in drawn]
