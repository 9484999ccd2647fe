import numpy as np
import scipy.sparse as sp
import torch

from models.matching.creator_history import CreatorHistory
from models.matching.two_tower import TowerSpec, TwoTower, TwoTowerConfig


def _matrix() -> sp.csr_matrix:
    # creator 0: goods 1, 3; creator 1: none; creator 2: goods 0, 2, 3, 4
    rows, cols = [0, 0, 2, 2, 2, 2], [1, 3, 0, 2, 3, 4]
    return sp.csr_matrix((np.ones(6, np.float32), (rows, cols)), shape=(3, 5))


def test_bags_hold_each_creators_goods_and_leave_out_the_target() -> None:
    product_rows = np.array([5, 6, 7, 8, 9])  # position -> table row
    history = CreatorHistory(_matrix(), product_rows, 0, np.random.default_rng(0))
    bags = history.batch(np.array([2, 1, 0]), leave_out=np.array([2, 0, 3]))
    assert bags.offsets.tolist() == [0, 4, 4]  # creator 1's bag is empty
    items = bags.items.tolist()
    assert sorted(items[:4]) == [5, 7, 8, 9] and sorted(items[4:]) == [6, 8]
    left_out = {i for i, w in zip(items, bags.weights.tolist(), strict=True) if w == 0}
    assert left_out == {7, 8}  # good 2 in creator 2's bag, good 3 in creator 0's
    assert bags.counts.tolist() == [3.0, 0.0, 1.0]


def test_long_histories_are_sampled_to_the_cap() -> None:
    history = CreatorHistory(_matrix(), np.arange(5), 2, np.random.default_rng(0))
    bags = history.batch(np.array([0, 1, 2]))
    assert bags.counts.tolist() == [2.0, 0.0, 2.0]
    assert set(bags.items[2:].tolist()) <= {0, 2, 3, 4}


def test_dropout_leaves_goods_out_of_training_bags_but_never_of_ranking_bags() -> None:
    # one creator with 400 goods: a quarter of its training bag is left out at random,
    # a different quarter each batch; ranking reads every good
    many = sp.csr_matrix(np.ones((1, 400), np.float32))
    history = CreatorHistory(many, np.arange(400), 0, np.random.default_rng(0), dropout=0.25)
    first, second = (history.batch(np.array([0]), leave_out=np.array([0])) for _ in range(2))
    for bags in (first, second):
        assert 399 * 0.65 < bags.counts.item() < 399 * 0.85
        assert bags.counts.item() == bags.weights.sum().item()  # the mean divides by what is kept
    assert not torch.equal(first.weights, second.weights)
    assert history.batch(np.array([0])).counts.item() == 400.0


def test_tower_reads_the_mean_history_and_zeros_without_one() -> None:
    cfg = TwoTowerConfig(TowerSpec(4, [], 0, history_rows=5), TowerSpec(5), id_dim=4, out_dim=4)
    model = TwoTower(cfg).eval()
    history = CreatorHistory(_matrix(), np.arange(5), 0, np.random.default_rng(0))
    ids = torch.tensor([1, 2, 3])
    no_cat, no_num = torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0)
    with_history = model.creator_tower(ids, no_cat, no_num, history.batch(np.arange(3)))
    without = model.creator_tower(ids, no_cat, no_num)
    # creator 1 has no goods: its bag reads as zeros, the same as no history at all
    torch.testing.assert_close(with_history[1], without[1])
    assert not torch.allclose(with_history[[0, 2]], without[[0, 2]])
    # the bag is the mean of the goods' rows
    table = model.creator_tower.history.weight.detach()
    assert torch.allclose(
        model.creator_tower._history(history.batch(np.array([0])), 1, None)[0],
        table[[1, 3]].mean(0),
    )


def test_idf_pooling_weights_rare_goods_above_common_ones() -> None:
    # good 3 is held by two of three creators, the others by one: it weighs least
    history = CreatorHistory(_matrix(), np.arange(5), 0, np.random.default_rng(0), "idf")
    bags = history.batch(np.array([2]), leave_out=np.array([0]))
    weight = dict(zip(bags.items.tolist(), bags.weights.tolist(), strict=True))
    assert weight[0] == 0.0  # the target is still left out
    assert weight[2] == weight[4] > weight[3] > 0
    assert bags.counts.item() == np.float32(weight[2] + weight[3] + weight[4])
    # the tower's bag is then the IDF-weighted mean of the goods' rows
    cfg = TwoTowerConfig(TowerSpec(4, [], 0, history_rows=5), TowerSpec(5), id_dim=4, out_dim=4)
    tower = TwoTower(cfg).eval().creator_tower
    table = tower.history.weight.detach()
    w = torch.tensor([weight[i] for i in (2, 3, 4)])
    expected = (table[[2, 3, 4]] * w[:, None]).sum(0) / w.sum()
    torch.testing.assert_close(tower._history(bags, 1, None)[0], expected)


def test_with_times_ranking_weighs_the_latest_goods_and_training_the_goods_before() -> None:
    # creator 2 took goods 4, 0, 3, 2 in that order (times 10, 20, 30, 40)
    times = {(0, 1): 5, (0, 3): 6, (2, 0): 20, (2, 2): 40, (2, 3): 30, (2, 4): 10}
    coo = _matrix().tocoo()
    ts = np.array([times[(r, c)] for r, c in zip(coo.row, coo.col, strict=True)])
    history = CreatorHistory(_matrix(), np.arange(5), 0, np.random.default_rng(0), "mean", ts, 1.0)
    ranking = history.batch(np.array([2]))
    weight = dict(zip(ranking.items.tolist(), ranking.weights.tolist(), strict=True))
    assert weight == {2: 1.0, 3: 0.5, 0: 0.25, 4: 0.125}  # the latest weighs 1, halving
    assert ranking.counts.item() == np.float32(1.875)
    # a training pair reads the goods taken before its target (3), back from it
    training = history.batch(np.array([2, 2, 0]), leave_out=np.array([3, 4, 3]))
    weight = dict(zip(training.items[:4].tolist(), training.weights[:4].tolist(), strict=True))
    assert weight == {2: 0.0, 3: 0.0, 0: 1.0, 4: 0.5}
    assert training.weights[4:8].sum() == 0.0  # the first good (4) has nothing before it
    assert training.counts.tolist() == [1.5, 0.0, 1.0]  # creator 0: good 1 before good 3
    # a capped history keeps the latest goods, not a random sample; an older target than
    # those has no goods before it in the bag
    capped = CreatorHistory(_matrix(), np.arange(5), 2, np.random.default_rng(0), "mean", ts, 1.0)
    assert sorted(capped.batch(np.array([2])).items.tolist()) == [2, 3]
    assert capped.batch(np.array([2]), leave_out=np.array([0])).counts.item() == 0.0


def test_served_bags_weigh_recency_like_the_trainers() -> None:
    from models.matching.history_embed import history_batch

    # the served path reads each history oldest first: goods 4, 0, 3, 2
    bags = history_batch([np.array([4, 0, 3, 2]), np.array([], np.int64), np.array([7])], 1.0)
    assert bags.weights.tolist() == [0.125, 0.25, 0.5, 1.0, 1.0]
    assert bags.counts.tolist() == [1.875, 0.0, 1.0]
    plain = history_batch([np.array([4, 0, 3, 2])])
    assert plain.weights.tolist() == [1.0] * 4 and plain.counts.tolist() == [4.0]
