"""The matching run as an MLflow pyfunc model (registered as `haowu-matching`).

Input: a DataFrame with a `creator_id` column; param `k` (default 10). Output: one row
per (creator, rank) with `creator_id`, `rank`, `product_id`, `score`. Creators unknown to
the model get no rows. The artifact is the run's `model/` folder, opened by the artifact
contract (models/artifacts.py), so the registry holds exactly what `haowu recommend
--model RUN_DIR` reads. This file is also the model's code (MLflow "models from code"):
MLflow stores it with the model and runs it at load time, so nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from features.idmap import load_id_maps
from models.artifacts import open_matching_run

ARTIFACT = "model"


class MatchingPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        self._load(Path(context.artifacts[ARTIFACT]))

    def _load(self, folder: Path) -> None:
        run = open_matching_run(folder)
        self.model, self.creators = run.model, run.creators
        self.product_ids = run.products.ids
        maps = load_id_maps(run.path)  # imported data: answer in the user's own IDs
        self.external_creators = maps.get("creator")
        if "product" in maps:
            self.product_ids = maps["product"].to_external(self.product_ids)
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        ids = np.asarray(model_input["creator_id"])
        if self.external_creators is not None:
            internal = self.external_creators.to_internal(ids, missing="minus_one")
        else:
            internal = ids.astype(np.int64)
        pos = self.creators.positions(np.asarray(internal, dtype=np.int64), strict=False)
        known = pos >= 0
        positions, scores = self.model.recommend(pos[known], k)
        n = int(known.sum())
        return pd.DataFrame(
            {
                "creator_id": np.repeat(ids[known], k),  # as given
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int64), n),
                "product_id": self.product_ids[positions.ravel()],
                "score": scores.ravel().astype(np.float64),
            }
        )


set_model(MatchingPyfunc())
