"""The timeline split on tiny: no row lost or duplicated, no delta row older than its day,
and each day's delta accepted, in order, by the refresh's checks and data step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from features.contract import TABLES
from features.io import has_table, read_table
from features.product_facts import MERCHANT_FLAG
from features.synthetic.timeline import LATER, Timeline, TimelineError, split_timeline
from features.validate import validate_dir
from models.artifacts import PipelineLayout
from serving.refresh.merge import merge_delta

DAYS = 3


@pytest.fixture(scope="module")
def timeline(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Timeline:
    return split_timeline(tiny_data, tmp_path_factory.mktemp("timeline") / "t", DAYS, seed=1)


def _pieces(timeline: Timeline, name: str) -> list[pd.DataFrame]:
    folders = [timeline.start]
    for d in range(1, DAYS + 1):
        folders += [timeline.day(d), timeline.later(d)]
    return [read_table(f, name) for f in folders if has_table(f, name)]


@pytest.mark.parametrize(
    "name",
    ["creators", "products", "product_stats", "tier_labels", "interactions", "broker_products"],
)
def test_split_loses_and_duplicates_no_row(tiny_data: Path, timeline: Timeline, name: str) -> None:
    key = list(TABLES[name].key)
    whole = read_table(tiny_data, name).sort_values(key).reset_index(drop=True)
    parts = pd.concat(_pieces(timeline, name), ignore_index=True)
    parts = parts.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(parts, whole, check_dtype=False)


def test_merchants_all_start_and_one_flagged_a_day(tiny_data: Path, timeline: Timeline) -> None:
    merchants = read_table(tiny_data, "merchants")
    pd.testing.assert_frame_equal(read_table(timeline.start, "merchants"), merchants)
    for d, merchant in enumerate(timeline.flagged, start=1):
        row = read_table(timeline.day(d), "merchants")
        assert row["merchant_id"].tolist() == [merchant] and row[MERCHANT_FLAG].all()
        assert not merchants.set_index("merchant_id").at[merchant, MERCHANT_FLAG]
    assert len(set(timeline.flagged)) == DAYS


def test_no_row_older_or_newer_than_its_day(timeline: Timeline) -> None:
    inter = read_table(timeline.start, "interactions")
    assert inter["ts"].max() < timeline.t0
    assert read_table(timeline.start, "products")["listed_at"].max() < timeline.t0
    for d in range(1, DAYS + 1):
        lo, hi = timeline.day_start(d), timeline.day_end(d)
        day = read_table(timeline.day(d), "interactions")
        assert day["ts"].between(lo, hi, inclusive="left").all()
        goods = read_table(timeline.day(d), "products")
        assert (goods["listed_at"] < hi).all()
        stats = read_table(timeline.day(d), "product_stats")
        assert set(stats["product_id"]) == set(goods["product_id"])
        labels = timeline.later(d) / "tier_labels.parquet"
        if labels.is_file():
            assert (pd.read_parquet(labels)["labelled_at"] < hi).all()
    assert (timeline.root / LATER).is_dir()


def test_each_day_is_accepted_in_order(timeline: Timeline, tmp_path: Path) -> None:
    layout = PipelineLayout(tmp_path / "run")
    shutil.copytree(timeline.start, layout.data)
    validate_dir(layout.data)
    for d in range(1, DAYS + 1):
        changes = merge_delta(layout, timeline.day(d))
        assert len(changes.newly_flagged_merchants) == 1
    validate_dir(layout.data)
    assert Timeline.load(timeline.root) == timeline


def test_too_many_days_refused(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(TimelineError, match="no interaction before T0"):
        split_timeline(tiny_data, tmp_path / "t", 10_000)
