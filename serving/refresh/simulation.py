"""`haowu bench refresh`: a replayed week, kept up to date three ways, scored each day.

The start state and the daily deltas come from features/synthetic/timeline.py. Every arm
starts from a copy of the same start pipeline folder (data, tier, matching, creator and
product lists) and is then advanced once a day with that day's delta; how it advances is
the arm's business, handed in by the caller (cli.py: the retrain arm needs training/,
which serving may not import). Per day d and arm:

- **Recall@k** of the creator lists *as they stand at the start of day d* (after days
  < d) against day d's new pairs: the (creator, good) pairs promoted on day d that the
  creator had not promoted before day d. For each creator with a list and at least one
  new pair, recall = new pairs found in its top k / its new pairs (the denominator of
  training/evaluation's recall@k); the day's figure is the mean over those creators.
- **Cost**: the seconds the arm's daily step took (0 for an arm that does nothing).
- **Freshness** of the goods listed on day d: a good first appears when it is in some
  creator's list after an arm's daily step; its latency is the simulated time from its
  `listed_at` to the end of that day plus the seconds that step took. Reported: the
  share of day-d goods in some list at the end of day d, and the median latency in hours
  over the day's goods (a good never listed counts as infinitely late: null when more
  than half are).
  Of those, the goods the arm's folder has tiered above L0 and whose merchant is not
  flagged are *eligible* (a list may hold them); the share of them in some list at the
  end of day d is reported beside it (null for an arm that tiers no new good).
- **Flagged**: the goods of the merchant flagged that day still in some creator list
  after the day's step (0 is the target), and how many were in lists before it.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.io import has_table, read_table
from features.product_facts import MERCHANT_FLAG
from features.synthetic.timeline import Timeline
from models.artifacts import TIERS, PipelineLayout

log = logging.getLogger(__name__)

Advance = Callable[[Path], float]  # a day's delta folder -> seconds the arm spent on it
PAIR = ["creator_id", "product_id"]


@dataclass(frozen=True)
class Arm:
    """One way of keeping a pipeline folder up to date.

    `start(folder)` is given the arm's own copy of the start pipeline folder and returns
    its daily step, `advance(day_delta_dir) -> seconds`, which must leave the folder's
    creator lists as they stand at the end of that day."""

    start: Callable[[Path], Advance]
    note: str = ""


def unchanged(folder: Path) -> Advance:
    """The `never` arm: the start lists, never changed (cost 0)."""
    return lambda delta: 0.0


def list_pairs(folder: Path) -> pd.DataFrame:
    """The (creator, good) pairs of a pipeline folder's creator lists."""
    return pd.read_parquet(PipelineLayout(folder).creator_lists, columns=PAIR)


def eligible(folder: Path, goods: np.ndarray, flagged_goods: np.ndarray) -> np.ndarray:
    """Of `goods`, those a list may hold in this folder: tiered above L0 by its tier table
    and not of a flagged merchant (a folder that never tiered them holds none)."""
    tiers = pd.read_parquet(PipelineLayout(folder).tier / TIERS, columns=["product_id", "tier"])
    tiers = tiers[tiers["product_id"].isin(goods)]
    above = tiers.loc[tiers["tier"].fillna(0).to_numpy() > 0, "product_id"].to_numpy()
    return np.setdiff1d(above, flagged_goods)


def new_pairs(day: pd.DataFrame, seen: pd.MultiIndex) -> pd.DataFrame:
    """Day d's distinct (creator, good) pairs the creator had not promoted before."""
    pairs = day[PAIR].drop_duplicates()
    return pairs[~pd.MultiIndex.from_frame(pairs).isin(seen)].reset_index(drop=True)


def recall_at(lists: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float, int]:
    """(truth pairs in the list / truth pairs) per creator with a truth pair, averaged two
    ways: over the creators that have a list, and over all of them (a creator without a
    list, e.g. one who joined after the lists were made, scores 0). Returns (recall with a
    list, recall over all, creators with a list); NaN when there is no truth pair."""
    if truth.empty:
        return math.nan, math.nan, 0
    found = truth.merge(lists.drop_duplicates(), on=PAIR, how="left", indicator=True)
    found["hit"] = found.pop("_merge").eq("both")
    per_creator = found.groupby("creator_id")["hit"].mean()
    listed = per_creator[per_creator.index.isin(lists["creator_id"].unique())]
    with_list = float(listed.mean()) if len(listed) else math.nan
    return with_list, float(per_creator.mean()), len(listed)


@dataclass
class Freshness:
    """When (and on which day) each good listed during the run first appeared in some
    creator list."""

    listed_at: dict[int, pd.Series] = field(default_factory=dict)  # day -> listed_at by good
    seen: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {"at": pd.Series(dtype="datetime64[ns]"), "day": pd.Series(dtype="int64")}
        )
    )

    def list(self, day: int, goods: pd.Series) -> None:
        self.listed_at[day] = goods

    def observe(self, listed: np.ndarray, day: int, when: pd.Timestamp) -> None:
        """Goods in some list at the end of `day`, at `when` (its end + the step's time)."""
        pending = np.concatenate([s.index.to_numpy() for s in self.listed_at.values()])
        fresh = np.setdiff1d(np.intersect1d(pending, listed), self.seen.index.to_numpy())
        if len(fresh):
            found = pd.DataFrame({"at": when, "day": day}, index=fresh)
            self.seen = pd.concat([self.seen, found]) if len(self.seen) else found

    def same_day_share(self, day: int) -> float:
        goods = self.listed_at[day]
        if not len(goods):
            return math.nan
        days = self.seen["day"].reindex(goods.index)
        return float((days == day).mean())

    def median_hours(self, day: int) -> float | None:
        goods = self.listed_at[day]
        if not len(goods):
            return None
        seen = self.seen["at"].reindex(goods.index)
        hours = ((seen - goods) / pd.Timedelta(hours=1)).fillna(np.inf).to_numpy()
        median = float(np.median(hours))
        return round(median, 2) if math.isfinite(median) else None


class World:
    """What the simulation knows of the marketplace: pairs promoted so far, goods'
    merchants and listing times; advanced with each day's delta."""

    def __init__(self, start: Path) -> None:
        inter = read_table(start, "interactions", columns=PAIR)
        self.seen = pd.MultiIndex.from_frame(inter.drop_duplicates())
        products = read_table(start, "products", columns=["product_id", "merchant_id"])
        self.merchant_of = products.set_index("product_id")["merchant_id"]
        merchants = read_table(start, "merchants")
        flag = merchants.get(MERCHANT_FLAG, pd.Series(False, index=merchants.index))
        self.flagged = merchants.loc[flag.to_numpy(bool), "merchant_id"].to_numpy(np.int64)

    def day(self, delta: Path) -> dict[str, pd.DataFrame]:
        return {
            name: read_table(delta, name)
            for name in ("interactions", "products", "merchants")
            if has_table(delta, name)
        }

    def advance(self, tables: dict[str, pd.DataFrame]) -> None:
        if "interactions" in tables:
            pairs = tables["interactions"][PAIR].drop_duplicates()
            self.seen = self.seen.append(pd.MultiIndex.from_frame(pairs)).unique()
        if "products" in tables:
            goods = tables["products"].set_index("product_id")["merchant_id"]
            self.merchant_of = pd.concat([self.merchant_of, goods])
        if "merchants" in tables:
            rows = tables["merchants"]
            newly = rows.loc[rows[MERCHANT_FLAG].to_numpy(bool), "merchant_id"].to_numpy(np.int64)
            self.flagged = np.union1d(self.flagged, newly)

    def goods_of(self, merchants: np.ndarray) -> np.ndarray:
        return self.merchant_of.index[self.merchant_of.isin(merchants)].to_numpy()


def simulate(
    timeline: Timeline,
    start_folder: Path,
    arms: dict[str, Arm],
    work: Path,
    k: int = 50,
    echo: Callable[[str], None] = log.info,
) -> list[dict[str, Any]]:
    """Advance every arm through the timeline's days; one row per (day, arm)."""
    folders: dict[str, Path] = {}
    steps: dict[str, Advance] = {}
    for name, arm in arms.items():
        folders[name] = Path(work) / name
        shutil.copytree(start_folder, folders[name], symlinks=True)
        steps[name] = arm.start(folders[name])
    world = World(timeline.start)
    freshness = {name: Freshness() for name in arms}
    rows: list[dict[str, Any]] = []
    for d in range(1, timeline.days + 1):
        tables = world.day(timeline.day(d))
        truth = new_pairs(tables.get("interactions", pd.DataFrame(columns=PAIR)), world.seen)
        listed = tables.get("products", pd.DataFrame(columns=["product_id", "listed_at"]))
        goods = listed.set_index("product_id")["listed_at"]
        world.advance(tables)
        merchants = tables.get("merchants", pd.DataFrame(columns=["merchant_id", MERCHANT_FLAG]))
        flagged = world.goods_of(merchants.loc[merchants[MERCHANT_FLAG], "merchant_id"].to_numpy())
        flagged_all = world.goods_of(world.flagged)
        for name in arms:
            lists = list_pairs(folders[name])
            recall, recall_all, scored = recall_at(lists, truth[PAIR])
            flagged_before = int(np.isin(lists["product_id"].unique(), flagged).sum())
            seconds = steps[name](timeline.day(d))
            after = list_pairs(folders[name])["product_id"].unique()
            freshness[name].list(d, goods)
            when = timeline.day_end(d) + pd.Timedelta(seconds=seconds)
            freshness[name].observe(after, d, when)
            fit = eligible(folders[name], goods.index.to_numpy(), flagged_all)
            row = {
                "day": d,
                "arm": name,
                f"recall@{k}": round(recall, 4) if math.isfinite(recall) else None,
                f"recall@{k}_all_creators": (
                    round(recall_all, 4) if math.isfinite(recall_all) else None
                ),
                "creators_scored": scored,
                "creators_with_new_pairs": int(truth["creator_id"].nunique()),
                "new_pairs": len(truth),
                "seconds": round(seconds, 2),
                "new_goods": len(goods),
                "new_goods_listed_same_day": round(freshness[name].same_day_share(d), 4),
                "new_goods_eligible": len(fit),
                "eligible_listed_same_day": (
                    round(float(np.isin(fit, after).mean()), 4) if len(fit) else None
                ),
                "flagged_goods_in_lists_before": flagged_before,
                "flagged_goods_in_lists": int(np.isin(after, flagged).sum()),
            }
            rows.append(row)
            echo(
                f"day {d} {name:>8}: recall@{k} {row[f'recall@{k}']}, "
                f"{row['seconds']:.1f}s, new goods listed {row['new_goods_listed_same_day']:.2f}, "
                f"flagged goods left {row['flagged_goods_in_lists']}"
            )
    for row in rows:
        row["freshness_median_h"] = freshness[row["arm"]].median_hours(row["day"])
    return rows


def summary(rows: list[dict[str, Any]], k: int, start_seconds: float) -> dict[str, Any]:
    """Means per arm and the figures the targets are stated in. Recall comparisons leave
    day 1 out: every arm still holds the start lists then."""
    frame = pd.DataFrame(rows)
    recall = f"recall@{k}"
    for column in (recall, "eligible_listed_same_day"):
        frame[column] = frame[column].astype(float)
    later = frame[frame["day"] > 1]
    means = frame.groupby("arm", sort=False)[["seconds", "new_goods_listed_same_day"]].mean()
    means[f"{recall} (days 2+)"] = later.groupby("arm", sort=False)[recall].mean()
    out: dict[str, Any] = {
        "per_arm": {
            arm: {key: round(float(v), 4) for key, v in values.items()}
            for arm, values in means.iterrows()
        },
        "start_pipeline_seconds": round(start_seconds, 2),
    }
    by_arm = {arm: part.set_index("day") for arm, part in frame.groupby("arm")}
    retrain, never = by_arm.get("retrain"), by_arm.get("never")
    if retrain is not None:
        out["retrain_seconds_mean"] = round(float(retrain["seconds"].mean()), 2)
    for arm, days in by_arm.items():
        if arm in ("retrain", "never"):
            continue
        out[f"{arm}_flagged_goods_left"] = int(days["flagged_goods_in_lists"].sum())
        out[f"{arm}_eligible_listed_same_day_min"] = round(
            float(days["eligible_listed_same_day"].astype(float).min()), 4
        )
        if retrain is not None:
            share = days["seconds"] / retrain["seconds"]
            out[f"{arm}_cost_share_of_retrain_max"] = round(float(share.max()), 4)
            gap = (retrain[recall] - days[recall]).loc[2:]
            out[f"{arm}_recall_gap_to_retrain_max"] = round(float(gap.max()), 4)
        if never is not None:
            ratio = (days[recall] / never[recall]).loc[2:]
            out[f"{arm}_over_never_recall_min"] = round(float(ratio.min()), 4)
            every = f"{recall}_all_creators"
            ratio = (days[every].astype(float) / never[every].astype(float)).loc[2:]
            out[f"{arm}_over_never_recall_all_creators_min"] = round(float(ratio.min()), 4)
    return out


def _cell(value: Any, width: int, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{fmt}}"


def table(rows: list[dict[str, Any]], k: int) -> str:
    """Days down, arms across: recall@k, seconds, the share of the day's new goods (and
    of its eligible ones) in some list at the end of the day, flagged goods left."""
    frame = pd.DataFrame(rows).astype({f"recall@{k}": float, "eligible_listed_same_day": float})
    arms = list(dict.fromkeys(frame["arm"]))
    cell = "recall   secs   new  elig  flag"
    lines = [
        f"{'day':>3}  " + "  ".join(f"{a:^{len(cell)}}" for a in arms),
        f"{'':>3}  " + "  ".join(cell for _ in arms),
    ]
    for day, part in frame.groupby("day"):
        by = part.set_index("arm")
        cells = [
            " ".join(
                (
                    _cell(by.at[a, f"recall@{k}"], 6, ".4f"),
                    _cell(by.at[a, "seconds"], 6, ".1f"),
                    _cell(by.at[a, "new_goods_listed_same_day"], 5, ".2f"),
                    _cell(by.at[a, "eligible_listed_same_day"], 5, ".2f"),
                    _cell(int(by.at[a, "flagged_goods_in_lists"]), 5, "d"),
                )
            )
            for a in arms
        ]
        lines.append(f"{day:>3}  " + "  ".join(cells))
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], k: int, path: Path, title: str) -> Path:
    """Recall@k per day, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, part in frame.groupby("arm", sort=False):
        ax.plot(part["day"], part[f"recall@{k}"].astype(float), marker="o", label=arm)
    ax.set_xlabel("day")
    ax.set_ylabel(f"Recall@{k} on the day's new pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
