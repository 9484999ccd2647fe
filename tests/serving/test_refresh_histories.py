"""The histories `haowu refresh` re-embeds creators from read the pairs as training does."""

from pathlib import Path

import numpy as np
import pandas as pd

from features.matching_data import IdIndex
from serving.refresh.creators import _histories


def test_histories_are_oldest_first_with_each_good_once_at_its_first_time(
    tmp_path: Path,
) -> None:
    ts = pd.to_datetime(["2026-01-04", "2026-01-01", "2026-01-03", "2026-01-02", "2026-01-05"])
    pd.DataFrame(
        {
            "creator_id": [7, 7, 7, 9, 7],
            "product_id": [30, 10, 20, 10, 10],  # creator 7 takes good 10 again last
            "ts": ts,
        }
    ).to_parquet(tmp_path / "interactions.parquet")
    products = IdIndex(np.array([10, 20, 30]))
    got = _histories(tmp_path, np.array([7, 9, 8]), products)
    assert [g.tolist() for g in got] == [[0, 1, 2], [0], []]
