"""The serve-time half of the two-tower model: load, embed, score, export.

`TwoTowerRecommender` is what a matching run folder holds (`recommender.json` kind
`two_tower`): the towers' weights and architecture, the fitted encoders and the exported
embeddings. Loading it needs nothing from `training/`, so a registered model opens in any
interpreter (the MLflow pyfunc, the batch job, the service). The trainer
(training/matching/two_tower_fit.py) subclasses it and adds `fit`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from features.encoders import IdEncoder, SideEncoder, SideFeatures, TowerEncoders
from features.settings import MatchingConfig
from models.matching.creator_history import CreatorHistory
from models.matching.recommender import EmbeddingRecommender, Recommender, RecommenderError
from models.matching.two_tower import HistoryBatch, TowerSpec, TwoTower, TwoTowerConfig

EMBED_BATCH = 65536
OPTIMIZER_STATE = "optimizer.pt"


class TowerInputs:
    """Encoded inputs of one tower for every position, as tensors to gather batches from."""

    def __init__(
        self, ids: IdEncoder, side: SideFeatures, history: CreatorHistory | None = None
    ) -> None:
        self.ids = torch.from_numpy(ids.rows)  # (n,)
        self.categorical = torch.from_numpy(side.categorical)  # (n, n_cat)
        self.numeric = torch.from_numpy(side.numeric)  # (n, n_num)
        self.history = history
        self.device = torch.device("cpu")  # where a batch is sent; the tables stay in RAM

    def __len__(self) -> int:
        return len(self.ids)

    def take(
        self, rows: torch.Tensor, leave_out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, HistoryBatch | None]:
        """A batch's inputs; `leave_out` (B,) products are left out of their row's history."""
        history = None
        rows = rows.cpu()
        if self.history is not None:
            held = leave_out.cpu().numpy() if leave_out is not None else None
            history = self.history.batch(rows.numpy(), held)
        batch = self.ids[rows], self.categorical[rows], self.numeric[rows]
        if self.device.type == "cpu":
            return (*batch, history)
        moved = tuple(t.to(self.device, non_blocking=True) for t in batch)
        if history is not None:
            history = HistoryBatch(*(t.to(self.device, non_blocking=True) for t in (
                history.items, history.offsets, history.weights, history.counts)))  # fmt: skip
        return (*moved, history)


def tower_spec(ids: IdEncoder, side: SideEncoder, history_rows: int = 0) -> TowerSpec:
    return TowerSpec(ids.vocab_size, side.cardinalities, len(side.numeric), history_rows)


def build_two_tower(cfg: MatchingConfig, creator: TowerSpec, product: TowerSpec) -> TwoTower:
    """The two-tower model the matching settings describe, for these inputs."""
    return TwoTower(
        TwoTowerConfig(
            creator=creator,
            product=product,
            id_dim=cfg.id_dim,
            side_dim=cfg.side_dim,
            hidden=list(cfg.hidden),
            out_dim=cfg.out_dim,
            temperature=cfg.temperature,
            learn_temperature=cfg.learn_temperature,
            id_dropout=cfg.id_dropout,
            id_only_dropout=cfg.id_only_dropout,
            tie_history=cfg.tie_history,
            heads=cfg.heads,
            id_only_hidden=None if cfg.id_only_hidden is None else list(cfg.id_only_hidden),
        )
    )


class TwoTowerRecommender(Recommender):
    """A trained two-tower model: towers, encoders and exported embeddings."""

    kind = "two_tower"

    def __init__(
        self,
        cfg: MatchingConfig,
        creator_frame: pd.DataFrame | None = None,
        product_frame: pd.DataFrame | None = None,
        progress: bool = True,
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.creator_frame, self.product_frame = creator_frame, product_frame
        self.progress, self.checkpoint_dir = progress, checkpoint_dir
        self.model: TwoTower | None = None
        self.encoders: TowerEncoders | None = None
        self.creator_vectors: np.ndarray | None = None
        self.product_vectors: np.ndarray | None = None
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        # the optimisers' state where training stopped, by parameter name: a warm start
        # (fine-tuning) goes on from it instead of from fresh step sizes
        self.optimizer_state: dict[str, dict[str, torch.Tensor]] | None = None
        self.seconds_per_epoch = 0.0

    def fit(self, train: sp.csr_matrix, val: sp.csr_matrix | None = None) -> Recommender:
        raise RecommenderError(
            "a loaded two-tower model is served, not fitted: train with "
            "training.matching.two_tower_fit.TwoTowerTrainer"
        )

    # --- embedding ---------------------------------------------------------------------

    @torch.no_grad()
    def _embed(self, tower: torch.nn.Module, inputs: TowerInputs, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.model.cfg.embedding_dim), dtype=np.float32)
        for start in range(0, len(rows), EMBED_BATCH):
            chunk = torch.from_numpy(rows[start : start + EMBED_BATCH])
            out[start : start + len(chunk)] = tower(*inputs.take(chunk)).cpu().numpy()
        return out

    def _embed_all(
        self, creators_in: TowerInputs, products_in: TowerInputs, creators: np.ndarray | None = None
    ) -> None:
        """Embed all products and all (or the given) creators; scores are cos / T."""
        assert self.model is not None
        self.model.eval()
        scale = float(1.0 / self.model.temperature)
        self.product_vectors = self._embed(
            self.model.product_tower, products_in, np.arange(len(products_in))
        )
        rows = np.arange(len(creators_in)) if creators is None else creators
        vectors = self._embed(self.model.creator_tower, creators_in, rows) * scale
        if creators is None:
            self.creator_vectors = vectors
        else:
            self.creator_vectors = np.zeros((len(creators_in), vectors.shape[1]), np.float32)
            self.creator_vectors[creators] = vectors

    def export(self) -> EmbeddingRecommender:
        """The serve-time form: precomputed embeddings, scores = dot products."""
        if self.product_vectors is None:
            raise RecommenderError("TwoTowerRecommender is not fitted")
        return EmbeddingRecommender(self.creator_vectors, self.product_vectors)

    def score(self, creators: np.ndarray) -> np.ndarray:
        return self.export().score(creators)

    def score_columns(
        self, creators: np.ndarray, columns: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.export().score_columns(creators, columns)

    # --- persistence -------------------------------------------------------------------

    def _save(self, path: Path) -> dict[str, Any]:
        if self.model is None or self.encoders is None:
            raise RecommenderError("TwoTowerRecommender is not fitted")
        state = {key: value.cpu() for key, value in self.model.state_dict().items()}
        torch.save(state, path / "weights.pt")  # CPU tensors: loads where no GPU is
        (path / "model_config.json").write_text(json.dumps(self.model.cfg.to_dict(), indent=2))
        (path / "matching_config.json").write_text(self.cfg.model_dump_json(indent=2))
        (path / "encoders.json").write_text(json.dumps(self.encoders.to_dict()))
        if self.optimizer_state is not None:
            torch.save(self.optimizer_state, path / OPTIMIZER_STATE)
        self.export()._save(path)
        return {"best_epoch": self.best_epoch, "history": self.history}

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> TwoTowerRecommender:
        cfg = MatchingConfig.model_validate_json((path / "matching_config.json").read_text())
        model = cls(cfg, progress=False)
        model.model = TwoTower(
            TwoTowerConfig.from_dict(json.loads((path / "model_config.json").read_text()))
        )
        model.model.load_state_dict(torch.load(path / "weights.pt", weights_only=True))
        model.model.eval()
        model.encoders = TowerEncoders.from_dict(json.loads((path / "encoders.json").read_text()))
        if (path / OPTIMIZER_STATE).is_file():  # models saved before it have none
            model.optimizer_state = torch.load(path / OPTIMIZER_STATE, weights_only=True)
        emb = EmbeddingRecommender._load(path, meta)
        model.creator_vectors, model.product_vectors = emb.creator_vectors, emb.product_vectors
        model.best_epoch, model.history = meta.get("best_epoch", 0), meta.get("history", [])
        return model
