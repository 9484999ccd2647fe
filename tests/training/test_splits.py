import numpy as np
import pytest

from features.matching_data import IdIndex, Interactions
from training.evaluation.splits import (
    SplitError,
    cold_products,
    latest_split,
    random_split,
    time_split,
)

DAY = 86_400 * 10**9


def _inter(creator, product, days=None) -> Interactions:
    creator, product = np.asarray(creator), np.asarray(product)
    ts = None if days is None else (np.asarray(days, dtype=np.int64) * DAY)
    return Interactions(
        IdIndex(np.arange(creator.max() + 1) + 10**9),
        IdIndex(np.arange(product.max() + 1) + 5 * 10**9),
        creator,
        product,
        ts,
    )


def test_random_split_per_creator() -> None:
    rng = np.random.default_rng(0)
    creator = np.repeat(np.arange(200), 20)
    product = np.concatenate([rng.choice(500, 20, replace=False) for _ in range(200)])
    split = random_split(_inter(creator, product), 0.1, 0.1, seed=1)
    assert not (split.train & split.test).any() and not (split.val & split.test).any()
    assert (split.train | split.val | split.test).all()
    assert split.test.mean() == pytest.approx(0.1, abs=0.02)
    assert split.val.mean() == pytest.approx(0.1, abs=0.02)
    per_creator_train = np.bincount(creator[split.train], minlength=200)
    per_creator_test = np.bincount(creator[split.test], minlength=200)
    assert (per_creator_train >= 1).all() and (per_creator_test >= 1).all()
    again = random_split(_inter(creator, product), 0.1, 0.1, seed=1)
    assert (again.test == split.test).all(), "seeded"


def test_single_pair_creators_stay_in_training() -> None:
    inter = _inter([0, 1, 1, 1], [0, 0, 1, 2])
    split = random_split(inter, 0.1, 0.3)
    assert split.train[0] and not split.test[0]
    assert split.test[1:].sum() == 1


def test_nobody_splittable_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match="distinct products"):
        random_split(_inter([0, 1, 2], [0, 1, 2]))


def test_time_split_and_cold_slice() -> None:
    #            pairs: c0p0 c0p1 c1p0 c1p2 c2p3
    inter = _inter([0, 0, 1, 1, 2], [0, 1, 0, 2, 3], days=[0, 50, 10, 95, 99])
    split = time_split(inter, test_days=7, val_days=10)
    assert split.test.tolist() == [False, False, False, True, True]
    assert split.val.tolist() == [False, False, False, False, False]
    assert split.train.tolist() == [True, True, True, False, False]
    assert cold_products(inter, split).tolist() == [2, 3]


def test_time_split_needs_time_and_a_long_enough_log() -> None:
    with pytest.raises(SplitError, match="ts"):
        time_split(_inter([0, 1], [0, 1]), 7)
    with pytest.raises(SplitError, match="empty train"):
        time_split(_inter([0, 1], [0, 1], days=[0, 1]), test_days=30)


def test_fractions_must_leave_training() -> None:
    with pytest.raises(SplitError, match="< 1"):
        random_split(_inter([0, 0], [0, 1]), 0.5, 0.5)


def test_latest_split_holds_out_each_creators_latest_good() -> None:
    # creator 0 took goods 5, 3, 4 (days 2, 0, 1); creator 1 goods 1 and 2 on the same day;
    # creator 2 has one good and stays in training
    inter = _inter([0, 0, 0, 1, 1, 2], [3, 4, 5, 1, 2, 0], [0, 1, 2, 3, 3, 0])
    split = latest_split(inter)
    assert split.val.tolist() == [False, False, True, False, True, False]  # a tie: the later row
    assert (split.train == ~split.val).all() and not split.test.any()
    with pytest.raises(SplitError, match="times"):
        latest_split(_inter([0, 0], [1, 2]))
    with pytest.raises(SplitError, match="distinct products"):
        latest_split(_inter([0, 1], [1, 2], [0, 1]))
