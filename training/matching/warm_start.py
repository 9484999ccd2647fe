"""A fitted two-tower model carried onto a new catalog, to train on from where it stood.

Fine-tuning the champion on a day of new interactions (training/matching/fine_tune.py)
starts from its weights, not from scratch. The catalog has grown since it was trained:
new goods and new creators sit at other positions, and some of them now have enough
pairs to earn an ID row of their own. `carry` maps the model onto the new positions:

- an ID the model knew keeps its row (and everything learnt in it);
- an ID new to the model with at least `min_id_count` training pairs gets a new row,
  started from the OOV row: where the model places a cold item from its side features,
  so training moves it from a sensible place instead of a random one;
- the side-feature encoders are the model's own (the inputs keep their meaning);
- the creator tower's history table grows with the product IDs (it is indexed by them).

Nothing else changes: the MLPs, the side tables and the temperature are copied as they are.

The optimisers' state can come along when the model saved it (`optimizer_state`, with
`with_optimizer`): AdamW's moments and step count, and each table row's Adagrad sum (new
rows start at 0, as in a fresh fit), so training goes on with the step sizes it had
reached. Measured on a day of the refresh bench it fine-tunes worse than a new
optimiser's larger first steps (README, "Fine-tuning the champion"), so `haowu
fine-tune` leaves it off by default (`refresh.fine_tune.carry_optimizer`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from features.encoders import IdEncoder, TowerEncoders
from models.matching.two_tower import TwoTower
from models.matching.two_tower_served import TwoTowerRecommender
from training.matching.optim import OptimizerState

CREATOR_IDS, PRODUCT_IDS, HISTORY = (
    "creator_tower.ids.weight",
    "product_tower.ids.weight",
    "creator_tower.history.weight",
)  # the state-dict tables with a row per ID


@dataclass
class WarmStart:
    """What a warm-started fit begins from: weights and encoders on the new positions."""

    model: TwoTower
    encoders: TowerEncoders
    new_rows: dict[str, int]  # ID rows added per side
    optimizer: OptimizerState | None = None  # by parameter name, on the new rows


def _rows(
    base: IdEncoder,
    base_ids: np.ndarray,
    ids: np.ndarray,
    train_positions: np.ndarray,
    min_count: int,
) -> IdEncoder:
    """Rows of the IDs `ids` (new positions): the base row where the base knew the ID,
    else a new row past the base's table when it has `min_count` training pairs, else 0."""
    at = np.searchsorted(base_ids, ids)
    at = np.minimum(at, max(len(base_ids) - 1, 0))
    known = base_ids[at] == ids if len(base_ids) else np.zeros(len(ids), bool)
    rows = np.where(known, base.rows[at], 0).astype(np.int64)
    if base.vocab_size == 1:  # the base kept no ID rows on this side (history replaces IDs)
        return IdEncoder(rows)
    counts = np.bincount(train_positions, minlength=len(ids))
    fresh = (rows == 0) & (counts >= min_count)
    rows[fresh] = base.vocab_size + np.arange(int(fresh.sum()))
    return IdEncoder(rows)


def carry(
    base: TwoTowerRecommender,
    base_creators: np.ndarray,
    base_products: np.ndarray,
    creators: np.ndarray,
    products: np.ndarray,
    train_creator: np.ndarray,
    train_product: np.ndarray,
    min_id_count: int,
    with_optimizer: bool = False,
) -> WarmStart:
    """`base` (its positions hold `base_creators` / `base_products`, sorted IDs) on the
    new positions `creators` / `products` (sorted IDs); `train_*` are the positions of
    the pairs the warm-started fit trains on; `with_optimizer`: carry its optimisers'
    state too (when it has one)."""
    if base.model is None or base.encoders is None:
        raise ValueError("the base two-tower model is not fitted")
    enc = base.encoders
    encoders = TowerEncoders(
        _rows(enc.creator_ids, base_creators, creators, train_creator, min_id_count),
        _rows(enc.product_ids, base_products, products, train_product, min_id_count),
        enc.creator_side,
        enc.product_side,
    )
    old = base.model.cfg
    history = encoders.product_ids.vocab_size if old.creator.history_rows else 0
    cfg = replace(
        old,
        creator=replace(old.creator, n_ids=encoders.creator_ids.vocab_size, history_rows=history),
        product=replace(old.product, n_ids=encoders.product_ids.vocab_size),
    )
    model = TwoTower(cfg)
    rows = {CREATOR_IDS: cfg.creator.n_ids, PRODUCT_IDS: cfg.product.n_ids, HISTORY: history}
    state = dict(base.model.state_dict())
    for key, n in rows.items():
        if key in state:  # new rows start as the OOV row (row 0); rows of vanished IDs go
            table = state[key][:n]
            state[key] = torch.cat([table, table[:1].expand(n - len(table), -1)]).clone()
    model.load_state_dict(state)
    return WarmStart(
        model,
        encoders,
        {
            "creator": encoders.creator_ids.vocab_size - enc.creator_ids.vocab_size,
            "product": encoders.product_ids.vocab_size - enc.product_ids.vocab_size,
        },
        _grown(base.optimizer_state, rows) if with_optimizer else None,
    )


def _grown(saved: OptimizerState | None, rows: dict[str, int]) -> OptimizerState | None:
    """`saved` with each table's per-row Adagrad sums cut or grown to its new row count
    (a new row's sum starts at 0: its first steps are as large as a fresh fit's)."""
    if saved is None:
        return None
    out = dict(saved)
    for key, n in rows.items():
        if key in out and "sum" in out[key]:
            acc = out[key]["sum"][:n]
            out[key] = {**out[key], "sum": torch.cat([acc, acc.new_zeros(n - len(acc))])}
    return out
