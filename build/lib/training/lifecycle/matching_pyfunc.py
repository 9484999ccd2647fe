"""The matching run as an MLflow pyfunc model (registered as `haowu-matching`).

Input: a DataFrame with a `creator_id` column. Params: `k` (default 10); `policy`
(default true): the batch job's lists, made by the same code (models/retrieval:
the index, L0 and flagged merchants out, goods the creator already promoted out, the
Selected Goods boost, category diversity), over the data folder and tier run the model
was trained with, or the ones given as `data` and `tiers`; `policy=false`: the model's
raw top-k by score, no data needed. Output: one row per (creator, rank) with
`creator_id`, `rank`, `product_id`, `score` (and, under the policy, the batch lists'
other columns). Creators unknown to the model get no rows. The artifact is the run's
`model/` folder, opened by the artifact contract (models/artifacts.py), so the registry
holds exactly what `haowu recommend --model RUN_DIR` reads. This file is also the
model's code (MLflow "models from code"): MLflow stores it with the model and runs it at
load time, so nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from features.idmap import load_id_maps
from features.settings import IndexConfig, PolicyConfig
from models.artifacts import SERVING_DEFAULTS, open_matching_run
from models.retrieval.list_rows import goods_rows
from models.retrieval.run import RetrievalRun

ARTIFACT = "model"
PARAMS = {"k": 10, "policy": True, "data": "", "tiers": ""}  # the signature's defaults


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
        self.folder = run.path
        defaults = run.path / SERVING_DEFAULTS
        self.defaults = json.loads(defaults.read_text()) if defaults.is_file() else {}
        self._runs: dict[tuple[str, str], RetrievalRun] = {}

    def _retrieval(self, data: str, tiers: str) -> RetrievalRun:
        """The batch job's retrieval over DATA (loaded once per data and tiers)."""
        if (data, tiers) not in self._runs:
            index = IndexConfig.model_validate(self.defaults.get("index", {}))
            policy = PolicyConfig.model_validate(self.defaults.get("policy", {}))
            self._runs = {
                (data, tiers): RetrievalRun.load(
                    Path(data), self.folder, tiers or None, index, policy
                )
            }
        return self._runs[(data, tiers)]

    def _internal(self, ids: np.ndarray) -> np.ndarray:
        if self.external_creators is not None:
            return self.external_creators.to_internal(ids, missing="minus_one")
        return ids.astype(np.int64)

    def _with_policy(self, ids: np.ndarray, k: int, data: str, tiers: str) -> pd.DataFrame:
        run = self._retrieval(data, tiers)
        pos = run.creators.ids.positions(np.asarray(self._internal(ids), np.int64), strict=False)
        queried = pos[pos >= 0]
        queried = queried[run.creators.listed[queried]]
        return goods_rows(run, queried, k).reset_index(drop=True)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = {**PARAMS, **(params or {})}
        k = int(params["k"])
        ids = np.asarray(model_input["creator_id"])
        if params["policy"]:
            data = params["data"] or self.defaults.get("data") or ""
            if not data or not Path(data).is_dir():
                raise ValueError(
                    f"the policy needs the data folder ({data or 'none recorded'} is not one): "
                    "pass params={'data': DIR, 'tiers': TIER_RUN}, or {'policy': false}"
                )
            return self._with_policy(
                ids, k, data, params["tiers"] or self.defaults.get("tiers") or ""
            )
        internal = self._internal(ids)
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
