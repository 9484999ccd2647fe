"""The tier model as an MLflow pyfunc: what `models:/haowu-tier@champion` loads.

The tier model is one or five LightGBM boosters plus cut-points, so the registered model
wraps the saved model folder: `predict(indicators)` returns score, tier and the five
dimension contributions (the flagged-merchant rule applies when the input carries
`flagged_low_quality`). This file is also the model's code (MLflow "models from code"):
MLflow stores it with the model and runs it at load time, so nothing is pickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from models.tier.explain import CONTRIBUTION_COLUMNS
from models.tier.model import TierModel, assign_tiers

ARTIFACT = "tier_model"


class TierPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        self.model = TierModel.load(context.artifacts[ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        explanation = self.model.explain(model_input)
        flagged = (
            model_input["flagged_low_quality"].to_numpy(dtype=bool)
            if "flagged_low_quality" in model_input.columns
            else np.zeros(len(model_input), dtype=bool)
        )
        tier, _ = assign_tiers(explanation.tier, flagged)
        out = pd.DataFrame({"score": explanation.score, "tier": tier})
        for j, column in enumerate(CONTRIBUTION_COLUMNS):
            out[column] = explanation.dimensions[:, j]
        return out


set_model(TierPyfunc())
