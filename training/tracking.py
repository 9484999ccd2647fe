"""MLflow tracking shared by every job: one run per job, nested under a pipeline run.

The default store is a SQLite file in the working folder (`./mlflow.db`), so the model
registry works with no server to start; `MLFLOW_TRACKING_URI` points at a real server.
MLflow metric keys may not contain '@', so `recall@50` is logged as `recall_at_50`;
`metrics.json` keeps the contract's names (DESIGN §6).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from features.contract import TABLES
from features.io import count_rows, table_columns, table_path

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
EXPERIMENT = "haowu"


def tracking_uri() -> str:
    """The store in use: `MLFLOW_TRACKING_URI`, else a SQLite file in the working folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def _mlflow():  # imported lazily: MLflow costs ~1 s to import and the CLI stays snappy
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow


def configure() -> str:
    """Point MLflow at the store and make sure the haowu experiment exists."""
    mlflow = _mlflow()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if uri.startswith("sqlite:"):
            location = (Path.cwd() / DEFAULT_ARTIFACTS).resolve().as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def metric_key(name: str) -> str:
    """`recall@50` -> `recall_at_50` (MLflow rejects '@')."""
    return name.replace("@", "_at_")


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat `a.b.c` params, values stringified and capped at MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def data_fingerprint(data_dir: Path) -> str:
    """Hash of the input tables' names, columns and row counts: two runs compare only
    when they saw the same data."""
    parts = []
    for name in sorted(TABLES):
        if table_path(data_dir, name) is not None:
            parts.append([name, sorted(table_columns(data_dir, name)), count_rows(data_dir, name)])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def job_run(
    job: str,
    params: Mapping[str, Any],
    data_dir: Path | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Open an MLflow run for a job (nested when a pipeline run is active)."""
    mlflow = _mlflow()
    configure()
    all_tags = {"haowu.job": job, "haowu.git_commit": git_commit() or "unknown"}
    if data_dir is not None:
        all_tags["haowu.data_fingerprint"] = data_fingerprint(data_dir)
        all_tags["haowu.data_dir"] = str(Path(data_dir).resolve())
    all_tags.update(tags or {})
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=job, nested=nested, tags=all_tags) as run:
        mlflow.log_params(flatten(params))
        yield run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    _mlflow().log_metrics({metric_key(k): float(v) for k, v in metrics.items()}, step=step)


def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifacts(str(folder), artifact_path=artifact_path)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifact(str(path), artifact_path=artifact_path)


def run_link(run: Any) -> str:
    return f"{tracking_uri()} experiment={EXPERIMENT} run_id={run.info.run_id}"
