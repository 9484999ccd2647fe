"""Logging the trained models to MLflow as pyfunc models ("models from code").

Each wrapper's own file (training/matching/pyfunc.py, training/tier/pyfunc.py) is stored
with the model and run at load time, so nothing is pickled: a registered model loads
wherever haowu is installed.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from models.artifacts import import_mlflow
from models.tier.model import FEATURES, TierModel

log = logging.getLogger(__name__)

# A registered model carries haowu's own code (no index serves haowu) and names the
# distributions that code imports, pinned to the versions it was trained with.
CODE_PATHS = [str(Path(__file__).resolve().parents[2] / pkg) for pkg in ("features", "models")]
COMMON_NEEDS = ("mlflow", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml", "scipy")
MATCHING_NEEDS = (*COMMON_NEEDS, "torch", "faiss-cpu", "implicit")
TIER_NEEDS = (*COMMON_NEEDS, "lightgbm")
CHALLENGER = "challenger"  # every new candidate; the promotion gate moves `champion`


def requirements(names: tuple[str, ...]) -> list[str]:
    """`name==version` of each installed distribution the model's code imports."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in names]


def mark_challenger(registered_name: str | None, version: Any) -> None:
    """Point the `challenger` alias at a freshly registered version."""
    if registered_name is None or version is None:
        return
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(registered_name, CHALLENGER, str(version))


def _log_pyfunc(
    wrapper: ModuleType,
    model_dir: Path,
    signature: Any,
    example: pd.DataFrame,
    registered_name: str | None,
    needs: tuple[str, ...],
    **extra: Any,
) -> Any:
    """Log a wrapper module as the model's code, the model folder as its artifact, haowu's
    code and pinned requirements beside it; register it (as challenger) when named."""
    info = import_mlflow().pyfunc.log_model(
        name="model",
        python_model=wrapper.__file__,
        artifacts={wrapper.ARTIFACT: str(model_dir)},
        signature=signature,
        input_example=example,
        registered_model_name=registered_name,
        code_paths=CODE_PATHS,
        pip_requirements=requirements(needs),
        **extra,
    )
    mark_challenger(registered_name, getattr(info, "registered_model_version", None))
    return info


def log_tier_model(
    model: TierModel, model_dir: Path, example: pd.DataFrame, registered_name: str | None
) -> Any:
    """Register the model folder (boosters, cut-points) as a pyfunc: one or five boosters
    plus cut-points are more than one LightGBM model can carry."""
    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, Schema

    from training.lifecycle import tier_pyfunc

    x = example.loc[:, [*FEATURES, "flagged_low_quality"]]
    wrapper = tier_pyfunc.TierPyfunc()
    wrapper.model = model
    with warnings.catch_warnings():  # "integer columns cannot hold missing values": tier never is
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(x, wrapper.predict(None, x))
    inputs = [  # the flagged-merchant rule applies only when the caller knows the flag
        ColSpec(c.type, c.name, required=c.name != "flagged_low_quality")
        for c in signature.inputs.inputs
    ]
    signature.inputs = Schema(inputs)
    metadata = {"cuts": model.cuts.tolist(), "base": model.base, "ordinal": model.params.ordinal}
    return _log_pyfunc(
        tier_pyfunc, model_dir, signature, x, registered_name, TIER_NEEDS, metadata=metadata
    )


def log_matching_model(model_dir: Path, registered_name: str | None) -> str | None:
    """Log the model folder as a pyfunc in the active run; register it when named."""
    import_mlflow()  # haowu's defaults before MLflow loads
    from mlflow.models import infer_signature

    from training.lifecycle import matching_pyfunc

    example_model = matching_pyfunc.MatchingPyfunc()
    example_model._load(Path(model_dir))
    ids = example_model.creators.ids[:2]
    if example_model.external_creators is not None:
        ids = example_model.external_creators.to_external(ids)
    example = pd.DataFrame({"creator_id": ids})
    # the raw output's columns (the policy's needs the data loaded; it adds columns)
    output = example_model.predict(None, example, {"k": 3, "policy": False})
    signature = infer_signature(example, output, params=matching_pyfunc.PARAMS)
    info = _log_pyfunc(
        matching_pyfunc, model_dir, signature, example, registered_name, MATCHING_NEEDS
    )
    version = getattr(info, "registered_model_version", None)
    log.info("logged pyfunc %s (registered %s v%s)", info.model_uri, registered_name, version)
    return str(version) if version is not None else None
