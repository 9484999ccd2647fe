"""The matching run as an MLflow pyfunc model (registered as `haowu-matching`).

Input: a DataFrame with a `creator_id` column; param `k` (default 10). Output: one row
per (creator, rank) with `creator_id`, `rank`, `product_id`, `score`. Creators unknown to
the model get no rows. The artifact is the run's `model/` folder, so the registry holds
exactly what `haowu recommend --model RUN_DIR` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.tracking import _mlflow

log = logging.getLogger(__name__)

try:  # the base class only exists with MLflow installed; the job always has it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[assignment,misc]


class MatchingPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        self._load(Path(context.artifacts["model"]))

    def _load(self, folder: Path) -> None:
        from features.idmap import load_id_maps
        from features.matching_data import IdIndex
        from models.recommender import Recommender

        self.model = Recommender.load(folder)
        self.creators = IdIndex(np.load(folder / "creator_ids.npy"))
        self.product_ids = np.load(folder / "product_ids.npy")
        maps = load_id_maps(folder)  # imported data: answer in the user's own IDs
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


def log_pyfunc(model_dir: Path, registered_name: str | None) -> str | None:
    """Log the model folder as a pyfunc in the active run; register it when named."""
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    example_model = MatchingPyfunc()
    example_model._load(Path(model_dir))
    ids = example_model.creators.ids[:2]
    if example_model.external_creators is not None:
        ids = example_model.external_creators.to_external(ids)
    example = pd.DataFrame({"creator_id": ids})
    output = example_model.predict(None, example, {"k": 3})
    signature = infer_signature(example, output, params={"k": 10})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=MatchingPyfunc(),
        artifacts={"model": str(model_dir)},
        signature=signature,
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=["haowu"],
    )
    version = getattr(info, "registered_model_version", None)
    log.info("logged pyfunc %s (registered %s v%s)", info.model_uri, registered_name, version)
    return str(version) if version is not None else None
