"""The hand-weighted baseline the tier model must beat: the five dimension sub-scores
(percentiles of the oriented indicators, averaged per dimension) weighted equally, cut so
that its tiers have the label distribution of the training products.

A dimension with all its indicators missing is left out of the average (a new product is
judged on what is known about it); a product with no indicator at all scores 0 (L0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.indicators import DimensionScaler
from models.tier.cuts import apply_cuts, distribution_cuts

BASELINE_FILE = "tier_baseline.json"


class HandWeightedBaseline:
    """fit / predict_score / predict_tier / save / load, like `TierModel`."""

    def __init__(self, scaler: DimensionScaler | None = None, cuts: np.ndarray | None = None):
        self.scaler = scaler
        self.cuts = None if cuts is None else np.asarray(cuts, dtype=np.float64)

    def fit(
        self, indicators: pd.DataFrame, labels: np.ndarray, grid_points: int
    ) -> HandWeightedBaseline:
        self.scaler = DimensionScaler.fit(indicators, grid_points)
        self.cuts = distribution_cuts(self.predict_score(indicators), labels)
        return self

    def predict_score(self, indicators: pd.DataFrame) -> np.ndarray:
        if self.scaler is None:
            raise RuntimeError("HandWeightedBaseline is not fitted")
        dims = self.scaler.transform(indicators).to_numpy()  # (rows, 5), NaN = unknown
        known = ~np.isnan(dims)
        count = known.sum(axis=1)
        total = np.where(known, dims, 0.0).sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), 0.0)  # equal weights

    def predict_tier(self, indicators: pd.DataFrame) -> np.ndarray:
        if self.cuts is None:
            raise RuntimeError("HandWeightedBaseline is not fitted")
        return apply_cuts(self.predict_score(indicators), self.cuts)

    def save(self, folder: Path) -> Path:
        if self.scaler is None or self.cuts is None:
            raise RuntimeError("HandWeightedBaseline is not fitted")
        path = Path(folder) / BASELINE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cuts": self.cuts.tolist(), "grids": self.scaler.to_dict()}))
        return path

    @classmethod
    def load(cls, folder: Path) -> HandWeightedBaseline:
        data = json.loads((Path(folder) / BASELINE_FILE).read_text())
        return cls(DimensionScaler.from_dict(data["grids"]), np.asarray(data["cuts"]))
