import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from features.settings import MatchingConfig
from models.matching.recommender import Recommender
from models.matching.two_tower import (
    TowerSpec,
    TwoTower,
    TwoTowerConfig,
    accidental_hits,
    cosine_contrastive_loss,
    in_batch_softmax_loss,
    split_heads,
)
from tests.models.recommender_contract import (
    N_CREATORS,
    N_PRODUCTS,
    RecommenderContract,
    contract_matrix,
)
from training.evaluation.evaluate import EvalTask, evaluate
from training.matching.two_tower_fit import TwoTowerTrainer


def _lse(xs: list[float]) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_loss_with_logq_on_a_hand_checked_batch() -> None:
    # two creators, two products; unit vectors so logits are cosines / T
    creator = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    product = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    log_q = torch.log(torch.tensor([0.5, 0.1]))
    t = 0.5
    loss = in_batch_softmax_loss(creator, product, log_q, t)
    # row 0: logits [1/t - log .5, .6/t - log .1]; target 0
    r0 = [1 / t - math.log(0.5), 0.6 / t - math.log(0.1)]
    # row 1: logits [0/t - log .5, .8/t - log .1]; target 1
    r1 = [0 / t - math.log(0.5), 0.8 / t - math.log(0.1)]
    expected = ((_lse(r0) - r0[0]) + (_lse(r1) - r1[1])) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # without the correction, the popular product 0 wins more of row 1's mass
    plain = in_batch_softmax_loss(creator, product, None, t)
    p0 = [1 / t, 0.6 / t]
    p1 = [0.0, 0.8 / t]
    assert plain.item() == pytest.approx(((_lse(p0) - p0[0]) + (_lse(p1) - p1[1])) / 2, rel=1e-6)


def test_accidental_hits_are_masked() -> None:
    creator = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    product = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # the same product twice
    keys = torch.tensor([7, 7])
    loss = in_batch_softmax_loss(creator, product, None, 1.0, product_keys=keys)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # each row has only its positive


def test_accidental_hits_are_every_repeated_pair_off_the_diagonal() -> None:
    keys = torch.tensor([5, 2, 5, 9, 2, 5, 1])
    rows, cols = accidental_hits(keys)
    dense = keys[:, None] == keys[None, :]
    dense.fill_diagonal_(False)
    pairs = torch.stack([rows, cols], 1).tolist()
    assert sorted(pairs) == torch.nonzero(dense).tolist()
    assert len(accidental_hits(torch.tensor([3, 1, 2]))[0]) == 0


def test_loss_and_gradients_match_the_plain_formula() -> None:
    """logQ folded into the matmul and the sparse accidental-hit mask give the same loss
    and gradients as subtracting logQ from, and masking, the whole (B, B) matrix."""
    gen = torch.Generator().manual_seed(0)
    b, m, d, t = 64, 16, 8, 0.07
    keys = torch.randint(0, 20, (b,), generator=gen)  # many repeats
    log_q = torch.randn(b, generator=gen)
    extra_q = torch.randn(m, generator=gen)
    u0, v0, e0 = (torch.randn(n, d, generator=gen) for n in (b, b, m))

    def plain(u: torch.Tensor, v: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        logits = (u / t) @ v.T - log_q[None, :]
        same = keys[None, :] == keys[:, None]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        logits = torch.cat([logits, (u / t) @ e.T - extra_q[None, :]], dim=1)
        return torch.nn.functional.cross_entropy(logits, torch.arange(b))

    grads = []
    for fn in (
        plain,
        lambda u, v, e: in_batch_softmax_loss(u, v, log_q, t, keys, e, extra_q),
    ):
        args = [x.clone().requires_grad_(True) for x in (u0, v0, e0)]
        loss = fn(*args)
        loss.backward()
        grads.append((loss.detach(), *(a.grad for a in args)))
    for ours, reference in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(ours, reference)


def test_extra_negatives_join_the_softmax() -> None:
    creator = torch.tensor([[1.0, 0.0]])
    product = torch.tensor([[1.0, 0.0]])
    extra = torch.tensor([[0.0, 1.0]])
    loss = in_batch_softmax_loss(
        creator, product, torch.zeros(1), 1.0, extra=extra, extra_log_q=torch.zeros(1)
    )
    assert loss.item() == pytest.approx(_lse([1.0, 0.0]) - 1.0, rel=1e-6)


def test_cosine_contrastive_loss_on_a_hand_checked_batch() -> None:
    creator = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    product = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    extra = torch.tensor([[0.8, 0.6]])
    margin, w = 0.5, 2.0
    loss = cosine_contrastive_loss(creator, product, margin, w, extra=extra)
    # row 0: positive cos .6; negatives: product 1 (cos 1), extra (cos .8)
    r0 = (1 - 0.6) + w * ((1.0 - margin) + (0.8 - margin)) / 2
    # row 1: positive cos 0; negatives: product 0 (cos .8), extra (cos .6)
    r1 = (1 - 0.0) + w * ((0.8 - margin) + (0.6 - margin)) / 2
    assert loss.item() == pytest.approx((r0 + r1) / 2, rel=1e-6)
    # an accidental hit is no negative; easy negatives below the margin cost nothing
    same = cosine_contrastive_loss(
        creator, product, 0.95, w, product_keys=torch.tensor([3, 3]), extra=extra
    )
    assert same.item() == pytest.approx(((1 - 0.6) + (1 - 0.0)) / 2, rel=1e-6)
    # logQ: each negative weighs 1 / its expected count, so popular goods count less
    log_q, extra_log_q = torch.log(torch.tensor([0.5, 0.1])), torch.log(torch.tensor([0.5]))
    weighted = cosine_contrastive_loss(
        creator, product, margin, w, extra=extra, log_q=log_q, extra_log_q=extra_log_q
    )
    r0 = (1 - 0.6) + w * (10 * (1.0 - margin) + 2 * (0.8 - margin)) / 12
    r1 = (1 - 0.0) + w * (2 * (0.8 - margin) + 2 * (0.6 - margin)) / 4
    assert weighted.item() == pytest.approx((r0 + r1) / 2, rel=1e-6)


def test_towers_are_normalised_and_id_dropout_only_trains() -> None:
    cfg = TwoTowerConfig(
        TowerSpec(10, [4], 2),
        TowerSpec(20, [3, 5], 1),
        id_dim=8,
        side_dim=4,
        hidden=[16],
        out_dim=8,
        id_dropout=1.0,
    )
    model = TwoTower(cfg)
    ids, cats, nums = torch.tensor([1, 2, 3]), torch.tensor([[1], [2], [3]]), torch.randn(3, 2)
    model.eval()
    out = model.creator_tower(ids, cats, nums)  # (3, 8)
    assert out.shape == (3, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    oov = model.creator_tower(torch.zeros(3, dtype=torch.long), cats, nums)
    assert not torch.allclose(out, oov)  # eval: real IDs are used
    model.train()
    torch.testing.assert_close(model.creator_tower(ids, cats, nums), oov)  # dropout 1: all OOV


def test_a_tower_without_side_features_keeps_its_ids() -> None:
    # ID-only data: dropping an ID would leave the tower nothing to place the item with
    cfg = TwoTowerConfig(TowerSpec(10), TowerSpec(20, [3], 0), id_dim=8, out_dim=8, id_dropout=1.0)
    model = TwoTower(cfg).train()
    ids, no_cat, no_num = (
        torch.tensor([1, 2, 3]),
        torch.zeros(3, 0, dtype=torch.long),
        torch.zeros(3, 0),
    )
    oov = model.creator_tower(torch.zeros(3, dtype=torch.long), no_cat, no_num)
    assert not torch.allclose(model.creator_tower(ids, no_cat, no_num), oov)
    assert model.creator_tower.id_dropout == 0.0 and model.product_tower.id_dropout == 1.0


def test_an_id_only_tower_drops_its_inputs_instead() -> None:
    cfg = TwoTowerConfig(
        TowerSpec(10), TowerSpec(20, [3], 0), id_dim=8, out_dim=8, id_only_dropout=0.5
    )
    model = TwoTower(cfg)
    assert model.creator_tower.input_dropout == 0.5
    assert model.product_tower.input_dropout == 0.0
    ids, no_cat, no_num = torch.arange(1, 9), torch.zeros(8, 0, dtype=torch.long), torch.zeros(8, 0)
    torch.manual_seed(0)
    model.train()
    noisy = model.creator_tower(ids, no_cat, no_num)
    assert not torch.allclose(noisy, model.creator_tower(ids, no_cat, no_num))  # a fresh mask
    model.eval()
    torch.testing.assert_close(
        model.creator_tower(ids, no_cat, no_num), model.creator_tower(ids, no_cat, no_num)
    )


def test_config_round_trip() -> None:
    cfg = TwoTowerConfig(TowerSpec(10, [4], 2), TowerSpec(20, [3, 5], 1), hidden=[32, 16])
    assert TwoTowerConfig.from_dict(cfg.to_dict()) == cfg


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    creators = pd.DataFrame(
        {
            "category_pref": np.arange(N_CREATORS) % 2,
            "followers": rng.integers(10, 10_000, N_CREATORS),
        }
    )
    products = pd.DataFrame(
        {"category_l3": np.arange(N_PRODUCTS) % 2, "price": rng.uniform(1, 100, N_PRODUCTS)}
    )
    return creators, products


def _tiny_cfg(**update) -> MatchingConfig:
    base = dict(
        id_dim=8,
        side_dim=4,
        hidden=[16],
        out_dim=8,
        batch_size=64,
        epochs=3,
        val_creators=0,
        threads=1,
    )
    return MatchingConfig(**{**base, **update})


class TestTwoTower(RecommenderContract):
    def make(self) -> Recommender:
        creators, products = _frames()
        return TwoTowerTrainer(_tiny_cfg(), creators, products, progress=False)

    def test_export_matches_scores(self, fitted) -> None:
        model, _ = fitted
        creators = np.arange(5)
        np.testing.assert_allclose(model.export().score(creators), model.score(creators), rtol=1e-6)


class TestTwoTowerHeads(TestTwoTower):
    """Three heads served as one vector: the contract (save, load, export) holds."""

    def make(self) -> Recommender:
        creators, products = _frames()
        return TwoTowerTrainer(_tiny_cfg(heads=3), creators, products, progress=False)

    def test_the_served_vectors_hold_every_head(self, fitted) -> None:
        model, _ = fitted
        assert model.creator_vectors.shape[1] == model.product_vectors.shape[1] == 3 * 8


def test_heads_are_independent_towers_whose_cosines_the_vector_averages() -> None:
    cfg = TwoTowerConfig(
        TowerSpec(10, [4], 2, history_rows=12),
        TowerSpec(12),
        id_dim=6,
        side_dim=4,
        hidden=[16],
        out_dim=5,
        heads=3,
        id_only_hidden=[],
    )
    model = TwoTower(cfg).eval()
    ids, cats, nums = torch.tensor([1, 2, 3]), torch.tensor([[1], [2], [3]]), torch.randn(3, 2)
    u = model.creator_tower(ids, cats, nums)
    v = model.product_tower(
        torch.tensor([4, 5, 6]), torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0)
    )
    assert u.shape == v.shape == (3, 15) and cfg.embedding_dim == 15
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))
    heads_u, heads_v = split_heads(u, 3), split_heads(v, 3)
    for part in heads_u:
        torch.testing.assert_close(part.norm(dim=1), torch.ones(3))  # each head a unit vector
    mean_cosine = torch.stack(
        [(a * b).sum(dim=1) for a, b in zip(heads_u, heads_v, strict=True)]
    ).mean(dim=0)
    torch.testing.assert_close((u * v).sum(dim=1), mean_cosine)
    # head 1's slice of the ID rows moves head 1 alone
    with torch.no_grad():
        model.creator_tower.ids.weight[:, 6:12] += 1.0
    moved = model.creator_tower(ids, cats, nums)
    torch.testing.assert_close(moved[:, :5], u[:, :5])
    torch.testing.assert_close(moved[:, 10:], u[:, 10:])
    assert not torch.allclose(moved[:, 5:10], u[:, 5:10])
    # the ID-only product tower is linear (id_only_hidden), the creator tower keeps its MLP
    assert len(model.product_tower.mlp[0]) == 1 and len(model.creator_tower.mlp[0]) == 3


def test_cold_product_gets_an_embedding_from_features() -> None:
    creators, products = _frames()
    train = contract_matrix().tolil()
    train[:, 39] = 0  # product 39 is never promoted: a cold good
    model = TwoTowerTrainer(
        _tiny_cfg(epochs=5, id_dropout=0.3), creators, products, progress=False
    ).fit(train.tocsr())
    assert model.encoders.product_ids.rows[39] == 0  # the OOV row
    assert np.isfinite(model.product_vectors[39]).all()
    assert not np.allclose(model.product_vectors[39], model.product_vectors[38])


def test_early_stopping_keeps_the_best_epoch() -> None:
    creators, products = _frames()
    train = contract_matrix(0)
    val = contract_matrix(1) - train.multiply(contract_matrix(1))
    model = TwoTowerTrainer(
        _tiny_cfg(epochs=6, patience=0, early_stop_k=5), creators, products, progress=False
    ).fit(train, val.tocsr())
    recalls = [h["val_recall"] for h in model.history]
    assert model.best_epoch == int(np.argmax(recalls)) + 1
    assert len(model.history) <= 6


def test_a_gain_below_min_gain_stops_training_but_keeps_the_better_model() -> None:
    """Any epoch-2 gain is below 0.9: training stops there, and keeps epoch 2's model if
    it was the better one (the gain was too small to go on for, not to keep)."""
    creators, products = _frames()
    train = contract_matrix(0)
    val = (contract_matrix(1) - train.multiply(contract_matrix(1))).tocsr()
    cfg = _tiny_cfg(epochs=6, patience=0, early_stop_k=5, min_gain=0.9)
    model = TwoTowerTrainer(cfg, creators, products, progress=False).fit(train, val)
    recalls = [h["val_recall"] for h in model.history]
    assert len(recalls) == 2
    assert model.best_epoch == int(np.argmax(recalls)) + 1
    kept = evaluate(model.export(), EvalTask("val", np.flatnonzero(val.getnnz(1)), val, train), [5])
    assert kept.metrics["recall@5"] == pytest.approx(max(recalls), abs=1e-6)


def test_an_id_only_creator_tower_reads_its_history_instead_of_its_id() -> None:
    train = contract_matrix(0)
    id_only = TwoTowerTrainer(_tiny_cfg(epochs=1), progress=False).fit(train)
    assert id_only.encoders.creator_ids.vocab_size == 1  # every creator on the OOV row
    assert id_only.encoders.product_ids.vocab_size > 1
    # two creators with the same training goods get the same embedding: the history is all
    twins = train.tolil()
    twins[1] = twins[0]
    twin_model = TwoTowerTrainer(_tiny_cfg(epochs=1), progress=False).fit(twins.tocsr())
    np.testing.assert_allclose(
        twin_model.creator_vectors[0], twin_model.creator_vectors[1], rtol=1e-5
    )

    creators, products = _frames()
    with_side = TwoTowerTrainer(_tiny_cfg(epochs=1), creators, products, progress=False)
    assert with_side.fit(train).encoders.creator_ids.vocab_size > 1  # features: IDs kept
    keep = _tiny_cfg(epochs=1, history_replaces_creator_id=False)
    assert TwoTowerTrainer(keep, progress=False).fit(train).encoders.creator_ids.vocab_size > 1


def test_recency_weighted_creators_are_what_the_served_tower_recomputes() -> None:
    from models.matching.history_embed import embed_with_history

    train = contract_matrix(0)
    coo = train.tocoo()
    ts = np.random.default_rng(1).permutation(coo.nnz)  # each pair's time
    when = dict(zip(zip(coo.row.tolist(), coo.col.tolist(), strict=True), ts, strict=True))

    def fit(half_life: float) -> TwoTowerTrainer:
        trainer = TwoTowerTrainer(_tiny_cfg(epochs=1, history_half_life=half_life), progress=False)
        trainer.pair_times = lambda c, p: np.array([when[k] for k in zip(c, p, strict=True)])
        return trainer.fit(train)

    recent = fit(2.0)
    assert recent.encoders.creator_ids.vocab_size == 1  # ID-only: the history is all
    # the refresh path (histories oldest first, models/matching/history_embed.py) agrees
    histories = []
    for row in range(train.shape[0]):
        goods = train.indices[train.indptr[row] : train.indptr[row + 1]]
        histories.append(goods[np.argsort([when[(row, g)] for g in goods])])
    rows = np.arange(train.shape[0])
    served = embed_with_history(recent, rows, pd.DataFrame(index=rows), histories)
    np.testing.assert_allclose(served, recent.creator_vectors, rtol=1e-4, atol=1e-5)
    # the same weights without the recency: another vector per creator
    plain = fit(0.0)
    assert not np.allclose(plain.creator_vectors, recent.creator_vectors, atol=1e-3)
    again = embed_with_history(plain, rows, pd.DataFrame(index=rows), histories)
    np.testing.assert_allclose(again, plain.creator_vectors, rtol=1e-4, atol=1e-5)
    # pairs without times: the plain mean, and the saved settings say so
    untimed = TwoTowerTrainer(_tiny_cfg(epochs=1, history_half_life=2.0), progress=False)
    untimed.fit(train)
    assert untimed.cfg.history_half_life == 0.0
    np.testing.assert_allclose(untimed.creator_vectors, plain.creator_vectors, rtol=1e-5)


def _blocks(k: int = 4, creators: int = 30, items: int = 20, per_creator: int = 8, seed: int = 0):
    """Creators in k blocks, each with `per_creator` goods of its own block; two of them
    per creator are held out."""
    rng = np.random.default_rng(seed)
    train, test = sp.lil_matrix((k * creators, k * items)), sp.lil_matrix((k * creators, k * items))
    for c in range(k * creators):
        block = c // creators
        goods = block * items + rng.choice(items, per_creator, replace=False)
        train[c, goods[2:]] = 1.0
        test[c, goods[:2]] = 1.0
    return train.tocsr(), test.tocsr()


@pytest.mark.parametrize(
    "loss, extra, in_batch, full, heads",
    [
        ("softmax", 0, True, 0, 1),
        ("softmax", 16, True, 0, 1),
        ("softmax", 0, True, 1000, 1),  # over the whole catalog (80 goods)
        ("cosine_contrastive", 0, True, 0, 1),
        ("cosine_contrastive", 16, True, 0, 1),
        ("cosine_contrastive", 32, False, 0, 1),  # SimpleX as published: uniform negatives alone
        ("softmax", 16, True, 0, 3),  # three heads, each its own softmax
        ("softmax", 0, True, 1000, 3),
        ("cosine_contrastive", 16, True, 0, 3),
    ],
)
def test_each_loss_recovers_a_planted_block_structure(
    loss: str, extra: int, in_batch: bool, full: int, heads: int
) -> None:
    train, test = _blocks()
    cfg = _tiny_cfg(
        epochs=15,
        patience=0,
        loss=loss,
        margin=0.5,
        extra_negatives=extra,
        id_only_dropout=0.0,
        in_batch_negatives=in_batch,
        full_softmax_max_products=full,
        heads=heads,
    )
    model = TwoTowerTrainer(cfg, progress=False).fit(train)
    assert model.product_vectors.shape[1] == 8 * heads
    k = 10
    creators = np.arange(train.shape[0])
    positions, _ = model.recommend(creators, k, exclude=train[creators])
    found = np.array(
        [len(set(positions[i]) & set(test[c].indices)) / 2 for i, c in enumerate(creators)]
    )
    random = k / (train.shape[1] - 6)  # k of the 74 goods a creator has not promoted
    assert found.mean() > 3 * random, (loss, extra, heads, found.mean(), random)


def test_full_softmax_is_cross_entropy_over_the_catalog() -> None:
    from models.matching.two_tower import full_softmax_loss

    u, catalog = torch.randn(3, 4), torch.randn(7, 4)
    target = torch.tensor([0, 6, 2])
    logits = (u / 0.5) @ catalog.T
    want = -(logits.log_softmax(dim=1)[torch.arange(3), target]).mean()
    torch.testing.assert_close(full_softmax_loss(u, catalog, target, 0.5), want)


def test_device_selection() -> None:
    """auto takes the GPU only when there is one; cuda without one is a clear error."""
    from features.errors import ConfigError
    from models.matching.device import resolve_device

    assert resolve_device("auto", cuda_available=False).type == "cpu"
    assert resolve_device("auto", cuda_available=True).type == "cuda"
    assert resolve_device("cpu", cuda_available=True).type == "cpu"
    with pytest.raises(ConfigError, match="matching.device=cuda, but PyTorch sees no GPU"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        resolve_device("tpu", cuda_available=True)


def test_a_tied_history_reads_the_product_tower_s_id_rows() -> None:
    train, test = _blocks()
    cfg = _tiny_cfg(epochs=10, patience=0, tie_history=True, id_only_dropout=0.0)
    model = TwoTowerTrainer(cfg, progress=False).fit(train)
    towers = model.model
    assert towers.creator_tower.history is towers.product_tower.ids  # one table, two readers
    state = towers.state_dict()
    assert torch.equal(state["creator_tower.history.weight"], state["product_tower.ids.weight"])
    creators = np.arange(train.shape[0])
    positions, _ = model.recommend(creators, 10, exclude=train[creators])
    found = np.mean(
        [len(set(positions[i]) & set(test[c].indices)) / 2 for i, c in enumerate(creators)]
    )
    assert found > 3 * 10 / (train.shape[1] - 6)  # the planted blocks, as untied
