"""Two-tower retrieval model: a creator tower and a product tower, trained with an
in-batch sampled softmax corrected for sampling bias (logQ, Yi et al. RecSys 2019).

Each tower embeds an ID (row 0 is the shared out-of-vocabulary bucket), embeds every
categorical side feature, concatenates them with the numeric features and runs an MLP;
the output is L2-normalised, so a score is a cosine divided by the temperature.

The creator tower can also read the creator's history: the mean embedding of the goods
it sold in training (its own table, YouTube-DNN style). A creator with few pairs then
borrows strength from the goods' shared rows instead of relying on one sparsely trained
ID row. In training the target product is left out of its own row's history, so the
tower cannot learn to find the answer in its input.

ID dropout: while training, a share of IDs is replaced by the OOV row (and, for
creators, the history by an empty one). The tower must then place the item from its
side features alone, which is exactly what it has to do for a cold product (no
training interactions, so always the OOV row) or a newcomer creator.

A tower without side features (an ID-only log) has nothing to fall back on, so it keeps
its IDs and is regularised by dropout on its MLP input instead; and an ID-only creator
tower with a history reads the history alone (the trainer maps every creator to the OOV
row): a creator's own ID row memorises its training goods. Measured on three ID-only
logs (README): reading the history in place of the ID lifts test Recall@50 on all
three, the input dropout on the two denser ones (it costs 0.005 on the sparsest).

Heads (`heads` > 1): the towers hold that many independent models side by side, each
on its own slice of the ID and history tables with its own output layer; the trainer
gives each head its own loss (`split_heads`). A tower's output is the heads' unit
vectors side by side over sqrt(heads): one unit vector whose dot product with another
is the mean of the heads' cosines, so an ensemble is served as one embedding. On ID-only
logs a single model's ranking moves with its seed about as much as the gap to ALS;
four heads average that out (README, "Heads").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TowerSpec:
    """What one tower's inputs look like (from the fitted encoders)."""

    n_ids: int  # ID table rows, OOV row 0 included
    cardinalities: list[int] = field(default_factory=list)  # per categorical feature, 0 included
    n_numeric: int = 0
    history_rows: int = 0  # > 0: the tower reads a bag of these rows (the creator's goods)


@dataclass
class TwoTowerConfig:
    creator: TowerSpec
    product: TowerSpec
    id_dim: int = 64
    side_dim: int = 16
    hidden: list[int] = field(default_factory=lambda: [256])
    out_dim: int = 64
    temperature: float = 0.05
    learn_temperature: bool = False
    id_dropout: float = 0.1
    id_only_dropout: float = 0.0  # on the MLP input of a tower without side features
    tie_history: bool = False  # the creator's history reads the product tower's ID rows
    heads: int = 1  # independent towers in one: each reads its own slice of the ID tables
    id_only_hidden: list[int] | None = None  # a tower without side features (None: `hidden`)

    @property
    def embedding_dim(self) -> int:
        """Width of a tower's output: every head's unit vector side by side."""
        return self.out_dim * self.heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwoTowerConfig:
        d = dict(d)
        return cls(
            creator=TowerSpec(**d.pop("creator")), product=TowerSpec(**d.pop("product")), **d
        )


@dataclass
class HistoryBatch:
    """Embedding-bag input: the flattened history rows of B creators."""

    items: torch.Tensor  # (N,) int64 rows of the history table
    offsets: torch.Tensor  # (B,) int64 start of each creator's bag in `items`
    weights: torch.Tensor  # (N,) float32, 0 for a left-out item
    counts: torch.Tensor  # (B,) float32 sum of each bag's weights


class Tower(nn.Module):
    """IDs + side features -> unit-length embedding."""

    def __init__(
        self, spec: TowerSpec, cfg: TwoTowerConfig, shared_history: nn.Embedding | None = None
    ) -> None:
        super().__init__()
        has_side = bool(spec.cardinalities) or spec.n_numeric > 0
        # one regulariser per tower: ID dropout where side features can carry a dropped ID,
        # input dropout where there is nothing to fall back on (an ID-only tower)
        self.id_dropout = cfg.id_dropout if has_side else 0.0
        self.input_dropout = 0.0 if has_side else cfg.id_only_dropout
        # sparse gradients: only the rows in a batch are touched (row-wise Adagrad), which keeps
        # a step cheap with millions of IDs
        self.categorical = nn.ModuleList(
            nn.Embedding(n, cfg.side_dim, sparse=True) for n in spec.cardinalities
        )
        self.heads = cfg.heads
        self.ids = nn.Embedding(spec.n_ids, cfg.id_dim * cfg.heads, sparse=True)
        # the history table is dropped when a service only embeds newcomers (no history),
        # so the width is remembered apart from the module
        self.history_dim = cfg.id_dim * cfg.heads if spec.history_rows else 0
        self.history: nn.EmbeddingBag | nn.Embedding | None = None
        if spec.history_rows and shared_history is None:
            self.history = nn.EmbeddingBag(
                spec.history_rows, self.history_dim, mode="sum", sparse=True
            )
        side_width = cfg.side_dim * len(spec.cardinalities) + spec.n_numeric
        width = cfg.id_dim + (cfg.id_dim if spec.history_rows else 0) + side_width
        hidden = cfg.hidden if has_side or cfg.id_only_hidden is None else cfg.id_only_hidden
        if cfg.heads == 1:
            self.mlp: nn.Module = _mlp(width, hidden, cfg.out_dim)
        else:  # one MLP per head over its slices of the ID and history rows and the side features
            self.mlp = nn.ModuleList(_mlp(width, hidden, cfg.out_dim) for _ in range(cfg.heads))
        tables: list[nn.Module] = [self.ids, *self.categorical]
        if self.history is not None:
            tables.append(self.history)
        for emb in tables:
            nn.init.normal_(emb.weight, std=0.1)
        if spec.history_rows and shared_history is not None:
            self.history = shared_history  # another tower's table: initialised there

    def forward(
        self,
        ids: torch.Tensor,
        categorical: torch.Tensor,
        numeric: torch.Tensor,
        history: HistoryBatch | None = None,
    ) -> torch.Tensor:
        # ids: (B,) int64; categorical: (B, n_cat) int64; numeric: (B, n_num) float32
        dropped = None
        if self.training and self.id_dropout > 0:
            dropped = torch.rand(ids.shape, device=ids.device) < self.id_dropout
            ids = ids.masked_fill(dropped, 0)
        rows = [self.ids(ids)]  # (B, id_dim * heads)
        if self.history_dim:
            rows.append(self._history(history, len(ids), dropped))
        side = [emb(categorical[:, j]) for j, emb in enumerate(self.categorical)] + [numeric]
        if self.heads == 1:
            return self._head(self.mlp, [*rows, *side])  # (B, out_dim)
        # each head reads its own slice of the rows: heads are independent models whose
        # cosines the concatenation averages (unit length: every head over sqrt(heads))
        slices = [torch.chunk(r, self.heads, dim=1) for r in rows]
        outs = [self._head(mlp, [*(s[h] for s in slices), *side]) for h, mlp in enumerate(self.mlp)]
        return torch.cat(outs, dim=1) / self.heads**0.5  # (B, out_dim * heads)

    def _head(self, mlp: nn.Module, parts: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(parts, dim=1)  # (B, id_dim + history + side_dim * n_cat + n_num)
        if self.input_dropout:
            x = F.dropout(x, self.input_dropout, self.training)
        return F.normalize(mlp(x), dim=-1)

    def _history(
        self, history: HistoryBatch | None, batch: int, dropped: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean history embedding (B, id_dim); zeros for an empty or absent history."""
        if history is None or self.history is None:
            device = next(self.parameters()).device
            return torch.zeros(batch, self.history_dim, device=device)
        total = F.embedding_bag(
            history.items,
            self.history.weight,
            history.offsets,
            mode="sum",
            sparse=True,
            per_sample_weights=history.weights,
        )
        mean = total / history.counts.clamp(min=1.0)[:, None]
        if dropped is not None:
            mean = mean.masked_fill(dropped[:, None], 0.0)
        return mean


def _mlp(width: int, hidden: list[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


def split_heads(vectors: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """(B, out_dim * heads) tower outputs -> each head's (B, out_dim) unit vectors."""
    if heads == 1:
        return [vectors]
    return [part * heads**0.5 for part in torch.chunk(vectors, heads, dim=1)]


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.tie_history and cfg.creator.history_rows:
            # one row per good, read as a target and as history (FISM-style item-item)
            product = Tower(cfg.product, cfg)
            self.creator_tower = Tower(cfg.creator, cfg, shared_history=product.ids)
            self.product_tower = product
        else:
            self.creator_tower = Tower(cfg.creator, cfg)
            self.product_tower = Tower(cfg.product, cfg)
        log_t = torch.tensor(float(cfg.temperature)).log()
        if cfg.learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> torch.Tensor:
        # a learnt temperature is kept in [0.01, 1]: below, the softmax saturates
        return self.log_temperature.exp().clamp(0.01, 1.0)

    def sparse_parameters(self) -> list[nn.Parameter]:
        tables = (nn.Embedding, nn.EmbeddingBag)
        return [m.weight for m in self.modules() if isinstance(m, tables)]

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]


def in_batch_softmax_loss(
    creator: torch.Tensor,
    product: torch.Tensor,
    log_q: torch.Tensor | None,
    temperature: torch.Tensor | float,
    product_keys: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    extra_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax where row i's positive is product i and the other rows' products
    (plus optional `extra` negatives) are its negatives.

    logQ correction: in-batch negatives are drawn in proportion to popularity, which
    would push popular goods down; subtracting log q_j (the expected share of item j
    among the sampled candidates) from every logit for item j makes the sampled softmax
    an unbiased estimate of the full one. `product_keys` masks accidental hits: the same
    product appearing again in the batch is not a negative for its own row.
    """
    batch = creator.shape[0]
    creator = creator / temperature  # scale the (B, d) side, not the (B, B) logits
    logits = _logits(creator, product, log_q)  # (B, B)
    if product_keys is not None:
        rows, cols = accidental_hits(product_keys)
        logits[rows, cols] = float("-inf")  # the matmul's output: no gradient reads it
    if extra is not None:
        logits = torch.cat([logits, _logits(creator, extra, extra_log_q)], dim=1)  # (B, B + M)
    target = torch.arange(batch, device=creator.device)
    return F.cross_entropy(logits, target)


def _logits(
    creator: torch.Tensor, product: torch.Tensor, log_q: torch.Tensor | None
) -> torch.Tensor:
    """creator @ product.T - log_q: the correction rides in the matmul (one pass over the
    (B, N) logits, not a second one to subtract)."""
    if log_q is None:
        return creator @ product.T
    return torch.addmm(-log_q[None, :], creator, product.T)


def accidental_hits(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the in-batch pairs i != j with keys[i] == keys[j]: the same good
    twice in a batch is no negative for its own rows. Only the rows whose key repeats are
    compared with each other, not all B x B pairs."""
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    repeated = torch.nonzero(counts[inverse] > 1).squeeze(1)  # (R,) rows
    if len(repeated) == 0:
        return repeated, repeated
    same = keys[repeated][:, None] == keys[repeated][None, :]  # (R, R)
    same.fill_diagonal_(False)
    i, j = torch.nonzero(same, as_tuple=True)
    return repeated[i], repeated[j]


def full_softmax_loss(
    creator: torch.Tensor,
    catalog: torch.Tensor,
    target: torch.Tensor,
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """Softmax over the whole catalog: row i's positive is `catalog[target[i]]`, every
    other good a negative. Exact (no sampling, so no logQ), affordable while the catalog
    is small: a (B, n_products) logit matrix and the product tower over every good."""
    return F.cross_entropy((creator / temperature) @ catalog.T, target)


def cosine_contrastive_loss(
    creator: torch.Tensor,
    product: torch.Tensor,
    margin: float,
    neg_weight: float,
    product_keys: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    extra_log_q: torch.Tensor | None = None,
    in_batch: bool = True,
) -> torch.Tensor:
    """SimpleX's cosine contrastive loss (Mao et al., CIKM 2021) on unit-length towers:

        (1 - cos(u, v+)) + neg_weight * mean over negatives of relu(cos(u, v-) - margin)

    Row i's negatives are the other rows' products (minus accidental hits, as in the
    softmax) plus the `extra` shared pool. Only negatives closer than `margin` cost
    anything, so the many easy ones do not drown the hard ones. There is no temperature.

    logQ: SimpleX means a mean over uniformly drawn goods, but in-batch negatives come in
    proportion to popularity, which would push popular goods down. With `log_q` (log of
    each candidate's expected count per batch) the mean is importance-weighted by
    1 / q: a self-normalised estimate of the mean over the whole catalog. With
    `in_batch=False` the negatives are the `extra` pool alone, drawn uniformly, which is
    SimpleX as published (no importance weights, whose variance the rare goods inflate).
    """
    positive = (creator * product).sum(dim=1)  # (B,)
    if not in_batch:
        if extra is None:
            raise ValueError("cosine contrastive loss without in-batch negatives needs extras")
        negative = F.relu(creator @ extra.T - margin).mean(dim=1)  # (B,)
        return ((1.0 - positive) + neg_weight * negative).mean()
    batch = creator.shape[0]
    penalty = F.relu(creator @ product.T - margin)  # (B, B)
    valid = ~torch.eye(batch, dtype=torch.bool, device=creator.device)
    if product_keys is not None:
        valid[accidental_hits(product_keys)] = False
    weight = valid.to(penalty.dtype)
    if log_q is not None:
        weight = weight * torch.exp(-(log_q - log_q.min()))[None, :]  # shift: no overflow
    if extra is not None:
        extra_weight = torch.ones(batch, extra.shape[0], dtype=penalty.dtype, device=penalty.device)
        if log_q is not None and extra_log_q is not None:
            extra_weight = extra_weight * torch.exp(-(extra_log_q - log_q.min()))[None, :]
        penalty = torch.cat([penalty, F.relu(creator @ extra.T - margin)], dim=1)
        weight = torch.cat([weight, extra_weight], dim=1)  # (B, B + M)
    negative = (penalty * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1e-12)
    return ((1.0 - positive) + neg_weight * negative).mean()
