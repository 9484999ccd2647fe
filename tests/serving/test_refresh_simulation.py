"""`haowu bench refresh`: the scoring on planted lists with known answers, and the bench
end to end on a shrunken tiny preset (two days, one epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from serving.refresh.simulation import PAIR, Freshness, new_pairs, recall_at

T0 = pd.Timestamp("2026-10-30")


def _pairs(rows: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=PAIR)


def test_new_pairs_are_distinct_and_unseen() -> None:
    seen = pd.MultiIndex.from_frame(_pairs([(1, 10), (2, 20)]))
    day = _pairs([(1, 10), (1, 11), (1, 11), (2, 10)])
    assert new_pairs(day, seen).values.tolist() == [[1, 11], [2, 10]]


def test_recall_is_the_mean_over_creators_with_a_list_and_over_all() -> None:
    lists = _pairs([(1, 10), (1, 11), (1, 12), (2, 20), (2, 21)])
    # creator 1 finds 1 of 2, creator 2 none of 1, creator 3 has no list: 0 over all
    truth = _pairs([(1, 10), (1, 19), (2, 29), (3, 10)])
    recall, recall_all, scored = recall_at(lists, truth)
    assert scored == 2 and recall == pytest.approx(0.25)
    assert recall_all == pytest.approx(0.5 / 3)
    with_list, over_all, scored = recall_at(lists, _pairs([(3, 10)]))
    assert np.isnan(with_list) and over_all == 0.0 and scored == 0


def test_freshness_latency_and_same_day_share() -> None:
    fresh = Freshness()
    fresh.list(1, pd.Series([T0 + pd.Timedelta(hours=6), T0 + pd.Timedelta(hours=12)], [7, 8]))
    fresh.observe(np.array([7, 99]), 1, T0 + pd.Timedelta(days=1, seconds=36))  # 7 on day 1
    fresh.list(2, pd.Series([T0 + pd.Timedelta(hours=30)], [9]))  # 9 never listed
    fresh.observe(np.array([7, 8]), 2, T0 + pd.Timedelta(days=2))  # 8 on day 2
    assert fresh.same_day_share(1) == 0.5
    assert fresh.median_hours(1) == pytest.approx((18.01 + 36) / 2, abs=0.01)
    assert fresh.same_day_share(2) == 0.0 and fresh.median_hours(2) is None


BENCH_SETTINGS = [
    "data.n_creators=1000",
    "data.n_products=3000",
    "data.n_merchants=300",
    "data.interactions=20000",
    "refresh.bench.epochs=1",
    "matching.hidden=[32]",
    "matching.id_dim=16",
    "matching.side_dim=4",
    "matching.out_dim=16",
    "batch.workers=1",
]


def test_bench_refresh_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "refresh.json"
    args = ["bench", "refresh", "--preset", "tiny", "--days", "2", "--out", str(out)]
    for item in BENCH_SETTINGS:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    doc = json.loads(out.read_text())
    rows = pd.DataFrame(doc["rows"])
    assert sorted(zip(rows["day"], rows["arm"], strict=True)) == [
        (d, a) for d in (1, 2) for a in ("fine-tune", "never", "refresh", "retrain")
    ]
    recall = rows["recall@50"].astype(float)
    assert recall.between(0, 1).all()
    assert rows["recall@50_all_creators"].astype(float).between(0, 1).all()
    for arm in ("refresh", "fine-tune", "retrain"):  # a flagged merchant leaves every list
        updated = rows[rows["arm"] == arm]
        assert (updated["flagged_goods_in_lists"] == 0).all(), arm
        assert (updated["seconds"] > 0).all(), arm
    assert (rows.loc[rows["arm"] == "never", "new_goods_listed_same_day"] == 0).all()
    # the retrain's batch job gives the day's eligible new goods slots, as a refresh does
    for arm in ("refresh", "retrain"):
        listed = rows.loc[rows["arm"] == arm, "eligible_listed_same_day"].astype(float)
        assert (listed == 1.0).all(), (arm, listed.tolist())
    assert out.with_suffix(".png").is_file()
    for arm in ("never", "refresh", "fine-tune", "retrain"):
        assert arm in result.output
