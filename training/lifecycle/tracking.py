"""MLflow tracking shared by every job: one run per job, nested under a pipeline run.

The default store is a SQLite file in the working folder (`./mlflow.db`), so the model
registry works with no server to start; `MLFLOW_TRACKING_URI` points at a real server.
MLflow metric keys may not contain '@', so `recall@50` is logged as `recall_at_50`;
`metrics.json` keeps the contract's names (DESIGN §6).

Every run is tagged with the git commit, the data fingerprint (hash of the input tables'
names, columns and row counts) and the preset. A remote store that does not answer fails
within seconds (few HTTP retries unless `MLFLOW_HTTP_REQUEST_*` say otherwise), with an
error naming the URI, instead of MLflow's minutes of retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from features.errors import HaowuError
from features.version import haowu_version
from models.artifacts import SQLITE, data_digest, masked, tracking_uri
from models.artifacts import import_mlflow as _mlflow

log = logging.getLogger(__name__)

DEFAULT_ARTIFACTS = "mlartifacts"
EXPERIMENT = "haowu"
_CONTEXT: dict[str, str] = {}  # tags every run gets, e.g. the preset (see `context`)


class TrackingError(HaowuError):
    """The tracking store cannot be reached or refuses the request."""


@contextlib.contextmanager
def context(**tags: str | None) -> Iterator[None]:
    """Tags every run opened inside carries (`preset=small` -> `haowu.preset`)."""
    saved = dict(_CONTEXT)
    _CONTEXT.update({f"haowu.{k}": str(v) for k, v in tags.items() if v is not None})
    try:
        yield
    finally:
        _CONTEXT.clear()
        _CONTEXT.update(saved)


def configure() -> str:
    """Point MLflow at the store and make sure the haowu experiment exists; a store that
    cannot be reached is a `TrackingError` naming it."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    if uri.startswith(SQLITE) and not Path(uri[len(SQLITE) :]).parent.is_dir():
        raise TrackingError(f"MLflow store {uri}: folder {Path(uri[len(SQLITE):]).parent} "
                            "does not exist")  # fmt: skip
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow tracking store {masked(uri)} cannot be reached or opened "
            f"({masked(_first_line(exc))}); start the server, or unset MLFLOW_TRACKING_URI "
            "to use the local SQLite store"
        ) from None
    except Exception as exc:  # a corrupt or truncated SQLite file: SQLAlchemy, one line
        raise TrackingError(
            f"MLflow tracking store {masked(uri)} cannot be opened ({type(exc).__name__}: "
            f"{masked(_first_line(exc))}); is it a database file?"
        ) from None
    if experiment is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=_artifact_root(uri))
    mlflow.set_experiment(EXPERIMENT)
    return uri


def _artifact_root(uri: str) -> str | None:
    """A SQLite store keeps its artifacts beside the database file (`mlartifacts/`); a
    server decides for itself."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    db = Path(uri[len(prefix) :])
    return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def metric_key(name: str) -> str:
    """`recall@50` -> `recall_at_50` (MLflow rejects '@')."""
    return name.replace("@", "_at_")


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat `a.b.c` params, values stringified and capped at MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = metric_key(f"{prefix}{key}")
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
    """The content of the input tables (their Parquet bytes, streamed; the batch job's
    `data_digest`): two runs compare only when they saw the same data, so an edited or
    reshuffled table is another fingerprint, not only a table or row count that changed."""
    return data_digest(data_dir)[:16]


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Short hash of a resolved config: two folders compare only when built alike."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def data_preset(data_dir: Path) -> str | None:
    """The preset a synthetic data folder was generated with (None for imported data)."""
    meta = Path(data_dir) / "_meta.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("preset")
    except (OSError, ValueError):
        return None


def run_tags(job: str, data_dir: Path | None = None) -> dict[str, str]:
    """The tags of a job's run: job, git commit, preset, data fingerprint and folder."""
    tags = {
        "haowu.job": job,
        "haowu.git_commit": git_commit() or "unknown",
        "haowu.version": haowu_version(),
    }
    if data_dir is not None and Path(data_dir).exists():
        tags["haowu.data_fingerprint"] = data_fingerprint(data_dir)
        tags["haowu.data_dir"] = str(Path(data_dir).resolve())
        preset = data_preset(data_dir)
        if preset:
            tags["haowu.preset"] = preset
    return {**tags, **_CONTEXT}


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
    all_tags = {**run_tags(job, data_dir), **(tags or {})}
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=job, nested=nested, tags=all_tags) as run:
        mlflow.log_params(flatten(params))
        if data_dir is not None and "haowu.data_fingerprint" in all_tags:
            log_dataset(Path(data_dir), all_tags["haowu.data_fingerprint"])  # type: ignore[arg-type]
        yield run


def log_dataset(data_dir: Path, fingerprint: str) -> None:
    """The data folder as the run's input dataset (MLflow's Datasets tab), by fingerprint."""
    mlflow = _mlflow()
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow warns that a local path is a local source
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(Path(data_dir).resolve()))
    dataset = MetaDataset(source, name=Path(data_dir).name, digest=fingerprint)
    mlflow.log_input(dataset, context="training")


@contextlib.contextmanager
def parent_run(
    name: str, run_id: str | None, params: Mapping[str, Any], tags: Mapping[str, str]
) -> Iterator[Any]:
    """The run grouping a pipeline's steps: `run_id` resumed when the store still has it,
    else a new run. Job runs opened inside it are nested under it."""
    mlflow = _mlflow()
    configure()
    from mlflow.exceptions import MlflowException

    if run_id is not None:
        try:
            if mlflow.get_run(run_id).info.lifecycle_stage != "active":
                run_id = None
        except MlflowException:  # another store, or deleted: start afresh
            run_id = None
    all_tags = {**tags, **_CONTEXT}
    if run_id is None:
        context = mlflow.start_run(run_name=name, tags=all_tags)
    else:
        context = mlflow.start_run(run_id=run_id)
    with context as run:
        mlflow.set_tags(all_tags)
        mlflow.log_params(flatten(params))
        yield run


def numeric(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in a (nested) summary, flat: `{"a": {"b": 2}}` -> `{"a.b": 2.0}`."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = metric_key(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(numeric(value, f"{name}."))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, int | float) and value == value:  # skip NaN
            out[name] = float(value)
    return out


def active() -> bool:
    """Whether an MLflow run is open in this process."""
    return _mlflow().active_run() is not None


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    _mlflow().log_metrics({metric_key(k): float(v) for k, v in metrics.items()}, step=step)


def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifacts(str(folder), artifact_path=artifact_path)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifact(str(path), artifact_path=artifact_path)


def log_params(params: Mapping[str, Any]) -> None:
    """Params added to the active run after it opened (e.g. a search's best settings)."""
    _mlflow().log_params(flatten(params))


def set_tags(tags: Mapping[str, str]) -> None:
    if tags:
        _mlflow().set_tags(dict(tags))
