"""Category-diversity re-rankers and the knob's monotone effect on coverage."""

from __future__ import annotations

import numpy as np
import pytest

from features.settings import PolicyConfig
from models.retrieval.diversity import (
    cap_for,
    cap_rerank,
    first_in_category,
    mmr_rerank,
    rank_in_category,
    sorted_mmr_rerank,
)
from models.retrieval.policy import Policy
from models.retrieval.synthetic import diversity_scenario
from training.retrieval.diversity_curve import diversity_curve, list_metrics, plot_curve


def test_rank_in_category_counts_earlier_goods_of_the_same_category() -> None:
    cats = np.array([[3, 1, 3, 3, 1, 2]])
    valid = np.array([[True, True, False, True, True, True]])
    assert rank_in_category(cats, valid).tolist() == [[0, 0, 0, 1, 1, 0]]


def test_first_in_category_agrees_with_ranks() -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 7, (50, 40))
    valid = rng.random((50, 40)) > 0.2
    want = (rank_in_category(codes, valid) == 0) & valid
    assert (first_in_category(codes, valid, 7) == want).all()
    rel = np.sort(rng.random((50, 40)), axis=1)[:, ::-1].copy()
    levels = [codes // 4, codes // 2, codes]
    for lam in (0.9, 0.5, 0.0):
        slow = sorted_mmr_rerank(rel, levels, valid, lam)
        fast = sorted_mmr_rerank(rel, levels, valid, lam, n_codes=[2, 4, 7])
        assert (slow == fast).all()


def test_cap_rerank_rounds() -> None:
    cats = np.array([[1, 1, 1, 2, 2, 3, 1]])
    valid = np.ones_like(cats, bool)
    assert cap_rerank(cats, valid, 1).tolist() == [[0, 3, 5, 1, 4, 2, 6]]  # round robin
    assert cap_rerank(cats, valid, 2).tolist() == [[0, 1, 3, 4, 5, 2, 6]]
    assert cap_rerank(cats, valid, 7).tolist() == [list(range(7))]  # no cap: unchanged
    valid[0, 0] = False
    assert cap_rerank(cats, valid, 1)[0, -1] == 0  # invalid goods go last
    assert cap_for(0.1, 50) == 5 and cap_for(0.001, 50) == 1
    with pytest.raises(ValueError):
        cap_rerank(cats, valid, 0)


def test_mmr_extremes_and_one_level_equivalence() -> None:
    rng = np.random.default_rng(0)
    n, m, k = 20, 60, 15
    rel = np.sort(rng.random((n, m)), axis=1)[:, ::-1].copy()  # relevance order
    cats = rng.integers(0, 6, (n, m))
    levels = [cats, cats, cats]  # one level: the sorted form must equal greedy MMR
    valid = rng.random((n, m)) > 0.1
    for lam in (1.0, 0.8, 0.5, 0.2, 0.0):
        greedy = mmr_rerank(rel, levels, valid, lam, k)[:, :k]
        fast = sorted_mmr_rerank(rel, levels, valid, lam)[:, :k]
        assert (greedy == fast).all(), lam
    assert (mmr_rerank(rel, levels, valid, 1.0, k) == np.arange(m)).all()
    strict = sorted_mmr_rerank(rel, levels, valid, 0.0)
    for i in range(n):  # lam 0: every category once before any repeats
        first = strict[i, : len(np.unique(cats[i][valid[i]]))]
        assert len(np.unique(cats[i, first])) == len(first) and valid[i, first].all()
    with pytest.raises(ValueError):
        sorted_mmr_rerank(rel, levels, valid, 1.5)


@pytest.fixture(scope="module")
def scenario():
    return diversity_scenario(
        n_products=20_000, n_creators=300, depth=150, n_l1=8, n_l2=40, n_leaf=120, seed=0
    )


@pytest.mark.parametrize(
    "method,knob,values",
    [
        ("mmr_sort", "mmr_lambda", (1.0, 0.9, 0.8, 0.7, 0.5, 0.2)),
        ("mmr", "mmr_lambda", (1.0, 0.9, 0.7, 0.4)),
        ("cap", "category_cap_share", (1.0, 0.5, 0.2, 0.1, 0.04)),
    ],
)
def test_knob_raises_category_coverage_monotonically(scenario, method, knob, values) -> None:
    base = PolicyConfig(selected_boost=0.0, min_selected_share=0.0, exclude_seen=False)
    per_list, ild, recall = [], [], []
    for value in values:
        cfg = base.model_copy(update={"diversity_method": method, knob: value})
        lists = Policy(cfg).apply(
            scenario.candidate_ids, scenario.scores, scenario.catalog, None, None, 50
        )
        assert (lists.lengths == 50).all()
        m = list_metrics(lists.product_ids, scenario.truth, scenario.catalog, 50)
        per_list.append(m["categories_per_list"])
        ild.append(m["intra_list_diversity"])
        recall.append(m["recall@50"])
    assert per_list == sorted(per_list) and per_list[-1] > 1.5 * per_list[0]
    assert ild == sorted(ild) and ild[-1] > ild[0]
    assert recall[-1] < recall[0]  # diversity is not free on this scenario


def test_curve_reports_the_trade_off(scenario, tmp_path) -> None:
    frame = diversity_curve(
        scenario.candidate_ids,
        scenario.scores,
        scenario.truth,
        scenario.catalog,
        PolicyConfig(selected_boost=0.0, min_selected_share=0.0),
        k=50,
        cap_shares=(0.5, 0.1),
        mmr_lambdas=(0.9, 0.7),
        methods=("mmr_sort", "cap"),
    )
    assert len(frame) == 5 and frame.method.iloc[0] == "none"
    none = frame.iloc[0]
    assert none.relative_recall == 1.0 and none.per_list_gain == 1.0
    default = frame[(frame.method == "mmr_sort") & (frame.knob == 0.7)].iloc[0]
    assert default.per_list_gain >= 1.5 and default.relative_recall >= 0.95
    assert 0 < none.intra_list_diversity < default.intra_list_diversity <= 1
    path = plot_curve(frame, tmp_path / "curve.png")
    assert path.stat().st_size > 10_000


def test_curve_job_writes_csv_plot_and_default_point(scenario, tmp_path) -> None:
    import json

    from training.retrieval.diversity_curve import run

    cfg = PolicyConfig(selected_boost=0.0, min_selected_share=0.0)
    frame = run(
        scenario, cfg, tmp_path, title="test", mmr_lambdas=(0.9, 0.75), methods=("mmr_sort",)
    )
    assert {"diversity_curve.csv", "diversity_curve.png", "diversity_curve.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    summary = json.loads((tmp_path / "diversity_curve.json").read_text())
    assert summary["default"]["method"] == "mmr_sort" and summary["default"]["knob"] == 0.75
    assert summary["none"]["recall@50"] == frame.iloc[0]["recall@50"]
