"""Two-tower retrieval model: a creator tower and a product tower, trained with an
in-batch sampled softmax corrected for sampling bias (logQ, Yi et al. RecSys 2019).

Each tower embeds an ID (row 0 is the shared out-of-vocabulary bucket), embeds every
categorical side feature, concatenates them with the numeric features and runs an MLP;
the output is L2-normalised, so a score is a cosine divided by the temperature.

ID dropout: while training, a share of IDs is replaced by the OOV row. The tower must
then place the item from its side features alone, which is exactly what it has to do
for a cold product (no training interactions, so always the OOV row).
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwoTowerConfig:
        d = dict(d)
        return cls(
            creator=TowerSpec(**d.pop("creator")), product=TowerSpec(**d.pop("product")), **d
        )


class Tower(nn.Module):
    """IDs + side features -> unit-length embedding."""

    def __init__(self, spec: TowerSpec, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.id_dropout = cfg.id_dropout
        # sparse gradients: only the rows in a batch are touched (row-wise Adagrad), which keeps
        # a step cheap with millions of IDs
        self.ids = nn.Embedding(spec.n_ids, cfg.id_dim, sparse=True)
        self.categorical = nn.ModuleList(
            nn.Embedding(n, cfg.side_dim, sparse=True) for n in spec.cardinalities
        )
        width = cfg.id_dim + cfg.side_dim * len(spec.cardinalities) + spec.n_numeric
        layers: list[nn.Module] = []
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, cfg.out_dim))
        self.mlp = nn.Sequential(*layers)
        for emb in [self.ids, *self.categorical]:
            nn.init.normal_(emb.weight, std=0.1)

    def forward(
        self, ids: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        # ids: (B,) int64; categorical: (B, n_cat) int64; numeric: (B, n_num) float32
        if self.training and self.id_dropout > 0:
            dropped = torch.rand(ids.shape, device=ids.device) < self.id_dropout
            ids = ids.masked_fill(dropped, 0)
        parts = [self.ids(ids)]
        parts += [emb(categorical[:, j]) for j, emb in enumerate(self.categorical)]
        parts.append(numeric)
        x = torch.cat(parts, dim=1)  # (B, id_dim + side_dim * n_cat + n_num)
        return F.normalize(self.mlp(x), dim=-1)  # (B, out_dim)


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
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
        return [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]

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
    logits = creator @ product.T  # (B, B)
    if log_q is not None:
        logits = logits - log_q[None, :]
    if product_keys is not None:
        same = product_keys[None, :] == product_keys[:, None]  # (B, B)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    if extra is not None:
        extra_logits = creator @ extra.T  # (B, M)
        if extra_log_q is not None:
            extra_logits = extra_logits - extra_log_q[None, :]
        logits = torch.cat([logits, extra_logits], dim=1)  # (B, B + M)
    target = torch.arange(batch, device=creator.device)
    return F.cross_entropy(logits, target)
