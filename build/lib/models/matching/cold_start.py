"""Cold start at serve time: a new creator's (or product's) features -> its embedding.

The served recommender keeps the trained towers and their fitted encoders
(`encoders.json`); a newcomer has no ID row, so it takes the OOV row 0 exactly as a
cold good did in training (ID dropout), and the tower places it from its side features
alone. Creator vectors are divided by the temperature, like the exported ones, so a dot
product with a product vector is the model's logit.

The ID tables are the bulk of the weights (3.5M + 10M rows at `full`) and only row 0
is ever read here, so they are cut to that row after loading; the creator history table
is dropped (a newcomer has no history: the tower reads an empty one, as in training).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from features.encoders import SideEncoder, TowerEncoders
from models.matching.two_tower import TwoTower, TwoTowerConfig


def _keep_oov_row(tower: nn.Module) -> None:
    """Replace the tower's ID table by its OOV row (row 0): all a newcomer can use."""
    oov = tower.ids.weight.detach()[:1].clone()  # (1, id_dim)
    tower.ids = nn.Embedding.from_pretrained(oov, freeze=True)
    tower.history = None  # the width stays; a newcomer's history reads as zeros


class TowerEmbedder:
    """Embeds newcomers from their side features with the served model's towers."""

    def __init__(self, model: TwoTower, encoders: TowerEncoders) -> None:
        model.eval()
        for tower in (model.creator_tower, model.product_tower):
            _keep_oov_row(tower)
        self.model, self.encoders = model, encoders
        self.scale = float(1.0 / model.temperature)

    @torch.no_grad()
    def _embed(self, tower: nn.Module, side: SideEncoder, frame: pd.DataFrame) -> np.ndarray:
        features = side.transform(frame)
        ids = torch.zeros(len(frame), dtype=torch.int64)  # every newcomer is OOV
        out = tower(ids, torch.from_numpy(features.categorical), torch.from_numpy(features.numeric))
        return out.numpy().astype(np.float32)  # (n, d), unit length

    def creators(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, d) query vectors for goods retrieval (scaled by 1 / temperature)."""
        vectors = self._embed(self.model.creator_tower, self.encoders.creator_side, frame)
        return vectors * self.scale

    def products(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, d) query vectors for creator retrieval (the creator index holds scaled vectors)."""
        return self._embed(self.model.product_tower, self.encoders.product_side, frame)


def load_embedder(folder: Path) -> TowerEmbedder | None:
    """The towers of a two-tower model folder without its embeddings (None for other
    kinds): weights, architecture and fitted encoders, as `TwoTowerRecommender` saved them."""
    needed = [folder / name for name in ("weights.pt", "model_config.json", "encoders.json")]
    if not all(path.is_file() for path in needed):
        return None
    model = TwoTower(TwoTowerConfig.from_dict(json.loads(needed[1].read_text())))
    state = torch.load(needed[0], weights_only=True, mmap=True)  # pages, read once
    model.load_state_dict(state)
    encoders = TowerEncoders.from_dict(json.loads(needed[2].read_text()))
    return TowerEmbedder(model, encoders)
