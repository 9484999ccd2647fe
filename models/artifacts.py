"""The artifact contract (DESIGN §4, §6): folder layouts, file names, and the openers.

Every job writes its outputs under the names defined here, and every reader (the batch
job, the broker job, the service, the MLflow pyfunc wrappers, the pipeline summary)
opens them through the openers below, so a layout change is made in one place.

    train-matching RUN_DIR/   run.json metrics.json history.json config.yaml
      model/                  recommender.json creator_ids.npy product_ids.npy
                              products.parquet creator_embeddings.npy product_embeddings.npy
                              weights.pt optimizer.pt model_config.json matching_config.json
                              encoders.json id_maps/ index/ digest.json
    train-tier RUN_DIR/       run.json metrics.json tiers.parquet model/
    pipeline DIR/             data/ tier/ matching/ lists/{creator,product}/ brokers/
                              report.html summary.json .steps/
                              lists/refresh.json .refresh/ (after `haowu refresh`)
    recommend OUT/            part-NNNNN.parquet _job.json _SUCCESS, _lock while running

A model's identity is its content: `model_digest(folder)` (sha256 of the files the model
is made of, kept in `model/digest.json` so a 10M-row model is hashed once). The batch
job writes it into its `_SUCCESS` manifest, and the service uses batch lists only when
their `model_digest` is the served model's.

The files inside `model/` that only one model class reads and writes (`recommender.json`,
the embeddings, the two-tower's weights, configs and encoders) are named by that class
(models/matching/recommender.py, models/matching/two_tower_served.py): its save and load
are the contract for them.

A model is named by a run folder (`RUN_DIR` or `RUN_DIR/model`) or a registry URI
(`models:/NAME@ALIAS`, `models:/NAME/VERSION`). A registry URI is resolved at each open
(an alias names today's champion): the matching model's registered pyfunc carries the
whole model folder, downloaded once into a cache; the tier model's registered run names
its local run folder (tag `haowu.run_dir`), whose `run.json` must carry the same run ID.
This module reads the registry (it never writes it): the one place below `training/`
that talks to MLflow, so serving and a registered model's own code can open artifacts.
It is long on purpose: the layouts, the names and the openers change together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.errors import HaowuError

# --- file and folder names -------------------------------------------------------------
MODEL_DIR = "model"
RUN_META = "run.json"
METRICS = "metrics.json"
HISTORY = "history.json"
RUN_CONFIG = "config.yaml"
CREATOR_IDS = "creator_ids.npy"
PRODUCT_IDS = "product_ids.npy"
PRODUCT_INFO = "products.parquet"
INDEX_DIR = "index"
SERVING_DEFAULTS = "serving.json"  # model/: the data, tiers, index and policy it was made for
TIERS = "tiers.parquet"
SUCCESS = "_SUCCESS"
SUMMARY = "summary.json"
MATCHES = "matches.parquet"
BROKER_SUMMARY = "broker_summary.parquet"
MODEL_DIGEST = "digest.json"
BATCH_LOCK = "_lock"
REFRESHED_CREATORS = "creators.refreshed.npz"  # MODEL/index/: creators re-embedded by refresh
REFRESH_DIR = ".refresh"  # pipeline DIR/: the refresh's staging, journal and ledger
REFRESH_STAGING = "staging"  # .refresh/staging/: outputs mirrored by their path under DIR
REFRESH_PLAN = "_plan.json"  # staging/: written last; present = committed, roll forward
REFRESH_APPLIED = "applied.json"  # .refresh/: digests of the deltas applied, in order
REFRESH_MANIFEST = "refresh.json"  # DIR/lists/: the last refresh: what changed and why
FINE_TUNE_DIR = "fine-tune"  # pipeline DIR/: one run folder per fine-tune of the champion

REGISTRY_PREFIX = "models:/"
MATCHING_MODEL = "haowu-matching"
TIER_MODEL = "haowu-tier"
RUN_DIR_TAG = "haowu.run_dir"
FINE_TUNED_FROM_TAG = "haowu.fine_tuned_from"  # a fine-tuned run: the MLflow run it started from
DATA_DIR_TAG = "haowu.data_dir"
DEFAULT_DB = "mlflow.db"
# MLflow's defaults (7 retries, backoff factor 2, 120 s) keep a dead server busy for minutes
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ArtifactError(HaowuError):
    """An artifact cannot be opened: not a run folder, unknown model, alias or version."""


# --- the pipeline folder ---------------------------------------------------------------
@dataclass(frozen=True)
class PipelineLayout:
    """Where each step of `haowu pipeline` writes inside its folder (DESIGN §6)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tier(self) -> Path:
        return self.root / "tier"

    @property
    def matching(self) -> Path:
        return self.root / "matching"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def creator_lists(self) -> Path:
        return self.lists / "creator"

    @property
    def product_lists(self) -> Path:
        return self.lists / "product"

    @property
    def brokers(self) -> Path:
        return self.root / "brokers"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def steps(self) -> Path:
        return self.root / ".steps"

    @property
    def refresh(self) -> Path:
        """`haowu refresh`'s own folder: staging, the commit journal, the applied deltas."""
        return self.root / REFRESH_DIR

    @property
    def fine_tune(self) -> Path:
        """Fine-tuned matching runs (`haowu fine-tune`); the promoted one becomes `matching`."""
        return self.root / FINE_TUNE_DIR

    @property
    def refresh_manifest(self) -> Path:
        return self.lists / REFRESH_MANIFEST

    def existing(self, path: Path) -> Path | None:
        """`path` when a step has written it, else None."""
        return path if path.exists() else None

    def require(self) -> PipelineLayout:
        if not self.root.is_dir():
            raise ArtifactError(f"--from {self.root}: not a folder")
        return self


# --- the registry ------------------------------------------------------------------------
def tracking_uri() -> str:
    """The store in use: `MLFLOW_TRACKING_URI`, else a SQLite file in the working folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


_CREDENTIALS = re.compile(r"(?<=://)([^/@:]+):([^/@]+)@")
SQLITE = "sqlite:///"


def masked(uri: str) -> str:
    """A tracking URI fit to print or store: `http://user:***@host` (no password)."""
    return _CREDENTIALS.sub(r"\1:***@", uri)


def require_store(uri: str) -> None:
    """A command that only reads the registry never creates a store: a SQLite file
    that is not there is an error naming it."""
    if uri.startswith(SQLITE) and not Path(uri[len(SQLITE) :]).is_file():
        raise ArtifactError(
            f"no MLflow store at {uri[len(SQLITE) :]} (set MLFLOW_TRACKING_URI, or run from "
            "the folder holding mlflow.db)"
        )


def import_mlflow() -> Any:
    """MLflow, imported lazily (about 1 s) with haowu's quiet, quick-failing defaults."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow

    from features.logs import adopt

    adopt("mlflow", "alembic")  # MLflow installs its own handler on import
    return mlflow


def registry_lock_path(uri: str, name: str) -> Path:
    """The lock file serialising promote/rollback of registered model `name` in store
    `uri` on this machine: beside a SQLite store's file, else in the haowu cache."""
    import hashlib

    key = hashlib.sha256(f"{uri}\0{name}".encode()).hexdigest()[:16]
    prefix = "sqlite:///"
    folder = Path(uri[len(prefix) :]).parent if uri.startswith(prefix) else default_cache().parent
    return folder / f".haowu-registry-{key}.lock"


def is_registry_uri(ref: str | Path) -> bool:
    return str(ref).startswith(REGISTRY_PREFIX)


@dataclass
class ModelInfo:
    """Which model is open: enough to answer "which model is this?" in logs and /readyz."""

    uri: str  # as asked: a folder or models:/NAME@ALIAS
    folder: Path  # the model folder actually read
    name: str | None = None  # registered model name
    version: str | None = None
    run_id: str | None = None
    alias: str | None = None
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.version is not None:
            return f"{self.name or 'model'} v{self.version}"
        return f"run {self.run_id[:8]}" if self.run_id else str(self.folder)


@dataclass(frozen=True)
class ResolvedModel:
    info: ModelInfo
    data_dir: Path | None = None  # what the run was trained on, when the registry says
    tier_dir: Path | None = None


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    alias: str | None
    run_id: str | None
    tags: dict[str, str]
    params: dict[str, str]


def registered_version(uri: str) -> RegisteredVersion:
    """models:/NAME@ALIAS (or NAME/VERSION) -> the version the registry names now."""
    match = _URI.match(uri)
    if match is None:
        raise ArtifactError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    mlflow = import_mlflow()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri_of_store = tracking_uri()
    require_store(uri_of_store)
    mlflow.set_tracking_uri(uri_of_store)
    client = MlflowClient()
    name, alias = match["name"], match["alias"]
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias)
        else:
            version = client.get_model_version(name, match["version"])
        run = client.get_run(version.run_id) if version.run_id else None
    except MlflowException as exc:
        raise ArtifactError(f"{uri}: {masked(exc.message)}") from None
    except Exception as exc:  # a corrupt store: SQLAlchemy's errors, one line
        raise ArtifactError(f"{uri}: the MLflow store {masked(uri_of_store)} cannot be read "
                            f"({type(exc).__name__})") from None  # fmt: skip
    return RegisteredVersion(
        name,
        str(version.version),
        alias,
        version.run_id,
        dict(run.data.tags) if run else {},
        dict(run.data.params) if run else {},
    )


def _existing(path: str | None) -> Path | None:
    return Path(path) if path and path != "none" and Path(path).exists() else None


def _run_meta(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_META
    return json.loads(path.read_text()) if path.is_file() else {}


# --- the matching run --------------------------------------------------------------------
def matching_model_folder(path: Path) -> Path:
    """`RUN_DIR` or `RUN_DIR/model` -> the model folder, checked."""
    path = Path(path)
    folder = path / MODEL_DIR if (path / MODEL_DIR).is_dir() else path
    if not (folder / CREATOR_IDS).is_file():
        raise ArtifactError(
            f"{path} is not a train-matching run folder (no {MODEL_DIR}/{CREATOR_IDS})"
        )
    return folder


def _resolve_matching_folder(uri: str) -> ResolvedModel:
    folder = matching_model_folder(Path(uri))
    meta = _run_meta(folder.parent)
    version = meta.get("version")
    info = ModelInfo(
        uri=uri,
        folder=folder.resolve(),
        name=meta.get("registered_model"),
        version=str(version) if version is not None else None,
        run_id=meta.get("run_id"),
    )
    return ResolvedModel(info)


def _resolve_matching_registry(uri: str, cache_dir: Path) -> ResolvedModel:
    """A registered matching version -> a local copy of its model folder (downloaded once)."""
    reg = registered_version(uri)
    target = Path(cache_dir) / f"{reg.name}-v{reg.version}-{(reg.run_id or 'norun')[:12]}"
    folder = target / "artifacts" / MODEL_DIR
    if not (folder / CREATOR_IDS).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            import_mlflow().artifacts.download_artifacts(
                artifact_uri=f"models:/{reg.name}/{reg.version}", dst_path=str(staging)
            )
            if target.exists():  # another process finished first
                shutil.rmtree(staging)
            else:
                os.replace(staging, target)
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if not (folder / CREATOR_IDS).is_file():
        raise ArtifactError(
            f"{uri} (v{reg.version}) carries no matching model folder under artifacts/model"
        )
    info = ModelInfo(uri, folder, reg.name, reg.version, reg.run_id, reg.alias)
    return ResolvedModel(
        info, _existing(reg.tags.get(DATA_DIR_TAG)), _existing(reg.params.get("tiers"))
    )


def default_cache() -> Path:
    return Path(os.environ.get("HAOWU_CACHE", Path.home() / ".cache" / "haowu")) / "models"


def resolve_matching(ref: str | Path, cache_dir: Path | None = None) -> ResolvedModel:
    """A run folder or a registry URI, resolved now (an alias names today's champion)."""
    if is_registry_uri(ref):
        return _resolve_matching_registry(str(ref), cache_dir or default_cache())
    return _resolve_matching_folder(str(ref))


@dataclass
class MatchingRun:
    """An opened matching model: the recommender and its position <-> ID maps."""

    model: Any  # models.matching.recommender.Recommender
    creators: Any  # features.matching_data.IdIndex
    products: Any
    product_info: Any  # pd.DataFrame by product position (category_l1, tier) or None
    path: Path  # the model folder
    info: ModelInfo
    data_dir: Path | None = None
    tier_dir: Path | None = None


def open_matching_run(ref: str | Path, cache_dir: Path | None = None) -> MatchingRun:
    """`RUN_DIR`, `RUN_DIR/model` or `models:/NAME@ALIAS` -> the loaded matching model."""
    import numpy as np
    import pandas as pd

    # every recommender kind a run folder can hold registers itself on import
    import models.matching.baselines  # noqa: F401
    import models.matching.two_tower_served  # noqa: F401
    from features.matching_data import IdIndex
    from models.matching.recommender import Recommender

    resolved = resolve_matching(ref, cache_dir)
    folder = resolved.info.folder
    info_path = folder / PRODUCT_INFO
    return MatchingRun(
        Recommender.load(folder),
        IdIndex(np.load(folder / CREATOR_IDS)),
        IdIndex(np.load(folder / PRODUCT_IDS)),
        pd.read_parquet(info_path) if info_path.is_file() else None,
        folder,
        resolved.info,
        resolved.data_dir,
        resolved.tier_dir,
    )


# --- the tier run --------------------------------------------------------------------------
@dataclass(frozen=True)
class TierRun:
    """A tier run folder: `tiers.parquet` (every product scored) and the model."""

    root: Path
    run_id: str | None = None

    @property
    def tiers(self) -> Path:
        return self.root / TIERS

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR


def open_tier_run(ref: str | Path) -> TierRun:
    """A train-tier run folder, or `models:/haowu-tier@ALIAS` -> the run folder that
    version was trained in (it must still exist and carry that run's ID)."""
    if not is_registry_uri(ref):
        root = Path(ref)
        if not (root / TIERS).is_file():
            raise ArtifactError(f"{root} is not a train-tier run folder (no {TIERS})")
        return TierRun(root, _run_meta(root).get("run_id"))
    reg = registered_version(str(ref))
    run_dir = reg.tags.get(RUN_DIR_TAG)
    if not run_dir:
        raise ArtifactError(f"{ref} (v{reg.version}): its run names no run folder")
    root = Path(run_dir)
    if not (root / TIERS).is_file():
        raise ArtifactError(f"{ref} (v{reg.version}): its run folder {root} is gone")
    found = _run_meta(root).get("run_id")
    if found != reg.run_id:
        raise ArtifactError(
            f"{ref} (v{reg.version}) was trained in run {reg.run_id}, but {root} now holds "
            f"run {found}: pass --tiers with the folder to use"
        )
    return TierRun(root, reg.run_id)


def read_tiers(ref: str | Path | None) -> Any:
    """The tier run's `tiers.parquet` (product_id, tier, score, ...) as a DataFrame, when
    a tier run (folder or registry URI) is given."""
    if ref is None:
        return None
    import pandas as pd

    return pd.read_parquet(open_tier_run(ref).tiers)


@dataclass(frozen=True)
class JobInputs:
    """What a job reading a pipeline's outputs takes: data, a matching model, tiers."""

    data: Path
    model: str
    tiers: str | None


def job_inputs(
    from_dir: Path | None,
    data: Path | None = None,
    model: str | None = None,
    tiers: str | Path | None = None,
) -> JobInputs:
    """`--from DIR` fills what the flags leave out (DIR/data, DIR/matching, DIR/tier);
    without it, `--data` and `--model` are required."""
    if from_dir is not None:
        layout = PipelineLayout(from_dir).require()
        data = data or layout.data
        model = model or str(layout.matching)
        if tiers is None and layout.existing(layout.tier):
            tiers = layout.tier
    missing = [flag for flag, value in (("--data", data), ("--model", model)) if value is None]
    if missing:
        raise ArtifactError(f"give {' and '.join(missing)}, or --from a pipeline folder")
    assert data is not None and model is not None
    return JobInputs(Path(data), str(model), str(tiers) if tiers is not None else None)


# --- content digests -----------------------------------------------------------------------
def _model_files(folder: Path) -> list[tuple[str, Path]]:
    """What a model is made of: the files of its folder and its ID maps; not the saved
    indexes (built from the vectors on first use), the digest itself or hidden files."""
    from features.idmap import ID_MAPS_DIR

    found = []
    for base in (folder, folder / ID_MAPS_DIR):
        if base.is_dir():
            for path in base.iterdir():
                if path.is_file() and not path.name.startswith(".") and path.name != MODEL_DIGEST:
                    found.append((str(path.relative_to(folder)), path))
    return sorted(found)


def model_digest(folder: str | Path) -> str:
    """sha256 of a matching model's content (embeddings, IDs, weights, configs, ID maps).

    Stored beside the model (`digest.json`, with each file's size and modification time)
    and reused while the files are unchanged, so a 10M-row model is read for it once; a
    copy (the registry's download) gets the same digest. A retrain into the same folder
    changes it."""
    from features.io import files_digest, write_json

    folder = matching_model_folder(Path(folder))
    files = _model_files(folder)
    stamp = [[name, path.stat().st_size, path.stat().st_mtime_ns] for name, path in files]
    stored = folder / MODEL_DIGEST
    try:
        doc = json.loads(stored.read_text())
        if doc.get("files") == stamp and isinstance(doc.get("sha256"), str):
            return doc["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = files_digest(files)
    try:
        write_json({"sha256": digest, "files": stamp}, stored)
    except OSError:  # a read-only model folder: hashed again next time
        pass
    return digest


def data_digest(data_dir: str | Path) -> str:
    """sha256 of a data folder's contract tables and ID maps (their Parquet bytes)."""
    from features.contract import TABLES
    from features.idmap import ID_MAPS_DIR
    from features.io import files_digest, table_files

    root = Path(data_dir)
    files = [
        (f"{name}/{path.name}", path) for name in sorted(TABLES) for path in table_files(root, name)
    ]
    maps = root / ID_MAPS_DIR
    if maps.is_dir():
        files += [(f"{ID_MAPS_DIR}/{p.name}", p) for p in sorted(maps.glob("*.parquet"))]
    return files_digest(files)


def tiers_digest(ref: str | Path | None) -> str | None:
    """sha256 of a tier run's `tiers.parquet` (folder or registry URI); None without one."""
    from features.io import files_digest

    if ref is None:
        return None
    return files_digest([(TIERS, open_tier_run(ref).tiers)])
